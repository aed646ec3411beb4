//! Every message the service and its clients exchange, and their encoding.
//!
//! A message on the socket is a frame:
//!
//! ```text
//! +----------------+----------------+----------------+------------------------------+
//! | length (u32)   | tag (u16)      | fds (u16)      | body (length bytes)          |
//! +----------------+----------------+----------------+------------------------------+
//!   little-endian; `length` counts the body only and is capped at MAX_MESSAGE.
//! ```
//!
//! `fds` is how many fds travel with the frame (`SCM_RIGHTS` on the `sendmsg` that carries
//! the frame's first byte); the receiver takes exactly that many from the fds it received,
//! in order. The first client message is [`Hello`] with its protocol version; a service of
//! another version answers with an error of reason [`DisconnectReason::VersionMismatch`].
//!
//! Client to service: [`ClientMsg`]. Service to client: [`ServerMsg`].

use bytes::{Buf, BufMut};

use crate::record::{BlindInfo, BlindReason, EventKind, FileEvent, GapInfo, GapReason, Loss};
use crate::ring::Policy;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 6;
/// The largest frame body either side accepts.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Bytes before a frame's body.
pub const FRAME_PREFIX: usize = 8;
/// Longest string field (client names, globs, details).
pub const MAX_STRING: usize = 4096;
/// Most rows in one `Rows` message.
pub const MAX_ROWS: usize = 4096;

/// A message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body ended before the message did.
    #[error("message truncated")]
    Truncated,
    /// Bytes were left over after the message.
    #[error("{0} bytes left over after the message")]
    Trailing(usize),
    /// Unknown message tag.
    #[error("unknown message tag {0}")]
    Tag(u16),
    /// A field holds a value it cannot hold.
    #[error("bad value in field {0}")]
    Value(&'static str),
    /// A length over the cap.
    #[error("length {len} over the limit of {max}")]
    TooLarge {
        /// The length announced.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The frame announces a number of fds other than its message carries, or fds are
    /// missing.
    #[error("frame announces {announced} fds, message needs {needed}, {available} received")]
    Fds {
        /// In the frame prefix.
        announced: usize,
        /// What the message type carries.
        needed: usize,
        /// What arrived.
        available: usize,
    },
}

/// Encoding and decoding of one wire type. `decode` reads exactly the type's bytes from the
/// front of `buf`.
pub trait Codec: Sized {
    /// Appends the encoding of `self`.
    fn encode<B: BufMut>(&self, out: &mut B);
    /// Decodes from the front of `buf`.
    ///
    /// # Errors
    /// [`DecodeError`] for truncated or invalid bytes.
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError>;
}

fn need<B: Buf>(buf: &B, n: usize) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        Err(DecodeError::Truncated)
    } else {
        Ok(())
    }
}

macro_rules! int_codec {
    ($t:ty, $put:ident, $get:ident) => {
        impl Codec for $t {
            fn encode<B: BufMut>(&self, out: &mut B) {
                out.$put(*self);
            }
            fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
                need(buf, std::mem::size_of::<$t>())?;
                Ok(buf.$get())
            }
        }
    };
}
int_codec!(u8, put_u8, get_u8);
int_codec!(u16, put_u16_le, get_u16_le);
int_codec!(u32, put_u32_le, get_u32_le);
int_codec!(u64, put_u64_le, get_u64_le);

impl Codec for bool {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u8(u8::from(*self));
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        match u8::decode(buf)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Value("bool")),
        }
    }
}

impl Codec for Vec<u8> {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u32_le(self.len() as u32);
        out.put_slice(self);
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        let len = u32::decode(buf)? as usize;
        if len > MAX_MESSAGE {
            return Err(DecodeError::TooLarge {
                len,
                max: MAX_MESSAGE,
            });
        }
        need(buf, len)?;
        let mut v = vec![0; len];
        buf.copy_to_slice(&mut v);
        Ok(v)
    }
}

impl Codec for String {
    fn encode<B: BufMut>(&self, out: &mut B) {
        // Cut at a character boundary: a cut inside one would not decode as UTF-8.
        let b = self.as_bytes();
        let mut n = b.len().min(MAX_STRING);
        while !self.is_char_boundary(n) {
            n -= 1;
        }
        let b = &b[..n];
        out.put_u32_le(b.len() as u32);
        out.put_slice(b);
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        let len = u32::decode(buf)? as usize;
        if len > MAX_STRING {
            return Err(DecodeError::TooLarge {
                len,
                max: MAX_STRING,
            });
        }
        need(buf, len)?;
        let mut v = vec![0; len];
        buf.copy_to_slice(&mut v);
        String::from_utf8(v).map_err(|_| DecodeError::Value("utf-8 string"))
    }
}

