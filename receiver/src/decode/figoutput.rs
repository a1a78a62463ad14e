//! figoutput records → normalized events.
//!
//! [`fig_format::decode::Records`] does the byte-level work (bounds-checked, typed); this module keeps
//! the session's relations and gives values their normalized form. Record kinds map one to one onto
//! [`Event`]s, except ORIGIN, which produces none.
//!
//! A write is decoded completely before the state changes: when any record of `buf` fails, the
//! relations learnt from earlier records of the same write are not kept either.
//!
//! Arrays whose elements are arrays (an array of a domain over an array type, `int2vector[]`,
//! `oidvector[]`: RELATION `elem_kind` 18) need the kind of the inner arrays' elements, which
//! RELATION does not carry (format version 1). It comes from the catalog, by the column's type OID,
//! through the same [`TypeRegistry`] the pgoutput decoder uses, when the RELATION arrives:
//!
//! ```text
//! RELATION column (type_oid, kind 18, elem_kind 18) ──▶ TypeRegistry::resolve ──▶ element kind per
//!                                                      (UnknownType: the caller   nesting level,
//!                                                       reloads, decodes again)   e.g. [Array, Int4]
//! ```
//!
//! Other columns never consult the registry, so a session that meets no such column needs no
//! catalog rows at all ([`TypeRegistry::builtin`] knows `int2vector[]` and `oidvector[]`).

use super::types::{ScalarKind, TextFormat, TypeRegistry};
use super::{uuid_text, DecodeError};
use crate::model::{Column, Event, Incoming, Lsn, Op, Relation, Value};
use fig_format::datetime::{format_date, format_time, format_timestamp};
use fig_format::decode::{self as fd, FormatError, Raw, Record, Records};
use fig_format::{OldKind, ValueKind};
use std::collections::HashMap;

/// What a figoutput session has told us so far: the relations described by RELATION records.
/// Starts empty on every connection (the plugin resends RELATION before a relation's first change).
#[derive(Debug, Clone, Default)]
pub struct FigState {
    relations: HashMap<u32, FigRelation>,
}

#[derive(Debug, Clone)]
struct FigRelation {
    relation: Relation,
    /// Per column: its kind, and the element kind of each nesting level of its arrays
    /// ([`fd::Value::from_raw_nested`]): the RELATION's `elem_kind`, then the catalog's kinds of
    /// inner arrays' elements where that is Array.
    kinds: Vec<(ValueKind, Vec<ValueKind>)>,
    /// Per column, per nesting level of its arrays: whether the arrays there are `int2vector` or
    /// `oidvector`, whose lower bound of 0 is the type's, not the value's.
    vectors: Vec<Vec<bool>>,
}

impl FigState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The relation as last described in this session.
    pub fn relation(&self, relid: u32) -> Option<&Relation> {
        self.relations.get(&relid).map(|r| &r.relation)
    }
}

