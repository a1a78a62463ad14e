//! From an assembled transaction to what the sink takes: ordinals, the relation definitions in
//! force for each change, old rows shaped as the sink expects, and unchanged TOAST columns passed on
//! as gaps (the sink resolves them from its exact state; nothing here invents a value).
//!
//! ```text
//! Items::read() ──item──▶ Converter ──Piece::Relation | Piece::Change──▶ Sink::write_large (large)
//!  (lazy, from the          │                                    └─────▶ Relations::convert
//!   spill file)             ▼ finish()                                   collects a Transaction
//!                 Relations::adopt: the definitions the transaction left in force
//! ```
//!
//! One converter serves both sizes: [`Relations::convert`] collects its pieces into a
//! [`Transaction`] for a batch, and a transaction too large to hold is streamed to the sink piece by
//! piece, so memory stays bounded whatever its size.

use super::assemble::{AssembleError, Committed, Item};
use super::ddl::PendingDdl;
use super::partitions::{self, Routed, Routes};
use crate::model::{Change, Incoming, Op, Relation, Value};
use crate::sink::{
    MessageAt, Piece, RelationChange, RelationDdl, ToastGap, Transaction, TransactionHead,
};
use std::collections::{HashMap, HashSet, VecDeque};
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
/// at its start. Shared (`Arc`) with the converters and the transactions handed to the sink.
#[derive(Default)]
pub struct Relations {
    committed: Arc<HashMap<u32, Arc<Relation>>>,
    /// DDL statement texts waiting for the next definition of their table.
    ddl: PendingDdl,
    /// Leaf partitions whose changes are recorded under their root.
    routes: Arc<Routes>,
}

impl Relations {
    /// Converts one committed transaction. `session` gives definitions that arrived outside any
    /// transaction (the decoder's latest), used when this session never saw one inside.
    pub fn convert(
        &mut self,
        txn: Committed,
        session: impl Fn(u32) -> Option<Relation>,
    ) -> Result<Transaction, BatchError> {
        let head = TransactionHead::from(&txn);
        let mut out = Transaction {
            xid: head.xid,
            commit_lsn: head.commit_lsn,
            end_lsn: head.end_lsn,
            commit_time: head.commit_time,
            changes: Vec::with_capacity(txn.items.len_hint() as usize),
            relations: Vec::new(),
            relation_changes: Vec::new(),
            unchanged_toast: Vec::new(),
            ddl: Vec::new(),
            messages: Vec::new(),
        };
        let mut converter = self.converter(head, session);
        let mut defined: HashSet<u32> = HashSet::new();
        for piece in converter.pieces(txn.items.read()?) {
            match piece? {
                Piece::Ddl { relid, text } => out.ddl.push(RelationDdl {
                    relid,
                    from_ordinal: out.changes.len() as u32,
                    text,
                }),
                Piece::Relation(rel) => {
                    if defined.insert(rel.relid) {
                        out.relations.push(rel);
                    } else {
                        out.relation_changes.push(RelationChange {
                            from_ordinal: out.changes.len() as u32,
                            relation: rel,
                        });
                    }
                }
                Piece::Change {
                    change,
                    unchanged_toast,
                } => {
                    if !unchanged_toast.is_empty() {
                        out.unchanged_toast.push(ToastGap {
                            ordinal: change.ordinal,
                            columns: unchanged_toast,
                        });
                    }
                    out.changes.push(change);
                }
                Piece::Message(m) => out.messages.push(m),
            }
        }
        out.relations.sort_by_key(|r| r.relid);
        self.adopt(converter.finish());
        Ok(out)
    }

    /// A converter for the transaction `head`, starting from the definitions committed so far. It
    /// owns what it needs (it is `Send` when `session` is), so it may run on another thread; hand
    /// what it [finished](Converter::finish) with to [`adopt`](Relations::adopt) before converting
    /// the next transaction. The DDL texts waiting for a definition move into the converter
    /// (and come back with `adopt`) rather than being copied per transaction.
    pub fn converter<S>(&mut self, head: TransactionHead, session: S) -> Converter<S>
    where
        S: Fn(u32) -> Option<Relation>,
    {
        Converter {
            head,
            committed: Arc::clone(&self.committed),
            session,
            in_force: HashMap::new(),
            sent: HashMap::new(),
            ordinal: 0,
            queue: VecDeque::new(),
            ddl: std::mem::take(&mut self.ddl),
            explained: HashMap::new(),
            routes: Arc::clone(&self.routes),
            routed: HashMap::new(),
        }
    }

