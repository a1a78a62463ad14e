//! The embedded default sink: one SQLite file holding the current state of every source table, the
//! change history, the schema history and the checkpoint, all written in one SQLite transaction per
//! batch. Exactly once after any crash: the checkpoint row and the data it covers commit together or
//! not at all.
//!
//! ```text
//! write(batch, checkpoint)  or  write_large(head, pieces, checkpoint)
//!   BEGIN IMMEDIATE
//!     per change, of each transaction not yet covered by the stored checkpoint (write_large: as
//!     each piece is read from the iterator, nothing kept, so memory stays bounded):
//!       mirror "schema.table"   upsert / delete by key / delete all (truncate)   (mirror.rs)
//!       _fig_changes            one row per change, keyed (commit_lsn, ordinal)
//!       _fig_schema             a row when the relation's definition differs from the last recorded
//!     _fig_checkpoint           the one row, replaced
//!   COMMIT                      WAL + synchronous=FULL: fsync'ed before Ok
//! ```
//!
//! Tables (names without a dot are ours; every mirror name contains the dot of `schema.table`):
//!
//! | table | holds |
//! |---|---|
//! | `"schema.table"` | the source table's current rows under its column names (see `sqlite/mirror.rs`; values as in `sqlite/values.rs`) |
//! | `_fig_changes` | `commit_lsn` (INTEGER; `commit_lsn_text` is the same in `X/Y` form), `ordinal`, `xid`, `commit_time` (RFC 3339 UTC text), `schema`, `table`, `op` (`insert`/`update`/`delete`/`truncate`), `before`, `after` (JSON objects keyed by column name, or NULL), `partition` (the leaf partition, `schema.table`, of a change recorded under its partitioned root; NULL otherwise); primary key (`commit_lsn`, `ordinal`) |
//! | `_fig_schema` | `relid`, `effective_lsn` (and `effective_lsn_text`, `X/Y`), `effective_ordinal` (the first change that used the definition), `schema`, `table`, `mirror`, `columns` (JSON: name, type, oid, key, not_null) |
//! | `_fig_checkpoint` | one row: `system_id` (decimal text: it can exceed SQLite's signed 64 bits), `timeline`, `slot`, `plugin`, `commit_end_lsn` (INTEGER) and `commit_end_lsn_text` (`X/Y`), `updated_at` |
//!
//! LSNs are stored as integers so they sort; `printf('%X/%X', commit_lsn >> 32, commit_lsn & 4294967295)`
//! prints one the PostgreSQL way. `PRAGMA user_version` holds the file's format version.
//!
//! Unchanged TOAST gaps ([`crate::sink::ToastGap`]) are filled inside the write transaction: from the
//! old row when `REPLICA IDENTITY FULL` sent it, else from the mirror row as the earlier changes of the
//! same batch left it (always exact), so the history's `after` is always the full new row. A gap with
//! no row to fill it from is [`SinkError::UnresolvedToast`], never a made-up value.
//!
//! Readers (the `sqlite3` shell, reports) may query the file while the sink writes: WAL lets them read
//! without blocking it, and they see whole batches only. A reader that keeps one read transaction open
//! for long stops the WAL from being checkpointed, so the `-wal` file grows until it ends.
//!
//! Repeats: transactions the stored checkpoint covers are skipped, so writing one twice is idempotent;
//! a history row that exists although its transaction is not covered is [`SinkError::DuplicateEvent`].

mod history;
mod load;
mod messages;
mod mirror;
mod replay;
mod statements;
mod tables;
mod values;
mod wal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use self::mirror::{Keying, Plan};
use self::statements::{Kind, Statements};
use self::values::Bind;
use crate::model::{Change, Lsn, Op, Relation, Value};
use crate::sink::json;
use crate::sink::{
    before_shape, check_batch, check_large, value_count, walk_pieces, BeforeShape, Checkpoint,
    Cursor, Load, LoadProgress, Piece, RowBatches, Sink, SinkError, Transaction, TransactionHead,
    Walked,
};
pub use load::RESYNC;
pub use mirror::mirror_name;
pub use tables::{
    copied_partitions, holds_checkpoint, known_tables, states_of_file, stream_plugin, TableState,
    COPY_PENDING, OUT_OF_SYNC,
};

/// The format version this code writes (`PRAGMA user_version`).
pub const FORMAT_VERSION: i64 = 1;

