//! JSON Lines sink: one normalized event per line, to a file or to stdout.
//!
//! ```json
//! {"op":"update","schema":"public","table":"accounts","commit_lsn":"0/16B3748","ordinal":0,"xid":731,
//!  "commit_time":"2024-05-01T12:00:00.000123Z","before":{"id":1},"after":{"id":1,"name":"a"}}
//! ```
//!
//! Fields: `op` (`insert`, `update`, `delete`, `truncate`), `schema`, `table`, `commit_lsn` (`X/Y`
//! text), `ordinal`, `xid`, `commit_time` (RFC 3339, UTC, microseconds), `before` (key columns, or the
//! whole old row under `REPLICA IDENTITY FULL`; `null` when not sent), `after` (the new row; `null` for
//! delete and truncate), both objects keyed by column name with values spelled as in
//! [`crate::sink::json`]. (`commit_lsn`, `ordinal`) identifies an event. A change of a leaf
//! partition recorded under its partitioned root also has `"partition":"schema.leaf"`; a
//! `truncate` that has one emptied that partition only.
//!
//! **Unchanged TOAST.** This sink keeps no state, so [`Sink::current_row`] is always `None` and it
//! cannot fill an unchanged TOAST column the pipeline did not resolve ([`Transaction::unchanged_toast`]).
//! Such a column is left out of `after` and named in `"unchanged_toast":["col",…]` (present only when
//! not empty): the value did not change and is not repeated, rather than invented (DESIGN.md rule 5).
//!
//! **Durability.** For a file, [`Sink::write`] appends the batch, fsyncs it, then replaces the
//! checkpoint sidecar `PATH.checkpoint` atomically (write `PATH.checkpoint.tmp`, fsync, rename, fsync
//! the directory). The sidecar also records how many bytes of the file it covers. A crash between the
//! data fsync and the rename leaves lines the checkpoint does not cover; reopening cuts them off (they
//! are replayed from the slot), so the file itself holds every event exactly once. A reader tailing the
//! file live may have seen those lines before the crash and will see them again: for a live consumer
//! JSON Lines is at-least-once, so deduplicate by (`commit_lsn`, `ordinal`). The SQLite sink is exactly
//! once in every sense (data and checkpoint share one transaction).
//!
//! A transaction streamed with [`Sink::write_large`] is written out in 1 MB chunks as its pieces
//! arrive, then fsync'ed and checkpointed the same way; a failure midway cuts the file back to what
//! the stored checkpoint covers, so memory stays bounded and the file still never holds a part of a
//! transaction past its checkpoint.
//!
//! **Loads.** Snapshot loads are rendered outside the sink, each chunk on its own thread
//! ([`Sink::load_renderer`]), and appended in pieces that interleave with other chunks' pieces;
//! a chunk's last piece makes everything appended durable and moves the sidecar's `data_len`. A
//! load is whole only as a whole (between `load_start` and `load_end`), and is never resumed.
//! Incremental loads go whole through [`Sink::load_chunk`]: their cursor is stored with their lines.
//!
//! For stdout, durable means flushed; a checkpoint is kept only when a sidecar path is given
//! ([`JsonlSink::stdout`]), and what the reader on the other end of the pipe did with the lines is
//! beyond this sink: at-least-once at best. A batch goes out only once all of it is formatted, but a
//! large transaction goes out in chunks: if it fails midway, the lines already written stay written
//! and are written again when the transaction is replayed.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::{Change, Lsn, Op, Relation, Value};
use crate::sink::{
    before_shape, check_batch, check_large, json, key_positions, value_count, walk_pieces,
    BeforeShape, Checkpoint, Cursor, Load, LoadMode, LoadProgress, MessageAt, Piece, RenderRows,
    RowBatches, Sink, SinkError, Transaction, TransactionHead, Walked,
};

mod recopy;
pub mod requests;
pub use recopy::{Copied, Gate, Ticket};

/// The sidecar's format version.
const SIDECAR_FORMAT: u64 = 1;

enum Output {
    File {
        file: File,
        path: PathBuf,
        len: u64,
    },
    /// stdout, a pipe or a character device: written and flushed, never fsynced, cut or sized.
    Stream {
        out: Box<dyn Write + Send>,
        name: PathBuf,
    },
}

impl Output {
    fn stream_write(
        out: &mut (dyn Write + Send),
        name: &Path,
        text: &[u8],
        what: &'static str,
    ) -> Result<(), SinkError> {
        out.write_all(text).map_err(io_err(name, what))
    }
}

/// The JSON Lines sink. See the module documentation for the format and the durability rules.
pub struct JsonlSink {
    out: Output,
    /// `PATH.checkpoint` for a file; optional for stdout.
    sidecar: Option<PathBuf>,
    stored: Option<Checkpoint>,
    cursors: BTreeMap<String, Cursor>,
    /// Rows written by each load in progress, by table: loads of several tables run at once.
    loaded: HashMap<String, u64>,
    /// Schema drift: the policy and notifier, and the definitions seen by this process (a JSON Lines
    /// file keeps no schema history, so drift is measured from the first definition seen).
    drift: Option<Arc<crate::drift::Watch>>,
    seen: HashMap<u32, Arc<Relation>>,
    buf: String,
    /// The latest copy of each table in the file (initial copy or re-copy), as the sidecar keeps it.
    copied: Vec<Copied>,
    /// Re-copies to write at their stream position (`run` only; see [`recopy`]).
    gate: Option<Arc<Gate>>,
}

/// What the sidecar holds.
struct Sidecar {
    /// Bytes of the data file the checkpoint covers.
    data_len: u64,
    checkpoint: Option<Checkpoint>,
    /// Incremental sync cursors by `schema.table`, stored with the lines they cover.
    cursors: BTreeMap<String, Cursor>,
    /// The latest copy of each streamed table the file holds: which tables have one (a table that
    /// joined the stream later has none yet) and which partitions it read.
    copied: Vec<Copied>,
}

use crate::sink::io_err;

impl JsonlSink {
    /// `target` is a file path, or `-` for stdout (without a checkpoint).
    pub fn open(target: &str) -> Result<JsonlSink, SinkError> {
        if target == "-" {
            JsonlSink::stdout(None)
        } else {
            JsonlSink::open_file(target)
        }
    }

