//! Why a message could not be decoded, and what the caller should do about it.

use super::pg_text::TextError;
use fig_format::decode::FormatError;
use thiserror::Error;

/// A decoding failure. Decoders never panic and never guess: anything they cannot decode exactly is
/// one of these. [`DecodeError::recovery`] tells the caller what to do.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("figoutput record is malformed: {0} (is the plugin's format version the one this receiver reads?)")]
    Format(#[from] FormatError),
    #[error("change for relation {relid}, which no RELATION message described in this session: reconnect and stream again from the checkpoint")]
    UnknownRelation { relid: u32 },
    #[error("type OID {oid} is not in the type registry: reload it with decode::types::TYPE_QUERY and decode this message again")]
    UnknownType { oid: u32 },
    #[error("the loaded type information for OID {oid} is inconsistent: {reason}; reload it with decode::types::TYPE_QUERY")]
    BadTypeInfo { oid: u32, reason: &'static str },
    #[error("type OID {oid} is an array whose elements are arrays nested more than {limit} deep, deeper than this receiver decodes")]
    ArraysTooDeep { oid: u32, limit: usize },
    #[error("pgoutput message truncated at byte {offset}: {needed} more bytes expected")]
    Truncated { offset: usize, needed: usize },
    #[error("unknown pgoutput message type {:?} (0x{tag:02x}) at byte {offset}", *tag as char)]
    UnknownMessage { tag: u8, offset: usize },
    #[error("pgoutput message malformed at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error(
        "tuple of relation {relid} has {found} columns; its RELATION message declared {expected}"
    )]
    TupleWidth {
        relid: u32,
        expected: usize,
        found: usize,
    },
    #[error("column {column:?} of relation {relid}: {source}")]
    BadValue {
        relid: u32,
        column: String,
        source: TextError,
    },
    #[error("pgoutput protocol version {version} is not supported: use proto_version 1 to 4")]
    UnsupportedVersion { version: u32 },
    #[error("{what} is not part of pgoutput protocol version {version}: the stream does not match the proto_version this receiver asked for")]
    NotInVersion { what: &'static str, version: u32 },
    #[error("binary tuple data is not supported: start replication without the pgoutput option binary 'true'")]
    BinaryUnsupported,
    #[error("two-phase message {:?} is not supported: start replication without the pgoutput option two_phase", *tag as char)]
    TwoPhaseUnsupported { tag: u8 },
    #[error("{count} bytes left after a complete pgoutput message at byte {offset}")]
    TrailingBytes { offset: usize, count: usize },
    #[error("{0}")]
    StreamState(&'static str),
    #[error("pgoutput option {name} = {value:?} is not supported: {reason}")]
    BadOption {
        name: String,
        value: String,
        reason: &'static str,
    },
}

/// What the caller does about a [`DecodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Reload the type registry ([`super::types::TYPE_QUERY`]) and decode the same message again;
    /// the decoder state was not changed by the failed call.
    RefreshTypes,
    /// The session lost track of the stream (e.g. a change for an undescribed relation): drop the
    /// connection and stream again from the checkpoint, where the server resends RELATIONs.
    Reconnect,
    /// The stream is malformed or configured wrongly: stop and report; retrying gives the same error.
    Fatal,
}

impl DecodeError {
    pub fn recovery(&self) -> Recovery {
        match self {
            DecodeError::UnknownType { .. } | DecodeError::BadTypeInfo { .. } => {
                Recovery::RefreshTypes
            }
            DecodeError::UnknownRelation { .. } => Recovery::Reconnect,
            _ => Recovery::Fatal,
        }
    }
}
