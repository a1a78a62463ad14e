//! Reading records: bytes in, typed records out, no I/O and no state.
//!
//! The input comes from a server and is untrusted: every length is checked against the bytes that
//! remain before anything is allocated, every tag against the specification, and every failure is a
//! [`FormatError`] with the byte offset, never a panic. Strings are borrowed from the input.
//!
//! Values nest only through arrays. A column value is read at depth 1, an array's dimensions and
//! elements one deeper; an element is itself an array value only in a column whose element kind is
//! [`ValueKind::Array`] (an array of a domain over an array, `int2vector[]`, `oidvector[]`), and then
//! as deep as the column's type nests. The reader stops at [`MAX_ARRAY_NESTING`] levels of arrays
//! inside arrays with [`FormatError::TooDeep`], so a hostile server cannot make it recurse without
//! limit:
//!
//! ```text
//! depth 1  [dims, e1, e2, …]                 the column's array (nesting level 1)
//! depth 2    dims = [lower, length, …]  e1 = [dims, …]   an inner array (level 2)
//! depth 3                                 dims of e1 …
//! ```

use crate::{decimal, ColumnFlags, OldKind, RecordKind, ReplicaIdentity, ValueKind};
use crate::{EXT_DECIMAL, EXT_UNCHANGED_TOAST};
use rmp::Marker;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum FormatError {
    #[error("record truncated at byte {offset}: {needed} more bytes expected")]
    Truncated { offset: usize, needed: usize },
    #[error("unexpected MessagePack marker 0x{marker:02x} at byte {offset}: expected {expected}")]
    UnexpectedMarker {
        offset: usize,
        marker: u8,
        expected: &'static str,
    },
    #[error(
        "unknown record kind {kind} at byte {offset} (is the plugin newer than this receiver?)"
    )]
    UnknownRecordKind { offset: usize, kind: u64 },
    #[error("{record:?} record at byte {offset} has {len} elements; the format allows {allowed}")]
    WrongLength {
        offset: usize,
        record: RecordKind,
        len: u32,
        allowed: &'static str,
    },
    #[error("invalid UTF-8 in a string at byte {offset}")]
    BadUtf8 { offset: usize },
    #[error("integer out of range for {what} at byte {offset}")]
    IntOutOfRange { offset: usize, what: &'static str },
    #[error("unknown {what} code {code} at byte {offset}")]
    UnknownCode {
        offset: usize,
        what: &'static str,
        code: u64,
    },
    #[error("bad decimal at byte {offset}: {source}")]
    BadDecimal {
        offset: usize,
        source: decimal::DecimalError,
    },
    #[error("a {kind:?} value does not accept {found}")]
    ValueMismatch {
        kind: ValueKind,
        found: &'static str,
    },
    #[error("array value is malformed: {0}")]
    BadArray(&'static str),
    #[error("values nested deeper than this reader allows (arrays inside arrays at most {MAX_ARRAY_NESTING} levels deep) at byte {offset}")]
    TooDeep { offset: usize },
    #[error("an array whose elements are arrays needs the kind of the inner arrays' elements, which the RELATION does not carry: look it up in the catalog by the column's type OID")]
    InnerKindUnknown,
}

pub type Result<T> = std::result::Result<T, FormatError>;

/// A value as it is on the wire, before its column's [`ValueKind`] gives it a meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    F32(f32),
    F64(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Ext(i8, &'a [u8]),
    Array(Vec<Raw<'a>>),
}

impl Raw<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Raw::Nil => "nil",
            Raw::Bool(_) => "a bool",
            Raw::Int(_) => "an int",
            Raw::F32(_) => "a float32",
            Raw::F64(_) => "a float64",
            Raw::Str(_) => "a str",
            Raw::Bin(_) => "a bin",
            Raw::Ext(..) => "an ext",
            Raw::Array(_) => "an array",
        }
    }
}

