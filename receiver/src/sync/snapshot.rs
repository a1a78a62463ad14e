//! Snapshot copies: whole tables, read under one snapshot, several chunks at once, each table
//! replacing its mirror atomically when its last chunk is stored.
//!
//! ```text
//! plan connection: BEGIN REPEATABLE READ READ ONLY; [SET TRANSACTION SNAPSHOT s | pg_export_snapshot()]
//!   describe tables, txid snapshot ─▶ per table: sink.load_begin ─▶ chunks still to copy
//! N workers (own connections, same snapshot, row_security = off):
//!   take a chunk ─▶ COPY … WHERE ctid range ─▶ rows ─▶ sink.load_chunk (whole chunk, marked done)
//!   last chunk of a table stored ─▶ sink.load_finish (the mirror replaced atomically)
//! ```
//!
//! **Resuming.** A load interrupted by a crash resumes after its stored chunks, under a new
//! snapshot (the old one died with its connection). Rows of a keyed table that changed since the
//! first snapshot may have moved into chunks stored already; one more pass over the table reads the
//! rows written since (`age(xmin)` within the transactions since the first snapshot) and stores them
//! by key, so no row that exists at the source is missed and none is stored twice. Rows deleted in
//! the meantime from chunks stored earlier stay until the next snapshot (a CDC table's stream
//! deletes them, replaying from the slot's start). A table without a key starts over (the sink
//! drops its staged rows).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::catalog::{self, KeyRule, TableInfo};
use super::chunks::{self, TID_RANGE_SCAN_VERSION};
use super::copy;
use super::progress::Progress;
use super::writer::{SinkHandle, CHANNEL_BATCHES};
use super::{Summary, SyncError};
use crate::config::Config;
use crate::ident::quote;
use crate::model::Lsn;
use crate::replication::SESSION_SETTINGS;
use crate::sink::load::CATCH_UP_CHUNK;
use crate::sink::{Load, LoadMode};

/// A table to copy.
#[derive(Debug, Clone)]
pub struct Target {
    pub schema: String,
    pub table: String,
    pub rule: KeyRule,
    /// Recorded with the load: `snapshot` or `cdc-initial`.
    pub sync: &'static str,
    /// Describe the table as pgoutput does (no NOT NULL flags, no attnums), so the copy and the
    /// stream record one definition, not two.
    pub like_pgoutput: bool,
    /// Finish the load (swap it into the mirror) as soon as its last chunk is stored. `false`: the
    /// caller finishes it from [`Summary::unfinished`] (a re-copy waits for the stream first).
    pub finish: bool,
    /// A partitioned table mirrored under its root: the leaves whose rows it holds.
    pub partitions: Option<super::catalog::Partitions>,
}

/// The snapshot the copy reads.
#[derive(Debug, Clone)]
pub enum SnapshotSource {
    /// Export one from the first connection of the pass.
    Own,
    /// Exported by `CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT` (valid while the creating replication
    /// connection stays idle); `position` is the slot's consistent point.
    Exported { name: String, position: Lsn },
    /// The slot's exported snapshot is gone (a crash midway): a fresh one, recorded at the slot's
    /// consistent point so the stream, replaying from there, repairs what changed since.
    Fresh { position: Lsn },
}

/// Why a table without a key is out of sync after its interrupted initial copy.
const INTERRUPTED_WITHOUT_KEY: &str = "its initial copy was interrupted, and a table without a key cannot resume a copy exactly (a row read twice cannot be told from two equal rows); a re-copy at an exact position of the stream repairs it: `run` does it by itself, or `fig-receiver resync`";

/// Whether the sink keeps `rel`'s rows as a multiset (no key columns, or all of them, as
/// pgoutput marks REPLICA IDENTITY FULL): then its rows cannot be matched by key.
fn stored_as_multiset(rel: &crate::model::Relation) -> bool {
    let keys = rel.columns.iter().filter(|c| c.key).count();
    keys == 0 || keys == rel.columns.len()
}

/// SQL giving the server's WAL position: flushed on a primary, replayed on a standby.
pub const WAL_POSITION_SQL: &str = "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text";

/// How every worker session reads: under the pass's shared snapshot (if any; else each chunk under
/// its own), waiting at most `lock_timeout` for a lock.
#[derive(Clone)]
struct Reading {
    shared: Option<String>,
    lock_timeout: Duration,
}

/// One unit of work: a chunk of a table.
struct Item {
    table: usize,
    chunk: u32,
    condition: String,
}

/// A table being copied.
struct Table {
    info: TableInfo,
    load: Load,
    finish: bool,
    progress: Progress,
    remaining: AtomicUsize,
}

