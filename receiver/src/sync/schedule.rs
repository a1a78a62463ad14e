//! `run`'s schedule of snapshot and incremental tables: each table synced every `every` (hourly by
//! default), one table at a time, beside the CDC stream.
//!
//! A failed sync is logged and tried again after a minute (or its interval, if shorter); it never
//! stops the stream or the other tables. The syncs write through their own connection to the SQLite
//! file (SQLite serializes writers; the stream's batches and a sync's chunks interleave safely).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{pass, SinkHandle, SyncError};
use crate::config::{Config, SinkTarget, SyncMode, TableSync};

/// How soon a failed sync is tried again (at most; a shorter interval wins).
const RETRY: Duration = Duration::from_secs(60);

/// The tables `run` syncs on a schedule.
pub fn scheduled(config: &Config) -> Vec<TableSync> {
    config
        .syncs
        .iter()
        .filter(|t| t.mode != SyncMode::Cdc)
        .cloned()
        .collect()
}

/// Checks that the sink can take scheduled syncs beside the stream: JSON Lines has one writer.
pub fn check_sink(config: &Config) -> Result<(), SyncError> {
    match (&config.sink, scheduled(config).is_empty()) {
        (SinkTarget::Jsonl(_), false) => Err(SyncError::Unsupported(
            "scheduled snapshot and incremental syncs in `run` need the SQLite sink (a JSON Lines file has one writer); run them with `fig-receiver snapshot` into another JSON Lines target".into(),
        )),
        _ => Ok(()),
    }
}

/// Runs the schedule until `shutdown`.
pub async fn run_schedule(
    config: Config,
    watch: std::sync::Arc<crate::drift::Watch>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), SyncError> {
    let tables = scheduled(&config);
    if tables.is_empty() {
        return Ok(());
    }
    let sink =
        SinkHandle::new(crate::run::open_watched_sink(&config, watch).map_err(SyncError::Sink)?);
    let mut due = vec![Instant::now(); tables.len()];
    loop {
        for (t, next) in tables.iter().zip(due.iter_mut()) {
            if *next > Instant::now() {
                continue;
            }
            if *shutdown.borrow() {
                return Ok(());
            }
            match pass(&config, std::slice::from_ref(t), &sink, shutdown.clone()).await {
                Ok(s) => {
                    info!(table = %t.name(), rows = s.rows, seconds = format!("{:.1}", s.seconds), next_in_secs = t.every.as_secs(), "scheduled sync done");
                    *next = Instant::now() + t.every;
                }
                Err(SyncError::Stopped) => return Ok(()),
                Err(e) => {
                    let retry = t.every.min(RETRY);
                    warn!(table = %t.name(), error = %e, retry_in_secs = retry.as_secs(), "scheduled sync failed; the stream and the other tables go on");
                    *next = Instant::now() + retry;
                }
            }
        }
        let next = due.iter().min().copied().unwrap_or_else(Instant::now);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return Ok(());
                }
            }
        }
    }
}
