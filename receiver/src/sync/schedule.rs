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

/// Checks that every table with a configured sync mode exists in the source (named, all of those
/// that do not), so a typo stops the start instead of failing every minute.
pub async fn check_tables_exist(config: &Config) -> Result<(), SyncError> {
    if config.syncs.is_empty() {
        return Ok(());
    }
    let client = config.source.connect_sql().await?;
    let mut missing = Vec::new();
    for t in &config.syncs {
        let found = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&t.schema, &t.table],
            )
            .await
            .map_err(|e| SyncError::query("looking up the configured tables", e))?;
        if found.is_none() {
            missing.push(t.name());
        }
    }
    match missing.is_empty() {
        true => Ok(()),
        false => Err(SyncError::NoTable {
            table: missing.join(", "),
        }),
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
    let sink = SinkHandle::new(crate::sink::open::open(&config, watch).map_err(SyncError::Sink)?);
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
