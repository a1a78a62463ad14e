//! Logical messages (`pg_logical_emit_message`) in `_fig_messages`: one row per message, keyed by
//! the LSN of its WAL record, which no other message shares; `next_ordinal` places it among its
//! transaction's changes (the ordinal of the change after it in `_fig_changes`). A transactional message is stored
//! with its transaction, so only a committed one is ever here; a non-transactional one is stored
//! when it is decoded and has no transaction (`xid` and `commit_time` NULL, `commit_lsn` its own).

use rusqlite::params;

use super::statements::Statements;
use super::{lsn_i64, sql_err, Stamp};
use crate::sink::{MessageAt, SinkError};

pub(super) const CREATE: &str = "
CREATE TABLE IF NOT EXISTS _fig_messages (
    lsn INTEGER PRIMARY KEY,
    commit_lsn INTEGER NOT NULL,
    next_ordinal INTEGER NOT NULL,
    xid INTEGER,
    commit_time TEXT,
    transactional INTEGER NOT NULL,
    prefix TEXT NOT NULL,
    content BLOB NOT NULL
);";

const INSERT: &str = "INSERT OR ROLLBACK INTO _fig_messages \
    (lsn, commit_lsn, next_ordinal, xid, commit_time, transactional, prefix, content) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Stores one message of the transaction `stamp` (whose xid is `xid`).
pub(super) fn store(
    stmts: &mut Statements,
    path: &std::path::Path,
    stamp: &Stamp,
    xid: u32,
    at: &MessageAt,
) -> Result<(), SinkError> {
    let m = &at.message;
    let (xid, commit_time) = match m.transactional {
        true => (Some(xid), Some(stamp.commit_time.as_str())),
        false => (None, None),
    };
    let lsn = lsn_i64(m.lsn)?;
    stmts
        .fixed(INSERT)
        .and_then(|s| {
            s.execute(params![
                lsn,
                stamp.commit_lsn,
                at.ordinal,
                xid,
                commit_time,
                m.transactional,
                m.prefix,
                m.content,
            ])
        })
        .map(drop)
        .map_err(|e| sql_err(path, "storing a logical message", e))
}
