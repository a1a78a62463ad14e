//! pgoutput (PostgreSQL's logical replication protocol, versions 1 to 4) → normalized events.
//!
//! One XLogData payload carries exactly one pgoutput message (the plugin writes each message on its
//! own); bytes after a complete message are an error, not a second message. Message formats:
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.
//!
//! ```text
//! version 1  Begin B, Commit C, Origin O, Relation R, Type Y, Insert I, Update U, Delete D,
//!            Truncate T, Message M
//! version 2  + Stream Start S / Stop E / Commit c / Abort A; between S and E every change, RELATION,
//!            TYPE and MESSAGE starts with the (sub)transaction xid
//! version 3  + two-phase (b P K r p): refused, the receiver does not ask for two_phase
//! version 4  + Stream Abort carries the abort LSN and time when streaming = parallel
//! ```
//!
//! Values arrive as text (`t`) and are parsed by [`super::pg_text`] according to the column types,
//! which RELATION gives only as OIDs: [`TypeRegistry`] resolves them when the RELATION arrives, so a
//! type the registry lacks fails there ([`DecodeError::UnknownType`]) and the caller can reload the
//! registry and decode the RELATION again. Binary values (`b`, option `binary`) are refused.
//!
//! pgoutput's RELATION has no NOT NULL flags, so [`Column::not_null`] is always `false` here (figoutput
//! sends them); pg_catalog relations come with an empty namespace, which is spelled `pg_catalog`.

use super::pg_text;
use super::types::{TextFormat, TypeRegistry};
use super::DecodeError;
use crate::model::{Column, Event, Incoming, Lsn, Op, Relation, Value};
use std::collections::HashMap;

/// A pgoutput session: the negotiated protocol, whether a stream block is open, and the relations
/// described so far.
#[derive(Debug, Clone)]
pub struct PgState {
    version: u32,
    /// `streaming = parallel` (version 4): Stream Abort carries the abort LSN and time.
    parallel: bool,
    /// Between Stream Start and Stream Stop: the streamed transaction's xid.
    stream: Option<u32>,
    relations: HashMap<u32, PgRelation>,
}

#[derive(Debug, Clone)]
struct PgRelation {
    relation: Relation,
    formats: Vec<TextFormat>,
}

impl PgState {
    /// A session with `proto_version` (1 to 4) and `streaming` off or on (not parallel).
    pub fn new(proto_version: u32) -> Result<Self, DecodeError> {
        if !(1..=4).contains(&proto_version) {
            return Err(DecodeError::UnsupportedVersion {
                version: proto_version,
            });
        }
        Ok(PgState {
            version: proto_version,
            parallel: false,
            stream: None,
            relations: HashMap::new(),
        })
    }

