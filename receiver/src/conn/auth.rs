//! Which authentication exchanges a connection accepts: one decision for the replication client
//! (which runs the exchange itself) and the SQL connection (tokio-postgres runs it, watched by
//! [`auth_guard`](super::auth_guard)).
//!
//! ```text
//! server asks                    channel_binding=require            otherwise
//! ─────────────────────────────  ─────────────────────────────────  ──────────────────────────────────
//! SASL, PLUS offered, TLS        SCRAM-SHA-256-PLUS                 PLUS (prefer) / plain SCRAM (disable)
//! SASL, no PLUS or no TLS        refused                            SCRAM-SHA-256 ("y" over TLS: the
//!                                                                   server detects a stripped PLUS)
//! md5 / password                 refused                            refused unless allow_password_auth
//! AuthenticationOk at once       refused (no binding happened)      accepted (trust, cert, peer)
//! ```
//!
//! SCRAM's server signature is always verified (postgres-protocol's `ScramSha256::finish`), so a
//! server that does not know the password's verifier cannot complete the exchange.

use postgres_protocol::authentication::sasl;

use super::config::{AllowedPasswordAuth, ChannelBinding, PasswordAuth};

/// An authentication request from the server, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request<'a> {
    /// `AuthenticationOk`; `after_sasl` when a SASL exchange preceded it.
    Ok { after_sasl: bool },
    /// MD5 or cleartext password.
    Password(PasswordAuth),
    /// `AuthenticationSASL` with the server's mechanisms.
    Sasl { mechanisms: &'a [String] },
}

/// The SCRAM variant to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scram {
    /// SCRAM-SHA-256-PLUS with this `tls-server-end-point` data.
    Plus(Vec<u8>),
    /// SCRAM-SHA-256; `client_could_bind` sends the `y` flag (binding possible but not offered).
    Plain { client_could_bind: bool },
}

impl Scram {
    /// The SASL mechanism name.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Scram::Plus(_) => sasl::SCRAM_SHA_256_PLUS,
            Scram::Plain { .. } => sasl::SCRAM_SHA_256,
        }
    }

    /// The channel binding argument for postgres-protocol's `ScramSha256`.
    pub fn channel_binding(&self) -> sasl::ChannelBinding {
        match self {
            Scram::Plus(data) => sasl::ChannelBinding::tls_server_end_point(data.clone()),
            Scram::Plain {
                client_could_bind: true,
            } => sasl::ChannelBinding::unrequested(),
            Scram::Plain {
                client_could_bind: false,
            } => sasl::ChannelBinding::unsupported(),
        }
    }
}

/// An authentication the policy refuses. Messages say which method the server asked for and how to
/// allow or avoid it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthRefused {
    /// MD5 or cleartext password without `allow_password_auth`.
    #[error("the server asked for `{method}` password authentication, which fig-receiver refuses unless allowed, so that a downgrade from SCRAM cannot happen silently: change the role's pg_hba.conf line to scram-sha-256 (with password_encryption = 'scram-sha-256', then set the role's password again), or accept the risk with allow_password_auth = [\"{method}\"] in [source] (allow_password_auth={method} in the connection string)")]
    PasswordMethod {
        /// The method the server asked for.
        method: PasswordAuth,
    },
    /// `channel_binding=require` over a connection that is not TLS.
    #[error("channel_binding=require, but this connection is not encrypted ({why}), and channel binding needs TLS: connect over TCP with sslmode=verify-full")]
    BindingWithoutTls {
        /// Why there is no TLS (`sslmode=disable`, a Unix socket…).
        why: String,
    },
    /// `channel_binding=require` and the server authenticated some other way.
    #[error("channel_binding=require, but the server {how}: authenticate the role with scram-sha-256 in a hostssl line of pg_hba.conf (PostgreSQL 11+ then offers SCRAM-SHA-256-PLUS), or set channel_binding=prefer")]
    BindingNotUsed {
        /// What the server did instead.
        how: String,
    },
    /// `channel_binding=require` and no binding data (a certificate signed with Ed25519 or an
    /// algorithm without a defined hash).
    #[error("channel_binding=require, but the server's certificate uses a signature algorithm for which tls-server-end-point is not defined (e.g. Ed25519): use an RSA or ECDSA certificate on the server, or set channel_binding=prefer")]
    BindingUnavailable,
    /// `channel_binding=disable` and the server only offers SCRAM-SHA-256-PLUS (or no SCRAM at all).
    #[error("the server offers no SASL mechanism fig-receiver can use with channel_binding={channel_binding} (offered: {offered})")]
    NoMechanism {
        /// The setting.
        channel_binding: ChannelBinding,
        /// What the server offered.
        offered: String,
    },
}

/// The policy of one connection: the configured options plus what the transport can do.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub channel_binding: ChannelBinding,
    pub allowed: AllowedPasswordAuth,
    /// Why the connection has no TLS when it has none (`sslmode=…`, a Unix socket), for messages.
    pub no_tls_because: String,
    /// The connection is TLS.
    pub tls: bool,
    /// `tls-server-end-point` data, when TLS and the certificate's algorithm defines it.
    pub end_point: Option<Vec<u8>>,
}

