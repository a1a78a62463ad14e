//! Applies the authentication [`Policy`] to a session whose exchange tokio-postgres runs.
//!
//! tokio-postgres answers whatever authentication request the server makes (MD5, cleartext) and has
//! no setting to refuse one. [`AuthGuard`] sits between it and the [`Transport`]: it reads along the
//! server's messages until `AuthenticationOk`, and when a request is one the policy refuses, the read
//! fails with [`AuthRefused`] inside the I/O error, before tokio-postgres could answer it. After
//! `AuthenticationOk` it only passes bytes through.
//!
//! ```text
//! server bytes ─▶ AuthGuard::poll_read ─▶ Watch::feed (frames 'R' messages, skips the others)
//!                        │                       └─ refused ─▶ io::Error(PermissionDenied, AuthRefused)
//!                        └────────────────────────────────────▶ tokio-postgres
//! ```

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::auth::{AuthRefused, Policy, Request};
use super::config::PasswordAuth;

/// The largest authentication request read along (SASL mechanism lists are a few dozen bytes).
const MAX_AUTH_MESSAGE: usize = 8192;

/// A stream that refuses authentication requests its [`Policy`] does not allow.
pub(crate) struct AuthGuard<S> {
    inner: S,
    watch: Option<Watch>,
}

impl<S> AuthGuard<S> {
    pub fn new(policy: Policy, inner: S) -> Self {
        AuthGuard {
            inner,
            watch: Some(Watch {
                policy,
                buf: Vec::new(),
                skip: 0,
                after_sasl: false,
            }),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Reads along the server's messages until authentication is over.
struct Watch {
    policy: Policy,
    /// The start of the current message, when it is an authentication request.
    buf: Vec<u8>,
    /// Bytes of a message that is not an authentication request still to pass.
    skip: usize,
    after_sasl: bool,
}

impl Watch {
    /// Takes the next bytes from the server. `Ok(true)`: authentication is over, stop watching.
    fn feed(&mut self, data: &[u8]) -> io::Result<bool> {
        self.buf.extend_from_slice(data);
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.drain(..n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(false);
                }
            }
            if self.buf.len() < 5 {
                return Ok(false);
            }
            let tag = self.buf[0];
            let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
            let Some(total) = usize::try_from(len).ok().filter(|l| *l >= 4).map(|l| l + 1) else {
                return Err(protocol("a message length below 4"));
            };
            if tag != b'R' {
                // ErrorResponse, NoticeResponse, NegotiateProtocolVersion: tokio-postgres handles them.
                self.skip = total;
                continue;
            }
            if total > MAX_AUTH_MESSAGE {
                return Err(protocol("an authentication request larger than 8 KiB"));
            }
            if self.buf.len() < total {
                return Ok(false);
            }
            let message: Vec<u8> = self.buf.drain(..total).collect();
            if self.examine(&message[5..])? {
                return Ok(true);
            }
        }
    }

    /// Applies the policy to one authentication request's body. `Ok(true)` on AuthenticationOk.
    fn examine(&mut self, body: &[u8]) -> io::Result<bool> {
        if body.len() < 4 {
            return Err(protocol("an authentication request without a code"));
        }
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let refused = |e: AuthRefused| io::Error::new(io::ErrorKind::PermissionDenied, e);
        match code {
            0 => {
                self.policy
                    .check(Request::Ok {
                        after_sasl: self.after_sasl,
                    })
                    .map_err(refused)?;
                return Ok(true);
            }
            3 => self
                .policy
                .check(Request::Password(PasswordAuth::Cleartext))
                .map_err(refused)?,
            5 => self
                .policy
                .check(Request::Password(PasswordAuth::Md5))
                .map_err(refused)?,
            10 => {
                let mechanisms: Vec<String> = body[4..]
                    .split(|b| *b == 0)
                    .take_while(|m| !m.is_empty())
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect();
                self.policy
                    .check(Request::Sasl {
                        mechanisms: &mechanisms,
                    })
                    .map_err(refused)?;
                self.after_sasl = true;
            }
            // SASL continue/final, and methods tokio-postgres refuses by itself.
            _ => {}
        }
        Ok(false)
    }
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("protocol violation by the server during authentication: {what}"),
    )
}

