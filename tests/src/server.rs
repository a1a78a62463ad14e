//! A running throwaway PostgreSQL cluster, owned by one test.
//!
//! ```text
//! start:   reap stale clusters ─▶ cluster dir ─▶ initdb ─▶ fig_harness.conf ─▶ postgres -D (our child)
//!          ─▶ postmaster.pid says ready ─▶ SHOW server_version_num          (new port on a clash)
//! drop:    immediate shutdown (SIGQUIT) ─▶ wait for the postmaster ─▶ remove the cluster dir
//! ```
//!
//! The postmaster is started directly as a child of the test process, not through pg_ctl, which
//! detaches it: as our child it can be waited for, so we know exactly when it is gone and it never
//! lingers as a zombie (init does not reap them in containers like ours). `Drop` runs for passing
//! and failing tests and during panic unwinding; processes killed outright are handled by the
//! reaper at the next start.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::bin_dir::PgBin;
use crate::builder::PgServerBuilder;
use crate::cluster_dir::{default_base_dir, ClusterDir};
use crate::error::HarnessError;
use crate::os_user::RunAs;
use crate::postmaster_pid::PostmasterPid;
use crate::{command, config, exit_cleanup, port, process, psql, reaper};

/// The superuser initdb creates; trust auth lets it in without a password.
pub const SUPERUSER: &str = "postgres";

/// The address the server listens on.
pub const HOST: &str = "127.0.0.1";