impl<T: Codec> Codec for Option<T> {
    fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            None => out.put_u8(0),
            Some(v) => {
                out.put_u8(1);
                v.encode(out);
            }
        }
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        Ok(if bool::decode(buf)? {
            Some(T::decode(buf)?)
        } else {
            None
        })
    }
}

/// Encodes a list with a u32 count, refusing more than `max` on decode.
fn encode_list<B: BufMut, T: Codec>(items: &[T], out: &mut B) {
    out.put_u32_le(items.len() as u32);
    for i in items {
        i.encode(out);
    }
}

fn decode_list<B: Buf, T: Codec>(buf: &mut B, max: usize) -> Result<Vec<T>, DecodeError> {
    let n = u32::decode(buf)? as usize;
    if n > max {
        return Err(DecodeError::TooLarge { len: n, max });
    }
    // Each item takes at least one byte: a count beyond the bytes left is a lie.
    if n > buf.remaining() {
        return Err(DecodeError::Truncated);
    }
    (0..n).map(|_| T::decode(buf)).collect()
}

impl Codec for Policy {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u8(match self {
            Policy::Lossless => 1,
            Policy::Lagging => 2,
        });
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        match u8::decode(buf)? {
            1 => Ok(Policy::Lossless),
            2 => Ok(Policy::Lagging),
            _ => Err(DecodeError::Value("policy")),
        }
    }
}

/// Where a new reader wants to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// At the live head.
    Now,
    /// After `seq - 1`: the records from `seq` to the live head come from history.
    Seq(u64),
}

impl Codec for StartAt {
    fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            StartAt::Now => out.put_u8(0),
            StartAt::Seq(s) => {
                out.put_u8(1);
                out.put_u64_le(*s);
            }
        }
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        match u8::decode(buf)? {
            0 => Ok(StartAt::Now),
            1 => Ok(StartAt::Seq(u64::decode(buf)?)),
            _ => Err(DecodeError::Value("start")),
        }
    }
}

/// Why a connection ends. Every disconnect carries one, so a client can act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DisconnectReason {
    /// A lossless reader did not keep up and was cut off: reconnect (perhaps lagging).
    TooSlow = 1,
    /// The service has no room for another reader (or another lossless one): try later.
    Busy = 2,
    /// The service is shutting down.
    ShuttingDown = 3,
    /// This peer is not allowed (uid or gid not on the allow-list, or lossless refused).
    NotAllowed = 4,
    /// The peer sent something that is not the protocol.
    ProtocolError = 5,
    /// The peers speak different protocol versions.
    VersionMismatch = 6,
    /// The other side said goodbye.
    Bye = 7,
    /// The connection ended without a word (the process died).
    Gone = 8,
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DisconnectReason::TooSlow => "too slow: a lossless reader that stalls is cut off",
            DisconnectReason::Busy => "busy: no room for another reader",
            DisconnectReason::ShuttingDown => "the service is shutting down",
            DisconnectReason::NotAllowed => "not allowed",
            DisconnectReason::ProtocolError => "protocol error",
            DisconnectReason::VersionMismatch => "protocol version mismatch",
            DisconnectReason::Bye => "closed by the peer",
            DisconnectReason::Gone => "the peer is gone",
        })
    }
}

impl Codec for DisconnectReason {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u8(*self as u8);
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        Ok(match u8::decode(buf)? {
            1 => DisconnectReason::TooSlow,
            2 => DisconnectReason::Busy,
            3 => DisconnectReason::ShuttingDown,
            4 => DisconnectReason::NotAllowed,
            5 => DisconnectReason::ProtocolError,
            6 => DisconnectReason::VersionMismatch,
            7 => DisconnectReason::Bye,
            8 => DisconnectReason::Gone,
            _ => return Err(DecodeError::Value("disconnect reason")),
        })
    }
}

/// The first message of a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the client speaks.
    pub version: u16,
    /// A name for status listings ("firehose view", "my-gui").
    pub name: String,
    /// How it wants to read the ring.
    pub policy: Policy,
    /// Where it wants to start.
    pub start: StartAt,
}

/// The service's answer to [`Hello`]; carries the ring, cursor-page and wake fds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The protocol version the service speaks.
    pub version: u16,
    /// The reader's id on the service's side.
    pub reader_id: u64,
    /// The policy granted.
    pub policy: Policy,
    /// Ring capacity in bytes.
    pub capacity: u64,
    /// Segment epoch of the ring fd.
    pub epoch: u64,
    /// The history database's instance id: a resume from another instance is refused.
    pub instance_id: [u8; 16],
    /// Oldest seq history still holds.
    pub first_available: u64,
    /// Newest seq history has committed.
    pub last_committed: u64,
    /// Ring position the reader starts at.
    pub start_pos: u64,
    /// Seq of the first record at `start_pos`.
    pub start_seq: u64,
}

