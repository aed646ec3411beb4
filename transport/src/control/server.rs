//! The service's side of the control socket: one event loop (poll) over the listener and
//! every connection, driving a [`ServerConn`] per connection.
//!
//! It authenticates peers (SO_PEERCRED against the allow-list), hands each reader its ring,
//! cursor page and wake pipe, rations lossless readers (a cap, an allow-list of uids, a
//! cool-down for a uid that was cut off), watches lossless readers' progress and cuts off
//! one that holds the producer back without keeping a minimum rate (segment rotation: the
//! others follow to a new segment, its borrowed frames stay intact), and frees a reader's
//! slot the moment its connection ends. A malformed or oversized message gets that peer an
//! error and a disconnect; every offender is logged once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rkyv::Archive;

use super::conn::{ServerConn, ServerEvent, Transmit};
use super::peer::{is_allowed, peer_cred, PeerCred};
use super::place::Access;
use super::wire::{
    DisconnectReason, HistoryQuery, QueryEnd, ReaderStatus, ServerMsg, Status, Welcome, MAX_ROWS,
    PROTOCOL_VERSION,
};
use crate::record::FileEvent;
use crate::ring::{Policy, Producer, ReaderId};

/// What the service knows beyond the ring: history bounds, queries, and status details.
/// The service implements it over its database; [`NoHistory`] serves a ring alone.
pub trait ServiceInfo {
    /// Oldest seq history holds, and newest committed seq.
    fn history_bounds(&self) -> (u64, u64);
    /// Starts answering a query. The server pulls its rows a page at a time, only while the
    /// client's output queue has room, so no answer is ever held whole in memory.
    fn query(&mut self, q: &HistoryQuery) -> Box<dyn QueryRows>;
    /// Fills the service-specific parts of a status (roots, rules, history rows, health).
    fn status(&self, status: &mut Status);
}

/// What one pull of a query's rows gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryStep {
    /// Rows were appended (maybe none); pull again.
    More,
    /// Nothing can be had now (a backfill waiting for its range to be committed): pull
    /// again a little later.
    Pending,
    /// Finished: every row was appended.
    Done(QueryEnd),
}

/// A query being answered, page by page.
pub trait QueryRows: Send {
    /// Appends at most `max` rows, in seq order, to `out`.
    fn next_rows(&mut self, out: &mut Vec<FileEvent>, max: usize) -> QueryStep;
}

/// A query answered at once with `end` and no rows.
#[derive(Debug)]
pub struct NoRows(pub QueryEnd);

impl QueryRows for NoRows {
    fn next_rows(&mut self, _out: &mut Vec<FileEvent>, _max: usize) -> QueryStep {
        QueryStep::Done(self.0)
    }
}

/// A ring without history.
#[derive(Debug, Default)]
pub struct NoHistory;

impl ServiceInfo for NoHistory {
    fn history_bounds(&self) -> (u64, u64) {
        (0, 0)
    }
    fn query(&mut self, _q: &HistoryQuery) -> Box<dyn QueryRows> {
        Box::new(NoRows(QueryEnd::Unavailable))
    }
    fn status(&self, status: &mut Status) {
        status.health = "ok (no history)".into();
    }
}

/// Rows pulled for one client per round of the loop.
const QUERY_PAGE: usize = 1024;
/// A query's rows are pulled only while the client's output queue is below this.
const QUERY_OUT_BOUND: usize = 256 << 10;
/// Queries one connection may have waiting or running; more are answered `Unavailable`.
const MAX_QUERIES: usize = 4;
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
    /// How long a lossless reader may hold the producer back...
    pub progress_window: Duration,
    /// ...without releasing at least this many bytes, before it is cut off.
    pub min_progress: u64,
    /// How long a uid whose lossless reader was cut off must wait to read losslessly again.
    pub cooldown: Duration,
    /// How long a connection may stay silent before its hello, or sit on half a message.
    pub hello_timeout: Duration,
    /// Most bytes queued to one client before it is dropped as too slow.
    pub max_queued: usize,
    /// The history's instance id, sent in every welcome.
    pub instance_id: [u8; 16],
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            access: Access::default(),
            max_connections: 1000,
            max_lossless: 4,
            lossless_uids: vec![nix::unistd::geteuid().as_raw()],
            progress_window: Duration::from_secs(3),
            min_progress: 1 << 20,
            cooldown: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(5),
            max_queued: 8 << 20,
            instance_id: [0; 16],
        }
    }
}

