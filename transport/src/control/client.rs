//! The blocking client: connects, checks who the service is, says hello, maps the ring it
//! is handed, and reads it, following segment switches and collecting notices. It waits on
//! its wake pipe and the socket together, so a service that dies wakes an idle reader at
//! once (socket EOF), with no heartbeat.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rkyv::Archive;

use super::conn::{ClientConn, ClientEvent, ProtocolError};
use super::peer::{check_service, connect, ConnectError, PeerCred};
use super::wire::{
    ClientMsg, DisconnectReason, Hello, HistoryQuery, QueryEnd, StartAt, Status, Welcome,
    PROTOCOL_VERSION,
};
use crate::record::{FileEvent, Loss};
use crate::ring::{Batch, Policy, ReadError, Reader, ReaderFds, ReaderId, Segment, SegmentError};

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Shown in the service's status.
    pub name: String,
    /// Lossless or lagging.
    pub policy: Policy,
    /// Where to start.
    pub start: StartAt,
    /// Uids besides our own and root that the service may run as.
    pub trusted_uids: Vec<u32>,
    /// How long to wait for the welcome.
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            name: "firehose client".into(),
            policy: Policy::Lagging,
            start: StartAt::Now,
            trusted_uids: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting, or checking the service, failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The socket failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The service broke the protocol.
    #[error("the service at {path} broke the protocol: {source}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// How.
        source: ProtocolError,
    },
    /// The ring the service handed over could not be mapped.
    #[error("the ring from {path} could not be mapped: {source}")]
    Ring {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: SegmentError,
    },
    /// The connection is over.
    #[error("disconnected from {path}: {reason}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Disconnected {
        /// The socket path.
        path: PathBuf,
        /// Why, as a typed value.
        reason: DisconnectReason,
        /// What the service said.
        detail: String,
    },
    /// Reading the ring failed.
    #[error("reading the ring from {path}: {source}")]
    Read {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: ReadError,
    },
    /// No answer in time.
    #[error("no answer from {path} within {timeout:?}")]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
}

impl ClientError {
    /// The disconnect reason, if this is a disconnect.
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        match self {
            ClientError::Disconnected { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

/// A connected reader.
pub struct Client<T> {
    path: PathBuf,
    stream: UnixStream,
    sm: ClientConn,
    reader: Reader<T>,
    welcome: Welcome,
    service: PeerCred,
    segments: VecDeque<Segment>,
    notices: VecDeque<Loss>,
    /// Answers (status, history rows) not yet taken: each caller takes only its own.
    other: VecDeque<ClientEvent>,
    /// Queries whose asker stopped listening: their late rows are dropped as they come.
    abandoned: Vec<u64>,
    disconnected: Option<(DisconnectReason, String)>,
    /// Seq after the last event handed out.
    next_seq: u64,
    /// Where the hello asked to start.
    start: StartAt,
    /// The socket's receive buffer, reused.
    buf: Vec<u8>,
    /// Receive calls since the socket was last read while the ring had data.
    since_socket: u32,
}

impl<T> std::fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("path", &self.path)
            .field("welcome", &self.welcome)
            .finish()
    }
}

impl<T> Client<T> {
    /// Stops listening to query `id`: the rest of its answer is dropped as it comes.
    pub fn abandon(&mut self, id: u64) {
        let mut ended = false;
        self.other.retain(|e| match e {
            ClientEvent::Rows { id: i, .. } => *i != id,
            ClientEvent::RowsEnd { id: i, .. } if *i == id => {
                ended = true;
                false
            }
            _ => true,
        });
        if !ended && !self.abandoned.contains(&id) {
            self.abandoned.push(id);
        }
    }

