//! The sink, shared by the copy tasks: each load step runs on a blocking thread, one at a time.
//!
//! ```text
//! copy task ──rows (bounded channel)──▶ blocking thread: sink.load_chunk(rows…) ──▶ Ok(count)
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
use crate::sink::{Cursor, Load, RowBatches, Sink, SinkError};

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

    /// Stores one chunk whose rows arrive on `rows` (see [`Sink::load_chunk`]).
    pub async fn chunk(
        &self,
        load: Load,
        chunk: u32,
        rows: mpsc::Receiver<Feed>,
        cursor: Option<Cursor>,
    ) -> Result<u64, SyncError> {
        let pool = self.pool.clone();
        self.with(move |sink| {
            let mut batches = Batches {
                rx: rows,
                current: Vec::new(),
                pool,
                done: false,
            };
            sink.load_chunk(&load, chunk, &mut batches, cursor.as_ref())
        })
        .await
    }
}

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
    use crate::sink::{LoadMode, Sink};

    /// The batches a chunk stored come back to the pool, rows and all, for the copy to reuse.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_batches_return_to_the_pool_for_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let sink: Box<dyn Sink> =
            Box::new(crate::sink::jsonl::JsonlSink::open(path.to_str().unwrap()).unwrap());
        let handle = SinkHandle::new(sink);
        let load = Load {
            relation: accounts(),
            mode: LoadMode::Replace,
            position: crate::model::Lsn(0x10),
            snapshot: String::new(),
            sync: "snapshot",
            chunk_blocks: 0,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let row = |i: i64| {
            vec![
                Value::Int(i),
                Value::Text(format!("n{i}")),
                Value::Numeric("1".into()),
            ]
        };
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
}