/// A history query: every field narrows it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HistoryQuery {
    /// Chosen by the client; echoed on every answer.
    pub id: u64,
    /// Inclusive seq range.
    pub seq: Option<(u64, u64)>,
    /// Inclusive time range, ns since the epoch.
    pub time_ns: Option<(u64, u64)>,
    /// Path glob.
    pub glob: Option<String>,
    /// Bit `1 << kind as u8` per wanted [`EventKind`]; zero: all.
    pub kinds: u32,
    /// Most rows to return; zero: no limit.
    pub limit: u64,
}

/// How a query ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryEnd {
    /// Every matching row was sent.
    Complete,
    /// The limit was reached.
    Limit,
    /// History does not reach back to the start of the range.
    Truncated {
        /// Oldest seq history holds.
        oldest: u64,
    },
    /// This service has no history.
    Unavailable,
    /// The query was invalid (a bad glob).
    Invalid,
}

/// One reader, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderStatus {
    /// Its id.
    pub id: u64,
    /// Peer pid.
    pub pid: u32,
    /// Peer uid.
    pub uid: u32,
    /// Name from its hello.
    pub name: String,
    /// Its policy.
    pub policy: Policy,
    /// How far behind the write cursor it is, in bytes.
    pub lag_bytes: u64,
}

/// The service's status.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Status {
    /// Service pid.
    pub pid: u32,
    /// Uptime in milliseconds.
    pub uptime_ms: u64,
    /// Watched roots.
    pub roots: Vec<String>,
    /// Active rules.
    pub rules: u32,
    /// Records published per second (recent).
    pub rate_per_s: u64,
    /// Ring capacity in bytes.
    pub ring_capacity: u64,
    /// Bytes between the slowest lossless reader and the write cursor.
    pub ring_fill: u64,
    /// Current segment epoch.
    pub epoch: u64,
    /// Next seq.
    pub next_seq: u64,
    /// Connected readers.
    pub readers: Vec<ReaderStatus>,
    /// Rows in history.
    pub history_rows: u64,
    /// "ok", or every problem in words: storage, the seq lease, unwatched directories,
    /// roots gone, a rejected filter reload.
    pub health: String,
    /// Records per second averaged over the last minute.
    pub rate_per_min: u64,
    /// Directories under the roots that are not watched (the inotify watch limit), at most
    /// [`Status::UNWATCHED_LISTED`] of them; `unwatched_count` says how many there are.
    pub unwatched: Vec<String>,
    /// How many directories are not watched.
    pub unwatched_count: u64,
    /// Roots that are gone (deleted or unmounted), watched again when they come back.
    pub roots_gone: Vec<String>,
    /// The history database's size in bytes (its pages; the WAL not included).
    pub history_bytes: u64,
    /// Rows the history writer committed per second (recent).
    pub history_rows_per_s: u64,
    /// "ok", or why storing is degraded (a full disk, a read-only database, ...).
    pub storage: String,
    /// What was lost or held back, and where.
    pub counters: StatusCounters,
    /// How many readers are connected (`readers` lists at most [`Status::READERS_LISTED`]
    /// of them, the ones furthest behind first, when there are more).
    pub readers_total: u64,
    /// The watcher's backend and its state in words: `fanotify: 2 filesystems marked; ...`,
    /// or `inotify` and why not fanotify.
    pub backend: String,
}

impl Status {
    /// At most this many unwatched directories are listed.
    pub const UNWATCHED_LISTED: usize = 64;
    /// At most this many readers are listed.
    pub const READERS_LISTED: usize = 512;
    /// A reader's name is listed up to this many bytes.
    pub const NAME_LISTED: usize = 128;
    /// Roots (and roots gone) are listed up to this many.
    pub const ROOTS_LISTED: usize = 256;