/// A column value with its meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    /// A TOASTed value that did not change; the receiver resolves it from its last known value.
    UnchangedToast,
    Bool(bool),
    Int(i64),
    Float4(f32),
    Float8(f64),
    /// Canonical decimal text: `-?D+(.D+)?`, `NaN`, `Infinity` or `-Infinity`.
    Numeric(String),
    Text(&'a str),
    Bytes(&'a [u8]),
    Date(i32),
    Time(i64),
    Timestamp(i64),
    Timestamptz(i64),
    Uuid([u8; 16]),
    Json(&'a str),
    Enum(&'a str),
    /// Text output of a type the format has no native encoding for.
    Other(&'a str),
    Array(ArrayValue<'a>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArrayValue<'a> {
    /// (lower bound, length) per dimension, at most 6: empty for an empty array of an array type;
    /// `[(0, 0)]` for an empty `int2vector` or `oidvector` (a length can be 0, and then there are no
    /// elements).
    pub dims: Vec<(i32, i32)>,
    /// Elements in row-major order, exactly as many as the product of the lengths. Where the
    /// element kind is [`ValueKind::Array`], each is [`Value::Null`] or a [`Value::Array`] with
    /// dimensions of its own.
    pub elements: Vec<Value<'a>>,
}

impl<'a> Value<'a> {
    /// Gives a wire value its meaning, checking that the wire type fits the column kind. For a
    /// column whose `elem_kind` is [`ValueKind::Array`] this knows only the outer level: an inner
    /// array value is [`FormatError::InnerKindUnknown`]; use [`Value::from_raw_nested`].
    pub fn from_raw(raw: Raw<'a>, kind: ValueKind, elem_kind: ValueKind) -> Result<Value<'a>> {
        Self::from_raw_nested(raw, kind, &[elem_kind])
    }

    /// [`Value::from_raw`] with the element kind of every nesting level of an array, outermost
    /// first: `elem_kinds[0]` is the column's `elem_kind`; where it is [`ValueKind::Array`],
    /// `elem_kinds[1]` is the kind of the inner arrays' elements, and so on (`[Array, Int4]` for a
    /// column of an array of a domain over `integer[]`, `[Array, Int2]` for `int2vector[]`). An inner
    /// array for which no kind is given is [`FormatError::InnerKindUnknown`], never a guess; kinds
    /// past the first non-array one are not used. Ignored for kinds other than Array.
    pub fn from_raw_nested(
        raw: Raw<'a>,
        kind: ValueKind,
        elem_kinds: &[ValueKind],
    ) -> Result<Value<'a>> {
        use ValueKind as K;
        let mismatch = |raw: &Raw<'_>| FormatError::ValueMismatch {
            kind,
            found: raw.describe(),
        };
        Ok(match (kind, raw) {
            (_, Raw::Nil) => Value::Null,
            (_, Raw::Ext(EXT_UNCHANGED_TOAST, _)) => Value::UnchangedToast,
            (K::Bool, Raw::Bool(b)) => Value::Bool(b),
            (K::Int2, Raw::Int(i)) if i16::try_from(i).is_ok() => Value::Int(i),
            (K::Int4, Raw::Int(i)) if i32::try_from(i).is_ok() => Value::Int(i),
            (K::Int8, Raw::Int(i)) => Value::Int(i),
            (K::Float4, Raw::F32(f)) => Value::Float4(f),
            (K::Float8, Raw::F64(f)) => Value::Float8(f),
            (K::Numeric, Raw::Ext(EXT_DECIMAL, packed)) => Value::Numeric(
                decimal::unpack(packed)
                    .map_err(|source| FormatError::BadDecimal { offset: 0, source })?,
            ),
            (K::Text, Raw::Str(s)) => Value::Text(s),
            (K::Bytea, Raw::Bin(b)) => Value::Bytes(b),
            (K::Date, Raw::Int(i)) => {
                Value::Date(i32::try_from(i).map_err(|_| FormatError::IntOutOfRange {
                    offset: 0,
                    what: "date",
                })?)
            }
            (K::Time, Raw::Int(i)) => Value::Time(i),
            (K::Timestamp, Raw::Int(i)) => Value::Timestamp(i),
            (K::Timestamptz, Raw::Int(i)) => Value::Timestamptz(i),
            (K::Uuid, Raw::Bin(b)) if b.len() == 16 => {
                let mut u = [0u8; 16];
                u.copy_from_slice(b);
                Value::Uuid(u)
            }
            (K::Json | K::Jsonb, Raw::Str(s)) => Value::Json(s),
            (K::Enum, Raw::Str(s)) => Value::Enum(s),
            (K::Other, Raw::Str(s)) => Value::Other(s),
            (K::Array, Raw::Array(items)) => Value::Array(array_from_raw(items, elem_kinds)?),
            (_, raw) => return Err(mismatch(&raw)),
        })
    }
}

/// `[dims, e1, …]` → dimensions and elements; `elem_kinds` as in [`Value::from_raw_nested`]. The
/// recursion into inner arrays is bounded by the depth of `items`, which the reader bounded.
fn array_from_raw<'a>(items: Vec<Raw<'a>>, elem_kinds: &[ValueKind]) -> Result<ArrayValue<'a>> {
    let Some((&elem_kind, inner_kinds)) = elem_kinds.split_first() else {
        return Err(FormatError::InnerKindUnknown);
    };
    let mut it = items.into_iter();
    let Some(Raw::Array(dims_raw)) = it.next() else {
        return Err(FormatError::BadArray(
            "first element must be the dimensions array",
        ));
    };
    if dims_raw.len() % 2 != 0 || dims_raw.len() > 2 * 6 {
        return Err(FormatError::BadArray(
            "dimensions must be (lower, length) pairs, at most 6",
        ));
    }
    let mut dims = Vec::with_capacity(dims_raw.len() / 2);
    let mut expected: u64 = if dims_raw.is_empty() { 0 } else { 1 };
    for pair in dims_raw.chunks(2) {
        let (Raw::Int(lower), Raw::Int(len)) = (&pair[0], &pair[1]) else {
            return Err(FormatError::BadArray("dimension bounds must be integers"));
        };
        let lower =
            i32::try_from(*lower).map_err(|_| FormatError::BadArray("lower bound out of range"))?;
        let len = i32::try_from(*len)
            .ok()
            .filter(|l| *l >= 0)
            .ok_or(FormatError::BadArray("dimension length out of range"))?;
        expected = expected.saturating_mul(len as u64);
        dims.push((lower, len));
    }
    let elements: Vec<Value<'_>> = it
        .map(|raw| Value::from_raw_nested(raw, elem_kind, inner_kinds))
        .collect::<Result<_>>()?;
    if elements.len() as u64 != expected {
        return Err(FormatError::BadArray(
            "element count does not match the dimensions",
        ));
    }
    Ok(ArrayValue { dims, elements })
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column<'a> {
    pub attnum: i16,
    pub name: &'a str,
    pub type_oid: u32,
    pub typmod: i32,
    pub type_name: &'a str,
    pub flags: ColumnFlags,
    pub kind: ValueKind,
    pub elem_kind: ValueKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relation<'a> {
    pub relid: u32,
    pub schema: &'a str,
    pub table: &'a str,
    pub identity: ReplicaIdentity,
    pub columns: Vec<Column<'a>>,
}

impl Relation<'_> {
    /// Interprets a tuple of this relation.
    pub fn values<'b>(&self, tuple: Vec<Raw<'b>>) -> Result<Vec<Value<'b>>> {
        if tuple.len() != self.columns.len() {
            return Err(FormatError::BadArray(
                "tuple width differs from its RELATION",
            ));
        }
        tuple
            .into_iter()
            .zip(&self.columns)
            .map(|(raw, c)| Value::from_raw(raw, c.kind, c.elem_kind))
            .collect()
    }
}

