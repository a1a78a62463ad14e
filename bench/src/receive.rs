//! What fig-receiver delivers, commit to durable, beside `pg_recvlogical` on the same server in the
//! same run: throughput of each plugin into each sink, peak memory, and latency at a steady rate.
//!
//! ```text
//! throughput  per round: empty ledger table, new slots and sinks (fig-receiver run --endpos now; a
//!             pgoutput slot for pg_recvlogical; see `fresh_slots`) ─▶ commit N ledger rows in
//!             T-row transactions ─▶ E = flush LSN
//!             each path, rotating order:  CHECKPOINT; sync  (see `settle`)
//!                                         full run --endpos E   (wall, wait4 → peak RSS)
//!                                         empty run --endpos E  (the same again: start-up cost)
//!             rows/s = N / (full − empty); the full wall is shown too
//! latency     fig-receiver run into SQLite (no endpos) ◀── writer: R rows/s, paced transactions,
//!             each records (highest id it inserted, wall time right after COMMIT returned)
//!             poller: max(id) of the SQLite mirror, read-only, every millisecond; the first time an
//!             id is seen is when its transaction became durable (the mirror and the checkpoint
//!             commit together); latency = seen − committed; SIGTERM ends the receiver
//! ```
//!
//! JSON Lines "to /dev/null": `jsonl:/dev/null` cannot work (the sink fdatasyncs its file, which
//! /dev/null refuses with EINVAL, and keeps a `PATH.checkpoint` sidecar), and `jsonl:-` keeps no
//! checkpoint, so a second run refuses the slot the first created (the resume rule). The JSON Lines
//! file and its sidecar therefore live on tmpfs (`/dev/shm`), where fsync costs nothing and writes
//! are memory copies; pg_recvlogical writes its file there too.

