//! A directory of PostgreSQL server binaries (Debian's, or an unpacked build of another major) and
//! what that server knows. Tests run against several majors and minors, so nothing about the
//! server is assumed: which settings exist is asked of the binary itself.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command;
use crate::error::HarnessError;

/// Debian bookworm's server, the default.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Overrides the default bin dir for every test, e.g. to run the suite against another major.
pub const BIN_DIR_ENV: &str = "FIG_PG_BIN";

/// Overrides the default `LD_LIBRARY_PATH` for the server tools (builds that ship their own libs).
pub const LD_LIBRARY_PATH_ENV: &str = "FIG_PG_LD_LIBRARY_PATH";

#[derive(Debug, Clone)]
pub(crate) struct PgBin {
    dir: PathBuf,
    ld_library_path: Option<PathBuf>,
}

impl PgBin {
    /// Checks that the dir holds the tools the harness cannot do without.
    pub(crate) fn new(
        dir: PathBuf,
        ld_library_path: Option<PathBuf>,
    ) -> Result<PgBin, HarnessError> {
        for tool in ["initdb", "postgres"] {
            if !dir.join(tool).is_file() {
                return Err(HarnessError::BinDirIncomplete { dir, missing: tool });
            }
        }
        Ok(PgBin {
            dir,
            ld_library_path,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A command for `tool` in this dir, with the library path the build needs.
    pub(crate) fn command(&self, tool: &str) -> Command {
        self.command_for(self.dir.join(tool))
    }

    /// psql from this dir, else Debian's (builds of other majors may ship no client; a newer psql
    /// talks to older servers fine).
    pub(crate) fn psql(&self) -> Command {
        let own = self.dir.join("psql");
        if own.is_file() {
            return self.command_for(own);
        }
        let debian = Path::new(DEFAULT_BIN_DIR).join("psql");
        Command::new(if debian.is_file() {
            debian
        } else {
            PathBuf::from("psql")
        })
    }

    fn command_for(&self, program: PathBuf) -> Command {
        let mut cmd = Command::new(program);
        if let Some(libs) = &self.ld_library_path {
            let mut value = OsString::from(libs);
            if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
                value.push(":");
                value.push(existing);
            }
            cmd.env("LD_LIBRARY_PATH", value);
        }
        cmd
    }

    /// Names of every setting this server knows. `postgres --describe-config` is allowed as root
    /// and needs no cluster, so this works before initdb.
    pub(crate) fn known_settings(&self) -> Result<HashSet<String>, HarnessError> {
        let mut cmd = self.command("postgres");
        cmd.arg("--describe-config");
        let output = command::run(
            cmd,
            "postgres --describe-config (listing the server's settings)",
            b"",
        )?;
        // One setting per line, tab-separated, the name first.
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split('\t').next())
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect())
    }
}
