//! Every figoutput record kind and option, through a real slot. What a record carries is checked
//! against what the server itself says (xids from `pg_current_xact_id`, commit timestamps from
//! `pg_xact_commit_timestamp`, columns from `pg_attribute`, JSON parsed by the server), never against
//! numbers written down by hand.

use fig_format::decode::{Column, OldTuple, Raw, Record, Relation};
use fig_format::{OldKind, ReplicaIdentity};
use fig_tests::figoutput::{server_with_slot, server_with_slot_using, Decoded};
use fig_tests::{PgServer, HOST};
use postgres::{Client, GenericClient};
use std::collections::BTreeSet;

// ---- helpers ---------------------------------------------------------------------------------------

/// The top-level xid of the transaction `c` is in (assigning one if needed).
fn current_xid(c: &mut impl GenericClient) -> u32 {
    let full: i64 = c
        .query_one("SELECT pg_current_xact_id()::text::int8", &[])
        .unwrap()
        .get(0);
    u32::try_from(full & 0xffff_ffff).unwrap()
}

/// The server's current WAL insert position as a number.
fn wal_lsn(c: &mut impl GenericClient) -> u64 {
    let lsn: i64 = c
        .query_one("SELECT (pg_current_wal_lsn() - '0/0')::int8", &[])
        .unwrap()
        .get(0);
    lsn as u64
}

/// Waits (up to 10 s) until the server has flushed its WAL up to `lsn`.
fn wait_until_flushed(c: &mut Client, lsn: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let flushed: i64 = c
            .query_one("SELECT (pg_current_wal_flush_lsn() - '0/0')::int8", &[])
            .unwrap()
            .get(0);
        if flushed as u64 >= lsn {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "WAL not flushed up to {lsn} within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn relid(c: &mut Client, table: &str) -> u32 {
    c.query_one("SELECT $1::text::regclass::oid", &[&table])
        .unwrap()
        .get(0)
}

fn create_slot(c: &mut Client, slot: &str) {
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'figoutput')",
        &[&slot],
    )
    .unwrap();
}

/// The writes `pg_logical_slot_peek_binary_changes` returns, without consuming them.
fn peek_writes(c: &mut Client, slot: &str, options: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let mut sql =
        String::from("SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL");
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&slot];
    for (k, v) in options {
        sql.push_str(&format!(", ${}, ${}", params.len() + 1, params.len() + 2));
        params.push(k);
        params.push(v);
    }
    sql.push(')');
    c.query(&sql, &params)
        .unwrap_or_else(|e| panic!("peeking slot {slot} with {options:?}: {e}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn decode_writes(writes: Vec<Vec<u8>>) -> Decoded {
    let mut records = Vec::new();
    for w in writes {
        let leaked: &'static [u8] = Box::leak(w.into_boxed_slice());
        records.extend(fig_format::decode::decode_all(leaked).expect("figoutput wrote bad bytes"));
    }
    Decoded { records }
}

fn peek(c: &mut Client, slot: &str, options: &[(&str, &str)]) -> Decoded {
    decode_writes(peek_writes(c, slot, options))
}

/// The record at `i`, which the caller has checked the kind of.
fn record(d: &Decoded, i: usize) -> Record<'static> {
    d.records[i].clone()
}

fn updates_and_deletes(d: &Decoded) -> Vec<(&'static str, Option<OldTuple<'static>>)> {
    d.records
        .iter()
        .filter_map(|r| match r {
            Record::Update { old, .. } => Some(("update", old.clone())),
            Record::Delete { old, .. } => Some(("delete", old.clone())),
            _ => None,
        })
        .collect()
}

/// A column as the catalog describes it: (attnum, name, type oid, typmod, type name, NOT NULL, key).
type CatalogColumn = (i16, String, u32, i32, String, bool, bool);

/// The live columns of `table`, key meaning "in the index that `key_index_filter` selects"
/// (`indisprimary` or `indisreplident`).
fn catalog_columns(c: &mut Client, table: &str, key_index_filter: &str) -> Vec<CatalogColumn> {
    let sql = format!(
        "SELECT a.attnum, a.attname::text, a.atttypid, a.atttypmod, format_type(a.atttypid, a.atttypmod),
                a.attnotnull, coalesce(a.attnum = ANY (i.indkey::int2[]), false)
         FROM pg_attribute a
         LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.{key_index_filter}
         WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum"
    );
    c.query(&sql, &[&table])
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect()
}

fn relation_columns(rel: &Relation<'_>) -> Vec<CatalogColumn> {
    rel.columns
        .iter()
        .map(|col: &Column<'_>| {
            (
                col.attnum,
                col.name.to_owned(),
                col.type_oid,
                col.typmod,
                col.type_name.to_owned(),
                col.flags.not_null(),
                col.flags.key(),
            )
        })
        .collect()
}

