//! Sinks: where committed transactions become durable, together with the resume point that covers them.
//!
//! ```text
//! pipeline ──write(batch of whole committed transactions, checkpoint)──▶ Sink ──Ok──▶ ack up to checkpoint
//!    ▲                                                                     │
//!    └──────────── checkpoint() on start: resume from here ◀───────────────┘
//! ```
//!
//! The rule this module serves (DESIGN.md rules 1 and 2): **the checkpoint is durable exactly when the
//! data it covers is**. The pipeline sends the server a flush position only after [`Sink::write`]
//! returned `Ok` for a checkpoint at or past it, and on restart it streams from [`Sink::checkpoint`] and
//! drops every transaction the checkpoint covers.
//!
//! A transaction too large to hold in memory (millions of rows) takes the same path one piece at a
//! time: [`Sink::write_large`] reads its changes from an iterator as it applies them, under the same
//! all-or-nothing rule.
//!
//! ```text
//! pipeline ──write_large(head, pieces: Relation | Change, …, checkpoint)──▶ Sink ──Ok──▶ ack
//!              (read lazily from the spill file)                           one atomic unit
//! ```
//!
//! Implementations: [`sqlite::SqliteSink`] (the embedded default; exactly once, because data and
//! checkpoint share one SQLite transaction) and [`jsonl::JsonlSink`] (JSON Lines to a file or stdout;
//! the data is fsync'ed before the checkpoint sidecar replaces the old one, and reopening cuts off any
//! bytes the stored checkpoint does not cover).
//!
//! Values take the forms of DESIGN.md ("Normalized values"); [`json`] holds their one JSON spelling,
//! shared by the SQLite change history and the JSON Lines events.

pub mod json;
pub mod jsonl;
pub mod load;
pub mod lock;
pub mod sqlite;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::model::{Change, Lsn, Relation, Value};

pub use jsonl::JsonlSink;
pub mod open;
pub use load::{Cursor, Load, LoadMode, LoadProgress, RenderRows};
pub use sqlite::SqliteSink;

/// A destination for committed transactions.
///
/// # What the pipeline promises
/// - It hands over **whole committed source transactions, in commit order**, never a part of one, never
///   an aborted one, never a transaction twice within one batch. A batch is a run of consecutive
///   transactions; `end_lsn` strictly increases within a batch and from one batch to the next, except
///   that after a restart the pipeline may repeat transactions the stored checkpoint already covers.
/// - Every change's `relid` has a definition in [`Transaction::relations`] (or
///   [`Transaction::relation_changes`] for a definition that changed inside the transaction), and the
///   change's value vectors fit it (see [`Transaction`] for the shapes).
/// - Unchanged TOAST columns the pipeline could not resolve are listed in
///   [`Transaction::unchanged_toast`]; the values at those positions are placeholders the sink must
///   ignore. The pipeline never invents a value (DESIGN.md rule 5).
/// - Calls are sequential (`&mut self`); the methods block, so an async pipeline runs them on a blocking
///   thread (`tokio::task::spawn_blocking` or a dedicated thread owning the sink).
///
/// # What an implementation guarantees
/// - [`write`](Sink::write) returns `Ok` only once **all of the batch and the checkpoint are durable,
///   atomically**: after any crash, [`checkpoint`](Sink::checkpoint) returns a value C such that every
///   transaction with `end_lsn ≤ C.commit_end_lsn` is stored exactly once and none after it is stored
///   at all. On `Err`, neither data nor checkpoint changed (the batch may be retried whole).
/// - Transactions at or below the stored checkpoint (`end_lsn ≤ commit_end_lsn`) are skipped, so
///   writing the same transaction twice is idempotent, not an error. The stored checkpoint never moves
///   backwards: an older one offered with already-covered transactions leaves the stored one in place.
/// - A checkpoint naming another source (system identifier, slot or plugin) than the stored one is
///   refused ([`SinkError::SourceMismatch`]): one sink holds one source's data.
/// - Schema travels with the data: the sink learns relation definitions from each transaction (no
///   separate `relation_changed` call), so nothing depends on in-memory state surviving a restart.
///   Sinks that keep state record a definition when it differs from the last one recorded.
pub trait Sink: Send {
    /// Stores `batch` and `checkpoint` durably and atomically (see the trait's contract).
    fn write(&mut self, batch: &[Transaction], checkpoint: &Checkpoint) -> Result<(), SinkError>;

    /// Stores one transaction that is too large to hold in memory, reading its changes from `pieces`
    /// as it applies them, and `checkpoint`, under the same contract as [`write`](Sink::write) for a
    /// batch of this one transaction: everything and the checkpoint durable together, or nothing (an
    /// `Err` from `pieces`, or any other failure midway, leaves data and checkpoint as they were), and
    /// skipped (without reading `pieces`) when the stored checkpoint already covers `head.end_lsn`.
    ///
    /// What the pipeline promises about `pieces`: in ordinal order; a [`Piece::Relation`] comes before
    /// the first change that uses it (each relation's definition in force is sent once before its first
    /// change, and again when it changes inside the transaction); every change carries `head`'s commit
    /// LSN, xid and commit time. The sink must not collect the pieces: memory stays bounded whatever
    /// the transaction's size.
    fn write_large(
        &mut self,
        head: &TransactionHead,
        pieces: &mut dyn Iterator<Item = Result<Piece, SinkError>>,
        checkpoint: &Checkpoint,
    ) -> Result<(), SinkError>;

    /// The stored resume point, or `None` for a sink that holds nothing yet (then the pipeline decides
    /// explicitly how to start: a snapshot, never "from now" silently; DESIGN.md rule 4).
    fn checkpoint(&self) -> Result<Option<Checkpoint>, SinkError>;

    /// The last durable full row of `relation` whose key columns (the relation's columns marked `key`,
    /// in relation order) equal `key`, in the relation's column order; `None` when the sink does not
    /// know the row, or cannot supply every one of its columns (never a made-up value).
    ///
    /// It reflects only what `write` made durable: rows changed by transactions the pipeline holds but
    /// has not written yet are the pipeline's to resolve. Sinks that keep state (SQLite) also resolve
    /// [`Transaction::unchanged_toast`] gaps themselves inside `write`, where the state is always exact,
    /// so a pipeline may simply pass the gaps on.
    fn current_row(
        &mut self,
        relation: &Relation,
        key: &[Value],
    ) -> Result<Option<Vec<Value>>, SinkError>;

