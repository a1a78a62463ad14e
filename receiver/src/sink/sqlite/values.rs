//! Normalized values in and out of SQLite.
//!
//! | value | SQLite storage class |
//! |---|---|
//! | integer | INTEGER |
//! | bool | INTEGER 0 / 1 |
//! | float | REAL; NaN and ±Infinity as TEXT `'NaN'`, `'Infinity'`, `'-Infinity'` (SQLite turns a bound NaN into NULL, and a REAL column could not tell them apart from numbers anyway) |
//! | numeric | TEXT, the exact decimal (`'12.50'`, `'NaN'`) |
//! | bytea | BLOB |
//! | array | TEXT holding the JSON array (see [`crate::sink::json`]) |
//! | text, dates, times, uuid, json, enum, other | TEXT |
//!
//! Mirror columns are declared with a type ([`declared_type`], or none) whose SQLite affinity never
//! converts what is bound for that kind: a column declared `NUMERIC` would turn `'1.50'` into the REAL `1.5`,
//! so exact decimals are `DECIMAL_TEXT`. The PostgreSQL type of each column is in `_fig_schema`.
//!
//! Reading back ([`read`]) uses the column's PostgreSQL type name to restore the variant; a type this
//! module does not know comes back as [`Value::Other`] (enum labels too: they are stored and spelled the
//! same way).

use base64::Engine;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};

use crate::model::{Column, Value};
use crate::sink::json;

/// A [`Value`] bound as a statement parameter.
pub(crate) struct Bind<'a>(pub &'a Value);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Float(f) => match json::non_finite_text(*f) {
                Some(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
                None => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            },
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Array(_) | Value::BoundedArray(_) => {
                ToSqlOutput::Owned(rusqlite::types::Value::Text(json::value_to_string(self.0)))
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
            | Value::Other(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// The type a mirror column is declared with, so readers (BI tools, `PRAGMA table_info`) see what
/// it holds, or `None` to declare none. Each name is chosen for the SQLite affinity it gives, which
/// must never change a value bound for that kind: `INTEGER` (integers, booleans), `BLOB` (bytea: no
/// affinity), and names containing `TEXT` for values stored as text, with the PostgreSQL kind in
/// front (`DECIMAL_TEXT`: an exact decimal, which a declared `NUMERIC` would round through floating
/// point; `TIMESTAMPTZ_TEXT`, `DATE_TEXT`, `UUID_TEXT`, `JSON_TEXT` for json and arrays). Floats and
/// types without a native form are declared without a type: `REAL` affinity stores an integral
/// float as an integer and loses the sign of `-0`, and a type this module does not know may arrive
/// as any value. A column keeps its declared type when the source type changes (SQLite cannot alter
/// it); the re-copy that a type change brings creates the mirror anew, with the new one.
pub(crate) fn declared_type(column: &Column) -> Option<&'static str> {
    Some(match kind_of(&column.type_name) {
        (Kind::Other | Kind::Float, false) => return None,
        (_, true) => "JSON_TEXT",
        (Kind::Bool | Kind::Int, false) => "INTEGER",
        (Kind::Bytes, false) => "BLOB",
        (Kind::Numeric, false) => "DECIMAL_TEXT",
        (Kind::Date, false) => "DATE_TEXT",
        (Kind::Time, false) => "TIME_TEXT",
        (Kind::Timestamp, false) => "TIMESTAMP_TEXT",
        (Kind::Timestamptz, false) => "TIMESTAMPTZ_TEXT",
        (Kind::Uuid, false) => "UUID_TEXT",
        (Kind::Json, false) => "JSON_TEXT",
        (Kind::Text, false) => "TEXT",
    })
}

/// The normalized kind of a PostgreSQL type, from its `format_type` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Numeric,
    Bytes,
    Text,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Uuid,
    Json,
    Other,
}

/// (kind, is an array) of a `format_type` name such as `numeric(18,2)`, `timestamp(3) with time zone`,
/// `character varying(20)[]`.
fn kind_of(type_name: &str) -> (Kind, bool) {
    let (base, array) = match type_name.strip_suffix("[]") {
        Some(b) => (b, true),
        None => (type_name, false),
    };
    // Drop type modifiers wherever they stand: `timestamp(3) without time zone`.
    let mut name = String::with_capacity(base.len());
    let mut depth = 0u32;
    for ch in base.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => name.push(ch),
            _ => {}
        }
    }
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    let kind = match name.as_str() {
        "boolean" => Kind::Bool,
        "smallint" | "integer" | "bigint" | "oid" => Kind::Int,
        "real" | "double precision" => Kind::Float,
        "numeric" | "money" => Kind::Numeric,
        "bytea" => Kind::Bytes,
        "text" | "character varying" | "character" | "\"char\"" | "name" => Kind::Text,
        "date" => Kind::Date,
        "time without time zone" | "time" => Kind::Time,
        "timestamp without time zone" | "timestamp" => Kind::Timestamp,
        "timestamp with time zone" => Kind::Timestamptz,
        "uuid" => Kind::Uuid,
        "json" | "jsonb" => Kind::Json,
        _ => Kind::Other,
    };
    (kind, array)
}

