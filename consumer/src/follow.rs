//! The [`Follower`]: a connection to the service that hands out [`Event`]s in seq order,
//! backfilling from history what the ring did not deliver (when backfill is on) and
//! reconnecting when the service goes away.
//!
//! How it keeps G4 (every stored record once, in order):
//!
//! - `next` is the seq after the last event handed out; `horizon` the seq after the last
//!   one handed out *or queued*. Live records below `horizon` are dropped as duplicates.
//! - A range the ring did not deliver (the start, `Lagged`, a ring gap, a jump in seqs, a
//!   reconnect) becomes a *hole* in the queue, in its place among the records around it.
//!   Holes are filled from history one page (one query) per call, in order; the ring is
//!   not read while the queue holds anything, so nothing live overtakes a backfill.
//! - A disconnect keeps the queue; the reconnect asks for what lies between `horizon` and
//!   the new connection's first live seq.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use firehose_transport::control::client::{Client, ClientError, ConnectOptions};
use firehose_transport::control::place::client_socket_path;
use firehose_transport::control::wire::{DisconnectReason, StartAt, Status};
use firehose_transport::record::{FileEvent, GapReason, Loss};
use firehose_transport::ring::Policy;

use crate::error::FollowError;
use crate::events::InstanceId;
use crate::live;
use crate::options::{Options, Start};
use crate::owned::OwnedEvent;
use crate::view::Events;

/// Something waiting in the follower's queue.
#[derive(Debug)]
pub(crate) enum Pending {
    /// An event to hand out.
    Event(OwnedEvent),
    /// Seqs to backfill from history.
    Hole { from: u64, to: u64, cause: Cause },
    /// Seqs below this are accounted for (history was truncated past them).
    Advance(u64),
}

/// Why a hole is there: what to report if history cannot fill it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cause {
    /// Missed by this reader (lag, start, reconnect).
    Lag,
    /// Skipped by the ring on purpose, for this reason.
    RingGap(GapReason),
}

#[derive(Debug)]
enum State {
    Connected,
    Reconnecting { at: Instant, backoff: Duration },
    Ended(Ending),
}

#[derive(Debug, Clone)]
enum Ending {
    Disconnected(DisconnectReason, String),
    OtherInstance(InstanceId, InstanceId),
}

#[derive(Debug, Clone, Copy)]
enum View {
    Empty,
    Owned,
    Live { floor: u64, count: usize },
}

/// A live batch this large may have more behind it: [`Follower::drain`] gathers more.
const GATHER_FROM: usize = 1024;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A follower of the service's records: wraps a [`Client`], hands out typed [`Event`]s
/// (records zero-copy), backfills from history and reconnects.
///
/// - [`drain`](Self::drain): everything available now, up to `max`, without waiting: the
///   call a GUI makes once per frame;
/// - [`recv`](Self::recv), [`recv_timeout`](Self::recv_timeout): wait for events;
/// - [`iter`](Self::iter): a blocking iterator of [`OwnedEvent`]s;
/// - `into_stream` (feature `tokio`): an async `Stream` of [`OwnedEvent`]s.
///
/// With backfill on ([`follow_from`](crate::follow_from), [`Start::Seq`], [`Start::Oldest`]
/// or [`Options::backfill`]) the application sees every stored record exactly once and in
/// order, across lag, reconnects and service restarts; ranges never stored arrive as
/// [`Loss::Gap`] with their reason, history that no longer reaches back as
/// [`Loss::Truncated`], and a service of another history instance as
/// [`Event::OtherInstance`] (then the follower ends).
///
/// # Examples
/// ```no_run
/// use firehose_consumer::{Event, Options};
/// let mut f = Options::new().name("my-gui").follow_from(1)?;
/// loop {
///     // Once per frame:
///     for ev in f.drain(10_000)? {
///         if let Event::Record(r) = ev {
///             println!("{} {}", r.seq(), firehose_consumer::escape_path(r.path()));
///         }
///     }
///     std::thread::sleep(std::time::Duration::from_millis(16));
/// }
/// # Ok::<(), firehose_consumer::FollowError>(())
/// ```
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    opts: Options,
    client: Client<FileEvent>,
    backfill: bool,
    instance: InstanceId,
    next: u64,
    horizon: u64,
    pending: VecDeque<Pending>,
    out: Vec<OwnedEvent>,
    view: View,
    state: State,
    query_id: u64,
    /// How many connections this follower has made (the first one is 1).
    connections: u64,
}

