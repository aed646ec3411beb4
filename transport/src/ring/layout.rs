//! The bytes of a ring segment: the header, the resync table and the frame format.
//!
//! ```text
//! segment (one memfd, or heap memory in tests):
//! +-----------------------------+ 0
//! | Header (HEADER_SIZE bytes)  |   identity line (immutable after creation)
//! |                             |   write cursor        (own cache line)
//! |                             |   reserve cursor      (own cache line)
//! |                             |   state line: closed / switched, end, next epoch
//! |                             |   resync head + RESYNC_SLOTS x (position, seq)
//! |                             |   LOSSLESS_SLOTS x page key: the lossless readers
//! |                             |   whose cursors the producer honours in this segment
//! +-----------------------------+ HEADER_SIZE
//! | data area (capacity bytes,  |   frames, each FRAME_ALIGN-aligned, never split
//! | a power of two)             |   at the end: a padding frame fills the rest
//! +-----------------------------+ HEADER_SIZE + capacity
//! ```
//!
//! Positions are byte counts from the start of the stream, not offsets: they only grow, and
//! carry on across segments (a new segment's `base_pos` is the old one's end). The byte at
//! position `p` lives at data offset `p % capacity`. A cursor is in range
//! `base_pos ..= base_pos + u64::MAX`, so it never wraps in practice.
//!
//! A frame:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  payload length (bytes, exact)                |  word 0, low half
//! +---------------+-----------------------------------------------+
//! |     kind      |              mark 0xF1E5E0 (24 bits)          |  word 0, high half
//! +---------------+-----------------------------------------------+
//! |                        seq (64 bits)                          |  word 1
//! |                                                               |
//! +---------------------------------------------------------------+
//! |  payload (rkyv archive; root at its end), then zero padding   |
//! |  up to the next FRAME_ALIGN boundary                          |
//! +---------------------------------------------------------------+
//! ```
//!
//! Words are native-endian `u64`s written and read with atomic operations (the ring never
//! leaves the machine). The padded length is derived: `FRAME_HEADER + round_up(len)`.

use crate::sync::AtomicU64;

/// `b"FIREHOSE"` read as a little-endian u64: the first word of every segment.
pub const MAGIC: u64 = u64::from_le_bytes(*b"FIREHOSE");
/// Bumped whenever the header or frame layout changes; a reader refuses other versions.
pub const LAYOUT_VERSION: u64 = 2;
/// Bytes before the data area. A page, so the data area is page-aligned.
pub const HEADER_SIZE: usize = 4096;
/// Every frame and every payload starts at a multiple of this. rkyv archives of the payload
/// type must not need more (checked when a producer or reader is made).
pub const FRAME_ALIGN: usize = 16;
/// The frame header: one word of length, kind and mark, one word of seq.
pub const FRAME_HEADER: usize = 16;
/// How many batch starts the resync table remembers.
pub const RESYNC_SLOTS: usize = 64;

/// How many lossless readers one segment can list (live ones, and departed ones that
/// still hold their backpressure until the next rotation).
pub const LOSSLESS_SLOTS: usize = 32;

/// Written in the high 24 bits of a frame's first word, so that a walk that lands on
/// garbage notices at once.
const FRAME_MARK: u64 = 0xF1E5E0;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// An rkyv-archived record.
    Record = 1,
    /// Filler up to the end of the data area; the next frame starts at offset 0.
    Padding = 2,
    /// A range of seqs the ring skipped on purpose: payload is `to` and `reason` (2 words).
    Gap = 3,
}

/// Length of a gap frame's payload: `to` and `reason`, one word each.
pub const GAP_PAYLOAD: usize = 16;

/// Rounds `len` up to a multiple of [`FRAME_ALIGN`].
#[inline]
pub const fn align_up(len: usize) -> usize {
    (len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// The bytes a frame with a payload of `payload_len` bytes takes in the ring.
#[inline]
pub const fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER + align_up(payload_len)
}

/// Encodes the first header word.
#[inline]
pub(crate) const fn header_word(kind: FrameKind, payload_len: u32) -> u64 {
    payload_len as u64 | (kind as u64) << 32 | FRAME_MARK << 40
}

/// A frame header as read from untrusted bytes, not yet checked against anything but its
/// own encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) kind: FrameKind,
    pub(crate) payload_len: usize,
    pub(crate) seq: u64,
}

