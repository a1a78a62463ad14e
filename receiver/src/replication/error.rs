//! Errors of the replication client. Each message says what failed, why, and what to do.

use std::fmt;
use std::io;
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;

use super::frames::FrameError;
use crate::conn::ConnectError;

/// The fields of a server ErrorResponse (or NoticeResponse) that a person needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerError {
    /// `ERROR`, `FATAL`, `PANIC` (non-localized when the server sends it, else localized).
    pub severity: String,
    /// The SQLSTATE, like `28P01`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint.
    pub hint: Option<String>,
    /// Optional context (`where`).
    pub context: Option<String>,
}

impl ServerError {
    /// Collects the fields of an ErrorResponse/NoticeResponse body. Non-UTF-8 text is replaced, never a
    /// panic; a malformed field list keeps what was read before the fault.
    pub(crate) fn from_fields(mut fields: ErrorFields<'_>) -> Box<ServerError> {
        let mut e = ServerError::default();
        let mut localized_severity = None;
        while let Ok(Some(f)) = fields.next() {
            let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'V' => e.severity = v,
                b'S' => localized_severity = Some(v),
                b'C' => e.code = v,
                b'M' => e.message = v,
                b'D' => e.detail = Some(v),
                b'H' => e.hint = Some(v),
                b'W' => e.context = Some(v),
                _ => {}
            }
        }
        if e.severity.is_empty() {
            e.severity = localized_severity.unwrap_or_else(|| "ERROR".into());
        }
        Box::new(e)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// Everything that can go wrong on a replication connection.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// No byte stream to the server could be opened (network, Unix socket, sslmode, timeout).
    #[error(transparent)]
    Connect(#[from] ConnectError),

    /// Reading or writing the socket failed.
    #[error("replication connection to the server was lost: {0}; reconnect and resume from the last durable checkpoint")]
    Io(#[from] io::Error),

    /// The server closed the connection.
    #[error("the server closed the replication connection; reconnect and resume from the last durable checkpoint")]
    Closed,

    /// The client was left in an unknown protocol state by an earlier error or a cancelled command.
    #[error("the replication connection is unusable after an earlier error or a cancelled command; open a new one")]
    Broken,

    /// The server rejected the credentials.
    #[error("authentication as `{user}` failed: {server}; check the password, and that pg_hba.conf's method for this host matches how the role's password is stored")]
    Auth {
        /// The role.
        user: String,
        /// What the server said.
        server: Box<ServerError>,
    },

    /// The server wants a password and none is configured.
    #[error("the server asks for a password ({method}) for `{user}`, but none is configured: add it to the connection string or set it from an environment variable")]
    PasswordRequired {
        /// The role.
        user: String,
        /// The method the server asked for.
        method: &'static str,
    },

    /// The server wants an authentication method this client does not speak.
    #[error("the server asks for {method} authentication, which fig-receiver does not support; use scram-sha-256 (or md5/password) for this role in pg_hba.conf")]
    UnsupportedAuth {
        /// The method.
        method: String,
    },

    /// The SCRAM exchange failed on our side (bad server message or server signature mismatch).
    #[error("SCRAM-SHA-256 authentication failed: {reason}; the server's proof did not check out or its messages were malformed")]
    Scram {
        /// What went wrong.
        reason: String,
    },

    /// The server refused to open a replication session for this role or database.
    #[error("the server refused the replication connection: {server}; the role needs the REPLICATION attribute (ALTER ROLE … REPLICATION) and pg_hba.conf must let it connect to this database (logical replication connections match the database name, not the `replication` keyword), and max_wal_senders must leave a free sender")]
    ReplicationRefused {
        /// What the server said.
        server: Box<ServerError>,
    },

    /// A command was answered with an ErrorResponse.
    #[error("`{command}` failed: {server}")]
    Server {
        /// The command (without secrets; replication commands carry none).
        command: String,
        /// What the server said.
        server: Box<ServerError>,
    },

    /// The server broke the protocol (an unexpected message, a malformed body).
    #[error("protocol violation by the server: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },

    /// A message announced a length above the configured maximum.
    #[error("the server sent a {len}-byte message (tag {tag:?}), more than the {max}-byte limit; raise the limit only if the server is trusted and such values are expected")]
    MessageTooLarge {
        /// The tag byte, as a char.
        tag: char,
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A CopyData payload was not a valid replication frame.
    #[error(transparent)]
    Frame(#[from] FrameError),

    /// A command's result did not have the expected shape.
    #[error("unexpected answer to `{command}`: {reason}")]
    BadResponse {
        /// The command.
        command: String,
        /// What was wrong.
        reason: String,
    },

    /// An argument cannot be sent (a slot name PostgreSQL would refuse, a NUL byte in an option…).
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// What kind of argument.
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// The server's major version is not supported.
    #[error("the server runs PostgreSQL {version}; fig-receiver needs PostgreSQL 10 or newer for logical replication commands")]
    UnsupportedServer {
        /// The `server_version` it reported.
        version: String,
    },

    /// Nothing at all came from the server for too long, even after asking it for a reply.
    #[error("no message from the server for {after:?}, even after asking for a reply; the connection is presumed dead: reconnect and resume from the last durable checkpoint")]
    ServerSilent {
        /// The receive timeout.
        after: Duration,
    },
}

impl ReplicationError {
    /// Whether reconnecting later may succeed without anyone changing anything: lost connections,
    /// timeouts, server shutdowns and restarts, too many connections, a slot in use by a process that is
    /// going away. Configuration and permission problems are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Io(_)
            | ReplicationError::Closed
            | ReplicationError::Broken
            | ReplicationError::ServerSilent { .. } => true,
            ReplicationError::Connect(c) => c.is_transient(),
            ReplicationError::Server { server, .. }
            | ReplicationError::ReplicationRefused { server } => {
                crate::conn::is_transient_sqlstate(&server.code)
            }
            _ => false,
        }
    }

    /// The server's SQLSTATE, when the server reported the error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ReplicationError::Auth { server, .. }
            | ReplicationError::ReplicationRefused { server }
            | ReplicationError::Server { server, .. } => Some(&server.code),
            _ => None,
        }
    }
}

/// Result of the replication client.
pub type Result<T, E = ReplicationError> = std::result::Result<T, E>;