/// The old row of an UPDATE or DELETE, as the table's REPLICA IDENTITY provides it.
#[derive(Debug, Clone, PartialEq)]
pub struct OldTuple<'a> {
    pub kind: OldKind,
    pub values: Vec<Raw<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    Begin {
        xid: u32,
        final_lsn: u64,
        commit_time: i64,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    Origin {
        origin_lsn: u64,
        name: &'a str,
    },
    Relation(Relation<'a>),
    Insert {
        relid: u32,
        new: Vec<Raw<'a>>,
        xid: Option<u32>,
    },
    Update {
        relid: u32,
        old: Option<OldTuple<'a>>,
        new: Vec<Raw<'a>>,
        xid: Option<u32>,
    },
    Delete {
        relid: u32,
        old: Option<OldTuple<'a>>,
        xid: Option<u32>,
    },
    Truncate {
        cascade: bool,
        restart_identity: bool,
        relids: Vec<u32>,
        xid: Option<u32>,
    },
    Message {
        lsn: u64,
        transactional: bool,
        prefix: &'a str,
        content: &'a [u8],
        xid: Option<u32>,
    },
    Ddl {
        lsn: u64,
        payload: &'a str,
        xid: Option<u32>,
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

/// Iterates over the records in one write. Stops after the first error.
pub struct Records<'a> {
    r: Reader<'a>,
    failed: bool,
}

impl<'a> Records<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Records {
            r: Reader { buf, pos: 0 },
            failed: false,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.pos >= self.r.buf.len() {
            return None;
        }
        let rec = self.r.record();
        self.failed = rec.is_err();
        Some(rec)
    }
}