/// Decodes one write of figoutput (one or more records). `types` is consulted only for columns
/// whose array elements are arrays; a type it lacks is [`DecodeError::UnknownType`] (reload it and
/// decode the same write again; the state is unchanged).
pub fn decode(
    buf: &[u8],
    state: &mut FigState,
    types: &TypeRegistry,
) -> Result<Vec<Event>, DecodeError> {
    // Relations described in this write, applied to `state` only when the whole write decoded.
    let mut learnt: HashMap<u32, FigRelation> = HashMap::new();
    let mut events = Vec::new();
    for record in Records::new(buf) {
        let event = match record? {
            Record::Begin {
                xid,
                final_lsn,
                commit_time,
            } => Event::Begin {
                xid,
                final_lsn: Lsn(final_lsn),
                commit_time,
            },
            Record::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
            } => Event::Commit {
                commit_lsn: Lsn(commit_lsn),
                end_lsn: Lsn(end_lsn),
                commit_time,
            },
            Record::Origin { .. } => continue,
            Record::Relation(r) => {
                let rel = relation(&r, types)?;
                learnt.insert(r.relid, rel.clone());
                Event::Relation(rel.relation)
            }
            Record::Insert { relid, new, xid } => {
                let rel = find(&learnt, &state.relations, relid)?;
                Event::Row {
                    xid,
                    op: Op::Insert,
                    relid,
                    before: None,
                    after: Some(tuple(rel, new)?),
                }
            }
            Record::Update {
                relid,
                old,
                new,
                xid,
            } => {
                let rel = find(&learnt, &state.relations, relid)?;
                Event::Row {
                    xid,
                    op: Op::Update,
                    relid,
                    before: old.map(|o| old_tuple(rel, o)).transpose()?,
                    after: Some(tuple(rel, new)?),
                }
            }
            Record::Delete { relid, old, xid } => {
                let rel = find(&learnt, &state.relations, relid)?;
                Event::Row {
                    xid,
                    op: Op::Delete,
                    relid,
                    before: old.map(|o| old_tuple(rel, o)).transpose()?,
                    after: None,
                }
            }
            Record::Truncate {
                cascade,
                restart_identity,
                relids,
                xid,
            } => Event::Truncate {
                xid,
                relids,
                cascade,
                restart_identity,
            },
            Record::Message {
                lsn,
                transactional,
                prefix,
                content,
                xid,
            } => Event::Message {
                xid,
                lsn: Lsn(lsn),
                transactional,
                prefix: prefix.to_owned(),
                content: content.to_vec(),
            },
            Record::Ddl { lsn, payload, xid } => Event::Ddl {
                xid,
                lsn: Lsn(lsn),
                payload: payload.to_owned(),
            },
            Record::StreamStart { xid, .. } => Event::StreamStart { xid },
            Record::StreamStop => Event::StreamStop,
            Record::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
            } => Event::StreamCommit {
                xid,
                commit_lsn: Lsn(commit_lsn),
                end_lsn: Lsn(end_lsn),
                commit_time,
            },
            Record::StreamAbort { xid, subxid } => Event::StreamAbort { xid, subxid },
        };
        events.push(event);
    }
    state.relations.extend(learnt);
    Ok(events)
}

fn find<'s>(
    learnt: &'s HashMap<u32, FigRelation>,
    known: &'s HashMap<u32, FigRelation>,
    relid: u32,
) -> Result<&'s FigRelation, DecodeError> {
    learnt
        .get(&relid)
        .or_else(|| known.get(&relid))
        .ok_or(DecodeError::UnknownRelation { relid })
}

fn relation(r: &fd::Relation<'_>, types: &TypeRegistry) -> Result<FigRelation, DecodeError> {
    Ok(FigRelation {
        relation: Relation {
            relid: r.relid,
            schema: r.schema.to_owned(),
            table: r.table.to_owned(),
            columns: r
                .columns
                .iter()
                .map(|c| Column {
                    name: c.name.to_owned(),
                    type_name: c.type_name.to_owned(),
                    type_oid: c.type_oid,
                    key: c.flags.key(),
                    not_null: c.flags.not_null(),
                    attnum: Some(c.attnum),
                })
                .collect(),
        },
        kinds: r
            .columns
            .iter()
            .map(|c| Ok((c.kind, elem_kinds(c, types)?)))
            .collect::<Result<_, DecodeError>>()?,
        vectors: r.columns.iter().map(|c| vector_levels(c, types)).collect(),
    })
}

/// Which nesting levels of a column's arrays are vectors (see [`FigRelation::vectors`]): from the
/// catalog's formats where it knows the type, else by the built-in oids (int2vector 22, oidvector
/// 30) alone. A type it cannot resolve is not a vector: at worst a vector's lower bound 0 is kept.
fn vector_levels(c: &fd::Column<'_>, types: &TypeRegistry) -> Vec<bool> {
    if c.kind != ValueKind::Array {
        return Vec::new();
    }
    let Ok(ty) = types.resolve(c.type_oid, c.typmod) else {
        return vec![matches!(c.type_oid, 22 | 30)];
    };
    let mut levels = Vec::new();
    let mut format = &ty.format;
    loop {
        match format {
            TextFormat::Vector(_) => {
                levels.push(true);
                break;
            }
            TextFormat::Array { element, .. } => {
                levels.push(false);
                format = element;
            }
            TextFormat::Scalar(_) => break,
        }
    }
    levels
}

