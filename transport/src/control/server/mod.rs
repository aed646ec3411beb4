//! The service's side of the control socket: one IO loop (poll) over the listener, every
//! connection, the ring owner's link and the query workers, around sans-IO rules.
//!
//! ```text
//!            ┌──────────────── Server (this file: sockets, poll, timers) ────────────────┐
//!  peers ───►│ ServerConn per connection (protocol)    Rationing (who may be lossless)   │
//!            │ ConnQueries per connection (order)      status throttle (50 ms each)      │
//!            └───────┬──────────────────────────────────────────────┬───────────────────┘
//!                    │ attach / remove / snapshot   ▲ attached,      │ pages   ▲ rows
//!                    ▼                              │ rotated        ▼         │
//!            ring owner thread (publisher)  ───────┘         query worker threads
//! ```
//!
//! The loop only routes: it never touches the ring (the owner does, [`crate::publisher`]),
//! never reads the database (the workers pull query pages, [`queries`]; status and bounds
//! come from cached values, [`ServiceInfo`]), and never waits on anything but its poll. So a
//! stalled lossless reader, a long query or a flood from one peer leaves every other peer
//! served.
//!
//! It authenticates peers (SO_PEERCRED against the allow-list), hands each reader its ring,
//! cursor page and wake channel, rations lossless readers ([`rationing`]; the cap on their
//! number is the owner's), sends every rotation's new segment to the readers that follow
//! it, tells a reader the owner cut off why, and frees a reader's slot the moment its
//! connection ends. A malformed or oversized message gets that peer an error and a
//! disconnect; every offender is logged once.

pub mod info;
pub(crate) mod queries;
pub(crate) mod rationing;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::conn::{ServerConn, ServerEvent, Transmit};
use super::peer::{is_allowed, peer_cred, PeerCred};
use super::place::Access;
use super::wire::{
    rows_messages, DisconnectReason, HistoryQuery, QueryEnd, ReaderStatus, ServerMsg, Status,
    Welcome, MAX_ROWS, PROTOCOL_VERSION, ROWS_BYTES,
};
use crate::publisher::{AttachRefused, Attached, LinkEvent, OwnerGone, RingLink, RingSnapshot};
use crate::ring::{Policy, ReaderId, Rotation};
pub use info::{NoHistory, NoRows, PageBudget, QueryRows, QueryStep, ServiceInfo};
use queries::{ConnQueries, Outcome, QueryPool};
use rationing::Rationing;

/// A query's next page is asked for only while the client's output queue is below this.
const QUERY_OUT_BOUND: usize = 256 << 10;
/// Status reports one connection gets at most this often; requests in between are folded
/// into one answer when the time comes.
const STATUS_INTERVAL: Duration = Duration::from_millis(50);

/// Limits and policies of the control socket.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Who may connect besides the service's uid and root.
    pub access: Access,
    /// Most connections at once; a connection over it is refused with `busy`.
    pub max_connections: usize,
    /// Most lossless readers at once (each rotation pins an old segment). Default 4.
    pub max_lossless: usize,
    /// Uids that may read losslessly. Default: the service's own.
    pub lossless_uids: Vec<u32>,
    /// How long a uid whose lossless reader was cut off must wait to read losslessly again.
    pub cooldown: Duration,
    /// How long a connection may stay silent before its hello, or sit on half a message.
    pub hello_timeout: Duration,
    /// Most bytes queued to one client before it is dropped as too slow.
    pub max_queued: usize,
    /// The history's instance id, sent in every welcome.
    pub instance_id: [u8; 16],
    /// Threads that pull history query pages (default 2).
    pub query_workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            access: Access::default(),
            max_connections: 1000,
            max_lossless: 4,
            lossless_uids: vec![nix::unistd::geteuid().as_raw()],
            cooldown: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(5),
            max_queued: 8 << 20,
            instance_id: [0; 16],
            query_workers: 2,
        }
    }
}

