//! The ring's one writer.
//!
//! Records are staged privately (serialized, framed, padded, with a padding frame where the
//! data area wraps) and copied into the ring in bulk by [`Producer::commit`]:
//!
//! 1. room check: a lossless reader's unreleased bytes are never overwritten. The slowest
//!    lossless reader's position is cached; reader pages are only read again when the cache
//!    says there is no room;
//! 2. reserve: store the reserve cursor (the end of the batch), then `fence(Release)`;
//! 3. copy the staged words with Relaxed atomic stores (race-free by the memory model even
//!    when a lagging reader copies the same bytes at the same time);
//! 4. record a resync point (the batch's first frame) in the header table;
//! 5. publish: one Release store of the write cursor for the whole batch;
//! 6. `fence(SeqCst)`, then wake each reader whose sleeping flag is set.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::{Arena, ArenaHandle};
use rkyv::util::AlignedVec;
use rkyv::{Archive, Serialize};

use super::error::{PublishError, SegmentError};
use super::layout::{
    align_up, frame_len, header_word, FrameKind, CURSOR_CUT_OFF, FRAME_ALIGN, FRAME_HEADER,
    GAP_PAYLOAD, RESYNC_SLOTS, STATE_CLOSED, STATE_SWITCHED,
};
use super::memory::{CursorMem, PageKey, Segment, SegmentParams};
use super::reader::{Policy, Reader};
use super::wake::{self, WakeTx};
use crate::sync::{self, Ordering, Site};

/// Payloads at least this large are written straight into the ring; smaller ones are
/// gathered privately and copied in bulk (see `stage_frame`).
const DIRECT_MIN: usize = 1024;

/// How recently the slowest lossless reader must have moved for a waiting producer to keep
/// polling instead of sleeping.
const ACTIVE_READER: Duration = Duration::from_millis(1);

/// Types the producer can serialize into a frame (rkyv's high-level serializer).
pub trait Encode:
    for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}
impl<T: ?Sized + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>>
    Encode for T
{
}

/// How a ring is made.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// Bytes in the data area: a power of two, at least 4 KiB. Default 4 MiB: small enough to
    /// stay in cache (memcpy here: 27 GB/s on 1 MiB blocks, 7.6 GB/s on 64 MiB).
    pub capacity: usize,
    /// Largest archived record. Default 64 KiB. A frame must fit a quarter of the ring.
    pub max_record: usize,
    /// Staged bytes that trigger a commit on their own. Default 64 KiB (at most a quarter of
    /// the ring).
    pub batch_bytes: usize,
    /// How long [`Producer::commit`] waits for a lossless reader to make room before it
    /// returns [`PublishError::Backpressure`]. Zero: do not wait.
    pub lossless_wait: Duration,
    /// Seq of the first record.
    pub first_seq: u64,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            capacity: 4 << 20,
            max_record: 64 << 10,
            batch_bytes: 64 << 10,
            lossless_wait: Duration::from_secs(1),
            first_seq: 1,
        }
    }
}

impl RingConfig {
    fn check(&self) -> Result<(), SegmentError> {
        let needed = (frame_len(self.max_record) * 4).next_power_of_two();
        if self.capacity < needed || self.max_record > u32::MAX as usize {
            return Err(SegmentError::RecordTooLargeForRing {
                max_record: self.max_record,
                capacity: self.capacity,
                needed,
            });
        }
        Ok(())
    }
}

/// Names one attached reader on the producer's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReaderId(pub u64);

impl std::fmt::Display for ReaderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The producer's record of one reader.
#[derive(Debug)]
struct Slot {
    id: ReaderId,
    policy: Policy,
    cursor: CursorMem,
    key: PageKey,
    wake: WakeTx,
    /// A lossless reader that was removed: its backpressure holds (its process may still
    /// read frames in place) until a rotation leaves it behind.
    departed: bool,
}

/// One attached reader as the producer sees it ([`Producer::readers_progress`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaderProgress {
    /// The reader.
    pub id: ReaderId,
    /// Its policy.
    pub policy: Policy,
    /// A lossless reader that was removed but is still honoured until a rotation leaves it
    /// behind.
    pub departed: bool,
    /// Its released position (what its cursor page says, clamped to the current segment).
    pub released: u64,
    /// Bytes between its released position and the write cursor.
    pub lag: u64,
}

/// A move to a new segment, as [`Producer::take_rotations`] reports it.
#[derive(Debug)]
pub struct Rotation {
    /// The new segment, to hand to readers in other processes.
    pub segment: Segment,
    /// The segment it replaced (the one the readers left behind stay in).
    pub previous: Segment,
    /// The readers left behind in the old segment (cut off, or departed lossless readers).
    pub cut_off: Vec<ReaderId>,
}

/// Rotations kept for [`Producer::take_rotations`] when nobody takes them.
const ROTATIONS_KEPT: usize = 16;

