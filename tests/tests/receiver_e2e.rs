//! `fig-receiver run` end to end: a real server, a real workload, the real binary, a real SQLite sink.
//!
//! What the tests prove, each against the source as the final judge:
//!
//! - every source table equals its mirror, row for row and value for value (the values compared in
//!   the receiver's normalized form, see `fig_tests::receiver`), under figoutput and under pgoutput;
//! - the change history holds every change exactly once: per source transaction (xid), per table and
//!   operation, as many rows as a `test_decoding` slot created just before the receiver's saw;
//! - both plugins give byte-identical histories for one workload;
//! - aborted transactions and rolled-back savepoints leave no trace;
//! - bad input ends the receiver with a non-zero exit and a message naming the problem.
//!
//! The workload: the sample schema and workload (`tests/sql`), pgbench-style transactions from three
//! threads, COPY FROM STDIN, multi-row INSERT, UPDATE of primary keys, DELETE, TRUNCATE then re-insert,
//! updates of rows whose ~20 kB TOASTed text is unchanged, and tables of every replica identity
//! (DEFAULT with a key, FULL without one, USING INDEX, NOTHING insert-only). The receiver runs with
//! `--endpos now` before the workload (creating its slot), after its first half, again while the
//! threads commit (so the next run resumes in the middle of their stream), and at the end. `logical_decoding_work_mem` is 64 kB, so the larger
//! transactions reach the receiver streamed (pgoutput) or spilled.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fig_tests::receiver::{assert_mirrors_match, HistoryRow, Receiver, SinkFile, Target};
use fig_tests::witness;
use fig_tests::PgServer;

const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const PUBLICATION: &str = "fig_pub";
/// The `test_decoding` slot that counts what the workload changed.
const COUNT_SLOT: &str = "count_changes";

/// Every table the workload writes.
const TABLES: &[&str] = &[
    "public.customers",
    "public.invoices",
    "public.payments",
    "public.ledger_entries",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_accounts",
    "public.pgbench_history",
    "public.docs",
    "public.docs_full",
    "public.ri_full",
    "public.ri_index",
    "public.ri_nothing",
    "public.misc",
];

const THREADS: usize = 3;
const TXNS_PER_THREAD: usize = 250;
const ACCOUNTS: i32 = 2000;
const TELLERS: i32 = 10;

// ---- a small deterministic random generator (seed printed for reruns) ---------------------------

struct Rng(u64);

impl Rng {
    fn seeded(label: &str) -> Rng {
        let seed = std::env::var("FIG_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{label}: FIG_TEST_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
}

// ---- the server and the workload ----------------------------------------------------------------

fn server() -> PgServer {
    PgServer::builder()
        .setting("logical_decoding_work_mem", "64kB")
        .start()
}

const SCHEMA: &str = r#"
CREATE EXTENSION figoutput;
-- ~20 kB of text that does not compress (and, stored EXTERNAL, is never compressed anyway).
CREATE FUNCTION big_text(seed int) RETURNS text LANGUAGE sql IMMUTABLE AS
  $$ SELECT string_agg(md5(seed::text || ':' || i), '') FROM generate_series(1, 640) i $$;

CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance bigint NOT NULL, filler char(88));
CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int NOT NULL, tbalance bigint NOT NULL, filler char(84));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance bigint NOT NULL, filler char(84));
-- As pgbench's: no key, insert-only.
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamptz, filler char(22));