/// A value as the wire carries it, from what the server returned for it.
fn raw_int(v: i32) -> Raw<'static> {
    Raw::Int(i64::from(v))
}

fn raw_str(s: String) -> Raw<'static> {
    Raw::Str(Box::leak(s.into_boxed_str()))
}

// ---- BEGIN / COMMIT -----------------------------------------------------------------------------

#[test]
fn begin_and_commit_pair_up_with_the_servers_xid_lsns_and_commit_timestamp() {
    let (_pg, mut c) = server_with_slot_using(
        PgServer::builder().setting("track_commit_timestamp", "on"),
        "s",
    );
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    Decoded::get(&mut c, "s", &[]);
    let wal_before = wal_lsn(&mut c);
    let mut tx = c.transaction().unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).unwrap();
    let xid = current_xid(&mut tx);
    tx.commit().unwrap();
    let wal_after = wal_lsn(&mut c);

    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(d.kinds(), ["BEGIN", "RELATION", "INSERT", "COMMIT"]);
    let Record::Begin {
        xid: begin_xid,
        final_lsn,
        commit_time: begin_time,
    } = record(&d, 0)
    else {
        unreachable!()
    };
    let Record::Commit {
        commit_lsn,
        end_lsn,
        commit_time,
    } = record(&d, 3)
    else {
        unreachable!()
    };
    assert_eq!(begin_xid, xid);
    assert_eq!(final_lsn, commit_lsn, "BEGIN.final_lsn is the commit LSN");
    assert!(commit_lsn < end_lsn, "{commit_lsn} < {end_lsn}");
    assert!(
        wal_before < commit_lsn && end_lsn <= wal_after,
        "commit {commit_lsn}..{end_lsn} not within the transaction's WAL {wal_before}..{wal_after}"
    );
    let server_time: i64 = c
        .query_one(
            "SELECT (extract(epoch FROM pg_xact_commit_timestamp($1::text::xid)
                     - timestamptz '2000-01-01 00:00:00+00') * 1000000)::int8",
            &[&xid.to_string()],
        )
        .unwrap()
        .get(0);
    assert_eq!(commit_time, server_time);
    assert_eq!(begin_time, server_time);
}

// ---- RELATION -----------------------------------------------------------------------------------

#[test]
fn relation_comes_before_a_tables_first_change_in_a_session_and_not_before_later_ones() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int PRIMARY KEY)")
        .unwrap();
    Decoded::get(&mut c, "s", &[]);
    c.batch_execute("INSERT INTO t VALUES (1)").unwrap();
    // One implicit transaction: t again, then u for the first time.
    c.batch_execute("INSERT INTO t VALUES (2); INSERT INTO u VALUES (1)")
        .unwrap();
    c.batch_execute("INSERT INTO t VALUES (3)").unwrap();
    let (t, u) = (relid(&mut c, "t"), relid(&mut c, "u"));

    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(
        d.kinds(),
        [
            "BEGIN", "RELATION", "INSERT", "COMMIT", //
            "BEGIN", "INSERT", "RELATION", "INSERT", "COMMIT", //
            "BEGIN", "INSERT", "COMMIT"
        ]
    );
    let rels: Vec<u32> = d.relations().iter().map(|r| r.relid).collect();
    assert_eq!(rels, [t, u]);

    // A new decoding session describes the table again.
    c.batch_execute("INSERT INTO t VALUES (4)").unwrap();
    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(d.kinds(), ["BEGIN", "RELATION", "INSERT", "COMMIT"]);
    assert_eq!(d.relations()[0].relid, t);
}

#[test]
fn relation_is_sent_again_after_add_column_and_matches_the_catalog() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TABLE t (id int8 PRIMARY KEY, gone int, name varchar(20) NOT NULL,
                         amount numeric(10,2), tags text[], at timestamptz(3));
         ALTER TABLE t DROP COLUMN gone;",
    )
    .unwrap();
    Decoded::get(&mut c, "s", &[]);
    c.batch_execute("INSERT INTO t VALUES (1, 'a', 1.5, '{x}', now())")
        .unwrap();
    let before = catalog_columns(&mut c, "t", "indisprimary");
    c.batch_execute("ALTER TABLE t ADD COLUMN note text NOT NULL DEFAULT 'n'")
        .unwrap();
    c.batch_execute("INSERT INTO t VALUES (2, 'b', 2.5, '{y}', now(), 'm')")
        .unwrap();
    let after = catalog_columns(&mut c, "t", "indisprimary");
    assert_eq!(after.len(), before.len() + 1, "the test's own premise");
    let t = relid(&mut c, "t");

    let d = Decoded::get(&mut c, "s", &[]);
    let rels = d.relations();
    assert_eq!(rels.len(), 2, "{:?}", d.kinds());
    for rel in &rels {
        assert_eq!(
            (rel.relid, rel.schema, rel.table, rel.identity),
            (t, "public", "t", ReplicaIdentity::Default)
        );
        assert!(rel.columns.iter().all(|col| !col.flags.generated()));
    }
    assert_eq!(relation_columns(rels[0]), before);
    assert_eq!(relation_columns(rels[1]), after);
    // Each RELATION precedes the insert it describes.
    let kinds = d.kinds();
    let inserts: Vec<usize> = (0..kinds.len()).filter(|&i| kinds[i] == "INSERT").collect();
    let relations: Vec<usize> = (0..kinds.len())
        .filter(|&i| kinds[i] == "RELATION")
        .collect();
    assert_eq!(inserts.len(), 2);
    assert!(relations[0] < inserts[0] && inserts[0] < relations[1] && relations[1] < inserts[1]);
}

