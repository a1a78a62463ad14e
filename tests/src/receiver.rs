//! Running the real `fig-receiver` binary against a [`PgServer`](crate::PgServer) and reading what it
//! left in its SQLite sink, for end-to-end tests.
//!
//! ```text
//! binary()              $FIG_RECEIVER_BIN, else built now: <target>/<profile>/fig-receiver
//! Receiver::run(..)     `fig-receiver run --source URL --sink sqlite:PATH` plus flags
//!   .output(timeout)    run to completion (killed and reported if it overruns)
//!   .spawn()            a running daemon: kill9(), terminate(), dropped = SIGKILL
//! SinkFile::open(path)  the sink's checkpoint and change history
//! assert_mirrors_match  every source table equals its mirror, row for row, value for value
//! ```
//!
//! `cargo test` builds a package's binaries only for its own integration tests, so [`binary`] runs
//! `cargo build -p fig-receiver` (same target dir, same profile) once per test process.
//!
//! The comparison of a mirror with its source converts each PostgreSQL value in SQL to the form the
//! receiver normalizes it to (DESIGN.md, "Normalized values"), and each SQLite value, checked for the
//! storage class the sink documents for its type, to the same text. A type without a conversion here
//! panics rather than compare loosely.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;

/// Overrides where the receiver binary is.
pub const BIN_ENV: &str = "FIG_RECEIVER_BIN";

/// The `fig-receiver` binary: `$FIG_RECEIVER_BIN` as given, else built now with
/// `cargo build -p fig-receiver` into the target dir and profile of the running test
/// (`…/target/<profile>/deps/<test>` → `…/target/<profile>/fig-receiver`), once per test process.
///
/// `cargo test` builds a package's binaries only for that package's own integration tests, so the
/// receiver's binary would otherwise be missing (a clean checkout) or stale (`cargo test -p fig-tests`
/// rebuilds only the receiver's library); cargo lets a test run it while the outer `cargo test` runs.
#[track_caller]
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{BIN_ENV}={} is not a file; build it first: cargo build -p fig-receiver",
            p.display()
        );
        return p;
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build_binary)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the test binary: {e}"))?;
    let profile_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in <target>/<profile>/deps", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", profile_dir.display()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return Err(format!("no profile in {}", profile_dir.display())),
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    // What cargo sets for a running test (CARGO_PKG_*, CARGO_MANIFEST_DIR, OUT_DIR, …) would reach
    // the build scripts of this build and, as changed inputs, make the outer `cargo test` rebuild
    // them (and everything above them) on its next run.
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        let from_test =
            (key_str.starts_with("CARGO_") && key_str != "CARGO_HOME") || key_str == "OUT_DIR";
        if from_test {
            command.env_remove(&key);
        }
    }
    let out = command
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "fig-receiver",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {cargo:?} build -p fig-receiver: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p fig-receiver --profile {profile} failed ({}); fix the build, or build it \
             yourself and set {BIN_ENV}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = profile_dir.join(format!("fig-receiver{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo built fig-receiver, but there is no {}; build it first: cargo build -p fig-receiver, \
             or set {BIN_ENV}",
            bin.display()
        ))
    }
}

/// A `fig-receiver` command line being put together.
#[derive(Debug, Clone)]
pub struct Receiver {
    args: Vec<OsString>,
    env: Vec<(String, String)>,
}

/// A finished receiver: how it exited and what it printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Panics with the output unless the exit code is 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "fig-receiver failed ({}):\nstderr:\n{}\nstdout:\n{}",
            self.status,
            self.stderr,
            self.stdout
        );
        self
    }

    /// Panics with the output unless the process exited by itself with a non-zero code.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(
            self.status.code().is_some_and(|c| c != 0),
            "fig-receiver was expected to fail with a non-zero exit code, got {}:\nstderr:\n{}\nstdout:\n{}",
            self.status,
            self.stderr,
            self.stdout
        );
        self
    }
}

