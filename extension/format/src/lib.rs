//! The figoutput record format, defined once.
//!
//! The plugin (`extension/`) encodes with [`encode`]; the receiver decodes with [`decode`]. Both sides
//! use the constants in this crate, so a record kind, a value kind or a marker can only mean one thing.
//! The full specification, with byte-level examples, is `docs/FORMAT.md`; this crate is its reference
//! implementation and the round-trip tests here keep the two halves honest.
//!
//! ```text
//! plugin callback ──▶ encode::RecordWriter ──▶ bytes (one or more records per write)
//!                                                   │
//! receiver  ◀── decode::Record / decode::Value ◀── decode::Records (bounds-checked, no panics)
//! ```
//!
//! Every record is one MessagePack array whose first element is the record kind ([`RecordKind`]).
//! Several records may share one write; a reader must accept any split at record boundaries.

pub mod datetime;
pub mod decimal;
pub mod decode;
mod digits;
mod display;
pub mod encode;
mod kinds;

pub use kinds::{ColumnFlags, OldKind, RecordKind, ReplicaIdentity, ValueKind};

/// The format version this crate reads and writes. The receiver asks for it with the plugin option
/// `format_version`; the plugin refuses versions it does not know.
pub const FORMAT_VERSION: u32 = 1;

/// MessagePack extension type for "this TOASTed column did not change and was not logged".
pub const EXT_UNCHANGED_TOAST: i8 = 1;
/// MessagePack extension type for an exact decimal (numeric), packed as described in [`decimal`].
pub const EXT_DECIMAL: i8 = 2;

/// Prefix of the transactional logical message the extension's event trigger emits for each DDL
/// command. The plugin only turns such a message into a trusted [`RecordKind::Ddl`] record when the
/// same transaction wrote the identical payload into the protected table [`DDL_LOG_TABLE`].
pub const DDL_MESSAGE_PREFIX: &str = "figoutput.ddl";
/// Schema of the extension's own objects.
pub const EXTENSION_SCHEMA: &str = "figoutput";
/// The protected table (only the extension's SECURITY DEFINER trigger can write it) that
/// authenticates DDL messages. Its own changes never appear in the stream.
pub const DDL_LOG_TABLE: &str = "ddl_log";

/// PostgreSQL's `DATEVAL_NOBEGIN` / `DATEVAL_NOEND`: date `-infinity` / `infinity`.
pub const DATE_NEG_INFINITY: i32 = i32::MIN;
pub const DATE_POS_INFINITY: i32 = i32::MAX;
/// PostgreSQL's `DT_NOBEGIN` / `DT_NOEND`: timestamp(tz) `-infinity` / `infinity`.
pub const TIMESTAMP_NEG_INFINITY: i64 = i64::MIN;
pub const TIMESTAMP_POS_INFINITY: i64 = i64::MAX;