    /// Trims the lists so that the encoded status stays under [`MAX_MESSAGE`] however many
    /// readers with whatever names are connected: names are cut to [`Status::NAME_LISTED`]
    /// bytes, readers to [`Status::READERS_LISTED`] (the furthest behind kept;
    /// `readers_total` keeps the count), roots to [`Status::ROOTS_LISTED`].
    pub fn fit(&mut self) {
        self.readers_total = self.readers_total.max(self.readers.len() as u64);
        for r in &mut self.readers {
            if r.name.len() > Self::NAME_LISTED {
                let mut n = Self::NAME_LISTED;
                while !r.name.is_char_boundary(n) {
                    n -= 1;
                }
                r.name.truncate(n);
            }
        }
        if self.readers.len() > Self::READERS_LISTED {
            self.readers.sort_by_key(|r| std::cmp::Reverse(r.lag_bytes));
            self.readers.truncate(Self::READERS_LISTED);
        }
        self.roots.truncate(Self::ROOTS_LISTED);
        self.roots_gone.truncate(Self::ROOTS_LISTED);
        self.unwatched.truncate(Self::UNWATCHED_LISTED);
        // Every list is now bounded: at most (512 readers x ~170 B) + (2 x 256 + 64 paths
        // x 4 KiB) + 4 strings x 4 KiB, about 2.5 MiB in the worst case, so cut paths too
        // while it is over (each string is encoded at most MAX_STRING bytes).
        let mut room = MAX_MESSAGE - 4096;
        let fixed = 512 + 4 * MAX_STRING + self.readers.len() * (64 + Self::NAME_LISTED);
        room = room.saturating_sub(fixed);
        let lists: [&mut Vec<String>; 3] =
            [&mut self.roots, &mut self.roots_gone, &mut self.unwatched];
        for list in lists {
            let mut used = 0;
            let keep = list
                .iter()
                .take_while(|p| {
                    used += 4 + p.len().min(MAX_STRING);
                    used <= room / 3
                })
                .count();
            list.truncate(keep);
        }
    }
}

/// The service's counters since it started: nothing is dropped without one of these
/// moving.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StatusCounters {
    /// Records published since start.
    pub records: u64,
    /// Kernel or watcher queue overflows (each is an `overflow` record).
    pub overflows: u64,
    /// Records that could not be stored (a failing database): gap records `not_stored`.
    pub not_stored: u64,
    /// Records not streamed into the ring: gap records `not_streamed`.
    pub not_streamed: u64,
    /// Records the history writer's queue could not take: gap records `writer_overflow`.
    pub writer_overflowed: u64,
    /// Rows removed by retention: gap records `retention`.
    pub retention_removed: u64,
    /// Times publishing waited at the end of the seq lease.
    pub lease_blocked: u64,
    /// Lossless readers cut off for being too slow (they continue as lagging readers).
    pub cut_off: u64,
    /// Departed lossless readers left behind by a rotation.
    pub left_behind: u64,
}

impl Codec for StatusCounters {
    fn encode<B: BufMut>(&self, out: &mut B) {
        for v in [
            self.records,
            self.overflows,
            self.not_stored,
            self.not_streamed,
            self.writer_overflowed,
            self.retention_removed,
            self.lease_blocked,
            self.cut_off,
            self.left_behind,
        ] {
            v.encode(out);
        }
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        Ok(StatusCounters {
            records: u64::decode(buf)?,
            overflows: u64::decode(buf)?,
            not_stored: u64::decode(buf)?,
            not_streamed: u64::decode(buf)?,
            writer_overflowed: u64::decode(buf)?,
            retention_removed: u64::decode(buf)?,
            lease_blocked: u64::decode(buf)?,
            cut_off: u64::decode(buf)?,
            left_behind: u64::decode(buf)?,
        })
    }
}

/// A message from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMsg {
    /// Must come first.
    Hello(Hello),
    /// A history query.
    Query(HistoryQuery),
    /// Asks for [`Status`].
    StatusRequest,
    /// Goodbye.
    Bye,
}

/// A message from the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMsg {
    /// Answer to hello; 3 fds: ring, cursor page, wake pipe.
    Welcome(Welcome),
    /// The ring moved to segment `epoch`; 1 fd: the new ring.
    SegmentSwitch {
        /// The new segment's epoch.
        epoch: u64,
    },
    /// A notice.
    /// Seqs this reader will not get as records (see [`Loss`]).
    Notice(Loss),
    /// Rows answering query `id`.
    Rows {
        /// The query's id.
        id: u64,
        /// The rows, in seq order.
        rows: Vec<FileEvent>,
    },
    /// The last message answering query `id`.
    RowsEnd {
        /// The query's id.
        id: u64,
        /// How it ended.
        end: QueryEnd,
    },
    /// Answer to a status request.
    Status(Box<Status>),
    /// The service closes the connection, for `reason`.
    Bye {
        /// Why.
        reason: DisconnectReason,
    },
    /// The service refuses something and closes the connection.
    Error {
        /// Why.
        reason: DisconnectReason,
        /// Details for a human.
        detail: String,
    },
}

// Tags: client messages 1..=15, service messages 16 and up.
const T_HELLO: u16 = 1;
const T_QUERY: u16 = 2;
const T_STATUS_REQ: u16 = 3;
const T_CLIENT_BYE: u16 = 4;
const T_WELCOME: u16 = 16;
const T_SWITCH: u16 = 17;
const T_NOTICE: u16 = 18;
const T_ROWS: u16 = 19;
const T_ROWS_END: u16 = 20;
const T_STATUS: u16 = 21;
const T_BYE: u16 = 22;
const T_ERROR: u16 = 23;

