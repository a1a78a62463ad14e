//! The sslmode decision and the TLS handshake, for the SQL and the replication connection alike.
//!
//! ```text
//! socket ──▶ plan(sslmode) ──▶ Plain ─────────────────────────────────────────────▶ Transport (plain)
//!                         └──▶ SSLRequest ──'S'──▶ rustls handshake (verifier by trust::verification,
//!                                    │             client certificate, ALPN "postgresql") ─▶ Transport (TLS,
//!                                    │             with the tls-server-end-point hash for SCRAM-PLUS)
//!                                    └────'N'──▶ plain only under prefer; otherwise TlsError::ServerRefused
//! ```
//!
//! libpq's meanings, with our default `verify-full`:
//!
//! | sslmode | first attempt | fallback | certificate checked |
//! |---|---|---|---|
//! | `disable` | plain | none | — |
//! | `allow` | plain | TLS when the server refuses the plain session (SQLSTATE class 28) | only with a root file |
//! | `prefer` | TLS | plain only when the server answers `N` to the SSLRequest | only with a root file |
//! | `require` | TLS | none | only with a root file (then as verify-ca) |
//! | `verify-ca` | TLS | none | chain |
//! | `verify-full` | TLS | none | chain and host name |
//!
//! A mode that demands TLS is never downgraded. Unix sockets ignore sslmode (plain), as libpq does.
//! [`security_warnings`] names the risk of every weaker setting; the binary logs them at each start.

mod client_cert;
mod end_point;
mod error;
mod trust;
mod verify;

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use error::TlsError;
use trust::Verification;

use super::config::{ConnConfig, Host, SslMode};
use super::transport::{AsyncStream, ConnectError, TlsSession, Transport};

/// What one connection attempt does about TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// No SSLRequest.
    Plain,
    /// SSLRequest; plain if the server answers `N`.
    TlsIfOffered,
    /// SSLRequest; an `N` is an error.
    TlsRequired,
}

/// The attempts an sslmode makes: the first, and the one to make if the server refuses the first
/// session during startup (`allow` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub first: Attempt,
    pub on_refusal: Option<Attempt>,
}

/// The plan for `config` (Unix sockets: always plain).
pub(crate) fn plan(config: &ConnConfig) -> Plan {
    let only = |first| Plan {
        first,
        on_refusal: None,
    };
    if matches!(config.host, Host::Unix(_)) {
        return only(Attempt::Plain);
    }
    match config.ssl_mode {
        SslMode::Disable => only(Attempt::Plain),
        SslMode::Allow => Plan {
            first: Attempt::Plain,
            on_refusal: Some(Attempt::TlsRequired),
        },
        SslMode::Prefer => only(Attempt::TlsIfOffered),
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => only(Attempt::TlsRequired),
    }
}

/// Applies one attempt to a freshly opened stream.
pub(crate) async fn negotiate(
    mut stream: Box<dyn AsyncStream>,
    target: String,
    config: &ConnConfig,
    attempt: Attempt,
) -> Result<Transport, ConnectError> {
    if attempt == Attempt::Plain {
        return Ok(Transport::new(stream, target, None));
    }
    // Settings first: a bad sslrootcert or sslkey is reported whatever the server would answer.
    let setup = Setup::new(config)?;
    let io = |source| TlsError::Io {
        target: target.clone(),
        source,
    };
    let mut request = bytes::BytesMut::new();
    postgres_protocol::message::frontend::ssl_request(&mut request);
    stream.write_all(&request).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    // Exactly one byte: anything the server sent after it would be read by the TLS layer, never as
    // PostgreSQL messages (CVE-2021-23222).
    let answer = stream.read_u8().await.map_err(io)?;
    match answer {
        b'S' => {}
        b'N' if attempt == Attempt::TlsIfOffered => {
            tracing::debug!(%target, "the server declined TLS; sslmode=prefer continues without it");
            return Ok(Transport::new(stream, target, None));
        }
        b'N' => {
            return Err(TlsError::ServerRefused {
                target,
                mode: config.ssl_mode,
            }
            .into())
        }
        other => {
            return Err(TlsError::BadAnswer {
                target,
                answer: other,
            }
            .into())
        }
    }
    let connector = tokio_rustls::TlsConnector::from(setup.client);
    let tls = connector
        .connect(setup.server_name, stream)
        .await
        .map_err(|e| TlsError::handshake(target.clone(), &setup.host, &setup.trust, e))?;
    let (_, conn) = tls.get_ref();
    let end_point = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| end_point::tls_server_end_point(c));
    let session = TlsSession {
        protocol: conn
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("TLS")
            .to_owned(),
        cipher: conn
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or("?")
            .to_owned(),
        verification: setup.verification.describe(),
        tls_server_end_point: end_point,
    };
    tracing::debug!(
        %target,
        protocol = %session.protocol,
        cipher = %session.cipher,
        certificate = session.verification,
        "TLS established"
    );
    Ok(Transport::new(Box::new(tls), target, Some(session)))
}