// ---- TRUNCATE -----------------------------------------------------------------------------------

#[test]
fn truncate_of_two_tables_carries_both_relids_and_the_cascade_and_restart_identity_flags() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TABLE a (id serial PRIMARY KEY);
         CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a);
         CREATE TABLE x (id int PRIMARY KEY);
         INSERT INTO a DEFAULT VALUES; INSERT INTO b VALUES (1, 1); INSERT INTO x VALUES (1);",
    )
    .unwrap();
    Decoded::get(&mut c, "s", &[]);
    // CASCADE reaches b through its foreign key.
    c.batch_execute("TRUNCATE a RESTART IDENTITY CASCADE")
        .unwrap();
    c.batch_execute("TRUNCATE b, x").unwrap();
    let (a, b, x) = (relid(&mut c, "a"), relid(&mut c, "b"), relid(&mut c, "x"));

    let d = Decoded::get(&mut c, "s", &[]);
    let truncates: Vec<(bool, bool, BTreeSet<u32>)> = d
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Truncate {
                cascade,
                restart_identity,
                relids,
                xid,
            } => {
                assert_eq!(*xid, None);
                Some((
                    *cascade,
                    *restart_identity,
                    relids.iter().copied().collect(),
                ))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        truncates,
        [
            (true, true, BTreeSet::from([a, b])),
            (false, false, BTreeSet::from([b, x]))
        ]
    );
    // Every truncated table was described before its TRUNCATE.
    let kinds = d.kinds();
    let first_truncate = kinds.iter().position(|k| *k == "TRUNCATE").unwrap();
    let described_before: BTreeSet<u32> = d.records[..first_truncate]
        .iter()
        .filter_map(|r| match r {
            Record::Relation(rel) => Some(rel.relid),
            _ => None,
        })
        .collect();
    assert_eq!(described_before, BTreeSet::from([a, b]));
}

// ---- MESSAGE ------------------------------------------------------------------------------------

#[test]
fn transactional_message_comes_inside_its_transaction_and_non_transactional_on_its_own() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    Decoded::get(&mut c, "s", &[]);
    let mut tx = c.transaction().unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).unwrap();
    let tx_msg_end: i64 = tx
        .query_one(
            "SELECT (pg_logical_emit_message(true, 'p', 'x') - '0/0')::int8",
            &[],
        )
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    let msg_end: i64 = c
        .query_one(
            "SELECT (pg_logical_emit_message(false, 'p', 'y') - '0/0')::int8",
            &[],
        )
        .unwrap()
        .get(0);
    // A statement without an xid does not flush the WAL it wrote, and decoding stops at the flushed
    // end: wait for the WAL writer to flush the message.
    wait_until_flushed(&mut c, msg_end as u64);

    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(
        d.kinds(),
        ["BEGIN", "RELATION", "INSERT", "MESSAGE", "COMMIT", "MESSAGE"]
    );
    let Record::Message {
        lsn,
        transactional,
        prefix,
        content,
        xid,
    } = record(&d, 3)
    else {
        unreachable!()
    };
    assert_eq!(
        (transactional, prefix, content, xid),
        (true, "p", &b"x"[..], None)
    );
    // The LSN decoding reports for a message is the one pg_logical_emit_message returned.
    assert_eq!(lsn, tx_msg_end as u64);
    let Record::Message {
        lsn,
        transactional,
        prefix,
        content,
        xid,
    } = record(&d, 5)
    else {
        unreachable!()
    };
    assert_eq!(
        (transactional, prefix, content, xid),
        (false, "p", &b"y"[..], None)
    );
    assert_eq!(lsn, msg_end as u64);
}

// ---- ORIGIN -------------------------------------------------------------------------------------

