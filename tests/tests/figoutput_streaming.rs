//! Streaming of large in-progress transactions: with `logical_decoding_work_mem = 64kB` PostgreSQL
//! hands figoutput a transaction in blocks while it is still running (STREAM_START … STREAM_STOP),
//! and settles it later with STREAM_COMMIT or STREAM_ABORT. A receiver must end up with exactly the
//! committed rows: [`committed_ids`] applies a stream the way a receiver has to, and every test
//! compares its result with what the server says is in the table.

use fig_format::decode::{FormatError, Record, Relation, Value};
use fig_tests::figoutput::{server_with_slot_using, Decoded};
use fig_tests::PgServer;
use postgres::{Client, GenericClient};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// 5,000 rows of ~100 bytes: several times the 64 kB PostgreSQL may hold before it streams.
const LARGE_INSERT: &str =
    "INSERT INTO big SELECT i, repeat('x', 100) FROM generate_series($1::int, $2::int) i";

/// A server that streams anything above 64 kB, with table `big` and figoutput slots, drained of the
/// table's creation.
fn streaming_server(slots: &[&str]) -> (PgServer, Client) {
    let (pg, mut c) = server_with_slot_using(
        PgServer::builder().setting("logical_decoding_work_mem", "64kB"),
        slots[0],
    );
    for slot in &slots[1..] {
        c.execute(
            "SELECT pg_create_logical_replication_slot($1, 'figoutput')",
            &[slot],
        )
        .unwrap();
    }
    c.batch_execute("CREATE TABLE big (id int PRIMARY KEY, pad text)")
        .unwrap();
    for slot in slots {
        Decoded::get(&mut c, slot, &[]);
    }
    (pg, c)
}

fn insert_range(c: &mut impl GenericClient, from: i32, to: i32) {
    c.execute(LARGE_INSERT, &[&from, &to]).unwrap();
}

/// The top-level xid of the transaction `c` is in.
fn current_xid(c: &mut impl GenericClient) -> u32 {
    let full: i64 = c
        .query_one("SELECT pg_current_xact_id()::text::int8", &[])
        .unwrap()
        .get(0);
    u32::try_from(full & 0xffff_ffff).unwrap()
}

fn table_ids(c: &mut Client) -> Vec<i64> {
    c.query("SELECT id FROM big ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| i64::from(r.get::<_, i32>(0)))
        .collect()
}

fn wal_lsn(c: &mut Client) -> u64 {
    let lsn: i64 = c
        .query_one("SELECT (pg_current_wal_lsn() - '0/0')::int8", &[])
        .unwrap()
        .get(0);
    lsn as u64
}

/// An INSERT's id and the xid it carries (set inside stream blocks only).
fn inserts(d: &Decoded) -> Vec<(i64, Option<u32>)> {
    let mut rels: HashMap<u32, Relation<'static>> = HashMap::new();
    let mut out = Vec::new();
    for r in &d.records {
        match r {
            Record::Relation(rel) => {
                rels.insert(rel.relid, rel.clone());
            }
            Record::Insert { relid, new, xid } => {
                let values = rels[relid].values(new.clone()).unwrap();
                let Value::Int(id) = values[0] else {
                    panic!("id is {:?}", values[0])
                };
                out.push((id, *xid));
            }
            _ => {}
        }
    }
    out
}

/// The ids a receiver ends up committing: inserts between BEGIN and COMMIT at once; streamed inserts
/// held per top-level transaction (with the subtransaction xid they carry) until STREAM_COMMIT, and
/// dropped by STREAM_ABORT, all of the transaction's when `subxid == xid`, else that
/// subtransaction's. Also checks the framing: stream blocks do not nest, and changes carry an xid
/// exactly when they are inside one.
fn committed_ids(d: &Decoded) -> Vec<i64> {
    let ids = inserts(d);
    let mut next_insert = ids.iter();
    let mut committed = Vec::new();
    let mut in_txn: Option<Vec<i64>> = None;
    let mut block: Option<u32> = None;
    let mut streamed: HashMap<u32, Vec<(u32, i64)>> = HashMap::new();
    for r in &d.records {
        match r {
            Record::Begin { .. } => {
                assert!(in_txn.is_none() && block.is_none(), "BEGIN inside a unit");
                in_txn = Some(Vec::new());
            }
            Record::Commit { .. } => {
                committed.extend(in_txn.take().expect("COMMIT without BEGIN"));
            }
            Record::Insert { xid, .. } => {
                let (id, _) = next_insert.next().unwrap();
                match (xid, block, in_txn.as_mut()) {
                    (None, None, Some(rows)) => rows.push(*id),
                    (Some(sub), Some(top), None) => {
                        streamed.entry(top).or_default().push((*sub, *id))
                    }
                    other => panic!("INSERT out of place: {other:?}"),
                }
            }
            Record::StreamStart { xid, .. } => {
                assert!(in_txn.is_none() && block.is_none(), "nested STREAM_START");
                block = Some(*xid);
            }
            Record::StreamStop => {
                block.take().expect("STREAM_STOP outside a block");
            }
            Record::StreamAbort { xid, subxid } => {
                assert!(block.is_none(), "STREAM_ABORT inside a block");
                if xid == subxid {
                    streamed.remove(xid);
                } else if let Some(rows) = streamed.get_mut(xid) {
                    rows.retain(|(sub, _)| sub != subxid);
                }
            }
            Record::StreamCommit { xid, .. } => {
                assert!(block.is_none(), "STREAM_COMMIT inside a block");
                committed.extend(
                    streamed
                        .remove(xid)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(_, id)| id),
                );
            }
            _ => {}
        }
    }
    assert!(
        in_txn.is_none() && block.is_none(),
        "the stream ends inside a unit"
    );
    committed.sort_unstable();
    committed
}