    /// The checkpoint sidecar of a data file: `PATH.checkpoint`.
    pub fn sidecar_path(path: &Path) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(".checkpoint");
        PathBuf::from(s)
    }

    /// Opens (creating if needed) a JSON Lines file. Bytes past what the stored checkpoint covers (a
    /// batch written but not checkpointed before a crash) are cut off; they will be replayed. A file
    /// that exists with data but without a sidecar is refused rather than overwritten or mixed into.
    pub fn open_file(path: impl AsRef<Path>) -> Result<JsonlSink, SinkError> {
        let path = path.as_ref().to_path_buf();
        if let Ok(meta) = fs::metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            let kind = meta.file_type();
            if kind.is_fifo() || kind.is_char_device() {
                // `jsonl:/dev/null`, a named pipe: a stream like stdout (no checkpoint can cover
                // what a reader already took).
                let out = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path, "opening the pipe or device"))?;
                return Ok(JsonlSink::stream(Box::new(out), path, None));
            }
        }
        let sidecar = JsonlSink::sidecar_path(&path);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // It holds a copy of the data: readable by its owner only (a new file; chmod widens).
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path, "opening the JSON Lines file"))?;
        let len = file
            .metadata()
            .map_err(io_err(&path, "reading the file's size"))?
            .len();
        let state = read_sidecar(&sidecar)?;
        let state = match state {
            Some(s) => s,
            None if len == 0 => {
                let s = Sidecar {
                    data_len: 0,
                    checkpoint: None,
                    cursors: BTreeMap::new(),
                    copied: Vec::new(),
                };
                write_sidecar(&sidecar, &s)?;
                s
            }
            None => {
                return Err(SinkError::BadCheckpoint {
                    path: sidecar,
                    reason: format!(
                        "it is missing while {} already holds {len} bytes, so which of them are durable is unknown; \
                         write to a new file, or move this one aside",
                        path.display()
                    ),
                })
            }
        };
        if len < state.data_len {
            return Err(SinkError::DataFileShorter {
                path,
                len,
                covered: state.data_len,
            });
        }
        if len > state.data_len {
            tracing::warn!(
                path = %path.display(),
                cut = len - state.data_len,
                "cutting off the end of the JSON Lines file that no checkpoint covers (a batch interrupted by a crash; it is replayed)"
            );
            file.set_len(state.data_len)
                .map_err(io_err(&path, "cutting off uncheckpointed bytes"))?;
            file.sync_all()
                .map_err(io_err(&path, "fsyncing the JSON Lines file"))?;
        }
        file.seek(SeekFrom::Start(state.data_len))
            .map_err(io_err(&path, "seeking to the end"))?;
        Ok(JsonlSink {
            out: Output::File {
                file,
                path,
                len: state.data_len,
            },
            sidecar: Some(sidecar),
            stored: state.checkpoint,
            cursors: state.cursors,
            loaded: HashMap::new(),
            drift: None,
            seen: HashMap::new(),
            buf: String::new(),
            copied: state.copied,
            gate: None,
        })
    }

    /// A new file for a re-copy's lines, written before they go into the real file at their
    /// position ([`recopy`]): created exclusively and private, without a sidecar (it is whole
    /// once the copy's `load_end` is in it, or thrown away).
    pub fn staging(path: impl AsRef<Path>) -> Result<JsonlSink, SinkError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path, "creating the re-copy's staging file"))?;
        let mut sink = JsonlSink::stream(Box::new(io::sink()), path.clone(), None);
        sink.out = Output::File { file, path, len: 0 };
        Ok(sink)
    }

    /// Writes the re-copies `gate` hands over at their stream positions (`run`'s writer only).
    pub fn follow_recopies(&mut self, gate: Arc<Gate>) {
        self.gate = Some(gate);
    }

    /// Writes to stdout; with `checkpoint`, keeps a checkpoint sidecar there (written after each flush).
    pub fn stdout(checkpoint: Option<PathBuf>) -> Result<JsonlSink, SinkError> {
        let (stored, cursors, copied) = match &checkpoint {
            Some(p) => read_sidecar(p)?
                .map_or_else(Default::default, |s| (s.checkpoint, s.cursors, s.copied)),
            None => Default::default(),
        };
        let mut sink = JsonlSink::stream(Box::new(io::stdout()), PathBuf::from("-"), checkpoint);
        sink.stored = stored;
        sink.cursors = cursors;
        sink.copied = copied;
        Ok(sink)
    }

    fn stream(out: Box<dyn Write + Send>, name: PathBuf, sidecar: Option<PathBuf>) -> JsonlSink {
        JsonlSink {
            out: Output::Stream { out, name },
            sidecar,
            stored: None,
            cursors: BTreeMap::new(),
            loaded: HashMap::new(),
            drift: None,
            seen: HashMap::new(),
            buf: String::new(),
            copied: Vec::new(),
            gate: None,
        }
    }

    /// Appends the lines `body` produces, makes them durable, then stores `checkpoint` (`None`: the
    /// stored one, unchanged) and `cursor` (if any) in the sidecar. Lines go out whenever `chunk`
    /// bytes are buffered (`usize::MAX`: all at once, after `body` succeeded). On `Err`, a file is
    /// cut back to what the stored checkpoint covers.
    fn append(
        &mut self,
        checkpoint: Option<&Checkpoint>,
        cursor: Option<(String, &Cursor)>,
        chunk: usize,
        body: impl FnOnce(&mut Lines<'_>) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        self.buf.clear();
        let start = match &self.out {
            Output::File { len, .. } => *len,
            Output::Stream { .. } => 0,
        };
        let mut lines = Lines {
            buf: &mut self.buf,
            out: &mut self.out,
            chunk,
            written: 0,
        };
        let result = body(&mut lines).and_then(|()| lines.finish());
        let written = lines.written;
        let data_len = match (&mut self.out, result) {
            (Output::File { len, .. }, Ok(())) => {
                *len += written;
                *len
            }
            (Output::Stream { .. }, Ok(())) => 0,
            (Output::File { file, .. }, Err(e)) => {
                // Leave the file as the checkpoint covers it (reopening would cut it back anyway).
                let _ = file.set_len(start);
                let _ = file.seek(SeekFrom::Start(start));
                return Err(e);
            }
            (Output::Stream { .. }, Err(e)) => return Err(e),
        };
        let checkpoint = checkpoint.or(self.stored.as_ref()).cloned();
        let mut cursors = self.cursors.clone();
        if let Some((table, c)) = cursor {
            cursors.insert(table, c.clone());
        }
        if let Some(sidecar) = &self.sidecar {
            let stored = write_sidecar(
                sidecar,
                &Sidecar {
                    data_len,
                    checkpoint: checkpoint.clone(),
                    cursors: cursors.clone(),
                    copied: self.copied.clone(),
                },
            );
            if let Err(e) = stored {
                // The data is in the file but no checkpoint covers it: cut it back, or a retry of
                // the batch would append it a second time.
                if let Output::File { file, len, .. } = &mut self.out {
                    let _ = file.set_len(start);
                    let _ = file.seek(SeekFrom::Start(start));
                    *len = start;
                }
                return Err(e);
            }
        }
        self.stored = checkpoint;
        self.cursors = cursors;
        Ok(())
    }

    /// Writes `text` out as it is, not yet durable (a piece of a load's chunk; its last piece
    /// makes everything durable). On `Err`, a file is cut back to before the piece.
    fn append_piece(&mut self, text: &str) -> Result<(), SinkError> {
        match &mut self.out {
            Output::File { file, path, len } => match file.write_all(text.as_bytes()) {
                Ok(()) => {
                    *len += text.len() as u64;
                    Ok(())
                }
                Err(e) => {
                    let _ = file.set_len(*len);
                    let _ = file.seek(SeekFrom::Start(*len));
                    Err(io_err(path, "appending loaded rows")(e))
                }
            },
            Output::Stream { out, name } => {
                Output::stream_write(out.as_mut(), name, text.as_bytes(), "writing loaded rows")
            }
        }
    }
}

/// The lines of a load's rows: `{"op":"read","sync","schema","table","after":{…}}`, with what
/// comes before the row object and the object's keys spelled once per load.
struct ReadLines {
    rel: Arc<Relation>,
    head: String,
    keys: json::Keys,
}

impl ReadLines {
    fn new(load: &Load) -> ReadLines {
        let rel = load.relation.clone();
        let mut head = String::from("{\"op\":\"read\",\"sync\":");
        json::push_str(&mut head, load.sync);
        head.push_str(",\"schema\":");
        json::push_str(&mut head, &rel.schema);
        head.push_str(",\"table\":");
        json::push_str(&mut head, &rel.table);
        head.push_str(",\"after\":");
        ReadLines {
            keys: json::Keys::new(&rel.columns),
            rel,
            head,
        }
    }

