//! `kill -9` of the receiver at random moments of a multi-million-row copy of a table without a key,
//! ten times in a row, while an application inserts into it and updates another table: whatever
//! moment each kill hits (slot creation, the initial copy, the re-copy that repairs an interrupted
//! one, an operator's `resync` once the table is in sync, the swap, streaming), the mirror ends equal
//! to the source as a multiset: no row twice, none lost.
//!
//! The moments come from a seed printed at the start; `FIG_TEST_SEED=<n>` replays a run.

use std::time::{Duration, Instant};

use fig_tests::app::{ledger_transaction, AppWriter};
use fig_tests::receiver::{
    assert_mirrors_match, table_states, wait_until_in_sync, Receiver, Target,
};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(300);
const ROUNDS: usize = 10;
const ROWS: i64 = 2_000_000;

/// xorshift64*: enough to spread kill moments, and reproducible from its seed.
struct Moments(u64);

impl Moments {
    fn next_millis(&mut self, from: u64, to: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        from + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (to - from)
    }
}

fn seed() -> u64 {
    match std::env::var("FIG_TEST_SEED") {
        Ok(s) => s.parse().expect("FIG_TEST_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        }
    }
}

/// What the sink holds of the keyless table's copies when a kill hits: for the test's log.
fn phase(target: &Target) -> String {
    if !target.sink.exists() {
        return "no sink yet".into();
    }
    let loads: String = target
        .open()
        .connection()
        .query_row(
            "SELECT coalesce(group_concat(sync || ':' || state, ','), '') FROM _fig_loads WHERE mirror = 'public.history'",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| format!("({e})"));
    let states: String = target
        .open()
        .connection()
        .query_row(
            "SELECT coalesce(group_concat(\"table\" || ' ' || state, ','), '') FROM _fig_tables",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| format!("({e})"));
    format!("loads [{loads}], states [{states}]")
}

fn killed_at_random_moments_of_its_copies(plugin: &'static str) {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(&format!(
        "CREATE EXTENSION IF NOT EXISTS figoutput;
         CREATE TABLE history (tid int, bid int, aid int, delta int, mtime timestamptz, filler char(22));
         INSERT INTO history SELECT i % 10, i % 3, i, i % 1000 - 500, now(), 'f' FROM generate_series(1, {ROWS}) i;
         CREATE TABLE accounts (aid int PRIMARY KEY, abalance int NOT NULL);
         INSERT INTO accounts SELECT i, 0 FROM generate_series(1, 50000) i;
         CREATE PUBLICATION fig_pub FOR ALL TABLES;"
    ));
    let target = Target::new(
        plugin,
        dir.path(),
        (plugin == "pgoutput").then_some("fig_pub"),
    );

    let writer = AppWriter::start(
        pg.connect(),
        Duration::from_millis(2),
        ledger_transaction(50_000),
    );

    let seed = seed();
    eprintln!("{plugin}: kill moments from FIG_TEST_SEED={seed}");
    let mut moments = Moments(seed);
    for round in 1..=ROUNDS {
        // While the table's copy (or its repair) is unfinished, `run` goes on with it; once it is
        // in sync, an operator's `resync` copies it again, and that copy is what the kill hits.
        let copied = phase(&target).contains(":finished], states []");
        let (what, mut daemon) = match copied {
            false => ("run", target.receiver(&url).spawn()),
            true => ("resync", target.resync(&url, &["public.history"]).spawn()),
        };
        // The kill lands at a random moment of the copy: a new sink's copy starts once its slot is
        // made, so the moments are counted from when the sink records it (the slot's creation is
        // not the copy, and is not what this test is about).
        let copying = Instant::now() + TIMEOUT;
        while !phase(&target).contains("cdc-initial") && daemon.try_status().is_none() {
            assert!(
                Instant::now() < copying,
                "round {round}: the copy never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let wait = moments.next_millis(1, 4_000);
        std::thread::sleep(Duration::from_millis(wait));
        match daemon.try_status() {
            // Done before the kill: a resync that finished is a round that proves less, not a fault.
            Some(status) if what == "resync" && status.success() => {
                eprintln!("{plugin}: round {round}: resync finished within {wait} ms");
                continue;
            }
            Some(status) => panic!(
                "round {round}: `{what}` ended by itself ({status}):\n{}",
                daemon.stderr_so_far()
            ),
            None => {}
        }
        daemon.kill9();
        eprintln!(
            "{plugin}: round {round}: `{what}` killed after {wait} ms: {}",
            phase(&target)
        );
    }

    let mut daemon = target.receiver(&url).spawn();
    let mut client = pg.connect();
    let started = Instant::now();
    wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        daemon.stderr_so_far()
    });
    let written = writer.stop();
    wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        daemon.stderr_so_far()
    });
    daemon.terminate(TIMEOUT).assert_success();
    eprintln!(
        "{plugin}: in sync {:?} after the last kill; {written} application transactions",
        started.elapsed()
    );
    assert!(
        written > 100,
        "the application wrote throughout ({written})"
    );
    assert_mirrors_match(
        &mut client,
        &target.sink,
        &["public.history", "public.accounts"],
    );
    assert!(
        table_states(&target.sink).is_empty(),
        "every table is in sync"
    );
}

#[test]
fn pgoutput_keyless_copy_killed_ten_times_at_random_moments_stores_every_row_once() {
    killed_at_random_moments_of_its_copies("pgoutput");
}

#[test]
fn figoutput_keyless_copy_killed_ten_times_at_random_moments_stores_every_row_once() {
    killed_at_random_moments_of_its_copies("figoutput");
}

/// Killed right after creating a new sink's slot, before the sink recorded anything of its copy
/// (the failpoint `after-slot-created` aborts the process there, as a kill -9 would): the next run
/// knows the slot is its own, drops it and starts over, instead of refusing it until someone drops
/// it by hand.
#[test]
fn killed_between_creating_its_slot_and_starting_the_copy_the_next_run_starts_over() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    for target in [
        Target::new("figoutput", dir.path(), None),
        Target::new("pgoutput", dir.path(), Some("fig_pub")),
    ] {
        let aborted = target
            .receiver(&url)
            .env("FIG_FAILPOINTS", "after-slot-created")
            .output(TIMEOUT);
        assert!(!aborted.status.success(), "{}", aborted.stderr);
        assert!(
            aborted.stderr.contains("failpoint after-slot-created"),
            "{}",
            aborted.stderr
        );
        let slot: String = pg.psql(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND NOT active",
            target.slot
        ));
        assert_eq!(
            slot.trim(),
            "1",
            "{}: the slot outlived its run",
            target.plugin
        );

        let check = Receiver::new(["check", "--source", &url, "--sink"])
            .arg(format!("sqlite:{}", target.sink.display()))
            .plugin(target.plugin)
            .slot(&target.slot);
        let check = match &target.publication {
            Some(p) => check.publication(p),
            None => check,
        }
        .output(TIMEOUT);
        check.assert_success();
        assert!(
            check.stdout.contains("dropped and created again"),
            "{}",
            check.stdout
        );
        target.catch_up(&url, TIMEOUT);
        assert_mirrors_match(&mut pg.connect(), &target.sink, &["public.t"]);
    }
}
