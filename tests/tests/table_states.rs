//! Table states against a real server (DESIGN.md rule 8): a change that one table cannot take
//! marks that table out of sync, visibly, and every other table goes on streaming. The real binary,
//! a real PostgreSQL 15 with figoutput, a real SQLite sink.

use std::time::Duration;

use fig_tests::app::{ledger_transaction, AppWriter};
use fig_tests::receiver::{assert_mirrors_match, Receiver, SinkFile, Target};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(180);

fn count(sink: &SinkFile, sql: &str) -> i64 {
    sink.connection()
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `fig-receiver status` for `target`.
fn status(url: &str, target: &Target) -> String {
    let done = Receiver::new(["status", "--source", url, "--sink"])
        .arg(format!("sqlite:{}", target.sink.display()))
        .arg("--slot")
        .arg(&target.slot)
        .output(TIMEOUT);
    done.assert_success();
    done.stdout.clone()
}

#[test]
fn a_keyless_delete_under_figoutput_stops_its_table_only_and_says_so() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    // figoutput without a publication lets the source run updates and deletes on a table that has
    // neither a key nor REPLICA IDENTITY FULL: the WAL then holds no old row to match.
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE accounts (id int PRIMARY KEY, balance numeric(12,2) NOT NULL);
         CREATE TABLE events (at int, msg text);
         INSERT INTO accounts SELECT i, i FROM generate_series(1, 100) i;
         INSERT INTO events SELECT i, 'e' || i FROM generate_series(1, 10) i;",
    );
    let target = Target::new("figoutput", dir.path(), None);
    target.catch_up(&url, TIMEOUT);
    assert!(
        status(&url, &target).contains("every mirror in sync"),
        "a fresh copy is in sync"
    );

    pg.psql(
        "DELETE FROM events WHERE at = 1;
         UPDATE accounts SET balance = balance + 1 WHERE id <= 50;
         INSERT INTO events VALUES (11, 'e11');
         BEGIN; DELETE FROM accounts WHERE id > 90; UPDATE events SET msg = 'x' WHERE at = 2; COMMIT;
         INSERT INTO accounts VALUES (101, 101);",
    );
    // The run ends normally: one table's trouble is not the stream's.
    let done = target.catch_up(&url, TIMEOUT);
    assert!(
        done.stderr.contains("table out of sync") && done.stderr.contains("public.events"),
        "the log names the table that went out of sync:\n{}",
        done.stderr
    );

    let mut client = pg.connect();
    assert_mirrors_match(&mut client, &target.sink, &["public.accounts"]);
    let sink = target.open();
    // The history has every change of the keyless table, the ones its mirror could not take too.
    assert_eq!(
        count(
            &sink,
            "SELECT count(*) FROM _fig_changes WHERE \"table\" = 'events' AND op IN ('delete', 'update')"
        ),
        2
    );
    assert_eq!(
        count(
            &sink,
            "SELECT count(*) FROM _fig_changes WHERE \"table\" = 'events' AND op = 'insert' AND after LIKE '%e11%'"
        ),
        1
    );
    let shown = status(&url, &target);
    assert!(
        shown.contains("table public.events: out of sync")
            && shown.contains("REPLICA IDENTITY FULL"),
        "status names the table, its state and the fix:\n{shown}"
    );
    assert!(
        !shown.contains("public.accounts"),
        "only the table out of sync is listed:\n{shown}"
    );
}

