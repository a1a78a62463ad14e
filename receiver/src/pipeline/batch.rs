//! From an assembled transaction to the sink's [`Transaction`]: ordinals, the relation definitions in
//! force for each change, old rows shaped as the sink expects, and unchanged TOAST columns passed on
//! as gaps (the sink resolves them from its exact state; nothing here invents a value).

use super::assemble::{AssembleError, Committed, Item};
use crate::model::{Change, Incoming, Op, Relation, Value};
use crate::sink::{RelationChange, ToastGap, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BatchError {
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error("a change for relation {relid} arrived before any definition of it: reconnect and stream again from the checkpoint")]
    UnknownRelation { relid: u32 },
}

/// The relation definitions of committed transactions, so each transaction knows what was in force
/// at its start. Shared (`Arc`) with the transactions handed to the sink.
#[derive(Default)]
pub struct Relations {
    committed: HashMap<u32, Arc<Relation>>,
}

impl Relations {
    /// Converts one committed transaction. `session` gives definitions that arrived outside any
    /// transaction (the decoder's latest), used when this session never saw one inside.
    pub fn convert(
        &mut self,
        txn: Committed,
        session: impl Fn(u32) -> Option<Relation>,
    ) -> Result<Transaction, BatchError> {
        let mut out = Transaction {
            xid: txn.xid,
            commit_lsn: txn.commit_lsn,
            end_lsn: txn.end_lsn,
            commit_time: txn.commit_time,
            changes: Vec::with_capacity(txn.items.len_hint() as usize),
            relations: Vec::new(),
            relation_changes: Vec::new(),
            unchanged_toast: Vec::new(),
        };
        // Definitions as of this transaction's start, for the relations it touches.
        let mut at_start: HashMap<u32, Arc<Relation>> = HashMap::new();
        let mut in_force: HashMap<u32, Arc<Relation>> = HashMap::new();
        let mut ordinal: u32 = 0;
        for item in txn.items.read()? {
            match item? {
                Item::Relation(rel) => {
                    let rel = Arc::new(rel);
                    let previous = in_force
                        .get(&rel.relid)
                        .or_else(|| self.committed.get(&rel.relid));
                    match previous {
                        Some(p) if **p == *rel => {}
                        Some(_)
                            if at_start.contains_key(&rel.relid)
                                || self.committed.contains_key(&rel.relid) =>
                        {
                            out.relation_changes.push(RelationChange {
                                from_ordinal: ordinal,
                                relation: rel.clone(),
                            });
                        }
                        _ => {
                            at_start.insert(rel.relid, rel.clone());
                        }
                    }
                    in_force.insert(rel.relid, rel);
                }
                Item::Row {
                    op,
                    relid,
                    before,
                    after,
                } => {
                    let rel = self.in_force(relid, &mut in_force, &mut at_start, &session)?;
                    let (after, gaps) = match after {
                        Some(values) => {
                            let (v, g) = resolve(values);
                            (Some(v), g)
                        }
                        None => (None, Vec::new()),
                    };
                    if !gaps.is_empty() {
                        out.unchanged_toast.push(ToastGap {
                            ordinal,
                            columns: gaps,
                        });
                    }
                    let before = before.map(|b| shape_before(&rel, resolve(b).0));
                    out.changes
                        .push(change(&out, &rel, op, ordinal, before, after));
                    ordinal += 1;
                }
                Item::Truncate { relids, .. } => {
                    for relid in relids {
                        let rel = self.in_force(relid, &mut in_force, &mut at_start, &session)?;
                        out.changes
                            .push(change(&out, &rel, Op::Truncate, ordinal, None, None));
                        ordinal += 1;
                    }
                }
                // Schema changes are followed through RELATION records; DDL events are recorded by
                // the schema-change handling (a later stage), not written as row changes.
                Item::Ddl { .. } => {}
            }
        }
        out.relations = at_start.into_values().collect();
        out.relations.sort_by_key(|r| r.relid);
        for (relid, rel) in in_force {
            self.committed.insert(relid, rel);
        }
        Ok(out)
    }

    fn in_force(
        &self,
        relid: u32,
        in_force: &mut HashMap<u32, Arc<Relation>>,
        at_start: &mut HashMap<u32, Arc<Relation>>,
        session: &impl Fn(u32) -> Option<Relation>,
    ) -> Result<Arc<Relation>, BatchError> {
        if let Some(r) = in_force.get(&relid) {
            return Ok(r.clone());
        }
        let rel = match self.committed.get(&relid) {
            Some(r) => r.clone(),
            None => Arc::new(session(relid).ok_or(BatchError::UnknownRelation { relid })?),
        };
        at_start.insert(relid, rel.clone());
        in_force.insert(relid, rel.clone());
        Ok(rel)
    }
}

fn change(
    t: &Transaction,
    rel: &Relation,
    op: Op,
    ordinal: u32,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
) -> Change {
    Change {
        op,
        relid: rel.relid,
        schema: rel.schema.clone(),
        table: rel.table.clone(),
        after,
        before,
        commit_lsn: t.commit_lsn,
        ordinal,
        xid: t.xid,
        commit_time: t.commit_time,
    }
}

/// Values with unchanged TOAST positions replaced by a placeholder the sink ignores, and those
/// positions.
fn resolve(values: Vec<Incoming>) -> (Vec<Value>, Vec<usize>) {
    let mut gaps = Vec::new();
    let values = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Incoming::Value(v) => v,
            Incoming::UnchangedToast => {
                gaps.push(i);
                Value::Null
            }
        })
        .collect();
    (values, gaps)
}

