//! Why TLS could not be set up or negotiated. Each message names the option to change (`sslmode`,
//! `sslrootcert`, `sslcert`, `sslkey`) or the server setting at fault; no file content is ever quoted.

use std::io;
use std::path::PathBuf;

use rustls::{CertificateError, Error as RustlsError};

use crate::conn::config::SslMode;

/// A TLS problem on the way to the server.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A verifying mode with no CA certificates to verify against.
    #[error("sslmode={mode} needs CA certificates to verify the server's certificate against, but `sslrootcert` is not set and libpq's default {default} does not exist: set sslrootcert=FILE to the CA bundle that signed the server's certificate (e.g. RDS's global-bundle.pem), or sslrootcert=system to trust the operating system's store")]
    NoRootCert {
        /// The mode.
        mode: SslMode,
        /// The default root file looked for.
        default: String,
    },
    /// A file named by an option cannot be read.
    #[error("cannot read the `{key}` file {}: {source}", path.display())]
    ReadFile {
        /// The option (`sslrootcert`, `sslcert`, `sslkey`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file that does not hold what its option needs.
    #[error("the `{key}` file {} holds no usable {what}: {reason}", path.display())]
    BadPem {
        /// The option.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
        /// Why not (never the file's content).
        reason: String,
    },
    /// The operating system's trust store gave nothing.
    #[error("sslrootcert=system: no CA certificates could be loaded from the operating system's trust store ({reason}); install the ca-certificates package (or set SSL_CERT_FILE), or give the server's CA as sslrootcert=FILE")]
    SystemRoots {
        /// What rustls-native-certs reported.
        reason: String,
    },
    /// A private key readable by others, refused as libpq refuses it.
    #[error("the `sslkey` file {} can be read or written by group or others (mode {mode:o}): chmod 600 it (libpq refuses such a key too)", path.display())]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A client certificate without a key.
    #[error("the client certificate {} (`sslcert`) has no key: set `sslkey` to its private key file (libpq's default {default} does not exist)", cert.display())]
    MissingKey {
        /// The certificate file.
        cert: PathBuf,
        /// The default key file looked for.
        default: String,
    },
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("cannot use the TLS settings: {reason}")]
    Setup {
        /// rustls's reason.
        reason: String,
    },
    /// The host cannot be used as a TLS server name.
    #[error("host `{host}` cannot be checked against a certificate ({reason}); use the host name or IP address the server's certificate names")]
    InvalidHost {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The server declined TLS and the mode demands it: never downgraded.
    #[error("the server at {target} does not accept TLS connections (it answered the SSLRequest with N), and sslmode={mode} demands TLS: turn TLS on in the server's postgresql.conf (ssl = on, ssl_cert_file, ssl_key_file) and reload it; only on a network you trust, sslmode=prefer would connect without encryption")]
    ServerRefused {
        /// Where.
        target: String,
        /// The mode.
        mode: SslMode,
    },
    /// The answer to SSLRequest was neither S nor N.
    #[error("the server at {target} answered the SSLRequest with byte {answer:#04x} instead of S or N: this port does not speak the PostgreSQL protocol as expected")]
    BadAnswer {
        /// Where.
        target: String,
        /// The byte.
        answer: u8,
    },
    /// The TLS handshake failed: certificate checks, protocol mismatch, an alert from the server.
    #[error("TLS handshake with {target} failed: {reason}; {advice}")]
    Handshake {
        /// Where.
        target: String,
        /// What rustls said.
        reason: String,
        /// What to do about it.
        advice: String,
    },
    /// The connection broke during negotiation.
    #[error("connection to {target} lost during TLS negotiation: {source}")]
    Io {
        /// Where.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl TlsError {
    /// Whether connecting again later can succeed without a change of configuration.
    pub fn is_transient(&self) -> bool {
        matches!(self, TlsError::Io { .. })
    }

    /// Sorts a failed handshake: a rustls error inside the I/O error gets advice for its cause.
    pub(crate) fn handshake(target: String, host: &str, trust: &str, e: io::Error) -> TlsError {
        let Some(rustls_error) = e.get_ref().and_then(|i| i.downcast_ref::<RustlsError>()) else {
            return TlsError::Io { target, source: e };
        };
        TlsError::Handshake {
            target,
            reason: rustls_error.to_string(),
            advice: advice(rustls_error, host, trust),
        }
    }
}

fn advice(e: &RustlsError, host: &str, trust: &str) -> String {
    match e {
        RustlsError::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the server's certificate is not signed by a CA in {trust}: give the CA bundle that issued it as sslrootcert (for a managed service, the provider's bundle; see docs/CONNECTING.md)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let names = match c {
                    CertificateError::NotValidForNameContext { presented, .. } if !presented.is_empty() => {
                        format!(" (it names {})", presented.join(", "))
                    }
                    _ => String::new(),
                };
                format!(
                    "the server's certificate is not valid for host `{host}`{names}: connect with a name the certificate lists, or reissue it with this name in its subjectAltName (sslmode=verify-ca would accept any name the CA vouched for)"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired: renew it on the server (ssl_cert_file) and reload".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet: check the clocks of both machines".into()
            }
            CertificateError::Revoked => "the server's certificate has been revoked".into(),
            _ => format!("the server's certificate was rejected; check it against {trust}"),
        },
        RustlsError::AlertReceived(alert) => format!(
            "the server ended the handshake with alert {alert:?}: if it wants a client certificate, set sslcert and sslkey to one signed by a CA in the server's ssl_ca_file"
        ),
        RustlsError::PeerIncompatible(_) | RustlsError::NoCertificatesPresented => {
            "the server's TLS settings are incompatible with this client (TLS 1.2 or 1.3 with modern ciphers is needed: check ssl_min_protocol_version and ssl_ciphers)".into()
        }
        _ => "check the server's TLS settings and the network path".into(),
    }
}
