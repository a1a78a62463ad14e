//! The SQLite sink against real files in temporary directories. Each test names the guarantee it proves
//! (the trait's contract in `sink/mod.rs`, DESIGN.md rules 2, 3 and 5).

use std::sync::Arc;

use rusqlite::Connection;

use super::*;
use crate::sink::testkit::*;
use crate::sink::{Piece, RelationChange, SinkErrorKind, ToastGap, Transaction};

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fig.db");
        Fixture { _dir: dir, path }
    }

    fn open(&self) -> SqliteSink {
        SqliteSink::open(&self.path).unwrap()
    }

    /// A second, independent connection: what another reader of the file sees.
    fn reader(&self) -> Connection {
        Connection::open(&self.path).unwrap()
    }

    fn rows(&self, sql: &str) -> Vec<Vec<rusqlite::types::Value>> {
        let c = self.reader();
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| r.get::<_, rusqlite::types::Value>(i))
                .collect()
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    fn count(&self, table: &str) -> i64 {
        self.reader()
            .query_row(
                &format!("SELECT count(*) FROM {}", mirror::quote(table)),
                [],
                |r| r.get(0),
            )
            .unwrap()
    }
}

fn i(v: i64) -> rusqlite::types::Value {
    rusqlite::types::Value::Integer(v)
}

fn t(s: &str) -> rusqlite::types::Value {
    rusqlite::types::Value::Text(s.into())
}

fn row(id: i64, name: &str, bal: &str) -> Vec<Value> {
    vec![Value::Int(id), text(name), num(bal)]
}

#[test]
fn checkpoint_round_trips_across_reopen() {
    let f = Fixture::new();
    let mut sink = f.open();
    assert_eq!(sink.checkpoint().unwrap(), None);
    let mut c = ckpt(0x16_B374_D848);
    c.system_id = u64::MAX; // beyond SQLite's signed integers: stored as text
    c.timeline = 3;
    sink.write(&[], &c).unwrap();
    drop(sink);
    assert_eq!(f.open().checkpoint().unwrap(), Some(c));
    assert_eq!(
        f.rows("SELECT commit_end_lsn_text, system_id FROM _fig_checkpoint"),
        vec![vec![t("16/B374D848"), t("18446744073709551615")]]
    );
}

#[test]
fn upsert_delete_and_truncate_keep_the_current_state() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    sink.write(
        &[
            tx(
                100,
                &[&r],
                vec![ins(&r, row(1, "a", "1.00")), ins(&r, row(2, "b", "2.00"))],
            ),
            tx(
                200,
                &[&r],
                vec![
                    ins(&r, row(1, "a2", "1.50")),
                    upd(&r, None, row(2, "b2", "2.50")),
                ],
            ),
        ],
        &ckpt(208),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id, name, balance FROM \"public.accounts\" ORDER BY id"),
        vec![
            vec![i(1), t("a2"), t("1.50")],
            vec![i(2), t("b2"), t("2.50")]
        ]
    );
    // A key change removes the old key; a delete removes by key.
    sink.write(
        &[tx(
            300,
            &[&r],
            vec![
                upd(&r, Some(vec![Value::Int(2)]), row(3, "c", "3")),
                del(&r, vec![Value::Int(1)]),
            ],
        )],
        &ckpt(308),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id, name FROM \"public.accounts\""),
        vec![vec![i(3), t("c")]]
    );
    sink.write(
        &[tx(400, &[&r], vec![trunc(&r), ins(&r, row(9, "z", "0"))])],
        &ckpt(408),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id FROM \"public.accounts\""),
        vec![vec![i(9)]]
    );
    assert_eq!(
        f.rows("SELECT op FROM _fig_changes ORDER BY commit_lsn, ordinal"),
        ["insert", "insert", "insert", "update", "update", "delete", "truncate", "insert"]
            .iter()
            .map(|o| vec![t(o)])
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_failing_batch_leaves_neither_data_nor_checkpoint() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    sink.write(
        &[tx(100, &[&r], vec![ins(&r, row(1, "a", "1"))])],
        &ckpt(108),
    )
    .unwrap();
    // The second transaction has a row of the wrong width after the first one's rows and a new
    // table were already written inside the batch's SQLite transaction.
    let other = rel(
        5,
        "public",
        "other",
        vec![col("id", "integer", 23, true), col("v", "text", 25, false)],
    );
    let good = tx(
        200,
        &[&r, &other],
        vec![
            ins(&r, row(2, "b", "2")),
            ins(&other, vec![Value::Int(1), text("x")]),
        ],
    );
    let bad = tx(
        300,
        &[&r],
        vec![ins(&r, row(3, "c", "3")), ins(&r, vec![Value::Int(4)])],
    );
    let e = sink.write(&[good.clone(), bad], &ckpt(308)).unwrap_err();
    assert!(matches!(e, SinkError::ValueCount { got: 1, .. }), "{e}");
    assert_eq!(e.kind(), SinkErrorKind::InvalidBatch);
    assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(108)));
    assert_eq!(f.count("public.accounts"), 1);
    assert_eq!(f.count("_fig_changes"), 1);
    assert!(
        mirror::mirror_columns(&f.reader(), "public.other")
            .unwrap()
            .is_empty(),
        "the new mirror rolled back too"
    );

    // Everything written, then a failure right before COMMIT: still nothing.
    sink.fail_before_commit = true;
    sink.write(std::slice::from_ref(&good), &ckpt(208))
        .unwrap_err();
    sink.fail_before_commit = false;
    assert_eq!(f.count("_fig_changes"), 1);
    assert_eq!(
        SqliteSink::open(&f.path).unwrap().checkpoint().unwrap(),
        Some(ckpt(108))
    );

    // The same batch retried whole succeeds (the plans built inside the failed batch were dropped).
    sink.write(&[good], &ckpt(208)).unwrap();
    assert_eq!(f.count("public.other"), 1);
    assert_eq!(f.count("_fig_changes"), 3);
}

