//! The sink, shared by the copy tasks: each load step runs on a blocking thread, one at a time.
//!
//! ```text
//! copy task ──rows (bounded channel)──▶ blocking thread: sink.load_chunk(rows…) ──▶ Ok(count)
//! ```
//!
//! A chunk's rows flow from the COPY stream into the sink as they are decoded, through a bounded
//! channel: memory stays bounded whatever the chunk's size, and decoding (on the async tasks)
//! overlaps with writing (on the blocking thread).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::SyncError;
use crate::model::Value;
use crate::sink::{Cursor, Load, Sink, SinkError};

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

#[derive(Clone)]
pub struct SinkHandle {
    sink: Arc<Mutex<Box<dyn Sink>>>,
}

impl SinkHandle {
    pub fn new(sink: Box<dyn Sink>) -> Self {
        SinkHandle {
            sink: Arc::new(Mutex::new(sink)),
        }
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
        self.with(move |sink| {
            let mut it = Rows {
                rx: rows,
                current: Vec::new().into_iter(),
                failed: false,
            };
            sink.load_chunk(&load, chunk, &mut it, cursor.as_ref())
        })
        .await
    }
}

/// The rows of a chunk, read from the channel as the sink asks for them.
struct Rows {
    rx: mpsc::Receiver<Feed>,
    current: std::vec::IntoIter<Vec<Value>>,
    /// `End` or a failure was seen: nothing more comes.
    failed: bool,
}

impl Iterator for Rows {
    type Item = Result<Vec<Value>, SinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(row) = self.current.next() {
                return Some(Ok(row));
            }
            let reason = match self.rx.blocking_recv() {
                Some(Feed::Rows(batch)) => {
                    self.current = batch.into_iter();
                    continue;
                }
                Some(Feed::End) => {
                    self.failed = true;
                    return None;
                }
                Some(Feed::Failed(reason)) => reason,
                None => "the copy stopped before the end of the chunk".to_string(),
            };
            self.failed = true;
            return Some(Err(SinkError::Upstream {
                commit_lsn: crate::model::Lsn(0),
                reason,
            }));
        }
    }
}
