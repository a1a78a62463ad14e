//! Exact decimals (PostgreSQL `numeric`) packed four bits per character.
//!
//! A numeric travels as the characters of its canonical text form, two per byte, high nibble first:
//!
//! | nibble | meaning |
//! |---|---|
//! | 0x0–0x9 | the digit |
//! | 0xA | `.` |
//! | 0xB | `-` |
//! | 0xC | `NaN` (alone) |
//! | 0xD | `Infinity` (alone, or after `-`) |
//! | 0xF | padding, only as the low nibble of the last byte |
//!
//! `1234.56` takes 4 bytes instead of 7, and nothing is ever rounded: the text is the value. The
//! decoder accepts exactly the grammar `-?D+(.D+)? | NaN | -?Infinity` and nothing else.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum DecimalError {
    #[error("decimal text {0:?} is not a PostgreSQL numeric (expected -?digits[.digits], NaN or [-]Infinity)")]
    BadText(String),
    #[error("packed decimal has an invalid nibble 0x{0:x} at position {1}")]
    BadNibble(u8, usize),
    #[error("packed decimal is empty or malformed")]
    Malformed,
}

const DOT: u8 = 0xA;
const MINUS: u8 = 0xB;
const NAN: u8 = 0xC;
const INF: u8 = 0xD;
const PAD: u8 = 0xF;

/// Packs the text output of `numeric_out` into `out`. Returns an error for anything that is not a
/// numeric's canonical text, so the plugin never emits a value the receiver would misread.
pub fn pack_into(text: &[u8], out: &mut Vec<u8>) -> Result<(), DecimalError> {
    let mut w = NibbleWriter { out, pending: None };
    match text {
        b"NaN" => w.push(NAN),
        b"Infinity" => w.push(INF),
        b"-Infinity" => {
            w.push(MINUS);
            w.push(INF)
        }
        _ if is_plain_decimal(text) => {
            for &c in text {
                w.push(match c {
                    b'0'..=b'9' => c - b'0',
                    b'.' => DOT,
                    _ => MINUS,
                });
            }
        }
        _ => {
            return Err(DecimalError::BadText(
                String::from_utf8_lossy(text).into_owned(),
            ))
        }
    }
    w.finish();
    Ok(())
}

struct NibbleWriter<'a> {
    out: &'a mut Vec<u8>,
    pending: Option<u8>,
}

impl NibbleWriter<'_> {
    fn push(&mut self, n: u8) {
        match self.pending.take() {
            None => self.pending = Some(n),
            Some(hi) => self.out.push(hi << 4 | n),
        }
    }
    fn finish(self) {
        if let Some(hi) = self.pending {
            self.out.push(hi << 4 | PAD);
        }
    }
}

/// `-?D+(.D+)?`
fn is_plain_decimal(text: &[u8]) -> bool {
    let body = text.strip_prefix(b"-").unwrap_or(text);
    let (int, frac) = match body.iter().position(|&c| c == b'.') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    digits(int) && frac.is_none_or(digits)
}

/// Unpacks a packed decimal into its canonical text form.
pub fn unpack(packed: &[u8]) -> Result<String, DecimalError> {
    let mut text = String::with_capacity(packed.len() * 2 + 8);
    let n_nibbles = packed.len() * 2;
    for i in 0..n_nibbles {
        let byte = packed[i / 2];
        let n = if i % 2 == 0 { byte >> 4 } else { byte & 0xF };
        match n {
            0..=9 => text.push((b'0' + n) as char),
            DOT => text.push('.'),
            MINUS => text.push('-'),
            NAN => text.push_str("NaN"),
            INF => text.push_str("Infinity"),
            PAD if i == n_nibbles - 1 && i > 0 => {}
            _ => return Err(DecimalError::BadNibble(n, i)),
        }
    }
    let ok = matches!(text.as_str(), "NaN" | "Infinity" | "-Infinity")
        || is_plain_decimal(text.as_bytes());
    if ok {
        Ok(text)
    } else {
        Err(DecimalError::Malformed)
    }
}

