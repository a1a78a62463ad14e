//! PostgreSQL's date and time units turned into ISO 8601 text.
//!
//! The wire carries dates as days and timestamps as microseconds since 2000-01-01 (PostgreSQL's own
//! epoch), exactly as the server stores them. Text forms, used wherever a value is shown or
//! normalized: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS.ffffff` (timestamp), the same with `Z` (timestamptz,
//! always UTC), `HH:MM:SS.ffffff` (time). Years before 1 use astronomical numbering as ISO 8601 does
//! (1 BC is year 0000, 44 BC is -0043); years past 9999 get more digits. Infinities are `infinity` and
//! `-infinity`. The calendar arithmetic is exact integer math (proleptic Gregorian, as PostgreSQL).

use crate::digits::{four, push_ascii, two};
use crate::{DATE_NEG_INFINITY, DATE_POS_INFINITY, TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY};

const USECS_PER_DAY: i64 = 86_400_000_000;
/// Days from 0000-03-01 to 2000-01-01 in the shifted calendar used below.
const DAYS_0000_03_01_TO_2000_01_01: i64 = 730_425;

/// (year, month, day) of a day count since 2000-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm, on eras of 400 years starting 0000-03-01.
    let z = days + DAYS_0000_03_01_TO_2000_01_01;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day count since 2000-01-01 of a (year, month, day); the inverse of [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - DAYS_0000_03_01_TO_2000_01_01
}

