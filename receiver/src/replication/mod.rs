//! The streaming replication protocol client.
//!
//! The published tokio-postgres has no replication mode and does not know the CopyBothResponse (`W`)
//! message, so this module speaks the protocol itself on top of `postgres-protocol`'s message encoders
//! and parsers, over the same [`Transport`](crate::conn::Transport) as the SQL connection:
//!
//! ```text
//! ConnConfig ─▶ ReplicationClient::connect  (startup with replication=database, password/MD5/SCRAM)
//!                 │ identify_system, create_logical_slot (may export a snapshot), drop_slot, simple_query
//!                 ▼
//!               start_logical(slot, lsn, options) ─▶ ReplicationStream
//!                 next() → XLogData | Keepalive          (frames.rs parses, pure)
//!                 set_flushed(lsn) ─▶ status updates      (on a timer, and at once when asked)
//!                 finish() ─▶ back to ReplicationClient
//! ```
//!
//! The rule this module enforces (DESIGN.md rule 1): **the flush position sent to the server is exactly
//! what the caller declared durable with [`ReplicationStream::set_flushed`]**, never a position the stream
//! merely received. The server releases WAL (and the slot's `confirmed_flush_lsn` moves) up to it; a
//! restart resumes from the caller's checkpoint, not from "now" (rule 4).
//!
//! The server is untrusted input (rule 6): message lengths are bounded before anything is allocated,
//! every frame is length- and tag-checked, and a bad message is a typed error.
//!
//! Layout: [`lsn`] (the `X/Y` position type), [`frames`] (XLogData, keepalive and status-update frames,
//! sans-IO), `commands` (command text and quoting), `wire` (framing over the socket), `client` (command
//! mode), `stream` (CopyBoth mode), [`error`].

mod client;
pub mod commands;
pub mod error;
pub mod frames;
pub mod lsn;
mod stream;
mod wire;

pub use client::{ReplicationClient, SlotInfo, SystemInfo, TextRows, SESSION_SETTINGS};
pub use commands::SnapshotAction;
pub use error::{ReplicationError, ServerError};
pub use frames::{FrameError, PgTimestamp};
pub use lsn::{Lsn, ParseLsnError};
pub use stream::{
    ReplicationStream, StreamEvent, DEFAULT_RECEIVE_TIMEOUT, DEFAULT_STATUS_INTERVAL,
};
pub use wire::DEFAULT_MAX_MESSAGE_LEN;
