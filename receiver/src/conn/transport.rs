//! The byte stream to the server, shared by the SQL and the replication connection.
//!
//! ```text
//! ConnConfig ──▶ socket (TCP | Unix) ──▶ tls::negotiate (sslmode) ──▶ Transport ──▶ tokio-postgres (SQL)
//!                  (later: SSH tunnel)     (later: rustls)                      └──▶ ReplicationClient
//! ```
//!
//! Everything about *how bytes reach the server* lives here and in [`tls`](super::tls), so that TLS,
//! client certificates, SCRAM channel binding and SSH tunnels arrive in one place and both kinds of
//! connection get them at once. A [`Transport`] is an `AsyncRead + AsyncWrite` plus what the
//! authentication exchange needs to know about it (today: that there is no channel binding to offer).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use postgres_protocol::authentication::sasl::ChannelBinding;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::config::{ConnConfig, Host};
use super::tls;

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
    /// The sslmode asks for TLS, which this build cannot do yet.
    #[error("sslmode={mode} needs TLS, which fig-receiver does not support yet; use sslmode=disable or sslmode=prefer (connects without TLS) on a trusted network")]
    TlsUnavailable {
        /// The configured mode.
        mode: super::config::SslMode,
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
            ConnectError::TlsUnavailable { .. } => false,
            ConnectError::Sql { source, .. } => source
                .code()
                .is_none_or(|c| is_transient_sqlstate(c.code())),
        }
    }
}

/// An open byte stream to the server, after any TLS negotiation.
pub struct Transport {
    stream: Box<dyn AsyncStream>,
    target: String,
    channel_binding: Option<Vec<u8>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("target", &self.target)
            .field("channel_binding", &self.channel_binding.is_some())
            .finish()
    }
}

impl Transport {
    /// Wraps a stream that is ready for the PostgreSQL startup message. `tls_server_end_point` is the
    /// `tls-server-end-point` channel binding data when the stream is TLS (None for plain streams).
    pub fn new(
        stream: Box<dyn AsyncStream>,
        target: String,
        tls_server_end_point: Option<Vec<u8>>,
    ) -> Self {
        Transport {
            stream,
            target,
            channel_binding: tls_server_end_point,
        }
    }

    /// Where this stream goes (`host:port` or a socket path), for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether the stream can offer SCRAM channel binding (`SCRAM-SHA-256-PLUS`): only over TLS.
    pub fn scram_channel_binding_available(&self) -> bool {
        self.channel_binding.is_some()
    }

    /// The channel binding to offer in SCRAM: none over a plain stream.
    pub fn scram_channel_binding(&self) -> ChannelBinding {
        match &self.channel_binding {
            Some(sig) => ChannelBinding::tls_server_end_point(sig.clone()),
            None => ChannelBinding::unsupported(),
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

/// Opens the socket and applies the sslmode. Does not apply the connect timeout (callers wrap the
/// whole startup, handshake included, in [`with_connect_timeout`]).
pub(crate) async fn open(config: &ConnConfig) -> Result<Transport, ConnectError> {
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
    tls::negotiate(stream, target, config).await
}

/// Opens a [`Transport`] to the server described by `config`, within its connect timeout.
pub async fn connect(config: &ConnConfig) -> Result<Transport, ConnectError> {
    with_connect_timeout(config, open(config)).await
}

impl ConnConfig {
    /// Opens a regular SQL session (catalog queries, slot inspection, snapshot reads) over the same
    /// transport as replication. The connection's driver task is spawned on the current tokio runtime;
    /// when it ends with an error, that is logged and the client's next call fails.
    pub async fn connect_sql(&self) -> Result<tokio_postgres::Client, ConnectError> {
        let target = self.target();
        let client = with_connect_timeout(self, async {
            let transport = open(self).await?;
            // TLS (if any) was negotiated by `tls::negotiate`; tokio-postgres must not try again.
            let mut tp = self.to_tokio_postgres();
            tp.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = tp
                .connect_raw(transport, tokio_postgres::NoTls)
                .await
                .map_err(|source| ConnectError::Sql {
                    target: target.clone(),
                    detail: describe_sql_error(&source),
                    source,
                })?;
            let t = target.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(target = %t, error = %e, "SQL connection ended with an error");
                }
            });
            Ok::<_, ConnectError>(client)
        })
        .await?;
        Ok(client)
    }
}

/// tokio-postgres's error with the server's fields spelled out (its `Display` says only "db error").
pub fn describe_sql_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            s
        }
        None => e.to_string(),
    }
}
