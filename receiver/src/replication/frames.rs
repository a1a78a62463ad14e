//! The frames carried inside CopyData messages once `START_REPLICATION` has switched the connection into
//! CopyBoth mode. Pure functions, no I/O: bytes in, typed frames out (and the one frame we send, bytes
//! out), so they can be property-tested and fuzzed on their own.
//!
//! ```text
//! server -> client   'w' XLogData          walStart u64 | walEnd u64 | sendTime i64 | data ...
//! server -> client   'k' primary keepalive walEnd u64  | sendTime i64 | replyRequested u8
//! client -> server   'r' standby status    write u64 | flush u64 | apply u64 | clientTime i64 | replyRequested u8
//! ```
//!
//! All integers are big-endian; times are microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL's
//! epoch). The server is untrusted input (DESIGN.md rule 6): every length and tag is checked, a bad frame
//! is a [`FrameError`], and nothing here can panic or allocate more than the frame it was given (the data
//! of an XLogData frame is a zero-copy slice of the message).

use bytes::{BufMut, Bytes, BytesMut};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::lsn::Lsn;

/// Tag of an XLogData frame.
pub const XLOG_DATA_TAG: u8 = b'w';
/// Tag of a primary keepalive frame.
pub const PRIMARY_KEEPALIVE_TAG: u8 = b'k';
/// Tag of a standby status update frame.
pub const STANDBY_STATUS_UPDATE_TAG: u8 = b'r';

/// Bytes before the data of an XLogData frame: tag + walStart + walEnd + sendTime.
pub const XLOG_DATA_HEADER_LEN: usize = 1 + 8 + 8 + 8;
/// Exact length of a primary keepalive frame.
pub const PRIMARY_KEEPALIVE_LEN: usize = 1 + 8 + 8 + 1;
/// Exact length of a standby status update frame.
pub const STANDBY_STATUS_UPDATE_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

/// Seconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// A timestamp as the replication protocol carries it: microseconds since 2000-01-01 00:00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Microseconds since PostgreSQL's epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// The current time of this machine's clock.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts, saturating at the ends of the `i64` range.
    pub fn from_system_time(t: SystemTime) -> Self {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        match t.duration_since(pg_epoch) {
            Ok(d) => PgTimestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(before) => PgTimestamp(
                i64::try_from(before.duration().as_micros())
                    .map(|m| -m)
                    .unwrap_or(i64::MIN),
            ),
        }
    }

    /// Converts to the system clock's type; `None` if the value does not fit it.
    pub fn to_system_time(self) -> Option<SystemTime> {
        let pg_epoch = UNIX_EPOCH.checked_add(Duration::from_secs(PG_EPOCH_UNIX_SECS))?;
        if self.0 >= 0 {
            pg_epoch.checked_add(Duration::from_micros(self.0.unsigned_abs()))
        } else {
            pg_epoch.checked_sub(Duration::from_micros(self.0.unsigned_abs()))
        }
    }
}

/// A frame the server sends inside CopyData during logical streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// WAL data: for logical replication, one message of the output plugin.
    XLogData(XLogData),
    /// The server's heartbeat; it may ask for an immediate status update.
    Keepalive(PrimaryKeepalive),
}

/// An XLogData frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// Start of the WAL this data came from (for logical decoding: the LSN of the change, 0/0 for some
    /// messages such as BEGIN in older servers; do not treat it as an event id).
    pub wal_start: Lsn,
    /// The server's current end of WAL at the time of sending.
    pub wal_end: Lsn,
    /// The server's clock when sending.
    pub send_time: PgTimestamp,
    /// The payload (the output plugin's message), a zero-copy slice of the CopyData message.
    pub data: Bytes,
}

/// A primary keepalive frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    /// The server's clock when sending.
    pub send_time: PgTimestamp,
    /// The server asks for a status update now; it will disconnect after `wal_sender_timeout` without one.
    pub reply_requested: bool,
}