/// Raises this process's open-file limit to its hard limit and returns the new soft limit.
/// The service calls it at start and caps connections below it.
///
/// # Errors
/// The OS error of getrlimit/setrlimit.
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
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
    name: String,
    /// Frames being written: the transmit and how many of its bytes went out.
    out: VecDeque<(Transmit, usize)>,
    queued: usize,
    /// Since when the connection has been waiting for a hello or sitting on half a message.
    idle_since: Option<Instant>,
    /// A lossless reader's progress window: when it began holding the producer back, and
    /// where it was then.
    window: Option<(Instant, u64)>,
    /// The segment epoch this client was last sent (welcome or switch).
    epoch: u64,
    /// Queries being answered, oldest first: (id, rows).
    queries: VecDeque<(u64, Box<dyn QueryRows>)>,
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
            .field("queries", &self.queries.len())
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
}

/// The control socket's event loop.
pub struct Server<T> {
    listener: UnixListener,
    producer: Arc<Mutex<Producer<T>>>,
    info: Box<dyn ServiceInfo + Send>,
    config: ServerConfig,
    conns: HashMap<u64, Conn>,
    next_token: u64,
    cooldown: HashMap<u32, Instant>,
    logged: HashSet<(u32, &'static str)>,
    started: Instant,
    service_uid: u32,
    stats: ServerStats,
    /// Lossless readers that left while the producer still honours them: id -> (uid, pid)
    /// (the uid gets the cool-down if rotations keep leaving its readers behind with their
    /// segment still mapped).
    departed: HashMap<ReaderId, (u32, u32)>,
    /// The read end of the producer's rotation hook: readable after every rotation.
    rotated: UnixStream,
    /// Whether some query waits for its range to be committed (poll again soon).
    pending_queries: bool,
    /// Per uid, when its departed lossless readers were left behind (within a cool-down).
    left_behind: HashMap<u32, VecDeque<Instant>>,
}

impl<T> std::fmt::Debug for Server<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish()
    }
}

