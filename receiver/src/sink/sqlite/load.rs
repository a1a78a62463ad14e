//! Table loads into the SQLite sink (see [`crate::sink::load`] for the rules).
//!
//! ```text
//! Replace:  load_begin   _fig_loads row 'running' + staging table _fig_load_<id> (+ its key index
//!                        "_fig_load_<id>:key" when keyed)
//!           load_chunk   BEGIN; rows → staging (and its key index); _fig_load_chunks (id, chunk); COMMIT
//!           load_finish  BEGIN; mirror definition recorded; DROP mirror; staging RENAME TO mirror
//!                        (the key index goes with it, under its staging name); _fig_loads 'finished';
//!                        COMMIT                                          (readers: old rows or new)
//! Upsert:   load_chunk   BEGIN; rows upserted into the mirror; _fig_cursors; COMMIT
//! ```
//!
//! A resumed keyed load stores rows with "insert or replace by key", so a row read again (a chunk
//! re-read after a crash, a row that moved into a chunk copied earlier) is stored once, in its newer
//! version. A resumed load of a table without a key cannot tell a row read twice from two equal rows:
//! its staged rows are dropped and the copy starts over.
//!
//! Columns the mirror has but the source no longer has (dropped at the source) are kept through a
//! replacement, NULL in the new rows, as the stream keeps them (see `mirror.rs`).

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::mirror::{self, quote, Keying, Plan};
use super::values::Bind;
use super::{lsn_i64, sql_err, SqliteSink};
use crate::model::{Lsn, Relation, Value};
use crate::sink::{key_positions, Cursor, Load, LoadMode, LoadProgress, RowBatches, SinkError};

const CREATE_LOAD_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS _fig_loads (
    id INTEGER PRIMARY KEY,
    mirror TEXT NOT NULL,
    relid INTEGER NOT NULL,
    mode TEXT NOT NULL,
    sync TEXT NOT NULL,
    position INTEGER NOT NULL,
    snapshot TEXT NOT NULL,
    chunk_blocks INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'finished')),
    rows INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS _fig_load_chunks (
    load INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    PRIMARY KEY (load, chunk)
);
CREATE TABLE IF NOT EXISTS _fig_cursors (
    mirror TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#;

pub(super) const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// [`Load::sync`] of a re-copy of a streamed table (`fig-receiver resync`, a table out of sync):
/// read at a position of the stream, swapped in once the stream reached it, with the changes
/// since replayed from the history (`replay.rs`).
pub const RESYNC: &str = "resync";

fn staging_name(id: i64) -> String {
    format!("_fig_load_{id}")
}

/// A load's row in `_fig_loads`.
struct LoadRow {
    id: i64,
    snapshot: String,
    position: i64,
    rows: i64,
    chunk_blocks: i64,
}

/// The newest load of a mirror in `state`; with `at`, only one of that sync kind at that position.
fn find(
    conn: &Connection,
    mirror: &str,
    mode: LoadMode,
    state: &str,
    at: Option<(&str, i64)>,
) -> rusqlite::Result<Option<LoadRow>> {
    let (sync, position) = at.unwrap_or(("", -1));
    conn.query_row(
        "SELECT id, snapshot, position, rows, chunk_blocks FROM _fig_loads \
         WHERE mirror = ?1 AND mode = ?2 AND state = ?3 AND (?5 < 0 OR (sync = ?4 AND position = ?5)) \
         ORDER BY id DESC LIMIT 1",
        rusqlite::params![mirror, mode.as_str(), state, sync, position],
        |r| {
            Ok(LoadRow {
                id: r.get(0)?,
                snapshot: r.get(1)?,
                position: r.get(2)?,
                rows: r.get(3)?,
                chunk_blocks: r.get(4)?,
            })
        },
    )
    .optional()
}

/// The running load of a mirror.
fn running(conn: &Connection, mirror: &str, mode: LoadMode) -> rusqlite::Result<Option<LoadRow>> {
    find(conn, mirror, mode, "running", None)
}

/// Brings `rel`'s mirror to the definition `load` copies (created if new, new columns added, the
/// definition recorded at the load's position); a schema change found is noted as the sync's.
fn ensure_mirror(
    tx: &Connection,
    path: &Path,
    rel: &Arc<Relation>,
    load: &Load,
    drift: &Option<Arc<crate::drift::Watch>>,
    drifted: &mut Vec<crate::drift::SchemaChange>,
) -> Result<Plan, SinkError> {
    let ensured = mirror::ensure(
        tx,
        path,
        rel,
        (load.position, 0),
        crate::drift::Source::Sync,
    )?;
    SqliteSink::drifted(drift, drifted, path, ensured.drift)?;
    Ok(ensured.plan)
}

/// The latest definition of `rel`'s relation that the stream recorded at or after `position`.
fn newer_definition(
    conn: &Connection,
    rel: &Arc<Relation>,
    position: Lsn,
) -> rusqlite::Result<Option<Arc<Relation>>> {
    let at = position.as_u64().min(i64::MAX as u64) as i64;
    let row: Option<(String, String, String)> = conn
        .query_row(
            "SELECT schema, \"table\", columns FROM _fig_schema WHERE relid = ?1 AND effective_lsn >= ?2 \
             ORDER BY effective_lsn DESC, effective_ordinal DESC LIMIT 1",
            rusqlite::params![rel.relid, at],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(row.and_then(|(schema, table, columns)| {
        mirror::recorded(rel.relid, &schema, &table, &columns).map(Arc::new)
    }))
}

/// Whether this sink holds an initial copy of CDC tables (then a table first seen later missed it).
pub(super) fn initial_copy_done(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '_fig_loads') \
         AND EXISTS (SELECT 1 FROM _fig_loads WHERE sync = 'cdc-initial')",
        [],
        |r| r.get(0),
    )
    .or_else(|_| Ok(false))
}

