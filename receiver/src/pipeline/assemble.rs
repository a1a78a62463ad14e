//! Transaction assembly: decoded events in stream order in, whole committed transactions out, in
//! commit order. Nothing of a transaction leaves here before its commit, and nothing of an aborted
//! transaction (or of a rolled-back subtransaction of a streamed one) ever leaves.
//!
//! ```text
//! Begin … Row … Commit ─────────────────────────────▶ Committed
//! StreamStart(x) … Row(sub) … StreamStop  (repeats, interleaved with other transactions)
//! StreamCommit(x) ──────────────────────────────────▶ Committed
//! StreamAbort(x, x) drops x;  StreamAbort(x, sub) drops sub's items
//! ```
//!
//! Memory stays bounded for transactions of any size: a transaction's items are kept in memory up
//! to `spill_bytes`, then appended to a temporary file (MessagePack, one item per record) and read
//! back, in order, when the transaction is handed on. Relation definitions are session state and
//! are applied when they arrive, whatever transaction carried them.

use crate::model::{Event, Incoming, Lsn, Message, Op, Relation};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AssembleError {
    #[error(
        "the stream is out of order: {0} (the receiver reconnects and resumes from its checkpoint)"
    )]
    OutOfOrder(String),
    #[error("spilling a large transaction to {path}: {source} (check free space and permissions of the spill directory)")]
    Spill {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading back a spilled transaction: {0}")]
    SpillRead(String),
}

type Result<T> = std::result::Result<T, AssembleError>;

/// One element of a committed transaction, in the order the server sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    Row {
        op: Op,
        relid: u32,
        before: Option<Vec<Incoming>>,
        after: Option<Vec<Incoming>>,
    },
    Truncate {
        relids: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    Ddl {
        lsn: Lsn,
        payload: String,
    },
    /// A definition that took effect at this point of the transaction.
    Relation(Relation),
    /// A logical message: transactional ones at their place in their transaction; a
    /// non-transactional one is the only item of a unit of its own.
    Message(Message),
}

/// A committed transaction, ready for TOAST fill and the sink.
#[derive(Debug)]
pub struct Committed {
    pub xid: u32,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: i64,
    pub items: Items,
}

/// The items of a transaction: in memory, or partly in a spill file.
#[derive(Debug)]
pub struct Items {
    spilled: Option<Spill>,
    memory: Vec<(u32, Item)>,
    aborted_subxids: HashSet<u32>,
}

impl Items {
    fn new() -> Self {
        Items {
            spilled: None,
            memory: Vec::new(),
            aborted_subxids: HashSet::new(),
        }
    }

    /// Number of items (including any in rolled-back subtransactions, which iteration skips).
    pub fn len_hint(&self) -> u64 {
        self.spilled.as_ref().map_or(0, |s| s.count) + self.memory.len() as u64
    }

    /// Iterates in order; spilled items are read back lazily, so memory stays bounded.
    pub fn read(self) -> Result<impl Iterator<Item = Result<Item>>> {
        let aborted = self.aborted_subxids;
        let from_file: Box<dyn Iterator<Item = Result<(u32, Item)>>> = match self.spilled {
            None => Box::new(std::iter::empty()),
            Some(spill) => Box::new(spill.read()?),
        };
        let all = from_file.chain(self.memory.into_iter().map(Ok));
        Ok(all.filter_map(move |r| match r {
            Ok((sub, _)) if aborted.contains(&sub) => None,
            Ok((_, item)) => Some(Ok(item)),
            Err(e) => Some(Err(e)),
        }))
    }
}

#[derive(Debug)]
struct Spill {
    path: PathBuf,
    writer: BufWriter<File>,
    count: u64,
}

impl Spill {
    fn create(dir: &std::path::Path, xid: u32) -> Result<Spill> {
        let file = tempfile::Builder::new()
            .prefix(&format!("fig-txn-{xid}-"))
            .tempfile_in(dir)
            .map_err(|source| AssembleError::Spill {
                path: dir.to_path_buf(),
                source,
            })?;
        // Unlinked at once: the data lives as long as the handle, and a crash leaves no file behind.
        let (file, path) = file.keep().map_err(|e| AssembleError::Spill {
            path: dir.to_path_buf(),
            source: e.error,
        })?;
        let _ = std::fs::remove_file(&path);
        Ok(Spill {
            path,
            writer: BufWriter::with_capacity(1 << 20, file),
            count: 0,
        })
    }

    fn append(&mut self, entry: &(u32, Item)) -> Result<()> {
        rmp_serde::encode::write(&mut self.writer, entry).map_err(|e| AssembleError::Spill {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        self.count += 1;
        Ok(())
    }

    fn read(self) -> Result<impl Iterator<Item = Result<(u32, Item)>>> {
        let path = self.path.clone();
        let io = |source| AssembleError::Spill {
            path: path.clone(),
            source,
        };
        let mut file = self.writer.into_inner().map_err(|e| io(e.into_error()))?;
        file.flush().map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut left = self.count;
        Ok(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            Some(
                rmp_serde::decode::from_read(&mut reader)
                    .map_err(|e| AssembleError::SpillRead(e.to_string())),
            )
        }))
    }
}