/// Raises this process's open-file limit to its hard limit and returns the new soft limit.
/// The service calls it at start and caps connections below it.
///
/// # Errors
/// The OS error of getrlimit/setrlimit.
pub fn raise_fd_limit() -> io::Result<u64> {
    crate::sys::rlimit::raise_nofile()
}

/// Fds the service holds per reader connection: the socket, the cursor page, the wake pipe's
/// write end (with headroom for the transient dups of a handoff).
pub const FDS_PER_CONNECTION: u64 = 6;

/// One client connection.
struct Conn {
    stream: UnixStream,
    cred: PeerCred,
    sm: ServerConn,
    reader: Option<ReaderId>,
    /// The policy granted (or asked for, while attaching).
    policy: Policy,
    /// The hello came and the owner was asked for a reader.
    attaching: bool,
    name: String,
    /// Frames being written: the transmit and how many of its bytes went out.
    out: VecDeque<(Transmit, usize)>,
    queued: usize,
    /// Since when the connection has been waiting for a hello or sitting on half a message.
    idle_since: Option<Instant>,
    /// Since when it has been closing (its last message on the way out): a peer that does
    /// not read it is dropped after [`CLOSE_GRACE`].
    closing_since: Option<Instant>,
    /// The segment epoch this client was last sent (welcome or switch).
    epoch: u64,
    queries: ConnQueries,
    /// When the last status report was sent, and whether another is owed.
    status_sent: Option<Instant>,
    status_owed: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("cred", &self.cred)
            .field("reader", &self.reader)
            .field("name", &self.name)
            .field("queued", &self.queued)
            .field("queries", &self.queries)
            .finish_non_exhaustive()
    }
}

/// Counters for tests and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted (allowed or not).
    pub accepted: u64,
    /// Connections refused as not allowed.
    pub refused: u64,
    /// Connections refused as busy.
    pub busy: u64,
    /// Connections closed for protocol errors.
    pub protocol_errors: u64,
    /// Lossless readers cut off for being too slow.
    pub cut_off: u64,
    /// Departed lossless readers left behind by a rotation (they held the ring back).
    pub left_behind: u64,
    /// Status requests folded into another answer (asked for faster than one per 50 ms).
    pub status_folded: u64,
    /// Queries refused because the connection already had the most running.
    pub queries_refused: u64,
    /// History rows left out of an answer because one row alone is over the message cap.
    pub rows_oversized: u64,
    /// Segment switches that could not be sent (out of fds): those readers were closed.
    pub switch_failures: u64,
}

