//! One connection configuration for both kinds of connection to the source server.
//!
//! The receiver talks to PostgreSQL in two ways: regular SQL through tokio-postgres (catalog queries,
//! slot inspection, snapshot reads) and the streaming replication protocol through our own
//! [`replication`](crate::replication) client. Both start from the same [`ConnConfig`] and open their
//! byte stream through the same [`transport`], so a setting (host, port, user, password, sslmode, and
//! later TLS files, SCRAM channel binding, an SSH tunnel) is written once and applies to both.
//!
//! ```text
//! "postgres://user@host/db?sslmode=prefer"
//!         │ ConnConfig::parse
//!         ▼
//!     ConnConfig ──connect_sql()──────────────▶ tokio_postgres::Client
//!         │       ──to_tokio_postgres()────────▶ tokio_postgres::Config
//!         └──────── ReplicationClient::connect ▶ replication=database session
//! ```
//!
//! Secrets: the password is kept in a [`Password`] whose `Debug` prints `***`; `ConnConfig`'s `Debug`
//! and [`ConnConfig::redacted`] never show it.

mod config;
mod tls;
pub mod transport;

pub use config::{
    ConfigError, ConnConfig, Host, Password, SslMode, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PORT,
    KNOWN_KEYS,
};
pub use transport::{
    connect, describe_sql_error, is_transient_sqlstate, AsyncStream, ConnectError, Transport,
};
