//! Table syncs that do not stream: snapshot copies, incremental (cursor) syncs, and the initial copy
//! of CDC tables under the snapshot their replication slot exported.
//!
//! ```text
//!                      ┌─ snapshot:    COPY (binary), CTID chunks in parallel ─▶ Load Replace ─┐
//! config [[tables]] ───┼─ incremental: COPY of rows past the cursor, by pages ─▶ Load Upsert  ─┼─▶ sink
//!                      └─ cdc:         initial copy under the slot's snapshot ─▶ Load Replace ─┘   (then streaming)
//! ```
//!
//! Every copy runs in a `REPEATABLE READ READ ONLY` transaction with `row_security = off`, so a
//! row-level security policy makes it fail loudly instead of silently returning fewer rows. All the
//! chunks of one pass share one snapshot (exported by the first connection, or by the slot). Names
//! are always quoted: any table name works.

pub mod catalog;
pub mod chunks;
mod copy;
mod copy_binary;
pub mod incremental;
mod progress;
pub mod resync;
pub mod schedule;
pub mod snapshot;
mod writer;

use std::time::Instant;

use thiserror::Error;

use crate::config::{Config, SyncMode};
use crate::sink::SinkError;
pub use snapshot::{copy_tables, SnapshotSource, Target};
pub use writer::SinkHandle;

#[derive(Debug, Error)]
pub enum SyncError {
    #[error("cannot reach the source: {0}")]
    Connect(#[from] crate::conn::ConnectError),
    #[error("{what} failed: {message}")]
    Query {
        what: String,
        message: String,
        transient: bool,
    },
    #[error("table {table} does not exist in the source database (or is not in the publication); fix its name in the configuration: names follow SQL rules, unquoted parts fold to lower case, so write a mixed-case name quoted (public.\"Orders\"), and quote a part holding a dot")]
    NoTable { table: String },
    #[error("{table} is not a table (a view, sequence or foreign table); only tables and partitioned tables can be synced")]
    NotATable { table: String },
    #[error("{table}.{column}: {reason}")]
    Type {
        table: String,
        column: String,
        reason: String,
    },
    #[error("{table}: the copy would be filtered by a row-level security policy, so it would silently miss rows; grant the sync role BYPASSRLS (or make it the table's owner), or exclude the table")]
    RowSecurity { table: String },
    #[error("{table}: the role may not read it ({message}); grant it SELECT (sql/03_role.sql grants it on whole schemas), exclude the table, or for CDC tables set replication.initial_copy = false")]
    Permission { table: String, message: String },
    #[error("incremental sync of {table}: {problem}")]
    Cursor { table: String, problem: String },
    #[error("{table} changed after the copy's snapshot was taken and before it was locked ({detail}); reading it under that snapshot could miss rows, so the copy stops here: run it again (`run` retries by itself)")]
    ChangedAtStart { table: String, detail: String },
    #[error("{table}: the copy waited longer than sync.lock_timeout for a lock on it (DDL such as ALTER TABLE, TRUNCATE, DROP TABLE or VACUUM FULL holds it or is queued for it), so it gave way: it closed every session of this attempt, releasing all its locks so the DDL can go through, and is tried again under a new snapshot (`run` and scheduled syncs retry by themselves, `snapshot` up to {SNAPSHOT_ATTEMPTS} times). If this keeps happening, raise sync.lock_timeout or run the copy outside the application's DDL window")]
    LockTimeout { table: String },
    #[error("reading the COPY data of {table}: {reason}")]
    Decode { table: String, reason: String },
    #[error(transparent)]
    Sink(SinkError),
    #[error("the sink's writer thread failed; restart (loads resume where they stopped)")]
    SinkLost,
    #[error("no snapshot or incremental tables are configured; add [[tables]] entries with a mode, or --sync TABLE=snapshot")]
    NothingToSync,
    #[error("stopped on request")]
    Stopped,
    #[error("the re-copy's temporary replication slot: {0}")]
    Slot(crate::replication::ReplicationError),
    #[error("{0}")]
    Unsupported(String),
}

impl SyncError {
    pub fn query(what: &str, e: tokio_postgres::Error) -> SyncError {
        if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
            && e.as_db_error()
                .is_some_and(|d| d.message().contains("row-level security"))
        {
            return SyncError::RowSecurity {
                table: what.to_string(),
            };
        }
        if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
            return SyncError::Permission {
                table: what.to_string(),
                message: crate::conn::describe_sql_error(&e),
            };
        }
        // A lock wait cut short by lock_timeout, wherever it happened: a new attempt can succeed.
        let transient = e.code().is_none_or(|c| {
            crate::conn::is_transient_sqlstate(c.code())
                || *c == tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE
        });
        SyncError::Query {
            what: what.to_string(),
            message: crate::conn::describe_sql_error(&e),
            transient,
        }
    }

    /// [`SyncError::query`] for a statement that reads or locks `table`: a lock wait cut short by
    /// `lock_timeout` is [`SyncError::LockTimeout`].
    pub fn on_table(table: &str, what: &str, e: tokio_postgres::Error) -> SyncError {
        if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            return SyncError::LockTimeout {
                table: table.to_string(),
            };
        }
        SyncError::query(what, e)
    }

    /// Whether trying again later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Connect(e) => e.is_transient(),
            SyncError::Query { transient, .. } => *transient,
            // A new attempt takes a new snapshot, after the change.
            SyncError::ChangedAtStart { .. } => true,
            // The attempt released its locks; the DDL it gave way to is done by the next one.
            SyncError::LockTimeout { .. } => true,
            SyncError::Sink(e) => e.kind() == crate::sink::SinkErrorKind::Storage,
            SyncError::Slot(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// What a pass did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub tables: usize,
    pub rows: u64,
    pub seconds: f64,
    /// Loads copied whole but left for the caller to finish ([`Target::finish`] off).
    pub unfinished: Vec<crate::sink::Load>,
}