-- REPLICA IDENTITY DEFAULT with a primary key, and a TOASTed column kept out of line.
CREATE TABLE docs (id int PRIMARY KEY, version int NOT NULL, title text, body text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
-- FULL without a key, TOASTed too: the old row carries the big value.
CREATE TABLE docs_full (k int NOT NULL, version int NOT NULL, body text);
ALTER TABLE docs_full ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE docs_full REPLICA IDENTITY FULL;
-- FULL without a key, with duplicate rows.
CREATE TABLE ri_full (a int, b text, c numeric);
ALTER TABLE ri_full REPLICA IDENTITY FULL;
-- USING INDEX on a unique not-null column (no primary key).
CREATE TABLE ri_index (id int, code text NOT NULL, qty int, note text);
CREATE UNIQUE INDEX ri_index_code ON ri_index (code);
ALTER TABLE ri_index REPLICA IDENTITY USING INDEX ri_index_code;
-- NOTHING: updates and deletes cannot be replicated, so insert-only.
CREATE TABLE ri_nothing (n int, msg text);
ALTER TABLE ri_nothing REPLICA IDENTITY NOTHING;
-- A few more value kinds.
CREATE TABLE misc (id int PRIMARY KEY, flag boolean, ratio double precision, small real, raw bytea,
                   at timestamp, ints int[], words text[]);

CREATE PUBLICATION fig_pub FOR ALL TABLES;
"#;

/// The schema, then the counting slot, then each target's first run (which creates its slot): no
/// change is committed in between, so the counting slot sees exactly what the receivers see.
fn set_up(pg: &PgServer, targets: &[&Target]) {
    pg.psql(include_str!("../sql/sample_schema.sql"));
    pg.psql(SCHEMA);
    pg.psql(&format!(
        "SELECT 1 FROM pg_create_logical_replication_slot('{COUNT_SLOT}', 'test_decoding')"
    ));
    for t in targets {
        t.catch_up(&pg.url("postgres"), RUN_TIMEOUT);
    }
}

/// The first half: the sample workload, COPY, multi-row inserts, big values.
fn workload_first_half(pg: &PgServer) {
    pg.psql(include_str!("../sql/sample_workload.sql"));
    let mut c = pg.connect();

    let mut copy = |sql: &str, data: String| {
        let mut w = c.copy_in(sql).expect("COPY FROM STDIN");
        w.write_all(data.as_bytes()).expect("COPY data");
        w.finish().expect("COPY end");
    };
    copy("COPY pgbench_branches FROM STDIN", "1\t0\t\\N\n".to_owned());
    copy(
        "COPY pgbench_tellers FROM STDIN",
        (1..=TELLERS).map(|t| format!("{t}\t1\t0\t\\N\n")).collect(),
    );
    copy(
        "COPY pgbench_accounts FROM STDIN",
        (1..=ACCOUNTS).map(|a| format!("{a}\t1\t0\t\n")).collect(),
    );
    copy(
        "COPY ri_nothing (n, msg) FROM STDIN (FORMAT csv)",
        (1..=50)
            .map(|n| format!("{n},\"event, number {n}\"\n"))
            .collect(),
    );

    c.batch_execute(
        r#"
        INSERT INTO ri_full VALUES (1, 'one', 1.5), (1, 'one', 1.5), (2, 'two', NULL),
                                   (3, NULL, 3.000), (4, 'four', -0.001);
        INSERT INTO ri_index VALUES (1, 'A-1', 10, 'first'), (2, 'A-2', 20, NULL),
                                    (3, 'A-3', 30, 'third'), (NULL, 'A-4', 40, 'no id');
        INSERT INTO misc VALUES
          (1, true, 1.5, 0.1, '\x00ff10', '2026-01-02 03:04:05.678901', '{1,2,NULL}', '{"a b","c\"d",NULL}'),
          (2, false, 'NaN', 'Infinity', '\x', '1999-12-31 23:59:59', '{}', '{}'),
          (3, NULL, '-Infinity', 2.5, NULL, NULL, NULL, NULL),
          (4, true, 1e300, 3.4e38, '\xdeadbeef', '2026-06-30 12:00:00.000001', '{{1,2},{3,4}}',
           ARRAY['back\slash', E'tab\there', 'ü', 'null']);
        INSERT INTO docs SELECT g, 1, 'doc ' || g, big_text(g) FROM generate_series(1, 6) g;
        INSERT INTO docs_full SELECT g, 1, big_text(g + 100) FROM generate_series(1, 4) g;
        "#,
    )
    .expect("multi-row inserts");
}

/// One pgbench-like client: TPC-B-ish transactions, plus new and deleted accounts in transactions
/// of their own (so lock order stays account, teller, branch and nothing deadlocks).
fn pgbench_client(url: String, thread: usize, seed: u64, stop_early: Arc<AtomicBool>) {
    let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("pgbench client connects");
    let mut rng = Rng(seed ^ (thread as u64).wrapping_mul(0x1234_5678_9abc_def1));
    for i in 0..TXNS_PER_THREAD {
        if stop_early.load(Ordering::Relaxed) {
            return;
        }
        let aid = rng.range(1, i64::from(ACCOUNTS)) as i32;
        let tid = rng.range(1, i64::from(TELLERS)) as i32;
        let delta = rng.range(-5000, 5000) as i32;
        let mut t = c.transaction().expect("BEGIN");
        t.execute(
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
            &[&i64::from(delta), &aid],
        )
        .expect("update account");
        t.execute(
            "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
            &[&i64::from(delta), &tid],
        )
        .expect("update teller");
        t.execute(
            "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = 1",
            &[&i64::from(delta)],
        )
        .expect("update branch");
        t.execute(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, 1, $2, $3, clock_timestamp())",
            &[&tid, &aid, &delta],
        )
        .expect("insert history");
        t.commit().expect("COMMIT");
        if i % 7 == 3 {
            let new_aid = 100_000 + (thread * 10_000 + i) as i32;
            c.execute(
                "INSERT INTO pgbench_accounts VALUES ($1, 1, $2, 'new')",
                &[&new_aid, &i64::from(delta)],
            )
            .expect("insert account");
        }
        if i % 11 == 5 {
            let victim = rng.range(1, i64::from(ACCOUNTS)) as i32;
            c.execute("DELETE FROM pgbench_accounts WHERE aid = $1", &[&victim])
                .expect("delete account");
        }
    }
}

