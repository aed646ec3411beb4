//! A reader of the ring, in one of two policies.
//!
//! - **Lossless**: the producer never overwrites what this reader has not released, so
//!   frames are borrowed in place (zero-copy). Frames handed out by one call are released
//!   at the start of the next call that takes `&mut self` (or by [`Reader::release`]), which
//!   the borrow checker only allows once every borrow of them has ended. Soundness does not
//!   rest on a destructor: a leaked [`Batch`] keeps its frames unreleased (backpressure),
//!   never exposed to overwrites.
//! - **Lagging**: the producer never waits. The reader copies at most a quarter of the ring
//!   in one bulk copy of atomic word loads, then `fence(Acquire)` and a check of the reserve
//!   cursor tell whether any copied byte may have been overwritten; if so the whole run is
//!   dropped (frame boundaries are only known by walking from a trusted start), the reader
//!   jumps to the newest resync point and reports `Lagged { from, to }`. Nothing in the copy
//!   is trusted before the check, not even a length.
//!
//! Either way, every frame header is validated as it is walked, and every payload is
//! validated by rkyv when the application [accesses](RecordRef::access) it.

use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::{rancor, Archive, Portable};

#[cfg(not(firehose_loom))]
use super::error::SegmentError;
use super::error::{AccessError, CorruptKind, ReadError};
use super::layout::{
    frame_len, FrameHeader, FrameKind, CURSOR_CUT_OFF, FRAME_ALIGN, FRAME_HEADER, GAP_PAYLOAD,
    RESYNC_SLOTS, STATE_CLOSED, STATE_OPEN, STATE_SWITCHED,
};
use super::memory::{CursorMem, Segment};
use super::producer::ReaderId;
use super::wake::{WakeRx, Woken};
use crate::sync::{self, AtomicU64, Ordering, Site};

/// How a reader relates to the producer, chosen when it attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The producer waits for this reader (within its budget); frames are borrowed in place.
    Lossless,
    /// The producer never waits; a reader that falls a ring behind is told what it missed.
    Lagging,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryKind {
    Record,
    Gap,
    Lagged,
}

/// One event of a batch: a record's place, a gap, or a lag report.
#[derive(Clone, Copy, Debug)]
struct Entry {
    kind: EntryKind,
    /// Record: its seq. Gap and Lagged: the first missing seq.
    seq: u64,
    /// Record: byte offset of the payload from the batch base. Gap, Lagged: last missing seq.
    a: u64,
    /// Record: payload length. Gap: reason.
    b: u64,
}

/// 16 bytes, 16-aligned: the lagging reader's copy buffer is made of these, so that every
/// payload in it is aligned as in the ring.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
struct Block([u64; 2]);

const _: () = assert!(std::mem::align_of::<Block>() == FRAME_ALIGN);

/// The walking state: where the next trusted frame starts and which seq it must carry.
#[derive(Debug)]
struct Walk {
    pos: u64,
    next_seq: u64,
    cap: u64,
    max_record: usize,
    entries: Vec<Entry>,
    /// A corruption met while walking, reported by the next call (after the good frames).
    pending_error: Option<ReadError>,
    /// Set when the reader must jump to a resync point: one at or after `after` (lapped),
    /// or strictly after it (`strict`: the frame at `after` is corrupt).
    resync: Option<Resync>,
    /// A range skipped by `follow`, reported first by the next call.
    pending_lag: Option<(u64, u64)>,
}

#[derive(Clone, Copy, Debug)]
struct Resync {
    after: u64,
    strict: bool,
}