fn stream_starts(d: &Decoded) -> Vec<(u32, bool)> {
    d.records
        .iter()
        .filter_map(|r| match r {
            Record::StreamStart { xid, first_segment } => Some((*xid, *first_segment)),
            _ => None,
        })
        .collect()
}

/// One committed transaction inserting ids 1..=5000 into `big`; returns its xid and the WAL
/// position before it.
fn large_committed_transaction(c: &mut Client) -> (u32, u64) {
    let wal_before = wal_lsn(c);
    let mut tx = c.transaction().unwrap();
    insert_range(&mut tx, 1, 5000);
    let xid = current_xid(&mut tx);
    tx.commit().unwrap();
    (xid, wal_before)
}

#[test]
fn a_large_committed_transaction_is_streamed_in_blocks_and_committed_once() {
    let (_pg, mut c) = streaming_server(&["s", "unstreamed"]);
    let (xid, wal_before) = large_committed_transaction(&mut c);
    let wal_after = wal_lsn(&mut c);

    let d = Decoded::get(&mut c, "s", &[]);
    let kinds = d.kinds();
    assert!(
        !kinds.contains(&"BEGIN") && !kinds.contains(&"COMMIT"),
        "{kinds:?}"
    );
    let starts = stream_starts(&d);
    assert!(starts.len() >= 2, "{} blocks", starts.len());
    assert_eq!(starts[0], (xid, true));
    assert!(starts[1..].iter().all(|s| *s == (xid, false)), "{starts:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "STREAM_STOP").count(),
        starts.len()
    );
    assert!(inserts(&d).iter().all(|(_, x)| *x == Some(xid)));

    let Some(&Record::StreamCommit {
        xid: commit_xid,
        commit_lsn,
        end_lsn,
        commit_time,
    }) = d.records.last()
    else {
        panic!("the stream does not end with STREAM_COMMIT: {kinds:?}")
    };
    assert_eq!(commit_xid, xid);
    assert!(wal_before < commit_lsn && commit_lsn < end_lsn && end_lsn <= wal_after);
    // The same transaction decoded without streaming has the same commit position and time.
    let plain = Decoded::get(&mut c, "unstreamed", &[("streaming", "false")]);
    let Some(&Record::Commit {
        commit_lsn: plain_commit_lsn,
        end_lsn: plain_end_lsn,
        commit_time: plain_time,
    }) = plain.records.last()
    else {
        panic!("{:?}", plain.kinds())
    };
    assert_eq!(
        (commit_lsn, end_lsn, commit_time),
        (plain_commit_lsn, plain_end_lsn, plain_time)
    );

    assert_eq!(committed_ids(&d), table_ids(&mut c));
    assert_eq!(inserts(&d).len(), 5000, "every row exactly once");
}

