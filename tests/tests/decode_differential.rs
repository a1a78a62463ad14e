//! One workload, two plugins, one result: the same changes read through a figoutput slot and a
//! pgoutput slot decode (with `fig_receiver::decode`) to identical events.
//!
//! The pgoutput side gets its values as text, so the SQL session that reads it is set up as the
//! receiver's replication connection is (TimeZone UTC, DateStyle ISO, extra_float_digits 3,
//! IntervalStyle postgres); its type registry is loaded with `TYPE_QUERY`. Differences that are the
//! protocols' and not the decoders' are normalized away, and each is named where it happens.

use fig_receiver::decode::{
    figoutput, pgoutput, FigState, PgState, TypeRegistry, TypeRow, TYPE_QUERY,
};
use fig_receiver::model::{Event, Incoming, Op, Value};
use fig_tests::every_type::{EVERY_TYPE_ROWS, EVERY_TYPE_SCHEMA};
use fig_tests::figoutput::{server_with_slot, server_with_slot_using};
use fig_tests::PgServer;

const SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 3;
                       SET IntervalStyle = 'postgres'";

fn changes(c: &mut postgres::Client, slot: &str, options: &[&str]) -> Vec<Vec<u8>> {
    let mut sql =
        String::from("SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL");
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&slot];
    for (i, o) in options.iter().enumerate() {
        sql.push_str(&format!(", ${}", i + 2));
        params.push(o);
    }
    sql.push(')');
    c.query(&sql, &params)
        .unwrap_or_else(|e| panic!("reading slot {slot}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn registry(c: &mut postgres::Client) -> TypeRegistry {
    let rows = c.query(TYPE_QUERY, &[]).expect("TYPE_QUERY");
    TypeRegistry::from_rows(rows.iter().map(|r| {
        TypeRow::from((
            r.get::<_, u32>(0),
            r.get::<_, String>(1),
            r.get::<_, i8>(2),
            r.get::<_, u32>(3),
            r.get::<_, u32>(4),
            r.get::<_, i8>(5),
            r.get::<_, i8>(6),
        ))
    }))
}

/// What differs by protocol, not by decoder: pgoutput has no NOT NULL flags and no attnums, figoutput alone sends
/// DDL records (its event trigger's capture), and pgoutput sends a relation again after any relcache
/// invalidation (a TRUNCATE, say) even when nothing changed; a description repeating the one in force
/// carries no information and is dropped.
fn normalize(events: Vec<Event>) -> Vec<Event> {
    let mut described = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in events {
        match e {
            Event::Ddl { .. } => {}
            Event::Relation(mut r) => {
                for c in &mut r.columns {
                    c.not_null = false;
                    c.attnum = None;
                }
                if described.get(&r.relid) != Some(&r) {
                    described.insert(r.relid, r.clone());
                    out.push(Event::Relation(r));
                }
            }
            e => out.push(e),
        }
    }
    out
}

/// NaN is NaN, whatever its bits; everything else compares exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        _ => a == b,
    }
}

fn same_row(a: &Option<Vec<Incoming>>, b: &Option<Vec<Incoming>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| match (x, y) {
                    (Incoming::Value(x), Incoming::Value(y)) => same_value(x, y),
                    _ => x == y,
                })
        }
        _ => false,
    }
}

fn same_event(a: &Event, b: &Event) -> bool {
    match (a, b) {
        (
            Event::Row {
                xid,
                op,
                relid,
                before,
                after,
            },
            Event::Row {
                xid: x2,
                op: o2,
                relid: r2,
                before: b2,
                after: a2,
            },
        ) => xid == x2 && op == o2 && relid == r2 && same_row(before, b2) && same_row(after, a2),
        _ => a == b,
    }
}

