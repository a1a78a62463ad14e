//! fig-receiver: consumes a PostgreSQL logical replication slot (figoutput or pgoutput), normalizes the
//! changes and delivers them durably to a sink. See `DESIGN.md` for the data flow and the rules that keep
//! data safe.
//!
//! - [`conn`]: one connection configuration for SQL (tokio-postgres) and replication connections.
//! - [`replication`]: the streaming replication protocol client.
//! - [`decode`]: pure decoders (figoutput records, pgoutput messages) into the normalized model.
//! - [`model`]: the normalized change-event model every decoder produces and every sink consumes.
//! - [`sink`]: the `Sink` trait (durable, atomic batches with their checkpoint); SQLite and JSON Lines.

pub mod config;
pub mod conn;
pub mod decode;
pub mod drift;
pub mod failpoint;
pub mod ident;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod replication;
pub mod run;
pub mod sink;
pub mod sync;