#[test]
fn history_holds_each_change_once_and_repeats_are_idempotent() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    let t1 = tx(
        100,
        &[&r],
        vec![ins(&r, row(1, "a", "1")), upd(&r, None, row(1, "a", "2"))],
    );
    let t2 = tx(200, &[&r], vec![del(&r, vec![Value::Int(1)])]);
    sink.write(std::slice::from_ref(&t1), &ckpt(108)).unwrap();
    // The pipeline replays after a restart: t1 again (covered, skipped), t2 new.
    sink.write(&[t1.clone(), t2.clone()], &ckpt(208)).unwrap();
    sink.write(&[t1.clone(), t2.clone()], &ckpt(208)).unwrap();
    // An older checkpoint with covered transactions changes nothing.
    sink.write(std::slice::from_ref(&t1), &ckpt(108)).unwrap();
    assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(208)));
    assert_eq!(
        f.rows("SELECT commit_lsn, ordinal, op, before, after FROM _fig_changes ORDER BY commit_lsn, ordinal"),
        vec![
            vec![i(100), i(0), t("insert"), rusqlite::types::Value::Null, t(r#"{"id":1,"name":"a","balance":"1"}"#)],
            vec![i(100), i(1), t("update"), rusqlite::types::Value::Null, t(r#"{"id":1,"name":"a","balance":"2"}"#)],
            vec![i(200), i(0), t("delete"), t(r#"{"id":1}"#), rusqlite::types::Value::Null],
        ]
    );
    // A different transaction claiming an already stored (commit_lsn, ordinal) is refused, whole.
    let mut clash = tx(200, &[&r], vec![ins(&r, row(5, "e", "5"))]);
    clash.end_lsn = Lsn(300);
    let e = sink.write(&[clash], &ckpt(300)).unwrap_err();
    assert!(
        matches!(e, SinkError::DuplicateEvent { ordinal: 0, .. }),
        "{e}"
    );
    assert_eq!(f.count("public.accounts"), 0);
    assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(208)));
}

#[test]
fn history_rows_written_in_groups_keep_every_change_in_order() {
    // More than two full groups of history rows plus a remainder, across two transactions.
    let n = 2 * history::GROUP + 7;
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    let inserts = |from: usize| -> Vec<Change> {
        (from..from + n)
            .map(|k| ins(&r, row(k as i64, &format!("n{k}"), "1.50")))
            .collect()
    };
    let t1 = tx(100, &[&r], inserts(0));
    let t2 = tx(200, &[&r], inserts(n));
    sink.write(&[t1, t2], &ckpt(208)).unwrap();
    let got = f.rows("SELECT commit_lsn, ordinal, after FROM _fig_changes ORDER BY rowid");
    let want: Vec<_> = (0..2 * n)
        .map(|k| {
            vec![
                i(if k < n { 100 } else { 200 }),
                i((k % n) as i64),
                t(&format!(r#"{{"id":{k},"name":"n{k}","balance":"1.50"}}"#)),
            ]
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(f.count("public.accounts"), 2 * n as i64);
}

#[test]
fn a_duplicate_inside_a_group_is_reported_by_its_own_ordinal() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    let mut one = tx(500, &[&r], vec![ins(&r, row(1, "a", "1"))]);
    one.changes[0].ordinal = 70;
    sink.write(&[one], &ckpt(508)).unwrap();
    // A later transaction wrongly claiming commit LSN 500: ordinal 70 sits in its second group.
    let changes = (0..2 * history::GROUP)
        .map(|k| ins(&r, row(10 + k as i64, "b", "2")))
        .collect();
    let mut clash = tx(500, &[&r], changes);
    clash.end_lsn = Lsn(600);
    let e = sink.write(&[clash], &ckpt(600)).unwrap_err();
    assert!(
        matches!(
            e,
            SinkError::DuplicateEvent {
                commit_lsn: Lsn(500),
                ordinal: 70
            }
        ),
        "{e}"
    );
    assert_eq!(f.count("public.accounts"), 1);
    assert_eq!(f.count("_fig_changes"), 1);
    assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(508)));
    // The failed write ended its transaction (the history insert rolls back everything): the
    // next write starts a new one and lands whole.
    let next = tx(700, &[&r], vec![ins(&r, row(2, "c", "3"))]);
    sink.write(&[next], &ckpt(708)).unwrap();
    assert_eq!(f.count("public.accounts"), 2);
    assert_eq!(f.count("_fig_changes"), 2);
    assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(708)));
}

#[test]
fn a_change_repeated_inside_one_group_is_reported_by_its_ordinal() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    let changes = (0..history::GROUP)
        .map(|k| ins(&r, row(k as i64, "b", "2")))
        .collect();
    let mut t = tx(500, &[&r], changes);
    t.changes[9].ordinal = 4;
    let e = sink.write(&[t], &ckpt(508)).unwrap_err();
    assert!(
        matches!(
            e,
            SinkError::DuplicateEvent {
                commit_lsn: Lsn(500),
                ordinal: 4
            }
        ),
        "{e}"
    );
    assert_eq!(f.count("_fig_changes"), 0);
    assert_eq!(sink.checkpoint().unwrap(), None);
}

#[test]
fn history_rows_carry_xid_and_rfc3339_commit_time() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    let mut t1 = tx(100, &[&r], vec![ins(&r, row(1, "a", "1"))]);
    t1.commit_time = 0;
    t1.changes[0].commit_time = 0;
    t1.changes[0].xid = 4_000_000_000;
    sink.write(&[t1], &ckpt(108)).unwrap();
    assert_eq!(
        f.rows("SELECT xid, commit_time, schema, \"table\" FROM _fig_changes"),
        vec![vec![
            i(4_000_000_000),
            t("2000-01-01T00:00:00.000000Z"),
            t("public"),
            t("accounts")
        ]]
    );
}

#[test]
fn hostile_identifiers_are_quoted_everywhere() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = rel(
        7,
        "we\"ird",
        "x;DROP TABLE _fig_changes;--",
        vec![
            col("a\"b", "integer", 23, true),
            col("select", "text", 25, false),
            col("x;DROP TABLE _fig_checkpoint", "text", 25, false),
            col("", "text", 25, false),
        ],
    );
    // A keyless table with a column named rowid: the multiset delete must not use it.
    let k = rel(
        8,
        "s.p",
        "t.q",
        vec![
            col("rowid", "integer", 23, false),
            col("v", "text", 25, false),
        ],
    );
    sink.write(
        &[tx(
            100,
            &[&r, &k],
            vec![
                ins(&r, vec![Value::Int(1), text("s"), text("d"), text("e")]),
                upd(
                    &r,
                    None,
                    vec![Value::Int(1), text("s2"), text("d2"), text("e2")],
                ),
                ins(&k, vec![Value::Int(10), text("v")]),
                ins(&k, vec![Value::Int(20), text("v")]),
                change(&k, Op::Delete, Some(vec![Value::Int(20), text("v")]), None),
            ],
        )],
        &ckpt(108),
    )
    .unwrap();
    let mirror = "we\"ird.x;DROP TABLE _fig_changes;--";
    assert_eq!(
        f.rows(&format!(
            "SELECT \"a\"\"b\", \"select\", \"x;DROP TABLE _fig_checkpoint\", \"\" FROM {}",
            mirror::quote(mirror)
        )),
        vec![vec![i(1), t("s2"), t("d2"), t("e2")]]
    );
    assert_eq!(
        f.rows("SELECT rowid, v FROM \"s.p.t.q\""),
        vec![vec![i(10), t("v")]]
    );
    assert_eq!(f.count("_fig_changes"), 5);
    let mut again = f.open();
    assert_eq!(
        again.current_row(&r, &[Value::Int(1)]).unwrap(),
        Some(vec![Value::Int(1), text("s2"), text("d2"), text("e2")])
    );
}

#[test]
fn tables_differing_only_in_case_are_refused_not_merged() {
    // SQLite folds ASCII case in identifiers; PostgreSQL does not for quoted names.
    let f = Fixture::new();
    let mut sink = f.open();
    let lower = rel(
        1,
        "public",
        "t",
        vec![col("id", "integer", 23, true), col("v", "text", 25, false)],
    );
    let upper = rel(
        2,
        "public",
        "T",
        vec![col("id", "integer", 23, true), col("v", "text", 25, false)],
    );
    sink.write(
        &[tx(
            100,
            &[&lower],
            vec![ins(&lower, vec![Value::Int(1), text("a")])],
        )],
        &ckpt(108),
    )
    .unwrap();
    sink.write(
        &[tx(
            200,
            &[&upper],
            vec![ins(&upper, vec![Value::Int(1), text("B")])],
        )],
        &ckpt(208),
    )
    .unwrap();
    // The second table is out of sync (named, with the collision as the reason); the first keeps
    // its mirror.
    let states = states_of_file(&f.path).unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(
        (states[0].schema.as_str(), states[0].table.as_str()),
        ("public", "T")
    );
    assert!(
        states[0].reason.contains("would both be mirrored"),
        "{states:?}"
    );
    assert_eq!(f.rows("SELECT v FROM \"public.t\""), vec![vec![t("a")]]);
}

#[test]
fn a_new_column_is_added_and_a_dropped_one_stays() {
    let f = Fixture::new();
    let mut sink = f.open();
    let [v1, v2, v3] = accounts_versions();
    sink.write(
        &[tx(100, &[&v1], vec![ins(&v1, row(1, "a", "1"))])],
        &ckpt(108),
    )
    .unwrap();
    sink.write(
        &[tx(
            200,
            &[&v2],
            vec![ins(
                &v2,
                vec![Value::Int(2), text("b"), num("2"), text("hello")],
            )],
        )],
        &ckpt(208),
    )
    .unwrap();
    sink.write(
        &[tx(
            300,
            &[&v3],
            vec![ins(&v3, vec![Value::Int(3), num("3"), text("n3")])],
        )],
        &ckpt(308),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id, name, balance, note FROM \"public.accounts\" ORDER BY id"),
        vec![
            vec![i(1), t("a"), t("1"), rusqlite::types::Value::Null],
            vec![i(2), t("b"), t("2"), t("hello")],
            vec![i(3), rusqlite::types::Value::Null, t("3"), t("n3")],
        ]
    );
    assert_eq!(
        f.rows("SELECT effective_lsn, json_array_length(columns) FROM _fig_schema ORDER BY effective_lsn"),
        vec![vec![i(100), i(3)], vec![i(200), i(4)], vec![i(300), i(3)]]
    );
    // Reopening and writing the same definition again records nothing new.
    let mut sink = f.open();
    sink.write(
        &[tx(
            400,
            &[&v3],
            vec![ins(&v3, vec![Value::Int(4), num("4"), Value::Null])],
        )],
        &ckpt(408),
    )
    .unwrap();
    assert_eq!(f.count("_fig_schema"), 3);
}