/// Copies `targets` into the sink, each replacing its mirror when complete.
pub async fn copy_tables(
    config: &Config,
    targets: &[Target],
    source: SnapshotSource,
    sink: &SinkHandle,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, SyncError> {
    let started = Instant::now();
    let plan = config.source.connect_sql().await?;
    let version = catalog::server_version(&plan).await?;
    let types = catalog::load_types(&plan).await?;
    let lock_timeout = config.sync_lock_timeout;
    begin_read(&plan, lock_timeout).await?;
    let (shared, position) = match &source {
        SnapshotSource::Exported { name, position } => {
            set_snapshot(&plan, name).await?;
            (Some(name.clone()), *position)
        }
        SnapshotSource::Own | SnapshotSource::Fresh { .. } => {
            let exported = plan.query_one("SELECT pg_export_snapshot()", &[]).await;
            let position = match &source {
                SnapshotSource::Fresh { position } => *position,
                _ => wal_position(&plan).await?,
            };
            match exported {
                Ok(row) => (Some(row.get::<_, String>(0)), position),
                Err(e) => {
                    // A server that cannot export snapshots (some standbys): each table is read by
                    // one connection under its own snapshot.
                    warn!(error = %crate::conn::describe_sql_error(&e), "cannot export a snapshot; copying each table whole under its own snapshot");
                    plan.batch_execute("ROLLBACK")
                        .await
                        .map_err(|e| SyncError::query("ending the planning transaction", e))?;
                    begin_read(&plan, lock_timeout).await?;
                    (None, position)
                }
            }
        }
    };
    let snapshot: String = plan
        .query_one("SELECT txid_current_snapshot()::text", &[])
        .await
        .map_err(|e| SyncError::query("reading the transaction snapshot", e))?
        .get(0);

    let mut tables = Vec::with_capacity(targets.len());
    let mut items = VecDeque::new();
    let mut accepted: Vec<(String, String)> = Vec::new();
    for t in targets {
        let mut info = match catalog::describe(
            &plan,
            &t.schema,
            &t.table,
            t.rule,
            &types,
            version,
            config.include_generated,
        )
        .await
        {
            // Listed a moment ago and dropped since: the next attempt's list no longer has it.
            Err(SyncError::NoTable { table }) if t.sync == "cdc-initial" => {
                return Err(SyncError::ChangedAtStart {
                    table,
                    detail: "it was dropped".into(),
                })
            }
            described => described?,
        };
        info.only_partitions = t
            .partitions
            .as_ref()
            .filter(|p| !p.all)
            .map(|p| p.leaves.clone());
        if t.like_pgoutput {
            let rel = std::sync::Arc::make_mut(&mut info.relation);
            for c in &mut rel.columns {
                c.not_null = false;
                c.attnum = None;
            }
        }
        if info.relation.columns.is_empty() {
            // SQLite tables need a column; a column-less table has nothing to copy but its row count.
            info!(table = %format!("{}.{}", t.schema, t.table), "no columns: nothing to copy");
            continue;
        }
        let per_chunk = if shared.is_some() && version >= TID_RANGE_SCAN_VERSION {
            chunks::blocks_per_chunk(config.sync_chunk_bytes, info.block_size)
        } else {
            0
        };
        // A table the sink cannot hold (two mirrors under one name, columns SQLite cannot tell
        // apart) is refused before anything of it is written; the others are copied.
        let (relation, earlier) = (info.relation.clone(), accepted.clone());
        if let Some(e) = sink.with(move |s| s.refusal(&relation, &earlier)).await? {
            if t.sync != "cdc-initial" {
                return Err(SyncError::Sink(e));
            }
            let (schema, table, reason) = (t.schema.clone(), t.table.clone(), e.to_string());
            sink.with(move |s| s.mark_out_of_sync(&schema, &table, position, &reason))
                .await?;
            warn!(error = %e, "a table the sink cannot mirror is left out of the initial copy and marked out of sync; the others are copied");
            continue;
        }
        accepted.push((t.schema.clone(), t.table.clone()));
        let mut load = Load {
            relation: info.relation.clone(),
            mode: LoadMode::Replace,
            position,
            snapshot: snapshot.clone(),
            sync: t.sync,
            chunk_blocks: per_chunk,
            partitions: t.partitions.as_ref().map(|p| p.leaves.clone()),
        };
        let begin = load.clone();
        let progress = sink.with(move |s| s.load_begin(&begin)).await?;
        let name = format!("{}.{}", t.schema, t.table);
        if let Some(p) = progress.as_ref().filter(|p| p.finished) {
            info!(table = %name, rows = p.rows, "initial copy finished before the restart");
            continue;
        }
        if matches!(source, SnapshotSource::Fresh { .. }) && stored_as_multiset(&info.relation) {
            // Copied now, under a snapshot newer than the slot's consistent point, and then
            // replayed from that point, its rows written in between would be stored twice: a
            // table without a key cannot tell a row read twice from two equal rows. It waits for
            // a re-copy at an exact position of the stream instead (`resync.rs`).
            let (schema, table) = (t.schema.clone(), t.table.clone());
            sink.with(move |s| {
                s.mark_out_of_sync(&schema, &table, position, INTERRUPTED_WITHOUT_KEY)
            })
            .await?;
            warn!(table = %name, "the initial copy of a table without a key was interrupted: the table is out of sync until a re-copy (run does it by itself; or fig-receiver resync)");
            continue;
        }
        // Locked after its load is recorded, so that an initial copy that gives way to DDL on its
        // very first table is still on record and the next attempt finishes it from the slot's
        // consistent point (`Start::FinishInitialCopy`) instead of refusing the slot.
        info.blocks = lock_unchanged(&plan, &info).await?;
        let mut table_items = Vec::new();
        let already = match progress {
            Some(p) => {
                // Same ranges as the first attempt; rows written since its snapshot read again.
                load.chunk_blocks = p.chunk_blocks;
                load.snapshot = p.snapshot.clone();
                let per = if shared.is_some() { p.chunk_blocks } else { 0 };
                for c in chunks::plan(info.blocks, per) {
                    if !p.done.contains(&c.index) {
                        table_items.push((c.index, c.condition()));
                    }
                }
                if p.snapshot != snapshot && !p.done.is_empty() {
                    let since = written_since(&plan, &p.snapshot).await?;
                    let n = p.done.iter().filter(|&&c| c >= CATCH_UP_CHUNK).count() as u32;
                    table_items.push((CATCH_UP_CHUNK + n, since));
                }
                info!(table = %name, stored_chunks = p.done.len(), rows = p.rows, "resuming an interrupted copy");
                p.rows
            }
            None => {
                for c in chunks::plan(info.blocks, per_chunk) {
                    table_items.push((c.index, c.condition()));
                }
                0
            }
        };
        let index = tables.len();
        for (chunk, condition) in &table_items {
            items.push_back(Item {
                table: index,
                chunk: *chunk,
                condition: condition.clone(),
            });
        }
        info!(table = %name, chunks = table_items.len(), estimated_rows = info.estimated_rows.max(0.0) as u64, "copying");
        tables.push(Table {
            finish: t.finish,
            progress: Progress::new(name, info.estimated_rows, already),
            remaining: AtomicUsize::new(table_items.len()),
            info,
            load,
        });
    }
    let tables = Arc::new(tables);
    // Tables whose every chunk is stored already (a crash just before the swap) finish now.
    for t in tables
        .iter()
        .filter(|t| t.remaining.load(Ordering::SeqCst) == 0)
    {
        finish(sink, t).await?;
    }

    let workers = config.sync_parallel.min(items.len()).max(1);
    let queue = Arc::new(Mutex::new(items));
    let mut set = tokio::task::JoinSet::new();
    let reading = Reading {
        shared,
        lock_timeout,
    };
    for _ in 0..workers {
        let (config, queue, tables, sink, reading, shutdown) = (
            config.source.clone(),
            Arc::clone(&queue),
            Arc::clone(&tables),
            sink.clone(),
            reading.clone(),
            shutdown.clone(),
        );
        set.spawn(
            async move { worker(&config, &reading, &queue, &tables, &sink, &shutdown).await },
        );
    }
    let mut failure = None;
    while let Some(done) = set.join_next().await {
        let result = done.unwrap_or(Err(SyncError::SinkLost));
        if let Err(e) = result {
            // One failure ends the whole attempt: every worker's session closes, and so does the
            // planning session below with its locks, so DDL a worker gave way to goes through.
            failure.get_or_insert(e);
            set.abort_all();
        }
    }
    // The exported snapshot had to stay valid until every worker imported it.
    drop(plan);
    if let Some(e) = failure {
        return Err(e);
    }
    let rows = tables.iter().map(|t| t.progress.rows()).sum();
    Ok(Summary {
        tables: tables.len(),
        rows,
        seconds: started.elapsed().as_secs_f64(),
        unfinished: tables
            .iter()
            .filter(|t| !t.finish)
            .map(|t| t.load.clone())
            .collect(),
    })
}

/// Takes chunks off the queue until it is empty.
async fn worker(
    source: &crate::conn::ConnConfig,
    reading: &Reading,
    queue: &Mutex<VecDeque<Item>>,
    tables: &[Table],
    sink: &SinkHandle,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), SyncError> {
    let client = source.connect_sql().await?;
    if let Some(name) = &reading.shared {
        begin_read(&client, reading.lock_timeout).await?;
        set_snapshot(&client, name).await?;
    }
    // The previous chunk's store, still writing its last rows and committing while the next
    // chunk is read: the server streams on instead of waiting for every commit. It is waited for
    // on every way out, so no store outlives its worker.
    let mut storing: Option<(usize, Storing)> = None;
    let result = copy_chunks(
        &client,
        reading,
        queue,
        tables,
        sink,
        shutdown,
        &mut storing,
    )
    .await;
    let settled = match storing {
        Some((table, last)) => stored(last, sink, &tables[table]).await,
        None => Ok(()),
    };
    result.and(settled)
}

async fn copy_chunks(
    client: &Client,
    reading: &Reading,
    queue: &Mutex<VecDeque<Item>>,
    tables: &[Table],
    sink: &SinkHandle,
    shutdown: &tokio::sync::watch::Receiver<bool>,
    storing: &mut Option<(usize, Storing)>,
) -> Result<(), SyncError> {
    loop {
        if *shutdown.borrow() {
            return Err(SyncError::Stopped);
        }
        let Some(item) = queue.lock().map_err(|_| SyncError::SinkLost)?.pop_front() else {
            return Ok(());
        };
        let t = &tables[item.table];
        if reading.shared.is_none() {
            begin_read(client, reading.lock_timeout).await?;
        }
        let sql = copy::copy_sql(&t.info, &item.condition, "");
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let store = {
            let (sink, load) = (sink.clone(), t.load.clone());
            tokio::spawn(async move { sink.chunk(load, item.chunk, rx, None).await })
        };
        let read =
            copy::copy_rows(client, &t.info, &sql, &tx, sink.pool(), Some(&t.progress)).await;
        drop(tx);
        if let Err(e) = read {
            // The store saw the failure and keeps nothing of the chunk; wait for it to say so.
            let _ = store.await;
            return Err(e);
        }
        if reading.shared.is_none() {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| SyncError::query("ending the copy transaction", e))?;
        }
        if let Some((table, previous)) = storing.replace((item.table, store)) {
            stored(previous, sink, &tables[table]).await?;
        }
    }
}

