//! The harness's one error type. Every message says what failed and what to do about it, because the
//! reader is a developer looking at a failed test, not a program deciding what to retry.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Why the harness could not start, drive or query a PostgreSQL server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "PostgreSQL bin dir {dir} has no `{missing}`: point FIG_PG_BIN (or `PgServerBuilder::bin_dir`) \
         at a directory holding initdb and postgres, e.g. /usr/lib/postgresql/15/bin"
    )]
    BinDirIncomplete { dir: PathBuf, missing: &'static str },

    #[error(
        "running as root, and initdb/postgres refuse root, but the OS user `{user}` does not exist: \
         create it (Debian's postgresql-common does) or run the tests as a non-root user"
    )]
    NoServerUser { user: &'static str },

    #[error(
        "cluster dir {dir} is not writable by the OS user `{user}` that runs the server (a parent dir \
         is probably private, like /root): set FIG_PG_BASE_DIR or TMPDIR to a dir that user can \
         reach, e.g. /tmp"
    )]
    ClusterDirUnreachable { dir: PathBuf, user: String },

    #[error(
        "Unix socket path {path}/.s.PGSQL.<port> would be {len} bytes, over the 107-byte limit of \
         sun_path: set FIG_PG_BASE_DIR or TMPDIR to a shorter directory"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },

    #[error(
        "invalid postgresql.conf setting name {name:?}: names are letters, digits, `_` and `.`"
    )]
    InvalidSetting { name: String },

    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A tool (initdb, postgres --describe-config, psql …) ran and failed; its output is kept so
    /// the panic message of a failed test shows why.
    #[error(
        "{what} failed ({status}): {command}\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}"
    )]
    CommandFailed {
        what: &'static str,
        command: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },

    /// The postmaster exited or did not become ready. The tail of its log says why.
    #[error("PostgreSQL server did not start: {reason}\n--- {log_path} (tail) ---\n{log_tail}")]
    StartFailed {
        reason: String,
        log_path: PathBuf,
        log_tail: String,
    },

    #[error(
        "PostgreSQL server did not stop within {seconds} s ({mode}); it was killed with SIGKILL\n\
         --- {log_path} (tail) ---\n{log_tail}"
    )]
    StopTimedOut {
        mode: &'static str,
        seconds: u64,
        log_path: PathBuf,
        log_tail: String,
    },

    #[error("{what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: postgres::Error,
    },
}

impl HarnessError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HarnessError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