#[test]
fn the_ddl_text_behind_a_schema_change_is_recorded_with_it_in_batches_and_streamed() {
    let f = Fixture::new();
    let mut sink = f.open();
    let [v1, v2, v3] = accounts_versions();
    let mut v4 = (*v3).clone();
    v4.columns.push(col("extra", "int4", 23, false));
    let v4 = Arc::new(v4);
    sink.write(
        &[tx(100, &[&v1], vec![ins(&v1, row(1, "a", "1"))])],
        &ckpt(108),
    )
    .unwrap();
    let mut t2 = tx(
        200,
        &[&v2],
        vec![ins(
            &v2,
            vec![Value::Int(2), text("b"), num("2"), text("n")],
        )],
    );
    explain(&mut t2, "ALTER TABLE accounts ADD note text");
    sink.write(&[t2], &ckpt(208)).unwrap();
    let mut t3 = tx(
        300,
        &[&v3],
        vec![ins(&v3, vec![Value::Int(3), num("3"), text("n3")])],
    );
    explain(&mut t3, "ALTER TABLE accounts DROP name");
    sink.write_large(&t3.head(), &mut pieces(&t3).into_iter().map(Ok), &ckpt(308))
        .unwrap();
    // Without a DDL record (pgoutput), the change is recorded from the RELATION alone.
    let t4 = tx(
        400,
        &[&v4],
        vec![ins(
            &v4,
            vec![Value::Int(4), num("4"), Value::Null, Value::Int(1)],
        )],
    );
    sink.write(&[t4], &ckpt(408)).unwrap();
    let null = rusqlite::types::Value::Null;
    assert_eq!(
        f.rows("SELECT effective_lsn, source, ddl FROM _fig_schema_changes ORDER BY effective_lsn"),
        vec![
            vec![i(200), t("ddl"), t("ALTER TABLE accounts ADD note text")],
            vec![i(300), t("ddl"), t("ALTER TABLE accounts DROP name")],
            vec![i(400), t("relation"), null],
        ]
    );
}

#[test]
fn a_definition_changed_inside_a_transaction_applies_from_its_ordinal() {
    let f = Fixture::new();
    let mut sink = f.open();
    let [v1, v2, _] = accounts_versions();
    let mut t1 = tx(
        100,
        &[&v1],
        vec![
            ins(&v1, row(1, "a", "1")),
            ins(&v2, vec![Value::Int(2), text("b"), num("2"), text("n")]),
        ],
    );
    t1.relation_changes.push(RelationChange {
        from_ordinal: 1,
        relation: Arc::clone(&v2),
    });
    sink.write(&[t1], &ckpt(108)).unwrap();
    assert_eq!(
        f.rows(
            "SELECT effective_lsn, effective_ordinal FROM _fig_schema ORDER BY effective_ordinal"
        ),
        vec![vec![i(100), i(0)], vec![i(100), i(1)]]
    );
    assert_eq!(
        f.rows("SELECT note FROM \"public.accounts\" ORDER BY id"),
        vec![vec![rusqlite::types::Value::Null], vec![t("n")]]
    );
}

#[test]
fn a_renamed_table_renames_its_mirror() {
    let f = Fixture::new();
    let mut sink = f.open();
    let old = accounts();
    let mut new = (*old).clone();
    new.table = "ledger_accounts".into();
    let new = Arc::new(new);
    sink.write(
        &[tx(100, &[&old], vec![ins(&old, row(1, "a", "1"))])],
        &ckpt(108),
    )
    .unwrap();
    sink.write(
        &[tx(200, &[&new], vec![upd(&new, None, row(1, "b", "1"))])],
        &ckpt(208),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id, name FROM \"public.ledger_accounts\""),
        vec![vec![i(1), t("b")]]
    );
    assert!(mirror::mirror_columns(&f.reader(), "public.accounts")
        .unwrap()
        .is_empty());
}

#[test]
fn nan_and_infinities_survive_as_text() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = rel(
        3,
        "public",
        "rates",
        vec![
            col("id", "integer", 23, true),
            col("f8", "double precision", 701, false),
            col("n", "numeric", 1700, false),
        ],
    );
    let values = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.1, -0.0];
    let changes = values
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            ins(
                &r,
                vec![Value::Int(k as i64), Value::Float(v), num("-Infinity")],
            )
        })
        .collect();
    sink.write(&[tx(100, &[&r], changes)], &ckpt(108)).unwrap();
    assert_eq!(
        f.rows("SELECT typeof(f8), quote(f8) FROM \"public.rates\" ORDER BY id"),
        vec![
            vec![t("text"), t("'NaN'")],
            vec![t("text"), t("'Infinity'")],
            vec![t("text"), t("'-Infinity'")],
            vec![t("real"), t("0.1")],
            vec![t("real"), t("0.0")], // quote() drops the sign; the value keeps it (below)
        ]
    );
    let neg_zero = sink.current_row(&r, &[Value::Int(4)]).unwrap().unwrap();
    assert!(matches!(neg_zero[1], Value::Float(f) if f.to_bits() == (-0.0f64).to_bits()));
    assert_eq!(
        f.rows("SELECT after FROM _fig_changes WHERE ordinal = 0"),
        vec![vec![t(r#"{"id":0,"f8":"NaN","n":"-Infinity"}"#)]]
    );
    match sink
        .current_row(&r, &[Value::Int(1)])
        .unwrap()
        .unwrap()
        .as_slice()
    {
        [_, Value::Float(f), Value::Numeric(n)] => {
            assert_eq!(*f, f64::INFINITY);
            assert_eq!(n, "-Infinity");
        }
        other => panic!("{other:?}"),
    }
    let nan = sink.current_row(&r, &[Value::Int(0)]).unwrap().unwrap();
    assert!(matches!(nan[1], Value::Float(f) if f.is_nan()));
}

#[test]
fn numerics_with_300_digits_are_exact() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    let big = format!("-{}.{}", "1234567890".repeat(20), "9876543210".repeat(10));
    assert_eq!(big.len(), 302);
    sink.write(
        &[tx(
            100,
            &[&r],
            vec![ins(&r, row(1, "a", &big)), ins(&r, row(2, "b", "1.10"))],
        )],
        &ckpt(108),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT typeof(balance), balance FROM \"public.accounts\" ORDER BY id"),
        vec![vec![t("text"), t(&big)], vec![t("text"), t("1.10")]]
    );
    let after: String = f
        .reader()
        .query_row(
            "SELECT after FROM _fig_changes WHERE ordinal = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let j: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(j["balance"], serde_json::Value::String(big.clone()));
    assert_eq!(
        sink.current_row(&r, &[Value::Int(1)]).unwrap(),
        Some(row(1, "a", &big))
    );
}

#[test]
fn current_row_returns_the_last_durable_state() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    assert_eq!(
        sink.current_row(&r, &[Value::Int(1)]).unwrap(),
        None,
        "no mirror yet"
    );
    sink.write(
        &[tx(
            100,
            &[&r],
            vec![ins(&r, row(1, "a", "1")), upd(&r, None, row(1, "a2", "2"))],
        )],
        &ckpt(108),
    )
    .unwrap();
    assert_eq!(
        sink.current_row(&r, &[Value::Int(1)]).unwrap(),
        Some(row(1, "a2", "2"))
    );
    assert_eq!(sink.current_row(&r, &[Value::Int(2)]).unwrap(), None);
    // A definition with a column the mirror does not have yet cannot be answered in full.
    let mut wider = (*r).clone();
    wider.columns.push(col("later", "text", 25, false));
    assert_eq!(sink.current_row(&wider, &[Value::Int(1)]).unwrap(), None);
    // From a fresh process too.
    assert_eq!(
        f.open().current_row(&r, &[Value::Int(1)]).unwrap(),
        Some(row(1, "a2", "2"))
    );
}

/// A transaction at `lsn` updating row `id` of [`docs`] to `title`, its body unchanged TOAST that
/// the pipeline could not resolve.
fn body_unchanged(r: &Arc<Relation>, lsn: u64, id: i64, title: &str) -> Transaction {
    let mut t = tx(
        lsn,
        &[r],
        vec![upd(r, None, vec![Value::Int(id), text(title), Value::Null])],
    );
    t.unchanged_toast.push(ToastGap {
        ordinal: 0,
        columns: vec![2],
    });
    t
}

fn docs() -> Arc<Relation> {
    rel(
        9,
        "public",
        "docs",
        vec![
            col("id", "integer", 23, true),
            col("title", "text", 25, false),
            col("body", "text", 25, false),
        ],
    )
}