type Storing = tokio::task::JoinHandle<Result<u64, SyncError>>;

/// Waits for a chunk's store; the table's last chunk replaces its mirror.
async fn stored(store: Storing, sink: &SinkHandle, t: &Table) -> Result<(), SyncError> {
    store.await.map_err(|_| SyncError::SinkLost)??;
    if t.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
        finish(sink, t).await?;
    }
    Ok(())
}

async fn finish(sink: &SinkHandle, t: &Table) -> Result<(), SyncError> {
    if !t.finish {
        return Ok(());
    }
    let load = t.load.clone();
    let rows = sink.with(move |s| s.load_finish(&load)).await?;
    let secs = t.progress.elapsed().as_secs_f64().max(1e-9);
    info!(table = %t.load.table(), rows, seconds = format!("{secs:.1}"), rows_per_sec = (t.progress.rows() as f64 / secs) as u64, "copied; the mirror now holds the new rows");
    Ok(())
}

/// Opens the read transaction every copy runs in. `row_security = off`: a policy that would hide
/// rows makes the copy fail instead; no timeout cuts a long copy (or the idle planning session
/// that keeps an exported snapshot alive) short, but every lock wait is bounded by `lock_timeout`
/// (DESIGN.md rule 10): a copy waiting for a lock that DDL holds or has queued for gives way
/// ([`SyncError::LockTimeout`]) instead of waiting, because the DDL may in turn be waiting for a
/// lock another session of the same copy holds, a deadlock PostgreSQL cannot see. Values selected
/// as text are printed with the replication connection's settings, so a copied value equals the
/// streamed one.
pub(super) async fn begin_read(client: &Client, lock_timeout: Duration) -> Result<(), SyncError> {
    let mut sql = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
         SET LOCAL row_security = off; SET LOCAL statement_timeout = 0; \
         SET LOCAL idle_in_transaction_session_timeout = 0; \
         SET LOCAL lock_timeout = '{}ms'; \
         SET LOCAL standard_conforming_strings = on",
        lock_timeout.as_millis().max(1)
    );
    // tokio-postgres fixes client_encoding (UTF8) itself and refuses a session that changes it.
    for (name, value) in SESSION_SETTINGS
        .iter()
        .filter(|(n, _)| *n != "client_encoding")
    {
        sql.push_str(&format!("; SET LOCAL {name} = '{value}'"));
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| SyncError::query("starting the copy transaction", e))
}