fn lock<T>(p: &Mutex<Producer<T>>) -> MutexGuard<'_, Producer<T>> {
    // A panic while holding the producer poisons it; the ring itself stays consistent
    // (every commit is one store), so carry on with it.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Archive> Server<T> {
    /// Serves `listener` (made non-blocking) for the ring of `producer`.
    ///
    /// # Errors
    /// The OS error of making the listener non-blocking.
    pub fn new(
        listener: UnixListener,
        producer: Arc<Mutex<Producer<T>>>,
        info: Box<dyn ServiceInfo + Send>,
        config: ServerConfig,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        // The producer may rotate on its own (to leave a departed lossless reader behind),
        // on whichever thread publishes: it pokes this socket so the loop sends the switch
        // at once.
        let (rotated, poke) = UnixStream::pair()?;
        rotated.set_nonblocking(true)?;
        poke.set_nonblocking(true)?;
        lock(&producer).set_rotation_hook(Box::new(move || {
            let _ = (&poke).write(&[1]);
        }));
        Ok(Server {
            departed: HashMap::new(),
            rotated,
            pending_queries: false,
            left_behind: HashMap::new(),
            listener,
            producer,
            info,
            config,
            conns: HashMap::new(),
            next_token: 1,
            cooldown: HashMap::new(),
            logged: HashSet::new(),
            started: Instant::now(),
            service_uid: nix::unistd::geteuid().as_raw(),
            stats: ServerStats::default(),
        })
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Counters since start.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Waits up to `timeout` for something to do, does it, and checks lossless readers'
    /// progress.
    ///
    /// # Errors
    /// Only errors of `poll` itself; a connection's errors close that connection.
    pub fn poll_once(&mut self, timeout: Duration) -> io::Result<()> {
        let tokens: Vec<u64> = self.conns.keys().copied().collect();
        let mut ready = vec![PollFlags::empty(); tokens.len()];
        let listener_ready;
        {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(tokens.len() + 2);
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.rotated.as_fd(), PollFlags::POLLIN));
            for t in &tokens {
                let c = &self.conns[t];
                let mut ev = PollFlags::POLLIN;
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
            listener_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
            for (i, f) in fds[2..].iter().enumerate() {
                ready[i] = f.revents().unwrap_or(PollFlags::empty());
            }
        }
        for (t, r) in tokens.iter().zip(ready) {
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
        self.check_timeouts();
        self.check_progress();
        self.handle_rotations();
        self.serve_queries();
        self.serve_status();
        self.reap();
        Ok(())
    }

    /// How long the next poll may sleep: not at all while a query has rows to pull and
    /// room to send them, briefly while one waits for commits or a status is owed.
    fn next_timeout(&self, timeout: Duration) -> Duration {
        let mut t = timeout;
        for c in self.conns.values() {
            if !c.queries.is_empty() && c.queued < QUERY_OUT_BOUND && !c.sm.is_closing() {
                return Duration::ZERO;
            }
            if c.status_owed {
                t = t.min(STATUS_INTERVAL);
            }
        }
        if self.pending_queries {
            t = t.min(Duration::from_millis(5));
        }
        t
    }

    /// Sends every rotation the producer made to the readers that follow it, in order, and
    /// notes the departed lossless readers it left behind.
    fn handle_rotations(&mut self) {
        let mut buf = [0u8; 64];
        while matches!((&self.rotated).read(&mut buf), Ok(n) if n > 0) {}
        let rotations = lock(&self.producer).take_rotations();
        if rotations.is_empty() {
            return;
        }
        let now = Instant::now();
        for rot in rotations {
            for id in &rot.cut_off {
                let Some((uid, pid)) = self.departed.remove(id) else {
                    continue;
                };
                self.stats.left_behind += 1;
                // A reader whose process still maps the old segment pins it: a uid that
                // makes the service leave mapped segments behind again and again gets the
                // cool-down. (Only a resource bound: soundness never rests on this look.)
                if !maps_segment(pid, &rot.previous) {
                    continue;
                }
                let times = self.left_behind.entry(uid).or_default();
                times.retain(|t| now.duration_since(*t) < self.config.cooldown);
                times.push_back(now);
                if times.len() >= self.config.max_lossless.max(1) {
                    self.cooldown.insert(uid, now);
                }
            }
            let Some(ring) = rot.segment.fd() else {
                continue;
            };
            let epoch = rot.segment.epoch();
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
                        c.sm.close(DisconnectReason::Busy, "out of fds for the segment switch")
                    }
                }
            }
        }
        let all: Vec<u64> = self.conns.keys().copied().collect();
        for t in all {
            self.flush_conn(t);
        }
    }

    /// Pulls a page of rows for each connection with a query and room in its output queue.
    fn serve_queries(&mut self) {
        self.pending_queries = false;
        let tokens: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.queries.is_empty())
            .map(|(t, _)| *t)
            .collect();
        let mut rows = Vec::new();
        for t in tokens {
            let Some(c) = self.conns.get_mut(&t) else {
                continue;
            };
            if c.sm.is_closing() {
                c.queries.clear();
                continue;
            }
            if c.queued >= QUERY_OUT_BOUND {
                continue;
            }
            let Some((id, q)) = c.queries.front_mut() else {
                continue;
            };
            let id = *id;
            rows.clear();
            let step = q.next_rows(&mut rows, QUERY_PAGE.min(MAX_ROWS));
            if !rows.is_empty() {
                c.sm.send(
                    &ServerMsg::Rows {
                        id,
                        rows: std::mem::take(&mut rows),
                    },
                    vec![],
                );
            }
            match step {
                QueryStep::More => {}
                QueryStep::Pending => self.pending_queries = true,
                QueryStep::Done(end) => {
                    c.sm.send(&ServerMsg::RowsEnd { id, end }, vec![]);
                    c.queries.pop_front();
                }
            }
            self.flush_conn(t);
        }
    }

    /// Answers owed status requests, at most one per connection per [`STATUS_INTERVAL`].
    fn serve_status(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.status_owed
                    && c.status_sent
                        .is_none_or(|t| now.duration_since(t) >= STATUS_INTERVAL)
            })
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
            eprintln!(
                "firehose control: {what}: pid {} uid {}: {detail}",
                cred.pid, cred.uid
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
                    eprintln!("firehose control: accept failed: {e}");
                    return;
                }
            };
            self.stats.accepted += 1;
            let _ = stream.set_nonblocking(true);
            let cred = match peer_cred(stream.as_fd()) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let mut conn = Conn {
                stream,
                cred,
                sm: ServerConn::new(),
                reader: None,
                name: String::new(),
                out: VecDeque::new(),
                queued: 0,
                idle_since: Some(Instant::now()),
                window: None,
                epoch: 0,
                queries: VecDeque::new(),
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
            let _ = crate::fdpass::send_with_fds(conn.stream.as_fd(), &t.bytes, &[]);
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
                    c.idle_since = if c.sm.buffered() > 0 || c.reader.is_none() {
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
        let c = self.conns.get(&token).expect("conn");
        let cred = c.cred;
        if policy == Policy::Lossless {
            let refusal = if !self.config.lossless_uids.contains(&cred.uid) {
                Some((
                    DisconnectReason::NotAllowed,
                    format!("uid {} may not read losslessly here", cred.uid),
                ))
            } else if self
                .cooldown
                .get(&cred.uid)
                .is_some_and(|t| t.elapsed() < self.config.cooldown)
            {
                Some((
                    DisconnectReason::NotAllowed,
                    format!(
                        "uid {} was cut off for being too slow; lossless is refused for a while",
                        cred.uid
                    ),
                ))
            } else if self.lossless_count() >= self.config.max_lossless
                && !self.leave_departed_behind()
            {
                Some((
                    DisconnectReason::Busy,
                    format!(
                        "{} lossless readers already (the limit); connect lagging",
                        self.config.max_lossless
                    ),
                ))
            } else {
                None
            };
            if let Some((reason, detail)) = refusal {
                self.log_once(&cred, "refused a lossless reader", &detail);
                let c = self.conns.get_mut(&token).expect("conn");
                c.sm.close(reason, &detail);
                return;
            }
        }
        let (first_available, last_committed) = self.info.history_bounds();
        let mut p = lock(&self.producer);
        let fds = match p.attach_remote(policy) {
            Ok(f) => f,
            Err(e) => {
                drop(p);
                let c = self.conns.get_mut(&token).expect("conn");
                c.sm.close(
                    DisconnectReason::Busy,
                    &format!("cannot attach a reader: {e}"),
                );
                return;
            }
        };
        let seg = p.segment();
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            reader_id: fds.id.0,
            policy,
            capacity: seg.capacity() as u64,
            epoch: seg.epoch(),
            instance_id: self.config.instance_id,
            first_available,
            last_committed,
            start_pos: fds.start_pos,
            start_seq: fds.start_seq,
        };
        drop(p);
        let c = self.conns.get_mut(&token).expect("conn");
        c.reader = Some(fds.id);
        c.epoch = welcome.epoch;
        c.name = name;
        c.idle_since = None;
        c.sm.send(
            &ServerMsg::Welcome(welcome),
            vec![fds.ring, fds.cursor, fds.wake],
        );
    }

    fn on_query(&mut self, token: u64, q: &HistoryQuery) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if c.queries.len() >= MAX_QUERIES {
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
        let c = self.conns.get_mut(&token).expect("conn");
        c.queries.push_back((q.id, rows));
    }

    /// Makes room under the lossless limit by rotating away from departed lossless readers
    /// (a normal cost: one new segment). Returns whether the count is now under the limit.
    fn leave_departed_behind(&mut self) -> bool {
        let departed = lock(&self.producer).lossless_readers().1;
        if departed == 0 {
            return false;
        }
        if let Err(e) = lock(&self.producer).rotate(None, &[]) {
            eprintln!("firehose control: could not rotate to leave departed readers behind: {e}");
            return false;
        }
        self.handle_rotations();
        self.lossless_count() < self.config.max_lossless
    }

    /// Lossless readers, live and departed (a departed one still holds its backpressure
    /// and may pin a segment when left behind).
    fn lossless_count(&self) -> usize {
        let (live, departed) = lock(&self.producer).lossless_readers();
        live + departed
    }

    /// The status report.
    pub fn status(&self) -> Status {
        let p = lock(&self.producer);
        // One pass over the producer's readers, then one over the connections.
        let progress: HashMap<ReaderId, (Policy, u64)> = p
            .readers_progress()
            .into_iter()
            .map(|(id, policy, _, lag)| (id, (policy, lag)))
            .collect();
        let readers = self
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
            .collect::<Vec<_>>();
        let fill = readers
            .iter()
            .filter(|r| r.policy == Policy::Lossless)
            .map(|r| r.lag_bytes)
            .max()
            .unwrap_or(0);
        let mut st = Status {
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            ring_capacity: p.segment().capacity() as u64,
            ring_fill: fill,
            epoch: p.segment().epoch(),
            next_seq: p.committed_seq(),
            readers,
            ..Status::default()
        };
        drop(p);
        st.counters.cut_off = self.stats.cut_off;
        st.counters.left_behind = self.stats.left_behind;
        self.info.status(&mut st);
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

    /// Cuts off a lossless reader that has held the producer back for a whole window
    /// without releasing `min_progress` bytes (a stalled reader, or one trickling just
    /// enough to dodge a plain timeout).
    fn check_progress(&mut self) {
        let now = Instant::now();
        let mut cut = Vec::new();
        {
            let p = lock(&self.producer);
            let cap = p.segment().capacity() as u64;
            for (t, c) in self.conns.iter_mut() {
                let Some(id) = c.reader else { continue };
                if p.reader_policy(id) != Some(Policy::Lossless) {
                    continue;
                }
                let Some((pos, lag)) = p.reader_progress(id) else {
                    continue;
                };
                // Holding back: less than a quarter of the ring left ahead of it.
                if lag + cap / 4 < cap {
                    c.window = None;
                    continue;
                }
                match c.window {
                    None => c.window = Some((now, pos)),
                    Some((since, at))
                        if now.duration_since(since) >= self.config.progress_window =>
                    {
                        if pos.saturating_sub(at) < self.config.min_progress {
                            cut.push(*t);
                        } else {
                            c.window = Some((now, pos));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if !cut.is_empty() {
            self.cut_off(&cut);
        }
    }

    fn cut_off(&mut self, tokens: &[u64]) {
        let ids: Vec<ReaderId> = tokens
            .iter()
            .filter_map(|t| self.conns.get(t)?.reader)
            .collect();
        if let Err(e) = lock(&self.producer).rotate(None, &ids) {
            eprintln!(
                "firehose control: could not rotate the ring to cut off a stalled reader: {e}"
            );
            return;
        }
        for t in tokens {
            let Some(c) = self.conns.get_mut(t) else {
                continue;
            };
            c.reader = None;
            c.window = None;
            self.cooldown.insert(c.cred.uid, Instant::now());
            self.stats.cut_off += 1;
            c.sm.close(
                DisconnectReason::TooSlow,
                "this lossless reader held the ring back without progress and was cut off; frames it holds stay valid",
            );
        }
        // The switch for everyone else (and any rotation the producer made on its own).
        self.handle_rotations();
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
        if let Some(c) = self.conns.remove(&token) {
            if let Some(id) = c.reader {
                let mut p = lock(&self.producer);
                if p.reader_policy(id) == Some(Policy::Lossless) {
                    self.departed.insert(id, (c.cred.uid, c.cred.pid));
                }
                p.remove_reader(id);
            }
        }
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

/// Whether process `pid` maps `seg` (its memfd's inode appears in `/proc/PID/maps`). False
/// if the process is gone or its maps cannot be read.
fn maps_segment(pid: u32, seg: &crate::ring::Segment) -> bool {
    let Some(fd) = seg.fd() else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(fd) else {
        return false;
    };
    let ino = st.st_ino.to_string();
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| {
        maps.lines()
            .any(|l| l.split_whitespace().nth(4) == Some(&ino))
    })
}