/// Appends `value` in decimal, zero-padded to at least `width` digits: the general case, for
/// years outside 0000–9999.
fn push_padded(out: &mut String, mut value: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while value > 0 {
        i -= 1;
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    let start = i.min(buf.len() - width);
    push_ascii(out, &buf[start..]);
}

/// `YYYY-MM-DD` in one piece for years 0000–9999 (every date a ledger holds); `None` for the
/// others, which take the general path.
fn date_text(y: i64, m: u32, d: u32) -> Option<[u8; 10]> {
    let year = u32::try_from(y).ok().filter(|&y| y <= 9999)?;
    let [y0, y1, y2, y3] = four(year);
    let [m0, m1] = two(m);
    let [d0, d1] = two(d);
    Some([y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1])
}

/// `HH:MM:SS.ffffff`; `usecs_of_day` is at most 24:00:00.
fn time_text(usecs_of_day: i64) -> [u8; 15] {
    let secs = (usecs_of_day / 1_000_000) as u32;
    let frac = (usecs_of_day % 1_000_000) as u32;
    let [h0, h1] = two(secs / 3600);
    let [m0, m1] = two(secs / 60 % 60);
    let [s0, s1] = two(secs % 60);
    let [f0, f1] = two(frac / 10_000);
    let [f2, f3, f4, f5] = four(frac);
    [
        h0, h1, b':', m0, m1, b':', s0, s1, b'.', f0, f1, f2, f3, f4, f5,
    ]
}

fn push_date(out: &mut String, days: i64) {
    let (y, m, d) = civil_from_days(days);
    if let Some(text) = date_text(y, m, d) {
        push_ascii(out, &text);
        return;
    }
    if y < 0 {
        out.push('-');
    }
    push_padded(out, y.unsigned_abs(), 4);
    out.push('-');
    push_padded(out, m.into(), 2);
    out.push('-');
    push_padded(out, d.into(), 2);
}

fn push_time(out: &mut String, usecs_of_day: i64) {
    push_ascii(out, &time_text(usecs_of_day));
}

pub fn format_date(days: i32) -> String {
    let mut s = String::with_capacity(10);
    append_date(&mut s, days);
    s
}

/// [`format_date`], appended to `out` (a caller reusing its buffers allocates nothing).
pub fn append_date(out: &mut String, days: i32) {
    match days {
        DATE_NEG_INFINITY => out.push_str("-infinity"),
        DATE_POS_INFINITY => out.push_str("infinity"),
        d => push_date(out, d as i64),
    }
}

/// `time` (microseconds since midnight; 24:00:00 is a valid PostgreSQL time).
pub fn format_time(usecs: i64) -> String {
    let mut s = String::with_capacity(15);
    append_time(&mut s, usecs);
    s
}

/// [`format_time`], appended to `out`.
pub fn append_time(out: &mut String, usecs: i64) {
    push_time(out, usecs);
}

/// `timestamp` (`utc = false`) or `timestamptz` (`utc = true`, suffixed `Z`).
pub fn format_timestamp(usecs: i64, utc: bool) -> String {
    let mut s = String::with_capacity(27);
    append_timestamp(&mut s, usecs, utc);
    s
}

/// [`format_timestamp`], appended to `out`.
pub fn append_timestamp(out: &mut String, usecs: i64, utc: bool) {
    match usecs {
        TIMESTAMP_NEG_INFINITY => out.push_str("-infinity"),
        TIMESTAMP_POS_INFINITY => out.push_str("infinity"),
        t => {
            let (days, time) = (t.div_euclid(USECS_PER_DAY), t.rem_euclid(USECS_PER_DAY));
            let (y, m, d) = civil_from_days(days);
            match date_text(y, m, d) {
                // The common case in one piece: `YYYY-MM-DDTHH:MM:SS.ffffff[Z]`.
                Some(date) => {
                    let mut text = [b'Z'; 27];
                    text[..10].copy_from_slice(&date);
                    text[10] = b'T';
                    text[11..26].copy_from_slice(&time_text(time));
                    push_ascii(out, &text[..if utc { 27 } else { 26 }]);
                }
                None => {
                    push_date(out, days);
                    out.push('T');
                    push_time(out, time);
                    if utc {
                        out.push('Z');
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(format_date(0), "2000-01-01");
        assert_eq!(format_date(-1), "1999-12-31");
        assert_eq!(format_date(60), "2000-03-01"); // 2000 is a leap year
        assert_eq!(format_date(-730_119), "0001-01-01");
        assert_eq!(format_date(-730_120), "0000-12-31"); // 1 BC
        assert_eq!(format_date(i32::MIN), "-infinity");
        assert_eq!(format_date(i32::MAX), "infinity");
    }

    #[test]
    fn known_timestamps() {
        assert_eq!(format_timestamp(0, true), "2000-01-01T00:00:00.000000Z");
        assert_eq!(format_timestamp(-1, false), "1999-12-31T23:59:59.999999");
        // 2026-11-24 23:45:17.123456 UTC
        let days = days_from_civil(2026, 11, 24);
        let t = days * USECS_PER_DAY + ((23 * 3600 + 45 * 60 + 17) * 1_000_000 + 123_456);
        assert_eq!(format_timestamp(t, true), "2026-11-24T23:45:17.123456Z");
        assert_eq!(format_time(24 * 3600 * 1_000_000), "24:00:00.000000");
        assert_eq!(format_date(-746_117), "-0043-03-15");
        assert_eq!(format_date(2_145_031_948), "5874897-12-31");
    }

    /// The text of a timestamp spelled the slow, obvious way.
    fn reference_timestamp(t: i64, utc: bool) -> String {
        let (y, m, d) = civil_from_days(t.div_euclid(USECS_PER_DAY));
        let us = t.rem_euclid(USECS_PER_DAY);
        let s = us / 1_000_000;
        format!(
            "{}{:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}{}",
            if y < 0 { "-" } else { "" },
            y.unsigned_abs(),
            s / 3600,
            s / 60 % 60,
            s % 60,
            us % 1_000_000,
            if utc { "Z" } else { "" }
        )
    }

    #[test]
    fn timestamps_around_the_four_digit_years_match_the_reference() {
        for (y, m, d) in [
            (0, 1, 1),
            (9999, 12, 31),
            (10000, 1, 1),
            (-1, 12, 31),
            (1, 1, 1),
        ] {
            let t = days_from_civil(y, m, d) * USECS_PER_DAY + 86_399_999_999;
            for utc in [false, true] {
                assert_eq!(format_timestamp(t, utc), reference_timestamp(t, utc));
            }
        }
    }

    proptest! {
        #[test]
        fn timestamps_match_the_reference(t in -300_000_000_000_000_000i64..300_000_000_000_000_000, utc: bool) {
            prop_assert_eq!(format_timestamp(t, utc), reference_timestamp(t, utc));
        }

        #[test]
        fn dates_and_times_match_the_reference(days in -5_000_000i32..5_000_000, us in 0i64..=USECS_PER_DAY) {
            let ts = reference_timestamp(i64::from(days) * USECS_PER_DAY, false);
            prop_assert_eq!(format_date(days), ts[..ts.find('T').unwrap()].to_string());
            let t = reference_timestamp(us.min(USECS_PER_DAY - 1), false);
            prop_assert_eq!(format_time(us.min(USECS_PER_DAY - 1)), t[t.find('T').unwrap() + 1..].to_string());
        }

        #[test]
        fn days_round_trip(days in -100_000_000i64..100_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn consecutive_days_are_consecutive_dates(days in -10_000_000i64..10_000_000) {
            let (y1, m1, d1) = civil_from_days(days);
            let (y2, m2, d2) = civil_from_days(days + 1);
            prop_assert!((y2, m2, d2) > (y1, m1, d1));
            prop_assert!(d2 == d1 + 1 || d2 == 1);
        }
    }
}