impl Receiver {
    /// `fig-receiver <args…>`.
    pub fn new<I, S>(args: I) -> Receiver
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Receiver {
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
        }
    }

    /// `fig-receiver run --source <source> --sink sqlite:<sink>`.
    pub fn run(source: &str, sink: &Path) -> Receiver {
        let mut sink_arg = OsString::from("sqlite:");
        sink_arg.push(sink.as_os_str());
        Receiver::new(["run", "--source", source])
            .arg("--sink")
            .arg(sink_arg)
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Receiver {
        self.args.push(arg.into());
        self
    }

    /// `--plugin <plugin>` (auto, figoutput, pgoutput).
    pub fn plugin(self, plugin: &str) -> Receiver {
        self.arg("--plugin").arg(plugin)
    }

    pub fn slot(self, slot: &str) -> Receiver {
        self.arg("--slot").arg(slot)
    }

    pub fn publication(self, publication: &str) -> Receiver {
        self.arg("--publication").arg(publication)
    }

    /// `--endpos <lsn|now>`.
    pub fn endpos(self, endpos: &str) -> Receiver {
        self.arg("--endpos").arg(endpos)
    }

    pub fn env(mut self, name: &str, value: &str) -> Receiver {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    fn command(&self, out: &Path, err: &Path) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(&self.args);
        // The caller's environment must not change what the receiver connects to or reads.
        for var in [
            "FIG_CONFIG",
            "FIG_SOURCE",
            "PGPASSWORD",
            "PGSERVICE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        // Tests read its log (reconnects are logged at WARN): the level is fixed, without colours.
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(File::create(out).expect("creating the receiver's stdout file"))
            .stderr(File::create(err).expect("creating the receiver's stderr file"));
        cmd
    }

    /// Starts the receiver; it runs until killed, terminated or done.
    #[track_caller]
    pub fn spawn(&self) -> Running {
        let dir = tempfile::Builder::new()
            .prefix("fig-receiver-out-")
            .tempdir()
            .expect("a temp dir for the receiver's output");
        let out = dir.path().join("stdout");
        let err = dir.path().join("stderr");
        let child = self
            .command(&out, &err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()));
        Running {
            child: Some(child),
            out,
            err,
            _dir: dir,
            args: self.args.clone(),
        }
    }

    /// Runs the receiver to completion. Panics (after SIGKILL) if it still runs after `timeout`.
    #[track_caller]
    pub fn output(&self, timeout: Duration) -> Finished {
        let mut running = self.spawn();
        match running.wait_timeout(timeout) {
            Some(done) => done,
            None => {
                let done = running.kill9();
                panic!(
                    "fig-receiver {:?} did not finish within {timeout:?}; killed. stderr:\n{}",
                    self.args, done.stderr
                )
            }
        }
    }
}

