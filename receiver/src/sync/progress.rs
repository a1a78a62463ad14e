//! Progress of long copies on stderr: rows, percent of the table's estimated size, rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a table's progress is logged while it is copied.
const EVERY: Duration = Duration::from_secs(5);

/// One table's copy progress, shared by the tasks copying its chunks.
pub struct Progress {
    table: String,
    estimated_rows: f64,
    rows: AtomicU64,
    started: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    pub fn new(table: String, estimated_rows: f64, already: u64) -> Progress {
        let now = Instant::now();
        Progress {
            table,
            estimated_rows,
            rows: AtomicU64::new(already),
            started: now,
            last: Mutex::new(now),
        }
    }

    /// Counts `n` more rows read; logs at most every few seconds.
    pub fn add(&self, n: u64) {
        let rows = self.rows.fetch_add(n, Ordering::Relaxed) + n;
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() >= EVERY {
            *last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            let rate = rows as f64 / secs;
            match self.percent(rows) {
                Some(p) => {
                    tracing::info!(table = %self.table, rows, percent = format!("{p:.0}"), rows_per_sec = rate as u64, "copying")
                }
                None => {
                    tracing::info!(table = %self.table, rows, rows_per_sec = rate as u64, "copying")
                }
            }
        }
    }

    /// Percent of the estimate (capped at 99 until the copy ends: estimates lag).
    fn percent(&self, rows: u64) -> Option<f64> {
        (self.estimated_rows > 0.0).then(|| (rows as f64 / self.estimated_rows * 100.0).min(99.0))
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
