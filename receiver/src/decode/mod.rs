//! Pure decoders: the bytes of one XLogData payload in, normalized [`Event`](crate::model::Event)s out.
//!
//! ```text
//! XLogData ──▶ figoutput::decode(buf, &mut FigState, &TypeRegistry)  ─┐
//!          └─▶ pgoutput::decode(buf, &mut PgState, &TypeRegistry)      ─┴─▶ Vec<Event> ─▶ pipeline
//!                   │                      └─ types: OID → name and text format (TYPE_QUERY)
//!                   └─ pg_text: PostgreSQL's text output → Value (dates and times through
//!                      fig_format::datetime, the formatter the figoutput path uses too)
//! ```
//!
//! No I/O, no clock, no logging: a decoder is a function of its input and its session state, so it can
//! be fuzzed and property-tested, and both decoders can be held to the same output for the same rows
//! (the differential tests in `tests.rs` and `tests/tests/decode_differential.rs`).
//!
//! The rules they follow (DESIGN.md rules 5 and 6):
//! - **The server is untrusted input.** Every length and tag is checked before use; nothing is
//!   allocated in proportion to a declared length that the remaining bytes cannot back. Bad input is
//!   a [`DecodeError`], never a panic.
//! - **Never guess.** A change for a relation not described in this session is
//!   [`DecodeError::UnknownRelation`] (the caller reconnects; the server resends RELATIONs), a type the
//!   registry does not know is [`DecodeError::UnknownType`] (the caller reloads types and decodes the
//!   same bytes again). A failed call leaves the state as it was.
//! - **Never invent values.** An unchanged TOASTed column stays [`Incoming::UnchangedToast`]; numerics
//!   stay exact text; NaN and infinities survive.
//!
//! Shared decisions of both decoders:
//! - Old rows of a `REPLICA IDENTITY DEFAULT/INDEX` table (figoutput's `OldKind::Key`, pgoutput's
//!   `K`) are as wide as the relation; positions that are not part of the key are
//!   `Incoming::Value(Value::Null)` (whatever the server put there), so `before[i]` always belongs to
//!   `columns[i]` and a sink reads the key by the columns' `key` flags.
//! - An array with a lower bound other than 1 is a [`Value::BoundedArray`] (bounds per dimension),
//!   at any nesting level; `int2vector` and `oidvector`, lower bound 0 by their type, are plain.
//!   An array without elements is `[]` (no dimensions, or a dimension of length 0 as in
//!   figoutput's empty `int2vector`).
//! - An array whose elements are arrays holds one [`Value::Array`] per inner array (nested by its
//!   own dimensions). figoutput's RELATION lacks the inner arrays' element kind: both decoders take
//!   it from the [`TypeRegistry`]; nesting is bounded by [`types::MAX_ARRAY_NESTING`].
//! - ORIGIN records and pgoutput's TYPE messages produce no event.
//!
//! [`Incoming::UnchangedToast`]: crate::model::Incoming::UnchangedToast
//! [`Value::Array`]: crate::model::Value::Array
//! [`Value::BoundedArray`]: crate::model::Value::BoundedArray

mod error;
pub mod figoutput;
pub mod pg_text;
pub mod pgoutput;
pub mod types;

pub use error::{DecodeError, Recovery};
pub use figoutput::FigState;
pub use pgoutput::PgState;
pub use types::{TypeRegistry, TypeRow, TYPE_QUERY};

/// A uuid's canonical text: lower-case hex, 8-4-4-4-12. The one formatter for both decoders.
pub(crate) fn uuid_text(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    append_uuid(&mut s, u);
    s
}

/// [`uuid_text`], appended to `out`.
pub(crate) fn append_uuid(out: &mut String, u: &[u8; 16]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
}

#[cfg(test)]
mod tests;
