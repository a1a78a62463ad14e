//! The small enumerations of the format: record kinds, value kinds, replica identity, column flags.

/// The first element of every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    Begin = 1,
    Commit = 2,
    Origin = 3,
    Relation = 4,
    Insert = 5,
    Update = 6,
    Delete = 7,
    Truncate = 8,
    Message = 9,
    Ddl = 10,
    StreamStart = 11,
    StreamStop = 12,
    StreamCommit = 13,
    StreamAbort = 14,
}

impl RecordKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        use RecordKind::*;
        Some(match v {
            1 => Begin,
            2 => Commit,
            3 => Origin,
            4 => Relation,
            5 => Insert,
            6 => Update,
            7 => Delete,
            8 => Truncate,
            9 => Message,
            10 => Ddl,
            11 => StreamStart,
            12 => StreamStop,
            13 => StreamCommit,
            14 => StreamAbort,
            _ => return None,
        })
    }
}

/// How a column's values are encoded. Announced per column in RELATION so the wire values themselves
/// can stay plain MessagePack (an int is an int; the kind says it counts days since 2000-01-01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ValueKind {
    /// Any other type: PostgreSQL's text output as a str; the type name is in RELATION.
    Other = 0,
    Bool = 1,
    Int2 = 2,
    Int4 = 3,
    Int8 = 4,
    Float4 = 5,
    Float8 = 6,
    /// ext [`crate::EXT_DECIMAL`], packed decimal text.
    Numeric = 7,
    /// text, varchar, bpchar, name: a UTF-8 str.
    Text = 8,
    /// bin.
    Bytea = 9,
    /// int: days since 2000-01-01; i32::MIN / i32::MAX are -infinity / infinity.
    Date = 10,
    /// int: microseconds since midnight.
    Time = 11,
    /// int: microseconds since 2000-01-01 00:00:00; i64::MIN / i64::MAX are -infinity / infinity.
    Timestamp = 12,
    /// int: microseconds since 2000-01-01 00:00:00 UTC; same infinities.
    Timestamptz = 13,
    /// bin of 16 bytes.
    Uuid = 14,
    /// str: the JSON text.
    Json = 15,
    /// str: jsonb's canonical text output.
    Jsonb = 16,
    /// str: the enum label.
    Enum = 17,
    /// array: `[dims, e1, e2, …]`, elements of the column's element kind.
    Array = 18,
}

impl ValueKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        use ValueKind::*;
        Some(match v {
            0 => Other,
            1 => Bool,
            2 => Int2,
            3 => Int4,
            4 => Int8,
            5 => Float4,
            6 => Float8,
            7 => Numeric,
            8 => Text,
            9 => Bytea,
            10 => Date,
            11 => Time,
            12 => Timestamp,
            13 => Timestamptz,
            14 => Uuid,
            15 => Json,
            16 => Jsonb,
            17 => Enum,
            18 => Array,
            _ => return None,
        })
    }
}

/// `pg_class.relreplident`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReplicaIdentity {
    Default = b'd',
    Nothing = b'n',
    Full = b'f',
    Index = b'i',
}

impl ReplicaIdentity {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            b'd' => Self::Default,
            b'n' => Self::Nothing,
            b'f' => Self::Full,
            b'i' => Self::Index,
            _ => return None,
        })
    }
}

/// Bit flags of a RELATION column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ColumnFlags(pub u8);

impl ColumnFlags {
    pub const NOT_NULL: u8 = 1;
    /// Part of the replica identity (primary key, the chosen index, or every column under FULL).
    pub const KEY: u8 = 2;
    /// A stored generated column (only sent with the option `include_generated`).
    pub const GENERATED: u8 = 4;

    pub fn not_null(self) -> bool {
        self.0 & Self::NOT_NULL != 0
    }
    pub fn key(self) -> bool {
        self.0 & Self::KEY != 0
    }
    pub fn generated(self) -> bool {
        self.0 & Self::GENERATED != 0
    }
}

/// Which old row an UPDATE or DELETE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OldKind {
    /// Only the replica identity columns are meaningful; the others are nil.
    Key = b'k',
    /// The whole old row (REPLICA IDENTITY FULL).
    Full = b'o',
}

impl OldKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            b'k' => Some(Self::Key),
            b'o' => Some(Self::Full),
            _ => None,
        }
    }
}
