//! [`PollFollower`]: a [`Follower`] with one fd for a host's run loop (epoll, poll, a
//! CFRunLoop source, a Qt socket notifier, Python's `loop.add_reader`).
//!
//! The fd is an epoll instance holding the ring's wake channel, the control socket, an
//! eventfd of our own (the "kick") and a timerfd (the "retry"). It is readable whenever a
//! drain has something to hand out or news to tell; after a drain that handed out nothing it
//! sleeps until the service publishes (the reader's sleeping flag is set, so the service
//! writes a wake byte), says something on the socket, or a reconnect or backfill retry is
//! due. The C API and the Python module are both built on it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use firehose_transport::control::client::QueryPage;
use firehose_transport::control::wire::Status;

use crate::{Event, FollowError, Follower, OwnedEvent};

/// How many times a drain tries again when the ring moved while it was arming the wake
/// fd, before it leaves the fd readable instead (one spare wakeup, never a lost one).
const ARM_TRIES: usize = 4;

/// How soon a backfill page that could not be had is asked again.
const BACKFILL_RETRY: Duration = Duration::from_millis(50);

/// A [`Follower`] and the one fd that says when to drain it.
///
/// # Examples
/// ```no_run
/// use firehose_consumer::{Options, PollFollower};
/// let mut p = PollFollower::new(Options::new().connect()?)?;
/// let fd = p.fd(); // put it in the run loop; when it is readable:
/// # let _ = fd;
/// p.drain_each(4096, |ev| println!("{ev:?}"))?;
/// # Ok::<(), firehose_consumer::FollowError>(())
/// ```
#[derive(Debug)]
pub struct PollFollower {
    follower: Follower,
    epoll: Epoll,
    /// Written when the fd must stay readable without the ring or the socket saying so.
    kick: EventFd,
    /// Set to fire when the follower has work that no fd announces: a reconnect attempt
    /// that is due, or a backfill page to ask again.
    retry: TimerFd,
    /// Whether the reader's sleeping flag is set (a drain handed out nothing and armed it).
    armed: bool,
    /// The connection's fds in the epoll set, taken out again at the start of each drain
    /// while they are still open (a reconnect closes them, and an fd a forked child still
    /// holds would otherwise stay in the set).
    registered: Vec<RawFd>,
}

fn io(what: &'static str) -> impl FnOnce(Errno) -> FollowError {
    move |e| FollowError::WakeFd {
        what,
        source: std::io::Error::from(e),
    }
}

