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

/// A nested array value for the tests: `None` is a NULL element.
#[derive(Debug, Clone, PartialEq)]
enum Nested {
    Leaf(i64),
    Array(Vec<(i32, i32)>, Vec<Option<Nested>>),
}

fn write_nested(w: &mut Writer<'_>, v: &Option<Nested>) {
    match v {
        None => w.nil(),
        Some(Nested::Leaf(i)) => w.int(*i),
        Some(Nested::Array(dims, elements)) => {
            w.array_value_header(dims, elements.len() as u32);
            for e in elements {
                write_nested(w, e);
            }
        }
    }
}

fn expected_value(v: &Option<Nested>) -> Value<'static> {
    match v {
        None => Value::Null,
        Some(Nested::Leaf(i)) => Value::Int(*i),
        Some(Nested::Array(dims, elements)) => Value::Array(ArrayValue {
            dims: dims.clone(),
            elements: elements.iter().map(expected_value).collect(),
        }),
    }
}

/// One INSERT of relation 1 whose one value is `v`, read as the receiver reads it.
fn insert_of(v: &Option<Nested>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.insert_header(1, false);
    w.tuple_header(1);
    write_nested(&mut w, v);
    buf
}

fn decoded_value(buf: &[u8]) -> Result<Raw<'_>> {
    match decode_all(buf)?.pop() {
        Some(Record::Insert { mut new, .. }) => Ok(new.remove(0)),
        other => panic!("{other:?}"),
    }
}

/// An array nested `levels` deep (1: a plain array), each level one element, innermost `[1]`.
fn nested(levels: usize) -> Nested {
    let mut v = Nested::Array(vec![(1, 1)], vec![Some(Nested::Leaf(1))]);
    for _ in 1..levels {
        v = Nested::Array(vec![(1, 1)], vec![Some(v)]);
    }
    v
}

#[test]
fn arrays_of_arrays_decode_with_the_inner_kind() {
    // FORMAT.md: '{"{1,2}","{}",NULL}'::intlist[] (a domain over integer[]).
    let bytes = [
        0x94, 0x92, 0x01, 0x03, 0x93, 0x92, 0x01, 0x02, 0x01, 0x02, 0x91, 0x90, 0xc0,
    ];
    let raw = Reader {
        buf: &bytes,
        pos: 0,
    }
    .raw(1)
    .unwrap();
    let v = Value::from_raw_nested(
        raw.clone(),
        ValueKind::Array,
        &[ValueKind::Array, ValueKind::Int4],
    )
    .unwrap();
    let inner = |dims, elements| Value::Array(ArrayValue { dims, elements });
    assert_eq!(
        v,
        inner(
            vec![(1, 3)],
            vec![
                inner(vec![(1, 2)], vec![Value::Int(1), Value::Int(2)]),
                inner(vec![], vec![]),
                Value::Null,
            ]
        )
    );
    // Without the inner kind the value is refused, not guessed: 1 could be an int or a date.
    assert_eq!(
        Value::from_raw(raw.clone(), ValueKind::Array, ValueKind::Array),
        Err(FormatError::InnerKindUnknown)
    );
    // The inner kind is checked like any element kind.
    assert!(matches!(
        Value::from_raw_nested(raw, ValueKind::Array, &[ValueKind::Array, ValueKind::Text]),
        Err(FormatError::ValueMismatch { .. })
    ));
    // An array of arrays with no inner array in it needs no inner kind.
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.array_value_header(&[(1, 2)], 2);
    w.nil();
    w.nil();
    let raw = Reader { buf: &buf, pos: 0 }.raw(1).unwrap();
    assert!(Value::from_raw(raw, ValueKind::Array, ValueKind::Array).is_ok());
}

#[test]
fn a_dimension_of_length_zero_is_an_empty_array() {
    // FORMAT.md: ''::int2vector is [[0, 0]].
    let bytes = [0x91, 0x92, 0x00, 0x00];
    let raw = Reader {
        buf: &bytes,
        pos: 0,
    }
    .raw(1)
    .unwrap();
    assert_eq!(
        Value::from_raw(raw, ValueKind::Array, ValueKind::Int2).unwrap(),
        Value::Array(ArrayValue {
            dims: vec![(0, 0)],
            elements: vec![]
        })
    );
    // A zero length makes the count 0, whatever the other lengths claim; elements beyond it are
    // refused.
    for (dims, n) in [
        (vec![(1, i32::MAX), (1, 0)], 0),
        (vec![(0, 0)], 1),
        (vec![(1, 2), (1, 0), (1, 3)], 6),
    ] {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.array_value_header(&dims, n);
        for _ in 0..n {
            w.int(1);
        }
        let raw = Reader { buf: &buf, pos: 0 }.raw(1).unwrap();
        let v = Value::from_raw(raw, ValueKind::Array, ValueKind::Int4);
        if n == 0 {
            assert!(v.is_ok(), "{dims:?}");
        } else {
            assert!(matches!(v, Err(FormatError::BadArray(_))), "{dims:?}");
        }
    }
}

