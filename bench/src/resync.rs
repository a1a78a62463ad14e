//! `fig-receiver resync` of a streamed table beside a plain `fig-receiver snapshot` of the same
//! table into a new SQLite file, both under the same steady update load, in one run: how much a
//! re-copy that must end in sync with a running stream costs over a copy that need not.
//!
//! ```text
//! setup    N ledger rows, VACUUM ANALYZE, a publication FOR ALL TABLES
//!          fig-receiver run --endpos now      the initial copy into the stream's SQLite sink
//!          fig-receiver run                   streaming from then on, until the end (pgoutput)
//! round    both cases, the order alternating per round, each: CHECKPOINT; sync (see `settle`)
//!            writer: R row updates/s, transactions of 20 rows, ids striding over the table
//!            after 1 s, time the command from start to exit:
//!            resync    fig-receiver resync public.ledger     (the running receiver's sink; exits
//!                      once the re-copy is swapped in and the stream's history since is replayed)
//!            snapshot  fig-receiver snapshot --sync public.ledger=snapshot   (a new SQLite file)
//!            stop the writer
//!          after each resync: the stream's checkpoint reaches the server's flush LSN; then the
//!          sink must record one more finished re-copy (`_fig_loads`) and the mirror and the table
//!          must hold the same rows (count and a sum of row hashes), or the benchmark fails
//! report   medians; ratio resync / snapshot (target ≤ 1.5×)
//! ```
//!
//! The stream's receiver runs through both cases, so both pay for its work on the same updates.

use crate::binary::{read_log, receiver_binary, remove_sqlite, settle, wait_streaming};
use crate::report::{load_average, median, verdict};
use crate::workload::fill_ledger;
use fig_tests::receiver::{current_flush_lsn, lsn_text, wait_for_checkpoint};
use fig_tests::PgServer;
use postgres::fallible_iterator::FallibleIterator;
use std::fs::File;
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What `fig-bench resync` measures; the flags of the command.
pub struct Options {
    /// Rows of the ledger table.
    pub rows: u64,
    /// Rounds of both cases; medians are reported.
    pub rounds: usize,
    /// Row updates per second while a case runs.
    pub rate: u64,
}

const TABLE: &str = "public.ledger";
const SLOT: &str = "bench_stream";
const PUBLICATION: &str = "bench";
/// Rows per update transaction: 2,000 rows/s are 100 commits a second.
const UPDATE_TXN_ROWS: u64 = 20;
/// The k-th update hits row 1 + (k · STRIDE mod N): a prime that divides no power of ten, so with a
/// round number of rows the updates visit every row once before any twice, spread over all pages.
const STRIDE: u64 = 7919;
/// Longer than any case should take: a command still running then is stuck, not slow.
const CASE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Resync,
    Snapshot,
}

const CASES: [Case; 2] = [Case::Resync, Case::Snapshot];

impl Case {
    fn label(self) -> String {
        match self {
            Case::Resync => format!("fig-receiver resync {TABLE} (beside the running receiver)"),
            Case::Snapshot => {
                format!(
                    "fig-receiver snapshot --sync {TABLE}=snapshot → new SQLite file (baseline)"
                )
            }
        }
    }
}

/// One timed command.
struct Timed {
    secs: f64,
    /// Rows the command says it copied.
    rows: u64,
    /// Row updates per second the writer achieved while it ran.
    update_rate: f64,
}

/// The server, the running receiver and where files go.
struct Bench {
    receiver: PathBuf,
    url: String,
    dir: tempfile::TempDir,
    /// The sink the running receiver streams into and the resync re-copies into.
    stream_sink: PathBuf,
    daemon: Child,
    daemon_log: PathBuf,
    /// The writer's next update number: each case's writer goes on where the last one stopped.
    next_update: u64,
}

