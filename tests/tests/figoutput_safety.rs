//! Inside PostgreSQL a plugin bug must become an ERROR, never a crash (DESIGN.md rule 6), bad data
//! must be refused rather than guessed at, and a huge transaction must decode in flat memory. Each
//! test checks the server afterwards: same postmaster, other connections fine, no crash in the log.

use fig_format::decode::{decode_all, Record};
use fig_tests::figoutput::{server_with_slot, server_with_slot_using, Decoded};
use fig_tests::PgServer;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the ERROR of the `fail_after_changes` failpoint says (figoutput built with the cargo feature
/// `failpoints`, as `.ci/setup` installs it; a production build refuses the option).
const FAILPOINT_FIRED: &str = "fail_after_changes reached after";

/// Fragments of a Rust backtrace or of Rust paths, which no ERROR from figoutput may carry: the
/// harness starts servers with RUST_BACKTRACE=1, with which pgrx would put a backtrace into the
/// DETAIL (sent to the client and logged) unless the plugin turns capturing off.
const RUST_INTERNALS: &[&str] = &[
    "stack backtrace",
    "rust_begin_unwind",
    "std::",
    "core::",
    "pgrx::",
    "figoutput::",
    "LocalKey",
];

fn assert_no_rust_internals(what: &str, text: &str) {
    let found: Vec<&&str> = RUST_INTERNALS
        .iter()
        .filter(|f| text.contains(**f))
        .collect();
    assert!(
        found.is_empty(),
        "{what} carries Rust internals {found:?}:\n{text}"
    );
}

/// The server is the one it was, answers a new connection, and has logged no crash.
fn assert_server_unaffected(pg: &PgServer, postmaster_before: Option<u32>) {
    assert!(postmaster_before.is_some());
    assert_eq!(
        pg.postmaster_pid(),
        postmaster_before,
        "the postmaster changed"
    );
    let one: i32 = pg.connect().query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    let log = pg.log_contents();
    let crash_lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("terminated by signal")
                || l.contains("PANIC")
                || l.contains("server process")
        })
        .collect();
    assert!(
        crash_lines.is_empty(),
        "crash in the server log:\n{}",
        crash_lines.join("\n")
    );
}