#[test]
fn arrays_nest_up_to_the_limit_and_no_deeper() {
    let limit = usize::from(MAX_ARRAY_NESTING);
    let deepest = Some(nested(limit));
    let buf = insert_of(&deepest);
    let raw = decoded_value(&buf).unwrap();
    assert_eq!(
        Value::from_raw_nested(raw, ValueKind::Array, &kinds_for(limit)).unwrap(),
        expected_value(&deepest)
    );
    let buf = insert_of(&Some(nested(limit + 1)));
    assert!(matches!(
        decoded_value(&buf),
        Err(FormatError::TooDeep { .. })
    ));
    // A hostile server's 100 000 nested arrays: a typed error, not a stack overflow.
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.insert_header(1, false);
    w.tuple_header(1);
    buf.extend(std::iter::repeat_n(0x91, 100_000));
    buf.push(0xc0);
    assert!(matches!(decode_all(&buf), Err(FormatError::TooDeep { .. })));
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

    /// Arrays of arrays of any shape (empty ones, NULL elements, zero-length dimensions, inner
    /// arrays of different shapes), 1 to 3 levels deep, come back exactly.
    #[test]
    fn nested_arrays_round_trip((levels, v) in (1usize..=3).prop_flat_map(|l| (Just(l), any_nested(l)))) {
        let v = Some(v);
        let buf = insert_of(&v);
        let raw = decoded_value(&buf).unwrap();
        prop_assert_eq!(
            Value::from_raw_nested(raw, ValueKind::Array, &kinds_for(levels)).unwrap(),
            expected_value(&v)
        );
    }

    /// Dimensions that do not fit the elements (one element more or fewer than the product of the
    /// lengths, at any nesting level) are a typed error.
    #[test]
    fn inconsistent_dimensions_are_refused(
        v in any_nested(3),
        path in proptest::collection::vec(any::<proptest::sample::Index>(), 0..3),
        more in any::<bool>(),
    ) {
        let mut v = v;
        break_count(&mut v, &path, more);
        let buf = insert_of(&Some(v));
        let raw = decoded_value(&buf).unwrap();
        let got = Value::from_raw_nested(raw, ValueKind::Array, &kinds_for(3));
        prop_assert!(matches!(got, Err(FormatError::BadArray(_))), "{:?}", got);
    }

    /// Any byte of a nested array value changed: a value or a typed error, never a panic.
    #[test]
    fn mutated_nested_arrays_never_panic(
        v in any_nested(4),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut buf = insert_of(&Some(v));
        for (at, byte) in flips {
            let i = at.index(buf.len());
            buf[i] = byte;
        }
        for rec in Records::new(&buf) {
            if let Ok(Record::Insert { new, .. }) = rec {
                for raw in new {
                    let _ = Value::from_raw_nested(raw, ValueKind::Array, &kinds_for(4));
                }
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

/// An array nested exactly `levels` deep (1: an array of integers; 2: an array whose elements are
/// arrays of integers; …), as a column's type makes them, of any shape at each level.
fn any_nested(levels: usize) -> BoxedStrategy<Nested> {
    let element = if levels <= 1 {
        any::<i64>().prop_map(Nested::Leaf).boxed()
    } else {
        any_nested(levels - 1)
    };
    proptest::collection::vec((-2i32..=2, 0i32..=3), 0..=3)
        .prop_flat_map(move |dims| {
            let n = count(&dims);
            (
                Just(dims),
                proptest::collection::vec(proptest::option::weighted(0.8, element.clone()), n),
            )
        })
        .prop_map(|(d, e)| Nested::Array(d, e))
        .boxed()
}

/// The element kinds of an array nested `levels` deep whose innermost elements are int8.
fn kinds_for(levels: usize) -> Vec<ValueKind> {
    let mut kinds = vec![ValueKind::Array; levels - 1];
    kinds.push(ValueKind::Int8);
    kinds
}

/// Elements of an array with these dimensions.
fn count(dims: &[(i32, i32)]) -> usize {
    if dims.is_empty() {
        0
    } else {
        dims.iter().map(|d| d.1 as usize).product()
    }
}

/// Adds a NULL element to (or removes one from) the array `path` leads to, so its count no longer
/// fits its dimensions.
fn break_count(v: &mut Nested, path: &[proptest::sample::Index], more: bool) {
    let Nested::Array(_, elements) = v else {
        unreachable!("only arrays are walked")
    };
    if let Some((i, rest)) = path.split_first() {
        let arrays: Vec<usize> = (0..elements.len())
            .filter(|&j| matches!(elements[j], Some(Nested::Array(..))))
            .collect();
        if !arrays.is_empty() {
            let j = arrays[i.index(arrays.len())];
            let inner = elements[j].as_mut().expect("an array element");
            return break_count(inner, rest, more);
        }
    }
    if more || elements.is_empty() {
        elements.push(None);
    } else {
        elements.pop();
    }
}
