//! The initial copy never holds the application's DDL hostage (DESIGN.md rule 10; docs/SYNC.md,
//! "Locks"), against a real PostgreSQL 15 and the real binary.
//!
//! The shape that used to hang for good: the copy's planning session holds `ACCESS SHARE` on every
//! copied table, idle in transaction; the application's `TRUNCATE` queues behind it for `ACCESS
//! EXCLUSIVE`; a copy worker's `COPY` then queues behind the `TRUNCATE`. PostgreSQL sees no deadlock
//! (one edge is inside the receiver). With every lock wait bounded by `sync.lock_timeout`, the worker
//! gives way, the whole attempt ends, the `TRUNCATE` goes through, and the copy is tried again.

use std::time::{Duration, Instant};

use fig_tests::receiver::{assert_mirrors_match, Receiver, Running, Target};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(120);

/// The longest one application statement may take here. Without bounded lock waits the TRUNCATE
/// of the second phase waits forever; its `statement_timeout` (longer than this) ends it and the
/// test fails instead of hanging.
const STATEMENT_BOUND: Duration = Duration::from_secs(20);

/// An application session whose statements cannot wait forever.
fn app(pg: &PgServer) -> postgres::Client {
    let mut c = pg.connect();
    c.batch_execute("SET statement_timeout = '30s'").unwrap();
    c
}

/// Runs `sql` as the application and checks it was done within [`STATEMENT_BOUND`].
#[track_caller]
fn timed(client: &mut postgres::Client, sql: &str, receiver: &Running) {
    let started = Instant::now();
    let result = client.batch_execute(sql);
    let took = started.elapsed();
    assert!(
        result.is_ok() && took < STATEMENT_BOUND,
        "the application's {sql:?} took {took:?} ({result:?}); the receiver held it hostage:\n{}",
        receiver.stderr_so_far()
    );
}

/// Polls until `done`, failing if the receiver stops or it takes longer than `within`.
#[track_caller]
fn wait_until(
    running: &mut Running,
    within: Duration,
    what: &str,
    mut done: impl FnMut(&Running) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(running) {
        assert!(
            running.try_status().is_none(),
            "the receiver stopped while waiting for {what}:\n{}",
            running.stderr_so_far()
        );
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            running.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).unwrap().get(0)
}

/// Sorted by name, so the copy plans them in this order: `a_first` is the first table it locks and
/// reads, `b_big` keeps the workers busy for a few seconds before they reach `c_truncated` and
/// `d_dropped`.
const TABLES: &str = "
CREATE TABLE a_first (id bigint PRIMARY KEY, v text);
INSERT INTO a_first SELECT i, 'first ' || i FROM generate_series(1, 1000) i;
CREATE TABLE b_big (id bigint PRIMARY KEY, payload text NOT NULL);
INSERT INTO b_big SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, 400000) i;
CREATE TABLE c_truncated (id bigint PRIMARY KEY, v text);
INSERT INTO c_truncated SELECT i, 'old ' || i FROM generate_series(1, 20000) i;
CREATE TABLE d_dropped (id bigint PRIMARY KEY, v text);
INSERT INTO d_dropped SELECT i, 'gone ' || i FROM generate_series(1, 1000) i;
CREATE TABLE e_after (id bigint PRIMARY KEY, v text);
INSERT INTO e_after SELECT i, 'after ' || i FROM generate_series(1, 1000) i;
CREATE TABLE f_gone_after (id bigint PRIMARY KEY);
INSERT INTO f_gone_after SELECT generate_series(1, 100);
CREATE PUBLICATION fig_pub FOR TABLE a_first, b_big, c_truncated, d_dropped, e_after, f_gone_after;";

