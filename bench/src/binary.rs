//! Running the programs a benchmark measures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The fig-receiver binary: `$FIG_RECEIVER`, or built now (same profile, same target dir as this
/// benchmark) and taken from beside it.
pub fn receiver_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FIG_RECEIVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench crate lives in the workspace");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .current_dir(root)
        .args(["build", "--quiet", "-p", "fig-receiver"]);
    // `cargo run` gives fig-bench its package's variables (CARGO_MANIFEST_DIR, CARGO_PKG_*, …).
    // Passed on, they reach build scripts that watch them (ring's reruns when CARGO_MANIFEST_DIR
    // changes): ring, rustls, ureq and fig-receiver were rebuilt on every `bench/run`, and again by
    // the next plain `cargo build`, two to three minutes each time on this machine.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let from_cargo_run = key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
            );
        if from_cargo_run {
            build.env_remove(key.as_ref());
        }
    }
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build -p fig-receiver");
    assert!(status.success(), "cargo build -p fig-receiver failed");
    let exe = std::env::current_exe().expect("locating fig-bench");
    exe.parent()
        .expect("fig-bench lives in a directory")
        .join("fig-receiver")
}

/// Runs `cmd` to completion; its wall time in seconds. Panics unless it exits 0.
pub fn wall(cmd: &mut Command) -> f64 {
    let started = Instant::now();
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "{cmd:?} failed: {status}");
    secs
}

/// Lets the server checkpoint and the kernel write back every dirty page before a path is timed:
/// the previous path may have written gigabytes (SQLite's WAL and database), whose write-back could
/// run during the next path and be timed as its cost (back-to-back receive runs of one route,
/// without this, took 5.3 s to 9.3 s).
pub fn settle(db: &mut postgres::Client) {
    db.batch_execute("CHECKPOINT")
        .expect("checkpointing the server");
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Removes a SQLite file and the `-wal` and `-shm` files beside it, if there are any.
pub fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// A process's log file as text (empty if there is none yet).
pub fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Waits until `child` streams `slot` (the slot is active). Panics with the log at `log` if the
/// child exits first or is not streaming within 60 s.
pub fn wait_streaming(db: &mut postgres::Client, child: &mut Child, slot: &str, log: &Path) {
    let t = Instant::now();
    loop {
        let active: Option<bool> = db
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .expect("reading pg_replication_slots")
            .map(|r| r.get(0));
        if active == Some(true) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "fig-receiver (slot {slot}) exited ({status}) before streaming:\n{}",
                read_log(log)
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "fig-receiver (slot {slot}) did not start streaming in 60 s:\n{}",
            read_log(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