/// The policy refusal carried by a tokio-postgres error, if that is what ended the connection.
pub(crate) fn refusal_in(e: &tokio_postgres::Error) -> Option<AuthRefused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<AuthRefused>())
        {
            return Some(r.clone());
        }
        source = s.source();
    }
    None
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if let Some(watch) = &mut self.watch {
            if watch.feed(&buf.filled()[before..])? {
                self.watch = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthGuard<S> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::config::{AllowedPasswordAuth, ChannelBinding};

    fn watch(allowed: AllowedPasswordAuth, cb: ChannelBinding) -> Watch {
        Watch {
            policy: Policy {
                channel_binding: cb,
                allowed,
                no_tls_because: "sslmode=disable".into(),
                tls: false,
                end_point: None,
            },
            buf: Vec::new(),
            skip: 0,
            after_sasl: false,
        }
    }

    fn auth(code: i32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&((8 + extra.len()) as i32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    fn notice(len: usize) -> Vec<u8> {
        let mut m = vec![b'N'];
        m.extend_from_slice(&((4 + len) as i32).to_be_bytes());
        m.extend(std::iter::repeat_n(b'x', len));
        m
    }

    /// Feeds `bytes` in chunks of `chunk`; the first error or the end of watching.
    fn run(w: &mut Watch, bytes: &[u8], chunk: usize) -> io::Result<bool> {
        for c in bytes.chunks(chunk) {
            if w.feed(c)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    #[test]
    fn md5_is_refused_in_any_chunking_after_other_messages() {
        let mut stream = notice(20_000);
        stream.extend(auth(5, &[1, 2, 3, 4]));
        for chunk in [1, 3, 7, 4096, stream.len()] {
            let mut w = watch(AllowedPasswordAuth::default(), ChannelBinding::Prefer);
            let e = run(&mut w, &stream, chunk).unwrap_err();
            let refused = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<AuthRefused>())
                .unwrap_or_else(|| panic!("chunk {chunk}: {e}"));
            assert_eq!(
                *refused,
                AuthRefused::PasswordMethod {
                    method: PasswordAuth::Md5
                }
            );
        }
        let mut allowed = watch(
            AllowedPasswordAuth {
                md5: true,
                cleartext: false,
            },
            ChannelBinding::Prefer,
        );
        let mut ok = stream.clone();
        ok.extend(auth(0, &[]));
        assert!(run(&mut allowed, &ok, 5).unwrap());
        let mut w = watch(AllowedPasswordAuth::default(), ChannelBinding::Prefer);
        assert!(run(&mut w, &auth(3, &[]), 2).is_err());
    }

    #[test]
    fn scram_then_ok_ends_watching_and_trust_fails_required_binding() {
        let mut stream = auth(10, b"SCRAM-SHA-256\0\0");
        stream.extend(auth(11, b"r=abc"));
        stream.extend(auth(12, b"v=xyz"));
        stream.extend(auth(0, &[]));
        let mut w = watch(AllowedPasswordAuth::default(), ChannelBinding::Prefer);
        assert!(run(&mut w, &stream, 3).unwrap());
        let mut w = watch(AllowedPasswordAuth::default(), ChannelBinding::Require);
        let e = run(&mut w, &auth(0, &[]), 64).unwrap_err();
        assert!(e.to_string().contains("channel_binding=require"), "{e}");
        let mut w = watch(AllowedPasswordAuth::default(), ChannelBinding::Prefer);
        assert!(run(&mut w, &[b'R', 0, 0, 0, 1], 5).is_err());
        let mut w = watch(AllowedPasswordAuth::default(), ChannelBinding::Prefer);
        assert!(run(&mut w, &auth(10, &vec![b'A'; 9000]), 512).is_err());
    }
}
