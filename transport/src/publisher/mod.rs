//! The ring's one owner: a thread that owns the [`Producer`] outright and is the only code
//! that ever touches it.
//!
//! ```text
//!  feeder (the service's pipeline) ── Publisher::offer(Item) ──► bounded queue ─┐
//!  control loop ── RingLink: attach, remove, snapshot ──────────► commands ─────┤
//!                                                                              ▼
//!                                     owner thread: stage, commit, wait for room, judge
//!                                     lossless progress, rotate, attach, remove
//!                                                                              │
//!  control loop ◄── LinkEvent: attached, rotated (+ who was cut off), snapshot ◄┘
//!                   (a channel, and one byte on a socket pair to wake its poll)
//! ```
//!
//! Why one owner and not a mutex: waiting for a lossless reader to make room is a wait that
//! another process controls. Under a shared mutex that wait froze everyone else who needed
//! the producer (welcoming a reader, checking progress, handling a disconnect), including the
//! code that would have cut the stalled reader off. Here no lock is held across any wait:
//! while a record waits for room, the owner keeps answering commands, and it judges the
//! readers' progress itself ([`progress`]): the side that sees a reader stall cuts it off.
//!
//! # What the owner guarantees
//!
//! - Items are staged in seq order. A hole in the seq line (items the feeder could not
//!   queue) is staged as a gap frame with [`PublisherConfig::hole_reason`] before the next
//!   record, so readers are told of it in order; an item behind the line is dropped and
//!   counted ([`PublisherStats::behind`]).
//! - A record that finds no room (a lossless reader holds the ring back) waits, with the
//!   items behind it, while the reader keeps within its budget; the queue in front is
//!   bounded, so the feeder never waits (it turns what it cannot queue into a hole).
//! - A command is answered within about [`PublisherConfig::room_wait`] plus one batch of
//!   staging, whatever any reader does.
//! - [`Publisher::finish`] ends within about [`PublisherConfig::finish_wait`]: what cannot
//!   be placed by then is dropped and counted, the ring is closed.
//! - Every error of the ring is counted in [`PublisherStats`] and logged once per kind.

pub mod progress;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use rkyv::Archive;

use crate::ring::{
    Encode, Policy, Producer, PublishError, ReaderFds, ReaderId, ReaderProgress, Rotation,
    SegmentError,
};
use progress::{Progress, ProgressConfig};

/// What the feeder hands the owner.
#[derive(Debug)]
pub enum Item<T> {
    /// A record with the seq the feeder gave it.
    Record {
        /// Its seq; seqs must increase (holes become gap frames).
        seq: u64,
        /// The record.
        value: T,
    },
    /// Seqs from the next one up to `to` are skipped, for `reason` (an application code).
    Gap {
        /// Last skipped seq.
        to: u64,
        /// Why (the code readers see).
        reason: u32,
    },
}

/// How the owner runs.
#[derive(Clone, Copy, Debug)]
pub struct PublisherConfig {
    /// Items the queue in front of the owner holds (default 65,536).
    pub queue: usize,
    /// Most items staged per commit (default 4096; a commit also happens when the queue
    /// runs dry, so latency stays low at low rates).
    pub batch: usize,
    /// The gap reason staged for a hole in the seq line.
    pub hole_reason: u32,
    /// The lossless readers' progress budget.
    pub progress: ProgressConfig,
    /// How long one attempt to place a record may wait for room inside the producer
    /// (default 1 ms): the owner answers commands between attempts.
    pub room_wait: Duration,
    /// How long queued items may still wait for room at [`Publisher::finish`] (default 1 s).
    pub finish_wait: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            queue: 65_536,
            batch: 4096,
            hole_reason: 0,
            progress: ProgressConfig::default(),
            room_wait: Duration::from_millis(1),
            finish_wait: Duration::from_secs(1),
        }
    }
}

