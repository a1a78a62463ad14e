//! What a test may choose about its server before it starts. Everything has a default that suits
//! most tests: Debian's PostgreSQL 15 (or `$FIG_PG_BIN`), a UTF8 database with the C locale.

use std::path::PathBuf;

use crate::bin_dir::{BIN_DIR_ENV, DEFAULT_BIN_DIR, LD_LIBRARY_PATH_ENV};
use crate::error::HarnessError;
use crate::server::PgServer;

/// Options for a throwaway server; `PgServer::builder()` makes one.
#[derive(Debug, Clone)]
pub struct PgServerBuilder {
    pub(crate) bin_dir: PathBuf,
    pub(crate) ld_library_path: Option<PathBuf>,
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) encoding: String,
    pub(crate) locale: String,
    pub(crate) base_dir: Option<PathBuf>,
}

impl Default for PgServerBuilder {
    fn default() -> Self {
        let env_path = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        PgServerBuilder {
            bin_dir: env_path(BIN_DIR_ENV).unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR)),
            ld_library_path: env_path(LD_LIBRARY_PATH_ENV),
            settings: Vec::new(),
            encoding: "UTF8".to_owned(),
            // C: the same collation and messages on every machine, whatever its LANG.
            locale: "C".to_owned(),
            base_dir: None,
        }
    }
}

impl PgServerBuilder {
    /// The server's bin dir (initdb, postgres; psql optional). Default: `$FIG_PG_BIN`, else
    /// Debian's `/usr/lib/postgresql/15/bin`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = dir.into();
        self
    }

    /// `LD_LIBRARY_PATH` for the server tools, for builds whose shared libraries live outside the
    /// system's paths (e.g. unpacked embedded-postgres builds). Default: `$FIG_PG_LD_LIBRARY_PATH`.
    pub fn ld_library_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ld_library_path = Some(dir.into());
        self
    }

    /// A `postgresql.conf` setting, applied after (so overriding) the harness's own; e.g.
    /// `.setting("logical_decoding_work_mem", "64kB")`. The value is written as a quoted string,
    /// so give it as you would inside quotes: `"64kB"`, `"on"`, `"a, b"` for a list.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// The encoding of the cluster's databases (`initdb --encoding`), e.g. `"LATIN1"`. Default UTF8.
    pub fn encoding(mut self, encoding: impl Into<String>) -> Self {
        self.encoding = encoding.into();
        self
    }

    /// The cluster's locale (`initdb --locale`). Default `C`, which suits every encoding.
    pub fn locale(mut self, locale: impl Into<String>) -> Self {
        self.locale = locale.into();
        self
    }

    /// Where the cluster dir is created. Default: `$FIG_PG_BASE_DIR`, else `$TMPDIR/fig-pg`.
    /// Stale clusters of dead test processes in this dir are reaped at start.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Starts the server, panicking with everything needed to see why if it cannot (the tool's
    /// stderr, the server log's tail, what to do).
    #[track_caller]
    pub fn start(self) -> PgServer {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server.
    pub fn try_start(self) -> Result<PgServer, HarnessError> {
        PgServer::start_with(self)
    }
}