pub fn run(opts: Options) {
    let receiver = receiver_binary();
    let pg = PgServer::builder()
        .setting("max_wal_size", "4GB")
        .setting("shared_buffers", "1GB")
        .start();
    let mut db = pg.connect();
    let version = pg.psql("SHOW server_version").trim().to_string();
    let load_start = load_average();
    fill_ledger(&mut db, opts.rows);
    db.batch_execute(&format!("CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES"))
        .expect("creating the publication");
    let mut bench = Bench::start(receiver, pg.url("postgres"), &mut db);

    let mut times: Vec<Vec<Timed>> = CASES.iter().map(|_| Vec::new()).collect();
    for round in 0..opts.rounds {
        for k in 0..CASES.len() {
            // Alternating: a case that always ran second would always meet the first's aftermath.
            let i = (k + round) % CASES.len();
            let timed = bench.time_case(&mut db, CASES[i], round, &opts);
            eprintln!(
                "round {}: {:<80} {:>7.2} s ({} rows, {:.0} updates/s)",
                round + 1,
                CASES[i].label(),
                timed.secs,
                timed.rows,
                timed.update_rate
            );
            assert_eq!(
                timed.rows,
                opts.rows,
                "{} copied {} rows; the table has {}",
                CASES[i].label(),
                timed.rows,
                opts.rows
            );
            if CASES[i] == Case::Resync {
                let resyncs = times[i].len() as i64 + 1;
                bench.check_mirror(&mut db, resyncs);
            }
            times[i].push(timed);
        }
    }
    bench.stop();
    report(&opts, &version, &times, &load_start);
}

impl Bench {
    /// The initial copy into the stream's sink, then a receiver streaming from there on.
    fn start(receiver: PathBuf, url: String, db: &mut postgres::Client) -> Bench {
        let dir = tempfile::Builder::new()
            .prefix("fig-bench-resync-")
            .tempdir()
            .expect("creating a temporary directory");
        let stream_sink = dir.path().join("stream.sqlite");
        let copy_log = dir.path().join("initial-copy.log");
        let t = Instant::now();
        let status = stream_command(&receiver, "run", &url, &stream_sink)
            .args(["--endpos", "now"])
            .stderr(File::create(&copy_log).expect("creating a log file"))
            .status()
            .expect("running fig-receiver run --endpos now");
        assert!(
            status.success(),
            "the initial copy failed ({status}):\n{}",
            read_log(&copy_log)
        );
        eprintln!(
            "initial copy and slot: {:.2} s (fig-receiver run --endpos now)",
            t.elapsed().as_secs_f64()
        );
        let daemon_log = dir.path().join("stream.log");
        let mut daemon = stream_command(&receiver, "run", &url, &stream_sink)
            .stderr(File::create(&daemon_log).expect("creating a log file"))
            .spawn()
            .expect("starting fig-receiver run");
        wait_streaming(db, &mut daemon, SLOT, &daemon_log);
        Bench {
            receiver,
            url,
            dir,
            stream_sink,
            daemon,
            daemon_log,
            next_update: 0,
        }
    }