/// Connects with the default [`Options`], backfills from `seq` and then follows live.
///
/// # Errors
/// As [`Options::connect`].
///
/// # Examples
/// ```no_run
/// let mut f = firehose_consumer::follow_from(1)?;
/// for ev in f.iter() {
///     println!("{:?}", ev?);
/// }
/// # Ok::<(), firehose_consumer::FollowError>(())
/// ```
pub fn follow_from(seq: u64) -> Result<Follower, FollowError> {
    Options::new().follow_from(seq)
}

fn connect_options(opts: &Options, start: StartAt) -> ConnectOptions {
    ConnectOptions {
        name: opts.name.clone(),
        policy: opts.policy,
        start,
        trusted_uids: opts.trusted_uids.clone(),
        timeout: opts.timeout,
    }
}

impl Follower {
    /// Connects as `opts` say. Same as [`Options::connect`].
    ///
    /// # Errors
    /// [`FollowError::Place`], [`FollowError::Client`], [`FollowError::OtherInstance`]
    /// (with [`Options::expect_instance`]).
    ///
    /// # Examples
    /// ```no_run
    /// let f = firehose_consumer::Follower::connect(firehose_consumer::Options::new())?;
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn connect(opts: Options) -> Result<Self, FollowError> {
        let path = match &opts.socket {
            Some(p) => p.clone(),
            None => client_socket_path()?,
        };
        let start = match opts.start {
            Start::Seq(s) => StartAt::Seq(s),
            Start::Newest | Start::Oldest => StartAt::Now,
        };
        let client = Client::<FileEvent>::connect(&path, &connect_options(&opts, start))?;
        let w = client.welcome().clone();
        let found = InstanceId(w.instance_id);
        if let Some(expected) = opts.instance {
            if expected != found {
                client.bye();
                return Err(FollowError::OtherInstance { expected, found });
            }
        }
        let backfill = opts.backfills();
        let from = match opts.start {
            Start::Newest => w.start_seq,
            Start::Seq(s) => s,
            // History holds nothing: what was given out after its last commit is still
            // on its way there (the backfill waits for it), so start just past that.
            Start::Oldest if w.first_available == 0 => {
                w.last_committed.saturating_add(1).min(w.start_seq)
            }
            Start::Oldest => w.first_available,
        };
        let mut f = Follower {
            path,
            opts,
            client,
            backfill,
            instance: found,
            next: from,
            horizon: from,
            pending: VecDeque::new(),
            out: Vec::new(),
            view: View::Empty,
            state: State::Connected,
            query_id: 0,
            connections: 1,
        };
        f.missed_up_to(w.start_seq);
        Ok(f)
    }

    /// Queues what lies between `horizon` and `start_seq` (the first live seq): a hole to
    /// backfill, or a lag report.
    fn missed_up_to(&mut self, start_seq: u64) {
        if start_seq > self.horizon {
            let (from, to) = (self.horizon, start_seq - 1);
            self.pending.push_back(if self.backfill {
                Pending::Hole {
                    from,
                    to,
                    cause: Cause::Lag,
                }
            } else {
                Pending::Event(OwnedEvent::Loss(Loss::Lagged { from, to }))
            });
            self.horizon = start_seq;
        }
    }