/// `fig-receiver resync TABLE…` for `target`.
#[test]
fn resync_without_a_running_receiver_streams_itself_until_the_table_is_back_in_sync() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE accounts (id int PRIMARY KEY, balance numeric(12,2) NOT NULL);
         CREATE TABLE events (at int, msg text);
         INSERT INTO accounts SELECT i, i FROM generate_series(1, 100) i;
         INSERT INTO events SELECT i % 5, 'e' || i FROM generate_series(1, 50) i;",
    );
    let target = Target::new("figoutput", dir.path(), None);
    target.catch_up(&url, TIMEOUT);
    pg.psql(
        "DELETE FROM events WHERE at = 1;
         UPDATE events SET msg = 'moved' WHERE at = 2;",
    );
    target.catch_up(&url, TIMEOUT);
    assert!(status(&url, &target).contains("table public.events: out of sync"));
    // The fix the reason names, then changes the stream can apply again, then the resync.
    pg.psql(
        "ALTER TABLE events REPLICA IDENTITY FULL;
         DELETE FROM events WHERE at = 3 AND msg = 'e3';
         INSERT INTO events VALUES (9, 'after');
         UPDATE accounts SET balance = 0 WHERE id = 7;",
    );
    let done = target.resync(&url, &["public.events"]).output(TIMEOUT);
    done.assert_success();
    assert!(
        done.stderr.contains("streaming here"),
        "with no receiver on the slot the command streams itself:\n{}",
        done.stderr
    );
    // Changes made after the resync go on into the mirror.
    pg.psql("DELETE FROM events WHERE at = 4; UPDATE accounts SET balance = 1 WHERE id = 8;");
    target.catch_up(&url, TIMEOUT);
    let mut client = pg.connect();
    assert_mirrors_match(
        &mut client,
        &target.sink,
        &["public.accounts", "public.events"],
    );
    assert!(
        status(&url, &target).contains("every mirror in sync"),
        "the resync cleared the table's state"
    );
}

#[test]
fn resync_beside_a_running_receiver_under_concurrent_writes_equals_the_source() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, amount numeric(20,4) NOT NULL, memo text);
         INSERT INTO ledger SELECT i, i * 0.0001, repeat('m', i % 50) FROM generate_series(1, 200000) i;
         CREATE TABLE tape (k int, v text);
         ALTER TABLE tape REPLICA IDENTITY FULL;
         INSERT INTO tape SELECT i % 100, 'v' || i FROM generate_series(1, 20000) i;
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
    target.catch_up(&url, TIMEOUT);
    let mut daemon = target.receiver(&url).spawn();

    // Updates, deletes and inserts on both tables for as long as the resync runs.
    let writer = AppWriter::start(pg.connect(), Duration::ZERO, |n| {
        let i = n as i64;
        let id = (i * 7919) % 200_000 + 1;
        format!(
            "BEGIN;
             UPDATE ledger SET amount = amount + 1, memo = 'u{i}' WHERE id = {id};
             DELETE FROM ledger WHERE id = {};
             INSERT INTO ledger VALUES ({}, {i}, 'new') ON CONFLICT (id) DO UPDATE SET memo = 'again';
             DELETE FROM tape WHERE ctid = (SELECT ctid FROM tape WHERE k = {} LIMIT 1);
             INSERT INTO tape VALUES ({i} % 100, 'w{i}');
             UPDATE tape SET v = v || '+' WHERE ctid = (SELECT ctid FROM tape WHERE k = {} LIMIT 1);
             COMMIT;",
            (id + 1) % 200_000 + 1,
            200_000 + i,
            i % 100,
            (i + 50) % 100
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let done = target
        .resync(&url, &["public.ledger", "public.tape"])
        .output(TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));
    let writes = writer.stop();
    done.assert_success();
    assert!(
        !done.stderr.contains("streaming here"),
        "the running receiver's stream carries the sink; the command must not start a second one:\n{}",
        done.stderr
    );
    assert!(
        writes > 10,
        "the workload ran during the resync ({writes} transactions)"
    );
    let mut client = pg.connect();
    let end = fig_tests::receiver::current_flush_lsn(&mut client);
    fig_tests::receiver::wait_for_checkpoint(&target.sink, end, TIMEOUT, || daemon.stderr_so_far());
    daemon.terminate(TIMEOUT).assert_success();
    assert_mirrors_match(&mut client, &target.sink, &["public.ledger", "public.tape"]);
    let sink = target.open();
    assert_eq!(
        count(
            &sink,
            "SELECT count(*) FROM _fig_loads WHERE sync = 'resync' AND state = 'finished'"
        ),
        2
    );
}

#[test]
fn a_failed_initial_copy_is_finished_by_the_next_run_or_its_slot_is_dropped() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE TABLE open_t (id int PRIMARY KEY, v text);
         CREATE TABLE closed_t (id int PRIMARY KEY, v text);
         INSERT INTO open_t SELECT i, 'o' || i FROM generate_series(1, 100) i;
         INSERT INTO closed_t SELECT i, 'c' || i FROM generate_series(1, 100) i;
         CREATE PUBLICATION fig_pub FOR ALL TABLES;
         CREATE ROLE fig LOGIN REPLICATION;
         GRANT SELECT ON open_t TO fig;",
    );
    let fig_url = url.replacen("postgres@", "fig@", 1);
    let slots = |pg: &PgServer| {
        pg.psql("SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots")
    };

    // SQLite: the copy is on record, so the slot stays and the next run finishes the copy.
    let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
    let failed = target.receiver(&fig_url).endpos("now").output(TIMEOUT);
    failed.assert_failure();
    assert!(
        failed.stderr.contains("closed_t") && failed.stderr.contains("grant it SELECT"),
        "the error names the table and the fix:\n{}",
        failed.stderr
    );
    pg.psql("GRANT SELECT ON closed_t TO fig; INSERT INTO closed_t VALUES (101, 'after');");
    target.catch_up(&fig_url, TIMEOUT);
    let mut client = pg.connect();
    assert_mirrors_match(
        &mut client,
        &target.sink,
        &["public.open_t", "public.closed_t"],
    );

    // JSON Lines cannot finish a copy: the slot the failed run created is dropped, and the next
    // run starts over with a new one.
    pg.psql("REVOKE SELECT ON closed_t FROM fig;");
    let jsonl = dir.path().join("out.jsonl");
    let jsonl_run = || {
        Receiver::new([
            "run",
            "--source",
            &fig_url,
            "--plugin",
            "pgoutput",
            "--publication",
            "fig_pub",
            "--slot",
            "fig_jsonl",
            "--endpos",
            "now",
            "--sink",
        ])
        .arg(format!("jsonl:{}", jsonl.display()))
        .output(TIMEOUT)
    };
    let failed = jsonl_run();
    failed.assert_failure();
    assert!(
        failed.stderr.contains("was dropped"),
        "the error says the slot was dropped:\n{}",
        failed.stderr
    );
    assert_eq!(
        slots(&pg).trim(),
        "fig_pgoutput",
        "no slot is left behind by the failed run"
    );
    pg.psql("GRANT SELECT ON closed_t TO fig;");
    jsonl_run().assert_success();
    let lines = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(
        lines
            .lines()
            .filter(|l| l.contains("\"table\":\"closed_t\"") && l.contains("\"op\":\"read\""))
            .count(),
        101
    );
}