    /// Why this sink cannot hold `relation`'s table, checked before a copy writes anything of it:
    /// `Some(error)` when it cannot (SQLite: two columns whose names differ only in ASCII case; a
    /// mirror name another source table has, one of `alongside` (tables copied with it, earlier in
    /// the copy's order) or one the sink already mirrors). The copy then leaves the table out (the
    /// initial copy marks it out of sync with the error as the reason) and copies the others.
    fn refusal(
        &mut self,
        _relation: &Relation,
        _alongside: &[(String, String)],
    ) -> Result<Option<SinkError>, SinkError> {
        Ok(None)
    }

    /// Starts a table load (see [`load`] for the rules), or finds the unfinished one of the same
    /// table and mode: `Some(progress)` tells the caller which chunks are stored already, so it
    /// resumes after them. A sink that cannot resume a load returns `None` and starts it over.
    fn load_begin(&mut self, load: &Load) -> Result<Option<LoadProgress>, SinkError>;

    /// Stores chunk `chunk` of `load` whole, reading its rows (one value per column of
    /// `load.relation`, in order) from `rows` a batch at a time without collecting them; marks the
    /// chunk done and, when given, stores `cursor`: all in one atomic unit, or nothing on `Err`
    /// (from `rows` or the sink). Returns the rows stored.
    fn load_chunk(
        &mut self,
        load: &Load,
        chunk: u32,
        rows: &mut dyn RowBatches,
        cursor: Option<&Cursor>,
    ) -> Result<u64, SinkError>;

    /// A renderer of `load`'s rows as the text this sink appends, when its loaded rows are text
    /// appended to one output and rendering them needs nothing of the sink (JSON Lines snapshot
    /// loads). Then each chunk's rows are rendered outside the sink, chunks side by side, and
    /// handed over with [`load_append`](Sink::load_append) a piece at a time. `None` (the default):
    /// chunks go whole through [`load_chunk`](Sink::load_chunk), one at a time.
    fn load_renderer(&self, _load: &Load) -> Option<Box<dyn RenderRows>> {
        None
    }

    /// Appends `text`: `rows` rows of `load` rendered by [`load_renderer`](Sink::load_renderer)'s
    /// renderer. With `durable` (a chunk's last piece), everything appended so far is made durable.
    /// Pieces of chunks read side by side interleave, and a chunk that fails midway leaves the
    /// pieces it appended: such a sink keeps a load whole only as a whole (readers discard a load
    /// without its end marker, and [`load_begin`](Sink::load_begin) never resumes one).
    fn load_append(
        &mut self,
        load: &Load,
        _text: &str,
        _rows: u64,
        _durable: bool,
    ) -> Result<(), SinkError> {
        Err(SinkError::NotRendering {
            table: load.table(),
        })
    }

    /// Ends `load`: a [`LoadMode::Replace`] load's rows replace the mirror's, atomically. Returns
    /// the rows the load stored in all.
    fn load_finish(&mut self, load: &Load) -> Result<u64, SinkError>;

    /// The stored incremental cursor of `schema.table`, if any.
    fn cursor(&mut self, schema: &str, table: &str) -> Result<Option<Cursor>, SinkError>;

    /// Where this sink's initial copy of CDC tables began (its slot's consistent point), when it
    /// holds one: the resume rule finishes an initial copy a crash interrupted. `None` from a sink
    /// that cannot resume loads (then a crash during the initial copy needs a new start).
    fn initial_copy(&mut self) -> Result<Option<Lsn>, SinkError> {
        Ok(None)
    }

    /// Records, durably, that this sink is about to create the replication slot `slot`: a run
    /// killed after creating it and before the sink recorded anything of it leaves a slot the
    /// next run can tell is its own ([`Sink::slot_intent`]) and create again. A sink that cannot
    /// record it does nothing (the next run then refuses such a slot).
    fn note_slot_intent(&mut self, _slot: &str) -> Result<(), SinkError> {
        Ok(())
    }

    /// The slot [`Sink::note_slot_intent`] last recorded, if any.
    fn slot_intent(&mut self) -> Result<Option<String>, SinkError> {
        Ok(None)
    }

    /// Records `schema.table` as out of sync since stream position `at`, because of `reason`
    /// (see `sqlite/tables.rs`): its changes from then on go to the history only, until a re-copy.
    fn mark_out_of_sync(
        &mut self,
        schema: &str,
        table: &str,
        _at: Lsn,
        _reason: &str,
    ) -> Result<(), SinkError> {
        Err(SinkError::NeedsState {
            what: format!("marking {schema}.{table} out of sync"),
        })
    }

    /// Follows schema drift from now on: records and notifies changes of a relation's definition,
    /// and stops a table whose policy is `pause` at a flagged change (see [`crate::drift`]).
    fn watch_drift(&mut self, watch: Arc<crate::drift::Watch>);
}

