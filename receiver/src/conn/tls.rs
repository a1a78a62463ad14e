//! The sslmode decision, the one place where TLS will be added.
//!
//! Today there is no TLS in this build, so:
//!
//! | sslmode | today | libpq |
//! |---|---|---|
//! | `disable` | plain | plain |
//! | `allow`, `prefer` | plain, no `SSLRequest` sent | try TLS / plain, fall back (libpq without SSL support also connects plain) |
//! | `require`, `verify-ca`, `verify-full` | refused: [`ConnectError::TlsUnavailable`] | TLS or fail |
//!
//! A mode that demands TLS is never downgraded. When TLS lands, `negotiate` sends the `SSLRequest`, wraps
//! the stream in rustls (CA file from `sslrootcert`, client certificate from `sslcert`/`sslkey`), and
//! passes the server certificate's hash to [`Transport::new`] for SCRAM channel binding. Both the SQL and
//! the replication connection go through here, so neither needs to change.

use super::config::{ConnConfig, SslMode};
use super::transport::{AsyncStream, ConnectError, Transport};

/// Applies `config.ssl_mode` to a freshly opened stream.
pub(crate) async fn negotiate(
    stream: Box<dyn AsyncStream>,
    target: String,
    config: &ConnConfig,
) -> Result<Transport, ConnectError> {
    match config.ssl_mode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => {
            Ok(Transport::new(stream, target, None))
        }
        mode @ (SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull) => {
            Err(ConnectError::TlsUnavailable { mode })
        }
    }
}
