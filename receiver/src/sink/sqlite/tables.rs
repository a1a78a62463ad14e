//! Table states: a mirror equals its source table, or says it does not (DESIGN.md rule 8).
//!
//! ```text
//! change ──▶ apply to the mirror ──ok──▶ history row
//!                 │ a failure of this table only (no old key, a TOAST gap, a mirror DDL SQLite refuses)
//!                 ▼
//!            _fig_tables: (schema, table) out_of_sync, why, at which change ──▶ history row
//!            later changes of the table: history rows only (the mirror is left as it was)
//! ```
//!
//! A failure that belongs to one table marks that table out of sync in the same SQLite
//! transaction as the batch, and every other table goes on streaming: one bad table never stops
//! the others. The table's changes keep arriving in `_fig_changes` (an unchanged TOAST column the
//! sink could not fill is left out of `after`, never made up), so nothing is lost while it waits to
//! be repaired by a re-copy. Failures of the storage (disk full, I/O) still fail the whole batch:
//! they are not the table's, and retrying the batch is safe.
//!
//! `_fig_tables` holds one row per table that is not in sync: `schema`, `table`, `state`
//! (`out_of_sync`), `reason` (the error, which says what to do), `since_lsn` / `since_ordinal`
//! (the first change that could not be applied; `since_lsn_text` in PostgreSQL's `X/Y` form) and
//! `marked_at`. A table without a row is in sync.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{lsn_i64, sql_err};
use crate::model::Lsn;
use crate::sink::SinkError;

pub(super) const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS _fig_tables (
    schema TEXT NOT NULL,
    "table" TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    since_lsn INTEGER NOT NULL,
    since_ordinal INTEGER NOT NULL,
    since_lsn_text TEXT NOT NULL,
    cause_lsn INTEGER NOT NULL,
    cause_ordinal INTEGER NOT NULL,
    marked_at TEXT NOT NULL,
    PRIMARY KEY (schema, "table")
);
"#;

/// Clears the state of `schema.table` after a re-copy read at `position` was swapped in, unless a
/// cause came at or after that position (the copy does not reflect it: the next re-copy will).
pub(super) fn settle(
    conn: &Connection,
    schema: &str,
    table: &str,
    position: Lsn,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM _fig_tables WHERE schema = ?1 AND \"table\" = ?2 AND cause_lsn < ?3",
        rusqlite::params![schema, table, position.as_u64().min(i64::MAX as u64) as i64],
    )
}

/// Moves the state of a renamed table to its new name.
pub(super) fn rename(
    conn: &Connection,
    (old_schema, old_table): (&str, &str),
    (schema, table): (&str, &str),
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE _fig_tables SET schema = ?3, \"table\" = ?4 WHERE schema = ?1 AND \"table\" = ?2",
        [old_schema, old_table, schema, table],
    )
}

/// A table whose mirror is left as it was: its changes go to the history only.
pub const OUT_OF_SYNC: &str = "out_of_sync";
/// A table whose mirror is kept up to date but is not known to equal its source (it arrived after
/// the initial copy, or a schema change may have changed rows without row changes): a re-copy
/// settles it. Unchanged TOAST values are filled for the mirror but left out of the history, since
/// the mirror they come from is not trusted.
pub const COPY_PENDING: &str = "copy_pending";

/// A table that is not in sync, as `_fig_tables` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    pub schema: String,
    pub table: String,
    pub state: String,
    pub reason: String,
    /// The first change that could not be applied.
    pub since: Lsn,
    pub since_ordinal: u32,
    pub marked_at: String,
}