/// One committed source transaction, whole.
///
/// Shapes of a [`Change`]'s values (checked by the sinks; a mismatch is [`SinkError::ValueCount`]):
/// - `after` (insert, update): one value per column of the relation, in relation order.
/// - `before` (update, delete): what the replica identity provides: either the key columns only, in
///   relation order (`REPLICA IDENTITY DEFAULT` or `USING INDEX`), or the full old row (`FULL`, or a
///   relation whose every column is a key column). `None` on an update means the key did not change.
/// - truncate: both `None`, one change per truncated relation.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub xid: u32,
    /// The LSN of the commit record; orders transactions (with [`Change::ordinal`] it identifies events).
    pub commit_lsn: Lsn,
    /// The end of the commit record: what a checkpoint covering this transaction holds.
    pub end_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC (PostgreSQL's epoch).
    pub commit_time: i64,
    /// In ordinal order.
    pub changes: Vec<Change>,
    /// The definition in force at the transaction's start of every relation its changes touch.
    /// `Arc` so the pipeline's relation cache hands them over without copying.
    pub relations: Vec<Arc<Relation>>,
    /// Definitions that took effect inside the transaction (DDL between two of its changes), rare:
    /// each applies from the change with ordinal `from_ordinal` on. In ordinal order.
    pub relation_changes: Vec<RelationChange>,
    /// Unchanged TOAST columns the pipeline could not resolve, per change. Usually empty.
    pub unchanged_toast: Vec<ToastGap>,
    /// The DDL statements (figoutput's DDL capture) behind definitions this transaction brings.
    /// Usually empty.
    pub ddl: Vec<RelationDdl>,
    /// Logical messages, in stream order. Usually empty. A non-transactional message is a unit of
    /// its own: a "transaction" with xid 0, no changes, that one message, and commit and end LSN
    /// both the message's.
    pub messages: Vec<MessageAt>,
}

/// A logical message at its place in a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageAt {
    /// The ordinal of the change that comes after it (the number of changes before it).
    pub ordinal: u32,
    pub message: crate::model::Message,
}

/// What identifies a transaction and places it in the stream: all of a [`Transaction`] but its
/// changes. The head of a transaction streamed with [`Sink::write_large`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionHead {
    pub xid: u32,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end of the commit record: what a checkpoint covering this transaction holds.
    pub end_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC (PostgreSQL's epoch).
    pub commit_time: i64,
}

/// One piece of a transaction streamed with [`Sink::write_large`], in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// From here on, the changes of `relid` use this definition. Sent before the first change of
    /// each relation, and again when the definition changes inside the transaction.
    Relation(Arc<Relation>),
    /// The DDL statement text behind the definition of `relid` that comes next (figoutput only).
    Ddl { relid: u32, text: Arc<str> },
    /// One change, with the positions of its `after` that are unchanged TOAST the pipeline could not
    /// resolve (usually none; see [`ToastGap`]).
    Change {
        change: Change,
        unchanged_toast: Vec<usize>,
    },
    /// A logical message, before the change with its ordinal.
    Message(MessageAt),
}

/// A relation definition that took effect inside a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationChange {
    /// The ordinal of the first change that uses `relation`.
    pub from_ordinal: u32,
    pub relation: Arc<Relation>,
}

/// The DDL statement text behind a new definition: the one the change with `from_ordinal` (of
/// relation `relid`) is the first to use.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationDdl {
    pub relid: u32,
    pub from_ordinal: u32,
    pub text: Arc<str>,
}

/// Columns of one change's `after` whose values are unchanged TOAST the pipeline did not resolve.
///
/// SQLite fills them from the mirror row inside its write transaction (an error if there is none:
/// never a made-up value); JSON Lines leaves them out of `after` and lists their names in
/// `unchanged_toast`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToastGap {
    /// [`Change::ordinal`] of the change.
    pub ordinal: u32,
    /// Positions in the relation's columns (and so in `after`), ascending.
    pub columns: Vec<usize>,
}

impl Transaction {
    /// The transaction without its changes.
    pub fn head(&self) -> TransactionHead {
        TransactionHead {
            xid: self.xid,
            commit_lsn: self.commit_lsn,
            end_lsn: self.end_lsn,
            commit_time: self.commit_time,
        }
    }

    /// The unresolved unchanged-TOAST column positions of the change with `ordinal` (usually none).
    pub fn toast_gaps(&self, ordinal: u32) -> &[usize] {
        if self.unchanged_toast.is_empty() {
            return &[];
        }
        self.unchanged_toast
            .iter()
            .find(|g| g.ordinal == ordinal)
            .map_or(&[][..], |g| &g.columns[..])
    }

    /// The DDL text behind the definition that the change `ordinal` of `relid` is the first to use.
    pub fn ddl_for(&self, relid: u32, ordinal: u32) -> Option<&Arc<str>> {
        self.ddl
            .iter()
            .find(|d| d.relid == relid && d.from_ordinal == ordinal)
            .map(|d| &d.text)
    }

    /// Every definition the transaction brings (those in force at its start, then those taking
    /// effect inside it), each with the DDL text behind it.
    pub fn definitions(&self) -> impl Iterator<Item = (&Arc<Relation>, Option<&Arc<str>>)> {
        let first_use = |relid: u32| {
            self.changes
                .iter()
                .find(|c| c.relid == relid)
                .map(|c| c.ordinal)
        };
        let at_start = self.relations.iter().map(move |r| {
            let ddl = match self.ddl.is_empty() {
                true => None,
                false => first_use(r.relid).and_then(|o| self.ddl_for(r.relid, o)),
            };
            (r, ddl)
        });
        let inside = self.relation_changes.iter().map(|rc| {
            (
                &rc.relation,
                self.ddl_for(rc.relation.relid, rc.from_ordinal),
            )
        });
        at_start.chain(inside)
    }

    /// Walks the changes with the relation definition in force for each.
    pub(crate) fn changes_with_relations(
        &self,
    ) -> Result<Vec<(&Change, &Arc<Relation>)>, SinkError> {
        let mut in_force: HashMap<u32, &Arc<Relation>> =
            self.relations.iter().map(|r| (r.relid, r)).collect();
        let mut pending = self.relation_changes.iter().peekable();
        let mut out = Vec::with_capacity(self.changes.len());
        for change in &self.changes {
            while let Some(rc) = pending.next_if(|rc| rc.from_ordinal <= change.ordinal) {
                in_force.insert(rc.relation.relid, &rc.relation);
            }
            let rel = in_force
                .get(&change.relid)
                .ok_or_else(|| SinkError::UnknownRelation {
                    relid: change.relid,
                    schema: change.schema.clone(),
                    table: change.table.clone(),
                    commit_lsn: self.commit_lsn,
                    ordinal: change.ordinal,
                })?;
            out.push((change, *rel));
        }
        Ok(out)
    }
}

