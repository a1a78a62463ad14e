//! The workloads benchmarks share, so every command measures the same rows.

/// The ledger table of `../shared/ENVIRONMENT.md`'s baseline figures: bigserial id, int, numeric(18,2),
/// char(3), text memo, timestamptz, text status.
pub const LEDGER_DDL: &str = "CREATE TABLE ledger (
    id bigserial PRIMARY KEY,
    account int NOT NULL,
    amount numeric(18,2) NOT NULL,
    currency char(3) NOT NULL,
    memo text,
    booked_at timestamptz NOT NULL,
    status text NOT NULL)";

/// One transaction inserting `rows` ledger rows.
pub fn ledger_insert(rows: u64) -> String {
    format!(
        "INSERT INTO ledger (account, amount, currency, memo, booked_at, status)
         SELECT 1 + i % 5000,
                round((random() * 100000)::numeric, 2),
                (ARRAY['USD','EUR','GBP'])[1 + i % 3],
                'invoice payment ref ' || i,
                timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
                (ARRAY['posted','pending'])[1 + i % 2]
         FROM generate_series(1, {rows}) AS i"
    )
}

/// One statement inserting `rows` ledger rows and returning the highest id it inserted. With a
/// single writer, ids grow in commit order, so "the highest id seen downstream" marks progress.
pub fn ledger_insert_max_id(rows: u64) -> String {
    format!(
        "WITH ins AS ({} RETURNING id) SELECT max(id) FROM ins",
        ledger_insert(rows)
    )
}

/// A new ledger table of `rows` rows (ids 1 to `rows`), committed 1,000,000 rows at a time, then
/// vacuumed and analyzed: a copy then reads all-visible pages with hint bits set, not the first
/// reader's job of setting them.
pub fn fill_ledger(db: &mut postgres::Client, rows: u64) {
    db.batch_execute(LEDGER_DDL).expect("creating the ledger");
    let mut left = rows;
    while left > 0 {
        let n = left.min(1_000_000);
        db.batch_execute(&ledger_insert(n))
            .expect("filling the ledger");
        left -= n;
    }
    db.batch_execute("VACUUM ANALYZE ledger").expect("VACUUM");
}
