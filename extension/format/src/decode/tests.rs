use super::*;
use crate::encode::{ColumnOut, Writer};
use proptest::prelude::*;

fn sample_stream() -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.begin(7, 0x1_0000_0000, 123);
    w.origin(42, "upstream");
    w.relation_header(16384, b"public", b"ledger", ReplicaIdentity::Default, 2);
    let col = |attnum, name: &'static [u8], kind| ColumnOut {
        attnum,
        name,
        type_oid: 23,
        typmod: -1,
        type_name: b"integer",
        flags: ColumnFlags::KEY | ColumnFlags::NOT_NULL,
        kind,
        elem_kind: ValueKind::Other,
    };
    w.column(&col(1, b"id", ValueKind::Int4));
    w.column(&col(3, b"amount", ValueKind::Numeric));
    w.insert_header(16384, false);
    w.tuple_header(2);
    w.int(1);
    w.decimal_text(b"-12.50").unwrap();
    w.update_header(16384, true);
    w.old_header(OldKind::Key);
    w.tuple_header(2);
    w.int(1);
    w.nil();
    w.tuple_header(2);
    w.int(2);
    w.unchanged_toast();
    w.stream_xid(Some(9));
    w.delete_header(16384, false);
    w.no_old();
    w.truncate(true, false, &[16384, 16385], None);
    w.message(99, false, b"p", b"\x00\x01", None);
    w.ddl(100, br#"{"command_tag":"ALTER TABLE"}"#, Some(3));
    w.stream_start(11, true);
    w.stream_stop();
    w.stream_commit(11, 200, 208, 5);
    w.stream_abort(11, 12);
    w.commit(0x1_0000_0000, 0x1_0000_0030, 123);
    buf
}

#[test]
fn every_record_kind_round_trips() {
    let buf = sample_stream();
    let recs = decode_all(&buf).unwrap();
    assert_eq!(recs.len(), 14);
    assert_eq!(
        recs[0],
        Record::Begin {
            xid: 7,
            final_lsn: 0x1_0000_0000,
            commit_time: 123
        }
    );
    assert_eq!(
        recs[1],
        Record::Origin {
            origin_lsn: 42,
            name: "upstream"
        }
    );
    let Record::Relation(rel) = &recs[2] else {
        panic!("{:?}", recs[2])
    };
    assert_eq!(
        (rel.relid, rel.schema, rel.table),
        (16384, "public", "ledger")
    );
    assert_eq!(rel.columns[1].name, "amount");
    assert_eq!(rel.columns[1].attnum, 3);
    assert!(rel.columns[0].flags.key() && rel.columns[0].flags.not_null());
    let Record::Insert { new, xid: None, .. } = recs[3].clone() else {
        panic!()
    };
    assert_eq!(
        rel.values(new).unwrap(),
        vec![Value::Int(1), Value::Numeric("-12.50".into())]
    );
    let Record::Update {
        old: Some(old),
        new,
        xid: Some(9),
        ..
    } = recs[4].clone()
    else {
        panic!("{:?}", recs[4])
    };
    assert_eq!(old.kind, OldKind::Key);
    assert_eq!(
        rel.values(old.values).unwrap(),
        vec![Value::Int(1), Value::Null]
    );
    assert_eq!(
        rel.values(new).unwrap(),
        vec![Value::Int(2), Value::UnchangedToast]
    );
    assert_eq!(
        recs[5],
        Record::Delete {
            relid: 16384,
            old: None,
            xid: None
        }
    );
    assert_eq!(
        recs[6],
        Record::Truncate {
            cascade: true,
            restart_identity: false,
            relids: vec![16384, 16385],
            xid: None
        }
    );
    assert_eq!(
        recs[7],
        Record::Message {
            lsn: 99,
            transactional: false,
            prefix: "p",
            content: b"\x00\x01",
            xid: None
        }
    );
    assert_eq!(
        recs[8],
        Record::Ddl {
            lsn: 100,
            payload: r#"{"command_tag":"ALTER TABLE"}"#,
            xid: Some(3)
        }
    );
    assert_eq!(
        recs[9],
        Record::StreamStart {
            xid: 11,
            first_segment: true
        }
    );
    assert_eq!(recs[10], Record::StreamStop);
    assert_eq!(
        recs[11],
        Record::StreamCommit {
            xid: 11,
            commit_lsn: 200,
            end_lsn: 208,
            commit_time: 5
        }
    );
    assert_eq!(
        recs[12],
        Record::StreamAbort {
            xid: 11,
            subxid: 12
        }
    );
    assert_eq!(
        recs[13],
        Record::Commit {
            commit_lsn: 0x1_0000_0000,
            end_lsn: 0x1_0000_0030,
            commit_time: 123
        }
    );
}

