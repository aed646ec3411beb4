//! The ring's errors, one small enum per operation.

use std::io;

/// Making, receiving or mapping a segment or cursor page failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The capacity is not a power of two, or too small.
    #[error("ring capacity {capacity} bytes is not a power of two of at least {min} bytes")]
    Capacity {
        /// The capacity asked for.
        capacity: usize,
        /// The smallest allowed.
        min: usize,
    },
    /// The largest record does not fit a quarter of the ring (a lagging reader copies at
    /// most a quarter at a time, so a larger frame could never be read).
    #[error("max record size {max_record} bytes needs a ring of at least {needed} bytes (have {capacity})")]
    RecordTooLargeForRing {
        /// The configured maximum payload.
        max_record: usize,
        /// The configured capacity.
        capacity: usize,
        /// The smallest capacity that would do.
        needed: usize,
    },
    /// memfd_create, ftruncate, mmap or sealing failed.
    #[error("creating a {size}-byte sealed memfd failed: {source}")]
    Create {
        /// Bytes asked for.
        size: usize,
        /// What the OS said.
        source: io::Error,
    },
    /// A received fd is not sealed as the producer promises: refuse to map it.
    #[error("received memfd lacks seals {missing:#x} (has {have:#x}): refusing to map it")]
    Seals {
        /// Seals present.
        have: u32,
        /// Seals required but absent.
        missing: u32,
    },
    /// A received fd's size does not match its header (mapping it could SIGBUS).
    #[error("received memfd is {size} bytes, expected {expected:?}")]
    Size {
        /// Size from fstat.
        size: u64,
        /// Size the header implies, if it could be read.
        expected: Option<u64>,
    },
    /// The memory is not a Firehose ring.
    #[error("not a Firehose ring: magic {found:#018x}")]
    Magic {
        /// The first word found.
        found: u64,
    },
    /// The ring was made by a build with another layout.
    #[error("ring layout version {found}, this build reads version {expected}")]
    Version {
        /// Version in the header.
        found: u64,
        /// Version this build reads.
        expected: u64,
    },
    /// A reader asked to read losslessly from a segment whose producer does not list its
    /// cursor page as a lossless reader's (it was registered as lagging, or the page is not
    /// the producer's): refused, since nothing would hold the producer back for it.
    #[error("the producer does not honour this cursor page as a lossless reader's")]
    NotLossless,
    /// A lossless reader must start where the producer set its released position.
    #[error("lossless reader asked to start at {start}, but its cursor page says {released}")]
    StartPosition {
        /// Where it asked to start.
        start: u64,
        /// The position the producer honours for it.
        released: u64,
    },
    /// The cursor page already serves a reader (one page, one reader, ever).
    #[error("this cursor page is already in use by a reader")]
    CursorClaimed,
    /// The segment's table of lossless readers is full.
    #[error("the ring already has {max} lossless readers (its limit)")]
    LosslessFull {
        /// Lossless readers one segment can list.
        max: usize,
    },
    /// fstat, F_GET_SEALS or mmap failed.
    #[error("mapping a received memfd failed: {0}")]
    Map(io::Error),
}

/// Staging or committing records failed. Nothing staged is lost: after an error the
/// producer still holds every record it accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The archived record is larger than the ring's maximum record size.
    #[error("record of {len} bytes is over the ring's maximum record size of {max} bytes")]
    TooLarge {
        /// Archived size.
        len: usize,
        /// The limit (`RingConfig::max_record`).
        max: usize,
    },
    /// rkyv could not serialize the record.
    #[error("serializing a record failed: {0}")]
    Serialize(rkyv::rancor::Error),
    /// A lossless reader has not released enough room within the wait budget. The batch
    /// stays staged; commit again later, or cut the reader off (rotate the segment).
    #[error("lossless reader {reader} holds the ring back ({needed} bytes needed, {free} free)")]
    Backpressure {
        /// The slowest lossless reader.
        reader: super::ReaderId,
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes free ahead of that reader.
        free: usize,
    },
    /// A gap must move the seq forward.
    #[error("gap end {to} is before the next seq {next}")]
    GapBackwards {
        /// Requested end of the gap.
        to: u64,
        /// The next seq the ring would assign.
        next: u64,
    },
    /// The producer was closed.
    #[error("the ring is closed")]
    Closed,
    /// The seq line reached `u64::MAX`: no further seq can follow.
    #[error("the seq space is used up (u64::MAX)")]
    SeqExhausted,
}

/// Reading from the ring stopped. None of these lose a record silently: ranges a reader
/// misses are reported as `Event::Lagged` before the records after them.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// The producer moved to segment `next_epoch` and this reader has read all of the old
    /// one: call `Reader::follow` with the new segment.
    #[error("segment ended; the producer moved to segment {next_epoch} at seq {next_seq}")]
    SegmentEnded {
        /// Epoch of the segment to follow.
        next_epoch: u64,
        /// Seq the new segment starts at.
        next_seq: u64,
    },
    /// The producer closed the ring and this reader has read everything in it.
    #[error("the producer closed the ring")]
    Closed,
    /// Bytes in the ring are not a valid frame. The reader resynchronises on its next call
    /// and reports the range it skipped as lagged.
    #[error("corrupt frame at position {pos}: {what}")]
    Corrupt {
        /// Ring position of the bad frame.
        pos: u64,
        /// What was wrong.
        what: CorruptKind,
    },
    /// `follow` was given a segment that is not the next one for this reader.
    #[error(
        "segment {got} does not follow the current segment (expected epoch {expected} or later)"
    )]
    WrongSegment {
        /// Epoch offered.
        got: u64,
        /// Epoch expected.
        expected: u64,
    },
    /// A lossless reader the producer cut off (it stalled) may not follow into the new
    /// segment: reconnect.
    #[error("this lossless reader was cut off by the producer for being too slow")]
    CutOff,
    /// The producer's end of the wake pipe closed while the ring was open: the producer
    /// exited (or crashed), or dropped this reader.
    #[error("the producer is gone (its wake pipe closed without closing the ring)")]
    ProducerGone,
    /// Waiting on the wake fd failed.
    #[error("waiting for records failed: {0}")]
    Wait(std::io::ErrorKind),
}

/// What made a frame corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The header word lacks the frame mark or has an unknown kind.
    BadHeader(u64),
    /// The payload length is over the ring's maximum.
    TooLong(usize),
    /// The frame's seq is not the one that must come next.
    Seq {
        /// Seq in the frame.
        found: u64,
        /// Seq expected.
        expected: u64,
    },
    /// A padding frame that does not end at the end of the data area, or a frame crossing it.
    Wrap,
    /// A gap frame whose end is before its start.
    Gap,
    /// The write cursor is somewhere a cursor cannot be.
    Cursor(u64),
}

impl std::fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorruptKind::BadHeader(w) => write!(f, "bad header word {w:#018x}"),
            CorruptKind::TooLong(n) => write!(f, "payload length {n} over the maximum"),
            CorruptKind::Seq { found, expected } => write!(f, "seq {found}, expected {expected}"),
            CorruptKind::Wrap => write!(f, "frame crosses the end of the data area"),
            CorruptKind::Gap => write!(f, "gap frame ends before it starts"),
            CorruptKind::Cursor(c) => write!(f, "write cursor {c} out of range"),
        }
    }
}

/// A record's payload failed rkyv validation.
#[derive(Debug, thiserror::Error)]
#[error("record {seq} failed validation: {source}")]
pub struct AccessError {
    /// Seq of the record.
    pub seq: u64,
    /// What rkyv's checker said.
    pub source: rkyv::rancor::Error,
}