/// Counters, shared with whoever reports them. Every access is Relaxed: they are counts for
/// reports only, and no other memory is published through them.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Records committed into the ring.
    pub published: AtomicU64,
    /// Gap frames staged (holes and gap items).
    pub gaps: AtomicU64,
    /// Items [`Publisher::offer`] refused because the queue was full.
    pub refused: AtomicU64,
    /// Items behind the seq line (dropped: never twice, never backwards).
    pub behind: AtomicU64,
    /// Records the ring could not take for an error other than backpressure (too large,
    /// not serializable): each became a gap.
    pub failed: AtomicU64,
    /// Items dropped at shutdown because a lossless reader left no room in time.
    pub dropped_at_finish: AtomicU64,
    /// Times a record had to wait for a lossless reader to make room.
    pub blocked: AtomicU64,
    /// Rotations of the ring.
    pub rotations: AtomicU64,
    /// Rotations that could not be made (the producer stayed on its segment).
    pub rotation_errors: AtomicU64,
    /// Lossless readers cut off for missing their progress budget.
    pub cut_off: AtomicU64,
    /// Attach requests that failed (memfds or pipes could not be made, lossless table
    /// full).
    pub attach_errors: AtomicU64,
}

/// A reader attached for another process, with what its welcome needs.
#[derive(Debug)]
pub struct Attached {
    /// The fds to send it.
    pub fds: ReaderFds,
    /// The ring's capacity in bytes.
    pub capacity: u64,
    /// The segment the fds belong to.
    pub epoch: u64,
}

/// Why an attach was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachRefused {
    /// As many lossless readers as allowed are attached (departed ones that could not be
    /// left behind included).
    #[error("{max} lossless readers already (the limit); connect lagging")]
    LosslessFull {
        /// The limit.
        max: usize,
    },
    /// The reader's memfds or wake channel could not be made.
    #[error("cannot attach a reader: {0}")]
    Failed(String),
}

/// The ring as the owner saw it when asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingSnapshot {
    /// Capacity of the current segment in bytes.
    pub capacity: u64,
    /// Epoch of the current segment.
    pub epoch: u64,
    /// Seq after the last committed frame.
    pub committed_seq: u64,
    /// Every attached reader (departed lossless ones included).
    pub readers: Vec<ReaderProgress>,
    /// Items waiting in the queue.
    pub queued: usize,
    /// The lossless reader a record waits for right now, if any.
    pub blocked_by: Option<ReaderId>,
}

/// What the owner tells the control loop, in the order it happened.
#[derive(Debug)]
pub enum LinkEvent {
    /// The answer to [`RingLink::attach`] for `token`.
    Attached {
        /// The caller's token.
        token: u64,
        /// The reader, or why not.
        result: Result<Attached, AttachRefused>,
    },
    /// The ring moved to a new segment: readers that follow it need its fd. `too_slow`
    /// lists the lossless readers cut off for missing their progress budget (tell them
    /// why); the rotation's other left-behind readers had departed.
    Rotated {
        /// The rotation.
        rotation: Rotation,
        /// Cut off for being too slow.
        too_slow: Vec<ReaderId>,
    },
    /// The answer to [`RingLink::request_snapshot`].
    Snapshot(RingSnapshot),
}

/// The owner thread is gone (it finished, or panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ring's owner thread is gone")]
pub struct OwnerGone;

enum Command {
    Attach {
        token: u64,
        policy: Policy,
        max_lossless: usize,
    },
    Remove(ReaderId),
    /// `None`: answer with a [`LinkEvent`].
    Snapshot(Option<Sender<RingSnapshot>>),
    /// Answered once everything queued before it is committed.
    Sync(Sender<()>),
    /// The feeder is done: place what is queued within `finish_wait` and close, even if an
    /// item waits for room (the queue's hang-up alone is not seen while one does).
    Finish,
}

/// The control loop's side: commands in, events out, and a socket that becomes readable
/// when an event waits.
#[derive(Debug)]
pub struct RingLink {
    cmd: Sender<Command>,
    events: Receiver<LinkEvent>,
    wake: UnixStream,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Attach { token, policy, .. } => write!(f, "Attach({token}, {policy:?})"),
            Command::Remove(id) => write!(f, "Remove({id})"),
            Command::Snapshot(_) => write!(f, "Snapshot"),
            Command::Sync(_) => write!(f, "Sync"),
            Command::Finish => write!(f, "Finish"),
        }
    }
}