/// One transaction replicated from origin `up` (origin LSN 0/12345678: returned), then a local one,
/// each inserting one row into t. The slots are created before the workload.
fn replicated_then_local_insert(slots: &[&str]) -> (PgServer, Client, u64) {
    let (pg, mut c) = server_with_slot(slots[0]);
    for slot in &slots[1..] {
        create_slot(&mut c, slot);
    }
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    c.batch_execute("SELECT pg_replication_origin_create('up')")
        .unwrap();
    for slot in slots {
        Decoded::get(&mut c, slot, &[]);
    }
    c.batch_execute("SELECT pg_replication_origin_session_setup('up')")
        .unwrap();
    c.batch_execute(
        "BEGIN;
         SELECT pg_replication_origin_xact_setup('0/12345678', now());
         INSERT INTO t VALUES (1);
         COMMIT;",
    )
    .unwrap();
    c.batch_execute("SELECT pg_replication_origin_session_reset()")
        .unwrap();
    c.batch_execute("INSERT INTO t VALUES (2)").unwrap();
    let origin_lsn: i64 = c
        .query_one("SELECT ('0/12345678'::pg_lsn - '0/0')::int8", &[])
        .unwrap()
        .get(0);
    (pg, c, origin_lsn as u64)
}

fn inserted_ids(d: &Decoded) -> Vec<fig_format::decode::Value<'static>> {
    d.rows()
        .into_iter()
        .map(|r| r.new.unwrap()[0].clone())
        .collect()
}

#[test]
fn include_origin_sends_origin_after_begin_of_replicated_transactions_only() {
    let (_pg, mut c, origin_lsn) = replicated_then_local_insert(&["plain", "with_origin"]);
    let plain = Decoded::get(&mut c, "plain", &[]);
    assert_eq!(
        plain.kinds(),
        ["BEGIN", "RELATION", "INSERT", "COMMIT", "BEGIN", "INSERT", "COMMIT"]
    );
    let d = Decoded::get(&mut c, "with_origin", &[("include_origin", "true")]);
    assert_eq!(
        d.kinds(),
        ["BEGIN", "ORIGIN", "RELATION", "INSERT", "COMMIT", "BEGIN", "INSERT", "COMMIT"]
    );
    assert_eq!(
        record(&d, 1),
        Record::Origin {
            origin_lsn,
            name: "up"
        }
    );
}

#[test]
fn origin_none_drops_replicated_transactions_and_keeps_local_ones() {
    let (_pg, mut c, _) = replicated_then_local_insert(&["any", "none"]);
    let any = Decoded::get(&mut c, "any", &[("origin", "any")]);
    let none = Decoded::get(&mut c, "none", &[("origin", "none")]);
    let local: i32 = c.query_one("SELECT max(id) FROM t", &[]).unwrap().get(0);
    let replicated: i32 = c.query_one("SELECT min(id) FROM t", &[]).unwrap().get(0);
    use fig_format::decode::Value;
    assert_eq!(
        inserted_ids(&any),
        [Value::Int(replicated.into()), Value::Int(local.into())]
    );
    assert_eq!(none.kinds(), ["BEGIN", "RELATION", "INSERT", "COMMIT"]);
    assert_eq!(inserted_ids(&none), [Value::Int(local.into())]);
}

// ---- skip_empty_xacts ---------------------------------------------------------------------------

/// A transaction whose only change is to a table the slot's reader filters out (`exclude_tables`);
/// returns its xid.
fn filtered_only_transaction(slots: &[&str]) -> (PgServer, Client, u32) {
    let (pg, mut c) = server_with_slot(slots[0]);
    for slot in &slots[1..] {
        create_slot(&mut c, slot);
    }
    c.batch_execute("CREATE TABLE noise (id int PRIMARY KEY)")
        .unwrap();
    for slot in slots {
        Decoded::get(&mut c, slot, &[]);
    }
    let mut tx = c.transaction().unwrap();
    tx.execute("INSERT INTO noise VALUES (1)", &[]).unwrap();
    let xid = current_xid(&mut tx);
    tx.commit().unwrap();
    (pg, c, xid)
}

#[test]
fn by_default_a_transaction_with_only_filtered_changes_sends_nothing() {
    let (_pg, mut c, _) = filtered_only_transaction(&["s", "control"]);
    // The same transaction is there when not filtered: the test is not vacuous.
    let control = Decoded::get(&mut c, "control", &[]);
    assert_eq!(control.kinds(), ["BEGIN", "RELATION", "INSERT", "COMMIT"]);
    let d = Decoded::get(&mut c, "s", &[("exclude_tables", "public.noise")]);
    assert_eq!(d.kinds(), Vec::<&str>::new());
}

#[test]
fn skip_empty_xacts_false_sends_begin_and_commit_for_a_transaction_with_only_filtered_changes() {
    let (_pg, mut c, xid) = filtered_only_transaction(&["s"]);
    let d = Decoded::get(
        &mut c,
        "s",
        &[
            ("exclude_tables", "public.noise"),
            ("skip_empty_xacts", "false"),
        ],
    );
    assert_eq!(d.kinds(), ["BEGIN", "COMMIT"]);
    let (
        Record::Begin {
            xid: begin_xid,
            final_lsn,
            ..
        },
        Record::Commit { commit_lsn, .. },
    ) = (record(&d, 0), record(&d, 1))
    else {
        unreachable!()
    };
    assert_eq!(begin_xid, xid);
    assert_eq!(final_lsn, commit_lsn);
}