/// The special cases, run while the pgbench clients commit.
const SPECIALS: &str = r#"
-- Unchanged TOAST: the big body is not in the WAL of these updates.
UPDATE docs SET version = version + 1 WHERE id IN (1, 2, 3);
UPDATE docs SET title = 'renamed' WHERE id = 1;
-- A primary key change with the big body unchanged.
UPDATE docs SET id = 100 WHERE id = 2;
-- A changed big value, then deletes.
UPDATE docs SET body = big_text(999) WHERE id = 4;
DELETE FROM docs WHERE id = 5;
BEGIN;
UPDATE docs SET version = 7 WHERE id = 3;
UPDATE docs SET title = 'twice in one transaction' WHERE id = 3;
COMMIT;
-- FULL with unchanged TOAST in the new row (the old row has it).
UPDATE docs_full SET version = version + 1;
DELETE FROM docs_full WHERE k = 4;
-- FULL without a key: one of two identical rows changes.
UPDATE ri_full SET c = 9.99 WHERE ctid = (SELECT ctid FROM ri_full WHERE a = 1 LIMIT 1);
DELETE FROM ri_full WHERE a = 2;
UPDATE ri_full SET b = 'three' WHERE a = 3;
-- USING INDEX: the identity unchanged, changed, and a non-identity column.
UPDATE ri_index SET qty = qty + 1;
UPDATE ri_index SET code = 'B-1' WHERE code = 'A-1';
UPDATE ri_index SET id = 22 WHERE code = 'A-2';
DELETE FROM ri_index WHERE code = 'A-3';
INSERT INTO ri_nothing VALUES (51, 'late');
UPDATE misc SET ratio = ratio * 2, words = array_append(words, 'more') WHERE id IN (1, 2);
UPDATE misc SET id = 40 WHERE id = 4;
DELETE FROM misc WHERE id = 3;
UPDATE customers SET credit_limit = 99999.99, attributes = attributes || '{"tier": 2}' WHERE country = 'DE';
UPDATE ledger_entries SET id = id + 1000, memo = memo || ' (renumbered)' WHERE memo = 'invoice cancelled';
-- TRUNCATE then re-insert: alone, and inside one transaction with the re-insert.
TRUNCATE ri_full;
INSERT INTO ri_full VALUES (7, 'after truncate', 0), (7, 'after truncate', 0);
BEGIN;
TRUNCATE docs;
INSERT INTO docs VALUES (1, 1, 'reborn', big_text(1));
COMMIT;
INSERT INTO docs SELECT g, 1, 'doc ' || g, big_text(g) FROM generate_series(2, 3) g;
UPDATE docs SET version = 2 WHERE id = 1;
"#;