/// Everything a reader in another process needs, to be sent over a Unix socket with
/// [`send_reader`](crate::handoff::send_reader), or in a control-socket welcome.
///
/// Its fields are private: a `ReaderFds` comes only from [`Producer::attach_remote`] or
/// from a message received from a producer, and [`Reader::open`] checks what it claims
/// (a lossless reader's cursor page must be listed in the segment, and a page serves one
/// reader only), so no value built by hand can open a reader the producer does not honour.
#[derive(Debug)]
pub struct ReaderFds {
    pub(crate) id: ReaderId,
    pub(crate) policy: Policy,
    pub(crate) start_pos: u64,
    pub(crate) start_seq: u64,
    pub(crate) ring: std::os::fd::OwnedFd,
    pub(crate) cursor: std::os::fd::OwnedFd,
    pub(crate) wake: std::os::fd::OwnedFd,
}

impl ReaderFds {
    /// The reader's id on the producer's side.
    pub fn id(&self) -> ReaderId {
        self.id
    }

    /// The policy it was attached with (checked again by [`Reader::open`]).
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The position to start reading at (the write cursor when it attached).
    pub fn start_pos(&self) -> u64 {
        self.start_pos
    }

    /// The seq of the first frame at `start_pos`.
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }

    /// What a client received from a producer (by [`recv_reader`](crate::handoff::recv_reader)
    /// or in a welcome), put together for [`Reader::open`], which checks every claim in it
    /// against the producer's own records before it hands out a frame.
    pub fn from_received(
        id: ReaderId,
        policy: Policy,
        start: (u64, u64),
        ring: std::os::fd::OwnedFd,
        cursor: std::os::fd::OwnedFd,
        wake: std::os::fd::OwnedFd,
    ) -> Self {
        ReaderFds {
            id,
            policy,
            start_pos: start.0,
            start_seq: start.1,
            ring,
            cursor,
            wake,
        }
    }

    /// Gives up the three fds (ring, cursor page, wake fd), to send them on.
    pub fn into_fds(
        self,
    ) -> (
        std::os::fd::OwnedFd,
        std::os::fd::OwnedFd,
        std::os::fd::OwnedFd,
    ) {
        (self.ring, self.cursor, self.wake)
    }
}

/// Where the producer's memory lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backing {
    Heap,
    Memfd,
}

/// The one writer of a ring. Generic over the payload type `T` (any rkyv-serializable type).
pub struct Producer<T> {
    config: RingConfig,
    backing: Backing,
    seg: Segment,
    cap: u64,
    /// Committed write position (what `header.write` holds).
    w: u64,
    /// Seq the next committed frame will have.
    committed_seq: u64,
    /// Seq the next staged frame will have.
    next_seq: u64,
    /// Bytes of frames written into the ring after `w` but not yet published.
    staged: u64,
    /// Small frames staged privately, laid out exactly as they go into the ring at
    /// `w + staged`; copied in bulk before the next large frame or at commit.
    pending: AlignedVec,
    /// The reserve cursor's value: every byte the producer writes lies before it.
    reserved: u64,
    /// Position and seq of the first non-padding staged frame.
    staged_first: Option<(u64, u64)>,
    scratch: AlignedVec,
    arena: Arena,
    readers: Vec<Slot>,
    next_reader: u64,
    /// Lowest released position of the lossless readers when last looked at (clamped), and
    /// who it was. `None`: no lossless reader.
    min_released: Option<(u64, ReaderId)>,
    closed: bool,
    /// Rotations not yet taken by [`Producer::take_rotations`] (at most [`ROTATIONS_KEPT`]).
    rotations: std::collections::VecDeque<Rotation>,
    /// Called after every rotation (the service wakes its socket loop with it).
    on_rotate: Option<Box<dyn Fn() + Send>>,
    /// Payload size from which frames are written straight into the ring ([`DIRECT_MIN`];
    /// tests move it to cover both paths).
    direct_min: usize,
    _t: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("segment", &self.seg)
            .field("write", &self.w)
            .field("next_seq", &self.next_seq)
            .field("staged_bytes", &(self.staged as usize + self.pending.len()))
            .field("readers", &self.readers.len())
            .finish()
    }
}

impl<T: Archive> Producer<T> {
    /// A producer whose ring lives in a sealed memfd, for readers in other processes.
    ///
    /// # Errors
    /// [`SegmentError`] if the configuration is invalid or the memfd cannot be made.
    #[cfg(not(firehose_loom))]
    pub fn new(config: RingConfig) -> Result<Self, SegmentError> {
        Self::with_backing(config, Backing::Memfd)
    }

    /// A producer whose ring lives on the heap: single process only (tests, Miri).
    ///
    /// # Errors
    /// [`SegmentError`] if the configuration is invalid.
    pub fn new_heap(config: RingConfig) -> Result<Self, SegmentError> {
        Self::with_backing(config, Backing::Heap)
    }