/// Everything the handshake needs, built from the config's files for each connection (so a renewed
/// certificate or bundle is picked up without a restart).
struct Setup {
    client: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    host: String,
    trust: String,
    verification: Verification,
}

impl Setup {
    fn new(config: &ConnConfig) -> Result<Setup, TlsError> {
        let host = match &config.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        };
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| TlsError::InvalidHost {
                host: host.clone(),
                reason: e.to_string(),
            })?;
        let verification = trust::verification(config)?;
        let trust = match &verification {
            Verification::Full(t) | Verification::Chain(t) => t.source.clone(),
            Verification::None => "no trusted CA (none configured)".to_owned(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let setup_error = |e: rustls::Error| TlsError::Setup {
            reason: e.to_string(),
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(setup_error)?
            .dangerous()
            .with_custom_certificate_verifier(verify::verifier(&verification, &provider)?);
        let mut client = match client_cert::load(config)? {
            Some(cert) => builder
                .with_client_auth_cert(cert.chain, cert.key)
                .map_err(|e| TlsError::Setup {
                    reason: format!("the client certificate (`sslcert`) and key (`sslkey`) cannot be used together: {e}"),
                })?,
            None => builder.with_no_client_auth(),
        };
        // PostgreSQL 17+ checks the protocol name when a client sends one; older servers ignore it.
        client.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Setup {
            client: Arc::new(client),
            server_name,
            host,
            trust,
            verification,
        })
    }
}