fn from_text(kind: Kind, s: String) -> Value {
    match kind {
        Kind::Float => json::parse_non_finite(&s).map_or(Value::Other(s), Value::Float),
        Kind::Numeric => Value::Numeric(s),
        Kind::Text => Value::Text(s),
        Kind::Date => Value::Date(s),
        Kind::Time => Value::Time(s),
        Kind::Timestamp => Value::Timestamp(s),
        Kind::Timestamptz => Value::Timestamptz(s),
        Kind::Uuid => Value::Uuid(s),
        Kind::Json => Value::Json(s),
        Kind::Bytes => match base64::engine::general_purpose::STANDARD.decode(&s) {
            Ok(b) => Value::Bytes(b),
            Err(_) => Value::Other(s),
        },
        Kind::Bool | Kind::Int | Kind::Other => Value::Other(s),
    }
}

fn from_json(kind: Kind, j: serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match (kind, n.as_i64()) {
            (Kind::Float, _) | (_, None) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            (_, Some(i)) => Value::Int(i),
        },
        serde_json::Value::String(s) => from_text(kind, s),
        serde_json::Value::Array(items) => {
            Value::Array(items.into_iter().map(|i| from_json(kind, i)).collect())
        }
        serde_json::Value::Object(ref o) => match bounded(o) {
            Some((lower, elements)) => Value::bounded(
                lower,
                elements
                    .iter()
                    .map(|i| from_json(kind, i.clone()))
                    .collect(),
            ),
            None => Value::Other(j.to_string()),
        },
    }
}

/// The parts of a [`Value::BoundedArray`]'s JSON spelling (`{"lower_bounds":[0],"elements":[…]}`).
fn bounded(
    o: &serde_json::Map<String, serde_json::Value>,
) -> Option<(Vec<i32>, &Vec<serde_json::Value>)> {
    if o.len() != 2 {
        return None;
    }
    let lower = o
        .get("lower_bounds")?
        .as_array()?
        .iter()
        .map(|l| l.as_i64().and_then(|l| i32::try_from(l).ok()))
        .collect::<Option<Vec<i32>>>()?;
    Some((lower, o.get("elements")?.as_array()?))
}

/// The value a history row (`_fig_changes.before` / `after`, see [`crate::sink::json`]) holds for
/// `column`: the inverse of the JSON spelling, so a replayed change binds exactly what the original
/// one bound.
pub(crate) fn from_history(column: &Column, j: serde_json::Value) -> Value {
    from_json(kind_of(&column.type_name).0, j)
}

