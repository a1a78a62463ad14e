//! Partitioned tables against a real server. By default (`replication.partition_mirrors =
//! "root"`) a partitioned table has one mirror under its root's name, copied and streamed alike
//! under both plugins, each change's leaf partition in the history: moves between partitions, a
//! leaf whose columns are in another order, sub-partitions, unchanged TOAST values, TRUNCATE of the
//! root and of one leaf, partitions created, attached, detached and dropped while the receiver
//! runs. `partition_mirrors = "leaf"` keeps one mirror per leaf.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fig_tests::receiver::{assert_mirrors_match, wait_until_in_sync, Receiver, Target};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(180);

fn config(dir: &Path, url: &str, target: &Target, extra: &str) -> PathBuf {
    let path = dir.join(format!("{}.toml", target.plugin));
    target.config_file(&path, url, extra, "[resync]\nscan_secs = 1")
}

fn mirrors(target: &Target) -> Vec<String> {
    let file = target.open();
    let mut stmt = file
        .connection()
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name")
        .unwrap();
    let names = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<String>, _>>()
        .unwrap();
    names
}

/// (partition, op) of every history row of `public.p`, in order.
fn leaf_history(target: &Target) -> Vec<(Option<String>, String)> {
    let file = target.open();
    let mut stmt = file
        .connection()
        .prepare(
            "SELECT partition, op FROM _fig_changes WHERE schema = 'public' AND \"table\" = 'p' \
             ORDER BY commit_lsn, ordinal",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

const SCHEMA: &str = "
    CREATE TABLE p (id int, d date, v text, big text, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
    CREATE TABLE p1 PARTITION OF p FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
    -- A leaf made on its own, columns in another order, then attached.
    CREATE TABLE p2 (big text, v text, d date NOT NULL, id int NOT NULL);
    ALTER TABLE p ATTACH PARTITION p2 FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
    -- Sub-partitioned: its leaves belong to p's mirror too.
    CREATE TABLE p3 PARTITION OF p FOR VALUES FROM ('2025-01-01') TO ('2026-01-01') PARTITION BY RANGE (id);
    CREATE TABLE p3a PARTITION OF p3 FOR VALUES FROM (MINVALUE) TO (MAXVALUE);
    ALTER TABLE p REPLICA IDENTITY DEFAULT;
    INSERT INTO p SELECT i, DATE '2024-01-01' + (i % 700), 'v' || i,
        CASE WHEN i % 10 = 0 THEN (SELECT string_agg(md5(i::text || g::text), '') FROM generate_series(1, 200) g) END
      FROM generate_series(1, 300) i;
    CREATE TABLE plain (id int PRIMARY KEY, v text);
    INSERT INTO plain VALUES (1, 'a');";

/// Root mirrors under figoutput without a publication, pgoutput with a publication of the root
/// (leaves reported under their names) and pgoutput with `publish_via_partition_root` (the server
/// routes).
#[test]
fn a_partitioned_table_is_one_mirror_under_its_root_copied_and_streamed_by_both_plugins() {
    for (plugin, publication, via_root) in [
        ("figoutput", None, false),
        ("pgoutput", Some("fig_pub"), false),
        ("pgoutput", Some("fig_pub"), true),
    ] {
        let pg = PgServer::start();
        let url = pg.url("postgres");
        let dir = tempfile::tempdir().unwrap();
        pg.psql(SCHEMA);
        pg.psql(&format!(
            "CREATE EXTENSION figoutput;
             CREATE PUBLICATION fig_pub FOR TABLE p, plain WITH (publish_via_partition_root = {via_root});"
        ));
        let target = Target::new(plugin, dir.path(), publication);
        let cfg = config(dir.path(), &url, &target, "");
        let case = format!("{plugin} via_root={via_root}");
        let run = || Receiver::new(["run", "--config"]).arg(&cfg);
        run().endpos("now").output(TIMEOUT).assert_success();
        let mut client = pg.connect();
        assert_mirrors_match(&mut client, &target.sink, &["public.p", "public.plain"]);
        assert_eq!(
            mirrors(&target),
            ["public.p", "public.plain"],
            "{case}: one mirror for the partitioned table, none per leaf"
        );

        // Updates that leave the TOASTed column unchanged, moves between partitions (a delete
        // from one leaf and an insert into another), deletes, inserts into every leaf.
        pg.psql(
            "UPDATE p SET v = 'u' || id WHERE id % 10 = 0;
             UPDATE p SET d = DATE '2024-12-01' WHERE id BETWEEN 11 AND 20 AND d < '2024-07-01';
             UPDATE p SET d = DATE '2025-06-01' WHERE id BETWEEN 21 AND 25;
             DELETE FROM p WHERE id BETWEEN 26 AND 30;
             INSERT INTO p VALUES (1000, '2024-02-02', 'n1', NULL), (1001, '2024-09-09', 'n2', NULL),
                                  (1002, '2025-02-02', 'n3', repeat('x', 5000));",
        );
        run().endpos("now").output(TIMEOUT).assert_success();
        assert_mirrors_match(&mut client, &target.sink, &["public.p", "public.plain"]);
        let history = leaf_history(&target);
        assert!(
            !history.is_empty(),
            "{case}: changes recorded under the root"
        );
        match via_root {
            // The server routed them: which leaf is not sent.
            true => assert!(history.iter().all(|(leaf, _)| leaf.is_none()), "{case}"),
            false => {
                for leaf in ["public.p1", "public.p2", "public.p3a"] {
                    assert!(
                        history.iter().any(|(l, _)| l.as_deref() == Some(leaf)),
                        "{case}: no change recorded with partition {leaf}: {history:?}"
                    );
                }
                assert!(history.iter().all(|(leaf, _)| leaf.is_some()), "{case}");
            }
        }

        // While a receiver runs: one leaf truncated (its rows cannot be told apart in the root's
        // mirror: a re-copy), a partition created, one attached with rows, one detached, one
        // dropped (rows come and go without row changes: found by comparing the partitions).
        let mut daemon = run().spawn();
        let steps: &[&str] = &[
            "TRUNCATE p1; INSERT INTO p VALUES (2000, '2024-03-03', 'after truncate', NULL);",
            "CREATE TABLE p4 PARTITION OF p FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
             INSERT INTO p VALUES (3000, '2026-03-03', 'new partition', NULL);",
            "CREATE TABLE loose (id int NOT NULL, d date NOT NULL, v text, big text);
             INSERT INTO loose SELECT i, DATE '2026-08-01', 'loose', NULL FROM generate_series(4000, 4049) i;
             ALTER TABLE p ATTACH PARTITION loose FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');",
            "ALTER TABLE p DETACH PARTITION p2; UPDATE p SET v = 'still' WHERE id = 1000;",
            "DROP TABLE p4; UPDATE p SET v = 'after drop' WHERE id = 1000;",
            "TRUNCATE p; INSERT INTO p VALUES (5000, '2024-03-03', 'after root truncate', NULL);",
        ];
        for (i, step) in steps.iter().enumerate() {
            if via_root && step.starts_with("TRUNCATE p1") {
                // pgoutput sends nothing for a leaf truncated alone when it publishes through the
                // root (documented): this mirror cannot follow it.
                continue;
            }
            pg.psql(step);
            wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
                daemon.stderr_so_far()
            });
            // The scan that compares partitions may come just after the stream caught up.
            std::thread::sleep(Duration::from_millis(2500));
            wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
                daemon.stderr_so_far()
            });
            let problems = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                assert_mirrors_match(
                    &mut pg.connect(),
                    &target.sink,
                    &["public.p", "public.plain"],
                )
            }));
            assert!(
                problems.is_ok(),
                "{case}: step {i} ({step}) left the root's mirror wrong:\n{}",
                daemon.stderr_so_far()
            );
        }
        daemon.terminate(TIMEOUT).assert_success();
    }
}

