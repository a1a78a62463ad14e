//! COPY's binary format, decoded straight into normalized values.
//!
//! Binary costs the server less than text (no `numeric_out`, `timestamptz_out`, `int8out` per field)
//! and the receiver less too (no text to parse back). Each field carries the type's `send` form:
//!
//! ```text
//! "PGCOPY\n\377\r\n\0" flags:i32 ext_len:i32 ext…      header, once
//! fields:i16 { len:i32 (-1 = NULL) bytes… }…            one tuple
//! -1:i16                                                trailer
//! ```
//!
//! Types with a native normalized form (integers, floats, numeric, text, bytea, dates and times,
//! uuid) are decoded from their binary form here and printed by the same [`fig_format`] code the
//! CDC path uses, so a copied row and a streamed row are the same [`Value`]s. Everything else (json,
//! enums, arrays, intervals, user types…) is selected as its text output ([`select_expr`]) and parsed
//! by [`pg_text`], exactly as pgoutput's values are.

use crate::decode::append_uuid;
use crate::decode::pg_text;
use crate::decode::types::{ColumnType, ScalarKind, TextFormat};
use crate::model::Value;
use fig_format::datetime::{append_date, append_time, append_timestamp};

/// The `FORMAT` option of the COPY this decoder reads.
pub const FORMAT: &str = "binary";

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Flag bits 16–31 are critical: a reader that does not know one must stop. Bit 16 (OIDs) is never
/// asked for.
const CRITICAL_FLAGS: u32 = 0xFFFF_0000;
const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
const NUMERIC_DSCALE_MASK: u16 = 0x3FFF;
const USECS_PER_DAY: i64 = 86_400_000_000;
/// A value's buffer is reused for the next row's value of its column up to this capacity; a larger
/// one (a rare long text) is freed so a reused batch does not keep the largest value ever seen.
const MAX_REUSED: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the data does not start with the binary COPY signature")]
    Signature,
    #[error("the binary COPY header has unknown critical flags {0:#x}")]
    Flags(u32),
    #[error("row {row}: {got} fields, {expected} columns expected")]
    FieldCount { row: u64, got: i64, expected: usize },
    #[error("row {row}, column {column}: a field length of {len}")]
    Length { row: u64, column: usize, len: i32 },
    #[error("row {row}, column {column}: invalid {kind} value ({len} bytes): {reason}")]
    Binary {
        row: u64,
        column: usize,
        kind: &'static str,
        len: usize,
        reason: &'static str,
    },
    #[error("row {row}, column {column}: {source}")]
    Text {
        row: u64,
        column: usize,
        source: pg_text::TextError,
    },
    #[error("the data ended inside a row or before the trailer")]
    Truncated,
    #[error("data after the trailer")]
    AfterTrailer,
}

/// How a column is decoded: from its binary form, or from its text output.
#[derive(Debug, Clone)]
enum Field {
    Binary(ScalarKind),
    Text(TextFormat),
}

fn field_of(column: &ColumnType) -> Field {
    use ScalarKind::*;
    match &column.format {
        TextFormat::Scalar(
            k @ (Bool | Int2 | Int4 | Int8 | Float4 | Float8 | Numeric | Text | Bytea | Date | Time
            | Timestamp | Timestamptz | Uuid),
        ) => Field::Binary(*k),
        other => Field::Text(other.clone()),
    }
}

/// What the query selects for a column: the column itself when its binary form is decoded here,
/// otherwise its text output. `format('%s', …)` calls the type's output function, as pgoutput
/// does; a cast to text would not always (`inet::text` adds the netmask, `bool::text` spells
/// `true`), and `format` turns NULL into '' so NULL is kept apart.
pub fn select_expr(column: &ColumnType, quoted_name: &str) -> String {
    match field_of(column) {
        Field::Binary(_) => quoted_name.to_string(),
        Field::Text(_) => format!(
            "CASE WHEN {quoted_name} IS NULL THEN NULL ELSE pg_catalog.format('%s', {quoted_name}) END"
        ),
    }
}