#[test]
fn unchanged_toast_is_filled_from_the_mirror_inside_the_batch() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = docs();
    let body = "x".repeat(10_000);
    // Insert and TOAST-unchanged update in the same batch: the fill sees the batch's own insert.
    let mut t1 = tx(
        100,
        &[&r],
        vec![
            ins(&r, vec![Value::Int(1), text("t1"), text(&body)]),
            upd(&r, None, vec![Value::Int(1), text("t2"), Value::Null]),
        ],
    );
    t1.unchanged_toast.push(ToastGap {
        ordinal: 1,
        columns: vec![2],
    });
    sink.write(&[t1], &ckpt(108)).unwrap();
    assert_eq!(
        f.rows("SELECT title, length(body) FROM \"public.docs\""),
        vec![vec![t("t2"), i(10_000)]]
    );
    let after: String = f
        .reader()
        .query_row(
            "SELECT after FROM _fig_changes WHERE ordinal = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(after.contains(&body), "the history holds the full new row");

    // With a key change, the old key finds the row.
    let mut t2 = tx(
        200,
        &[&r],
        vec![upd(
            &r,
            Some(vec![Value::Int(1)]),
            vec![Value::Int(2), text("t3"), Value::Null],
        )],
    );
    t2.unchanged_toast.push(ToastGap {
        ordinal: 0,
        columns: vec![2],
    });
    sink.write(&[t2], &ckpt(208)).unwrap();
    assert_eq!(
        f.rows("SELECT id, length(body) FROM \"public.docs\""),
        vec![vec![i(2), i(10_000)]]
    );
}

#[test]
fn unchanged_toast_without_a_row_is_refused_not_invented() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = docs();
    let t1 = body_unchanged(&r, 100, 1, "t");
    // The table goes out of sync; the batch and its checkpoint are stored.
    sink.write(&[t1], &ckpt(108)).unwrap();
    assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(108)));
    let states = states_of_file(&f.path).unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].state, OUT_OF_SYNC);
    assert_eq!(states[0].since, Lsn(100));
    assert!(
        states[0].reason.contains("column body is unchanged TOAST"),
        "{states:?}"
    );
    // The history keeps the change, without the value it could not fill: never a made-up one.
    assert_eq!(
        f.rows("SELECT op, after FROM _fig_changes"),
        vec![vec![t("update"), t(r#"{"id":1,"title":"t"}"#)]]
    );
    assert_eq!(f.count("public.docs"), 0);
}

#[test]
fn a_change_one_table_cannot_take_stops_that_table_only() {
    let f = Fixture::new();
    let mut sink = f.open();
    let a = accounts();
    // No key and no old row (REPLICA IDENTITY DEFAULT on a keyless table, under figoutput).
    let log = rel(
        3,
        "public",
        "log",
        vec![
            col("at", "date", 1082, false),
            col("msg", "text", 25, false),
        ],
    );
    let line = |m: &str| vec![Value::Date("2024-01-01".into()), text(m)];
    let acct = |id: i64, b: &str| vec![Value::Int(id), text("o"), num(b)];
    sink.write(
        &[tx(
            100,
            &[&a, &log],
            vec![ins(&a, acct(1, "1.00")), ins(&log, line("one"))],
        )],
        &ckpt(108),
    )
    .unwrap();
    // One transaction: the keyless delete, then more changes of both tables.
    sink.write(
        &[
            tx(
                200,
                &[&a, &log],
                vec![
                    change(&log, Op::Delete, None, None),
                    ins(&a, acct(2, "2.00")),
                    ins(&log, line("two")),
                ],
            ),
            tx(
                300,
                &[&a, &log],
                vec![upd(&a, None, acct(1, "9.99")), ins(&log, line("three"))],
            ),
        ],
        &ckpt(308),
    )
    .unwrap();
    assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(308)));
    // The other table streamed on.
    assert_eq!(
        f.rows("SELECT id, balance FROM \"public.accounts\" ORDER BY id"),
        vec![vec![i(1), t("9.99")], vec![i(2), t("2.00")]]
    );
    // The keyless table's mirror stopped where it was; its changes are all in the history.
    assert_eq!(f.count("public.log"), 1);
    assert_eq!(
        f.rows("SELECT commit_lsn, op FROM _fig_changes WHERE \"table\" = 'log' ORDER BY commit_lsn, ordinal"),
        vec![
            vec![i(100), t("insert")],
            vec![i(200), t("delete")],
            vec![i(200), t("insert")],
            vec![i(300), t("insert")],
        ]
    );
    let states = states_of_file(&f.path).unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].name(), "public.log");
    assert_eq!((states[0].since, states[0].since_ordinal), (Lsn(200), 0));
    assert!(
        states[0].reason.contains("REPLICA IDENTITY FULL"),
        "{states:?}"
    );
    // Reopened, the sink still knows: later changes of the table stay out of its mirror.
    drop(sink);
    let mut sink = f.open();
    sink.write(
        &[tx(400, &[&log], vec![ins(&log, line("four"))])],
        &ckpt(408),
    )
    .unwrap();
    assert_eq!(f.count("public.log"), 1);
    assert_eq!(states_of_file(&f.path).unwrap().len(), 1);
}

#[test]
fn reading_table_states_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.sqlite");
    assert!(states_of_file(&missing).is_err());
    assert!(
        !missing.exists(),
        "a mistyped path must not create a sink file"
    );
}

#[test]
fn grouped_inserts_keep_order_with_the_changes_between_them_in_every_mirror() {
    let f = Fixture::new();
    let mut sink = f.open();
    let a = accounts();
    let log = rel(
        5,
        "public",
        "log",
        vec![col("n", "int8", 20, false), col("msg", "text", 25, false)],
    );
    let group = mirror::Plan::new(Arc::clone(&a), "rowid").group_rows;
    assert!(group > 1, "the accounts mirror inserts in groups");
    // Runs of inserts longer than a group, broken by another mirror's inserts; then an update, a
    // delete and a truncate of rows still waiting in a group (they must be stored first), and a key
    // inserted twice (the upsert keeps the later row).
    let n = 3 * group as i64 + 5;
    let mut changes = Vec::new();
    for id in 1..=n {
        changes.push(ins(&a, row(id, &format!("a{id}"), "1")));
        if id % 7 == 0 {
            changes.push(ins(&log, vec![Value::Int(id), text("seen")]));
        }
    }
    // Stored rows, then rows still waiting in a group when the next change comes.
    changes.push(upd(&a, None, row(2, "updated", "2")));
    changes.push(del(&a, vec![Value::Int(3)]));
    changes.push(ins(&a, row(n + 1, "waiting", "1")));
    changes.push(ins(&a, row(n + 2, "waiting", "1")));
    changes.push(upd(&a, None, row(n + 1, "updated", "2")));
    changes.push(del(&a, vec![Value::Int(n + 2)]));
    changes.push(ins(&a, row(n + 3, "first", "1")));
    changes.push(ins(&a, row(n + 3, "second", "2")));
    changes.push(ins(&log, vec![Value::Int(n + 3), text("waiting")]));
    changes.push(trunc(&log));
    changes.push(ins(&log, vec![Value::Int(0), text("after truncate")]));
    let t1 = tx(100, &[&a, &log], changes);
    let total = t1.changes.len() as i64;
    sink.write(&[t1], &ckpt(108)).unwrap();
    assert_eq!(f.count("public.accounts"), n + 1);
    assert_eq!(
        f.rows(&format!(
            "SELECT id, name, balance FROM \"public.accounts\" WHERE id IN (1, 2, 3, {}, {}, {}) ORDER BY id",
            n + 1,
            n + 2,
            n + 3
        )),
        vec![
            vec![i(1), t("a1"), t("1")],
            vec![i(2), t("updated"), t("2")],
            vec![i(n + 1), t("updated"), t("2")],
            vec![i(n + 3), t("second"), t("2")],
        ]
    );
    assert_eq!(
        f.rows("SELECT n, msg FROM \"public.log\""),
        vec![vec![i(0), t("after truncate")]]
    );
    assert_eq!(f.count("_fig_changes"), total);
}

#[test]
fn keyless_tables_are_multisets_and_need_the_full_old_row() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = rel(
        4,
        "public",
        "log",
        vec![
            col("at", "date", 1082, false),
            col("msg", "text", 25, false),
        ],
    );
    let line = |m: &str| vec![Value::Date("2024-01-01".into()), text(m)];
    sink.write(
        &[tx(
            100,
            &[&r],
            vec![
                ins(&r, line("dup")),
                ins(&r, line("dup")),
                ins(&r, line("one")),
                // REPLICA IDENTITY FULL: the old row comes whole.
                upd(&r, Some(line("dup")), line("changed")),
                del(&r, line("one")),
            ],
        )],
        &ckpt(108),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT msg FROM \"public.log\" ORDER BY msg"),
        vec![vec![t("changed")], vec![t("dup")]]
    );
    // Without the old row the update cannot be matched: the table goes out of sync, named.
    sink.write(
        &[tx(200, &[&r], vec![upd(&r, None, line("x"))])],
        &ckpt(208),
    )
    .unwrap();
    let states = states_of_file(&f.path).unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(
        states[0].reason.contains("REPLICA IDENTITY FULL"),
        "{states:?}"
    );
    assert!(states[0].reason.contains("update"), "{states:?}");
    assert_eq!(f.count("public.log"), 2);
}