    /// Appends the line of `row` (with its newline).
    fn push(&self, out: &mut String, row: &[Value]) -> Result<(), SinkError> {
        let rel = &self.rel;
        if row.len() != rel.columns.len() {
            return Err(SinkError::ValueCount {
                schema: rel.schema.clone(),
                table: rel.table.clone(),
                which: "a loaded row",
                expected: rel.columns.len(),
                key_columns: key_positions(rel).len(),
                got: row.len(),
                commit_lsn: Lsn(0),
                ordinal: 0,
            });
        }
        out.push_str(&self.head);
        self.keys.push_row(out, row);
        out.push_str("}\n");
        Ok(())
    }
}

impl RenderRows for ReadLines {
    fn render(&mut self, rows: &[Vec<Value>], out: &mut String) -> Result<(), SinkError> {
        rows.iter().try_for_each(|row| self.push(out, row))
    }
}

/// Where [`JsonlSink::append`] puts lines: a buffer, written out in chunks.
struct Lines<'a> {
    buf: &'a mut String,
    out: &'a mut Output,
    chunk: usize,
    /// Bytes written to the output so far.
    written: u64,
}

impl Lines<'_> {
    /// One change's event line.
    fn event(
        &mut self,
        change: &Change,
        rel: &Relation,
        commit_time: &str,
        gaps: &[usize],
    ) -> Result<(), SinkError> {
        push_event(self.buf, change, rel, commit_time, gaps)?;
        self.buf.push('\n');
        if self.buf.len() >= self.chunk {
            self.flush_buf()?;
        }
        Ok(())
    }

    /// One line as given (a load marker).
    fn raw(&mut self, line: &str) -> Result<(), SinkError> {
        self.buf.push_str(line);
        self.buf.push('\n');
        Ok(())
    }

    /// One loaded row (see [`ReadLines`]).
    fn read_row(&mut self, read: &ReadLines, row: &[Value]) -> Result<(), SinkError> {
        read.push(self.buf, row)?;
        if self.buf.len() >= self.chunk {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), SinkError> {
        let written = match self.out {
            Output::File { file, path, .. } => file
                .write_all(self.buf.as_bytes())
                .map_err(io_err(path, "appending the batch")),
            Output::Stream { out, name } => {
                Output::stream_write(out.as_mut(), name, self.buf.as_bytes(), "writing the batch")
            }
        };
        written?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// The rest of the buffer, then fsync (a file) or flush (stdout).
    fn finish(&mut self) -> Result<(), SinkError> {
        self.flush_buf()?;
        match self.out {
            Output::File { file, path, .. } => {
                file.sync_data().map_err(io_err(path, "fsyncing the batch"))
            }
            Output::Stream { out, name } => out.flush().map_err(io_err(name, "writing the batch")),
        }
    }
}

/// How much of a streamed transaction ([`Sink::write_large`]) is buffered before it is written out.
const LARGE_CHUNK: usize = 1 << 20;

/// Appends the JSON event of one change (without the newline). Shapes are checked as in the SQLite
/// sink; `gaps` are the unchanged TOAST positions left out of `after`.
pub fn push_event(
    out: &mut String,
    change: &Change,
    rel: &Relation,
    commit_time: &str,
    gaps: &[usize],
) -> Result<(), SinkError> {
    let keys = key_positions(rel);
    out.push_str("{\"op\":\"");
    out.push_str(change.op.as_str());
    out.push_str("\",\"schema\":");
    json::push_str(out, &rel.schema);
    out.push_str(",\"table\":");
    json::push_str(out, &rel.table);
    if let Some(leaf) = &change.partition {
        out.push_str(",\"partition\":");
        json::push_str(out, leaf);
    }
    out.push_str(&format!(
        ",\"commit_lsn\":\"{}\",\"ordinal\":{},\"xid\":{},\"commit_time\":\"{commit_time}\",\"before\":",
        change.commit_lsn, change.ordinal, change.xid
    ));
    match (change.op, change.before.as_deref()) {
        (Op::Update | Op::Delete, Some(b)) => {
            let positions = (before_shape(rel, keys.len(), change, b)? == BeforeShape::Key)
                .then_some(&keys[..]);
            json::push_row(out, &rel.columns, positions, b, &[]);
        }
        _ => out.push_str("null"),
    }
    out.push_str(",\"after\":");
    match (change.op, change.after.as_deref()) {
        (Op::Insert | Op::Update, Some(a)) => {
            if a.len() != rel.columns.len() {
                return Err(value_count(rel, keys.len(), change, "after", a.len()));
            }
            json::push_row(out, &rel.columns, None, a, gaps);
        }
        (Op::Insert | Op::Update, None) => {
            return Err(value_count(rel, keys.len(), change, "after", 0))
        }
        _ => out.push_str("null"),
    }
    if !gaps.is_empty() && change.after.is_some() {
        out.push_str(",\"unchanged_toast\":");
        json::push_names(out, &rel.columns, gaps);
    }
    out.push('}');
    Ok(())
}

/// The checkpoint of the JSON Lines file at `path`, from its sidecar alone: the data file is not
/// opened (opening it for writing cuts bytes its sidecar does not cover, which a live writer may
/// be about to cover). For `status` and `check` beside a live receiver.
pub fn checkpoint_of_file(path: &Path) -> Result<Option<Checkpoint>, SinkError> {
    Ok(read_sidecar(&JsonlSink::sidecar_path(path))?.and_then(|s| s.checkpoint))
}

/// The latest copy of each table the JSON Lines file at `path` holds, from its sidecar alone (see
/// [`checkpoint_of_file`]).
pub fn copies_of_file(path: &Path) -> Result<Vec<Copied>, SinkError> {
    Ok(read_sidecar(&JsonlSink::sidecar_path(path))?.map_or_else(Vec::new, |s| s.copied))
}

fn copied_to_json(copied: &[Copied]) -> serde_json::Value {
    copied
        .iter()
        .map(|c| {
            let mut doc = serde_json::json!({
                "schema": c.schema,
                "table": c.table,
                "position": c.position.to_string(),
                "rows": c.rows,
            });
            if let Some(p) = &c.partitions {
                doc["partitions"] = serde_json::json!(p);
            }
            doc
        })
        .collect()
}

fn copied_from_json(v: &serde_json::Value) -> Result<Vec<Copied>, String> {
    let list = v.as_array().ok_or("not a list")?;
    list.iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().map(str::to_owned).ok_or(format!("no `{k}`"));
            Ok(Copied {
                schema: text("schema")?,
                table: text("table")?,
                position: text("position")?
                    .parse::<Lsn>()
                    .map_err(|e| format!("`position`: {e}"))?,
                rows: c["rows"].as_u64().unwrap_or(0),
                partitions: match &c["partitions"] {
                    serde_json::Value::Null => None,
                    p => Some(serde_json::from_value(p.clone()).map_err(|e| e.to_string())?),
                },
            })
        })
        .collect()
}

