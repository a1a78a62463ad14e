//! Message framing over the transport: a read buffer, a write buffer, and nothing else.
//!
//! Reads are cancel-safe: bytes go into `rbuf` with `read_buf` (which either reads or not) and a message
//! is cut out of `rbuf` synchronously, so dropping a read future never loses or splits a message. Writes
//! are queued into `wbuf` and drained with `write_buf`, which advances only by what the socket took, so a
//! cancelled flush leaves the rest queued for the next one rather than half a message on the wire.
//!
//! `postgres-protocol`'s parser does not know the `W` (CopyBothResponse) tag and reserves whatever length
//! a header announces; so the header is checked here first (length bounded by `max_message_len`), `W` is
//! handled here, and only a complete, bounded message is handed to the parser.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::error::{ReplicationError, Result};
use crate::conn::Transport;

/// Tag of CopyBothResponse, which `postgres-protocol` does not parse.
pub(crate) const COPY_BOTH_RESPONSE_TAG: u8 = b'W';
/// Tag of NegotiateProtocolVersion (we never ask for protocol extensions, so it is unexpected).
const NEGOTIATE_PROTOCOL_VERSION_TAG: u8 = b'v';

/// The default bound on one backend message: PostgreSQL's own limit on a palloc'd value (1 GiB) plus
/// room for the XLogData header and CopyData envelope.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = (1 << 30) + (1 << 20);

/// A message from the server.
pub(crate) enum Backend {
    /// Anything `postgres-protocol` parses.
    Message(Message),
    /// CopyBothResponse: the server entered CopyBoth mode (after START_REPLICATION).
    CopyBothResponse,
}

pub(crate) struct Wire {
    io: Transport,
    rbuf: BytesMut,
    wbuf: BytesMut,
    max_message_len: usize,
}

impl Wire {
    pub(crate) fn new(io: Transport) -> Self {
        Wire {
            io,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
        }
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.io
    }

    pub(crate) fn set_max_message_len(&mut self, max: usize) {
        self.max_message_len = max.max(1024);
    }

    /// The write buffer, to append frontend messages to.
    pub(crate) fn out(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    pub(crate) fn has_pending_writes(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Cuts one complete message out of the read buffer, if there is one.
    pub(crate) fn try_parse(&mut self) -> Result<Option<Backend>> {
        if self.rbuf.len() < 5 {
            return Ok(None);
        }
        let tag = self.rbuf[0];
        let len =
            u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]) as usize;
        if len < 4 {
            return Err(ReplicationError::Protocol {
                reason: format!(
                    "message with tag {:?} announces length {len}, below 4",
                    tag as char
                ),
            });
        }
        if len > self.max_message_len {
            return Err(ReplicationError::MessageTooLarge {
                tag: tag as char,
                len,
                max: self.max_message_len,
            });
        }
        let total = len + 1;
        if self.rbuf.len() < total {
            self.rbuf.reserve(total - self.rbuf.len());
            return Ok(None);
        }
        match tag {
            COPY_BOTH_RESPONSE_TAG => {
                let mut body = self.rbuf.split_to(total);
                body.advance(5);
                check_copy_both_response(&body)?;
                Ok(Some(Backend::CopyBothResponse))
            }
            NEGOTIATE_PROTOCOL_VERSION_TAG => Err(ReplicationError::Protocol {
                reason: "the server sent NegotiateProtocolVersion although no protocol extension was requested"
                    .into(),
            }),
            _ => match Message::parse(&mut self.rbuf) {
                Ok(Some(m)) => Ok(Some(Backend::Message(m))),
                // Cannot happen with a complete message in the buffer; treat as a protocol fault, not a hang.
                Ok(None) => Err(ReplicationError::Protocol {
                    reason: format!("could not parse a complete message with tag {:?}", tag as char),
                }),
                Err(e) => Err(ReplicationError::Protocol {
                    reason: format!("malformed message with tag {:?}: {e}", tag as char),
                }),
            },
        }
    }