#[test]
fn replica_identity_full_as_pgoutput_reports_it_keeps_duplicate_rows() {
    // pgoutput flags every column as a key column under REPLICA IDENTITY FULL.
    let f = Fixture::new();
    let mut sink = f.open();
    let r = rel(
        4,
        "public",
        "pairs",
        vec![col("a", "integer", 23, true), col("b", "integer", 23, true)],
    );
    let p = |a, b| vec![Value::Int(a), Value::Int(b)];
    sink.write(
        &[tx(
            100,
            &[&r],
            vec![
                ins(&r, p(1, 1)),
                ins(&r, p(1, 1)),
                del(&r, p(1, 1)),
                upd(&r, Some(p(1, 1)), p(2, 2)),
            ],
        )],
        &ckpt(108),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT a, b FROM \"public.pairs\""),
        vec![vec![i(2), i(2)]]
    );
    assert_eq!(sink.current_row(&r, &p(2, 2)).unwrap(), Some(p(2, 2)));
}

#[test]
fn a_key_change_of_the_relation_rebuilds_the_index() {
    let f = Fixture::new();
    let mut sink = f.open();
    let by_id = rel(
        6,
        "public",
        "t",
        vec![
            col("id", "integer", 23, true),
            col("code", "text", 25, false),
        ],
    );
    let by_code = rel(
        6,
        "public",
        "t",
        vec![
            col("id", "integer", 23, false),
            col("code", "text", 25, true),
        ],
    );
    sink.write(
        &[tx(
            100,
            &[&by_id],
            vec![ins(&by_id, vec![Value::Int(1), text("A")])],
        )],
        &ckpt(108),
    )
    .unwrap();
    sink.write(
        &[tx(
            200,
            &[&by_code],
            vec![ins(&by_code, vec![Value::Int(2), text("A")])],
        )],
        &ckpt(208),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id, code FROM \"public.t\""),
        vec![vec![i(2), t("A")]]
    );
}

#[test]
fn another_source_is_refused() {
    let f = Fixture::new();
    let mut sink = f.open();
    sink.write(&[], &ckpt(100)).unwrap();
    let mut other = ckpt(200);
    other.system_id = 1;
    let e = sink.write(&[], &other).unwrap_err();
    assert!(
        matches!(
            e,
            SinkError::SourceMismatch {
                field: "system identifier",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(f.open().checkpoint().unwrap(), Some(ckpt(100)));
}

#[test]
fn a_file_from_a_newer_version_is_refused() {
    let f = Fixture::new();
    drop(f.open());
    f.reader()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    assert!(matches!(
        SqliteSink::open(&f.path),
        Err(SinkError::NewerFormat { found: 99, .. })
    ));
}

#[test]
fn key_lookups_use_the_index() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    sink.write(
        &[tx(100, &[&r], vec![ins(&r, row(1, "a", "1"))])],
        &ckpt(108),
    )
    .unwrap();
    let plan = Plan::new(Arc::clone(&r), "rowid");
    let detail: Vec<String> = f
        .reader()
        .prepare(&format!("EXPLAIN QUERY PLAN {}", plan.delete))
        .unwrap()
        .query_map([1], |row| row.get(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(
        detail.iter().any(|d| d.contains("USING INDEX")),
        "{detail:?}"
    );
}

/// Crash safety (DESIGN.md rule 2): a writer killed with SIGKILL at a random moment leaves a file whose
/// checkpoint covers exactly the transactions stored, each once.
#[test]
fn a_killed_writer_leaves_exactly_what_its_checkpoint_covers() {
    let f = Fixture::new();
    let mut checked = 0;
    for round in 0..3u64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sink::sqlite::tests::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FIG_SINK_CRASH_DB", &f.path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300 + 170 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let sink = f.open();
        let Some(c) = sink.checkpoint().unwrap() else {
            continue;
        };
        // Transaction k has commit LSN 1000*k, end LSN 1000*k + 8, and k rows % 5 + 1 rows.
        let last_k = (c.commit_end_lsn.as_u64() - 8) / 1000;
        let expected: i64 = (1..=last_k).map(|k| (k % 5 + 1) as i64).sum();
        assert_eq!(
            f.count("_fig_changes"),
            expected,
            "round {round}, checkpoint {}",
            c.commit_end_lsn
        );
        let max: Option<i64> = f
            .reader()
            .query_row("SELECT max(commit_lsn) FROM _fig_changes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(max, Some(last_k as i64 * 1000));
        assert_eq!(f.count("public.accounts"), expected);
        checked += 1;
    }
    assert!(
        checked > 0,
        "the writer never committed a batch before it was killed"
    );
}

/// The writer `a_killed_writer_leaves_exactly_what_its_checkpoint_covers` kills; does nothing unless
/// started by it.
#[test]
#[ignore = "run by a_killed_writer_leaves_exactly_what_its_checkpoint_covers"]
fn crash_child() {
    let Some(path) = std::env::var_os("FIG_SINK_CRASH_DB") else {
        return;
    };
    let mut sink = SqliteSink::open(path).unwrap();
    let r = accounts();
    let mut k = sink
        .checkpoint()
        .unwrap()
        .map_or(0, |c| (c.commit_end_lsn.as_u64() - 8) / 1000);
    loop {
        let batch: Vec<Transaction> = (k + 1..=k + 7)
            .map(|k| {
                let rows = (0..k % 5 + 1)
                    .map(|j| ins(&r, row((k * 10 + j) as i64, "crash", "1")))
                    .collect();
                tx(k * 1000, &[&r], rows)
            })
            .collect();
        k += 7;
        sink.write(&batch, &ckpt(k * 1000 + 8)).unwrap();
    }
}

/// Insert throughput of 7-column rows in batches of 2,000 (history and mirror both written):
/// `cargo test --release -p fig-receiver --lib sqlite_insert_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run it in release"]
fn sqlite_insert_throughput() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = rel(
        11,
        "public",
        "payments",
        vec![
            col("id", "bigint", 20, true),
            col("account_id", "bigint", 20, false),
            col("amount", "numeric(18,2)", 1700, false),
            col("currency", "text", 25, false),
            col("status", "text", 25, false),
            col("created_at", "timestamp with time zone", 1184, false),
            col("fee", "double precision", 701, false),
        ],
    );
    let (batches, per_batch, per_tx) = (50u64, 2_000u64, 100u64);
    let mut prepared = Vec::new();
    for b in 0..batches {
        let txs: Vec<Transaction> = (0..per_batch / per_tx)
            .map(|x| {
                let n = b * per_batch / per_tx + x + 1;
                let rows = (0..per_tx)
                    .map(|j| {
                        let id = (n * per_tx + j) as i64;
                        ins(
                            &r,
                            vec![
                                Value::Int(id),
                                Value::Int(id % 977),
                                num("1234.56"),
                                text("EUR"),
                                text("settled"),
                                Value::Timestamptz("2024-05-01T12:00:00.000123Z".into()),
                                Value::Float(0.25),
                            ],
                        )
                    })
                    .collect();
                tx(n * 1000, &[&r], rows)
            })
            .collect();
        prepared.push(txs);
    }
    let start = std::time::Instant::now();
    for txs in &prepared {
        let end = txs.last().unwrap().end_lsn;
        sink.write(txs, &ckpt(end.as_u64())).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let rows = batches * per_batch;
    println!(
        "sqlite sink: {rows} rows in {batches} batches of {per_batch} in {secs:.2}s = {:.0} rows/s (target: well over 50000)",
        rows as f64 / secs
    );
    assert_eq!(f.count("_fig_changes"), rows as i64);
}

/// What a sink file holds, for comparing two files: history, schema history, one mirror, checkpoint.
fn contents(f: &Fixture, mirror: &str) -> Vec<Vec<Vec<rusqlite::types::Value>>> {
    vec![
        f.rows("SELECT * FROM _fig_changes ORDER BY commit_lsn, ordinal"),
        f.rows("SELECT * FROM _fig_schema ORDER BY relid, effective_lsn, effective_ordinal"),
        f.rows(&format!(
            "SELECT * FROM {} ORDER BY 1, 2",
            mirror::quote(mirror)
        )),
        f.rows("SELECT system_id, timeline, slot, plugin, commit_end_lsn FROM _fig_checkpoint"),
    ]
}

#[test]
fn a_streamed_transaction_lands_exactly_as_the_same_one_in_a_batch() {
    let v1 = accounts();
    let mut v2 = (*v1).clone();
    v2.columns.push(col("note", "text", 25, false));
    let v2 = Arc::new(v2);
    let body = "y".repeat(5_000);
    let first = tx(
        100,
        &[&v1],
        vec![ins(&v1, row(1, "a", "1")), ins(&v1, row(2, "b", "2"))],
    );
    let mut large = tx(
        200,
        &[&v1],
        vec![
            upd(&v1, None, vec![Value::Int(1), Value::Null, num("1.5")]),
            del(&v1, vec![Value::Int(2)]),
            ins(&v1, row(3, &body, "3")),
            ins(&v2, vec![Value::Int(4), text("d"), num("4"), text("n")]),
            upd(
                &v2,
                Some(vec![Value::Int(3)]),
                vec![Value::Int(5), Value::Null, num("5"), text("m")],
            ),
        ],
    );
    large.relation_changes.push(RelationChange {
        from_ordinal: 3,
        relation: Arc::clone(&v2),
    });
    for ordinal in [0, 4] {
        large.unchanged_toast.push(ToastGap {
            ordinal,
            columns: vec![1],
        });
    }
    let batched = Fixture::new();
    let mut sink = batched.open();
    sink.write(std::slice::from_ref(&first), &ckpt(108))
        .unwrap();
    sink.write(std::slice::from_ref(&large), &ckpt(208))
        .unwrap();

    let streamed = Fixture::new();
    let mut sink = streamed.open();
    sink.write(&[first], &ckpt(108)).unwrap();
    let mut pieces = pieces(&large).into_iter().map(Ok);
    sink.write_large(&large.head(), &mut pieces, &ckpt(208))
        .unwrap();
    assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(208)));

    assert_eq!(
        contents(&streamed, "public.accounts"),
        contents(&batched, "public.accounts")
    );
    assert_eq!(
        streamed.rows("SELECT id, length(name), note FROM \"public.accounts\" ORDER BY id"),
        vec![
            vec![i(1), i(1), rusqlite::types::Value::Null],
            vec![i(4), i(1), t("n")],
            vec![i(5), i(5_000), t("m")]
        ],
        "unchanged TOAST filled from the mirror as the stream left it"
    );
}

#[test]
fn a_large_transaction_failing_midway_leaves_neither_data_nor_checkpoint() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    sink.write(
        &[tx(100, &[&r], vec![ins(&r, row(-1, "a", "1"))])],
        &ckpt(108),
    )
    .unwrap();

    // The pipeline fails after 1,000 changes were applied inside the SQLite transaction.
    let e = sink
        .write_large(
            &head(200),
            &mut streamed_inserts(200, 5_000, Some(1_000)),
            &ckpt(208),
        )
        .unwrap_err();
    assert!(matches!(e, SinkError::Upstream { .. }), "{e}");
    assert_eq!(e.kind(), SinkErrorKind::Upstream);
    assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(108)));
    assert_eq!(f.count("public.accounts"), 1);
    assert_eq!(f.count("_fig_changes"), 1);

    // Everything applied, then a failure right before COMMIT: still nothing.
    sink.fail_before_commit = true;
    sink.write_large(
        &head(200),
        &mut streamed_inserts(200, 5_000, None),
        &ckpt(208),
    )
    .unwrap_err();
    sink.fail_before_commit = false;
    assert_eq!(f.count("_fig_changes"), 1);
    assert_eq!(
        SqliteSink::open(&f.path).unwrap().checkpoint().unwrap(),
        Some(ckpt(108))
    );

    // A change of the wrong width midway: refused whole, like a batch.
    let mut bad = streamed_inserts(200, 5_000, None).map(|p| match p {
        Ok(Piece::Change {
            mut change,
            unchanged_toast,
        }) if change.ordinal == 4_000 => {
            change.after = Some(vec![Value::Int(1)]);
            Ok(Piece::Change {
                change,
                unchanged_toast,
            })
        }
        other => other,
    });
    let e = sink
        .write_large(&head(200), &mut bad, &ckpt(208))
        .unwrap_err();
    assert!(
        matches!(e, SinkError::ValueCount { ordinal: 4_000, .. }),
        "{e}"
    );
    assert_eq!(f.count("public.accounts"), 1);

    // Retried whole, it lands whole.
    sink.write_large(
        &head(200),
        &mut streamed_inserts(200, 5_000, None),
        &ckpt(208),
    )
    .unwrap();
    assert_eq!(f.count("public.accounts"), 5_001);
    assert_eq!(
        f.rows(
            "SELECT count(*), min(ordinal), max(ordinal) FROM _fig_changes WHERE commit_lsn = 200"
        ),
        vec![vec![i(5_000), i(0), i(4_999)]]
    );
    assert_eq!(
        SqliteSink::open(&f.path).unwrap().checkpoint().unwrap(),
        Some(ckpt(208))
    );
}

