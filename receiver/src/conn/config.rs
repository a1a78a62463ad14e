//! [`ConnConfig`]: where the server is and who we are, parsed from a libpq-style connection string.
//!
//! Two spellings are accepted, as libpq does:
//!
//! ```text
//! postgres://user:secret@db.example.com:5432/app?sslmode=prefer&application_name=fig
//! host=db.example.com port=5432 dbname=app user=fig password='it''s' sslmode=prefer
//! ```
//!
//! In the URL, every part is percent-decoded; the host may be `[::1]`; a host that decodes to a path
//! (`%2Fvar%2Frun%2Fpostgresql`, or `?host=/var/run/postgresql`) means a Unix socket directory. Query
//! parameters use the same keys as the key=value form and override the parts before them. In the key=value
//! form a value may be single-quoted, with `\'` and `\\` as escapes (libpq's rules).
//!
//! Unknown keys are an error naming the key (libpq does the same), so a typo never silently falls back
//! to a default. The password is never printed: `Debug` shows `***`, and [`ConnConfig::redacted`] gives a
//! URL without it for logs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::percent_decode_str;

pub use super::options::{AllowedPasswordAuth, ChannelBinding, PasswordAuth, SslMode, SslRootCert};

/// The port PostgreSQL listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 5432;
/// How long to wait for the server to accept a connection and finish the startup handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address, reached over TCP.
    Tcp(String),
    /// The directory holding the server's Unix socket (`.s.PGSQL.<port>` inside it).
    Unix(PathBuf),
}

impl Host {
    fn from_text(text: &str) -> Host {
        if text.starts_with('/') {
            Host::Unix(PathBuf::from(text))
        } else {
            Host::Tcp(text.to_owned())
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A password that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Password(secret.into())
    }

    /// The secret itself, for the authentication exchange only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a connection string or setting is not usable. Each message names the key at fault; the value of
/// `password` is never repeated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key libpq-style strings may hold, but that this program does not know.
    #[error("unknown connection option `{key}`; known options: {}", KNOWN_KEYS.join(", "))]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A libpq key that fig-receiver does not support yet.
    #[error("connection option `{key}` is not supported yet by fig-receiver; remove it from the connection string")]
    NotSupportedYet {
        /// The key.
        key: String,
    },
    /// A value that cannot be used for its key.
    #[error("invalid value {} for connection option `{key}`: {reason}", value.as_deref().map(|v| format!("`{v}`")).unwrap_or_else(|| "(hidden)".into()))]
    InvalidValue {
        /// The key.
        key: String,
        /// The value (`None` for secrets).
        value: Option<String>,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The string could not be split into options.
    #[error("malformed connection string: {reason}")]
    Syntax {
        /// What is wrong.
        reason: String,
    },
    /// No user name anywhere.
    #[error(
        "no user in the connection string: add `user=NAME` or write `postgres://NAME@host/db`"
    )]
    MissingUser,
    /// The same option given twice with different values (connection string and `[source]`).
    #[error("connection option `{key}` is set both in the connection string and as `[source] {key}`, to different values; keep one")]
    Conflict {
        /// The key.
        key: String,
    },
    /// The environment variable named for the password is not set.
    #[error("the password was to come from environment variable `{var}`, which is not set (or not UTF-8)")]
    PasswordEnvMissing {
        /// The variable.
        var: String,
    },
}

/// Keys accepted in either spelling.
pub const KNOWN_KEYS: &[&str] = &[
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "channel_binding",
    "allow_password_auth",
    "application_name",
    "connect_timeout",
];

/// libpq keys recognised but refused for now (CRLs, encrypted keys, multi-host options…).
const NOT_YET_KEYS: &[&str] = &[
    "hostaddr",
    "sslcrl",
    "sslcrldir",
    "sslpassword",
    "sslnegotiation",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "require_auth",
    "target_session_attrs",
    "load_balance_hosts",
    "passfile",
    "options",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "gssencmode",
    "krbsrvname",
    "service",
    "replication",
];