/// The value stored in a mirror column of PostgreSQL type `column.type_name`.
pub(crate) fn read(column: &Column, stored: ValueRef<'_>) -> Value {
    let (kind, array) = kind_of(&column.type_name);
    match stored {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) if kind == Kind::Bool => Value::Bool(i != 0),
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t).into_owned();
            if array {
                match serde_json::from_str::<serde_json::Value>(&s) {
                    Ok(j @ (serde_json::Value::Array(_) | serde_json::Value::Object(_))) => {
                        from_json(kind, j)
                    }
                    _ => Value::Other(s),
                }
            } else {
                from_text(kind, s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testkit::col;

    fn round_trip(type_name: &str, v: Value) -> Value {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute("CREATE TABLE t (v)", []).unwrap();
        conn.execute("INSERT INTO t VALUES (?1)", [Bind(&v)])
            .unwrap();
        let c = col("v", type_name, 0, false);
        conn.query_row("SELECT v FROM t", [], |r| Ok(read(&c, r.get_ref(0)?)))
            .unwrap()
    }

    #[test]
    fn values_come_back_as_they_went_in() {
        let cases = [
            ("boolean", Value::Bool(true)),
            ("bigint", Value::Int(i64::MIN)),
            ("double precision", Value::Float(-1.25e-300)),
            ("double precision", Value::Float(f64::INFINITY)),
            ("double precision", Value::Float(f64::NEG_INFINITY)),
            ("numeric(18,2)", Value::Numeric("1.50".into())),
            ("numeric", Value::Numeric("NaN".into())),
            ("bytea", Value::Bytes(vec![0, 255, 1])),
            ("character varying(20)", Value::Text("x".into())),
            ("date", Value::Date("-infinity".into())),
            (
                "time without time zone",
                Value::Time("24:00:00.000000".into()),
            ),
            (
                "timestamp(3) without time zone",
                Value::Timestamp("2024-01-01T00:00:00.000000".into()),
            ),
            (
                "timestamp with time zone",
                Value::Timestamptz("2024-01-01T00:00:00.000000Z".into()),
            ),
            (
                "uuid",
                Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            ),
            ("jsonb", Value::Json("{\"a\": 1}".into())),
            ("interval", Value::Other("1 day".into())),
            (
                "integer[]",
                Value::Array(vec![
                    Value::Array(vec![Value::Int(1), Value::Null]),
                    Value::Array(vec![Value::Int(3), Value::Int(4)]),
                ]),
            ),
            (
                "numeric[]",
                Value::Array(vec![
                    Value::Numeric("1.10".into()),
                    Value::Numeric("NaN".into()),
                ]),
            ),
            (
                "double precision[]",
                Value::Array(vec![Value::Float(1.0), Value::Float(f64::INFINITY)]),
            ),
            ("bytea[]", Value::Array(vec![Value::Bytes(vec![1, 2])])),
            (
                "text[]",
                Value::Array(vec![Value::Text("a\"b".into()), Value::Null]),
            ),
            (
                "integer[]",
                Value::bounded(
                    vec![0, -3],
                    vec![
                        Value::Array(vec![Value::Int(1), Value::Null]),
                        Value::Array(vec![Value::Int(3), Value::Int(4)]),
                    ],
                ),
            ),
            (
                "text[]",
                Value::Array(vec![Value::bounded(
                    vec![i32::MIN],
                    vec![Value::Text("x".into())],
                )]),
            ),
        ];
        for (t, v) in cases {
            assert_eq!(round_trip(t, v.clone()), v, "{t}");
        }
        match round_trip("real", Value::Float(f64::NAN)) {
            Value::Float(f) => assert!(f.is_nan()),
            other => panic!("NaN came back as {other:?}"),
        }
    }

    proptest::proptest! {
        /// A value spelled in the history and read back binds exactly what the original bound.
        #[test]
        fn history_values_read_back_bind_the_same(
            i in proptest::num::i64::ANY,
            f in proptest::num::f64::ANY,
            s in ".*",
            b in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
        ) {
            let cases = [
                ("bigint", Value::Int(i)),
                ("boolean", Value::Bool(i % 2 == 0)),
                ("double precision", Value::Float(f)),
                ("double precision", Value::Float(i as f64)),
                ("numeric(20,4)", Value::Numeric(format!("{i}.0100"))),
                ("text", Value::Text(s.clone())),
                ("bytea", Value::Bytes(b.clone())),
                ("jsonb", Value::Json(s.clone())),
                ("timestamp with time zone", Value::Timestamptz(s.clone())),
                ("double precision[]", Value::Array(vec![Value::Float(f), Value::Null, Value::Float(1.0)])),
                ("text[]", Value::Array(vec![Value::Array(vec![Value::Text(s.clone())])])),
                ("bytea[]", Value::Array(vec![Value::Bytes(b.clone())])),
                ("text[]", Value::bounded(vec![i as i32], vec![Value::Text(s.clone())])),
                ("bigint", Value::Null),
            ];
            for (type_name, v) in cases {
                let c = col("v", type_name, 0, false);
                let j: serde_json::Value = serde_json::from_str(&json::value_to_string(&v)).unwrap();
                let back = from_history(&c, j);
                let conn = rusqlite::Connection::open_in_memory().unwrap();
                let stored = |v: &Value| -> rusqlite::types::Value {
                    conn.query_row("SELECT ?1", [Bind(v)], |r| r.get(0)).unwrap()
                };
                proptest::prop_assert_eq!(stored(&back), stored(&v), "{}: {:?}", type_name, v);
            }
        }
    }

    /// Every value a column of its kind gets is stored, in a column of its declared type, as it
    /// is stored in an untyped one: the declared type informs, it never converts.
    #[test]
    fn declared_types_never_convert_what_is_stored() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let cases = [
            ("bigint", Value::Int(i64::MAX)),
            ("boolean", Value::Bool(true)),
            ("double precision", Value::Float(3.0)),
            ("double precision", Value::Float(-0.0)),
            ("double precision", Value::Float(f64::NAN)),
            ("real", Value::Float(f64::NEG_INFINITY)),
            (
                "numeric(18,2)",
                Value::Numeric("12345678901234567890.10".into()),
            ),
            ("numeric", Value::Numeric("1.50".into())),
            ("numeric", Value::Numeric("Infinity".into())),
            ("bytea", Value::Bytes(vec![0, 1])),
            ("text", Value::Text("42".into())),
            ("text", Value::Text("1e5".into())),
            ("character varying(3)", Value::Text("007".into())),
            ("date", Value::Date("2024-01-01".into())),
            (
                "timestamp with time zone",
                Value::Timestamptz("2024-01-01T00:00:00.000000Z".into()),
            ),
            (
                "uuid",
                Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            ),
            ("jsonb", Value::Json("123".into())),
            ("integer[]", Value::Array(vec![Value::Int(1)])),
            ("interval", Value::Other("00:00:01".into())),
            ("mood", Value::Enum("1".into())),
        ];
        for (type_name, v) in cases {
            let c = col("v", type_name, 0, false);
            conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS typed; DROP TABLE IF EXISTS plain;                  CREATE TABLE typed (v {}); CREATE TABLE plain (v);",
                declared_type(&c).unwrap_or_default()
            ))
            .unwrap();
            let stored = |table: &str| -> (String, rusqlite::types::Value) {
                conn.execute(&format!("INSERT INTO {table} VALUES (?1)"), [Bind(&v)])
                    .unwrap();
                conn.query_row(&format!("SELECT typeof(v), v FROM {table}"), [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap()
            };
            assert_eq!(stored("typed"), stored("plain"), "{type_name}: {v:?}");
        }
    }

    #[test]
    fn storage_classes_follow_the_table() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute("CREATE TABLE t (v)", []).unwrap();
        let cases = [
            (Value::Int(1), "integer"),
            (Value::Bool(false), "integer"),
            (Value::Float(0.5), "real"),
            (Value::Float(f64::NAN), "text"),
            (
                Value::Numeric("123456789012345678901234567890.5".into()),
                "text",
            ),
            (Value::Bytes(vec![1]), "blob"),
            (Value::Array(vec![]), "text"),
            (Value::Null, "null"),
        ];
        for (v, class) in cases {
            conn.execute("DELETE FROM t", []).unwrap();
            conn.execute("INSERT INTO t VALUES (?1)", [Bind(&v)])
                .unwrap();
            let got: String = conn
                .query_row("SELECT typeof(v) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(got, class, "{v:?}");
        }
    }
}