impl ServerMsg {
    /// How many fds travel with this message.
    pub fn fd_count(&self) -> usize {
        match self {
            ServerMsg::Welcome(_) => 3,
            ServerMsg::SegmentSwitch { .. } => 1,
            _ => 0,
        }
    }
}

fn encode_event<B: BufMut>(e: &FileEvent, out: &mut B) {
    e.seq.encode(out);
    e.time_ns.encode(out);
    out.put_u8(e.kind as u8);
    e.path.encode(out);
    e.path_to.encode(out);
    e.rule.encode(out);
    e.size.encode(out);
    match e.gap {
        None => out.put_u8(0),
        Some(g) => {
            out.put_u8(1);
            g.to.encode(out);
            out.put_u8(g.reason as u8);
        }
    }
    e.reconciled.encode(out);
    match e.blind {
        None => out.put_u8(0),
        Some(b) => {
            out.put_u8(1);
            out.put_u8(b.reason as u8);
            b.since_ns.encode(out);
        }
    }
}

/// The encoded size of one row in a `Rows` message (what [`ServerMsg::Rows`] adds per row).
pub fn row_len(e: &FileEvent) -> usize {
    8 + 8
        + 1
        + 4
        + e.path.len()
        + 1
        + e.path_to.as_ref().map_or(0, |p| 4 + p.len())
        + 4
        + 1
        + e.size.map_or(0, |_| 8)
        + 1
        + e.gap.map_or(0, |_| 9)
}

/// Bytes of rows one `Rows` message may carry: its body stays under [`MAX_MESSAGE`].
pub const ROWS_BYTES: usize = MAX_MESSAGE - 64;

/// Cuts `rows` into `Rows` messages for query `id`, each under [`MAX_MESSAGE`] and
/// [`MAX_ROWS`]. A row that could never fit one message (over [`ROWS_BYTES`] on its own) is
/// left out and counted in the second value.
pub fn rows_messages(id: u64, rows: Vec<FileEvent>) -> (Vec<ServerMsg>, usize) {
    let mut msgs = Vec::new();
    let mut page = Vec::new();
    let mut bytes = 0;
    let mut oversized = 0;
    for r in rows {
        let n = row_len(&r);
        if n > ROWS_BYTES {
            oversized += 1;
            continue;
        }
        if !page.is_empty() && (bytes + n > ROWS_BYTES || page.len() >= MAX_ROWS) {
            msgs.push(ServerMsg::Rows {
                id,
                rows: std::mem::take(&mut page),
            });
            bytes = 0;
        }
        bytes += n;
        page.push(r);
    }
    if !page.is_empty() {
        msgs.push(ServerMsg::Rows { id, rows: page });
    }
    (msgs, oversized)
}

fn kind_from(k: u8) -> Result<EventKind, DecodeError> {
    EventKind::from_code(k).ok_or(DecodeError::Value("event kind"))
}

fn decode_event<B: Buf>(buf: &mut B) -> Result<FileEvent, DecodeError> {
    let seq = u64::decode(buf)?;
    let time_ns = u64::decode(buf)?;
    let kind = kind_from(u8::decode(buf)?)?;
    let path = Vec::<u8>::decode(buf)?;
    let path_to = Option::<Vec<u8>>::decode(buf)?;
    let rule = u32::decode(buf)?;
    let size = Option::<u64>::decode(buf)?;
    let gap = if bool::decode(buf)? {
        let to = u64::decode(buf)?;
        let reason = GapReason::from_code(u32::from(u8::decode(buf)?))
            .ok_or(DecodeError::Value("gap reason"))?;
        Some(GapInfo { to, reason })
    } else {
        None
    };
    let reconciled = bool::decode(buf)?;
    let blind = if bool::decode(buf)? {
        let reason =
            BlindReason::from_code(u8::decode(buf)?).ok_or(DecodeError::Value("blind reason"))?;
        let since_ns = u64::decode(buf)?;
        Some(BlindInfo { reason, since_ns })
    } else {
        None
    };
    Ok(FileEvent {
        seq,
        time_ns,
        kind,
        path,
        path_to,
        rule,
        size,
        gap,
        reconciled,
        blind,
    })
}

struct Row(FileEvent);
impl Codec for Row {
    fn encode<B: BufMut>(&self, out: &mut B) {
        encode_event(&self.0, out);
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        decode_event(buf).map(Row)
    }
}

impl Codec for ReaderStatus {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.id.encode(out);
        self.pid.encode(out);
        self.uid.encode(out);
        self.name.encode(out);
        self.policy.encode(out);
        self.lag_bytes.encode(out);
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        Ok(ReaderStatus {
            id: u64::decode(buf)?,
            pid: u32::decode(buf)?,
            uid: u32::decode(buf)?,
            name: String::decode(buf)?,
            policy: Policy::decode(buf)?,
            lag_bytes: u64::decode(buf)?,
        })
    }
}

