//! A workload this project did not write: pg_partman (Debian's `postgresql-15-partman`, 4.7)
//! managing a daily-partitioned table the way its users run it — `create_parent`, rows landing
//! in the default partition, `partition_data_time` moving them out into partitions it creates on
//! the fly (DELETE from the default, CREATE TABLE … PARTITION OF, INSERT through the parent, in one
//! transaction), `run_maintenance` premaking partitions and updating its own config tables — plus
//! what pg_partman's users' tables hold: an enum, a domain, arrays, a stored generated column, a
//! keyless audit table, rows moved between partitions, and DDL while streaming (a column added to
//! the partitioned table, an enum value added). Both plugins, each receiver killed -9 mid-run and
//! restarted; then every table equals its mirror and every sink's history equals, transaction by
//! transaction, what an independent `test_decoding` witness slot decoded from the same WAL.

use std::time::{Duration, Instant};

use fig_tests::receiver::{assert_mirrors_match, wait_until_in_sync, Running, Target};
use fig_tests::{witness, PgServer};

const TIMEOUT: Duration = Duration::from_secs(240);
const WITNESS: &str = "witness";

/// Every mirrored table of the workload's schemas, as `schema.table`: ordinary tables, and
/// partitioned tables under their root (their leaves have no mirror of their own).
fn tables(c: &mut postgres::Client) -> Vec<String> {
    c.query(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname IN ('public', 'partman') ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn ours(table: &str) -> bool {
    table.starts_with("public.") || table.starts_with("partman.")
}

#[test]
fn pg_partman_maintaining_a_partitioned_table_while_streaming_with_kills_equals_the_source_and_the_witness(
) {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE SCHEMA partman;
         CREATE EXTENSION pg_partman SCHEMA partman;
         CREATE TYPE event_kind AS ENUM ('debit', 'credit', 'fee');
         CREATE DOMAIN amount AS numeric(14,2) CHECK (VALUE > -1000000000000);
         CREATE TABLE public.events (
             id bigint NOT NULL,
             at timestamptz NOT NULL,
             kind event_kind NOT NULL,
             amt amount NOT NULL,
             tags text[],
             note text,
             cents bigint GENERATED ALWAYS AS ((amt * 100)::bigint) STORED,
             PRIMARY KEY (id, at)
         ) PARTITION BY RANGE (at);
         SELECT partman.create_parent('public.events', 'at', 'native', 'daily',
                                      p_premake => 2, p_start_partition => (current_date - 2)::text);
         CREATE TABLE public.audit (at timestamptz NOT NULL DEFAULT now(), who text, what text);
         INSERT INTO events (id, at, kind, amt, tags, note)
           SELECT g, current_date - 2 + (g % 96) * interval '1 hour', (ARRAY['debit','credit','fee']::event_kind[])[1 + g % 3],
                  (g % 1000) - 500.25, ARRAY['t' || (g % 7), NULL], repeat('n', g % 50)
           FROM generate_series(1, 20000) g;
         INSERT INTO audit (who, what) SELECT 'setup', 'row ' || g FROM generate_series(1, 500) g;
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    let targets = [
        Target::new("figoutput", dir.path(), None),
        Target::new("pgoutput", dir.path(), Some("fig_pub")),
    ];
    let mut c = pg.connect();
    witness::create(&mut c, WITNESS);
    for t in &targets {
        t.catch_up(&url, TIMEOUT);
    }
    let spawn_all =
        || -> Vec<Running> { targets.iter().map(|t| t.receiver(&url).spawn()).collect() };
    let mut running = spawn_all();

    // Days pg_partman has no partition for yet land in the default partition.
    pg.psql(
        "INSERT INTO events (id, at, kind, amt, tags, note)
           SELECT 100000 + g, current_date + 5 + (g % 72) * interval '1 hour', 'credit', g / 4.0, ARRAY['late'], 'future'
           FROM generate_series(1, 3000) g;
         -- Moves between partitions (a delete from one, an insert into another).
         UPDATE events SET at = at + interval '1 day', note = 'moved' WHERE id % 97 = 0;
         UPDATE events SET amt = amt + 1, tags = tags || 'upd'::text WHERE id % 13 = 0;
         DELETE FROM events WHERE id % 101 = 0;
         INSERT INTO audit (who, what) SELECT 'app', 'event ' || g FROM generate_series(1, 300) g;
         -- DDL while streaming: a column added to the partitioned table (every partition), an enum value.
         ALTER TABLE events ADD COLUMN channel text;
         ALTER TYPE event_kind ADD VALUE 'refund';",
    );
    pg.psql(
        "INSERT INTO events (id, at, kind, amt, channel)
           SELECT 200000 + g, current_date + (g % 24) * interval '1 hour', 'refund', -g, 'web'
           FROM generate_series(1, 500) g;",
    );
    // Killed in the middle, started again.
    std::thread::sleep(Duration::from_millis(500));
    for r in &mut running {
        r.kill9();
    }
    running = spawn_all();

    // pg_partman's own maintenance: rows out of the default partition into new partitions, more
    // premade partitions, its config tables updated.
    pg.psql(
        "-- Generated columns are left to the server, as pg_partman's docs tell its users.
         SELECT partman.partition_data_time('public.events', p_batch_count => 20, p_ignored_columns => ARRAY['cents']);
         UPDATE partman.part_config SET premake = 4 WHERE parent_table = 'public.events';
         SELECT partman.run_maintenance('public.events');
         UPDATE events SET channel = 'backfill' WHERE channel IS NULL AND id % 5 = 0;
         ALTER TABLE audit REPLICA IDENTITY FULL;
         DELETE FROM audit WHERE who = 'setup' AND what LIKE 'row 1%';",
    );
    let started = Instant::now();
    for (t, r) in targets.iter().zip(&running) {
        wait_until_in_sync(&mut c, &t.sink, TIMEOUT, || r.stderr_so_far());
    }
    for mut r in running {
        r.terminate(TIMEOUT).assert_success();
    }
    eprintln!("in sync {:?} after the maintenance", started.elapsed());

    let all = tables(&mut c);
    let partitions: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.events'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        partitions >= 10,
        "pg_partman made its partitions ({partitions})"
    );
    let default_rows: i64 = c
        .query_one("SELECT count(*) FROM public.events_default", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        default_rows, 0,
        "partition_data_time moved every row out of the default"
    );
    let names: Vec<&str> = all.iter().map(String::as_str).collect();
    let expected = witness::changes(&mut c, WITNESS, ours);
    let total: u64 = expected.values().sum();
    assert!(
        total > 3000,
        "the witness saw the workload ({total} changes)"
    );
    for t in &targets {
        assert_mirrors_match(&mut c, &t.sink, &names);
        witness::assert_history_complete(&expected, t, ours);
        assert!(
            fig_tests::receiver::table_states(&t.sink).is_empty(),
            "{}: every table in sync",
            t.plugin
        );
    }
}