    fn with_backing(mut config: RingConfig, backing: Backing) -> Result<Self, SegmentError> {
        const { assert!(std::mem::align_of::<T::Archived>() <= FRAME_ALIGN) };
        if !cfg!(firehose_loom) {
            config.check()?;
        }
        config.batch_bytes = config.batch_bytes.clamp(FRAME_ALIGN, config.capacity / 4);
        let params = SegmentParams {
            capacity: config.capacity,
            epoch: 1,
            base_pos: 0,
            first_seq: config.first_seq,
            max_record: config.max_record,
        };
        let seg = Self::make_segment(backing, params)?;
        Ok(Producer {
            cap: config.capacity as u64,
            w: 0,
            committed_seq: config.first_seq,
            next_seq: config.first_seq,
            staged: 0,
            pending: AlignedVec::with_capacity(
                config.batch_bytes + 2 * frame_len(config.max_record),
            ),
            reserved: 0,
            staged_first: None,
            scratch: AlignedVec::new(),
            arena: Arena::new(),
            readers: Vec::new(),
            next_reader: 1,
            min_released: None,
            closed: false,
            rotations: std::collections::VecDeque::new(),
            on_rotate: None,
            direct_min: DIRECT_MIN,
            backing,
            seg,
            config,
            _t: PhantomData,
        })
    }

    fn make_segment(backing: Backing, params: SegmentParams) -> Result<Segment, SegmentError> {
        match backing {
            Backing::Heap => Segment::new_heap(params),
            #[cfg(not(firehose_loom))]
            Backing::Memfd => Segment::new_memfd(params),
            #[cfg(firehose_loom)]
            Backing::Memfd => unreachable!("no memfds under loom"),
        }
    }

    /// The current segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The configuration in force.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// Seq the next staged record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Seq after the last committed frame (readers can see everything before it).
    pub fn committed_seq(&self) -> u64 {
        self.committed_seq
    }

    /// Bytes staged and not yet committed.
    pub fn staged_bytes(&self) -> usize {
        self.staged as usize + self.pending.len()
    }

    /// Committed write position.
    pub fn write_pos(&self) -> u64 {
        self.w
    }

    /// How many readers are attached.
    pub fn reader_count(&self) -> usize {
        self.readers.len()
    }