    fn take_matching(&mut self, want: impl FnMut(&ClientEvent) -> bool) -> Option<ClientEvent> {
        let i = self.other.iter().position(want)?;
        self.other.remove(i)
    }
}

impl<T: Archive> Client<T> {
    /// Connects to the service at `path`, checks that it runs as a trusted uid, says hello
    /// and maps the ring it hands over.
    ///
    /// # Errors
    /// [`ClientError::Connect`] (not running, not allowed, untrusted service, path too
    /// long), [`ClientError::Disconnected`] (refused: busy, not allowed, version mismatch),
    /// [`ClientError::Timeout`], [`ClientError::Ring`].
    pub fn connect(path: &Path, opts: &ConnectOptions) -> Result<Self, ClientError> {
        let stream = connect(path)?;
        let service = check_service(&stream, &opts.trusted_uids)?;
        let io_err = |source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut sm = ClientConn::new(Hello {
            version: PROTOCOL_VERSION,
            name: opts.name.clone(),
            policy: opts.policy,
            start: opts.start,
        });
        match flush(&stream, &mut sm) {
            Ok(()) => {}
            // The service may refuse us (not allowed, busy) and close before our hello is
            // out: its reason is waiting in our receive buffer, so read on.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => return Err(io_err(e)),
        }
        let deadline = Instant::now() + opts.timeout;
        let mut early = VecDeque::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout {
                    path: path.to_path_buf(),
                    timeout: opts.timeout,
                });
            }
            if !wait_readable(stream.as_fd(), left).map_err(io_err)? {
                continue;
            }
            pump(&stream, &mut sm, &mut [0u8; 4096]).map_err(|e| match e {
                PumpError::Io(source) => ClientError::Io {
                    path: path.to_path_buf(),
                    source,
                },
                PumpError::Protocol(source) => ClientError::Protocol {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
            while let Some(ev) = sm.poll_event() {
                match ev {
                    ClientEvent::Welcome {
                        welcome,
                        ring,
                        cursor,
                        wake,
                    } => {
                        let fds = ReaderFds {
                            id: ReaderId(welcome.reader_id),
                            policy: welcome.policy,
                            start_pos: welcome.start_pos,
                            start_seq: welcome.start_seq,
                            ring,
                            cursor,
                            wake,
                        };
                        let reader = Reader::open(fds).map_err(|source| ClientError::Ring {
                            path: path.to_path_buf(),
                            source,
                        })?;
                        let mut c = Client {
                            path: path.to_path_buf(),
                            stream,
                            sm,
                            reader,
                            next_seq: welcome.start_seq,
                            welcome,
                            service,
                            segments: VecDeque::new(),
                            notices: VecDeque::new(),
                            other: VecDeque::new(),
                            abandoned: Vec::new(),
                            disconnected: None,
                            start: opts.start,
                            buf: vec![0; 64 << 10],
                            since_socket: 0,
                        };
                        c.stream.set_nonblocking(true).map_err(io_err)?;
                        c.absorb_events();
                        return Ok(c);
                    }
                    ClientEvent::Disconnected { reason, detail } => {
                        return Err(ClientError::Disconnected {
                            path: path.to_path_buf(),
                            reason,
                            detail,
                        });
                    }
                    other => early.push_back(other),
                }
            }
            if sm.is_closed() {
                return Err(ClientError::Disconnected {
                    path: path.to_path_buf(),
                    reason: DisconnectReason::Gone,
                    detail: "the service closed the connection before welcoming us".into(),
                });
            }
        }
    }

    /// Where this connection asked to start.
    pub fn start(&self) -> StartAt {
        self.start
    }

    /// The service's welcome.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Who the service is (pid, uid, gid).
    pub fn service(&self) -> PeerCred {
        self.service
    }

    /// The seq after the last event handed out (where a reconnect resumes).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Takes the notices received so far.
    pub fn take_notices(&mut self) -> Vec<Loss> {
        self.notices.drain(..).collect()
    }

    /// The reader, for its wake fd or spin budget.
    pub fn reader_mut(&mut self) -> &mut Reader<T> {
        &mut self.reader
    }

    /// The socket's fd, to poll beside the reader's wake fd.
    pub fn socket_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    fn err_path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Reads whatever the socket has (non-blocking) and sorts the events.
    fn service_socket(&mut self) -> Result<(), ClientError> {
        match pump(&self.stream, &mut self.sm, &mut self.buf) {
            Ok(()) => {}
            Err(PumpError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(PumpError::Io(source)) => {
                return Err(ClientError::Io {
                    path: self.err_path(),
                    source,
                })
            }
            Err(PumpError::Protocol(source)) => {
                self.absorb_events();
                return Err(ClientError::Protocol {
                    path: self.err_path(),
                    source,
                });
            }
        }
        self.absorb_events();
        Ok(())
    }

    fn absorb_events(&mut self) {
        while let Some(ev) = self.sm.poll_event() {
            match ev {
                ClientEvent::SegmentSwitch { ring, .. } => match Segment::open(ring) {
                    Ok(seg) => self.segments.push_back(seg),
                    Err(e) => {
                        self.disconnected =
                            Some((DisconnectReason::ProtocolError, format!("bad segment: {e}")));
                    }
                },
                ClientEvent::Notice(n) => self.notices.push_back(n),
                ClientEvent::Disconnected { reason, detail } => {
                    if self.disconnected.is_none() {
                        self.disconnected = Some((reason, detail));
                    }
                }
                ClientEvent::Rows { id, .. } if self.abandoned.contains(&id) => {}
                ClientEvent::RowsEnd { id, .. } if self.abandoned.contains(&id) => {
                    self.abandoned.retain(|a| *a != id);
                }
                ev @ (ClientEvent::Rows { .. }
                | ClientEvent::RowsEnd { .. }
                | ClientEvent::Status(_)) => self.other.push_back(ev),
                // A second welcome is a protocol error the state machine reports itself;
                // nothing else is for anyone to take.
                ClientEvent::Welcome { .. } => {}
            }
        }
    }

    fn disconnected_error(&self) -> ClientError {
        let (reason, detail) = self
            .disconnected
            .clone()
            .unwrap_or((DisconnectReason::Gone, String::new()));
        ClientError::Disconnected {
            path: self.err_path(),
            reason,
            detail,
        }
    }

    /// Waits until events are ready and hands out up to `max`; follows segment switches.
    /// After a disconnect, the frames still in the ring are handed out first; then the
    /// disconnect is the error.
    ///
    /// # Errors
    /// [`ClientError::Disconnected`] with the reason (too slow, shutting down, gone...),
    /// [`ClientError::Read`].
    pub fn recv(&mut self, max: usize) -> Result<Batch<'_, T>, ClientError> {
        self.recv_deadline(max, None)
    }

    /// As [`recv`](Self::recv), returning an empty batch after `timeout`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<Batch<'_, T>, ClientError> {
        self.recv_deadline(max, Some(Instant::now() + timeout))
    }