    /// Reads more bytes into the read buffer. Cancel-safe.
    pub(crate) async fn fill(&mut self) -> Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < 8 * 1024 {
            self.rbuf.reserve(64 * 1024);
        }
        let n = self.io.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ReplicationError::Closed);
        }
        Ok(())
    }

    /// The next message. Cancel-safe.
    pub(crate) async fn read(&mut self) -> Result<Backend> {
        loop {
            if let Some(m) = self.try_parse()? {
                return Ok(m);
            }
            self.fill().await?;
        }
    }

    /// Writes out everything queued. Cancel-safe: what was not written stays queued.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        while !self.wbuf.is_empty() {
            let n = self.io.write_buf(&mut self.wbuf).await?;
            if n == 0 {
                return Err(ReplicationError::Closed);
            }
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Waits until more bytes have been read, writing out queued bytes meanwhile (so a large queued write
    /// and a server that is itself blocked writing to us cannot deadlock). Cancel-safe: every byte moved
    /// is accounted for in the buffers before this returns `Pending`.
    pub(crate) async fn drive(&mut self) -> Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < 8 * 1024 {
            self.rbuf.reserve(64 * 1024);
        }
        poll_fn(|cx| {
            while !self.wbuf.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(ReplicationError::Closed)),
                    Poll::Ready(Ok(n)) => {
                        self.wbuf.advance(n);
                        if self.wbuf.is_empty() {
                            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                                return Poll::Ready(Err(e.into()));
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => break,
                }
            }
            match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => Poll::Ready(Err(ReplicationError::Closed)),
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Writes as much of the queue as the socket takes right now, without waiting.
    pub(crate) async fn flush_now(&mut self) -> Result<()> {
        poll_fn(|cx| {
            while !self.wbuf.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(ReplicationError::Closed)),
                    Poll::Ready(Ok(n)) => self.wbuf.advance(n),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => return Poll::Ready(Ok(())),
                }
            }
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                _ => Poll::Ready(Ok(())),
            }
        })
        .await
    }
}

/// Checks a CopyBothResponse body: overall format (0 text, 1 binary), column count, one format per column.
fn check_copy_both_response(body: &[u8]) -> Result<()> {
    let bad = |reason: String| ReplicationError::Protocol {
        reason: format!("malformed CopyBothResponse: {reason}"),
    };
    if body.len() < 3 {
        return Err(bad(format!("{} bytes, at least 3 expected", body.len())));
    }
    if body[0] > 1 {
        return Err(bad(format!("format {}, 0 or 1 expected", body[0])));
    }
    let ncols = u16::from_be_bytes([body[1], body[2]]) as usize;
    if body.len() != 3 + 2 * ncols {
        return Err(bad(format!("{} bytes for {ncols} columns", body.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Transport;
    use bytes::BufMut;
    use proptest::prelude::*;

    fn wire_with(bytes: &[u8]) -> Wire {
        let (a, _b) = tokio::io::duplex(64);
        let mut w = Wire::new(Transport::new(Box::new(a), "test".into(), None));
        w.rbuf.extend_from_slice(bytes);
        w
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.put_u32(body.len() as u32 + 4);
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn parses_copy_both_response() {
        let mut w = wire_with(&msg(b'W', &[0, 0, 0]));
        assert!(matches!(
            w.try_parse().unwrap(),
            Some(Backend::CopyBothResponse)
        ));
        assert!(w.rbuf.is_empty());
        let mut w = wire_with(&msg(b'W', &[0, 0, 1]));
        assert!(matches!(
            w.try_parse(),
            Err(ReplicationError::Protocol { .. })
        ));
    }

    #[tokio::test]
    async fn waits_for_complete_messages_and_bounds_length() {
        let full = msg(b'd', b"wxyz");
        let mut w = wire_with(&full[..6]);
        assert!(w.try_parse().unwrap().is_none());
        w.rbuf.extend_from_slice(&full[6..]);
        assert!(matches!(
            w.try_parse().unwrap(),
            Some(Backend::Message(Message::CopyData(_)))
        ));

        let mut huge = vec![b'd'];
        huge.put_u32(u32::MAX);
        let mut w = wire_with(&huge);
        assert!(matches!(
            w.try_parse(),
            Err(ReplicationError::MessageTooLarge { .. })
        ));
        // The buffer did not grow to the announced size.
        assert!(w.rbuf.capacity() < 1 << 20);

        let mut short = vec![b'Z'];
        short.put_u32(3);
        let mut w = wire_with(&short);
        assert!(matches!(
            w.try_parse(),
            Err(ReplicationError::Protocol { .. })
        ));
    }

    #[tokio::test]
    async fn reads_from_the_socket_across_chunks() {
        let (a, mut b) = tokio::io::duplex(4);
        let mut w = Wire::new(Transport::new(Box::new(a), "test".into(), None));
        let bytes = [msg(b'd', b"hello"), msg(b'c', b"")].concat();
        let writer = tokio::spawn(async move {
            b.write_all(&bytes).await.unwrap();
            b
        });
        let Backend::Message(Message::CopyData(d)) = w.read().await.unwrap() else {
            panic!("expected CopyData");
        };
        assert_eq!(d.data(), b"hello");
        assert!(matches!(
            w.read().await.unwrap(),
            Backend::Message(Message::CopyDone)
        ));
        drop(writer.await.unwrap());
        assert!(matches!(w.read().await, Err(ReplicationError::Closed)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut w = wire_with(&data);
                w.set_max_message_len(1024);
                for _ in 0..8 {
                    match w.try_parse() {
                        Ok(Some(_)) => continue,
                        _ => break,
                    }
                }
            });
        }
    }
}