    /// Everything available now, up to `max` events, without waiting for the ring (a
    /// backfill page is one query round trip). The call a GUI makes once per frame; an
    /// empty answer means nothing new.
    ///
    /// # Errors
    /// [`FollowError::Disconnected`] after a disconnect when reconnect is off,
    /// [`FollowError::OtherInstance`] after [`Event::OtherInstance`] was handed out,
    /// [`FollowError::Client`] for a refusal retrying cannot fix.
    ///
    /// # Examples
    /// ```no_run
    /// let mut f = firehose_consumer::Options::new().connect()?;
    /// let mut window = std::collections::VecDeque::new();
    /// for ev in f.drain(4096)? {
    ///     window.push_back(ev.to_owned_event());
    /// }
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn drain(&mut self, max: usize) -> Result<Events<'_>, FollowError> {
        let now = Instant::now();
        self.fill_now(max, now)?;
        self.gather(max, now)?;
        Ok(self.view())
    }

    /// The first fill of a drain: a few tries while queued work (a hole) answers nothing.
    fn fill_now(&mut self, max: usize, now: Instant) -> Result<(), FollowError> {
        for _ in 0..4 {
            if self.fill(max, Some(now))? || self.pending.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Whether the batch the last fill made ready may have more behind it: a large live
    /// batch of a lagging reader (see [`gather`](Self::gather)).
    fn gathers(&mut self, max: usize) -> bool {
        matches!(self.view, View::Live { count, .. } if (GATHER_FROM..max).contains(&count))
            && self.client.reader_mut().policy() == Policy::Lagging
    }

    /// As [`drain`](Self::drain), but appends owned events to `out` and returns how many:
    /// a caller that keeps the events (a background inbox) gets each record converted
    /// once, and gathered batches are moved, not copied a second time.
    ///
    /// # Errors
    /// As [`drain`](Self::drain).
    ///
    /// # Examples
    /// ```no_run
    /// let mut f = firehose_consumer::Options::new().connect()?;
    /// let mut kept = Vec::new();
    /// let n = f.drain_owned(4096, &mut kept)?;
    /// assert_eq!(n, kept.len());
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn drain_owned(
        &mut self,
        max: usize,
        out: &mut Vec<OwnedEvent>,
    ) -> Result<usize, FollowError> {
        let now = Instant::now();
        let start = out.len();
        let max = max.max(1);
        self.fill_now(max, now)?;
        let gather = self.gathers(max);
        self.move_view_into(out);
        if gather {
            while out.len() - start < max && self.fill(max - (out.len() - start), Some(now))? {
                self.move_view_into(out);
            }
        }
        Ok(out.len() - start)
    }

    /// Appends what the last fill made ready to `out` (owned events are moved).
    fn move_view_into(&mut self, out: &mut Vec<OwnedEvent>) {
        match self.view {
            View::Empty => {}
            View::Owned => out.append(&mut self.out),
            View::Live { .. } => out.extend(self.view().map(|e| e.to_owned_event())),
        }
        self.view = View::Empty;
    }

    /// A lagging reader's batch holds at most a quarter of the ring (a lossless reader's,
    /// everything there is). When a large live batch may have more behind it, the batches
    /// are gathered as owned events, up to `max`, so that one [`drain`](Self::drain) hands
    /// out everything available: at 1M records/s one 60 fps frame is about two batches. A
    /// small batch stays zero-copy.
    fn gather(&mut self, max: usize, now: Instant) -> Result<(), FollowError> {
        let View::Live { count, .. } = self.view else {
            return Ok(());
        };
        if !self.gathers(max) {
            return Ok(());
        }
        let mut acc: Vec<OwnedEvent> = Vec::with_capacity(count * 2);
        acc.extend(self.view().map(|e| e.to_owned_event()));
        // A fill that comes back empty may have queued events (a hole to backfill): they
        // follow in the next call, after these.
        while acc.len() < max && self.fill(max - acc.len(), Some(now))? {
            acc.extend(self.view().map(|e| e.to_owned_event()));
        }
        self.out = acc;
        self.view = View::Owned;
        Ok(())
    }

    /// Waits until at least one event is ready and hands out up to `max`.
    ///
    /// # Errors
    /// As [`drain`](Self::drain).
    ///
    /// # Examples
    /// ```no_run
    /// let mut f = firehose_consumer::follow_from(1)?;
    /// let n = f.recv(1024)?.len();
    /// assert!(n > 0);
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn recv(&mut self, max: usize) -> Result<Events<'_>, FollowError> {
        while !self.fill(max, None)? {}
        Ok(self.view())
    }

    /// As [`recv`](Self::recv), but returns what there is (possibly nothing) once
    /// `timeout` has passed.
    ///
    /// # Errors
    /// As [`drain`](Self::drain).
    ///
    /// # Examples
    /// ```no_run
    /// use std::time::Duration;
    /// let mut f = firehose_consumer::Options::new().connect()?;
    /// let events = f.recv_timeout(1024, Duration::from_millis(100))?;
    /// println!("{} events", events.len());
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn recv_timeout(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<Events<'_>, FollowError> {
        let deadline = Instant::now() + timeout;
        while !self.fill(max, Some(deadline))? && Instant::now() < deadline {}
        Ok(self.view())
    }

    /// The seq after the last event handed out: where this follower resumes.
    ///
    /// # Examples
    /// ```no_run
    /// let f = firehose_consumer::follow_from(10)?;
    /// assert_eq!(f.next_seq(), 10);
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The history instance this follower reads.
    ///
    /// # Examples
    /// ```no_run
    /// let f = firehose_consumer::Options::new().connect()?;
    /// println!("instance {}", f.instance_id());
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn instance_id(&self) -> InstanceId {
        self.instance
    }

    /// How many connections this follower has made: 1, and one more for each reconnect.
    /// A query sent on [`client`](Self::client) is answered only while this stays the
    /// same (a new connection knows nothing of the old one's queries).
    ///
    /// # Examples
    /// ```no_run
    /// let f = firehose_consumer::Options::new().connect()?;
    /// assert_eq!(f.connections(), 1);
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Whether a backfill is under way (holes wait in the queue).
    ///
    /// # Examples
    /// ```no_run
    /// let f = firehose_consumer::follow_from(1)?;
    /// println!("backfilling: {}", f.is_backfilling());
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn is_backfilling(&self) -> bool {
        self.pending
            .iter()
            .any(|p| matches!(p, Pending::Hole { .. }))
    }

    /// When the next reconnect attempt is due, while the connection is down (with
    /// reconnect on); `None` while connected or ended. An application that sleeps on its own
    /// fds (rather than in [`recv`](Self::recv)) wakes at this time and drains again.
    ///
    /// # Examples
    /// ```no_run
    /// let f = firehose_consumer::Options::new().connect()?;
    /// assert!(f.reconnect_due().is_none());
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn reconnect_due(&self) -> Option<Instant> {
        match self.state {
            State::Reconnecting { at, .. } => Some(at),
            _ => None,
        }
    }

    /// The connection inside, for what the follower does not wrap (queries, notices).
    /// Reading the ring through it directly bypasses the follower's seq accounting.
    ///
    /// # Examples
    /// ```no_run
    /// let mut f = firehose_consumer::Options::new().connect()?;
    /// println!("{:?}", f.client().welcome());
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn client(&mut self) -> &mut Client<FileEvent> {
        &mut self.client
    }

    /// The service's status.
    ///
    /// # Errors
    /// [`FollowError::Client`] if the service does not answer.
    ///
    /// # Examples
    /// ```no_run
    /// let mut f = firehose_consumer::Options::new().connect()?;
    /// println!("{} readers", f.status()?.readers.len());
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn status(&mut self) -> Result<Status, FollowError> {
        Ok(self.client.status()?)
    }

    fn view(&mut self) -> Events<'_> {
        match self.view {
            View::Empty => Events::empty(),
            View::Owned => Events::owned(&self.out),
            View::Live { floor, count } => {
                Events::live(self.client.current_batch().iter(), floor, count)
            }
        }
    }

    /// One step: hands out queued events, or fills a backfill page, or reconnects, or
    /// reads the ring (waiting until `deadline`; `None`: until something comes). Returns
    /// whether there is something to hand out.
    fn fill(&mut self, max: usize, deadline: Option<Instant>) -> Result<bool, FollowError> {
        self.out.clear();
        self.view = View::Empty;
        let max = max.max(1);
        if !self.pending.is_empty() {
            self.take_pending(max)?;
            if !self.out.is_empty() {
                self.view = View::Owned;
                return Ok(true);
            }
            // Holes wait for a connection; once the follower has ended they never fill,
            // and the ending is the answer.
            if !self.pending.is_empty() && !matches!(self.state, State::Ended(_)) {
                if matches!(self.state, State::Reconnecting { .. }) {
                    self.reconnect_step(deadline)?;
                }
                return Ok(false);
            }
        }
        match &self.state {
            State::Ended(Ending::Disconnected(reason, detail)) => {
                return Err(FollowError::Disconnected {
                    reason: *reason,
                    detail: detail.clone(),
                })
            }
            State::Ended(Ending::OtherInstance(expected, found)) => {
                return Err(FollowError::OtherInstance {
                    expected: *expected,
                    found: *found,
                })
            }
            State::Reconnecting { .. } => {
                self.reconnect_step(deadline)?;
                return Ok(false);
            }
            State::Connected => {}
        }
        let horizon = self.horizon;
        let backfill = self.backfill;
        let batch = match deadline {
            Some(d) => self
                .client
                .recv_timeout(max, d.saturating_duration_since(Instant::now())),
            None => self.client.recv(max),
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                self.on_client_error(e)?;
                return Ok(false);
            }
        };
        let scan = live::scan(&batch, horizon, backfill);
        if scan.hole {
            let mut queued = Vec::new();
            let new_horizon = live::to_pending(&batch, horizon, &mut queued);
            self.pending.extend(queued);
            self.horizon = new_horizon;
            self.take_notices();
            return Ok(false);
        }
        self.next = scan.next;
        self.horizon = scan.next;
        self.view = View::Live {
            floor: horizon,
            count: scan.count,
        };
        self.take_notices();
        Ok(scan.count > 0)
    }

    fn take_notices(&mut self) {
        // Notices come outside the ring, so they never move the cursor: the ring (its
        // records, gap and lag frames, and the backfill behind them) accounts for every
        // seq in order. What a notice adds is about history: which seqs it does not hold
        // and where it starts.
        for n in self.client.take_notices() {
            let about_history = match n {
                Loss::StorageGap { .. } | Loss::Truncated { .. } => n,
                // Out of band it can only say the seqs are not in history.
                Loss::Gap { from, to, reason } => Loss::StorageGap { from, to, reason },
                // Lag is also in the ring, in order; what a backfill missed only the
                // follower itself knows.
                Loss::Lagged { .. } | Loss::Missing { .. } => continue,
            };
            self.pending
                .push_back(Pending::Event(OwnedEvent::Loss(about_history)));
        }
    }

    /// Moves queued events to `out` (up to `max`), filling at most one hole page.
    fn take_pending(&mut self, max: usize) -> Result<(), FollowError> {
        let mut queried = false;
        while self.out.len() < max {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            match p {
                Pending::Advance(s) => self.next = self.next.max(s),
                Pending::Event(ev) => self.deliver(ev),
                Pending::Hole { from, to, cause } => {
                    let from = from.max(self.next);
                    if from > to {
                        continue;
                    }
                    if queried || !matches!(self.state, State::Connected) {
                        self.pending.push_front(Pending::Hole { from, to, cause });
                        break;
                    }
                    queried = true;
                    self.query_id += 1;
                    let page = crate::backfill::page(
                        &mut self.client,
                        self.query_id,
                        (from, to),
                        cause,
                        self.opts.page,
                    );
                    match page {
                        Ok(items) => {
                            for it in items.into_iter().rev() {
                                self.pending.push_front(it);
                            }
                        }
                        Err(e) => {
                            self.pending.push_front(Pending::Hole { from, to, cause });
                            self.on_client_error(e)?;
                            break;
                        }
                    }
                }
            }
        }
        self.horizon = self.horizon.max(self.next);
        Ok(())
    }

    /// Hands out `ev` unless it is entirely below `next` (already handed out).
    fn deliver(&mut self, ev: OwnedEvent) {
        let next = self.next;
        let ev = match ev {
            OwnedEvent::Record(r) if r.seq < next => return,
            OwnedEvent::Loss(Loss::Gap { to, .. })
            | OwnedEvent::Loss(Loss::Lagged { to, .. })
            | OwnedEvent::Loss(Loss::Missing { to, .. })
                if to < next =>
            {
                return
            }
            OwnedEvent::Loss(Loss::Gap { from, to, reason }) => OwnedEvent::Loss(Loss::Gap {
                from: from.max(next),
                to,
                reason,
            }),
            OwnedEvent::Loss(Loss::Lagged { from, to }) => OwnedEvent::Loss(Loss::Lagged {
                from: from.max(next),
                to,
            }),
            OwnedEvent::Loss(Loss::Missing { from, to }) => OwnedEvent::Loss(Loss::Missing {
                from: from.max(next),
                to,
            }),
            other => other,
        };
        if let Some(last) = ev.as_event().last_seq() {
            self.next = last + 1;
        }
        self.out.push(ev);
    }

    fn on_client_error(&mut self, e: ClientError) -> Result<(), FollowError> {
        let (reason, detail) = match e {
            ClientError::Timeout { .. } => return Ok(()),
            ClientError::Disconnected { reason, detail, .. } => (reason, detail),
            ClientError::Io { .. } => (DisconnectReason::Gone, e.to_string()),
            ClientError::Protocol { .. } | ClientError::Read { .. } | ClientError::Ring { .. } => {
                (DisconnectReason::ProtocolError, e.to_string())
            }
            other => return Err(other.into()),
        };
        let lead = self
            .pending
            .iter()
            .take_while(|p| matches!(p, Pending::Event(OwnedEvent::Disconnected { .. })))
            .count();
        self.pending.insert(
            lead,
            Pending::Event(OwnedEvent::Disconnected {
                reason,
                detail: detail.clone(),
            }),
        );
        let hopeless = matches!(
            reason,
            DisconnectReason::NotAllowed | DisconnectReason::VersionMismatch
        );
        self.state = if self.opts.reconnect && !hopeless {
            State::Reconnecting {
                at: Instant::now() + FIRST_BACKOFF,
                backoff: FIRST_BACKOFF,
            }
        } else {
            State::Ended(Ending::Disconnected(reason, detail))
        };
        Ok(())
    }

    /// Waits for the next attempt (up to `deadline`) and makes it.
    fn reconnect_step(&mut self, deadline: Option<Instant>) -> Result<(), FollowError> {
        let State::Reconnecting { at, backoff } = self.state else {
            return Ok(());
        };
        let now = Instant::now();
        if now < at {
            let until = deadline.map_or(at, |d| d.min(at));
            std::thread::sleep(until.saturating_duration_since(now));
            if Instant::now() < at {
                return Ok(());
            }
        }
        let copts = connect_options(&self.opts, StartAt::Seq(self.horizon));
        match Client::<FileEvent>::connect(&self.path, &copts) {
            Ok(c) => {
                let found = InstanceId(c.welcome().instance_id);
                if found != self.instance {
                    c.bye();
                    self.pending
                        .push_back(Pending::Event(OwnedEvent::OtherInstance {
                            expected: self.instance,
                            found,
                        }));
                    self.state = State::Ended(Ending::OtherInstance(self.instance, found));
                    return Ok(());
                }
                let start_seq = c.welcome().start_seq;
                let old = std::mem::replace(&mut self.client, c);
                old.bye();
                self.connections += 1;
                self.state = State::Connected;
                let lead = self
                    .pending
                    .iter()
                    .take_while(|p| matches!(p, Pending::Event(OwnedEvent::Disconnected { .. })))
                    .count();
                self.pending
                    .insert(lead, Pending::Event(OwnedEvent::Reconnected { start_seq }));
                self.missed_up_to(start_seq);
                Ok(())
            }
            Err(e) => {
                let fatal = matches!(
                    e.disconnect_reason(),
                    Some(DisconnectReason::NotAllowed | DisconnectReason::VersionMismatch)
                ) || matches!(
                    e,
                    ClientError::Connect(
                        firehose_transport::control::peer::ConnectError::NotAllowed { .. }
                            | firehose_transport::control::peer::ConnectError::UntrustedService { .. }
                    )
                );
                if fatal {
                    self.state = State::Ended(Ending::Disconnected(
                        e.disconnect_reason()
                            .unwrap_or(DisconnectReason::NotAllowed),
                        e.to_string(),
                    ));
                    return Err(e.into());
                }
                let backoff = (backoff * 2).min(MAX_BACKOFF);
                self.state = State::Reconnecting {
                    at: Instant::now() + backoff,
                    backoff,
                };
                Ok(())
            }
        }
    }
}
