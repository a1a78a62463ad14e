//! Rows of the change history (`_fig_changes`), written [`GROUP`] at a time.
//!
//! One multi-row INSERT costs SQLite one statement start, one cursor and one reset instead of
//! [`GROUP`], which per change is most of what a single-row insert costs beyond the b-tree work.
//! Rows are buffered only inside one write transaction and always flushed before it commits, so
//! grouping changes nothing about what one COMMIT holds. The buffers are reused from write to write.
//!
//! The inserts are `INSERT OR ROLLBACK`: a change the history already holds fails the whole write
//! anyway, and a statement that can only roll back everything needs no statement journal. With the
//! default `ABORT`, SQLite saved every page a group insert touched before changing it, and with
//! 16 KiB pages those copies went to a temporary file: 1.2 GB of writes per 1,000,000 changes,
//! three times the history itself.

use rusqlite::ErrorCode;

use super::statements::Statements;
use crate::model::Lsn;

/// History rows per INSERT statement (10 parameters each, far below SQLite's limit).
pub(super) const GROUP: usize = 64;

pub(super) const INSERT_ONE: &str = "INSERT OR ROLLBACK INTO _fig_changes (commit_lsn, ordinal, xid, commit_time, schema, \"table\", op, before, after, partition) \
                                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

static INSERT_GROUP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    format!(
        "INSERT OR ROLLBACK INTO _fig_changes (commit_lsn, ordinal, xid, commit_time, schema, \"table\", op, before, after, partition) VALUES {}",
        vec![one; GROUP].join(", ")
    )
});

/// One history row; its strings keep their capacity for the next row in the slot.
#[derive(Default)]
pub(super) struct Row {
    pub commit_lsn: i64,
    pub ordinal: u32,
    pub xid: u32,
    pub commit_time: String,
    pub schema: String,
    pub table: String,
    pub op: &'static str,
    pub before: Option<String>,
    pub after: Option<String>,
    /// The leaf partition of a change recorded under its root.
    pub partition: Option<String>,
}

/// What went wrong storing history rows.
pub(super) enum Failed {
    /// The history already holds this change.
    Duplicate {
        commit_lsn: Lsn,
        ordinal: u32,
    },
    Sql(rusqlite::Error),
}

#[derive(Default)]
pub(super) struct History {
    rows: Vec<Row>,
    len: usize,
    /// Where emptied `before`/`after` strings wait to be reused.
    spare: Vec<String>,
}

impl History {
    /// A slot for the next row, its strings emptied. Flush when [`History::full`].
    pub fn next(&mut self) -> &mut Row {
        if self.len == self.rows.len() {
            self.rows.push(Row::default());
        }
        let row = &mut self.rows[self.len];
        self.len += 1;
        row.partition = None;
        for s in [row.before.take(), row.after.take()].into_iter().flatten() {
            self.spare.push(s);
        }
        row.commit_time.clear();
        row.schema.clear();
        row.table.clear();
        row
    }

    /// An empty string for a row's `before` or `after`.
    pub fn string(&mut self) -> String {
        let mut s = self.spare.pop().unwrap_or_default();
        s.clear();
        s
    }

    pub fn full(&self) -> bool {
        self.len >= GROUP
    }

    /// Forgets rows not flushed (their write failed).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Inserts the buffered rows: whole groups with one statement, the rest one by one. After a
    /// [`Failed`], the write transaction is over (rolled back).
    pub fn flush(&mut self, stmts: &mut Statements<'_>) -> Result<(), Failed> {
        let rows = &self.rows[..self.len];
        self.len = 0;
        let mut chunks = rows.chunks_exact(GROUP);
        for group in &mut chunks {
            match insert_group(stmts, group) {
                Ok(()) => {}
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                    return Err(culprit(stmts, group, e));
                }
                Err(e) => return Err(Failed::Sql(e)),
            }
        }
        insert_each(stmts, chunks.remainder())
    }
}

/// The row of `group` a failed group insert repeated. The write was rolled back, so the history
/// holds what was stored before it: the first row found there; else one repeated inside the group;
/// else (a repeat of an earlier group of the same write, which the pipeline never sends) the
/// group's first row.
fn culprit(stmts: &mut Statements<'_>, group: &[Row], e: rusqlite::Error) -> Failed {
    let key = |r: &Row| (r.commit_lsn, r.ordinal);
    let mut stored = |r: &Row| -> rusqlite::Result<bool> {
        let stmt = stmts.fixed(STORED)?;
        stmt.raw_bind_parameter(1, r.commit_lsn)?;
        stmt.raw_bind_parameter(2, r.ordinal)?;
        let found = stmt.raw_query().next()?.is_some();
        Ok(found)
    };
    let mut found = None;
    for r in group {
        match stored(r) {
            Ok(true) => {
                found = Some(r);
                break;
            }
            Ok(false) => {}
            Err(_) => return Failed::Sql(e),
        }
    }
    let found = found
        .or_else(|| {
            group
                .iter()
                .enumerate()
                .find(|(i, r)| group[..*i].iter().any(|o| key(o) == key(r)))
                .map(|(_, r)| r)
        })
        .or(group.first());
    match found {
        Some(r) => duplicate(r),
        None => Failed::Sql(e),
    }
}

const STORED: &str = "SELECT 1 FROM _fig_changes WHERE commit_lsn = ?1 AND ordinal = ?2";

fn duplicate(row: &Row) -> Failed {
    Failed::Duplicate {
        // Stored from an `Lsn` by `lsn_i64`, so never negative.
        commit_lsn: Lsn(row.commit_lsn as u64),
        ordinal: row.ordinal,
    }
}

fn insert_group(stmts: &mut Statements<'_>, group: &[Row]) -> rusqlite::Result<()> {
    let stmt = stmts.fixed(INSERT_GROUP.as_str())?;
    let mut i = 0;
    for row in group {
        for p in params(row) {
            i += 1;
            stmt.raw_bind_parameter(i, p)?;
        }
    }
    stmt.raw_execute().map(drop)
}

fn insert_each(stmts: &mut Statements<'_>, rows: &[Row]) -> Result<(), Failed> {
    for row in rows {
        let stmt = stmts.fixed(INSERT_ONE).map_err(Failed::Sql)?;
        let res = params(row)
            .iter()
            .enumerate()
            .try_for_each(|(i, p)| stmt.raw_bind_parameter(i + 1, p))
            .and_then(|()| stmt.raw_execute());
        match res {
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                return Err(duplicate(row));
            }
            Err(e) => return Err(Failed::Sql(e)),
        }
    }
    Ok(())
}

fn params(row: &Row) -> [rusqlite::types::ToSqlOutput<'_>; 10] {
    use rusqlite::types::{ToSqlOutput, Value, ValueRef};
    fn text(s: &Option<String>) -> ToSqlOutput<'_> {
        match s {
            Some(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            None => ToSqlOutput::Owned(Value::Null),
        }
    }
    [
        ToSqlOutput::Owned(Value::Integer(row.commit_lsn)),
        ToSqlOutput::Owned(Value::Integer(row.ordinal.into())),
        ToSqlOutput::Owned(Value::Integer(row.xid.into())),
        ToSqlOutput::Borrowed(ValueRef::Text(row.commit_time.as_bytes())),
        ToSqlOutput::Borrowed(ValueRef::Text(row.schema.as_bytes())),
        ToSqlOutput::Borrowed(ValueRef::Text(row.table.as_bytes())),
        ToSqlOutput::Borrowed(ValueRef::Text(row.op.as_bytes())),
        text(&row.before),
        text(&row.after),
        text(&row.partition),
    ]
}