impl Policy {
    /// Accepts or refuses an `Ok` or password request; for SASL, use [`choose_scram`](Self::choose_scram).
    pub fn check(&self, request: Request<'_>) -> Result<(), AuthRefused> {
        match request {
            Request::Ok { after_sasl } => {
                if self.channel_binding == ChannelBinding::Require && !after_sasl {
                    return Err(self.binding_refusal(
                        "let the role in without any password exchange (trust, peer or cert)",
                    ));
                }
                Ok(())
            }
            Request::Password(method) => {
                if self.channel_binding == ChannelBinding::Require {
                    return Err(self.binding_refusal(&format!(
                        "asked for `{method}` password authentication"
                    )));
                }
                if self.allowed.allows(method) {
                    Ok(())
                } else {
                    Err(AuthRefused::PasswordMethod { method })
                }
            }
            Request::Sasl { mechanisms } => self.choose_scram(mechanisms).map(|_| ()),
        }
    }

    /// The SCRAM variant to run for the server's mechanism list.
    pub fn choose_scram(&self, mechanisms: &[String]) -> Result<Scram, AuthRefused> {
        let offers = |m: &str| mechanisms.iter().any(|x| x == m);
        let plus_offered = offers(sasl::SCRAM_SHA_256_PLUS);
        let plain_offered = offers(sasl::SCRAM_SHA_256);
        let no_mechanism = || AuthRefused::NoMechanism {
            channel_binding: self.channel_binding,
            offered: mechanisms.join(", "),
        };
        match self.channel_binding {
            ChannelBinding::Require => {
                if !self.tls {
                    return Err(self.binding_refusal(""));
                }
                let data = self
                    .end_point
                    .clone()
                    .ok_or(AuthRefused::BindingUnavailable)?;
                if !plus_offered {
                    return Err(AuthRefused::BindingNotUsed {
                        how: format!(
                            "did not offer SCRAM-SHA-256-PLUS (offered: {})",
                            mechanisms.join(", ")
                        ),
                    });
                }
                Ok(Scram::Plus(data))
            }
            ChannelBinding::Prefer => match (&self.end_point, plus_offered) {
                (Some(data), true) => Ok(Scram::Plus(data.clone())),
                (data, _) if plain_offered => Ok(Scram::Plain {
                    client_could_bind: data.is_some(),
                }),
                _ => Err(no_mechanism()),
            },
            ChannelBinding::Disable if plain_offered => Ok(Scram::Plain {
                client_could_bind: false,
            }),
            ChannelBinding::Disable => Err(no_mechanism()),
        }
    }

    fn binding_refusal(&self, how: &str) -> AuthRefused {
        if !self.tls {
            AuthRefused::BindingWithoutTls {
                why: self.no_tls_because.clone(),
            }
        } else {
            AuthRefused::BindingNotUsed { how: how.into() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cb: ChannelBinding, tls: bool, end_point: bool) -> Policy {
        Policy {
            channel_binding: cb,
            allowed: AllowedPasswordAuth::default(),
            no_tls_because: "sslmode=disable".into(),
            tls,
            end_point: end_point.then(|| vec![1, 2, 3]),
        }
    }

    fn mechs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn password_methods_need_allowing_and_the_error_says_how() {
        let mut p = policy(ChannelBinding::Prefer, true, true);
        let e = p
            .check(Request::Password(PasswordAuth::Md5))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`md5`") && e.contains("allow_password_auth"),
            "{e}"
        );
        assert!(p.check(Request::Password(PasswordAuth::Cleartext)).is_err());
        p.allowed.md5 = true;
        p.check(Request::Password(PasswordAuth::Md5)).unwrap();
        assert!(p.check(Request::Password(PasswordAuth::Cleartext)).is_err());
        // Even allowed, md5 cannot satisfy channel_binding=require.
        p.channel_binding = ChannelBinding::Require;
        assert!(matches!(
            p.check(Request::Password(PasswordAuth::Md5)),
            Err(AuthRefused::BindingNotUsed { .. })
        ));
    }

    #[test]
    fn scram_choice_follows_channel_binding() {
        let both = mechs(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
        let plain = mechs(&["SCRAM-SHA-256"]);
        let prefer = policy(ChannelBinding::Prefer, true, true);
        assert_eq!(
            prefer.choose_scram(&both).unwrap(),
            Scram::Plus(vec![1, 2, 3])
        );
        assert_eq!(
            prefer.choose_scram(&plain).unwrap(),
            Scram::Plain {
                client_could_bind: true
            }
        );
        let plaintext = policy(ChannelBinding::Prefer, false, false);
        assert_eq!(
            plaintext.choose_scram(&plain).unwrap(),
            Scram::Plain {
                client_could_bind: false
            }
        );
        let disable = policy(ChannelBinding::Disable, true, true);
        assert_eq!(
            disable.choose_scram(&both).unwrap(),
            Scram::Plain {
                client_could_bind: false
            }
        );
        let require = policy(ChannelBinding::Require, true, true);
        assert_eq!(
            require.choose_scram(&both).unwrap(),
            Scram::Plus(vec![1, 2, 3])
        );
        assert!(matches!(
            require.choose_scram(&plain),
            Err(AuthRefused::BindingNotUsed { .. })
        ));
        assert!(matches!(
            policy(ChannelBinding::Require, false, false).choose_scram(&plain),
            Err(AuthRefused::BindingWithoutTls { .. })
        ));
        assert_eq!(
            policy(ChannelBinding::Require, true, false).choose_scram(&both),
            Err(AuthRefused::BindingUnavailable)
        );
        // trust/cert: fine unless binding is required.
        prefer.check(Request::Ok { after_sasl: false }).unwrap();
        assert!(require.check(Request::Ok { after_sasl: false }).is_err());
        require.check(Request::Ok { after_sasl: true }).unwrap();
    }
}
