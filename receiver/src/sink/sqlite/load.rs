//! Table loads into the SQLite sink (see [`crate::sink::load`] for the rules).
//!
//! ```text
//! Replace:  load_begin   _fig_loads row 'running' + staging table _fig_load_<id> (key index when keyed)
//!           load_chunk   BEGIN; rows → staging; _fig_load_chunks (id, chunk); COMMIT
//!           load_finish  BEGIN; mirror definition recorded; DROP mirror; staging RENAME TO mirror;
//!                        key index; _fig_loads 'finished'; COMMIT        (readers: old rows or new)
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

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::mirror::{self, quote, Keying, Plan};
use super::values::Bind;
use super::{lsn_i64, sql_err, SqliteSink};
use crate::model::{Lsn, Value};
use crate::sink::{key_positions, Cursor, Load, LoadMode, LoadProgress, SinkError};

const CREATE_LOAD_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS _fig_loads (
    id INTEGER PRIMARY KEY,
    mirror TEXT NOT NULL,
    relid INTEGER NOT NULL,
    mode TEXT NOT NULL,
    sync TEXT NOT NULL,
    position INTEGER NOT NULL,
    snapshot TEXT NOT NULL,
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

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

fn staging_name(id: i64) -> String {
    format!("_fig_load_{id}")
}

/// The running load of a mirror: (id, snapshot, position, rows).
fn running(
    conn: &Connection,
    mirror: &str,
    mode: LoadMode,
) -> rusqlite::Result<Option<(i64, String, i64, i64)>> {
    conn.query_row(
        "SELECT id, snapshot, position, rows FROM _fig_loads WHERE mirror = ?1 AND mode = ?2 AND state = 'running' ORDER BY id DESC LIMIT 1",
        rusqlite::params![mirror, mode.as_str()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()
}

impl SqliteSink {
    fn load_tables(&mut self) -> Result<(), SinkError> {
        self.conn
            .execute_batch(CREATE_LOAD_TABLES)
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
        if let Some((id, snapshot, position, rows)) =
            running(&tx, &mirror, load.mode).map_err(err("reading the load state"))?
        {
            let staged_columns = mirror::mirror_columns(&tx, &staging_name(id))
                .map_err(err("reading the staging table"))?;
            let same_shape = rel.columns.iter().all(|c| {
                staged_columns
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(&c.name))
            }) && staged_columns.len() == rel.columns.len();
            if keyed && same_shape {
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
            &format!("INSERT INTO _fig_loads (mirror, relid, mode, sync, position, snapshot, state, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', {NOW})"),
            rusqlite::params![mirror, rel.relid, load.mode.as_str(), load.sync, lsn_i64(load.position)?, load.snapshot],
        )
        .map_err(err("recording the load"))?;
        let id = tx.last_insert_rowid();
        let staging = staging_name(id);
        let defs = rel
            .columns
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let mut ddl = format!("CREATE TABLE {} ({defs});", quote(&staging));
        if keyed {
            let keys = key_positions(rel)
                .iter()
                .map(|&k| quote(&rel.columns[k].name))
                .collect::<Vec<_>>()
                .join(",");
            ddl.push_str(&format!(
                "CREATE UNIQUE INDEX {} ON {} ({keys});",
                quote(&format!("{staging}:key")),
                quote(&staging)
            ));
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
        rows: &mut dyn Iterator<Item = Result<Vec<Value>, SinkError>>,
        cursor: Option<&Cursor>,
    ) -> Result<u64, SinkError> {
        self.load_tables()?;
        let rel = load.relation.clone();
        let mirror = mirror::mirror_name(&rel.schema, &rel.table);
        let SqliteSink {
            conn, path, plans, ..
        } = self;
        let path: &std::path::Path = path;
        let table = load.table();
        let table = table.as_str();
        let err = |what: &'static str| move |e| sql_err(path, format!("{what} for {table}"), e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("starting a load transaction"))?;
        let (insert, load_id) = match load.mode {
            LoadMode::Replace => {
                let Some((id, ..)) =
                    running(&tx, &mirror, load.mode).map_err(err("reading the load state"))?
                else {
                    return Err(sql_err(path, format!("storing chunk {chunk} of {}: the load was not begun (a pipeline bug: report it with the log)", load.table()), rusqlite::Error::QueryReturnedNoRows));
                };
                (insert_sql(&rel, &quote(&staging_name(id))), Some(id))
            }
            LoadMode::Upsert => {
                let plan = mirror::ensure(&tx, path, &rel, (load.position, 0))?;
                plans.remove(&rel.relid);
                (plan.insert.clone(), None)
            }
        };
        let mut n = 0u64;
        {
            let mut stmt = tx
                .prepare(&insert)
                .map_err(err("preparing the row insert"))?;
            for row in rows {
                let row = row?;
                if row.len() != rel.columns.len() {
                    return Err(SinkError::ValueCount {
                        schema: rel.schema.clone(),
                        table: rel.table.clone(),
                        which: "a loaded row",
                        expected: rel.columns.len(),
                        key_columns: key_positions(&rel).len(),
                        got: row.len(),
                        commit_lsn: load.position,
                        ordinal: 0,
                    });
                }
                for (i, v) in row.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 1, Bind(v))
                        .map_err(err("storing a loaded row"))?;
                }
                stmt.raw_execute().map_err(err("storing a loaded row"))?;
                n += 1;
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
        Ok(n)
    }

    pub(super) fn finish_load(&mut self, load: &Load) -> Result<u64, SinkError> {
        self.load_tables()?;
        if load.mode == LoadMode::Upsert {
            return Ok(0);
        }
        let rel = load.relation.clone();
        let mirror = mirror::mirror_name(&rel.schema, &rel.table);
        let SqliteSink {
            conn, path, plans, ..
        } = self;
        let path: &std::path::Path = path;
        let table = load.table();
        let table = table.as_str();
        let err = |what: &'static str| move |e| sql_err(path, format!("{what} for {table}"), e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("starting to replace the mirror"))?;
        let Some((id, _, _, rows)) =
            running(&tx, &mirror, load.mode).map_err(err("reading the load state"))?
        else {
            return Err(sql_err(path, format!("finishing the load of {}: it was not begun (a pipeline bug: report it with the log)", load.table()), rusqlite::Error::QueryReturnedNoRows));
        };
        let staging = staging_name(id);
        // The mirror in its current shape (created if new, new columns added, the definition
        // recorded), so the staging table can take its place column for column.
        mirror::ensure(&tx, path, &rel, (load.position, 0))?;
        let kept =
            mirror::mirror_columns(&tx, &mirror).map_err(err("reading the mirror's columns"))?;
        let staged =
            mirror::mirror_columns(&tx, &staging).map_err(err("reading the staging table"))?;
        let mut ddl = String::new();
        for c in kept
            .iter()
            .filter(|k| !staged.iter().any(|s| s.eq_ignore_ascii_case(k)))
        {
            ddl.push_str(&format!(
                "ALTER TABLE {} ADD COLUMN {};",
                quote(&staging),
                quote(c)
            ));
        }
        ddl.push_str(&format!(
            "DROP INDEX IF EXISTS {}; DROP TABLE IF EXISTS {}; ALTER TABLE {} RENAME TO {};",
            quote(&format!("{staging}:key")),
            quote(&mirror),
            quote(&staging),
            quote(&mirror)
        ));
        tx.execute_batch(&ddl)
            .map_err(err("replacing the mirror with the loaded rows"))?;
        // Rebuilds the key index the dropped mirror took with it.
        mirror::ensure(&tx, path, &rel, (load.position, 0))?;
        tx.execute_batch(&format!(
            "UPDATE _fig_loads SET state = 'finished', finished_at = {NOW} WHERE id = {id}; DELETE FROM _fig_load_chunks WHERE load = {id};"
        ))
        .map_err(err("recording the finished load"))?;
        tx.commit().map_err(err("committing the replaced mirror"))?;
        plans.remove(&rel.relid);
        Ok(rows as u64)
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

/// Keyed: insert or replace by key (a row read twice is stored once); else a plain insert.
fn insert_sql(rel: &crate::model::Relation, table: &str) -> String {
    let plan = Plan::new(std::sync::Arc::new(rel.clone()), "rowid");
    let cols: Vec<String> = rel.columns.iter().map(|c| quote(&c.name)).collect();
    let params = (1..=cols.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let verb = match plan.keying {
        Keying::Key(_) => "INSERT OR REPLACE",
        Keying::Multiset => "INSERT",
    };
    format!("{verb} INTO {table} ({}) VALUES ({params})", cols.join(","))
}