/// Why a header word is not a frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderDefect {
    Mark(u64),
    Kind(u8),
}

impl FrameHeader {
    /// Decodes two header words. Only the encoding is checked here; lengths and seqs are
    /// checked by the walker, which knows the limits.
    #[inline]
    pub(crate) fn decode(word0: u64, seq: u64) -> Result<Self, HeaderDefect> {
        if word0 >> 40 != FRAME_MARK {
            return Err(HeaderDefect::Mark(word0));
        }
        let kind = match (word0 >> 32) as u8 {
            1 => FrameKind::Record,
            2 => FrameKind::Padding,
            3 => FrameKind::Gap,
            k => return Err(HeaderDefect::Kind(k)),
        };
        Ok(Self {
            kind,
            payload_len: (word0 & 0xFFFF_FFFF) as usize,
            seq,
        })
    }
}

/// A group of fields on a cache line (two, against adjacent-line prefetching) of its own, as
/// crossbeam's `CachePadded` reasons for x86_64.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct Line<T>(pub(crate) T);

/// Fields written once by the producer before any fd of the segment leaves it.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) magic: AtomicU64,
    pub(crate) version: AtomicU64,
    /// Bytes in the data area; a power of two.
    pub(crate) capacity: AtomicU64,
    /// Segment number, starting at 1 and growing by one with each switch.
    pub(crate) epoch: AtomicU64,
    /// Position of the segment's first byte.
    pub(crate) base_pos: AtomicU64,
    /// Seq of the segment's first frame.
    pub(crate) first_seq: AtomicU64,
    pub(crate) producer_pid: AtomicU64,
    /// Largest payload the producer will write.
    pub(crate) max_record: AtomicU64,
}

/// Segment state values in [`StateLine::state`].
pub(crate) const STATE_OPEN: u64 = 0;
/// The producer closed the ring for good (service shutting down).
pub(crate) const STATE_CLOSED: u64 = 1;
/// The producer moved on to segment `next_epoch`; this one ends at `end_pos`.
pub(crate) const STATE_SWITCHED: u64 = 2;

#[repr(C)]
#[derive(Debug)]
pub(crate) struct StateLine {
    pub(crate) state: AtomicU64,
    pub(crate) end_pos: AtomicU64,
    pub(crate) next_epoch: AtomicU64,
    pub(crate) end_seq: AtomicU64,
}

/// One resync point: where a batch's first frame starts, and its seq.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ResyncSlot {
    pub(crate) pos: AtomicU64,
    pub(crate) seq: AtomicU64,
}

/// One entry of the lossless table: the identity of a cursor page whose released position
/// the producer honours for as long as it writes this segment. Both words zero: empty.
///
/// For a memfd page the key is its `(st_dev, st_ino)`: a reader checks the page it was
/// handed against this table (which only the producer can write: the segment is sealed
/// against readers' writes), so a page it made itself, or a lagging reader's page, cannot
/// pass for a lossless one. Heap pages (single-process) get `(0, n)` with `n` unique.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct LosslessSlot {
    pub(crate) dev: AtomicU64,
    pub(crate) ino: AtomicU64,
}

/// The segment header. All fields are atomics so that the mapping can be viewed as this
/// struct from both sides; immutable fields are simply never stored again.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) id: Line<Identity>,
    /// End of the committed frames: everything before it is readable.
    pub(crate) write: Line<AtomicU64>,
    /// End of what the producer is writing or about to write; never behind `write`.
    pub(crate) reserve: Line<AtomicU64>,
    pub(crate) state: Line<StateLine>,
    /// Number of resync points ever published; slot `(head - 1) % RESYNC_SLOTS` is newest.
    pub(crate) resync_head: Line<AtomicU64>,
    pub(crate) resync: [ResyncSlot; RESYNC_SLOTS],
    /// The lossless readers this segment honours. Entries are only ever added while the
    /// producer writes this segment (at attach), never removed: a reader listed here keeps
    /// its backpressure until the producer leaves the segment.
    pub(crate) lossless: Line<[LosslessSlot; LOSSLESS_SLOTS]>,
}