/// `fig-receiver snapshot`: one pass over every snapshot and incremental table, then exit.
pub async fn snapshot_pass(
    config: &Config,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, SyncError> {
    let started = Instant::now();
    let watch = crate::sink::open::drift_watch(config);
    let sink = SinkHandle::new(crate::sink::open::open(config, watch).map_err(SyncError::Sink)?);
    let tables: Vec<_> = config
        .syncs
        .iter()
        .filter(|t| t.mode != SyncMode::Cdc)
        .cloned()
        .collect();
    if tables.is_empty() {
        return Err(SyncError::NothingToSync);
    }
    let summary = pass_giving_way(config, &tables, &sink, shutdown).await?;
    Ok(Summary {
        seconds: started.elapsed().as_secs_f64(),
        ..summary
    })
}

/// How many times `fig-receiver snapshot` tries a pass that gave way to DDL (a lock timeout).
pub const SNAPSHOT_ATTEMPTS: u32 = 3;

/// [`pass`], tried again (after 2 s, then 4 s) when it gave way to DDL: the DDL has had its turn
/// by then, and tables stored already resume where they stopped.
async fn pass_giving_way(
    config: &Config,
    tables: &[crate::config::TableSync],
    sink: &SinkHandle,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, SyncError> {
    let mut attempt = 1;
    loop {
        match pass(config, tables, sink, shutdown.clone()).await {
            Err(e @ SyncError::LockTimeout { .. }) if attempt < SNAPSHOT_ATTEMPTS => {
                let wait = std::time::Duration::from_secs(1 << attempt);
                tracing::warn!(error = %e, attempt, retry_in_secs = wait.as_secs(), "the copy gave way to DDL; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = async {
                        if shutdown.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    } => {}
                }
                if *shutdown.borrow() {
                    return Err(SyncError::Stopped);
                }
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One pass over `tables` (snapshot and incremental): the snapshot tables copied together in
/// parallel, then each incremental table.
pub async fn pass(
    config: &Config,
    tables: &[crate::config::TableSync],
    sink: &SinkHandle,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, SyncError> {
    let started = Instant::now();
    let targets: Vec<Target> = tables
        .iter()
        .filter(|t| t.mode == SyncMode::Snapshot)
        .map(|t| Target {
            schema: t.schema.clone(),
            table: t.table.clone(),
            rule: catalog::KeyRule::PrimaryKey,
            sync: "snapshot",
            like_pgoutput: false,
            finish: true,
            partitions: None,
        })
        .collect();
    let mut summary = Summary::default();
    if !targets.is_empty() {
        let s = copy_tables(
            config,
            &targets,
            SnapshotSource::Own,
            sink,
            shutdown.clone(),
        )
        .await?;
        summary.tables += s.tables;
        summary.rows += s.rows;
    }
    for t in tables {
        if let SyncMode::Incremental { cursor, lookback } = &t.mode {
            if *shutdown.borrow() {
                return Err(SyncError::Stopped);
            }
            let rows =
                incremental::sync_table(config, t, cursor, lookback.as_deref(), sink).await?;
            summary.tables += 1;
            summary.rows += rows;
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The tables a slot of `plugin` streams under `config`, as they are mirrored: figoutput narrows
/// what it streams by `replication.tables`; pgoutput streams the publication whole.
pub async fn streamed(config: &Config, plugin: &str) -> Result<Vec<catalog::Mirrored>, SyncError> {
    let client = config.source.connect_sql().await?;
    let patterns: &[String] = match plugin {
        "figoutput" => &config.tables,
        _ => &[],
    };
    catalog::cdc_tables(
        &client,
        config.publication.as_deref(),
        patterns,
        config.partition_mirrors,
    )
    .await
}

/// The initial copy of the tables a new slot streams, under `source`'s snapshot: every table the
/// slot's publication (or table list) covers, except those synced another way. Takes the sink and
/// gives it back, whatever happened.
pub async fn initial_copy(
    config: &Config,
    plugin: &str,
    sink: Box<dyn crate::sink::Sink>,
    source: SnapshotSource,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> (
    Option<Box<dyn crate::sink::Sink>>,
    Result<Summary, SyncError>,
) {
    let handle = SinkHandle::new(sink);
    let result = async {
        // The copy takes exactly the tables the stream will carry.
        let tables = streamed(config, plugin).await?;
        let targets: Vec<Target> = tables
            .into_iter()
            .filter(|m| {
                !config.syncs.iter().any(|c| {
                    c.mode != SyncMode::Cdc && (&c.schema, &c.table) == (&m.schema, &m.table)
                })
            })
            .map(|m| Target {
                schema: m.schema,
                table: m.table,
                rule: catalog::KeyRule::ReplicaIdentity,
                sync: "cdc-initial",
                like_pgoutput: plugin == "pgoutput",
                finish: true,
                partitions: m.partitions,
            })
            .collect();
        tracing::info!(
            tables = targets.len(),
            "initial copy of the streamed tables"
        );
        copy_tables(config, &targets, source, &handle, shutdown).await
    }
    .await;
    (handle.into_inner().ok(), result)
}