    /// Serializes `value` and stages it as the next record; returns its seq. Commits first
    /// if the staged batch is full.
    ///
    /// # Errors
    /// [`PublishError::TooLarge`] (nothing staged), [`PublishError::Serialize`], or an error of
    /// the automatic [`commit`](Self::commit) (the record is not staged; retry).
    pub fn stage(&mut self, value: &T) -> Result<u64, PublishError>
    where
        T: Encode,
    {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let scratch = match rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
            value,
            scratch,
            self.arena.acquire(),
        ) {
            Ok(s) => s,
            Err(e) => return Err(PublishError::Serialize(e)),
        };
        let r = self.stage_archived(&scratch);
        self.scratch = scratch;
        r
    }

    /// Stages already-archived bytes as the next record (for forwarding, and for benchmarks
    /// that measure the transport without serialization). Readers validate every record, so
    /// bytes that are not an archived `T` reach them as an access error, never as UB.
    ///
    /// # Errors
    /// As [`stage`](Self::stage).
    pub fn stage_archived(&mut self, payload: &[u8]) -> Result<u64, PublishError> {
        if payload.len() > self.config.max_record {
            return Err(PublishError::TooLarge {
                len: payload.len(),
                max: self.config.max_record,
            });
        }
        let seq = self.next_seq;
        let next = seq.checked_add(1).ok_or(PublishError::SeqExhausted)?;
        self.stage_frame(FrameKind::Record, seq, payload)?;
        self.next_seq = next;
        Ok(seq)
    }

    /// Stages a gap: seqs `next_seq ..= to` will never be streamed, for `reason` (a code the
    /// application defines). Readers see it in order, as `Event::Gap`.
    ///
    /// # Errors
    /// [`PublishError::GapBackwards`] if `to < next_seq`, [`PublishError::SeqExhausted`] if
    /// `to` is `u64::MAX`, or an error of the automatic commit.
    pub fn stage_gap(&mut self, to: u64, reason: u32) -> Result<(), PublishError> {
        let from = self.next_seq;
        if to < from {
            return Err(PublishError::GapBackwards { to, next: from });
        }
        let next = to.checked_add(1).ok_or(PublishError::SeqExhausted)?;
        let mut payload = [0u8; GAP_PAYLOAD];
        payload[..8].copy_from_slice(&to.to_ne_bytes());
        payload[8..].copy_from_slice(&u64::from(reason).to_ne_bytes());
        self.stage_frame(FrameKind::Gap, from, &payload)?;
        self.next_seq = next;
        Ok(())
    }

    /// Stages one frame (after a padding frame, if it would cross the end of the data area),
    /// unpublished until `commit`. A frame with a payload of [`DIRECT_MIN`] bytes or more is
    /// written straight into the ring (one copy); smaller ones gather in the private buffer
    /// and go into the ring in one bulk copy (measured: per-record writes into shared lines
    /// halve 64 B throughput when the two cores are far apart, while one copy instead of two
    /// lifts 4 KiB from 28 to 47 GB/s).
    fn stage_frame(
        &mut self,
        kind: FrameKind,
        seq: u64,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        if self.closed {
            return Err(PublishError::Closed);
        }
        let flen = frame_len(payload.len()) as u64;
        let held = self.staged + self.pending.len() as u64;
        if held > 0 && held + flen > self.config.batch_bytes as u64 {
            self.commit()?;
        }
        let pos = self.w + self.staged + self.pending.len() as u64;
        // `cap` is a power of two: a mask, not a divide (a `div` per frame was measured at a
        // third of staging time).
        let off = pos & (self.cap - 1);
        let pad = if off + flen > self.cap {
            self.cap - off
        } else {
            0
        };
        let end = pos + pad + flen;
        if !self.has_room(end) {
            // Readers can only release what they have seen: publish the batch so far first
            // (this leaves `pos` where it is).
            if self.staged_bytes() > 0 {
                self.commit()?;
            }
            self.wait_for_room(end, flen as usize)?;
        }
        let start = pos + pad;
        if payload.len() >= self.direct_min {
            self.flush_pending();
            self.reserve(end);
            let data = self.seg.data();
            let mask = self.cap - 1;
            if pad > 0 {
                store_header(
                    data,
                    pos & mask,
                    FrameKind::Padding,
                    (pad - FRAME_HEADER as u64) as u32,
                    seq,
                );
            }
            store_header(data, start & mask, kind, payload.len() as u32, seq);
            store_payload(data, (start & mask) + FRAME_HEADER as u64, payload);
            self.staged += pad + flen;
        } else {
            if pad > 0 {
                push_header(
                    &mut self.pending,
                    FrameKind::Padding,
                    (pad - FRAME_HEADER as u64) as u32,
                    seq,
                );
                self.pending
                    .resize(self.pending.len() + pad as usize - FRAME_HEADER, 0);
            }
            push_header(&mut self.pending, kind, payload.len() as u32, seq);
            let before = self.pending.len();
            self.pending.extend_from_slice(payload);
            self.pending.resize(before + align_up(payload.len()), 0);
        }
        if self.staged_first.is_none() {
            self.staged_first = Some((start, seq));
        }
        Ok(())
    }

    /// Copies the privately staged frames into the ring after the staged ones.
    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let at = self.w + self.staged;
        let len = self.pending.len() as u64;
        self.reserve(at + len);
        copy_into_ring(&self.seg, at, &self.pending);
        self.staged += len;
        self.pending.clear();
    }

    /// Moves the reserve cursor past `end` before anything there is written, a batch at a
    /// time (one store and fence per batch, not per record).
    fn reserve(&mut self, end: u64) {
        if end <= self.reserved {
            return;
        }
        let to = end.max(self.w + self.config.batch_bytes as u64);
        // SYNC POINT (reserve): a lagging reader that copies bytes we are about to overwrite
        // sees this value after its fence(Acquire) (fence-to-fence synchronization through
        // the data words it read), so it knows its copy may be torn. Relaxed store: the fence
        // below orders it before the data writes.
        self.seg.header().reserve.0.store(to, Ordering::Relaxed);
        sync::fence(Site::ReserveFence, Ordering::Release);
        self.reserved = to;
    }

    /// Stages and commits one record. Returns its seq.
    ///
    /// # Errors
    /// As [`stage`](Self::stage) and [`commit`](Self::commit).
    pub fn publish(&mut self, value: &T) -> Result<u64, PublishError>
    where
        T: Encode,
    {
        let seq = self.stage(value)?;
        self.commit()?;
        Ok(seq)
    }

    /// Stages every record and commits them (in as few batches as `batch_bytes` allows).
    /// Returns the seq of the last one.
    ///
    /// # Errors
    /// As [`stage`](Self::stage) and [`commit`](Self::commit).
    pub fn publish_batch<'v>(
        &mut self,
        values: impl IntoIterator<Item = &'v T>,
    ) -> Result<Option<u64>, PublishError>
    where
        T: Encode + 'v,
    {
        let mut last = None;
        for v in values {
            last = Some(self.stage(v)?);
        }
        self.commit()?;
        Ok(last)
    }

    /// The lossless room check: is there space for `len` more bytes ahead of every lossless
    /// reader? Re-reads reader pages only when the cached minimum says no.
    fn has_room(&mut self, end: u64) -> bool {
        match self.min_released {
            None => true,
            Some((min, _)) if end <= min + self.cap => true,
            Some(_) => {
                self.refresh_min_released();
                self.min_released
                    .is_none_or(|(min, _)| end <= min + self.cap)
            }
        }
    }

    fn refresh_min_released(&mut self) {
        let base = self.seg.base_pos();
        let mut min: Option<(u64, ReaderId)> = None;
        for slot in self.readers.iter().filter(|s| s.policy == Policy::Lossless) {
            // SYNC POINT (release): pairs with the reader's Release store of `released` after
            // it has finished with every frame before it, so our overwrites of those bytes
            // happen after its reads.
            let raw = slot
                .cursor
                .page()
                .released
                .0
                .load(sync::ord(Site::ReleaseLoad, Ordering::Acquire));
            // Hostile input: a position from an older segment counts as this segment's start,
            // one past the write cursor as the write cursor.
            let r = raw.clamp(base, self.w);
            if min.is_none_or(|(m, _)| r < m) {
                min = Some((r, slot.id));
            }
        }
        self.min_released = min;
    }

    /// Publishes the staged batch with one Release store of the write cursor, and wakes
    /// sleeping readers. (Room was made when each record was staged.)
    ///
    /// # Errors
    /// [`PublishError::Closed`].
    pub fn commit(&mut self) -> Result<(), PublishError> {
        if self.closed {
            return Err(PublishError::Closed);
        }
        self.flush_pending();
        if self.staged == 0 {
            return Ok(());
        }
        let end = self.w + self.staged;
        let hdr = self.seg.header();
        if let Some((pos, seq)) = self.staged_first.take() {
            // Relaxed: published by the Release store of resync_head below. A reader that
            // races with a later overwrite of this slot checks the frame at `pos` against
            // `seq` anyway.
            let head = hdr.resync_head.0.load(Ordering::Relaxed);
            let slot = &hdr.resync[(head % RESYNC_SLOTS as u64) as usize];
            slot.pos.store(pos, Ordering::Relaxed);
            slot.seq.store(seq, Ordering::Relaxed);
            hdr.resync_head.0.store(head + 1, Ordering::Release);
        }
        // SYNC POINT (publish): pairs with the reader's Acquire load of the write cursor;
        // every frame before `end` is visible to a reader that sees `end`.
        hdr.write
            .0
            .store(end, sync::ord(Site::PublishStore, Ordering::Release));
        self.w = end;
        self.staged = 0;
        self.committed_seq = self.next_seq;
        self.wake_sleepers();
        Ok(())
    }

    fn wait_for_room(&mut self, end: u64, needed: usize) -> Result<(), PublishError> {
        let deadline = Instant::now() + self.config.lossless_wait;
        let mut spins = 0u32;
        let mut last_seen = self.min_released.map(|(m, _)| m);
        let mut last_progress = Instant::now();
        let mut rotation_failed = false;
        loop {
            if self.has_room(end) {
                return Ok(());
            }
            // A departed lossless reader holds us back: leave it behind in this segment
            // (its borrowed frames stay intact there) rather than wait for it. Once per
            // wait: if the new segment cannot be made, wait as for any lossless reader.
            if !rotation_failed && self.departed_blocks() {
                let departed: Vec<ReaderId> = self
                    .readers
                    .iter()
                    .filter(|s| s.departed)
                    .map(|s| s.id)
                    .collect();
                // Nothing is staged here (committed before waiting), and the capacity
                // stays, so `end` keeps its meaning in the new segment.
                match self.rotate(None, &departed) {
                    Ok(_) => continue,
                    Err(_) => rotation_failed = true,
                }
            }
            let now = Instant::now();
            let seen = self.min_released.map(|(m, _)| m);
            if seen != last_seen {
                last_seen = seen;
                last_progress = now;
                spins = 0;
            }
            if now >= deadline {
                let (min, reader) = self
                    .min_released
                    .expect("no room implies a lossless reader");
                return Err(PublishError::Backpressure {
                    reader,
                    needed,
                    free: (min + self.cap).saturating_sub(self.w + self.staged) as usize,
                });
            }
            // While the slowest reader is moving (it released something in the last
            // millisecond), poll: spin, then yield. Sleep only once it has stalled: a sleep
            // here lasts hundreds of µs on this VM, long enough for the reader to drain the
            // ring and fall asleep too (measured: 2-3x slower runs at 64 B).
            if now.duration_since(last_progress) < ACTIVE_READER {
                sync::backoff_active(&mut spins);
            } else {
                sync::backoff(&mut spins);
            }
            // The reader is asleep only if it released everything; wake it in case it sleeps
            // on data it has not seen yet.
            self.wake_sleepers();
        }
    }

    fn wake_sleepers(&self) {
        // SYNC POINT (sleep): pairs with the reader's fence(SeqCst) between storing its
        // sleeping flag and re-checking the write cursor: either it sees our write cursor
        // store, or we see its flag (store-buffering with SeqCst fences on both sides).
        sync::fence(Site::SleepProducer, Ordering::SeqCst);
        for slot in &self.readers {
            let flag = &slot.cursor.page().sleeping.0;
            // Relaxed: ordered by the fence above. The swap means one wake per sleep, even
            // if the reader never drains its pipe.
            if flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::Relaxed) != 0 {
                slot.wake.wake();
            }
        }
    }

    /// Whether the slowest lossless reader (as last refreshed) is one that departed.
    fn departed_blocks(&self) -> bool {
        self.min_released
            .is_some_and(|(_, id)| self.readers.iter().any(|s| s.id == id && s.departed))
    }

    fn add_slot(
        &mut self,
        policy: Policy,
        cursor: CursorMem,
        wake: WakeTx,
    ) -> Result<ReaderId, SegmentError> {
        let key = cursor.key();
        if policy == Policy::Lossless && !self.seg.add_lossless(key) {
            // The table is full. Departed readers keep their entries until a rotation
            // leaves them behind: make that rotation now, if there are any.
            let departed: Vec<ReaderId> = self
                .readers
                .iter()
                .filter(|s| s.departed)
                .map(|s| s.id)
                .collect();
            if departed.is_empty() {
                return Err(SegmentError::LosslessFull {
                    max: super::layout::LOSSLESS_SLOTS,
                });
            }
            self.rotate(None, &departed)?;
            if !self.seg.add_lossless(key) {
                return Err(SegmentError::LosslessFull {
                    max: super::layout::LOSSLESS_SLOTS,
                });
            }
        }
        let id = ReaderId(self.next_reader);
        self.next_reader += 1;
        // Relaxed: the page reaches the reader through an fd sent over a socket or an Arc
        // clone, both of which order this store before the reader's loads.
        cursor.page().released.0.store(self.w, Ordering::Relaxed);
        if policy == Policy::Lossless {
            match self.min_released {
                Some((m, _)) if m <= self.w => {}
                _ => self.min_released = Some((self.w, id)),
            }
        }
        self.readers.push(Slot {
            id,
            policy,
            cursor,
            key,
            wake,
            departed: false,
        });
        Ok(id)
    }

    /// Attaches a reader in this process, sharing the producer's memory.
    ///
    /// # Errors
    /// [`SegmentError`] if its cursor page or wake pipe cannot be made.
    pub fn attach_local(&mut self, policy: Policy) -> Result<Reader<T>, SegmentError> {
        let cursor = match self.backing {
            Backing::Heap => CursorMem::new_heap(),
            #[cfg(not(firehose_loom))]
            Backing::Memfd => CursorMem::new_memfd()?,
            #[cfg(firehose_loom)]
            Backing::Memfd => unreachable!(),
        };
        let (tx, rx) = wake::pair().map_err(|e| SegmentError::Create { size: 0, source: e })?;
        let claimed = cursor.claim();
        debug_assert!(claimed, "a new page is unclaimed");
        let id = self.add_slot(policy, cursor.clone(), tx)?;
        Ok(Reader::from_parts(
            id,
            policy,
            self.seg.clone(),
            cursor,
            rx,
            self.w,
            self.committed_seq,
        ))
    }

    /// Attaches a reader for another process: makes its sealed cursor page and wake pipe
    /// and returns the fds to send it.
    ///
    /// # Errors
    /// [`SegmentError`] if memfds or pipes cannot be made, or the ring is on the heap.
    #[cfg(not(firehose_loom))]
    pub fn attach_remote(&mut self, policy: Policy) -> Result<ReaderFds, SegmentError> {
        if self.seg.fd().is_none() {
            return Err(SegmentError::Create {
                size: 0,
                source: std::io::Error::new(std::io::ErrorKind::Unsupported, "heap ring has no fd"),
            });
        }
        let cursor = CursorMem::new_memfd()?;
        let cursor_fd = cursor
            .fd()
            .expect("memfd page")
            .try_clone_to_owned()
            .map_err(SegmentError::Map)?;
        let (tx, wake) =
            wake::pair_fds().map_err(|e| SegmentError::Create { size: 0, source: e })?;
        // `add_slot` may rotate (to make room in the lossless table): take the ring fd
        // after it, so the reader gets the segment it is registered in.
        let id = self.add_slot(policy, cursor, tx)?;
        let ring = match self.seg.fd().map(|fd| fd.try_clone_to_owned()) {
            Some(Ok(fd)) => fd,
            Some(Err(e)) => {
                // Nobody will read through this slot; a lossless one departs (and is left
                // behind by the next rotation that needs its room).
                self.remove_reader(id);
                return Err(SegmentError::Map(e));
            }
            None => unreachable!("a memfd producer's segments are memfds"),
        };
        Ok(ReaderFds {
            id,
            policy,
            start_pos: self.w,
            start_seq: self.committed_seq,
            ring,
            cursor: cursor_fd,
            wake,
        })
    }

    /// Moves the size from which payloads are written straight into the ring (tests).
    #[cfg(test)]
    pub(crate) fn set_direct_min(&mut self, bytes: usize) {
        self.direct_min = bytes;
    }

    /// A reader's released position as the producer sees it (clamped to the current
    /// segment), and its lag behind the write cursor in bytes. `None` for an unknown id.
    pub fn reader_progress(&self, id: ReaderId) -> Option<(u64, u64)> {
        let slot = self.readers.iter().find(|s| s.id == id)?;
        // Acquire: as in `refresh_min_released`; this is only a report.
        let raw = slot.cursor.page().released.0.load(Ordering::Acquire);
        let r = raw.clamp(self.seg.base_pos(), self.w);
        Some((r, self.w - r))
    }

    /// Every attached reader (departed lossless ones included) with its policy, released
    /// position (clamped) and lag behind the write cursor in bytes, in one pass.
    pub fn readers_progress(&self) -> Vec<ReaderProgress> {
        self.readers
            .iter()
            .map(|slot| {
                // Acquire: as in `refresh_min_released`; this is only a report.
                let raw = slot.cursor.page().released.0.load(Ordering::Acquire);
                let r = raw.clamp(self.seg.base_pos(), self.w);
                ReaderProgress {
                    id: slot.id,
                    policy: slot.policy,
                    departed: slot.departed,
                    released: r,
                    lag: self.w - r,
                }
            })
            .collect()
    }

    /// How long [`commit`](Self::commit) (and a `stage` that commits) may wait for a
    /// lossless reader to make room before it returns [`PublishError::Backpressure`]. A
    /// thread that owns the producer and also serves requests keeps this short, and does
    /// its longer waiting where it can also answer them.
    pub fn set_lossless_wait(&mut self, wait: Duration) {
        self.config.lossless_wait = wait;
    }

    /// The policy of an attached reader.
    pub fn reader_policy(&self, id: ReaderId) -> Option<Policy> {
        self.readers.iter().find(|s| s.id == id).map(|s| s.policy)
    }

    /// Removes a reader (its process exited, or it disconnected). Returns false for an
    /// unknown id.
    ///
    /// A lagging reader is forgotten at once: the producer never waited for it.
    ///
    /// A lossless reader **departs** instead: its process may still hold the mapping and
    /// borrow frames in place, so the producer keeps honouring its released position for as
    /// long as it writes this segment. Its wake fd is closed (it learns the producer is gone
    /// for it). The moment it would hold the producer back, the producer
    /// [rotates](Self::rotate) and leaves it behind in the old segment, which is never
    /// written again; a reader that departs while keeping up costs nothing. Departed readers
    /// also leave when a rotation happens for any other reason, or when the segment's
    /// lossless table (`LOSSLESS_SLOTS`) needs their room. So no call ends a lossless
    /// reader's backpressure except a rotation.
    pub fn remove_reader(&mut self, id: ReaderId) -> bool {
        let Some(i) = self.readers.iter().position(|s| s.id == id) else {
            return false;
        };
        if self.readers[i].policy == Policy::Lossless {
            let slot = &mut self.readers[i];
            slot.departed = true;
            slot.wake.close();
        } else {
            self.readers.remove(i);
        }
        true
    }

    /// Lossless readers listed in the current segment: `(live, departed)`.
    pub fn lossless_readers(&self) -> (usize, usize) {
        let lossless = self.readers.iter().filter(|s| s.policy == Policy::Lossless);
        let departed = lossless.clone().filter(|s| s.departed).count();
        (lossless.count() - departed, departed)
    }

    /// Takes the rotations made since the last call, oldest first (the service sends each
    /// new segment to its readers, in order). At most the last 16 are kept.
    pub fn take_rotations(&mut self) -> Vec<Rotation> {
        self.rotations.drain(..).collect()
    }

    /// Sets a function called after every rotation, with the producer still borrowed: keep
    /// it short (the service writes one byte to wake its socket loop).
    pub fn set_rotation_hook(&mut self, hook: Box<dyn Fn() + Send>) {
        self.on_rotate = Some(hook);
    }

    /// Moves to a new segment (a new memfd, the next epoch) of `capacity` bytes (`None`: the
    /// same). The old segment is never written again, so readers still in it (and the
    /// frames a lossless reader borrows from it) stay intact. `cut_off` readers are
    /// dropped (a lossless reader that stalled), and so is every lossless reader that
    /// departed ([`remove_reader`](Self::remove_reader)); every other reader follows the
    /// switch when it reaches the end of the old segment, and lossless readers keep their
    /// backpressure there. Staged records are committed in the old segment first.
    ///
    /// Returns the new segment, to hand to readers in other processes; the same rotation is
    /// also queued for [`take_rotations`](Self::take_rotations).
    ///
    /// # Errors
    /// [`SegmentError`] if the new segment cannot be made (the producer stays on the old one).
    pub fn rotate(
        &mut self,
        capacity: Option<usize>,
        cut_off: &[ReaderId],
    ) -> Result<Segment, SegmentError> {
        let mut config = self.config.clone();
        if let Some(c) = capacity {
            config.capacity = c;
            config.check()?;
            config.batch_bytes = config.batch_bytes.clamp(FRAME_ALIGN, c / 4);
        }
        // Publish what is staged in the old segment first (room for it was made when it
        // was staged), so no staged record has to move to the new one: nothing can be lost
        // on the way, and no seq that `stage` returned is handed out twice, whether or not
        // the new segment can be made. (A closed producer has nothing staged.)
        if !self.closed {
            self.commit()
                .expect("commit fails only on a closed producer");
        }
        let old = self.seg.clone();
        let params = SegmentParams {
            capacity: config.capacity,
            epoch: old.epoch() + 1,
            base_pos: self.w,
            first_seq: self.committed_seq,
            max_record: config.max_record,
        };
        // If this fails, the producer stays on the old segment, every reader with it.
        let new = Self::make_segment(self.backing, params)?;
        // Readers that follow keep their backpressure in the new segment: list them there.
        // Departed lossless readers are left behind with the ones cut off.
        let mut left: Vec<ReaderId> = cut_off.to_vec();
        for slot in &self.readers {
            if slot.departed && !left.contains(&slot.id) {
                left.push(slot.id);
            }
        }
        for slot in self.readers.iter().filter(|s| !left.contains(&s.id)) {
            if slot.policy == Policy::Lossless {
                let listed = new.add_lossless(slot.key);
                debug_assert!(listed, "the old segment listed at least as many");
            }
        }
        let st = &old.header().state.0;
        // Relaxed: published by the Release store of `state`.
        st.end_pos.store(self.w, Ordering::Relaxed);
        st.end_seq.store(self.committed_seq, Ordering::Relaxed);
        st.next_epoch.store(params.epoch, Ordering::Relaxed);
        // Pairs with the reader's Acquire load of `state` when it finds nothing to read.
        st.state.store(STATE_SWITCHED, Ordering::Release);
        for slot in self.readers.iter().filter(|s| left.contains(&s.id)) {
            // Pairs with the Acquire load in `Reader::follow`: a lossless reader left behind
            // refuses to follow (the new segment does not list it either).
            slot.cursor
                .page()
                .flags
                .0
                .store(CURSOR_CUT_OFF, Ordering::Release);
        }
        self.readers.retain(|s| !left.contains(&s.id));
        self.reserved = self.w;
        self.staged_first = None;
        self.seg = new.clone();
        self.cap = config.capacity as u64;
        self.config = config;
        // Lossless readers count as being at the new segment's start until they follow.
        self.refresh_min_released();
        self.wake_all();
        if self.rotations.len() == ROTATIONS_KEPT {
            self.rotations.pop_front();
        }
        self.rotations.push_back(Rotation {
            segment: new.clone(),
            previous: old,
            cut_off: left,
        });
        if let Some(hook) = &self.on_rotate {
            hook();
        }
        Ok(new)
    }

    fn wake_all(&self) {
        for slot in &self.readers {
            slot.wake.wake();
        }
    }

    /// Commits what is staged, marks the ring closed and wakes
    /// every reader: each reads what is left, then gets `ReadError::Closed`.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        let _ = self.commit();
        self.closed = true;
        // Pairs with the reader's Acquire load of `state`.
        self.seg
            .header()
            .state
            .0
            .state
            .store(STATE_CLOSED, Ordering::Release);
        self.wake_all();
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            // Pairs with the reader's Acquire load of `state`. Staged records are dropped:
            // they were never committed, and readers learn the ring closed.
            self.seg
                .header()
                .state
                .0
                .state
                .store(STATE_CLOSED, Ordering::Release);
            for slot in &self.readers {
                slot.wake.wake();
            }
        }
    }
}

