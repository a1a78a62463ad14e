//! Table states against a real server (DESIGN.md rule 8): a change that one table cannot take
//! marks that table out of sync, visibly, and every other table goes on streaming. The real binary,
//! a real PostgreSQL 15 with figoutput, a real SQLite sink.

use std::time::Duration;

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