impl Walk {
    /// Walks frames starting at `self.pos`. `word(o)` reads the word at byte offset `o` from
    /// `pos`; `have` bytes from `pos` are readable, `avail` are committed. Pushes up to
    /// `max` events and returns the bytes consumed. `payload_at(o)` maps a payload's offset
    /// from `pos` to its offset from the batch base.
    fn walk(
        &mut self,
        have: usize,
        avail: u64,
        max: usize,
        word: impl Fn(usize) -> u64,
        payload_at: impl Fn(usize) -> u64,
    ) -> usize {
        let mut o = 0usize;
        let mut events = 0;
        while events < max && o + FRAME_HEADER <= have {
            let at = self.pos + o as u64;
            let w0 = word(o);
            let h = match FrameHeader::decode(w0, word(o + 8)) {
                Ok(h) => h,
                Err(_) => {
                    self.corrupt(at, CorruptKind::BadHeader(w0));
                    break;
                }
            };
            // `cap` is a power of two: a mask, not a divide (measured: 40% of a 64 B drain).
            let ring_off = at & (self.cap - 1);
            if h.kind == FrameKind::Padding {
                // Padding ends exactly at the end of the data area; its bytes are not needed.
                let flen = (h.payload_len as u64).saturating_add(FRAME_HEADER as u64);
                if ring_off + flen != self.cap || !flen.is_multiple_of(FRAME_ALIGN as u64) {
                    self.corrupt(at, CorruptKind::Wrap);
                    break;
                }
                if o as u64 + flen > avail {
                    break;
                }
                o += flen as usize;
                continue;
            }
            if h.payload_len > self.max_record {
                self.corrupt(at, CorruptKind::TooLong(h.payload_len));
                break;
            }
            let flen = frame_len(h.payload_len);
            if o + flen > have {
                break;
            }
            if ring_off + flen as u64 > self.cap {
                self.corrupt(at, CorruptKind::Wrap);
                break;
            }
            if h.seq != self.next_seq {
                self.corrupt(
                    at,
                    CorruptKind::Seq {
                        found: h.seq,
                        expected: self.next_seq,
                    },
                );
                break;
            }
            match h.kind {
                FrameKind::Record => {
                    self.entries.push(Entry {
                        kind: EntryKind::Record,
                        seq: h.seq,
                        a: payload_at(o + FRAME_HEADER),
                        b: h.payload_len as u64,
                    });
                    self.next_seq += 1;
                }
                FrameKind::Gap => {
                    // The length first: only a gap frame of exactly two payload words has
                    // them inside `have` (checked above for this length).
                    if h.payload_len != GAP_PAYLOAD {
                        self.corrupt(at, CorruptKind::Gap);
                        break;
                    }
                    let to = word(o + FRAME_HEADER);
                    let reason = word(o + FRAME_HEADER + 8);
                    if to < h.seq || to == u64::MAX {
                        self.corrupt(at, CorruptKind::Gap);
                        break;
                    }
                    self.entries.push(Entry {
                        kind: EntryKind::Gap,
                        seq: h.seq,
                        a: to,
                        b: reason,
                    });
                    self.next_seq = to + 1;
                }
                FrameKind::Padding => unreachable!("handled above"),
            }
            o += flen;
            events += 1;
        }
        self.pos += o as u64;
        o
    }

    fn corrupt(&mut self, pos: u64, what: CorruptKind) {
        self.pending_error = Some(ReadError::Corrupt { pos, what });
        self.resync = Some(Resync {
            after: pos,
            strict: true,
        });
    }

    fn push_lagged(&mut self, from: u64, to: u64) {
        self.entries.push(Entry {
            kind: EntryKind::Lagged,
            seq: from,
            a: to,
            b: 0,
        });
    }
}

/// A reader of the ring. Generic over the payload type `T`; see the module docs for the two
/// policies.
pub struct Reader<T> {
    id: ReaderId,
    policy: Policy,
    seg: Segment,
    pub(crate) cursor: CursorMem,
    wake: WakeRx,
    walk: Walk,
    /// Lagging: the bulk copy of the ring, a quarter of its capacity.
    buf: Vec<Block>,
    /// Lossless: the position handed out last, released on the next call.
    handed: u64,
    spin: u32,
    /// The producer's end of the wake channel closed (seen by `finish_wait`).
    hung_up: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Reader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("id", &self.id)
            .field("policy", &self.policy)
            .field("segment", &self.seg)
            .field("pos", &self.walk.pos)
            .field("next_seq", &self.walk.next_seq)
            .finish()
    }
}

impl<T: Archive> Reader<T> {
    pub(crate) fn from_parts(
        id: ReaderId,
        policy: Policy,
        seg: Segment,
        cursor: CursorMem,
        wake: WakeRx,
        start_pos: u64,
        start_seq: u64,
    ) -> Self {
        const { assert!(std::mem::align_of::<T::Archived>() <= FRAME_ALIGN) };
        let mut r = Reader {
            id,
            policy,
            walk: Walk {
                pos: start_pos,
                next_seq: start_seq,
                cap: 0,
                max_record: 0,
                entries: Vec::new(),
                pending_error: None,
                resync: None,
                pending_lag: None,
            },
            seg: seg.clone(),
            cursor,
            wake,
            buf: Vec::new(),
            handed: start_pos,
            spin: if cfg!(any(firehose_loom, miri)) {
                0
            } else {
                2000
            },
            hung_up: false,
            _t: PhantomData,
        };
        r.adopt(seg);
        r
    }