/// Whether a load ever filled `mirror` (one that finished: a failed one filled nothing).
pub(super) fn ever_loaded(conn: &Connection, mirror: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM _fig_loads WHERE mirror = ?1 AND state = 'finished')",
        [mirror],
        |r| r.get(0),
    )
    .or_else(|_| Ok(false))
}

/// The running load of `load`'s mirror, which the pipeline began before `doing` (e.g. "finishing
/// the load of") its table; none is a pipeline bug.
fn begun(
    conn: &Connection,
    path: &Path,
    mirror: &str,
    load: &Load,
    doing: &str,
) -> Result<LoadRow, SinkError> {
    let table = load.table();
    // A re-copy is its own load, at its own position: another re-copy of the table begun since has
    // dropped it, and this one must stop rather than write into the other's staging table.
    let found = match load.sync {
        RESYNC => find(
            conn,
            mirror,
            load.mode,
            "running",
            Some((RESYNC, lsn_i64(load.position)?)),
        ),
        _ => running(conn, mirror, load.mode),
    };
    match found {
        Ok(Some(row)) => Ok(row),
        Ok(None) if load.sync == RESYNC => Err(SinkError::ResyncSuperseded { table }),
        Ok(None) => Err(sql_err(
            path,
            format!(
                "{doing} {table}: the load was not begun (a pipeline bug: report it with the log)"
            ),
            rusqlite::Error::QueryReturnedNoRows,
        )),
        Err(e) => Err(sql_err(
            path,
            format!("reading the load state for {table}"),
            e,
        )),
    }
}

impl SqliteSink {
    fn load_tables(&mut self) -> Result<(), SinkError> {
        self.conn
            .execute_batch(CREATE_LOAD_TABLES)
            .and_then(|()| super::add_lsn_text(&self.conn, "_fig_loads", "position"))
            .and_then(|()| super::add_column(&self.conn, "_fig_loads", "partitions", "TEXT"))
            .map_err(|e| sql_err(&self.path, "creating the load tables", e))
    }