/// Appends a frame header to a private staging buffer.
fn push_header(buf: &mut AlignedVec, kind: FrameKind, payload_len: u32, seq: u64) {
    buf.extend_from_slice(&header_word(kind, payload_len).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
}

/// Copies privately staged bytes into the data area at position `at`, splitting at the wrap.
fn copy_into_ring(seg: &Segment, at: u64, bytes: &[u8]) {
    let data = seg.data();
    let start = ((at & (seg.capacity() as u64 - 1)) / 8) as usize;
    debug_assert_eq!(bytes.len() % 8, 0);
    let n = bytes.len() / 8;
    let first = n.min(data.len() - start);
    super::bulk::store(&data[start..start + first], &bytes[..first * 8]);
    if first < n {
        super::bulk::store(&data[..n - first], &bytes[first * 8..]);
    }
}

/// Stores a frame header (two words) at data offset `off`.
#[inline]
fn store_header(
    data: &[crate::sync::AtomicU64],
    off: u64,
    kind: FrameKind,
    payload_len: u32,
    seq: u64,
) {
    let i = (off / 8) as usize;
    // Relaxed: published by the write cursor's Release store; a lagging reader detects
    // overwrites through the reserve cursor, not through these words.
    data[i].store(header_word(kind, payload_len), Ordering::Relaxed);
    data[i + 1].store(seq, Ordering::Relaxed);
}

/// Stores a payload at data offset `off` (a frame never crosses the end of the data area),
/// zero-padded to the frame alignment.
#[inline]
fn store_payload(data: &[crate::sync::AtomicU64], off: u64, payload: &[u8]) {
    let i = (off / 8) as usize;
    let full = payload.len() / 8;
    super::bulk::store(&data[i..i + full], &payload[..full * 8]);
    let mut k = i + full;
    let rest = &payload[full * 8..];
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        // Relaxed: as in `store_header`.
        data[k].store(u64::from_ne_bytes(w), Ordering::Relaxed);
        k += 1;
    }
    for z in &data[k..i + align_up(payload.len()) / 8] {
        // Relaxed: as in `store_header`.
        z.store(0, Ordering::Relaxed);
    }
}