/// Locks the table against DDL until the copy ends (the planning transaction lives until every
/// chunk is stored), then checks that nothing changed it between the snapshot and the lock. Both
/// matter because a table rewrite (`ALTER … TYPE`, `TRUNCATE`, `VACUUM FULL`, `CLUSTER`) is not
/// MVCC-safe: a snapshot older than the rewrite sees the table empty, so a chunk read after one
/// would silently store nothing. A dropped column would fail the COPY later; it is caught here with
/// the same clear error. DDL that comes once the table is locked waits for the copy, as it does
/// for `pg_dump`; DDL that holds the table now makes the lock time out (`sync.lock_timeout`), and
/// the copy gives way and is tried again.
/// Returns the table's heap blocks, read under the lock.
async fn lock_unchanged(plan: &Client, info: &TableInfo) -> Result<u64, SyncError> {
    let rel = &info.relation;
    let name = format!("{}.{}", rel.schema, rel.table);
    let quoted = format!("{}.{}", quote(&rel.schema), quote(&rel.table));
    let changed = |detail: String| SyncError::ChangedAtStart {
        table: name.clone(),
        detail,
    };
    if let Err(e) = plan
        .batch_execute(&format!("LOCK TABLE {quoted} IN ACCESS SHARE MODE"))
        .await
    {
        // Dropped since the snapshot: the next attempt's snapshot and table list no longer have it.
        if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            return Err(changed("it was dropped".into()));
        }
        return Err(SyncError::on_table(
            &name,
            &format!("locking {name} for the copy"),
            e,
        ));
    }
    // pg_class as of the snapshot against the relation cache, which is current once locked.
    let same_storage: bool = plan
        .query_one(
            "SELECT c.relfilenode = COALESCE(pg_catalog.pg_relation_filenode(c.oid), 0) \
             FROM pg_catalog.pg_class c WHERE c.oid = $1",
            &[&rel.relid],
        )
        .await
        .map_err(|e| SyncError::query(&format!("checking {name} for changes"), e))?
        .get(0);
    if !same_storage {
        return Err(changed("its storage was rewritten or truncated".into()));
    }
    // Parsing the COPY resolves the described columns against the current catalog.
    if let Err(e) = plan.prepare(&copy::copy_sql(info, "", "")).await {
        return Err(changed(crate::conn::describe_sql_error(&e)));
    }
    catalog::heap_blocks(plan, rel.relid).await
}