/// One sentence per risk the connection settings take, for a warning at every start. Empty for
/// `verify-ca`/`verify-full` (and `require` with a root file) with SCRAM only, and for Unix sockets.
pub fn security_warnings(config: &ConnConfig) -> Vec<String> {
    let mut out = Vec::new();
    let target = config.target();
    if let Host::Tcp(_) = config.host {
        let unverified = "the server's identity is not verified, so anyone on the network path can impersonate it";
        match config.ssl_mode {
            SslMode::Disable => out.push(format!(
                "sslmode=disable: the connection to {target} is not encrypted: the replicated data (and the password, unless SCRAM is used) cross the network in clear text, readable and alterable by anyone on the path; use sslmode=verify-full with sslrootcert"
            )),
            SslMode::Allow => out.push(format!(
                "sslmode=allow: the connection to {target} is unencrypted unless the server insists on TLS, and {unverified}; use sslmode=verify-full with sslrootcert"
            )),
            SslMode::Prefer => out.push(format!(
                "sslmode=prefer: the connection to {target} silently continues without encryption when the server (or an attacker on the path) declines TLS{}; use sslmode=verify-full with sslrootcert",
                if trust::has_root_file(config) { "" } else { ", and the server's identity is not verified" }
            )),
            SslMode::Require if !trust::has_root_file(config) => out.push(format!(
                "sslmode=require without a root certificate: the connection to {target} is encrypted but {unverified} (and read everything); use sslmode=verify-full with sslrootcert"
            )),
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {}
        }
    }
    for method in [
        super::config::PasswordAuth::Md5,
        super::config::PasswordAuth::Cleartext,
    ] {
        if config.allow_password_auth.allows(method) {
            out.push(format!(
                "allow_password_auth includes {method}: a server (or an impersonator of it) that asks for {method} instead of SCRAM gets {}; remove it once the role's password is stored as SCRAM",
                match method {
                    super::config::PasswordAuth::Md5 => "a hash that is as good as the password for logging in",
                    super::config::PasswordAuth::Cleartext => "the password itself",
                }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(s: &str) -> ConnConfig {
        ConnConfig::parse(s).unwrap()
    }

    #[test]
    fn plans_follow_libpq() {
        let p = |s: &str| plan(&config(&format!("user=u host=db {s}")));
        assert_eq!(p("sslmode=disable").first, Attempt::Plain);
        assert_eq!(
            p("sslmode=allow"),
            Plan {
                first: Attempt::Plain,
                on_refusal: Some(Attempt::TlsRequired)
            }
        );
        assert_eq!(p("sslmode=prefer").first, Attempt::TlsIfOffered);
        // The default (no sslmode) is verify-full.
        for mode in [
            "sslmode=require",
            "sslmode=verify-ca",
            "sslmode=verify-full",
            "",
        ] {
            let plan = p(mode);
            assert_eq!(plan.first, Attempt::TlsRequired, "{mode}");
            assert_eq!(plan.on_refusal, None, "{mode}");
        }
        // Unix sockets ignore sslmode.
        let unix = plan(&config("user=u host=/run/pg sslmode=verify-full"));
        assert_eq!(unix.first, Attempt::Plain);
    }

    /// A server on a loopback port that answers the SSLRequest with `answer`, then sends `after`.
    async fn fake_server(answer: u8, after: &'static [u8]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 8];
            s.read_exact(&mut request).await.unwrap();
            assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "an SSLRequest");
            s.write_all(&[answer]).await.unwrap();
            s.write_all(after).await.unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        port
    }

    #[tokio::test]
    async fn prefer_falls_back_only_when_the_server_answers_n() {
        let connect = |port: u16, mode: &str| {
            let c = config(&format!(
                "user=u host=127.0.0.1 port={port} sslmode={mode} connect_timeout=5"
            ));
            async move { crate::conn::connect(&c).await }
        };
        let t = connect(fake_server(b'N', b"").await, "prefer")
            .await
            .unwrap();
        assert!(t.tls().is_none());
        let e = connect(fake_server(b'N', b"").await, "require")
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectError::Tls(TlsError::ServerRefused { .. })),
            "{e}"
        );
        // 'S' and then no TLS: a failed handshake is an error, never a quiet plain session.
        let e = connect(fake_server(b'S', b"not a TLS record").await, "prefer")
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectError::Tls(_)), "{e}");
        let e = connect(fake_server(b'E', b"").await, "prefer")
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectError::Tls(TlsError::BadAnswer { .. })),
            "{e}"
        );
    }

    #[test]
    fn weaker_modes_warn_naming_the_risk() {
        let w = |s: &str| security_warnings(&config(&format!("user=u host=db {s}")));
        assert!(w("sslmode=disable")[0].contains("not encrypted"));
        assert!(w("sslmode=allow")[0].contains("unencrypted"));
        assert!(w("sslmode=prefer")[0].contains("without encryption"));
        if !trust::has_root_file(&config("user=u")) {
            assert!(w("sslmode=require")[0].contains("impersonate"));
        }
        assert!(w("sslmode=verify-ca").is_empty());
        assert!(w("").is_empty());
        assert!(w("allow_password_auth=md5")[0].contains("md5"));
        assert!(security_warnings(&config("user=u host=/run/pg sslmode=disable")).is_empty());
    }
}
