//! Large transactions through the whole receiver, against a real server: a 1,000,000-row transaction
//! lands in the SQLite sink whole (every row in the mirror, every change in the history, ordinals
//! 0..N-1 under one commit LSN) while the receiver's memory stays bounded, and an aborted large
//! transaction lands nothing.
//!
//! ```text
//! INSERT … generate_series(1, N) ──figoutput (streamed in blocks)──▶ assembler ──spill file──┐
//!                                                                                            ▼
//!        SQLite sink ◀── Sink::write_large(pieces, read one at a time) ◀── Converter ◀── Items::read
//! ```
//!
//! The receiver runs in this process (`fig_receiver::run::run`), so its memory is this process's:
//! the peak resident set (VmHWM) is reset before the run (`/proc/self/clear_refs`) and read after
//! it. A receiver that held the transaction's changes in a Vec would need several hundred MB for 1M
//! rows. `FIG_LARGE_TXN_ROWS` changes N (e.g. 10000000 for the full-size check; the bound stays
//! the same, since memory must not grow with the transaction).

use fig_receiver::config::{Config, Overrides};
use fig_receiver::run::{self, EndPos};
use fig_tests::PgServer;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// Peak memory growth allowed for the receiver streaming one large transaction.
const BOUND_MB: u64 = 150;

/// The tests measure this process's memory: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const LEDGER: &str = "CREATE TABLE ledger (
    id bigserial PRIMARY KEY,
    account int NOT NULL,
    amount numeric(18,2) NOT NULL,
    currency char(3) NOT NULL,
    memo text,
    booked_at timestamptz NOT NULL,
    reference text
)";

/// One statement, one transaction: `$1` rows.
const INSERT_ROWS: &str =
    "INSERT INTO ledger (account, amount, currency, memo, booked_at, reference)
    SELECT i % 1000, (i * 1.25)::numeric(18,2), 'EUR', 'payment ' || i,
           '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 second', md5(i::text)
    FROM generate_series(1, $1::bigint) i";

fn rows_wanted() -> i64 {
    std::env::var("FIG_LARGE_TXN_ROWS")
        .ok()
        .map(|v| v.parse().expect("FIG_LARGE_TXN_ROWS is a number"))
        .unwrap_or(1_000_000)
}

/// A server with figoutput and the ledger table, and a receiver config writing to `sink`; the first
/// run creates the slot, so everything after it is captured.
fn setup(work_mem: &str, sink: &Path) -> (PgServer, Config) {
    let pg = PgServer::builder()
        .setting("logical_decoding_work_mem", work_mem)
        .start();
    pg.psql("CREATE EXTENSION figoutput");
    pg.psql(LEDGER);
    let mut config = Config::load(
        None,
        &Overrides {
            source: Some(pg.url("postgres")),
            sink: Some(format!("sqlite:{}", sink.display())),
            ..Default::default()
        },
    )
    .unwrap();
    config.spill_dir = sink.parent().unwrap().to_path_buf();
    receive(&config);
    (pg, config)
}

/// `fig-receiver run --endpos now`, in this process.
fn receive(config: &Config) -> run::Summary {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    runtime
        .block_on(run::run(config, Some(EndPos::Now), stopped))
        .expect("the receiver run")
}

/// This process's resident set and its peak (VmRSS, VmHWM), in kB.
fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status:\n{status}"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident set to the current one (Linux 4.0+); false where that is not allowed,
/// and then the peak so far is the baseline.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_million_row_transaction_lands_whole_with_bounded_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = rows_wanted();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.sqlite");
    let (pg, config) = setup("64MB", &path);

    let started = Instant::now();
    let mut client = pg.connect();
    client.execute(INSERT_ROWS, &[&n]).unwrap();
    let inserted_in = started.elapsed();

    let (rss_before, hwm_before) = memory_kb();
    let baseline = if reset_peak() { rss_before } else { hwm_before };
    let started = Instant::now();
    let summary = receive(&config);
    let received_in = started.elapsed();
    let (_, hwm_after) = memory_kb();
    let growth_mb = hwm_after.saturating_sub(baseline) / 1024;
    eprintln!(
        "{n} rows: inserted in {inserted_in:?}, received in {received_in:?}; peak RSS {} MB, {growth_mb} MB above the {} MB before the run",
        hwm_after / 1024,
        baseline / 1024
    );

    assert_eq!(summary.rows, n as u64, "{summary:?}");
    assert_eq!(summary.transactions, 1, "{summary:?}");
    let db = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM \"public.ledger\""), n);
    let history: (i64, i64, i64, i64, i64) = db
        .query_row(
            "SELECT count(*), count(DISTINCT ordinal), min(ordinal), max(ordinal), count(DISTINCT commit_lsn)
             FROM _fig_changes WHERE schema = 'public' AND \"table\" = 'ledger'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        history,
        (n, n, 0, n - 1, 1),
        "(changes, distinct ordinals, min, max, commit LSNs)"
    );
    // Values as the source has them, at both ends of the transaction.
    for id in [1, n] {
        let source = pg.psql(&format!(
            "SELECT amount || '|' || currency || '|' || memo || '|' || reference FROM ledger WHERE id = {id}"
        ));
        let mirror: String = db
            .query_row(
                "SELECT amount || '|' || currency || '|' || memo || '|' || reference FROM \"public.ledger\" WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(mirror, source.trim(), "row {id}");
    }
    assert!(
        growth_mb < BOUND_MB,
        "the receiver's peak memory grew by {growth_mb} MB for a {n}-row transaction (bound {BOUND_MB} MB)"
    );
}

#[test]
fn an_aborted_large_transaction_lands_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.sqlite");
    // 1 MB: the server streams the transaction in blocks long before its ROLLBACK.
    let (pg, config) = setup("1MB", &path);

    let mut client = pg.connect();
    let mut txn = client.transaction().unwrap();
    txn.execute(INSERT_ROWS, &[&200_000i64]).unwrap();
    txn.rollback().unwrap();
    // A small committed transaction after it: the run must get past the abort to land this one.
    client
        .batch_execute(
            "INSERT INTO ledger (account, amount, currency, memo, booked_at, reference)
             VALUES (7, 1.50, 'USD', 'after the rollback', now(), 'marker')",
        )
        .unwrap();

    let summary = receive(&config);
    assert_eq!(summary.rows, 1, "{summary:?}");
    let db = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM \"public.ledger\" WHERE reference = 'marker'"
        ),
        1
    );
    assert_eq!(count(&db, "SELECT count(*) FROM \"public.ledger\""), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM _fig_changes"), 1);
    if pg.server_version_num() >= 140_000 {
        let streamed: i64 = pg
            .psql(&format!(
                "SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = '{}'",
                config.slot
            ))
            .trim()
            .parse()
            .unwrap();
        assert!(
            streamed >= 1,
            "the aborted transaction was streamed, not sent at its end"
        );
    }
}
