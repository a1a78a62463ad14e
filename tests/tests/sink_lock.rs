//! One writer per sink: a second `run` on a sink another receiver is writing (here with its own
//! slot, so the server would let both stream) stops at once, naming the holder's pid, and the first
//! goes on untouched; a receiver killed with -9 leaves no lock behind. SQLite and JSON Lines.

use std::time::{Duration, Instant};

use fig_tests::receiver::Receiver;
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(120);

fn run(url: &str, sink: &str, slot: &str) -> Receiver {
    Receiver::new(["run", "--source", url, "--sink", sink, "--slot", slot])
        .plugin("pgoutput")
        .publication("fig_pub")
}

#[test]
fn a_second_run_on_a_sink_in_use_stops_naming_the_holder_and_a_killed_one_leaves_no_lock() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    for (i, sink) in [
        format!("sqlite:{}", dir.path().join("a.sqlite").display()),
        format!("jsonl:{}", dir.path().join("a.jsonl").display()),
    ]
    .iter()
    .enumerate()
    {
        let first_slot = format!("first_{i}");
        let mut first = run(&url, sink, &first_slot).spawn();
        // Streaming: its slot is active.
        let deadline = Instant::now() + TIMEOUT;
        let mut client = pg.connect();
        loop {
            let active: bool = client
                .query_opt(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                    &[&first_slot],
                )
                .unwrap()
                .is_some_and(|r| r.get(0));
            if active {
                break;
            }
            assert!(Instant::now() < deadline, "{}", first.stderr_so_far());
            std::thread::sleep(Duration::from_millis(100));
        }
        let second = run(&url, sink, &format!("second_{i}"))
            .endpos("now")
            .output(TIMEOUT);
        second.assert_failure();
        assert!(
            second
                .stderr
                .contains("another fig-receiver is writing the sink")
                && second.stderr.contains(&format!("pid {}", first.pid())),
            "{sink}: the second run names the holder:\n{}",
            second.stderr
        );
        let slots: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&format!("second_{i}")],
            )
            .unwrap()
            .get(0);
        assert_eq!(slots, 0, "{sink}: the refused run created no slot");
        first.assert_running();
        pg.psql(&format!("INSERT INTO t VALUES (1000 + {i}, 'after');"));
        first.kill9();
        // The kernel released the lock with the process: the next run goes on from the checkpoint.
        run(&url, sink, &first_slot)
            .endpos("now")
            .output(TIMEOUT)
            .assert_success();
    }
}
