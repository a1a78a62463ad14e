//! numeric's on-disk form turned straight into its canonical text, without `numeric_out`'s
//! allocations: the same digits `numeric_out` prints (checked against it value by value in the
//! integration tests), then packed by the format crate.
//!
//! The body (after the varlena header) is PostgreSQL's `NumericChoice`: a 2-byte header, for the
//! long form a 2-byte weight, then base-10000 digits (int16, native endian), most significant first.
//! The header says short or long form, sign, display scale and, in the short form, the weight; the
//! special values NaN, Infinity and -Infinity have their own headers. Pure, so it is unit-tested here.

const SIGN_MASK: u16 = 0xC000;
const NEG: u16 = 0x4000;
const SHORT: u16 = 0x8000;
const SPECIAL: u16 = 0xC000;
const EXT_SIGN_MASK: u16 = 0xF000;
const NAN: u16 = 0xC000;
const PINF: u16 = 0xD000;
const NINF: u16 = 0xF000;
const SHORT_SIGN_MASK: u16 = 0x2000;
const SHORT_DSCALE_MASK: u16 = 0x1F80;
const SHORT_DSCALE_SHIFT: u16 = 7;
const SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
const SHORT_WEIGHT_MASK: u16 = 0x003F;
const DSCALE_MASK: u16 = 0x3FFF;

/// Appends the canonical text of a numeric body to `out`. `None` for a body that is not a valid
/// numeric (the caller then falls back to `numeric_out`, which reports it properly).
pub fn append_text(body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let u16_at = |i: usize| body.get(i..i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let header = u16_at(0)?;
    let (negative, weight, dscale, digits_at) = match header & SIGN_MASK {
        SPECIAL => {
            out.extend_from_slice(match header & EXT_SIGN_MASK {
                NAN => b"NaN",
                PINF => b"Infinity",
                NINF => b"-Infinity",
                _ => return None,
            });
            return Some(());
        }
        SHORT => {
            let weight = if header & SHORT_WEIGHT_SIGN_MASK != 0 {
                (!SHORT_WEIGHT_MASK | (header & SHORT_WEIGHT_MASK)) as i16 as i32
            } else {
                (header & SHORT_WEIGHT_MASK) as i32
            };
            let dscale = ((header & SHORT_DSCALE_MASK) >> SHORT_DSCALE_SHIFT) as usize;
            (header & SHORT_SIGN_MASK != 0, weight, dscale, 2)
        }
        sign => {
            let weight = u16_at(2)? as i16 as i32;
            (sign == NEG, weight, (header & DSCALE_MASK) as usize, 4)
        }
    };
    let digit_bytes = body.get(digits_at..)?;
    if digit_bytes.len() % 2 != 0 {
        return None;
    }
    let digit = |i: usize| u16::from_ne_bytes([digit_bytes[i * 2], digit_bytes[i * 2 + 1]]);
    fig_format::decimal::append_base10000(
        negative,
        weight,
        dscale,
        digit_bytes.len() / 2,
        digit,
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(negative: bool, weight: i16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((if negative { NEG } else { 0 }) | dscale).to_ne_bytes());
        b.extend_from_slice(&weight.to_ne_bytes());
        for d in digits {
            b.extend_from_slice(&d.to_ne_bytes());
        }
        b
    }

    fn short(negative: bool, weight: i8, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let w = if weight < 0 {
            SHORT_WEIGHT_SIGN_MASK | (weight as u16 & SHORT_WEIGHT_MASK)
        } else {
            weight as u16
        };
        let h =
            SHORT | if negative { SHORT_SIGN_MASK } else { 0 } | (dscale << SHORT_DSCALE_SHIFT) | w;
        let mut b = h.to_ne_bytes().to_vec();
        for d in digits {
            b.extend_from_slice(&d.to_ne_bytes());
        }
        b
    }

    fn text(body: &[u8]) -> String {
        let mut out = Vec::new();
        append_text(body, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_like_numeric_out() {
        assert_eq!(text(&short(false, 0, 2, &[1234, 5600])), "1234.56");
        assert_eq!(text(&short(true, 1, 0, &[12, 3456])), "-123456");
        assert_eq!(text(&short(false, -1, 5, &[1200])), "0.12000");
        assert_eq!(text(&short(false, -2, 6, &[1200])), "0.000012");
        assert_eq!(text(&short(false, -2, 6, &[12])), "0.000000"); // 0.00000012 at display scale 6
        assert_eq!(text(&short(false, 0, 0, &[])), "0");
        assert_eq!(text(&short(false, 0, 3, &[])), "0.000");
        assert_eq!(text(&long(false, 2, 0, &[1])), "100000000");
        assert_eq!(text(&long(true, 0, 1, &[7, 5000])), "-7.5");
        assert_eq!(text(&NAN.to_ne_bytes()), "NaN");
        assert_eq!(text(&PINF.to_ne_bytes()), "Infinity");
        assert_eq!(text(&NINF.to_ne_bytes()), "-Infinity");
    }

    #[test]
    fn refuses_malformed_bodies() {
        let mut out = Vec::new();
        assert!(append_text(&[], &mut out).is_none());
        assert!(append_text(&short(false, 0, 0, &[10_000]), &mut out).is_none());
        assert!(append_text(&[0, 0, 0], &mut out).is_none()); // long form without its weight... odd digit bytes
        assert!(append_text(&0xE000u16.to_ne_bytes(), &mut out).is_none());
    }
}