    fn adopt(&mut self, seg: Segment) {
        self.walk.cap = seg.capacity() as u64;
        self.walk.max_record = seg.max_record();
        if self.policy == Policy::Lagging {
            self.buf.resize(
                seg.capacity() / 4 / std::mem::size_of::<Block>(),
                Block::default(),
            );
        }
        self.seg = seg;
    }

    /// Opens a reader from fds received from the producer, checking each memfd's seals and
    /// size before mapping it.
    ///
    /// # Errors
    /// [`SegmentError`] for a ring or cursor page that is not sealed, sized or versioned as
    /// it must be.
    ///
    /// The policy is checked against the producer, not taken on trust: a lossless reader's
    /// cursor page must be listed in the segment's lossless table (which only the producer
    /// can write), it must start where the producer set its released position, and a page
    /// serves one reader only, ever (so duplicated or passed-on fds cannot open a second
    /// reader that would release frames the first still borrows).
    ///
    /// # Errors
    /// Also [`SegmentError::NotLossless`], [`SegmentError::StartPosition`] and
    /// [`SegmentError::CursorClaimed`].
    #[cfg(not(firehose_loom))]
    pub fn open(fds: super::producer::ReaderFds) -> Result<Self, SegmentError> {
        let seg = Segment::open(fds.ring)?;
        let cursor = CursorMem::open(fds.cursor)?;
        if fds.policy == Policy::Lossless {
            if !seg.lists_lossless(cursor.key()) {
                return Err(SegmentError::NotLossless);
            }
            // Acquire: the producer stored it before the fds left (a syscall ago); after a
            // successful claim below, only this reader stores it.
            let released = cursor.page().released.0.load(Ordering::Acquire);
            // The start must also lie in this segment, between its base and its write
            // cursor: a position before the base aliases bytes the producer is writing.
            // Acquire: as in `fill_frames`.
            let write = seg.header().write.0.load(Ordering::Acquire);
            if released != fds.start_pos || fds.start_pos < seg.base_pos() || fds.start_pos > write
            {
                return Err(SegmentError::StartPosition {
                    start: fds.start_pos,
                    released,
                });
            }
        }
        if !cursor.claim() {
            return Err(SegmentError::CursorClaimed);
        }
        let wake = WakeRx::from_fd(fds.wake).map_err(SegmentError::Map)?;
        Ok(Self::from_parts(
            fds.id,
            fds.policy,
            seg,
            cursor,
            wake,
            fds.start_pos,
            fds.start_seq,
        ))
    }

    /// The reader's id on the producer's side.
    pub fn id(&self) -> ReaderId {
        self.id
    }

    /// The reader's policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The segment being read.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The seq the next record (or gap or lag report) starts at.
    pub fn next_seq(&self) -> u64 {
        self.walk.next_seq
    }

    /// How many times [`recv`](Self::recv) checks the write cursor before it sleeps on the
    /// wake fd. Zero: sleep at once. Default 2000 (a few µs).
    pub fn set_spin(&mut self, spins: u32) {
        self.spin = spins;
    }

    /// Releases every frame handed out so far (for a lossless reader, this is what lets
    /// the producer reuse their bytes). Happens on its own at the start of every receive
    /// call.
    pub fn release(&mut self) {
        // What was handed out is gone with the release: `current` must never hand it out
        // again (a lossless reader's released frames may be overwritten).
        self.walk.entries.clear();
        // A lagging reader stores its position too: the producer never waits for it, but
        // reports its lag.
        if self.handed != self.walk.pos {
            self.handed = self.walk.pos;
            self.store_released();
        }
    }

    fn store_released(&self) {
        // SYNC POINT (release): pairs with the producer's Acquire load of `released`; our
        // reads of every frame before `handed` happen before its overwrites of them.
        self.cursor.page().released.0.store(
            self.handed,
            sync::ord(Site::ReleaseStore, Ordering::Release),
        );
    }