/// One step of [`walk_pieces`].
pub(crate) enum Walked<'a> {
    /// A change with the relation definition in force for it, its unresolved unchanged-TOAST
    /// positions and, for the first change that uses a new definition, the DDL text behind it.
    Change {
        change: &'a Change,
        rel: &'a Arc<Relation>,
        gaps: &'a [usize],
        ddl: Option<&'a Arc<str>>,
    },
    Message(&'a MessageAt),
}

/// Walks a streamed transaction's pieces, calling `apply` for each change and each logical message
/// in order. Stops at the first error, from `pieces` or from `apply`. Nothing is collected: memory
/// stays bounded.
pub(crate) fn walk_pieces(
    head: &TransactionHead,
    pieces: &mut dyn Iterator<Item = Result<Piece, SinkError>>,
    mut apply: impl FnMut(Walked) -> Result<(), SinkError>,
) -> Result<(), SinkError> {
    let mut in_force: HashMap<u32, Arc<Relation>> = HashMap::new();
    let mut explained: HashMap<u32, Arc<str>> = HashMap::new();
    for piece in pieces {
        match piece? {
            Piece::Relation(rel) => {
                in_force.insert(rel.relid, rel);
            }
            Piece::Ddl { relid, text } => {
                explained.insert(relid, text);
            }
            Piece::Change {
                change,
                unchanged_toast,
            } => {
                let rel =
                    in_force
                        .get(&change.relid)
                        .ok_or_else(|| SinkError::UnknownRelation {
                            relid: change.relid,
                            schema: change.schema.clone(),
                            table: change.table.clone(),
                            commit_lsn: head.commit_lsn,
                            ordinal: change.ordinal,
                        })?;
                let ddl = match explained.is_empty() {
                    true => None,
                    false => explained.remove(&change.relid),
                };
                apply(Walked::Change {
                    change: &change,
                    rel,
                    gaps: &unchanged_toast,
                    ddl: ddl.as_ref(),
                })?;
            }
            Piece::Message(m) => apply(Walked::Message(&m))?,
        }
    }
    Ok(())
}

/// The rows of one loaded chunk, lent a batch at a time: a batch is borrowed until the next call,
/// so its producer can decode the following rows into the same memory.
pub trait RowBatches {
    /// The next batch (never empty), or `None` at the end of the chunk. An `Err` ends the chunk:
    /// the sink stores nothing of it.
    fn next_batch(&mut self) -> Option<Result<&[Vec<Value>], SinkError>>;
}

/// [`RowBatches`] over rows already at hand (an incremental page, tests): batches of up to
/// [`RowsAtHand::BATCH`] rows, the rows before an `Err` first, then the `Err`.
pub struct RowsAtHand<I> {
    rows: I,
    batch: Vec<Vec<Value>>,
    failed: Option<SinkError>,
}

impl<I: Iterator<Item = Result<Vec<Value>, SinkError>>> RowsAtHand<I> {
    pub const BATCH: usize = 1_000;

    pub fn new(rows: I) -> Self {
        RowsAtHand {
            rows,
            batch: Vec::new(),
            failed: None,
        }
    }
}

impl<I: Iterator<Item = Result<Vec<Value>, SinkError>>> RowBatches for RowsAtHand<I> {
    fn next_batch(&mut self) -> Option<Result<&[Vec<Value>], SinkError>> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        self.batch.clear();
        for row in self.rows.by_ref() {
            match row {
                Ok(row) => self.batch.push(row),
                Err(e) if self.batch.is_empty() => return Some(Err(e)),
                Err(e) => {
                    self.failed = Some(e);
                    break;
                }
            }
            if self.batch.len() == Self::BATCH {
                break;
            }
        }
        (!self.batch.is_empty()).then_some(Ok(&self.batch))
    }
}

/// The resume point (DESIGN.md rule 2), stored atomically with the data it covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// `IDENTIFY_SYSTEM`'s system identifier of the source cluster.
    pub system_id: u64,
    pub timeline: u32,
    pub slot: String,
    /// The slot's output plugin (`figoutput` or `pgoutput`).
    pub plugin: String,
    /// The end LSN of the last durable commit: every transaction with `end_lsn` at or below it is stored.
    pub commit_end_lsn: Lsn,
}

impl Checkpoint {
    /// Whether `next` may replace `self` (the stored one): same source, and not behind. Returns the
    /// checkpoint to store: `next`, or `self` when `next` is older (a repeated batch).
    pub(crate) fn successor<'a>(
        stored: Option<&'a Checkpoint>,
        next: &'a Checkpoint,
    ) -> Result<&'a Checkpoint, SinkError> {
        let Some(stored) = stored else {
            return Ok(next);
        };
        let mismatch =
            |field: &'static str, stored_v: String, offered: String| SinkError::SourceMismatch {
                field,
                stored: stored_v,
                offered,
            };
        if stored.system_id != next.system_id {
            return Err(mismatch(
                "system identifier",
                stored.system_id.to_string(),
                next.system_id.to_string(),
            ));
        }
        if stored.slot != next.slot {
            return Err(mismatch("slot", stored.slot.clone(), next.slot.clone()));
        }
        if stored.plugin != next.plugin {
            return Err(mismatch(
                "plugin",
                stored.plugin.clone(),
                next.plugin.clone(),
            ));
        }
        if next.commit_end_lsn < stored.commit_end_lsn {
            return Ok(stored);
        }
        if next.timeline < stored.timeline {
            return Err(mismatch(
                "timeline",
                stored.timeline.to_string(),
                next.timeline.to_string(),
            ));
        }
        Ok(next)
    }
}