// ---- REPLICA IDENTITY ---------------------------------------------------------------------------

#[test]
fn replica_identity_default_sends_the_old_key_only_when_the_key_changes_or_the_row_is_deleted() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text, w int); INSERT INTO t VALUES (1, 'a', 10);",
    )
    .unwrap();
    Decoded::get(&mut c, "s", &[]);
    c.batch_execute("UPDATE t SET v = 'b'").unwrap();
    let key_before: i32 = c.query_one("SELECT id FROM t", &[]).unwrap().get(0);
    c.batch_execute("UPDATE t SET id = id + 1").unwrap();
    let key_at_delete: i32 = c.query_one("SELECT id FROM t", &[]).unwrap().get(0);
    c.batch_execute("DELETE FROM t").unwrap();

    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(d.relations()[0].identity, ReplicaIdentity::Default);
    assert_eq!(
        updates_and_deletes(&d),
        [
            ("update", None),
            (
                "update",
                Some(OldTuple {
                    kind: OldKind::Key,
                    values: vec![raw_int(key_before), Raw::Nil, Raw::Nil]
                })
            ),
            (
                "delete",
                Some(OldTuple {
                    kind: OldKind::Key,
                    values: vec![raw_int(key_at_delete), Raw::Nil, Raw::Nil]
                })
            ),
        ]
    );
}

#[test]
fn replica_identity_full_sends_the_whole_old_row_on_update_and_delete() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text, w int);
         ALTER TABLE t REPLICA IDENTITY FULL;
         INSERT INTO t VALUES (1, 'a', 10);",
    )
    .unwrap();
    Decoded::get(&mut c, "s", &[]);
    let row = |c: &mut Client| -> Vec<Raw<'static>> {
        let r = c.query_one("SELECT id, v, w FROM t", &[]).unwrap();
        vec![raw_int(r.get(0)), raw_str(r.get(1)), raw_int(r.get(2))]
    };
    let before_update = row(&mut c);
    c.batch_execute("UPDATE t SET v = 'b', w = 20").unwrap();
    let before_delete = row(&mut c);
    c.batch_execute("DELETE FROM t").unwrap();

    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(d.relations()[0].identity, ReplicaIdentity::Full);
    assert_eq!(
        updates_and_deletes(&d),
        [
            (
                "update",
                Some(OldTuple {
                    kind: OldKind::Full,
                    values: before_update
                })
            ),
            (
                "delete",
                Some(OldTuple {
                    kind: OldKind::Full,
                    values: before_delete
                })
            ),
        ]
    );
}

#[test]
fn replica_identity_nothing_sends_no_old_tuple_on_delete() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         ALTER TABLE t REPLICA IDENTITY NOTHING;
         INSERT INTO t VALUES (1, 'a');",
    )
    .unwrap();
    Decoded::get(&mut c, "s", &[]);
    c.batch_execute("DELETE FROM t").unwrap();

    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(d.relations()[0].identity, ReplicaIdentity::Nothing);
    assert_eq!(updates_and_deletes(&d), [("delete", None)]);
}

#[test]
fn replica_identity_using_index_keys_the_old_row_and_the_relation_by_that_index() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TABLE u (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL, c int);
         CREATE UNIQUE INDEX u_ba ON u (b, a);
         ALTER TABLE u REPLICA IDENTITY USING INDEX u_ba;
         INSERT INTO u VALUES (1, 7, 'k', 100);",
    )
    .unwrap();
    Decoded::get(&mut c, "s", &[]);
    let key = |c: &mut Client| -> Vec<Raw<'static>> {
        let r = c.query_one("SELECT a, b FROM u", &[]).unwrap();
        vec![Raw::Nil, raw_int(r.get(0)), raw_str(r.get(1)), Raw::Nil]
    };
    let key_before_update = key(&mut c);
    c.batch_execute("UPDATE u SET a = a + 1, c = 200").unwrap();
    let key_before_delete = key(&mut c);
    c.batch_execute("DELETE FROM u").unwrap();
    let expected_columns = catalog_columns(&mut c, "u", "indisreplident");
    assert_eq!(
        expected_columns.iter().filter(|col| col.6).count(),
        2,
        "the test's own premise: the index has two columns"
    );

    let d = Decoded::get(&mut c, "s", &[]);
    let rel = d.relations()[0];
    assert_eq!(rel.identity, ReplicaIdentity::Index);
    assert_eq!(relation_columns(rel), expected_columns);
    assert_eq!(
        updates_and_deletes(&d),
        [
            (
                "update",
                Some(OldTuple {
                    kind: OldKind::Key,
                    values: key_before_update
                })
            ),
            (
                "delete",
                Some(OldTuple {
                    kind: OldKind::Key,
                    values: key_before_delete
                })
            ),
        ]
    );
}

