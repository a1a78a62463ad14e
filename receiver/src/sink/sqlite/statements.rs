//! The prepared statements of one write transaction, held for its length.
//!
//! `prepare_cached` hashes the whole SQL text and moves the statement in and out of an LRU list on
//! every call; per row, that was a tenth of the sink thread's time. Within one write the statements
//! are looked up by (relation, kind) instead and go back to the connection's cache when the write
//! ends. A plan replaced inside the write (DDL) drops its relation's statements.

use rusqlite::{CachedStatement, Connection};
use std::collections::HashMap;

use super::mirror::Plan;

/// Which statement of a relation's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Insert,
    InsertGroup,
    Delete,
    Select,
    Truncate,
}

impl Kind {
    fn sql(self, plan: &Plan) -> &str {
        match self {
            Kind::Insert => &plan.insert,
            Kind::InsertGroup => &plan.insert_group,
            Kind::Delete => &plan.delete,
            Kind::Select => &plan.select,
            Kind::Truncate => &plan.truncate,
        }
    }
}

pub(super) struct Statements<'c> {
    conn: &'c Connection,
    held: HashMap<(u32, Kind), CachedStatement<'c>>,
    /// Statements not tied to a relation (the history insert), by their SQL.
    fixed: HashMap<&'static str, CachedStatement<'c>>,
}

impl<'c> Statements<'c> {
    pub fn new(conn: &'c Connection) -> Self {
        Statements {
            conn,
            held: HashMap::new(),
            fixed: HashMap::new(),
        }
    }

    /// The `kind` statement of `plan`, prepared on first use in this write.
    pub fn of(&mut self, plan: &Plan, kind: Kind) -> rusqlite::Result<&mut CachedStatement<'c>> {
        use std::collections::hash_map::Entry;
        match self.held.entry((plan.rel.relid, kind)) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => Ok(e.insert(self.conn.prepare_cached(kind.sql(plan))?)),
        }
    }

    /// A statement that is the same for every relation.
    pub fn fixed(&mut self, sql: &'static str) -> rusqlite::Result<&mut CachedStatement<'c>> {
        use std::collections::hash_map::Entry;
        match self.fixed.entry(sql) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => Ok(e.insert(self.conn.prepare_cached(sql)?)),
        }
    }

    /// `relid`'s plan was replaced: its statements are for the old definition.
    pub fn forget(&mut self, relid: u32) {
        self.held.retain(|(r, _), _| *r != relid);
    }
}
