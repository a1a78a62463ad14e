//! Human-readable rendering of decoded values (JSON-like literals), for tools and logs.
//! Dates and times use [`crate::datetime`]; numerics are shown exactly as they travel.

use crate::datetime::{format_date, format_time, format_timestamp};
use crate::decode::Value;
use std::fmt;

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::UnchangedToast => f.write_str("<unchanged toast>"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float4(x) => write!(f, "{x}"),
            Value::Float8(x) => write!(f, "{x}"),
            Value::Numeric(n) => f.write_str(n),
            Value::Text(s) | Value::Enum(s) | Value::Other(s) => write!(f, "{s:?}"),
            Value::Json(s) => f.write_str(s),
            Value::Bytes(b) => {
                f.write_str("\\x")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))
            }
            Value::Date(d) => write!(f, "{:?}", format_date(*d)),
            Value::Time(t) => write!(f, "{:?}", format_time(*t)),
            Value::Timestamp(t) => write!(f, "{:?}", format_timestamp(*t, false)),
            Value::Timestamptz(t) => write!(f, "{:?}", format_timestamp(*t, true)),
            Value::Uuid(u) => {
                let h: String = u.iter().map(|x| format!("{x:02x}")).collect();
                write!(
                    f,
                    "\"{}-{}-{}-{}-{}\"",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            }
            Value::Array(a) => {
                f.write_str("[")?;
                for (i, e) in a.elements.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_readably() {
        assert_eq!(Value::Numeric("-1.50".into()).to_string(), "-1.50");
        assert_eq!(Value::Text("a\"b").to_string(), "\"a\\\"b\"");
        assert_eq!(
            Value::Timestamptz(0).to_string(),
            "\"2000-01-01T00:00:00.000000Z\""
        );
        assert_eq!(
            Value::Uuid([0xab; 16]).to_string(),
            "\"abababab-abab-abab-abab-abababababab\""
        );
        assert_eq!(Value::Bytes(&[0, 255]).to_string(), "\\x00ff");
    }
}
