//! [`ReplicationStream`]: the CopyBoth phase of a logical replication session.
//!
//! ```text
//!            XLogData 'w' ─────────────────────────────▶ next() → StreamEvent::XLogData
//!  server    keepalive 'k' (reply requested?) ─────────▶ next() → StreamEvent::Keepalive
//!            ◀── status update 'r' (write, flush, apply)    ▲ at once when a reply is requested,
//!                                                            │ every `status_interval` (10 s),
//!                                                            │ on send_status*/finish
//!  caller ── set_flushed(lsn) ───────────────────────────────┘ the only source of `flush`
//! ```
//!
//! **The flush position reported is exactly what the caller said is durable** (DESIGN.md rule 1). The
//! stream never infers it from what it received: `flush` and `apply` are the highest LSN passed to
//! [`set_flushed`](ReplicationStream::set_flushed) (or to [`send_status`](ReplicationStream::send_status)),
//! and [`Lsn::INVALID`] (which the server ignores) until the caller says anything. The server advances the
//! slot's `confirmed_flush_lsn` to it and may then recycle older WAL, so reporting one byte too far can lose
//! a transaction for good. `write` is informational: the highest WAL position received, never below flush.
//! The caller, not this module, decides what to confirm, including "when idle with nothing in flight,
//! confirm the keepalive's WAL end".
//!
//! Status updates are sent from inside the stream's own calls: [`next`](ReplicationStream::next) sends one
//! every `status_interval` (default 10 s, well inside the server's default `wal_sender_timeout` of 60 s)
//! and answers a keepalive that requests a reply at once. If nothing at all arrives from the server for
//! `receive_timeout` (default 60 s), the stream asks for a reply halfway and fails with
//! [`ReplicationError::ServerSilent`] at the end, like PostgreSQL's own `wal_receiver_timeout`.
//! A caller that stops calling `next` for a long time (a slow sink applying back-pressure) must call
//! [`send_status_if_due`](ReplicationStream::send_status_if_due) meanwhile, or the server will end the
//! connection after `wal_sender_timeout`.
//!
//! [`next`](ReplicationStream::next) is cancel-safe: it can be a branch of `tokio::select!` and dropping it
//! loses no message and writes no partial frame (received bytes and queued writes stay in the stream's
//! buffers). The `send_status*` and `finish` calls are not meant to be cancelled; a half-written status
//! update stays queued and is completed by the next call.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::time::Instant;

use super::client::{describe, ReplicationClient};
use super::error::{ReplicationError, Result, ServerError};
use super::frames::{parse_server_frame, PgTimestamp, ServerFrame, StandbyStatusUpdate};
use super::lsn::Lsn;
use super::wire::Backend;

/// Default period of standby status updates.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// Default limit on silence from the server.
pub const DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// One output plugin message.
    XLogData {
        /// WAL position of the change this message is about (see [`XLogData`](super::frames::XLogData)).
        wal_start: Lsn,
        /// The server's end of WAL when sending.
        wal_end: Lsn,
        /// The server's clock when sending.
        send_time: PgTimestamp,
        /// The plugin's bytes.
        data: Bytes,
    },
    /// A server heartbeat. A requested reply has already been sent (with the flush position set so far).
    Keepalive {
        /// The server's end of WAL: when nothing is in flight, everything before it has been sent.
        wal_end: Lsn,
        /// The server's clock when sending.
        send_time: PgTimestamp,
        /// Whether the server asked for a reply.
        reply_requested: bool,
    },
}

/// A logical replication stream. Created by
/// [`ReplicationClient::start_logical`](super::ReplicationClient::start_logical).
pub struct ReplicationStream {
    client: ReplicationClient,
    start_lsn: Lsn,
    status_interval: Duration,
    receive_timeout: Option<Duration>,
    next_status_at: Instant,
    last_received_at: Instant,
    asked_for_reply: bool,
    received: Lsn,
    flushed: Lsn,
    /// The server sent CopyDone: no more data will come.
    server_done: bool,
    /// We sent CopyDone: we may send no more CopyData.
    client_done: bool,
}

