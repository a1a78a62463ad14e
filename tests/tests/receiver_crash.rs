//! `fig-receiver run` survives crashes on both sides without losing or repeating a change:
//! SIGKILL of the receiver at random moments, fast and immediate server restarts, and a walsender
//! terminated under it (DESIGN.md rules 1-3: ack only what is durable, one resume rule, events
//! identified by commit LSN and ordinal).
//!
//! The workload counts its own changes: each transaction increments the one row of `counter` to n,
//! inserts `events` row n, and when n is a multiple of 10 deletes event n - 5. Whatever happened to
//! connections on the way, the committed transactions are exactly n = 1..=N with N the final counter,
//! so the complete history is known: commit k holds, in order, the counter update to k, the insert of
//! event k and (k % 10 = 0) the delete of event k - 5. Both plugins run side by side, each with its own
//! slot and sink.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fig_tests::receiver::{
    assert_mirrors_match, current_flush_lsn, lsn_text, wait_for_checkpoint, HistoryRow, Running,
    Target,
};
use fig_tests::{PgServer, StopMode};
use serde_json::Value as Json;

const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const PUBLICATION: &str = "fig_pub";
const TABLES: &[&str] = &["public.events", "public.counter"];

fn server() -> PgServer {
    PgServer::start()
}

/// Tables and both targets' slots (created by a first run, before any counted change).
fn set_up(pg: &PgServer, dir: &std::path::Path) -> Vec<Target> {
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE events (seq bigint PRIMARY KEY, payload text NOT NULL,
                              at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL);
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    let targets = vec![
        Target::new("figoutput", dir, None),
        Target::new("pgoutput", dir, Some(PUBLICATION)),
    ];
    for t in &targets {
        t.catch_up(&pg.url("postgres"), RUN_TIMEOUT);
    }
    pg.psql("INSERT INTO counter VALUES (1, 0)");
    targets
}

/// One counted transaction; returns its n.
fn counted_transaction(c: &mut postgres::Client) -> Result<i64, postgres::Error> {
    let mut t = c.transaction()?;
    let n: i64 = t
        .query_one("UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n", &[])?
        .get(0);
    t.execute(
        "INSERT INTO events (seq, payload) VALUES ($1::bigint, 'event ' || $1::bigint || repeat('.', ($1::bigint % 50)::int))",
        &[&n],
    )?;
    if n % 10 == 0 {
        t.execute("DELETE FROM events WHERE seq = $1", &[&(n - 5)])?;
    }
    t.commit()?;
    Ok(n)
}

/// A thread committing counted transactions until told to stop. With `tolerate_errors`, a failed
/// transaction (the server restarting under it) is followed by a reconnect; whether its COMMIT
/// happened is read from the counter at the end, never assumed.
struct Workload {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl Drop for Workload {
    fn drop(&mut self) {
        // A failing test stops its workload too.
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Workload {
    fn start(url: String, tolerate_errors: bool) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let connect = || {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match postgres::Client::connect(&url, postgres::NoTls) {
                        Ok(c) => return c,
                        Err(_) if tolerate_errors && Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Err(e) => panic!("the workload cannot connect: {e}"),
                    }
                }
            };
            let mut c = connect();
            let mut committed = 0u64;
            while !flag.load(Ordering::Relaxed) {
                match counted_transaction(&mut c) {
                    Ok(_) => committed += 1,
                    Err(_) if tolerate_errors => {
                        std::thread::sleep(Duration::from_millis(100));
                        c = connect();
                    }
                    Err(e) => panic!("a workload transaction failed: {}", pg_error(&e)),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            committed
        });
        Workload {
            stop,
            handle: Some(handle),
        }
    }

    /// Panics with the workload's own panic if it has died.
    fn check(&mut self) {
        if self.handle.as_ref().is_some_and(JoinHandle::is_finished) {
            match self.handle.take().map(JoinHandle::join) {
                Some(Err(p)) => std::panic::resume_unwind(p),
                _ => panic!("the workload stopped by itself"),
            }
        }
    }

