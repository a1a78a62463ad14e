//! The regular SQL session: tokio-postgres over our own [`Transport`].
//!
//! TLS is negotiated by [`tls`](super::tls) before tokio-postgres sees the stream, exactly as for the
//! replication connection. tokio-postgres still has to learn the `tls-server-end-point` data for
//! SCRAM-SHA-256-PLUS, and only asks a "TLS connector" for it; so over a TLS transport it is told
//! `sslnegotiation=direct` (no SSLRequest of its own) and given [`Negotiated`], a connector that
//! returns the already-encrypted transport and reports its binding data. Over a plain transport it
//! is told `sslmode=disable`. Either way the stream is wrapped in an [`AuthGuard`], which refuses
//! what the authentication policy refuses.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{SslMode as TpSslMode, SslNegotiation};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

use super::auth_guard::{refusal_in, AuthGuard};
use super::config::ConnConfig;
use super::tls::{self, Attempt};
use super::transport::{open, with_connect_timeout, ConnectError, Transport};

impl ConnConfig {
    /// Opens a regular SQL session (catalog queries, slot inspection, snapshot reads) over the same
    /// transport as replication: same sslmode, certificates and authentication policy. The
    /// connection's driver task is spawned on the current tokio runtime; when it ends with an error,
    /// that is logged and the client's next call fails.
    pub async fn connect_sql(&self) -> Result<tokio_postgres::Client, ConnectError> {
        with_connect_timeout(self, async {
            let plan = tls::plan(self);
            match (self.sql_attempt(plan.first).await, plan.on_refusal) {
                (Err(e), Some(retry)) if e.is_startup_refusal() => {
                    tracing::debug!(error = %e, "sslmode=allow: the server refused the plain session; trying TLS");
                    self.sql_attempt(retry).await
                }
                (result, _) => result,
            }
        })
        .await
    }

    async fn sql_attempt(&self, attempt: Attempt) -> Result<tokio_postgres::Client, ConnectError> {
        let target = self.target();
        let transport = open(self, attempt).await?;
        let is_tls = transport.tls().is_some();
        let guarded = AuthGuard::new(transport.auth_policy(self), transport);
        let mut tp = self.to_tokio_postgres();
        if is_tls {
            tp.ssl_mode(TpSslMode::Require)
                .ssl_negotiation(SslNegotiation::Direct);
        } else {
            tp.ssl_mode(TpSslMode::Disable);
        }
        let (client, connection) = tp
            .connect_raw(guarded, Negotiated)
            .await
            .map_err(|source| match refusal_in(&source) {
                Some(refused) => ConnectError::Auth {
                    target: target.clone(),
                    refused,
                },
                None => ConnectError::Sql {
                    target: target.clone(),
                    detail: describe_sql_error(&source),
                    source,
                },
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(target = %target, error = %e, "SQL connection ended with an error");
            }
        });
        Ok(client)
    }
}

/// The "TLS connector" tokio-postgres is given: the transport is already what it should be.
struct Negotiated;

/// The transport as tokio-postgres's TLS stream, reporting the channel binding data.
struct NegotiatedStream {
    inner: AuthGuard<Transport>,
    end_point: Option<Vec<u8>>,
}

impl TlsConnect<AuthGuard<Transport>> for Negotiated {
    type Stream = NegotiatedStream;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<NegotiatedStream>>;

    fn connect(self, stream: AuthGuard<Transport>) -> Self::Future {
        let end_point = stream
            .get_ref()
            .tls()
            .and_then(|t| t.tls_server_end_point.clone());
        std::future::ready(Ok(NegotiatedStream {
            inner: stream,
            end_point,
        }))
    }
}

impl TlsStream for NegotiatedStream {
    fn channel_binding(&self) -> ChannelBinding {
        match &self.end_point {
            Some(data) => ChannelBinding::tls_server_end_point(data.clone()),
            None => ChannelBinding::none(),
        }
    }
}

impl AsyncRead for NegotiatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for NegotiatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