#[test]
fn figoutput_and_pgoutput_decode_to_identical_events() {
    let (_pg, mut c) = server_with_slot("fig");
    c.batch_execute(&format!(
        r#"{EVERY_TYPE_SCHEMA}
         CREATE TABLE full_t (k text, v int);
         ALTER TABLE full_t REPLICA IDENTITY FULL;
         CREATE TABLE nokey (a int, b text);
         CREATE PUBLICATION p FOR ALL TABLES;"#
    ))
    .unwrap();
    c.execute(
        "SELECT pg_create_logical_replication_slot('pgo', 'pgoutput')",
        &[],
    )
    .unwrap();
    // The setup's DDL is figoutput's alone; start both slots at the workload.
    changes(&mut c, "fig", &["format_version", "1"]);

    c.batch_execute(&format!(
        r#"{EVERY_TYPE_ROWS}
         UPDATE t SET b = NOT b WHERE id = 2;                -- big is unchanged TOAST
         UPDATE t SET id = 20, big = 'changed' WHERE id = 2; -- the key changed: old key tuple
         DELETE FROM t WHERE id = 1;
         INSERT INTO full_t VALUES ('k', 1), (NULL, 2);
         UPDATE full_t SET v = v + 1;
         DELETE FROM full_t WHERE k IS NULL;
         INSERT INTO nokey VALUES (1, 'x');
         BEGIN;
         INSERT INTO nokey VALUES (2, 'y');
         SELECT pg_logical_emit_message(true, 'app', 'in a transaction');
         COMMIT;
         SELECT pg_logical_emit_message(false, 'app', '\x00ff'::bytea);
         TRUNCATE full_t, nokey RESTART IDENTITY;"#
    ))
    .unwrap();

    let (fig, pgo) = decode_both(
        &mut c,
        &["format_version", "1"],
        &[
            "proto_version",
            "1",
            "publication_names",
            "p",
            "messages",
            "true",
        ],
    );
    // The workload covers what it means to: an unchanged TOAST value, a key-only old row, a full old
    // row, both kinds of message, a truncate.
    let has = |f: &dyn Fn(&Event) -> bool| fig.iter().any(f);
    assert!(has(
        &|e| matches!(e, Event::Row { after: Some(a), .. } if a.contains(&Incoming::UnchangedToast))
    ));
    assert!(has(
        &|e| matches!(e, Event::Row { op: Op::Update, before: Some(b), .. } if b[1] == Incoming::Value(Value::Null))
    ));
    assert!(has(
        &|e| matches!(e, Event::Row { op: Op::Update, before: Some(b), .. } if b.len() == 2)
    ));
    assert!(has(&|e| matches!(
        e,
        Event::Message {
            transactional: true,
            ..
        }
    )));
    assert!(has(&|e| matches!(
        e,
        Event::Message {
            transactional: false,
            ..
        }
    )));
    assert!(has(&|e| matches!(e, Event::Truncate { .. })));
    assert_same(&fig, &pgo);
}

#[test]
fn arrays_of_arrays_and_vectors_decode_identically() {
    let (_pg, mut c) = server_with_slot("fig");
    c.batch_execute(
        "CREATE DOMAIN intlist AS int[];
         CREATE TABLE nested (id int PRIMARY KEY, l intlist[], v int2vector, o oidvector,
                              vs int2vector[], os oidvector[], dl intlist);
         CREATE TABLE nested_full (l intlist[], vs int2vector[]);
         ALTER TABLE nested_full REPLICA IDENTITY FULL;
         CREATE PUBLICATION p FOR ALL TABLES;",
    )
    .unwrap();
    c.execute(
        "SELECT pg_create_logical_replication_slot('pgo', 'pgoutput')",
        &[],
    )
    .unwrap();
    changes(&mut c, "fig", &["format_version", "1"]);

    c.batch_execute(
        r#"INSERT INTO nested VALUES
             (1, '{"{1,2}","{}",NULL}', '3 1', '23 25', '{"1 2","",NULL,7}', '{23,"",NULL}', '{1,NULL}'),
             (2, '[0:1][1:2]={{"{1}","[0:1]={2,3}"},{NULL,"{{4},{5}}"}}', '', '', '{}', '{}', '{}'),
             (3, NULL, NULL, NULL, '[-1:0]={"",""}', ARRAY[NULL]::oidvector[], NULL),
             (4, '{}', '-32768 32767', '0 4294967295', ARRAY['1 2 3'::int2vector], '{"1 2"}', '[2:2]={9}');
           UPDATE nested SET v = '', vs = '{"",NULL}', l = '{"{}"}' WHERE id = 1;
           UPDATE nested SET id = 20, o = '1' WHERE id = 2;
           DELETE FROM nested WHERE id = 3;
           INSERT INTO nested_full VALUES ('{"{1}",NULL}', '{"1 2",""}'), ('{}', '{}');
           UPDATE nested_full SET vs = '{"5"}' WHERE l = '{"{1}",NULL}';
           DELETE FROM nested_full WHERE l = '{}';"#,
    )
    .unwrap();

    let (fig, pgo) = decode_both(
        &mut c,
        &["format_version", "1"],
        &["proto_version", "1", "publication_names", "p"],
    );
    // The workload covers what it means to: an array whose elements are arrays (and one of them
    // empty), empty vectors, and a full old row holding both.
    let rows: Vec<&Vec<Incoming>> = fig
        .iter()
        .filter_map(|e| match e {
            Event::Row { after: Some(a), .. }
            | Event::Row {
                before: Some(a), ..
            } => Some(a),
            _ => None,
        })
        .collect();
    let v = |x: Value| Incoming::Value(x);
    let a = Value::Array;
    assert!(rows.contains(&&vec![
        v(Value::Int(1)),
        v(a(vec![
            a(vec![Value::Int(1), Value::Int(2)]),
            a(vec![]),
            Value::Null
        ])),
        v(a(vec![Value::Int(3), Value::Int(1)])),
        v(a(vec![
            Value::Other("23".into()),
            Value::Other("25".into())
        ])),
        v(a(vec![
            a(vec![Value::Int(1), Value::Int(2)]),
            a(vec![]),
            Value::Null,
            a(vec![Value::Int(7)]),
        ])),
        v(a(vec![
            a(vec![Value::Other("23".into())]),
            a(vec![]),
            Value::Null
        ])),
        v(a(vec![Value::Int(1), Value::Null])),
    ]));
    assert!(fig.iter().any(|e| matches!(
        e,
        Event::Row { op: Op::Update, before: Some(b), .. }
            if b.len() == 2 && b[1] == v(a(vec![a(vec![Value::Int(1), Value::Int(2)]), a(vec![])]))
    )));
    assert_same(&fig, &pgo);
}