    /// Routes the changes of the leaf partitions in `routes` to their roots from the next
    /// converter on; a relid without a route is a table of its own.
    pub fn set_routes(&mut self, routes: Arc<Routes>) {
        self.routes = routes;
    }

    /// Takes on the definitions a converted transaction left in force.
    pub fn adopt(&mut self, done: Definitions) {
        Arc::make_mut(&mut self.committed).extend(done.in_force);
        self.ddl = done.ddl;
    }
}

impl From<&Committed> for TransactionHead {
    fn from(txn: &Committed) -> Self {
        TransactionHead {
            xid: txn.xid,
            commit_lsn: txn.commit_lsn,
            end_lsn: txn.end_lsn,
            commit_time: txn.commit_time,
        }
    }
}

/// The relation definitions in force at the end of a converted transaction, for
/// [`Relations::adopt`].
#[derive(Debug)]
pub struct Definitions {
    in_force: HashMap<u32, Arc<Relation>>,
    ddl: PendingDdl,
}

/// Turns a committed transaction's items into sink [`Piece`]s, one item at a time: a change with
/// the next ordinal, preceded by its relation's definition the first time the transaction uses it
/// and whenever that definition changed inside the transaction.
pub struct Converter<S> {
    head: TransactionHead,
    committed: Arc<HashMap<u32, Arc<Relation>>>,
    session: S,
    /// The definition in force at this point of the transaction, per relid.
    in_force: HashMap<u32, Arc<Relation>>,
    /// The definition last sent as a piece, per relid.
    sent: HashMap<u32, Arc<Relation>>,
    ordinal: u32,
    /// Pieces of the item converted last, not yet taken.
    queue: VecDeque<Piece>,
    ddl: PendingDdl,
    /// DDL texts explaining a definition that took effect here, sent before it (per relid).
    explained: HashMap<u32, Arc<str>>,
    routes: Arc<Routes>,
    /// Per routed leaf: the leaf definition last routed and its routed form.
    routed: HashMap<u32, (Arc<Relation>, Routed)>,
}