/// The decoders give old rows as wide as the relation (non-key positions null under a key-only
/// identity); the sink takes the key columns only, unless every column is part of the identity
/// (REPLICA IDENTITY FULL), when the whole old row is the key.
fn shape_before(rel: &Relation, before: Vec<Value>) -> Vec<Value> {
    let all_key = rel.columns.iter().all(|c| c.key);
    if all_key || before.len() != rel.columns.len() {
        return before;
    }
    before
        .into_iter()
        .zip(&rel.columns)
        .filter(|(_, c)| c.key)
        .map(|(v, _)| v)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, Event, Lsn};
    use crate::pipeline::assemble::Assembler;

    fn rel(columns: &[(&str, bool)]) -> Relation {
        Relation {
            relid: 7,
            schema: "public".into(),
            table: "t".into(),
            columns: columns
                .iter()
                .map(|(n, key)| Column {
                    name: n.to_string(),
                    type_name: "text".into(),
                    type_oid: 25,
                    key: *key,
                    not_null: false,
                })
                .collect(),
        }
    }

    fn run(events: Vec<Event>, rels: &mut Relations) -> Transaction {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Assembler::new(dir.path().to_path_buf(), 1 << 20);
        let mut committed = None;
        for e in events {
            if let Some(c) = a.push(e).unwrap() {
                committed = Some(c);
            }
        }
        rels.convert(committed.unwrap(), |_| None).unwrap()
    }

    fn v(s: &str) -> Incoming {
        Incoming::Value(Value::Text(s.into()))
    }

    #[test]
    fn ordinals_count_changes_and_old_rows_keep_only_key_columns() {
        let r = rel(&[("id", true), ("a", false)]);
        let t = run(
            vec![
                Event::Begin {
                    xid: 1,
                    final_lsn: Lsn(10),
                    commit_time: 5,
                },
                Event::Relation(r.clone()),
                Event::Row {
                    xid: None,
                    op: Op::Insert,
                    relid: 7,
                    before: None,
                    after: Some(vec![v("1"), v("x")]),
                },
                Event::Row {
                    xid: None,
                    op: Op::Delete,
                    relid: 7,
                    before: Some(vec![v("1"), Incoming::Value(Value::Null)]),
                    after: None,
                },
                Event::Truncate {
                    xid: None,
                    relids: vec![7],
                    cascade: false,
                    restart_identity: false,
                },
                Event::Commit {
                    commit_lsn: Lsn(10),
                    end_lsn: Lsn(18),
                    commit_time: 5,
                },
            ],
            &mut Relations::default(),
        );
        assert_eq!(
            t.changes.iter().map(|c| c.ordinal).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(t.changes[1].before, Some(vec![Value::Text("1".into())]));
        assert_eq!(t.changes[2].op, Op::Truncate);
        assert_eq!(t.relations.len(), 1);
        assert!(t.relation_changes.is_empty());
    }

    #[test]
    fn unchanged_toast_becomes_a_gap_never_a_value() {
        let r = rel(&[("id", true), ("doc", false)]);
        let t = run(
            vec![
                Event::Begin {
                    xid: 1,
                    final_lsn: Lsn(10),
                    commit_time: 5,
                },
                Event::Relation(r),
                Event::Row {
                    xid: None,
                    op: Op::Update,
                    relid: 7,
                    before: None,
                    after: Some(vec![v("1"), Incoming::UnchangedToast]),
                },
                Event::Commit {
                    commit_lsn: Lsn(10),
                    end_lsn: Lsn(18),
                    commit_time: 5,
                },
            ],
            &mut Relations::default(),
        );
        assert_eq!(
            t.unchanged_toast,
            vec![ToastGap {
                ordinal: 0,
                columns: vec![1]
            }]
        );
    }

    #[test]
    fn a_definition_changed_inside_a_transaction_applies_from_its_ordinal() {
        let mut rels = Relations::default();
        let r1 = rel(&[("id", true)]);
        let r2 = rel(&[("id", true), ("added", false)]);
        run(
            vec![
                Event::Begin {
                    xid: 1,
                    final_lsn: Lsn(10),
                    commit_time: 5,
                },
                Event::Relation(r1.clone()),
                Event::Row {
                    xid: None,
                    op: Op::Insert,
                    relid: 7,
                    before: None,
                    after: Some(vec![v("1")]),
                },
                Event::Commit {
                    commit_lsn: Lsn(10),
                    end_lsn: Lsn(18),
                    commit_time: 5,
                },
            ],
            &mut rels,
        );
        let t = run(
            vec![
                Event::Begin {
                    xid: 2,
                    final_lsn: Lsn(20),
                    commit_time: 6,
                },
                Event::Row {
                    xid: None,
                    op: Op::Insert,
                    relid: 7,
                    before: None,
                    after: Some(vec![v("2")]),
                },
                Event::Relation(r2.clone()),
                Event::Row {
                    xid: None,
                    op: Op::Insert,
                    relid: 7,
                    before: None,
                    after: Some(vec![v("3"), v("x")]),
                },
                Event::Commit {
                    commit_lsn: Lsn(20),
                    end_lsn: Lsn(28),
                    commit_time: 6,
                },
            ],
            &mut rels,
        );
        assert_eq!(*t.relations[0], r1);
        assert_eq!(t.relation_changes.len(), 1);
        assert_eq!(t.relation_changes[0].from_ordinal, 1);
        assert_eq!(*t.relation_changes[0].relation, r2);
    }
}