/// Both decoders over one WAL, as one list of normalized events.
fn decode_both(
    c: &mut postgres::Client,
    fig_options: &[&str],
    pg_options: &[&str],
) -> (Vec<Event>, Vec<Event>) {
    c.batch_execute(SESSION).unwrap();
    let fig_writes = changes(c, "fig", fig_options);
    let pg_writes = changes(c, "pgo", pg_options);
    let types = registry(c);
    let mut fs = FigState::new();
    let mut from_fig = Vec::new();
    for w in &fig_writes {
        from_fig.extend(figoutput::decode(w, &mut fs, &types).expect("figoutput write decodes"));
    }
    let pairs: Vec<(&str, &str)> = pg_options.chunks(2).map(|p| (p[0], p[1])).collect();
    let mut ps = PgState::from_options(pairs).unwrap();
    let mut from_pg = Vec::new();
    for w in &pg_writes {
        from_pg.extend(
            pgoutput::decode(w, &mut ps, &types)
                .unwrap_or_else(|e| panic!("pgoutput message {w:?} does not decode: {e}")),
        );
    }
    (normalize(from_fig), normalize(from_pg))
}

fn assert_same(fig: &[Event], pgo: &[Event]) {
    for (i, (a, b)) in fig.iter().zip(pgo).enumerate() {
        assert!(
            same_event(a, b),
            "event {i} differs:\nfigoutput {a:?}\npgoutput  {b:?}"
        );
    }
    let n = fig.len().min(pgo.len());
    assert_eq!(
        fig.len(),
        pgo.len(),
        "one stream goes on after the other ended; the next events: figoutput {:?}, pgoutput {:?}",
        &fig[n..fig.len().min(n + 3)],
        &pgo[n..pgo.len().min(n + 3)],
    );
}

#[test]
fn streamed_transactions_decode_identically() {
    // Anything above 64 kB is streamed in blocks (pgoutput protocol version 2).
    let (_pg, mut c) = server_with_slot_using(
        PgServer::builder().setting("logical_decoding_work_mem", "64kB"),
        "fig",
    );
    c.batch_execute(
        "CREATE TABLE big (id int PRIMARY KEY, pad text, at timestamptz);
         CREATE PUBLICATION p FOR ALL TABLES;",
    )
    .unwrap();
    c.execute(
        "SELECT pg_create_logical_replication_slot('pgo', 'pgoutput')",
        &[],
    )
    .unwrap();
    changes(&mut c, "fig", &["format_version", "1"]);

    let fill =
        "INSERT INTO big SELECT i, repeat('x', 100), '2026-01-01'::timestamptz + i * interval '1 s'
                FROM generate_series($1::int, $2::int) i";
    // Committed, with a committed and a rolled-back subtransaction.
    let mut tx = c.transaction().unwrap();
    tx.execute(fill, &[&1, &2000]).unwrap();
    tx.batch_execute("SAVEPOINT a").unwrap();
    tx.execute(fill, &[&2001, &4000]).unwrap();
    tx.batch_execute("RELEASE a; SAVEPOINT b").unwrap();
    tx.execute(fill, &[&4001, &6000]).unwrap();
    tx.batch_execute("ROLLBACK TO b").unwrap();
    tx.execute("UPDATE big SET pad = 'y' WHERE id <= 1000", &[])
        .unwrap();
    tx.execute("DELETE FROM big WHERE id > 3000", &[]).unwrap();
    tx.commit().unwrap();
    // Aborted after being streamed.
    let mut tx = c.transaction().unwrap();
    tx.execute(fill, &[&10_001, &15_000]).unwrap();
    tx.rollback().unwrap();
    // Abort records are not flushed at once, and the SQL decoding functions read only flushed WAL:
    // a commit at the end makes both slots read up to the same point.
    c.execute("INSERT INTO big VALUES (0, 'last', now())", &[])
        .unwrap();

    let (fig, pgo) = decode_both(
        &mut c,
        &["format_version", "1", "streaming", "true"],
        &[
            "proto_version",
            "2",
            "publication_names",
            "p",
            "streaming",
            "on",
        ],
    );
    let count = |f: &dyn Fn(&Event) -> bool| fig.iter().filter(|e| f(e)).count();
    assert!(count(&|e| matches!(e, Event::StreamStart { .. })) > 2);
    assert!(count(&|e| matches!(e, Event::StreamAbort { .. })) >= 2);
    assert_eq!(count(&|e| matches!(e, Event::StreamCommit { .. })), 1);
    assert!(count(&|e| matches!(e, Event::Row { xid: Some(_), .. })) > 6000);
    assert_same(&fig, &pgo);
}