// ---- DDL capture --------------------------------------------------------------------------------

/// Fields of a DDL payload, read by the server's own JSON parser: (event, tag, first command's
/// identity, query).
fn ddl_fields(c: &mut Client, payload: &str) -> (String, String, Option<String>, Option<String>) {
    let r = c
        .query_one(
            "SELECT j->>'event', j->>'tag', j#>>'{commands,0,identity}', j->>'query'
             FROM (SELECT $1::text::jsonb AS j) p",
            &[&payload],
        )
        .unwrap_or_else(|e| panic!("DDL payload is not JSON: {e}: {payload}"));
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

fn ddl_payloads(d: &Decoded) -> Vec<&'static str> {
    d.records
        .iter()
        .filter_map(|r| match r {
            Record::Ddl { payload, .. } => Some(*payload),
            _ => None,
        })
        .collect()
}

#[test]
fn add_column_between_two_inserts_yields_insert_ddl_relation_insert_in_order() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    Decoded::get(&mut c, "s", &[]);
    let statement = "ALTER TABLE t ADD COLUMN note text";
    c.batch_execute(&format!(
        "BEGIN; INSERT INTO t VALUES (1); {statement}; INSERT INTO t VALUES (2, 'n'); COMMIT;"
    ))
    .unwrap();

    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(
        d.kinds(),
        ["BEGIN", "RELATION", "INSERT", "DDL", "RELATION", "INSERT", "COMMIT"]
    );
    let payloads = ddl_payloads(&d);
    let (event, tag, identity, query) = ddl_fields(&mut c, payloads[0]);
    assert_eq!(event, "ddl_command_end");
    assert_eq!(tag, "ALTER TABLE");
    assert_eq!(identity.as_deref(), Some("public.t"));
    // Sent in one query string with other statements: the text is not kept (it could carry
    // another statement's secret); the tag and the identity say what ran.
    assert_eq!(query, None);
    let rels = d.relations();
    let names = |r: &Relation<'_>| {
        r.columns
            .iter()
            .map(|c| c.name.to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(rels[0]), ["id"]);
    assert_eq!(names(rels[1]), ["id", "note"]);
}

#[test]
fn drop_table_yields_a_ddl_record_for_the_sql_drop_event() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    Decoded::get(&mut c, "s", &[]);
    c.batch_execute("DROP TABLE t").unwrap();

    let d = Decoded::get(&mut c, "s", &[]);
    let payloads = ddl_payloads(&d);
    assert_eq!(payloads.len(), 1, "{:?}", d.kinds());
    let (event, tag, _, query) = ddl_fields(&mut c, payloads[0]);
    assert_eq!((event.as_str(), tag.as_str()), ("sql_drop", "DROP TABLE"));
    assert_eq!(query.as_deref(), Some("DROP TABLE t"), "sent alone: kept");
    let dropped_table: bool = c
        .query_one(
            "SELECT EXISTS (SELECT FROM jsonb_array_elements($1::text::jsonb -> 'commands') e
                            WHERE e->>'object_type' = 'table' AND e->>'identity' = 'public.t')",
            &[&payloads[0]],
        )
        .unwrap()
        .get(0);
    assert!(dropped_table, "{}", payloads[0]);
}

fn mallory(pg: &PgServer) -> Client {
    let mut admin = pg.connect();
    admin.batch_execute("CREATE ROLE mallory LOGIN").unwrap();
    postgres::Config::new()
        .host(HOST)
        .port(pg.port())
        .user("mallory")
        .dbname("postgres")
        .connect(postgres::NoTls)
        .unwrap()
}

#[test]
fn a_forged_ddl_message_from_a_non_superuser_is_a_plain_message_never_a_ddl_record() {
    let (pg, mut c) = server_with_slot("s");
    let mut m = mallory(&pg);
    let forged = r#"{"fake":1}"#;
    m.batch_execute(&format!(
        "BEGIN; SELECT pg_logical_emit_message(true, 'figoutput.ddl', '{forged}'); COMMIT;"
    ))
    .unwrap();

    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(d.kinds(), ["BEGIN", "MESSAGE", "COMMIT"]);
    let Record::Message {
        transactional,
        prefix,
        content,
        ..
    } = record(&d, 1)
    else {
        unreachable!()
    };
    assert_eq!(
        (transactional, prefix, content),
        (true, "figoutput.ddl", forged.as_bytes())
    );
}

#[test]
fn a_non_superuser_gets_permission_denied_inserting_into_the_ddl_log() {
    let (pg, _c) = server_with_slot("s");
    let mut m = mallory(&pg);
    let e = m
        .execute(
            "INSERT INTO figoutput.ddl_log (payload) VALUES ('{\"fake\":1}')",
            &[],
        )
        .unwrap_err();
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
    assert_eq!(
        db.code(),
        &postgres::error::SqlState::INSUFFICIENT_PRIVILEGE
    );
    assert!(
        db.message().contains("permission denied"),
        "{}",
        db.message()
    );
}

