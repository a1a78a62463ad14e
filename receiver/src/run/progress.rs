//! Progress on long runs, on stderr through `tracing`: rows delivered, rate, and lag behind the
//! server's WAL.

use crate::model::Lsn;
use std::time::{Duration, Instant};
use tracing::info;

pub struct Progress {
    every: Duration,
    started: Instant,
    last_report: Instant,
    rows: u64,
    txns: u64,
    rows_at_last: u64,
}

impl Progress {
    pub fn new(every: Duration) -> Self {
        let now = Instant::now();
        Progress {
            every,
            started: now,
            last_report: now,
            rows: 0,
            txns: 0,
            rows_at_last: 0,
        }
    }

    pub fn delivered(&mut self, txns: usize, rows: usize, durable: Lsn, wal_end: Lsn) {
        self.txns += txns as u64;
        self.rows += rows as u64;
        metrics::counter!("fig_transactions_delivered_total").increment(txns as u64);
        metrics::counter!("fig_rows_delivered_total").increment(rows as u64);
        self.tick(durable, wal_end);
    }

    pub fn tick(&mut self, durable: Lsn, wal_end: Lsn) {
        metrics::gauge!("fig_durable_lsn_bytes").set(durable.0 as f64);
        metrics::gauge!("fig_lag_bytes").set(wal_end.0.saturating_sub(durable.0) as f64);
        let since = self.last_report.elapsed();
        if since < self.every {
            return;
        }
        let rate = (self.rows - self.rows_at_last) as f64 / since.as_secs_f64();
        info!(
            rows = self.rows,
            transactions = self.txns,
            rows_per_sec = rate.round() as u64,
            durable = %durable,
            lag_bytes = wal_end.0.saturating_sub(durable.0),
            "progress"
        );
        self.last_report = Instant::now();
        self.rows_at_last = self.rows;
    }

    /// Totals since the start: (transactions, rows, seconds).
    pub fn totals(&self) -> (u64, u64, f64) {
        (self.txns, self.rows, self.started.elapsed().as_secs_f64())
    }
}