impl RingLink {
    /// Asks for a reader for another process; answered by [`LinkEvent::Attached`] with
    /// `token`. A lossless one is refused when `max_lossless` lossless readers are attached
    /// and no departed one can be left behind to make room.
    ///
    /// # Errors
    /// [`OwnerGone`].
    pub fn attach(&self, token: u64, policy: Policy, max_lossless: usize) -> Result<(), OwnerGone> {
        self.send(Command::Attach {
            token,
            policy,
            max_lossless,
        })
    }

    /// Removes a reader (its connection ended). A lossless one departs: the producer honours
    /// it until a rotation leaves it behind ([`Producer::remove_reader`]).
    ///
    /// # Errors
    /// [`OwnerGone`].
    pub fn remove(&self, id: ReaderId) -> Result<(), OwnerGone> {
        self.send(Command::Remove(id))
    }

    /// Asks for a [`RingSnapshot`]; answered by [`LinkEvent::Snapshot`].
    ///
    /// # Errors
    /// [`OwnerGone`].
    pub fn request_snapshot(&self) -> Result<(), OwnerGone> {
        self.send(Command::Snapshot(None))
    }

    fn send(&self, c: Command) -> Result<(), OwnerGone> {
        self.cmd.send(c).map_err(|_| OwnerGone)
    }

    /// Readable when an event waits; poll it with the sockets.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The next event, if one waits. Drains the wake socket first, so a poll after this
    /// returns `None` sleeps until the next event.
    ///
    /// # Errors
    /// [`OwnerGone`] once the owner is gone and every event was taken.
    pub fn try_event(&self) -> Result<Option<LinkEvent>, OwnerGone> {
        use std::io::Read;
        let mut buf = [0u8; 64];
        // Drain before looking: an event sent after the look pokes again.
        while matches!((&self.wake).read(&mut buf), Ok(n) if n == buf.len()) {}
        match self.events.try_recv() {
            Ok(e) => Ok(Some(e)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(OwnerGone),
        }
    }
}

/// The feeder's side of the owner. Dropping it finishes the owner as
/// [`finish`](Self::finish) does.
#[derive(Debug)]
pub struct Publisher<T> {
    items: Option<Sender<Item<T>>>,
    cmd: Sender<Command>,
    stats: Arc<PublisherStats>,
    thread: Option<JoinHandle<()>>,
}

impl<T> Publisher<T>
where
    T: Archive + Encode + Send + 'static,
{
    /// Starts the owner thread over `producer`, which it owns from now on. Returns the
    /// feeder's handle and the control loop's link.
    ///
    /// # Errors
    /// If the thread or its wake socket cannot be made.
    pub fn start(
        mut producer: Producer<T>,
        config: PublisherConfig,
    ) -> io::Result<(Publisher<T>, RingLink)> {
        producer.set_lossless_wait(config.room_wait);
        let (items_tx, items_rx) = crossbeam_channel::bounded(config.queue.max(1));
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
        let (wake, poke) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        poke.set_nonblocking(true)?;
        let stats = Arc::new(PublisherStats::default());
        let owner = Owner {
            p: producer,
            items: items_rx,
            cmd: cmd_rx,
            events: ev_tx,
            poke,
            progress: Progress::new(config.progress),
            next_look: Instant::now(),
            cfg: config,
            stats: stats.clone(),
            held: None,
            blocked: None,
            syncs: Vec::new(),
            cutting: HashSet::new(),
            logged: HashSet::new(),
            finishing: false,
        };
        let thread = std::thread::Builder::new()
            .name("firehose-publisher".into())
            .spawn(move || owner.run())?;
        Ok((
            Publisher {
                items: Some(items_tx),
                cmd: cmd_tx.clone(),
                stats,
                thread: Some(thread),
            },
            RingLink {
                cmd: cmd_tx,
                events: ev_rx,
                wake,
            },
        ))
    }
}

impl<T> Publisher<T> {
    /// Queues an item without waiting.
    ///
    /// # Errors
    /// The item back if the queue is full (counted in [`PublisherStats::refused`]; a record
    /// left out becomes a hole, reported when the next one goes in) or the owner is gone.
    pub fn offer(&self, item: Item<T>) -> Result<(), Item<T>> {
        let Some(tx) = &self.items else {
            return Err(item);
        };
        match tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(it)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(it)
            }
            Err(TrySendError::Disconnected(it)) => Err(it),
        }
    }

    /// Queues an item, waiting while the queue is full (for tools and tests; a service's
    /// feeder uses [`offer`](Self::offer)).
    ///
    /// # Errors
    /// The item back if the owner is gone.
    pub fn send(&self, item: Item<T>) -> Result<(), Item<T>> {
        match &self.items {
            Some(tx) => tx.send(item).map_err(|e| e.into_inner()),
            None => Err(item),
        }
    }

    /// Waits until every item queued before this call is committed (or dropped and
    /// counted). Returns false if the owner is gone.
    pub fn sync(&self) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.cmd.send(Command::Sync(tx)).is_ok() && rx.recv().is_ok()
    }

    /// The ring as the owner sees it now (waits for the owner's answer; `None` if it is
    /// gone).
    pub fn snapshot(&self) -> Option<RingSnapshot> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.cmd.send(Command::Snapshot(Some(tx))).ok()?;
        rx.recv().ok()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<PublisherStats> {
        &self.stats
    }

    /// Publishes what is queued (waiting at most [`PublisherConfig::finish_wait`] for room),
    /// closes the ring (readers read to its end, then learn it closed) and stops the thread.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // Sent after every item this handle queued, so the owner sees them all. Err: the
        // owner is gone already.
        let _gone = self.cmd.send(Command::Finish);
        drop(self.items.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the ring's owner thread panicked");
            }
        }
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The longest the owner sleeps between attempts to place a record that waits for a
/// stalled reader (readers cannot wake the producer, so it looks).
const MAX_RETRY: Duration = Duration::from_millis(16);