const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS _fig_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    system_id TEXT NOT NULL,
    timeline INTEGER NOT NULL,
    slot TEXT NOT NULL,
    plugin TEXT NOT NULL,
    commit_end_lsn INTEGER NOT NULL,
    commit_end_lsn_text TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _fig_slot_intent (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    slot TEXT NOT NULL,
    noted_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _fig_changes (
    commit_lsn INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    xid INTEGER NOT NULL,
    commit_time TEXT NOT NULL,
    schema TEXT NOT NULL,
    "table" TEXT NOT NULL,
    op TEXT NOT NULL,
    before TEXT,
    after TEXT,
    partition TEXT,
    PRIMARY KEY (commit_lsn, ordinal)
);
CREATE TABLE IF NOT EXISTS _fig_schema_changes (
    id INTEGER PRIMARY KEY,
    relid INTEGER NOT NULL,
    effective_lsn INTEGER NOT NULL,
    effective_ordinal INTEGER NOT NULL,
    schema TEXT NOT NULL,
    "table" TEXT NOT NULL,
    source TEXT NOT NULL,
    flagged INTEGER NOT NULL,
    changes TEXT NOT NULL,
    ddl TEXT,
    detected_at TEXT NOT NULL,
    repair TEXT
);
CREATE TABLE IF NOT EXISTS _fig_schema (
    relid INTEGER NOT NULL,
    effective_lsn INTEGER NOT NULL,
    effective_ordinal INTEGER NOT NULL,
    schema TEXT NOT NULL,
    "table" TEXT NOT NULL,
    mirror TEXT NOT NULL,
    columns TEXT NOT NULL,
    PRIMARY KEY (relid, effective_lsn, effective_ordinal)
);
"#;

const STORE_CHECKPOINT: &str = "INSERT INTO _fig_checkpoint (id, system_id, timeline, slot, plugin, commit_end_lsn, commit_end_lsn_text, updated_at) \
     VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
     ON CONFLICT (id) DO UPDATE SET system_id = excluded.system_id, timeline = excluded.timeline, slot = excluded.slot, \
     plugin = excluded.plugin, commit_end_lsn = excluded.commit_end_lsn, commit_end_lsn_text = excluded.commit_end_lsn_text, \
     updated_at = excluded.updated_at";

const READ_CHECKPOINT: &str =
    "SELECT system_id, timeline, slot, plugin, commit_end_lsn FROM _fig_checkpoint WHERE id = 1";

/// The SQLite sink. See the module documentation for the file's layout.
pub struct SqliteSink {
    /// Declared before `conn`, so it stops first and the writer's close is the last.
    wal: wal::Checkpointer,
    conn: Connection,
    path: PathBuf,
    /// Per relid, the plan of the definition last used. Valid only for committed DDL: cleared when a
    /// write fails (its DDL rolled back with it).
    plans: HashMap<u32, Plan>,
    stored: Option<Checkpoint>,
    history: history::History,
    /// Schema drift: the policy and the notifier; changes found by the write in progress.
    drift: Option<Arc<crate::drift::Watch>>,
    drifted: Vec<crate::drift::SchemaChange>,
    /// Mirrors (`schema.table`) of tables not in sync: their changes go to the history only. Read
    /// at the start of every write (a re-copy on another connection may have repaired one).
    out_of_sync: std::collections::HashSet<tables::Key>,
    /// Tables whose mirror is kept but not trusted until a re-copy ([`tables::COPY_PENDING`]).
    pending: std::collections::HashSet<tables::Key>,
    /// Tables the write in progress marked, notified once it commits.
    marked: Vec<TableState>,
    /// Test hook: fail after everything is written, just before COMMIT.
    #[cfg(test)]
    fail_before_commit: bool,
}

pub(crate) fn sql_err(path: &Path, what: impl Into<String>, source: rusqlite::Error) -> SinkError {
    SinkError::Sqlite {
        path: path.to_path_buf(),
        what: what.into(),
        source,
    }
}

/// `column` (declared `decl`) in `table`, added to files made before it existed.
pub(crate) fn add_column(
    conn: &Connection,
    table: &str,
    column: &str,
    decl: &str,
) -> rusqlite::Result<()> {
    if !has_column(conn, table, column)? {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// Whether `table` has `column` (generated columns included).
pub(crate) fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_xinfo(?1) WHERE name = ?2)",
        [table, column],
        |r| r.get(0),
    )
}

