//! One writer per sink: `run` holds an exclusive lock on `PATH.lock` beside the sink for as long
//! as it runs, so a second `run` on the same sink (another slot, a copy of a service unit, a
//! mistyped config) stops at once instead of interleaving its batches with the first one's. A
//! JSON Lines file cannot take two writers at all (each appends at its own offset); a SQLite
//! file could, but two streams into one history would store changes twice or refuse each other's.
//!
//! The lock is the kernel's (`flock`): released when the process ends, however it ends, so a
//! receiver killed with -9 leaves nothing to clean up. The file is kept (an empty file that may be
//! removed while no receiver runs) and holds the holder's pid, for the message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::SinkError;

/// Held while the sink is written; dropping it releases the lock.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

/// The lock file of the sink at `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl WriterLock {
    /// Takes the writer lock of the sink at `path`, or says who holds it. A pipe or a character
    /// device (`jsonl:/dev/null`) is a stream that keeps nothing: no lock (and no file beside it).
    pub fn acquire(path: &Path) -> Result<Option<WriterLock>, SinkError> {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata(path)
            .is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_char_device())
        {
            return Ok(None);
        }
        let lock = lock_path(path);
        let io = |what: &'static str| {
            let lock = lock.clone();
            move |source| SinkError::Io {
                path: lock.clone(),
                what,
                source,
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock)
            .map_err(io("opening the sink's lock file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(SinkError::Locked {
                    path: path.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("locking the sink")(e)),
        }
        file.set_len(0)
            .map_err(io("writing the sink's lock file"))?;
        file.rewind().map_err(io("writing the sink's lock file"))?;
        write!(file, "{}", std::process::id()).map_err(io("writing the sink's lock file"))?;
        Ok(Some(WriterLock { _file: file }))
    }
}