/// How long a closing connection may take to read its last message (the disconnect reason)
/// before it is dropped unread.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The control socket's event loop.
pub struct Server {
    listener: UnixListener,
    link: RingLink,
    pool: QueryPool,
    info: Box<dyn ServiceInfo>,
    config: ServerConfig,
    conns: HashMap<u64, Conn>,
    /// Reader id -> connection token.
    by_reader: HashMap<ReaderId, u64>,
    next_token: u64,
    rationing: Rationing,
    logged: HashSet<(u32, &'static str)>,
    started: Instant,
    service_uid: u32,
    stats: ServerStats,
    /// Lossless readers that left while the producer still honours them: id -> (uid, pid)
    /// (the uid gets the cool-down if rotations keep leaving its readers behind with their
    /// segment still mapped).
    departed: HashMap<ReaderId, (u32, u32)>,
    /// A snapshot was asked of the ring owner and not yet answered.
    snapshot_asked: bool,
    /// The last snapshot the owner sent.
    snapshot: RingSnapshot,
    /// An fd that, once readable, asks the loop to stop (a signal's self-pipe).
    stop_fd: Option<OwnedFd>,
    stop_requested: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Server {
    /// Serves `listener` (made non-blocking) for the ring whose owner `link` talks to.
    ///
    /// # Errors
    /// The OS error of making the listener non-blocking, or of starting the query workers.
    pub fn new(
        listener: UnixListener,
        link: RingLink,
        info: Box<dyn ServiceInfo>,
        config: ServerConfig,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Server {
            pool: QueryPool::start(config.query_workers)?,
            rationing: Rationing::new(
                config.lossless_uids.clone(),
                config.cooldown,
                config.max_lossless,
            ),
            departed: HashMap::new(),
            by_reader: HashMap::new(),
            listener,
            link,
            info,
            config,
            conns: HashMap::new(),
            next_token: 1,
            logged: HashSet::new(),
            started: Instant::now(),
            service_uid: nix::unistd::geteuid().as_raw(),
            stats: ServerStats::default(),
            snapshot_asked: false,
            snapshot: RingSnapshot::default(),
            stop_fd: None,
            stop_requested: false,
        })
    }

    /// Watches `fd` too: once it is readable (a signal handler wrote to its pipe),
    /// [`stop_requested`](Self::stop_requested) turns true and [`poll_once`](Self::poll_once)
    /// returns. This is how a service sleeps in `poll` with no timeout and still stops at once.
    pub fn stop_when_readable(&mut self, fd: OwnedFd) {
        self.stop_fd = Some(fd);
    }

    /// Whether the fd given to [`stop_when_readable`](Self::stop_when_readable) became
    /// readable.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Counters since start.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Waits up to `timeout` for something to do and does it. Idle (nothing owed, nothing
    /// due), it sleeps the whole `timeout`; give it a long one.
    ///
    /// # Errors
    /// Errors of `poll` itself, and [`io::ErrorKind::BrokenPipe`] once the ring's owner is
    /// gone (the service cannot go on without it). A connection's errors close that
    /// connection only.
    pub fn poll_once(&mut self, timeout: Duration) -> io::Result<()> {
        let tokens: Vec<u64> = self.conns.keys().copied().collect();
        let mut ready = vec![PollFlags::empty(); tokens.len()];
        let (listener_ready, link_ready, pool_ready);
        {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(tokens.len() + 3);
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.link.wake_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.pool.wake_fd(), PollFlags::POLLIN));
            if let Some(fd) = &self.stop_fd {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
            let first_conn = fds.len();
            for t in &tokens {
                let c = &self.conns[t];
                // A closing connection is not read any more: asking for POLLIN would make
                // every poll return at once while its peer has bytes unread.
                let mut ev = if c.sm.is_closing() {
                    PollFlags::empty()
                } else {
                    PollFlags::POLLIN
                };
                if !c.out.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_fd(), ev));
            }
            let timeout = self.next_timeout(timeout);
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let hit = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            listener_ready = hit(&fds[0]);
            link_ready = hit(&fds[1]);
            pool_ready = hit(&fds[2]);
            if first_conn == 4 && hit(&fds[3]) {
                self.stop_requested = true;
            }
            for (i, f) in fds[first_conn..].iter().enumerate() {
                ready[i] = f.revents().unwrap_or(PollFlags::empty());
            }
        }
        for (t, r) in tokens.iter().zip(ready) {
            let closing = self.conns.get(t).is_some_and(|c| c.sm.is_closing());
            if closing && r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                // Its peer is gone: nobody will read the last message.
                self.drop_conn(*t);
                continue;
            }
            if r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                self.read_conn(*t);
            }
            if r.contains(PollFlags::POLLOUT) {
                self.flush_conn(*t);
            }
        }
        if listener_ready {
            self.accept_all();
        }
        if link_ready {
            self.handle_link().map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the ring's owner thread is gone")
            })?;
        }
        if pool_ready {
            self.handle_pages();
        }
        self.check_timeouts();
        self.serve_queries();
        self.serve_status();
        self.reap();
        Ok(())
    }

    /// How long the next poll may sleep: until the next hello timeout, query retry or owed
    /// status; not at all while a query has a page to ask for and room to send it.
    fn next_timeout(&self, timeout: Duration) -> Duration {
        let now = Instant::now();
        let mut due: Option<Instant> = None;
        let mut at = |t: Instant| due = Some(due.map_or(t, |d| d.min(t)));
        for c in self.conns.values() {
            if c.sm.is_closing() {
                at(c.closing_since.map_or(now, |t| t + CLOSE_GRACE));
                continue;
            }
            if c.queued < QUERY_OUT_BOUND {
                if c.queries.ready(now) {
                    return Duration::ZERO;
                }
                if let Some(t) = c.queries.due() {
                    at(t);
                }
            }
            if c.status_owed && !self.snapshot_asked {
                at(c.status_sent.map_or(now, |t| t + STATUS_INTERVAL));
            }
            if let Some(t) = c.idle_since {
                at(t + self.config.hello_timeout);
            }
        }
        match due {
            Some(d) => timeout.min(d.saturating_duration_since(now) + Duration::from_millis(1)),
            None => timeout,
        }
    }

    /// Everything the ring's owner said, in order.
    fn handle_link(&mut self) -> Result<(), OwnerGone> {
        while let Some(ev) = self.link.try_event()? {
            match ev {
                LinkEvent::Attached { token, result } => self.on_attached(token, result),
                LinkEvent::Rotated { rotation, too_slow } => self.on_rotated(rotation, &too_slow),
                LinkEvent::Snapshot(s) => {
                    self.snapshot_asked = false;
                    self.snapshot = s;
                    self.answer_status();
                }
            }
        }
        Ok(())
    }

    /// Sends a rotation's new segment to every reader that follows it, tells the readers
    /// cut off for being too slow why, and notes the departed lossless readers it left
    /// behind.
    fn on_rotated(&mut self, rot: Rotation, too_slow: &[ReaderId]) {
        let now = Instant::now();
        let old_ino = rot
            .previous
            .fd()
            .and_then(|fd| nix::sys::stat::fstat(fd).ok())
            .map(|st| st.st_ino);
        for id in &rot.cut_off {
            if let Some((uid, pid)) = self.departed.remove(id) {
                self.stats.left_behind += 1;
                // A reader whose process still maps the old segment pins it: a uid that
                // makes the service leave mapped segments behind again and again gets the
                // cool-down. (Only a resource bound: soundness never rests on this look.)
                if old_ino.is_some_and(|ino| crate::sys::procfs::maps_inode(pid, ino)) {
                    self.rationing.left_behind_mapped(uid, now);
                }
            }
        }
        for id in too_slow {
            let Some(token) = self.by_reader.remove(id) else {
                continue;
            };
            let Some(c) = self.conns.get_mut(&token) else {
                continue;
            };
            c.reader = None;
            self.rationing.cut_off(c.cred.uid, now);
            self.stats.cut_off += 1;
            let cred = c.cred;
            c.sm.close(
                DisconnectReason::TooSlow,
                "this lossless reader held the ring back without progress and was cut off; frames it holds stay valid",
            );
            self.log_once(
                &cred,
                "cut off a lossless reader",
                "it held the ring back without progress",
            );
        }
        let epoch = rot.segment.epoch();
        if let Some(ring) = rot.segment.fd() {
            for c in self.conns.values_mut() {
                let Some(id) = c.reader else { continue };
                if c.epoch >= epoch || rot.cut_off.contains(&id) || c.sm.is_closing() {
                    continue;
                }
                match ring.try_clone_to_owned() {
                    Ok(fd) => {
                        c.sm.send(&ServerMsg::SegmentSwitch { epoch }, vec![fd]);
                        c.epoch = epoch;
                    }
                    Err(_) => {
                        self.stats.switch_failures += 1;
                        c.sm.close(DisconnectReason::Busy, "out of fds for the segment switch");
                    }
                }
            }
        }
        let all: Vec<u64> = self.conns.keys().copied().collect();
        for t in all {
            self.flush_conn(t);
        }
    }

    fn on_attached(&mut self, token: u64, result: Result<Attached, AttachRefused>) {
        let live = self
            .conns
            .get(&token)
            .is_some_and(|c| c.attaching && !c.sm.is_closing());
        let a = match result {
            Ok(a) if live => a,
            Ok(a) => {
                // The connection ended while the owner attached: nobody will read.
                let _ = self.link.remove(a.fds.id()); // the owner is gone: nothing to free
                return;
            }
            Err(e) => {
                if let Some(c) = self.conns.get_mut(&token) {
                    c.attaching = false;
                    let reason = match e {
                        AttachRefused::LosslessFull { .. } => DisconnectReason::Busy,
                        AttachRefused::Failed(_) => DisconnectReason::Busy,
                    };
                    c.sm.close(reason, &e.to_string());
                    let cred = c.cred;
                    self.log_once(&cred, "refused a reader", &e.to_string());
                    self.flush_conn(token);
                }
                return;
            }
        };
        let (first_available, last_committed) = self.info.history_bounds();
        let fds = a.fds;
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            reader_id: fds.id().0,
            policy: fds.policy(),
            capacity: a.capacity,
            epoch: a.epoch,
            instance_id: self.config.instance_id,
            first_available,
            last_committed,
            start_pos: fds.start_pos(),
            start_seq: fds.start_seq(),
        };
        let id = fds.id();
        let (ring, cursor, wake) = fds.into_fds();
        let c = self.conns.get_mut(&token).expect("checked above");
        c.attaching = false;
        c.reader = Some(id);
        c.policy = welcome.policy;
        c.epoch = welcome.epoch;
        self.by_reader.insert(id, token);
        c.sm.send(&ServerMsg::Welcome(welcome), vec![ring, cursor, wake]);
        self.flush_conn(token);
    }

    fn handle_events(&mut self, token: u64) {
        while let Some(ev) = self.conns.get_mut(&token).and_then(|c| c.sm.poll_event()) {
            match ev {
                ServerEvent::Hello(h) => self.on_hello(token, h.name, h.policy),
                ServerEvent::Query(q) => self.on_query(token, &q),
                ServerEvent::StatusRequest => {
                    // Answered by `serve_status`, at most one per interval: a peer asking
                    // as fast as it can costs one report per 50 ms.
                    if let Some(c) = self.conns.get_mut(&token) {
                        if c.status_owed {
                            self.stats.status_folded += 1;
                        }
                        c.status_owed = true;
                    }
                }
                ServerEvent::Bye => {}
            }
        }
    }

    fn on_hello(&mut self, token: u64, name: String, policy: Policy) {
        let Some(c) = self.conns.get(&token) else {
            return;
        };
        let cred = c.cred;
        if policy == Policy::Lossless {
            if let Some((reason, detail)) = self.rationing.refuse_lossless(cred.uid, Instant::now())
            {
                self.log_once(&cred, "refused a lossless reader", &detail);
                let c = self.conns.get_mut(&token).expect("conn");
                c.sm.close(reason, &detail);
                return;
            }
        }
        if self
            .link
            .attach(token, policy, self.config.max_lossless)
            .is_err()
        {
            let c = self.conns.get_mut(&token).expect("conn");
            c.sm.close(DisconnectReason::ShuttingDown, "the ring is closing");
            return;
        }
        let c = self.conns.get_mut(&token).expect("conn");
        c.attaching = true;
        c.policy = policy;
        c.name = name;
        c.idle_since = None;
    }

    fn on_query(&mut self, token: u64, q: &HistoryQuery) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if !c.queries.has_room() {
            self.stats.queries_refused += 1;
            c.sm.send(
                &ServerMsg::RowsEnd {
                    id: q.id,
                    end: QueryEnd::Unavailable,
                },
                vec![],
            );
            return;
        }
        let rows = self.info.query(q);
        c.queries.push(q.id, rows);
    }

    /// Hands each connection's next page to the workers, while its output queue has room.
    fn serve_queries(&mut self) {
        let now = Instant::now();
        for (t, c) in self.conns.iter_mut() {
            if c.queries.is_empty() {
                continue;
            }
            if c.sm.is_closing() {
                c.queries.clear();
                continue;
            }
            if c.queued >= QUERY_OUT_BOUND {
                continue;
            }
            if let Some((id, rows)) = c.queries.next_job(now) {
                self.pool.submit(
                    *t,
                    id,
                    rows,
                    PageBudget {
                        rows: MAX_ROWS,
                        bytes: ROWS_BYTES,
                    },
                );
            }
        }
    }

    /// Sends the pages the workers pulled.
    fn handle_pages(&mut self) {
        let now = Instant::now();
        for d in self.pool.take_done() {
            let token = d.token;
            let id = d.id;
            let Some(c) = self.conns.get_mut(&token) else {
                continue; // the connection is gone: so is its query
            };
            let Some(outcome) = c.queries.done(d, now) else {
                continue;
            };
            let (rows, end) = match outcome {
                Outcome::Rows(rows) => (rows, None),
                Outcome::End(rows, end) => (rows, Some(end)),
            };
            // Cut by bytes: no message is ever over the frame limit, whatever the paths.
            let (msgs, oversized) = rows_messages(id, rows);
            if oversized > 0 {
                self.stats.rows_oversized += oversized as u64;
            }
            for m in &msgs {
                c.sm.send(m, vec![]);
            }
            if let Some(end) = end {
                c.sm.send(&ServerMsg::RowsEnd { id, end }, vec![]);
            }
            self.flush_conn(token);
        }
    }

    /// Asks the owner for a snapshot when some connection's status is due.
    fn serve_status(&mut self) {
        if self.snapshot_asked {
            return;
        }
        let now = Instant::now();
        let due = self.conns.values().any(|c| Self::status_due(c, now));
        if due {
            if self.link.request_snapshot().is_ok() {
                self.snapshot_asked = true;
            } else {
                // The owner is gone (shutting down): answer from the last snapshot.
                self.answer_status();
            }
        }
    }

    fn status_due(c: &Conn, now: Instant) -> bool {
        c.status_owed
            && !c.sm.is_closing()
            && c.status_sent
                .is_none_or(|t| now.duration_since(t) >= STATUS_INTERVAL)
    }

    /// Answers every owed and due status request from the latest snapshot.
    fn answer_status(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| Self::status_due(c, now))
            .map(|(t, _)| *t)
            .collect();
        if due.is_empty() {
            return;
        }
        let st = self.status();
        for t in due {
            if let Some(c) = self.conns.get_mut(&t) {
                c.status_owed = false;
                c.status_sent = Some(now);
                c.sm.send(&ServerMsg::Status(Box::new(st.clone())), vec![]);
            }
            self.flush_conn(t);
        }
    }

    /// The status report, from the latest ring snapshot and the cached service info.
    pub fn status(&self) -> Status {
        let snap = &self.snapshot;
        let progress: HashMap<ReaderId, (Policy, u64)> = snap
            .readers
            .iter()
            .map(|r| (r.id, (r.policy, r.lag)))
            .collect();
        let readers: Vec<ReaderStatus> = self
            .conns
            .values()
            .filter_map(|c| {
                let id = c.reader?;
                let &(policy, lag) = progress.get(&id)?;
                Some(ReaderStatus {
                    id: id.0,
                    pid: c.cred.pid,
                    uid: c.cred.uid,
                    name: c.name.clone(),
                    policy,
                    lag_bytes: lag,
                })
            })
            .collect();
        let fill = readers
            .iter()
            .filter(|r| r.policy == Policy::Lossless)
            .map(|r| r.lag_bytes)
            .max()
            .unwrap_or(0);
        let mut st = Status {
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            ring_capacity: snap.capacity,
            ring_fill: fill,
            epoch: snap.epoch,
            next_seq: snap.committed_seq,
            readers_total: readers.len() as u64,
            readers,
            ..Status::default()
        };
        st.counters.cut_off = self.stats.cut_off;
        st.counters.left_behind = self.stats.left_behind;
        self.info.status(&mut st);
        st.fit();
        st
    }

    /// Moves queued transmits of the state machine to the connection's write queue.
    fn pump_out(&mut self, token: u64) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        while let Some(t) = c.sm.poll_transmit() {
            c.queued += t.bytes.len();
            c.out.push_back((t, 0));
        }
        if c.queued > self.config.max_queued && !c.sm.is_closing() {
            // A client that does not read its socket: drop what is queued and say why.
            c.out.clear();
            c.queued = 0;
            c.queries.clear();
            c.sm.close(
                DisconnectReason::TooSlow,
                "the client does not read its socket",
            );
            while let Some(t) = c.sm.poll_transmit() {
                c.out.push_back((t, 0));
            }
        }
    }

    fn flush_conn(&mut self, token: u64) {
        self.pump_out(token);
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        while let Some((t, sent)) = c.out.front_mut() {
            let r = if *sent == 0 && !t.fds.is_empty() {
                let fds: Vec<BorrowedFd<'_>> = t.fds.iter().map(|f| f.as_fd()).collect();
                crate::fdpass::send_some_with_fds(c.stream.as_fd(), &t.bytes, &fds)
            } else {
                send_some(c.stream.as_fd(), &t.bytes[*sent..])
            };
            match r {
                Ok(n) => {
                    *sent += n;
                    if *sent >= t.bytes.len() {
                        c.queued = c.queued.saturating_sub(t.bytes.len());
                        c.out.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.drop_conn(token);
                    return;
                }
            }
        }
    }

    fn check_timeouts(&mut self) {
        let now = Instant::now();
        let mut unread = Vec::new();
        for (t, c) in &mut self.conns {
            if c.sm.is_closing() {
                let since = *c.closing_since.get_or_insert(now);
                if now.duration_since(since) >= CLOSE_GRACE {
                    unread.push(*t);
                }
            }
        }
        for t in unread {
            // Its last message (the reason) was not taken in time: the slot is needed more.
            self.drop_conn(t);
        }
        let limit = self.config.hello_timeout;
        let stale: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !c.sm.is_closing() && c.idle_since.is_some_and(|t| t.elapsed() > limit)
            })
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            let c = self.conns.get_mut(&t).expect("conn");
            let cred = c.cred;
            c.idle_since = None;
            c.sm.close(
                DisconnectReason::ProtocolError,
                "no complete message in time",
            );
            self.stats.protocol_errors += 1;
            self.log_once(
                &cred,
                "closed a silent connection",
                "no hello or half a message",
            );
            self.flush_conn(t);
        }
    }

    /// Drops connections that finished closing.
    fn reap(&mut self) {
        let done: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.sm.is_closing() && c.out.is_empty())
            .map(|(t, _)| *t)
            .collect();
        for t in done {
            self.drop_conn(t);
        }
    }

    /// Closes a connection and removes its reader. A lagging reader's slot is freed at
    /// once; a lossless reader departs, keeping its backpressure until the producer leaves
    /// it behind with a rotation (its process may still read frames in place), which the
    /// producer does by itself the moment it would be held back.
    fn drop_conn(&mut self, token: u64) {
        let Some(c) = self.conns.remove(&token) else {
            return;
        };
        if let Some(id) = c.reader {
            self.by_reader.remove(&id);
            if c.policy == Policy::Lossless {
                self.departed.insert(id, (c.cred.uid, c.cred.pid));
            }
            // The owner is gone only while shutting down, when nothing needs freeing.
            let _ = self.link.remove(id);
        }
    }

    /// Tells every client the service is shutting down and flushes what it can.
    pub fn shutdown(&mut self) {
        for c in self.conns.values_mut() {
            c.sm.close(DisconnectReason::ShuttingDown, "");
        }
        let tokens: Vec<u64> = self.conns.keys().copied().collect();
        for t in tokens {
            self.pump_out(t);
            self.flush_conn(t);
            self.drop_conn(t);
        }
    }

    fn log_once(&mut self, cred: &PeerCred, what: &'static str, detail: &str) {
        if self.logged.len() < 10_000 && self.logged.insert((cred.uid, what)) {
            tracing::warn!(
                "control: {what}: pid {} uid {}: {detail}",
                cred.pid,
                cred.uid
            );
        }
    }

    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: stop accepting this round; connections that wait
                    // in the backlog are taken once fds are free.
                    if self.logged.insert((u32::MAX, "accept failed")) {
                        tracing::error!("control: accept failed: {e} (logged once)");
                    }
                    return;
                }
            };
            self.stats.accepted += 1;
            if stream.set_nonblocking(true).is_err() {
                continue; // a blocking socket would stall the loop: drop it
            }
            let cred = match peer_cred(stream.as_fd()) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let mut conn = Conn {
                stream,
                cred,
                sm: ServerConn::new(),
                reader: None,
                policy: Policy::Lagging,
                attaching: false,
                name: String::new(),
                out: VecDeque::new(),
                queued: 0,
                idle_since: Some(Instant::now()),
                closing_since: None,
                epoch: 0,
                queries: ConnQueries::default(),
                status_sent: None,
                status_owed: false,
            };
            if !is_allowed(&cred, &self.config.access, self.service_uid) {
                self.stats.refused += 1;
                self.log_once(
                    &cred,
                    "refused a peer that is not allowed",
                    "not on the allow-list",
                );
                conn.sm.close(
                    DisconnectReason::NotAllowed,
                    &format!("uid {} is not allowed to read this service", cred.uid),
                );
                Self::refuse(conn);
                continue;
            }
            if self.conns.len() >= self.config.max_connections {
                self.stats.busy += 1;
                self.log_once(&cred, "refused a connection over the cap", "busy");
                conn.sm.close(
                    DisconnectReason::Busy,
                    "the service has no room for another connection",
                );
                Self::refuse(conn);
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            self.conns.insert(token, conn);
        }
    }

    /// Sends a refused connection its reason (best effort, non-blocking) and drops it.
    fn refuse(mut conn: Conn) {
        while let Some(t) = conn.sm.poll_transmit() {
            // Best effort: a peer that does not take its refusal loses only the reason.
            let _ = send_some(conn.stream.as_fd(), &t.bytes);
        }
    }

    fn read_conn(&mut self, token: u64) {
        let mut buf = [0u8; 16 << 10];
        // At most 64 KiB per connection per round, so a peer that floods us cannot starve
        // the others; what it sent more waits for the next round.
        for _ in 0..4 {
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            if c.sm.is_closing() {
                // Nothing it says matters any more; its last message is on the way out.
                break;
            }
            // A plain read: no control buffer, so fds a client sends are discarded by the
            // kernel and never enter our fd table.
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.drop_conn(token);
                    return;
                }
                Ok(n) => {
                    if let Err(e) = c.sm.handle_input(&buf[..n]) {
                        let cred = c.cred;
                        self.stats.protocol_errors += 1;
                        self.log_once(
                            &cred,
                            "closed a connection for a protocol error",
                            &e.to_string(),
                        );
                    }
                    let c = self.conns.get_mut(&token).expect("still here");
                    let hello_missing = c.reader.is_none() && !c.attaching && !c.sm.is_closing();
                    c.idle_since = if c.sm.buffered() > 0 || hello_missing {
                        c.idle_since.or(Some(Instant::now()))
                    } else {
                        None
                    };
                    self.handle_events(token);
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(token);
                    return;
                }
            }
        }
        self.pump_out(token);
        self.flush_conn(token);
    }
}

/// One non-blocking `send` without fds; returns the bytes written.
fn send_some(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    use nix::sys::socket::{send, MsgFlags};
    loop {
        match send(
            fd.as_raw_fd(),
            bytes,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