/// `<column>_text` beside an LSN column of `table`: the LSN in PostgreSQL's `X/Y` form, computed by
/// SQLite when read (a virtual column: nothing stored), added to files made before it existed.
pub(crate) fn add_lsn_text(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<()> {
    add_column(
        conn,
        table,
        &format!("{column}_text"),
        &format!("TEXT GENERATED ALWAYS AS (printf('%X/%X', {column} >> 32, {column} & 4294967295)) VIRTUAL"),
    )
}

/// An LSN as SQLite stores it (a signed 64-bit integer, so LSNs sort as numbers).
pub(crate) fn lsn_i64(lsn: Lsn) -> Result<i64, SinkError> {
    i64::try_from(lsn.as_u64()).map_err(|_| SinkError::LsnOutOfRange { lsn })
}

/// The checkpoint stored in the sink file open on `conn`.
fn read_checkpoint(conn: &Connection, path: &Path) -> Result<Option<Checkpoint>, SinkError> {
    let row: Option<(String, u32, String, String, i64)> = conn
        .prepare_cached(READ_CHECKPOINT)
        .and_then(|mut s| {
            s.query_row([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()
        })
        .map_err(|e| sql_err(path, "reading the checkpoint", e))?;
    let Some((system_id, timeline, slot, plugin, end)) = row else {
        return Ok(None);
    };
    let bad = |reason: String| SinkError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    Ok(Some(Checkpoint {
        system_id: system_id
            .parse()
            .map_err(|_| bad(format!("system_id `{system_id}` is not a number")))?,
        timeline,
        slot,
        plugin,
        commit_end_lsn: Lsn(
            u64::try_from(end).map_err(|_| bad(format!("commit_end_lsn {end} is negative")))?
        ),
    }))
}

fn read_slot_intent(conn: &Connection, path: &Path) -> Result<Option<String>, SinkError> {
    conn.query_row("SELECT slot FROM _fig_slot_intent WHERE id = 1", [], |r| {
        r.get(0)
    })
    .optional()
    .map_err(|e| sql_err(path, "reading the slot intent", e))
}

/// What [`inspect_file`] reads.
pub struct FileState {
    pub checkpoint: Option<Checkpoint>,
    pub initial_copy: Option<Lsn>,
    pub slot_intent: Option<String>,
}

/// The checkpoint, the initial copy's position and the slot intent held by the sink file at
/// `path`, read without writing anything (for `status` and `check` beside a live receiver). A file
/// that is not a sink (yet) holds none of them.
pub fn inspect_file(path: &Path) -> Result<FileState, SinkError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err(path, "opening the sink file read-only", e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| sql_err(path, "setting the busy timeout", e))?;
    let has = |table: &str| -> Result<bool, SinkError> {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
            [table],
            |r| r.get(0),
        )
        .map_err(|e| sql_err(path, "reading the sink's tables", e))
    };
    let checkpoint = match has("_fig_checkpoint")? {
        true => read_checkpoint(&conn, path)?,
        false => None,
    };
    let initial_copy = match has("_fig_loads")? {
        true => load::initial_copy_position_of(&conn, path)?,
        false => None,
    };
    let slot_intent = match has("_fig_slot_intent")? {
        true => read_slot_intent(&conn, path)?,
        false => None,
    };
    Ok(FileState {
        checkpoint,
        initial_copy,
        slot_intent,
    })
}

impl SqliteSink {
    /// Opens (creating if needed) the sink file at `path`: WAL journal, `synchronous=FULL` (a commit
    /// is fsync'ed before it returns, so `Ok` from [`Sink::write`] means durable, power loss included).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteSink, SinkError> {
        let path = path.as_ref().to_path_buf();
        let err = |what: &'static str| {
            let path = path.clone();
            move |e| sql_err(&path, what, e)
        };
        if !path.exists() {
            // It holds a full copy of the data: readable by its owner only. SQLite gives its -wal
            // and -shm files the database file's mode.
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(SinkError::Io {
                        path,
                        what: "creating the sink file",
                        source,
                    })
                }
            }
        }
        let conn = Connection::open(&path).map_err(err("opening the database"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(err("setting the busy timeout"))?;
        // Only a new file takes it (an existing one keeps its page size). 16 KiB pages halve the
        // kernel time of bulk loads (fewer WAL frames and B-tree splits per row): a 10M-row
        // snapshot 13.2 s → 11.1 s; a streamed commit writes the few pages it touches either way.
        conn.execute_batch("PRAGMA page_size = 16384")
            .map_err(err("setting the page size"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err("switching to WAL journal mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(sql_err(
                &path,
                format!("switching to WAL journal mode (SQLite kept `{mode}`; the file system may not support WAL, e.g. a network share)"),
                rusqlite::Error::InvalidQuery,
            ));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA cache_size = -65536;")
            .map_err(err("setting durability pragmas"))?;
        conn.set_prepared_statement_cache_capacity(256);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("reading the format version"))?;
        if version > FORMAT_VERSION {
            return Err(SinkError::NewerFormat {
                path,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {CREATE} {} {} PRAGMA user_version = {FORMAT_VERSION}; COMMIT;",
            tables::CREATE,
            messages::CREATE
        ))
        .map_err(err("creating the fig tables"))?;
        add_column(&conn, "_fig_changes", "partition", "TEXT")
            .and_then(|()| add_column(&conn, "_fig_schema_changes", "repair", "TEXT"))
            .map_err(err("adding a column to a table of files made before it"))?;
        for (table, column) in [
            ("_fig_changes", "commit_lsn"),
            ("_fig_schema", "effective_lsn"),
            ("_fig_schema_changes", "effective_lsn"),
            ("_fig_messages", "lsn"),
            ("_fig_messages", "commit_lsn"),
        ] {
            add_lsn_text(&conn, table, column)
                .map_err(err("adding the X/Y form of an LSN column"))?;
        }
        let wal =
            wal::Checkpointer::start(&conn, &path).map_err(err("starting the WAL checkpointer"))?;
        let mut sink = SqliteSink {
            wal,
            conn,
            path,
            plans: HashMap::new(),
            stored: None,
            history: history::History::default(),
            drift: None,
            drifted: Vec::new(),
            out_of_sync: Default::default(),
            pending: Default::default(),
            marked: Vec::new(),
            #[cfg(test)]
            fail_before_commit: false,
        };
        sink.stored = sink.checkpoint()?;
        Ok(sink)
    }

    /// The file this sink writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `body` and stores `checkpoint` in one SQLite transaction, committed only when both
    /// succeeded. On `Err` everything rolled back, DDL included, so the plans built inside are
    /// forgotten.
    fn in_write_transaction(
        &mut self,
        checkpoint: &Checkpoint,
        body: impl FnOnce(&mut Writer<'_>) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let result = self.write_transaction(checkpoint, body);
        match &result {
            Ok(()) => self.stored = Some(checkpoint.clone()),
            Err(_) => self.plans.clear(),
        }
        self.after_commit(result.is_ok());
        result
    }

    /// Attaches the drift policy and notifier.
    fn watch_drift(&mut self, watch: Arc<crate::drift::Watch>) {
        self.drift = Some(watch);
    }

    /// Notifies the schema changes a write found, once it committed (a change that paused its
    /// table was notified already).
    fn after_commit(&mut self, committed: bool) {
        if committed {
            self.wal.committed();
        }
        let found = std::mem::take(&mut self.drifted);
        let marked = std::mem::take(&mut self.marked);
        if committed {
            for t in &marked {
                match &self.drift {
                    Some(w) => w.notifier.notify_out_of_sync(t),
                    None => crate::notify::Notifier::log_out_of_sync(t),
                }
            }
        }
        if let (true, Some(w)) = (committed, &self.drift) {
            for c in &found {
                w.notifier.notify(c);
            }
        }
    }

    /// Takes note of a schema change found inside the write in progress (notified once it
    /// commits); under the `pause` policy a flagged change stops the write instead (see
    /// [`crate::sink::pause_check`]).
    fn drifted(
        drift: &Option<Arc<crate::drift::Watch>>,
        drifted: &mut Vec<crate::drift::SchemaChange>,
        path: &Path,
        change: Option<crate::drift::SchemaChange>,
    ) -> Result<(), SinkError> {
        let Some(c) = change else { return Ok(()) };
        crate::sink::pause_check(drift.as_deref(), &c, path)?;
        drifted.push(c);
        Ok(())
    }

    fn write_transaction(
        &mut self,
        checkpoint: &Checkpoint,
        body: impl FnOnce(&mut Writer<'_>) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        // Held until COMMIT: the WAL checkpointer catches up between two writes (see wal.rs).
        let gate = self.wal.gate();
        let _writing = gate.lock().unwrap_or_else(|e| e.into_inner());
        let SqliteSink {
            conn,
            path,
            plans,
            history,
            drift,
            drifted,
            out_of_sync,
            pending,
            marked,
            ..
        } = self;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| {
                sql_err(
                    path,
                    "starting the write transaction (another process may hold the file)",
                    e,
                )
            })?;
        drifted.clear();
        history.clear();
        marked.clear();
        *out_of_sync = tables::in_state(&tx, path, tables::OUT_OF_SYNC)?;
        *pending = tables::in_state(&tx, path, tables::COPY_PENDING)?;
        let mut w = Writer {
            conn: &tx,
            stmts: Statements::new(&tx),
            path,
            plans,
            history,
            drift,
            drifted,
            out_of_sync,
            pending,
            marked,
        };
        body(&mut w)?;
        w.flush_history()?;
        drop(w); // its statements borrow the transaction
        let end = lsn_i64(checkpoint.commit_end_lsn)?;
        tx.prepare_cached(STORE_CHECKPOINT)
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    checkpoint.system_id.to_string(),
                    checkpoint.timeline,
                    checkpoint.slot,
                    checkpoint.plugin,
                    end,
                    checkpoint.commit_end_lsn.to_string(),
                ])
            })
            .map_err(|e| sql_err(path, "storing the checkpoint", e))?;
        #[cfg(test)]
        if self.fail_before_commit {
            return Err(sql_err(
                path,
                "the test hook before COMMIT",
                rusqlite::Error::InvalidQuery,
            ));
        }
        tx.commit()
            .map_err(|e| sql_err(path, "committing the batch", e))
    }
}

