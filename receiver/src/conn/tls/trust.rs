//! What the server's certificate is checked against, and how strictly (libpq's rules):
//!
//! | sslmode | CA certificates from | checks |
//! |---|---|---|
//! | `verify-full` | `sslrootcert` (FILE or `system`), else `~/.postgresql/root.crt`, else an error naming `sslrootcert` | chain and host name (SAN, DNS or IP) |
//! | `verify-ca` | the same | chain only |
//! | `require`, `prefer`, `allow` | `sslrootcert=FILE` or `~/.postgresql/root.crt` when it exists | chain only when there is a file, else nothing |
//!
//! An explicitly named `sslrootcert` file that is missing is an error in every mode (libpq would
//! quietly skip verification under `require`; a typo should not turn verification off).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::error::TlsError;
use crate::conn::config::{ConnConfig, SslMode, SslRootCert};

/// How the server's certificate is verified.
#[derive(Debug, Clone)]
pub(crate) enum Verification {
    /// Not at all (`require`/`prefer`/`allow` with no root certificate file).
    None,
    /// The chain must lead to one of these roots; the host name is not checked.
    Chain(Trust),
    /// The chain, and the host name against the certificate's subjectAltName.
    Full(Trust),
}

/// A set of trusted roots and where they came from (for messages).
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    pub roots: Arc<RootCertStore>,
    pub source: String,
}

impl Verification {
    /// Whether certificates are checked at all.
    pub fn describe(&self) -> &'static str {
        match self {
            Verification::None => "not verified",
            Verification::Chain(_) => "chain verified (verify-ca)",
            Verification::Full(_) => "chain and host name verified (verify-full)",
        }
    }
}

/// libpq's default file for `name` in `~/.postgresql/` (`root.crt`, `postgresql.crt`, `postgresql.key`).
pub(crate) fn default_file(name: &str) -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".postgresql").join(name))
}

/// How a shown default path reads when there is no home directory.
pub(crate) fn show_default(name: &str) -> String {
    default_file(name)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("~/.postgresql/{name} (no HOME)"))
}

/// The roots `config` names (explicitly or by libpq's default file), if any.
fn roots(config: &ConnConfig) -> Result<Option<Trust>, TlsError> {
    match &config.ssl_root_cert {
        Some(SslRootCert::File(path)) => load_file(path).map(Some),
        Some(SslRootCert::System) => load_system().map(Some),
        None => match default_file("root.crt").filter(|p| p.exists()) {
            Some(path) => load_file(&path).map(Some),
            None => Ok(None),
        },
    }
}

/// How `config`'s server certificate must be verified under its sslmode.
pub(crate) fn verification(config: &ConnConfig) -> Result<Verification, TlsError> {
    let trust = roots(config)?;
    let needed = |mode: SslMode| TlsError::NoRootCert {
        mode,
        default: show_default("root.crt"),
    };
    Ok(match config.ssl_mode {
        SslMode::VerifyFull => Verification::Full(trust.ok_or(needed(SslMode::VerifyFull))?),
        SslMode::VerifyCa => Verification::Chain(trust.ok_or(needed(SslMode::VerifyCa))?),
        SslMode::Require | SslMode::Prefer | SslMode::Allow | SslMode::Disable => {
            trust.map_or(Verification::None, Verification::Chain)
        }
    })
}

/// Whether a weaker mode will in fact verify the chain (a root certificate file is present).
pub(crate) fn has_root_file(config: &ConnConfig) -> bool {
    match &config.ssl_root_cert {
        Some(SslRootCert::File(_)) => true,
        Some(SslRootCert::System) => false,
        None => default_file("root.crt").is_some_and(|p| p.exists()),
    }
}

fn load_file(path: &Path) -> Result<Trust, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::ReadFile {
        key: "sslrootcert",
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| TlsError::BadPem {
        key: "sslrootcert",
        path: path.to_owned(),
        what: "CA certificates",
        reason,
    };
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| bad(format!("malformed PEM ({e})")))?;
        store
            .add(cert)
            .map_err(|e| bad(format!("a certificate that is not a usable CA ({e})")))?;
    }
    if store.is_empty() {
        return Err(bad(
            "no `-----BEGIN CERTIFICATE-----` block; give a PEM file (convert DER with `openssl x509 -inform der`)".into(),
        ));
    }
    Ok(Trust {
        roots: Arc::new(store),
        source: format!("sslrootcert {}", path.display()),
    })
}

fn load_system() -> Result<Trust, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let reason = if found.errors.is_empty() {
            "the store is empty".to_string()
        } else {
            found
                .errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(TlsError::SystemRoots { reason });
    }
    Ok(Trust {
        roots: Arc::new(store),
        source: "the operating system's trust store (sslrootcert=system)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(s: &str) -> ConnConfig {
        ConnConfig::parse(s).unwrap()
    }

    #[test]
    fn verify_modes_without_roots_name_sslrootcert() {
        // libpq's default file would supply roots: nothing to check on a machine that has one.
        if default_file("root.crt").is_some_and(|p| p.exists()) {
            return;
        }
        for mode in ["verify-full", "verify-ca"] {
            let e = verification(&config(&format!("user=u host=h sslmode={mode}")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("`sslrootcert`") && e.contains("root.crt"), "{e}");
        }
        assert!(matches!(
            verification(&config("user=u host=h sslmode=require")).unwrap(),
            Verification::None
        ));
    }

    #[test]
    fn a_named_file_must_exist_and_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = verification(&config(&format!(
            "user=u host=h sslmode=require sslrootcert={}",
            missing.display()
        )))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`sslrootcert`") && e.contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = verification(&config(&format!(
            "user=u host=h sslrootcert={}",
            empty.display()
        )))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`sslrootcert`") && e.contains("BEGIN CERTIFICATE"),
            "{e}"
        );
    }
}