#[test]
fn with_streaming_false_a_large_transaction_comes_as_begin_and_commit() {
    let (_pg, mut c) = streaming_server(&["s"]);
    let (xid, _) = large_committed_transaction(&mut c);

    let d = Decoded::get(&mut c, "s", &[("streaming", "false")]);
    let kinds = d.kinds();
    assert_eq!(kinds.len(), 5003, "BEGIN, RELATION, 5,000 inserts, COMMIT");
    assert_eq!(kinds[..2], ["BEGIN", "RELATION"]);
    assert!(kinds[2..5002].iter().all(|k| *k == "INSERT"));
    assert_eq!(kinds[5002], "COMMIT");
    assert!(matches!(d.records[0], Record::Begin { xid: x, .. } if x == xid));
    assert!(inserts(&d).iter().all(|(_, x)| x.is_none()));
    let in_order: Vec<i64> = inserts(&d).into_iter().map(|(id, _)| id).collect();
    assert_eq!(in_order, table_ids(&mut c));
}

#[test]
fn a_large_transaction_streamed_while_running_then_rolled_back_ends_in_stream_abort() {
    // One walsender session sees the changes while the transaction runs, then its abort (the SQL
    // functions decode after the fact, when a rolled-back transaction's changes are no longer sent).
    let (pg, mut c) = streaming_server(&["s"]);
    let recv = RecvLogical::start(&pg, "s");
    let mut tx = c.transaction().unwrap();
    insert_range(&mut tx, 1, 5000);
    let xid = current_xid(&mut tx);
    recv.wait_for("changes streamed while the transaction runs", |d| {
        inserts(d).iter().any(|(_, x)| *x == Some(xid))
    });
    tx.rollback().unwrap();
    c.batch_execute("INSERT INTO big VALUES (9999, 'kept')")
        .unwrap();
    let d = recv.wait_for("the next transaction's COMMIT", |d| {
        d.kinds().contains(&"COMMIT")
    });

    assert_eq!(stream_starts(&d).first(), Some(&(xid, true)));
    assert!(inserts(&d)
        .iter()
        .all(|(id, x)| *x == Some(xid) || (*id == 9999 && x.is_none())));
    let ends: Vec<&Record<'_>> = d
        .records
        .iter()
        .filter(|r| matches!(r, Record::StreamAbort { .. } | Record::StreamCommit { .. }))
        .collect();
    assert_eq!(ends, [&Record::StreamAbort { xid, subxid: xid }]);
    assert_eq!(committed_ids(&d), table_ids(&mut c));
    assert_eq!(table_ids(&mut c), [9999], "the test's own premise");
}

#[test]
fn a_large_transaction_rolled_back_before_decoding_ends_in_stream_abort_and_commits_nothing() {
    let (_pg, mut c) = streaming_server(&["s"]);
    let mut tx = c.transaction().unwrap();
    insert_range(&mut tx, 1, 5000);
    let xid = current_xid(&mut tx);
    tx.rollback().unwrap();
    c.batch_execute("INSERT INTO big VALUES (9999, 'kept')")
        .unwrap();

    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(stream_starts(&d).first(), Some(&(xid, true)));
    let ends: Vec<&Record<'_>> = d
        .records
        .iter()
        .filter(|r| matches!(r, Record::StreamAbort { .. } | Record::StreamCommit { .. }))
        .collect();
    assert_eq!(ends, [&Record::StreamAbort { xid, subxid: xid }]);
    assert_eq!(committed_ids(&d), table_ids(&mut c));
    assert_eq!(table_ids(&mut c), [9999], "the test's own premise");
}

