//! Stops the servers still running when the test process exits normally.
//!
//! `Drop` never runs for a server kept in a `static` (one server shared by many tests, a common way
//! to save the start-up time) or leaked, and the postmaster, started as our child, would outlive
//! the test binary. An `atexit` handler covers that: it stops every server not stopped by then
//! (immediate shutdown) and removes its dir. What even `atexit` misses (SIGKILL, abort) is left
//! to the reaper at the next start.

use std::path::PathBuf;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

struct Running {
    pid: u32,
    cluster_dir: PathBuf,
}

static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// Records a postmaster (a child of this process) and its cluster dir.
pub(crate) fn track(pid: u32, cluster_dir: PathBuf) {
    INSTALL.call_once(|| {
        // SAFETY: registering a plain extern "C" function; failure only means no cleanup at exit.
        unsafe { libc::atexit(stop_all_at_exit) };
    });
    lock().push(Running { pid, cluster_dir });
}

/// Forgets a postmaster that was stopped (or killed) the ordinary way.
pub(crate) fn untrack(pid: u32) {
    lock().retain(|running| running.pid != pid);
}

fn lock() -> std::sync::MutexGuard<'static, Vec<Running>> {
    RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

extern "C" fn stop_all_at_exit() {
    // try_lock: a thread stopped mid-update must not hang the exit; the reaper covers that case.
    let running = match RUNNING.try_lock() {
        Ok(mut guard) => std::mem::take(&mut *guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => {
            std::mem::take(&mut *poisoned.into_inner())
        }
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for server in &running {
        if let Ok(pid) = libc::pid_t::try_from(server.pid) {
            // SAFETY: the pid is our own unreaped child, so it names the postmaster we started.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
    }
    for server in running {
        wait_child(server.pid, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&server.cluster_dir);
    }
}

/// Reaps our child `pid`, killing it if it has not exited within `timeout`.
fn wait_child(pid: u32, timeout: Duration) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    let deadline = Instant::now() + timeout;
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done != 0 {
            return; // exited and reaped, or not our child any more (-1)
        }
        if Instant::now() >= deadline {
            // SAFETY: as above; then a blocking wait, which SIGKILL makes short.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