/// A transaction being received.
struct Open {
    xid: u32,
    items: Items,
    bytes: usize,
}

impl Open {
    fn new(xid: u32) -> Self {
        Open {
            xid,
            items: Items::new(),
            bytes: 0,
        }
    }
}

/// When a transaction's items leave memory for a spill file.
struct SpillPolicy {
    dir: PathBuf,
    bytes: usize,
}

impl SpillPolicy {
    fn add(&self, open: &mut Open, sub: u32, item: Item) -> Result<()> {
        open.bytes += approx_size(&item);
        open.items.memory.push((sub, item));
        if open.bytes > self.bytes {
            let spill = match open.items.spilled.as_mut() {
                Some(s) => s,
                None => open
                    .items
                    .spilled
                    .insert(Spill::create(&self.dir, open.xid)?),
            };
            // Taken, not drained: the buffer itself is freed too, so memory is back to nothing.
            for entry in std::mem::take(&mut open.items.memory) {
                spill.append(&entry)?;
            }
            open.bytes = 0;
        }
        Ok(())
    }
}

/// The transactions being received: the current one, and those streamed in blocks.
#[derive(Default)]
struct Buffers {
    current: Option<Open>,
    /// By top-level xid.
    streamed: HashMap<u32, Open>,
    in_stream: Option<u32>,
}

impl Buffers {
    /// The transaction an item belongs to (the stream block's, or the open one) and the
    /// (sub)transaction it is tagged with.
    fn target(&mut self, sub: Option<u32>) -> Option<(u32, &mut Open)> {
        match self.in_stream {
            Some(top) => self.streamed.get_mut(&top).map(|o| (sub.unwrap_or(top), o)),
            None => self.current.as_mut().map(|o| (o.xid, o)),
        }
    }

    fn require_target(&mut self, sub: Option<u32>) -> Result<(u32, &mut Open)> {
        self.target(sub)
            .ok_or_else(|| AssembleError::OutOfOrder("a change outside any transaction".into()))
    }
}

pub struct Assembler {
    spill: SpillPolicy,
    bufs: Buffers,
    relations: HashMap<u32, Relation>,
}

impl Assembler {
    /// `spill_bytes`: how much of one transaction is kept in memory before it goes to `spill_dir`.
    pub fn new(spill_dir: PathBuf, spill_bytes: usize) -> Self {
        Assembler {
            spill: SpillPolicy {
                dir: spill_dir,
                bytes: spill_bytes,
            },
            bufs: Buffers::default(),
            relations: HashMap::new(),
        }
    }

    /// The latest definition of a relation in this session.
    pub fn relation(&self, relid: u32) -> Option<&Relation> {
        self.relations.get(&relid)
    }

    /// True between a BEGIN and its COMMIT (a transaction sent whole, not streamed).
    pub fn in_transaction(&self) -> bool {
        self.bufs.current.is_some()
    }

    /// True while a transaction has begun and not yet committed or aborted: then the server's WAL
    /// position must not be confirmed, even when the stream is quiet.
    pub fn in_flight(&self) -> bool {
        self.bufs.current.is_some() || !self.bufs.streamed.is_empty()
    }