fn slot_active(c: &mut Client, slot: &str) -> Option<bool> {
    c.query_opt(
        "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .unwrap()
    .map(|r| r.get(0))
}

/// Table t with two rows inserted after the slot was drained; returns the ids the server has.
fn two_inserted_rows(c: &mut Client) -> Vec<i32> {
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    Decoded::get(c, "s", &[]);
    c.batch_execute("INSERT INTO t VALUES (1), (2)").unwrap();
    c.query("SELECT id FROM t ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn decoded_ids(d: &Decoded) -> Vec<i32> {
    d.rows()
        .into_iter()
        .map(|r| match r.new.unwrap()[0] {
            fig_format::decode::Value::Int(i) => i32::try_from(i).unwrap(),
            ref other => panic!("id is {other:?}"),
        })
        .collect()
}

#[test]
fn an_error_inside_a_callback_fails_the_sql_call_and_leaves_the_server_and_slot_intact() {
    let (pg, mut c) = server_with_slot("s");
    let ids = two_inserted_rows(&mut c);
    let postmaster = pg.postmaster_pid();

    let e = Decoded::try_get(&mut c, "s", &[("fail_after_changes", "1")])
        .err()
        .expect("decoding with fail_after_changes=1 succeeded");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!(db.severity(), "ERROR");
    // The failpoint fired (an ERROR from inside the change callback), not the option refusal of a
    // build without the `failpoints` feature, which names the option too.
    assert!(
        db.message().contains(FAILPOINT_FIRED),
        "{} (the installed figoutput must be built with --features failpoints, as .ci/setup does)",
        db.message()
    );
    // A panic inside a callback, yet the client gets the message and nothing of Rust's insides.
    assert_no_rust_internals("the ERROR's message", db.message());
    assert_no_rust_internals("the ERROR's DETAIL", db.detail().unwrap_or_default());
    assert_no_rust_internals("the ERROR's HINT", db.hint().unwrap_or_default());

    assert_server_unaffected(&pg, postmaster);
    assert_eq!(slot_active(&mut c, "s"), Some(false));
    // The failed call consumed nothing: the same connection decodes every change.
    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(decoded_ids(&d), ids);
    assert!(
        pg.log_contents().contains(FAILPOINT_FIRED),
        "the ERROR is in the log"
    );
    assert_no_rust_internals("the server log", &pg.log_contents());
}

#[test]
fn an_error_inside_a_callback_ends_the_walsender_stream_and_leaves_the_server_and_slot_intact() {
    let (pg, mut c) = server_with_slot("s");
    let ids = two_inserted_rows(&mut c);
    let postmaster = pg.postmaster_pid();

    let mut cmd = Command::new(pg.bin_dir().join("pg_recvlogical"));
    cmd.args(["-d", &pg.url("postgres"), "--slot", "s", "--start"])
        .args(["-o", "fail_after_changes=1", "-f", "-", "--no-loop"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = std::env::var_os(fig_tests::LD_LIBRARY_PATH_ENV) {
        cmd.env("LD_LIBRARY_PATH", dir);
    }
    let mut child = cmd.spawn().expect("running pg_recvlogical");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pg_recvlogical still streams after 60 s: the ERROR did not end the stream");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "pg_recvlogical exited with {status}");
    assert!(stderr.contains(FAILPOINT_FIRED), "{stderr}");
    assert_no_rust_internals("pg_recvlogical's stderr", &stderr);

    assert_server_unaffected(&pg, postmaster);
    // The walsender released the slot (it may take a moment to exit).
    let deadline = Instant::now() + Duration::from_secs(10);
    while slot_active(&mut c, "s") != Some(false) {
        assert!(Instant::now() < deadline, "slot s still active");
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(decoded_ids(&d), ids);
}

#[test]
fn invalid_utf8_text_in_a_sql_ascii_database_is_an_error_naming_the_table() {
    let pg = PgServer::start();
    let postmaster = pg.postmaster_pid();
    pg.connect()
        .batch_execute(
            "CREATE DATABASE a TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'",
        )
        .unwrap();
    let mut c = pg.connect_to("a");
    c.batch_execute("CREATE EXTENSION figoutput; CREATE TABLE bad (id int PRIMARY KEY, t text)")
        .unwrap();
    c.batch_execute("SELECT pg_create_logical_replication_slot('s', 'figoutput')")
        .unwrap();
    c.batch_execute("INSERT INTO bad VALUES (1, E'\\xff')")
        .unwrap();
    let stored: Vec<u8> = c
        .query_one("SELECT convert_to(t, 'SQL_ASCII') FROM bad", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        stored,
        [0xff],
        "the test's own premise: the byte is stored as is"
    );

    let e = Decoded::try_get(&mut c, "s", &[])
        .err()
        .expect("a text value that is not UTF-8 was decoded");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!(db.severity(), "ERROR");
    assert!(db.message().contains("\"bad\""), "{}", db.message());
    assert!(db.message().contains("not valid UTF-8"), "{}", db.message());
    assert_server_unaffected(&pg, postmaster);
}

/// One transaction inserting `rows` rows into a 7-column ledger, decoded (`streaming` off) in a
/// fresh backend. Returns the backend's peak resident memory (VmHWM, kB) after decoding and the
/// number of INSERT records decoded, which must equal the rows in the table.
///
/// `logical_decoding_work_mem` is 1 MB on both servers compared, so PostgreSQL's own reorder buffer
/// spills to disk at the same size whatever the transaction's size (at its 64 MB default it would
/// hold all of a 100,000-row transaction but only 64 MB of a 1,000,000-row one, and that difference
/// alone is larger than the bound tested). What grows with the rows then is only ours.
fn decode_ledger_transaction(rows: i64) -> (u64, i64) {
    let (pg, mut c) = server_with_slot_using(
        PgServer::builder().setting("logical_decoding_work_mem", "1MB"),
        "s",
    );
    c.batch_execute(
        "CREATE TABLE ledger (id bigserial PRIMARY KEY, account int NOT NULL,
                              amount numeric(18,2) NOT NULL, currency char(3) NOT NULL,
                              memo text, booked_at timestamptz NOT NULL, reference text)",
    )
    .unwrap();
    Decoded::get(&mut c, "s", &[]);
    c.execute(
        "INSERT INTO ledger (account, amount, currency, memo, booked_at, reference)
         SELECT i % 1000, i * 1.01, 'EUR', 'payment ' || i,
                timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', md5(i::text)
         FROM generate_series(1, $1::int8) i",
        &[&rows],
    )
    .unwrap();
    let in_table: i64 = c
        .query_one("SELECT count(*) FROM ledger", &[])
        .unwrap()
        .get(0);
    assert_eq!(in_table, rows);

    let mut fresh = pg.connect();
    let pid: i32 = fresh
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let mut inserts = 0i64;
    let (mut begins, mut commits) = (0, 0);
    let params: [&str; 0] = [];
    let mut writes = fresh
        .query_raw(
            "SELECT data FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL, 'streaming', 'false')",
            params,
        )
        .unwrap();
    while let Some(row) = writes.next().unwrap() {
        let bytes: &[u8] = row.get(0);
        for record in decode_all(bytes).unwrap() {
            match record {
                Record::Insert { .. } => inserts += 1,
                Record::Begin { .. } => begins += 1,
                Record::Commit { .. } => commits += 1,
                _ => {}
            }
        }
    }
    assert_eq!((begins, commits), (1, 1));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"));
    (hwm_kb, inserts)
}

#[test]
fn a_million_row_transaction_decodes_in_the_memory_of_a_hundred_thousand_row_one() {
    let (small_peak_kb, small_inserts) = decode_ledger_transaction(100_000);
    let (large_peak_kb, large_inserts) = decode_ledger_transaction(1_000_000);
    assert_eq!((small_inserts, large_inserts), (100_000, 1_000_000));
    // 900,000 more rows: a leak of 40 bytes a row would add 34 MiB.
    let bound_kb = 32 * 1024;
    assert!(
        large_peak_kb <= small_peak_kb + bound_kb,
        "backend peak {large_peak_kb} kB for 1,000,000 rows vs {small_peak_kb} kB for 100,000"
    );
}