/// The real `pg_recvlogical` streaming a slot to our pipe, killed on drop.
struct RecvLogical {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl RecvLogical {
    fn start(pg: &PgServer, slot: &str) -> RecvLogical {
        let mut cmd = std::process::Command::new(pg.bin_dir().join("pg_recvlogical"));
        cmd.args([
            "-d",
            &pg.url("postgres"),
            "--slot",
            slot,
            "--start",
            "--no-loop",
        ])
        .args(["-f", "-", "-s", "1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
        if let Some(dir) = std::env::var_os(fig_tests::LD_LIBRARY_PATH_ENV) {
            cmd.env("LD_LIBRARY_PATH", dir);
        }
        let mut child = cmd.spawn().expect("running pg_recvlogical");
        let mut stdout = child.stdout.take().unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        RecvLogical { child, out }
    }

    /// The records of every complete write received so far. pg_recvlogical ends each write with a
    /// newline; a record never starts with that byte, so the decoder stops exactly there.
    fn decoded(&self) -> Decoded {
        let out = self.out.lock().unwrap().clone();
        let mut rest: &[u8] = &out;
        let mut records = Vec::new();
        loop {
            match fig_format::decode::decode_all(rest) {
                Err(FormatError::UnexpectedMarker {
                    offset,
                    marker: b'\n',
                    ..
                }) => {
                    let write: &'static [u8] =
                        Box::leak(rest[..offset].to_vec().into_boxed_slice());
                    records.extend(fig_format::decode::decode_all(write).unwrap());
                    rest = &rest[offset + 1..];
                }
                // Nothing more, or a write still arriving.
                Ok(_) | Err(FormatError::Truncated { .. }) => break,
                Err(e) => panic!("pg_recvlogical wrote what figoutput did not: {e}"),
            }
        }
        Decoded { records }
    }

    /// Waits (up to 60 s) until the records received satisfy `done`, and returns them.
    fn wait_for(&self, what: &str, done: impl Fn(&Decoded) -> bool) -> Decoded {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.decoded();
            if done(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "pg_recvlogical: no {what} within 60 s; received {:?}",
                d.kinds()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RecvLogical {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_rolled_back_subtransaction_of_a_streamed_transaction_is_aborted_by_its_own_xid() {
    let (_pg, mut c) = streaming_server(&["s"]);
    c.batch_execute("BEGIN").unwrap();
    insert_range(&mut c, 1, 10);
    c.batch_execute("SAVEPOINT a").unwrap();
    insert_range(&mut c, 1001, 6000);
    // Rows carry their (sub)transaction's xid as xmin.
    let subxid: u32 = c
        .query_one("SELECT xmin::text::int8 FROM big WHERE id = 1001", &[])
        .unwrap()
        .get::<_, i64>(0)
        .try_into()
        .unwrap();
    c.batch_execute("ROLLBACK TO SAVEPOINT a; RELEASE SAVEPOINT a")
        .unwrap();
    insert_range(&mut c, 11, 20);
    let xid = current_xid(&mut c);
    c.batch_execute("COMMIT").unwrap();
    assert_ne!(subxid, xid);

    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(stream_starts(&d).first(), Some(&(xid, true)));
    let ends: Vec<&Record<'_>> = d
        .records
        .iter()
        .filter(|r| matches!(r, Record::StreamAbort { .. } | Record::StreamCommit { .. }))
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert_eq!(ends[0], &Record::StreamAbort { xid, subxid });
    assert!(matches!(ends[1], Record::StreamCommit { xid: x, .. } if *x == xid));
    let ins = inserts(&d);
    let in_subxact: Vec<&(i64, Option<u32>)> = ins
        .iter()
        .filter(|(id, _)| (1001..=6000).contains(id))
        .collect();
    assert!(
        !in_subxact.is_empty(),
        "the subtransaction was not streamed"
    );
    assert!(in_subxact.iter().all(|(_, x)| *x == Some(subxid)));
    assert!(ins
        .iter()
        .filter(|(id, _)| *id <= 20)
        .all(|(_, x)| *x == Some(xid)));
    assert_eq!(committed_ids(&d), table_ids(&mut c));
    assert_eq!(table_ids(&mut c).len(), 20, "the test's own premise");
}