    fn recv_deadline(
        &mut self,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<Batch<'_, T>, ClientError> {
        loop {
            match self.step(max)? {
                Step::Ready => break,
                Step::WaitSocket => self.wait(deadline, false)?,
                Step::WaitRing => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    self.wait(deadline, true)?;
                }
            }
        }
        Ok(self.take_batch())
    }

    /// One round without blocking: reads the socket, fills a batch from the ring, follows
    /// a segment switch. Says what to wait for if nothing is ready.
    pub(crate) fn step(&mut self, max: usize) -> Result<Step, ClientError> {
        // While the ring has data, the socket is read only every SOCKET_EVERY calls (a
        // syscall each time): notices wait that long at most; a disconnect is noticed at
        // the end of the ring anyway. When the ring is empty it is read every time.
        self.since_socket += 1;
        if self.since_socket >= SOCKET_EVERY {
            self.since_socket = 0;
            self.service_socket()?;
        }
        loop {
            match self.reader.fill_ready(max) {
                Ok(0) => {}
                Ok(_) => return Ok(Step::Ready),
                Err(ReadError::SegmentEnded { next_epoch, .. }) => {
                    while self
                        .segments
                        .front()
                        .is_some_and(|s| s.epoch() < next_epoch)
                    {
                        self.segments.pop_front();
                    }
                    if self.segments.is_empty() {
                        self.service_socket()?;
                    }
                    if let Some(seg) = self.segments.pop_front() {
                        self.reader
                            .follow(seg)
                            .map_err(|source| ClientError::Read {
                                path: self.err_path(),
                                source,
                            })?;
                        continue;
                    }
                    if self.disconnected.is_some() {
                        return Err(self.disconnected_error());
                    }
                    // The switch message is on its way: wait for the socket.
                    return Ok(Step::WaitSocket);
                }
                Err(e @ (ReadError::Closed | ReadError::ProducerGone)) => {
                    // The service may have said why on the socket.
                    let _ = self.service_socket();
                    if self.disconnected.is_none() {
                        let reason = if e == ReadError::Closed {
                            DisconnectReason::ShuttingDown
                        } else {
                            DisconnectReason::Gone
                        };
                        self.disconnected = Some((reason, e.to_string()));
                    }
                    return Err(self.disconnected_error());
                }
                Err(source) => {
                    return Err(ClientError::Read {
                        path: self.err_path(),
                        source,
                    })
                }
            }
            // Nothing in the ring: read the socket before deciding to sleep.
            self.since_socket = 0;
            self.service_socket()?;
            if self.disconnected.is_some() {
                return Err(self.disconnected_error());
            }
            return Ok(Step::WaitRing);
        }
    }

    /// Hands out the batch the last [`step`](Self::step) filled (possibly empty).
    pub(crate) fn take_batch(&mut self) -> Batch<'_, T> {
        let batch = self.reader.current();
        if let Some(last) = batch.iter().last() {
            self.next_seq = match last {
                crate::ring::Event::Record(r) => r.seq() + 1,
                crate::ring::Event::Gap { to, .. } | crate::ring::Event::Lagged { to, .. } => {
                    to + 1
                }
            };
        }
        batch
    }

    /// Sleeps on the wake pipe (if `ring`) and the socket together.
    fn wait(&mut self, deadline: Option<Instant>, ring: bool) -> Result<(), ClientError> {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let ms = d
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .clamp(1, i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let sleeping = ring && self.reader.prepare_wait();
        if ring && !sleeping {
            return Ok(());
        }
        let r = {
            let mut fds = vec![PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            if sleeping {
                if let Some(w) = self.reader.wake_fd() {
                    fds.push(PollFd::new(w, PollFlags::POLLIN));
                }
            }
            let r = poll(&mut fds, timeout);
            let wake_readable = fds
                .get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| r.intersects(PollFlags::POLLIN));
            r.map(|_| wake_readable)
        };
        if sleeping {
            self.reader.finish_wait(*r.as_ref().unwrap_or(&false));
        }
        match r {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(ClientError::Io {
                path: self.err_path(),
                source: e.into(),
            }),
        }
    }

    /// Sends `msg`, waiting for room if the socket is full. The socket stays non-blocking
    /// (its open file description may be shared, with tokio's reactor for one): each send
    /// is `MSG_DONTWAIT`, and a full socket is waited out with `poll`.
    fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        self.sm.send(msg);
        flush(&self.stream, &mut self.sm).map_err(|source| ClientError::Io {
            path: self.err_path(),
            source,
        })
    }

    /// Waits for the next answer that `want` takes; answers it does not take stay for
    /// their own askers (the follower's backfill and an application's queries share one
    /// connection).
    fn next_matching(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&ClientEvent) -> bool,
    ) -> Result<ClientEvent, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.take_matching(&mut want) {
                return Ok(ev);
            }
            if self.disconnected.is_some() {
                return Err(self.disconnected_error());
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    path: self.err_path(),
                    timeout,
                });
            }
            self.wait(Some(deadline), false)?;
            self.service_socket()?;
        }
    }

    /// Asks the service for its status.
    ///
    /// # Errors
    /// [`ClientError::Disconnected`], [`ClientError::Timeout`], [`ClientError::Io`].
    pub fn status(&mut self) -> Result<Status, ClientError> {
        self.send(&ClientMsg::StatusRequest)?;
        match self.next_matching(Duration::from_secs(10), |e| {
            matches!(e, ClientEvent::Status(_))
        })? {
            ClientEvent::Status(s) => Ok(*s),
            _ => unreachable!("only a status matches"),
        }
    }

    /// Runs a history query and collects its rows.
    ///
    /// # Errors
    /// As [`status`](Self::status).
    pub fn query(&mut self, q: HistoryQuery) -> Result<(Vec<FileEvent>, QueryEnd), ClientError> {
        let id = q.id;
        self.send(&ClientMsg::Query(q))?;
        let mut rows = Vec::new();
        loop {
            match self.next_matching(Duration::from_secs(60), |e| answers(e, id)) {
                Ok(ClientEvent::Rows { rows: r, .. }) => rows.extend(r),
                Ok(ClientEvent::RowsEnd { end, .. }) => return Ok((rows, end)),
                Ok(_) => unreachable!("only this query's answer matches"),
                Err(e) => {
                    self.abandon(id);
                    return Err(e);
                }
            }
        }
    }

    /// Sends a history query without waiting for its answer: take the answer's pages with
    /// [`take_page`](Self::take_page) as receive calls read them off the socket (so one
    /// connection reads the ring and browses history at once). Ids are
    /// the caller's to keep apart from any other query on this connection.
    ///
    /// # Errors
    /// [`ClientError::Io`] if the socket fails.
    pub fn send_query(&mut self, q: HistoryQuery) -> Result<(), ClientError> {
        self.send(&ClientMsg::Query(q))
    }

    /// Asks for the service's status without waiting; the answer is taken with
    /// [`take_status`](Self::take_status).
    ///
    /// # Errors
    /// [`ClientError::Io`] if the socket fails.
    pub fn send_status_request(&mut self) -> Result<(), ClientError> {
        self.send(&ClientMsg::StatusRequest)
    }

    /// The next page of query `id`'s answer that a receive call has read off the socket,
    /// if any. Touches neither the socket nor the ring: a reader that waits on the socket
    /// and the wake fd and then receives (as [`recv`](Self::recv) does) has read every
    /// answer that woke it.
    pub fn take_page(&mut self, id: u64) -> Option<QueryPage> {
        match self.take_matching(|e| answers(e, id))? {
            ClientEvent::Rows { rows, .. } => Some(QueryPage::Rows(rows)),
            ClientEvent::RowsEnd { end, .. } => Some(QueryPage::End(end)),
            _ => unreachable!("only this query's answer matches"),
        }
    }

    /// A status answer that a receive call has read off the socket, if any (see
    /// [`take_page`](Self::take_page)).
    pub fn take_status(&mut self) -> Option<Status> {
        match self.take_matching(|e| matches!(e, ClientEvent::Status(_)))? {
            ClientEvent::Status(s) => Some(*s),
            _ => unreachable!("only a status matches"),
        }
    }

    /// Says goodbye and closes.
    pub fn bye(mut self) {
        let _ = self.send(&ClientMsg::Bye);
    }
}