    /// A session for the options given to `START_REPLICATION` (`proto_version`, `streaming`, and
    /// the options this decoder refuses: `binary`, `two_phase`). Other options do not change the
    /// message formats and are ignored.
    pub fn from_options<'a>(
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, DecodeError> {
        let bad = |name: &str, value: &str, reason| DecodeError::BadOption {
            name: name.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let truthy = |v: &str| matches!(v.to_ascii_lowercase().as_str(), "true" | "on" | "1");
        let mut version = None;
        let mut parallel = false;
        for (name, value) in options {
            match name {
                "proto_version" => {
                    version = Some(
                        value
                            .parse::<u32>()
                            .map_err(|_| bad(name, value, "expected a protocol version number"))?,
                    )
                }
                "streaming" => parallel = value.eq_ignore_ascii_case("parallel"),
                "binary" if truthy(value) => {
                    return Err(bad(name, value, "binary tuple data cannot be decoded"))
                }
                "two_phase" if truthy(value) => {
                    return Err(bad(name, value, "two-phase messages cannot be decoded"))
                }
                _ => {}
            }
        }
        let version = version.ok_or_else(|| bad("proto_version", "", "pgoutput requires it"))?;
        let mut st = Self::new(version)?;
        if parallel {
            if version < 4 {
                return Err(bad("streaming", "parallel", "needs proto_version 4"));
            }
            st.parallel = true;
        }
        Ok(st)
    }

    pub fn proto_version(&self) -> u32 {
        self.version
    }

    /// Whether a stream block (Stream Start … Stream Stop) is open.
    pub fn in_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// The relation as last described in this session.
    pub fn relation(&self, relid: u32) -> Option<&Relation> {
        self.relations.get(&relid).map(|r| &r.relation)
    }
}

/// Decodes one pgoutput message. On error the state is unchanged.
pub fn decode(
    buf: &[u8],
    state: &mut PgState,
    types: &TypeRegistry,
) -> Result<Vec<Event>, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let tag = r.u8()?;
    let event = match tag {
        b'B' => Some(Event::Begin {
            final_lsn: r.lsn()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        }),
        b'C' => {
            let _flags = r.u8()?;
            Some(Event::Commit {
                commit_lsn: r.lsn()?,
                end_lsn: r.lsn()?,
                commit_time: r.i64()?,
            })
        }
        b'O' => {
            let _origin_lsn = r.u64()?;
            let _name = r.str()?;
            None
        }
        b'R' => {
            let _xid = r.stream_xid(state)?;
            let rel = relation(&mut r, types)?;
            r.end()?;
            let event = Event::Relation(rel.relation.clone());
            state.relations.insert(rel.relation.relid, rel);
            return Ok(vec![event]);
        }
        b'Y' => {
            let _xid = r.stream_xid(state)?;
            let _oid = r.u32()?;
            let _namespace = r.str()?;
            let _name = r.str()?;
            None
        }
        b'I' => {
            let xid = r.stream_xid(state)?;
            let rel = r.relation(state)?;
            r.expect(b'N', "expected N (new tuple) in INSERT")?;
            Some(Event::Row {
                xid,
                op: Op::Insert,
                relid: rel.relation.relid,
                before: None,
                after: Some(r.tuple(rel)?),
            })
        }
        b'U' => {
            let xid = r.stream_xid(state)?;
            let rel = r.relation(state)?;
            let before = match r.peek() {
                Some(kind @ (b'K' | b'O')) => {
                    r.pos += 1;
                    Some(r.old_tuple(rel, kind)?)
                }
                _ => None,
            };
            r.expect(b'N', "expected K, O or N in UPDATE")?;
            Some(Event::Row {
                xid,
                op: Op::Update,
                relid: rel.relation.relid,
                before,
                after: Some(r.tuple(rel)?),
            })
        }
        b'D' => {
            let xid = r.stream_xid(state)?;
            let rel = r.relation(state)?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(r.malformed(1, "expected K or O in DELETE"));
            }
            Some(Event::Row {
                xid,
                op: Op::Delete,
                relid: rel.relation.relid,
                before: Some(r.old_tuple(rel, kind)?),
                after: None,
            })
        }
        b'T' => {
            let xid = r.stream_xid(state)?;
            let n = r.u32()? as usize;
            let options = r.u8()?;
            r.fits(n, 4)?;
            let relids = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            Some(Event::Truncate {
                xid,
                relids,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            })
        }
        b'M' => {
            let xid = r.stream_xid(state)?;
            let flags = r.u8()?;
            let lsn = r.lsn()?;
            let prefix = r.str()?.to_owned();
            let len = r.len()?;
            let content = r.take(len)?.to_vec();
            Some(Event::Message {
                xid,
                lsn,
                transactional: flags & 1 != 0,
                prefix,
                content,
            })
        }
        b'S' => {
            r.since(2, "Stream Start", state)?;
            let xid = r.u32()?;
            let _first_segment = r.u8()?;
            r.end()?;
            if state.stream.is_some() {
                return Err(DecodeError::StreamState(
                    "Stream Start inside an open stream block",
                ));
            }
            state.stream = Some(xid);
            return Ok(vec![Event::StreamStart { xid }]);
        }
        b'E' => {
            r.since(2, "Stream Stop", state)?;
            r.end()?;
            if state.stream.take().is_none() {
                return Err(DecodeError::StreamState(
                    "Stream Stop without a Stream Start",
                ));
            }
            return Ok(vec![Event::StreamStop]);
        }
        b'c' => {
            r.since(2, "Stream Commit", state)?;
            let xid = r.u32()?;
            let _flags = r.u8()?;
            Some(Event::StreamCommit {
                xid,
                commit_lsn: r.lsn()?,
                end_lsn: r.lsn()?,
                commit_time: r.i64()?,
            })
        }
        b'A' => {
            r.since(2, "Stream Abort", state)?;
            let xid = r.u32()?;
            let subxid = r.u32()?;
            if state.parallel {
                let _abort_lsn = r.u64()?;
                let _abort_time = r.i64()?;
            }
            Some(Event::StreamAbort { xid, subxid })
        }
        b'b' | b'P' | b'K' | b'r' | b'p' => {
            r.since(3, "a two-phase message", state)?;
            return Err(DecodeError::TwoPhaseUnsupported { tag });
        }
        _ => return Err(DecodeError::UnknownMessage { tag, offset: 0 }),
    };
    r.end()?;
    Ok(event.into_iter().collect())
}