/// `copied` with `new` in place of the earlier copies of the same tables.
fn with_copies(copied: &[Copied], new: &[Copied]) -> Vec<Copied> {
    let mut out: Vec<Copied> = copied
        .iter()
        .filter(|c| {
            !new.iter()
                .any(|n| (&n.schema, &n.table) == (&c.schema, &c.table))
        })
        .cloned()
        .collect();
    out.extend(new.iter().cloned());
    out
}

fn read_sidecar(path: &Path) -> Result<Option<Sidecar>, SinkError> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => f
            .read_to_string(&mut text)
            .map_err(io_err(path, "reading the checkpoint file"))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "opening the checkpoint file")(e)),
    };
    let bad = |reason: String| SinkError::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let format = v["format"]
        .as_u64()
        .ok_or_else(|| bad("no `format`".into()))?;
    if format > SIDECAR_FORMAT {
        return Err(bad(format!(
            "format {format} is newer than this fig-receiver knows ({SIDECAR_FORMAT}); upgrade it"
        )));
    }
    let data_len = v["data_len"]
        .as_u64()
        .ok_or_else(|| bad("no `data_len`".into()))?;
    let checkpoint = match &v["checkpoint"] {
        serde_json::Value::Null => None,
        c => {
            let text = |k: &str| {
                c[k].as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("no `checkpoint.{k}`")))
            };
            Some(Checkpoint {
                system_id: text("system_id")?
                    .parse()
                    .map_err(|_| bad("`checkpoint.system_id` is not a number".into()))?,
                timeline: c["timeline"]
                    .as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| bad("no `checkpoint.timeline`".into()))?,
                slot: text("slot")?,
                plugin: text("plugin")?,
                commit_end_lsn: text("commit_end_lsn")?
                    .parse::<Lsn>()
                    .map_err(|e| bad(format!("`checkpoint.commit_end_lsn`: {e}")))?,
            })
        }
    };
    let cursors = match &v["cursors"] {
        serde_json::Value::Null => BTreeMap::new(),
        c => serde_json::from_value(c.clone())
            .map_err(|e| bad(format!("`cursors` is unreadable: {e}")))?,
    };
    let copied = match &v["copied"] {
        serde_json::Value::Null => Vec::new(),
        c => copied_from_json(c).map_err(|e| bad(format!("`copied` is unreadable: {e}")))?,
    };
    Ok(Some(Sidecar {
        data_len,
        checkpoint,
        cursors,
        copied,
    }))
}

fn write_sidecar(path: &Path, s: &Sidecar) -> Result<(), SinkError> {
    let checkpoint = match &s.checkpoint {
        None => serde_json::Value::Null,
        Some(c) => serde_json::json!({
            "system_id": c.system_id.to_string(),
            "timeline": c.timeline,
            "slot": c.slot,
            "plugin": c.plugin,
            "commit_end_lsn": c.commit_end_lsn.to_string(),
        }),
    };
    let mut doc = serde_json::json!({"format": SIDECAR_FORMAT, "data_len": s.data_len, "checkpoint": checkpoint});
    if !s.cursors.is_empty() {
        doc["cursors"] = serde_json::to_value(&s.cursors).expect("cursors serialize");
    }
    if !s.copied.is_empty() {
        doc["copied"] = copied_to_json(&s.copied);
    }
    let text = doc.to_string() + "\n";
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> io::Result<()> {
        // Its name is predictable: a file or symlink left there (a crash, or planted) is removed,
        // never followed, and the new one is created exclusively (O_EXCL fails on any link).
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable once the directory is.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    };
    write().map_err(io_err(
        path,
        "replacing the checkpoint file (write, fsync, rename)",
    ))
}

impl JsonlSink {
    /// [`Sink::write`] without re-copies to place.
    fn write_now(
        &mut self,
        batch: &[Transaction],
        checkpoint: &Checkpoint,
    ) -> Result<(), SinkError> {
        let skip = check_batch(batch, self.stored.as_ref(), checkpoint)?;
        let to_store = Checkpoint::successor(self.stored.as_ref(), checkpoint)?.clone();
        let todo = &batch[skip..];
        if todo.is_empty() && self.stored.as_ref() == Some(&to_store) {
            return Ok(());
        }
        let mut seen = self.seen.clone();
        let mut drifts: Vec<Vec<crate::drift::SchemaChange>> = Vec::with_capacity(todo.len());
        for t in todo {
            let mut found = Vec::new();
            for (rel, ddl) in t.definitions() {
                found.extend(self.drift_of(&mut seen, rel, t.commit_lsn, ddl)?);
            }
            drifts.push(found);
        }
        self.append(Some(&to_store), None, usize::MAX, |lines| {
            for (t, found) in todo.iter().zip(&drifts) {
                for d in found {
                    lines.raw(&d.to_json())?;
                }
                let commit_time = fig_format::datetime::format_timestamp(t.commit_time, true);
                let head = t.head();
                let mut messages = t.messages.iter().peekable();
                for (change, rel) in t.changes_with_relations()? {
                    while let Some(m) = messages.next_if(|m| m.ordinal <= change.ordinal) {
                        lines.raw(&message_line(&head, &commit_time, m))?;
                    }
                    lines.event(change, rel, &commit_time, t.toast_gaps(change.ordinal))?;
                }
                for m in messages {
                    lines.raw(&message_line(&head, &commit_time, m))?;
                }
            }
            Ok(())
        })?;
        self.seen = seen;
        self.notify(drifts.iter().flatten());
        Ok(())
    }

    /// Writes the re-copy held at `at` once it is read, after everything committed before `at`
    /// ([`recopy`]). An abandoned one is skipped.
    fn land_recopy(&mut self, gate: &Gate) -> Result<(), SinkError> {
        let Some((staged, copied)) = gate.wait_ready() else {
            return Ok(());
        };
        let result = self.append_file(&staged, &copied);
        let _ = fs::remove_file(&staged);
        gate.landed(result.as_ref().map(drop).map_err(|e| e.to_string()));
        result
    }

    /// Appends the whole file at `staged` (a re-copy's lines) and records `copied` in the sidecar
    /// with it.
    fn append_file(&mut self, staged: &Path, copied: &[Copied]) -> Result<(), SinkError> {
        let mut from = File::open(staged).map_err(io_err(staged, "opening the re-copy's lines"))?;
        let now = with_copies(&self.copied, copied);
        let before = std::mem::replace(&mut self.copied, now);
        let result = self.append(None, None, usize::MAX, |lines| {
            lines.flush_buf()?;
            let n = match lines.out {
                Output::File { file, path, .. } => {
                    io::copy(&mut from, file).map_err(io_err(path, "appending the re-copy"))?
                }
                Output::Stream { out, name } => {
                    io::copy(&mut from, out).map_err(io_err(name, "writing the re-copy"))?
                }
            };
            lines.written += n;
            Ok(())
        });
        if result.is_err() {
            self.copied = before;
        }
        result
    }
}