/// What every history row of one transaction shares.
struct Stamp {
    commit_lsn: i64,
    commit_time: String,
}

impl Stamp {
    fn of(head: &TransactionHead) -> Result<Stamp, SinkError> {
        Ok(Stamp {
            commit_lsn: lsn_i64(head.commit_lsn)?,
            commit_time: fig_format::datetime::format_timestamp(head.commit_time, true),
        })
    }
}

/// Applies transactions inside one SQLite transaction.
struct Writer<'a> {
    conn: &'a Connection,
    stmts: Statements<'a>,
    path: &'a Path,
    plans: &'a mut HashMap<u32, Plan>,
    history: &'a mut history::History,
    drift: &'a Option<Arc<crate::drift::Watch>>,
    drifted: &'a mut Vec<crate::drift::SchemaChange>,
    out_of_sync: &'a mut std::collections::HashSet<tables::Key>,
    pending: &'a mut std::collections::HashSet<tables::Key>,
    marked: &'a mut Vec<TableState>,
}

/// Runs the `kind` statement of `plan` with `values` bound to `?1…`; returns the number of rows
/// changed.
fn exec<'v>(
    stmts: &mut Statements<'_>,
    plan: &Plan,
    kind: Kind,
    values: impl IntoIterator<Item = &'v Value>,
) -> rusqlite::Result<usize> {
    let stmt = stmts.of(plan, kind)?;
    for (i, v) in values.into_iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, Bind(v))?;
    }
    stmt.raw_execute()
}

/// The row `plan.select` finds for `values` bound to `?1…`, read back per the relation's types.
fn select_row<'v>(
    stmts: &mut Statements<'_>,
    plan: &Plan,
    values: impl IntoIterator<Item = &'v Value>,
) -> rusqlite::Result<Option<Vec<Value>>> {
    let stmt = stmts.of(plan, Kind::Select)?;
    for (i, v) in values.into_iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, Bind(v))?;
    }
    let mut rows = stmt.raw_query();
    match rows.next()? {
        Some(row) => {
            let mut out = Vec::with_capacity(plan.rel.columns.len());
            for (i, c) in plan.rel.columns.iter().enumerate() {
                out.push(values::read(c, row.get_ref(i)?));
            }
            Ok(Some(out))
        }
        None => Ok(None),
    }
}

/// Plain inserts into one mirror, waiting to be stored by one grouped statement
/// ([`Plan::insert_group`]). Held only within one source transaction, whose rows they borrow, and
/// stored before any other change touches a mirror, so every statement sees the rows before it.
#[derive(Default)]
struct Inserts<'t> {
    relid: u32,
    rows: Vec<&'t [Value]>,
    /// The change of the first waiting row: where the table went out of sync if they fail.
    first: Option<&'t Change>,
}

