//! A follower on its own thread, for applications with a draw loop: the thread drains the
//! ring as records come into a bounded inbox of owned events, calls back when it added
//! some (a GUI asks for a repaint there), and the draw loop takes the inbox once per frame
//! without ever waiting on the ring or the socket.
//!
//! The same thread answers history pages ([`Background::ask`]) and keeps the service's
//! status ([`Background::poll_status`]) on the follower's own connection: a monitor is one
//! socket and one ring reader. Queries are sent without waiting and their pages picked up
//! as the drains read them, so a slow answer never holds the records up.
//!
//! At about 130 bytes a record, one 30 fps frame at 1 M records/s is about 4 MB, the whole
//! default ring: a reader that only reads once per frame would lag, this one does not.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firehose_transport::control::client::QueryPage;
use firehose_transport::control::wire::{QueryEnd, Status};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::FollowError;
use crate::follow::Follower;
use crate::owned::OwnedEvent;
use crate::pages::{Page, PageAnswer, PageError, PageRequest};
use crate::poll::PollFollower;

/// The most events one drain takes from the follower.
const RECV_MAX: usize = 65_536;
/// How long the thread sleeps at most when nothing comes: an idle application is woken
/// this rarely by it.
const RECV_WAIT: Duration = Duration::from_secs(10);
/// How long a history page or a status answer is waited for before it is given up.
const ANSWER_WAIT: Duration = Duration::from_secs(60);
/// History queries in flight at once on the connection (the service serves four a
/// connection, and the follower's own backfill needs one); later ones wait their turn.
const PAGES_IN_FLIGHT: usize = 2;
/// Set on the wire ids of the application's queries, to keep them apart from the
/// follower's own backfill queries on the same connection.
const ASKED: u64 = 1 << 63;
/// What an ask made while the connection is down is told.
const DOWN: &str = "not connected to the service (reconnecting)";

/// What a [`Background`] gathered since the last [`Background::take`].
#[derive(Debug, Default)]
pub struct Gathered {
    /// Records and notices, oldest first.
    pub events: VecDeque<OwnedEvent>,
    /// Records dropped because the application did not take them in time: the oldest go
    /// first, and at most the `cap` given to [`Follower::into_background`] wait. Notices
    /// (lag, gaps, disconnects) are never dropped.
    pub dropped: u64,
    /// The follower ended for good (no reconnect, another instance): why. Nothing more
    /// comes after it.
    pub ended: Option<FollowError>,
    /// When the oldest of these events came off the ring (its receive returned): how long
    /// the application let it wait is `first_at.elapsed()` at the take. After records were
    /// dropped (`dropped`), this is when the oldest of those came.
    pub first_at: Option<Instant>,
}

/// The service's status as the thread last heard it: the answer and when it came, or why
/// there is none.
pub type StatusNow = Result<(Status, Instant), String>;

/// A follower draining on its own thread, which also answers history pages and keeps the
/// service's status on the same connection. Dropping it stops the thread at once (it is
/// not joined).
///
/// # Examples
/// ```no_run
/// let f = firehose_consumer::Options::new().name("my-gui").connect()?;
/// let bg = f.into_background(100_000, || { /* ask the UI for a repaint */ })?;
/// // Once per frame:
/// let got = bg.take();
/// for ev in &got.events {
///     println!("{:?}", ev.as_event().last_seq());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Background {
    shared: Arc<Shared>,
    asks: Sender<Ask>,
    answers: Receiver<PageAnswer>,
}

/// What the thread and the application share.
#[derive(Debug)]
struct Shared {
    inbox: Mutex<Gathered>,
    next_seq: AtomicU64,
    stop: AtomicBool,
    status: Mutex<StatusNow>,
    /// Written after an ask or the stop, so the thread's wait ends at once.
    kick: EventFd,
}

#[derive(Debug)]
enum Ask {
    Page(PageRequest),
    Status(Duration),
}

impl Shared {
    fn kick(&self) {
        // EAGAIN: the counter is full, so the thread will wake anyway. Any other error
        // leaves the thread to its own timeout (at most RECV_WAIT).
        let _ = self.kick.write(1);
    }
}

