//! The one JSON spelling of normalized values and rows, shared by the SQLite change history (`before`,
//! `after`, array columns) and the JSON Lines events.
//!
//! | value | JSON |
//! |---|---|
//! | null, bool, integer | `null`, `true`/`false`, a number |
//! | float | a number (shortest text that reads back to the same `f64`); NaN and the infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (JSON has no such numbers) |
//! | numeric | a string holding the exact decimal (`"12.50"`, `"NaN"`), never a JSON number (consumers would round it) |
//! | bytea | a string, standard base64 with padding |
//! | json/jsonb | a string holding the JSON text as the server sent it (exact: duplicate keys, number spellings) |
//! | text, dates, times, uuid, enum, other | a string |
//! | array | a JSON array of the element spellings (nested for multi-dimensional arrays) |
//!
//! Rows are objects keyed by column name, in relation order. Written straight into a `String` without
//! building a tree: this runs for every change.

use std::fmt::Write;

use base64::Engine;

use crate::model::{Column, Value};

/// Appends the JSON spelling of `value`.
pub fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
        Value::Float(f) => push_float(out, *f),
        Value::Bytes(b) => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            out.push('"');
        }
        Value::Array(items) => push_list(out, items),
        Value::BoundedArray(b) => {
            out.push_str("{\"lower_bounds\":[");
            for (i, lo) in b.lower.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(itoa::Buffer::new().format(*lo));
            }
            out.push_str("],\"elements\":");
            push_list(out, &b.elements);
            out.push('}');
        }
        Value::Numeric(s)
        | Value::Text(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Timestamp(s)
        | Value::Timestamptz(s)
        | Value::Uuid(s)
        | Value::Json(s)
        | Value::Enum(s)
        | Value::Other(s) => push_str(out, s),
    }
}

fn push_list(out: &mut String, items: &[Value]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_value(out, item);
    }
    out.push(']');
}

/// The text SQLite and JSON store for a float that is not a finite number, or `None` for a finite one.
pub fn non_finite_text(f: f64) -> Option<&'static str> {
    if f.is_nan() {
        Some("NaN")
    } else if f == f64::INFINITY {
        Some("Infinity")
    } else if f == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

/// Reads back [`non_finite_text`].
pub fn parse_non_finite(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn push_float(out: &mut String, f: f64) {
    match non_finite_text(f) {
        Some(t) => push_str(out, t),
        // Debug is Rust's shortest round-trip form ("1.0", "1e300", "-0.0"): valid JSON numbers.
        None => {
            let _ = write!(out, "{f:?}");
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let clean = clean_prefix(bytes);
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// How many leading bytes of `bytes` (whole 8-byte words) need no escaping: most strings are all
/// plain text, and testing eight bytes at a time keeps the escaping scan off the profile.
fn clean_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Nonzero when some byte of `w` is below `n` (n ≤ 128); exact as a yes/no answer.
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH;
    let mut clean = 0;
    for word in bytes.chunks_exact(8) {
        let w = u64::from_le_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        let special = below(w, 0x20) | below(w ^ (ONES * 0x22), 1) | below(w ^ (ONES * 0x5c), 1);
        if special != 0 {
            break;
        }
        clean += 8;
    }
    clean
}

/// Appends a row as an object keyed by column name. `positions` picks which columns `values` holds
/// (`None`: all, in order); columns listed in `skip` (positions, ascending) are left out.
pub fn push_row(
    out: &mut String,
    columns: &[Column],
    positions: Option<&[usize]>,
    values: &[Value],
    skip: &[usize],
) {
    out.push('{');
    let mut first = true;
    for (i, value) in values.iter().enumerate() {
        let pos = positions.map_or(i, |p| p[i]);
        if skip.binary_search(&pos).is_ok() {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_str(out, &columns[pos].name);
        out.push(':');
        push_value(out, value);
    }
    out.push('}');
}

/// The object keys of a relation's rows, spelled once (`"name":`), for rows written by the million.
#[derive(Debug, Clone)]
pub struct Keys(Vec<String>);

impl Keys {
    pub fn new(columns: &[Column]) -> Keys {
        Keys(
            columns
                .iter()
                .map(|c| {
                    let mut k = String::with_capacity(c.name.len() + 3);
                    push_str(&mut k, &c.name);
                    k.push(':');
                    k
                })
                .collect(),
        )
    }

    /// Appends a whole row (one value per column, in order) as [`push_row`] would.
    pub fn push_row(&self, out: &mut String, values: &[Value]) {
        out.push('{');
        for (i, (key, value)) in self.0.iter().zip(values).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            push_value(out, value);
        }
        out.push('}');
    }

    /// Appends the values of the columns at `positions` (a key-only old row) as [`push_row`] would.
    pub fn push_at(&self, out: &mut String, positions: &[usize], values: &[Value]) {
        out.push('{');
        for (i, (&pos, value)) in positions.iter().zip(values).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&self.0[pos]);
            push_value(out, value);
        }
        out.push('}');
    }
}

/// Appends a JSON array of the names of `columns` at `positions`.
pub fn push_names(out: &mut String, columns: &[Column], positions: &[usize]) {
    out.push('[');
    for (i, &p) in positions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, &columns[p].name);
    }
    out.push(']');
}