    /// One case under the update load: its wall time, start to exit.
    fn time_case(
        &mut self,
        db: &mut postgres::Client,
        case: Case,
        round: usize,
        opts: &Options,
    ) -> Timed {
        let name = format!(
            "r{round}-{}",
            match case {
                Case::Resync => "resync",
                Case::Snapshot => "snapshot",
            }
        );
        let log = self.dir.path().join(format!("{name}.log"));
        let snapshot_sink = self.dir.path().join(format!("{name}.sqlite"));
        let mut cmd = match case {
            Case::Resync => {
                let mut c = stream_command(&self.receiver, "resync", &self.url, &self.stream_sink);
                c.arg(TABLE);
                c
            }
            Case::Snapshot => {
                let mut c = Command::new(&self.receiver);
                c.args(["snapshot", "--source", &self.url])
                    .arg("--sink")
                    .arg(format!("sqlite:{}", snapshot_sink.display()))
                    .args(["--sync", &format!("{TABLE}=snapshot")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null());
                c
            }
        };
        cmd.stderr(File::create(&log).expect("creating a log file"));

        settle(db);
        let writer = Writer::start(&self.url, opts.rows, opts.rate, self.next_update);
        // The command starts into an update load already running, as in production.
        std::thread::sleep(Duration::from_secs(1));
        let secs = self.wall_beside_stream(&mut cmd, &log);
        let (updates, update_rate) = writer.stop();
        self.next_update += updates;
        remove_sqlite(&snapshot_sink);

        let text = read_log(&log);
        if case == Case::Resync {
            // The case measures a re-copy carried by the running stream, not one streaming itself.
            assert!(
                !text.contains("streaming here"),
                "the resync streamed itself although a receiver streams the slot:\n{text}"
            );
        }
        Timed {
            secs,
            rows: copied_rows(&text)
                .unwrap_or_else(|| panic!("{name}: no row count in its log:\n{text}")),
            update_rate,
        }
    }

    /// Runs `cmd` to its exit: its wall time. Panics with its log unless it exits 0, and with the
    /// stream's log if the running receiver stops meanwhile (a resync would then wait forever).
    fn wall_beside_stream(&mut self, cmd: &mut Command, log: &Path) -> f64 {
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for a command") {
                break status;
            }
            if let Ok(Some(status)) = self.daemon.try_wait() {
                let _ = child.kill();
                panic!(
                    "the streaming receiver exited ({status}) during {cmd:?}:\n{}",
                    read_log(&self.daemon_log)
                );
            }
            if started.elapsed() > CASE_TIMEOUT {
                let _ = child.kill();
                panic!(
                    "{cmd:?} still ran after {CASE_TIMEOUT:?}:\n{}",
                    read_log(log)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let secs = started.elapsed().as_secs_f64();
        assert!(
            status.success(),
            "{cmd:?} failed ({status}):\n{}",
            read_log(log)
        );
        secs
    }

    /// With the writer stopped: once the stream's checkpoint reached the server's flush LSN, the
    /// mirror must hold exactly the table's rows, and the sink must record `resyncs` finished
    /// re-copies (else the mirror would only show the stream's work). Panics if not.
    fn check_mirror(&mut self, db: &mut postgres::Client, resyncs: i64) {
        let end = current_flush_lsn(db);
        let t = Instant::now();
        wait_for_checkpoint(&self.stream_sink, end, Duration::from_secs(120), || {
            read_log(&self.daemon_log)
        });
        let source = source_digest(db);
        let sink = rusqlite::Connection::open_with_flags(
            &self.stream_sink,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("opening the stream's sink read-only");
        let finished: i64 = sink
            .query_row(
                "SELECT count(*) FROM _fig_loads WHERE sync = 'resync' AND state = 'finished'",
                [],
                |r| r.get(0),
            )
            .expect("reading _fig_loads");
        assert_eq!(
            finished, resyncs,
            "the sink records {finished} finished re-copies after {resyncs} resyncs"
        );
        let mirror = mirror_digest(&sink);
        assert_eq!(
            source,
            mirror,
            "the mirror of {TABLE} in {} differs from the source at {} (source, mirror)",
            self.stream_sink.display(),
            lsn_text(end)
        );
        eprintln!(
            "  mirror = source at {}: {} rows, row-hash sum {:016x} (stream caught up in {:.2} s)",
            lsn_text(end),
            source.rows,
            source.sum,
            t.elapsed().as_secs_f64()
        );
    }

    /// Ends the streaming receiver (SIGTERM) and requires a clean exit.
    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe { libc::kill(self.daemon.id() as libc::pid_t, libc::SIGTERM) };
        let status = self
            .daemon
            .wait()
            .expect("waiting for the streaming receiver");
        assert!(
            status.success(),
            "the streaming receiver exited with {status}:\n{}",
            read_log(&self.daemon_log)
        );
    }
}

impl Drop for Bench {
    /// A benchmark that failed midway leaves no receiver behind: it would retry a server that is
    /// gone, for good.
    fn drop(&mut self) {
        if let Ok(None) = self.daemon.try_wait() {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
    }
}

/// `fig-receiver VERB` on the benchmark's stream (`run` and `resync` name it with the same flags):
/// pgoutput, the publication FOR ALL TABLES, the stream's slot and SQLite sink.
fn stream_command(receiver: &Path, verb: &str, url: &str, sink: &Path) -> Command {
    let mut cmd = Command::new(receiver);
    cmd.arg(verb)
        .args(["--source", url])
        .arg("--sink")
        .arg(format!("sqlite:{}", sink.display()))
        .args(["--plugin", "pgoutput", "--publication", PUBLICATION])
        .args(["--slot", SLOT])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// The rows a `snapshot` or `resync` says it copied, from its last line: "… in sync (R rows) in
/// S s" or "…, R rows synced in S s".
fn copied_rows(log: &str) -> Option<u64> {
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with("fig-receiver: "))?;
    let before_rows = last.split(" rows").next()?;
    let number = before_rows.rsplit([' ', '(']).next()?;
    number.parse().ok()
}

// ---- the update load ----------------------------------------------------------------------------

/// A thread committing `rate` row updates per second until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, f64)>,
}

impl Writer {
    /// Starts at update number `first`, so consecutive writers go on striding over the table.
    fn start(url: &str, rows: u64, rate: u64, first: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let mut db =
            postgres::Client::connect(url, postgres::NoTls).expect("connecting the writer");
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || write_updates(&mut db, rows, rate, first, &stop))
        };
        Writer { stop, thread }
    }