/// The standby status update we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// Last WAL position received (informational for logical replication).
    pub write: Lsn,
    /// Last WAL position durable on our side: the server advances the slot's `confirmed_flush_lsn` to it
    /// and may then recycle the WAL before it. See DESIGN.md rule 1.
    pub flush: Lsn,
    /// Last WAL position applied (we report the flush position).
    pub apply: Lsn,
    /// Our clock when sending.
    pub client_time: PgTimestamp,
    /// Ask the server to answer at once with a keepalive (used to check the server is still there).
    pub reply_requested: bool,
}

/// Why a CopyData payload is not a valid replication frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The CopyData message carried no bytes at all.
    #[error("empty CopyData message in the replication stream")]
    Empty,
    /// The first byte is not a frame this client knows.
    #[error("unknown replication frame tag 0x{tag:02x} ({len} bytes): the server speaks a protocol this client does not know; upgrade fig-receiver")]
    UnknownTag {
        /// The tag byte.
        tag: u8,
        /// Length of the whole frame.
        len: usize,
    },
    /// The frame is shorter than its fixed part.
    #[error("truncated {kind} frame: {len} bytes, at least {need} needed")]
    Truncated {
        /// Which frame.
        kind: &'static str,
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The frame is longer than its fixed size.
    #[error("{kind} frame has {len} bytes, exactly {expected} expected")]
    WrongLength {
        /// Which frame.
        kind: &'static str,
        /// Bytes present.
        len: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// A boolean byte other than 0 or 1.
    #[error("{kind} frame has a reply-requested byte of {value}, 0 or 1 expected")]
    BadBool {
        /// Which frame.
        kind: &'static str,
        /// The byte.
        value: u8,
    },
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn parse_bool(kind: &'static str, value: u8) -> Result<bool, FrameError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(FrameError::BadBool { kind, value }),
    }
}

/// Parses the payload of one CopyData message received in CopyBoth mode.
///
/// `payload` is the whole CopyData body (tag byte included); the XLogData data is sliced out of it
/// without copying.
pub fn parse_server_frame(payload: &Bytes) -> Result<ServerFrame, FrameError> {
    let len = payload.len();
    let Some(&tag) = payload.first() else {
        return Err(FrameError::Empty);
    };
    match tag {
        XLOG_DATA_TAG => {
            if len < XLOG_DATA_HEADER_LEN {
                return Err(FrameError::Truncated {
                    kind: "XLogData",
                    len,
                    need: XLOG_DATA_HEADER_LEN,
                });
            }
            Ok(ServerFrame::XLogData(XLogData {
                wal_start: Lsn(be_u64(payload, 1)),
                wal_end: Lsn(be_u64(payload, 9)),
                send_time: PgTimestamp(be_i64(payload, 17)),
                data: payload.slice(XLOG_DATA_HEADER_LEN..),
            }))
        }
        PRIMARY_KEEPALIVE_TAG => {
            const KIND: &str = "primary keepalive";
            if len < PRIMARY_KEEPALIVE_LEN {
                return Err(FrameError::Truncated {
                    kind: KIND,
                    len,
                    need: PRIMARY_KEEPALIVE_LEN,
                });
            }
            if len > PRIMARY_KEEPALIVE_LEN {
                return Err(FrameError::WrongLength {
                    kind: KIND,
                    len,
                    expected: PRIMARY_KEEPALIVE_LEN,
                });
            }
            Ok(ServerFrame::Keepalive(PrimaryKeepalive {
                wal_end: Lsn(be_u64(payload, 1)),
                send_time: PgTimestamp(be_i64(payload, 9)),
                reply_requested: parse_bool(KIND, payload[17])?,
            }))
        }
        tag => Err(FrameError::UnknownTag { tag, len }),
    }
}

impl StandbyStatusUpdate {
    /// Appends the frame (the CopyData payload, not the CopyData envelope) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(STANDBY_STATUS_UPDATE_LEN);
        out.put_u8(STANDBY_STATUS_UPDATE_TAG);
        out.put_u64(self.write.0);
        out.put_u64(self.flush.0);
        out.put_u64(self.apply.0);
        out.put_i64(self.client_time.0);
        out.put_u8(u8::from(self.reply_requested));
    }

    /// The frame as bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(STANDBY_STATUS_UPDATE_LEN);
        self.encode(&mut out);
        out.freeze()
    }

    /// Parses a status update (the inverse of [`encode`](Self::encode); used by tests and tools that
    /// play the server's side).
    pub fn parse(payload: &[u8]) -> Result<Self, FrameError> {
        const KIND: &str = "standby status update";
        let len = payload.len();
        match payload.first() {
            None => return Err(FrameError::Empty),
            Some(&STANDBY_STATUS_UPDATE_TAG) => {}
            Some(&tag) => return Err(FrameError::UnknownTag { tag, len }),
        }
        if len < STANDBY_STATUS_UPDATE_LEN {
            return Err(FrameError::Truncated {
                kind: KIND,
                len,
                need: STANDBY_STATUS_UPDATE_LEN,
            });
        }
        if len > STANDBY_STATUS_UPDATE_LEN {
            return Err(FrameError::WrongLength {
                kind: KIND,
                len,
                expected: STANDBY_STATUS_UPDATE_LEN,
            });
        }
        Ok(StandbyStatusUpdate {
            write: Lsn(be_u64(payload, 1)),
            flush: Lsn(be_u64(payload, 9)),
            apply: Lsn(be_u64(payload, 17)),
            client_time: PgTimestamp(be_i64(payload, 25)),
            reply_requested: parse_bool(KIND, payload[33])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn xlog(wal_start: u64, wal_end: u64, t: i64, data: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'w');
        b.put_u64(wal_start);
        b.put_u64(wal_end);
        b.put_i64(t);
        b.put_slice(data);
        b.freeze()
    }

    fn keepalive(wal_end: u64, t: i64, reply: u8) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'k');
        b.put_u64(wal_end);
        b.put_i64(t);
        b.put_u8(reply);
        b.freeze()
    }

    #[test]
    fn parses_xlog_data() {
        let f = parse_server_frame(&xlog(0x1_0000_0010, 0x1_0000_0020, 42, b"BEGIN 734")).unwrap();
        assert_eq!(
            f,
            ServerFrame::XLogData(XLogData {
                wal_start: Lsn(0x1_0000_0010),
                wal_end: Lsn(0x1_0000_0020),
                send_time: PgTimestamp(42),
                data: Bytes::from_static(b"BEGIN 734"),
            })
        );
    }

    #[test]
    fn parses_xlog_data_with_empty_payload() {
        let ServerFrame::XLogData(x) = parse_server_frame(&xlog(1, 2, 3, b"")).unwrap() else {
            panic!("expected XLogData");
        };
        assert!(x.data.is_empty());
    }

    #[test]
    fn parses_keepalive() {
        let f = parse_server_frame(&keepalive(7, -5, 1)).unwrap();
        assert_eq!(
            f,
            ServerFrame::Keepalive(PrimaryKeepalive {
                wal_end: Lsn(7),
                send_time: PgTimestamp(-5),
                reply_requested: true,
            })
        );
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(parse_server_frame(&Bytes::new()), Err(FrameError::Empty));
        assert!(matches!(
            parse_server_frame(&Bytes::from_static(b"x123")),
            Err(FrameError::UnknownTag { tag: b'x', len: 4 })
        ));
        let k = keepalive(1, 2, 0);
        assert!(matches!(
            parse_server_frame(&k.slice(..17)),
            Err(FrameError::Truncated {
                need: 18,
                len: 17,
                ..
            })
        ));
        let mut long = BytesMut::from(&k[..]);
        long.put_u8(0);
        assert!(matches!(
            parse_server_frame(&long.freeze()),
            Err(FrameError::WrongLength { len: 19, .. })
        ));
        assert!(matches!(
            parse_server_frame(&keepalive(1, 2, 2)),
            Err(FrameError::BadBool { value: 2, .. })
        ));
        let x = xlog(1, 2, 3, b"");
        assert!(matches!(
            parse_server_frame(&x.slice(..24)),
            Err(FrameError::Truncated { need: 25, .. })
        ));
    }

    #[test]
    fn encodes_status_update_byte_for_byte() {
        let s = StandbyStatusUpdate {
            write: Lsn(0x0102030405060708),
            flush: Lsn(0x1112131415161718),
            apply: Lsn(0x2122232425262728),
            client_time: PgTimestamp(0x3132333435363738),
            reply_requested: true,
        };
        let b = s.to_bytes();
        let mut want = vec![b'r'];
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(&[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        want.extend_from_slice(&[0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28]);
        want.extend_from_slice(&[0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38]);
        want.push(1);
        assert_eq!(&b[..], &want[..]);
        assert_eq!(b.len(), STANDBY_STATUS_UPDATE_LEN);
    }

    #[test]
    fn pg_epoch_conversions() {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        assert_eq!(PgTimestamp::from_system_time(pg_epoch), PgTimestamp(0));
        assert_eq!(PgTimestamp(0).to_system_time(), Some(pg_epoch));
        assert_eq!(
            PgTimestamp::from_system_time(UNIX_EPOCH),
            PgTimestamp(-(PG_EPOCH_UNIX_SECS as i64) * 1_000_000)
        );
        assert!(PgTimestamp::now().0 > 0);
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_server_frame(&Bytes::from(data.clone()));
            let _ = StandbyStatusUpdate::parse(&data);
        }

        #[test]
        fn tagged_random_bytes_never_panic(tag in prop_oneof![Just(b'w'), Just(b'k'), Just(b'r')],
                                           rest in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut v = vec![tag];
            v.extend_from_slice(&rest);
            let _ = parse_server_frame(&Bytes::from(v.clone()));
            let _ = StandbyStatusUpdate::parse(&v);
        }

        #[test]
        fn xlog_data_round_trips(s in any::<u64>(), e in any::<u64>(), t in any::<i64>(),
                                 data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let frame = xlog(s, e, t, &data);
            let ServerFrame::XLogData(x) = parse_server_frame(&frame).unwrap() else {
                return Err(TestCaseError::fail("expected XLogData"));
            };
            prop_assert_eq!(x.wal_start, Lsn(s));
            prop_assert_eq!(x.wal_end, Lsn(e));
            prop_assert_eq!(x.send_time, PgTimestamp(t));
            prop_assert_eq!(&x.data[..], &data[..]);
        }

        #[test]
        fn every_truncation_is_an_error(e in any::<u64>(), t in any::<i64>(), r in 0u8..2, cut in 0usize..18) {
            let k = keepalive(e, t, r);
            prop_assert!(parse_server_frame(&k.slice(..cut)).is_err());
            let x = xlog(e, e, t, b"");
            prop_assert!(parse_server_frame(&x.slice(..cut.min(24))).is_err());
        }

        #[test]
        fn keepalive_round_trips(e in any::<u64>(), t in any::<i64>(), r in any::<bool>()) {
            let f = parse_server_frame(&keepalive(e, t, u8::from(r))).unwrap();
            prop_assert_eq!(f, ServerFrame::Keepalive(PrimaryKeepalive {
                wal_end: Lsn(e), send_time: PgTimestamp(t), reply_requested: r,
            }));
        }

        #[test]
        fn status_update_round_trips(w in any::<u64>(), f in any::<u64>(), a in any::<u64>(),
                                     t in any::<i64>(), r in any::<bool>(), cut in 0usize..34) {
            let s = StandbyStatusUpdate {
                write: Lsn(w), flush: Lsn(f), apply: Lsn(a), client_time: PgTimestamp(t), reply_requested: r,
            };
            let b = s.to_bytes();
            prop_assert_eq!(StandbyStatusUpdate::parse(&b).unwrap(), s);
            prop_assert!(StandbyStatusUpdate::parse(&b[..cut]).is_err());
        }

        #[test]
        fn timestamps_round_trip(m in -(1i64 << 50)..(1i64 << 50)) {
            let t = PgTimestamp(m);
            prop_assert_eq!(PgTimestamp::from_system_time(t.to_system_time().unwrap()), t);
        }
    }
}
