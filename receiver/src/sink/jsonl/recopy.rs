//! Re-copies into a JSON Lines file: the rows of a table re-read while the stream runs, written
//! exactly at the stream position they were read at.
//!
//! ```text
//! re-copier                                   the stream's writer (JsonlSink::write, its own thread)
//! place(tables) ─────────────── hold ───────▶ every write waits (the position is not known yet)
//! temporary slot ─▶ consistent point L
//! at(L) ──────────────────────────────────▶ transactions committed before L are written; the
//! copy under the slot's snapshot ─▶ staging     first at or after L waits
//! ready(staging file) ─────────────────────▶ load_start, the rows, load_end appended (one fsync,
//!                                             the sidecar records the copy), then the rest
//! landed? ◀──────────────────────────────── landed(result)
//! ```
//!
//! A consumer replaces the table with the rows between `load_start` and `load_end` and applies the
//! lines that follow, exactly as after the initial copy: every change committed before L is in the
//! copy and above it in the file, every one committed at or after L below it. The price is that the
//! file gets nothing newer than L while the table is read (the slot keeps it meanwhile).
//!
//! A copy that fails or is stopped abandons its hold, and the writer goes on; the request stays
//! where it came from (the request file, or the scan that found the table) and is tried again.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::model::Lsn;

/// A copy landed in the file: the table, where it was read, and the leaves it read (a partitioned
/// table mirrored under its root).
#[derive(Debug, Clone, PartialEq)]
pub struct Copied {
    pub schema: String,
    pub table: String,
    pub position: Lsn,
    pub partitions: Option<Vec<u32>>,
    pub rows: u64,
}

#[derive(Debug)]
enum Hold {
    /// The re-copy's position is being fixed: nothing may be written.
    Placing,
    /// Transactions committed before the position may be written, none after.
    At(Lsn),
    /// The copy is read: it goes into the file before the first transaction at or after `at`.
    Ready {
        at: Lsn,
        staged: PathBuf,
        copied: Vec<Copied>,
    },
    /// The writer put it there (or could not: the error, for the re-copier to report).
    Landed(Result<(), String>),
}

/// What the re-copier and the writer share. At most one hold at a time.
#[derive(Debug, Default)]
pub struct Gate {
    hold: Mutex<Option<Hold>>,
    changed: Condvar,
}

/// What the writer must do before it writes more.
pub(super) enum Due {
    /// Nothing is held: write.
    Free,
    /// Write what was committed before this position; then call [`Gate::wait_ready`].
    Before(Lsn),
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Hold>> {
        // A panic while holding this lock leaves plain data behind: still usable.
        self.hold.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the writer from now on, before the re-copy's position is known. `None` while another
    /// re-copy holds it.
    pub fn place(self: &Arc<Gate>) -> Option<Ticket> {
        let mut hold = self.lock();
        if hold.as_ref().is_some_and(|h| !matches!(h, Hold::Landed(_))) {
            return None;
        }
        *hold = Some(Hold::Placing);
        Some(Ticket {
            gate: Arc::clone(self),
            done: false,
        })
    }

    /// Writer side: waits while the position is being fixed, then says what may be written.
    pub(super) fn due(&self) -> Due {
        let mut hold = self.lock();
        loop {
            match &*hold {
                Some(Hold::Placing) => {
                    hold = self.changed.wait(hold).unwrap_or_else(|p| p.into_inner())
                }
                Some(Hold::At(at)) | Some(Hold::Ready { at, .. }) => return Due::Before(*at),
                None | Some(Hold::Landed(_)) => return Due::Free,
            }
        }
    }

    /// Writer side, once everything before the position is written: waits for the copy and returns
    /// it to be written (`None`: it was abandoned; write on).
    pub(super) fn wait_ready(&self) -> Option<(PathBuf, Vec<Copied>)> {
        let mut hold = self.lock();
        loop {
            match &*hold {
                Some(Hold::Placing) | Some(Hold::At(_)) => {
                    hold = self.changed.wait(hold).unwrap_or_else(|p| p.into_inner())
                }
                Some(Hold::Ready { staged, copied, .. }) => {
                    return Some((staged.clone(), copied.clone()))
                }
                None | Some(Hold::Landed(_)) => return None,
            }
        }
    }

    /// Writer side: the copy is in the file (or could not be put there).
    pub(super) fn landed(&self, result: Result<(), String>) {
        *self.lock() = Some(Hold::Landed(result));
        self.changed.notify_all();
    }

    fn set(&self, h: Option<Hold>) {
        *self.lock() = h;
        self.changed.notify_all();
    }
}

/// The re-copier's side of one hold. Dropped before it landed (a failed or stopped copy), it lets
/// the writer go on without the copy.
pub struct Ticket {
    gate: Arc<Gate>,
    done: bool,
}

impl Ticket {
    /// The copy's position is `at`: writing goes on up to it.
    pub fn at(&self, at: Lsn) {
        self.gate.set(Some(Hold::At(at)));
    }

    /// The copy is read into `staged` (whole: `load_start`, the rows, `load_end`).
    pub fn ready(&self, at: Lsn, staged: PathBuf, copied: Vec<Copied>) {
        self.gate.set(Some(Hold::Ready { at, staged, copied }));
    }

    /// `Some` once the writer put the copy into the file (or failed to).
    pub fn landed(&mut self) -> Option<Result<(), String>> {
        let hold = self.gate.lock();
        match &*hold {
            Some(Hold::Landed(r)) => {
                self.done = true;
                Some(r.clone())
            }
            _ => None,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            let mut hold = self.gate.lock();
            if !matches!(&*hold, Some(Hold::Landed(_))) {
                *hold = None;
            }
            drop(hold);
            self.gate.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_waits_while_placing_and_a_dropped_ticket_frees_it() {
        let gate = Gate::new();
        let ticket = gate.place().expect("free");
        assert!(gate.place().is_none(), "one hold at a time");
        let g = Arc::clone(&gate);
        let writer = std::thread::spawn(move || match g.due() {
            Due::Before(at) => Some(at),
            Due::Free => None,
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !writer.is_finished(),
            "the writer must wait while the position is unknown"
        );
        ticket.at(Lsn(100));
        assert_eq!(writer.join().unwrap(), Some(Lsn(100)));
        let g = Arc::clone(&gate);
        let waiting = std::thread::spawn(move || g.wait_ready());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiting.is_finished());
        drop(ticket);
        assert_eq!(waiting.join().unwrap(), None, "abandoned: write on");
        assert!(matches!(gate.due(), Due::Free));
    }

    #[test]
    fn a_ready_copy_is_handed_over_and_its_landing_reported() {
        let gate = Gate::new();
        let mut ticket = gate.place().unwrap();
        ticket.at(Lsn(7));
        ticket.ready(Lsn(7), PathBuf::from("/x"), Vec::new());
        assert!(matches!(gate.due(), Due::Before(Lsn(7))));
        assert_eq!(gate.wait_ready().map(|r| r.0), Some(PathBuf::from("/x")));
        assert_eq!(ticket.landed(), None);
        gate.landed(Ok(()));
        assert_eq!(ticket.landed(), Some(Ok(())));
        drop(ticket);
        assert!(gate.place().is_some(), "free again after landing");
    }
}