/// Checks what every sink checks before storing a batch: order, and that the checkpoint covers it.
/// Returns the index of the first transaction the stored checkpoint does not cover yet.
pub(crate) fn check_batch(
    batch: &[Transaction],
    stored: Option<&Checkpoint>,
    checkpoint: &Checkpoint,
) -> Result<usize, SinkError> {
    for pair in batch.windows(2) {
        if pair[1].end_lsn <= pair[0].end_lsn {
            return Err(SinkError::OutOfOrder {
                previous_end_lsn: pair[0].end_lsn,
                next_end_lsn: pair[1].end_lsn,
            });
        }
    }
    if let Some(last) = batch.last() {
        if last.end_lsn > checkpoint.commit_end_lsn {
            return Err(SinkError::CheckpointBehindBatch {
                checkpoint: checkpoint.commit_end_lsn,
                end_lsn: last.end_lsn,
            });
        }
    }
    let covered = stored.map_or(Lsn::INVALID, |c| c.commit_end_lsn);
    let skip = if stored.is_some() {
        batch.iter().take_while(|t| t.end_lsn <= covered).count()
    } else {
        0
    };
    Ok(skip)
}

/// Checks what every sink checks before streaming a large transaction (as [`check_batch`] for a
/// batch of it alone). Returns whether the stored checkpoint already covers it (then it is skipped).
pub(crate) fn check_large(
    head: &TransactionHead,
    stored: Option<&Checkpoint>,
    checkpoint: &Checkpoint,
) -> Result<bool, SinkError> {
    if head.end_lsn > checkpoint.commit_end_lsn {
        return Err(SinkError::CheckpointBehindBatch {
            checkpoint: checkpoint.commit_end_lsn,
            end_lsn: head.end_lsn,
        });
    }
    Ok(stored.is_some_and(|c| head.end_lsn <= c.commit_end_lsn))
}

/// What kind of failure a [`SinkError`] is, so the runtime decides by kind, not by parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// The storage failed (disk full, permissions, I/O): fix the environment; retrying the same batch
    /// is safe because nothing of it was stored.
    Storage,
    /// The batch breaks the pipeline's promises (order, shapes, unknown relation): a bug upstream;
    /// retrying the same batch fails the same way.
    InvalidBatch,
    /// The data cannot be applied as the source sent it (no key to match on, unresolvable unchanged
    /// TOAST): an operator decision is needed (a primary key, REPLICA IDENTITY FULL, a re-snapshot).
    NeedsOperator,
    /// The sink holds another source's data or a newer format: use another sink target.
    WrongTarget,
    /// The pipeline could not hand over the rest of a streamed transaction ([`Sink::write_large`]);
    /// nothing of it was stored, and the pipeline's own error says what to do.
    Upstream,
    /// The request is early: the sink has not reached the stream position it needs yet (a re-copy
    /// waiting for the stream); asking again later succeeds.
    NotYet,
    /// SQLite refuses the statement itself (a name it reserves, a value it cannot store): retrying
    /// fails the same way; inside a stream write it marks the table out of sync instead.
    Rejected,
}

/// Everything that can go wrong in a sink. Each message says what failed, why, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "SQLite sink {path}: {what} failed: {source}; nothing of this batch was stored; {}",
        sqlite_advice(source)
    )]
    Sqlite {
        path: PathBuf,
        what: String,
        #[source]
        source: rusqlite::Error,
    },

    #[error("sink file {path}: {what} failed: {source}; check free disk space and permissions, then restart (the batch is replayed from the checkpoint)")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("transactions handed to the sink out of commit order (end LSN {next_end_lsn} after {previous_end_lsn}); this is a pipeline bug: report it with the log")]
    OutOfOrder {
        previous_end_lsn: Lsn,
        next_end_lsn: Lsn,
    },

    #[error("checkpoint {checkpoint} does not cover the batch's last transaction (end LSN {end_lsn}); this is a pipeline bug: report it with the log")]
    CheckpointBehindBatch { checkpoint: Lsn, end_lsn: Lsn },

    #[error("change {commit_lsn}#{ordinal} on {schema}.{table} (relid {relid}) comes without a relation definition; this is a pipeline bug: report it with the log")]
    UnknownRelation {
        relid: u32,
        schema: String,
        table: String,
        commit_lsn: Lsn,
        ordinal: u32,
    },

    #[error("change {commit_lsn}#{ordinal} on {schema}.{table}: {which} has {got} values but the relation has {expected} columns ({key_columns} key columns); this is a decoder or pipeline bug: report it with the log")]
    ValueCount {
        schema: String,
        table: String,
        which: &'static str,
        expected: usize,
        key_columns: usize,
        got: usize,
        commit_lsn: Lsn,
        ordinal: u32,
    },

    #[error("{op} on {schema}.{table} at {commit_lsn}#{ordinal} cannot be applied: the table has no primary key and the old row was not sent; the table is marked out of sync and the other tables go on; give it a primary key, or run ALTER TABLE {schema}.{table} REPLICA IDENTITY FULL on the source, then resync it (`fig-receiver resync {schema}.{table}`; `run` retries by itself)")]
    NoKey {
        op: &'static str,
        schema: String,
        table: String,
        commit_lsn: Lsn,
        ordinal: u32,
    },

    #[error("update on {schema}.{table} at {commit_lsn}#{ordinal}: column {column} is unchanged TOAST and the sink has no earlier value for the row, so it cannot be filled without inventing one; the table is marked out of sync and a resync repairs it (`run` re-copies it by itself; or `fig-receiver resync {schema}.{table}`)")]
    UnresolvedToast {
        schema: String,
        table: String,
        column: String,
        commit_lsn: Lsn,
        ordinal: u32,
    },

    #[error("event {commit_lsn}#{ordinal} is already stored but its transaction is not covered by the checkpoint; two transactions share a commit LSN or ordinals repeat: a decoder or pipeline bug, report it with the log")]
    DuplicateEvent { commit_lsn: Lsn, ordinal: u32 },

    #[error("the sink holds data from another source: stored {field} {stored}, offered {offered}; write to a new sink target, or move the old one aside and re-snapshot deliberately")]
    SourceMismatch {
        field: &'static str,
        stored: String,
        offered: String,
    },

    #[error("LSN {lsn} is beyond what the SQLite sink stores (2^63); this cannot come from a real server: report it with the log")]
    LsnOutOfRange { lsn: Lsn },

    #[error("source tables {first} and {second} would both be mirrored as SQLite table \"{mirror}\" (SQLite compares names without ASCII case, and a mirror is named schema.table); {second} is not mirrored: rename one of them in the source (then `fig-receiver resync` the renamed one) or exclude one from the tables to replicate")]
    MirrorNameCollision {
        mirror: String,
        first: String,
        second: String,
    },

    #[error("source table {table} has columns {first} and {second}, whose names differ only in ASCII case; SQLite compares column names without case, so no mirror can hold both: {table} is not mirrored (its changes are kept in the history); rename one of the columns in the source, then `fig-receiver resync {table}`, or exclude the table from the tables to replicate")]
    ColumnNameCollision {
        table: String,
        first: String,
        second: String,
    },

    #[error("another fig-receiver is writing the sink {path} (pid {holder}); two writers would interleave their batches: stop the other one first, or give this one its own sink")]
    Locked { path: PathBuf, holder: String },

    #[error("sink file {path} was written by a newer fig-receiver (format {found}, this one knows up to {supported}); upgrade fig-receiver or write to a new file")]
    NewerFormat {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("checkpoint file {path} is unreadable ({reason}); restore it from a backup, or remove it together with the data file to start over with a snapshot")]
    BadCheckpoint { path: PathBuf, reason: String },

    #[error("rendered rows of {table} were handed to a sink that renders none; this is a pipeline bug: report it with the log")]
    NotRendering { table: String },

    #[error("the pipeline stopped handing over transaction {commit_lsn} midway ({reason}); nothing of it was stored")]
    Upstream { commit_lsn: Lsn, reason: String },

    #[error("schema change on {table} ({changes}) and its policy is `pause`: the table stops here, nothing after it is stored or acknowledged; review the change ({detail}), then run again with --accept-schema-change {table} (sink {path})")]
    SchemaChangePaused {
        table: String,
        changes: String,
        detail: String,
        path: PathBuf,
    },

    #[error("the history row {commit_lsn}#{ordinal} of {table} cannot be replayed ({reason}); the sink file was changed by hand or is damaged: restore it from a backup, or start a new sink")]
    BadHistory {
        table: String,
        commit_lsn: Lsn,
        ordinal: u32,
        reason: String,
    },

    #[error("the re-copy of {table} was read at {position}, but the sink holds the stream only up to {checkpoint}: it is swapped in once the stream has reached {position} (is a receiver running on this sink? `fig-receiver resync` starts one when none is)")]
    ResyncAhead {
        table: String,
        position: Lsn,
        checkpoint: String,
    },

    #[error("the re-copy of {table} was replaced by another re-copy of it begun since (the `resync` command beside `run`'s own re-copier?); this one stops, the other goes on")]
    ResyncSuperseded { table: String },

    #[error("the re-copy of {table} was read under that name, but the table is now {now}: it is copied again under its new name")]
    ResyncRenamed { table: String, now: String },

    #[error("{what} needs a sink that keeps the tables' state (SQLite); a JSON Lines file cannot replace a table's rows in place: use `fig-receiver snapshot` into a new JSON Lines target")]
    NeedsState { what: String },

    #[error("JSON Lines file {path} is {len} bytes but its checkpoint covers {covered}: it was truncated or replaced; restore it, or remove {path} and its .checkpoint to start over with a snapshot")]
    DataFileShorter {
        path: PathBuf,
        len: u64,
        covered: u64,
    },
}