/// The element kind of each nesting level of a column's arrays, outermost first. The RELATION
/// gives the first; where that is Array (the elements are arrays), the rest come from the catalog:
/// the column type's element type, followed as [`TypeRegistry::resolve`] follows it (a domain to
/// its base array type, that array type to its element type, and so on).
fn elem_kinds(c: &fd::Column<'_>, types: &TypeRegistry) -> Result<Vec<ValueKind>, DecodeError> {
    if c.kind != ValueKind::Array || c.elem_kind != ValueKind::Array {
        return Ok(vec![c.elem_kind]);
    }
    let ty = types.resolve(c.type_oid, c.typmod)?;
    let mut kinds = Vec::new();
    let mut format = &ty.format;
    loop {
        match format {
            TextFormat::Array { element, .. } => {
                kinds.push(kind_of(element));
                format = element;
            }
            TextFormat::Vector(k) => {
                kinds.push(scalar_kind(*k));
                break;
            }
            TextFormat::Scalar(_) => break,
        }
    }
    if kinds.first() != Some(&ValueKind::Array) {
        return Err(DecodeError::BadTypeInfo {
            oid: c.type_oid,
            reason: "the RELATION describes an array whose elements are arrays, the loaded catalog rows a type that is not",
        });
    }
    Ok(kinds)
}

/// The figoutput kind of values of `format`.
fn kind_of(format: &TextFormat) -> ValueKind {
    match format {
        TextFormat::Scalar(k) => scalar_kind(*k),
        TextFormat::Array { .. } | TextFormat::Vector(_) => ValueKind::Array,
    }
}

/// The figoutput kind of a scalar kind (json and jsonb are one scalar kind; figoutput's Json and
/// Jsonb are both a str holding the JSON text, so either reads them).
fn scalar_kind(k: ScalarKind) -> ValueKind {
    use ScalarKind as S;
    use ValueKind as K;
    match k {
        S::Bool => K::Bool,
        S::Int2 => K::Int2,
        S::Int4 => K::Int4,
        S::Int8 => K::Int8,
        S::Float4 => K::Float4,
        S::Float8 => K::Float8,
        // figoutput sends money as money::numeric.
        S::Numeric | S::Money { .. } => K::Numeric,
        S::Text => K::Text,
        S::Bytea => K::Bytea,
        S::Date => K::Date,
        S::Time => K::Time,
        S::Timestamp => K::Timestamp,
        S::Timestamptz => K::Timestamptz,
        S::Uuid => K::Uuid,
        S::Json => K::Json,
        S::Enum => K::Enum,
        S::Other => K::Other,
    }
}

fn tuple(rel: &FigRelation, raw: Vec<Raw<'_>>) -> Result<Vec<Incoming>, DecodeError> {
    if raw.len() != rel.kinds.len() {
        return Err(DecodeError::TupleWidth {
            relid: rel.relation.relid,
            expected: rel.kinds.len(),
            found: raw.len(),
        });
    }
    raw.into_iter()
        .zip(&rel.kinds)
        .zip(&rel.vectors)
        .map(|((raw, (kind, elems)), vectors)| {
            incoming(fd::Value::from_raw_nested(raw, *kind, elems)?, vectors)
        })
        .collect()
}

/// An old row; with [`OldKind::Key`] only key columns are meaningful, the others become NULL.
fn old_tuple(rel: &FigRelation, old: fd::OldTuple<'_>) -> Result<Vec<Incoming>, DecodeError> {
    let mut values = tuple(rel, old.values)?;
    if old.kind == OldKind::Key {
        for (v, c) in values.iter_mut().zip(&rel.relation.columns) {
            if !c.key {
                *v = Incoming::Value(Value::Null);
            }
        }
    }
    Ok(values)
}

fn incoming(v: fd::Value<'_>, vectors: &[bool]) -> Result<Incoming, DecodeError> {
    Ok(match v {
        fd::Value::UnchangedToast => Incoming::UnchangedToast,
        v => Incoming::Value(value(v, vectors)?),
    })
}