impl TableState {
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// Whether `error`, raised while applying a change of one table, belongs to that table alone: the
/// table is marked out of sync and the batch goes on. `conn` tells whether the write transaction is
/// still open (SQLite rolls it back itself after some failures, e.g. a full disk).
pub(super) fn is_table_failure(error: &SinkError, conn: &Connection) -> bool {
    if conn.is_autocommit() {
        return false;
    }
    match error {
        SinkError::NoKey { .. }
        | SinkError::UnresolvedToast { .. }
        | SinkError::MirrorNameCollision { .. }
        | SinkError::ColumnNameCollision { .. } => true,
        // The statement is wrong for this mirror (a value SQLite cannot store, an index the rows
        // break): retrying cannot help, other tables are not affected. Disk, I/O, memory and
        // locks are the storage's, not the table's.
        SinkError::Sqlite { source, .. } => {
            source.sqlite_error_code().is_some() && !crate::sink::is_storage_failure(source)
        }
        _ => false,
    }
}

/// How the sets of [`in_state`] name a table: (schema, table), exactly (a dot may be in either).
pub(super) type Key = (String, String);

pub(super) fn key(schema: &str, table: &str) -> Key {
    (schema.to_string(), table.to_string())
}

/// The tables recorded in `state`, by [`key`].
pub(super) fn in_state(
    conn: &Connection,
    path: &Path,
    state: &str,
) -> Result<HashSet<Key>, SinkError> {
    let mut stmt = conn
        .prepare_cached("SELECT schema, \"table\" FROM _fig_tables WHERE state = ?1")
        .map_err(|e| sql_err(path, "reading the table states", e))?;
    let rows = stmt
        .query_map([state], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<HashSet<_>>>())
        .map_err(|e| sql_err(path, "reading the table states", e))?;
    Ok(rows)
}

/// Records `schema.table` in `state` ([`OUT_OF_SYNC`] or [`COPY_PENDING`]) since stream position
/// `at` (commit LSN, ordinal of the change), because of `reason`, inside the caller's transaction.
/// A table keeps its first state and reason, except that being out of sync overrides a pending
/// copy (its mirror stops being updated from there). Every cause moves `cause_lsn`/`cause_ordinal`
/// to the latest one: a re-copy read before it does not settle it.
pub(super) fn record(
    conn: &Connection,
    path: &Path,
    schema: &str,
    table: &str,
    state: &str,
    (at, ordinal): (Lsn, u32),
    reason: &str,
) -> Result<TableState, SinkError> {
    let since = lsn_i64(at)?;
    conn.prepare_cached(
        "INSERT INTO _fig_tables (schema, \"table\", state, reason, since_lsn, since_ordinal, since_lsn_text, \
         cause_lsn, cause_ordinal, marked_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?5, ?6, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
         ON CONFLICT (schema, \"table\") DO UPDATE SET \
         cause_lsn = max(cause_lsn, excluded.cause_lsn), \
         cause_ordinal = CASE WHEN excluded.cause_lsn >= cause_lsn THEN excluded.cause_ordinal ELSE cause_ordinal END, \
         state = CASE WHEN excluded.state = 'out_of_sync' AND state <> 'out_of_sync' THEN excluded.state ELSE state END, \
         reason = CASE WHEN excluded.state = 'out_of_sync' AND state <> 'out_of_sync' THEN excluded.reason ELSE reason END, \
         since_lsn = CASE WHEN excluded.state = 'out_of_sync' AND state <> 'out_of_sync' THEN excluded.since_lsn ELSE since_lsn END, \
         since_ordinal = CASE WHEN excluded.state = 'out_of_sync' AND state <> 'out_of_sync' THEN excluded.since_ordinal ELSE since_ordinal END, \
         since_lsn_text = CASE WHEN excluded.state = 'out_of_sync' AND state <> 'out_of_sync' THEN excluded.since_lsn_text ELSE since_lsn_text END",
    )
    .and_then(|mut s| {
        s.execute(rusqlite::params![
            schema,
            table,
            state,
            reason,
            since,
            ordinal,
            at.to_string()
        ])
    })
    .map_err(|e| sql_err(path, format!("recording the state of {schema}.{table}"), e))?;
    Ok(TableState {
        schema: schema.to_string(),
        table: table.to_string(),
        state: state.to_string(),
        reason: reason.to_string(),
        since: at,
        since_ordinal: ordinal,
        marked_at: String::new(),
    })
}

/// Every table of `conn`'s file that is not in sync, by name.
pub(super) fn read(conn: &Connection) -> rusqlite::Result<Vec<TableState>> {
    // A file written before table states existed has no such table: every table is in sync.
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_fig_tables')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT schema, \"table\", state, reason, since_lsn, since_ordinal, marked_at \
         FROM _fig_tables ORDER BY schema, \"table\"",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(TableState {
            schema: r.get(0)?,
            table: r.get(1)?,
            state: r.get(2)?,
            reason: r.get(3)?,
            since: Lsn(r.get::<_, i64>(4)?.max(0) as u64),
            since_ordinal: r.get(5)?,
            marked_at: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// The tables of the sink file at `path` that are not in sync, read without writing anything (the
/// file is opened read-only; a missing file is an error, never created).
pub fn states_of_file(path: &Path) -> Result<Vec<TableState>, SinkError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err(path, "opening the sink file read-only", e))?;
    read(&conn).map_err(|e| sql_err(path, "reading the table states", e))
}

/// The plugin of the stream whose checkpoint the sink file at `path` holds; read-only.
pub fn stream_plugin(path: &Path) -> Option<String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.query_row("SELECT plugin FROM _fig_checkpoint WHERE id = 1", [], |r| {
        r.get(0)
    })
    .ok()
}