use crate::binary::{read_log, receiver_binary, settle, wait_streaming};
use crate::report::{load_average, median, verdict};
use crate::workload::{ledger_insert, ledger_insert_max_id, LEDGER_DDL};
use fig_tests::PgServer;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `fig-bench receive` measures; the flags of the command.
pub struct Options {
    /// Rows committed per throughput round.
    pub rows: u64,
    /// Rows per transaction in the throughput workload.
    pub txn_rows: u64,
    /// Throughput rounds (each on new slots, committing `rows` rows); medians are reported.
    pub repeat: usize,
    /// Seconds of steady writing per latency case.
    pub latency_secs: u64,
    /// Rows per second of the latency writer.
    pub latency_rate: u64,
    /// Rows per transaction of the latency writer.
    pub latency_txn_rows: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SinkKind {
    Jsonl,
    Sqlite,
}

/// One way of receiving: a plugin into a sink through its own slot.
struct Route {
    label: &'static str,
    slot: &'static str,
    kind: RouteKind,
}

#[derive(Clone, Copy)]
enum RouteKind {
    Receiver {
        plugin: &'static str,
        sink: SinkKind,
    },
    Recvlogical,
}

const ROUTES: &[Route] = &[
    Route {
        label: "pg_recvlogical, pgoutput proto 1 → file",
        slot: "t_recvlogical",
        kind: RouteKind::Recvlogical,
    },
    Route {
        label: "fig-receiver figoutput → JSON Lines",
        slot: "t_fig_jsonl",
        kind: RouteKind::Receiver {
            plugin: "figoutput",
            sink: SinkKind::Jsonl,
        },
    },
    Route {
        label: "fig-receiver pgoutput → JSON Lines",
        slot: "t_pg_jsonl",
        kind: RouteKind::Receiver {
            plugin: "pgoutput",
            sink: SinkKind::Jsonl,
        },
    },
    Route {
        label: "fig-receiver figoutput → SQLite",
        slot: "t_fig_sqlite",
        kind: RouteKind::Receiver {
            plugin: "figoutput",
            sink: SinkKind::Sqlite,
        },
    },
    Route {
        label: "fig-receiver pgoutput → SQLite",
        slot: "t_pg_sqlite",
        kind: RouteKind::Receiver {
            plugin: "pgoutput",
            sink: SinkKind::Sqlite,
        },
    },
];

/// The receiver's default `pipeline.batch_max_delay_ms`, run as is and beside a short delay.
const LATENCY_DELAYS: &[Option<u64>] = &[None, Some(10)];

/// Where the processes write and how they are started.
struct Bench {
    receiver: PathBuf,
    recvlogical: PathBuf,
    url: String,
    /// tmpfs: JSON Lines files, pg_recvlogical's file.
    mem_dir: tempfile::TempDir,
    /// The machine's disk: SQLite files, logs, configs.
    disk_dir: tempfile::TempDir,
}

/// One finished process.
struct Measured {
    wall: f64,
    /// User + system CPU seconds of the process.
    cpu: f64,
    /// CPU seconds of the walsender serving it, sampled (it may miss its last 20 ms).
    server_cpu: f64,
    max_rss_kb: u64,
    log: String,
}

pub fn run(opts: Options) {
    let receiver = receiver_binary();
    let pg = PgServer::builder().setting("max_wal_size", "4GB").start();
    let mut db = pg.connect();
    let version = pg.psql("SHOW server_version").trim().to_string();
    db.batch_execute(&format!(
        "{LEDGER_DDL}; CREATE PUBLICATION bench FOR TABLE ledger; CREATE EXTENSION figoutput;"
    ))
    .expect("setting up the benchmark database");
    let bench = Bench {
        receiver,
        recvlogical: pg.bin_dir().join("pg_recvlogical"),
        url: pg.url("postgres"),
        mem_dir: tempfile::Builder::new()
            .prefix("fig-bench-receive-")
            .tempdir_in(if Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("creating a directory on tmpfs"),
        disk_dir: tempfile::Builder::new()
            .prefix("fig-bench-receive-")
            .tempdir()
            .expect("creating a temporary directory"),
    };
    eprintln!(
        "fig-bench receive: PostgreSQL {version}, receiver {}, files in {} (tmpfs) and {} (disk)",
        bench.receiver.display(),
        bench.mem_dir.path().display(),
        bench.disk_dir.path().display()
    );

    let load_start = load_average();
    let throughput = throughput(&bench, &mut db, &opts);
    let latency = latency(&bench, &mut db, &opts);
    let machine = Machine {
        load_start,
        load_end: load_average(),
    };
    report(&opts, &version, &machine, &throughput, &latency);
}

// ---- throughput ---------------------------------------------------------------------------------

struct RouteResult {
    full: Vec<f64>,
    empty: Vec<f64>,
    /// CPU seconds of the full runs: the receiving process, its walsender.
    cpu: Vec<f64>,
    server_cpu: Vec<f64>,
    max_rss_kb: u64,
}

/// Every route's slot (and fig-receiver's sink), created anew on an empty ledger table. A slot
/// that served a round keeps its `restart_lsn` at the last `xl_running_xacts` record it could use,
/// often before that round's rows (the server logs one every 15 s at most): streaming the next round
/// from it would decode the previous rounds' WAL again, and each round would measure more than its
/// own rows (1.17 s, 1.79 s, 2.33 s for three identical 1M-row rounds, figoutput → JSON Lines).
fn fresh_slots(bench: &Bench, db: &mut postgres::Client) {
    db.batch_execute("TRUNCATE ledger")
        .expect("emptying the ledger table");
    for p in ROUTES {
        if slot_exists(db, p.slot) {
            db.execute("SELECT pg_drop_replication_slot($1)", &[&p.slot])
                .expect("dropping a slot of the previous round");
        }
        if let RouteKind::Receiver { sink, .. } = p.kind {
            let url = bench.sink(p, sink);
            let path = url.split_once(':').map_or(url.as_str(), |(_, path)| path);
            for suffix in ["", "-wal", "-shm", ".checkpoint"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
    for p in ROUTES {
        match p.kind {
            RouteKind::Recvlogical => {
                db.execute(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&p.slot],
                )
                .expect("creating pg_recvlogical's slot");
            }
            RouteKind::Receiver { .. } => {
                // The receiver creates its own slot (and the sink's first checkpoint) and stops.
                let m = bench.measure(&mut bench.receiver_cmd(p, "now"), p.slot, "create");
                assert!(
                    slot_exists(db, p.slot),
                    "fig-receiver did not create slot {}:\n{}",
                    p.slot,
                    m.log
                );
            }
        }
    }
}

fn throughput(bench: &Bench, db: &mut postgres::Client, opts: &Options) -> Vec<RouteResult> {
    let mut results: Vec<RouteResult> = ROUTES
        .iter()
        .map(|_| RouteResult {
            full: Vec::new(),
            empty: Vec::new(),
            cpu: Vec::new(),
            server_cpu: Vec::new(),
            max_rss_kb: 0,
        })
        .collect();
    for round in 0..opts.repeat {
        eprintln!(
            "round {}: committing {} ledger rows in transactions of {}",
            round + 1,
            opts.rows,
            opts.txn_rows
        );
        fresh_slots(bench, db);
        let t = Instant::now();
        let mut left = opts.rows;
        while left > 0 {
            let n = left.min(opts.txn_rows);
            db.batch_execute(&ledger_insert(n)).expect("workload");
            left -= n;
        }
        let endpos: String = db
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .expect("reading the WAL position")
            .get(0);
        eprintln!(
            "  committed in {:.1} s ({:.0} rows/s); end position {endpos}",
            t.elapsed().as_secs_f64(),
            opts.rows as f64 / t.elapsed().as_secs_f64()
        );
        for k in 0..ROUTES.len() {
            let i = (k + round) % ROUTES.len();
            let p = &ROUTES[i];
            let mut cmd = match p.kind {
                RouteKind::Recvlogical => bench.recvlogical_cmd(p, &endpos),
                RouteKind::Receiver { .. } => bench.receiver_cmd(p, &endpos),
            };
            settle(db);
            let full = bench.measure(&mut cmd, p.slot, "full");
            let empty = bench.measure(&mut cmd, p.slot, "empty");
            if let RouteKind::Receiver { .. } = p.kind {
                check_delivered(&full, opts.rows, p.label);
                check_delivered(&empty, 0, p.label);
            } else {
                // Its output is not needed and would only fill memory round after round.
                let _ = std::fs::remove_file(bench.recvlogical_file());
            }
            eprintln!(
                "  {:<42} {:>7.2} s (empty run {:.2} s), CPU {:.2} s + walsender {:.2} s, peak RSS {:.1} MB",
                p.label,
                full.wall,
                empty.wall,
                full.cpu,
                full.server_cpu,
                mb(full.max_rss_kb)
            );
            let r = &mut results[i];
            r.full.push(full.wall);
            r.cpu.push(full.cpu);
            r.server_cpu.push(full.server_cpu);
            r.empty.push(empty.wall);
            r.max_rss_kb = r.max_rss_kb.max(full.max_rss_kb).max(empty.max_rss_kb);
        }
    }
    for p in ROUTES {
        db.execute("SELECT pg_drop_replication_slot($1)", &[&p.slot])
            .expect("dropping a throughput slot");
    }
    results
}

fn slot_exists(db: &mut postgres::Client, slot: &str) -> bool {
    db.query_opt(
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .expect("reading pg_replication_slots")
    .is_some()
}

/// The rows fig-receiver says it delivered must be the rows committed.
fn check_delivered(m: &Measured, rows: u64, label: &str) {
    let delivered = m.log.lines().rev().find_map(|l| {
        let rest = l.split_once(" transactions, ")?.1;
        rest.split_once(" rows delivered")?.0.parse::<u64>().ok()
    });
    assert_eq!(
        delivered,
        Some(rows),
        "{label}: expected {rows} rows delivered; its log:\n{}",
        m.log
    );
}

// ---- latency ------------------------------------------------------------------------------------

struct LatencyResult {
    plugin: &'static str,
    delay_ms: Option<u64>,
    /// Commit to durable, per transaction after the warm-up, sorted, in milliseconds.
    ms: Vec<f64>,
    achieved_rate: f64,
    max_rss_kb: u64,
}

fn latency(bench: &Bench, db: &mut postgres::Client, opts: &Options) -> Vec<LatencyResult> {
    // Each case measures a steady stream: with the throughput rounds' rows left in the table, the
    // first case began with an initial copy of them, and its p99 (646 ms, the other cases < 30 ms)
    // measured the aftermath of that copy instead of commit-to-durable at 5,000 rows/s.
    db.batch_execute("TRUNCATE ledger")
        .expect("emptying the ledger table");
    let mut out = Vec::new();
    for &delay in LATENCY_DELAYS {
        for plugin in ["figoutput", "pgoutput"] {
            out.push(latency_case(bench, db, opts, plugin, delay));
        }
    }
    out
}

fn latency_case(
    bench: &Bench,
    db: &mut postgres::Client,
    opts: &Options,
    plugin: &'static str,
    delay_ms: Option<u64>,
) -> LatencyResult {
    let name = format!(
        "l_{}_{}",
        &plugin[..3],
        delay_ms.map_or("default".to_string(), |d| d.to_string())
    );
    let db_path = bench.disk_dir.path().join(format!("{name}.sqlite"));
    let log_path = bench.disk_dir.path().join(format!("{name}.log"));
    let mut cmd = Command::new(&bench.receiver);
    cmd.arg("run");
    if let Some(d) = delay_ms {
        let config = bench.disk_dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, format!("[pipeline]\nbatch_max_delay_ms = {d}\n"))
            .expect("writing the receiver's config");
        cmd.arg("--config").arg(config);
    }
    let mut child = cmd
        .args(["--source", &bench.url])
        .arg("--sink")
        .arg(format!("sqlite:{}", db_path.display()))
        .args([
            "--plugin",
            plugin,
            "--publication",
            "bench",
            "--slot",
            &name,
        ])
        .stdout(Stdio::null())
        .stderr(File::create(&log_path).expect("creating a log file"))
        .spawn()
        .expect("starting fig-receiver");
    let pid = child.id() as libc::pid_t;

    wait_streaming(db, &mut child, &name, &log_path);
    std::thread::sleep(Duration::from_millis(500));

    let stop = Arc::new(AtomicBool::new(false));
    let latest = Arc::new(AtomicI64::new(0));
    let poller = {
        let (stop, latest) = (Arc::clone(&stop), Arc::clone(&latest));
        let path = db_path.clone();
        std::thread::spawn(move || poll_mirror(&path, &stop, &latest))
    };

    let txns = (opts.latency_secs * opts.latency_rate / opts.latency_txn_rows).max(1);
    let period = Duration::from_secs_f64(opts.latency_txn_rows as f64 / opts.latency_rate as f64);
    let sql = ledger_insert_max_id(opts.latency_txn_rows);
    let statement = db.prepare(&sql).expect("preparing the latency insert");
    eprintln!(
        "latency, {plugin}, batch_max_delay_ms {}: {txns} transactions of {} rows, one every {:.1} ms",
        delay_ms.map_or("default".to_string(), |d| d.to_string()),
        opts.latency_txn_rows,
        period.as_secs_f64() * 1e3
    );
    let mut committed: Vec<(i64, Instant)> = Vec::with_capacity(txns as usize);
    let start = Instant::now();
    for k in 0..txns {
        let due = start + period * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut txn = db.transaction().expect("BEGIN");
        let max_id: i64 = txn
            .query_one(&statement, &[])
            .expect("latency insert")
            .get(0);
        txn.commit().expect("COMMIT");
        committed.push((max_id, Instant::now()));
    }
    let achieved_rate = (txns * opts.latency_txn_rows) as f64 / start.elapsed().as_secs_f64();
    let last = committed.last().map(|c| c.0).unwrap_or(0);

    // Until the last transaction is durable, then stop everything.
    let t = Instant::now();
    while latest.load(Ordering::Relaxed) < last {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "fig-receiver ({plugin}) did not deliver the last transaction in 120 s:\n{}",
            read_log(&log_path)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = poller.join().expect("the SQLite poller panicked");
    // SAFETY: kill(2) on the pid of our own child, not yet waited for.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let (_, usage) = wait_for(pid);
    let max_rss_kb = usage.max_rss_kb;
    drop(child);
    db.execute("SELECT pg_drop_replication_slot($1)", &[&name])
        .expect("dropping a latency slot");

    // Skip the first second: the receiver creates the mirror table and its statements then.
    let warmup = (opts.latency_rate / opts.latency_txn_rows) as usize;
    let mut ms: Vec<f64> = committed
        .iter()
        .skip(warmup.min(committed.len().saturating_sub(1)))
        .map(|&(id, at)| {
            let i = seen.partition_point(|&(s, _)| s < id);
            let (_, durable_at) = seen
                .get(i)
                .unwrap_or_else(|| panic!("id {id} was never seen in the SQLite mirror"));
            durable_at.saturating_duration_since(at).as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; writer at {achieved_rate:.0} rows/s; peak RSS {:.1} MB",
        percentile(&ms, 0.50),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(0.0),
        mb(max_rss_kb)
    );
    LatencyResult {
        plugin,
        delay_ms,
        ms,
        achieved_rate,
        max_rss_kb,
    }
}

const MIRROR_MAX_ID: &str = "SELECT max(id) FROM \"public.ledger\"";

/// Each new `max(id)` of the mirror with the time it was first seen, until `stop`; the newest also
/// in `latest`.
fn poll_mirror(path: &Path, stop: &AtomicBool, latest: &AtomicI64) -> Vec<(i64, Instant)> {
    let mut seen: Vec<(i64, Instant)> = Vec::new();
    let mut conn: Option<rusqlite::Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() && path.exists() {
            conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ok();
        }
        if let Some(c) = &conn {
            let max: Option<i64> = c
                .prepare_cached(MIRROR_MAX_ID)
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .unwrap_or(None);
            let now = Instant::now();
            if let Some(m) = max {
                if seen.last().is_none_or(|&(s, _)| m > s) {
                    seen.push((m, now));
                    latest.store(m, Ordering::Relaxed);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    seen
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---- processes ----------------------------------------------------------------------------------

impl Bench {
    fn sink(&self, p: &Route, sink: SinkKind) -> String {
        match sink {
            SinkKind::Jsonl => format!(
                "jsonl:{}",
                self.mem_dir
                    .path()
                    .join(format!("{}.jsonl", p.slot))
                    .display()
            ),
            SinkKind::Sqlite => format!(
                "sqlite:{}",
                self.disk_dir
                    .path()
                    .join(format!("{}.sqlite", p.slot))
                    .display()
            ),
        }
    }

    fn receiver_cmd(&self, p: &Route, endpos: &str) -> Command {
        let RouteKind::Receiver { plugin, sink } = p.kind else {
            unreachable!("receiver_cmd for {}", p.label)
        };
        let mut cmd = Command::new(&self.receiver);
        cmd.arg("run")
            .args(["--source", &self.url])
            .args(["--sink", &self.sink(p, sink)])
            .args([
                "--plugin",
                plugin,
                "--publication",
                "bench",
                "--slot",
                p.slot,
            ])
            .args(["--endpos", endpos]);
        cmd
    }

    fn recvlogical_file(&self) -> PathBuf {
        self.mem_dir.path().join("recvlogical.out")
    }

    fn recvlogical_cmd(&self, p: &Route, endpos: &str) -> Command {
        let mut cmd = Command::new(&self.recvlogical);
        cmd.args(["-d", &self.url, "--slot", p.slot, "--start", "--no-loop"])
            .args(["-o", "proto_version=1", "-o", "publication_names=bench"])
            .args(["--endpos", endpos])
            .arg("-f")
            .arg(self.recvlogical_file());
        cmd
    }

    /// Runs `cmd` to its end: wall time and peak RSS; panics with its log if it failed.
    fn measure(&self, cmd: &mut Command, name: &str, what: &str) -> Measured {
        let log_path = self.disk_dir.path().join(format!("{name}.{what}.log"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).expect("creating a log file"));
        let stop = Arc::new(AtomicBool::new(false));
        let walsender = {
            let (url, slot, stop) = (self.url.clone(), name.to_string(), Arc::clone(&stop));
            std::thread::spawn(move || walsender_cpu(&url, &slot, &stop))
        };
        let start = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", cmd.get_program()));
        let (status, usage) = wait_for(child.id() as libc::pid_t);
        let wall = start.elapsed().as_secs_f64();
        drop(child);
        stop.store(true, Ordering::Relaxed);
        let server_cpu = walsender.join().expect("the walsender sampler panicked");
        let log = read_log(&log_path);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{:?} ({name}, {what} run) failed (wait status {status}):\n{log}",
            cmd.get_program()
        );
        Measured {
            wall,
            cpu: usage.cpu,
            server_cpu,
            max_rss_kb: usage.max_rss_kb,
            log,
        }
    }
}

/// CPU seconds (user + system) of the walsender streaming `slot`, read from /proc every 20 ms
/// until it exits or `stop` is set: the last reading. 0 if none was seen.
fn walsender_cpu(url: &str, slot: &str, stop: &AtomicBool) -> f64 {
    let Ok(mut db) = postgres::Client::connect(url, postgres::NoTls) else {
        return 0.0;
    };
    let pid = loop {
        if stop.load(Ordering::Relaxed) {
            return 0.0;
        }
        let pid: Option<i32> = db
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .ok()
            .flatten()
            .and_then(|r| r.get(0));
        if let Some(pid) = pid {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut last = 0.0;
    while let Some(cpu) = proc_cpu_seconds(pid) {
        last = cpu;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    last
}

/// utime + stime of a process from /proc/PID/stat, in seconds; `None` once it is gone.
fn proc_cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// What wait4(2) reports about a finished child.
struct Usage {
    /// User + system CPU seconds.
    cpu: f64,
    /// Peak resident set, kB.
    max_rss_kb: u64,
}

/// Waits for a child: its wait status and resource usage.
fn wait_for(pid: libc::pid_t) -> (libc::c_int, Usage) {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            return (
                status,
                Usage {
                    cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
                    max_rss_kb: usage.ru_maxrss.max(0) as u64,
                },
            );
        }
        let err = std::io::Error::last_os_error();
        assert!(
            err.kind() == std::io::ErrorKind::Interrupted,
            "wait4({pid}): {err}"
        );
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

// ---- report -------------------------------------------------------------------------------------

/// How busy the machine was: other processes skew absolute times (not ratios as much).
struct Machine {
    load_start: String,
    load_end: String,
}

fn report(
    opts: &Options,
    version: &str,
    machine: &Machine,
    tp: &[RouteResult],
    lat: &[LatencyResult],
) {
    let rows = opts.rows as f64;
    let net = |r: &RouteResult| {
        let d: Vec<f64> = r.full.iter().zip(&r.empty).map(|(f, e)| f - e).collect();
        rows / median(&d)
    };
    let base = net(&tp[0]);
    println!(
        "\nThroughput, commit to durable: {} ledger rows in transactions of {}, committed before the \
         receivers start; median of {} round(s) (PostgreSQL {version}).\n\
         rows/s = rows / (full run − empty run); the empty run is the same command again with nothing \
         to do (process start, connections, slot checks). JSON Lines and pg_recvlogical's file are on \
         tmpfs (/dev/shm), SQLite on disk. CPU = user + system seconds of the receiving process \
         (wait4) and of the walsender serving it (/proc, sampled every 20 ms), medians. \
         {} CPUs; load average {} at the start, {} at the end.\n",
        opts.rows,
        opts.txn_rows,
        opts.repeat,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        machine.load_start,
        machine.load_end
    );
    println!("| path | rows/s | vs pg_recvlogical | full run (s) | empty run (s) | client CPU (s) | walsender CPU (s) | peak RSS (MB) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (p, r) in ROUTES.iter().zip(tp) {
        println!(
            "| {} | {:.0} | {:.2}× | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
            p.label,
            net(r),
            net(r) / base,
            median(&r.full),
            median(&r.empty),
            median(&r.cpu),
            median(&r.server_cpu),
            mb(r.max_rss_kb)
        );
    }
    let rate = |plugin: &str, sink: SinkKind| {
        ROUTES
            .iter()
            .zip(tp)
            .find(|(p, _)| {
                matches!(p.kind, RouteKind::Receiver { plugin: pl, sink: s } if pl == plugin && s == sink)
            })
            .map(|(_, r)| net(r))
            .expect("every plugin and sink is measured")
    };
    let fig_jsonl = rate("figoutput", SinkKind::Jsonl);
    let pg_jsonl = rate("pgoutput", SinkKind::Jsonl);
    let fig_sqlite = rate("figoutput", SinkKind::Sqlite);
    let pg_sqlite = rate("pgoutput", SinkKind::Sqlite);
    println!(
        "\nfigoutput / pgoutput: JSON Lines {:.2}×, SQLite {:.2}×",
        fig_jsonl / pg_jsonl,
        fig_sqlite / pg_sqlite
    );

    println!(
        "\nLatency, commit to durable in SQLite: {} rows/s in transactions of {} for {} s per case \
         (the first second left out); commit = the writer's clock right after COMMIT returned, durable \
         = the first millisecond poll of the SQLite mirror that sees the transaction's highest id.\n",
        opts.latency_rate, opts.latency_txn_rows, opts.latency_secs
    );
    println!("| plugin | batch_max_delay_ms | transactions | p50 (ms) | p99 (ms) | max (ms) | writer rows/s | peak RSS (MB) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in lat {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} |",
            l.plugin,
            l.delay_ms.map_or(
                format!(
                    "{} (default)",
                    fig_receiver::config::DEFAULT_BATCH_MAX_DELAY_MS
                ),
                |d| d.to_string(),
            ),
            l.ms.len(),
            percentile(&l.ms, 0.50),
            percentile(&l.ms, 0.99),
            l.ms.last().copied().unwrap_or(f64::NAN),
            l.achieved_rate,
            mb(l.max_rss_kb)
        );
    }

    let peak = tp
        .iter()
        .zip(ROUTES)
        .filter(|(_, p)| matches!(p.kind, RouteKind::Receiver { .. }))
        .map(|(r, _)| r.max_rss_kb)
        .chain(lat.iter().map(|l| l.max_rss_kb))
        .max()
        .unwrap_or(0);
    let p99_default = lat
        .iter()
        .filter(|l| l.delay_ms.is_none())
        .map(|l| percentile(&l.ms, 0.99))
        .fold(0.0, f64::max);
    println!("\nTargets:\n");
    println!("| target | measured | |\n|---|---|---|");
    let jsonl_min = fig_jsonl.min(pg_jsonl) / base;
    println!(
        "| JSON Lines ≥ 1.0× pg_recvlogical | figoutput {:.2}×, pgoutput {:.2}× | {} |",
        fig_jsonl / base,
        pg_jsonl / base,
        verdict(jsonl_min >= 1.0)
    );
    let sqlite_min = fig_sqlite.min(pg_sqlite) / base;
    println!(
        "| SQLite ≥ 0.5× pg_recvlogical | figoutput {:.2}×, pgoutput {:.2}× | {} |",
        fig_sqlite / base,
        pg_sqlite / base,
        verdict(sqlite_min >= 0.5)
    );
    let fig_pg_min = (fig_jsonl / pg_jsonl).min(fig_sqlite / pg_sqlite);
    println!(
        "| figoutput ≥ 1.2× pgoutput | JSON Lines {:.2}×, SQLite {:.2}× | {} |",
        fig_jsonl / pg_jsonl,
        fig_sqlite / pg_sqlite,
        verdict(fig_pg_min >= 1.2)
    );
    println!(
        "| p99 latency < 100 ms (default config) | {p99_default:.1} ms (worst plugin) | {} |",
        verdict(p99_default < 100.0)
    );
    println!(
        "| peak memory < 200 MB | {:.1} MB (largest receiver run) | {} |",
        mb(peak),
        verdict(mb(peak) < 200.0)
    );
}