/// One connection configuration, used for both the SQL connection (tokio-postgres, via
/// [`to_tokio_postgres`](Self::to_tokio_postgres) or [`connect_sql`](Self::connect_sql)) and the
/// replication connection ([`ReplicationClient::connect`](crate::replication::ReplicationClient::connect)).
#[derive(Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// Server host or Unix socket directory. Default `localhost`.
    pub host: Host,
    /// Server port (also names the Unix socket file). Default 5432.
    pub port: u16,
    /// Role to log in as. Required.
    pub user: String,
    /// Database; `None` means the database named like the user, as libpq does.
    pub dbname: Option<String>,
    /// Password, if the server asks for one.
    pub password: Option<Password>,
    /// TLS policy (default `verify-full`). Ignored for Unix sockets, as libpq does.
    pub ssl_mode: SslMode,
    /// The CA certificates that vouch for the server; `None`: `~/.postgresql/root.crt` if it exists.
    pub ssl_root_cert: Option<SslRootCert>,
    /// Client certificate (PEM chain); `None`: `~/.postgresql/postgresql.crt` if it exists.
    pub ssl_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); `None`: `~/.postgresql/postgresql.key`.
    pub ssl_key: Option<PathBuf>,
    /// SCRAM channel binding policy (default `prefer`).
    pub channel_binding: ChannelBinding,
    /// Password exchanges weaker than SCRAM that may be used (default: none).
    pub allow_password_auth: AllowedPasswordAuth,
    /// Shown in `pg_stat_activity` and `pg_stat_replication`.
    pub application_name: Option<String>,
    /// Limit on connecting plus the startup handshake; `None` waits forever (`connect_timeout=0`).
    pub connect_timeout: Option<Duration>,
}

impl fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("ssl_cert", &self.ssl_cert)
            .field("ssl_key", &self.ssl_key)
            .field("channel_binding", &self.channel_binding)
            .field("allow_password_auth", &self.allow_password_auth)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Options gathered before defaults are applied.
#[derive(Default)]
struct Partial {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    dbname: Option<String>,
    password: Option<String>,
    ssl_mode: Option<SslMode>,
    ssl_root_cert: Option<SslRootCert>,
    ssl_cert: Option<PathBuf>,
    ssl_key: Option<PathBuf>,
    channel_binding: Option<ChannelBinding>,
    allow_password_auth: Option<AllowedPasswordAuth>,
    application_name: Option<String>,
    connect_timeout: Option<Option<Duration>>,
}