/// A figoutput value in its normalized form; `vectors`: which nesting levels of an array value
/// are vectors (see [`FigRelation::vectors`]).
pub fn value(v: fd::Value<'_>, vectors: &[bool]) -> Result<Value, DecodeError> {
    Ok(match v {
        fd::Value::Null => Value::Null,
        fd::Value::UnchangedToast => {
            return Err(FormatError::BadArray("an unchanged-TOAST marker inside an array").into())
        }
        fd::Value::Bool(b) => Value::Bool(b),
        fd::Value::Int(i) => Value::Int(i),
        fd::Value::Float4(f) => Value::Float(f.into()),
        fd::Value::Float8(f) => Value::Float(f),
        fd::Value::Numeric(n) => Value::Numeric(n),
        fd::Value::Text(s) => Value::Text(s.to_owned()),
        fd::Value::Bytes(b) => Value::Bytes(b.to_vec()),
        fd::Value::Date(d) => Value::Date(format_date(d)),
        fd::Value::Time(t) => {
            if !(0..=86_400_000_000).contains(&t) {
                return Err(FormatError::IntOutOfRange {
                    offset: 0,
                    what: "a time of day",
                }
                .into());
            }
            Value::Time(format_time(t))
        }
        fd::Value::Timestamp(t) => Value::Timestamp(format_timestamp(t, false)),
        fd::Value::Timestamptz(t) => Value::Timestamptz(format_timestamp(t, true)),
        fd::Value::Uuid(u) => Value::Uuid(uuid_text(&u)),
        fd::Value::Json(s) => Value::Json(s.to_owned()),
        fd::Value::Enum(s) => Value::Enum(s.to_owned()),
        fd::Value::Other(s) => Value::Other(s.to_owned()),
        fd::Value::Array(a) => array(a, vectors)?,
    })
}

/// Row-major elements and (lower, length) dimensions → nested arrays; an element that is an array
/// itself (a column whose elements are arrays) becomes one [`Value::Array`] element, nested by its
/// own dimensions.
///
/// An array without elements is `[]`, whatever its dimensions: none (`'{}'`), or one or more of
/// length 0 (an empty `int2vector` or `oidvector` is one dimension of length 0). PostgreSQL prints
/// all of them as `{}` (or `''` for the vectors), which pgoutput's decoder reads as `[]` too.
fn array(a: fd::ArrayValue<'_>, vectors: &[bool]) -> Result<Value, DecodeError> {
    // The format crate checked that the element count is the product of the lengths.
    if a.elements.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    // So with elements, every length is at least 1 and at most the element count, which the input's
    // bytes bound: nesting allocates nothing the input does not back.
    if a.dims.iter().any(|&(_, len)| len <= 0) {
        return Err(FormatError::BadArray("elements with a dimension of length 0").into());
    }
    let lens: Vec<usize> = a.dims.iter().map(|&(_, len)| len as usize).collect();
    let inner = vectors.get(1..).unwrap_or(&[]);
    let mut elements = a.elements.into_iter();
    let v = nest(&mut elements, &lens, inner)?;
    let vector = vectors.first() == Some(&true);
    match v {
        Value::Array(elements) if !vector && a.dims.iter().any(|&(lo, _)| lo != 1) => Ok(
            Value::bounded(a.dims.iter().map(|&(lo, _)| lo).collect(), elements),
        ),
        v => Ok(v),
    }
}

