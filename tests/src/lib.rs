//! The one test harness for real PostgreSQL servers, used by every integration test in the project.
//!
//! ```no_run
//! use fig_tests::{PgServer, StopMode};
//!
//! let mut pg = PgServer::start(); // Debian's 15, or $FIG_PG_BIN
//! pg.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);");
//! pg.restart(StopMode::Immediate);
//! assert_eq!(pg.psql("SELECT count(*) FROM t").trim(), "1");
//! // dropped: stopped and removed, also if the test panicked
//! ```
//!
//! Each server is a fresh cluster (initdb) in its own temp dir, listening on a free port of
//! 127.0.0.1 and on a Unix socket in that dir, with `wal_level = logical` and, on servers that know
//! the setting, `output_plugin_libraries` allowing figoutput and wal2json. Tests run in parallel,
//! as threads or processes, without clashing. Environment:
//!
//! - `FIG_PG_BIN`: the server bin dir (default `/usr/lib/postgresql/15/bin`);
//! - `FIG_PG_LD_LIBRARY_PATH`: libraries for a bin dir that needs them;
//! - `FIG_PG_BASE_DIR`: where cluster dirs go (default `$TMPDIR/fig-pg`).
//!
//! Modules, one job each: `builder` (options), `server` (lifecycle and access), `bin_dir` (the
//! binaries and what they know), `os_user` (who runs them), `cluster_dir` (the dir and its
//! owner), `config` (the settings), `port`, `postmaster_pid`, `psql`, `command` (running tools
//! with their stderr kept), `reaper` (clusters of dead test processes), `exit_cleanup` (servers
//! never dropped), `process` (/proc).
//!
//! Keep a server in a `static` to share it across tests if start-up time matters: it is stopped at
//! exit. Tests killed outright (SIGKILL, abort) leave their clusters to the reaper of the next run.

pub mod app;
mod bin_dir;
mod builder;
mod cluster_dir;
mod command;
mod config;
mod error;
pub mod every_type;
mod exit_cleanup;
pub mod figoutput;
pub mod jsonl;
mod os_user;
mod port;
mod postmaster_pid;
pub mod process;
mod psql;
mod reaper;
pub mod receiver;
mod server;
pub mod witness;

pub use bin_dir::{BIN_DIR_ENV, DEFAULT_BIN_DIR, LD_LIBRARY_PATH_ENV};
pub use builder::PgServerBuilder;
pub use cluster_dir::{default_base_dir, Owner, BASE_DIR_ENV};
pub use error::HarnessError;
pub use reaper::reap_stale_clusters;
pub use server::{PgServer, StopMode, HOST, SUPERUSER};