/// RELATION after the tag (and stream xid): resolves every column type first, so an unknown type
/// fails before anything is kept.
fn relation(r: &mut Reader<'_>, types: &TypeRegistry) -> Result<PgRelation, DecodeError> {
    let relid = r.u32()?;
    let schema = match r.str()? {
        "" => "pg_catalog",
        s => s,
    }
    .to_owned();
    let table = r.str()?.to_owned();
    let identity = r.u8()?;
    if !matches!(identity, b'd' | b'n' | b'f' | b'i') {
        return Err(r.malformed(1, "unknown replica identity"));
    }
    let n = r.i16()?;
    let n = usize::try_from(n).map_err(|_| r.malformed(2, "negative column count"))?;
    // flags, a name of at least its NUL, type OID, typmod.
    r.fits(n, 10)?;
    let mut columns = Vec::with_capacity(n);
    let mut formats = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = r.u8()?;
        let name = r.str()?.to_owned();
        let type_oid = r.u32()?;
        let typmod = r.i32()?;
        let ty = types.resolve(type_oid, typmod)?;
        columns.push(Column {
            name,
            type_name: ty.name,
            type_oid,
            key: flags & 1 != 0,
            not_null: false,
            attnum: None,
        });
        formats.push(ty.format);
    }
    Ok(PgRelation {
        relation: Relation {
            relid,
            schema,
            table,
            columns,
        },
        formats,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.buf.len() - self.pos;
        if n > rest {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - rest,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.be()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.be()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.be()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.be()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.be()?))
    }
    fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        Ok(Lsn(self.u64()?))
    }
    /// A non-negative Int32 length.
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| self.malformed(4, "negative length"))
    }
    /// A NUL-terminated UTF-8 string.
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::Truncated {
                offset: self.buf.len(),
                needed: 1,
            });
        };
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| self.malformed(0, "a string is not UTF-8"))?;
        self.pos += end + 1;
        Ok(s)
    }
    fn expect(&mut self, b: u8, reason: &'static str) -> Result<(), DecodeError> {
        if self.u8()? == b {
            Ok(())
        } else {
            Err(self.malformed(1, reason))
        }
    }
    /// An error about the `back` bytes just read.
    fn malformed(&self, back: usize, reason: &'static str) -> DecodeError {
        DecodeError::Malformed {
            offset: self.pos.saturating_sub(back),
            reason,
        }
    }
    /// Whether `n` items of at least `min` bytes each can follow: checked before allocating for them.
    fn fits(&self, n: usize, min: usize) -> Result<(), DecodeError> {
        let rest = self.buf.len() - self.pos;
        match n.checked_mul(min) {
            Some(need) if need <= rest => Ok(()),
            need => Err(DecodeError::Truncated {
                offset: self.pos,
                needed: need.map_or(usize::MAX, |n| n - rest),
            }),
        }
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                offset: self.pos,
                count: self.buf.len() - self.pos,
            })
        }
    }
    fn since(&self, version: u32, what: &'static str, state: &PgState) -> Result<(), DecodeError> {
        if state.version >= version {
            Ok(())
        } else {
            Err(DecodeError::NotInVersion {
                what,
                version: state.version,
            })
        }
    }
    /// Inside a stream block (version 2+), changes start with their (sub)transaction xid.
    fn stream_xid(&mut self, state: &PgState) -> Result<Option<u32>, DecodeError> {
        if state.stream.is_some() {
            Ok(Some(self.u32()?))
        } else {
            Ok(None)
        }
    }
    fn relation<'s>(&mut self, state: &'s PgState) -> Result<&'s PgRelation, DecodeError> {
        let relid = self.u32()?;
        state
            .relations
            .get(&relid)
            .ok_or(DecodeError::UnknownRelation { relid })
    }

    /// TupleData, as wide as its relation.
    fn tuple(&mut self, rel: &PgRelation) -> Result<Vec<Incoming>, DecodeError> {
        let n = self.i16()?;
        let expected = rel.formats.len();
        if usize::try_from(n).ok() != Some(expected) {
            return Err(DecodeError::TupleWidth {
                relid: rel.relation.relid,
                expected,
                found: n as u16 as usize,
            });
        }
        self.fits(expected, 1)?;
        let mut values = Vec::with_capacity(expected);
        for (format, column) in rel.formats.iter().zip(&rel.relation.columns) {
            let v = match self.u8()? {
                b'n' => Incoming::Value(Value::Null),
                b'u' => Incoming::UnchangedToast,
                b't' => {
                    let len = self.len()?;
                    let text = self.take(len)?;
                    Incoming::Value(pg_text::parse(format, text).map_err(|source| {
                        DecodeError::BadValue {
                            relid: rel.relation.relid,
                            column: column.name.clone(),
                            source,
                        }
                    })?)
                }
                b'b' => return Err(DecodeError::BinaryUnsupported),
                _ => return Err(self.malformed(1, "unknown tuple column kind")),
            };
            values.push(v);
        }
        Ok(values)
    }

    /// The old tuple of an UPDATE or DELETE: `K` (replica identity key: other columns become NULL)
    /// or `O` (the whole old row, REPLICA IDENTITY FULL).
    fn old_tuple(&mut self, rel: &PgRelation, kind: u8) -> Result<Vec<Incoming>, DecodeError> {
        let mut values = self.tuple(rel)?;
        if kind == b'K' {
            for (v, c) in values.iter_mut().zip(&rel.relation.columns) {
                if !c.key {
                    *v = Incoming::Value(Value::Null);
                }
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
pub(super) mod tests;