/// `partition_mirrors = "leaf"`: one mirror per leaf, copied and streamed alike; a row moved
/// between partitions leaves one mirror for the other; TRUNCATE of one leaf empties its mirror.
#[test]
fn partition_mirrors_leaf_keeps_one_mirror_per_leaf_partition() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(SCHEMA);
    pg.psql("CREATE EXTENSION figoutput;");
    let target = Target::new("figoutput", dir.path(), None);
    let cfg = config(dir.path(), &url, &target, "partition_mirrors = \"leaf\"");
    let run = || Receiver::new(["run", "--config"]).arg(&cfg);
    run().endpos("now").output(TIMEOUT).assert_success();
    let leaves = ["public.p1", "public.p2", "public.p3a", "public.plain"];
    let mut client = pg.connect();
    assert_mirrors_match(&mut client, &target.sink, &leaves);
    assert_eq!(mirrors(&target), leaves);
    pg.psql(
        "UPDATE p SET v = 'u' WHERE id % 10 = 0;
         UPDATE p SET d = DATE '2024-12-01' WHERE id BETWEEN 11 AND 20 AND d < '2024-07-01';
         TRUNCATE p1;
         INSERT INTO p VALUES (1000, '2024-02-02', 'after truncate', NULL);",
    );
    run().endpos("now").output(TIMEOUT).assert_success();
    assert_mirrors_match(&mut client, &target.sink, &leaves);
    assert!(leaf_history(&target).is_empty(), "nothing under the root");
}

