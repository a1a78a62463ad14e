//! Re-copies of streamed tables while the stream runs (DESIGN.md rule 8): how a table out of sync,
//! or one an operator names (`fig-receiver resync`), becomes equal to its source again without
//! stopping the stream or the other tables.
//!
//! ```text
//! replication connection: CREATE_REPLICATION_SLOT fig_resync_… TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT
//!   ─▶ consistent point L + a snapshot holding exactly the transactions committed before L
//! copy_tables under that snapshot ─▶ staging tables (not swapped in)        (the slot is dropped)
//! wait until the sink's checkpoint ≥ L (the running stream gets there)
//! one SQLite transaction: staging replaces the mirror, the history from L is replayed onto it,
//!   the table is in sync again                                   (sink/sqlite/replay.rs)
//! ```
//!
//! This is the watermark idea of DBLog with the slot machinery doing the watermarking: the
//! temporary slot's consistent point is an exact position of the stream for the copy, so no
//! change is missed or applied twice, for keyed and keyless tables alike. The stream never waits:
//! its changes to the table go on into the history (and, while the table is in sync, its mirror)
//! and are replayed. What it costs the source: one temporary slot for the length of the copy
//! (creating it waits for transactions running at that moment to end) and a `REPEATABLE READ`
//! snapshot held as long as the copy reads.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tracing::info;

use super::catalog::KeyRule;
use super::snapshot::{copy_tables, SnapshotSource, Target};
use super::{SinkHandle, Summary, SyncError};
use crate::config::{Config, SinkTarget};
use crate::replication::{ReplicationClient, SnapshotAction};
use crate::sink::{SinkError, SinkErrorKind};

/// How often a re-copy that is ahead of the stream asks again whether the sink got there.
const AHEAD_POLL: Duration = Duration::from_millis(200);

/// Re-copies `tables` (schema, table) into the sink of `config`, whose stream uses `plugin`, and
/// returns once every one is swapped in and in sync. The sink's checkpoint must reach the copy's
/// position: a receiver streaming into the same sink (this process's or another's) gets it there.
pub async fn resync(
    config: &Config,
    plugin: &str,
    tables: &[(String, String)],
    sink: &SinkHandle,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, SyncError> {
    if let SinkTarget::Jsonl(_) = config.sink {
        return Err(SyncError::Sink(SinkError::NeedsState {
            what: "a resync".into(),
        }));
    }
    let started = std::time::Instant::now();
    // Which leaves a partitioned table's mirror holds, as the stream routes them now.
    let listing = super::streamed(config, plugin).await?;
    let partitions_of = |schema: &str, table: &str| {
        listing
            .iter()
            .find(|m| m.schema == schema && m.table == table)
            .and_then(|m| m.partitions.clone())
    };
    let mut repl = ReplicationClient::connect(&config.source)
        .await
        .map_err(SyncError::Slot)?;
    let slot = repl
        .create_logical_slot(&slot_name(), "pgoutput", SnapshotAction::Export, true)
        .await
        .map_err(SyncError::Slot)?;
    let Some(snapshot) = slot.snapshot_name.clone() else {
        return Err(SyncError::Unsupported(
            "the server exported no snapshot for the re-copy".into(),
        ));
    };
    info!(tables = tables.len(), position = %slot.consistent_point, "re-copying under a temporary slot's snapshot");
    let targets: Vec<Target> = tables
        .iter()
        .map(|(schema, table)| Target {
            schema: schema.clone(),
            table: table.clone(),
            rule: KeyRule::ReplicaIdentity,
            sync: crate::sink::sqlite::RESYNC,
            like_pgoutput: plugin == "pgoutput",
            finish: false,
            partitions: partitions_of(schema, table),
        })
        .collect();
    // The replication connection stays idle while the copy reads: that keeps the snapshot valid.
    let copied = copy_tables(
        config,
        &targets,
        SnapshotSource::Exported {
            name: snapshot,
            position: slot.consistent_point,
        },
        sink,
        shutdown.clone(),
    )
    .await;
    // A temporary slot goes with its connection.
    let _ = repl.close().await;
    let copied = copied?;
    for load in &copied.unfinished {
        loop {
            let l = load.clone();
            match sink.with(move |s| s.load_finish(&l)).await {
                Ok(_) => break,
                Err(SyncError::Sink(e)) if e.kind() == SinkErrorKind::NotYet => {
                    if *shutdown.borrow() {
                        return Err(SyncError::Stopped);
                    }
                    tokio::time::sleep(AHEAD_POLL).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Summary {
        seconds: started.elapsed().as_secs_f64(),
        unfinished: Vec::new(),
        ..copied
    })
}

/// A slot name no other re-copy uses at the same time.
fn slot_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "fig_resync_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
