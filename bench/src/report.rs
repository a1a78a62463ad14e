//! What every benchmark's table is made of: medians of rounds, a verdict per target, and how busy
//! the machine was while it ran.

/// The median of `v` (the upper one of an even count). Panics on an empty slice: a case that never
/// ran has no time to report.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// How a target reads in the printed table.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The 1-, 5- and 15-minute load averages: other processes skew absolute times (ratios less).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