impl SinkError {
    pub fn kind(&self) -> SinkErrorKind {
        match self {
            SinkError::Sqlite { source, .. } if !is_storage_failure(source) => {
                SinkErrorKind::Rejected
            }
            SinkError::Sqlite { .. } | SinkError::Io { .. } => SinkErrorKind::Storage,
            SinkError::OutOfOrder { .. }
            | SinkError::CheckpointBehindBatch { .. }
            | SinkError::UnknownRelation { .. }
            | SinkError::ValueCount { .. }
            | SinkError::DuplicateEvent { .. }
            | SinkError::LsnOutOfRange { .. }
            | SinkError::NotRendering { .. } => SinkErrorKind::InvalidBatch,
            SinkError::NoKey { .. }
            | SinkError::UnresolvedToast { .. }
            | SinkError::MirrorNameCollision { .. }
            | SinkError::ColumnNameCollision { .. }
            | SinkError::SchemaChangePaused { .. } => SinkErrorKind::NeedsOperator,
            SinkError::SourceMismatch { .. }
            | SinkError::NewerFormat { .. }
            | SinkError::Locked { .. }
            | SinkError::BadCheckpoint { .. }
            | SinkError::DataFileShorter { .. } => SinkErrorKind::WrongTarget,
            SinkError::Upstream { .. } => SinkErrorKind::Upstream,
            SinkError::BadHistory { .. } => SinkErrorKind::WrongTarget,
            SinkError::ResyncAhead { .. } => SinkErrorKind::NotYet,
            SinkError::NeedsState { .. } => SinkErrorKind::WrongTarget,
            SinkError::ResyncSuperseded { .. } | SinkError::ResyncRenamed { .. } => {
                SinkErrorKind::Rejected
            }
        }
    }
}

/// What to do about a SQLite failure: a storage failure may pass once the environment is fixed; a
/// statement SQLite refuses fails the same way on every restart.
fn sqlite_advice(e: &rusqlite::Error) -> &'static str {
    match is_storage_failure(e) {
        true => "check free disk space and file permissions, then restart (the batch is replayed from the checkpoint)",
        false => "SQLite refuses the statement, and a restart would fail the same way: a source name or value the SQLite sink cannot hold, or a bug; report it with the log",
    }
}

/// Whether a SQLite failure is the storage's (disk, I/O, memory, locks, a damaged or unwritable
/// file), which a retry after the environment is fixed can get past, rather than a statement
/// SQLite refuses, which fails the same way every time.
/// A file operation's failure, naming the file and what was being done with it.
pub(crate) fn io_err<'a>(
    path: &'a std::path::Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> SinkError + 'a {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

pub(crate) fn is_storage_failure(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(
            C::Unknown
            | C::ConstraintViolation
            | C::TypeMismatch
            | C::TooBig
            | C::ParameterOutOfRange
            | C::ApiMisuse
            | C::SchemaChanged,
        ) => false,
        // Other codes (full, I/O, busy, locked, out of memory, read-only, corrupt…), and failures
        // that are not SQLite's own (a file that cannot be opened).
        _ => !matches!(
            e,
            rusqlite::Error::InvalidQuery
                | rusqlite::Error::InvalidParameterCount(..)
                | rusqlite::Error::InvalidColumnType(..)
        ),
    }
}