    pub(super) fn begin_load(&mut self, load: &Load) -> Result<Option<LoadProgress>, SinkError> {
        self.load_tables()?;
        if load.mode == LoadMode::Upsert {
            return Ok(None);
        }
        let rel = &load.relation;
        let mirror = mirror::mirror_name(&rel.schema, &rel.table);
        let path = self.path.clone();
        let err = |what: &'static str| {
            let path = path.clone();
            move |e| {
                sql_err(
                    &path,
                    format!("{what} for {mirror_for_err}", mirror_for_err = load.table()),
                    e,
                )
            }
        };
        let keyed = matches!(Plan::new(rel.clone(), "rowid").keying, Keying::Key(_));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("starting a load"))?;
        if load.sync == "cdc-initial" {
            // The same slot creation's copy of this table already finished before a crash.
            let at = Some((load.sync, lsn_i64(load.position)?));
            if let Some(done) = find(&tx, &mirror, load.mode, "finished", at)
                .map_err(err("reading the load state"))?
            {
                return Ok(Some(LoadProgress {
                    done: Vec::new(),
                    rows: done.rows as u64,
                    snapshot: done.snapshot,
                    position: load.position,
                    chunk_blocks: done.chunk_blocks as u64,
                    finished: true,
                }));
            }
        }
        if let Some(LoadRow {
            id,
            snapshot,
            position,
            rows,
            chunk_blocks,
        }) = running(&tx, &mirror, load.mode).map_err(err("reading the load state"))?
        {
            // A re-copy is tied to its own stream position: an unfinished one is never resumed.
            let resumable = load.sync != RESYNC;
            let mut staged_columns = mirror::mirror_columns(&tx, &staging_name(id))
                .map_err(err("reading the staging table"))?;
            let rowid = mirror::rowid_column_of(&tx, &staging_name(id))
                .map_err(err("reading the staging table"))?;
            staged_columns.retain(|c| Some(c) != rowid.as_ref());
            let same_shape = rel.columns.iter().all(|c| {
                staged_columns
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(&c.name))
            }) && staged_columns.len() == rel.columns.len();
            if keyed && same_shape && resumable {
                // From here rows may be read twice (a new snapshot): they are stored by key.
                tx.execute_batch(&staging_key_index(rel, &staging_name(id)))
                    .map_err(err("indexing the staged rows by key"))?;
                let done = tx
                    .prepare("SELECT chunk FROM _fig_load_chunks WHERE load = ?1 ORDER BY chunk")
                    .and_then(|mut s| {
                        s.query_map([id], |r| r.get::<_, u32>(0))?
                            .collect::<rusqlite::Result<Vec<u32>>>()
                    })
                    .map_err(err("reading the stored chunks"))?;
                tx.commit().map_err(err("reading the load state"))?;
                return Ok(Some(LoadProgress {
                    done,
                    rows: rows as u64,
                    snapshot,
                    position: Lsn(position as u64),
                    chunk_blocks: chunk_blocks as u64,
                    finished: false,
                }));
            }
            // Without a key a row read twice cannot be told from two equal rows; a changed table
            // shape makes the staged rows useless: start over.
            tracing::warn!(table = %load.table(), "an unfinished load cannot be resumed (the table has no key, or its columns changed); copying it again from the start");
            tx.execute_batch(&format!(
                "DROP TABLE IF EXISTS {}; DELETE FROM _fig_load_chunks WHERE load = {id}; DELETE FROM _fig_loads WHERE id = {id};",
                quote(&staging_name(id))
            ))
            .map_err(err("dropping the unfinished load"))?;
        }
        tx.execute(
            &format!("INSERT INTO _fig_loads (mirror, relid, mode, sync, position, snapshot, chunk_blocks, state, started_at, partitions) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', {NOW}, ?8)"),
            rusqlite::params![mirror, rel.relid, load.mode.as_str(), load.sync, lsn_i64(load.position)?, load.snapshot, load.chunk_blocks as i64, load.partitions.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default())],
        )
        .map_err(err("recording the load"))?;
        let id = tx.last_insert_rowid();
        let staging = staging_name(id);
        let defs = mirror::column_defs(&rel.columns);
        // A keyed table's key index is filled with the rows (they mostly come in key order, so
        // that costs less than building it at the end) and becomes the mirror's with the table.
        let mut ddl = format!(
            "CREATE TABLE {} ({defs}{});",
            quote(&staging),
            mirror::rowid_def(&rel.columns)
        );
        if keyed {
            ddl.push_str(&staging_key_index(rel, &staging));
        }
        tx.execute_batch(&ddl)
            .map_err(err("creating the staging table"))?;
        tx.commit().map_err(err("starting a load"))?;
        Ok(None)
    }

    pub(super) fn store_chunk(
        &mut self,
        load: &Load,
        chunk: u32,
        rows: &mut dyn RowBatches,
        cursor: Option<&Cursor>,
    ) -> Result<u64, SinkError> {
        self.load_tables()?;
        let rel = load.relation.clone();
        let mirror = mirror::mirror_name(&rel.schema, &rel.table);
        self.drifted.clear();
        let SqliteSink {
            conn,
            path,
            plans,
            drift,
            drifted,
            ..
        } = self;
        let path: &std::path::Path = path;
        let table = load.table();
        let table = table.as_str();
        let err = |what: &'static str| move |e| sql_err(path, format!("{what} for {table}"), e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("starting a load transaction"))?;
        let (target, load_id) = match load.mode {
            LoadMode::Replace => {
                let LoadRow { id, .. } = begun(
                    &tx,
                    path,
                    &mirror,
                    load,
                    &format!("storing chunk {chunk} of"),
                )?;
                (Target::Staging(quote(&staging_name(id))), Some(id))
            }
            LoadMode::Upsert => {
                let plan = ensure_mirror(&tx, path, &rel, load, drift, drifted)?;
                plans.remove(&rel.relid);
                (Target::Mirror(plan.insert.clone()), None)
            }
        };
        let width = rel.columns.len();
        let check = |row: &[Value]| {
            if row.len() == width {
                return Ok(());
            }
            Err(SinkError::ValueCount {
                schema: rel.schema.clone(),
                table: rel.table.clone(),
                which: "a loaded row",
                expected: width,
                key_columns: key_positions(&rel).len(),
                got: row.len(),
                commit_lsn: load.position,
                ordinal: 0,
            })
        };
        let mut n = 0u64;
        {
            // Staged rows go in groups of `group` per statement: SQLite's per-statement cost is
            // paid once per group instead of once per row. A batch's last rows go in one
            // statement of their own size (cached: batches mostly end alike).
            let group = match target {
                Target::Staging(_) => (256 / width.max(1)).clamp(1, 64),
                Target::Mirror(_) => 1,
            };
            let sql_for = |rows: usize| match &target {
                Target::Staging(table) => insert_sql(&rel, table, rows),
                Target::Mirror(upsert) => upsert.clone(),
            };
            let mut many = tx
                .prepare(&sql_for(group))
                .map_err(err("preparing the row insert"))?;
            let store = |stmt: &mut rusqlite::Statement<'_>, rows: &[Vec<Value>]| {
                for (i, v) in rows.iter().flatten().enumerate() {
                    stmt.raw_bind_parameter(i + 1, Bind(v))?;
                }
                stmt.raw_execute().map(|_| ())
            };
            while let Some(batch) = rows.next_batch() {
                let batch = batch?;
                batch.iter().try_for_each(|r| check(r))?;
                let mut groups = batch.chunks_exact(group);
                for g in &mut groups {
                    store(&mut many, g).map_err(err("storing a loaded row"))?;
                }
                let rest = groups.remainder();
                if !rest.is_empty() {
                    let mut stmt = tx
                        .prepare_cached(&sql_for(rest.len()))
                        .map_err(err("preparing the row insert"))?;
                    store(&mut stmt, rest).map_err(err("storing a loaded row"))?;
                }
                n += batch.len() as u64;
            }
        }
        if let Some(id) = load_id {
            tx.execute(
                "INSERT INTO _fig_load_chunks (load, chunk, rows) VALUES (?1, ?2, ?3)",
                rusqlite::params![id, chunk, n as i64],
            )
            .map_err(err("marking the chunk done"))?;
            tx.execute(
                "UPDATE _fig_loads SET rows = rows + ?2 WHERE id = ?1",
                rusqlite::params![id, n as i64],
            )
            .map_err(err("counting the loaded rows"))?;
        }
        if let Some(c) = cursor {
            let text = serde_json::to_string(c).expect("a cursor serializes");
            tx.execute(
                &format!("INSERT INTO _fig_cursors (mirror, cursor, updated_at) VALUES (?1, ?2, {NOW}) ON CONFLICT (mirror) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at"),
                rusqlite::params![mirror, text],
            )
            .map_err(err("storing the cursor"))?;
        }
        tx.commit().map_err(err("committing the loaded rows"))?;
        self.after_commit(true);
        Ok(n)
    }

    pub(super) fn finish_load(&mut self, load: &Load) -> Result<u64, SinkError> {
        self.load_tables()?;
        if load.mode == LoadMode::Upsert {
            return Ok(0);
        }
        let rel = load.relation.clone();
        let mirror = mirror::mirror_name(&rel.schema, &rel.table);
        self.drifted.clear();
        let SqliteSink {
            conn,
            path,
            plans,
            drift,
            drifted,
            ..
        } = self;
        let path: &std::path::Path = path;
        let table = load.table();
        let table = table.as_str();
        let err = |what: &'static str| move |e| sql_err(path, format!("{what} for {table}"), e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("starting to replace the mirror"))?;
        let LoadRow { id, rows, .. } = begun(&tx, path, &mirror, load, "finishing the load of")?;
        if load.sync == RESYNC {
            // The copy is as of its position; the mirror may take it only once the stream has
            // reached that position, so the history holds every change after it (`replay.rs`).
            let checkpoint: Option<i64> = tx
                .query_row(
                    "SELECT commit_end_lsn FROM _fig_checkpoint WHERE id = 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err("reading the checkpoint"))?;
            // Renamed since the copy was read: its history from here on is under the new name.
            let now: Option<(String, String)> = tx
                .query_row(
                    "SELECT schema, \"table\" FROM _fig_schema WHERE relid = ?1 \
                     ORDER BY effective_lsn DESC, effective_ordinal DESC LIMIT 1",
                    [rel.relid],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(err("reading the table's name"))?;
            if let Some((schema, table)) = now.filter(|(s, t)| (s, t) != (&rel.schema, &rel.table))
            {
                return Err(SinkError::ResyncRenamed {
                    table: load.table(),
                    now: format!("{schema}.{table}"),
                });
            }
            if checkpoint.is_none_or(|c| c < lsn_i64(load.position).unwrap_or(i64::MAX)) {
                return Err(SinkError::ResyncAhead {
                    table: load.table(),
                    position: load.position,
                    checkpoint: checkpoint
                        .map_or_else(|| "nothing".into(), |c| Lsn(c as u64).to_string()),
                });
            }
        }
        let staging = staging_name(id);
        // A resumed load read some rows twice (chunks re-read, the pass over rows written since
        // it began), stored once by key: the rows it holds are counted, not the rows it read.
        let resumed: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM _fig_load_chunks WHERE load = ?1 AND chunk >= ?2)",
                rusqlite::params![id, i64::from(crate::sink::load::CATCH_UP_CHUNK)],
                |r| r.get(0),
            )
            .map_err(err("reading the stored chunks"))?;
        let rows: i64 = match resumed {
            true => tx
                .query_row(
                    &format!("SELECT count(*) FROM {}", quote(&staging)),
                    [],
                    |r| r.get(0),
                )
                .map_err(err("counting the loaded rows"))?,
            false => rows,
        };
        // A re-copy's definition is the one at its position; a newer one the stream recorded since
        // is the mirror's (recording the older one again would report a schema change that never
        // happened). The replay applies each change under the definition in force for it.
        let rel = match load.sync {
            RESYNC => newer_definition(&tx, &rel, load.position)
                .map_err(err("reading the table's definitions"))?
                .unwrap_or(rel),
            _ => rel,
        };
        // The mirror in its current shape (created if new, new columns added, the definition
        // recorded), so the staging table can take its place column for column.
        ensure_mirror(&tx, path, &rel, load, drift, drifted)?;
        let kept =
            mirror::mirror_columns(&tx, &mirror).map_err(err("reading the mirror's columns"))?;
        let staged =
            mirror::mirror_columns(&tx, &staging).map_err(err("reading the staging table"))?;
        // The mirror's row id column is not a column to keep: the staging table has its own, or
        // `ensure` below gives the new mirror one when it needs it.
        let rowid =
            mirror::rowid_column_of(&tx, &mirror).map_err(err("reading the mirror's columns"))?;
        let mut ddl = String::new();
        for c in kept
            .iter()
            .filter(|k| Some(*k) != rowid.as_ref())
            .filter(|k| !staged.iter().any(|s| s.eq_ignore_ascii_case(k)))
        {
            ddl.push_str(&format!(
                "ALTER TABLE {} ADD COLUMN {};",
                quote(&staging),
                quote(c)
            ));
        }
        ddl.push_str(&format!(
            "DROP TABLE IF EXISTS {}; ALTER TABLE {} RENAME TO {};",
            quote(&mirror),
            quote(&staging),
            quote(&mirror)
        ));
        tx.execute_batch(&ddl)
            .map_err(err("replacing the mirror with the loaded rows"))?;
        // The staged key index is the mirror's now; a keyless mirror's lookup index is built.
        mirror::ensure(
            &tx,
            path,
            &rel,
            (load.position, 0),
            crate::drift::Source::Sync,
        )?;
        if load.sync == RESYNC {
            let replayed = super::replay::replay(&tx, path, &rel, load.position)?;
            let settled = super::tables::settle(&tx, &rel.schema, &rel.table, load.position)
                .map_err(err("recording the table in sync"))?;
            tracing::info!(table = %load.table(), from = %load.position, replayed, settled = settled > 0, "re-copy swapped in, the changes since it was read replayed");
        }
        tx.execute_batch(&format!(
            "UPDATE _fig_loads SET state = 'finished', rows = {rows}, finished_at = {NOW} WHERE id = {id}; DELETE FROM _fig_load_chunks WHERE load = {id};"
        ))
        .map_err(err("recording the finished load"))?;
        tx.commit().map_err(err("committing the replaced mirror"))?;
        plans.remove(&rel.relid);
        self.after_commit(true);
        Ok(rows as u64)
    }

    pub(super) fn initial_copy_position(&mut self) -> Result<Option<Lsn>, SinkError> {
        self.load_tables()?;
        initial_copy_position_of(&self.conn, &self.path)
    }

    pub(super) fn stored_cursor(
        &mut self,
        schema: &str,
        table: &str,
    ) -> Result<Option<Cursor>, SinkError> {
        self.load_tables()?;
        let mirror = mirror::mirror_name(schema, table);
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT cursor FROM _fig_cursors WHERE mirror = ?1",
                [&mirror],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql_err(&self.path, format!("reading the cursor of {mirror}"), e))?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| SinkError::BadCheckpoint {
                path: self.path.clone(),
                reason: format!("the stored cursor of {mirror} is unreadable ({e})"),
            })
        })
        .transpose()
    }
}