    /// Stops the writer: the updates it committed and their rate per second.
    fn stop(self) -> (u64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the update writer panicked")
    }
}

/// Paced transactions of `UPDATE_TXN_ROWS` updates, one every `UPDATE_TXN_ROWS / rate` seconds
/// (a late one is not waited for: the rate holds on average), until `stop`.
fn write_updates(
    db: &mut postgres::Client,
    rows: u64,
    rate: u64,
    first: u64,
    stop: &AtomicBool,
) -> (u64, f64) {
    let update = db
        .prepare(
            "UPDATE ledger SET amount = amount + 0.01, memo = 'update ' || $2::int8 \
             WHERE id = ANY($1)",
        )
        .expect("preparing the update");
    let period = Duration::from_secs_f64(UPDATE_TXN_ROWS as f64 / rate.max(1) as f64);
    let start = Instant::now();
    let mut k = first;
    let mut txns: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(wait) = (start + period * txns).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let ids: Vec<i64> = (k..k + UPDATE_TXN_ROWS)
            .map(|u| 1 + (u * STRIDE % rows) as i64)
            .collect();
        db.execute(&update, &[&ids, &(k as i64)])
            .expect("updating ledger rows");
        k += UPDATE_TXN_ROWS;
        txns += 1;
    }
    let updates = k - first;
    (updates, updates as f64 / start.elapsed().as_secs_f64())
}

// ---- comparing the mirror with the table --------------------------------------------------------

/// A table's rows as a count and a sum of 64-bit hashes of each row's text: equal multisets of
/// rows give equal digests whatever the order they are read in.
#[derive(Debug, Default, PartialEq, Eq)]
struct Digest {
    rows: u64,
    sum: u64,
}

impl Digest {
    /// Adds a row given as its columns' texts (`None` for NULL).
    fn add<'a>(&mut self, columns: impl Iterator<Item = Option<&'a str>>) {
        // DefaultHasher::new() has fixed keys: the same text hashes the same on both sides.
        let mut h = DefaultHasher::new();
        for c in columns {
            match c {
                // A tag byte per column keeps NULL, "" and column boundaries apart.
                None => h.write_u8(0),
                Some(text) => {
                    h.write_u8(1);
                    h.write(text.as_bytes());
                    h.write_u8(0xff);
                }
            }
        }
        self.rows += 1;
        self.sum = self.sum.wrapping_add(h.finish());
    }
}

/// The ledger's rows, each value as the text the SQLite sink stores for it (DESIGN.md,
/// "Normalized values"): numeric as its exact text, char(3) with its padding, timestamptz as RFC
/// 3339 UTC with microseconds.
const SOURCE_ROWS: &str = "SELECT id::text, account::text, amount::text, concat(currency), memo, \
     to_char(booked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), status \
     FROM ledger";
const MIRROR_ROWS: &str = "SELECT id, account, amount, currency, memo, booked_at, status \
     FROM \"public.ledger\"";

