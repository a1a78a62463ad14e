//! The postmaster's lock file, `$PGDATA/postmaster.pid`: how pg_ctl (and so the harness) learns the
//! postmaster's pid and whether it is ready, and how the reaper finds the server of a dead test.
//!
//! Line layout since PostgreSQL 10 (miscadmin.h, LOCK_FILE_LINE_*):
//! 1 pid, 2 data dir, 3 start time, 4 port, 5 socket dir, 6 listen address, 7 shmem key, 8 status
//! (`starting`, `stopping`, `ready`, `standby`).

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PostmasterPid {
    pub pid: u32,
    pub status: Option<String>,
}

impl PostmasterPid {
    /// Reads the lock file in `data_dir`; None if it is absent or not yet fully written (the
    /// postmaster writes it in steps while it starts).
    pub(crate) fn read(data_dir: &Path) -> Option<PostmasterPid> {
        let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
        Self::parse(&text)
    }

    fn parse(text: &str) -> Option<PostmasterPid> {
        let lines: Vec<&str> = text.lines().collect();
        let pid = lines.first()?.trim().parse().ok()?;
        let status = lines
            .get(7)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        Some(PostmasterPid { pid, status })
    }

    pub(crate) fn is_ready(&self) -> bool {
        // A standby reports `standby` once it accepts read-only connections.
        matches!(self.status.as_deref(), Some("ready" | "standby"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pid_and_status_of_a_ready_server() {
        let text = "14945\n/tmp/x/data\n1795564608\n54987\n/tmp/x\n127.0.0.1\n 10010904         9\nready   \n";
        let parsed = PostmasterPid::parse(text).unwrap();
        assert_eq!(
            parsed,
            PostmasterPid {
                pid: 14945,
                status: Some("ready".into())
            }
        );
        assert!(parsed.is_ready());
    }

    #[test]
    fn a_starting_or_half_written_file_is_not_ready() {
        assert!(!PostmasterPid::parse("14945\n/tmp/x/data\n")
            .unwrap()
            .is_ready());
        assert!(!PostmasterPid::parse("1\n2\n3\n4\n5\n6\n7\nstarting\n")
            .unwrap()
            .is_ready());
        assert_eq!(PostmasterPid::parse(""), None);
        assert_eq!(PostmasterPid::parse("not a pid\n"), None);
    }
}