#[cfg(not(firehose_loom))]
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

impl Header {
    /// A zeroed header on the heap (heap-backed segments and loom models).
    pub(crate) fn new_boxed() -> Box<Self> {
        fn z() -> AtomicU64 {
            AtomicU64::new(0)
        }
        Box::new(Header {
            id: Line(Identity {
                magic: z(),
                version: z(),
                capacity: z(),
                epoch: z(),
                base_pos: z(),
                first_seq: z(),
                producer_pid: z(),
                max_record: z(),
            }),
            write: Line(z()),
            reserve: Line(z()),
            state: Line(StateLine {
                state: z(),
                end_pos: z(),
                next_epoch: z(),
                end_seq: z(),
            }),
            resync_head: Line(z()),
            resync: std::array::from_fn(|_| ResyncSlot { pos: z(), seq: z() }),
            lossless: Line(std::array::from_fn(|_| LosslessSlot { dev: z(), ino: z() })),
        })
    }
}

/// The per-reader cursor page: the reader writes, the producer reads (and clamps).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct CursorPage {
    /// Position up to which a lossless reader has released frames (Release store).
    pub(crate) released: Line<AtomicU64>,
    /// Non-zero while the reader sleeps on its wake fd; the producer swaps it to zero and
    /// writes one byte.
    pub(crate) sleeping: Line<AtomicU64>,
    /// Written by the producer: [`CURSOR_CUT_OFF`] once a lossless reader was cut off.
    pub(crate) flags: Line<AtomicU64>,
    /// Set (0 -> 1, never back) by the one [`Reader`](super::Reader) that uses this page: a
    /// page, and so a lossless reader's backpressure, serves exactly one reader, even if its
    /// fds are duplicated or passed on to another process.
    pub(crate) claimed: Line<AtomicU64>,
}

/// In [`CursorPage::flags`]: the producer no longer holds back for this lossless reader,
/// which must not follow into a new segment (it could be overwritten under its borrows).
pub(crate) const CURSOR_CUT_OFF: u64 = 1;

/// Bytes of a cursor page memfd.
pub const CURSOR_PAGE_SIZE: usize = 4096;

#[cfg(not(firehose_loom))]
const _: () = assert!(std::mem::size_of::<CursorPage>() <= CURSOR_PAGE_SIZE);

impl CursorPage {
    pub(crate) fn new_boxed() -> Box<Self> {
        Box::new(CursorPage {
            released: Line(AtomicU64::new(0)),
            sleeping: Line(AtomicU64::new(0)),
            flags: Line(AtomicU64::new(0)),
            claimed: Line(AtomicU64::new(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_word_round_trips() {
        for kind in [FrameKind::Record, FrameKind::Padding, FrameKind::Gap] {
            let w = header_word(kind, 12345);
            let h = FrameHeader::decode(w, 77).unwrap();
            assert_eq!(
                h,
                FrameHeader {
                    kind,
                    payload_len: 12345,
                    seq: 77
                }
            );
        }
    }

    #[test]
    fn garbage_header_is_refused() {
        assert_eq!(FrameHeader::decode(0, 0), Err(HeaderDefect::Mark(0)));
        let w = 10 | 9u64 << 32 | FRAME_MARK << 40;
        assert_eq!(FrameHeader::decode(w, 0), Err(HeaderDefect::Kind(9)));
    }

    #[test]
    fn frame_lengths_are_aligned() {
        assert_eq!(frame_len(0), 16);
        assert_eq!(frame_len(1), 32);
        assert_eq!(frame_len(16), 32);
        assert_eq!(frame_len(64), 80);
    }
}
