//! Partitioned tables against a real server: the copy and the stream always agree on where a
//! partitioned table's rows go. figoutput without a publication streams each partition under its
//! own name, so each partition has its mirror, copied and streamed alike; moves between
//! partitions, TRUNCATE of one partition or of the root, partitions created, attached and detached
//! later.

use std::time::Duration;

use fig_tests::receiver::{assert_mirrors_match, Target};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn partitioned_tables_under_figoutput_without_a_publication_copy_and_stream_per_partition() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE p (id int, d date, v text, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
         CREATE TABLE p1 PARTITION OF p FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
         CREATE TABLE p2 PARTITION OF p FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
         INSERT INTO p SELECT i, DATE '2024-01-01' + (i % 360), 'v' || i FROM generate_series(1, 200) i;",
    );
    let target = Target::new("figoutput", dir.path(), None);
    target.catch_up(&url, TIMEOUT);
    let mut client = pg.connect();
    assert_mirrors_match(&mut client, &target.sink, &["public.p1", "public.p2"]);

    pg.psql(
        "UPDATE p SET v = 'u' WHERE id <= 10;
         UPDATE p SET d = DATE '2024-12-01' WHERE id BETWEEN 11 AND 20 AND d < '2024-07-01';
         TRUNCATE p1;
         INSERT INTO p VALUES (1000, '2024-02-02', 'after truncate');
         CREATE TABLE p3 PARTITION OF p FOR VALUES FROM ('2025-01-01') TO ('2025-07-01');
         INSERT INTO p VALUES (2000, '2025-03-03', 'new partition');
         CREATE TABLE loose (id int, d date, v text, PRIMARY KEY (id, d));
         INSERT INTO loose VALUES (3000, '2025-08-08', 'attached');
         ALTER TABLE p ATTACH PARTITION loose FOR VALUES FROM ('2025-07-01') TO ('2026-01-01');
         ALTER TABLE p DETACH PARTITION p2;
         UPDATE p2 SET v = 'detached' WHERE id <= 30;",
    );
    target.catch_up(&url, TIMEOUT);
    assert_mirrors_match(
        &mut client,
        &target.sink,
        &["public.p1", "public.p2", "public.p3", "public.loose"],
    );
    pg.psql("TRUNCATE p; INSERT INTO p VALUES (4000, '2024-03-03', 'x');");
    target.catch_up(&url, TIMEOUT);
    assert_mirrors_match(
        &mut client,
        &target.sink,
        &["public.p1", "public.p2", "public.p3", "public.loose"],
    );
    // No mirror under the partitioned table's own name: it has no rows of its own.
    let root: i64 = target
        .open()
        .connection()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'public.p'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(root, 0);
}

#[test]
fn partitioned_tables_under_pgoutput_follow_the_publication_with_or_without_its_root() {
    for via_root in [false, true] {
        let pg = PgServer::start();
        let url = pg.url("postgres");
        let dir = tempfile::tempdir().unwrap();
        pg.psql(&format!(
            "CREATE TABLE p (id int, d date, v text, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
             CREATE TABLE p1 PARTITION OF p FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
             CREATE TABLE p2 PARTITION OF p FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
             INSERT INTO p SELECT i, DATE '2024-01-01' + (i % 360), 'v' || i FROM generate_series(1, 200) i;
             CREATE PUBLICATION fig_pub FOR TABLE p WITH (publish_via_partition_root = {via_root});"
        ));
        let target = Target::new("pgoutput", dir.path(), Some("fig_pub"));
        target.catch_up(&url, TIMEOUT);
        pg.psql(
            "UPDATE p SET v = 'u' WHERE id <= 10;
             UPDATE p SET d = DATE '2024-12-01' WHERE id BETWEEN 11 AND 20 AND d < '2024-07-01';
             DELETE FROM p WHERE id BETWEEN 21 AND 25;
             INSERT INTO p VALUES (1000, '2024-02-02', 'new');",
        );
        target.catch_up(&url, TIMEOUT);
        let mut client = pg.connect();
        let tables: &[&str] = match via_root {
            true => &["public.p"],
            false => &["public.p1", "public.p2"],
        };
        assert_mirrors_match(&mut client, &target.sink, tables);
    }
}