/// Appends the canonical text (`numeric_out`'s) of a numeric given as PostgreSQL keeps it: sign,
/// `weight` (the power of 10000 of the first digit), display scale and base-10000 `digit(i)` for
/// `i < ndigits`, most significant first. Both the plugin (stored form) and the receiver (COPY's
/// binary form) hold numerics this way; only how a digit is read differs. `None` when a digit is
/// 10000 or more. The special values (NaN, infinities) are flagged differently in each form and are
/// the caller's.
pub fn append_base10000(
    negative: bool,
    weight: i32,
    dscale: usize,
    ndigits: usize,
    digit: impl Fn(usize) -> u16,
    out: &mut Vec<u8>,
) -> Option<()> {
    if (0..ndigits).any(|i| digit(i) >= 10_000) {
        return None;
    }
    let at = |i: i32| -> u16 {
        if i < 0 || i as usize >= ndigits {
            0
        } else {
            digit(i as usize)
        }
    };
    let four = |v: u16| crate::digits::four(v.into());
    if negative {
        out.push(b'-');
    }
    // Integer part: digits 0..=weight, the first without leading zeros.
    if weight < 0 {
        out.push(b'0');
    } else {
        for d in 0..=weight {
            let text = four(at(d));
            let skip = if d == 0 {
                text.iter().take(3).take_while(|&&c| c == b'0').count()
            } else {
                0
            };
            out.extend_from_slice(&text[skip..]);
        }
    }
    // Fraction: exactly dscale digits, from digit weight+1 on.
    if dscale > 0 {
        out.push(b'.');
        let mut left = dscale;
        let mut d = weight + 1;
        while left > 0 {
            let n = left.min(4);
            out.extend_from_slice(&four(at(d))[..n]);
            left -= n;
            d += 1;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(s: &str) -> String {
        let mut packed = Vec::new();
        pack_into(s.as_bytes(), &mut packed).unwrap();
        unpack(&packed).unwrap()
    }

    #[test]
    fn specials_and_plain_values_round_trip() {
        for s in [
            "0",
            "-0.5",
            "1234.56",
            "NaN",
            "Infinity",
            "-Infinity",
            "10",
            "1",
        ] {
            assert_eq!(round_trip(s), s);
        }
    }

    #[test]
    fn packing_halves_the_size() {
        let mut packed = Vec::new();
        pack_into(b"1234.56", &mut packed).unwrap();
        assert_eq!(packed, vec![0x12, 0x34, 0xA5, 0x6F]);
    }

    #[test]
    fn rejects_non_numeric_text() {
        for s in [
            "", "-", "1.", ".5", "1e5", "nan", "1.2.3", "--1", "+1", "-NaN",
        ] {
            let mut packed = Vec::new();
            assert!(
                pack_into(s.as_bytes(), &mut packed).is_err(),
                "{s:?} was accepted"
            );
        }
    }

    #[test]
    fn rejects_malformed_packing() {
        assert!(unpack(&[]).is_err());
        assert!(unpack(&[0xFF]).is_err()); // padding alone
        assert!(unpack(&[0x1F, 0x20]).is_err()); // padding in the middle
        assert!(unpack(&[0xEE]).is_err()); // unused nibble
        assert!(unpack(&[0xCC]).is_err()); // NaNNaN
        assert!(unpack(&[0xA1]).is_err()); // .1
    }

    proptest! {
        #[test]
        fn any_decimal_text_round_trips(neg in any::<bool>(), int in "[0-9]{1,300}", frac in proptest::option::of("[0-9]{1,300}")) {
            let mut s = String::new();
            if neg { s.push('-'); }
            s.push_str(&int);
            if let Some(f) = frac { s.push('.'); s.push_str(&f); }
            prop_assert_eq!(round_trip(&s), s);
        }

        #[test]
        fn unpack_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = unpack(&bytes);
        }
    }
}