#[test]
fn a_covered_large_transaction_is_skipped_without_reading_it() {
    let f = Fixture::new();
    let mut sink = f.open();
    sink.write_large(
        &head(200),
        &mut streamed_inserts(200, 100, None),
        &ckpt(208),
    )
    .unwrap();
    let untouchable = || {
        std::iter::from_fn(|| -> Option<Result<Piece, SinkError>> {
            panic!("a covered transaction's pieces are not read")
        })
    };
    sink.write_large(&head(200), &mut untouchable(), &ckpt(208))
        .unwrap();
    // Covered, offered with a newer checkpoint (idle keepalive after it): the checkpoint moves.
    sink.write_large(&head(200), &mut untouchable(), &ckpt(300))
        .unwrap();
    assert_eq!(sink.checkpoint().unwrap(), Some(ckpt(300)));
    assert_eq!(f.count("_fig_changes"), 100);
    // A checkpoint that does not cover the transaction is a pipeline bug.
    let e = sink
        .write_large(&head(400), &mut streamed_inserts(400, 1, None), &ckpt(400))
        .unwrap_err();
    assert!(matches!(e, SinkError::CheckpointBehindBatch { .. }), "{e}");
}

#[test]
fn a_resync_swaps_in_once_the_stream_reached_it_and_replays_the_changes_since() {
    use crate::sink::{Load, LoadMode, RowsAtHand};
    let f = Fixture::new();
    let mut sink = f.open();
    let r = docs();
    let row = |id: i64, title: &str, body: &str| vec![Value::Int(id), text(title), text(body)];
    let gap = |t: &mut Transaction, ordinal: u32| {
        t.unchanged_toast.push(ToastGap {
            ordinal,
            columns: vec![2],
        })
    };
    sink.write(
        &[tx(100, &[&r], vec![ins(&r, row(1, "a", "B1"))])],
        &ckpt(108),
    )
    .unwrap();
    // Row 2 was never seen (say, the table was added later): its TOAST gap cannot be filled.
    let mut t120 = tx(120, &[&r], vec![upd(&r, None, row(2, "t2", ""))]);
    gap(&mut t120, 0);
    sink.write(&[t120], &ckpt(128)).unwrap();
    assert_eq!(states_of_file(&f.path).unwrap().len(), 1);

    // The re-copy, read at 130: the source then held rows 1 and 2.
    let load = Load {
        relation: Arc::clone(&r),
        mode: LoadMode::Replace,
        position: Lsn(130),
        snapshot: "resync-test".into(),
        sync: load::RESYNC,
        chunk_blocks: 0,
        partitions: None,
    };
    assert_eq!(sink.load_begin(&load).unwrap(), None);
    let copied = vec![row(1, "a", "B1"), row(2, "t2", "B2")];
    sink.load_chunk(
        &load,
        0,
        &mut RowsAtHand::new(copied.into_iter().map(Ok)),
        None,
    )
    .unwrap();
    // The stream has not reached 130 yet: the copy waits.
    let e = sink.load_finish(&load).unwrap_err();
    assert!(matches!(e, SinkError::ResyncAhead { .. }), "{e}");
    assert_eq!(e.kind(), SinkErrorKind::NotYet);

    // Changes after 130, while the table is still out of sync: history only, TOAST gaps unfilled.
    let mut t140 = tx(
        140,
        &[&r],
        vec![
            upd(&r, None, row(2, "t3", "")),
            upd(&r, None, row(1, "a2", "")),
            ins(&r, row(3, "c", "B3")),
            del(&r, vec![Value::Int(3)]),
            ins(&r, row(4, "d", "B4")),
        ],
    );
    gap(&mut t140, 0);
    gap(&mut t140, 1);
    sink.write(&[t140], &ckpt(148)).unwrap();
    assert_eq!(
        f.rows("SELECT after FROM _fig_changes WHERE commit_lsn = 140 AND ordinal = 0"),
        vec![vec![t(r#"{"id":2,"title":"t3"}"#)]]
    );

    assert_eq!(sink.load_finish(&load).unwrap(), 2);
    assert_eq!(
        f.rows("SELECT id, title, body FROM \"public.docs\" ORDER BY id"),
        vec![
            vec![i(1), t("a2"), t("B1")],
            vec![i(2), t("t3"), t("B2")],
            vec![i(4), t("d"), t("B4")],
        ]
    );
    assert!(states_of_file(&f.path).unwrap().is_empty(), "in sync again");

    // In sync, the stream applies to the mirror again (and fills TOAST from it).
    let mut t200 = tx(200, &[&r], vec![upd(&r, None, row(2, "t4", ""))]);
    gap(&mut t200, 0);
    sink.write(&[t200], &ckpt(208)).unwrap();
    assert_eq!(
        f.rows("SELECT title, body FROM \"public.docs\" WHERE id = 2"),
        vec![vec![t("t4"), t("B2")]]
    );
}

#[test]
fn a_schema_name_sqlite_reserves_gets_an_escaped_mirror() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = rel(
        11,
        "SQLite_x",
        "t",
        vec![col("id", "integer", 23, true), col("v", "text", 25, false)],
    );
    sink.write(
        &[tx(
            100,
            &[&r],
            vec![ins(&r, vec![Value::Int(1), text("a")])],
        )],
        &ckpt(108),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id, v FROM \"_SQLite_x.t\""),
        vec![vec![i(1), t("a")]]
    );
    assert!(states_of_file(&f.path).unwrap().is_empty());
}

#[test]
fn storage_failures_are_told_from_statements_sqlite_refuses() {
    let conn = Connection::open_in_memory().unwrap();
    let refused = conn.execute_batch("CREATE TABLE sqlite_x (a)").unwrap_err();
    assert!(!crate::sink::is_storage_failure(&refused), "{refused}");
    let e = sql_err(Path::new("x"), "creating", refused);
    assert_eq!(e.kind(), SinkErrorKind::Rejected);
    let full =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
    assert!(crate::sink::is_storage_failure(&full));
    assert_eq!(
        sql_err(Path::new("x"), "committing", full).kind(),
        SinkErrorKind::Storage
    );
}

#[test]
fn tables_that_missed_the_copy_or_changed_shape_wait_for_a_re_copy_with_their_mirror_kept() {
    use crate::sink::{Load, LoadMode, RowsAtHand};
    let f = Fixture::new();
    let mut sink = f.open();
    let a = accounts();
    let copied = Load {
        relation: Arc::clone(&a),
        mode: LoadMode::Replace,
        position: Lsn(50),
        snapshot: "s".into(),
        sync: "cdc-initial",
        chunk_blocks: 0,
        partitions: None,
    };
    sink.load_begin(&copied).unwrap();
    let rows = vec![vec![Value::Int(1), text("o"), num("1.00")]];
    sink.load_chunk(
        &copied,
        0,
        &mut RowsAtHand::new(rows.into_iter().map(Ok)),
        None,
    )
    .unwrap();
    sink.load_finish(&copied).unwrap();
    // `docs` first appears in the stream after the initial copy: its earlier rows were never copied.
    let d = docs();
    sink.write(
        &[tx(
            100,
            &[&a, &d],
            vec![
                ins(&a, vec![Value::Int(2), text("p"), num("2.00")]),
                ins(&d, vec![Value::Int(1), text("t"), text("B")]),
            ],
        )],
        &ckpt(108),
    )
    .unwrap();
    let states = states_of_file(&f.path).unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(
        (states[0].name(), states[0].state.as_str()),
        ("public.docs".into(), COPY_PENDING)
    );
    // The mirror is still kept up to date meanwhile.
    assert_eq!(f.count("public.docs"), 1);
    // A TOAST gap is filled for the mirror but left out of the history (the mirror is not trusted).
    let txn = body_unchanged(&d, 200, 1, "t2");
    sink.write(&[txn], &ckpt(208)).unwrap();
    assert_eq!(
        f.rows("SELECT title, body FROM \"public.docs\""),
        vec![vec![t("t2"), t("B")]]
    );
    assert_eq!(
        f.rows("SELECT after FROM _fig_changes WHERE commit_lsn = 200"),
        vec![vec![t(r#"{"id":1,"title":"t2"}"#)]]
    );
    // A column added to the copied table may have filled its rows without row changes.
    let mut a2 = (*a).clone();
    a2.columns.push(col("region", "text", 25, false));
    let a2 = Arc::new(a2);
    sink.write(
        &[tx(
            300,
            &[&a2],
            vec![ins(
                &a2,
                vec![Value::Int(3), text("q"), num("3.00"), text("eu")],
            )],
        )],
        &ckpt(308),
    )
    .unwrap();
    let states = states_of_file(&f.path).unwrap();
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(
        states[0].name() == "public.accounts" && states[0].reason.contains("schema change"),
        "{states:?}"
    );
    assert_eq!(f.count("public.accounts"), 3);
    // A failure on a table waiting for its copy stops its mirror: out of sync overrides.
    let txn = body_unchanged(&d, 400, 9, "x");
    sink.write(&[txn], &ckpt(408)).unwrap();
    let docs_state = states_of_file(&f.path)
        .unwrap()
        .into_iter()
        .find(|s| s.table == "docs")
        .unwrap();
    assert_eq!(docs_state.state, OUT_OF_SYNC);
    assert_eq!(docs_state.since, Lsn(400));
}

#[test]
fn history_lsns_read_the_postgresql_way_too() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    let lsn = 0x1_6B37_4D48;
    sink.write(
        &[tx(
            lsn,
            &[&r],
            vec![ins(&r, vec![Value::Int(1), text("a"), num("1")])],
        )],
        &ckpt(lsn + 8),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT commit_lsn_text FROM _fig_changes"),
        vec![vec![t(&Lsn(lsn).to_string())]]
    );
    assert_eq!(Lsn(lsn).to_string(), "1/6B374D48");
    assert_eq!(
        f.rows("SELECT effective_lsn_text FROM _fig_schema"),
        vec![vec![t("1/6B374D48")]]
    );
}

#[test]
fn a_type_change_undeclares_the_column_so_nothing_is_converted() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    sink.write(
        &[tx(
            100,
            &[&r],
            vec![ins(&r, vec![Value::Int(1), text("a"), num("10.50")])],
        )],
        &ckpt(108),
    )
    .unwrap();
    // balance: numeric → bigint at the source.
    let mut r2 = (*r).clone();
    r2.columns[2] = col("balance", "bigint", 20, false);
    let r2 = Arc::new(r2);
    sink.write(
        &[tx(
            200,
            &[&r2],
            vec![ins(&r2, vec![Value::Int(2), text("b"), Value::Int(20)])],
        )],
        &ckpt(208),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT id, typeof(balance), balance FROM \"public.accounts\" ORDER BY id"),
        vec![
            vec![i(1), t("text"), t("10.50")],
            vec![i(2), t("integer"), i(20)],
        ]
    );
    // The key index came back with the rebuilt table.
    assert_eq!(
        f.rows("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'public.accounts'"),
        vec![vec![i(1)]]
    );
}

#[test]
fn a_re_copy_read_before_a_later_cause_leaves_the_table_waiting() {
    use crate::sink::{Load, LoadMode, RowsAtHand};
    let f = Fixture::new();
    let mut sink = f.open();
    let r = docs();
    let row = |id: i64, title: &str| vec![Value::Int(id), text(title), text("B")];
    sink.write(&[tx(100, &[&r], vec![ins(&r, row(1, "a"))])], &ckpt(108))
        .unwrap();
    // Out of sync at 120 (a TOAST gap with no row), then, after the copy's position 130, a new
    // cause at 140 (a column added: its rows may hold a default the stream never sent).
    let t120 = body_unchanged(&r, 120, 2, "x");
    sink.write(&[t120], &ckpt(128)).unwrap();
    let load = Load {
        relation: Arc::clone(&r),
        mode: LoadMode::Replace,
        position: Lsn(130),
        snapshot: "s".into(),
        sync: load::RESYNC,
        chunk_blocks: 0,
        partitions: None,
    };
    sink.load_begin(&load).unwrap();
    let rows = vec![row(1, "a"), vec![Value::Int(2), text("x"), text("B2")]];
    sink.load_chunk(
        &load,
        0,
        &mut RowsAtHand::new(rows.into_iter().map(Ok)),
        None,
    )
    .unwrap();
    let mut r2 = (*r).clone();
    r2.columns.push(col("extra", "integer", 23, false));
    let r2 = Arc::new(r2);
    sink.write(
        &[tx(
            140,
            &[&r2],
            vec![ins(
                &r2,
                vec![Value::Int(3), text("c"), text("B3"), Value::Int(5)],
            )],
        )],
        &ckpt(148),
    )
    .unwrap();
    sink.load_finish(&load).unwrap();
    let states = states_of_file(&f.path).unwrap();
    assert_eq!(
        states.len(),
        1,
        "the cause at 140 is not settled by a copy read at 130: {states:?}"
    );
    assert_eq!(
        f.count("public.docs"),
        3,
        "the replay applied the change at 140"
    );
}

#[test]
fn a_renamed_table_keeps_its_state_and_dotted_names_never_share_one() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = docs();
    let t = body_unchanged(&r, 100, 1, "x");
    sink.write(&[t], &ckpt(108)).unwrap();
    // Renamed at the source: same relid, new name. The mirror follows, and so does the state.
    let mut renamed = (*r).clone();
    renamed.table = "documents".into();
    let renamed = Arc::new(renamed);
    sink.write(
        &[tx(
            200,
            &[&renamed],
            vec![ins(&renamed, vec![Value::Int(2), text("y"), text("B")])],
        )],
        &ckpt(208),
    )
    .unwrap();
    let states = states_of_file(&f.path).unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].name(), "public.documents");
    assert_eq!(states[0].state, OUT_OF_SYNC);
    assert_eq!(
        f.count("public.documents"),
        0,
        "still out of sync: the mirror is not written"
    );
    // "a.b"."c" and "a"."b.c" share a mirror name, not a state: the one that owns the mirror
    // streams on.
    let ab_c = rel(
        21,
        "a.b",
        "c",
        vec![col("id", "integer", 23, true), col("v", "text", 25, false)],
    );
    let a_bc = rel(
        22,
        "a",
        "b.c",
        vec![col("id", "integer", 23, true), col("v", "text", 25, false)],
    );
    sink.write(
        &[tx(
            300,
            &[&ab_c],
            vec![ins(&ab_c, vec![Value::Int(1), text("first")])],
        )],
        &ckpt(308),
    )
    .unwrap();
    sink.write(
        &[tx(
            400,
            &[&a_bc],
            vec![ins(&a_bc, vec![Value::Int(1), text("second")])],
        )],
        &ckpt(408),
    )
    .unwrap();
    sink.write(
        &[tx(
            500,
            &[&ab_c],
            vec![ins(&ab_c, vec![Value::Int(2), text("more")])],
        )],
        &ckpt(508),
    )
    .unwrap();
    assert_eq!(f.count("a.b.c"), 2, "the owner of the mirror streams on");
    let states = states_of_file(&f.path).unwrap();
    assert!(
        states.iter().any(|s| s.schema == "a" && s.table == "b.c"),
        "{states:?}"
    );
    assert!(!states.iter().any(|s| s.schema == "a.b"), "{states:?}");
}

