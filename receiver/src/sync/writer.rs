//! The sink, shared by the copy tasks: each load step runs on a blocking thread, one at a time
//! (a rendering sink's chunks render side by side and take turns only to append).
//!
//! ```text
//! copy task ──rows (bounded channel)──▶ blocking thread: sink.load_chunk(rows…) ──▶ Ok(count)
//!                                      (a rendering sink: render rows here ─▶ sink.load_append
//!                                       every 1 MB, the sink locked only for that)
//! ```
//!
//! A chunk's rows flow from the COPY stream into the sink as they are decoded, through a bounded
//! channel: memory stays bounded whatever the chunk's size, and decoding (on the async tasks)
//! overlaps with writing (on the blocking thread). Batches the sink is done with go back to a
//! [`RowPool`], and the copy decodes into their rows again: no allocation per value, and memory
//! is freed by the thread that allocated it (a cross-thread free costs the allocator more).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::SyncError;
use crate::model::Value;
use crate::sink::{Cursor, Load, RenderRows, RowBatches, Sink, SinkError};

/// What a copy task sends for one chunk: row batches, then [`Feed::End`]. A channel that closes
/// without `End` (the task failed or was cancelled) or a [`Feed::Failed`] makes the sink store
/// nothing of the chunk: a chunk is stored whole or not at all.
pub enum Feed {
    Rows(Vec<Vec<Value>>),
    End,
    Failed(String),
}

/// Batches in flight per chunk (2,000 rows each): enough to keep the COPY streaming while the sink
/// commits the previous chunk (tens of ms), at most a few MB per chunk.
pub const CHANNEL_BATCHES: usize = 16;

/// Batches kept for reuse, at most: what one chunk has in flight and a few more.
const POOL_BATCHES: usize = CHANNEL_BATCHES + 4;

/// Row batches the sink is done with, for the copies to decode into again.
#[derive(Clone, Default)]
pub struct RowPool(Arc<Mutex<Vec<Vec<Vec<Value>>>>>);

impl RowPool {
    /// A batch to fill: a used one (its rows' buffers reused) or a new one.
    pub fn take(&self) -> Vec<Vec<Value>> {
        self.0
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }

    /// Keeps `batch` for reuse unless the pool is full.
    pub fn give(&self, batch: Vec<Vec<Value>>) {
        if let Ok(mut p) = self.0.lock() {
            if p.len() < POOL_BATCHES {
                p.push(batch);
            }
        }
    }
}

#[derive(Clone)]
pub struct SinkHandle {
    sink: Arc<Mutex<Box<dyn Sink>>>,
    pool: RowPool,
}

impl SinkHandle {
    pub fn new(sink: Box<dyn Sink>) -> Self {
        SinkHandle {
            sink: Arc::new(Mutex::new(sink)),
            pool: RowPool::default(),
        }
    }

    /// Where [`chunk`](Self::chunk) returns the batches it stored, for the copies to reuse.
    pub fn pool(&self) -> &RowPool {
        &self.pool
    }

    /// The sink back, once no copy task holds a handle.
    pub fn into_inner(self) -> Result<Box<dyn Sink>, SyncError> {
        Arc::try_unwrap(self.sink)
            .map_err(|_| SyncError::SinkLost)?
            .into_inner()
            .map_err(|_| SyncError::SinkLost)
    }

    /// Runs `f` with the sink on a blocking thread.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Sink) -> Result<T, SinkError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let sink = Arc::clone(&self.sink);
        tokio::task::spawn_blocking(move || {
            let mut guard = sink.lock().map_err(|_| SyncError::SinkLost)?;
            f(&mut **guard).map_err(SyncError::Sink)
        })
        .await
        .map_err(|_| SyncError::SinkLost)?
    }

    /// Stores one chunk whose rows arrive on `rows` (see [`Sink::load_chunk`]). A chunk without a
    /// cursor, of a sink that renders its loaded rows ([`Sink::load_renderer`]), is rendered on its
    /// own thread and appended a piece at a time, so chunks read side by side are rendered side by
    /// side instead of waiting for the sink in turn.
    pub async fn chunk(
        &self,
        load: Load,
        chunk: u32,
        rows: mpsc::Receiver<Feed>,
        cursor: Option<Cursor>,
    ) -> Result<u64, SyncError> {
        let batches = Batches {
            rx: rows,
            current: Vec::new(),
            pool: self.pool.clone(),
            done: false,
        };
        let renderer = match cursor {
            None => {
                let l = load.clone();
                self.with(move |sink| Ok(sink.load_renderer(&l))).await?
            }
            Some(_) => None,
        };
        match renderer {
            Some(renderer) => self.rendered(load, batches, renderer).await,
            None => {
                self.with(move |sink| {
                    let mut batches = batches;
                    sink.load_chunk(&load, chunk, &mut batches, cursor.as_ref())
                })
                .await
            }
        }
    }

    /// [`chunk`](Self::chunk) for a rendering sink: rows rendered here, appended every
    /// [`PIECE_BYTES`], the last piece made durable.
    async fn rendered(
        &self,
        load: Load,
        mut batches: Batches,
        mut renderer: Box<dyn RenderRows>,
    ) -> Result<u64, SyncError> {
        let sink = Arc::clone(&self.sink);
        let append = move |text: &str, rows: u64, durable: bool| {
            let mut guard = sink.lock().map_err(|_| SyncError::SinkLost)?;
            guard
                .load_append(&load, text, rows, durable)
                .map_err(SyncError::Sink)
        };
        tokio::task::spawn_blocking(move || {
            let mut text = String::with_capacity(PIECE_BYTES + PIECE_BYTES / 8);
            let (mut rows, mut piece_rows) = (0u64, 0u64);
            while let Some(batch) = batches.next_batch() {
                let batch = batch.map_err(SyncError::Sink)?;
                renderer.render(batch, &mut text).map_err(SyncError::Sink)?;
                piece_rows += batch.len() as u64;
                if text.len() >= PIECE_BYTES {
                    append(&text, piece_rows, false)?;
                    rows += std::mem::take(&mut piece_rows);
                    text.clear();
                }
            }
            append(&text, piece_rows, true)?;
            Ok(rows + piece_rows)
        })
        .await
        .map_err(|_| SyncError::SinkLost)?
    }
}