fn source_digest(db: &mut postgres::Client) -> Digest {
    let no_params: [&(dyn postgres::types::ToSql + Sync); 0] = [];
    let mut rows = db
        .query_raw(SOURCE_ROWS, no_params)
        .expect("reading the ledger");
    let mut digest = Digest::default();
    while let Some(row) = rows.next().expect("reading the ledger") {
        digest.add((0..row.len()).map(|i| row.get::<_, Option<&str>>(i)));
    }
    digest
}

fn mirror_digest(sink: &rusqlite::Connection) -> Digest {
    let mut stmt = sink.prepare(MIRROR_ROWS).expect("reading the mirror");
    let mut rows = stmt.query([]).expect("reading the mirror");
    let mut digest = Digest::default();
    while let Some(row) = rows.next().expect("reading the mirror") {
        let texts: Vec<Option<String>> = (0..7)
            .map(|i| sqlite_text(row.get_ref(i).expect("a mirror column")))
            .collect();
        digest.add(texts.iter().map(|t| t.as_deref()));
    }
    digest
}

/// A SQLite value as the text PostgreSQL gives for it: integers in decimal, text as stored.
/// A float or blob has no place in this table: it shows as text no source row has.
fn sqlite_text(v: rusqlite::types::ValueRef<'_>) -> Option<String> {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        other => Some(format!("<unexpected {other:?}>")),
    }
}

// ---- report -------------------------------------------------------------------------------------

fn report(opts: &Options, version: &str, times: &[Vec<Timed>], load_start: &str) {
    let secs = |i: usize| -> Vec<f64> { times[i].iter().map(|t| t.secs).collect() };
    let base = median(&secs(1));
    println!(
        "\n## resync: {} rows of the ledger table under {} row updates/s, PostgreSQL {version}, \
         {} round(s), medians; {} CPUs, load average {load_start} at the start, {} at the end\n",
        opts.rows,
        opts.rate,
        opts.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!("| case | seconds | rows | updates/s during | ratio resync/snapshot |");
    println!("|---|---:|---:|---:|---:|");
    for (i, case) in CASES.iter().enumerate() {
        let rates: Vec<f64> = times[i].iter().map(|t| t.update_rate).collect();
        println!(
            "| {} | {:.2} | {} | {:.0} | {:.2}× |",
            case.label(),
            median(&secs(i)),
            times[i][0].rows,
            median(&rates),
            median(&secs(i)) / base
        );
    }
    let rounds = |i: usize| {
        secs(i)
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!("\nRounds (s): resync {}; snapshot {}", rounds(0), rounds(1));
    let ratio = median(&secs(0)) / base;
    println!(
        "Target: resync ≤ 1.5× snapshot: {ratio:.2}× ({})",
        verdict(ratio <= 1.5)
    );
    println!(
        "Mirror check after each resync: the stream's mirror equals the source (count and row-hash sum)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copied_rows_come_from_the_commands_last_line() {
        let resync = "2026-12-08T10:00:00Z INFO re-copying\n\
                      fig-receiver: 1 tables re-copied and in sync (1000000 rows) in 3.1 s\n";
        assert_eq!(copied_rows(resync), Some(1_000_000));
        let snapshot = "fig-receiver: 1 tables, 999 rows synced in 0.2 s\n";
        assert_eq!(copied_rows(snapshot), Some(999));
        assert_eq!(copied_rows("fig-receiver: error: no sink\n"), None);
    }

    #[test]
    fn a_digest_ignores_row_order_and_tells_null_from_empty() {
        let digest = |rows: &[[Option<&str>; 2]]| {
            let mut d = Digest::default();
            for r in rows {
                d.add(r.iter().copied());
            }
            d
        };
        let a = [[Some("1"), Some("x")], [Some("2"), None]];
        let b = [[Some("2"), None], [Some("1"), Some("x")]];
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(
            digest(&[[Some("2"), None]]),
            digest(&[[Some("2"), Some("")]])
        );
        assert_ne!(
            digest(&[[Some("ab"), Some("")]]),
            digest(&[[Some("a"), Some("b")]])
        );
    }
}
