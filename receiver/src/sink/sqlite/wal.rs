//! Checkpointing the sink's WAL on a thread of its own.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses `wal_autocheckpoint` pages, so
//! every few batches one write also copied the WAL back into the database file and fsynced it: a
//! fifth of the sink's time in the streaming benchmark. Here the writing connection has automatic
//! checkpoints off and a second connection runs PASSIVE checkpoints (which never block the writer)
//! after commits, at most every [`PAUSE`]. Durability is unchanged: a commit is durable once its WAL
//! frames are fsynced (`synchronous = FULL`), whether or not they were checkpointed yet.
//!
//! A passive checkpoint racing a writer never lets the WAL start over while batches follow each
//! other without a gap: the file only starts over when a writer begins after a checkpoint copied
//! every frame. (A RESTART checkpoint would wait on SQLite's busy handler, starve behind such a
//! writer, and wait for readers too.) So past [`RESTART_BYTES`] the checkpointer takes the
//! [`Gate`] every write transaction holds and checkpoints once more between two batches; the passive
//! checkpoints copied almost everything already, so the writer waits only for the last few frames,
//! and its next transaction starts the file over unless a reader still uses the WAL (it never waits
//! for readers).
//!
//! The WAL restarts often ([`RESTART_BYTES`]): after a restart SQLite overwrites the file from its
//! start, so a long catch-up writes into file pages that already exist (in the page cache and on
//! disk) instead of growing the file by every frame, which made each fdatasync also commit the file
//! system's journal for the new size. At 256 MB a 1,000,000-row catch-up (362 MB of WAL) only ever
//! appended; at 16 MB the receiver's system time fell by a third to a half.

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::warn;

/// The shortest interval between two checkpoints: batches commit far more often.
const PAUSE: Duration = Duration::from_millis(50);
/// A WAL this long is also checkpointed between two writes, to start over.
const RESTART_BYTES: i64 = 16 * 1024 * 1024;

/// Held by each write transaction, and by the checkpointer between two writes.
pub type Gate = Arc<Mutex<()>>;

#[derive(Default)]
struct Shared {
    /// A commit happened since the last checkpoint.
    dirty: bool,
    stop: bool,
}

/// The checkpointing thread; stopped (after a last checkpoint) when dropped.
pub struct Checkpointer {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    gate: Gate,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Turns the automatic checkpoint of `writer` off and starts checkpointing `path` beside it.
    pub fn start(writer: &Connection, path: &Path) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(1))?;
        // A file's page size is fixed once it has tables (4 KiB in files made before 16 KiB pages).
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let restart_frames = RESTART_BYTES / page.max(512);
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let gate = Gate::default();
        let (theirs, their_gate) = (Arc::clone(&shared), Arc::clone(&gate));
        let thread = std::thread::Builder::new()
            .name("fig-sqlite-checkpoint".into())
            .spawn(move || run(conn, restart_frames, &theirs, &their_gate))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Checkpointer {
            shared,
            gate,
            thread: Some(thread),
        })
    }

    /// The gate a write transaction holds from BEGIN to COMMIT.
    pub fn gate(&self) -> Gate {
        Arc::clone(&self.gate)
    }

    /// Tells the thread a write committed.
    pub fn committed(&self) {
        let (lock, wake) = &*self.shared;
        if let Ok(mut s) = lock.lock() {
            s.dirty = true;
            wake.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        if let Ok(mut s) = lock.lock() {
            s.stop = true;
            wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: Connection, restart_frames: i64, shared: &(Mutex<Shared>, Condvar), gate: &Mutex<()>) {
    let (lock, wake) = shared;
    loop {
        let stop = {
            let Ok(mut s) = lock.lock() else { return };
            while !s.dirty && !s.stop {
                s = match wake.wait(s) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
            s.dirty = false;
            s.stop
        };
        if let Err(e) = checkpoint(&conn, restart_frames, gate) {
            // Not fatal: the WAL only grows until a later checkpoint succeeds.
            warn!(error = %e, "checkpointing the SQLite WAL failed; will retry after the next commit");
        }
        if stop {
            return;
        }
        std::thread::sleep(PAUSE);
    }
}

/// One PASSIVE checkpoint beside the writer, then, if the WAL is long, one between two writes.
fn checkpoint(conn: &Connection, restart_frames: i64, gate: &Mutex<()>) -> rusqlite::Result<()> {
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    if frames > restart_frames {
        // A writer that panicked poisoned nothing this lock protects.
        let _between_batches = gate.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    }
    Ok(())
}
