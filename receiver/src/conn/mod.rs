//! One connection configuration for both kinds of connection to the source server.
//!
//! The receiver talks to PostgreSQL in two ways: regular SQL through tokio-postgres (catalog queries,
//! slot inspection, snapshot reads) and the streaming replication protocol through our own
//! [`replication`](crate::replication) client. Both start from the same [`ConnConfig`] and open their
//! byte stream through the same [`transport`] and [`tls`] negotiation, and both apply the same
//! authentication [`auth`] policy, so a setting (host, port, user, password, sslmode, certificates,
//! channel binding, allowed password methods, later an SSH tunnel) is written once and applies to both.
//!
//! ```text
//! "postgres://user@host/db?sslmode=verify-full&sslrootcert=/etc/fig/ca.pem"
//!         │ ConnConfig::parse (options: the typed values)
//!         ▼
//!     ConnConfig ──transport::open──▶ socket ──▶ tls::negotiate ──▶ Transport
//!                                                                    ├──▶ sql: AuthGuard + tokio-postgres ─▶ Client
//!                                                                    └──▶ ReplicationClient (auth::Policy)
//! ```
//!
//! Secrets: the password is kept in a [`Password`] whose `Debug` prints `***`; `ConnConfig`'s `Debug`
//! and [`ConnConfig::redacted`] never show it. Key files are never quoted in errors.

pub mod auth;
mod auth_guard;
mod config;
mod options;
mod sql;
pub mod tls;
pub mod transport;

pub use auth::AuthRefused;
pub use config::{
    AllowedPasswordAuth, ChannelBinding, ConfigError, ConnConfig, Host, Password, PasswordAuth,
    SslMode, SslRootCert, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PORT, KNOWN_KEYS,
};
pub use sql::describe_sql_error;
pub use tls::{security_warnings, TlsError};
pub use transport::{
    connect, is_transient_sqlstate, AsyncStream, ConnectError, TlsSession, Transport,
};