#[test]
fn the_ddl_log_stays_empty_after_ddl() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    c.batch_execute("ALTER TABLE t ADD COLUMN v text").unwrap();
    c.batch_execute("DROP TABLE t").unwrap();
    // The DDL went through the log (three DDL records), yet nothing stayed in it.
    let d = Decoded::get(&mut c, "s", &[]);
    assert_eq!(ddl_payloads(&d).len(), 3, "{:?}", d.kinds());
    let rows: i64 = c
        .query_one("SELECT count(*) FROM figoutput.ddl_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

// ---- options: tables --------------------------------------------------------------------------

#[test]
fn include_and_exclude_tables_select_by_pattern_with_identifier_quoting() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE SCHEMA other; CREATE SCHEMA \"Sales\"; CREATE SCHEMA sales;
         CREATE TABLE public.a (id int PRIMARY KEY);
         CREATE TABLE public.b (id int PRIMARY KEY);
         CREATE TABLE other.c (id int PRIMARY KEY);
         CREATE TABLE \"Sales\".\"Orders\" (id int PRIMARY KEY);
         CREATE TABLE sales.orders (id int PRIMARY KEY);",
    )
    .unwrap();
    Decoded::get(&mut c, "s", &[]);
    c.batch_execute(
        "INSERT INTO public.a VALUES (1); INSERT INTO public.b VALUES (1);
         INSERT INTO other.c VALUES (1); INSERT INTO \"Sales\".\"Orders\" VALUES (1);
         INSERT INTO sales.orders VALUES (1);",
    )
    .unwrap();

    let all = [
        "public.a",
        "public.b",
        "other.c",
        "Sales.Orders",
        "sales.orders",
    ];
    let tables = |c: &mut Client, opts: &[(&str, &str)]| -> Vec<String> {
        peek(c, "s", opts)
            .rows()
            .into_iter()
            .map(|r| r.table)
            .collect()
    };
    assert_eq!(tables(&mut c, &[]), all);
    for (opts, expected) in [
        (
            vec![("include_tables", "public.*")],
            vec!["public.a", "public.b"],
        ),
        (
            vec![("exclude_tables", "public.*")],
            vec!["other.c", "Sales.Orders", "sales.orders"],
        ),
        (
            vec![("include_tables", "\"Sales\".\"Orders\"")],
            vec!["Sales.Orders"],
        ),
        // Unquoted names fold to lower case, as in SQL.
        (
            vec![("include_tables", "Sales.Orders")],
            vec!["sales.orders"],
        ),
        (
            vec![("include_tables", "*.c, public.b")],
            vec!["public.b", "other.c"],
        ),
        (
            vec![
                ("include_tables", "*.*"),
                ("exclude_tables", "public.a, \"Sales\".*"),
            ],
            vec!["public.b", "other.c", "sales.orders"],
        ),
    ] {
        assert_eq!(tables(&mut c, &opts), expected, "options {opts:?}");
    }
}

// ---- options: publication_names -----------------------------------------------------------------

/// Tables t and u, publications p_t (FOR TABLE t), p_ins (FOR TABLE t, inserts only) and p_all
/// (FOR ALL TABLES), then an insert, update and delete on each table.
fn publication_workload() -> (PgServer, Client) {
    let (pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int); CREATE TABLE u (id int PRIMARY KEY, v int);
         CREATE PUBLICATION p_t FOR TABLE t;
         CREATE PUBLICATION p_ins FOR TABLE t WITH (publish = 'insert');
         CREATE PUBLICATION p_all FOR ALL TABLES;",
    )
    .unwrap();
    Decoded::get(&mut c, "s", &[]);
    c.batch_execute(
        "INSERT INTO t VALUES (1, 1); INSERT INTO u VALUES (1, 1);
         UPDATE t SET v = 2; UPDATE u SET v = 2;
         DELETE FROM t; DELETE FROM u;",
    )
    .unwrap();
    (pg, c)
}

fn ops(c: &mut Client, opts: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    peek(c, "s", opts)
        .rows()
        .into_iter()
        .map(|r| (r.op, r.table))
        .collect()
}

fn ops_of(expected: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    expected.iter().map(|(o, t)| (*o, t.to_string())).collect()
}

#[test]
fn publication_names_skips_tables_outside_the_publication() {
    let (_pg, mut c) = publication_workload();
    assert_eq!(
        ops(&mut c, &[("publication_names", "p_t")]),
        ops_of(&[
            ("insert", "public.t"),
            ("update", "public.t"),
            ("delete", "public.t")
        ])
    );
}