#[test]
fn messages_are_stored_once_in_batches_and_streamed_with_their_place() {
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    let message = |lsn: u64, ordinal: u32, transactional: bool| crate::sink::MessageAt {
        ordinal,
        message: crate::model::Message {
            lsn: Lsn(lsn),
            transactional,
            prefix: "audit".into(),
            content: vec![0xff, lsn as u8],
        },
    };
    let mut t1 = tx(100, &[&r], vec![ins(&r, row(1, "a", "1"))]);
    t1.messages.push(message(90, 1, true));
    // A non-transactional message: a unit of its own.
    let mut alone = tx(150, &[], vec![]);
    alone.xid = 0;
    alone.end_lsn = Lsn(150);
    alone.messages.push(message(150, 0, false));
    sink.write(&[t1.clone(), alone.clone()], &ckpt(150))
        .unwrap();
    // Replayed after a restart: covered, skipped.
    sink.write(&[t1, alone], &ckpt(150)).unwrap();
    let mut large = tx(
        200,
        &[&r],
        vec![ins(&r, row(2, "b", "2")), ins(&r, row(3, "c", "3"))],
    );
    large.messages.push(message(180, 1, true));
    sink.write_large(
        &large.head(),
        &mut pieces(&large).into_iter().map(Ok),
        &ckpt(208),
    )
    .unwrap();
    let null = rusqlite::types::Value::Null;
    let blob = |b: u8| rusqlite::types::Value::Blob(vec![0xff, b]);
    assert_eq!(
        f.rows("SELECT lsn, commit_lsn, next_ordinal, xid, commit_time IS NULL, transactional, prefix, content, lsn_text FROM _fig_messages ORDER BY lsn"),
        vec![
            vec![i(90), i(100), i(1), i(100), i(0), i(1), t("audit"), blob(90), t("0/5A")],
            vec![i(150), i(150), i(0), null.clone(), i(1), i(0), t("audit"), blob(150), t("0/96")],
            vec![i(180), i(200), i(1), i(200), i(0), i(1), t("audit"), blob(180), t("0/B4")],
        ]
    );
}

