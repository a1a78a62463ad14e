//! One rule for table identity (DESIGN.md rule 9) against real servers: SQL identifier rules in the
//! flags, the configuration, figoutput's include list, the copy and the stream (unquoted folds to
//! lower case, quoted is exact), and mirror names SQLite reserves escaped.

use std::time::Duration;

use fig_tests::receiver::{assert_mirrors_match, Receiver, Target};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(180);

const SCHEMA: &str = r#"
CREATE EXTENSION figoutput;
CREATE TABLE "Orders" (id int PRIMARY KEY, "Amount" numeric(12,2), note text);
CREATE SCHEMA "SalesEU";
CREATE TABLE "SalesEU"."Q1" (id int PRIMARY KEY, v text);
CREATE SCHEMA sqlite_x;
CREATE TABLE sqlite_x.t (id int PRIMARY KEY, v text);
CREATE TABLE plain (id int PRIMARY KEY);
INSERT INTO "Orders" SELECT i, i, 'n' || i FROM generate_series(1, 50) i;
INSERT INTO "SalesEU"."Q1" SELECT i, 'q' || i FROM generate_series(1, 20) i;
INSERT INTO sqlite_x.t SELECT i, 's' || i FROM generate_series(1, 10) i;
INSERT INTO plain SELECT generate_series(1, 5);
"#;

const CHANGES: &str = r#"
UPDATE "Orders" SET "Amount" = 0 WHERE id <= 10;
DELETE FROM "Orders" WHERE id > 45;
INSERT INTO "Orders" VALUES (100, 1, 'new');
UPDATE "SalesEU"."Q1" SET v = 'changed' WHERE id = 3;
INSERT INTO sqlite_x.t VALUES (11, 'new');
DELETE FROM sqlite_x.t WHERE id = 1;
"#;

fn sqlite_count(target: &Target, mirror: &str) -> i64 {
    target
        .open()
        .connection()
        .query_row(&format!("SELECT count(*) FROM \"{mirror}\""), [], |r| {
            r.get(0)
        })
        .unwrap_or_else(|e| panic!("mirror {mirror}: {e}"))
}

fn check(pg: &PgServer, target: &Target) {
    let mut client = pg.connect();
    assert_mirrors_match(&mut client, &target.sink, &["public.Orders", "SalesEU.Q1"]);
    // SQLite reserves names beginning with sqlite_: the mirror of sqlite_x.t is _sqlite_x.t.
    assert_eq!(sqlite_count(target, "_sqlite_x.t"), 10);
}

#[test]
fn quoted_and_mixed_case_names_are_copied_and_streamed_alike_with_figoutput() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(SCHEMA);
    let target = Target::new("figoutput", dir.path(), None);
    let tables = r#"public."Orders", "SalesEU".*, SQLITE_X.T"#;
    target
        .receiver(&url)
        .arg("--tables")
        .arg(tables)
        .endpos("now")
        .output(TIMEOUT)
        .assert_success();
    pg.psql(CHANGES);
    target
        .receiver(&url)
        .arg("--tables")
        .arg(tables)
        .endpos("now")
        .output(TIMEOUT)
        .assert_success();
    check(&pg, &target);
    // `plain` is in no pattern: neither copied nor streamed.
    let plain: i64 = target
        .open()
        .connection()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'public.plain'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(plain, 0);
}

#[test]
fn quoted_and_mixed_case_names_are_copied_and_streamed_alike_with_pgoutput() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(SCHEMA);
    pg.psql(r#"CREATE PUBLICATION fig_pub FOR TABLE "Orders", "SalesEU"."Q1", sqlite_x.t;"#);
    let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
    target.catch_up(&url, TIMEOUT);
    pg.psql(CHANGES);
    target.catch_up(&url, TIMEOUT);
    check(&pg, &target);
}

#[test]
fn an_unquoted_mixed_case_name_folds_and_a_name_matching_nothing_is_an_error() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(SCHEMA);
    let target = Target::new("figoutput", dir.path(), None);
    // public.Orders is public.orders by SQL rules: no such table. Copying nothing and streaming
    // nothing would be silent; the run refuses, naming the table and the quoting.
    let done = target
        .receiver(&url)
        .arg("--tables")
        .arg("public.Orders")
        .endpos("now")
        .output(TIMEOUT);
    done.assert_failure();
    assert!(
        done.stderr.contains(r#""public"."orders""#) && done.stderr.contains("fold to lower case"),
        "the error names the folded name and the rule:\n{}",
        done.stderr
    );
    // The same name through --sync: folded, found in the catalog only when quoted.
    let snapshot = |name: &str| {
        Receiver::new(["snapshot", "--source", &url, "--sink"])
            .arg(format!(
                "sqlite:{}",
                dir.path().join("snap.sqlite").display()
            ))
            .arg("--sync")
            .arg(format!("{name}=snapshot"))
            .output(TIMEOUT)
    };
    snapshot("public.Orders").assert_failure();
    snapshot(r#"public."Orders""#).assert_success();
}

/// A keyless table whose columns take every name of SQLite's row id (`oid`, `_rowid_`, `rowid`):
/// an update or delete must still remove exactly one matching row from its mirror.
fn keyless_table_hiding_every_rowid_name(plugin: &'static str, publication: Option<&str>) {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE r3 (oid int, _rowid_ int, \"ROWID\" int, v text);
         ALTER TABLE r3 REPLICA IDENTITY FULL;
         INSERT INTO r3 VALUES (1,1,1,'a'),(1,1,1,'a'),(2,2,2,'x'),(2,2,2,'y');
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let target = Target::new(plugin, dir.path(), publication);
    target.catch_up(&url, TIMEOUT);
    pg.psql(
        "UPDATE r3 SET v = 'q' WHERE ctid = (SELECT min(ctid) FROM r3 WHERE v = 'a');
         DELETE FROM r3 WHERE v = 'x';
         INSERT INTO r3 VALUES (3,3,3,'z');
         DELETE FROM r3 WHERE v = 'z';",
    );
    target.catch_up(&url, TIMEOUT);
    let mut client = pg.connect();
    assert_mirrors_match(&mut client, &target.sink, &["public.r3"]);
    assert_eq!(sqlite_count(&target, "public.r3"), 3);
}

#[test]
fn a_keyless_table_hiding_every_rowid_name_keeps_its_rows_with_figoutput() {
    keyless_table_hiding_every_rowid_name("figoutput", None);
}

#[test]
fn a_keyless_table_hiding_every_rowid_name_keeps_its_rows_with_pgoutput() {
    keyless_table_hiding_every_rowid_name("pgoutput", Some("pub"));
}
