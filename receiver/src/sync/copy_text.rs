//! COPY's text format, decoded with the pgoutput text parsers (`decode::pg_text`): one row per line,
//! fields separated by tabs, `\N` for NULL, backslash escapes. Each field becomes the same normalized
//! value the CDC path produces for that type.

use crate::decode::pg_text;
use crate::decode::types::ColumnType;
use crate::model::Value;

/// The `FORMAT` option of the COPY this decoder reads.
pub const FORMAT: &str = "text";

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("row {row}: {got} fields, {expected} columns expected")]
    FieldCount {
        row: u64,
        got: usize,
        expected: usize,
    },
    #[error("row {row}, column {column}: {source}")]
    Value {
        row: u64,
        column: usize,
        source: pg_text::TextError,
    },
    #[error("the data ended inside a row")]
    Truncated,
}

/// What the query selects for a column: the column itself (its text output is what pg_text parses).
pub fn select_expr(_column: &ColumnType, quoted_name: &str) -> String {
    quoted_name.to_string()
}

/// Rows from COPY text data fed in arbitrary chunks.
pub struct CopyDecoder {
    types: Vec<ColumnType>,
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    pos: usize,
    rows: u64,
    field: Vec<u8>,
}

impl CopyDecoder {
    pub fn new(types: &[ColumnType]) -> Self {
        CopyDecoder {
            types: types.to_vec(),
            buf: Vec::new(),
            pos: 0,
            rows: 0,
            field: Vec::new(),
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete row, or `None` until more data arrives.
    pub fn next_row(&mut self) -> Result<Option<Vec<Value>>, CopyError> {
        let rest = &self.buf[self.pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = &rest[..nl];
        self.rows += 1;
        let row = self.rows;
        let expected = self.types.len();
        let mut out = Vec::with_capacity(expected);
        // A table without columns has empty lines.
        let fields = if expected == 0 && line.is_empty() {
            0
        } else {
            line.split(|&b| b == b'\t').count()
        };
        if fields != expected {
            return Err(CopyError::FieldCount {
                row,
                got: fields,
                expected,
            });
        }
        for (i, f) in line.split(|&b| b == b'\t').take(expected).enumerate() {
            if f == b"\\N" {
                out.push(Value::Null);
                continue;
            }
            self.field.clear();
            let mut it = f.iter();
            while let Some(&c) = it.next() {
                if c != b'\\' {
                    self.field.push(c);
                    continue;
                }
                match it.next() {
                    Some(b't') => self.field.push(b'\t'),
                    Some(b'n') => self.field.push(b'\n'),
                    Some(b'r') => self.field.push(b'\r'),
                    Some(b'b') => self.field.push(8),
                    Some(b'f') => self.field.push(12),
                    Some(b'v') => self.field.push(11),
                    Some(&other) => self.field.push(other),
                    None => {}
                }
            }
            let value = pg_text::parse(self.types[i].format, &self.field).map_err(|source| {
                CopyError::Value {
                    row,
                    column: i,
                    source,
                }
            })?;
            out.push(value);
        }
        self.pos += nl + 1;
        Ok(Some(out))
    }

    /// Checks that the data did not end inside a row.
    pub fn finish(&self) -> Result<(), CopyError> {
        if self.pos < self.buf.len() {
            return Err(CopyError::Truncated);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::types::{ScalarKind, TextFormat};

    fn ty(kind: ScalarKind) -> ColumnType {
        ColumnType {
            name: "t".into(),
            format: TextFormat::Scalar(kind),
        }
    }

    #[test]
    fn rows_split_anywhere_decode_the_same() {
        let data = b"1\ta\\tb\\\\c\t\\N\n2\t\t12.50\n";
        let types = [
            ty(ScalarKind::Int4),
            ty(ScalarKind::Text),
            ty(ScalarKind::Numeric),
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
            assert_eq!(
                rows,
                vec![
                    vec![Value::Int(1), Value::Text("a\tb\\c".into()), Value::Null],
                    vec![
                        Value::Int(2),
                        Value::Text(String::new()),
                        Value::Numeric("12.50".into())
                    ],
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let types = [ty(ScalarKind::Int4)];
        let mut d = CopyDecoder::new(&types);
        d.push(b"1\t2\n");
        assert!(matches!(
            d.next_row(),
            Err(CopyError::FieldCount { got: 2, .. })
        ));
        let mut d = CopyDecoder::new(&types);
        d.push(b"x\n");
        assert!(matches!(
            d.next_row(),
            Err(CopyError::Value { column: 0, .. })
        ));
        let mut d = CopyDecoder::new(&types);
        d.push(b"1");
        assert!(d.next_row().unwrap().is_none());
        assert!(matches!(d.finish(), Err(CopyError::Truncated)));
    }
}
