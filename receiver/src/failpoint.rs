//! Named failpoints for fault-injection tests: with `FIG_FAILPOINTS=name[,name…]` in its
//! environment the process aborts at those points, with no cleanup at all, as a `kill -9` there
//! would leave things. Moments too short to hit with a signal (between two statements) become
//! reproducible. Unset, a point costs one check of a value read once.

use std::sync::OnceLock;

/// The variable that names the points to abort at.
pub const ENV: &str = "FIG_FAILPOINTS";

fn enabled() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        std::env::var(ENV)
            .map(|v| v.split(',').map(|n| n.trim().to_owned()).collect())
            .unwrap_or_default()
    })
}

/// Aborts the process if `name` is one of the enabled points.
pub fn hit(name: &str) {
    if enabled().iter().any(|n| n == name) {
        eprintln!("failpoint {name}: aborting (set by {ENV})");
        std::process::abort();
    }
}