/// How a server is stopped, as in `pg_ctl stop -m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Clients are disconnected, a shutdown checkpoint is written: the clean stop.
    Fast,
    /// Every process quits at once, without a checkpoint: the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    fn signal(self) -> libc::c_int {
        match self {
            StopMode::Fast => libc::SIGINT,
            StopMode::Immediate => libc::SIGQUIT,
        }
    }

    fn name(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// New ports tried when another process took the picked one first.
const PORT_ATTEMPTS: usize = 8;
/// Tries to get the same port back at a restart, when it was taken while the server was down.
const RESTART_PORT_ATTEMPTS: usize = 20;
const LOG_TAIL_LINES: usize = 40;

/// A throwaway PostgreSQL cluster: `initdb` in a fresh temp dir, a postmaster on a free port of
/// 127.0.0.1 and on a Unix socket in that dir, with `wal_level = logical`. Stopped and removed on
/// drop, also when the test fails or panics.
///
/// Methods panic with a diagnosable message when the server misbehaves (this is test code); the
/// `try_` forms return the error for tests that expect a failure.
#[derive(Debug)]
pub struct PgServer {
    bin: PgBin,
    run_as: RunAs,
    settings: Vec<(String, String)>,
    knows_output_plugin_libraries: bool,
    port: u16,
    postmaster: Option<Child>,
    version_num: u32,
    /// Last, so that it is dropped (the dir removed) after `Drop::drop` has stopped the server.
    cluster: ClusterDir,
}

/// Why one launch of the postmaster failed.
enum LaunchError {
    /// Another process bound the port first: try another (or, at a restart, wait for it).
    PortTaken,
    Other(HarnessError),
}

impl From<HarnessError> for LaunchError {
    fn from(e: HarnessError) -> Self {
        LaunchError::Other(e)
    }
}

impl PgServer {
    /// Starts a server with the defaults: `$FIG_PG_BIN` or Debian's PostgreSQL 15.
    #[track_caller]
    pub fn start() -> PgServer {
        PgServer::builder().start()
    }

    /// Options for a server; finish with `.start()` or `.try_start()`.
    pub fn builder() -> PgServerBuilder {
        PgServerBuilder::default()
    }

    pub(crate) fn start_with(options: PgServerBuilder) -> Result<PgServer, HarnessError> {
        for (name, _) in &options.settings {
            config::validate_name(name)?;
        }
        let run_as = RunAs::detect()?;
        let bin = PgBin::new(options.bin_dir, options.ld_library_path)?;
        let base = options.base_dir.unwrap_or_else(default_base_dir);
        reaper::reap_stale_clusters(&base);
        let cluster = ClusterDir::create(&base, &run_as)?;
        check_reachable(&run_as, cluster.root())?;
        let knows_output_plugin_libraries =
            bin.known_settings()?.contains("output_plugin_libraries");
        initdb(&bin, &run_as, &cluster, &options.encoding, &options.locale)?;

        let mut server = PgServer {
            bin,
            run_as,
            settings: options.settings,
            knows_output_plugin_libraries,
            port: 0,
            postmaster: None,
            version_num: 0,
            cluster,
        };
        server.launch_on_a_free_port()?;
        let version = server.query_text("postgres", "SHOW server_version_num")?;
        server.version_num = version
            .trim()
            .parse()
            .map_err(|_| HarnessError::StartFailed {
                reason: format!("server_version_num is {version:?}, not a number"),
                log_path: server.log_path(),
                log_tail: server.log_tail(0),
            })?;
        Ok(server)
    }

    // ---- where it is ------------------------------------------------------------------------

    /// The TCP port on 127.0.0.1 (also the number in the Unix socket's name).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The dir holding the server's Unix socket `.s.PGSQL.<port>` (use it as `host` in libpq).
    pub fn socket_dir(&self) -> &Path {
        self.cluster.root()
    }

    /// The cluster's own temp dir, holding PGDATA, the log and the socket; removed on drop.
    pub fn cluster_dir(&self) -> &Path {
        self.cluster.root()
    }

    /// PGDATA.
    pub fn data_dir(&self) -> PathBuf {
        self.cluster.data_dir()
    }

    /// The bin dir the server runs from.
    pub fn bin_dir(&self) -> &Path {
        self.bin.dir()
    }

    /// The server's log file (its stderr).
    pub fn log_path(&self) -> PathBuf {
        self.cluster.log_path()
    }

    /// Everything the server has logged so far, across restarts.
    pub fn log_contents(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>?sslmode=disable` (`db` is used as given, so keep
    /// it URL-safe). The harness's servers run without TLS, so the URL says so explicitly: the
    /// receiver's default sslmode is verify-full. Tests of TLS build their own URLs.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@{HOST}:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The server's version as a number, e.g. 150020 for 15.20.
    pub fn server_version_num(&self) -> u32 {
        self.version_num
    }

    /// The postmaster's pid while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.postmaster
            .as_ref()
            .map(Child::id)
            .filter(|&pid| process::is_alive(pid))
    }

    /// True while the postmaster runs.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// True if the server knows `output_plugin_libraries` (and so the harness set it).
    pub fn knows_output_plugin_libraries(&self) -> bool {
        self.knows_output_plugin_libraries
    }

    // ---- talking to it ----------------------------------------------------------------------

    /// A synchronous client for the `postgres` database, as the superuser.
    ///
    /// The `postgres` crate runs its own tokio runtime, so this panics inside an async test; there,
    /// connect with tokio-postgres to [`PgServer::url`].
    #[track_caller]
    pub fn connect(&self) -> postgres::Client {
        self.connect_to("postgres")
    }

    /// A synchronous client for `db`; see [`PgServer::connect`].
    #[track_caller]
    pub fn connect_to(&self, db: &str) -> postgres::Client {
        self.client_config(db)
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to {}: {e}\n{}",
                    self.url(db),
                    self.log_tail(0)
                )
            })
    }

    /// Runs `sql` with psql in the `postgres` database and returns its stdout; see
    /// [`PgServer::try_psql_in`]. Panics with psql's stderr on failure.
    #[track_caller]
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// [`PgServer::psql`] in database `db`.
    #[track_caller]
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        self.try_psql_in(db, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`PgServer::try_psql_in`] in the `postgres` database.
    pub fn try_psql(&self, sql: &str) -> Result<String, HarnessError> {
        self.try_psql_in("postgres", sql)
    }

    /// Runs `sql` (statements and psql meta-commands) with the real psql in database `db`, stopping
    /// at the first error (`ON_ERROR_STOP`). Returns stdout unaligned and without headers (`-A -t`):
    /// a line per row, columns joined by `|`. The client encoding is UTF8 whatever the database's.
    pub fn try_psql_in(&self, db: &str, sql: &str) -> Result<String, HarnessError> {
        psql::run(&self.bin, &self.url(db), sql)
    }

    /// Creates database `name` (from template1, so in the cluster's encoding).
    #[track_caller]
    pub fn create_database(&self, name: &str) {
        let sql = format!("CREATE DATABASE {}", quote_ident(name));
        self.query_text("postgres", &sql)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Replaces `pg_hba.conf` (e.g. to require SCRAM) and reloads the configuration.
    #[track_caller]
    pub fn write_pg_hba(&self, contents: &str) {
        let path = self.data_dir().join("pg_hba.conf");
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        self.reload();
    }

    /// Makes the server reread its configuration files (SIGHUP, as `pg_ctl reload`). Like that,
    /// it returns before the server has applied them.
    #[track_caller]
    pub fn reload(&self) {
        let pid = self
            .postmaster_pid()
            .unwrap_or_else(|| panic!("reload: the server is not running"));
        process::signal(pid, libc::SIGHUP);
    }

    // ---- lifecycle --------------------------------------------------------------------------

    /// Stops the server cleanly (fast shutdown). The cluster dir stays until drop; [`restart`]
    /// starts it again.
    ///
    /// [`restart`]: PgServer::restart
    #[track_caller]
    pub fn stop(&mut self) {
        self.stop_with(StopMode::Fast)
    }

    /// Stops the server in `mode`; a stopped server is left alone.
    #[track_caller]
    pub fn stop_with(&mut self, mode: StopMode) {
        self.try_stop_with(mode).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`PgServer::stop_with`], returning the error.
    pub fn try_stop_with(&mut self, mode: StopMode) -> Result<(), HarnessError> {
        let Some(mut child) = self.postmaster.take() else {
            return Ok(());
        };
        exit_cleanup::untrack(child.id());
        let log_offset = self.log_len();
        if matches!(child.try_wait(), Ok(None)) {
            // The pid is still our unreaped child, so it cannot have been reused.
            process::signal(child.id(), mode.signal());
        }
        if wait_exit(&mut child, STOP_TIMEOUT) {
            return Ok(());
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(HarnessError::StopTimedOut {
            mode: mode.name(),
            seconds: STOP_TIMEOUT.as_secs(),
            log_path: self.log_path(),
            log_tail: self.log_tail(log_offset),
        })
    }

    /// Stops the server in `mode` (if it runs) and starts it again on the same port and data.
    #[track_caller]
    pub fn restart(&mut self, mode: StopMode) {
        self.try_restart(mode).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`PgServer::restart`], returning the error.
    pub fn try_restart(&mut self, mode: StopMode) -> Result<(), HarnessError> {
        self.try_stop_with(mode)?;
        // Clients hold the URL, so the port must stay. Should another process have taken it while
        // the server was down, it is usually a short-lived client socket: wait for it.
        for _ in 1..RESTART_PORT_ATTEMPTS {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(LaunchError::PortTaken) => std::thread::sleep(Duration::from_millis(250)),
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
        match self.launch() {
            Ok(()) => Ok(()),
            Err(LaunchError::PortTaken) => Err(self.port_taken_error(self.port)),
            Err(LaunchError::Other(e)) => Err(e),
        }
    }

    /// Simulates a postmaster crash: SIGKILL to the postmaster alone. Its children notice and exit
    /// by themselves, as after a real crash; this returns once they have (so that [`restart`] can
    /// reuse the shared memory), and kills any that take longer than 10 s.
    ///
    /// [`restart`]: PgServer::restart
    #[track_caller]
    pub fn kill9_postmaster(&mut self) {
        let mut child = self
            .postmaster
            .take()
            .unwrap_or_else(|| panic!("kill9_postmaster: the server is not running"));
        exit_cleanup::untrack(child.id());
        let children = process::children_of(child.id());
        let _ = child.kill();
        let _ = child.wait();
        if !process::wait_gone(&children, Duration::from_secs(10)) {
            for pid in children {
                process::signal(pid, libc::SIGKILL);
            }
        }
    }

    // ---- internals --------------------------------------------------------------------------

    fn launch_on_a_free_port(&mut self) -> Result<(), HarnessError> {
        let mut last = 0;
        for _ in 0..PORT_ATTEMPTS {
            self.port =
                port::pick().map_err(|e| HarnessError::io("cannot find a free port", HOST, e))?;
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(LaunchError::PortTaken) => {
                    port::release(self.port);
                    last = std::mem::take(&mut self.port);
                }
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
        Err(self.port_taken_error(last))
    }

    /// Writes the config for the current port, starts the postmaster and waits until it is ready.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let data = self.data_dir();
        let conf = config::ServerConfig {
            port: self.port,
            socket_dir: self.cluster.root(),
            knows_output_plugin_libraries: self.knows_output_plugin_libraries,
            extra: &self.settings,
        }
        .render();
        let conf_path = data.join(config::FILE_NAME);
        std::fs::write(&conf_path, conf)
            .map_err(|e| HarnessError::io("cannot write the server config", &conf_path, e))?;
        self.run_as.chown(&conf_path)?;

        let log_path = self.log_path();
        let log_offset = self.log_len();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| HarnessError::io("cannot open the server log", &log_path, e))?;
        self.run_as.chown(&log_path)?;
        let log_err = log
            .try_clone()
            .map_err(|e| HarnessError::io("cannot open the server log", &log_path, e))?;

        let mut cmd = self.bin.command("postgres");
        cmd.arg("-D").arg(&data).current_dir(self.cluster.root());
        // The worst case for figoutput's errors: with this set, pgrx would put Rust backtraces
        // into an ERROR's DETAIL unless the plugin turns capturing off (it does).
        cmd.env("RUST_BACKTRACE", "1");
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        self.run_as.apply(&mut cmd);
        let described = command::describe(&cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| HarnessError::io("cannot run postgres", self.bin.dir(), e))?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let tail = self.log_tail(log_offset);
                if tail.contains("Address already in use") {
                    return Err(LaunchError::PortTaken);
                }
                return Err(LaunchError::Other(HarnessError::StartFailed {
                    reason: format!("`{described}` exited with {status}"),
                    log_path,
                    log_tail: tail,
                }));
            }
            if PostmasterPid::read(&data)
                .is_some_and(|lock| lock.pid == child.id() && lock.is_ready())
            {
                exit_cleanup::track(child.id(), self.cluster.root().to_owned());
                self.postmaster = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LaunchError::Other(HarnessError::StartFailed {
                    reason: format!("not ready within {} s; killed", START_TIMEOUT.as_secs()),
                    log_path,
                    log_tail: self.log_tail(log_offset),
                }));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn port_taken_error(&self, port: u16) -> HarnessError {
        HarnessError::StartFailed {
            reason: format!(
                "port {port} was taken by another process, and so were the ports tried before"
            ),
            log_path: self.log_path(),
            log_tail: self.log_tail(0),
        }
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(self.log_path())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The last lines the server logged after byte `offset`.
    fn log_tail(&self, offset: u64) -> String {
        let text = self.log_contents();
        let recent = text
            .get(usize::try_from(offset).unwrap_or(0)..)
            .unwrap_or(&text);
        let lines: Vec<&str> = recent.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    fn client_config(&self, db: &str) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host(HOST)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Runs one statement and returns the first column of its first row as text (empty if none).
    /// On a thread of its own: the sync client starts a tokio runtime, which must not happen on a
    /// thread of the caller's runtime (tests may be async).
    fn query_text(&self, db: &str, sql: &str) -> Result<String, HarnessError> {
        let config = self.client_config(db);
        let what = || format!("{sql:?} on {}", self.url(db));
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut client = config.connect(postgres::NoTls)?;
                    let rows = client.simple_query(sql)?;
                    Ok(rows
                        .iter()
                        .find_map(|m| match m {
                            postgres::SimpleQueryMessage::Row(row) => {
                                Some(row.get(0).unwrap_or("").to_owned())
                            }
                            _ => None,
                        })
                        .unwrap_or_default())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .map_err(|source| HarnessError::Sql {
            what: what(),
            source,
        })
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Immediate: the data is thrown away, so a checkpoint would only cost time. Never panic
        // here: during unwinding that would abort the whole test binary.
        if let Err(e) = self.try_stop_with(StopMode::Immediate) {
            eprintln!("fig-tests: {e}");
        }
        if self.port != 0 {
            port::release(self.port);
        }
        // `cluster` is dropped next, removing the dir.
    }
}

/// Runs initdb: superuser `postgres`, trust auth for local and loopback connections (tests of
/// passwords change pg_hba.conf themselves), and no fsync of the new files (a throwaway cluster).
fn initdb(
    bin: &PgBin,
    run_as: &RunAs,
    cluster: &ClusterDir,
    encoding: &str,
    locale: &str,
) -> Result<(), HarnessError> {
    let data = cluster.data_dir();
    let mut cmd = bin.command("initdb");
    cmd.arg("-D").arg(&data).current_dir(cluster.root());
    cmd.args(["-U", SUPERUSER, "--auth=trust", "--no-sync"]);
    cmd.arg(format!("--encoding={encoding}"))
        .arg(format!("--locale={locale}"));
    run_as.apply(&mut cmd);
    command::run(cmd, "initdb", b"")?;
    // The harness's settings live in their own file, rewritten at every start (the port may change).
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf)
        .map_err(|e| HarnessError::io("cannot read initdb's config", &conf, e))?;
    text.push_str(&format!("\ninclude = '{}'\n", config::FILE_NAME));
    std::fs::write(&conf, text)
        .map_err(|e| HarnessError::io("cannot extend initdb's config", &conf, e))
}

/// Fails early, with advice, if the server's OS user cannot write the cluster dir (a private parent
/// dir such as /root/tmp); initdb's own message would not say what to change.
fn check_reachable(run_as: &RunAs, dir: &Path) -> Result<(), HarnessError> {
    if let RunAs::CurrentUser = run_as {
        return Ok(());
    }
    let mut cmd = std::process::Command::new("test");
    cmd.arg("-w")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    run_as.apply(&mut cmd);
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(_) => Err(HarnessError::ClusterDirUnreachable {
            dir: dir.to_owned(),
            user: run_as.name(),
        }),
        // No `test` binary: let initdb report the problem.
        Err(_) => Ok(()),
    }
}

/// Polls `child` until it exits; false if it still runs after `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