impl Partial {
    fn set(&mut self, key: &str, value: String) -> Result<(), ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidValue {
            key: key.to_owned(),
            value: Some(value.clone()),
            reason: reason.to_owned(),
        };
        if value.contains('\0') {
            return Err(ConfigError::InvalidValue {
                key: key.to_owned(),
                value: None,
                reason: "contains a NUL byte".into(),
            });
        }
        match key {
            "host" => {
                if value.contains(',') {
                    return Err(invalid(
                        "several hosts are not supported yet; give one host",
                    ));
                }
                self.host = (!value.is_empty()).then_some(value);
            }
            "port" => {
                if value.contains(',') {
                    return Err(invalid(
                        "several ports are not supported yet; give one port",
                    ));
                }
                let port: u16 = value
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid("expected a port number from 1 to 65535"))?;
                self.port = Some(port);
            }
            "user" => self.user = (!value.is_empty()).then_some(value),
            "dbname" => self.dbname = (!value.is_empty()).then_some(value),
            "password" => self.password = Some(value),
            "sslmode" => self.ssl_mode = Some(value.parse()?),
            "sslrootcert" => self.ssl_root_cert = Some(SslRootCert::parse(&value)?),
            "sslcert" | "sslkey" => {
                if value.is_empty() {
                    return Err(invalid("expected the path of a PEM file"));
                }
                let path = Some(PathBuf::from(value));
                if key == "sslcert" {
                    self.ssl_cert = path;
                } else {
                    self.ssl_key = path;
                }
            }
            "channel_binding" => self.channel_binding = Some(value.parse()?),
            "allow_password_auth" => {
                self.allow_password_auth = Some(AllowedPasswordAuth::parse_list(&value)?)
            }
            "application_name" => self.application_name = Some(value),
            "connect_timeout" => {
                let secs: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid("expected a whole number of seconds (0 waits forever)"))?;
                self.connect_timeout = Some((secs > 0).then(|| Duration::from_secs(secs)));
            }
            k if NOT_YET_KEYS.contains(&k) => {
                return Err(ConfigError::NotSupportedYet { key: k.to_owned() })
            }
            k => return Err(ConfigError::UnknownKey { key: k.to_owned() }),
        }
        Ok(())
    }

    /// Takes the options of `other` (the `[source]` keys of the config file). An option set in both to
    /// different values is a [`ConfigError::Conflict`]: neither place silently wins.
    fn merge(mut self, other: Partial) -> Result<Partial, ConfigError> {
        fn pick<T: PartialEq>(
            key: &str,
            a: &mut Option<T>,
            b: Option<T>,
        ) -> Result<(), ConfigError> {
            match (a.as_ref(), b) {
                (Some(x), Some(y)) if *x != y => Err(ConfigError::Conflict { key: key.into() }),
                (_, Some(y)) => {
                    *a = Some(y);
                    Ok(())
                }
                (_, None) => Ok(()),
            }
        }
        pick("host", &mut self.host, other.host)?;
        pick("port", &mut self.port, other.port)?;
        pick("user", &mut self.user, other.user)?;
        pick("dbname", &mut self.dbname, other.dbname)?;
        pick("password", &mut self.password, other.password)?;
        pick("sslmode", &mut self.ssl_mode, other.ssl_mode)?;
        pick("sslrootcert", &mut self.ssl_root_cert, other.ssl_root_cert)?;
        pick("sslcert", &mut self.ssl_cert, other.ssl_cert)?;
        pick("sslkey", &mut self.ssl_key, other.ssl_key)?;
        pick(
            "channel_binding",
            &mut self.channel_binding,
            other.channel_binding,
        )?;
        pick(
            "allow_password_auth",
            &mut self.allow_password_auth,
            other.allow_password_auth,
        )?;
        pick(
            "application_name",
            &mut self.application_name,
            other.application_name,
        )?;
        pick(
            "connect_timeout",
            &mut self.connect_timeout,
            other.connect_timeout,
        )?;
        Ok(self)
    }

    fn finish(self) -> Result<ConnConfig, ConfigError> {
        let user = self.user.ok_or(ConfigError::MissingUser)?;
        let ssl_mode = self.ssl_mode.unwrap_or_default();
        if self.ssl_root_cert == Some(SslRootCert::System) && ssl_mode != SslMode::VerifyFull {
            // libpq 16+ refuses this too: any public CA can vouch for a certificate with another
            // host's name, so only the host name check gives the system store a meaning.
            return Err(ConfigError::InvalidValue {
                key: "sslmode".into(),
                value: Some(ssl_mode.to_string()),
                reason: "sslrootcert=system trusts every public CA, so it needs sslmode=verify-full (as libpq requires); use verify-full or give the server's CA as sslrootcert=FILE".into(),
            });
        }
        Ok(ConnConfig {
            host: Host::from_text(self.host.as_deref().unwrap_or("localhost")),
            port: self.port.unwrap_or(DEFAULT_PORT),
            user,
            dbname: self.dbname,
            password: self.password.map(Password),
            ssl_mode,
            ssl_root_cert: self.ssl_root_cert,
            ssl_cert: self.ssl_cert,
            ssl_key: self.ssl_key,
            channel_binding: self.channel_binding.unwrap_or_default(),
            allow_password_auth: self.allow_password_auth.unwrap_or_default(),
            application_name: self.application_name,
            connect_timeout: self
                .connect_timeout
                .unwrap_or(Some(DEFAULT_CONNECT_TIMEOUT)),
        })
    }
}

fn decode(part: &str, what: &str) -> Result<String, ConfigError> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ConfigError::Syntax {
            reason: format!("the {what} of the URL is not valid UTF-8 once percent-decoded"),
        })
}

