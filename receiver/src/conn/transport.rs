//! The byte stream to the server, shared by the SQL and the replication connection.
//!
//! ```text
//! ConnConfig ──▶ socket (TCP | Unix) ──▶ tls::negotiate (sslmode, rustls) ──▶ Transport ──▶ sql (tokio-postgres)
//!                  (later: SSH tunnel)                                              └──▶ ReplicationClient
//! ```
//!
//! Everything about *how bytes reach the server* lives here and in [`tls`](super::tls), so that TLS,
//! client certificates, SCRAM channel binding and (later) SSH tunnels arrive in one place and both
//! kinds of connection get them at once. A [`Transport`] is an `AsyncRead + AsyncWrite` plus what the
//! authentication exchange needs to know about it: whether it is TLS, and the `tls-server-end-point`
//! data for SCRAM-SHA-256-PLUS ([`Transport::auth_policy`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::auth::{AuthRefused, Policy};
use super::config::{ConnConfig, Host, SslMode};
use super::tls::{self, Attempt, TlsError};

/// Any bidirectional async byte stream we can talk PostgreSQL over.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// Why no byte stream to the server could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("could not connect to {target}: {source}; check that the server is running there and accepts TCP connections (listen_addresses, port, firewall)")]
    Tcp {
        /// `host:port`.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Unix socket connect failed.
    #[error("could not connect to Unix socket {target}: {source}; check that the server is running and that `host` names its socket directory (unix_socket_directories) and `port` its port")]
    Unix {
        /// The socket path.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The connection or its startup took longer than `connect_timeout`.
    #[error("connecting to {target} took longer than {after:?} (connect_timeout); check the address and the network path, or raise connect_timeout")]
    Timeout {
        /// Where.
        target: String,
        /// The limit.
        after: Duration,
    },
    /// TLS could not be set up or negotiated as the sslmode demands.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server asked for an authentication the configuration refuses (md5, cleartext, no channel
    /// binding under `channel_binding=require`).
    #[error("authentication with {target} refused: {refused}")]
    Auth {
        /// Where.
        target: String,
        /// Why.
        #[source]
        refused: AuthRefused,
    },
    /// tokio-postgres failed to start the SQL session (authentication, missing database…).
    #[error("SQL connection to {target} failed: {detail}")]
    Sql {
        /// Where.
        target: String,
        /// The server's error fields when there are any (tokio-postgres's own message is just "db error").
        detail: String,
        /// The driver's error (carries the server's error fields when there are any).
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Whether a server error code means "try again later" (the server is starting, stopping, busy or the
/// connection broke) rather than a problem that retrying cannot fix (authentication, permissions, a
/// missing object). 53300 too_many_connections, 57P01/02/03 admin shutdown / crash shutdown / cannot
/// connect now, 55006 object_in_use (e.g. the slot is active in another process), class 08
/// connection exceptions.
pub fn is_transient_sqlstate(code: &str) -> bool {
    matches!(code, "53300" | "57P01" | "57P02" | "57P03" | "55006") || code.starts_with("08")
}

impl ConnectError {
    /// Whether connecting again later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Tcp { .. } | ConnectError::Unix { .. } | ConnectError::Timeout { .. } => {
                true
            }
            ConnectError::Tls(e) => e.is_transient(),
            ConnectError::Auth { .. } => false,
            ConnectError::Sql { source, .. } => source
                .code()
                .is_none_or(|c| is_transient_sqlstate(c.code())),
        }
    }

    /// Whether the server refused the session during startup (SQLSTATE class 28: pg_hba.conf,
    /// password): `sslmode=allow` then tries again with TLS.
    pub(crate) fn is_startup_refusal(&self) -> bool {
        match self {
            ConnectError::Sql { source, .. } => {
                source.code().is_some_and(|c| c.code().starts_with("28"))
            }
            _ => false,
        }
    }
}

/// What was negotiated on a TLS transport.
#[derive(Debug, Clone)]
pub struct TlsSession {
    /// `TLSv1_3`, `TLSv1_2`.
    pub protocol: String,
    /// The cipher suite.
    pub cipher: String,
    /// How the server's certificate was checked ("chain and host name verified (verify-full)"…).
    pub verification: &'static str,
    /// RFC 5929 `tls-server-end-point` data; `None` when the certificate's algorithm defines none.
    pub tls_server_end_point: Option<Vec<u8>>,
}

/// An open byte stream to the server, after any TLS negotiation.
pub struct Transport {
    stream: Box<dyn AsyncStream>,
    target: String,
    tls: Option<TlsSession>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("target", &self.target)
            .field("tls", &self.tls.as_ref().map(|t| &t.protocol))
            .finish()
    }
}

impl Transport {
    /// Wraps a stream that is ready for the PostgreSQL startup message; `tls` describes the TLS
    /// session when the stream is one (None for plain streams).
    pub fn new(stream: Box<dyn AsyncStream>, target: String, tls: Option<TlsSession>) -> Self {
        Transport {
            stream,
            target,
            tls,
        }
    }

    /// Where this stream goes (`host:port` or a socket path), for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The TLS session, if the stream is TLS.
    pub fn tls(&self) -> Option<&TlsSession> {
        self.tls.as_ref()
    }

    /// The authentication policy for a session over this stream: `config`'s options plus what the
    /// stream offers (TLS, channel binding data).
    pub(crate) fn auth_policy(&self, config: &ConnConfig) -> Policy {
        Policy {
            channel_binding: config.channel_binding,
            allowed: config.allow_password_auth,
            no_tls_because: match config.host {
                Host::Unix(_) => "a Unix socket, which never uses TLS".into(),
                Host::Tcp(_) => match config.ssl_mode {
                    SslMode::Prefer => "sslmode=prefer and the server declined TLS".into(),
                    SslMode::Allow => "sslmode=allow tries without TLS first".into(),
                    mode => format!("sslmode={mode}"),
                },
            },
            tls: self.tls.is_some(),
            end_point: self
                .tls
                .as_ref()
                .and_then(|t| t.tls_server_end_point.clone()),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Runs `fut` under the config's connect timeout.
pub(crate) async fn with_connect_timeout<T, E>(
    config: &ConnConfig,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<ConnectError>,
{
    match config.connect_timeout {
        None => fut.await,
        Some(after) => match tokio::time::timeout(after, fut).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout {
                target: config.target(),
                after,
            }
            .into()),
        },
    }
}

/// Opens the socket and makes one TLS `attempt` (see [`tls::plan`]). Does not apply the connect
/// timeout (callers wrap the whole startup, handshake included, in [`with_connect_timeout`]).
pub(crate) async fn open(config: &ConnConfig, attempt: Attempt) -> Result<Transport, ConnectError> {
    let target = config.target();
    let stream: Box<dyn AsyncStream> = match &config.host {
        Host::Tcp(host) => {
            let s = TcpStream::connect((host.as_str(), config.port))
                .await
                .map_err(|source| ConnectError::Tcp {
                    target: target.clone(),
                    source,
                })?;
            // Status updates are small and latency matters more than packing.
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
        Host::Unix(_) => {
            let s = UnixStream::connect(&target)
                .await
                .map_err(|source| ConnectError::Unix {
                    target: target.clone(),
                    source,
                })?;
            Box::new(s)
        }
    };
    tls::negotiate(stream, target, config, attempt).await
}

/// Opens a [`Transport`] to the server described by `config` (the sslmode's first attempt), within
/// its connect timeout.
pub async fn connect(config: &ConnConfig) -> Result<Transport, ConnectError> {
    with_connect_timeout(config, open(config, tls::plan(config).first)).await
}