impl std::fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("start_lsn", &self.start_lsn)
            .field("received", &self.received)
            .field("flushed", &self.flushed)
            .field("server_done", &self.server_done)
            .finish()
    }
}

impl ReplicationStream {
    pub(crate) fn new(client: ReplicationClient, start_lsn: Lsn) -> Self {
        let now = Instant::now();
        ReplicationStream {
            client,
            start_lsn,
            status_interval: DEFAULT_STATUS_INTERVAL,
            receive_timeout: Some(DEFAULT_RECEIVE_TIMEOUT),
            next_status_at: now + DEFAULT_STATUS_INTERVAL,
            last_received_at: now,
            asked_for_reply: false,
            received: Lsn::INVALID,
            flushed: Lsn::INVALID,
            server_done: false,
            client_done: false,
        }
    }

    /// Sets the period of status updates (at least 100 ms). Keep it well below the server's
    /// `wal_sender_timeout`.
    pub fn set_status_interval(&mut self, interval: Duration) {
        self.status_interval = interval.max(Duration::from_millis(100));
        self.next_status_at = Instant::now() + self.status_interval;
    }

    /// Sets how long the server may stay silent before the connection is presumed dead (`None`: forever;
    /// at least 1 s otherwise).
    pub fn set_receive_timeout(&mut self, timeout: Option<Duration>) {
        self.receive_timeout = timeout.map(|t| t.max(Duration::from_secs(1)));
    }

    /// The position streaming was asked to start from.
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The highest `wal_start` of the XLogData received so far.
    pub fn received(&self) -> Lsn {
        self.received
    }

    /// The flush position that status updates report.
    pub fn flushed(&self) -> Lsn {
        self.flushed
    }

    /// Declares that everything up to `lsn` is durable on our side; the next status update reports it as
    /// the flush position. Must be the end LSN of a commit whose transaction and every earlier one are
    /// durable in the sink (DESIGN.md rule 1). The position never moves back: a lower value is ignored
    /// (and logged, as it points to a bug in the caller).
    pub fn set_flushed(&mut self, lsn: Lsn) {
        if lsn < self.flushed {
            tracing::warn!(new = %lsn, current = %self.flushed, "ignoring a flush position that moves backwards");
            return;
        }
        self.flushed = lsn;
    }