#[test]
fn ddl_during_every_phase_of_the_initial_copy_goes_through_and_the_copy_retries() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");
    pg.psql(TABLES);
    let config = dir.path().join("fig.toml");
    std::fs::write(
        &config,
        "[sync]\nparallel = 2\nchunk_mb = 4\nlock_timeout = \"1s\"\n",
    )
    .unwrap();
    let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
    let mut watcher = pg.connect();

    // Phase 1, as the copy starts: the application truncates the first table the moment the slot
    // exists (as `pgbench -i` did). Whether it lands before the copy's lock (the copy then waits
    // for it, at most sync.lock_timeout) or just after (it waits for the copy's planning session,
    // and a worker's COPY of that table queues behind it), it must go through in bounded time.
    let mut running = target.receiver(&url).arg("--config").arg(&config).spawn();
    let mut application = app(&pg);
    wait_until(&mut running, TIMEOUT, "the slot", |_| {
        count(
            &mut watcher,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'fig_pgoutput'",
        ) > 0
    });
    timed(&mut application, "TRUNCATE a_first", &running);
    for sql in [
        "INSERT INTO a_first SELECT i, 'refilled ' || i FROM generate_series(1, 1500) i",
        "ALTER TABLE a_first ADD COLUMN note text",
        "UPDATE a_first SET note = 'n' WHERE id % 3 = 0",
    ] {
        timed(&mut application, sql, &running);
    }

    // Phase 2, while the big table is copied: DDL on tables the workers have not reached yet queues
    // behind the planning session's locks; a worker's COPY then queues behind the DDL.
    wait_until(&mut running, TIMEOUT, "the copy of b_big", |_| {
        count(
            &mut watcher,
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY (SELECT%b_big%'",
        ) > 0
    });
    timed(&mut application, "TRUNCATE c_truncated", &running);
    timed(
        &mut application,
        "INSERT INTO c_truncated SELECT i, 'new ' || i FROM generate_series(10001, 25000) i",
        &running,
    );
    timed(
        &mut application,
        "ALTER TABLE c_truncated ADD COLUMN note text",
        &running,
    );
    timed(
        &mut application,
        "UPDATE c_truncated SET note = 'u' WHERE id % 2 = 0",
        &running,
    );
    timed(&mut application, "DROP TABLE d_dropped", &running);

    // Phase 3, after the copy: streaming; DDL does not wait for the receiver at all.
    wait_until(&mut running, TIMEOUT, "streaming", |r| {
        r.stderr_so_far().contains("streaming")
    });
    for sql in [
        "TRUNCATE e_after",
        "INSERT INTO e_after SELECT i, 'again ' || i FROM generate_series(500, 1200) i",
        "ALTER TABLE e_after ADD COLUMN note text",
        "UPDATE e_after SET note = 'x' WHERE id % 5 = 0",
        "DROP TABLE f_gone_after",
        "INSERT INTO b_big VALUES (400001, 'late')",
    ] {
        timed(&mut application, sql, &running);
    }

    let log = running.stderr_so_far();
    assert!(
        log.contains("finishing the initial copy a restart interrupted"),
        "the copy should have been finished by a later attempt after giving way:\n{log}"
    );
    running.terminate(TIMEOUT).assert_success();
    target.catch_up(&url, TIMEOUT);
    assert_mirrors_match(
        &mut watcher,
        &target.sink,
        &[
            "public.a_first",
            "public.b_big",
            "public.c_truncated",
            "public.e_after",
        ],
    );
}

/// `fig-receiver snapshot` started while the application holds a table (a migration's
/// transaction): the copy waits at most `sync.lock_timeout`, gives way, and tries again itself
/// (docs/SYNC.md: up to 3 attempts), so it ends with the table copied once the migration is done.
#[test]
fn a_snapshot_gives_way_to_a_held_table_and_retries_by_itself() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");
    pg.psql(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, amount numeric(12,2));
         INSERT INTO ledger SELECT i, i * 1.5 FROM generate_series(1, 5000) i;",
    );
    let sink = dir.path().join("s.sqlite");
    let config = dir.path().join("fig.toml");
    std::fs::write(&config, "[sync]\nlock_timeout = \"1s\"\n").unwrap();
    let mut holder = app(&pg);
    holder
        .batch_execute("BEGIN; LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut running = Receiver::new(["snapshot", "--source", &url, "--sink"])
        .arg(format!("sqlite:{}", sink.display()))
        .arg("--sync")
        .arg("public.ledger=snapshot")
        .arg("--config")
        .arg(&config)
        .spawn();
    wait_until(
        &mut running,
        STATEMENT_BOUND,
        "the copy to give way to the held table",
        |r| r.stderr_so_far().contains("sync.lock_timeout"),
    );
    holder
        .batch_execute(
            "TRUNCATE ledger;
             INSERT INTO ledger SELECT i, i * 2.5 FROM generate_series(1, 3000) i;
             COMMIT",
        )
        .unwrap();
    let done = running.wait_timeout(TIMEOUT).expect("the snapshot ends");
    done.assert_success();
    let mut client = pg.connect();
    assert_mirrors_match(&mut client, &sink, &["public.ledger"]);
}