#[test]
fn a_keyless_table_killed_mid_copy_is_never_stored_twice() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    // pgbench_history's shape: no key, insert-only, written to all the time.
    pg.psql(
        "CREATE TABLE history (tid int, bid int, aid int, delta int, mtime timestamptz, filler char(22));
         INSERT INTO history SELECT i % 10, i % 3, i, i % 1000 - 500, now(), 'f' FROM generate_series(1, 300000) i;
         CREATE TABLE accounts (aid int PRIMARY KEY, abalance int NOT NULL);
         INSERT INTO accounts SELECT i, 0 FROM generate_series(1, 50000) i;
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    let config = dir.path().join("fig.toml");
    let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{url}\"\n[sink]\nurl = \"sqlite:{}\"\n[replication]\nslot = \"{}\"\npublication = \"fig_pub\"\nplugin = \"pgoutput\"\n[sync]\nparallel = 1\nchunk_mb = 1\n",
            target.sink.display(),
            target.slot
        ),
    )
    .unwrap();
    let daemon = || Receiver::new(["run", "--config"]).arg(&config);

    let writer = AppWriter::start(
        pg.connect(),
        Duration::from_millis(2),
        ledger_transaction(50_000),
    );
    // Killed while the keyless table's copy has stored some chunks but not all.
    let mut first = daemon().spawn();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never got going:\n{}",
            first.stderr_so_far()
        );
        if target.sink.exists() {
            let stored: i64 = target
                .open()
                .connection()
                .query_row(
                    "SELECT count(*) FROM _fig_load_chunks c JOIN _fig_loads l ON l.id = c.load WHERE l.mirror = 'public.history'",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            if stored >= 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill9();

    // The next run finishes the keyed table's copy and re-copies the keyless one exactly.
    let mut second = daemon().spawn();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the keyless table never came back in sync:\n{}",
            second.stderr_so_far()
        );
        let resynced = target.sink.exists()
            && target
                .open()
                .connection()
                .query_row(
                    "SELECT count(*) FROM _fig_loads WHERE sync = 'resync' AND state = 'finished' AND mirror = 'public.history'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
                == 1;
        if resynced {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    writer.stop();
    let mut client = pg.connect();
    let end = fig_tests::receiver::current_flush_lsn(&mut client);
    fig_tests::receiver::wait_for_checkpoint(&target.sink, end, TIMEOUT, || second.stderr_so_far());
    second.terminate(TIMEOUT).assert_success();
    assert_mirrors_match(
        &mut client,
        &target.sink,
        &["public.history", "public.accounts"],
    );
    assert!(
        fig_tests::receiver::table_states(&target.sink).is_empty(),
        "every table is in sync"
    );
}

#[test]
fn tables_added_later_and_ddl_that_rewrites_rows_are_re_copied_and_equal_their_source() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         INSERT INTO a SELECT i, 'v' || i FROM generate_series(1, 200) i;
         CREATE TABLE k (v text);
         ALTER TABLE k REPLICA IDENTITY FULL;
         INSERT INTO k SELECT 'k' || i FROM generate_series(1, 50) i;
         CREATE TABLE late (id int PRIMARY KEY, v text, body text);
         ALTER TABLE late ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO late SELECT i, 'l' || i, repeat(md5(i::text), 200) FROM generate_series(1, 100) i;
         CREATE PUBLICATION fig_pub FOR TABLE a, k;",
    );
    let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
    target.catch_up(&url, TIMEOUT);
    // A table added to the publication that no change will bring: found by comparing the
    // publication with the sink, and copied.
    pg.psql(
        "CREATE TABLE quiet (id int PRIMARY KEY, v text);
         INSERT INTO quiet SELECT i, 'q' || i FROM generate_series(1, 30) i;
         ALTER PUBLICATION fig_pub ADD TABLE quiet;",
    );
    let mut daemon = target.receiver(&url).spawn();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let copied: i64 = target
            .open()
            .connection()
            .query_row("SELECT count(*) FROM \"public.quiet\"", [], |r| r.get(0))
            .unwrap_or(0);
        if copied == 30 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the quiet table was never copied:\n{}",
            daemon.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A table added to the publication: its old rows were never copied, and an update that leaves
    // its TOASTed column unchanged has nothing to fill it from.
    pg.psql(
        "ALTER PUBLICATION fig_pub ADD TABLE late;
         UPDATE late SET v = 'changed' WHERE id <= 3;
         DELETE FROM late WHERE id = 50;",
    );
    // DDL that changes existing rows without row changes, then changes of those old rows.
    pg.psql(
        "ALTER TABLE a ADD COLUMN region text DEFAULT 'n/a';
         ALTER TABLE a ADD COLUMN seq serial;
         ALTER TABLE a ALTER COLUMN v TYPE varchar(40) USING upper(v);
         UPDATE a SET v = v || '!' WHERE id <= 5;
         DELETE FROM a WHERE id = 10;
         ALTER TABLE k ADD COLUMN id serial PRIMARY KEY;
         ALTER TABLE k REPLICA IDENTITY DEFAULT;
         DELETE FROM k WHERE id = 1;
         UPDATE k SET v = 'moved' WHERE id = 2;",
    );
    fig_tests::receiver::wait_until_in_sync(&mut pg.connect(), &target.sink, TIMEOUT, || {
        daemon.stderr_so_far()
    });
    pg.psql("UPDATE a SET region = 'eu' WHERE id = 20; UPDATE late SET v = 'again' WHERE id = 4;");
    fig_tests::receiver::wait_until_in_sync(&mut pg.connect(), &target.sink, TIMEOUT, || {
        daemon.stderr_so_far()
    });
    daemon.terminate(TIMEOUT).assert_success();
    let mut client = pg.connect();
    assert_mirrors_match(
        &mut client,
        &target.sink,
        &["public.a", "public.k", "public.late", "public.quiet"],
    );
    let sink = target.open();
    assert!(
        count(
            &sink,
            "SELECT count(*) FROM _fig_loads WHERE sync = 'resync' AND state = 'finished'"
        ) >= 3,
        "each table was re-copied"
    );
    // The schema-change records say how the rows were repaired: by a re-copy.
    assert!(
        count(
            &sink,
            "SELECT count(*) FROM _fig_schema_changes WHERE \"table\" IN ('a', 'k') AND source <> 'sync'"
        ) >= 2
    );
    assert_eq!(
        count(
            &sink,
            "SELECT count(*) FROM _fig_schema_changes WHERE \"table\" IN ('a', 'k') AND source <> 'sync' \
             AND changes LIKE '%\"added\"%' AND repair IS NOT 'recopy'"
        ),
        0,
        "every column added is repaired by a re-copy"
    );
}