#[test]
fn array_values_keep_dimensions_and_bounds() {
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.array_value_header(&[(-2, 2), (0, 3)], 6);
    for i in 0..5 {
        w.int(i);
    }
    w.nil();
    let raw = Reader { buf: &buf, pos: 0 }.raw(1).unwrap();
    let Value::Array(a) = Value::from_raw(raw, ValueKind::Array, ValueKind::Int8).unwrap() else {
        panic!()
    };
    assert_eq!(a.dims, vec![(-2, 2), (0, 3)]);
    assert_eq!(a.elements[5], Value::Null);
    assert_eq!(a.elements[4], Value::Int(4));
}

#[test]
fn array_with_wrong_element_count_is_refused() {
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.array_value_header(&[(1, 3)], 2);
    w.int(1);
    w.int(2);
    let raw = Reader { buf: &buf, pos: 0 }.raw(1).unwrap();
    assert!(matches!(
        Value::from_raw(raw, ValueKind::Array, ValueKind::Int4),
        Err(FormatError::BadArray(_))
    ));
}

#[test]
fn value_kinds_reject_wrong_wire_types() {
    assert!(Value::from_raw(Raw::Str("1"), ValueKind::Int4, ValueKind::Other).is_err());
    assert!(Value::from_raw(Raw::Int(70000), ValueKind::Int2, ValueKind::Other).is_err());
    assert!(Value::from_raw(Raw::Bin(&[0; 15]), ValueKind::Uuid, ValueKind::Other).is_err());
    assert!(Value::from_raw(Raw::Int(1 << 40), ValueKind::Date, ValueKind::Other).is_err());
    assert_eq!(
        Value::from_raw(Raw::Nil, ValueKind::Int4, ValueKind::Other).unwrap(),
        Value::Null
    );
}

#[test]
fn unknown_record_kind_is_a_typed_error() {
    let buf = [0x91, 0x7f];
    assert!(matches!(
        decode_all(&buf),
        Err(FormatError::UnknownRecordKind { kind: 127, .. })
    ));
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // array32 claiming 4 billion elements, followed by nothing
    let buf = [0xdd, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        decode_all(&buf),
        Err(FormatError::Truncated { .. })
    ));
    // str32 claiming 4 GiB
    let buf = [0x93, 0x03, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        decode_all(&buf),
        Err(FormatError::Truncated { .. })
    ));
}

#[test]
fn every_truncation_of_a_valid_stream_decodes_a_prefix_or_fails() {
    let buf = sample_stream();
    let full = decode_all(&buf).unwrap();
    let mut errors = 0;
    for cut in 0..buf.len() {
        match decode_all(&buf[..cut]) {
            // A cut at a record boundary is a shorter valid stream: exactly the leading records.
            Ok(recs) => assert_eq!(recs[..], full[..recs.len()], "cut at {cut}"),
            Err(_) => errors += 1,
        }
    }
    // Only cuts at the 14 record boundaries (and 0) can succeed.
    assert_eq!(errors, buf.len() - full.len());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for rec in Records::new(&bytes) {
            if let Ok(Record::Relation(rel)) = rec { let _ = rel.columns.len(); }
        }
    }

    #[test]
    fn mutated_valid_streams_never_panic(pos in 0usize..400, byte in any::<u8>()) {
        let mut buf = sample_stream();
        let p = pos % buf.len();
        buf[p] = byte;
        for rec in Records::new(&buf) {
            if let Ok(Record::Insert { new, .. }) = rec {
                for raw in new { let _ = Value::from_raw(raw, ValueKind::Numeric, ValueKind::Other); }
            }
        }
    }

    #[test]
    fn integers_and_floats_round_trip(i in any::<i64>(), f in any::<f64>(), g in any::<f32>()) {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.int(i); w.f64(f); w.f32(g);
        let mut r = Reader { buf: &buf, pos: 0 };
        prop_assert_eq!(r.raw(1).unwrap(), Raw::Int(i));
        match r.raw(1).unwrap() { Raw::F64(x) => prop_assert_eq!(x.to_bits(), f.to_bits()), other => prop_assert!(false, "{:?}", other) }
        match r.raw(1).unwrap() { Raw::F32(x) => prop_assert_eq!(x.to_bits(), g.to_bits()), other => prop_assert!(false, "{:?}", other) }
    }

    #[test]
    fn strings_round_trip(s in ".{0,300}") {
        let mut buf = Vec::new();
        Writer::new(&mut buf).str(&s);
        prop_assert_eq!(Reader { buf: &buf, pos: 0 }.raw(1).unwrap(), Raw::Str(&s));
    }
}