impl Follower {
    /// Moves this follower to a thread of its own that drains it into an inbox of at most
    /// `cap` records (see [`Background`]), calling `on_events` each time it adds some, and
    /// each time a history page or a changed status comes.
    ///
    /// # Errors
    /// If the thread or its wake fds cannot be made.
    ///
    /// # Examples
    /// ```no_run
    /// let bg = firehose_consumer::Options::new().connect()?.into_background(10_000, || {})?;
    /// assert!(bg.take().ended.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_background(
        self,
        cap: usize,
        on_events: impl Fn() + Send + 'static,
    ) -> std::io::Result<Background> {
        let kick = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Gathered::default()),
            next_seq: AtomicU64::new(self.next_seq()),
            stop: AtomicBool::new(false),
            status: Mutex::new(Err("asking the service…".into())),
            kick,
        });
        let follower = PollFollower::new(self).map_err(std::io::Error::other)?;
        let (asks, ask_rx) = channel();
        let (answer_tx, answers) = channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("firehose-follower".into())
            .spawn(move || {
                Thread {
                    f: follower,
                    cap: cap.max(1),
                    shared: &s,
                    asks: &ask_rx,
                    answers: &answer_tx,
                    waiting: VecDeque::new(),
                    pages: Vec::new(),
                    status: StatusPoll::default(),
                }
                .run(on_events);
            })?;
        Ok(Background {
            shared,
            asks,
            answers,
        })
    }
}

impl Background {
    /// Everything gathered since the last call.
    ///
    /// # Examples
    /// ```no_run
    /// # let bg = firehose_consumer::Options::new().connect()?.into_background(10, || {})?;
    /// let got = bg.take();
    /// println!("{} events, {} dropped", got.events.len(), got.dropped);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take(&self) -> Gathered {
        std::mem::take(&mut *self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The follower's next seq: where it resumes. Read before a [`take`](Self::take),
    /// every record below it is in that take or an earlier one (or counted as dropped).
    ///
    /// # Examples
    /// ```no_run
    /// # let bg = firehose_consumer::Options::new().connect()?.into_background(10, || {})?;
    /// println!("live from seq {}", bg.next_seq());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_seq(&self) -> u64 {
        // Relaxed is enough: it is stored inside the inbox's lock after the records before
        // it were pushed. If this load sees that store, the lock a later `take` takes comes
        // after that critical section: were it earlier, this load would happen before the
        // store it read, which coherence forbids.
        self.shared.next_seq.load(Ordering::Relaxed)
    }

    /// Asks for a page of history on the follower's connection (see
    /// [`Paging`](crate::pages::Paging)); its answer comes through
    /// [`try_answer`](Self::try_answer), and `on_events` is called when it is there.
    ///
    /// # Examples
    /// ```no_run
    /// use firehose_consumer::pages::Paging;
    /// # let bg = firehose_consumer::Options::new().connect()?.into_background(10, || {})?;
    /// let mut paging = Paging::new(500);
    /// if let Some(r) = paging.older(bg.next_seq()) {
    ///     bg.ask(r);
    /// }
    /// // Later, once per frame:
    /// while let Some(a) = bg.try_answer() {
    ///     let truncated = a.page.as_ref().ok().and_then(|p| p.truncated);
    ///     if let Some(req) = paging.answered(a.id, truncated) {
    ///         println!("{:?}: {:?}", req.direction, a.page.map(|p| p.events.len()));
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ask(&self, r: PageRequest) {
        if self.asks.send(Ask::Page(r)).is_ok() {
            self.shared.kick();
        }
    }

    /// A history answer, if one is ready; never waits.
    pub fn try_answer(&self) -> Option<PageAnswer> {
        self.answers.try_recv().ok()
    }

    /// Asks the service for its status now and then every `every`; the latest answer is
    /// [`status`](Self::status), and `on_events` is called when it changed in more than
    /// the uptime (an idle service does not make a window redraw).
    pub fn poll_status(&self, every: Duration) {
        if self.asks.send(Ask::Status(every)).is_ok() {
            self.shared.kick();
        }
    }

    /// The service's status as last heard (see [`poll_status`](Self::poll_status)).
    ///
    /// # Examples
    /// ```no_run
    /// # let bg = firehose_consumer::Options::new().connect()?.into_background(10, || {})?;
    /// bg.poll_status(std::time::Duration::from_secs(10));
    /// match bg.status() {
    ///     Ok((s, at)) => println!("{} readers, {:?} ago", s.readers.len(), at.elapsed()),
    ///     Err(why) => println!("no status: {why}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn status(&self) -> StatusNow {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Relaxed: the thread only has to see it eventually; the kick wakes it, and it
        // reads the flag after the wake.
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.kick();
    }
}

/// A history page on its way.
struct InFlight {
    r: PageRequest,
    page: Page,
    since: Instant,
    /// The follower's connection it was sent on.
    conn: u64,
}

/// The status polling.
#[derive(Default)]
struct StatusPoll {
    every: Option<Duration>,
    due: Option<Instant>,
    /// Sent at, on this connection.
    asked: Option<(Instant, u64)>,
}