/// A flagged schema change of a table whose policy is `pause` stops the write: it is notified here
/// (the write rolls back, so nothing after it would) and becomes [`SinkError::SchemaChangePaused`].
pub(crate) fn pause_check(
    watch: Option<&crate::drift::Watch>,
    change: &crate::drift::SchemaChange,
    sink: &std::path::Path,
) -> Result<(), SinkError> {
    match watch {
        Some(w) if w.pauses(change) => {
            w.notifier.notify(change);
            Err(SinkError::SchemaChangePaused {
                table: change.name(),
                changes: change
                    .changes
                    .iter()
                    .map(|c| c.kind())
                    .collect::<Vec<_>>()
                    .join(", "),
                detail: change.to_json(),
                path: sink.to_path_buf(),
            })
        }
        _ => Ok(()),
    }
}

/// Positions of a relation's key columns, in relation order.
pub(crate) fn key_positions(rel: &Relation) -> Vec<usize> {
    rel.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.key)
        .map(|(i, _)| i)
        .collect()
}

/// What `before` holds, by its length (see [`Transaction`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BeforeShape {
    /// The key columns only, in relation order.
    Key,
    /// The whole old row.
    Full,
}

pub(crate) fn before_shape(
    rel: &Relation,
    n_keys: usize,
    change: &Change,
    before: &[Value],
) -> Result<BeforeShape, SinkError> {
    if before.len() == rel.columns.len() {
        Ok(BeforeShape::Full)
    } else if before.len() == n_keys && n_keys > 0 {
        Ok(BeforeShape::Key)
    } else {
        Err(value_count(rel, n_keys, change, "before", before.len()))
    }
}