impl<S> Converter<S>
where
    S: Fn(u32) -> Option<Relation>,
{
    pub fn head(&self) -> TransactionHead {
        self.head
    }

    /// Changes converted so far (the next change's ordinal).
    pub fn changes(&self) -> u32 {
        self.ordinal
    }

    /// The pieces of `items`, each item converted only when its pieces are asked for (so items read
    /// lazily from a spill file are never all in memory). Ends after the first error.
    pub fn pieces<'a>(
        &'a mut self,
        mut items: impl Iterator<Item = Result<Item, AssembleError>> + 'a,
    ) -> impl Iterator<Item = Result<Piece, BatchError>> + 'a
    where
        S: 'a,
    {
        let mut failed = false;
        std::iter::from_fn(move || loop {
            if let Some(piece) = self.queue.pop_front() {
                return Some(Ok(piece));
            }
            if failed {
                return None;
            }
            let converted = match items.next()? {
                Ok(item) => self.push(item),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = converted {
                failed = true;
                return Some(Err(e));
            }
        })
    }

    /// The definitions in force once every item was converted.
    pub fn finish(self) -> Definitions {
        Definitions {
            in_force: self.in_force,
            ddl: self.ddl,
        }
    }

    /// Converts one item into pieces, queued.
    fn push(&mut self, item: Item) -> Result<(), BatchError> {
        match item {
            Item::Relation(rel) => {
                let known = self
                    .in_force
                    .get(&rel.relid)
                    .or_else(|| self.committed.get(&rel.relid));
                let unchanged = known.is_some_and(|p| **p == rel);
                if let Some(text) = self.ddl.take(rel.relid).filter(|_| !unchanged) {
                    self.explained.insert(rel.relid, text);
                }
                if !unchanged {
                    self.in_force.insert(rel.relid, Arc::new(rel));
                }
            }
            Item::Row {
                op,
                relid,
                before,
                after,
            } => {
                let rel = self.in_force(relid)?;
                let (rel, partition, before, after) = match self.route(relid, &rel) {
                    Some((routed, leaf)) => (
                        Arc::clone(&routed.relation),
                        Some(leaf),
                        before.map(|b| routed.row(b)),
                        after.map(|a| routed.row(a)),
                    ),
                    None => (rel, None, before, after),
                };
                let (after, gaps) = match after {
                    Some(values) => {
                        let (v, g) = resolve(values);
                        (Some(v), g)
                    }
                    None => (None, Vec::new()),
                };
                let before = before.map(|b| shape_before(&rel, resolve(b).0));
                self.queue_change(&rel, op, before, after, gaps, partition);
            }
            Item::Truncate { relids, .. } => {
                let split = partitions::split_truncate(&relids, &self.routes);
                for relid in split.tables {
                    let rel = self.in_force(relid)?;
                    self.queue_change(&rel, Op::Truncate, None, None, Vec::new(), None);
                }
                let whole = split.whole_roots.into_iter().map(|l| (l, false));
                for (leaf, alone) in whole.chain(split.leaves.into_iter().map(|l| (l, true))) {
                    let rel = self.in_force(leaf)?;
                    if let Some((routed, name)) = self.route(leaf, &rel) {
                        let root = Arc::clone(&routed.relation);
                        let partition = alone.then_some(name);
                        self.queue_change(&root, Op::Truncate, None, None, Vec::new(), partition);
                    }
                }
            }
            // Schema changes are found by diffing RELATION records; a DDL record's text waits for
            // the definition it explains (see `ddl.rs`).
            Item::Ddl { payload, .. } => self.ddl.note(&payload),
            Item::Message(message) => self.queue.push_back(Piece::Message(MessageAt {
                ordinal: self.ordinal,
                message,
            })),
        }
        Ok(())
    }

    /// The definition in force for `relid`: set inside this transaction, else committed before it,
    /// else the session's.
    fn in_force(&mut self, relid: u32) -> Result<Arc<Relation>, BatchError> {
        if let Some(r) = self.in_force.get(&relid) {
            return Ok(Arc::clone(r));
        }
        let rel = match self.committed.get(&relid) {
            Some(r) => Arc::clone(r),
            None => Arc::new((self.session)(relid).ok_or(BatchError::UnknownRelation { relid })?),
        };
        self.in_force.insert(relid, Arc::clone(&rel));
        Ok(rel)
    }

    /// `leaf`'s routed form and its name, when `leaf` is a partition mirrored under its root.
    fn route(&mut self, leaf: u32, rel: &Arc<Relation>) -> Option<(&Routed, String)> {
        let route = self.routes.get(&leaf)?;
        let current = self
            .routed
            .get(&leaf)
            .is_some_and(|(def, _)| Arc::ptr_eq(def, rel) || **def == **rel);
        if !current {
            let routed = partitions::routed(rel, route);
            self.routed.insert(leaf, (Arc::clone(rel), routed));
        }
        let name = route.leaf.clone();
        self.routed.get(&leaf).map(|(_, r)| (r, name))
    }

    fn queue_change(
        &mut self,
        rel: &Arc<Relation>,
        op: Op,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
        unchanged_toast: Vec<usize>,
        partition: Option<String>,
    ) {
        let fresh = self
            .sent
            .get(&rel.relid)
            .is_none_or(|s| !Arc::ptr_eq(s, rel) && **s != **rel);
        if fresh {
            if let Some(text) = self.explained.remove(&rel.relid) {
                self.queue.push_back(Piece::Ddl {
                    relid: rel.relid,
                    text,
                });
            }
            self.sent.insert(rel.relid, Arc::clone(rel));
            self.queue.push_back(Piece::Relation(Arc::clone(rel)));
        }
        self.queue.push_back(Piece::Change {
            change: Change {
                op,
                relid: rel.relid,
                schema: rel.schema.clone(),
                table: rel.table.clone(),
                after,
                before,
                commit_lsn: self.head.commit_lsn,
                ordinal: self.ordinal,
                xid: self.head.xid,
                commit_time: self.head.commit_time,
                partition,
            },
            unchanged_toast,
        });
        self.ordinal += 1;
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
                    attnum: None,
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

    fn insert(id: &str) -> Item {
        Item::Row {
            op: Op::Insert,
            relid: 7,
            before: None,
            after: Some(vec![v(id)]),
        }
    }

    fn head(lsn: u64) -> TransactionHead {
        TransactionHead {
            xid: 9,
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 8),
            commit_time: 5,
        }
    }

    /// What a piece is, compactly: `R<columns>` for a definition, `C<ordinal>` for a change,
    /// `D:<text>` for a DDL text, `M<next ordinal>` for a message.
    fn shape(p: &Piece) -> String {
        match p {
            Piece::Relation(r) => format!("R{}", r.columns.len()),
            Piece::Ddl { text, .. } => format!("D:{text}"),
            Piece::Change { change, .. } => format!("C{}", change.ordinal),
            Piece::Message(m) => format!("M{}", m.ordinal),
        }
    }

    #[test]
    fn pieces_send_each_definition_before_its_first_change_and_again_when_it_changes() {
        let r1 = rel(&[("id", true)]);
        let r2 = rel(&[("id", true), ("added", false)]);
        let mut rels = Relations::default();
        let mut c = rels.converter(head(10), |relid| (relid == 7).then(|| r1.clone()));
        let items = vec![
            insert("1"),
            insert("2"),
            Item::Message(crate::model::Message {
                lsn: Lsn(8),
                transactional: true,
                prefix: "p".into(),
                content: vec![1],
            }),
            Item::Relation(r1.clone()),
            insert("3"),
            Item::Relation(r2.clone()),
            Item::Ddl {
                lsn: Lsn(9),
                payload: "ALTER TABLE t ADD added text".into(),
            },
            Item::Row {
                op: Op::Insert,
                relid: 7,
                before: None,
                after: Some(vec![v("4"), Incoming::UnchangedToast]),
            },
            Item::Truncate {
                relids: vec![7],
                cascade: false,
                restart_identity: false,
            },
        ];
        let pieces: Vec<Piece> = c
            .pieces(items.into_iter().map(Ok))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            pieces.iter().map(shape).collect::<Vec<_>>(),
            ["R1", "C0", "C1", "M2", "C2", "R2", "C3", "C4"],
            "a repeated, identical definition is not sent again; a message before the change after it"
        );
        let Piece::Change {
            change,
            unchanged_toast,
        } = &pieces[6]
        else {
            panic!("{:?}", pieces[6]);
        };
        assert_eq!(unchanged_toast, &[1], "a gap, never a value");
        assert_eq!(
            (change.commit_lsn, change.xid, change.commit_time),
            (Lsn(10), 9, 5)
        );
        assert_eq!(c.changes(), 5);

        // The next transaction starts from the definition this one left in force.
        rels.adopt(c.finish());
        let mut next = rels.converter(head(20), |_| None);
        let first = next.pieces([Ok(insert("5"))].into_iter()).next();
        assert!(
            matches!(first, Some(Ok(Piece::Relation(ref r))) if **r == r2),
            "{first:?}"
        );
    }

    fn ddl(query: &str) -> Item {
        Item::Ddl {
            lsn: Lsn(1),
            payload: serde_json::json!({
                "event": "ddl_command_end",
                "query": query,
                "commands": [{"object_type": "table", "objid": 7}],
            })
            .to_string(),
        }
    }

    #[test]
    fn a_ddl_text_comes_before_the_changed_definition_it_explains_even_a_transaction_later() {
        let r1 = rel(&[("id", true)]);
        let r2 = rel(&[("id", true), ("added", false)]);
        let mut rels = Relations::default();
        let shapes = |rels: &mut Relations, items: Vec<Item>| {
            let mut c = rels.converter(head(10), |_| None);
            let out: Vec<String> = c
                .pieces(items.into_iter().map(Ok))
                .map(|p| shape(&p.unwrap()))
                .collect();
            rels.adopt(c.finish());
            out
        };
        // Inside one transaction: the text rides with the new definition, not the old one.
        let inside = vec![
            Item::Relation(r1.clone()),
            insert("1"),
            ddl("ALTER TABLE t ADD added text"),
            Item::Relation(r2.clone()),
            insert("2"),
        ];
        assert_eq!(
            shapes(&mut rels, inside),
            ["R1", "C0", "D:ALTER TABLE t ADD added text", "R2", "C1"]
        );
        // The DDL alone in a transaction (no change to the table): its text waits for the next.
        assert!(shapes(&mut rels, vec![ddl("ALTER TABLE t DROP added")]).is_empty());
        assert_eq!(
            shapes(&mut rels, vec![Item::Relation(r1.clone()), insert("3")]),
            ["D:ALTER TABLE t DROP added", "R1", "C0"]
        );
        // A statement that changes no column is dropped when the unchanged definition arrives.
        shapes(&mut rels, vec![ddl("CREATE INDEX ON t (id)")]);
        assert_eq!(
            shapes(&mut rels, vec![Item::Relation(r1.clone()), insert("4")]),
            ["R1", "C0"]
        );
        shapes(&mut rels, vec![ddl("ALTER TABLE t ADD added text")]);
        assert_eq!(
            shapes(&mut rels, vec![Item::Relation(r2), insert("5")]),
            ["D:ALTER TABLE t ADD added text", "R2", "C0"]
        );
    }

    #[test]
    fn the_converter_reads_an_item_only_when_its_pieces_are_asked_for() {
        let r = rel(&[("id", true)]);
        let pulled = std::cell::Cell::new(0u64);
        let items = std::iter::once(Item::Relation(r))
            .chain((0..1_000_000).map(|i| insert(&i.to_string())))
            .inspect(|_| pulled.set(pulled.get() + 1))
            .map(Ok);
        let mut rels = Relations::default();
        let mut c = rels.converter(head(10), |_| None);
        let mut pieces = c.pieces(items);
        let first: Vec<String> = pieces
            .by_ref()
            .take(3)
            .map(|p| shape(&p.unwrap()))
            .collect();
        assert_eq!(first, ["R1", "C0", "C1"]);
        assert_eq!(pulled.get(), 3, "nothing is read ahead");
        assert_eq!(pieces.count(), 999_998);
    }

    #[test]
    fn a_spilled_transaction_streams_in_order_and_converts_as_a_collected_one() {
        let r = rel(&[("id", true), ("a", false)]);
        let events = |xid: u32| {
            let mut e = vec![
                Event::Begin {
                    xid,
                    final_lsn: Lsn(10),
                    commit_time: 5,
                },
                Event::Relation(r.clone()),
            ];
            e.extend((0..10_000).map(|i| Event::Row {
                xid: None,
                op: Op::Insert,
                relid: 7,
                before: None,
                after: Some(vec![v(&i.to_string()), v("x")]),
            }));
            e.push(Event::Commit {
                commit_lsn: Lsn(10),
                end_lsn: Lsn(18),
                commit_time: 5,
            });
            e
        };
        let dir = tempfile::tempdir().unwrap();
        // 4 kB in memory: almost every item goes through the spill file.
        let mut a = Assembler::new(dir.path().to_path_buf(), 4096);
        let mut committed = None;
        for e in events(1) {
            committed = a.push(e).unwrap().or(committed);
        }
        let committed = committed.unwrap();
        assert_eq!(committed.items.len_hint(), 10_001);
        let mut rels = Relations::default();
        let mut c = rels.converter(TransactionHead::from(&committed), |_| None);
        let streamed: Vec<Piece> = c
            .pieces(committed.items.read().unwrap())
            .collect::<Result<_, _>>()
            .unwrap();
        let collected = run(events(1), &mut Relations::default());
        assert_eq!(streamed.len(), 10_001);
        assert_eq!(streamed[0], Piece::Relation(Arc::new(r)));
        for (piece, expected) in streamed[1..].iter().zip(&collected.changes) {
            assert_eq!(
                piece,
                &Piece::Change {
                    change: expected.clone(),
                    unchanged_toast: vec![]
                }
            );
        }
        assert_eq!(collected.changes.len(), 10_000);
        assert_eq!(collected.changes[9_999].ordinal, 9_999);
    }

    #[test]
    fn an_unreadable_item_ends_the_pieces_with_its_error() {
        let r = rel(&[("id", true)]);
        let items = vec![
            Ok(Item::Relation(r)),
            Ok(insert("1")),
            Err(AssembleError::SpillRead("truncated record".into())),
            Ok(insert("2")),
        ];
        let mut rels = Relations::default();
        let mut c = rels.converter(head(10), |_| None);
        let out: Vec<_> = c.pieces(items.into_iter()).collect();
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(matches!(
            out[2],
            Err(BatchError::Assemble(AssembleError::SpillRead(_)))
        ));

        let mut c = rels.converter(head(10), |_| None);
        let out: Vec<_> = c.pieces([Ok(insert("1"))].into_iter()).collect();
        assert!(
            matches!(out[..], [Err(BatchError::UnknownRelation { relid: 7 })]),
            "{out:?}"
        );
    }

    #[test]
    fn a_converter_with_its_items_can_move_to_another_thread() {
        fn send<T: Send>(_: &T) {}
        let mut rels = Relations::default();
        let c = rels.converter(
            head(10),
            Box::new(|_| None) as Box<dyn Fn(u32) -> Option<Relation> + Send>,
        );
        send(&c);
        let dir = tempfile::tempdir().unwrap();
        let mut a = Assembler::new(dir.path().to_path_buf(), 1);
        a.push(Event::Begin {
            xid: 1,
            final_lsn: Lsn(10),
            commit_time: 5,
        })
        .unwrap();
        let committed = a
            .push(Event::Commit {
                commit_lsn: Lsn(10),
                end_lsn: Lsn(18),
                commit_time: 5,
            })
            .unwrap()
            .unwrap();
        send(&committed.items);
    }
}