/// Where a chunk's rows go.
enum Target {
    /// A replace load's staging table (quoted): plain inserts, many rows per statement.
    Staging(String),
    /// The mirror itself, by the plan's upsert (this SQL), one row per statement.
    Mirror(String),
}

/// The unique key index of a keyed load's staging table (created with it, or when a load begun
/// without one resumes).
fn staging_key_index(rel: &crate::model::Relation, staging: &str) -> String {
    let keys = key_positions(rel)
        .iter()
        .map(|&k| quote(&rel.columns[k].name))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({keys});",
        quote(&format!("{staging}:key")),
        quote(staging)
    )
}

/// Keyed: insert or replace by key (with the key index of a resumed load, a row read twice is
/// stored once); else a plain insert. `rows` rows per statement.
fn insert_sql(rel: &crate::model::Relation, table: &str, rows: usize) -> String {
    let plan = Plan::new(Arc::new(rel.clone()), "rowid");
    let cols: Vec<String> = rel.columns.iter().map(|c| quote(&c.name)).collect();
    let one = format!("({})", vec!["?"; cols.len()].join(","));
    let values = vec![one; rows].join(",");
    let verb = match plan.keying {
        Keying::Key(_) => "INSERT OR REPLACE",
        Keying::Multiset => "INSERT",
    };
    format!("{verb} INTO {table} ({}) VALUES {values}", cols.join(","))
}