    /// Stops it; returns the number of transactions it saw commit.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("the workload thread")
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// postgres' `Display` says only "db error"; the server's fields say what happened.
fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn counter(c: &mut postgres::Client) -> i64 {
    c.query_one("SELECT n FROM counter WHERE id = 1", &[])
        .expect("reading the counter")
        .get(0)
}

fn json_field(row: Option<&str>, field: &str) -> Option<i64> {
    let v: Json = serde_json::from_str(row?).ok()?;
    v.get(field)?.as_i64()
}

/// What one history row says, in the workload's terms.
fn describe(h: &HistoryRow) -> String {
    match (h.table.as_str(), h.op.as_str()) {
        ("counter", "insert") => {
            format!("counter insert n={:?}", json_field(h.after.as_deref(), "n"))
        }
        ("counter", "update") => {
            format!("counter update n={:?}", json_field(h.after.as_deref(), "n"))
        }
        ("events", "insert") => format!(
            "events insert seq={:?}",
            json_field(h.after.as_deref(), "seq")
        ),
        ("events", "delete") => format!(
            "events delete seq={:?}",
            json_field(h.before.as_deref(), "seq")
        ),
        (t, op) => format!("{t} {op}"),
    }
}

/// Checks the history against the workload: the counter's insert, then commits k = 1..=n_max, each
/// exactly [counter update to k, insert of event k, (k % 10 = 0) delete of event k - 5], ordinals
/// contiguous. With `n_max = None` the history may stop after any whole commit (a crash point);
/// returns the last k it holds.
#[track_caller]
fn assert_history_is_the_workload(target: &Target, n_max: Option<i64>) -> i64 {
    let history = target.open().history();
    let mut commits: BTreeMap<i64, Vec<&HistoryRow>> = BTreeMap::new();
    for h in &history {
        commits.entry(h.commit_lsn).or_default().push(h);
    }
    let fail = |what: String| -> ! {
        panic!(
            "{}: the history is not exactly the workload's changes: {what}",
            target.plugin
        )
    };
    let mut k = 0i64;
    let mut first = true;
    for (lsn, rows) in &commits {
        let start = rows[0].ordinal;
        for (i, r) in rows.iter().enumerate() {
            if r.ordinal != start + i as i64 || r.xid != rows[0].xid {
                fail(format!(
                    "commit {} has ordinals {:?} / xids {:?}",
                    lsn_text(*lsn as u64),
                    rows.iter().map(|r| r.ordinal).collect::<Vec<_>>(),
                    rows.iter().map(|r| r.xid).collect::<Vec<_>>()
                ));
            }
        }
        let got: Vec<String> = rows.iter().map(|r| describe(r)).collect();
        let want: Vec<String> = if first {
            vec!["counter insert n=Some(0)".into()]
        } else {
            let next = k + 1;
            let mut w = vec![
                format!("counter update n=Some({next})"),
                format!("events insert seq=Some({next})"),
            ];
            if next % 10 == 0 {
                w.push(format!("events delete seq=Some({})", next - 5));
            }
            w
        };
        if got != want {
            fail(format!(
                "commit {} (after k = {k}) holds {got:?}, expected {want:?}",
                lsn_text(*lsn as u64)
            ));
        }
        if !first {
            k += 1;
        }
        first = false;
    }
    if let Some(n) = n_max {
        if first || k != n {
            fail(format!(
                "it ends at k = {k}, the source committed n = 1..={n}"
            ));
        }
    }
    k
}

fn confirmed_flush(c: &mut postgres::Client, slot: &str) -> Option<u64> {
    c.query_one(
        "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .expect("reading the slot")
    .get::<_, Option<String>>(0)
    .map(|t| t.parse().expect("an LSN as a number"))
}

/// Rule 1: the server was never told more than the sink holds.
#[track_caller]
fn assert_ack_covered_by_checkpoint(c: &mut postgres::Client, t: &Target) {
    let checkpoint = t.open().checkpoint_lsn().unwrap_or(0);
    let confirmed = confirmed_flush(c, &t.slot).unwrap_or(0);
    assert!(
        confirmed <= checkpoint,
        "{}: slot {} confirmed {} but the sink's checkpoint is {}: an ack of something not durable",
        t.plugin,
        t.slot,
        lsn_text(confirmed),
        lsn_text(checkpoint)
    );
}

/// splitmix64, seeded from the clock unless FIG_TEST_SEED is set (printed for reruns).
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("FIG_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("kill moments: FIG_TEST_SEED={seed}");
        Rng(seed)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        lo + (z ^ (z >> 31)) % (hi - lo + 1)
    }
}

const KILL_CYCLES: usize = 24;

#[test]
fn sigkill_of_the_receiver_at_random_moments_loses_and_repeats_nothing() {
    let started = Instant::now();
    let pg = server();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");
    let targets = set_up(&pg, dir.path());
    let mut c = pg.connect();
    let mut rng = Rng::seeded();
    let mut workload = Workload::start(url.clone(), false);

    let mut advanced = vec![0usize; targets.len()];
    let mut last_k = vec![0i64; targets.len()];
    let mut last_checkpoint = vec![0u64; targets.len()];
    for cycle in 0..KILL_CYCLES {
        workload.check();
        let mut running: Vec<Running> = targets.iter().map(|t| t.receiver(&url).spawn()).collect();
        // Kill the two at different moments, in turns first.
        let order: Vec<usize> = if cycle % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for (turn, &i) in order.iter().enumerate() {
            let pause = if turn == 0 {
                rng.range(50, 800)
            } else {
                rng.range(0, 300)
            };
            std::thread::sleep(Duration::from_millis(pause));
            if let Some(status) = running[i].try_status() {
                panic!(
                    "{} exited ({status}) before it was killed:\n{}",
                    targets[i].plugin,
                    running[i].stderr_so_far()
                );
            }
            running[i].kill9();
            let t = &targets[i];
            // After every crash: the sink holds whole transactions, a prefix of the workload, and
            // the slot never confirmed beyond the sink's checkpoint.
            let k = assert_history_is_the_workload(t, None);
            assert!(
                k >= last_k[i],
                "{}: the history shrank from {} to {k}",
                t.plugin,
                last_k[i]
            );
            let checkpoint = t.open().checkpoint_lsn().unwrap_or(0);
            assert!(
                checkpoint >= last_checkpoint[i],
                "{}: the checkpoint went back from {} to {}",
                t.plugin,
                lsn_text(last_checkpoint[i]),
                lsn_text(checkpoint)
            );
            if k > last_k[i] {
                advanced[i] += 1;
            }
            last_k[i] = k;
            last_checkpoint[i] = checkpoint;
            assert_ack_covered_by_checkpoint(&mut c, t);
        }
    }
    let committed = workload.finish();
    let n = counter(&mut c);
    assert_eq!(
        n as u64, committed,
        "the counter disagrees with the commits the workload saw"
    );
    eprintln!(
        "{KILL_CYCLES} kill cycles; {n} transactions; cycles in which a sink advanced: {advanced:?}"
    );
    for (i, t) in targets.iter().enumerate() {
        // Not vacuous: the receivers got work done between kills, not only at the end.
        assert!(
            advanced[i] >= KILL_CYCLES / 4,
            "{}: the sink advanced in only {} of {KILL_CYCLES} cycles; the kills came before any work",
            t.plugin,
            advanced[i]
        );
        t.catch_up(&url, RUN_TIMEOUT);
        assert_mirrors_match(&mut c, &t.sink, TABLES);
        assert_history_is_the_workload(t, Some(n));
        assert_ack_covered_by_checkpoint(&mut c, t);
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Panics, with the output of each, if any receiver has exited.
#[track_caller]
fn assert_all_running(targets: &[Target], running: &mut [Running]) {
    let dead: Vec<String> = targets
        .iter()
        .zip(running.iter_mut())
        .filter_map(|(t, r)| {
            r.try_status()
                .map(|s| format!("{} exited ({s}):\n{}", t.plugin, r.stderr_so_far()))
        })
        .collect();
    assert!(
        dead.is_empty(),
        "receivers exited while they should run:\n{}",
        dead.join("\n-----\n")
    );
}

/// Polls until every target's slot has a walsender again (the receivers reconnected).
#[track_caller]
fn wait_for_active_slots(c_url: &str, targets: &[Target], running: &mut [Running]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert_all_running(targets, running);
        let active = postgres::Client::connect(c_url, postgres::NoTls)
            .and_then(|mut c| {
                c.query_one(
                    "SELECT count(*) FROM pg_replication_slots WHERE active_pid IS NOT NULL AND slot_name = ANY($1)",
                    &[&targets.iter().map(|t| t.slot.clone()).collect::<Vec<_>>()],
                )
            })
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if active as usize == targets.len() {
            return;
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = running.iter().map(|r| r.stderr_so_far()).collect();
            panic!(
                "the receivers did not reconnect within 90 s ({active} of {} slots active):\n{}",
                targets.len(),
                logs.join("\n-----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What happens to the server while the receivers stream.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    Restart(StopMode),
    /// `pg_terminate_backend` of the walsenders: the connection drops, the server stays up.
    TerminateWalsenders,
}

/// The receivers run as daemons (never restarted by the test) while the workload commits and the
/// server goes through `disruptions`; then the final commit, and once the sinks' checkpoints reach the
/// server's flush position, SIGTERM must stop them with exit 0 and everything must be there once.
fn survive(disruptions: &[Disruption]) {
    let started = Instant::now();
    let mut pg = server();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");
    let targets = set_up(&pg, dir.path());
    let mut running: Vec<Running> = targets.iter().map(|t| t.receiver(&url).spawn()).collect();
    let mut workload = Workload::start(url.clone(), true);

    let pause = || std::thread::sleep(Duration::from_millis(1500));
    pause();
    for d in disruptions {
        workload.check();
        wait_for_active_slots(&url, &targets, &mut running);
        match *d {
            Disruption::Restart(mode) => pg.restart(mode),
            Disruption::TerminateWalsenders => {
                let terminated = pg.psql(
                    "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots
                     WHERE active_pid IS NOT NULL AND slot_name LIKE 'fig\\_%'",
                );
                assert_eq!(terminated.trim(), "2", "both walsenders terminated");
            }
        }
        pause();
    }
    workload.finish();

    // The final commit, then everything up to the server's flush position must become durable.
    let mut c = pg.connect();
    counted_transaction(&mut c).expect("the final transaction");
    let n = counter(&mut c);
    let flush = current_flush_lsn(&mut c);
    assert_all_running(&targets, &mut running);
    for (t, r) in targets.iter().zip(running.iter_mut()) {
        wait_for_checkpoint(&t.sink, flush, RUN_TIMEOUT, || {
            format!("{} receiver:\n{}", t.plugin, r.stderr_so_far())
        });
    }
    for (t, r) in targets.iter().zip(running.iter_mut()) {
        let done = r.terminate(Duration::from_secs(30));
        done.assert_success();
        // It lived through every disruption, reconnecting by itself each time.
        let reconnects = done
            .stderr
            .matches("replication interrupted; will retry")
            .count();
        assert!(
            reconnects >= disruptions.len(),
            "{}: {reconnects} reconnects logged, expected at least {}:\n{}",
            t.plugin,
            disruptions.len(),
            done.stderr
        );
    }
    eprintln!("{n} transactions through {disruptions:?}");
    for t in &targets {
        assert_mirrors_match(&mut c, &t.sink, TABLES);
        assert_history_is_the_workload(t, Some(n));
        assert_ack_covered_by_checkpoint(&mut c, t);
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn fast_and_immediate_server_restarts_and_a_terminated_walsender_lose_and_repeat_nothing() {
    survive(&[
        Disruption::Restart(StopMode::Fast),
        Disruption::Restart(StopMode::Immediate),
        Disruption::TerminateWalsenders,
    ]);
}