impl Writer<'_> {
    fn transaction(&mut self, t: &Transaction) -> Result<(), SinkError> {
        let stamp = Stamp::of(&t.head())?;
        let mut inserts = Inserts::default();
        for (change, rel) in t.changes_with_relations()? {
            let ddl = t.ddl_for(change.relid, change.ordinal);
            let gaps = t.toast_gaps(change.ordinal);
            if self.defer_insert(&mut inserts, change, rel, gaps, ddl)? {
                self.record(&stamp, change, rel, None, None, &[])?;
                continue;
            }
            self.store_inserts(&mut inserts)?;
            self.change(&stamp, change, rel, gaps, ddl)?;
        }
        self.store_inserts(&mut inserts)?;
        for m in &t.messages {
            messages::store(&mut self.stmts, self.path, &stamp, t.xid, m)?;
        }
        Ok(())
    }

    /// Takes `change` into `inserts` when it is a plain insert (no TOAST gap) into the mirror the
    /// waiting rows are for, under a definition already in force; stores the waiting rows first
    /// when they are for another mirror. `false`: the change is applied on its own.
    fn defer_insert<'t>(
        &mut self,
        inserts: &mut Inserts<'t>,
        change: &'t Change,
        rel: &Arc<Relation>,
        gaps: &[usize],
        ddl: Option<&Arc<str>>,
    ) -> Result<bool, SinkError> {
        let Some(after) = change.after.as_deref() else {
            return Ok(false);
        };
        if change.op != Op::Insert
            || !gaps.is_empty()
            || after.len() != rel.columns.len()
            || after.is_empty()
        {
            return Ok(false);
        }
        if !inserts.rows.is_empty() && inserts.relid != rel.relid {
            self.store_inserts(inserts)?;
        }
        // A new definition may change the mirror (DDL): the rows waiting for it were stored above
        // or are of the same relation under the definition in force, which `ensure_plan` keeps.
        if !self.plan_current(rel) {
            self.store_inserts(inserts)?;
            match self.ensure_plan(rel, change, ddl) {
                Ok(()) => {}
                // Applied on its own, which marks the table out of sync.
                Err(e) if tables::is_table_failure(&e, self.conn) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        // After the definition is in force: a rename moves the table's state with its mirror.
        if self
            .out_of_sync
            .contains(&tables::key(&rel.schema, &rel.table))
        {
            return Ok(false);
        }
        inserts.relid = rel.relid;
        inserts.first.get_or_insert(change);
        inserts.rows.push(after);
        if inserts.rows.len() == self.plans[&rel.relid].group_rows {
            self.store_inserts(inserts)?;
        }
        Ok(true)
    }

    /// Stores the waiting inserts: whole groups with one statement, the rest one by one.
    fn store_inserts(&mut self, inserts: &mut Inserts<'_>) -> Result<(), SinkError> {
        if inserts.rows.is_empty() {
            return Ok(());
        }
        let plan = &self.plans[&inserts.relid];
        let rel = &plan.rel;
        let stored = (|| {
            let mut groups = inserts.rows.chunks_exact(plan.group_rows);
            for group in &mut groups {
                exec(
                    &mut self.stmts,
                    plan,
                    Kind::InsertGroup,
                    group.iter().flat_map(|r| r.iter()),
                )?;
            }
            for row in groups.remainder() {
                exec(&mut self.stmts, plan, Kind::Insert, row.iter())?;
            }
            Ok(())
        })();
        inserts.rows.clear();
        let first = inserts.first.take();
        let failed = match stored {
            Ok(()) => return Ok(()),
            Err(e) => sql_err(
                self.path,
                format!("inserting in mirror table \"{}.{}\"", rel.schema, rel.table),
                e,
            ),
        };
        match first {
            // Their history rows are recorded; the mirror no longer counts.
            Some(change) if tables::is_table_failure(&failed, self.conn) => {
                let rel = Arc::clone(rel);
                self.mark(&rel, change, &failed)
            }
            _ => Err(failed),
        }
    }

    /// A transaction streamed piece by piece: each change applied as it comes, nothing kept.
    fn pieces(
        &mut self,
        head: &TransactionHead,
        pieces: &mut dyn Iterator<Item = Result<Piece, SinkError>>,
    ) -> Result<(), SinkError> {
        let stamp = Stamp::of(head)?;
        walk_pieces(head, pieces, |step| match step {
            Walked::Change {
                change,
                rel,
                gaps,
                ddl,
            } => self.change(&stamp, change, rel, gaps, ddl),
            Walked::Message(m) => messages::store(&mut self.stmts, self.path, &stamp, head.xid, m),
        })
    }

    /// One change: its mirror, then its history row. `ddl`: the statement behind `rel` when this
    /// change is the first to use it.
    ///
    /// A failure that belongs to the change's table alone marks the table out of sync instead of
    /// failing the write; from then on its changes are recorded in the history only (`tables.rs`).
    fn change(
        &mut self,
        stamp: &Stamp,
        change: &Change,
        rel: &Arc<Relation>,
        gaps: &[usize],
        ddl: Option<&Arc<str>>,
    ) -> Result<(), SinkError> {
        // First, as it may rename the mirror and move the table's state with it.
        let ensured = self.ensure_plan(rel, change, ddl);
        if change.op == Op::Truncate && change.partition.is_some() {
            // Some leaves of a partitioned table emptied: its mirror cannot tell their rows from
            // the others', so it is kept as it is, and a re-copy settles it.
            ensured?;
            self.wait_for_copy(rel, change, PARTITION_TRUNCATED)?;
            return self.record_unapplied(stamp, change, rel, gaps);
        }
        if self
            .out_of_sync
            .contains(&tables::key(&rel.schema, &rel.table))
        {
            // Schema changes are still followed and recorded; the mirror waits for its re-copy.
            match ensured {
                Err(e) if !tables::is_table_failure(&e, self.conn) => return Err(e),
                _ => {}
            }
            return self.record_unapplied(stamp, change, rel, gaps);
        }
        let applied = ensured.and_then(|()| {
            let plan = &self.plans[&rel.relid];
            apply(&mut self.stmts, self.path, plan, change, gaps)
        });
        match applied {
            Ok((before, filled)) => self.record(stamp, change, rel, before, filled, gaps),
            Err(e) if tables::is_table_failure(&e, self.conn) => {
                self.mark(rel, change, &e)?;
                self.record_unapplied(stamp, change, rel, gaps)
            }
            Err(e) => Err(e),
        }
    }

    /// Marks `rel`'s table out of sync since `change`, because of `error`.
    fn mark(
        &mut self,
        rel: &Arc<Relation>,
        change: &Change,
        error: &SinkError,
    ) -> Result<(), SinkError> {
        self.note_state(rel, change, tables::OUT_OF_SYNC, &error.to_string())
    }

    /// Records `rel`'s table in `state` since `change`, because of `reason`, in this write
    /// transaction and in this writer's view of the states.
    fn note_state(
        &mut self,
        rel: &Relation,
        change: &Change,
        state: &'static str,
        reason: &str,
    ) -> Result<(), SinkError> {
        let recorded = tables::record(
            self.conn,
            self.path,
            &rel.schema,
            &rel.table,
            state,
            (change.commit_lsn, change.ordinal),
            reason,
        )?;
        let in_state = match state {
            tables::OUT_OF_SYNC => &mut *self.out_of_sync,
            _ => &mut *self.pending,
        };
        in_state.insert(tables::key(&rel.schema, &rel.table));
        self.marked.push(recorded);
        Ok(())
    }

    /// The history row of a change of a table out of sync, not applied to its mirror: values as
    /// sent, except unchanged TOAST columns the sink could not fill, which are left out of `after`
    /// (never made up).
    fn record_unapplied(
        &mut self,
        stamp: &Stamp,
        change: &Change,
        rel: &Arc<Relation>,
        gaps: &[usize],
    ) -> Result<(), SinkError> {
        let keys = json::Keys::new(&rel.columns);
        let n = rel.columns.len();
        let key_positions = crate::sink::key_positions(rel);
        let before = match change.before.as_deref() {
            Some(b) if change.op == Op::Update || change.op == Op::Delete => {
                let mut s = self.history.string();
                match before_shape(rel, key_positions.len(), change, b)? {
                    BeforeShape::Key => keys.push_at(&mut s, &key_positions, b),
                    BeforeShape::Full => keys.push_row(&mut s, b),
                }
                Some(s)
            }
            _ => None,
        };
        let after = match change.after.as_deref() {
            Some(a) if a.len() != n => {
                return Err(value_count(
                    rel,
                    key_positions.len(),
                    change,
                    "after",
                    a.len(),
                ))
            }
            Some(a) => {
                let mut s = self.history.string();
                let kept: Vec<usize> = (0..n).filter(|p| !gaps.contains(p)).collect();
                let values: Vec<Value> = kept.iter().map(|&p| a[p].clone()).collect();
                keys.push_at(&mut s, &kept, &values);
                Some(s)
            }
            None => None,
        };
        self.push_history(stamp, change, rel, before, after)
    }

    /// The history row of `change`, applied to its mirror already: `before` as recorded, `filled`
    /// the new row when TOAST gaps were filled.
    fn record(
        &mut self,
        stamp: &Stamp,
        change: &Change,
        rel: &Arc<Relation>,
        before: OldRow<'_>,
        filled: Option<Vec<Value>>,
        gaps: &[usize],
    ) -> Result<(), SinkError> {
        if !gaps.is_empty() && self.pending.contains(&tables::key(&rel.schema, &rel.table)) {
            // Filled from a mirror that is not trusted yet: the history says "unchanged", and a
            // re-copy's replay fills it from the copy.
            return self.record_unapplied(stamp, change, rel, gaps);
        }
        let plan = &self.plans[&rel.relid];
        let after = filled.as_deref().or(change.after.as_deref());
        let before_json = before.map(|(shape, values)| {
            let mut s = self.history.string();
            match shape {
                BeforeShape::Key => plan.json.push_at(&mut s, &plan.keys, values),
                BeforeShape::Full => plan.json.push_row(&mut s, values),
            }
            s
        });
        let after_json = after.map(|values| {
            let mut s = self.history.string();
            plan.json.push_row(&mut s, values);
            s
        });
        self.push_history(stamp, change, rel, before_json, after_json)
    }

    fn push_history(
        &mut self,
        stamp: &Stamp,
        change: &Change,
        rel: &Relation,
        before: Option<String>,
        after: Option<String>,
    ) -> Result<(), SinkError> {
        let row = self.history.next();
        row.commit_lsn = stamp.commit_lsn;
        row.ordinal = change.ordinal;
        row.xid = change.xid;
        row.commit_time.push_str(&stamp.commit_time);
        row.schema.push_str(&rel.schema);
        row.table.push_str(&rel.table);
        row.op = change.op.as_str();
        row.partition.clone_from(&change.partition);
        row.before = before;
        row.after = after;
        if self.history.full() {
            self.flush_history()?;
        }
        Ok(())
    }

    /// Stores the history rows buffered so far; also run before the write commits.
    fn flush_history(&mut self) -> Result<(), SinkError> {
        self.history.flush(&mut self.stmts).map_err(|e| match e {
            history::Failed::Duplicate {
                commit_lsn,
                ordinal,
            } => SinkError::DuplicateEvent {
                commit_lsn,
                ordinal,
            },
            history::Failed::Sql(e) => sql_err(self.path, "recording the change history", e),
        })
    }

    /// Whether the plan in force for `rel`'s relation is for this definition.
    fn plan_current(&self, rel: &Arc<Relation>) -> bool {
        self.plans
            .get(&rel.relid)
            .is_some_and(|p| Arc::ptr_eq(&p.rel, rel) || *p.rel == **rel)
    }

    /// Brings the mirror to `rel`'s definition first when that definition is new to this session.
    fn ensure_plan(
        &mut self,
        rel: &Arc<Relation>,
        first: &Change,
        ddl: Option<&Arc<str>>,
    ) -> Result<(), SinkError> {
        if !self.plan_current(rel) {
            let ensured = mirror::ensure(
                self.conn,
                self.path,
                rel,
                (first.commit_lsn, first.ordinal),
                match ddl {
                    Some(text) => crate::drift::Source::Ddl(text),
                    None => crate::drift::Source::Relation,
                },
            )?;
            if ensured.renamed {
                // The table's state moved to its new name (`tables::rename`).
                *self.out_of_sync = tables::in_state(self.conn, self.path, tables::OUT_OF_SYNC)?;
                *self.pending = tables::in_state(self.conn, self.path, tables::COPY_PENDING)?;
            }
            if let Some(reason) = self.untrusted(&ensured, rel)? {
                self.wait_for_copy(rel, first, reason)?;
            }
            SqliteSink::drifted(self.drift, self.drifted, self.path, ensured.drift)?;
            self.stmts.forget(rel.relid);
            self.plans.insert(rel.relid, ensured.plan);
        }
        Ok(())
    }

    /// Records `rel`'s table as waiting for a re-copy since `change`, because of `reason`.
    fn wait_for_copy(
        &mut self,
        rel: &Relation,
        change: &Change,
        reason: &'static str,
    ) -> Result<(), SinkError> {
        self.note_state(rel, change, tables::COPY_PENDING, reason)
    }

    /// Why a mirror that [`mirror::ensure`] just brought to `rel`'s definition cannot be trusted to
    /// equal its table any more, if it cannot: its rows were never copied, belong to another table,
    /// or a schema change may have changed them without row changes.
    fn untrusted(
        &self,
        ensured: &mirror::Ensured,
        rel: &Relation,
    ) -> Result<Option<&'static str>, SinkError> {
        let mirror = mirror::mirror_name(&rel.schema, &rel.table);
        let sql = |e| sql_err(self.path, "reading the loads", e);
        Ok(match ensured.arrival {
            mirror::Arrival::New
                if load::initial_copy_done(self.conn).map_err(sql)?
                    && !load::ever_loaded(self.conn, &mirror).map_err(sql)? =>
            {
                Some(ADDED_LATER)
            }
            mirror::Arrival::Recreated => Some(RECREATED),
            _ => ensured
                .drift
                .as_ref()
                .filter(|d| {
                    d.changes
                        .iter()
                        .any(crate::drift::ColumnChange::may_rewrite)
                })
                .map(|_| REWRITING_CHANGE),
        })
    }
}