impl Codec for ClientMsg {
    fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            ClientMsg::Hello(h) => {
                out.put_u16_le(T_HELLO);
                h.version.encode(out);
                h.name.encode(out);
                h.policy.encode(out);
                h.start.encode(out);
            }
            ClientMsg::Query(q) => {
                out.put_u16_le(T_QUERY);
                q.id.encode(out);
                q.seq.map(|(a, _)| a).encode(out);
                q.seq.map(|(_, b)| b).encode(out);
                q.time_ns.map(|(a, _)| a).encode(out);
                q.time_ns.map(|(_, b)| b).encode(out);
                q.glob.encode(out);
                q.kinds.encode(out);
                q.limit.encode(out);
            }
            ClientMsg::StatusRequest => out.put_u16_le(T_STATUS_REQ),
            ClientMsg::Bye => out.put_u16_le(T_CLIENT_BYE),
        }
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        Ok(match u16::decode(buf)? {
            T_HELLO => ClientMsg::Hello(Hello {
                version: u16::decode(buf)?,
                name: String::decode(buf)?,
                policy: Policy::decode(buf)?,
                start: StartAt::decode(buf)?,
            }),
            T_QUERY => {
                let id = u64::decode(buf)?;
                let pair = |a: Option<u64>, b: Option<u64>| match (a, b) {
                    (Some(a), Some(b)) => Ok(Some((a, b))),
                    (None, None) => Ok(None),
                    _ => Err(DecodeError::Value("range")),
                };
                let seq = pair(Option::decode(buf)?, Option::decode(buf)?)?;
                let time_ns = pair(Option::decode(buf)?, Option::decode(buf)?)?;
                ClientMsg::Query(HistoryQuery {
                    id,
                    seq,
                    time_ns,
                    glob: Option::decode(buf)?,
                    kinds: u32::decode(buf)?,
                    limit: u64::decode(buf)?,
                })
            }
            T_STATUS_REQ => ClientMsg::StatusRequest,
            T_CLIENT_BYE => ClientMsg::Bye,
            t => return Err(DecodeError::Tag(t)),
        })
    }
}