/// A table dropped from the publication and added back: its changes made while it was out were
/// never streamed. Found by the re-copier's scans whether it happened between two scans or while
/// no receiver ran (a new membership row), and the table re-copied (found by a stranger: its mirror
/// silently kept the old rows, status said "in sync").
#[test]
fn a_table_dropped_from_the_publication_and_added_back_is_re_copied() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, v text);
         INSERT INTO a SELECT i, 'init' FROM generate_series(1, 10) i;
         INSERT INTO b SELECT i, 'init' FROM generate_series(1, 10) i;
         CREATE PUBLICATION fig_pub FOR TABLE a, b;",
    );
    let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
    let config = target.config_file(
        &dir.path().join("fig.toml"),
        &url,
        "",
        "[resync]\nscan_secs = 1\n",
    );
    let daemon = || Receiver::new(["run", "--config"]).arg(&config).spawn();
    let mut running = daemon();
    let mut client = pg.connect();
    fig_tests::receiver::wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        running.stderr_so_far()
    });
    // Out and back while the receiver runs, then again while none runs.
    std::thread::sleep(Duration::from_secs(2)); // a scan records the members
    pg.psql(
        "ALTER PUBLICATION fig_pub DROP TABLE b;
         UPDATE b SET v = 'while out' WHERE id = 2; DELETE FROM b WHERE id = 3; INSERT INTO b VALUES (11, 'x');
         ALTER PUBLICATION fig_pub ADD TABLE b;
         UPDATE b SET v = 'after re-add' WHERE id = 4;",
    );
    let deadline = std::time::Instant::now() + TIMEOUT;
    while count(&target.open(), "SELECT count(*) FROM _fig_loads WHERE sync = 'resync' AND state = 'finished' AND mirror = 'public.b'") < 1 {
        assert!(std::time::Instant::now() < deadline, "b was never re-copied:\n{}", running.stderr_so_far());
        std::thread::sleep(Duration::from_millis(200));
    }
    fig_tests::receiver::wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        running.stderr_so_far()
    });
    running.terminate(TIMEOUT).assert_success();
    assert_mirrors_match(&mut client, &target.sink, &["public.a", "public.b"]);
    pg.psql(
        "ALTER PUBLICATION fig_pub DROP TABLE b;
         UPDATE b SET v = 'out again' WHERE id = 5;
         ALTER PUBLICATION fig_pub ADD TABLE b;",
    );
    let mut running = daemon();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while count(&target.open(), "SELECT count(*) FROM _fig_loads WHERE sync = 'resync' AND state = 'finished' AND mirror = 'public.b'") < 2 {
        assert!(std::time::Instant::now() < deadline, "b was not re-copied after the restart:\n{}", running.stderr_so_far());
        std::thread::sleep(Duration::from_millis(200));
    }
    fig_tests::receiver::wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        running.stderr_so_far()
    });
    running.terminate(TIMEOUT).assert_success();
    assert_mirrors_match(&mut client, &target.sink, &["public.a", "public.b"]);
    assert_eq!(
        count(&target.open(), "SELECT count(*) FROM _fig_loads WHERE sync = 'resync' AND state = 'finished' AND mirror = 'public.a'"),
        0,
        "a never left: it is not re-copied"
    );
}