fn nest<'a>(
    elements: &mut impl Iterator<Item = fd::Value<'a>>,
    lens: &[usize],
    vectors: &[bool],
) -> Result<Value, DecodeError> {
    let Some((&len, inner)) = lens.split_first() else {
        let e = elements
            .next()
            .ok_or(FormatError::BadArray("fewer elements than the dimensions"))?;
        return value(e, vectors);
    };
    let mut items = Vec::with_capacity(len);
    for _ in 0..len {
        items.push(nest(elements, inner, vectors)?);
    }
    Ok(Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fig_format::encode::{ColumnOut, Writer};
    use fig_format::{ColumnFlags, ReplicaIdentity};

    fn col<'a>(name: &'a str, kind: ValueKind, elem: ValueKind, flags: u8) -> ColumnOut<'a> {
        ColumnOut {
            attnum: 1,
            name: name.as_bytes(),
            type_oid: 23,
            typmod: -1,
            type_name: b"integer",
            flags,
            kind,
            elem_kind: elem,
        }
    }

    fn relation_bytes(relid: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.relation_header(relid, b"public", b"t", ReplicaIdentity::Default, 3);
        w.column(&col(
            "id",
            ValueKind::Int4,
            ValueKind::Other,
            ColumnFlags::KEY | ColumnFlags::NOT_NULL,
        ));
        w.column(&col("v", ValueKind::Text, ValueKind::Other, 0));
        w.column(&col("a", ValueKind::Array, ValueKind::Int4, 0));
        buf
    }

    #[test]
    fn relation_then_changes() {
        let mut st = FigState::new();
        let ev = decode(&relation_bytes(7), &mut st, &TypeRegistry::builtin()).unwrap();
        let Event::Relation(rel) = &ev[0] else {
            panic!()
        };
        assert_eq!(rel.columns[0].name, "id");
        assert!(rel.columns[0].key && rel.columns[0].not_null && !rel.columns[1].key);

        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.begin(9, 100, 5);
        w.update_header(7, false);
        w.old_header(OldKind::Key);
        w.tuple_header(3);
        w.int(1);
        w.str("ignored");
        w.nil();
        w.tuple_header(3);
        w.int(2);
        w.unchanged_toast();
        w.array_value_header(&[(0, 2), (1, 2)], 4);
        for i in 1..=3 {
            w.int(i);
        }
        w.nil();
        w.commit(100, 120, 5);
        let ev = decode(&buf, &mut st, &TypeRegistry::builtin()).unwrap();
        assert_eq!(ev.len(), 3);
        let v = |x| Incoming::Value(x);
        assert_eq!(
            ev[1],
            Event::Row {
                xid: None,
                op: Op::Update,
                relid: 7,
                before: Some(vec![v(Value::Int(1)), v(Value::Null), v(Value::Null)]),
                after: Some(vec![
                    v(Value::Int(2)),
                    Incoming::UnchangedToast,
                    // Dimensions [0:1][1:2]: the lower bound 0 is kept.
                    v(Value::bounded(
                        vec![0, 1],
                        vec![
                            Value::Array(vec![Value::Int(1), Value::Int(2)]),
                            Value::Array(vec![Value::Int(3), Value::Null]),
                        ]
                    )),
                ]),
            }
        );
        assert_eq!(
            ev[2],
            Event::Commit {
                commit_lsn: Lsn(100),
                end_lsn: Lsn(120),
                commit_time: 5
            }
        );
    }

    #[test]
    fn unknown_relation_is_an_error_and_state_is_kept() {
        let mut st = FigState::new();
        let mut buf = relation_bytes(7);
        let mut w = Writer::new(&mut buf);
        w.insert_header(8, false);
        w.tuple_header(0);
        assert_eq!(
            decode(&buf, &mut st, &TypeRegistry::builtin()),
            Err(DecodeError::UnknownRelation { relid: 8 })
        );
        // The RELATION of the failed write was not kept.
        assert!(st.relation(7).is_none());
    }

    #[test]
    fn empty_and_zero_length_arrays() {
        let empty = |dims| fd::ArrayValue {
            dims,
            elements: vec![],
        };
        // '{}', an empty int2vector, and lengths that would allocate 10^9 values if nested by.
        for dims in [vec![], vec![(0, 0)], vec![(1, 1_000_000_000), (1, 0)]] {
            assert_eq!(array(empty(dims), &[]).unwrap(), Value::Array(vec![]));
        }
        let inconsistent = fd::ArrayValue {
            dims: vec![(1, 1_000_000_000), (1, 0)],
            elements: vec![fd::Value::Int(1)],
        };
        assert!(array(inconsistent, &[]).is_err());
    }
}