/// A receiver process started by [`Receiver::spawn`]. Dropping it kills it (SIGKILL).
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
    args: Vec<OsString>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the receiver process").id()
    }

    /// What it has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        read_lossy(&self.err)
    }

    /// Its exit status if it has exited (reaped), else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("waiting for the receiver"))
    }

    /// Panics with its stderr if it has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_status() {
            panic!(
                "fig-receiver {:?} exited ({status}) while it should run:\n{}",
                self.args,
                self.stderr_so_far()
            );
        }
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Finished> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                self.child = None;
                return Some(self.finished(status));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> Finished {
        let mut child = self.child.take().expect("the receiver process");
        let _ = child.kill();
        let status = child.wait().expect("reaping the killed receiver");
        self.finished(status)
    }

    /// SIGTERM (a clean stop), then wait up to `timeout`; panics (after SIGKILL) if it overruns.
    #[track_caller]
    pub fn terminate(&mut self, timeout: Duration) -> Finished {
        let pid = self.pid();
        crate::process::signal(pid, libc::SIGTERM);
        match self.wait_timeout(timeout) {
            Some(done) => done,
            None => {
                let done = self.kill9();
                panic!(
                    "fig-receiver did not stop within {timeout:?} of SIGTERM; killed. stderr:\n{}",
                    done.stderr
                )
            }
        }
    }

    fn finished(&self, status: ExitStatus) -> Finished {
        Finished {
            status,
            stdout: read_lossy(&self.out),
            stderr: read_lossy(&self.err),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// One receiver setup of a test: a plugin, its slot and its sink file. With pgoutput it names the
/// publication the test created.
#[derive(Debug, Clone)]
pub struct Target {
    pub plugin: &'static str,
    pub slot: String,
    pub sink: PathBuf,
    pub publication: Option<String>,
}

impl Target {
    /// Slot `fig_<plugin>` and sink `<dir>/<plugin>.sqlite`; `publication` is passed with `--publication`.
    pub fn new(plugin: &'static str, dir: &Path, publication: Option<&str>) -> Target {
        Target {
            plugin,
            slot: format!("fig_{plugin}"),
            sink: dir.join(format!("{plugin}.sqlite")),
            publication: publication.map(str::to_owned),
        }
    }

    /// `fig-receiver run` for this target against `url`.
    pub fn receiver(&self, url: &str) -> Receiver {
        let r = Receiver::run(url, &self.sink)
            .plugin(self.plugin)
            .slot(&self.slot);
        match &self.publication {
            Some(p) => r.publication(p),
            None => r,
        }
    }

    /// `fig-receiver resync TABLE…` for this target against `url`.
    pub fn resync(&self, url: &str, tables: &[&str]) -> Receiver {
        let mut r = Receiver::new(["resync", "--source", url, "--sink"])
            .arg(format!("sqlite:{}", self.sink.display()))
            .plugin(self.plugin)
            .slot(&self.slot);
        if let Some(p) = &self.publication {
            r = r.publication(p);
        }
        for t in tables {
            r = r.arg(*t);
        }
        r
    }

    /// `run --endpos now` to completion (exit 0 asserted).
    #[track_caller]
    pub fn catch_up(&self, url: &str, timeout: Duration) -> Finished {
        let done = self.receiver(url).endpos("now").output(timeout);
        done.assert_success();
        done
    }

    pub fn open(&self) -> SinkFile {
        SinkFile::open(&self.sink)
    }

    /// Writes a configuration file for this target at `path`: source `url`, the sink, slot, plugin
    /// and publication, `replication` lines added to `[replication]`, then `sections` (more TOML).
    pub fn config_file(
        &self,
        path: &Path,
        url: &str,
        replication: &str,
        sections: &str,
    ) -> PathBuf {
        let publication = match &self.publication {
            Some(p) => format!("publication = \"{p}\"\n"),
            None => String::new(),
        };
        std::fs::write(
            path,
            format!(
                "[source]\nurl = \"{url}\"\n[sink]\nurl = \"sqlite:{}\"\n[replication]\nslot = \"{}\"\nplugin = \"{}\"\n{publication}{replication}\n{sections}\n",
                self.sink.display(),
                self.slot,
                self.plugin,
            ),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path.to_path_buf()
    }
}

// ---- reading the sink ---------------------------------------------------------------------------

/// One row of `_fig_changes`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HistoryRow {
    pub commit_lsn: i64,
    pub ordinal: i64,
    pub xid: i64,
    pub commit_time: String,
    pub schema: String,
    pub table: String,
    pub op: String,
    pub before: Option<String>,
    pub after: Option<String>,
    /// The leaf partition of a change recorded under its partitioned root.
    pub partition: Option<String>,
}

/// A SQLite sink file, opened for reading (while the receiver may write it: WAL lets both).
pub struct SinkFile {
    conn: rusqlite::Connection,
    path: PathBuf,
}

impl SinkFile {
    #[track_caller]
    pub fn open(path: &Path) -> SinkFile {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap_or_else(|e| panic!("opening the sink {}: {e}", path.display()));
        conn.busy_timeout(Duration::from_secs(30))
            .expect("busy timeout");
        SinkFile {
            conn,
            path: path.to_owned(),
        }
    }

    pub fn connection(&self) -> &rusqlite::Connection {
        &self.conn
    }

    fn has_table(&self, name: &str) -> bool {
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .expect("reading sqlite_master")
            > 0
    }

    /// `_fig_checkpoint.commit_end_lsn`, or `None` when there is no checkpoint (or no fig tables).
    pub fn checkpoint_lsn(&self) -> Option<u64> {
        if !self.has_table("_fig_checkpoint") {
            return None;
        }
        self.conn
            .query_row("SELECT commit_end_lsn FROM _fig_checkpoint", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|l| u64::try_from(l).expect("a negative LSN in _fig_checkpoint"))
            .ok()
    }

    /// Every row of `_fig_changes`, ordered by (commit LSN, ordinal).
    pub fn history(&self) -> Vec<HistoryRow> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT commit_lsn, ordinal, xid, commit_time, schema, \"table\", op, before, after, \
                 partition FROM _fig_changes ORDER BY commit_lsn, ordinal",
            )
            .unwrap_or_else(|e| panic!("reading _fig_changes of {}: {e}", self.path.display()));
        stmt.query_map([], |r| {
            Ok(HistoryRow {
                commit_lsn: r.get(0)?,
                ordinal: r.get(1)?,
                xid: r.get(2)?,
                commit_time: r.get(3)?,
                schema: r.get(4)?,
                table: r.get(5)?,
                op: r.get(6)?,
                before: r.get(7)?,
                after: r.get(8)?,
                partition: r.get(9)?,
            })
        })
        .and_then(|rows| rows.collect())
        .unwrap_or_else(|e| panic!("reading _fig_changes of {}: {e}", self.path.display()))
    }

    /// Number of history rows per (`schema.table`, op).
    pub fn history_counts(&self) -> BTreeMap<(String, String), u64> {
        let mut counts = BTreeMap::new();
        for h in self.history() {
            *counts
                .entry((format!("{}.{}", h.schema, h.table), h.op))
                .or_insert(0) += 1;
        }
        counts
    }
}