fn parse_url(rest: &str) -> Result<Partial, ConfigError> {
    let mut p = Partial::default();
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], Some(&before_query[i + 1..])),
        None => (before_query, None),
    };
    // An unencoded `/`, `?` or `#`… in a password ends the host part early: the password's rest
    // would then be read as a port or a path and echoed in an error. Said without the text.
    let after = &rest[authority.len()..];
    if !authority.contains('@') && after.contains('@') {
        let port_like = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && !p.bytes().all(|b| b.is_ascii_digit()));
        if port_like || path.is_some_and(|p| p.contains('@')) {
            return Err(ConfigError::Syntax {
                reason: "the URL's user part seems to hold a `/`, `?` or `#` (a password?): percent-encode them (%2F, %3F, %23), or give the password as `[source] password` or PGPASSWORD".into(),
            });
        }
    }
    // The user part ends at the last '@' (an unencoded '@' in a password is common enough).
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, pw)) => (u, Some(pw)),
            None => (userinfo, None),
        };
        p.set("user", decode(user, "user")?)?;
        if let Some(pw) = password {
            p.set("password", decode(pw, "password")?)?;
        }
    }
    if !hostport.is_empty() {
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, after) = inner.split_once(']').ok_or_else(|| ConfigError::Syntax {
                reason: "an IPv6 host opened with `[` is not closed with `]`".into(),
            })?;
            let port = match after {
                "" => None,
                a => Some(a.strip_prefix(':').ok_or_else(|| ConfigError::Syntax {
                    reason: "expected `:port` after the `]` of an IPv6 host".into(),
                })?),
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, port)) => (decode(h, "host")?, Some(port)),
                None => (decode(hostport, "host")?, None),
            }
        };
        p.set("host", host)?;
        if let Some(port) = port {
            p.set("port", decode(port, "port")?)?;
        }
    }
    if let Some(path) = path {
        if !path.is_empty() {
            p.set("dbname", decode(path, "database name")?)?;
        }
    }
    if let Some(query) = query {
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| ConfigError::Syntax {
                // Named only when it is a known key: the text may be a password's rest.
                reason: match KNOWN_KEYS.contains(&pair) {
                    true => format!("URL parameter `{pair}` has no `=value`"),
                    false => {
                        "a URL parameter has no `=value` (percent-encode `&` in values: %26)".into()
                    }
                },
            })?;
            let key = decode(k, "parameter name")?;
            let value = decode(v, "parameter value")?;
            p.set(&key, value)?;
        }
    }
    Ok(p)
}

fn parse_key_value(s: &str) -> Result<Partial, ConfigError> {
    let mut p = Partial::default();
    let mut chars = s.chars().peekable();
    // The key of the value read last: an error after it names it, never the text.
    let mut previous: Option<String> = None;
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            // Never echo the word: it may be the rest of an unquoted password.
            let reason = match (KNOWN_KEYS.contains(&key.as_str()), previous.as_deref()) {
                (true, _) => format!("missing `=` after `{key}`"),
                (false, Some("password")) => "a word that is not `key=value` after the value of `password`: quote a password that holds spaces (password='…')".into(),
                (false, Some(prev)) => format!("a word that is not `key=value` after the value of `{prev}`: quote values that hold spaces ('…')"),
                (false, None) => "the string starts with a word that is not `key=value`".into(),
            };
            return Err(ConfigError::Syntax { reason });
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(ConfigError::Syntax {
                            reason: format!("unterminated quoted value for `{key}`"),
                        })
                    }
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(ConfigError::Syntax {
                                reason: format!("unterminated quoted value for `{key}`"),
                            })
                        }
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(e) = chars.next() {
                        value.push(e);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if previous.as_deref() == Some("password") && !KNOWN_KEYS.contains(&key.as_str()) {
            // `password=Top Secret=x`: the unknown "key" is likely the password's rest.
            return Err(ConfigError::Syntax {
                reason: "an unknown option after the value of `password`: quote a password that holds spaces (password='…')".into(),
            });
        }
        p.set(&key, value)?;
        previous = Some(key);
    }
    Ok(p)
}