/// The second half: pgbench clients and the special cases at once, with every target's receiver run
/// (`--endpos now`) while the clients commit, so the next run resumes in the middle of their stream.
fn workload_second_half(pg: &PgServer, targets: &[&Target]) {
    let seed = Rng::seeded("pgbench clients").next();
    let stop_early = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..THREADS)
        .map(|thread| {
            let url = pg.url("postgres");
            let stop = Arc::clone(&stop_early);
            std::thread::spawn(move || pgbench_client(url, thread, seed, stop))
        })
        .collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        std::thread::sleep(Duration::from_millis(300));
        for t in targets {
            t.catch_up(&pg.url("postgres"), RUN_TIMEOUT);
        }
        pg.psql(SPECIALS);
    }));
    if result.is_err() {
        stop_early.store(true, Ordering::Relaxed);
    }
    for (i, c) in clients.into_iter().enumerate() {
        c.join()
            .unwrap_or_else(|_| panic!("pgbench client {i} failed (see its panic above)"));
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// The whole workload against `targets`, then the checks every target must pass.
fn run_workload_and_check(pg: &PgServer, targets: &[&Target]) {
    let started = Instant::now();
    set_up(pg, targets);
    workload_first_half(pg);
    for t in targets {
        t.catch_up(&pg.url("postgres"), RUN_TIMEOUT);
    }
    workload_second_half(pg, targets);
    for t in targets {
        t.catch_up(&pg.url("postgres"), RUN_TIMEOUT);
    }
    let mut c = pg.connect();
    let public = |t: &str| t.starts_with("public.");
    let expected = witness::changes(&mut c, COUNT_SLOT, public);
    let total: u64 = expected.values().sum();
    assert!(
        total > (THREADS * TXNS_PER_THREAD * 4) as u64 + ACCOUNTS as u64,
        "the workload made only {total} changes; the counting slot missed some?"
    );
    for t in targets {
        assert_mirrors_match(&mut c, &t.sink, TABLES);
        witness::assert_history_complete(&expected, t, public);
    }
    eprintln!(
        "workload of {total} changes checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---- the tests ----------------------------------------------------------------------------------

#[test]
fn every_table_equals_its_mirror_and_every_change_is_recorded_once_with_figoutput() {
    let pg = server();
    let dir = tempfile::tempdir().unwrap();
    let fig = Target::new("figoutput", dir.path(), None);
    run_workload_and_check(&pg, &[&fig]);
}

#[test]
fn every_table_equals_its_mirror_and_every_change_is_recorded_once_with_pgoutput() {
    let pg = server();
    let dir = tempfile::tempdir().unwrap();
    let pgo = Target::new("pgoutput", dir.path(), Some(PUBLICATION));
    run_workload_and_check(&pg, &[&pgo]);
}

#[test]
fn figoutput_and_pgoutput_record_identical_histories_for_one_workload() {
    let pg = server();
    let dir = tempfile::tempdir().unwrap();
    let fig = Target::new("figoutput", dir.path(), None);
    let pgo = Target::new("pgoutput", dir.path(), Some(PUBLICATION));
    run_workload_and_check(&pg, &[&fig, &pgo]);

    let a = fig.open().history();
    let b = pgo.open().history();
    if a != b {
        let first = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        let show = |h: Option<&HistoryRow>| match h {
            Some(h) => format!(
                "lsn {} #{} xid {} {} {}.{} {}\n      before {}\n      after  {}",
                h.commit_lsn,
                h.ordinal,
                h.xid,
                h.commit_time,
                h.schema,
                h.table,
                h.op,
                clip(h.before.as_deref()),
                clip(h.after.as_deref())
            ),
            None => "(none)".into(),
        };
        let diffs = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        panic!(
            "histories differ: figoutput {} rows, pgoutput {} rows, {diffs} of the paired rows differ; first at row {first}:\n  figoutput: {}\n  pgoutput:  {}",
            a.len(),
            b.len(),
            show(a.get(first)),
            show(b.get(first))
        );
    }
    // The schema history too: the same definitions, effective at the same changes. Definitions the
    // initial copy recorded are effective at each slot's own consistent point (the two slots were
    // created one after the other): those positions read as 0 here.
    let schema = |t: &Target| -> Vec<(i64, i64, String, String, String)> {
        let f = t.open();
        let mut s = f
            .connection()
            .prepare(
                "SELECT CASE WHEN effective_lsn IN (SELECT position FROM _fig_loads WHERE sync = 'cdc-initial') \
                 THEN 0 ELSE effective_lsn END AS lsn, effective_ordinal, schema, \"table\", columns \
                 FROM _fig_schema ORDER BY 1, 2, 3, 4",
            )
            .unwrap();
        s.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    let (sa, sb) = (schema(&fig), schema(&pgo));
    // pgoutput does not send NOT NULL flags nor attnums (the decode differential test names this
    // difference).
    let without_not_null = |v: Vec<(i64, i64, String, String, String)>| {
        v.into_iter()
            .map(|(l, o, s, t, c)| {
                (
                    l,
                    o,
                    s,
                    t,
                    without_attnums(&c.replace("\"not_null\":true", "\"not_null\":false")),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_not_null(sa),
        without_not_null(sb),
        "the schema histories differ"
    );
}

/// Arrays whose elements are arrays (an array of a domain over `integer[]`, `int2vector[]`,
/// `oidvector[]`), and `int2vector` / `oidvector`, empty ones, NULL elements and multi-dimensional
/// outer arrays included: copied at the start, then inserted, updated (an unchanged TOASTed one
/// too) and deleted, under both plugins. Both mirrors equal the source, no table is out of sync,
/// and both histories are identical.
#[test]
fn arrays_of_arrays_and_vectors_mirror_exactly_under_both_plugins() {
    let pg = server();
    let dir = tempfile::tempdir().unwrap();
    let fig = Target::new("figoutput", dir.path(), None);
    let pgo = Target::new("pgoutput", dir.path(), Some(PUBLICATION));
    let url = pg.url("postgres");
    // A ~40 kB intlist[], kept out of line: an UPDATE of another column leaves it unchanged TOAST.
    let big = "('{' || (SELECT string_agg(format('\"{%s,%s}\"', i, -i), ',') \
               FROM generate_series(1, 2000) i) || '}')::intlist[]";
    pg.psql(&format!(
        r#"CREATE EXTENSION figoutput;
           CREATE DOMAIN intlist AS int[];
           CREATE TABLE nested (id int PRIMARY KEY, l intlist[], v int2vector, o oidvector,
                                vs int2vector[], os oidvector[], dl intlist, note text);
           ALTER TABLE nested ALTER COLUMN l SET STORAGE EXTERNAL;
           CREATE TABLE nested_full (l intlist[], vs int2vector[]);
           ALTER TABLE nested_full REPLICA IDENTITY FULL;
           CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES;
           -- Copied by the first run.
           INSERT INTO nested VALUES
             (1, '{{"{{1,2}}","{{}}",NULL}}', '3 1', '23 25', '{{"1 2","",NULL,7}}', '{{23,"",NULL}}',
              '{{1,NULL}}', 'copied'),
             (2, '[0:1][1:2]={{{{"{{1}}","[0:1]={{2,3}}"}},{{NULL,"{{{{4}},{{5}}}}"}}}}', '', '', '{{}}', '{{}}',
              '{{}}', 'copied');
           INSERT INTO nested_full VALUES ('{{"{{1}}",NULL}}', '{{"1 2",""}}');"#
    ));
    for t in [&fig, &pgo] {
        t.catch_up(&url, RUN_TIMEOUT);
    }
    pg.psql(&format!(
        r#"INSERT INTO nested VALUES
             (3, NULL, NULL, NULL, '[-1:0]={{"",""}}', ARRAY[NULL]::oidvector[], NULL, 'streamed'),
             (4, '{{}}', '-32768 32767', '0 4294967295', ARRAY['1 2 3'::int2vector], '{{"1 2"}}',
              '[2:2]={{9}}', 'streamed'),
             (5, {big}, '1', '1', '{{}}', '{{}}', '{{}}', 'big');
           UPDATE nested SET v = '', vs = '{{"",NULL}}', l = '{{"{{}}"}}' WHERE id = 1;
           UPDATE nested SET id = 20, o = '1' WHERE id = 2;
           UPDATE nested SET note = 'l is unchanged TOAST', v = '' WHERE id = 5;
           DELETE FROM nested WHERE id = 3;
           INSERT INTO nested_full VALUES ('{{}}', '{{}}'), ('{{{{"{{1}}","{{2}}"}},{{"{{3}}",NULL}}}}', NULL);
           UPDATE nested_full SET vs = '{{"5"}}' WHERE l = '{{"{{1}}",NULL}}';
           DELETE FROM nested_full WHERE l = '{{}}';"#
    ));
    for t in [&fig, &pgo] {
        t.catch_up(&url, RUN_TIMEOUT);
    }
    let mut c = pg.connect();
    for t in [&fig, &pgo] {
        assert_mirrors_match(&mut c, &t.sink, &["public.nested", "public.nested_full"]);
        assert!(
            fig_tests::receiver::table_states(&t.sink).is_empty(),
            "{}: tables not in sync: {:?}",
            t.plugin,
            fig_tests::receiver::table_states(&t.sink)
        );
    }
    let (a, b) = (fig.open().history(), pgo.open().history());
    assert!(
        a.iter().any(|h| h.op == "update"
            && h.after
                .as_deref()
                .is_some_and(|j| j.contains("unchanged TOAST"))),
        "the workload's unchanged TOAST update is in the history"
    );
    assert_eq!(a.len(), b.len(), "history lengths");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "the histories differ");
    }
}

fn clip(s: Option<&str>) -> String {
    match s {
        None => "NULL".into(),
        Some(s) if s.len() > 300 => format!("{}… ({} bytes)", &s[..300], s.len()),
        Some(s) => s.to_owned(),
    }
}

#[test]
fn aborted_transactions_and_rolled_back_savepoints_leave_no_trace() {
    let pg = server();
    let dir = tempfile::tempdir().unwrap();
    let fig = Target::new("figoutput", dir.path(), None);
    let pgo = Target::new("pgoutput", dir.path(), Some(PUBLICATION));
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
         CREATE TABLE u (id int PRIMARY KEY, note text NOT NULL);
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    let url = pg.url("postgres");
    for t in [&fig, &pgo] {
        t.catch_up(&url, RUN_TIMEOUT);
    }
    // Both receivers stream live while the transactions happen, so the large ones arrive in
    // stream blocks (pgoutput) before their abort or commit is known.
    let mut running: Vec<_> = [&fig, &pgo]
        .iter()
        .map(|t| t.receiver(&url).spawn())
        .collect();

    // psql sends one statement at a time, as an application would (a multi-statement simple query
    // would put the first INSERT into the transaction its BEGIN opens).
    pg.psql(
        "INSERT INTO t VALUES (1, 'kept');
         BEGIN;
         INSERT INTO t VALUES (2, 'ghost aborted');
         UPDATE t SET v = 'ghost update' WHERE id = 1;
         INSERT INTO u VALUES (1, 'ghost');
         ROLLBACK;
         BEGIN;
         INSERT INTO t VALUES (3, 'kept before the savepoint');
         SAVEPOINT s;
         INSERT INTO t VALUES (4, 'ghost in a savepoint');
         UPDATE t SET v = 'ghost savepoint update' WHERE id = 1;
         DELETE FROM t WHERE id = 3;
         ROLLBACK TO SAVEPOINT s;
         INSERT INTO t VALUES (5, 'kept after the savepoint');
         COMMIT;
         BEGIN;
         SAVEPOINT a;
         INSERT INTO t VALUES (6, 'ghost released then aborted');
         RELEASE SAVEPOINT a;
         ROLLBACK;
         -- Larger than logical_decoding_work_mem: streamed or spilled, then aborted.
         BEGIN;
         INSERT INTO u SELECT g, 'ghost big ' || repeat('x', 200) FROM generate_series(10, 3000) g;
         ROLLBACK;
         -- Large and committed, with a rolled-back subtransaction inside.
         BEGIN;
         INSERT INTO u SELECT g, 'kept big' FROM generate_series(10, 1010) g;
         SAVEPOINT s;
         INSERT INTO u SELECT g, 'ghost big savepoint' FROM generate_series(2000, 3000) g;
         DELETE FROM u WHERE id < 500;
         UPDATE t SET v = 'ghost big update' WHERE id = 1;
         ROLLBACK TO SAVEPOINT s;
         COMMIT;",
    );
    let mut c = pg.connect();
    // A statement that fails half-way rolls back what it did.
    let e = c
        .batch_execute("INSERT INTO t VALUES (7, 'ghost failed statement'), (1, 'duplicate')")
        .expect_err("a duplicate key must fail");
    assert_eq!(e.code(), Some(&postgres::error::SqlState::UNIQUE_VIOLATION));
    // A transaction that fails at COMMIT (a deferred constraint) is aborted too.
    c.batch_execute(
        "CREATE TABLE d (id int PRIMARY KEY, parent int REFERENCES d DEFERRABLE INITIALLY DEFERRED);
         INSERT INTO d VALUES (1, NULL);",
    )
    .unwrap();
    let e = c
        .batch_execute("BEGIN; INSERT INTO d VALUES (2, 99); INSERT INTO t VALUES (8, 'ghost deferred'); COMMIT;")
        .expect_err("the deferred foreign key must fail at COMMIT");
    assert_eq!(
        e.code(),
        Some(&postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
    );

    let flush = fig_tests::receiver::current_flush_lsn(&mut c);
    for (t, r) in [&fig, &pgo].iter().zip(&mut running) {
        fig_tests::receiver::wait_for_checkpoint(&t.sink, flush, RUN_TIMEOUT, || r.stderr_so_far());
        r.terminate(Duration::from_secs(30)).assert_success();
    }
    drop(running);
    // The large transactions really reached pgoutput's receiver in stream blocks (a walsender's
    // statistics are flushed when it exits, shortly after its receiver).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let streamed: i64 = c
            .query_one(
                "SELECT coalesce(sum(stream_txns), 0)::bigint FROM pg_stat_replication_slots WHERE slot_name = $1",
                &[&pgo.slot],
            )
            .unwrap()
            .get(0);
        if streamed >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pgoutput streamed {streamed} transactions, expected the two large ones"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    for t in [&fig, &pgo] {
        // A run to the end after the live one: nothing more to add.
        t.catch_up(&url, RUN_TIMEOUT);
        assert_mirrors_match(&mut c, &t.sink, &["public.t", "public.u", "public.d"]);
        let history = t.open().history();
        let ghosts: Vec<_> = history
            .iter()
            .filter(|h| {
                h.after.as_deref().unwrap_or("").contains("ghost")
                    || h.before.as_deref().unwrap_or("").contains("ghost")
            })
            .collect();
        assert!(
            ghosts.is_empty(),
            "{}: the history holds changes of aborted work: {:?}",
            t.plugin,
            &ghosts[..ghosts.len().min(3)]
        );
        let t_rows: Vec<_> = history
            .iter()
            .filter(|h| h.table == "t")
            .map(|h| (h.op.as_str(), h.after.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            t_rows,
            vec![
                ("insert", r#"{"id":1,"v":"kept"}"#),
                ("insert", r#"{"id":3,"v":"kept before the savepoint"}"#),
                ("insert", r#"{"id":5,"v":"kept after the savepoint"}"#),
            ],
            "{}: history of t",
            t.plugin
        );
        let u_ops: BTreeMap<&str, usize> =
            history
                .iter()
                .filter(|h| h.table == "u")
                .fold(BTreeMap::new(), |mut m, h| {
                    *m.entry(h.op.as_str()).or_insert(0) += 1;
                    m
                });
        assert_eq!(
            u_ops,
            BTreeMap::from([("insert", 1001)]),
            "{}: history of u",
            t.plugin
        );
        let d_rows = history.iter().filter(|h| h.table == "d").count();
        assert_eq!(d_rows, 1, "{}: history of d", t.plugin);
    }
}

// ---- bad input ----------------------------------------------------------------------------------

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

const BAD_INPUT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn an_unreachable_server_ends_the_run_with_an_error_and_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("s.sqlite");
    let port = closed_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let done = Receiver::run(&url, &sink)
        .endpos("now")
        .output(BAD_INPUT_TIMEOUT);
    done.assert_failure();
    let msg = done.stderr.to_lowercase();
    assert!(
        msg.contains(&port.to_string()) && (msg.contains("refused") || msg.contains("connect")),
        "the message should name the address and say the connection failed:\n{}",
        done.stderr
    );
    assert!(
        !sink.exists() || SinkFile::open(&sink).checkpoint_lsn().is_none(),
        "a sink with a checkpoint was left behind"
    );
}

/// A server requiring SCRAM for everyone but the harness's superuser, and a role `fig` with
/// REPLICATION and the password `right-password`.
fn scram_server() -> PgServer {
    let pg = server();
    pg.psql(
        "ALTER SYSTEM SET password_encryption = 'scram-sha-256';
         SELECT pg_reload_conf();
         SET password_encryption = 'scram-sha-256';
         CREATE ROLE fig LOGIN REPLICATION PASSWORD 'right-password';
         CREATE TABLE t (id int PRIMARY KEY);
         GRANT SELECT ON t TO fig; -- the initial copy reads it (sql/03_role.sql grants this)
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    pg.write_pg_hba(
        "local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    );
    // reload() returns before the server has applied it: wait until a wrong password is refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    let wrong = format!(
        "host=127.0.0.1 port={} user=fig password=nope dbname=postgres",
        pg.port()
    );
    while postgres::Client::connect(&wrong, postgres::NoTls).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the server still lets a wrong password in after reloading pg_hba.conf"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pg
}

/// Runs the receiver with a wrong password (with `--endpos` if given): it must end non-zero with a
/// message about the password, without printing it, and leave no checkpoint.
fn assert_wrong_password_fails(endpos: Option<&str>) {
    let pg = scram_server();
    let dir = tempfile::tempdir().unwrap();
    let url = |pw: &str| {
        format!(
            "postgres://fig:{pw}@127.0.0.1:{}/postgres?sslmode=disable",
            pg.port()
        )
    };
    let sink = dir.path().join("s.sqlite");

    // The right password works (so the failure below is the password's).
    Receiver::run(&url("right-password"), &dir.path().join("ok.sqlite"))
        .plugin("pgoutput")
        .publication(PUBLICATION)
        .endpos("now")
        .output(BAD_INPUT_TIMEOUT)
        .assert_success();

    let mut r = Receiver::run(&url("wrong-secret-42"), &sink)
        .plugin("pgoutput")
        .publication(PUBLICATION)
        .slot("fig_wrong");
    if let Some(e) = endpos {
        r = r.endpos(e);
    }
    let done = r.output(BAD_INPUT_TIMEOUT);
    done.assert_failure();
    let msg = done.stderr.to_lowercase();
    assert!(
        msg.contains("password") || msg.contains("authentication"),
        "the message should say the password or authentication failed:\n{}",
        done.stderr
    );
    assert!(
        !done.stderr.contains("wrong-secret-42"),
        "the password was printed:\n{}",
        done.stderr
    );
    assert!(
        !sink.exists() || SinkFile::open(&sink).checkpoint_lsn().is_none(),
        "a sink with a checkpoint was left behind"
    );
}

#[test]
fn a_wrong_password_ends_a_run_to_endpos_with_an_authentication_error() {
    assert_wrong_password_fails(Some("now"));
}

#[test]
fn a_wrong_password_ends_the_daemon_run_with_an_authentication_error() {
    assert_wrong_password_fails(None);
}

#[test]
fn a_missing_publication_with_pgoutput_ends_the_run_naming_it() {
    let pg = server();
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    for endpos in [Some("now"), None] {
        let sink = dir.path().join("s.sqlite");
        let mut r = Receiver::run(&pg.url("postgres"), &sink)
            .plugin("pgoutput")
            .publication("no_such_pub");
        if let Some(e) = endpos {
            r = r.endpos(e);
        }
        let done = r.output(BAD_INPUT_TIMEOUT);
        done.assert_failure();
        assert!(
            done.stderr.contains("no_such_pub"),
            "(endpos {endpos:?}) the message should name the publication:\n{}",
            done.stderr
        );
        assert!(
            !sink.exists() || SinkFile::open(&sink).checkpoint_lsn().is_none(),
            "a sink with a checkpoint was left behind"
        );
    }
    let slots = pg.psql("SELECT count(*) FROM pg_replication_slots");
    assert_eq!(
        slots.trim(),
        "0",
        "a slot was created for a run that failed"
    );
}

#[test]
fn a_bad_sink_value_ends_the_run_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        closed_port()
    );
    let bad = dir.path().join("plain-path.sqlite");
    for sink in [
        "kafka:topic".to_owned(),
        "sqlite:".to_owned(),
        bad.display().to_string(),
    ] {
        let done = Receiver::new(["run", "--source", &url, "--sink", &sink, "--endpos", "now"])
            .output(BAD_INPUT_TIMEOUT);
        done.assert_failure();
        assert!(
            done.stderr.contains("sink.url") && done.stderr.contains(&sink),
            "--sink {sink:?}: the message should name the key `sink.url` and the value:\n{}",
            done.stderr
        );
    }
    assert!(!bad.exists(), "a file was created for a refused sink value");
}

/// `columns` JSON of `_fig_schema` without its `"attnum":N` members (pgoutput sends none).
fn without_attnums(columns: &str) -> String {
    let mut out = String::with_capacity(columns.len());
    let mut rest = columns;
    while let Some(i) = rest.find(",\"attnum\":") {
        out.push_str(&rest[..i]);
        rest = rest[i + ",\"attnum\":".len()..]
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == '-');
    }
    out.push_str(rest);
    out
}

/// Slot names are server-wide: a slot of the same name made for another database is named, with its
/// database and the fix, by `check` and by `run` (which used to say the slot did not exist, then
/// fail on the server's raw "already exists"). Found by a stranger.
#[test]
fn a_slot_of_another_database_is_named_by_check_and_run() {
    let pg = server();
    pg.psql("CREATE DATABASE other");
    pg.psql("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION fig_pub FOR ALL TABLES;");
    let mut other = pg.connect_to("other");
    other
        .batch_execute("SELECT pg_create_logical_replication_slot('taken', 'pgoutput')")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("s.sqlite");
    let url = pg.url("postgres");
    for command in ["check", "run"] {
        let mut r = Receiver::new([command, "--source", &url, "--sink"])
            .arg(format!("sqlite:{}", sink.display()))
            .slot("taken")
            .plugin("pgoutput")
            .publication("fig_pub");
        if command == "run" {
            r = r.endpos("now");
        }
        let done = r.output(BAD_INPUT_TIMEOUT);
        done.assert_failure();
        assert!(
            done.stderr.contains("\"taken\"") && done.stderr.contains("database other"),
            "{command}: the message should name the slot and its database:\n{}",
            done.stderr
        );
    }
    assert!(!sink.exists(), "nothing was written");
}