    /// Feeds one event; returns a transaction when this event committed one.
    pub fn push(&mut self, event: Event) -> Result<Option<Committed>> {
        let bufs = &mut self.bufs;
        match event {
            Event::Begin { xid, .. } => {
                if bufs.current.is_some() {
                    return Err(AssembleError::OutOfOrder(format!(
                        "BEGIN of {xid} inside another transaction"
                    )));
                }
                bufs.current = Some(Open::new(xid));
            }
            Event::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                let open = bufs
                    .current
                    .take()
                    .ok_or_else(|| AssembleError::OutOfOrder("COMMIT without BEGIN".into()))?;
                return Ok(Some(Committed {
                    xid: open.xid,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                    items: open.items,
                }));
            }
            Event::Relation(rel) if rel.schema == crate::model::EXTENSION_SCHEMA => {
                // figoutput's own bookkeeping (a publication FOR ALL TABLES sends it): known, so
                // its rows can be told apart below, and never streamed, as it is never copied.
                self.relations.insert(rel.relid, rel);
            }
            Event::Row { relid, .. } if extension_table(&self.relations, relid) => {}
            Event::Relation(rel) => {
                self.relations.insert(rel.relid, rel.clone());
                // Recorded where it took effect, when it arrived inside a transaction.
                if let Some((sub, open)) = bufs.target(None) {
                    self.spill.add(open, sub, Item::Relation(rel))?;
                }
            }
            Event::Row {
                xid,
                op,
                relid,
                before,
                after,
            } => {
                let (sub, open) = bufs.require_target(xid)?;
                self.spill.add(
                    open,
                    sub,
                    Item::Row {
                        op,
                        relid,
                        before,
                        after,
                    },
                )?;
            }
            Event::Truncate {
                xid,
                mut relids,
                cascade,
                restart_identity,
            } => {
                relids.retain(|&r| !extension_table(&self.relations, r));
                if relids.is_empty() {
                    return Ok(None);
                }
                let (sub, open) = bufs.require_target(xid)?;
                self.spill.add(
                    open,
                    sub,
                    Item::Truncate {
                        relids,
                        cascade,
                        restart_identity,
                    },
                )?;
            }
            Event::Ddl { xid, lsn, payload } => {
                let (sub, open) = bufs.require_target(xid)?;
                self.spill.add(open, sub, Item::Ddl { lsn, payload })?;
            }
            Event::Message {
                xid,
                lsn,
                transactional,
                prefix,
                content,
            } => {
                let message = Message {
                    lsn,
                    transactional,
                    prefix,
                    content,
                };
                if !transactional {
                    // Decoded in WAL order, so every transaction that committed before it has been
                    // sent already: its position is a safe place to resume from.
                    let mut items = Items::new();
                    items.memory.push((0, Item::Message(message)));
                    return Ok(Some(Committed {
                        xid: 0,
                        commit_lsn: lsn,
                        end_lsn: lsn,
                        commit_time: 0,
                        items,
                    }));
                }
                let (sub, open) = bufs.require_target(xid)?;
                self.spill.add(open, sub, Item::Message(message))?;
            }
            Event::StreamStart { xid } => {
                if bufs.in_stream.is_some() {
                    return Err(AssembleError::OutOfOrder(format!(
                        "STREAM START of {xid} inside another stream block"
                    )));
                }
                bufs.streamed.entry(xid).or_insert_with(|| Open::new(xid));
                bufs.in_stream = Some(xid);
            }
            Event::StreamStop => bufs.in_stream = None,
            Event::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    bufs.streamed.remove(&xid);
                } else if let Some(open) = bufs.streamed.get_mut(&xid) {
                    open.items.aborted_subxids.insert(subxid);
                    open.items.memory.retain(|(sub, _)| *sub != subxid);
                }
            }
            Event::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                let open = bufs.streamed.remove(&xid).ok_or_else(|| {
                    AssembleError::OutOfOrder(format!("STREAM COMMIT of {xid} never started"))
                })?;
                return Ok(Some(Committed {
                    xid,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                    items: open.items,
                }));
            }
        }
        Ok(None)
    }
}

/// An item's memory, to decide when to spill: its slot in the buffer plus each heap block it owns,
/// rounded up as the allocator hands blocks out (16-byte steps, an 8-byte header, 32 at least), so
/// that `spill_bytes` bounds real memory, not just the payload.
fn approx_size(item: &Item) -> usize {
    use crate::model::{Column, Value};
    use std::mem::size_of;
    fn block(len: usize) -> usize {
        if len == 0 {
            0
        } else {
            ((len + 8 + 15) & !15).max(32)
        }
    }
    fn value(v: &Value) -> usize {
        match v {
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => 0,
            Value::Numeric(s)
            | Value::Text(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Timestamp(s)
            | Value::Timestamptz(s)
            | Value::Uuid(s)
            | Value::Json(s)
            | Value::Enum(s)
            | Value::Other(s) => block(s.len()),
            Value::Bytes(b) => block(b.len()),
            Value::Array(a) => {
                block(a.len() * size_of::<Value>()) + a.iter().map(value).sum::<usize>()
            }
            Value::BoundedArray(b) => {
                block(size_of::<crate::model::Bounded>())
                    + block(b.lower.len() * size_of::<i32>())
                    + block(b.elements.len() * size_of::<Value>())
                    + b.elements.iter().map(value).sum::<usize>()
            }
        }
    }
    let tuple = |t: &Option<Vec<Incoming>>| {
        t.as_ref().map_or(0, |t| {
            block(t.len() * size_of::<Incoming>())
                + t.iter()
                    .map(|v| match v {
                        Incoming::Value(v) => value(v),
                        Incoming::UnchangedToast => 0,
                    })
                    .sum::<usize>()
        })
    };
    size_of::<(u32, Item)>()
        + match item {
            Item::Row { before, after, .. } => tuple(before) + tuple(after),
            Item::Ddl { payload, .. } => block(payload.len()),
            Item::Message(m) => block(m.prefix.len()) + block(m.content.len()),
            Item::Truncate { relids, .. } => block(relids.len() * size_of::<u32>()),
            Item::Relation(r) => {
                block(r.schema.len())
                    + block(r.table.len())
                    + block(r.columns.len() * size_of::<Column>())
                    + r.columns
                        .iter()
                        .map(|c| block(c.name.len()) + block(c.type_name.len()))
                        .sum::<usize>()
            }
        }
}

/// Whether `relid` is a table of figoutput's own schema ([`crate::model::EXTENSION_SCHEMA`]).
fn extension_table(relations: &HashMap<u32, Relation>, relid: u32) -> bool {
    relations
        .get(&relid)
        .is_some_and(|r| r.schema == crate::model::EXTENSION_SCHEMA)
}

#[cfg(test)]
mod tests;