impl Sink for JsonlSink {
    /// With a re-copy held ([`recopy`]): the transactions committed before its position, then the
    /// re-copy once it is read, then the rest.
    fn write(&mut self, batch: &[Transaction], checkpoint: &Checkpoint) -> Result<(), SinkError> {
        let Some(gate) = self.gate.clone() else {
            return self.write_now(batch, checkpoint);
        };
        let recopy::Due::Before(at) = gate.due() else {
            return self.write_now(batch, checkpoint);
        };
        let split = batch
            .iter()
            .position(|t| t.commit_lsn >= at)
            .unwrap_or(batch.len());
        if split == batch.len() && checkpoint.commit_end_lsn < at {
            return self.write_now(batch, checkpoint);
        }
        if split > 0 {
            let mut upto = checkpoint.clone();
            upto.commit_end_lsn = batch[split - 1].end_lsn;
            self.write_now(&batch[..split], &upto)?;
        }
        self.land_recopy(&gate)?;
        // Another re-copy may be held by now: the same rule again for the rest.
        self.write(&batch[split..], checkpoint)
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
        if let Some(gate) = self.gate.clone() {
            while let recopy::Due::Before(at) = gate.due() {
                if head.commit_lsn < at {
                    break;
                }
                self.land_recopy(&gate)?;
            }
        }
        let to_store = Checkpoint::successor(self.stored.as_ref(), checkpoint)?.clone();
        let commit_time = fig_format::datetime::format_timestamp(head.commit_time, true);
        let mut seen = self.seen.clone();
        // Drift found at a Relation piece, written before the next change.
        let found = std::cell::RefCell::new(Vec::new());
        let unwritten = std::cell::Cell::new(0usize);
        let watch = self.drift.clone();
        self.append(Some(&to_store), None, LARGE_CHUNK, |lines| {
            // The DDL text behind the definition that comes next, if any.
            let mut explained: Option<Arc<str>> = None;
            let mut pieces = pieces.map(|piece| {
                match &piece {
                    Ok(Piece::Ddl { text, .. }) => explained = Some(Arc::clone(text)),
                    Ok(Piece::Relation(rel)) => {
                        let ddl = explained.take();
                        if let Some(d) =
                            drift_between(&watch, &mut seen, rel, head.commit_lsn, ddl.as_ref())?
                        {
                            found.borrow_mut().push(d);
                            unwritten.set(unwritten.get() + 1);
                        }
                    }
                    _ => {}
                }
                piece
            });
            walk_pieces(head, &mut pieces, |step| {
                let n = unwritten.replace(0);
                let f = found.borrow();
                for d in &f[f.len() - n..] {
                    lines.raw(&d.to_json())?;
                }
                drop(f);
                match step {
                    Walked::Change {
                        change, rel, gaps, ..
                    } => lines.event(change, rel, &commit_time, gaps),
                    Walked::Message(m) => lines.raw(&message_line(head, &commit_time, m)),
                }
            })
        })?;
        self.seen = seen;
        self.notify(found.borrow().iter());
        Ok(())
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, SinkError> {
        Ok(self.stored.clone())
    }

    /// Always `None`: this sink keeps no state (see the module documentation on unchanged TOAST).
    fn current_row(
        &mut self,
        _relation: &Relation,
        _key: &[Value],
    ) -> Result<Option<Vec<Value>>, SinkError> {
        Ok(None)
    }

    /// Writes a `load_start` line. Never resumes (`None`): a load interrupted by a crash starts over
    /// with a new `load_start`, so a consumer discards the rows of a load that has no `load_end`.
    fn load_begin(&mut self, load: &Load) -> Result<Option<LoadProgress>, SinkError> {
        let line = load_marker("load_start", load, None);
        self.append(None, None, usize::MAX, |lines| lines.raw(&line))?;
        // A load started over (after a failed one) counts its rows from zero.
        self.loaded.insert(load.table(), 0);
        Ok(None)
    }

    fn load_chunk(
        &mut self,
        load: &Load,
        _chunk: u32,
        rows: &mut dyn RowBatches,
        cursor: Option<&Cursor>,
    ) -> Result<u64, SinkError> {
        let read = ReadLines::new(load);
        let mut n = 0u64;
        let cursor = cursor.map(|c| (load.table(), c));
        self.append(None, cursor, LARGE_CHUNK, |lines| {
            while let Some(batch) = rows.next_batch() {
                for row in batch? {
                    lines.read_row(&read, row)?;
                    n += 1;
                }
            }
            Ok(())
        })?;
        *self.loaded.entry(load.table()).or_default() += n;
        Ok(n)
    }

    /// Snapshot loads (never resumed, no cursor) are rendered outside the sink; incremental loads
    /// store their cursor with their rows, so they go whole through `load_chunk`.
    fn load_renderer(&self, load: &Load) -> Option<Box<dyn RenderRows>> {
        match load.mode {
            LoadMode::Replace => Some(Box::new(ReadLines::new(load))),
            LoadMode::Upsert => None,
        }
    }

    fn load_append(
        &mut self,
        load: &Load,
        text: &str,
        rows: u64,
        durable: bool,
    ) -> Result<(), SinkError> {
        self.append_piece(text)?;
        *self.loaded.entry(load.table()).or_default() += rows;
        if durable {
            self.append(None, None, usize::MAX, |_| Ok(()))?;
        }
        Ok(())
    }

    /// Writes a `load_end` line with the row count. A copy of a streamed table is recorded in the
    /// sidecar with it (which tables have a copy, and of which partitions).
    fn load_finish(&mut self, load: &Load) -> Result<u64, SinkError> {
        let rows = self.loaded.remove(&load.table()).unwrap_or(0);
        let line = load_marker("load_end", load, Some(rows));
        let before = self.copied.clone();
        if load.mode == LoadMode::Replace && COPIES_OF_STREAMED.contains(&load.sync) {
            self.copied = with_copies(&self.copied, &[copy_of(load, rows)]);
        }
        let result = self.append(None, None, usize::MAX, |lines| lines.raw(&line));
        if result.is_err() {
            self.copied = before;
        }
        result.map(|()| rows)
    }

    fn cursor(&mut self, schema: &str, table: &str) -> Result<Option<Cursor>, SinkError> {
        Ok(self.cursors.get(&format!("{schema}.{table}")).cloned())
    }

    /// Schema changes become `{"event":"schema_change",…}` lines before the transaction that
    /// brings them (see [`crate::drift`]).
    fn watch_drift(&mut self, watch: Arc<crate::drift::Watch>) {
        self.drift = Some(watch);
    }
}

/// The drift of `rel` from the definition seen before it (none the first time), noting `rel` as
/// seen; a flagged change of a paused table is notified and stops the write.
fn drift_between(
    watch: &Option<Arc<crate::drift::Watch>>,
    seen: &mut HashMap<u32, Arc<Relation>>,
    rel: &Arc<Relation>,
    lsn: Lsn,
    ddl: Option<&Arc<str>>,
) -> Result<Option<crate::drift::SchemaChange>, SinkError> {
    let before = seen.insert(rel.relid, Arc::clone(rel));
    let Some(old) = before.filter(|old| **old != **rel) else {
        return Ok(None);
    };
    let changes = crate::drift::diff(&old, rel);
    if changes.is_empty() {
        return Ok(None);
    }
    let source = match ddl {
        Some(text) => crate::drift::Source::Ddl(text),
        None => crate::drift::Source::Relation,
    };
    let change = crate::drift::SchemaChange::new(rel, Some(lsn), source, changes);
    crate::sink::pause_check(watch.as_deref(), &change, Path::new("jsonl"))?;
    Ok(Some(change))
}

impl JsonlSink {
    fn drift_of(
        &self,
        seen: &mut HashMap<u32, Arc<Relation>>,
        rel: &Arc<Relation>,
        lsn: Lsn,
        ddl: Option<&Arc<str>>,
    ) -> Result<Option<crate::drift::SchemaChange>, SinkError> {
        drift_between(&self.drift, seen, rel, lsn, ddl)
    }