    /// The next event, or `None` once the server has ended the stream (it sent CopyDone; call
    /// [`finish`](Self::finish) to get the client back). Sends status updates as described in the module
    /// documentation. Cancel-safe. Any error leaves the stream unusable.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>> {
        if self.client.broken {
            return Err(ReplicationError::Broken);
        }
        let r = self.next_inner().await;
        if r.is_err() {
            self.client.broken = true;
        }
        r
    }

    async fn next_inner(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            if self.server_done {
                return Ok(None);
            }
            // The timer is checked on every turn, so a steady flood of buffered data cannot starve it.
            let now = Instant::now();
            if now >= self.next_status_at {
                self.queue_status(false)?;
            }
            if let Some(m) = self.client.wire.try_parse()? {
                self.last_received_at = now;
                self.asked_for_reply = false;
                if let Some(event) = self.handle(m)? {
                    // A queued status update (a keepalive's reply, the timer's) goes out now if the socket
                    // takes it; otherwise it stays queued and the next call writes it.
                    if self.client.wire.has_pending_writes() {
                        self.client.wire.flush_now().await?;
                    }
                    return Ok(Some(event));
                }
                continue;
            }
            let mut deadline = self.next_status_at;
            if let Some(limit) = self.receive_timeout {
                let silent = now.duration_since(self.last_received_at);
                if silent >= limit {
                    return Err(ReplicationError::ServerSilent { after: limit });
                }
                if silent >= limit / 2 && !self.asked_for_reply {
                    tracing::debug!(silent = ?silent, "no message from the server for a while; asking for a reply");
                    self.queue_status(true)?;
                    self.asked_for_reply = true;
                }
                let check_at = if self.asked_for_reply {
                    self.last_received_at + limit
                } else {
                    self.last_received_at + limit / 2
                };
                deadline = deadline.min(check_at);
            }
            tokio::select! {
                r = self.client.wire.drive() => r?,
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn handle(&mut self, m: Backend) -> Result<Option<StreamEvent>> {
        match m {
            Backend::Message(Message::CopyData(body)) => {
                let payload = body.into_bytes();
                match parse_server_frame(&payload)? {
                    ServerFrame::XLogData(x) => {
                        self.received = self.received.max(x.wal_start);
                        Ok(Some(StreamEvent::XLogData {
                            wal_start: x.wal_start,
                            wal_end: x.wal_end,
                            send_time: x.send_time,
                            data: x.data,
                        }))
                    }
                    ServerFrame::Keepalive(k) => {
                        if k.reply_requested {
                            self.queue_status(false)?;
                        }
                        Ok(Some(StreamEvent::Keepalive {
                            wal_end: k.wal_end,
                            send_time: k.send_time,
                            reply_requested: k.reply_requested,
                        }))
                    }
                }
            }
            Backend::Message(Message::CopyDone) => {
                tracing::info!("the server ended the replication stream");
                self.server_done = true;
                Ok(None)
            }
            // A walsender stopped by a fast shutdown may close the COPY with CommandComplete alone:
            // the stream is over all the same (the caller reconnects and resumes).
            Backend::Message(Message::CommandComplete(_) | Message::ReadyForQuery(_)) => {
                tracing::info!("the server ended the replication stream (shutting down)");
                self.server_done = true;
                Ok(None)
            }
            Backend::Message(Message::ErrorResponse(e)) => Err(ReplicationError::Server {
                command: "START_REPLICATION".into(),
                server: ServerError::from_fields(e.fields()),
            }),
            m @ Backend::Message(Message::ParameterStatus(_) | Message::NoticeResponse(_)) => {
                self.client.handle_async(m, "")?;
                Ok(None)
            }
            m => Err(ReplicationError::Protocol {
                reason: format!("unexpected {} during streaming", describe(&m)),
            }),
        }
    }

    /// Queues a status update with the stream's positions and restarts the status timer.
    fn queue_status(&mut self, reply_requested: bool) -> Result<()> {
        let update = StandbyStatusUpdate {
            write: self.received.max(self.flushed),
            flush: self.flushed,
            apply: self.flushed,
            client_time: PgTimestamp::now(),
            reply_requested,
        };
        self.queue_update(&update)
    }

    fn queue_update(&mut self, update: &StandbyStatusUpdate) -> Result<()> {
        if self.client_done {
            return Err(ReplicationError::InvalidArgument {
                what: "status update",
                reason: "the stream was already ended with CopyDone".into(),
            });
        }
        let mut payload = BytesMut::with_capacity(super::frames::STANDBY_STATUS_UPDATE_LEN);
        update.encode(&mut payload);
        frontend::CopyData::new(&payload[..])?.write(self.client.wire.out());
        self.next_status_at = Instant::now() + self.status_interval;
        tracing::trace!(write = %update.write, flush = %update.flush, reply = update.reply_requested, "standby status update");
        Ok(())
    }

    /// Sends a status update with explicit positions and waits until it is written. `flush` is taken as
    /// the caller's statement that everything before it is durable: it also raises the position later
    /// timer updates report (never lowers it).
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<()> {
        if self.client.broken {
            return Err(ReplicationError::Broken);
        }
        if flush > self.flushed {
            self.flushed = flush;
        }
        self.queue_update(&StandbyStatusUpdate {
            write,
            flush,
            apply,
            client_time: PgTimestamp::now(),
            reply_requested,
        })?;
        self.flush_writes().await
    }

    /// Sends a status update with the stream's positions now (e.g. right after
    /// [`set_flushed`](Self::set_flushed), to release WAL sooner).
    pub async fn send_status_now(&mut self) -> Result<()> {
        if self.client.broken {
            return Err(ReplicationError::Broken);
        }
        self.queue_status(false)?;
        self.flush_writes().await
    }

    /// Sends a status update if the status interval has passed since the last one. For callers that
    /// pause reading (back-pressure) and must still keep the server from timing out.
    pub async fn send_status_if_due(&mut self) -> Result<()> {
        if Instant::now() >= self.next_status_at {
            self.send_status_now().await
        } else if self.client.wire.has_pending_writes() {
            self.flush_writes().await
        } else {
            Ok(())
        }
    }

    async fn flush_writes(&mut self) -> Result<()> {
        let r = self.client.wire.flush().await;
        if r.is_err() {
            self.client.broken = true;
        }
        r
    }

    /// Ends streaming: sends a last status update (flush = [`flushed`](Self::flushed)), then CopyDone,
    /// drains what the server still sends (data after our CopyDone is discarded: it was not confirmed, so
    /// the server sends it again next time) and returns the client in command mode.
    pub async fn finish(mut self) -> Result<ReplicationClient> {
        if self.client.broken {
            return Err(ReplicationError::Broken);
        }
        if !self.client_done {
            self.queue_status(false)?;
            frontend::copy_done(self.client.wire.out());
            self.client_done = true;
        }
        self.flush_writes().await?;
        let mut discarded = 0usize;
        let mut error = None;
        loop {
            let m = match self.client.wire.read().await {
                Ok(m) => m,
                Err(e) => {
                    self.client.broken = true;
                    return Err(e);
                }
            };
            match m {
                Backend::Message(Message::CopyData(_)) => discarded += 1,
                Backend::Message(Message::CopyDone) => self.server_done = true,
                Backend::Message(Message::CommandComplete(_)) => {}
                Backend::Message(Message::ErrorResponse(e)) => {
                    error = Some(ServerError::from_fields(e.fields()))
                }
                Backend::Message(Message::ReadyForQuery(_)) => break,
                m => {
                    if let Err(e) = self.client.handle_async(m, "while ending the stream") {
                        self.client.broken = true;
                        return Err(e);
                    }
                }
            }
        }
        if discarded > 0 {
            tracing::debug!(discarded, "discarded unconfirmed messages after CopyDone");
        }
        tracing::info!(flushed = %self.flushed, "logical replication streaming ended");
        match error {
            Some(server) => Err(ReplicationError::Server {
                command: "CopyDone".into(),
                server,
            }),
            None => Ok(self.client),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The status-update policy against a scripted server over an in-memory pipe, on tokio's paused
    //! clock so timers are exact and instant.

    use super::*;
    use crate::conn::Transport;
    use bytes::BufMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    struct FakeServer(DuplexStream);

    impl FakeServer {
        async fn send(&mut self, tag: u8, body: &[u8]) {
            let mut m = vec![tag];
            m.put_u32(body.len() as u32 + 4);
            m.extend_from_slice(body);
            self.0.write_all(&m).await.unwrap();
        }

        async fn keepalive(&mut self, wal_end: u64, reply: bool) {
            let mut f = vec![b'k'];
            f.put_u64(wal_end);
            f.put_i64(0);
            f.put_u8(u8::from(reply));
            self.send(b'd', &f).await;
        }

        async fn xlog(&mut self, wal_start: u64, data: &[u8]) {
            let mut f = vec![b'w'];
            f.put_u64(wal_start);
            f.put_u64(wal_start + 100);
            f.put_i64(0);
            f.extend_from_slice(data);
            self.send(b'd', &f).await;
        }

        /// The next frontend message: (tag, body).
        async fn recv(&mut self) -> (u8, Vec<u8>) {
            let tag = self.0.read_u8().await.unwrap();
            let len = self.0.read_u32().await.unwrap() as usize;
            let mut body = vec![0; len - 4];
            self.0.read_exact(&mut body).await.unwrap();
            (tag, body)
        }

        async fn recv_status(&mut self) -> StandbyStatusUpdate {
            let (tag, body) = self.recv().await;
            assert_eq!(tag, b'd', "expected CopyData");
            StandbyStatusUpdate::parse(&body).unwrap()
        }
    }

    fn pair() -> (ReplicationStream, FakeServer) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let client = ReplicationClient::for_tests(Transport::new(Box::new(a), "fake".into(), None));
        (ReplicationStream::new(client, Lsn::INVALID), FakeServer(b))
    }

    #[tokio::test(start_paused = true)]
    async fn a_requested_reply_goes_out_at_once_with_the_declared_flush_only() {
        let (mut stream, mut server) = pair();
        server.xlog(500, b"data").await;
        assert!(matches!(
            stream.next().await.unwrap(),
            Some(StreamEvent::XLogData { .. })
        ));
        stream.set_flushed(Lsn(300));
        server.keepalive(900, true).await;
        let ev = stream.next().await.unwrap().unwrap();
        assert_eq!(
            ev,
            StreamEvent::Keepalive {
                wal_end: Lsn(900),
                send_time: PgTimestamp(0),
                reply_requested: true
            }
        );
        // Written before `next` returned: the server has it without another call.
        let s = server.recv_status().await;
        assert_eq!((s.write, s.flush, s.apply), (Lsn(500), Lsn(300), Lsn(300)));
        assert!(!s.reply_requested);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_reports_nothing_before_set_flushed_and_exactly_it_after() {
        let (mut stream, mut server) = pair();
        server.xlog(1000, b"x").await;
        assert!(matches!(
            stream.next().await.unwrap(),
            Some(StreamEvent::XLogData { .. })
        ));
        // Nothing arrives; `next` waits, and the timer fires after the status interval.
        let reader = tokio::spawn(async move {
            let s = server.recv_status().await;
            (server, s, Instant::now())
        });
        let started = Instant::now();
        let waited = tokio::time::timeout(Duration::from_secs(11), stream.next()).await;
        assert!(waited.is_err(), "no event expected");
        let (mut server, s, at) = reader.await.unwrap();
        assert_eq!(at - started, DEFAULT_STATUS_INTERVAL);
        assert_eq!(s.flush, Lsn::INVALID, "nothing was declared durable");
        assert_eq!(s.write, Lsn(1000));

        stream.set_flushed(Lsn(700));
        let waited = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        assert!(waited.is_err());
        let s = server.recv_status().await;
        assert_eq!((s.write, s.flush, s.apply), (Lsn(1000), Lsn(700), Lsn(700)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_asked_for_a_reply_then_given_up_on() {
        let (mut stream, mut server) = pair();
        stream.set_status_interval(Duration::from_secs(3600));
        let started = Instant::now();
        let reader = tokio::spawn(async move {
            let s = server.recv_status().await;
            (server, s, Instant::now())
        });
        let err = stream.next().await.unwrap_err();
        assert!(
            matches!(err, ReplicationError::ServerSilent { .. }),
            "{err}"
        );
        assert_eq!(Instant::now() - started, DEFAULT_RECEIVE_TIMEOUT);
        let (_server, s, at) = reader.await.unwrap();
        assert!(s.reply_requested);
        assert_eq!(at - started, DEFAULT_RECEIVE_TIMEOUT / 2);
        // The stream is unusable after an error.
        assert!(matches!(stream.next().await, Err(ReplicationError::Broken)));
    }

    #[tokio::test(start_paused = true)]
    async fn finish_sends_the_last_flush_then_copy_done_and_returns_the_client() {
        let (mut stream, mut server) = pair();
        stream.set_flushed(Lsn(42));
        let server_task = tokio::spawn(async move {
            let s = server.recv_status().await;
            assert_eq!(s.flush, Lsn(42));
            assert_eq!(server.recv().await.0, b'c');
            // Data still in flight is discarded by the client.
            server.xlog(50, b"late").await;
            server.send(b'c', b"").await;
            server.send(b'C', b"START_REPLICATION\0").await;
            server.send(b'Z', b"I").await;
            server
        });
        let client = stream.finish().await.unwrap();
        assert!(!client.broken);
        server_task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_and_bad_frames_are_typed() {
        let (mut stream, mut server) = pair();
        server.send(b'd', b"k\0\0").await;
        assert!(matches!(
            stream.next().await,
            Err(ReplicationError::Frame(_))
        ));

        let (mut stream, mut server) = pair();
        server
            .send(
                b'E',
                b"SERROR\0VERROR\0C42704\0Mpublication \"p\" does not exist\0\0",
            )
            .await;
        let err = stream.next().await.unwrap_err();
        assert_eq!(err.sqlstate(), Some("42704"));
        assert!(err.to_string().contains("publication \"p\" does not exist"));

        let (mut stream, server) = pair();
        drop(server);
        assert!(matches!(stream.next().await, Err(ReplicationError::Closed)));
    }
}