/// The stream position of the latest initial copy recorded in the sink file open on `conn`.
pub(super) fn initial_copy_position_of(
    conn: &Connection,
    path: &std::path::Path,
) -> Result<Option<Lsn>, SinkError> {
    let position: Option<i64> = conn
        .query_row(
            "SELECT position FROM _fig_loads WHERE sync = 'cdc-initial' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| sql_err(path, "reading the initial copy's position", e))?;
    Ok(position.map(|p| Lsn(p as u64)))
}

#[cfg(test)]
mod tests {
    //! Loads against real SQLite files: the rules of `sink/load.rs`, each test named by the rule.
    use super::*;
    use crate::model::Relation;
    use crate::sink::testkit::{col, rel};
    use crate::sink::Sink;
    use std::sync::Arc;

    fn accounts(key: bool) -> Arc<Relation> {
        rel(
            7,
            "public",
            "accounts",
            vec![
                col("id", "integer", 23, key),
                col("name", "text", 25, false),
            ],
        )
    }

    fn load(relation: Arc<Relation>, mode: LoadMode, sync: &'static str) -> Load {
        Load {
            relation,
            mode,
            position: Lsn(0x100),
            snapshot: "10:12:".into(),
            sync,
            chunk_blocks: 8,
            partitions: None,
        }
    }

    fn row(id: i64, name: &str) -> Vec<Value> {
        vec![Value::Int(id), Value::Text(name.into())]
    }

    fn rows(rs: Vec<Vec<Value>>) -> impl RowBatches {
        crate::sink::RowsAtHand::new(rs.into_iter().map(Ok))
    }

    fn mirror(path: &std::path::Path) -> Vec<(i64, String)> {
        let c = Connection::open(path).unwrap();
        let mut s = c
            .prepare(r#"SELECT id, name FROM "public.accounts" ORDER BY id, name"#)
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_replace_load_is_invisible_until_it_finishes_then_replaces_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut sink = SqliteSink::open(&path).unwrap();
        let first = load(accounts(true), LoadMode::Replace, "snapshot");
        assert_eq!(sink.load_begin(&first).unwrap(), None);
        sink.load_chunk(&first, 0, &mut rows(vec![row(1, "a"), row(2, "b")]), None)
            .unwrap();
        sink.load_finish(&first).unwrap();
        assert_eq!(mirror(&path), vec![(1, "a".into()), (2, "b".into())]);

        let second = load(accounts(true), LoadMode::Replace, "snapshot");
        assert_eq!(sink.load_begin(&second).unwrap(), None);
        sink.load_chunk(&second, 0, &mut rows(vec![row(2, "b2"), row(3, "c")]), None)
            .unwrap();
        // Readers still see the old rows: the new ones are staged.
        assert_eq!(mirror(&path), vec![(1, "a".into()), (2, "b".into())]);
        assert_eq!(sink.load_finish(&second).unwrap(), 2);
        // Row 1, deleted at the source, is gone.
        assert_eq!(mirror(&path), vec![(2, "b2".into()), (3, "c".into())]);
    }

    #[test]
    fn a_loaded_mirror_keeps_the_key_index_filled_during_the_load_and_no_second_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut sink = SqliteSink::open(&path).unwrap();
        let indexes = || {
            let c = Connection::open(&path).unwrap();
            let mut s = c
                .prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'public.accounts'")
                .unwrap();
            s.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
        };
        for round in 0..2 {
            let l = load(accounts(true), LoadMode::Replace, "snapshot");
            sink.load_begin(&l).unwrap();
            sink.load_chunk(&l, 0, &mut rows(vec![row(1, "a"), row(2, "b")]), None)
                .unwrap();
            sink.load_finish(&l).unwrap();
            let idx = indexes();
            assert_eq!(idx.len(), 1, "round {round}: {idx:?}");
            assert!(idx[0].starts_with("CREATE UNIQUE INDEX") && idx[0].ends_with("(\"id\")"));
        }
        // The stream's upserts find the key index the load left.
        let r = accounts(true);
        let mut change = crate::sink::testkit::ins(&r, row(2, "b2"));
        change.commit_lsn = Lsn(0x200);
        let t = crate::sink::testkit::tx(0x200, &[&r], vec![change]);
        sink.write(&[t], &crate::sink::testkit::ckpt(0x208))
            .unwrap();
        assert_eq!(mirror(&path), vec![(1, "a".into()), (2, "b2".into())]);
        // A key change still rebuilds it, under the mirror's own name.
        let mut keyless = (*accounts(false)).clone();
        keyless.columns[1].key = true;
        let keyed_by_name = Arc::new(keyless);
        let mut change = crate::sink::testkit::ins(&keyed_by_name, row(3, "c"));
        change.commit_lsn = Lsn(0x300);
        let t = crate::sink::testkit::tx(0x300, &[&keyed_by_name], vec![change]);
        sink.write(&[t], &crate::sink::testkit::ckpt(0x308))
            .unwrap();
        assert_eq!(
            indexes(),
            [r#"CREATE UNIQUE INDEX "public.accounts:key" ON "public.accounts" ("name")"#]
        );
    }

    #[test]
    fn rows_stored_in_groups_and_the_rest_one_by_one_are_all_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut sink = SqliteSink::open(&path).unwrap();
        let l = load(accounts(true), LoadMode::Replace, "snapshot");
        sink.load_begin(&l).unwrap();
        let all: Vec<_> = (0..301).map(|i| row(i, &format!("n{i}"))).collect();
        assert_eq!(sink.load_chunk(&l, 0, &mut rows(all), None).unwrap(), 301);
        sink.load_finish(&l).unwrap();
        let m = mirror(&path);
        assert_eq!(m.len(), 301);
        assert_eq!(m[0], (0, "n0".into()));
        assert_eq!(m[300], (300, "n300".into()));
    }

    #[test]
    fn a_chunk_that_fails_midway_stores_nothing_and_is_not_marked_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut sink = SqliteSink::open(&path).unwrap();
        let l = load(accounts(true), LoadMode::Replace, "snapshot");
        sink.load_begin(&l).unwrap();
        let failing = vec![
            Ok(row(1, "a")),
            Err(SinkError::Upstream {
                commit_lsn: Lsn(0),
                reason: "copy broke".into(),
            }),
        ]
        .into_iter();
        let mut failing = crate::sink::RowsAtHand::new(failing);
        assert!(sink.load_chunk(&l, 0, &mut failing, None).is_err());
        drop(sink);
        let mut sink = SqliteSink::open(&path).unwrap();
        let p = sink
            .load_begin(&l)
            .unwrap()
            .expect("the load is still running");
        assert!(p.done.is_empty(), "{p:?}");
        assert_eq!(p.rows, 0);
    }

    #[test]
    fn a_keyed_load_resumes_after_its_stored_chunks_and_stores_a_row_read_twice_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let l = load(accounts(true), LoadMode::Replace, "snapshot");
        {
            let mut sink = SqliteSink::open(&path).unwrap();
            sink.load_begin(&l).unwrap();
            sink.load_chunk(&l, 0, &mut rows(vec![row(1, "a"), row(2, "b")]), None)
                .unwrap();
            sink.load_chunk(&l, 2, &mut rows(vec![row(5, "e")]), None)
                .unwrap();
        } // a crash
        let mut sink = SqliteSink::open(&path).unwrap();
        let mut again = l.clone();
        again.snapshot = "20:22:".into();
        again.chunk_blocks = 99;
        let p = sink.load_begin(&again).unwrap().expect("resumable");
        assert_eq!(p.done, vec![0, 2]);
        assert_eq!(p.rows, 3);
        assert_eq!(p.snapshot, "10:12:", "the first attempt's snapshot is kept");
        assert_eq!(p.chunk_blocks, 8, "the first attempt's ranges are kept");
        // Row 2 moved into chunk 1 after the first snapshot: read again there, stored once.
        sink.load_chunk(&l, 1, &mut rows(vec![row(2, "b moved"), row(3, "c")]), None)
            .unwrap();
        sink.load_finish(&l).unwrap();
        assert_eq!(
            mirror(&path),
            vec![
                (1, "a".into()),
                (2, "b moved".into()),
                (3, "c".into()),
                (5, "e".into())
            ]
        );
    }

    #[test]
    fn a_load_without_a_key_starts_over_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let l = load(accounts(false), LoadMode::Replace, "snapshot");
        {
            let mut sink = SqliteSink::open(&path).unwrap();
            sink.load_begin(&l).unwrap();
            sink.load_chunk(&l, 0, &mut rows(vec![row(1, "a"), row(1, "a")]), None)
                .unwrap();
        }
        let mut sink = SqliteSink::open(&path).unwrap();
        assert_eq!(
            sink.load_begin(&l).unwrap(),
            None,
            "no resume without a key"
        );
        sink.load_chunk(&l, 0, &mut rows(vec![row(1, "a"), row(1, "a")]), None)
            .unwrap();
        sink.load_finish(&l).unwrap();
        assert_eq!(mirror(&path), vec![(1, "a".into()), (1, "a".into())]);
    }

    #[test]
    fn an_upsert_load_stores_its_cursor_with_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut sink = SqliteSink::open(&path).unwrap();
        let l = load(accounts(true), LoadMode::Upsert, "incremental");
        assert_eq!(sink.cursor("public", "accounts").unwrap(), None);
        sink.load_begin(&l).unwrap();
        let c = Cursor {
            column: "id".into(),
            value: Value::Int(2),
            key: vec![Value::Int(2)],
        };
        sink.load_chunk(&l, 0, &mut rows(vec![row(1, "a"), row(2, "b")]), Some(&c))
            .unwrap();
        let c2 = Cursor {
            value: Value::Int(3),
            key: vec![Value::Int(3)],
            ..c.clone()
        };
        sink.load_chunk(&l, 0, &mut rows(vec![row(2, "b2"), row(3, "c")]), Some(&c2))
            .unwrap();
        assert_eq!(
            mirror(&path),
            vec![(1, "a".into()), (2, "b2".into()), (3, "c".into())]
        );
        drop(sink);
        let mut sink = SqliteSink::open(&path).unwrap();
        assert_eq!(sink.cursor("public", "accounts").unwrap(), Some(c2));
    }

    #[test]
    fn a_finished_initial_copy_is_recognised_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut sink = SqliteSink::open(&path).unwrap();
        assert_eq!(sink.initial_copy().unwrap(), None);
        let l = load(accounts(true), LoadMode::Replace, "cdc-initial");
        sink.load_begin(&l).unwrap();
        assert_eq!(sink.initial_copy().unwrap(), Some(Lsn(0x100)));
        sink.load_chunk(&l, 0, &mut rows(vec![row(1, "a")]), None)
            .unwrap();
        sink.load_finish(&l).unwrap();
        let p = sink.load_begin(&l).unwrap().expect("known");
        assert!(p.finished);
        assert_eq!(p.rows, 1);
    }
}