    fn notify<'a>(&self, found: impl Iterator<Item = &'a crate::drift::SchemaChange>) {
        if let Some(w) = &self.drift {
            for d in found {
                w.notifier.notify(d);
            }
        }
    }
}

/// `{"event":"load_start"|"load_end","sync","schema","table","mode","snapshot"[,"rows"]}`.
/// A logical message's line: `{"event":"message","lsn":…,"commit_lsn":…,"xid":…,"commit_time":…,
/// "transactional":…,"prefix":…,"content":"<base64>"}`; `xid` and `commit_time` are null for a
/// non-transactional message (it belongs to no transaction). Identified by `lsn`.
fn message_line(head: &TransactionHead, commit_time: &str, at: &MessageAt) -> String {
    use base64::Engine;
    let m = &at.message;
    serde_json::json!({
        "event": "message",
        "lsn": m.lsn.to_string(),
        "commit_lsn": head.commit_lsn.to_string(),
        "xid": m.transactional.then_some(head.xid),
        "commit_time": m.transactional.then_some(commit_time),
        "transactional": m.transactional,
        "prefix": m.prefix,
        "content": base64::engine::general_purpose::STANDARD.encode(&m.content),
    })
    .to_string()
}

/// The loads that copy a streamed table (the stream carries its changes from their position on).
const COPIES_OF_STREAMED: [&str; 2] = ["cdc-initial", crate::sink::sqlite::RESYNC];

/// What the sidecar records of a finished copy of a streamed table.
fn copy_of(load: &Load, rows: u64) -> Copied {
    Copied {
        schema: load.relation.schema.clone(),
        table: load.relation.table.clone(),
        position: load.position,
        partitions: load.partitions.clone(),
        rows,
    }
}