pub(crate) fn value_count(
    rel: &Relation,
    n_keys: usize,
    change: &Change,
    which: &'static str,
    got: usize,
) -> SinkError {
    SinkError::ValueCount {
        schema: rel.schema.clone(),
        table: rel.table.clone(),
        which,
        expected: rel.columns.len(),
        key_columns: n_keys,
        got,
        commit_lsn: change.commit_lsn,
        ordinal: change.ordinal,
    }
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Builders for test transactions.
    use super::*;
    use crate::model::{Column, Op};

    pub fn col(name: &str, type_name: &str, type_oid: u32, key: bool) -> Column {
        Column {
            name: name.into(),
            type_name: type_name.into(),
            type_oid,
            key,
            not_null: key,
            attnum: None,
        }
    }

    pub fn rel(relid: u32, schema: &str, table: &str, columns: Vec<Column>) -> Arc<Relation> {
        Arc::new(Relation {
            relid,
            schema: schema.into(),
            table: table.into(),
            columns,
        })
    }

    /// `accounts(id int8 key, name text, balance numeric)`.
    pub fn accounts() -> Arc<Relation> {
        rel(
            16384,
            "public",
            "accounts",
            vec![
                col("id", "bigint", 20, true),
                col("name", "text", 25, false),
                col("balance", "numeric", 1700, false),
            ],
        )
    }

    /// [`accounts`] as it evolves: then with a `note text` column added, then with `name` dropped.
    pub fn accounts_versions() -> [Arc<Relation>; 3] {
        let v1 = accounts();
        let mut v2 = (*v1).clone();
        v2.columns.push(col("note", "text", 25, false));
        let mut v3 = v2.clone();
        v3.columns.retain(|c| c.name != "name");
        [v1, Arc::new(v2), Arc::new(v3)]
    }

    /// Gives `t` the DDL statement `text` behind the definition of its first change's relation.
    pub fn explain(t: &mut Transaction, text: &str) {
        t.ddl.push(RelationDdl {
            relid: t.changes[0].relid,
            from_ordinal: 0,
            text: Arc::from(text),
        });
    }

    pub fn change(
        rel: &Relation,
        op: Op,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> Change {
        Change {
            op,
            relid: rel.relid,
            schema: rel.schema.clone(),
            table: rel.table.clone(),
            after,
            before,
            commit_lsn: Lsn::INVALID,
            ordinal: 0,
            xid: 0,
            commit_time: 0,
            partition: None,
        }
    }

    /// A transaction at `lsn` (commit LSN `lsn`, end LSN `lsn + 8`) numbering its changes from 0.
    pub fn tx(lsn: u64, rels: &[&Arc<Relation>], changes: Vec<Change>) -> Transaction {
        let xid = (lsn % 1_000_000) as u32;
        let commit_time = 817_000_000_000_000 + lsn as i64;
        let changes = changes
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c.commit_lsn = Lsn(lsn);
                c.ordinal = i as u32;
                c.xid = xid;
                c.commit_time = commit_time;
                c
            })
            .collect();
        Transaction {
            xid,
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 8),
            commit_time,
            changes,
            relations: rels.iter().map(|r| Arc::clone(r)).collect(),
            relation_changes: vec![],
            unchanged_toast: vec![],
            ddl: vec![],
            messages: vec![],
        }
    }

    /// `t` as the pipeline streams it to [`Sink::write_large`]: each relation's definition before
    /// the first change that uses it.
    pub fn pieces(t: &Transaction) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut sent: HashMap<u32, Arc<Relation>> = HashMap::new();
        let mut messages = t.messages.iter().peekable();
        for (change, rel) in t.changes_with_relations().unwrap() {
            while let Some(m) = messages.next_if(|m| m.ordinal <= change.ordinal) {
                out.push(Piece::Message(m.clone()));
            }
            if !sent.get(&rel.relid).is_some_and(|s| Arc::ptr_eq(s, rel)) {
                if let Some(text) = t.ddl_for(rel.relid, change.ordinal) {
                    out.push(Piece::Ddl {
                        relid: rel.relid,
                        text: Arc::clone(text),
                    });
                }
                sent.insert(rel.relid, Arc::clone(rel));
                out.push(Piece::Relation(Arc::clone(rel)));
            }
            out.push(Piece::Change {
                change: change.clone(),
                unchanged_toast: t.toast_gaps(change.ordinal).to_vec(),
            });
        }
        out.extend(messages.cloned().map(Piece::Message));
        out
    }

    /// The head of a transaction made by [`tx`] at `lsn`.
    pub fn head(lsn: u64) -> TransactionHead {
        tx(lsn, &[], vec![]).head()
    }

    /// `n` inserts into `accounts()` (ids `0..n`) as [`Sink::write_large`] reads them, made one at
    /// a time; with `fail_at`, an `Err` instead of the change with that ordinal (the pipeline failing
    /// midway).
    pub fn streamed_inserts(
        lsn: u64,
        n: u32,
        fail_at: Option<u32>,
    ) -> impl Iterator<Item = Result<Piece, SinkError>> {
        let r = accounts();
        let h = head(lsn);
        std::iter::once(Ok(Piece::Relation(Arc::clone(&r)))).chain((0..n).map(move |i| {
            if fail_at == Some(i) {
                return Err(SinkError::Upstream {
                    commit_lsn: h.commit_lsn,
                    reason: "the test's iterator fails here".into(),
                });
            }
            let mut c = ins(&r, vec![Value::Int(i64::from(i)), text("x"), num("1.00")]);
            c.commit_lsn = h.commit_lsn;
            c.ordinal = i;
            c.xid = h.xid;
            c.commit_time = h.commit_time;
            Ok(Piece::Change {
                change: c,
                unchanged_toast: vec![],
            })
        }))
    }

    pub fn ckpt(end: u64) -> Checkpoint {
        Checkpoint {
            system_id: 7_300_000_000_000_000_001,
            timeline: 1,
            slot: "fig".into(),
            plugin: "figoutput".into(),
            commit_end_lsn: Lsn(end),
        }
    }

    pub fn ins(rel: &Relation, after: Vec<Value>) -> Change {
        change(rel, Op::Insert, None, Some(after))
    }

    pub fn upd(rel: &Relation, before: Option<Vec<Value>>, after: Vec<Value>) -> Change {
        change(rel, Op::Update, before, Some(after))
    }

    pub fn del(rel: &Relation, before: Vec<Value>) -> Change {
        change(rel, Op::Delete, Some(before), None)
    }

    pub fn trunc(rel: &Relation) -> Change {
        change(rel, Op::Truncate, None, None)
    }

    pub fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    pub fn num(s: &str) -> Value {
        Value::Numeric(s.into())
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;

    #[test]
    fn rows_at_hand_come_in_bounded_batches_and_an_error_after_the_rows_before_it() {
        let n = RowsAtHand::<std::iter::Empty<_>>::BATCH + 5;
        let rows =
            (0..n as i64)
                .map(|i| Ok(vec![Value::Int(i)]))
                .chain([Err(SinkError::Upstream {
                    commit_lsn: Lsn(0),
                    reason: "broke".into(),
                })]);
        let mut b = RowsAtHand::new(rows);
        let mut sizes = Vec::new();
        let mut last = None;
        while let Some(batch) = b.next_batch() {
            match batch {
                Ok(rows) => {
                    sizes.push(rows.len());
                    last = rows.last().cloned();
                }
                Err(e) => {
                    assert!(e.to_string().contains("broke"), "{e}");
                    sizes.push(0);
                }
            }
        }
        assert_eq!(sizes, [n - 5, 5, 0]);
        assert_eq!(last, Some(vec![Value::Int(n as i64 - 1)]));
    }

    #[test]
    fn successor_refuses_another_source_and_keeps_the_newer_checkpoint() {
        let a = ckpt(100);
        let mut other = ckpt(200);
        other.slot = "other".into();
        let e = Checkpoint::successor(Some(&a), &other).unwrap_err();
        assert_eq!(e.kind(), SinkErrorKind::WrongTarget);
        assert!(e.to_string().contains("slot"), "{e}");
        assert_eq!(Checkpoint::successor(Some(&a), &ckpt(50)).unwrap(), &a);
        assert_eq!(
            Checkpoint::successor(Some(&a), &ckpt(150)).unwrap(),
            &ckpt(150)
        );
        assert_eq!(Checkpoint::successor(None, &ckpt(1)).unwrap(), &ckpt(1));
    }

    #[test]
    fn check_batch_skips_covered_and_refuses_disorder() {
        let r = accounts();
        let t1 = tx(100, &[&r], vec![]);
        let t2 = tx(200, &[&r], vec![]);
        assert_eq!(
            check_batch(&[t1.clone(), t2.clone()], Some(&ckpt(108)), &ckpt(208)).unwrap(),
            1
        );
        assert_eq!(
            check_batch(&[t1.clone(), t2.clone()], None, &ckpt(208)).unwrap(),
            0
        );
        assert!(matches!(
            check_batch(&[t2.clone(), t1.clone()], None, &ckpt(208)),
            Err(SinkError::OutOfOrder { .. })
        ));
        assert!(matches!(
            check_batch(&[t1, t2], None, &ckpt(200)),
            Err(SinkError::CheckpointBehindBatch { .. })
        ));
    }

    #[test]
    fn relation_changes_apply_from_their_ordinal() {
        let r1 = accounts();
        let mut r2 = (*r1).clone();
        r2.columns.push(testkit::col("note", "text", 25, false));
        let r2 = Arc::new(r2);
        let mut t = tx(
            100,
            &[&r1],
            vec![
                ins(&r1, vec![Value::Int(1), text("a"), num("1")]),
                ins(&r2, vec![Value::Int(2), text("b"), num("2"), text("n")]),
            ],
        );
        t.relation_changes.push(RelationChange {
            from_ordinal: 1,
            relation: Arc::clone(&r2),
        });
        let walked = t.changes_with_relations().unwrap();
        assert_eq!(walked[0].1.columns.len(), 3);
        assert_eq!(walked[1].1.columns.len(), 4);
    }
}
