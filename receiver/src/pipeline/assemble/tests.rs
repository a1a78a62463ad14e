use super::*;
use crate::model::Value;

fn row(xid: Option<u32>, n: i64) -> Event {
    Event::Row {
        xid,
        op: Op::Insert,
        relid: 1,
        before: None,
        after: Some(vec![Incoming::Value(Value::Int(n))]),
    }
}

fn ints(c: Committed) -> Vec<i64> {
    c.items
        .read()
        .unwrap()
        .filter_map(|i| match i.unwrap() {
            Item::Row { after: Some(v), .. } => match &v[0] {
                Incoming::Value(Value::Int(n)) => Some(*n),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn assembler(spill_bytes: usize) -> (Assembler, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Assembler::new(dir.path().to_path_buf(), spill_bytes), dir)
}

fn commit(end: u64) -> Event {
    Event::Commit {
        commit_lsn: Lsn(end - 8),
        end_lsn: Lsn(end),
        commit_time: 0,
    }
}

#[test]
fn a_transaction_is_handed_on_whole_at_its_commit() {
    let (mut a, _d) = assembler(1 << 20);
    assert!(a
        .push(Event::Begin {
            xid: 5,
            final_lsn: Lsn(100),
            commit_time: 0
        })
        .unwrap()
        .is_none());
    assert!(a.in_flight());
    for n in 0..3 {
        assert!(a.push(row(None, n)).unwrap().is_none());
    }
    let c = a.push(commit(108)).unwrap().expect("committed");
    assert!(!a.in_flight());
    assert_eq!((c.xid, c.end_lsn), (5, Lsn(108)));
    assert_eq!(ints(c), vec![0, 1, 2]);
}

#[test]
fn streamed_blocks_interleave_and_an_aborted_transaction_never_leaves() {
    let (mut a, _d) = assembler(1 << 20);
    a.push(Event::StreamStart { xid: 10 }).unwrap();
    a.push(row(Some(10), 1)).unwrap();
    a.push(Event::StreamStop).unwrap();
    a.push(Event::StreamStart { xid: 11 }).unwrap();
    a.push(row(Some(11), 100)).unwrap();
    a.push(Event::StreamStop).unwrap();
    // A small transaction commits in between.
    a.push(Event::Begin {
        xid: 12,
        final_lsn: Lsn(50),
        commit_time: 0,
    })
    .unwrap();
    a.push(row(None, 7)).unwrap();
    assert_eq!(ints(a.push(commit(58)).unwrap().unwrap()), vec![7]);
    a.push(Event::StreamStart { xid: 10 }).unwrap();
    a.push(row(Some(10), 2)).unwrap();
    a.push(Event::StreamStop).unwrap();
    assert!(a
        .push(Event::StreamAbort {
            xid: 11,
            subxid: 11
        })
        .unwrap()
        .is_none());
    assert!(a.in_flight());
    let c = a
        .push(Event::StreamCommit {
            xid: 10,
            commit_lsn: Lsn(90),
            end_lsn: Lsn(98),
            commit_time: 0,
        })
        .unwrap()
        .unwrap();
    assert_eq!(ints(c), vec![1, 2]);
    assert!(!a.in_flight(), "the aborted transaction is gone");
    assert!(a
        .push(Event::StreamCommit {
            xid: 11,
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_time: 0
        })
        .is_err());
}

#[test]
fn a_rolled_back_subtransaction_is_dropped_in_memory_and_when_spilled() {
    for spill_bytes in [1 << 20, 1] {
        let (mut a, _d) = assembler(spill_bytes);
        a.push(Event::StreamStart { xid: 20 }).unwrap();
        a.push(row(Some(20), 1)).unwrap();
        a.push(row(Some(21), 2)).unwrap(); // subtransaction 21
        a.push(row(Some(20), 3)).unwrap();
        a.push(Event::StreamStop).unwrap();
        a.push(Event::StreamAbort {
            xid: 20,
            subxid: 21,
        })
        .unwrap();
        let c = a
            .push(Event::StreamCommit {
                xid: 20,
                commit_lsn: Lsn(9),
                end_lsn: Lsn(10),
                commit_time: 0,
            })
            .unwrap()
            .unwrap();
        assert_eq!(ints(c), vec![1, 3], "spill_bytes {spill_bytes}");
    }
}

#[test]
fn a_large_transaction_spills_and_reads_back_in_order() {
    let (mut a, dir) = assembler(64 * 1024);
    a.push(Event::Begin {
        xid: 1,
        final_lsn: Lsn(1),
        commit_time: 0,
    })
    .unwrap();
    for n in 0..50_000 {
        a.push(row(None, n)).unwrap();
    }
    let c = a.push(commit(1_000)).unwrap().unwrap();
    assert!(c.items.spilled.is_some(), "went to disk");
    assert!(
        c.items.memory.len() < 2_000,
        "memory holds at most one spill threshold of items"
    );
    assert_eq!(c.items.len_hint(), 50_000);
    assert_eq!(ints(c), (0..50_000).collect::<Vec<_>>());
    // Spill files are unlinked at creation: nothing is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn relations_are_session_state_and_recorded_in_place() {
    let (mut a, _d) = assembler(1 << 20);
    let rel = Relation {
        relid: 1,
        schema: "public".into(),
        table: "t".into(),
        columns: vec![],
    };
    a.push(Event::Relation(rel.clone())).unwrap();
    assert_eq!(a.relation(1), Some(&rel));
    a.push(Event::Begin {
        xid: 1,
        final_lsn: Lsn(1),
        commit_time: 0,
    })
    .unwrap();
    a.push(Event::Relation(rel.clone())).unwrap();
    a.push(row(None, 1)).unwrap();
    let items: Vec<Item> = a
        .push(commit(9))
        .unwrap()
        .unwrap()
        .items
        .read()
        .unwrap()
        .map(|i| i.unwrap())
        .collect();
    assert!(matches!(items[0], Item::Relation(_)));
    assert!(matches!(items[1], Item::Row { .. }));
}

#[test]
fn out_of_order_streams_are_errors() {
    let (mut a, _d) = assembler(1 << 20);
    assert!(a.push(row(None, 1)).is_err());
    assert!(a.push(commit(9)).is_err());
    a.push(Event::Begin {
        xid: 1,
        final_lsn: Lsn(1),
        commit_time: 0,
    })
    .unwrap();
    assert!(a
        .push(Event::Begin {
            xid: 2,
            final_lsn: Lsn(1),
            commit_time: 0
        })
        .is_err());
}

fn message(xid: Option<u32>, lsn: u64, transactional: bool) -> Event {
    Event::Message {
        xid,
        lsn: Lsn(lsn),
        transactional,
        prefix: "p".into(),
        content: lsn.to_be_bytes().to_vec(),
    }
}

fn message_lsns(c: Committed) -> Vec<u64> {
    c.items
        .read()
        .unwrap()
        .filter_map(|i| match i.unwrap() {
            Item::Message(m) => Some(m.lsn.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_transactional_message_leaves_with_its_transaction_unless_its_subtransaction_rolled_back() {
    for spill_bytes in [1 << 20, 1] {
        let (mut a, _d) = assembler(spill_bytes);
        a.push(Event::StreamStart { xid: 20 }).unwrap();
        a.push(message(Some(20), 1, true)).unwrap();
        a.push(message(Some(21), 2, true)).unwrap(); // in subtransaction 21
        a.push(row(Some(21), 1)).unwrap();
        a.push(Event::StreamStop).unwrap();
        a.push(Event::StreamAbort {
            xid: 20,
            subxid: 21,
        })
        .unwrap();
        a.push(Event::StreamStart { xid: 20 }).unwrap();
        a.push(message(Some(22), 3, true)).unwrap();
        a.push(Event::StreamStop).unwrap();
        let c = a
            .push(Event::StreamCommit {
                xid: 20,
                commit_lsn: Lsn(9),
                end_lsn: Lsn(10),
                commit_time: 0,
            })
            .unwrap()
            .unwrap();
        assert_eq!(message_lsns(c), vec![1, 3], "spill_bytes {spill_bytes}");
    }
}

#[test]
fn a_non_transactional_message_is_a_unit_of_its_own_at_its_position() {
    let (mut a, _d) = assembler(1 << 20);
    a.push(Event::Begin {
        xid: 5,
        final_lsn: Lsn(100),
        commit_time: 0,
    })
    .unwrap();
    a.push(message(None, 40, true)).unwrap();
    let c = a.push(commit(108)).unwrap().expect("committed");
    assert_eq!(message_lsns(c), vec![40]);
    // Between transactions, even while a streamed one is open.
    a.push(Event::StreamStart { xid: 30 }).unwrap();
    a.push(row(Some(30), 1)).unwrap();
    a.push(Event::StreamStop).unwrap();
    let unit = a.push(message(None, 120, false)).unwrap().expect("a unit");
    assert_eq!(
        (unit.xid, unit.commit_lsn, unit.end_lsn),
        (0, Lsn(120), Lsn(120))
    );
    assert_eq!(message_lsns(unit), vec![120]);
    assert!(a.in_flight(), "the streamed transaction is still open");
}