/// The follower's thread.
struct Thread<'a> {
    f: PollFollower,
    cap: usize,
    shared: &'a Shared,
    asks: &'a Receiver<Ask>,
    answers: &'a Sender<PageAnswer>,
    /// Pages asked for, waiting for room in flight.
    waiting: VecDeque<PageRequest>,
    pages: Vec<InFlight>,
    status: StatusPoll,
}

impl Thread<'_> {
    fn run(mut self, on_events: impl Fn()) {
        let mut local: Vec<OwnedEvent> = Vec::with_capacity(1024);
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.take_asks();
            let mut news = self.send_asks();
            // Converted outside the lock (the draw loop only ever waits for an append),
            // each record once.
            let drained = self.f.drain_owned(RECV_MAX, &mut local);
            let at = Instant::now();
            news |= self.take_answers(at);
            let (n, ended) = match drained {
                Ok(n) => (n, None),
                Err(e) => (0, Some(e)),
            };
            let done = ended.is_some();
            if !local.is_empty() || ended.is_some() {
                self.publish(&mut local, at, ended);
                news = true;
            } else {
                self.shared
                    .next_seq
                    .store(self.f.next_seq(), Ordering::Relaxed);
            }
            if news {
                on_events();
            }
            if done {
                return;
            }
            if n == 0 {
                self.wait(at);
            }
        }
    }

    /// Moves the application's asks off the channel.
    fn take_asks(&mut self) {
        while let Ok(a) = self.asks.try_recv() {
            match a {
                Ask::Page(r) => self.waiting.push_back(r),
                Ask::Status(every) => {
                    self.status.every = Some(every.max(Duration::from_millis(100)));
                    self.status.due = Some(Instant::now());
                }
            }
        }
    }

    /// Sends what is due on the follower's connection; true if an answer was made here
    /// (a send that failed is answered at once).
    fn send_asks(&mut self) -> bool {
        let mut news = false;
        let conn = self.f.connections();
        while self.pages.len() < PAGES_IN_FLIGHT {
            let Some(r) = self.waiting.pop_front() else {
                break;
            };
            if self.f.reconnecting() {
                news |= self.answer(r.id, Err(PageError::Lost(DOWN.into())));
                continue;
            }
            match self.f.follower().client().send_query(r.query(ASKED | r.id)) {
                Ok(()) => self.pages.push(InFlight {
                    r,
                    page: Page::default(),
                    since: Instant::now(),
                    conn,
                }),
                Err(e) => {
                    news |= self.answer(r.id, Err(PageError::Client(e)));
                }
            }
        }
        let now = Instant::now();
        if self.status.asked.is_none() && self.status.due.is_some_and(|d| d <= now) {
            self.status.due = self.status.every.map(|e| now + e);
            if self.f.reconnecting() {
                news |= self.set_status(Err(DOWN.into()));
                return news;
            }
            match self.f.follower().client().send_status_request() {
                Ok(()) => self.status.asked = Some((now, conn)),
                Err(e) => news |= self.set_status(Err(e.to_string())),
            }
        }
        news
    }

    /// Takes the pages and the status the drain read; gives up on those whose connection
    /// is gone or that waited too long. True if there is news for the application.
    fn take_answers(&mut self, now: Instant) -> bool {
        let mut news = false;
        let conn = self.f.connections();
        let mut i = 0;
        while i < self.pages.len() {
            let wire = ASKED | self.pages[i].r.id;
            let mut end = None;
            while let Some(p) = self.f.take_page(wire) {
                match p {
                    QueryPage::Rows(rows) => self.pages[i].page.events.extend(rows),
                    QueryPage::End(e) => {
                        end = Some(e);
                        break;
                    }
                }
            }
            let q = &self.pages[i];
            let result = match end {
                Some(QueryEnd::Unavailable) => Some(Err(PageError::Unavailable)),
                Some(QueryEnd::Invalid) => Some(Err(PageError::Invalid)),
                Some(QueryEnd::Truncated { oldest }) => Some(Ok(Some(oldest))),
                Some(_) => Some(Ok(None)),
                None if q.conn != conn || self.f.reconnecting() => Some(Err(PageError::Lost(
                    "the connection to the service was lost before the answer came".into(),
                ))),
                None if now.duration_since(q.since) >= ANSWER_WAIT => {
                    self.f.follower().client().abandon(wire);
                    Some(Err(PageError::Lost(format!(
                        "no answer within {} s",
                        ANSWER_WAIT.as_secs()
                    ))))
                }
                None => None,
            };
            match result {
                None => i += 1,
                Some(r) => {
                    let q = self.pages.swap_remove(i);
                    let page = r.map(|truncated| Page {
                        truncated,
                        ..q.page
                    });
                    news |= self.answer(q.r.id, page);
                }
            }
        }
        if let Some((since, on)) = self.status.asked {
            if let Some(s) = self.f.take_status() {
                self.status.asked = None;
                news |= self.set_status(Ok((s, now)));
            } else if on != conn
                || self.f.reconnecting()
                || now.duration_since(since) >= ANSWER_WAIT
            {
                self.status.asked = None;
                news |=
                    self.set_status(Err("the service did not answer the status request".into()));
            }
        }
        news
    }

    fn answer(&self, id: u64, page: Result<Page, PageError>) -> bool {
        // The application is gone: its drop stops this thread too.
        let _ = self.answers.send(PageAnswer { id, page });
        true
    }

    /// Stores a status answer; true if it changed in more than the uptime.
    fn set_status(&self, answer: StatusNow) -> bool {
        let mut cur = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        let same = match (&*cur, &answer) {
            (Ok((a, _)), Ok((b, _))) => {
                Status {
                    uptime_ms: b.uptime_ms,
                    ..a.clone()
                } == *b
            }
            (Err(a), Err(b)) => a == b,
            _ => false,
        };
        *cur = answer;
        !same
    }

    /// Puts the drained events in the inbox.
    fn publish(&self, local: &mut Vec<OwnedEvent>, at: Instant, ended: Option<FollowError>) {
        let mut g = self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner());
        if !local.is_empty() {
            g.first_at.get_or_insert(at);
        }
        g.events.extend(local.drain(..));
        bound(&mut g, self.cap);
        // Stored after the records before it are in the inbox (the lock orders it before
        // the next `take`): read before a `take`, `next_seq` never runs ahead of records
        // the caller has yet to take.
        self.shared
            .next_seq
            .store(self.f.next_seq(), Ordering::Relaxed);
        if ended.is_some() {
            g.ended = ended;
        }
    }

    /// Sleeps until the follower's fd or the kick is readable, a status is due, an answer
    /// times out, or RECV_WAIT passes.
    fn wait(&self, now: Instant) {
        let mut until = now + RECV_WAIT;
        if let Some(d) = self.status.due.filter(|_| self.status.asked.is_none()) {
            until = until.min(d);
        }
        for p in &self.pages {
            until = until.min(p.since + ANSWER_WAIT);
        }
        if let Some((since, _)) = self.status.asked {
            until = until.min(since + ANSWER_WAIT);
        }
        let ms = until
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let mut fds = [
            PollFd::new(self.f.fd(), PollFlags::POLLIN),
            PollFd::new(self.shared.kick.as_fd(), PollFlags::POLLIN),
        ];
        // EINTR or an error: the loop looks again (the fds stay armed as they were).
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
        if fds[1]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            let _ = self.shared.kick.read();
        }
    }
}