/// The JSON text of a whole value (array columns in SQLite).
pub fn value_to_string(value: &Value) -> String {
    let mut s = String::new();
    push_value(&mut s, value);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn j(v: &Value) -> serde_json::Value {
        serde_json::from_str(&value_to_string(v)).expect("valid JSON")
    }

    #[test]
    fn spells_values_per_design() {
        assert_eq!(value_to_string(&Value::Null), "null");
        assert_eq!(value_to_string(&Value::Bool(true)), "true");
        assert_eq!(
            value_to_string(&Value::Int(i64::MIN)),
            "-9223372036854775808"
        );
        assert_eq!(value_to_string(&Value::Float(1.5)), "1.5");
        assert_eq!(value_to_string(&Value::Float(f64::NAN)), "\"NaN\"");
        assert_eq!(
            value_to_string(&Value::Float(f64::INFINITY)),
            "\"Infinity\""
        );
        assert_eq!(
            value_to_string(&Value::Float(f64::NEG_INFINITY)),
            "\"-Infinity\""
        );
        assert_eq!(
            value_to_string(&Value::Numeric("12.50".into())),
            "\"12.50\""
        );
        assert_eq!(
            value_to_string(&Value::Bytes(vec![0, 1, 2, 255])),
            "\"AAEC/w==\""
        );
        assert_eq!(
            value_to_string(&Value::Json("{\"a\": 1}".into())),
            "\"{\\\"a\\\": 1}\""
        );
        assert_eq!(
            value_to_string(&Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Null]),
                Value::Array(vec![Value::Int(3), Value::Int(4)])
            ])),
            "[[1,null],[3,4]]"
        );
        assert_eq!(
            value_to_string(&Value::bounded(
                vec![0, -2],
                vec![Value::Array(vec![Value::Int(1), Value::Null])]
            )),
            r#"{"lower_bounds":[0,-2],"elements":[[1,null]]}"#
        );
        assert_eq!(j(&Value::Float(1e300)), serde_json::json!(1e300));
        assert_eq!(
            j(&Value::Float(-0.0)).as_f64().unwrap().to_bits(),
            (-0.0f64).to_bits()
        );
    }

    #[test]
    fn keyed_rows_spell_like_push_row() {
        let cols = vec![
            crate::sink::testkit::col("a\"b", "integer", 23, true),
            crate::sink::testkit::col("c", "text", 25, false),
        ];
        let values = [Value::Int(-7), Value::Text("x\ny".into())];
        let mut plain = String::new();
        push_row(&mut plain, &cols, None, &values, &[]);
        let mut keyed = String::new();
        Keys::new(&cols).push_row(&mut keyed, &values);
        assert_eq!(plain, keyed);
        assert_eq!(keyed, r#"{"a\"b":-7,"c":"x\ny"}"#);
        // A key-only old row (the second column alone).
        let (mut plain, mut keyed) = (String::new(), String::new());
        push_row(&mut plain, &cols, Some(&[1]), &values[1..], &[]);
        Keys::new(&cols).push_at(&mut keyed, &[1], &values[1..]);
        assert_eq!(plain, keyed);
        assert_eq!(keyed, r#"{"c":"x\ny"}"#);
    }

    #[test]
    fn escapes_control_characters_and_quotes() {
        let s = "a\"b\\c\nd\u{1}e\u{7f}é\u{2028}";
        let mut out = String::new();
        push_str(&mut out, s);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        assert!(out.contains("\\u0001"));
    }

    #[test]
    fn rows_skip_and_pick_columns() {
        let cols = vec![
            crate::sink::testkit::col("id", "bigint", 20, true),
            crate::sink::testkit::col("doc", "text", 25, false),
            crate::sink::testkit::col("n", "integer", 23, false),
        ];
        let mut out = String::new();
        push_row(
            &mut out,
            &cols,
            None,
            &[Value::Int(1), Value::Null, Value::Int(3)],
            &[1],
        );
        assert_eq!(out, r#"{"id":1,"n":3}"#);
        out.clear();
        push_row(&mut out, &cols, Some(&[0]), &[Value::Int(7)], &[]);
        assert_eq!(out, r#"{"id":7}"#);
        out.clear();
        push_names(&mut out, &cols, &[1, 2]);
        assert_eq!(out, r#"["doc","n"]"#);
    }

    proptest! {
        #[test]
        fn strings_round_trip(s in "\\PC*|[\\x00-\\x1f\"\\\\]*") {
            let mut out = String::new();
            push_str(&mut out, &s);
            prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }

        /// Plain text with characters to escape anywhere in it: before, inside and after the
        /// 8-byte words the fast scan skips.
        #[test]
        fn mixed_strings_round_trip(s in "[a-zé€\"\\\\\x00-\x1f]{0,40}") {
            let mut out = String::new();
            push_str(&mut out, &s);
            prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }

        #[test]
        fn finite_floats_round_trip(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let back = serde_json::from_str::<f64>(&value_to_string(&Value::Float(f))).unwrap();
            prop_assert_eq!(back.to_bits(), f.to_bits());
        }
    }
}