impl Codec for ServerMsg {
    fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            ServerMsg::Welcome(w) => {
                out.put_u16_le(T_WELCOME);
                w.version.encode(out);
                w.reader_id.encode(out);
                w.policy.encode(out);
                w.capacity.encode(out);
                w.epoch.encode(out);
                out.put_slice(&w.instance_id);
                w.first_available.encode(out);
                w.last_committed.encode(out);
                w.start_pos.encode(out);
                w.start_seq.encode(out);
            }
            ServerMsg::SegmentSwitch { epoch } => {
                out.put_u16_le(T_SWITCH);
                epoch.encode(out);
            }
            ServerMsg::Notice(n) => {
                out.put_u16_le(T_NOTICE);
                // The code, then the seqs (from and to, or the oldest), then the reason of
                // the two gaps.
                let code: u8 = match n {
                    Loss::StorageGap { .. } => 1,
                    Loss::Lagged { .. } => 2,
                    Loss::Truncated { .. } => 3,
                    Loss::Gap { .. } => 4,
                    Loss::Missing { .. } => 5,
                };
                out.put_u8(code);
                match *n {
                    Loss::Truncated { oldest } => oldest.encode(out),
                    _ => {
                        let (from, to) = n.seqs().unwrap_or_default();
                        from.encode(out);
                        to.encode(out);
                    }
                }
                if let Some(reason) = n.reason() {
                    out.put_u8(reason as u8);
                }
            }
            ServerMsg::Rows { id, rows } => {
                out.put_u16_le(T_ROWS);
                id.encode(out);
                out.put_u32_le(rows.len() as u32);
                for r in rows {
                    encode_event(r, out);
                }
            }
            ServerMsg::RowsEnd { id, end } => {
                out.put_u16_le(T_ROWS_END);
                id.encode(out);
                match end {
                    QueryEnd::Complete => out.put_u8(1),
                    QueryEnd::Limit => out.put_u8(2),
                    QueryEnd::Truncated { oldest } => {
                        out.put_u8(3);
                        oldest.encode(out);
                    }
                    QueryEnd::Unavailable => out.put_u8(4),
                    QueryEnd::Invalid => out.put_u8(5),
                }
            }
            ServerMsg::Status(s) => {
                out.put_u16_le(T_STATUS);
                s.pid.encode(out);
                s.uptime_ms.encode(out);
                encode_list(&s.roots, out);
                s.rules.encode(out);
                s.rate_per_s.encode(out);
                s.ring_capacity.encode(out);
                s.ring_fill.encode(out);
                s.epoch.encode(out);
                s.next_seq.encode(out);
                encode_list(&s.readers, out);
                s.history_rows.encode(out);
                s.health.encode(out);
                s.rate_per_min.encode(out);
                encode_list(&s.unwatched, out);
                s.unwatched_count.encode(out);
                encode_list(&s.roots_gone, out);
                s.history_bytes.encode(out);
                s.history_rows_per_s.encode(out);
                s.storage.encode(out);
                s.counters.encode(out);
                s.readers_total.encode(out);
                s.backend.encode(out);
            }
            ServerMsg::Bye { reason } => {
                out.put_u16_le(T_BYE);
                reason.encode(out);
            }
            ServerMsg::Error { reason, detail } => {
                out.put_u16_le(T_ERROR);
                reason.encode(out);
                detail.encode(out);
            }
        }
    }
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, DecodeError> {
        Ok(match u16::decode(buf)? {
            T_WELCOME => {
                let version = u16::decode(buf)?;
                let reader_id = u64::decode(buf)?;
                let policy = Policy::decode(buf)?;
                let capacity = u64::decode(buf)?;
                let epoch = u64::decode(buf)?;
                need(buf, 16)?;
                let mut instance_id = [0u8; 16];
                buf.copy_to_slice(&mut instance_id);
                ServerMsg::Welcome(Welcome {
                    version,
                    reader_id,
                    policy,
                    capacity,
                    epoch,
                    instance_id,
                    first_available: u64::decode(buf)?,
                    last_committed: u64::decode(buf)?,
                    start_pos: u64::decode(buf)?,
                    start_seq: u64::decode(buf)?,
                })
            }
            T_SWITCH => ServerMsg::SegmentSwitch {
                epoch: u64::decode(buf)?,
            },
            T_NOTICE => ServerMsg::Notice(match u8::decode(buf)? {
                code @ (1 | 4) => {
                    let from = u64::decode(buf)?;
                    let to = u64::decode(buf)?;
                    let reason = GapReason::from_code(u32::from(u8::decode(buf)?))
                        .ok_or(DecodeError::Value("gap reason"))?;
                    if code == 1 {
                        Loss::StorageGap { from, to, reason }
                    } else {
                        Loss::Gap { from, to, reason }
                    }
                }
                2 => Loss::Lagged {
                    from: u64::decode(buf)?,
                    to: u64::decode(buf)?,
                },
                3 => Loss::Truncated {
                    oldest: u64::decode(buf)?,
                },
                5 => Loss::Missing {
                    from: u64::decode(buf)?,
                    to: u64::decode(buf)?,
                },
                _ => return Err(DecodeError::Value("notice")),
            }),
            T_ROWS => {
                let id = u64::decode(buf)?;
                let rows = decode_list::<_, Row>(buf, MAX_ROWS)?
                    .into_iter()
                    .map(|r| r.0)
                    .collect();
                ServerMsg::Rows { id, rows }
            }
            T_ROWS_END => {
                let id = u64::decode(buf)?;
                let end = match u8::decode(buf)? {
                    1 => QueryEnd::Complete,
                    2 => QueryEnd::Limit,
                    3 => QueryEnd::Truncated {
                        oldest: u64::decode(buf)?,
                    },
                    4 => QueryEnd::Unavailable,
                    5 => QueryEnd::Invalid,
                    _ => return Err(DecodeError::Value("query end")),
                };
                ServerMsg::RowsEnd { id, end }
            }
            T_STATUS => ServerMsg::Status(Box::new(Status {
                pid: u32::decode(buf)?,
                uptime_ms: u64::decode(buf)?,
                roots: decode_list(buf, 4096)?,
                rules: u32::decode(buf)?,
                rate_per_s: u64::decode(buf)?,
                ring_capacity: u64::decode(buf)?,
                ring_fill: u64::decode(buf)?,
                epoch: u64::decode(buf)?,
                next_seq: u64::decode(buf)?,
                readers: decode_list(buf, 65536)?,
                history_rows: u64::decode(buf)?,
                health: String::decode(buf)?,
                rate_per_min: u64::decode(buf)?,
                unwatched: decode_list(buf, Status::UNWATCHED_LISTED)?,
                unwatched_count: u64::decode(buf)?,
                roots_gone: decode_list(buf, 4096)?,
                history_bytes: u64::decode(buf)?,
                history_rows_per_s: u64::decode(buf)?,
                storage: String::decode(buf)?,
                counters: StatusCounters::decode(buf)?,
                readers_total: u64::decode(buf)?,
                backend: String::decode(buf)?,
            })),
            T_BYE => ServerMsg::Bye {
                reason: DisconnectReason::decode(buf)?,
            },
            T_ERROR => ServerMsg::Error {
                reason: DisconnectReason::decode(buf)?,
                detail: String::decode(buf)?,
            },
            t => return Err(DecodeError::Tag(t)),
        })
    }
}