#[test]
fn a_publication_publishing_only_inserts_drops_updates_and_deletes() {
    let (_pg, mut c) = publication_workload();
    assert_eq!(
        ops(&mut c, &[("publication_names", "p_ins")]),
        ops_of(&[("insert", "public.t")])
    );
    // Several publications: the union of what they publish.
    assert_eq!(
        ops(&mut c, &[("publication_names", "p_ins, p_t")]),
        ops_of(&[
            ("insert", "public.t"),
            ("update", "public.t"),
            ("delete", "public.t")
        ])
    );
}

#[test]
fn a_publication_for_all_tables_includes_every_table() {
    let (_pg, mut c) = publication_workload();
    let everything = ops(&mut c, &[]);
    assert_eq!(everything.len(), 6);
    assert_eq!(ops(&mut c, &[("publication_names", "p_all")]), everything);
}

#[test]
fn a_publication_that_does_not_exist_is_an_error() {
    let (_pg, mut c) = publication_workload();
    let e = Decoded::try_get(&mut c, "s", &[("publication_names", "nope")])
        .err()
        .expect("decoding with a missing publication succeeded");
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
    assert_eq!(db.severity(), "ERROR");
    assert!(
        db.message().contains("publication \"nope\" does not exist"),
        "{}",
        db.message()
    );
    // What to do, and no Rust internals (the server runs with RUST_BACKTRACE=1).
    let detail = db.detail().unwrap_or_default();
    assert!(
        !detail.contains("figoutput::") && !detail.contains("std::") && !detail.contains("pgrx"),
        "{detail}"
    );
    assert!(
        db.hint()
            .is_some_and(|h| h.contains("Create the publication")),
        "{db:?}"
    );
}

// ---- options: errors ----------------------------------------------------------------------------

#[test]
fn an_unknown_option_or_a_malformed_value_is_an_error_naming_the_option() {
    let (_pg, mut c) = server_with_slot("s");
    for (name, value) in [
        ("colour", "blue"),
        ("skip_empty_xacts", "maybe"),
        ("format_version", "2"),
        ("write_batch_bytes", "x"),
    ] {
        let e = Decoded::try_get(&mut c, "s", &[(name, value)])
            .err()
            .unwrap_or_else(|| panic!("option {name} = {value:?} was accepted"));
        let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
        assert_eq!(db.severity(), "ERROR", "{name}");
        assert_eq!(
            db.code(),
            &postgres::error::SqlState::INVALID_PARAMETER_VALUE,
            "{name}"
        );
        assert!(
            db.message().contains(&format!("\"{name}\"")),
            "{name}: {}",
            db.message()
        );
    }
    // The well-formed values of the same options are accepted.
    Decoded::get(
        &mut c,
        "s",
        &[
            ("skip_empty_xacts", "true"),
            ("format_version", "1"),
            ("write_batch_bytes", "1024"),
        ],
    );
}

// ---- options: write_batch_bytes -----------------------------------------------------------------

/// One transaction of 2,000 inserts of 100-byte rows, decoded from slot "s".
fn two_thousand_row_transaction() -> (PgServer, Client, i64) {
    let (pg, mut c) = server_with_slot("s");
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, pad text)")
        .unwrap();
    Decoded::get(&mut c, "s", &[]);
    c.batch_execute("INSERT INTO t SELECT i, repeat('x', 100) FROM generate_series(1, 2000) i")
        .unwrap();
    let rows: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
    (pg, c, rows)
}

#[test]
fn write_batch_bytes_zero_gives_one_write_per_change() {
    let (_pg, mut c, rows) = two_thousand_row_transaction();
    let writes = peek_writes(&mut c, "s", &[("write_batch_bytes", "0")]);
    // Each change is a write of its own, led by the BEGIN and RELATION it needs; COMMIT is alone.
    assert_eq!(
        writes.len() as i64,
        rows + 1,
        "a write per insert, and COMMIT"
    );
    let last = writes.len() - 1;
    for (i, write) in writes.into_iter().enumerate() {
        let expected: &[&str] = match i {
            0 => &["BEGIN", "RELATION", "INSERT"],
            i if i == last => &["COMMIT"],
            _ => &["INSERT"],
        };
        assert_eq!(decode_writes(vec![write]).kinds(), expected, "write {i}");
    }
}

#[test]
fn the_default_write_batch_bytes_batches_many_records_into_few_writes_decoding_the_same() {
    let (_pg, mut c, rows) = two_thousand_row_transaction();
    let unbatched = decode_writes(peek_writes(&mut c, "s", &[("write_batch_bytes", "0")]));
    let batched = peek_writes(&mut c, "s", &[]);
    let batched_writes = batched.len();
    let batched = decode_writes(batched);
    assert_eq!(batched.records, unbatched.records);
    assert_eq!(batched.rows().len() as i64, rows);
    assert!(
        batched_writes * 100 <= batched.records.len(),
        "{batched_writes} writes for {} records",
        batched.records.len()
    );
}
