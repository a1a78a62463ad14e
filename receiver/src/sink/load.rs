//! Table loads: the rows a snapshot copy or an incremental sync reads, on their way into a sink.
//!
//! ```text
//! sync::snapshot ─┐                              ┌─ Replace: rows go to a staging copy; load_finish
//!                 ├─ load_begin ─ load_chunk… ─▶ │  swaps it for the mirror in one transaction
//! sync::incremental┘              load_finish    └─ Upsert: rows upserted into the mirror, the cursor
//!                                                   stored in the same transaction
//! ```
//!
//! The rules a sink keeps for loads:
//! - **Readers never see a half-replaced table.** A [`LoadMode::Replace`] load is invisible until
//!   [`Sink::load_finish`](super::Sink::load_finish), which replaces the mirror's rows with the loaded
//!   ones atomically: rows deleted at the source are gone after it.
//! - **A chunk is stored whole or not at all**, together with the mark that it is done, so a load
//!   interrupted by a crash resumes after the last stored chunk ([`LoadProgress::done`]) without
//!   duplicates. A sink that never resumes loads and renders their rows as appended text
//!   ([`RenderRows`]) keeps whole loads instead: its chunks' pieces interleave, and a reader
//!   discards a load without its end marker.
//! - **A cursor is stored with the rows it covers** ([`LoadMode::Upsert`]): after a crash the next
//!   incremental pass starts from a cursor that the stored rows really reach.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{Lsn, Relation, Value};

/// The first chunk number of the passes a resumed load makes over the rows written since it
/// began: chunks from here on may repeat rows of earlier chunks (stored once, by key).
pub const CATCH_UP_CHUNK: u32 = 1_000_000_000;

/// How a load's rows meet the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// A full copy that replaces the mirror's rows when it finishes (snapshot syncs, the initial
    /// copy of CDC tables).
    Replace,
    /// Rows upserted into the mirror by key as they come (incremental syncs).
    Upsert,
}

impl LoadMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadMode::Replace => "replace",
            LoadMode::Upsert => "upsert",
        }
    }
}

/// One load of one table.
#[derive(Debug, Clone)]
pub struct Load {
    /// The table as the catalog describes it when the load starts; key columns are its replica
    /// identity (the primary key by default), as the replication stream marks them.
    pub relation: Arc<Relation>,
    pub mode: LoadMode,
    /// Where the source's WAL stood when the load's snapshot was taken (a CDC initial copy: the
    /// slot's consistent point). Orders the definition among the stream's in the schema history.
    pub position: Lsn,
    /// The point in time the rows are read at: the transaction snapshot (`pg_current_snapshot()`
    /// text). A resumed load keeps the one it started with, so it can tell which rows changed since.
    pub snapshot: String,
    /// What the sink records about the load (`snapshot`, `incremental`, `cdc-initial`).
    pub sync: &'static str,
    /// Heap blocks per chunk (chunk `i` reads blocks `[i·B, (i+1)·B)`; 0: the table is one chunk).
    /// Kept with the load, so a resumed load means the same ranges by the same chunk numbers.
    pub chunk_blocks: u64,
    /// A partitioned table mirrored under its root: the leaf partitions (relids, sorted) whose rows
    /// the load reads. `run` compares them with the partitions the table has later: attaching,
    /// detaching or dropping one changes rows without row changes.
    pub partitions: Option<Vec<u32>>,
}

impl Load {
    /// The name under which this load is known: its table.
    pub fn table(&self) -> String {
        format!("{}.{}", self.relation.schema, self.relation.table)
    }
}

/// An unfinished load found by [`Sink::load_begin`](super::Sink::load_begin).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadProgress {
    /// Chunks stored so far, ascending.
    pub done: Vec<u32>,
    /// Rows stored so far.
    pub rows: u64,
    /// The snapshot the load started under ([`Load::snapshot`] of the first attempt).
    pub snapshot: String,
    pub position: Lsn,
    /// [`Load::chunk_blocks`] of the first attempt.
    pub chunk_blocks: u64,
    /// The load already finished: a `cdc-initial` load at the same position (the same slot
    /// creation) completed before a crash; nothing is left to do.
    pub finished: bool,
}

/// Where an incremental sync of a table stands: the last (cursor, key) it stored. The next pass
/// reads rows past it (less the look-back window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The cursor column's name.
    pub column: String,
    pub value: Value,
    /// The key (primary key columns, in relation order) of the last row stored at `value`.
    pub key: Vec<Value>,
}

/// Renders loaded rows as the text a sink appends (see
/// [`Sink::load_renderer`](super::Sink::load_renderer)); runs outside the sink, on the chunk's own
/// thread.
pub trait RenderRows: Send {
    /// Appends the text of `rows` (one value per column of the load's relation, in order).
    fn render(&mut self, rows: &[Vec<Value>], out: &mut String) -> Result<(), super::SinkError>;
}