/// Whether the sink file at `path` holds a stream's checkpoint; read-only, a missing or unreadable
/// file holds none.
pub fn holds_checkpoint(path: &Path) -> bool {
    let Ok(conn) = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return false;
    };
    conn.query_row("SELECT EXISTS (SELECT 1 FROM _fig_checkpoint)", [], |r| {
        r.get::<_, bool>(0)
    })
    .unwrap_or(false)
}

/// The tables the sink file at `path` knows (it recorded a definition of, or a state for), and
/// whether it holds an initial copy of the streamed tables; read-only.
pub fn known_tables(path: &Path) -> Result<(HashSet<(String, String)>, bool), SinkError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err(path, "opening the sink file read-only", e))?;
    let read = || -> rusqlite::Result<(HashSet<(String, String)>, bool)> {
        let mut stmt = conn.prepare(
            "SELECT schema, \"table\" FROM _fig_schema UNION SELECT schema, \"table\" FROM _fig_tables",
        )?;
        let known = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<HashSet<_>>>()?;
        Ok((known, super::load::initial_copy_done(&conn)?))
    };
    read().map_err(|e| sql_err(path, "reading the tables the sink knows", e))
}

/// The leaf partitions (relids, sorted) each partitioned table's latest copy read, by mirror
/// name: what its mirror holds the rows of, to compare with the partitions it has now.
pub fn copied_partitions(path: &Path) -> Result<HashMap<String, Vec<u32>>, SinkError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err(path, "opening the sink file read-only", e))?;
    let read = || -> rusqlite::Result<HashMap<String, Vec<u32>>> {
        if !super::has_column(&conn, "_fig_loads", "partitions")? {
            return Ok(HashMap::new());
        }
        let mut stmt = conn.prepare(
            "SELECT mirror, partitions FROM _fig_loads WHERE id IN \
             (SELECT max(id) FROM _fig_loads WHERE sync IN ('cdc-initial', 'resync') GROUP BY mirror) \
             AND partitions IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = HashMap::new();
        for row in rows {
            let (mirror, leaves) = row?;
            if let Ok(leaves) = serde_json::from_str::<Vec<u32>>(&leaves) {
                out.insert(mirror, leaves);
            }
        }
        Ok(out)
    };
    read().map_err(|e| sql_err(path, "reading the partitions the copies read", e))
}
