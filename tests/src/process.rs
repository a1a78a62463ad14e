//! Facts about other processes, read from Linux's /proc, and signals to them.
//!
//! A zombie counts as gone: it runs nothing and holds nothing, and in containers whose init does not
//! reap orphans (this project's dev machines) a dead postmaster or backend stays a zombie forever.

use std::time::{Duration, Instant};

/// True if `pid` is a live (non-zombie) process.
pub fn is_alive(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let exists = unsafe { libc::kill(raw, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && stat_fields(pid).is_none_or(|fields| fields.state != 'Z')
}

/// The kernel's start time of `pid` (clock ticks since boot), which tells a process from a later one
/// that got the same pid.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid).map(|fields| fields.start_time)
}

/// Live processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|f| f.parent == parent && f.state != 'Z'))
        .collect()
}

/// The command line of `pid`, its arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .split('\0')
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(raw) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(raw, signal) };
    }
}

/// Waits until none of `pids` is alive; returns false if some still are after `timeout`.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|&pid| !is_alive(pid)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct StatFields {
    state: char,
    parent: u32,
    start_time: u64,
}

fn stat_fields(pid: u32) -> Option<StatFields> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself hold spaces and parentheses, so
    // fields are counted from the last ')'. After it: state (3), ppid (4), … starttime (22).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(StatFields {
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}