impl ConnConfig {
    /// Parses a `postgres://` / `postgresql://` URL or a libpq key=value string.
    pub fn parse(s: &str) -> Result<ConnConfig, ConfigError> {
        Self::parse_partial(s)?.finish()
    }

    /// Parses `s` as [`parse`](Self::parse) does, adding `settings` (key, value) with the same keys and
    /// value syntax (the `[source]` keys of the config file). A key set in both places to different
    /// values is a [`ConfigError::Conflict`].
    pub fn parse_with(s: &str, settings: &[(&str, String)]) -> Result<ConnConfig, ConfigError> {
        let mut extra = Partial::default();
        for (key, value) in settings {
            extra.set(key, value.clone())?;
        }
        Self::parse_partial(s)?.merge(extra)?.finish()
    }

    fn parse_partial(s: &str) -> Result<Partial, ConfigError> {
        let trimmed = s.trim();
        let partial = if let Some(rest) = trimmed
            .strip_prefix("postgres://")
            .or_else(|| trimmed.strip_prefix("postgresql://"))
        {
            parse_url(rest)?
        } else if trimmed.split_once("://").is_some_and(|(scheme, _)| {
            // A URL of another scheme (`mysql://…`); a `://` inside a quoted key-value password is not.
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }) {
            return Err(ConfigError::Syntax {
                reason: "a connection URL must start with `postgres://` or `postgresql://`".into(),
            });
        } else {
            parse_key_value(trimmed)?
        };
        Ok(partial)
    }

    /// The database to connect to: `dbname`, or the user name when none was given.
    pub fn database(&self) -> &str {
        self.dbname.as_deref().unwrap_or(&self.user)
    }

    /// Replaces the password with the value of environment variable `var` (the hook for secrets kept
    /// out of config files). An unset variable is an error, never an empty password.
    pub fn password_from_env(&mut self, var: &str) -> Result<(), ConfigError> {
        let value = std::env::var(var).map_err(|_| ConfigError::PasswordEnvMissing {
            var: var.to_owned(),
        })?;
        self.password = Some(Password(value));
        Ok(())
    }

    /// Where this config points, for messages: `host:port` or the Unix socket path.
    pub fn target(&self) -> String {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Unix(dir) => format!("{}", dir.join(format!(".s.PGSQL.{}", self.port)).display()),
        }
    }

    /// The config as a URL without the password, safe for logs.
    pub fn redacted(&self) -> String {
        use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
        // RFC 3986's unreserved characters stay as they are: `127.0.0.1`, not `127%2E0%2E0%2E1`.
        const PART: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let enc = |s: &str| utf8_percent_encode(s, PART).to_string();
        let host = match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]"),
            Host::Tcp(h) => enc(h),
            Host::Unix(p) => enc(&p.to_string_lossy()),
        };
        let mut url = format!(
            "postgres://{}@{}:{}/{}?sslmode={}",
            enc(&self.user),
            host,
            self.port,
            enc(self.database()),
            self.ssl_mode
        );
        if let Some(app) = &self.application_name {
            url.push_str("&application_name=");
            url.push_str(&enc(app));
        }
        url
    }

    /// The same settings as a tokio-postgres [`Config`](tokio_postgres::Config). `verify-ca`/`verify-full`
    /// map to `Require` (tokio-postgres has no finer mode), `allow` to `Prefer`. Certificates,
    /// verification and the refusal of md5/cleartext are *not* carried over: connect with
    /// [`connect_sql`](Self::connect_sql), which uses this config over our own TLS transport.
    pub fn to_tokio_postgres(&self) -> tokio_postgres::Config {
        use tokio_postgres::config::SslMode as TpSslMode;
        let mut c = tokio_postgres::Config::new();
        match &self.host {
            Host::Tcp(h) => c.host(h),
            Host::Unix(p) => c.host_path(p),
        };
        c.port(self.port).user(&self.user).dbname(self.database());
        if let Some(pw) = &self.password {
            c.password(pw.expose());
        }
        if let Some(app) = &self.application_name {
            c.application_name(app);
        }
        if let Some(t) = self.connect_timeout {
            c.connect_timeout(t);
        }
        c.ssl_mode(match self.ssl_mode {
            SslMode::Disable => TpSslMode::Disable,
            SslMode::Allow | SslMode::Prefer => TpSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => TpSslMode::Require,
        });
        c.channel_binding(match self.channel_binding {
            ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
            ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
            ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
        });
        c
    }
}