/// Connects again after a disconnect, resuming after `last_seq` (the records between it and
/// the live head come from history), with exponential backoff between attempts (from
/// 50 ms, doubling, at most 2 s) for up to `attempts` tries.
///
/// # Errors
/// The last attempt's error; a refusal that retrying cannot fix (not allowed, version
/// mismatch, untrusted service) is returned at once.
pub fn reconnect<T: Archive>(
    path: &Path,
    opts: &ConnectOptions,
    last_seq: u64,
    attempts: u32,
) -> Result<Client<T>, ClientError> {
    let opts = ConnectOptions {
        start: StartAt::Seq(last_seq + 1),
        ..opts.clone()
    };
    let mut backoff = Duration::from_millis(50);
    let mut tries = 0;
    loop {
        tries += 1;
        match Client::connect(path, &opts) {
            Ok(c) => return Ok(c),
            Err(e) => {
                let fatal = matches!(
                    e.disconnect_reason(),
                    Some(DisconnectReason::NotAllowed | DisconnectReason::VersionMismatch)
                ) || matches!(
                    e,
                    ClientError::Connect(
                        ConnectError::NotAllowed { .. } | ConnectError::UntrustedService { .. }
                    )
                );
                if fatal || tries >= attempts {
                    return Err(e);
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// How many receive calls with data may pass without reading the socket.
const SOCKET_EVERY: u32 = 64;

/// What a client waits for when nothing is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A batch is ready.
    Ready,
    /// The ring is empty: sleep on the wake pipe and the socket.
    WaitRing,
    /// A segment switch is due on the socket.
    WaitSocket,
}

enum PumpError {
    Io(io::Error),
    Protocol(ProtocolError),
}

/// Reads everything available with `recvmsg` (fds included) into the state machine.
/// EOF becomes a disconnect event.
fn pump(stream: &UnixStream, sm: &mut ClientConn, buf: &mut [u8]) -> Result<(), PumpError> {
    loop {
        match crate::fdpass::recv_with_fds(stream.as_fd(), buf) {
            Ok((0, _)) => {
                sm.handle_eof();
                return Ok(());
            }
            Ok((n, fds)) => {
                sm.handle_input(&buf[..n], fds)
                    .map_err(PumpError::Protocol)?;
                if sm.is_closed() {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if e.kind() == io::ErrorKind::ConnectionReset {
                    sm.handle_eof();
                    return Ok(());
                }
                return Err(PumpError::Io(e));
            }
        }
        // Blocking sockets: one message per call is enough.
        if !is_nonblocking(stream) {
            return Ok(());
        }
    }
}

fn is_nonblocking(stream: &UnixStream) -> bool {
    // SAFETY: F_GETFL on a valid fd we borrow has no memory-safety preconditions.
    let flags = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

fn flush(stream: &UnixStream, sm: &mut ClientConn) -> io::Result<()> {
    use nix::sys::socket::{send, MsgFlags};
    while let Some(t) = sm.poll_transmit() {
        let mut sent = 0;
        while sent < t.bytes.len() {
            match send(
                stream.as_raw_fd(),
                &t.bytes[sent..],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => sent += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// One message of a streamed history answer (see [`Client::query_pages`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryPage {
    /// A page of rows, in seq order (at most [`MAX_ROWS`](super::wire::MAX_ROWS)).
    Rows(Vec<FileEvent>),
    /// The answer is over, for this reason.
    End(QueryEnd),
}

/// The pages of one history answer, handed out as they arrive (see
/// [`Client::query_pages`]). Ends after [`QueryPage::End`] or an error.
pub struct QueryPages<'c, T> {
    client: &'c mut Client<T>,
    id: u64,
    timeout: Duration,
    done: bool,
}

impl<T> std::fmt::Debug for QueryPages<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryPages")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T: Archive> Iterator for QueryPages<'_, T> {
    type Item = Result<QueryPage, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let id = self.id;
        match self.client.next_matching(self.timeout, |e| answers(e, id)) {
            Ok(ClientEvent::Rows { rows, .. }) => Some(Ok(QueryPage::Rows(rows))),
            Ok(ClientEvent::RowsEnd { end, .. }) => {
                self.done = true;
                Some(Ok(QueryPage::End(end)))
            }
            Ok(_) => unreachable!("only this query's answer matches"),
            Err(e) => {
                self.done = true;
                self.client.abandon(id);
                Some(Err(e))
            }
        }
    }
}

impl<T> Drop for QueryPages<'_, T> {
    fn drop(&mut self) {
        if !self.done {
            self.client.abandon(self.id);
        }
    }
}

/// Whether `e` is part of query `id`'s answer.
fn answers(e: &ClientEvent, id: u64) -> bool {
    matches!(e, ClientEvent::Rows { id: i, .. } | ClientEvent::RowsEnd { id: i, .. } if *i == id)
}

impl<T: Archive> Client<T> {
    /// Runs a history query and hands its rows out page by page as they arrive, instead of
    /// collecting them as [`query`](Self::query) does: a client printing a million-row
    /// answer holds one page at a time. Each page is waited for at most `page_timeout`.
    /// Dropping the iterator early is allowed: the rest of the answer is read and ignored
    /// by later calls.
    ///
    /// # Errors
    /// Sending the query: as [`status`](Self::status). Each item: [`ClientError::Timeout`]
    /// if no page arrives within `page_timeout`, [`ClientError::Disconnected`].
    ///
    /// # Examples
    /// ```no_run
    /// use firehose_transport::control::client::{Client, ConnectOptions, QueryPage};
    /// use firehose_transport::control::wire::HistoryQuery;
    /// use firehose_transport::record::FileEvent;
    /// # use std::time::Duration;
    /// let path = firehose_transport::control::place::default_socket_path()?;
    /// let mut c: Client<FileEvent> = Client::connect(&path, &ConnectOptions::default())?;
    /// let q = HistoryQuery { id: 1, seq: Some((1, 1_000_000)), ..HistoryQuery::default() };
    /// for page in c.query_pages(q, Duration::from_secs(60))? {
    ///     match page? {
    ///         QueryPage::Rows(rows) => println!("{} rows", rows.len()),
    ///         QueryPage::End(end) => println!("{end:?}"),
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn query_pages(
        &mut self,
        q: HistoryQuery,
        page_timeout: Duration,
    ) -> Result<QueryPages<'_, T>, ClientError> {
        let id = q.id;
        self.send(&ClientMsg::Query(q))?;
        Ok(QueryPages {
            client: self,
            id,
            timeout: page_timeout,
            done: false,
        })
    }

    /// The batch the last receive call ([`recv`](Self::recv) or
    /// [`recv_timeout`](Self::recv_timeout)) handed out, once more: nothing is read and
    /// nothing released. Lets a caller look at a batch, decide, and then hand it on
    /// without holding the first borrow. Meant for right after a receive call that
    /// succeeded (after a failed one it holds whatever that call had gathered).
    ///
    /// # Examples
    /// ```no_run
    /// use firehose_transport::control::client::{Client, ConnectOptions};
    /// use firehose_transport::record::FileEvent;
    /// let path = firehose_transport::control::place::default_socket_path()?;
    /// let mut c: Client<FileEvent> = Client::connect(&path, &ConnectOptions::default())?;
    /// let n = c.recv(64)?.len();
    /// assert_eq!(c.current_batch().len(), n);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn current_batch(&mut self) -> Batch<'_, T> {
        self.reader.current()
    }
}