    /// Hands out up to `max` events that are ready now, without waiting (possibly none).
    ///
    /// # Errors
    /// [`ReadError::SegmentEnded`] (call [`follow`](Self::follow)), [`ReadError::Closed`],
    /// [`ReadError::Corrupt`] (the next call resynchronises and reports the skipped range).
    pub fn try_recv(&mut self, max: usize) -> Result<Batch<'_, T>, ReadError> {
        self.fill(max)?;
        Ok(self.batch())
    }

    /// The same as [`try_recv`](Self::try_recv): hands out up to `max` events that are
    /// ready now. The call a GUI makes once per frame.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn drain(&mut self, max: usize) -> Result<Batch<'_, T>, ReadError> {
        self.try_recv(max)
    }

    /// Waits until at least one event is ready, then hands out up to `max`. Spins first (see
    /// [`set_spin`](Self::set_spin)), then sleeps on the wake fd.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv), and [`ReadError::ProducerGone`] when the producer's
    /// end of the wake pipe closes without the ring being closed.
    pub fn recv(&mut self, max: usize) -> Result<Batch<'_, T>, ReadError> {
        self.recv_deadline(max, None)
    }

    /// As [`recv`](Self::recv), but returns an empty batch when `timeout` passes.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<Batch<'_, T>, ReadError> {
        self.recv_deadline(max, Some(Instant::now() + timeout))
    }

    fn recv_deadline(
        &mut self,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<Batch<'_, T>, ReadError> {
        loop {
            self.fill(max)?;
            if !self.walk.entries.is_empty() || max == 0 {
                break;
            }
            if self.spin_for_data() {
                continue;
            }
            let timeout_ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    left.as_millis().clamp(1, i32::MAX as u128) as i32
                }
            };
            if self.prepare_wait() {
                let woken = self
                    .wake
                    .wait(timeout_ms)
                    .map_err(|e| ReadError::Wait(e.kind()));
                // `wait` drained the byte that woke it: only lower the flag.
                self.end_sleep();
                if woken? == Woken::Hangup {
                    self.fill(max)?;
                    if self.walk.entries.is_empty() {
                        return Err(ReadError::ProducerGone);
                    }
                    break;
                }
            }
        }
        Ok(self.batch())
    }

    fn spin_for_data(&self) -> bool {
        let hdr = self.seg.header();
        for _ in 0..self.spin {
            // Relaxed: only a hint; `fill` loads the cursor again with Acquire.
            if hdr.write.0.load(Ordering::Relaxed) != self.walk.pos
                || hdr.state.0.state.load(Ordering::Relaxed) != STATE_OPEN
            {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }

    /// The fd to poll (readable) beside others before sleeping; `None` when the ring has no
    /// wake pipe (Miri). Call [`prepare_wait`](Self::prepare_wait) first.
    pub fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.wake.fd()
    }

    /// Announces that the reader is about to sleep on [`wake_fd`](Self::wake_fd). Returns
    /// `false` if there is something to read after all (do not sleep; receive instead).
    /// Releases held frames first, so a sleeping lossless reader never holds the producer.
    pub fn prepare_wait(&mut self) -> bool {
        self.release();
        let hdr = self.seg.header();
        let flag = &self.cursor.page().sleeping.0;
        // Relaxed: ordered by the fence below.
        flag.store(1, Ordering::Relaxed);
        // SYNC POINT (sleep): pairs with the producer's fence(SeqCst) between its write
        // cursor store and its check of this flag: either we see its new cursor below, or
        // it sees our flag and writes the wake byte.
        sync::fence(Site::SleepReader, Ordering::SeqCst);
        let moved = hdr.write.0.load(Ordering::Relaxed) != self.walk.pos
            || hdr.state.0.state.load(Ordering::Relaxed) != STATE_OPEN
            || self.walk.pending_error.is_some();
        if moved {
            flag.store(0, Ordering::Relaxed);
        }
        !moved
    }

    /// Ends a sleep begun with [`prepare_wait`](Self::prepare_wait). Pass whether `poll`
    /// reported the wake fd readable: if so, the wake bytes are read away (never blocking,
    /// so a stale report is harmless). Pass `false` if something else woke the caller; a
    /// byte that arrives later makes the next sleep return at once, harmlessly. If the
    /// producer's end turned out closed, the next receive that finds nothing returns
    /// [`ReadError::ProducerGone`].
    pub fn finish_wait(&mut self, wake_fd_readable: bool) {
        self.end_sleep();
        if wake_fd_readable && self.wake.clear() {
            self.hung_up = true;
        }
    }

    fn end_sleep(&mut self) {
        // Relaxed: the flag is a hint for the producer; a stale 1 costs one spare wake byte.
        self.cursor.page().sleeping.0.store(0, Ordering::Relaxed);
    }

    /// Moves to the segment the producer switched to (after [`ReadError::SegmentEnded`]).
    /// If the reader had not read the old segment to its end, the seqs it skips are
    /// reported as lagged.
    ///
    /// # Errors
    /// [`ReadError::WrongSegment`] for a segment that does not come after this one;
    /// [`ReadError::CutOff`] for a lossless reader the producer cut off.
    pub fn follow(&mut self, seg: Segment) -> Result<(), ReadError> {
        if seg.same_as(&self.seg) {
            return Ok(());
        }
        let expected = self.seg.epoch() + 1;
        if seg.epoch() < expected || seg.first_seq() < self.walk.next_seq {
            return Err(ReadError::WrongSegment {
                got: seg.epoch(),
                expected,
            });
        }
        // A lossless reader reads in place only where the producer honours its cursor: the
        // new segment must list its page. (The cut-off flag says the same sooner; the
        // table is what the reader cannot forge, since only the producer writes it.)
        // Acquire: pairs with the producer's Release store of the flag in `rotate`.
        if self.policy == Policy::Lossless
            && (self.cursor.page().flags.0.load(Ordering::Acquire) & CURSOR_CUT_OFF != 0
                || !seg.lists_lossless(self.cursor.key()))
        {
            return Err(ReadError::CutOff);
        }
        if seg.first_seq() > self.walk.next_seq {
            self.walk.pending_lag = Some((self.walk.next_seq, seg.first_seq() - 1));
        }
        self.walk.entries.clear();
        self.walk.pos = seg.base_pos();
        self.walk.next_seq = seg.first_seq();
        self.walk.pending_error = None;
        self.walk.resync = None;
        self.handed = seg.base_pos();
        self.adopt(seg);
        if self.policy == Policy::Lossless {
            self.store_released();
        }
        Ok(())
    }

    /// Fills `walk.entries` with up to `max` events.
    fn fill(&mut self, max: usize) -> Result<(), ReadError> {
        self.walk.entries.clear();
        self.release();
        if let Some(e) = self.walk.pending_error.take() {
            return Err(e);
        }
        if let Some((from, to)) = self.walk.pending_lag.take() {
            self.walk.push_lagged(from, to);
        }
        self.fill_frames(max)?;
        if self.walk.entries.is_empty() {
            if let Some(e) = self.walk.pending_error.take() {
                return Err(e);
            }
            if self.hung_up {
                return Err(ReadError::ProducerGone);
            }
        }
        Ok(())
    }

    fn fill_frames(&mut self, max: usize) -> Result<(), ReadError> {
        if self.walk.resync.is_some() && !self.resync() {
            return Ok(());
        }
        for _attempt in 0..8 {
            let hdr = self.seg.header();
            // SYNC POINT (publish): pairs with the producer's Release store of the write
            // cursor; every frame before `w` is visible.
            let w = hdr
                .write
                .0
                .load(sync::ord(Site::PublishLoad, Ordering::Acquire));
            let pos = self.walk.pos;
            if pos < self.seg.base_pos() {
                // Before this segment's start: such bytes are not this reader's to read.
                self.walk.corrupt(pos, CorruptKind::Cursor(w));
                return Ok(());
            }
            if w == pos {
                return self.check_end();
            }
            let avail = w.wrapping_sub(pos);
            if w < pos || (avail > self.walk.cap && self.policy == Policy::Lossless) {
                // No cursor goes backwards, and a lossless reader is never lapped.
                self.walk.corrupt(pos, CorruptKind::Cursor(w));
                return Ok(());
            }
            if avail > self.walk.cap {
                self.walk.resync = Some(Resync {
                    after: pos,
                    strict: false,
                });
                if !self.resync() {
                    return Ok(());
                }
                continue;
            }
            match self.policy {
                Policy::Lossless => {
                    self.walk_in_place(avail, max);
                    return Ok(());
                }
                Policy::Lagging => {
                    if self.copy_and_walk(avail, max) {
                        return Ok(());
                    }
                    // Lapped during the copy: resync and try again.
                    self.walk.resync = Some(Resync {
                        after: pos,
                        strict: false,
                    });
                    if !self.resync() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Nothing new to read: has the segment ended or the ring closed?
    fn check_end(&mut self) -> Result<(), ReadError> {
        let hdr = self.seg.header();
        // Pairs with the producer's Release store of `state`, after its last write cursor
        // store: if we see the new state, we see the final write cursor.
        let state = hdr.state.0.state.load(Ordering::Acquire);
        if state == STATE_OPEN || !self.walk.entries.is_empty() {
            return Ok(());
        }
        if hdr.write.0.load(Ordering::Acquire) != self.walk.pos {
            return Ok(()); // more frames arrived before the end: read them first
        }
        match state {
            STATE_SWITCHED => {
                let st = &hdr.state.0;
                // Relaxed: published by the Acquire load of `state` above.
                Err(ReadError::SegmentEnded {
                    next_epoch: st.next_epoch.load(Ordering::Relaxed),
                    next_seq: st.end_seq.load(Ordering::Relaxed),
                })
            }
            STATE_CLOSED => Err(ReadError::Closed),
            _ => Ok(()),
        }
    }

    fn walk_in_place(&mut self, avail: u64, max: usize) {
        #[cfg(firehose_loom)]
        {
            // Loom's atomics are not plain memory, so frames cannot be borrowed in place:
            // copy them (with no reserve check: a lossless reader is never overwritten).
            let have = (avail.min(self.walk.cap) as usize) & !(FRAME_ALIGN - 1);
            self.buf.resize(
                self.walk.cap as usize / std::mem::size_of::<Block>(),
                Block::default(),
            );
            copy_words(
                self.seg.data(),
                self.walk.pos,
                self.walk.cap,
                &mut self.buf,
                have,
            );
            let buf = &self.buf;
            let word = |o: usize| -> u64 { buf[o / 16].0[(o % 16) / 8] };
            self.walk.walk(have, avail, max, word, |o| o as u64);
        }
        #[cfg(not(firehose_loom))]
        self.walk_in_place_mapped(avail, max);
    }

    #[cfg(not(firehose_loom))]
    fn walk_in_place_mapped(&mut self, avail: u64, max: usize) {
        let data = self.seg.data();
        let cap = self.walk.cap;
        let pos = self.walk.pos;
        let have = avail.min(cap) as usize;
        let word = |o: usize| -> u64 {
            // Relaxed: published by the Acquire load of the write cursor; the producer does
            // not write these bytes until we release them.
            data[(((pos + o as u64) & (cap - 1)) / 8) as usize].load(Ordering::Relaxed)
        };
        self.walk
            .walk(have, avail, max, word, |o| (pos + o as u64) & (cap - 1));
    }

    /// Copies up to a quarter of the ring, checks the copy against the reserve cursor and
    /// walks it. Returns false if the copy may be torn (lapped).
    fn copy_and_walk(&mut self, avail: u64, max: usize) -> bool {
        let data = self.seg.data();
        let cap = self.walk.cap;
        let pos = self.walk.pos;
        let n = (avail.min(cap / 4) as usize) & !(FRAME_ALIGN - 1);
        copy_words(data, pos, cap, &mut self.buf, n);
        #[cfg(test)]
        AFTER_COPY.with(|h| {
            let hook = h.borrow_mut().take();
            if let Some(hook) = hook {
                hook();
            }
        });
        // SYNC POINT (reserve): pairs with the producer's fence(Release) after its reserve
        // store: if any word we copied was written after that fence, this load sees the
        // reserve value that covers it.
        sync::fence(Site::CopyFence, Ordering::Acquire);
        let reserve = self.seg.header().reserve.0.load(Ordering::Relaxed);
        if reserve > pos + cap {
            return false;
        }
        let buf = &self.buf;
        let word = |o: usize| -> u64 { buf[o / 16].0[(o % 16) / 8] };
        self.walk.walk(n, avail, max, word, |o| o as u64);
        true
    }

    /// Moves to the newest resync point allowed by `walk.resync` and reports the seqs
    /// skipped. Returns false, leaving `walk.resync` set, if no valid point is found now
    /// (tried again on the next call).
    fn resync(&mut self) -> bool {
        let Some(Resync { after, strict }) = self.walk.resync else {
            return true;
        };
        let hdr = self.seg.header();
        let data = self.seg.data();
        let cap = self.walk.cap;
        for _attempt in 0..16 {
            // Pairs with the producer's Release store of resync_head.
            let head = hdr.resync_head.0.load(Ordering::Acquire);
            let w = hdr
                .write
                .0
                .load(sync::ord(Site::PublishLoad, Ordering::Acquire));
            let mut choice = None;
            for i in (head.saturating_sub(RESYNC_SLOTS as u64)..head).rev() {
                let slot = &hdr.resync[(i % RESYNC_SLOTS as u64) as usize];
                // Relaxed: checked against the frame header at `p` below.
                let p = slot.pos.load(Ordering::Relaxed);
                let q = slot.seq.load(Ordering::Relaxed);
                let fresh = if strict { p > after } else { p >= after };
                if fresh
                    && p < w
                    && w - p <= cap
                    && q >= self.walk.next_seq
                    && p.is_multiple_of(FRAME_ALIGN as u64)
                {
                    choice = Some((p, q));
                    break;
                }
            }
            let Some((p, q)) = choice else { return false };
            let i = ((p & (cap - 1)) / 8) as usize;
            // Relaxed: validated by the reserve check and the seq comparison below.
            let w0 = data[i].load(Ordering::Relaxed);
            let s = data[i + 1].load(Ordering::Relaxed);
            // SYNC POINT (reserve): as in `copy_and_walk`.
            sync::fence(Site::CopyFence, Ordering::Acquire);
            if hdr.reserve.0.load(Ordering::Relaxed) > p + cap {
                continue;
            }
            match FrameHeader::decode(w0, s) {
                Ok(h) if h.seq == q && h.kind != FrameKind::Padding => {}
                _ => continue,
            }
            if q > self.walk.next_seq {
                self.walk.push_lagged(self.walk.next_seq, q - 1);
            }
            self.walk.pos = p;
            self.walk.next_seq = q;
            self.handed = p;
            self.walk.resync = None;
            return true;
        }
        false
    }

    /// Fills the next batch and returns how many events it has; [`Reader::current`] then
    /// hands it out. (Two steps, so that glue code can loop on an empty batch.)
    pub(crate) fn fill_ready(&mut self, max: usize) -> Result<usize, ReadError> {
        self.fill(max)?;
        Ok(self.walk.entries.len())
    }

    /// The batch the last [`fill_ready`](Self::fill_ready) made.
    pub(crate) fn current(&mut self) -> Batch<'_, T> {
        self.batch()
    }

    fn batch(&mut self) -> Batch<'_, T> {
        let base = match self.policy {
            Policy::Lossless if !cfg!(firehose_loom) => self.seg.data_ptr(),
            _ => self.buf.as_ptr().cast::<u8>(),
        };
        Batch {
            entries: &self.walk.entries,
            base,
            _t: PhantomData,
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook run once between a lagging reader's bulk copy and its reserve check, to lap
    /// the reader in the middle of its copy.
    pub(crate) static AFTER_COPY: std::cell::RefCell<Option<Box<dyn FnOnce()>>> = const { std::cell::RefCell::new(None) };
}

/// Copies `n` bytes (a multiple of 16) starting at ring position `pos` into `buf`, splitting
/// at the wrap.
#[inline]
fn copy_words(data: &[AtomicU64], pos: u64, cap: u64, buf: &mut [Block], n: usize) {
    let start = ((pos & (cap - 1)) / 8) as usize;
    let words = n / 8;
    let first = words.min(data.len() - start);
    let dst = blocks_as_words(buf);
    // Relaxed loads (or their bulk equivalent): the copy is checked against the reserve
    // cursor after fence(Acquire).
    super::bulk::load(&mut dst[..first], &data[start..start + first]);
    super::bulk::load(&mut dst[first..words], &data[..words - first]);
}

/// Views the copy buffer as words.
fn blocks_as_words(b: &mut [Block]) -> &mut [u64] {
    // SAFETY: Block is `repr(C)` over `[u64; 2]` with no padding (size 16, align 16), so `b`
    // is exactly `2 * b.len()` initialised, aligned u64s, borrowed mutably for the result's
    // lifetime.
    unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<u64>(), b.len() * 2) }
}

/// The events one receive call handed out. Borrows the reader: frames stay valid (and, for
/// a lossless reader, unreleased) until the next call on the reader.
pub struct Batch<'a, T> {
    entries: &'a [Entry],
    /// Lossless: the ring's data area. Lagging: the reader's copy buffer.
    base: *const u8,
    _t: PhantomData<&'a T>,
}

impl<T> std::fmt::Debug for Batch<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("events", &self.entries.len())
            .finish()
    }
}