/// Decodes every record of one write.
pub fn decode_all(buf: &[u8]) -> Result<Vec<Record<'_>>> {
    Records::new(buf).collect()
}

/// How deep arrays may nest inside arrays, counting the column's own array as 1: an array of a
/// domain over an array (`intlist[]`, `int2vector[]`) is 2. PostgreSQL sets no limit (each level
/// is a domain over an array of the level below); real schemas stop at 2 or 3.
pub const MAX_ARRAY_NESTING: u8 = 8;

/// The deepest a value can be read at: a column value is at depth 1, so the dimensions of its
/// innermost array, at nesting level [`MAX_ARRAY_NESTING`], are at depth `MAX_ARRAY_NESTING + 1`;
/// only the integers inside them are deeper.
const MAX_DEPTH: u8 = MAX_ARRAY_NESTING + 2;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(FormatError::Truncated {
                offset: self.pos,
                needed: n.saturating_sub(self.buf.len() - self.pos),
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn be<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn unexpected(&self, at: usize, marker: u8, expected: &'static str) -> FormatError {
        FormatError::UnexpectedMarker {
            offset: at,
            marker,
            expected,
        }
    }

    /// Reads any value (bounded depth). Array lengths are checked against the remaining bytes
    /// (every element takes at least one) before allocating.
    fn raw(&mut self, depth: u8) -> Result<Raw<'a>> {
        let at = self.pos;
        let m = self.u8()?;
        Ok(match Marker::from_u8(m) {
            Marker::Null => Raw::Nil,
            Marker::True => Raw::Bool(true),
            Marker::False => Raw::Bool(false),
            Marker::FixPos(v) => Raw::Int(v as i64),
            Marker::FixNeg(v) => Raw::Int(v as i64),
            Marker::U8 => Raw::Int(self.u8()? as i64),
            Marker::U16 => Raw::Int(u16::from_be_bytes(self.be()?) as i64),
            Marker::U32 => Raw::Int(u32::from_be_bytes(self.be()?) as i64),
            Marker::U64 => {
                Raw::Int(i64::try_from(u64::from_be_bytes(self.be()?)).map_err(|_| {
                    FormatError::IntOutOfRange {
                        offset: at,
                        what: "a 64-bit signed value",
                    }
                })?)
            }
            Marker::I8 => Raw::Int(i8::from_be_bytes(self.be()?) as i64),
            Marker::I16 => Raw::Int(i16::from_be_bytes(self.be()?) as i64),
            Marker::I32 => Raw::Int(i32::from_be_bytes(self.be()?) as i64),
            Marker::I64 => Raw::Int(i64::from_be_bytes(self.be()?)),
            Marker::F32 => Raw::F32(f32::from_be_bytes(self.be()?)),
            Marker::F64 => Raw::F64(f64::from_be_bytes(self.be()?)),
            Marker::FixStr(n) => Raw::Str(self.utf8(n as usize)?),
            Marker::Str8 => {
                let n = self.u8()? as usize;
                Raw::Str(self.utf8(n)?)
            }
            Marker::Str16 => {
                let n = u16::from_be_bytes(self.be()?) as usize;
                Raw::Str(self.utf8(n)?)
            }
            Marker::Str32 => {
                let n = u32::from_be_bytes(self.be()?) as usize;
                Raw::Str(self.utf8(n)?)
            }
            Marker::Bin8 => {
                let n = self.u8()? as usize;
                Raw::Bin(self.take(n)?)
            }
            Marker::Bin16 => {
                let n = u16::from_be_bytes(self.be()?) as usize;
                Raw::Bin(self.take(n)?)
            }
            Marker::Bin32 => {
                let n = u32::from_be_bytes(self.be()?) as usize;
                Raw::Bin(self.take(n)?)
            }
            Marker::FixExt1 => self.ext(1)?,
            Marker::FixExt2 => self.ext(2)?,
            Marker::FixExt4 => self.ext(4)?,
            Marker::FixExt8 => self.ext(8)?,
            Marker::FixExt16 => self.ext(16)?,
            Marker::Ext8 => {
                let n = self.u8()? as usize;
                self.ext(n)?
            }
            Marker::Ext16 => {
                let n = u16::from_be_bytes(self.be()?) as usize;
                self.ext(n)?
            }
            Marker::Ext32 => {
                let n = u32::from_be_bytes(self.be()?) as usize;
                self.ext(n)?
            }
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                if depth >= MAX_DEPTH {
                    return Err(FormatError::TooDeep { offset: at });
                }
                self.pos = at;
                let n = self.array_len()?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.raw(depth + 1)?);
                }
                Raw::Array(items)
            }
            _ => return Err(self.unexpected(at, m, "a value")),
        })
    }

    fn ext(&mut self, n: usize) -> Result<Raw<'a>> {
        let ty = self.u8()? as i8;
        Ok(Raw::Ext(ty, self.take(n)?))
    }

    fn utf8(&mut self, n: usize) -> Result<&'a str> {
        let at = self.pos;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|_| FormatError::BadUtf8 { offset: at })
    }

    fn array_len(&mut self) -> Result<u32> {
        let at = self.pos;
        let m = self.u8()?;
        let n = match Marker::from_u8(m) {
            Marker::FixArray(n) => n as u32,
            Marker::Array16 => u16::from_be_bytes(self.be()?) as u32,
            Marker::Array32 => u32::from_be_bytes(self.be()?),
            _ => return Err(self.unexpected(at, m, "an array")),
        };
        let remaining = self.buf.len() - self.pos;
        if n as usize > remaining {
            return Err(FormatError::Truncated {
                offset: at,
                needed: n as usize - remaining,
            });
        }
        Ok(n)
    }

    fn int(&mut self) -> Result<i64> {
        let at = self.pos;
        match self.raw(MAX_DEPTH)? {
            Raw::Int(i) => Ok(i),
            _ => Err(self.unexpected(at, self.buf[at], "an integer")),
        }
    }
    fn uint_as<T: TryFrom<i64>>(&mut self, what: &'static str) -> Result<T> {
        let at = self.pos;
        let v = self.int()?;
        T::try_from(v).map_err(|_| FormatError::IntOutOfRange { offset: at, what })
    }
    fn lsn(&mut self) -> Result<u64> {
        // LSNs above i64::MAX do not occur (the WAL would be 8 EiB long).
        self.uint_as("an LSN")
    }
    fn oid(&mut self) -> Result<u32> {
        self.uint_as("an OID")
    }
    fn xid(&mut self) -> Result<u32> {
        self.uint_as("a transaction id")
    }
    fn bool(&mut self) -> Result<bool> {
        let at = self.pos;
        match self.u8()? {
            0xc3 => Ok(true),
            0xc2 => Ok(false),
            m => Err(self.unexpected(at, m, "a bool")),
        }
    }
    fn str(&mut self) -> Result<&'a str> {
        let at = self.pos;
        match self.raw(MAX_DEPTH)? {
            Raw::Str(s) => Ok(s),
            _ => Err(self.unexpected(at, self.buf[at], "a str")),
        }
    }
    fn bin(&mut self) -> Result<&'a [u8]> {
        let at = self.pos;
        match self.raw(MAX_DEPTH)? {
            Raw::Bin(b) => Ok(b),
            _ => Err(self.unexpected(at, self.buf[at], "a bin")),
        }
    }
    fn tuple(&mut self) -> Result<Vec<Raw<'a>>> {
        let n = self.array_len()?;
        let mut v = Vec::with_capacity(n as usize);
        for _ in 0..n {
            v.push(self.raw(1)?);
        }
        Ok(v)
    }
    fn old(&mut self) -> Result<Option<OldTuple<'a>>> {
        if self.buf.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            return Ok(None);
        }
        let at = self.pos;
        if self.array_len()? != 2 {
            return Err(FormatError::BadArray("an old tuple is [kind, values]"));
        }
        let code = self.int()?;
        let kind =
            u8::try_from(code)
                .ok()
                .and_then(OldKind::from_u8)
                .ok_or(FormatError::UnknownCode {
                    offset: at,
                    what: "old tuple kind",
                    code: code as u64,
                })?;
        Ok(Some(OldTuple {
            kind,
            values: self.tuple()?,
        }))
    }
    fn code<T>(&mut self, what: &'static str, f: impl Fn(u8) -> Option<T>) -> Result<T> {
        let at = self.pos;
        let v = self.int()?;
        u8::try_from(v)
            .ok()
            .and_then(f)
            .ok_or(FormatError::UnknownCode {
                offset: at,
                what,
                code: v as u64,
            })
    }

    fn record(&mut self) -> Result<Record<'a>> {
        let at = self.pos;
        let len = self.array_len()?;
        let kind_code = self.int()?;
        let kind = u8::try_from(kind_code)
            .ok()
            .and_then(RecordKind::from_u8)
            .ok_or(FormatError::UnknownRecordKind {
                offset: at,
                kind: kind_code as u64,
            })?;
        let expect = |allowed: &'static [u32], text: &'static str| {
            if allowed.contains(&len) {
                Ok(len == allowed[allowed.len() - 1] && allowed.len() > 1)
            } else {
                Err(FormatError::WrongLength {
                    offset: at,
                    record: kind,
                    len,
                    allowed: text,
                })
            }
        };
        Ok(match kind {
            RecordKind::Begin => {
                expect(&[4], "4")?;
                Record::Begin {
                    xid: self.xid()?,
                    final_lsn: self.lsn()?,
                    commit_time: self.int()?,
                }
            }
            RecordKind::Commit => {
                expect(&[4], "4")?;
                Record::Commit {
                    commit_lsn: self.lsn()?,
                    end_lsn: self.lsn()?,
                    commit_time: self.int()?,
                }
            }
            RecordKind::Origin => {
                expect(&[3], "3")?;
                Record::Origin {
                    origin_lsn: self.lsn()?,
                    name: self.str()?,
                }
            }
            RecordKind::Relation => {
                expect(&[6], "6")?;
                let relid = self.oid()?;
                let schema = self.str()?;
                let table = self.str()?;
                let identity = self.code("replica identity", ReplicaIdentity::from_u8)?;
                let n = self.array_len()?;
                let mut columns = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let cat = self.pos;
                    if self.array_len()? != 8 {
                        return Err(FormatError::WrongLength {
                            offset: cat,
                            record: kind,
                            len,
                            allowed: "8 per column",
                        });
                    }
                    columns.push(Column {
                        attnum: self.uint_as("an attnum")?,
                        name: self.str()?,
                        type_oid: self.oid()?,
                        typmod: self.uint_as("a typmod")?,
                        type_name: self.str()?,
                        flags: ColumnFlags(self.uint_as("column flags")?),
                        kind: self.code("value kind", ValueKind::from_u8)?,
                        elem_kind: self.code("value kind", ValueKind::from_u8)?,
                    });
                }
                Record::Relation(Relation {
                    relid,
                    schema,
                    table,
                    identity,
                    columns,
                })
            }
            RecordKind::Insert => {
                let streamed = expect(&[3, 4], "3, or 4 in a stream")?;
                Record::Insert {
                    relid: self.oid()?,
                    new: self.tuple()?,
                    xid: self.stream_xid(streamed)?,
                }
            }
            RecordKind::Update => {
                let streamed = expect(&[4, 5], "4, or 5 in a stream")?;
                Record::Update {
                    relid: self.oid()?,
                    old: self.old()?,
                    new: self.tuple()?,
                    xid: self.stream_xid(streamed)?,
                }
            }
            RecordKind::Delete => {
                let streamed = expect(&[3, 4], "3, or 4 in a stream")?;
                Record::Delete {
                    relid: self.oid()?,
                    old: self.old()?,
                    xid: self.stream_xid(streamed)?,
                }
            }
            RecordKind::Truncate => {
                let streamed = expect(&[3, 4], "3, or 4 in a stream")?;
                let flags: u8 = self.uint_as("truncate flags")?;
                let n = self.array_len()?;
                let relids = (0..n).map(|_| self.oid()).collect::<Result<Vec<_>>>()?;
                Record::Truncate {
                    cascade: flags & 1 != 0,
                    restart_identity: flags & 2 != 0,
                    relids,
                    xid: self.stream_xid(streamed)?,
                }
            }
            RecordKind::Message => {
                let streamed = expect(&[5, 6], "5, or 6 in a stream")?;
                Record::Message {
                    lsn: self.lsn()?,
                    transactional: self.bool()?,
                    prefix: self.str()?,
                    content: self.bin()?,
                    xid: self.stream_xid(streamed)?,
                }
            }
            RecordKind::Ddl => {
                let streamed = expect(&[3, 4], "3, or 4 in a stream")?;
                Record::Ddl {
                    lsn: self.lsn()?,
                    payload: self.str()?,
                    xid: self.stream_xid(streamed)?,
                }
            }
            RecordKind::StreamStart => {
                expect(&[3], "3")?;
                Record::StreamStart {
                    xid: self.xid()?,
                    first_segment: self.bool()?,
                }
            }
            RecordKind::StreamStop => {
                expect(&[1], "1")?;
                Record::StreamStop
            }
            RecordKind::StreamCommit => {
                expect(&[5], "5")?;
                Record::StreamCommit {
                    xid: self.xid()?,
                    commit_lsn: self.lsn()?,
                    end_lsn: self.lsn()?,
                    commit_time: self.int()?,
                }
            }
            RecordKind::StreamAbort => {
                expect(&[3], "3")?;
                Record::StreamAbort {
                    xid: self.xid()?,
                    subxid: self.xid()?,
                }
            }
        })
    }

    fn stream_xid(&mut self, present: bool) -> Result<Option<u32>> {
        if present {
            Ok(Some(self.xid()?))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests;
