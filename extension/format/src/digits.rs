//! Decimal digits written two at a time: the text forms of dates, times and numerics are produced
//! for every value of every copied row, so they are built from a table instead of a division per
//! digit and a `fmt` call per field.

/// `"00"`, `"01"`, … `"99"`.
const PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// The two digits of `v % 100`.
pub fn two(v: u32) -> [u8; 2] {
    PAIRS[(v % 100) as usize]
}

/// The four digits of `v % 10000`, zero-padded.
pub fn four(v: u32) -> [u8; 4] {
    let [a, b] = two(v / 100);
    let [c, d] = two(v);
    [a, b, c, d]
}

/// Appends bytes known to be ASCII (digits and punctuation written by this crate). The check is one
/// pass over a few bytes per value, and keeps the crate free of `unsafe`.
pub fn push_ascii(out: &mut String, bytes: &[u8]) {
    debug_assert!(bytes.is_ascii());
    if let Ok(s) = std::str::from_utf8(bytes) {
        out.push_str(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_fours_are_zero_padded_decimals() {
        for v in 0..10_000u32 {
            let f = four(v);
            assert_eq!(std::str::from_utf8(&f).unwrap(), format!("{v:04}"));
            assert_eq!(
                std::str::from_utf8(&two(v)).unwrap(),
                format!("{:02}", v % 100)
            );
        }
    }
}