/// Polls the sink until its checkpoint reaches `lsn`; panics with `context()` after `timeout`.
#[track_caller]
pub fn wait_for_checkpoint(sink: &Path, lsn: u64, timeout: Duration, context: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if sink.exists() {
            last = SinkFile::open(sink).checkpoint_lsn();
            if last.is_some_and(|l| l >= lsn) {
                return;
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "the sink's checkpoint did not reach {} within {timeout:?} (it is at {}):\n{}",
                lsn_text(lsn),
                last.map(lsn_text).unwrap_or_else(|| "none".into()),
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An LSN the PostgreSQL way, `X/Y`.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// An LSN from PostgreSQL's `X/Y` text.
pub fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("{text:?} is not an X/Y LSN"));
    let part = |p: &str| u64::from_str_radix(p, 16).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    (part(hi) << 32) | part(lo)
}

/// The tables the sink at `sink` records in a state other than in sync (`_fig_tables`), as
/// `schema.table state`.
pub fn table_states(sink: &Path) -> Vec<String> {
    let file = SinkFile::open(sink);
    let mut stmt = file
        .connection()
        .prepare("SELECT schema || '.' || \"table\" || ' ' || state FROM _fig_tables ORDER BY 1")
        .expect("reading _fig_tables");
    let rows = stmt
        .query_map([], |r| r.get(0))
        .expect("reading _fig_tables");
    rows.map(|r| r.expect("a _fig_tables row")).collect()
}

/// Waits until the sink at `sink` holds every change `client`'s server has flushed, then until no
/// table waits for a re-copy, then until the sink holds every change again (a running receiver
/// brings it there); panics with `context()` after `timeout`.
pub fn wait_until_in_sync(
    client: &mut postgres::Client,
    sink: &Path,
    timeout: Duration,
    context: impl Fn() -> String,
) {
    wait_for_checkpoint(sink, current_flush_lsn(client), timeout, &context);
    let deadline = Instant::now() + timeout;
    while !table_states(sink).is_empty() {
        assert!(
            Instant::now() < deadline,
            "tables still not in sync: {:?}\n{}",
            table_states(sink),
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_checkpoint(sink, current_flush_lsn(client), timeout, &context);
}

/// The server's `pg_current_wal_flush_lsn()` as a number.
pub fn current_flush_lsn(client: &mut postgres::Client) -> u64 {
    let text: String = client
        .query_one(
            "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::text",
            &[],
        )
        .expect("pg_current_wal_flush_lsn()")
        .get(0);
    text.parse().expect("an LSN as a number")
}

// ---- comparing mirrors with their sources -------------------------------------------------------

/// How a column's values are compared: the normalized kind of its PostgreSQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Bool,
    Float,
    /// Stored as TEXT in SQLite and compared as text: numeric, text types, dates, times, uuid, json,
    /// enums.
    Text,
    Bytes,
    /// A JSON array in SQLite; compared as parsed JSON.
    Array,
}

#[derive(Debug, Clone)]
struct SourceColumn {
    name: String,
    type_name: String,
    kind: Kind,
    /// The SQL expression giving the normalized text of the column (`NULL` for NULL).
    expr: String,
    /// A generated column: mirrored only with `include_generated`.
    generated: bool,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Columns of `schema.table` and how each is read for the comparison.
fn source_columns(client: &mut postgres::Client, schema: &str, table: &str) -> Vec<SourceColumn> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typtype::text, \
                    t.typname::text, a.atttypid,
                    coalesce(to_jsonb(a) ->> 'attgenerated', '') <> ''
             FROM pg_attribute a
             JOIN pg_type d ON d.oid = a.atttypid
             JOIN pg_type t ON t.oid = CASE WHEN d.typtype = 'd' THEN d.typbasetype ELSE d.oid END
             WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass
               AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .unwrap_or_else(|e| panic!("reading the columns of {schema}.{table}: {e}"));
    rows.iter()
        .map(|r| {
            let name: String = r.get(0);
            let type_name: String = r.get(1);
            let typtype: String = r.get(2);
            let base: String = r.get(3);
            let generated: bool = r.get(5);
            let c = quote_ident(&name);
            let (kind, expr) = if let Some(leaf) = array_leaf(client, r.get(4)) {
                // array_to_json spells these elements as the sinks do: integers and booleans as
                // JSON numbers and booleans, text as strings, an oid as a string (its text, the
                // receiver's Other), an inner array (of an array of a domain over an array, of
                // int2vector[] …) as a nested JSON array.
                let ok = matches!(
                    leaf.as_str(),
                    "int2" | "int4" | "int8" | "text" | "varchar" | "bool" | "oid"
                );
                assert!(
                    ok,
                    "{schema}.{table}.{name}: no exact comparison for arrays of {leaf} here"
                );
                // With the array's own text, which alone keeps lower bounds (also those of
                // inner arrays): `canonical_source` puts them where the receiver keeps them.
                (
                    Kind::Array,
                    format!("array_to_json({c})::text || E'\\x01' || {c}::text"),
                )
            } else if typtype == "e" {
                (Kind::Text, format!("{c}::text"))
            } else if typtype == "r" || typtype == "m" || typtype == "c" {
                // Ranges, multiranges and composites: their text output, as the receiver keeps it.
                (Kind::Text, format!("concat({c})"))
            } else {
                match base.as_str() {
                    "int2" | "int4" | "int8" | "oid" => (Kind::Int, format!("{c}::text")),
                    "bool" => (Kind::Bool, format!("({c}::int)::text")),
                    "float4" | "float8" => (Kind::Float, format!("{c}::float8::text")),
                    // The output function's text: bpchar keeps its padding (a cast to text would not).
                    "numeric" | "text" | "varchar" | "bpchar" | "name" | "uuid" | "json"
                    | "jsonb" => (Kind::Text, format!("concat({c})")),
                    "date" => (Kind::Text, format!("to_char({c}, 'YYYY-MM-DD')")),
                    "timestamp" => (
                        Kind::Text,
                        format!("to_char({c}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"),
                    ),
                    "timestamptz" => (
                        Kind::Text,
                        format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"),
                    ),
                    "bytea" => (Kind::Bytes, format!("encode({c}, 'hex')")),
                    "money" => (Kind::Text, format!("{c}::numeric::text")),
                    other => panic!(
                        "{schema}.{table}.{name}: no exact comparison for type {other} here; add one"
                    ),
                }
            };
            SourceColumn {
                name,
                type_name,
                kind,
                expr: format!("CASE WHEN {c} IS NULL THEN NULL ELSE {expr} END"),
                generated,
            }
        })
        .collect()
}

/// For an array type (`int[]`, `int2vector`, a domain over an array, an array whose elements are
/// arrays …): the name of the type its innermost elements have, following domains to their base
/// types and arrays to their element types; `None` for any other type.
fn array_leaf(client: &mut postgres::Client, type_oid: u32) -> Option<String> {
    let mut oid = type_oid;
    let mut array = false;
    for _ in 0..64 {
        let r = client
            .query_one(
                "SELECT typname::text, typtype::text, typbasetype, typelem, typcategory = 'A' \
                 FROM pg_type WHERE oid = $1",
                &[&oid],
            )
            .unwrap_or_else(|e| panic!("reading pg_type {oid}: {e}"));
        let (name, typtype, base, elem, category_a): (String, String, u32, u32, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        if typtype == "d" {
            oid = base;
        } else if category_a && elem != 0 {
            array = true;
            oid = elem;
        } else {
            return array.then_some(name);
        }
    }
    panic!("type {type_oid}: domains and arrays nest more than 64 deep")
}

/// The text PostgreSQL gave for a value, brought to the comparison's canonical form.
fn canonical_source(kind: Kind, text: String) -> String {
    match kind {
        Kind::Float => canonical_float(&text),
        Kind::Array => {
            let (json, literal) = text.split_once('\x01').unwrap_or((&text, ""));
            match serde_json::from_str::<serde_json::Value>(json) {
                Ok(v) => with_bounds(v, literal).to_string(),
                Err(_) => format!("<not JSON: {json:?}>"),
            }
        }
        _ => text,
    }
}

/// `json` (array_to_json's spelling of an array) with the lower bounds its PostgreSQL text
/// `literal` declares, where one is not 1, as the receiver keeps them:
/// `{"lower_bounds":[…],"elements":[…]}`, at any level (an inner array of an array of a domain
/// over an array has its own). A vector's text (`int2vector`: `1 2`) declares none.
fn with_bounds(json: serde_json::Value, literal: &str) -> serde_json::Value {
    let Some((lower, node)) = array_literal(literal) else {
        return json;
    };
    let json = bounds_within(json, &node);
    match lower {
        Some(lower) if lower.iter().any(|&l| l != 1) => {
            serde_json::json!({ "lower_bounds": lower, "elements": json })
        }
        _ => json,
    }
}

fn bounds_within(json: serde_json::Value, node: &Literal) -> serde_json::Value {
    match (json, node) {
        (serde_json::Value::Array(items), Literal::List(nodes)) if items.len() == nodes.len() => {
            serde_json::Value::Array(
                items
                    .into_iter()
                    .zip(nodes)
                    .map(|(j, n)| bounds_within(j, n))
                    .collect(),
            )
        }
        // An element that is an array itself, as its own text.
        (j @ serde_json::Value::Array(_), Literal::Item(Some(text))) => with_bounds(j, text),
        (j, _) => j,
    }
}

/// An array literal's structure, as PostgreSQL's array output writes it (delimiter `,`).
enum Literal {
    List(Vec<Literal>),
    Item(Option<String>),
}

/// The declared lower bounds (`[lo:hi]…=`) and the structure of an array literal; `None` when
/// `text` is not one.
fn array_literal(text: &str) -> Option<(Option<Vec<i64>>, Literal)> {
    let b = text.as_bytes();
    let mut pos = 0;
    let mut lower = None;
    if b.first() == Some(&b'[') {
        let (dims, rest) = text.split_once('=')?;
        let bounds: Option<Vec<i64>> = dims
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split("][")
            .map(|d| d.split_once(':').and_then(|(lo, _)| lo.parse().ok()))
            .collect();
        lower = Some(bounds?);
        pos = text.len() - rest.len();
    }
    let node = literal_list(b, &mut pos)?;
    (pos == b.len()).then_some((lower, node))
}

fn literal_list(b: &[u8], pos: &mut usize) -> Option<Literal> {
    if b.get(*pos) != Some(&b'{') {
        return None;
    }
    *pos += 1;
    let mut items = Vec::new();
    if b.get(*pos) == Some(&b'}') {
        *pos += 1;
        return Some(Literal::List(items));
    }
    loop {
        let item = match b.get(*pos)? {
            b'{' => literal_list(b, pos)?,
            b'"' => {
                *pos += 1;
                let mut s = Vec::new();
                loop {
                    match *b.get(*pos)? {
                        b'\\' => {
                            s.push(*b.get(*pos + 1)?);
                            *pos += 2;
                        }
                        b'"' => {
                            *pos += 1;
                            break;
                        }
                        c => {
                            s.push(c);
                            *pos += 1;
                        }
                    }
                }
                Literal::Item(Some(String::from_utf8(s).ok()?))
            }
            _ => {
                let start = *pos;
                while !matches!(b.get(*pos)?, b',' | b'}') {
                    *pos += 1;
                }
                let raw = std::str::from_utf8(&b[start..*pos]).ok()?.trim();
                match raw.eq_ignore_ascii_case("NULL") {
                    true => Literal::Item(None),
                    false => Literal::Item(Some(raw.to_owned())),
                }
            }
        };
        items.push(item);
        match b.get(*pos)? {
            b',' => *pos += 1,
            b'}' => {
                *pos += 1;
                return Some(Literal::List(items));
            }
            _ => return None,
        }
    }
}

fn canonical_float(text: &str) -> String {
    match text {
        "NaN" | "Infinity" | "-Infinity" => text.to_owned(),
        _ => match text.parse::<f64>() {
            Ok(f) => format!("{f:?}"),
            Err(_) => format!("<not a float: {text:?}>"),
        },
    }
}

fn canonical_json(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v.to_string(),
        Err(_) => format!("<not JSON: {text:?}>"),
    }
}

/// A SQLite value of a column of `kind`, as canonical text; a wrong storage class shows as a value
/// that matches nothing.
fn canonical_sink(kind: Kind, v: ValueRef<'_>) -> Option<String> {
    let wrong = |v: ValueRef<'_>| {
        Some(format!(
            "<{:?} {:?} in a {kind:?} column>",
            v.data_type(),
            v
        ))
    };
    match (kind, v) {
        (_, ValueRef::Null) => None,
        (Kind::Int, ValueRef::Integer(i)) => Some(i.to_string()),
        (Kind::Bool, ValueRef::Integer(i @ (0 | 1))) => Some(i.to_string()),
        (Kind::Float, ValueRef::Real(f)) => Some(format!("{f:?}")),
        (Kind::Float, ValueRef::Text(t)) if matches!(t, b"NaN" | b"Infinity" | b"-Infinity") => {
            Some(String::from_utf8_lossy(t).into_owned())
        }
        (Kind::Text, ValueRef::Text(t)) => Some(String::from_utf8_lossy(t).into_owned()),
        (Kind::Bytes, ValueRef::Blob(b)) => {
            Some(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
        (Kind::Array, ValueRef::Text(t)) => Some(canonical_json(&String::from_utf8_lossy(t))),
        (_, v) => wrong(v),
    }
}

type Rows = Vec<Vec<Option<String>>>;

/// Rows of the source table in canonical form, sorted.
fn source_rows(
    client: &mut postgres::Client,
    schema: &str,
    table: &str,
    cols: &[SourceColumn],
) -> Rows {
    let list = cols
        .iter()
        .map(|c| c.expr.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {list} FROM {}.{}",
        quote_ident(schema),
        quote_ident(table)
    );
    let mut rows: Rows = client
        .query(&sql, &[])
        .unwrap_or_else(|e| panic!("reading {schema}.{table}: {e}"))
        .iter()
        .map(|r| {
            cols.iter()
                .enumerate()
                .map(|(i, c)| {
                    r.get::<_, Option<String>>(i)
                        .map(|t| canonical_source(c.kind, t))
                })
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// Rows of the mirror `"schema.table"` in canonical form, sorted; `None` if there is no mirror.
fn mirror_rows(sink: &SinkFile, schema: &str, table: &str, cols: &[SourceColumn]) -> Option<Rows> {
    let mirror = format!("{schema}.{table}");
    if !sink.has_table(&mirror) {
        return None;
    }
    let list = cols
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {list} FROM {}", quote_ident(&mirror));
    let mut stmt = sink
        .conn
        .prepare(&sql)
        .unwrap_or_else(|e| panic!("reading mirror {mirror:?}: {e}"));
    let mut rows: Rows = stmt
        .query_map([], |r| {
            cols.iter()
                .enumerate()
                .map(|(i, c)| Ok(canonical_sink(c.kind, r.get_ref(i)?)))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .and_then(|rows| rows.collect())
        .unwrap_or_else(|e| panic!("reading mirror {mirror:?}: {e}"));
    rows.sort();
    Some(rows)
}

fn describe_row(cols: &[SourceColumn], row: &[Option<String>]) -> String {
    cols.iter()
        .zip(row)
        .map(|(c, v)| {
            let v = match v {
                None => "NULL".to_owned(),
                Some(s) if s.len() > 80 => format!("{:?}… ({} chars)", &s[..60], s.len()),
                Some(s) => format!("{s:?}"),
            };
            format!("{}={v}", c.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Panics unless every table in `tables` (`schema.table`) has a mirror in the sink at `sink` holding
/// exactly its rows (as a multiset), each value equal to the source's in normalized form. An empty
/// source table may have no mirror when nothing was ever written to it.
#[track_caller]
pub fn assert_mirrors_match(client: &mut postgres::Client, sink: &Path, tables: &[&str]) {
    let file = SinkFile::open(sink);
    let mut problems = Vec::new();
    for qualified in tables {
        let (schema, table) = qualified
            .split_once('.')
            .unwrap_or_else(|| panic!("{qualified:?} is not schema.table"));
        // Generated columns are compared when the mirror has them (`include_generated`).
        let mirrored: Vec<String> = file
            .conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .and_then(|mut st| {
                st.query_map([qualified], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .unwrap_or_default();
        let cols: Vec<SourceColumn> = source_columns(client, schema, table)
            .into_iter()
            .filter(|c| !c.generated || mirrored.contains(&c.name))
            .collect();
        let source = source_rows(client, schema, table, &cols);
        let Some(mirror) = mirror_rows(&file, schema, table, &cols) else {
            if !source.is_empty() {
                problems.push(format!(
                    "{qualified}: no mirror table, but the source has {} rows",
                    source.len()
                ));
            }
            continue;
        };
        if source == mirror {
            continue;
        }
        let only_source: Vec<_> = multiset_minus(&source, &mirror);
        let only_mirror: Vec<_> = multiset_minus(&mirror, &source);
        let mut p = format!(
            "{qualified}: source has {} rows, mirror {}; {} only in the source, {} only in the mirror",
            source.len(),
            mirror.len(),
            only_source.len(),
            only_mirror.len()
        );
        let types = cols
            .iter()
            .map(|c| format!("{} {}", c.name, c.type_name))
            .collect::<Vec<_>>()
            .join(", ");
        p.push_str(&format!("\n  columns: {types}"));
        for r in only_source.iter().take(5) {
            p.push_str(&format!("\n  only in source: {}", describe_row(&cols, r)));
        }
        for r in only_mirror.iter().take(5) {
            p.push_str(&format!("\n  only in mirror: {}", describe_row(&cols, r)));
        }
        problems.push(p);
    }
    assert!(
        problems.is_empty(),
        "mirrors in {} differ from their sources:\n{}",
        sink.display(),
        problems.join("\n")
    );
}

/// `a` minus `b` as multisets; both sorted.
fn multiset_minus<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    let mut j = 0;
    for x in a {
        while j < b.len() && b[j] < *x {
            j += 1;
        }
        if j < b.len() && b[j] == *x {
            j += 1;
        } else {
            out.push(x.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiset_difference_counts_copies() {
        assert_eq!(multiset_minus(&[1, 1, 2, 3], &[1, 2]), vec![1, 3]);
        assert_eq!(multiset_minus(&[1, 2], &[1, 1, 2, 3]), Vec::<i32>::new());
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_float("1e+300"), format!("{:?}", 1e300));
        assert_eq!(canonical_float("0.1"), "0.1");
        assert_eq!(canonical_json("[\"a\", 1]"), "[\"a\",1]");
        assert_eq!(
            canonical_sink(Kind::Int, ValueRef::Real(1.0)).unwrap(),
            "<Real Real(1.0) in a Int column>"
        );
        assert_eq!(
            canonical_sink(Kind::Bool, ValueRef::Integer(1)).unwrap(),
            "1"
        );
        assert_eq!(lsn_text(0x1_0000_00A0), "1/A0");
    }
}

#[cfg(test)]
mod bounds_tests {
    use super::with_bounds;
    use serde_json::json;

    #[test]
    fn lower_bounds_are_taken_from_the_literal_at_every_level() {
        assert_eq!(with_bounds(json!([1, 2]), "{1,2}"), json!([1, 2]));
        assert_eq!(
            with_bounds(json!([1, 2]), "[0:1]={1,2}"),
            json!({"lower_bounds": [0], "elements": [1, 2]})
        );
        assert_eq!(with_bounds(json!([1, 2]), "[1:2]={1,2}"), json!([1, 2]));
        assert_eq!(with_bounds(json!([1, 2]), "1 2"), json!([1, 2]), "a vector");
        assert_eq!(
            with_bounds(
                json!([[[1], [2, 3]], [null, [[4], [5]]]]),
                r#"[0:1][1:2]={{"{1}","[0:1]={2,3}"},{NULL,"{{4},{5}}"}}"#
            ),
            json!({"lower_bounds": [0, 1], "elements": [
                [[1], {"lower_bounds": [0], "elements": [2, 3]}],
                [null, [[4], [5]]]
            ]})
        );
        assert_eq!(
            with_bounds(
                json!(["a,b", "c\"d", null]),
                r#"[-3:-1]={"a,b","c\"d",NULL}"#
            ),
            json!({"lower_bounds": [-3], "elements": ["a,b", "c\"d", null]})
        );
    }
}