/// A bad value for the key is refused, naming it.
#[test]
fn a_bad_partition_mirrors_value_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
    let cfg = config(
        dir.path(),
        "postgres://nobody@127.0.0.1:1/x",
        &target,
        "partition_mirrors = \"leaves\"",
    );
    let out = Receiver::new(["run", "--config"]).arg(&cfg).output(TIMEOUT);
    out.assert_failure();
    assert!(
        out.stderr.contains("replication.partition_mirrors") && out.stderr.contains("root or leaf"),
        "{}",
        out.stderr
    );
}

/// figoutput without a publication, root mirrors: a partition detached while `run` streams is a
/// table of its own from its next change on, and a table attached as a partition files its changes
/// under its new root (found by a stranger: the plugin did not send the leaf's RELATION again, so
/// the receiver kept the old route, silently, until a restart).
#[test]
fn changes_after_attach_and_detach_follow_the_partitions_new_place() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE h (id int PRIMARY KEY, v text) PARTITION BY LIST (id);
         CREATE TABLE h_a PARTITION OF h FOR VALUES IN (1, 2, 3);
         CREATE TABLE h_b PARTITION OF h FOR VALUES IN (10, 20, 30, 40);
         CREATE TABLE solo (id int PRIMARY KEY, v text);
         INSERT INTO h VALUES (1, 'a'), (2, 'a'), (10, 'b'), (20, 'b');
         INSERT INTO solo VALUES (100, 's'), (200, 's');",
    );
    let target = Target::new("figoutput", dir.path(), None);
    let cfg = config(dir.path(), &url, &target, "");
    let mut daemon = Receiver::new(["run", "--config"]).arg(&cfg).spawn();
    let mut client = pg.connect();
    wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        daemon.stderr_so_far()
    });
    pg.psql("UPDATE h SET v = 'b2' WHERE id = 20;");
    wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        daemon.stderr_so_far()
    });
    // Detached, then changed as a table of its own; a table attached, then changed through the root.
    pg.psql(
        "ALTER TABLE h DETACH PARTITION h_b;
         INSERT INTO h_b VALUES (40, 'x'); UPDATE h_b SET v = 'y' WHERE id = 20;
         ALTER TABLE h ATTACH PARTITION solo FOR VALUES IN (100, 200, 300);
         INSERT INTO h VALUES (300, 'via root'); UPDATE h SET v = 's2' WHERE id = 100;",
    );
    std::thread::sleep(Duration::from_secs(3));
    wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        daemon.stderr_so_far()
    });
    pg.psql("UPDATE h_b SET v = 'z' WHERE id = 10; DELETE FROM h WHERE id = 200;");
    wait_until_in_sync(&mut client, &target.sink, TIMEOUT, || {
        daemon.stderr_so_far()
    });
    daemon.terminate(TIMEOUT).assert_success();
    assert_mirrors_match(&mut client, &target.sink, &["public.h", "public.h_b"]);
    // The history files each change where it happened.
    let filed: Vec<(String, Option<String>)> = {
        let file = target.open();
        let mut stmt = file
            .connection()
            .prepare("SELECT \"table\", partition FROM _fig_changes WHERE op = 'insert' AND (after LIKE '{\"id\":300,%' OR after LIKE '{\"id\":40,%')")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    };
    assert_eq!(
        filed,
        vec![
            ("h_b".to_string(), None),
            ("h".to_string(), Some("public.solo".to_string()))
        ],
        "the detached table's insert is its own, the attached one's is under h with its partition"
    );
}