/// Encodes `msg` as one frame announcing `fds` fds.
pub fn encode_frame<M: Codec>(msg: &M, fds: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    msg.encode(&mut body);
    // The tag is the body's first two bytes; the prefix repeats it for a reader that wants
    // to skip a frame without decoding it.
    let tag = u16::from_le_bytes([body[0], body[1]]);
    let mut out = Vec::with_capacity(FRAME_PREFIX + body.len());
    out.put_u32_le((body.len()) as u32);
    out.put_u16_le(tag);
    out.put_u16_le(fds as u16);
    out.extend_from_slice(&body);
    out
}

/// Accumulates received bytes and cuts them into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

/// One frame cut from the stream: its fd count and body.
#[derive(Debug)]
pub struct RawFrame {
    /// Fds the frame announces.
    pub fds: usize,
    /// The body (tag first).
    pub body: Vec<u8>,
}

impl FrameDecoder {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Cuts the next whole frame, if there is one.
    ///
    /// # Errors
    /// [`DecodeError::TooLarge`] for a length prefix over [`MAX_MESSAGE`] (before waiting
    /// for its bytes), [`DecodeError::Value`] for a prefix whose tag disagrees with the body.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, DecodeError> {
        let avail = &self.buf[self.start..];
        if avail.len() < FRAME_PREFIX {
            return Ok(None);
        }
        let len = u32::from_le_bytes(avail[0..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_MESSAGE {
            return Err(DecodeError::TooLarge {
                len,
                max: MAX_MESSAGE,
            });
        }
        if len < 2 {
            return Err(DecodeError::Truncated);
        }
        if avail.len() < FRAME_PREFIX + len {
            return Ok(None);
        }
        let tag = u16::from_le_bytes([avail[4], avail[5]]);
        let fds = u16::from_le_bytes([avail[6], avail[7]]) as usize;
        let body = avail[FRAME_PREFIX..FRAME_PREFIX + len].to_vec();
        if u16::from_le_bytes([body[0], body[1]]) != tag {
            return Err(DecodeError::Value("frame tag"));
        }
        self.start += FRAME_PREFIX + len;
        if self.start > 64 << 10 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(RawFrame { fds, body }))
    }
}

/// Decodes a whole frame body as `M`, refusing trailing bytes.
///
/// # Errors
/// [`DecodeError`].
pub fn decode_body<M: Codec>(body: &[u8]) -> Result<M, DecodeError> {
    let mut b = body;
    let m = M::decode(&mut b)?;
    if !b.is_empty() {
        return Err(DecodeError::Trailing(b.len()));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_with_thousands_of_long_named_readers_and_4k_paths_fits_one_message() {
        let path = |i: usize| format!("/{}{i}", "p".repeat(4000));
        let mut st = Status {
            readers: (0..5000)
                .map(|i| ReaderStatus {
                    id: i as u64,
                    pid: 1,
                    uid: 0,
                    name: "n".repeat(4000),
                    policy: Policy::Lagging,
                    lag_bytes: i as u64,
                })
                .collect(),
            roots: (0..300).map(path).collect(),
            roots_gone: (0..300).map(path).collect(),
            unwatched: (0..64).map(path).collect(),
            health: "h".repeat(4000),
            storage: "s".repeat(4000),
            ..Status::default()
        };
        st.fit();
        assert_eq!(st.readers_total, 5000);
        assert_eq!(st.readers.len(), Status::READERS_LISTED);
        assert_eq!(
            st.readers[0].lag_bytes, 4999,
            "the furthest behind are kept"
        );
        let frame = encode_frame(&ServerMsg::Status(Box::new(st)), 0);
        assert!(frame.len() <= MAX_MESSAGE, "{} bytes", frame.len());
    }

    #[test]
    fn every_loss_round_trips_as_a_notice() {
        let losses = [
            Loss::StorageGap {
                from: 1,
                to: 2,
                reason: GapReason::StoreFailed,
            },
            Loss::Gap {
                from: 3,
                to: 4,
                reason: GapReason::Crash,
            },
            Loss::Lagged { from: 5, to: 6 },
            Loss::Missing { from: 7, to: 8 },
            Loss::Truncated { oldest: 9 },
        ];
        for l in losses {
            let msg = ServerMsg::Notice(l);
            let mut body = Vec::new();
            msg.encode(&mut body);
            assert_eq!(decode_body::<ServerMsg>(&body).unwrap(), msg, "{l:?}");
        }
        // An unknown notice code is refused, not guessed.
        let mut body = Vec::new();
        ServerMsg::Notice(Loss::Truncated { oldest: 9 }).encode(&mut body);
        body[2] = 9;
        assert!(decode_body::<ServerMsg>(&body).is_err());
    }
}
