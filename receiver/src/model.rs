//! The normalized change-event model: one representation for both plugins and every sink.
//!
//! ```text
//! figoutput bytes ──▶ decode::figoutput ─┐
//!                                        ├─▶ Event (Begin | Change | Commit | Schema …) ─▶ pipeline ─▶ sink
//! pgoutput bytes  ──▶ decode::pgoutput  ─┘
//! ```
//!
//! Values follow `DESIGN.md` ("Normalized values"): integers as integers, floats as floats with NaN and
//! infinities kept, numerics as exact decimal text, dates and times as ISO 8601 text (timestamptz in
//! UTC with `Z`, always six fractional digits), uuids as canonical text, json/jsonb as their text,
//! arrays as (nested) arrays, enums as their label, anything else as PostgreSQL's text output with the
//! type named in the schema. Both decoders must produce identical values for identical rows; the
//! differential test runs one workload through both plugins and compares the events exactly.

pub use crate::replication::Lsn;
use serde::{Deserialize, Serialize};

/// A column value, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// float4 values are widened exactly to f64; NaN and the infinities are kept.
    Float(f64),
    /// Exact decimal text: `-?D+(.D+)?`, `NaN`, `Infinity`, `-Infinity`.
    Numeric(String),
    Text(String),
    Bytes(Vec<u8>),
    /// `YYYY-MM-DD` (astronomical years before 1), or `infinity` / `-infinity`.
    Date(String),
    /// `HH:MM:SS.ffffff`.
    Time(String),
    /// `YYYY-MM-DDTHH:MM:SS.ffffff`.
    Timestamp(String),
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
    Timestamptz(String),
    /// Canonical lower-case text.
    Uuid(String),
    /// The JSON text (jsonb in its canonical output form).
    Json(String),
    Enum(String),
    /// Multi-dimensional arrays nest, one level per dimension; an array with no elements is `[]`
    /// whatever its dimensions (`'{}'`, an empty `int2vector`). An array whose lower bounds are not
    /// all 1 is a [`Value::BoundedArray`].
    /// `int2vector` and `oidvector` are 1-D arrays (of integers, of oid text). An array whose
    /// elements are arrays (an array of a domain over an array type, `int2vector[]`,
    /// `oidvector[]`) holds per element [`Value::Null`] or one `Array` of that inner array, nested
    /// by its own dimensions: `'{"{1,2}","{}",NULL}'::intlist[]` is `[[1,2],[],null]`. Only the
    /// column's type tells it from a multi-dimensional array of the inner elements.
    Array(Vec<Value>),
    /// An array with a lower bound other than 1 (`'[0:2]={1,2,3}'::int[]`, `'[-1:0][1:1]={{7},{8}}'`):
    /// its lower bound per dimension, outermost first, and its elements nested as in
    /// [`Value::Array`]. `int2vector` and `oidvector`, whose lower bound is 0 by definition, are
    /// plain arrays.
    /// Boxed: rare, and so a value stays 32 bytes wide (every row is a vector of them).
    BoundedArray(Box<Bounded>),
    /// PostgreSQL's text output of a type without a native form; [`Column::type_name`] names it.
    Other(String),
}

/// The bounds and elements of a [`Value::BoundedArray`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bounded {
    /// Lower bound per dimension, outermost first.
    pub lower: Vec<i32>,
    /// Nested as in [`Value::Array`].
    pub elements: Vec<Value>,
}

impl Value {
    /// A [`Value::BoundedArray`].
    pub fn bounded(lower: Vec<i32>, elements: Vec<Value>) -> Value {
        Value::BoundedArray(Box::new(Bounded { lower, elements }))
    }
}

#[cfg(test)]
#[test]
fn a_value_stays_32_bytes_wide() {
    // Rows are vectors of values: a wider variant makes every row bigger (and slower).
    assert_eq!(std::mem::size_of::<Value>(), 32);
}

/// A value as it arrives, before the pipeline resolved unchanged TOAST columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Incoming {
    Value(Value),
    /// Not in the WAL because it did not change: filled from the sink's last known value, never
    /// turned into NULL or a placeholder (DESIGN rule 5).
    UnchangedToast,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// `format_type` text, e.g. `numeric(18,2)`, `timestamp with time zone`, `text[]`.
    pub type_name: String,
    pub type_oid: u32,
    /// Part of the replica identity (the key the sink upserts by).
    pub key: bool,
    pub not_null: bool,
    /// The column's `pg_attribute.attnum` when the plugin sends it (figoutput does; pgoutput does not).
    /// Schema tracking tells a dropped-and-re-added column from an unchanged one by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attnum: Option<i16>,
}

/// The schema of figoutput's own bookkeeping (its DDL log, `figoutput.ddl_log`): never copied and
/// never streamed, even when a publication `FOR ALL TABLES` includes it.
pub const EXTENSION_SCHEMA: &str = "figoutput";

/// A table's shape as of a point in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Relation {
    pub relid: u32,
    pub schema: String,
    pub table: String,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        }
    }
}

/// One row change of a committed transaction, ready for a sink. Identified by (commit LSN, ordinal),
/// never by an LSN alone (DESIGN rule 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub op: Op,
    pub relid: u32,
    pub schema: String,
    pub table: String,
    /// The leaf partition the change happened in (`schema.table`) when `schema.table` is its
    /// partitioned root (`replication.partition_mirrors = "root"`). A TRUNCATE that names one is of
    /// that leaf only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The new row (insert, update); column order as in the relation.
    pub after: Option<Vec<Value>>,
    /// The old row as far as the replica identity provides it (key columns, or all with FULL).
    pub before: Option<Vec<Value>>,
    pub commit_lsn: Lsn,
    pub ordinal: u32,
    pub xid: u32,
    /// Microseconds since 2000-01-01 UTC (PostgreSQL's epoch), as the server reports it.
    pub commit_time: i64,
}

/// A logical decoding message (`pg_logical_emit_message`), delivered as it was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The end of the WAL record that holds it: unique in the stream.
    pub lsn: Lsn,
    /// Part of its transaction (delivered only if that commits, at its commit) or not (delivered
    /// as soon as it is decoded, whatever happens to the transaction that wrote it).
    pub transactional: bool,
    pub prefix: String,
    pub content: Vec<u8>,
}

/// What a decoder yields, in stream order. Transactions may be streamed in blocks (PostgreSQL 14+):
/// the pipeline assembles them and hands sinks only committed transactions, whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    Begin {
        xid: u32,
        final_lsn: Lsn,
        commit_time: i64,
    },
    Relation(Relation),
    Row {
        xid: Option<u32>,
        op: Op,
        relid: u32,
        before: Option<Vec<Incoming>>,
        after: Option<Vec<Incoming>>,
    },
    Truncate {
        xid: Option<u32>,
        relids: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// A trusted DDL record (figoutput's authenticated capture).
    Ddl {
        xid: Option<u32>,
        lsn: Lsn,
        payload: String,
    },
    Message {
        xid: Option<u32>,
        lsn: Lsn,
        transactional: bool,
        prefix: String,
        content: Vec<u8>,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    StreamStart {
        xid: u32,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}
