//! Cleans up clusters whose test process died without running `Drop`.
//!
//! `Drop` covers a passing test, a failing one and a panic. It cannot cover a test process killed
//! by SIGKILL, an abort (a panic inside a panic), or a CI timeout: their postmasters keep running,
//! holding ports, memory and disk. So every start first sweeps the base dir: a cluster whose owner
//! process is gone gets its postmaster stopped (SIGQUIT, the immediate shutdown, then SIGKILL) and
//! its dir removed. Clusters of live owners, in this process or others, are never touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::cluster_dir::{Owner, OWNERLESS_GRACE};
use crate::postmaster_pid::PostmasterPid;
use crate::process;

/// Stops and removes every cluster under `base` whose owning test process is gone; returns the
/// dirs removed. Failures (a cluster of another user we may not touch) are reported on stderr and
/// skipped: cleaning up is a courtesy, it must not fail the test that happens to start next.
pub fn reap_stale_clusters(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let root = entry.path();
        if !root.is_dir() || !is_stale(&root) {
            continue;
        }
        stop_postmaster(&root.join("data"));
        match std::fs::remove_dir_all(&root) {
            Ok(()) => reaped.push(root),
            // Another process reaped it at the same time.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "fig-tests: could not remove stale cluster {}: {e}",
                root.display()
            ),
        }
    }
    reaped
}

fn is_stale(root: &Path) -> bool {
    match Owner::read(root) {
        Some(owner) => !owner.is_alive(),
        // No owner file: either being created this instant (leave it) or debris of a process
        // killed between mkdir and writing the file (old).
        None => age(root).is_some_and(|age| age > OWNERLESS_GRACE),
    }
}

fn age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    SystemTime::now().duration_since(modified).ok()
}

fn stop_postmaster(data_dir: &Path) {
    let Some(lock) = PostmasterPid::read(data_dir) else {
        return;
    };
    // The pid in a stale lock file may since have been given to an unrelated process: only signal
    // a process whose command line names this data dir (the harness starts `postgres -D <abs>`).
    let data = data_dir.to_string_lossy();
    let is_ours = process::cmdline(lock.pid).is_some_and(|cmd| cmd.contains(data.as_ref()));
    if !is_ours || !process::is_alive(lock.pid) {
        return;
    }
    let children = process::children_of(lock.pid);
    process::signal(lock.pid, libc::SIGQUIT);
    if process::wait_gone(&[lock.pid], Duration::from_secs(10)) {
        return;
    }
    eprintln!(
        "fig-tests: stale postmaster {} ignored SIGQUIT; killing it",
        lock.pid
    );
    process::signal(lock.pid, libc::SIGKILL);
    for child in children {
        process::signal(child, libc::SIGKILL);
    }
}