/// The owner thread's state.
struct Owner<T> {
    p: Producer<T>,
    items: Receiver<Item<T>>,
    cmd: Receiver<Command>,
    events: Sender<LinkEvent>,
    poke: UnixStream,
    cfg: PublisherConfig,
    stats: Arc<PublisherStats>,
    progress: Progress,
    /// When the readers' progress is looked at next (at most 8 looks per window while
    /// records flow; open windows add their own due times).
    next_look: Instant,
    /// An item that found no room, waiting for it.
    held: Option<Item<T>>,
    /// Who it waits for, where that reader was at the last attempt, and the next retry
    /// delay.
    blocked: Option<(ReaderId, u64, Duration)>,
    syncs: Vec<Sender<()>>,
    /// Readers being cut off by the rotation in progress.
    cutting: HashSet<ReaderId>,
    /// Error kinds already logged.
    logged: HashSet<&'static str>,
    /// [`Command::Finish`] arrived.
    finishing: bool,
}

/// What placing an item gave.
enum Placed<T> {
    Done,
    /// No room: try again later.
    Blocked(Item<T>, ReaderId),
}

impl<T: Archive + Encode> Owner<T> {
    fn run(mut self) {
        loop {
            while let Ok(c) = self.cmd.try_recv() {
                self.command(c);
            }
            let open = self.feed();
            self.take_rotations();
            self.look_at_progress(Instant::now());
            self.answer_syncs();
            if !open || self.finishing {
                self.finish();
                return;
            }
            self.wait();
        }
    }