#[test]
fn a_new_sink_file_and_its_wal_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let mut sink = f.open();
    let r = accounts();
    sink.write(
        &[tx(
            0x100,
            &[&r],
            vec![ins(&r, vec![Value::Int(1), text("a"), num("1")])],
        )],
        &ckpt(0x108),
    )
    .unwrap();
    let mut wal = f.path.as_os_str().to_owned();
    wal.push("-wal");
    for p in [f.path.clone(), PathBuf::from(wal)] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
}

#[test]
fn a_keyless_mirror_hiding_every_rowid_name_gets_a_row_id_column_old_files_and_added_columns_too() {
    // SQLite: a table with columns rowid, _rowid_ and oid has no name left for its row id.
    let hiding = |relid: u32, table: &str, n: usize| {
        let mut cols = vec![
            col("OID", "integer", 23, false),
            col("_rowid_", "integer", 23, false),
            col("rowid", "integer", 23, false),
            col("v", "text", 25, false),
        ];
        cols.truncate(n);
        rel(relid, "public", table, cols)
    };
    let f = Fixture::new();
    let mut sink = f.open();
    // A mirror made before such mirrors got a row id column (an older fig-receiver).
    f.reader()
        .execute_batch(
            "CREATE TABLE \"public.old\" (\"OID\", _rowid_, rowid, v);
             INSERT INTO \"public.old\" VALUES (1,1,1,'a'),(1,1,1,'a'),(2,2,2,'x');",
        )
        .unwrap();
    let old = hiding(1, "old", 4);
    // Columns that hide every name only once the last one is added.
    let grown_before = hiding(2, "grown", 2);
    let grown = hiding(2, "grown", 4);
    let row = |a: i64, v: &str| vec![Value::Int(a), Value::Int(a), Value::Int(a), text(v)];
    sink.write(
        &[tx(
            100,
            &[&old, &grown_before],
            vec![
                change(&old, Op::Delete, Some(row(1, "a")), None),
                ins(&grown_before, vec![Value::Int(1), Value::Int(1)]),
                ins(&grown_before, vec![Value::Int(1), Value::Int(1)]),
            ],
        )],
        &ckpt(108),
    )
    .unwrap();
    sink.write(
        &[tx(
            200,
            &[&grown],
            vec![
                ins(&grown, row(2, "b")),
                change(
                    &grown,
                    Op::Delete,
                    Some(vec![Value::Int(1), Value::Int(1), Value::Null, Value::Null]),
                    None,
                ),
            ],
        )],
        &ckpt(208),
    )
    .unwrap();
    assert_eq!(
        f.rows("SELECT \"OID\", v FROM \"public.old\" ORDER BY 1"),
        vec![vec![i(1), t("a")], vec![i(2), t("x")]]
    );
    assert_eq!(
        f.rows("SELECT \"OID\", v FROM \"public.grown\" ORDER BY 1"),
        vec![vec![i(1), rusqlite::types::Value::Null], vec![i(2), t("b")]]
    );
    for mirror in ["public.old", "public.grown"] {
        assert_eq!(
            f.rows(&format!(
                "SELECT name FROM pragma_table_info('{mirror}') WHERE pk > 0"
            )),
            vec![vec![t("_fig_rowid")]],
            "{mirror}"
        );
    }
}
