//! pgoutput messages built byte by byte as PostgreSQL's `proto.c` writes them, decoded back; and
//! hostile input (random, truncated, mutated, huge declared lengths) that must fail cleanly.

use super::*;
use crate::decode::types::TypeRow;
use crate::decode::Recovery;
use proptest::prelude::*;

/// A pgoutput message under construction (big-endian, NUL-terminated strings, as `pqformat.c`).
pub(crate) struct Msg(pub Vec<u8>);

impl Msg {
    pub(crate) fn new(tag: u8) -> Self {
        Msg(vec![tag])
    }
    pub(crate) fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub(crate) fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    pub(crate) fn xid(self, xid: Option<u32>) -> Self {
        match xid {
            Some(x) => self.u32(x),
            None => self,
        }
    }
    pub(crate) fn tuple(mut self, cols: &[Col<'_>]) -> Self {
        self = self.i16(cols.len() as i16);
        for c in cols {
            self = match c {
                Col::Null => self.u8(b'n'),
                Col::Toast => self.u8(b'u'),
                Col::Text(t) => {
                    let mut m = self.u8(b't').i32(t.len() as i32);
                    m.0.extend_from_slice(t);
                    m
                }
            };
        }
        self
    }
}

/// A TupleData column.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col<'a> {
    Null,
    Toast,
    Text(&'a [u8]),
}

/// RELATION: columns as (flags, name, type OID, typmod).
pub(crate) fn relation_msg(
    relid: u32,
    schema: &str,
    table: &str,
    cols: &[(u8, &str, u32, i32)],
    xid: Option<u32>,
) -> Vec<u8> {
    let mut m = Msg::new(b'R')
        .xid(xid)
        .u32(relid)
        .str(schema)
        .str(table)
        .u8(b'd')
        .i16(cols.len() as i16);
    for &(flags, name, oid, typmod) in cols {
        m = m.u8(flags).str(name).u32(oid).i32(typmod);
    }
    m.0
}

pub(crate) fn insert_msg(relid: u32, cols: &[Col<'_>], xid: Option<u32>) -> Vec<u8> {
    Msg::new(b'I').xid(xid).u32(relid).u8(b'N').tuple(cols).0
}

fn registry() -> TypeRegistry {
    TypeRegistry::from_rows([TypeRow {
        oid: 16_385,
        name: "mood".into(),
        typtype: b'e',
        typelem: 0,
        typbasetype: 0,
        typcategory: b'E',
        typdelim: b',',
    }])
}

/// A session with relation 7 (id int4 key, v text, m mood) described.
fn session(version: u32) -> PgState {
    let mut st = PgState::new(version).unwrap();
    let rel = relation_msg(
        7,
        "public",
        "t",
        &[(1, "id", 23, -1), (0, "v", 25, -1), (0, "m", 16_385, -1)],
        None,
    );
    decode(&rel, &mut st, &registry()).unwrap();
    st
}

fn val(v: Value) -> Incoming {
    Incoming::Value(v)
}

#[test]
fn begin_commit_origin_type() {
    let mut st = session(1);
    let reg = registry();
    let begin = Msg::new(b'B').u64(0x10).u64(77).u32(9).0;
    assert_eq!(
        decode(&begin, &mut st, &reg).unwrap(),
        vec![Event::Begin {
            xid: 9,
            final_lsn: Lsn(0x10),
            commit_time: 77
        }]
    );
    let commit = Msg::new(b'C').u8(0).u64(0x10).u64(0x18).u64(77).0;
    assert_eq!(
        decode(&commit, &mut st, &reg).unwrap(),
        vec![Event::Commit {
            commit_lsn: Lsn(0x10),
            end_lsn: Lsn(0x18),
            commit_time: 77
        }]
    );
    let origin = Msg::new(b'O').u64(5).str("node_a").0;
    assert_eq!(decode(&origin, &mut st, &reg).unwrap(), vec![]);
    let ty = Msg::new(b'Y').u32(16_385).str("public").str("mood").0;
    assert_eq!(decode(&ty, &mut st, &reg).unwrap(), vec![]);
}

#[test]
fn relation_names_types_like_format_type() {
    let mut st = PgState::new(1).unwrap();
    let rel = relation_msg(
        8,
        "",
        "pg_thing",
        &[
            (1, "amount", 1700, (18 << 16 | 2) + 4),
            (0, "code", 1042, 7),
            (0, "at", 1184, 3),
            (0, "tags", 1015, 14),
            (0, "m", 16_385, -1),
        ],
        None,
    );
    let ev = decode(&rel, &mut st, &registry()).unwrap();
    let Event::Relation(r) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(r.schema, "pg_catalog");
    let names: Vec<_> = r.columns.iter().map(|c| c.type_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "numeric(18,2)",
            "character(3)",
            "timestamp(3) with time zone",
            "character varying(10)[]",
            "mood"
        ]
    );
    assert!(r.columns[0].key && !r.columns[1].key);
    assert_eq!(st.relation(8), Some(r));
}

#[test]
fn unknown_type_fails_without_touching_state_and_succeeds_after_refresh() {
    let mut st = PgState::new(1).unwrap();
    let rel = relation_msg(9, "public", "t", &[(1, "p", 16_500, -1)], None);
    let err = decode(&rel, &mut st, &TypeRegistry::builtin()).unwrap_err();
    assert_eq!(err, DecodeError::UnknownType { oid: 16_500 });
    assert_eq!(err.recovery(), Recovery::RefreshTypes);
    assert!(st.relation(9).is_none());
    let reg = TypeRegistry::from_rows([TypeRow {
        oid: 16_500,
        name: "point3".into(),
        typtype: b'c',
        typelem: 0,
        typbasetype: 0,
        typcategory: b'C',
        typdelim: b',',
    }]);
    decode(&rel, &mut st, &reg).unwrap();
    let ins = insert_msg(9, &[Col::Text(b"(1,2,3)")], None);
    let ev = decode(&ins, &mut st, &reg).unwrap();
    assert!(
        matches!(&ev[0], Event::Row { after: Some(a), .. } if a[0] == val(Value::Other("(1,2,3)".into())))
    );
}

#[test]
fn insert_update_delete_truncate_message() {
    let mut st = session(1);
    let reg = registry();
    let ins = insert_msg(
        7,
        &[Col::Text(b"1"), Col::Text(b"a b"), Col::Text(b"happy")],
        None,
    );
    assert_eq!(
        decode(&ins, &mut st, &reg).unwrap(),
        vec![Event::Row {
            xid: None,
            op: Op::Insert,
            relid: 7,
            before: None,
            after: Some(vec![
                val(Value::Int(1)),
                val(Value::Text("a b".into())),
                val(Value::Enum("happy".into()))
            ]),
        }]
    );

    // UPDATE with a key old tuple: non-key columns are NULL whatever the server sent.
    let upd = Msg::new(b'U')
        .u32(7)
        .u8(b'K')
        .tuple(&[Col::Text(b"1"), Col::Text(b"x"), Col::Null])
        .u8(b'N')
        .tuple(&[Col::Text(b"2"), Col::Toast, Col::Null])
        .0;
    let ev = decode(&upd, &mut st, &reg).unwrap();
    assert_eq!(
        ev,
        vec![Event::Row {
            xid: None,
            op: Op::Update,
            relid: 7,
            before: Some(vec![val(Value::Int(1)), val(Value::Null), val(Value::Null)]),
            after: Some(vec![
                val(Value::Int(2)),
                Incoming::UnchangedToast,
                val(Value::Null)
            ]),
        }]
    );
    // UPDATE without old tuple; DELETE with a full old row.
    let upd = Msg::new(b'U')
        .u32(7)
        .u8(b'N')
        .tuple(&[Col::Text(b"2"), Col::Null, Col::Null])
        .0;
    assert!(matches!(
        &decode(&upd, &mut st, &reg).unwrap()[0],
        Event::Row { before: None, .. }
    ));
    let del = Msg::new(b'D')
        .u32(7)
        .u8(b'O')
        .tuple(&[Col::Text(b"2"), Col::Text(b"x"), Col::Null])
        .0;
    assert_eq!(
        decode(&del, &mut st, &reg).unwrap(),
        vec![Event::Row {
            xid: None,
            op: Op::Delete,
            relid: 7,
            before: Some(vec![
                val(Value::Int(2)),
                val(Value::Text("x".into())),
                val(Value::Null)
            ]),
            after: None,
        }]
    );
    let tr = Msg::new(b'T').u32(2).u8(3).u32(7).u32(8).0;
    assert_eq!(
        decode(&tr, &mut st, &reg).unwrap(),
        vec![Event::Truncate {
            xid: None,
            relids: vec![7, 8],
            cascade: true,
            restart_identity: true
        }]
    );
    let msg = Msg::new(b'M').u8(1).u64(0x20).str("app").i32(3).0;
    let mut msg = msg;
    msg.extend_from_slice(b"\x00\x01\x02");
    assert_eq!(
        decode(&msg, &mut st, &reg).unwrap(),
        vec![Event::Message {
            xid: None,
            lsn: Lsn(0x20),
            transactional: true,
            prefix: "app".into(),
            content: vec![0, 1, 2]
        }]
    );
}

#[test]
fn streaming_blocks_carry_xids() {
    let mut st = session(2);
    let reg = registry();
    let start = Msg::new(b'S').u32(500).u8(1).0;
    assert_eq!(
        decode(&start, &mut st, &reg).unwrap(),
        vec![Event::StreamStart { xid: 500 }]
    );
    assert!(st.in_stream());
    // A second Stream Start is refused and changes nothing.
    assert!(decode(&start, &mut st, &reg).is_err());
    let ins = insert_msg(7, &[Col::Text(b"5"), Col::Null, Col::Null], Some(501));
    assert!(matches!(
        &decode(&ins, &mut st, &reg).unwrap()[0],
        Event::Row { xid: Some(501), .. }
    ));
    let rel = relation_msg(10, "s", "u", &[(1, "id", 20, -1)], Some(501));
    assert!(
        matches!(&decode(&rel, &mut st, &reg).unwrap()[0], Event::Relation(r) if r.relid == 10)
    );
    let tr = Msg::new(b'T').xid(Some(501)).u32(1).u8(0).u32(10).0;
    assert!(matches!(
        &decode(&tr, &mut st, &reg).unwrap()[0],
        Event::Truncate { xid: Some(501), .. }
    ));
    let msg = Msg::new(b'M').xid(Some(500)).u8(1).u64(1).str("p").i32(0).0;
    assert!(matches!(
        &decode(&msg, &mut st, &reg).unwrap()[0],
        Event::Message { xid: Some(500), .. }
    ));
    let stop = Msg::new(b'E').0;
    assert_eq!(
        decode(&stop, &mut st, &reg).unwrap(),
        vec![Event::StreamStop]
    );
    assert!(!st.in_stream());
    assert!(matches!(
        decode(&stop, &mut st, &reg),
        Err(DecodeError::StreamState(_))
    ));
    // Outside the block, changes have no xid again.
    let ins = insert_msg(7, &[Col::Text(b"6"), Col::Null, Col::Null], None);
    assert!(matches!(
        &decode(&ins, &mut st, &reg).unwrap()[0],
        Event::Row { xid: None, .. }
    ));
    let commit = Msg::new(b'c').u32(500).u8(0).u64(1).u64(2).u64(3).0;
    assert_eq!(
        decode(&commit, &mut st, &reg).unwrap(),
        vec![Event::StreamCommit {
            xid: 500,
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_time: 3
        }]
    );
    let abort = Msg::new(b'A').u32(500).u32(501).0;
    assert_eq!(
        decode(&abort, &mut st, &reg).unwrap(),
        vec![Event::StreamAbort {
            xid: 500,
            subxid: 501
        }]
    );
}

#[test]
fn parallel_stream_abort_carries_lsn_and_time() {
    let mut st =
        PgState::from_options([("proto_version", "4"), ("streaming", "parallel")]).unwrap();
    let abort = Msg::new(b'A').u32(500).u32(501).u64(9).u64(10).0;
    assert_eq!(
        decode(&abort, &mut st, &TypeRegistry::builtin()).unwrap(),
        vec![Event::StreamAbort {
            xid: 500,
            subxid: 501
        }]
    );
    let short = Msg::new(b'A').u32(500).u32(501).0;
    assert!(decode(&short, &mut st, &TypeRegistry::builtin()).is_err());
    // With streaming on (not parallel) version 4 sends no abort info.
    let mut st = PgState::from_options([("proto_version", "4"), ("streaming", "on")]).unwrap();
    assert!(decode(&short, &mut st, &TypeRegistry::builtin()).is_ok());
}

#[test]
fn options_and_versions() {
    assert!(PgState::new(0).is_err() && PgState::new(5).is_err());
    assert_eq!(
        PgState::from_options([("proto_version", "3")])
            .unwrap()
            .proto_version(),
        3
    );
    assert!(PgState::from_options([("publication_names", "p")]).is_err());
    assert!(PgState::from_options([("proto_version", "x")]).is_err());
    assert!(PgState::from_options([("proto_version", "2"), ("binary", "true")]).is_err());
    assert!(PgState::from_options([("proto_version", "3"), ("two_phase", "on")]).is_err());
    assert!(PgState::from_options([("proto_version", "3"), ("streaming", "parallel")]).is_err());
    assert!(PgState::from_options([("proto_version", "1"), ("binary", "false")]).is_ok());

    let reg = TypeRegistry::builtin();
    let mut v1 = PgState::new(1).unwrap();
    for msg in [Msg::new(b'S').u32(1).u8(1).0, Msg::new(b'E').0] {
        assert!(matches!(
            decode(&msg, &mut v1, &reg),
            Err(DecodeError::NotInVersion { version: 1, .. })
        ));
    }
    let mut v2 = PgState::new(2).unwrap();
    assert!(matches!(
        decode(&Msg::new(b'b').0, &mut v2, &reg),
        Err(DecodeError::NotInVersion { .. })
    ));
    let mut v3 = PgState::new(3).unwrap();
    assert_eq!(
        decode(&Msg::new(b'P').0, &mut v3, &reg),
        Err(DecodeError::TwoPhaseUnsupported { tag: b'P' })
    );
}

#[test]
fn refusals() {
    let mut st = session(1);
    let reg = registry();
    // A change for a relation never described: reconnect, never guess.
    let ins = insert_msg(99, &[], None);
    let err = decode(&ins, &mut st, &reg).unwrap_err();
    assert_eq!(err, DecodeError::UnknownRelation { relid: 99 });
    assert_eq!(err.recovery(), Recovery::Reconnect);
    // Binary values.
    let mut bin = Msg::new(b'I').u32(7).u8(b'N').i16(3).u8(b'b').i32(4).0;
    bin.extend_from_slice(&[0, 0, 0, 1]);
    bin.extend_from_slice(b"nn");
    assert_eq!(
        decode(&bin, &mut st, &reg),
        Err(DecodeError::BinaryUnsupported)
    );
    // A value that is not its type's text.
    let ins = insert_msg(7, &[Col::Text(b"one"), Col::Null, Col::Null], None);
    assert!(matches!(
        decode(&ins, &mut st, &reg),
        Err(DecodeError::BadValue { relid: 7, ref column, .. }) if column == "id"
    ));
    // Width differs from the relation.
    let ins = insert_msg(7, &[Col::Null], None);
    assert!(matches!(
        decode(&ins, &mut st, &reg),
        Err(DecodeError::TupleWidth {
            expected: 3,
            found: 1,
            ..
        })
    ));
    // Bytes after the message.
    let mut begin = Msg::new(b'B').u64(1).u64(2).u32(3).0;
    begin.push(0);
    assert!(matches!(
        decode(&begin, &mut st, &reg),
        Err(DecodeError::TrailingBytes { count: 1, .. })
    ));
    assert!(matches!(
        decode(b"Z", &mut st, &reg),
        Err(DecodeError::UnknownMessage { tag: b'Z', .. })
    ));
    assert!(decode(b"", &mut st, &reg).is_err());
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    let mut st = session(1);
    let reg = registry();
    // A tuple claiming 65535 (i16 -1) or 32767 columns with 10 bytes of input.
    for n in [-1i16, i16::MAX] {
        let mut m = Msg::new(b'I').u32(7).u8(b'N').i16(n).0;
        m.extend_from_slice(&[b'n'; 10]);
        assert!(matches!(
            decode(&m, &mut st, &reg),
            Err(DecodeError::TupleWidth { .. })
        ));
    }
    // A relation claiming 32767 columns.
    let m = Msg::new(b'R')
        .u32(11)
        .str("s")
        .str("t")
        .u8(b'd')
        .i16(i16::MAX)
        .u8(0)
        .0;
    assert!(matches!(
        decode(&m, &mut st, &reg),
        Err(DecodeError::Truncated { .. })
    ));
    // A truncate of 2^32-1 relations, a message of 2^31-1 bytes, a value of 2^31-1 bytes.
    let m = Msg::new(b'T').u32(u32::MAX).u8(0).u32(1).0;
    assert!(matches!(
        decode(&m, &mut st, &reg),
        Err(DecodeError::Truncated { .. })
    ));
    let m = Msg::new(b'M').u8(0).u64(1).str("p").i32(i32::MAX).u8(1).0;
    assert!(matches!(
        decode(&m, &mut st, &reg),
        Err(DecodeError::Truncated { .. })
    ));
    let m = Msg::new(b'I')
        .u32(7)
        .u8(b'N')
        .i16(3)
        .u8(b't')
        .i32(i32::MAX)
        .u8(b'1')
        .0;
    assert!(matches!(
        decode(&m, &mut st, &reg),
        Err(DecodeError::Truncated { .. })
    ));
    let m = Msg::new(b'I').u32(7).u8(b'N').i16(3).u8(b't').i32(-1).0;
    assert!(matches!(
        decode(&m, &mut st, &reg),
        Err(DecodeError::Malformed { .. })
    ));
}

/// Valid messages of every kind, for the truncation and mutation properties.
fn corpus() -> Vec<Vec<u8>> {
    vec![
        Msg::new(b'B').u64(1).u64(2).u32(3).0,
        Msg::new(b'C').u8(0).u64(1).u64(2).u64(3).0,
        Msg::new(b'O').u64(1).str("o").0,
        Msg::new(b'Y').u32(16_385).str("public").str("mood").0,
        relation_msg(
            7,
            "public",
            "t",
            &[(1, "id", 23, -1), (0, "v", 25, -1), (0, "m", 16_385, -1)],
            None,
        ),
        insert_msg(
            7,
            &[Col::Text(b"1"), Col::Text(b"x"), Col::Text(b"sad")],
            None,
        ),
        Msg::new(b'U')
            .u32(7)
            .u8(b'O')
            .tuple(&[Col::Text(b"1"), Col::Null, Col::Null])
            .u8(b'N')
            .tuple(&[Col::Text(b"1"), Col::Toast, Col::Null])
            .0,
        Msg::new(b'D')
            .u32(7)
            .u8(b'K')
            .tuple(&[Col::Text(b"1"), Col::Null, Col::Null])
            .0,
        Msg::new(b'T').u32(1).u8(0).u32(7).0,
        Msg::new(b'M').u8(0).u64(1).str("p").i32(1).u8(7).0,
        Msg::new(b'S').u32(1).u8(1).0,
        Msg::new(b'c').u32(1).u8(0).u64(1).u64(2).u64(3).0,
        Msg::new(b'A').u32(1).u32(2).0,
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), version in 1u32..=4, stream in any::<bool>()) {
        let mut st = session(version);
        if stream && version >= 2 {
            decode(&Msg::new(b'S').u32(1).u8(1).0, &mut st, &registry()).unwrap();
        }
        let _ = decode(&bytes, &mut st, &registry());
    }

    #[test]
    fn random_bytes_after_a_valid_tag_never_panic(tag in proptest::sample::select(b"BCOYRIUDTMSEcAbPKrp".to_vec()), rest in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut st = session(4);
        let mut bytes = vec![tag];
        bytes.extend(rest);
        let _ = decode(&bytes, &mut st, &registry());
    }

    #[test]
    fn every_strict_prefix_is_an_error(which in 0usize..13, cut in any::<proptest::sample::Index>()) {
        let msg = &corpus()[which];
        let cut = cut.index(msg.len());
        let mut st = session(2);
        prop_assert!(decode(&msg[..cut], &mut st, &registry()).is_err());
        // The whole message decodes.
        let mut st = session(2);
        prop_assert!(decode(msg, &mut st, &registry()).is_ok(), "{:?}", msg);
    }

    #[test]
    fn mutated_messages_never_panic(which in 0usize..13, flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4)) {
        let mut msg = corpus()[which].clone();
        for (at, byte) in flips {
            let i = at.index(msg.len());
            msg[i] = byte;
        }
        let mut st = session(2);
        let _ = decode(&msg, &mut st, &registry());
    }
}