/// Drops the oldest records beyond `cap` (never a notice), counting them.
fn bound(g: &mut Gathered, cap: usize) {
    // Cheap first: the inbox is taken every frame and rarely near its bound, and counting
    // it on every batch cost a pass over it per batch.
    if g.events.len() <= cap {
        return;
    }
    let records = g
        .events
        .iter()
        .filter(|e| matches!(e, OwnedEvent::Record(_)))
        .count();
    let mut over = records.saturating_sub(cap);
    if over == 0 {
        return;
    }
    let mut kept = Vec::new();
    while over > 0 {
        match g.events.pop_front() {
            Some(OwnedEvent::Record(_)) => {
                g.dropped += 1;
                over -= 1;
            }
            Some(e) => kept.push(e),
            None => break,
        }
    }
    for e in kept.into_iter().rev() {
        g.events.push_front(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firehose_transport::record::{EventKind, FileEvent, Loss};

    fn rec(seq: u64) -> OwnedEvent {
        OwnedEvent::Record(FileEvent {
            seq,
            time_ns: 0,
            kind: EventKind::Create,
            path: b"/a".to_vec(),
            path_to: None,
            rule: 0,
            size: None,
            reconciled: false,
            blind: None,
            gap: None,
        })
    }

    #[test]
    fn the_inbox_drops_the_oldest_records_and_keeps_every_notice() {
        let mut g = Gathered::default();
        g.events.extend([
            rec(1),
            OwnedEvent::Loss(Loss::Lagged { from: 2, to: 3 }),
            rec(4),
            rec(5),
            rec(6),
        ]);
        bound(&mut g, 2);
        assert_eq!(g.dropped, 2);
        let seqs: Vec<Option<u64>> = g.events.iter().map(|e| e.as_event().last_seq()).collect();
        assert_eq!(seqs, [Some(3), Some(5), Some(6)]);
    }
}