/// How much rendered text a chunk gathers before appending it to the sink: few enough lock
/// round-trips and writes, little memory per chunk.
const PIECE_BYTES: usize = 1 << 20;

/// The rows of a chunk, read from the channel a batch at a time as the sink asks for them.
struct Batches {
    rx: mpsc::Receiver<Feed>,
    /// The batch lent last; back to the pool when the next is asked for.
    current: Vec<Vec<Value>>,
    pool: RowPool,
    /// `End` or a failure was seen: nothing more comes.
    done: bool,
}

impl RowBatches for Batches {
    fn next_batch(&mut self) -> Option<Result<&[Vec<Value>], SinkError>> {
        let used = std::mem::take(&mut self.current);
        if used.capacity() > 0 {
            self.pool.give(used);
        }
        if self.done {
            return None;
        }
        let reason = match self.rx.blocking_recv() {
            Some(Feed::Rows(batch)) => {
                self.current = batch;
                return Some(Ok(&self.current));
            }
            Some(Feed::End) => {
                self.done = true;
                return None;
            }
            Some(Feed::Failed(reason)) => reason,
            None => "the copy stopped before the end of the chunk".to_string(),
        };
        self.done = true;
        Some(Err(SinkError::Upstream {
            commit_lsn: crate::model::Lsn(0),
            reason,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testkit::accounts;
    use crate::sink::LoadMode;

    fn snapshot_load() -> Load {
        Load {
            relation: accounts(),
            mode: LoadMode::Replace,
            position: crate::model::Lsn(0x10),
            snapshot: String::new(),
            sync: "snapshot",
            chunk_blocks: 0,
            partitions: None,
        }
    }

    fn row(i: i64) -> Vec<Value> {
        vec![
            Value::Int(i),
            Value::Text(format!("n{i}")),
            Value::Numeric("1".into()),
        ]
    }

    fn jsonl_handle(path: &std::path::Path) -> SinkHandle {
        let sink = crate::sink::jsonl::JsonlSink::open(path.to_str().unwrap()).unwrap();
        SinkHandle::new(Box::new(sink))
    }

    /// The batches a chunk stored come back to the pool, rows and all, for the copy to reuse.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_batches_return_to_the_pool_for_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let handle = jsonl_handle(&dir.path().join("out.jsonl"));
        let load = snapshot_load();
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        for b in 0..3 {
            tx.send(Feed::Rows((0..10).map(|i| row(b * 10 + i)).collect()))
                .await
                .unwrap();
        }
        tx.send(Feed::End).await.unwrap();
        assert_eq!(handle.chunk(load, 0, rx, None).await.unwrap(), 30);
        let mut kept = 0;
        loop {
            let batch = handle.pool().take();
            if batch.is_empty() {
                break;
            }
            assert_eq!(batch.len(), 10, "a batch comes back with its rows");
            kept += 1;
        }
        assert_eq!(kept, 3);
    }

    /// A rendering sink (JSON Lines) stores a chunk while another one is still being read: chunks
    /// read side by side do not wait for each other, and every row of both lands once, between
    /// the load's markers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rendering_sink_stores_a_chunk_while_another_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let handle = jsonl_handle(&path);
        let load = snapshot_load();
        let begin = load.clone();
        handle.with(move |s| s.load_begin(&begin)).await.unwrap();
        let (slow_tx, slow_rx) = mpsc::channel(CHANNEL_BATCHES);
        let slow = {
            let (handle, load) = (handle.clone(), load.clone());
            tokio::spawn(async move { handle.chunk(load, 0, slow_rx, None).await })
        };
        slow_tx
            .send(Feed::Rows(vec![row(1), row(2)]))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        tx.send(Feed::Rows(vec![row(10), row(11), row(12)]))
            .await
            .unwrap();
        tx.send(Feed::End).await.unwrap();
        let stored = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            handle.chunk(load.clone(), 1, rx, None),
        )
        .await
        .expect("the second chunk is stored while the first one is still open");
        assert_eq!(stored.unwrap(), 3);
        assert!(!slow.is_finished());
        slow_tx.send(Feed::Rows(vec![row(3)])).await.unwrap();
        slow_tx.send(Feed::End).await.unwrap();
        assert_eq!(slow.await.unwrap().unwrap(), 3);
        let end = load.clone();
        assert_eq!(handle.with(move |s| s.load_finish(&end)).await.unwrap(), 6);
        drop(handle);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.first().unwrap()["event"], "load_start");
        assert_eq!(lines.last().unwrap()["event"], "load_end");
        assert_eq!(lines.last().unwrap()["rows"], 6);
        let mut ids: Vec<i64> = lines[1..lines.len() - 1]
            .iter()
            .map(|l| l["after"]["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, [1, 2, 3, 10, 11, 12]);
    }

    /// A chunk of a rendering sink that fails midway is an error naming the failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rendered_chunk_failing_midway_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let handle = jsonl_handle(&dir.path().join("out.jsonl"));
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        tx.send(Feed::Rows(vec![row(1)])).await.unwrap();
        tx.send(Feed::Failed("connection lost".into()))
            .await
            .unwrap();
        let err = handle
            .chunk(snapshot_load(), 0, rx, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connection lost"), "{err}");
    }
}
