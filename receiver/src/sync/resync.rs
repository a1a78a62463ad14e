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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tracing::info;

use super::catalog::KeyRule;
use super::snapshot::{copy_tables, SnapshotSource, Target};
use super::{SinkHandle, Summary, SyncError};
use crate::config::Config;
use crate::model::Lsn;
use crate::replication::{ReplicationClient, SnapshotAction};
use crate::sink::jsonl::{Copied, Gate, JsonlSink};
use crate::sink::SinkErrorKind;

/// How often a re-copy that is ahead of the stream asks again whether the sink got there.
const AHEAD_POLL: Duration = Duration::from_millis(200);

/// Re-copies `tables` (schema, table) into the sink of `config`, whose stream uses `plugin`, and
/// returns once every one is swapped in and in sync. The sink's checkpoint must reach the copy's
/// position: a receiver streaming into the same sink (this process's or another's) gets it there.
pub async fn resync(
    config: &Config,
    plugin: &str,
    tables: &[(String, String)],
    into: Destination<'_>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, SyncError> {
    match into {
        Destination::Shared(sink) => recopy(config, plugin, tables, sink, shutdown).await,
        Destination::Held { gate, file } => {
            // One hold per table: the stream waits for one table's read at a time.
            let mut total = Summary {
                tables: 0,
                rows: 0,
                seconds: 0.0,
                unfinished: Vec::new(),
            };
            for t in tables {
                let one = held(config, plugin, t, gate, file, shutdown.clone()).await?;
                total.tables += one.tables;
                total.rows += one.rows;
                total.seconds += one.seconds;
            }
            Ok(total)
        }
    }
}

/// Where a re-copy goes.
pub enum Destination<'a> {
    /// A sink file the stream writes too (SQLite): the copy is staged in it and swapped in once
    /// the stream got past its position.
    Shared(&'a SinkHandle),
    /// A JSON Lines file only `run`'s writer writes: the copy is staged beside it and the writer
    /// puts it in at its position ([`crate::sink::jsonl::Gate`]).
    Held {
        gate: &'a std::sync::Arc<Gate>,
        file: &'a Path,
    },
}

/// A re-copy of `table` into a JSON Lines file: the writer held before the temporary slot is
/// created, the rows staged, then handed to the writer, which writes them at the slot's position.
async fn held(
    config: &Config,
    plugin: &str,
    table: &(String, String),
    gate: &std::sync::Arc<Gate>,
    file: &Path,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, SyncError> {
    let Some(mut ticket) = gate.place() else {
        return Err(SyncError::Unsupported(
            "another re-copy of this JSON Lines file is being written; try again when it is in"
                .into(),
        ));
    };
    let staged = staging_path(file);
    let staging = JsonlSink::staging(&staged).map_err(SyncError::Sink)?;
    let sink = SinkHandle::new(Box::new(staging));
    let copied = read_copy(
        config,
        plugin,
        std::slice::from_ref(table),
        &sink,
        true,
        shutdown.clone(),
        |at| ticket.at(at),
    )
    .await;
    drop(sink);
    let (summary, at, partitions) = match copied {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    ticket.ready(
        at,
        staged,
        vec![Copied {
            schema: table.0.clone(),
            table: table.1.clone(),
            position: at,
            partitions,
            rows: summary.rows,
        }],
    );
    loop {
        match ticket.landed() {
            Some(Ok(())) => return Ok(summary),
            Some(Err(e)) => {
                return Err(SyncError::Unsupported(format!(
                    "the re-copy of {}.{} was read but could not be written into {}: {e}",
                    table.0,
                    table.1,
                    file.display()
                )))
            }
            None if *shutdown.borrow() => return Err(SyncError::Stopped),
            None => tokio::time::sleep(AHEAD_POLL).await,
        }
    }
}

/// A staging file beside `file` no other re-copy uses.
fn staging_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(format!(
        ".{}",
        slot_name().replace("fig_resync_", "recopy-")
    ));
    PathBuf::from(s)
}

/// Re-copies into a sink file the stream writes too (see the module documentation).
async fn recopy(
    config: &Config,
    plugin: &str,
    tables: &[(String, String)],
    sink: &SinkHandle,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, SyncError> {
    let started = std::time::Instant::now();
    let (copied, _, _) = read_copy(
        config,
        plugin,
        tables,
        sink,
        false,
        shutdown.clone(),
        |_| {},
    )
    .await?;
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

/// Copies `tables` into `sink` under the snapshot of a temporary slot, telling `positioned` the
/// slot's consistent point as soon as it exists. Returns the copy, that position, and the leaves
/// the first table's copy read (a partitioned table mirrored under its root). `finish`: the loads
/// are finished as their last chunk is stored (else the caller finishes them).
async fn read_copy(
    config: &Config,
    plugin: &str,
    tables: &[(String, String)],
    sink: &SinkHandle,
    finish: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
    positioned: impl FnOnce(Lsn),
) -> Result<(Summary, Lsn, Option<Vec<u32>>), SyncError> {
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
    positioned(slot.consistent_point);
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
            finish,
            partitions: partitions_of(schema, table),
        })
        .collect();
    let leaves = targets
        .first()
        .and_then(|t| t.partitions.as_ref())
        .map(|p| p.leaves.clone());
    // The replication connection stays idle while the copy reads: that keeps the snapshot valid.
    let copied = copy_tables(
        config,
        &targets,
        SnapshotSource::Exported {
            name: snapshot,
            position: slot.consistent_point,
        },
        sink,
        shutdown,
    )
    .await;
    // A temporary slot goes with its connection.
    let _ = repl.close().await;
    Ok((copied?, slot.consistent_point, leaves))
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