const ADDED_LATER: &str = "the table joined the stream after the initial copy (a table added to the publication or the include list, or created since): rows it had before were never copied; a re-copy settles it";
const RECREATED: &str = "a table of this name was dropped and created again: the mirror held the old table's rows; a re-copy settles it";
const PARTITION_TRUNCATED: &str = "some partitions of the table were truncated (not all of them): its mirror cannot tell their rows from the other partitions' and was left as it was; a re-copy settles it";
const REWRITING_CHANGE: &str = "a schema change (a column added, renamed or of a new type) may have changed existing rows without row changes (a table rewrite, a default or identity filled in, a renamed column's values): a re-copy settles it";

impl Writer<'_> {}

/// The old row of a change as sent: its shape and values.
type OldRow<'a> = Option<(BeforeShape, &'a [Value])>;

/// Applies one change to its mirror. Returns the old row as recorded (shape, values) and, when
/// unchanged TOAST gaps were filled, the completed new row.
fn apply<'c>(
    stmts: &mut Statements<'_>,
    path: &Path,
    plan: &Plan,
    change: &'c Change,
    gaps: &[usize],
) -> Result<(OldRow<'c>, Option<Vec<Value>>), SinkError> {
    let rel = &*plan.rel;
    let n = rel.columns.len();
    let sql = |what: &'static str| {
        move |e| {
            sql_err(
                path,
                format!("{what} in mirror table \"{}.{}\"", rel.schema, rel.table),
                e,
            )
        }
    };
    let before = match change.before.as_deref() {
        Some(b) if change.op != Op::Insert && change.op != Op::Truncate => {
            Some((before_shape(rel, plan.n_keys, change, b)?, b))
        }
        _ => None,
    };
    let after = match change.op {
        Op::Insert | Op::Update => {
            let a = change
                .after
                .as_deref()
                .ok_or_else(|| value_count(rel, plan.n_keys, change, "after", 0))?;
            if a.len() != n {
                return Err(value_count(rel, plan.n_keys, change, "after", a.len()));
            }
            Some(a)
        }
        Op::Delete | Op::Truncate => None,
    };
    let no_key = |op| SinkError::NoKey {
        op,
        schema: rel.schema.clone(),
        table: rel.table.clone(),
        commit_lsn: change.commit_lsn,
        ordinal: change.ordinal,
    };
    if n == 0 {
        return Ok((before, None));
    }
    match (change.op, &plan.keying) {
        (Op::Truncate, _) => {
            exec(stmts, plan, Kind::Truncate, []).map_err(sql("emptying (truncate)"))?;
            Ok((None, None))
        }
        (Op::Insert, _) => {
            let a = after.unwrap_or_default();
            let filled = fill_gaps(stmts, path, plan, change, gaps, None, a)?;
            exec(stmts, plan, Kind::Insert, filled.as_deref().unwrap_or(a))
                .map_err(sql("inserting"))?;
            Ok((None, filled))
        }
        (Op::Update, Keying::Key(keys)) => {
            let a = after.unwrap_or_default();
            let old_key: Vec<&Value> = match before {
                Some((BeforeShape::Key, b)) => b.iter().collect(),
                Some((BeforeShape::Full, b)) => keys.iter().map(|&k| &b[k]).collect(),
                None => keys.iter().map(|&k| &a[k]).collect(),
            };
            let filled = fill_gaps(stmts, path, plan, change, gaps, Some((before, &old_key)), a)?;
            let a = filled.as_deref().unwrap_or(a);
            if keys.iter().zip(&old_key).any(|(&k, old)| a[k] != **old) {
                exec(stmts, plan, Kind::Delete, old_key.iter().copied())
                    .map_err(sql("removing the old key"))?;
            }
            exec(stmts, plan, Kind::Insert, a).map_err(sql("upserting"))?;
            Ok((before, filled))
        }
        (Op::Update, Keying::Multiset) => {
            let a = after.unwrap_or_default();
            let Some((BeforeShape::Full, b)) = before else {
                return Err(no_key("update"));
            };
            let filled = fill_gaps(stmts, path, plan, change, gaps, Some((before, &[])), a)?;
            exec(stmts, plan, Kind::Delete, b).map_err(sql("removing the old row"))?;
            exec(stmts, plan, Kind::Insert, filled.as_deref().unwrap_or(a))
                .map_err(sql("inserting the new row"))?;
            Ok((before, filled))
        }
        (Op::Delete, Keying::Key(keys)) => {
            let key: Vec<&Value> = match before {
                Some((BeforeShape::Key, b)) => b.iter().collect(),
                Some((BeforeShape::Full, b)) => keys.iter().map(|&k| &b[k]).collect(),
                None => return Err(value_count(rel, plan.n_keys, change, "before", 0)),
            };
            exec(stmts, plan, Kind::Delete, key).map_err(sql("deleting"))?;
            Ok((before, None))
        }
        (Op::Delete, Keying::Multiset) => {
            let Some((BeforeShape::Full, b)) = before else {
                return Err(no_key("delete"));
            };
            exec(stmts, plan, Kind::Delete, b).map_err(sql("deleting"))?;
            Ok((before, None))
        }
    }
}

