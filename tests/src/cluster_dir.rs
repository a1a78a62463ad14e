//! Where a throwaway cluster lives, and who owns it.
//!
//! ```text
//! $FIG_PG_BASE_DIR or $TMPDIR/fig-pg/     mode 1777: shared by every test process and user
//!   <owner pid>-XXXXXX/                    one cluster, owned by the server's OS user, mode 0700
//!     owner                                "<pid> <start time>" of the test process that owns it
//!     data/                                PGDATA
//!     server.log                           the postmaster's stderr (logging_collector is off)
//!     .s.PGSQL.<port>                      the Unix socket: the dir is unix_socket_directories
//! ```
//!
//! A unique dir per cluster is what lets tests run in parallel, as threads of one process or as
//! separate nextest processes. The owner file is what lets a later run tell a cluster whose test
//! process died without running `Drop` (SIGKILL, abort, a CI timeout) from one still in use.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::HarnessError;
use crate::os_user::RunAs;
use crate::process;

/// Overrides the base dir under which clusters are created.
pub const BASE_DIR_ENV: &str = "FIG_PG_BASE_DIR";

const OWNER_FILE: &str = "owner";

/// sun_path is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The default base dir: `$FIG_PG_BASE_DIR`, else `$TMPDIR/fig-pg`.
pub fn default_base_dir() -> PathBuf {
    std::env::var_os(BASE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("fig-pg"))
}

#[derive(Debug)]
pub(crate) struct ClusterDir {
    root: PathBuf,
}

impl ClusterDir {
    /// Creates a fresh cluster dir under `base`, records this process as its owner and hands it to
    /// the server's OS user.
    pub(crate) fn create(base: &Path, run_as: &RunAs) -> Result<ClusterDir, HarnessError> {
        ensure_base_dir(base)?;
        let root = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempdir_in(base)
            .map_err(|e| HarnessError::io("cannot create a cluster dir", base, e))?
            .keep();
        let dir = ClusterDir { root };
        // From here on `dir` is removed if anything fails, so a failed start leaves nothing behind.
        let owner = Owner::current();
        std::fs::write(dir.owner_file(), owner.to_string()).map_err(|e| {
            HarnessError::io("cannot record the cluster's owner", dir.owner_file(), e)
        })?;
        run_as.chown(&dir.root)?;
        let longest_socket = dir.root.join(".s.PGSQL.65535").as_os_str().len();
        if longest_socket > MAX_SOCKET_PATH {
            return Err(HarnessError::SocketPathTooLong {
                path: dir.root.clone(),
                len: longest_socket,
            });
        }
        Ok(dir)
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    pub(crate) fn owner_file(&self) -> PathBuf {
        self.root.join(OWNER_FILE)
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        // The reaper of another process may have removed it already (after we were declared dead
        // by mistake, or in a test of the reaper); that is not worth a message.
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                eprintln!(
                    "fig-tests: could not remove cluster dir {}: {e}",
                    self.root.display()
                );
            }
            _ => {}
        }
    }
}

/// Creates the base dir if needed, world-writable with the sticky bit like /tmp: clusters of root's
/// tests (owned by `postgres`) and of non-root users' tests share it.
fn ensure_base_dir(base: &Path) -> Result<(), HarnessError> {
    if base.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(base)
        .map_err(|e| HarnessError::io("cannot create the clusters' base dir", base, e))?;
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| HarnessError::io("cannot open the clusters' base dir to all users", base, e))
}

/// The test process that owns a cluster. The start time guards against pid reuse: a new process
/// that got a dead owner's pid must not keep that owner's cluster alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub start_time: Option<u64>,
}

impl Owner {
    pub(crate) fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start_time: process::start_time(pid),
        }
    }

    /// Reads the owner of the cluster at `root`; None if the file is absent or unreadable.
    pub(crate) fn read(root: &Path) -> Option<Owner> {
        let text = std::fs::read_to_string(root.join(OWNER_FILE)).ok()?;
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        let start_time = words.next().and_then(|w| w.parse().ok());
        Some(Owner { pid, start_time })
    }

    /// Writes `owner` as the owner of the cluster at `root` (tests use it to fake a dead owner).
    pub fn write(root: &Path, owner: Owner) -> std::io::Result<()> {
        std::fs::write(root.join(OWNER_FILE), owner.to_string())
    }

    pub(crate) fn is_alive(&self) -> bool {
        process::is_alive(self.pid)
            && match (self.start_time, process::start_time(self.pid)) {
                (Some(recorded), Some(now)) => recorded == now,
                // Unknown start time: trust the pid rather than risk reaping a live cluster.
                _ => true,
            }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.start_time {
            Some(t) => writeln!(f, "{} {t}", self.pid),
            None => writeln!(f, "{}", self.pid),
        }
    }
}

/// How long a cluster dir may lack its owner file before it counts as debris: the file is written
/// right after the dir is created, so only a process killed in between leaves such a dir.
pub(crate) const OWNERLESS_GRACE: Duration = Duration::from_secs(60);