impl FromStr for ConnConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        ConnConfig::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_full_url() {
        let c = ConnConfig::parse(
            "postgres://fig:s%40cret@db.example.com:6543/app?sslmode=disable&application_name=fig%20rx",
        )
        .unwrap();
        assert_eq!(c.host, Host::Tcp("db.example.com".into()));
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "fig");
        assert_eq!(c.password.as_ref().unwrap().expose(), "s@cret");
        assert_eq!(c.database(), "app");
        assert_eq!(c.ssl_mode, SslMode::Disable);
        assert_eq!(c.application_name.as_deref(), Some("fig rx"));
        assert_eq!(c.connect_timeout, Some(DEFAULT_CONNECT_TIMEOUT));
    }

    #[test]
    fn url_defaults_and_variants() {
        let c = ConnConfig::parse("postgresql://u@h").unwrap();
        assert_eq!(c.port, 5432);
        assert_eq!(c.database(), "u");
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.channel_binding, ChannelBinding::Prefer);
        assert_eq!(c.allow_password_auth, AllowedPasswordAuth::default());
        assert!(c.ssl_root_cert.is_none() && c.ssl_cert.is_none() && c.ssl_key.is_none());
        assert!(c.password.is_none());

        let c = ConnConfig::parse("postgres://u@[::1]:5433/d").unwrap();
        assert_eq!(c.host, Host::Tcp("::1".into()));
        assert_eq!(c.port, 5433);
        assert_eq!(c.target(), "[::1]:5433");

        let c = ConnConfig::parse("postgres://u@%2Fvar%2Frun%2Fpostgresql:5433/d").unwrap();
        assert_eq!(c.host, Host::Unix("/var/run/postgresql".into()));
        assert_eq!(c.target(), "/var/run/postgresql/.s.PGSQL.5433");

        let c =
            ConnConfig::parse("postgres:///d?host=/tmp&user=x&port=7&connect_timeout=0").unwrap();
        assert_eq!(c.host, Host::Unix("/tmp".into()));
        assert_eq!(c.port, 7);
        assert_eq!(c.user, "x");
        assert_eq!(c.connect_timeout, None);

        // An unencoded '@' in the password: the last '@' ends the user part.
        let c = ConnConfig::parse("postgres://u:p@ss@h/d").unwrap();
        assert_eq!(c.password.unwrap().expose(), "p@ss");
    }

    #[test]
    fn parses_key_value() {
        let c = ConnConfig::parse(
            r"host=127.0.0.1 port = 5433 dbname=app user=fig password='it\'s a \\ secret' sslmode=prefer",
        )
        .unwrap();
        assert_eq!(c.host, Host::Tcp("127.0.0.1".into()));
        assert_eq!(c.port, 5433);
        assert_eq!(c.password.unwrap().expose(), r"it's a \ secret");
        let c = ConnConfig::parse("user=u host=/run/pg").unwrap();
        assert_eq!(c.host, Host::Unix("/run/pg".into()));
        let c = ConnConfig::parse("user=u password=''").unwrap();
        assert_eq!(c.password.unwrap().expose(), "");
    }

    #[test]
    fn errors_name_the_key() {
        let e = ConnConfig::parse("postgres://u@h/d?sslmdoe=disable").unwrap_err();
        assert_eq!(
            e,
            ConfigError::UnknownKey {
                key: "sslmdoe".into()
            }
        );
        assert!(e.to_string().contains("`sslmdoe`"));

        let e = ConnConfig::parse("user=u port=abc").unwrap_err();
        assert!(matches!(&e, ConfigError::InvalidValue { key, .. } if key == "port"));
        assert!(e.to_string().contains("`port`"));

        let e = ConnConfig::parse("user=u sslmode=sometimes").unwrap_err();
        assert!(e.to_string().contains("`sslmode`"));

        let e = ConnConfig::parse("user=u sslcrl=/x").unwrap_err();
        assert_eq!(
            e,
            ConfigError::NotSupportedYet {
                key: "sslcrl".into()
            }
        );

        assert_eq!(
            ConnConfig::parse("host=h").unwrap_err(),
            ConfigError::MissingUser
        );
        assert!(matches!(
            ConnConfig::parse("user=u host"),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            ConnConfig::parse("user='u"),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            ConnConfig::parse("mysql://u@h/d"),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            ConnConfig::parse("postgres://u@h,g/d"),
            Err(ConfigError::InvalidValue { .. })
        ));
    }

    #[test]
    fn password_never_printed() {
        let c = ConnConfig::parse("postgres://u:hunter2@h/d").unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("***"));
        assert!(!c.redacted().contains("hunter2"));
        assert_eq!(c.redacted(), "postgres://u@h:5432/d?sslmode=verify-full");
        let c = ConnConfig::parse("postgres://fig_r-1@127.0.0.1:5433/app.db~x%2Fy").unwrap();
        assert_eq!(
            c.redacted(),
            "postgres://fig_r-1@127.0.0.1:5433/app.db~x%2Fy?sslmode=verify-full"
        );
        // A password with a NUL is reported without its value.
        let e = ConnConfig::parse("postgres://u:a%00b@h/d").unwrap_err();
        assert!(!e.to_string().contains("a\0b"));
    }

    #[test]
    fn a_malformed_password_is_reported_without_any_piece_of_it() {
        for bad in [
            "postgres://fig:Top/Secret@127.0.0.1:5432/db",
            "postgres://fig:Top?Secret@127.0.0.1/db",
            "postgres://fig:1234/Secret@127.0.0.1/db",
            "postgres://fig:Top@127.0.0.1/db?sslmode=require&Secret",
            "host=127.0.0.1 user=x password=Top Secret",
            "host=127.0.0.1 user=x password=Top Secret=1",
            "host=127.0.0.1 user=x password='Top Secret",
        ] {
            let e = ConnConfig::parse(bad).expect_err(bad).to_string();
            assert!(
                !e.contains("Top") && !e.contains("Secret") && !e.contains("1234"),
                "{bad}: {e}"
            );
        }
        // Still parsed as before: an '@' in the query, an unencoded '@' or '#' in a password.
        let c = ConnConfig::parse("postgres://h/db?user=me@corp").unwrap();
        assert_eq!(c.user, "me@corp");
        let c = ConnConfig::parse("postgres://fig:Top@Se#cret@h/db").unwrap();
        assert_eq!(c.password.as_ref().unwrap().expose(), "Top@Se#cret");
        // A typo in a known position is still named.
        let e = ConnConfig::parse("host=h user=x sslmod=require")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmod"), "{e}");
    }

    #[test]
    fn tls_and_auth_keys_in_both_spellings() {
        let url = ConnConfig::parse(
            "postgres://u@h/d?sslmode=verify-ca&sslrootcert=/etc/ca.pem&sslcert=/c.crt&sslkey=/c.key&channel_binding=require&allow_password_auth=md5",
        )
        .unwrap();
        let kv = ConnConfig::parse(
            "user=u host=h dbname=d sslmode=verify-ca sslrootcert=/etc/ca.pem sslcert=/c.crt sslkey=/c.key channel_binding=require allow_password_auth=md5",
        )
        .unwrap();
        assert_eq!(url, kv);
        assert_eq!(url.ssl_mode, SslMode::VerifyCa);
        assert_eq!(
            url.ssl_root_cert,
            Some(SslRootCert::File("/etc/ca.pem".into()))
        );
        assert_eq!(
            url.ssl_cert.as_deref(),
            Some(std::path::Path::new("/c.crt"))
        );
        assert_eq!(url.ssl_key.as_deref(), Some(std::path::Path::new("/c.key")));
        assert_eq!(url.channel_binding, ChannelBinding::Require);
        assert!(url.allow_password_auth.allows(PasswordAuth::Md5));
        assert!(!url.allow_password_auth.allows(PasswordAuth::Cleartext));
        let c = ConnConfig::parse("user=u sslrootcert=system").unwrap();
        assert_eq!(c.ssl_root_cert, Some(SslRootCert::System));
    }

    #[test]
    fn system_roots_need_verify_full() {
        let e = ConnConfig::parse("user=u sslrootcert=system sslmode=require").unwrap_err();
        assert!(
            matches!(&e, ConfigError::InvalidValue { key, .. } if key == "sslmode"),
            "{e}"
        );
        assert!(e.to_string().contains("verify-full"), "{e}");
    }

    #[test]
    fn settings_merge_and_conflicts_are_named() {
        let c = ConnConfig::parse_with(
            "postgres://u@h/d",
            &[
                ("sslmode", "verify-ca".into()),
                ("allow_password_auth", "md5,password".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.ssl_mode, SslMode::VerifyCa);
        assert!(c.allow_password_auth.allows(PasswordAuth::Cleartext));
        // The same value twice is fine; different values are a conflict naming the key.
        ConnConfig::parse_with(
            "postgres://u@h/d?sslmode=require",
            &[("sslmode", "require".into())],
        )
        .unwrap();
        let e = ConnConfig::parse_with(
            "postgres://u@h/d?sslmode=disable",
            &[("sslmode", "verify-full".into())],
        )
        .unwrap_err();
        assert_eq!(
            e,
            ConfigError::Conflict {
                key: "sslmode".into()
            }
        );
        // A conflicting password is named, never shown.
        let e = ConnConfig::parse_with(
            "postgres://u:One-SECRET@h/d",
            &[("password", "Two-SECRET".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`password`") && !e.contains("SECRET"), "{e}");
    }

    #[test]
    fn password_from_env_hook() {
        let mut c = ConnConfig::parse("user=u").unwrap();
        let var = "FIG_RECEIVER_TEST_PASSWORD_FROM_ENV_HOOK";
        assert!(matches!(
            c.password_from_env(var),
            Err(ConfigError::PasswordEnvMissing { .. })
        ));
        // The variable name is unique to this test, so setting it cannot disturb another one.
        std::env::set_var(var, "from-env");
        c.password_from_env(var).unwrap();
        assert_eq!(c.password.as_ref().unwrap().expose(), "from-env");
    }

    #[test]
    fn maps_to_tokio_postgres() {
        let c = ConnConfig::parse("postgres://u:pw@h:6000/d?application_name=a&sslmode=disable")
            .unwrap();
        let t = c.to_tokio_postgres();
        assert_eq!(t.get_user(), Some("u"));
        assert_eq!(t.get_password(), Some(&b"pw"[..]));
        assert_eq!(t.get_dbname(), Some("d"));
        assert_eq!(t.get_ports(), &[6000]);
        assert_eq!(t.get_application_name(), Some("a"));
        assert_eq!(t.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
        let c = ConnConfig::parse("user=u host=/tmp").unwrap();
        assert!(matches!(
            c.to_tokio_postgres().get_hosts(),
            [tokio_postgres::config::Host::Unix(p)] if p == std::path::Path::new("/tmp")
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = ConnConfig::parse(&s);
            let _ = ConnConfig::parse(&format!("postgres://{s}"));
        }

        #[test]
        fn key_value_quoting_round_trips(pw in "[ -~]{0,30}") {
            let quoted = pw.replace('\\', "\\\\").replace('\'', "\\'");
            let c = ConnConfig::parse(&format!("user=u password='{quoted}'")).unwrap();
            prop_assert_eq!(c.password.as_ref().map(|p| p.expose()), Some(pw.as_str()));
        }
    }
}