/// A schema renamed while `run` streams: the server sends no new definition of its tables, so the
/// stream still names them by the old schema and a re-copy read under the new name is refused.
/// The re-copier then renews the session (whose server sends the definitions again), and the
/// table ends under its new name, equal to its source (found by a stranger: it retried forever,
/// with growing pauses, until a restart).
#[test]
fn a_schema_renamed_while_streaming_ends_under_its_new_name_in_sync() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE SCHEMA s1;
         CREATE TABLE s1.t (id int PRIMARY KEY, v text);
         INSERT INTO s1.t SELECT i, 'init' FROM generate_series(1, 10) i;
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
    let config = target.config_file(
        &dir.path().join("fig.toml"),
        &url,
        "",
        "[resync]\nscan_secs = 1\n",
    );
    let mut running = Receiver::new(["run", "--config"]).arg(&config).spawn();
    let mut client = pg.connect();
    fig_tests::receiver::wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        running.stderr_so_far()
    });
    pg.psql("ALTER SCHEMA s1 RENAME TO s2; UPDATE s2.t SET v = 'renamed' WHERE id = 2; DELETE FROM s2.t WHERE id = 3;");
    std::thread::sleep(Duration::from_secs(3));
    fig_tests::receiver::wait_until_in_sync(
        &mut client,
        &target.sink,
        Duration::from_secs(60),
        || running.stderr_so_far(),
    );
    pg.psql("UPDATE s2.t SET v = 'later' WHERE id = 4;");
    fig_tests::receiver::wait_until_in_sync(
        &mut client,
        &target.sink,
        Duration::from_secs(60),
        || running.stderr_so_far(),
    );
    running.terminate(TIMEOUT).assert_success();
    assert_mirrors_match(&mut client, &target.sink, &["s2.t"]);
}