fn load_marker(event: &str, load: &Load, rows: Option<u64>) -> String {
    let mut doc = serde_json::json!({
        "event": event,
        "sync": load.sync,
        "schema": load.relation.schema,
        "table": load.relation.table,
        "mode": load.mode.as_str(),
        "snapshot": load.snapshot,
        "position": load.position.to_string(),
    });
    if let Some(r) = rows {
        doc["rows"] = r.into();
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testkit::*;
    use crate::sink::ToastGap;
    use serde_json::json;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn lines_parse_as_json_with_the_documented_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = JsonlSink::open(path.to_str().unwrap()).unwrap();
        assert_eq!(sink.checkpoint().unwrap(), None);
        let r = accounts();
        let mut t = tx(
            0x1_0000_0100,
            &[&r],
            vec![
                ins(&r, vec![Value::Int(1), text("a\"b\n"), num("12.50")]),
                upd(
                    &r,
                    Some(vec![Value::Int(1)]),
                    vec![Value::Int(2), Value::Null, num("NaN")],
                ),
                del(&r, vec![Value::Int(2)]),
                trunc(&r),
            ],
        );
        t.unchanged_toast.push(ToastGap {
            ordinal: 1,
            columns: vec![1],
        });
        sink.write(&[t], &ckpt(0x1_0000_0108)).unwrap();
        let l = lines(&path);
        assert_eq!(l.len(), 4);
        let expected_time =
            fig_format::datetime::format_timestamp(817_000_000_000_000 + 0x1_0000_0100, true);
        assert_eq!(
            l[0],
            json!({"op": "insert", "schema": "public", "table": "accounts", "commit_lsn": "1/100", "ordinal": 0,
                   "xid": 0x1_0000_0100u64 % 1_000_000, "commit_time": expected_time, "before": null,
                   "after": {"id": 1, "name": "a\"b\n", "balance": "12.50"}})
        );
        assert!(l[0]["commit_time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(l[1]["before"], json!({"id": 1}));
        assert_eq!(
            l[1]["after"],
            json!({"id": 2, "balance": "NaN"}),
            "the gap is left out, not invented"
        );
        assert_eq!(l[1]["unchanged_toast"], json!(["name"]));
        assert_eq!(l[2]["op"], "delete");
        assert_eq!(l[2]["after"], serde_json::Value::Null);
        assert_eq!(l[3]["op"], "truncate");
        assert_eq!(l[3]["ordinal"], 3);
        assert!(l[0].get("unchanged_toast").is_none());
    }

    #[test]
    fn a_schema_change_line_carries_the_ddl_text_behind_it_in_batches_and_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = JsonlSink::open(path.to_str().unwrap()).unwrap();
        let [v1, v2, v3] = accounts_versions();
        let with_ddl = |lsn: u64, r: &Arc<Relation>, row: Vec<Value>, text: &str| {
            let mut t = tx(lsn, &[r], vec![ins(r, row)]);
            explain(&mut t, text);
            t
        };
        sink.write(
            &[tx(
                0x100,
                &[&v1],
                vec![ins(&v1, vec![Value::Int(1), text("a"), num("1")])],
            )],
            &ckpt(0x108),
        )
        .unwrap();
        let t2 = with_ddl(
            0x200,
            &v2,
            vec![Value::Int(2), text("b"), num("2"), text("n")],
            "ALTER TABLE accounts ADD note text",
        );
        sink.write(&[t2], &ckpt(0x208)).unwrap();
        let t3 = with_ddl(
            0x300,
            &v3,
            vec![Value::Int(3), num("3"), text("n")],
            "ALTER TABLE accounts DROP name",
        );
        let mut streamed = pieces(&t3).into_iter().map(Ok);
        sink.write_large(&t3.head(), &mut streamed, &ckpt(0x308))
            .unwrap();
        let changes: Vec<(String, String)> = lines(&path)
            .iter()
            .filter(|l| l["event"] == "schema_change")
            .map(|l| {
                (
                    l["source"].as_str().unwrap().to_string(),
                    l["ddl"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            [
                ("ddl".into(), "ALTER TABLE accounts ADD note text".into()),
                ("ddl".into(), "ALTER TABLE accounts DROP name".into())
            ]
        );
    }

    #[test]
    fn a_character_device_or_a_pipe_is_a_stream_without_fsync_or_sidecar() {
        let r = accounts();
        let batch = |lsn: u64| {
            [tx(
                lsn,
                &[&r],
                vec![ins(&r, vec![Value::Int(1), text("a"), num("1")])],
            )]
        };
        // /dev/null cannot be fsynced: it once failed every batch with "fsync: Invalid argument".
        let mut sink = JsonlSink::open_file("/dev/null").unwrap();
        sink.write(&batch(0x100), &ckpt(0x108)).unwrap();
        assert!(!Path::new("/dev/null.checkpoint").exists());
        // A named pipe with a reader: the lines arrive, nothing is created beside it.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read_to_string(&fifo).unwrap())
        };
        let mut sink = JsonlSink::open_file(&fifo).unwrap();
        sink.write(&batch(0x200), &ckpt(0x208)).unwrap();
        drop(sink);
        let got = reader.join().unwrap();
        assert_eq!(got.lines().count(), 1, "{got}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["pipe"]);
    }

    #[test]
    fn files_are_private_and_a_planted_temporary_sidecar_link_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let target = dir.path().join("victim");
        fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("out.jsonl.checkpoint.tmp")).unwrap();
        let mut sink = JsonlSink::open_file(&path).unwrap();
        let r = accounts();
        sink.write(
            &[tx(
                0x100,
                &[&r],
                vec![ins(&r, vec![Value::Int(1), text("a"), num("1")])],
            )],
            &ckpt(0x108),
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "keep",
            "the link's target is untouched"
        );
        for p in [path.clone(), JsonlSink::sidecar_path(&path)] {
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn a_failed_checkpoint_update_leaves_no_lines_behind_so_a_retry_writes_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = JsonlSink::open(path.to_str().unwrap()).unwrap();
        let r = accounts();
        sink.write(
            &[tx(
                0x100,
                &[&r],
                vec![ins(&r, vec![Value::Int(1), text("a"), num("1")])],
            )],
            &ckpt(0x108),
        )
        .unwrap();
        // The sidecar's temporary file cannot be created: the checkpoint update fails.
        let blocker = dir.path().join("out.jsonl.checkpoint.tmp");
        fs::create_dir(&blocker).unwrap();
        let batch = [tx(
            0x200,
            &[&r],
            vec![ins(&r, vec![Value::Int(2), text("b"), num("2")])],
        )];
        assert!(sink.write(&batch, &ckpt(0x208)).is_err());
        assert_eq!(lines(&path).len(), 1, "the uncovered line was cut back");
        fs::remove_dir(&blocker).unwrap();
        sink.write(&batch, &ckpt(0x208)).unwrap();
        let l = lines(&path);
        assert_eq!(l.len(), 2, "written once: {l:?}");
        assert_eq!(l[1]["after"]["id"], 2);
        drop(sink);
        assert_eq!(lines(&path).len(), 2);
        assert_eq!(
            JsonlSink::open(path.to_str().unwrap())
                .unwrap()
                .checkpoint()
                .unwrap(),
            Some(ckpt(0x208))
        );
    }

    #[test]
    fn checkpoint_round_trips_and_repeats_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let r = accounts();
        let t1 = tx(
            100,
            &[&r],
            vec![ins(&r, vec![Value::Int(1), text("a"), num("1")])],
        );
        let t2 = tx(
            200,
            &[&r],
            vec![ins(&r, vec![Value::Int(2), text("b"), num("2")])],
        );
        {
            let mut sink = JsonlSink::open_file(&path).unwrap();
            sink.write(std::slice::from_ref(&t1), &ckpt(108)).unwrap();
        }
        let mut sink = JsonlSink::open_file(&path).unwrap();
        assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(108)));
        sink.write(&[t1, t2], &ckpt(208)).unwrap();
        assert_eq!(lines(&path).len(), 2, "t1 is covered and skipped");
        assert_eq!(
            JsonlSink::open_file(&path).unwrap().checkpoint().unwrap(),
            Some(ckpt(208))
        );
    }

    #[test]
    fn a_load_writes_read_lines_between_markers_and_keeps_its_cursor_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let r = accounts();
        let load = crate::sink::Load {
            relation: r.clone(),
            mode: crate::sink::LoadMode::Upsert,
            position: Lsn(0x10),
            snapshot: String::new(),
            sync: "incremental",
            chunk_blocks: 0,
            partitions: None,
        };
        let cursor = Cursor {
            column: "id".into(),
            value: Value::Int(2),
            key: vec![Value::Int(2)],
        };
        {
            let mut sink = JsonlSink::open_file(&path).unwrap();
            assert_eq!(sink.load_begin(&load).unwrap(), None);
            let rows = vec![
                vec![Value::Int(1), text("a"), num("1.5")],
                vec![Value::Int(2), text("b"), Value::Null],
            ];
            let n = sink
                .load_chunk(
                    &load,
                    0,
                    &mut crate::sink::RowsAtHand::new(rows.into_iter().map(Ok)),
                    Some(&cursor),
                )
                .unwrap();
            assert_eq!(n, 2);
            assert_eq!(sink.load_finish(&load).unwrap(), 2);
        }
        // Reopening keeps every line (the sidecar covers them) and the cursor.
        let mut sink = JsonlSink::open_file(&path).unwrap();
        assert_eq!(sink.cursor("public", "accounts").unwrap(), Some(cursor));
        assert_eq!(sink.checkpoint().unwrap(), None);
        let l = lines(&path);
        assert_eq!(l.len(), 4, "{l:?}");
        assert_eq!(l[0]["event"], "load_start");
        assert_eq!(l[1]["op"], "read");
        assert_eq!(l[1]["sync"], "incremental");
        assert_eq!(l[1]["after"]["id"], 1);
        assert_eq!(l[2]["after"]["name"], "b");
        assert_eq!(l[3]["event"], "load_end");
        assert_eq!(l[3]["rows"], 2);
    }

    /// Rendered pieces of a load become durable with a chunk's last piece: reopening keeps what
    /// a durable piece covers and cuts off pieces appended after it.
    #[test]
    fn rendered_pieces_are_kept_once_a_chunks_last_piece_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let load = crate::sink::Load {
            relation: accounts(),
            mode: crate::sink::LoadMode::Replace,
            position: Lsn(0x10),
            snapshot: String::new(),
            sync: "snapshot",
            chunk_blocks: 0,
            partitions: None,
        };
        {
            let mut sink = JsonlSink::open_file(&path).unwrap();
            let mut renderer = sink
                .load_renderer(&load)
                .expect("snapshot loads are rendered");
            let mut piece = |i: i64| {
                let mut out = String::new();
                let row = vec![Value::Int(i), text("a"), num("1.5")];
                renderer.render(&[row], &mut out).unwrap();
                out
            };
            let (first, second, third) = (piece(1), piece(2), piece(3));
            sink.load_begin(&load).unwrap();
            sink.load_append(&load, &first, 1, false).unwrap();
            sink.load_append(&load, &second, 1, true).unwrap();
            sink.load_append(&load, &third, 1, false).unwrap();
            assert_eq!(lines(&path).len(), 4, "written out before it is durable");
        }
        let reopened = JsonlSink::open_file(&path).unwrap();
        let l = lines(&path);
        assert_eq!(l.len(), 3, "{l:?}");
        assert_eq!(l[0]["event"], "load_start");
        assert_eq!(l[1]["after"]["id"], 1);
        assert_eq!(l[1]["op"], "read");
        assert_eq!(l[2]["after"]["id"], 2);
        // Incremental loads keep their cursor with their rows: never rendered apart.
        let upsert = crate::sink::Load {
            mode: crate::sink::LoadMode::Upsert,
            ..load.clone()
        };
        assert!(reopened.load_renderer(&upsert).is_none());
    }

    /// Loads of two tables at once each count their own rows in `load_end`, and a load begun
    /// again after a failed attempt counts from zero.
    #[test]
    fn each_load_end_counts_the_rows_of_its_own_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let snapshot = |relation| crate::sink::Load {
            relation,
            mode: crate::sink::LoadMode::Replace,
            position: Lsn(0x10),
            snapshot: String::new(),
            sync: "snapshot",
            chunk_blocks: 0,
            partitions: None,
        };
        let a = snapshot(accounts());
        let b = snapshot(rel(7, "public", "other", vec![col("id", "int8", 20, true)]));
        let mut sink = JsonlSink::open_file(&path).unwrap();
        let piece = |load: &crate::sink::Load, rows: &[Vec<Value>]| {
            let mut text = String::new();
            sink.load_renderer(load)
                .unwrap()
                .render(rows, &mut text)
                .unwrap();
            text
        };
        let a_rows = piece(&a, &[vec![Value::Int(1), text("x"), num("1")]]);
        let b_rows = piece(&b, &[vec![Value::Int(1)], vec![Value::Int(2)]]);
        sink.load_begin(&a).unwrap();
        sink.load_append(&a, &a_rows, 1, false).unwrap();
        // The first attempt at `b` fails after one piece; the load starts over.
        sink.load_begin(&b).unwrap();
        sink.load_append(&b, &b_rows, 2, false).unwrap();
        sink.load_begin(&b).unwrap();
        sink.load_append(&b, &b_rows, 2, true).unwrap();
        sink.load_append(&a, &a_rows, 1, true).unwrap();
        assert_eq!(sink.load_finish(&b).unwrap(), 2);
        assert_eq!(sink.load_finish(&a).unwrap(), 2);
        let ends: Vec<_> = lines(&path)
            .into_iter()
            .filter(|l| l["event"] == "load_end")
            .map(|l| {
                (
                    l["table"].as_str().unwrap().to_string(),
                    l["rows"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ends,
            [("other".to_string(), 2), ("accounts".to_string(), 2)]
        );
    }

    #[test]
    fn reopening_cuts_off_what_no_checkpoint_covers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let r = accounts();
        {
            let mut sink = JsonlSink::open_file(&path).unwrap();
            sink.write(
                &[tx(
                    100,
                    &[&r],
                    vec![ins(&r, vec![Value::Int(1), text("a"), num("1")])],
                )],
                &ckpt(108),
            )
            .unwrap();
        }
        let good = fs::read(&path).unwrap();
        // A crash after the data reached the file but before the sidecar was replaced.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"op\":\"insert\",\"half a line").unwrap();
        drop(f);
        let sink = JsonlSink::open_file(&path).unwrap();
        assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(108)));
        assert_eq!(fs::read(&path).unwrap(), good);
    }

    #[test]
    fn refuses_a_file_with_data_but_no_checkpoint_and_a_shortened_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("someone_elses.jsonl");
        fs::write(&path, "precious\n").unwrap();
        let e = JsonlSink::open_file(&path).err().unwrap();
        assert!(matches!(e, SinkError::BadCheckpoint { .. }), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "precious\n");

        let path = dir.path().join("rotated.jsonl");
        let r = accounts();
        JsonlSink::open_file(&path)
            .unwrap()
            .write(
                &[tx(
                    100,
                    &[&r],
                    vec![ins(&r, vec![Value::Int(1), text("a"), num("1")])],
                )],
                &ckpt(108),
            )
            .unwrap();
        fs::write(&path, "").unwrap();
        let e = JsonlSink::open_file(&path).err().unwrap();
        assert!(matches!(e, SinkError::DataFileShorter { .. }), "{e}");
    }

    #[test]
    fn a_bad_batch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = JsonlSink::open_file(&path).unwrap();
        let r = accounts();
        let bad = tx(
            100,
            &[&r],
            vec![
                ins(&r, vec![Value::Int(1), text("a"), num("1")]),
                ins(&r, vec![Value::Int(2)]),
            ],
        );
        let e = sink.write(&[bad], &ckpt(108)).unwrap_err();
        assert!(matches!(e, SinkError::ValueCount { .. }), "{e}");
        assert_eq!(fs::read(&path).unwrap().len(), 0);
        assert_eq!(sink.checkpoint().unwrap(), None);
        assert_eq!(
            JsonlSink::open_file(&path).unwrap().checkpoint().unwrap(),
            None
        );
    }

    #[test]
    fn values_are_spelled_per_design() {
        let r = rel(
            1,
            "s",
            "t",
            vec![
                col("id", "integer", 23, true),
                col("f", "double precision", 701, false),
                col("b", "bytea", 17, false),
                col("a", "integer[]", 1007, false),
                col("n", "numeric", 1700, false),
            ],
        );
        let big = format!("{}.{}", "9".repeat(200), "1".repeat(100));
        let c = ins(
            &r,
            vec![
                Value::Int(1),
                Value::Float(f64::NEG_INFINITY),
                Value::Bytes(b"hi".to_vec()),
                Value::Array(vec![Value::Int(1), Value::Null]),
                Value::Numeric(big.clone()),
            ],
        );
        let mut s = String::new();
        push_event(&mut s, &c, &r, "2000-01-01T00:00:00.000000Z", &[]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v["after"],
            json!({"id": 1, "f": "-Infinity", "b": "aGk=", "a": [1, null], "n": big})
        );
    }

    #[test]
    fn a_streamed_transaction_writes_the_lines_of_the_same_one_in_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let r = accounts();
        let mut t = tx(
            100,
            &[&r],
            vec![
                ins(&r, vec![Value::Int(1), text("a"), num("1")]),
                upd(&r, None, vec![Value::Int(1), Value::Null, num("2")]),
                del(&r, vec![Value::Int(1)]),
            ],
        );
        t.unchanged_toast.push(ToastGap {
            ordinal: 1,
            columns: vec![1],
        });
        let batched = dir.path().join("batched.jsonl");
        JsonlSink::open_file(&batched)
            .unwrap()
            .write(std::slice::from_ref(&t), &ckpt(108))
            .unwrap();
        let streamed = dir.path().join("streamed.jsonl");
        let mut sink = JsonlSink::open_file(&streamed).unwrap();
        sink.write_large(&t.head(), &mut pieces(&t).into_iter().map(Ok), &ckpt(108))
            .unwrap();
        assert_eq!(fs::read(&streamed).unwrap(), fs::read(&batched).unwrap());
        assert_eq!(
            JsonlSink::open_file(&streamed)
                .unwrap()
                .checkpoint()
                .unwrap(),
            Some(ckpt(108))
        );
    }

    #[test]
    fn a_large_transaction_failing_midway_leaves_neither_lines_nor_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = JsonlSink::open_file(&path).unwrap();
        let r = accounts();
        sink.write(
            &[tx(
                100,
                &[&r],
                vec![ins(&r, vec![Value::Int(1), text("a"), num("1")])],
            )],
            &ckpt(108),
        )
        .unwrap();
        let before = fs::read(&path).unwrap();
        // Far past one chunk: lines already reached the file when the pipeline fails.
        let e = sink
            .write_large(
                &head(200),
                &mut streamed_inserts(200, 50_000, Some(40_000)),
                &ckpt(208),
            )
            .unwrap_err();
        assert!(matches!(e, SinkError::Upstream { .. }), "{e}");
        assert_eq!(fs::read(&path).unwrap(), before, "cut back at once");
        assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(108)));
        assert_eq!(
            JsonlSink::open_file(&path).unwrap().checkpoint().unwrap(),
            Some(ckpt(108))
        );

        // Retried whole, it lands whole, after the earlier batch.
        sink.write_large(
            &head(200),
            &mut streamed_inserts(200, 50_000, None),
            &ckpt(208),
        )
        .unwrap();
        let l = lines(&path);
        assert_eq!(l.len(), 50_001);
        assert_eq!(l[1]["ordinal"], 0);
        assert_eq!(l[50_000]["ordinal"], 49_999);
        assert_eq!(l[50_000]["after"]["id"], 49_999);
        // Repeated after a restart: covered, skipped without reading a piece.
        let mut sink = JsonlSink::open_file(&path).unwrap();
        let mut untouchable = std::iter::from_fn(|| -> Option<Result<Piece, SinkError>> {
            panic!("a covered transaction's pieces are not read")
        });
        sink.write_large(&head(200), &mut untouchable, &ckpt(208))
            .unwrap();
        assert_eq!(lines(&path).len(), 50_001);
    }
}