impl PollFollower {
    /// Wraps `follower`. The fd is readable at first (there may be something already).
    ///
    /// # Errors
    /// [`FollowError::WakeFd`] if the epoll, eventfd or timerfd cannot be made (the
    /// process is out of fds).
    pub fn new(follower: Follower) -> Result<Self, FollowError> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io("epoll_create1"))?;
        let kick = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(io("eventfd"))?;
        let retry = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
        )
        .map_err(io("timerfd_create"))?;
        epoll
            .add(kick.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .map_err(io("epoll_ctl(eventfd)"))?;
        epoll
            .add(retry.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1))
            .map_err(io("epoll_ctl(timerfd)"))?;
        let p = PollFollower {
            follower,
            epoll,
            kick,
            retry,
            armed: false,
            registered: Vec::new(),
        };
        p.kick_on()?;
        Ok(p)
    }

    /// The fd to wait on (readable). Owned by this value: do not close it or read from it.
    /// The same fd for its whole life, across reconnects.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// Hands what has arrived, at most `max` events, to `each`, without waiting for the
    /// ring; returns how many. After a drain that handed out nothing the fd sleeps until
    /// there is something new; after one that handed out events it stays readable, so a
    /// host that drains once each time the fd is readable never misses anything.
    ///
    /// A record's borrowed parts point into the follower's current batch, which stays as
    /// it is until the next drain.
    ///
    /// # Errors
    /// As [`Follower::drain`]; [`FollowError::WakeFd`] if the fds cannot be set. After an
    /// error the fd stays readable, so the host comes back and hears it again.
    pub fn drain_each(
        &mut self,
        max: usize,
        mut each: impl FnMut(Event<'_>),
    ) -> Result<usize, FollowError> {
        let max = max.max(1);
        self.drain_with(|f| {
            let mut n = 0;
            for ev in f.drain(max)?.take(max) {
                each(ev);
                n += 1;
            }
            Ok(n)
        })
    }

    /// As [`drain_each`](Self::drain_each), appending owned events to `out`
    /// ([`Follower::drain_owned`]: each record converted once); returns how many.
    ///
    /// # Errors
    /// As [`drain_each`](Self::drain_each).
    pub fn drain_owned(
        &mut self,
        max: usize,
        out: &mut Vec<OwnedEvent>,
    ) -> Result<usize, FollowError> {
        self.drain_with(|f| f.drain_owned(max, out))
    }

    /// One drain: disarms, runs `once` (which hands out up to its max and says how many)
    /// until it hands something out or the fds are armed, and leaves the fd readable after
    /// events or an error.
    fn drain_with(
        &mut self,
        mut once: impl FnMut(&mut Follower) -> Result<usize, FollowError>,
    ) -> Result<usize, FollowError> {
        self.disarm();
        self.kick_off()?;
        // Reading a timer that has not fired is EAGAIN: nothing to clear.
        let _ = self.retry.wait();
        let r = self.drain_inner(&mut once);
        if r.is_err() {
            self.kick_on()?;
        }
        r
    }

    fn drain_inner(
        &mut self,
        once: &mut impl FnMut(&mut Follower) -> Result<usize, FollowError>,
    ) -> Result<usize, FollowError> {
        for _ in 0..ARM_TRIES {
            let n = once(&mut self.follower)?;
            if n > 0 {
                self.kick_on()?;
                return Ok(n);
            }
            // Work that no fd announces: wake at its time instead of sleeping on the ring.
            if self.sleep_or_retry()? {
                return Ok(0);
            }
        }
        // The ring kept moving while nothing could be handed out: stay readable, and try
        // again on the next call.
        self.kick_on()?;
        Ok(0)
    }

    /// After a drain that handed out nothing: sets the retry timer for work no fd
    /// announces, or arms the fds. False if the ring moved while arming (drain again).
    fn sleep_or_retry(&mut self) -> Result<bool, FollowError> {
        if let Some(at) = self.follower.reconnect_due() {
            self.retry_at(at.saturating_duration_since(Instant::now()))?;
            return Ok(true);
        }
        if self.follower.is_backfilling() {
            self.retry_at(BACKFILL_RETRY)?;
            return Ok(true);
        }
        self.arm()
    }

    /// Takes the connection's fds out of the epoll set and reads the wake channel: done
    /// before anything else touches the follower (a drain may reconnect and close them).
    fn disarm(&mut self) {
        for fd in std::mem::take(&mut self.registered) {
            // SAFETY: `fd` is the live connection's and still open: it was added in `arm`,
            // and nothing can have closed it since: the ways to reach the follower that
            // can reconnect or close (`drain_each`, `drain_owned` and `follower`) come
            // here first, and `take_page` and `take_status` only take answers already read.
            let _ = self.epoll.delete(unsafe { BorrowedFd::borrow_raw(fd) });
        }
        if self.armed {
            // The wake channel may hold a byte (or have hung up): read it now; a hangup is
            // remembered by the ring reader and reported by the next drain.
            self.follower.client().reader_mut().finish_wait(true);
            self.armed = false;
        }
    }

    /// Makes the fd readable after `after` (at once if it is zero).
    fn retry_at(&self, after: Duration) -> Result<(), FollowError> {
        if after.is_zero() {
            return self.kick_on();
        }
        self.retry
            .set(
                Expiration::OneShot(TimeSpec::from_duration(after)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(io("timerfd_settime"))
    }

    /// Sets the sleeping flag and puts the ring's wake fd and the socket in the epoll set.
    /// False if the ring moved meanwhile.
    fn arm(&mut self) -> Result<bool, FollowError> {
        let client = self.follower.client();
        let socket: RawFd = client.socket_fd().as_raw_fd();
        let reader = client.reader_mut();
        if !reader.prepare_wait() {
            return Ok(false);
        }
        let wake = reader.wake_fd().map(|fd| fd.as_raw_fd());
        self.armed = true;
        for fd in [Some(socket), wake].into_iter().flatten() {
            self.watch(fd)?;
        }
        Ok(true)
    }

    /// Adds `fd` to the epoll set (taken out again at the start of the next drain).
    fn watch(&mut self, fd: RawFd) -> Result<(), FollowError> {
        // SAFETY: `fd` belongs to the follower's live connection, which is not touched
        // between `arm` taking its number and this call; epoll only records it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        match self
            .epoll
            .add(borrowed, EpollEvent::new(EpollFlags::EPOLLIN, 2))
        {
            // EEXIST: the socket and the wake fd are one (never, but harmless).
            Ok(()) | Err(Errno::EEXIST) => {
                self.registered.push(fd);
                Ok(())
            }
            Err(e) => Err(io("epoll_ctl(ADD)")(e)),
        }
    }

    fn kick_on(&self) -> Result<(), FollowError> {
        match self.kick.write(1) {
            // EAGAIN: the counter is full, so it is readable already.
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(io("eventfd write")(e)),
        }
    }

    fn kick_off(&self) -> Result<(), FollowError> {
        match self.kick.read() {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(io("eventfd read")(e)),
        }
    }

    /// The follower, for status and history on its connection. Reading the socket there
    /// can take news the fd would have announced, so the fd is made readable afterwards
    /// (one spare drain at most).
    pub fn follower(&mut self) -> &mut Follower {
        self.disarm();
        let _ = self.kick_on();
        &mut self.follower
    }

    /// Where this follower would resume: [`Follower::next_seq`].
    pub fn next_seq(&self) -> u64 {
        self.follower.next_seq()
    }

    /// [`Follower::connections`].
    pub fn connections(&self) -> u64 {
        self.follower.connections()
    }

    /// Whether the connection is down and a reconnect is under way
    /// ([`Follower::reconnect_due`]).
    pub fn reconnecting(&self) -> bool {
        self.follower.reconnect_due().is_some()
    }

    /// The next page of query `id`'s answer that a drain has read off the socket (see
    /// [`Client::take_page`](firehose_transport::control::client::Client::take_page)). It
    /// touches neither the socket nor the ring, so the fd's arming stays right: a page the
    /// socket brings makes the fd readable, and the drain it calls for reads it.
    pub fn take_page(&mut self, id: u64) -> Option<QueryPage> {
        self.follower.client().take_page(id)
    }

    /// A status answer that a drain has read off the socket (as [`take_page`](Self::take_page)).
    pub fn take_status(&mut self) -> Option<Status> {
        self.follower.client().take_status()
    }
}
