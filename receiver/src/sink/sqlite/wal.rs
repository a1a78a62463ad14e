//! Checkpointing the sink's WAL on a thread of its own.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses `wal_autocheckpoint` pages, so
//! every few batches one write also copied the WAL back into the database file and fsynced it: a
//! fifth of the sink's time in the streaming benchmark. Here the writing connection has automatic
//! checkpoints off and a second connection runs PASSIVE checkpoints (which never block the writer)
//! after commits, at most every [`PAUSE`]. Durability is unchanged: a commit is durable once its WAL
//! frames are fsynced (`synchronous = FULL`), whether or not they were checkpointed yet.
//!
//! A passive checkpoint never lets the WAL start over while batches follow each other without a
//! gap (the file only restarts when a writer begins after a checkpoint copied every frame), and a
//! RESTART checkpoint waiting on SQLite's busy handler starves behind such a writer. So past
//! [`RESTART_FRAMES`] the checkpointer takes the [`Gate`] every write transaction holds, and restarts
//! the WAL between two batches: the passive checkpoints copied almost everything already, so the
//! writer waits only for the last few frames.

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::warn;

/// The shortest interval between two checkpoints: batches commit far more often.
const PAUSE: Duration = Duration::from_millis(50);
/// A WAL this many frames (pages of 4 KiB) long is restarted rather than only copied back.
const RESTART_FRAMES: i64 = 16_384;
/// How long a restart waits for readers of an older snapshot before trying again later.
const RESTART_PATIENCE: Duration = Duration::from_millis(200);

/// Held by each write transaction, and by the checkpointer while it restarts the WAL.
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
        // Short: while restarting, the writer waits on the gate; a reader (a report, the sqlite3
        // shell) holding an old snapshot makes the restart give up rather than stall the stream.
        conn.busy_timeout(RESTART_PATIENCE)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let gate = Gate::default();
        let (theirs, their_gate) = (Arc::clone(&shared), Arc::clone(&gate));
        let thread = std::thread::Builder::new()
            .name("fig-sqlite-checkpoint".into())
            .spawn(move || run(conn, &theirs, &their_gate))
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

fn run(conn: Connection, shared: &(Mutex<Shared>, Condvar), gate: &Mutex<()>) {
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
        if let Err(e) = checkpoint(&conn, gate) {
            // Not fatal: the WAL only grows until a later checkpoint succeeds.
            warn!(error = %e, "checkpointing the SQLite WAL failed; will retry after the next commit");
        }
        if stop {
            return;
        }
        std::thread::sleep(PAUSE);
    }
}

/// One PASSIVE checkpoint, then a RESTART one if the WAL is long: the passive one copied almost
/// everything without blocking, so the writer waits only for the last few frames. RESTART rather
/// than TRUNCATE: the writer then overwrites blocks the file already has.
fn checkpoint(conn: &Connection, gate: &Mutex<()>) -> rusqlite::Result<()> {
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    if frames > RESTART_FRAMES {
        // A writer that panicked poisoned nothing this lock protects.
        let _between_batches = gate.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}