/// Imports an exported snapshot; must come first in the transaction (after the SET LOCALs, which
/// take no snapshot).
async fn set_snapshot(client: &Client, name: &str) -> Result<(), SyncError> {
    let literal = format!("'{}'", name.replace('\'', "''"));
    client
        .batch_execute(&format!("SET TRANSACTION SNAPSHOT {literal}"))
        .await
        .map_err(|e| SyncError::query("importing the exported snapshot", e))
}

pub async fn wal_position(client: &Client) -> Result<Lsn, SyncError> {
    let text: String = client
        .query_one(WAL_POSITION_SQL, &[])
        .await
        .map_err(|e| SyncError::query("reading the WAL position", e))?
        .get(0);
    text.parse().map_err(|e| SyncError::Query {
        what: "reading the WAL position".into(),
        message: format!("unreadable LSN {text:?}: {e}"),
        transient: false,
    })
}

/// The condition selecting rows written since the transaction snapshot `first` (its `xmin`), with a
/// margin: reading a few rows more is harmless (they are stored by key), missing one is not.
async fn written_since(client: &Client, first: &str) -> Result<String, SyncError> {
    let first_xmin: i64 = first
        .split(':')
        .next()
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| SyncError::Query {
            what: "resuming a copy".into(),
            message: format!("the stored snapshot {first:?} is unreadable"),
            transient: false,
        })?;
    let now: i64 = client
        .query_one(
            "SELECT txid_snapshot_xmax(txid_current_snapshot())::int8",
            &[],
        )
        .await
        .map_err(|e| SyncError::query("reading the transaction counter", e))?
        .get(0);
    let span = now.saturating_sub(first_xmin).saturating_add(1_000_000);
    Ok(if span >= i32::MAX as i64 {
        String::new()
    } else {
        format!("age(xmin) <= {span}")
    })
}
