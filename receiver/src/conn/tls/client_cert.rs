//! The client certificate (`sslcert`) and its key (`sslkey`), for pg_hba.conf's `cert` method and
//! `clientcert=verify-ca|verify-full`.
//!
//! As libpq: without `sslcert`, `~/.postgresql/postgresql.crt` is used when it exists, and without
//! `sslkey`, `~/.postgresql/postgresql.key`. The key is PEM: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1
//! RSA (`BEGIN RSA PRIVATE KEY`) or SEC1 EC (`BEGIN EC PRIVATE KEY`); encrypted keys are not read
//! (`sslpassword` is not supported). A key file that group or others can read or write is refused,
//! as libpq refuses it, before its content is read.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::TlsError;
use super::trust::{default_file, show_default};
use crate::conn::config::ConnConfig;

/// A certificate chain and its key, ready for rustls.
pub(crate) struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// The client certificate `config` names (or libpq's default file holds), if any.
pub(crate) fn load(config: &ConnConfig) -> Result<Option<ClientCert>, TlsError> {
    let cert_path = match &config.ssl_cert {
        Some(p) => p.clone(),
        None => match default_file("postgresql.crt").filter(|p| p.exists()) {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    let key_path: PathBuf = match &config.ssl_key {
        Some(p) => p.clone(),
        None => default_file("postgresql.key")
            .filter(|p| p.exists())
            .ok_or_else(|| TlsError::MissingKey {
                cert: cert_path.clone(),
                default: show_default("postgresql.key"),
            })?,
    };
    let chain = read_chain(&cert_path)?;
    let key = read_key(&key_path)?;
    Ok(Some(ClientCert { chain, key }))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::ReadFile {
        key: "sslcert",
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| TlsError::BadPem {
        key: "sslcert",
        path: path.to_owned(),
        what: "certificate",
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("malformed PEM ({e})")))?;
    if chain.is_empty() {
        return Err(bad("no `-----BEGIN CERTIFICATE-----` block".into()));
    }
    Ok(chain)
}

/// Reads the key after checking its permissions (libpq: not readable by group or others; a root-owned
/// key may also be group-readable, for a group that the service runs as).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let meta = std::fs::metadata(path).map_err(|source| TlsError::ReadFile {
        key: "sslkey",
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_file() {
        return Err(TlsError::BadPem {
            key: "sslkey",
            path: path.to_owned(),
            what: "private key",
            reason: "it is not a regular file".into(),
        });
    }
    if key_mode_too_open(mode, std::os::unix::fs::MetadataExt::uid(&meta)) {
        return Err(TlsError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| TlsError::ReadFile {
        key: "sslkey",
        path: path.to_owned(),
        source,
    })?;
    // Never quote the file: it is a secret. rustls-pki-types' error names only the PEM problem.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::BadPem {
        key: "sslkey",
        path: path.to_owned(),
        what: "private key",
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no unencrypted `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` block (encrypted keys are not supported: decrypt it with `openssl pkey`)".into(),
            _ => "malformed PEM".into(),
        },
    })
}

/// libpq's rule: 0600 or stricter; a file owned by root may also be 0640.
fn key_mode_too_open(mode: u32, owner_uid: u32) -> bool {
    if owner_uid == 0 {
        mode & 0o037 != 0
    } else {
        mode & 0o077 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_permission_rule_matches_libpq() {
        assert!(!key_mode_too_open(0o600, 1000));
        assert!(!key_mode_too_open(0o400, 1000));
        assert!(key_mode_too_open(0o640, 1000));
        assert!(key_mode_too_open(0o644, 1000));
        assert!(key_mode_too_open(0o604, 1000));
        assert!(!key_mode_too_open(0o640, 0));
        assert!(key_mode_too_open(0o644, 0));
        assert!(key_mode_too_open(0o660, 0));
    }

    #[test]
    fn loose_key_is_refused_naming_sslkey_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.crt");
        let key = dir.path().join("c.key");
        std::fs::write(&cert, "x").unwrap();
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nSECRET\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key(&key).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("`sslkey`") && e.contains("644"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_key(&key).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("`sslkey`") && !e.contains("SECRET"), "{e}");
    }

    #[test]
    fn a_certificate_without_a_key_names_sslkey() {
        let c = ConnConfig::parse("user=u host=h sslcert=/nonexistent/c.crt").unwrap();
        if default_file("postgresql.key").is_some_and(|p| p.exists()) {
            return;
        }
        let e = load(&c).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("`sslkey`"), "{e}");
    }
}