    /// Places the held item, then up to one batch from the queue, and commits. Returns
    /// false once the feeder is gone and the queue is empty.
    fn feed(&mut self) -> bool {
        if let Some(item) = self.held.take() {
            if !self.place_held(item) {
                return true;
            }
        }
        let mut open = true;
        for _ in 0..self.cfg.batch.max(1) {
            match self.items.try_recv() {
                Ok(item) => {
                    if let Placed::Blocked(item, reader) = self.place(item) {
                        self.hold(item, reader);
                        break;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        self.commit();
        open || self.held.is_some()
    }

    /// Tries the held item again. Returns whether it went in.
    fn place_held(&mut self, item: Item<T>) -> bool {
        match self.place(item) {
            Placed::Done => {
                self.blocked = None;
                true
            }
            Placed::Blocked(item, reader) => {
                self.hold(item, reader);
                false
            }
        }
    }

    fn hold(&mut self, item: Item<T>, reader: ReaderId) {
        self.commit();
        let pos = self.p.reader_progress(reader).map_or(0, |(pos, _)| pos);
        self.blocked = match self.blocked {
            None => {
                self.stats.blocked.fetch_add(1, Ordering::Relaxed);
                Some((reader, pos, Duration::ZERO))
            }
            // The reader moved: try again at once. It did not: wait longer each time.
            Some((r, at, _)) if r == reader && pos != at => Some((reader, pos, Duration::ZERO)),
            Some((r, _, d)) if r == reader => Some((
                reader,
                pos,
                (d * 2).clamp(Duration::from_millis(1), MAX_RETRY),
            )),
            Some(_) => Some((reader, pos, Duration::ZERO)),
        };
        self.held = Some(item);
    }

    /// Stages one item (and the hole before it).
    fn place(&mut self, item: Item<T>) -> Placed<T> {
        match item {
            Item::Gap { to, reason } => {
                if to < self.p.next_seq() {
                    self.stats.behind.fetch_add(1, Ordering::Relaxed);
                    return Placed::Done;
                }
                match self.p.stage_gap(to, reason) {
                    Ok(()) => {
                        self.stats.gaps.fetch_add(1, Ordering::Relaxed);
                        Placed::Done
                    }
                    Err(PublishError::Backpressure { reader, .. }) => {
                        Placed::Blocked(Item::Gap { to, reason }, reader)
                    }
                    Err(e) => {
                        self.error("staging a gap", &e);
                        Placed::Done
                    }
                }
            }
            Item::Record { seq, value } => {
                let next = self.p.next_seq();
                if seq < next {
                    self.stats.behind.fetch_add(1, Ordering::Relaxed);
                    return Placed::Done;
                }
                if seq > next {
                    match self.p.stage_gap(seq - 1, self.cfg.hole_reason) {
                        Ok(()) => {
                            self.stats.gaps.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(PublishError::Backpressure { reader, .. }) => {
                            return Placed::Blocked(Item::Record { seq, value }, reader);
                        }
                        Err(e) => {
                            self.error("staging a hole", &e);
                            return Placed::Done;
                        }
                    }
                }
                match self.p.stage(&value) {
                    Ok(_) => {
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                        Placed::Done
                    }
                    Err(PublishError::Backpressure { reader, .. }) => {
                        Placed::Blocked(Item::Record { seq, value }, reader)
                    }
                    Err(e) => {
                        // Too large, or not serializable: the seq becomes a hole (the
                        // record is in history if its rule stores it).
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        self.error("staging a record", &e);
                        self.place(Item::Gap {
                            to: seq,
                            reason: self.cfg.hole_reason,
                        })
                    }
                }
            }
        }
    }

    fn commit(&mut self) {
        if self.p.staged_bytes() == 0 {
            return;
        }
        if let Err(e) = self.p.commit() {
            self.error("committing", &e);
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Attach {
                token,
                policy,
                max_lossless,
            } => {
                let result = self.attach(policy, max_lossless);
                if result.is_err() {
                    self.stats.attach_errors.fetch_add(1, Ordering::Relaxed);
                }
                // A rotation made to attach goes out before the welcome's epoch.
                self.take_rotations();
                self.tell(LinkEvent::Attached { token, result });
            }
            Command::Remove(id) => {
                self.p.remove_reader(id);
            }
            Command::Snapshot(reply) => {
                let snap = self.snapshot();
                match reply {
                    Some(tx) => {
                        let _ = tx.send(snap); // the asker gave up: nothing to do
                    }
                    None => self.tell(LinkEvent::Snapshot(snap)),
                }
            }
            Command::Sync(tx) => self.syncs.push(tx),
            Command::Finish => self.finishing = true,
        }
    }

    fn attach(&mut self, policy: Policy, max_lossless: usize) -> Result<Attached, AttachRefused> {
        if policy == Policy::Lossless {
            let (live, departed) = self.p.lossless_readers();
            if live + departed >= max_lossless {
                if departed == 0 {
                    return Err(AttachRefused::LosslessFull { max: max_lossless });
                }
                // Make room by leaving the departed readers behind (a normal cost: one new
                // segment).
                if let Err(e) = self.rotate(&[]) {
                    return Err(AttachRefused::Failed(e.to_string()));
                }
                let (live, departed) = self.p.lossless_readers();
                if live + departed >= max_lossless {
                    return Err(AttachRefused::LosslessFull { max: max_lossless });
                }
            }
        }
        match self.p.attach_remote(policy) {
            Ok(fds) => Ok(Attached {
                fds,
                capacity: self.p.segment().capacity() as u64,
                epoch: self.p.segment().epoch(),
            }),
            Err(SegmentError::LosslessFull { .. }) => {
                Err(AttachRefused::LosslessFull { max: max_lossless })
            }
            Err(e) => Err(AttachRefused::Failed(e.to_string())),
        }
    }

    fn rotate(&mut self, cut: &[ReaderId]) -> Result<(), SegmentError> {
        match self.p.rotate(None, cut) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.stats.rotation_errors.fetch_add(1, Ordering::Relaxed);
                self.error("rotating the ring", &e);
                Err(e)
            }
        }
    }

    fn snapshot(&self) -> RingSnapshot {
        RingSnapshot {
            capacity: self.p.segment().capacity() as u64,
            epoch: self.p.segment().epoch(),
            committed_seq: self.p.committed_seq(),
            readers: self.p.readers_progress(),
            queued: self.items.len(),
            blocked_by: self.blocked.map(|(r, _, _)| r),
        }
    }

    /// Sends every rotation the producer made (to attach, to leave departed readers
    /// behind while placing a record, or to cut readers off) to the control loop, in order.
    fn take_rotations(&mut self) {
        for rotation in self.p.take_rotations() {
            self.stats.rotations.fetch_add(1, Ordering::Relaxed);
            let too_slow: Vec<ReaderId> = rotation
                .cut_off
                .iter()
                .copied()
                .filter(|id| self.cutting.remove(id))
                .collect();
            self.tell(LinkEvent::Rotated { rotation, too_slow });
        }
    }

    /// Judges the lossless readers' progress when it is time to, and cuts off those over
    /// budget (their borrowed frames stay intact in the old segment).
    fn look_at_progress(&mut self, now: Instant) {
        let (live, _) = self.p.lossless_readers();
        if live == 0 {
            if self.progress.is_watching() {
                self.progress.observe(now, 0, &[]);
            }
            return;
        }
        let due = self.progress.next_due().is_some_and(|d| now >= d);
        if !due && now < self.next_look {
            return;
        }
        self.next_look = now + self.cfg.progress.window / 8;
        let cap = self.p.segment().capacity() as u64;
        let blocker = self.blocked.map(|(r, _, _)| r);
        let cut = self
            .progress
            .observe_blocked(now, cap, &self.p.readers_progress(), blocker);
        if cut.is_empty() {
            return;
        }
        self.cutting.extend(cut.iter().copied());
        if self.rotate(&cut).is_ok() {
            self.stats
                .cut_off
                .fetch_add(cut.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                "cut off lossless reader(s) {cut:?}: they held the ring back for {:?} without releasing {} bytes",
                self.cfg.progress.window,
                self.cfg.progress.min_progress
            );
            // The held record may fit now.
            if let Some((_, _, d)) = &mut self.blocked {
                *d = Duration::ZERO;
            }
        } else {
            // Judged again at the next look.
            for id in &cut {
                self.cutting.remove(id);
            }
        }
        self.take_rotations();
    }

    fn answer_syncs(&mut self) {
        if self.syncs.is_empty() || self.held.is_some() || !self.items.is_empty() {
            return;
        }
        for tx in self.syncs.drain(..) {
            let _ = tx.send(()); // the asker gave up: nothing to do
        }
    }

    /// Sleeps until a command, an item (unless one waits for room), or the next due time.
    fn wait(&mut self) {
        let mut due: Option<Instant> = self.progress.next_due();
        if let Some((_, _, d)) = self.blocked {
            let retry = Instant::now() + d;
            due = Some(due.map_or(retry, |t| t.min(retry)));
        }
        if !self.syncs.is_empty() && self.held.is_none() {
            return; // drain the rest and answer
        }
        let timeout = due.map(|t| t.saturating_duration_since(Instant::now()));
        if timeout == Some(Duration::ZERO) {
            return;
        }
        let never = crossbeam_channel::never();
        let items = if self.held.is_some() {
            &never
        } else {
            &self.items
        };
        let mut sel = crossbeam_channel::Select::new();
        let c = sel.recv(&self.cmd);
        let i = sel.recv(items);
        let op = match timeout {
            Some(t) => match sel.select_timeout(t) {
                Ok(op) => op,
                Err(_) => return,
            },
            None => sel.select(),
        };
        match op.index() {
            x if x == c => {
                if let Ok(cmd) = op.recv(&self.cmd) {
                    self.command(cmd);
                }
            }
            x if x == i => {
                // Disconnected (an error) is seen by the next `feed`.
                if let Ok(item) = op.recv(items) {
                    if let Placed::Blocked(item, reader) = self.place(item) {
                        self.hold(item, reader);
                    }
                }
            }
            _ => unreachable!("two operations"),
        }
    }

    /// The feeder is gone: place what is queued within `finish_wait`; if a lossless reader
    /// still leaves no room then, cut it off, drop the rest and stage one gap for what was
    /// dropped (readers are told, in order, before the ring closes); close the ring.
    fn finish(&mut self) {
        let deadline = Instant::now() + self.cfg.finish_wait;
        let mut pending: Option<Item<T>> = self.held.take();
        loop {
            let item = match pending.take() {
                Some(it) => it,
                None => match self.items.try_recv() {
                    Ok(it) => it,
                    Err(_) => break,
                },
            };
            match self.place(item) {
                Placed::Done => {}
                Placed::Blocked(item, reader) => {
                    self.commit();
                    if Instant::now() >= deadline {
                        self.drop_at_finish(item, reader);
                        break;
                    }
                    while let Ok(c) = self.cmd.try_recv() {
                        self.command(c);
                    }
                    self.look_at_progress(Instant::now());
                    std::thread::sleep(Duration::from_millis(1));
                    pending = Some(item);
                }
            }
        }
        self.commit();
        self.take_rotations();
        self.p.close();
        for tx in self.syncs.drain(..) {
            let _ = tx.send(()); // the asker gave up: nothing to do
        }
    }

    /// The finish deadline passed with `item` waiting for `reader`: drops it and the rest of
    /// the queue (counted), cuts the reader off and stages a gap up to the last seq
    /// dropped.
    fn drop_at_finish(&mut self, item: Item<T>, reader: ReaderId) {
        let last = |it: &Item<T>| match it {
            Item::Record { seq, .. } => *seq,
            Item::Gap { to, .. } => *to,
        };
        let mut up_to = last(&item);
        let mut rest = 1u64;
        while let Ok(it) = self.items.try_recv() {
            up_to = up_to.max(last(&it));
            rest += 1;
        }
        self.stats
            .dropped_at_finish
            .fetch_add(rest, Ordering::Relaxed);
        tracing::warn!(
            "shutting down: {rest} queued items dropped (lossless reader {reader} left no room); \
             it is cut off and readers get a gap up to seq {up_to}"
        );
        self.cutting.insert(reader);
        if self.rotate(&[reader]).is_ok() {
            self.stats.cut_off.fetch_add(1, Ordering::Relaxed);
        }
        self.take_rotations();
        if up_to >= self.p.next_seq() {
            match self.p.stage_gap(up_to, self.cfg.hole_reason) {
                Ok(()) => {
                    self.stats.gaps.fetch_add(1, Ordering::Relaxed);
                }
                // Another lossless reader holds the new segment already: the close that
                // follows still tells every reader the stream ended.
                Err(e) => self.error("staging the gap at shutdown", &e),
            }
        }
    }

    /// Queues an event for the control loop and wakes it.
    fn tell(&mut self, ev: LinkEvent) {
        if self.events.send(ev).is_err() {
            return; // the control loop is gone (shutting down): nobody to tell
        }
        poke(&self.poke);
    }

    fn error(&mut self, what: &'static str, e: &dyn std::fmt::Display) {
        if self.logged.insert(what) {
            tracing::error!("ring: {what} failed: {e} (counted in status; logged once)");
        }
    }
}

/// One byte to wake the control loop. Non-blocking: a full socket already holds a wake.
/// `MSG_NOSIGNAL`: a host whose SIGPIPE is at its default action survives a closed end.
fn poke(s: &UnixStream) {
    use nix::sys::socket::{send, MsgFlags};
    // WouldBlock: a wake is pending already. EPIPE: the loop is gone. Neither needs more.
    let _ = send(
        s.as_raw_fd(),
        &[1],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}
