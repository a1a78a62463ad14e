//! Runs SQL through the real `psql`, the way a DBA runs our `sql/` scripts: statement by statement
//! from stdin, stopping at the first error, with meta-commands (`\set`, `\copy`) available.

use crate::bin_dir::PgBin;
use crate::command;
use crate::error::HarnessError;

/// Runs `sql` against `url` and returns psql's stdout in unaligned, tuples-only form (`-A -t`): one
/// line per row, columns separated by `|`, so tests can compare it as plain text.
pub(crate) fn run(bin: &PgBin, url: &str, sql: &str) -> Result<String, HarnessError> {
    let mut cmd = bin.psql();
    cmd.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-f",
        "-",
        "-d",
        url,
    ]);
    // The caller's environment must not change what the test runs against or how psql behaves.
    for var in [
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PSQLRC",
    ] {
        cmd.env_remove(var);
    }
    // Rust strings are UTF-8 in both directions. Without this, psql (not on a terminal) speaks the
    // database's encoding, and a LATIN1 database would read our SQL and write its rows as LATIN1.
    cmd.env("PGCLIENTENCODING", "UTF8");
    cmd.env("PGCONNECT_TIMEOUT", "10");
    let output = command::run(cmd, "psql", sql.as_bytes())?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
