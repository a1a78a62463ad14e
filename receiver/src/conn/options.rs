//! The typed values of the security-related connection options: `sslmode`, `sslrootcert`,
//! `channel_binding` and `allow_password_auth`. Parsing only; what each value does is decided in
//! [`tls`](super::tls) (transport encryption and trust) and [`auth`](super::auth) (which
//! authentication exchanges are acceptable).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::config::ConfigError;

fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.into(),
        value: Some(value.into()),
        reason: reason.into(),
    }
}

/// libpq's `sslmode`, with libpq's meanings. Our default is `verify-full` (libpq's is `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Plain first; TLS only if the server refuses the plain session.
    Allow,
    /// TLS if the server accepts the `SSLRequest`, plain if it answers `N`.
    Prefer,
    /// TLS or fail; the certificate is verified only when a root certificate file exists (libpq's rule).
    Require,
    /// TLS, server certificate chain verified against `sslrootcert`; host name not checked.
    VerifyCa,
    /// TLS, chain verified and the host name matched against the certificate's SAN.
    #[default]
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether this mode refuses to run without TLS.
    pub fn demands_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(invalid(
                    "sslmode",
                    other,
                    "expected disable, allow, prefer, require, verify-ca or verify-full",
                ))
            }
        })
    }
}

/// Where the certificates that vouch for the server come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslRootCert {
    /// A PEM file of one or more CA certificates (e.g. a cloud provider's bundle).
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`, as libpq 16+ spells it).
    System,
}

impl SslRootCert {
    /// Reads the option's value: `system` or a path.
    pub fn parse(value: &str) -> Result<SslRootCert, ConfigError> {
        match value {
            "" => Err(invalid(
                "sslrootcert",
                value,
                "expected a PEM file of CA certificates or `system`",
            )),
            "system" => Ok(SslRootCert::System),
            path => Ok(SslRootCert::File(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for SslRootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SslRootCert::File(p) => write!(f, "{}", p.display()),
            SslRootCert::System => f.write_str("system"),
        }
    }
}

/// libpq's `channel_binding`: whether SCRAM must bind the authentication to the TLS channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelBinding {
    /// Never use channel binding.
    Disable,
    /// Use it when the connection is TLS and the server offers SCRAM-SHA-256-PLUS.
    #[default]
    Prefer,
    /// Authenticate with SCRAM-SHA-256-PLUS or not at all.
    Require,
}

impl ChannelBinding {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }
}

impl fmt::Display for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelBinding {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "disable" => Ok(ChannelBinding::Disable),
            "prefer" => Ok(ChannelBinding::Prefer),
            "require" => Ok(ChannelBinding::Require),
            other => Err(invalid(
                "channel_binding",
                other,
                "expected disable, prefer or require",
            )),
        }
    }
}

/// A password exchange weaker than SCRAM, refused unless `allow_password_auth` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAuth {
    /// `md5`: a salted MD5 hash, replayable by anyone who has the stored hash.
    Md5,
    /// `password`: the password itself in clear (readable on the wire without TLS).
    Cleartext,
}

impl PasswordAuth {
    /// pg_hba.conf's name of the method, also the value in `allow_password_auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordAuth::Md5 => "md5",
            PasswordAuth::Cleartext => "password",
        }
    }
}

impl fmt::Display for PasswordAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The set of weaker password exchanges the configuration allows (`allow_password_auth`). Empty by
/// default: only SCRAM-SHA-256 (and methods that send no password) are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllowedPasswordAuth {
    /// `md5` allowed.
    pub md5: bool,
    /// `password` (cleartext) allowed.
    pub cleartext: bool,
}

impl AllowedPasswordAuth {
    /// Whether `method` is allowed.
    pub fn allows(self, method: PasswordAuth) -> bool {
        match method {
            PasswordAuth::Md5 => self.md5,
            PasswordAuth::Cleartext => self.cleartext,
        }
    }

    /// Parses a comma-separated list (`md5`, `md5,password`, or empty for none).
    pub fn parse_list(value: &str) -> Result<AllowedPasswordAuth, ConfigError> {
        let mut set = AllowedPasswordAuth::default();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "md5" => set.md5 = true,
                "password" => set.cleartext = true,
                other => {
                    return Err(invalid(
                        "allow_password_auth",
                        other,
                        "expected a list of md5 and password (pg_hba.conf's names)",
                    ))
                }
            }
        }
        Ok(set)
    }

    /// The list as `allow_password_auth` spells it (empty when nothing is allowed).
    pub fn to_list(self) -> String {
        let mut v = Vec::new();
        if self.md5 {
            v.push("md5");
        }
        if self.cleartext {
            v.push("password");
        }
        v.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_errors_name_the_key() {
        assert_eq!("verify-ca".parse::<SslMode>().unwrap(), SslMode::VerifyCa);
        assert_eq!(SslMode::default(), SslMode::VerifyFull);
        assert!("sometimes"
            .parse::<SslMode>()
            .unwrap_err()
            .to_string()
            .contains("`sslmode`"));
        assert_eq!(
            "require".parse::<ChannelBinding>().unwrap(),
            ChannelBinding::Require
        );
        assert!("yes"
            .parse::<ChannelBinding>()
            .unwrap_err()
            .to_string()
            .contains("`channel_binding`"));
        assert_eq!(SslRootCert::parse("system").unwrap(), SslRootCert::System);
        assert_eq!(
            SslRootCert::parse("/a.pem").unwrap(),
            SslRootCert::File("/a.pem".into())
        );
        let set = AllowedPasswordAuth::parse_list(" md5 , password").unwrap();
        assert!(set.allows(PasswordAuth::Md5) && set.allows(PasswordAuth::Cleartext));
        assert_eq!(set.to_list(), "md5,password");
        assert_eq!(
            AllowedPasswordAuth::parse_list("").unwrap(),
            AllowedPasswordAuth::default()
        );
        let e = AllowedPasswordAuth::parse_list("md5,scram")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`allow_password_auth`") && e.contains("scram"),
            "{e}"
        );
    }
}