/// Rows from binary COPY data fed in arbitrary chunks.
pub struct CopyDecoder {
    fields: Vec<Field>,
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    pos: usize,
    header_read: bool,
    trailer_read: bool,
    rows: u64,
    text: Vec<u8>,
    /// Where the current tuple's fields are (`None`: NULL), reused from row to row.
    spans: Vec<Option<std::ops::Range<usize>>>,
}

impl CopyDecoder {
    pub fn new(types: &[ColumnType]) -> Self {
        CopyDecoder {
            fields: types.iter().map(field_of).collect(),
            buf: Vec::new(),
            pos: 0,
            header_read: false,
            trailer_read: false,
            rows: 0,
            text: Vec::new(),
            spans: Vec::new(),
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete row, or `None` until more data arrives (or after the trailer).
    #[cfg(test)]
    pub fn next_row(&mut self) -> Result<Option<Vec<Value>>, CopyError> {
        let mut row = Vec::new();
        Ok(self.next_row_into(&mut row)?.then_some(row))
    }

    /// The next complete row written into `row`, reusing the memory of the values it holds (a row
    /// of an earlier batch): `false`, with `row` untouched, until more data arrives (or after the
    /// trailer).
    pub fn next_row_into(&mut self, row: &mut Vec<Value>) -> Result<bool, CopyError> {
        if !self.header_read && !self.read_header()? {
            return Ok(false);
        }
        let rest = &self.buf[self.pos..];
        if self.trailer_read {
            return if rest.is_empty() {
                Ok(false)
            } else {
                Err(CopyError::AfterTrailer)
            };
        }
        let Some(count) = rest.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
            return Ok(false);
        };
        let row_number = self.rows + 1;
        if count == -1 {
            self.trailer_read = true;
            self.pos += 2;
            return self.next_row_into(row);
        }
        let expected = self.fields.len();
        if count as i64 != expected as i64 {
            return Err(CopyError::FieldCount {
                row: row_number,
                got: count.into(),
                expected,
            });
        }
        // Find the tuple's end first, so a tuple split across chunks is decoded once, whole.
        let mut at = 2;
        let spans = &mut self.spans;
        spans.clear();
        for column in 0..expected {
            let Some(len) = rest
                .get(at..at + 4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                return Ok(false);
            };
            at += 4;
            if len == -1 {
                spans.push(None);
                continue;
            }
            if len < 0 {
                return Err(CopyError::Length {
                    row: row_number,
                    column,
                    len,
                });
            }
            let end = at + len as usize;
            if end > rest.len() {
                return Ok(false);
            }
            spans.push(Some(at..end));
            at = end;
        }
        row.resize(expected, Value::Null);
        for (column, ((span, field), slot)) in self
            .spans
            .iter()
            .zip(&self.fields)
            .zip(row.iter_mut())
            .enumerate()
        {
            let Some(span) = span else {
                *slot = Value::Null;
                continue;
            };
            let bytes = &self.buf[self.pos + span.start..self.pos + span.end];
            match field {
                Field::Binary(kind) => {
                    binary_into(*kind, bytes, &mut self.text, slot).map_err(|(kind, reason)| {
                        CopyError::Binary {
                            row: row_number,
                            column,
                            kind,
                            len: bytes.len(),
                            reason,
                        }
                    })?
                }
                Field::Text(format) => {
                    *slot = pg_text::parse(format, bytes).map_err(|source| CopyError::Text {
                        row: row_number,
                        column,
                        source,
                    })?
                }
            }
        }
        self.pos += at;
        self.rows = row_number;
        Ok(true)
    }

    /// Reads the header once it has arrived; `false` until then.
    fn read_header(&mut self) -> Result<bool, CopyError> {
        let rest = &self.buf[self.pos..];
        let fixed = SIGNATURE.len() + 8;
        if rest.len() < fixed {
            if !SIGNATURE.starts_with(&rest[..rest.len().min(SIGNATURE.len())]) {
                return Err(CopyError::Signature);
            }
            return Ok(false);
        }
        if &rest[..SIGNATURE.len()] != SIGNATURE {
            return Err(CopyError::Signature);
        }
        let word = |i: usize| u32::from_be_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let flags = word(SIGNATURE.len());
        if flags & CRITICAL_FLAGS != 0 {
            return Err(CopyError::Flags(flags));
        }
        let ext = word(SIGNATURE.len() + 4) as usize;
        if rest.len() - fixed < ext {
            return Ok(false);
        }
        self.pos += fixed + ext;
        self.header_read = true;
        Ok(true)
    }

    /// Checks that the data ended with the trailer, after whole rows.
    pub fn finish(&self) -> Result<(), CopyError> {
        if !self.trailer_read {
            return Err(CopyError::Truncated);
        }
        if self.pos < self.buf.len() {
            return Err(CopyError::AfterTrailer);
        }
        Ok(())
    }
}

type BinaryError = (&'static str, &'static str);

fn exact<const N: usize>(bytes: &[u8], kind: &'static str) -> Result<[u8; N], BinaryError> {
    bytes.try_into().map_err(|_| (kind, "wrong length"))
}

fn utf8<'b>(bytes: &'b [u8], kind: &'static str) -> Result<&'b str, BinaryError> {
    std::str::from_utf8(bytes).map_err(|_| {
        (
            kind,
            "not UTF-8 (the connection asks for client_encoding UTF8)",
        )
    })
}

/// The text buffer `slot` holds (cleared), to be filled again: values are decoded into the rows of
/// batches the sink is done with, so a copy allocates per new batch, not per value.
fn reuse_text(slot: &mut Value) -> String {
    match std::mem::replace(slot, Value::Null) {
        Value::Numeric(mut s)
        | Value::Text(mut s)
        | Value::Date(mut s)
        | Value::Time(mut s)
        | Value::Timestamp(mut s)
        | Value::Timestamptz(mut s)
        | Value::Uuid(mut s)
        | Value::Json(mut s)
        | Value::Enum(mut s)
        | Value::Other(mut s)
            if s.capacity() <= MAX_REUSED =>
        {
            s.clear();
            s
        }
        _ => String::new(),
    }
}

/// One field's `send` form → its normalized value, written into `slot` (whose buffer is reused).
/// `scratch` is reused for numeric text.
fn binary_into(
    kind: ScalarKind,
    b: &[u8],
    scratch: &mut Vec<u8>,
    slot: &mut Value,
) -> Result<(), BinaryError> {
    use ScalarKind::*;
    *slot = match kind {
        Bool => Value::Bool(exact::<1>(b, "boolean")?[0] != 0),
        Int2 => Value::Int(i16::from_be_bytes(exact(b, "smallint")?).into()),
        Int4 => Value::Int(i32::from_be_bytes(exact(b, "integer")?).into()),
        Int8 => Value::Int(i64::from_be_bytes(exact(b, "bigint")?)),
        Float4 => Value::Float(f32::from_be_bytes(exact(b, "real")?).into()),
        Float8 => Value::Float(f64::from_be_bytes(exact(b, "double precision")?)),
        Numeric => {
            let mut s = reuse_text(slot);
            numeric(b, scratch, &mut s)?;
            Value::Numeric(s)
        }
        Text => {
            let text = utf8(b, "text")?;
            let mut s = reuse_text(slot);
            s.push_str(text);
            Value::Text(s)
        }
        Bytea => match std::mem::replace(slot, Value::Null) {
            Value::Bytes(mut v) if v.capacity() <= MAX_REUSED => {
                v.clear();
                v.extend_from_slice(b);
                Value::Bytes(v)
            }
            _ => Value::Bytes(b.to_vec()),
        },
        Date => {
            let days = i32::from_be_bytes(exact(b, "date")?);
            let mut s = reuse_text(slot);
            append_date(&mut s, days);
            Value::Date(s)
        }
        Time => {
            let t = i64::from_be_bytes(exact(b, "time")?);
            if !(0..=USECS_PER_DAY).contains(&t) {
                return Err(("time", "outside 00:00:00..24:00:00"));
            }
            let mut s = reuse_text(slot);
            append_time(&mut s, t);
            Value::Time(s)
        }
        Timestamp | Timestamptz => {
            let utc = kind == Timestamptz;
            let name = if utc { "timestamptz" } else { "timestamp" };
            let t = i64::from_be_bytes(exact(b, name)?);
            let mut s = reuse_text(slot);
            append_timestamp(&mut s, t, utc);
            if utc {
                Value::Timestamptz(s)
            } else {
                Value::Timestamp(s)
            }
        }
        Uuid => {
            let u = exact(b, "uuid")?;
            let mut s = reuse_text(slot);
            append_uuid(&mut s, &u);
            Value::Uuid(s)
        }
        // field_of sends these through their text output.
        Json | Enum | Money { .. } | Other => return Err(("value", "not a binary-decoded type")),
    };
    Ok(())
}

/// `numeric_send`: ndigits:i16 weight:i16 sign:u16 dscale:u16, then ndigits base-10000 digits;
/// its text appended to `out`.
fn numeric(b: &[u8], scratch: &mut Vec<u8>, out: &mut String) -> Result<(), BinaryError> {
    const KIND: &str = "numeric";
    let head = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    if b.len() < 8 {
        return Err((KIND, "shorter than its header"));
    }
    let ndigits = head(0) as i16;
    let weight = head(2) as i16;
    let (sign, dscale) = (head(4), head(6));
    if ndigits < 0 || b.len() != 8 + 2 * ndigits as usize {
        return Err((KIND, "digit count and length disagree"));
    }
    let special = match sign {
        NUMERIC_NAN => Some("NaN"),
        NUMERIC_PINF => Some("Infinity"),
        NUMERIC_NINF => Some("-Infinity"),
        NUMERIC_POS | NUMERIC_NEG => None,
        _ => return Err((KIND, "unknown sign")),
    };
    if let Some(s) = special {
        out.push_str(s);
        return Ok(());
    }
    if dscale & !NUMERIC_DSCALE_MASK != 0 {
        return Err((KIND, "display scale out of range"));
    }
    scratch.clear();
    let digits = &b[8..];
    fig_format::decimal::append_base10000(
        sign == NUMERIC_NEG,
        weight.into(),
        dscale.into(),
        ndigits as usize,
        |i| u16::from_be_bytes([digits[2 * i], digits[2 * i + 1]]),
        scratch,
    )
    .ok_or((KIND, "a digit of 10000 or more"))?;
    // Only ASCII digits, '-' and '.' were written.
    out.push_str(std::str::from_utf8(scratch).map_err(|_| (KIND, "not ASCII digits"))?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ty(kind: ScalarKind) -> ColumnType {
        ColumnType {
            name: "t".into(),
            format: TextFormat::Scalar(kind),
        }
    }

    fn header() -> Vec<u8> {
        let mut b = SIGNATURE.to_vec();
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&4u32.to_be_bytes());
        b.extend_from_slice(b"ext!");
        b
    }

    fn tuple(out: &mut Vec<u8>, fields: &[Option<&[u8]>]) {
        out.extend_from_slice(&(fields.len() as i16).to_be_bytes());
        for f in fields {
            match f {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(bytes) => {
                    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
    }

    fn numeric_send(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for h in [ndigits as u16, weight as u16, sign, dscale] {
            b.extend_from_slice(&h.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    fn decode_all(types: &[ColumnType], data: &[u8]) -> Result<Vec<Vec<Value>>, CopyError> {
        let mut d = CopyDecoder::new(types);
        d.push(data);
        let mut rows = Vec::new();
        while let Some(r) = d.next_row()? {
            rows.push(r);
        }
        d.finish()?;
        Ok(rows)
    }

    #[test]
    fn rows_split_anywhere_decode_the_same() {
        let types = [
            ty(ScalarKind::Int8),
            ty(ScalarKind::Text),
            ty(ScalarKind::Numeric),
            ty(ScalarKind::Timestamptz),
            ColumnType {
                name: "integer[]".into(),
                format: TextFormat::array(TextFormat::Scalar(ScalarKind::Int4), b','),
            },
        ];
        let mut data = header();
        let n = numeric_send(2, 0, NUMERIC_NEG, 2, &[1234, 5600]);
        tuple(
            &mut data,
            &[
                Some(&7i64.to_be_bytes()),
                Some("héllo\t".as_bytes()),
                Some(&n),
                Some(&0i64.to_be_bytes()),
                Some(b"{1,NULL}"),
            ],
        );
        tuple(&mut data, &[None, Some(b""), None, None, None]);
        data.extend_from_slice(&(-1i16).to_be_bytes());
        let expected = vec![
            vec![
                Value::Int(7),
                Value::Text("héllo\t".into()),
                Value::Numeric("-1234.56".into()),
                Value::Timestamptz("2000-01-01T00:00:00.000000Z".into()),
                Value::Array(vec![Value::Int(1), Value::Null]),
            ],
            vec![
                Value::Null,
                Value::Text(String::new()),
                Value::Null,
                Value::Null,
                Value::Null,
            ],
        ];
        for cut in 0..data.len() {
            let mut d = CopyDecoder::new(&types);
            let mut rows = Vec::new();
            for part in [&data[..cut], &data[cut..]] {
                d.push(part);
                while let Some(r) = d.next_row().unwrap() {
                    rows.push(r);
                }
            }
            d.finish().unwrap();
            assert_eq!(rows, expected, "cut at {cut}");
        }
    }

    #[test]
    fn numerics_print_like_numeric_out() {
        let cases: [(Vec<u8>, &str); 8] = [
            (numeric_send(2, 0, NUMERIC_POS, 2, &[1234, 5600]), "1234.56"),
            (numeric_send(2, 1, NUMERIC_NEG, 0, &[12, 3456]), "-123456"),
            (numeric_send(1, -2, NUMERIC_POS, 6, &[1200]), "0.000012"),
            (numeric_send(0, 0, NUMERIC_POS, 3, &[]), "0.000"),
            (numeric_send(1, 2, NUMERIC_POS, 0, &[1]), "100000000"),
            (numeric_send(0, 0, NUMERIC_NAN, 0, &[]), "NaN"),
            (numeric_send(0, 0, NUMERIC_PINF, 0, &[]), "Infinity"),
            (numeric_send(0, 0, NUMERIC_NINF, 0, &[]), "-Infinity"),
        ];
        for (bytes, text) in cases {
            let mut out = String::new();
            numeric(&bytes, &mut Vec::new(), &mut out).unwrap();
            assert_eq!(out, text);
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let int = [ty(ScalarKind::Int4)];
        assert!(matches!(
            decode_all(&int, b"PGCOPY\n\xff\r\n\x01"),
            Err(CopyError::Signature)
        ));
        let mut flags = SIGNATURE.to_vec();
        flags.extend_from_slice(&0x0002_0000u32.to_be_bytes());
        flags.extend_from_slice(&0u32.to_be_bytes());
        assert!(matches!(decode_all(&int, &flags), Err(CopyError::Flags(_))));

        let mut two = header();
        tuple(&mut two, &[Some(b"\0\0\0\x01"), Some(b"\0\0\0\x02")]);
        assert!(matches!(
            decode_all(&int, &two),
            Err(CopyError::FieldCount { got: 2, .. })
        ));
        let mut short = header();
        tuple(&mut short, &[Some(b"\0\x01")]);
        assert!(matches!(
            decode_all(&int, &short),
            Err(CopyError::Binary { column: 0, .. })
        ));
        let mut negative = header();
        negative.extend_from_slice(&1i16.to_be_bytes());
        negative.extend_from_slice(&(-7i32).to_be_bytes());
        assert!(matches!(
            decode_all(&int, &negative),
            Err(CopyError::Length { len: -7, .. })
        ));
        let mut cut = header();
        tuple(&mut cut, &[Some(b"\0\0\0\x01")]);
        assert!(matches!(decode_all(&int, &cut), Err(CopyError::Truncated)));
        let mut after = cut.clone();
        after.extend_from_slice(&(-1i16).to_be_bytes());
        after.push(0);
        assert!(matches!(
            decode_all(&int, &after),
            Err(CopyError::AfterTrailer)
        ));
        let mut bad_utf8 = header();
        tuple(&mut bad_utf8, &[Some(b"\xff")]);
        assert!(matches!(
            decode_all(&[ty(ScalarKind::Text)], &bad_utf8),
            Err(CopyError::Binary { .. })
        ));
        let mut bad_digit = header();
        tuple(
            &mut bad_digit,
            &[Some(&numeric_send(1, 0, NUMERIC_POS, 0, &[10_000]))],
        );
        assert!(matches!(
            decode_all(&[ty(ScalarKind::Numeric)], &bad_digit),
            Err(CopyError::Binary { .. })
        ));
    }

    proptest! {
        /// Arbitrary bytes after a valid header: a row, a wait for more, or a typed error; never a
        /// panic, and a huge declared length allocates nothing by it.
        #[test]
        fn arbitrary_tuples_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let types = [
                ty(ScalarKind::Numeric),
                ty(ScalarKind::Time),
                ty(ScalarKind::Uuid),
                ty(ScalarKind::Text),
            ];
            let mut data = header();
            data.extend_from_slice(&body);
            let mut d = CopyDecoder::new(&types);
            d.push(&data);
            while let Ok(Some(_)) = d.next_row() {}
        }

        /// Rows decoded into the rows of an earlier batch (their buffers reused, a value where
        /// there was NULL and back, long texts past the reuse limit) equal rows decoded fresh.
        #[test]
        fn decoding_into_used_rows_equals_decoding_fresh(
            first in proptest::collection::vec(any_row(), 0..12),
            second in proptest::collection::vec(any_row(), 0..12),
        ) {
            let types = reuse_types();
            let fresh = decode_all(&types, &copy_data(&second)).unwrap();
            let mut rows = decode_all(&types, &copy_data(&first)).unwrap();
            let mut d = CopyDecoder::new(&types);
            d.push(&copy_data(&second));
            let mut n = 0;
            loop {
                if n == rows.len() {
                    rows.push(Vec::new());
                }
                if !d.next_row_into(&mut rows[n]).unwrap() {
                    break;
                }
                n += 1;
            }
            d.finish().unwrap();
            rows.truncate(n);
            prop_assert_eq!(rows, fresh);
        }
    }

    fn reuse_types() -> Vec<ColumnType> {
        use ScalarKind::*;
        [
            Int8,
            Text,
            Numeric,
            Timestamptz,
            Timestamp,
            Date,
            Time,
            Uuid,
            Bytea,
            Bool,
            Float8,
        ]
        .into_iter()
        .map(ty)
        .collect()
    }

    /// One tuple of `reuse_types()` in send form, each field possibly NULL.
    fn any_row() -> impl Strategy<Value = Vec<Option<Vec<u8>>>> {
        let text = prop_oneof![".{0,8}", ".{4097,4200}"].prop_map(String::into_bytes);
        let numeric = (
            proptest::collection::vec(0u16..10_000, 0..4),
            -3i16..3,
            any::<bool>(),
            0u16..6,
        )
            .prop_map(|(d, w, neg, scale)| {
                let sign = if neg { NUMERIC_NEG } else { NUMERIC_POS };
                numeric_send(d.len() as i16, w, sign, scale, &d)
            });
        (
            proptest::option::of(any::<i64>().prop_map(|v| v.to_be_bytes().to_vec())),
            proptest::option::of(text),
            proptest::option::of(numeric),
            proptest::option::of(any::<i64>().prop_map(|v| (v / 4).to_be_bytes().to_vec())),
            proptest::option::of(any::<i64>().prop_map(|v| (v / 4).to_be_bytes().to_vec())),
            proptest::option::of(any::<i32>().prop_map(|v| v.to_be_bytes().to_vec())),
            proptest::option::of((0..=USECS_PER_DAY).prop_map(|v| v.to_be_bytes().to_vec())),
            proptest::option::of(any::<[u8; 16]>().prop_map(|v| v.to_vec())),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..5000)),
            proptest::option::of(any::<bool>().prop_map(|v| vec![v as u8])),
            proptest::option::of((-1e300f64..1e300).prop_map(|v| v.to_be_bytes().to_vec())),
        )
            .prop_map(|(a, b, c, d, e, f, g, h, i, j, k)| vec![a, b, c, d, e, f, g, h, i, j, k])
    }

    fn copy_data(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut data = header();
        for r in rows {
            let fields: Vec<Option<&[u8]>> = r.iter().map(|f| f.as_deref()).collect();
            tuple(&mut data, &fields);
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        data
    }
}