/// Fills unchanged TOAST gaps of `after`: from a full old row when there is one, else from the mirror
/// row found by `old` key. `None` when there are no gaps.
fn fill_gaps(
    stmts: &mut Statements<'_>,
    path: &Path,
    plan: &Plan,
    change: &Change,
    gaps: &[usize],
    old: Option<(OldRow<'_>, &[&Value])>,
    after: &[Value],
) -> Result<Option<Vec<Value>>, SinkError> {
    if gaps.is_empty() {
        return Ok(None);
    }
    let rel = &*plan.rel;
    let unresolved = |pos: usize| SinkError::UnresolvedToast {
        schema: rel.schema.clone(),
        table: rel.table.clone(),
        column: rel
            .columns
            .get(pos)
            .map_or_else(|| format!("#{pos}"), |c| c.name.clone()),
        commit_lsn: change.commit_lsn,
        ordinal: change.ordinal,
    };
    let source: Vec<Value> = match old {
        Some((Some((BeforeShape::Full, b)), _)) => b.to_vec(),
        Some((before, key)) if matches!(plan.keying, Keying::Key(_)) => {
            if before.is_none() && plan.keys.iter().any(|k| gaps.contains(k)) {
                // The key itself is unchanged TOAST and no old key was sent: nothing to look it up by.
                return Err(unresolved(plan.keys[0]));
            }
            select_row(stmts, plan, key.iter().copied())
                .map_err(|e| {
                    sql_err(
                        path,
                        format!(
                            "reading the mirror row of \"{}.{}\" for unchanged TOAST",
                            rel.schema, rel.table
                        ),
                        e,
                    )
                })?
                .ok_or_else(|| unresolved(gaps[0]))?
        }
        _ => return Err(unresolved(gaps[0])),
    };
    let mut filled = after.to_vec();
    for &g in gaps {
        let v = source.get(g).ok_or_else(|| unresolved(g))?;
        filled[g] = v.clone();
    }
    Ok(Some(filled))
}

impl Sink for SqliteSink {
    fn write(&mut self, batch: &[Transaction], checkpoint: &Checkpoint) -> Result<(), SinkError> {
        let skip = check_batch(batch, self.stored.as_ref(), checkpoint)?;
        let to_store = Checkpoint::successor(self.stored.as_ref(), checkpoint)?.clone();
        let todo = &batch[skip..];
        if todo.is_empty() && self.stored.as_ref() == Some(&to_store) {
            return Ok(());
        }
        self.in_write_transaction(&to_store, |w| {
            todo.iter().try_for_each(|t| w.transaction(t))
        })
    }

    fn write_large(
        &mut self,
        head: &TransactionHead,
        pieces: &mut dyn Iterator<Item = Result<Piece, SinkError>>,
        checkpoint: &Checkpoint,
    ) -> Result<(), SinkError> {
        if check_large(head, self.stored.as_ref(), checkpoint)? {
            return self.write(&[], checkpoint);
        }
        let to_store = Checkpoint::successor(self.stored.as_ref(), checkpoint)?.clone();
        self.in_write_transaction(&to_store, |w| w.pieces(head, pieces))
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, SinkError> {
        read_checkpoint(&self.conn, &self.path)
    }

    fn current_row(
        &mut self,
        relation: &Relation,
        key: &[Value],
    ) -> Result<Option<Vec<Value>>, SinkError> {
        let mirror = mirror::mirror_name(&relation.schema, &relation.table);
        let existing = mirror::mirror_columns(&self.conn, &mirror)
            .map_err(|e| sql_err(&self.path, "reading the mirror's columns", e))?;
        if existing.is_empty()
            || !relation
                .columns
                .iter()
                .all(|c| existing.iter().any(|e| e.eq_ignore_ascii_case(&c.name)))
        {
            return Ok(None);
        }
        let owned;
        let plan = match self.plans.get(&relation.relid) {
            Some(p) if *p.rel == *relation => p,
            _ => {
                let rowid = mirror::rowid_alias(&self.conn, &mirror, relation)
                    .map_err(|e| sql_err(&self.path, "reading the mirror's columns", e))?
                    .unwrap_or_else(|| "rowid".into());
                owned = Plan::new(Arc::new(relation.clone()), &rowid);
                &owned
            }
        };
        let wanted = match plan.keying {
            Keying::Key(ref keys) => keys.len(),
            Keying::Multiset if plan.n_keys > 0 => plan.n_keys,
            Keying::Multiset => return Ok(None),
        };
        if key.len() != wanted {
            return Ok(None);
        }
        select_row(&mut Statements::new(&self.conn), plan, key).map_err(|e| {
            sql_err(
                &self.path,
                format!("reading a row of mirror table \"{mirror}\""),
                e,
            )
        })
    }

    fn load_begin(&mut self, load: &Load) -> Result<Option<LoadProgress>, SinkError> {
        self.begin_load(load)
    }

    fn load_chunk(
        &mut self,
        load: &Load,
        chunk: u32,
        rows: &mut dyn RowBatches,
        cursor: Option<&Cursor>,
    ) -> Result<u64, SinkError> {
        self.store_chunk(load, chunk, rows, cursor)
    }

    fn load_finish(&mut self, load: &Load) -> Result<u64, SinkError> {
        self.finish_load(load)
    }

    fn cursor(&mut self, schema: &str, table: &str) -> Result<Option<Cursor>, SinkError> {
        self.stored_cursor(schema, table)
    }

    fn initial_copy(&mut self) -> Result<Option<Lsn>, SinkError> {
        self.initial_copy_position()
    }

    fn note_slot_intent(&mut self, slot: &str) -> Result<(), SinkError> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO _fig_slot_intent (id, slot, noted_at) VALUES (1, ?1, {}) \
                     ON CONFLICT (id) DO UPDATE SET slot = excluded.slot, noted_at = excluded.noted_at",
                    load::NOW
                ),
                [slot],
            )
            .map(drop)
            .map_err(|e| sql_err(&self.path, "recording the slot about to be created", e))
    }

    fn slot_intent(&mut self) -> Result<Option<String>, SinkError> {
        read_slot_intent(&self.conn, &self.path)
    }

    fn watch_drift(&mut self, watch: Arc<crate::drift::Watch>) {
        SqliteSink::watch_drift(self, watch)
    }

    fn refusal(
        &mut self,
        relation: &Relation,
        alongside: &[(String, String)],
    ) -> Result<Option<SinkError>, SinkError> {
        if let Some(e) = mirror::column_collision(relation) {
            return Ok(Some(e));
        }
        let me = (relation.schema.as_str(), relation.table.as_str());
        if let Some((s, t)) = alongside.iter().find(|(s, t)| mirror::collide((s, t), me)) {
            return Ok(Some(mirror::collision(relation, (s, t))));
        }
        mirror::name_collision(&self.conn, relation)
            .map_err(|e| sql_err(&self.path, "reading the schema history", e))
    }

    fn mark_out_of_sync(
        &mut self,
        schema: &str,
        table: &str,
        at: Lsn,
        reason: &str,
    ) -> Result<(), SinkError> {
        let state = tables::record(
            &self.conn,
            &self.path,
            schema,
            table,
            tables::OUT_OF_SYNC,
            (at, 0),
            reason,
        )?;
        self.marked.push(state);
        self.after_commit(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