/// `ALTER TYPE … RENAME VALUE` and `ADD ATTRIBUTE` change what existing rows read as without any row
/// change in the WAL: `run`'s scans see the types' new shape and re-copy the tables using them
/// (found by a stranger: the mirror kept the old labels, silently).
#[test]
fn an_enum_value_renamed_or_a_composite_attribute_added_re_copies_the_tables_using_them() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE TYPE st AS ENUM ('new', 'ok', 'bad');
         CREATE TYPE pair AS (a text, b int);
         CREATE TABLE o (id int PRIMARY KEY, s st, p pair);
         INSERT INTO o SELECT g, (ARRAY['new','ok','bad'])[g % 3 + 1]::st, ROW('x', g)::pair
           FROM generate_series(1, 9) g;
         CREATE TABLE plain (id int PRIMARY KEY);
         INSERT INTO plain VALUES (1);
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
    let config = target.config_file(
        &dir.path().join("fig.toml"),
        &url,
        "",
        "[resync]\nscan_secs = 1\n",
    );
    let mut running = Receiver::new(["run", "--config"]).arg(&config).spawn();
    let mut client = pg.connect();
    fig_tests::receiver::wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        running.stderr_so_far()
    });
    std::thread::sleep(Duration::from_secs(2)); // a scan records the types' shapes
    pg.psql("ALTER TYPE st RENAME VALUE 'ok' TO 'fine'; ALTER TYPE pair ADD ATTRIBUTE c int;");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while count(&target.open(), "SELECT count(*) FROM _fig_loads WHERE sync = 'resync' AND state = 'finished' AND mirror = 'public.o'") < 1 {
        assert!(std::time::Instant::now() < deadline, "o was never re-copied:\n{}", running.stderr_so_far());
        std::thread::sleep(Duration::from_millis(200));
    }
    fig_tests::receiver::wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        running.stderr_so_far()
    });
    running.terminate(TIMEOUT).assert_success();
    assert_mirrors_match(&mut client, &target.sink, &["public.o", "public.plain"]);
    assert_eq!(
        count(
            &target.open(),
            "SELECT count(*) FROM _fig_loads WHERE sync = 'resync' AND mirror = 'public.plain'"
        ),
        0,
        "a table using neither type is not re-copied"
    );
}