impl<'a, T: Archive> Batch<'a, T> {
    /// Number of events (records, gaps and lag reports).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing was handed out.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The events, in seq order.
    pub fn iter(&self) -> BatchIter<'a, T> {
        BatchIter {
            entries: self.entries.iter(),
            base: self.base,
            _t: PhantomData,
        }
    }
}

impl<'a, T: Archive> IntoIterator for &Batch<'a, T> {
    type Item = Event<'a, T>;
    type IntoIter = BatchIter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over a [`Batch`].
pub struct BatchIter<'a, T> {
    entries: std::slice::Iter<'a, Entry>,
    base: *const u8,
    _t: PhantomData<&'a T>,
}

impl<T> std::fmt::Debug for BatchIter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchIter")
            .field("left", &self.entries.len())
            .finish()
    }
}

impl<'a, T: Archive> Iterator for BatchIter<'a, T> {
    type Item = Event<'a, T>;

    fn next(&mut self) -> Option<Event<'a, T>> {
        let e = self.entries.next()?;
        Some(match e.kind {
            EntryKind::Record => {
                // SAFETY: the walker pushed a record entry only for a payload of `b` bytes at
                // offset `a` that lies inside the memory behind `base` (the copy buffer: within
                // the copied run; the data area: inside it, never crossing its end). That
                // memory is not written while 'a lives: the copy buffer only changes through
                // `&mut Reader`, which the batch borrows; a lossless reader's frames are not
                // overwritten until released, which also needs `&mut Reader`. Entries live
                // only from the fill that made them to the next release or follow, both of
                // which clear them, so no later batch (`current`) is rebuilt over released
                // frames or another segment.
                let bytes = unsafe {
                    std::slice::from_raw_parts(self.base.wrapping_add(e.a as usize), e.b as usize)
                };
                Event::Record(RecordRef {
                    seq: e.seq,
                    bytes,
                    _t: PhantomData,
                })
            }
            EntryKind::Gap => Event::Gap {
                from: e.seq,
                to: e.a,
                reason: e.b as u32,
            },
            EntryKind::Lagged => Event::Lagged {
                from: e.seq,
                to: e.a,
            },
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

/// One thing a reader is told, in seq order.
#[derive(Debug)]
pub enum Event<'a, T> {
    /// A record.
    Record(RecordRef<'a, T>),
    /// Seqs `from ..= to` were skipped by the producer on purpose, for `reason`.
    Gap {
        /// First skipped seq.
        from: u64,
        /// Last skipped seq.
        to: u64,
        /// The producer's reason code.
        reason: u32,
    },
    /// This reader missed seqs `from ..= to` (it fell a ring behind, or skipped corrupt
    /// frames): backfill them from history if it needs them.
    Lagged {
        /// First missed seq.
        from: u64,
        /// Last missed seq.
        to: u64,
    },
}

/// A record in a batch: its seq and its payload bytes, not yet validated.
pub struct RecordRef<'a, T> {
    seq: u64,
    bytes: &'a [u8],
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for RecordRef<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRef")
            .field("seq", &self.seq)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl<'a, T: Archive> RecordRef<'a, T> {
    /// The record's seq.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The archived payload bytes (exactly the payload: no padding), aligned to
    /// [`FRAME_ALIGN`].
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Validates the payload (rkyv bytecheck) and gives zero-copy access to it.
    ///
    /// # Errors
    /// [`AccessError`] if the bytes are not a valid archive of `T`.
    pub fn access(&self) -> Result<&'a T::Archived, AccessError>
    where
        T::Archived: Portable + for<'b> CheckBytes<HighValidator<'b, rancor::Error>>,
    {
        rkyv::access::<T::Archived, rancor::Error>(self.bytes).map_err(|source| AccessError {
            seq: self.seq,
            source,
        })
    }

    /// Access without validation.
    ///
    /// # Safety
    /// The caller trusts the producer: the bytes must be a valid archive of `T` (as written
    /// by `Producer::stage` of this `T`). Bytes from a producer that may be buggy or hostile
    /// must go through [`access`](Self::access).
    pub unsafe fn access_unchecked(&self) -> &'a T::Archived
    where
        T::Archived: Portable,
    {
        // SAFETY: the caller guarantees a valid archive; the slice is aligned to FRAME_ALIGN,
        // which is at least the archived type's alignment (asserted at construction), and it
        // ends exactly at the archive's end (no padding), where rkyv finds the root.
        unsafe { rkyv::access_unchecked::<T::Archived>(self.bytes) }
    }
}
