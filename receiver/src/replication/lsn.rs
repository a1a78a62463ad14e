//! Log sequence numbers.
//!
//! An LSN is a byte position in the server's write-ahead log: a plain `u64`. PostgreSQL prints it as two
//! 32-bit halves in upper-case hexadecimal separated by a slash (`16/B374D848`), and accepts one to eight
//! hex digits of either case on each side. [`Lsn`] reads and writes exactly that form, so a value can go
//! into a replication command, a SQL literal (`'16/B374D848'::pg_lsn`) or a log line unchanged.
//!
//! An LSN orders the WAL; it does not identify an event (DESIGN.md rule 3): several changes of one
//! transaction may share one, and the commit LSN is what orders transactions.

use std::fmt;
use std::str::FromStr;

/// A position in the write-ahead log.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `0/0`: PostgreSQL's `InvalidXLogRecPtr`. In `START_REPLICATION` it means "from the slot's
    /// `confirmed_flush_lsn`"; in a standby status update the server ignores it.
    pub const INVALID: Lsn = Lsn(0);

    /// The raw byte position.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether this is [`Lsn::INVALID`].
    pub const fn is_invalid(self) -> bool {
        self.0 == 0
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(value: Lsn) -> Self {
        value.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Why a string is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an LSN: expected two hexadecimal numbers of 1 to 8 digits separated by `/`, like `16/B374D848`")]
pub struct ParseLsnError {
    /// The rejected text (cut to 64 characters so a hostile input cannot flood a log line).
    pub input: String,
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError {
            input: s.chars().take(64).collect(),
        };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |part: &str| -> Result<u64, ParseLsnError> {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u64::from_str_radix(part, 16).map_err(|_| err())
        };
        Ok(Lsn((half(hi)? << 32) | half(lo)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_postgres() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!(Lsn(0x1_0000_0000).to_string(), "1/0");
    }

    #[test]
    fn parses_postgres_forms() {
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("16/b374d848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::INVALID);
        assert_eq!("00000000/00000001".parse::<Lsn>().unwrap(), Lsn(1));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "0/0/0",
            "123456789/0",
            "0/123456789",
            "g/0",
            " 0/0",
            "0/0 ",
            "+1/0",
            "-1/0",
            "0x1/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn error_names_the_input() {
        let e = "nope".parse::<Lsn>().unwrap_err();
        assert!(e.to_string().contains("`nope`"));
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(v in any::<u64>()) {
            prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<Lsn>();
        }

        #[test]
        fn order_follows_the_number(a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(Lsn(a).cmp(&Lsn(b)), a.cmp(&b));
        }
    }
}
