//! `fh_reader`: the owning handle of one connection to the service: one socket and one
//! ring reader, drained into caller-provided `fh_event` views, with one fd for the host's
//! run loop.
//!
//! The fd is an epoll instance holding the ring's wake channel, the control socket and an
//! eventfd of our own (the "kick"). It is readable whenever a drain has something to hand
//! out or news to tell; after a drain that handed out nothing it sleeps until the service
//! publishes (the reader's sleeping flag is set, so the service writes a wake byte), says
//! something on the socket, or the reader reconnects.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use firehose_consumer::Follower;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::error::{fh_error, guard, Failure};
use crate::event::{fh_event, view};
use crate::options::{fh_options, to_options};

/// One connection to the service. Made by `fh_connect`, freed by `fh_reader_free`; not
/// thread-safe: use one reader from one thread at a time (moving it between threads is
/// fine).
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct fh_reader {
    follower: Follower,
    /// What `fh_reader_fd` hands out.
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
    /// The next id for a history query (far above the follower's own backfill ids).
    query_id: u64,
}

/// How many times a drain tries again when the ring moved while it was arming the wake
/// fd, before it leaves the fd readable instead (one spare wakeup, never a lost one).
const ARM_TRIES: usize = 4;

/// How soon a backfill page that could not be had is asked again.
const BACKFILL_RETRY: Duration = Duration::from_millis(50);

/// Connects as `options` say (NULL: the defaults of `fh_options_init`) and stores the new
/// reader in `*out`. The caller owns it and frees it with `fh_reader_free`.
///
/// Fails with `FH_ERR_NOT_RUNNING` (no service at the socket), `FH_ERR_NOT_ALLOWED`,
/// `FH_ERR_PATH_TOO_LONG`, `FH_ERR_INVALID_ARGUMENT` or `FH_ERR_IO`; `fh_last_error()`
/// names the socket and what to do. `*out` is set to NULL on failure.
///
/// # Safety
/// `options` is NULL or points to an `fh_options` whose strings are NULL or NUL-terminated;
/// `out` points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn fh_connect(
    options: *const fh_options,
    out: *mut *mut fh_reader,
) -> fh_error {
    guard(|| {
        if out.is_null() {
            return Err(Failure::invalid("fh_connect: out is NULL"));
        }
        // SAFETY: `out` is not NULL and points to writable memory for a pointer (the
        // caller's promise); set to NULL first so that it is NULL on every failure.
        unsafe { out.write(std::ptr::null_mut()) };
        let mut defaults = std::mem::MaybeUninit::<fh_options>::uninit();
        let options = if options.is_null() {
            // SAFETY: `defaults` is writable memory for one `fh_options`.
            unsafe { crate::options::fh_options_init(defaults.as_mut_ptr()) };
            // SAFETY: `fh_options_init` wrote every field.
            unsafe { defaults.assume_init_ref() }
        } else {
            // SAFETY: not NULL; points to an `fh_options` (the caller's promise).
            unsafe { &*options }
        };
        // SAFETY: its strings are NULL or NUL-terminated (the caller's promise).
        let (opts, _socket) = unsafe { to_options(options) }?;
        let follower = opts.connect()?;
        let reader = fh_reader::new(follower)?;
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(reader))) };
        Ok(())
    })
}

/// Closes the connection and frees the reader and every view it handed out. NULL is
/// ignored.
///
/// # Safety
/// `reader` is NULL or a reader from `fh_connect` not freed before; it is not used after.
#[no_mangle]
pub unsafe extern "C" fn fh_reader_free(reader: *mut fh_reader) {
    if reader.is_null() {
        return;
    }
    // SAFETY: made by `Box::into_raw` in `fh_connect` and not freed before (the caller's
    // promise); ownership comes back here once.
    drop(unsafe { Box::from_raw(reader) });
}

/// The fd to wait on (readable) in the host's run loop: epoll, poll, select, a CFRunLoop
/// source or a Qt socket notifier. When it is readable, call `fh_reader_drain`. Owned by
/// the reader: do not close it, and do not read from it. The same fd for the reader's
/// whole life, across reconnects. -1 if `reader` is NULL.
///
/// # Safety
/// `reader` is NULL or a live reader from `fh_connect`.
#[no_mangle]
pub unsafe extern "C" fn fh_reader_fd(reader: *const fh_reader) -> i32 {
    // SAFETY: NULL or a live reader (the caller's promise).
    match unsafe { reader.as_ref() } {
        Some(r) => r.epoll.0.as_raw_fd(),
        None => -1,
    }
}

/// Hands out what has arrived, at most `capacity` events, into `events[0 .. *count]`,
/// without waiting for the ring. Records are views into the frames they were read from
/// (zero-copy): they stay valid until the next `fh_reader_drain` or `fh_reader_free` on
/// this reader (status and history calls do not disturb them).
///
/// After a drain with `*count == 0` the reader's fd sleeps until there is something new;
/// after one that handed out events it stays readable, so a host that drains once each
/// time the fd is readable (or once per frame) never misses anything.
///
/// Fails with `FH_ERR_DISCONNECTED` or `FH_ERR_OTHER_INSTANCE` when the reader cannot go on
/// (with reconnect on, a restart of the service is not a failure: it arrives as events).
///
/// # Safety
/// `reader` is NULL or a live reader; `events` points to writable memory for `capacity`
/// events (it need not be initialised); `count` points to writable memory for one
/// `size_t`.
#[no_mangle]
pub unsafe extern "C" fn fh_reader_drain(
    reader: *mut fh_reader,
    events: *mut fh_event,
    capacity: usize,
    count: *mut usize,
) -> fh_error {
    guard(|| {
        if count.is_null() {
            return Err(Failure::invalid("fh_reader_drain: count is NULL"));
        }
        // SAFETY: not NULL; writable for one `size_t` (the caller's promise).
        unsafe { count.write(0) };
        // SAFETY: NULL or a live reader, used by this thread alone (the caller's promise).
        let Some(r) = (unsafe { reader.as_mut() }) else {
            return Err(Failure::invalid("fh_reader_drain: reader is NULL"));
        };
        if events.is_null() || capacity == 0 {
            return Err(Failure::invalid(
                "fh_reader_drain: events is NULL or capacity is 0",
            ));
        }
        // SAFETY: `events` is not NULL and writable for `capacity` events (the caller's
        // promise); `drain` only writes whole values through it, below `capacity`, and
        // never reads what was there (it may be uninitialised).
        let n = unsafe { r.drain(events, capacity) }?;
        // SAFETY: as above.
        unsafe { count.write(n) };
        Ok(())
    })
}

/// The seq after the last event handed out: where this reader would resume (pass it as
/// `from_seq` with `FH_START_SEQ` to continue in a new process). 0 if `reader` is NULL.
///
/// # Safety
/// `reader` is NULL or a live reader.
#[no_mangle]
pub unsafe extern "C" fn fh_reader_next_seq(reader: *const fh_reader) -> u64 {
    // SAFETY: NULL or a live reader (the caller's promise).
    unsafe { reader.as_ref() }.map_or(0, |r| r.follower.next_seq())
}

impl fh_reader {
    fn new(follower: Follower) -> Result<Self, Failure> {
        let io = |what: &str, e: Errno| Failure::new(fh_error::FH_ERR_IO, format!("{what}: {e}"));
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| io("epoll_create1", e))?;
        let kick = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| io("eventfd", e))?;
        let retry = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
        )
        .map_err(|e| io("timerfd_create", e))?;
        epoll
            .add(kick.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .map_err(|e| io("epoll_ctl(eventfd)", e))?;
        epoll
            .add(retry.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1))
            .map_err(|e| io("epoll_ctl(timerfd)", e))?;
        let r = fh_reader {
            follower,
            epoll,
            kick,
            retry,
            armed: false,
            registered: Vec::new(),
            query_id: 1 << 62,
        };
        // Readable at first: there may be something to drain already.
        r.kick_on()?;
        Ok(r)
    }

    /// One drain (see `fh_reader_drain`) into `out[.. capacity]`.
    ///
    /// # Safety
    /// `out` is writable for `capacity` events (not necessarily initialised).
    unsafe fn drain(&mut self, out: *mut fh_event, capacity: usize) -> Result<usize, Failure> {
        // While they are open (the drain below may reconnect and close them).
        for fd in std::mem::take(&mut self.registered) {
            // SAFETY: `fd` is the live connection's: it was added in `arm`, and the follower
            // has not been touched since (every call that could reconnect is a drain, and
            // this is its start).
            let _ = self.epoll.delete(unsafe { BorrowedFd::borrow_raw(fd) });
        }
        if self.armed {
            // The wake channel may hold a byte (or have hung up): read it now; a hangup is
            // remembered by the ring reader and reported by the drain below.
            self.follower.client().reader_mut().finish_wait(true);
            self.armed = false;
        }
        self.kick_off()?;
        // Reading a timer that has not fired is EAGAIN: nothing to clear.
        let _ = self.retry.wait();
        // SAFETY: as this function's.
        let r = unsafe { self.drain_inner(out, capacity) };
        if r.is_err() {
            // Stay readable: the host comes back and hears the error again.
            self.kick_on()?;
        }
        r
    }

    /// # Safety
    /// As [`drain`](Self::drain).
    unsafe fn drain_inner(
        &mut self,
        out: *mut fh_event,
        capacity: usize,
    ) -> Result<usize, Failure> {
        for _ in 0..ARM_TRIES {
            let events = self.follower.drain(capacity)?;
            let mut n = 0;
            for ev in events.take(capacity) {
                // The views point into the follower's current batch (or its queue), which
                // stays as it is until the follower is drained again: the next call here.
                // SAFETY: `n < capacity` (`take`), and `out` is writable for `capacity`
                // events (this function's contract): the slot is inside that memory.
                let slot = unsafe { out.add(n) };
                // SAFETY: `slot` is writable for one event (above); `write` does not read
                // the old bytes, which may be uninitialised.
                unsafe { slot.write(view(&ev)) };
                n += 1;
            }
            if n > 0 {
                self.kick_on()?;
                return Ok(n);
            }
            // Work that no fd announces: wake at its time instead of sleeping on the ring.
            if let Some(at) = self.follower.reconnect_due() {
                self.retry_at(at.saturating_duration_since(Instant::now()))?;
                return Ok(0);
            }
            if self.follower.is_backfilling() {
                self.retry_at(BACKFILL_RETRY)?;
                return Ok(0);
            }
            if self.arm()? {
                return Ok(0);
            }
        }
        // The ring kept moving while nothing could be handed out: stay readable, and try
        // again on the next call.
        self.kick_on()?;
        Ok(0)
    }

    /// Makes the fd readable after `after` (at once if it is zero).
    fn retry_at(&self, after: Duration) -> Result<(), Failure> {
        if after.is_zero() {
            return self.kick_on();
        }
        self.retry
            .set(
                Expiration::OneShot(TimeSpec::from_duration(after)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(|e| Failure::new(fh_error::FH_ERR_IO, format!("timerfd_settime: {e}")))
    }

    /// Sets the sleeping flag and puts the ring's wake fd and the socket in the epoll set.
    /// False if the ring moved meanwhile.
    fn arm(&mut self) -> Result<bool, Failure> {
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
    fn watch(&mut self, fd: RawFd) -> Result<(), Failure> {
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
            Err(e) => Err(Failure::new(
                fh_error::FH_ERR_IO,
                format!("epoll_ctl(ADD): {e}"),
            )),
        }
    }

    fn kick_on(&self) -> Result<(), Failure> {
        match self.kick.write(1) {
            // EAGAIN: the counter is full, so it is readable already.
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(Failure::new(
                fh_error::FH_ERR_IO,
                format!("eventfd write: {e}"),
            )),
        }
    }

    fn kick_off(&self) -> Result<(), Failure> {
        match self.kick.read() {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(Failure::new(
                fh_error::FH_ERR_IO,
                format!("eventfd read: {e}"),
            )),
        }
    }

    /// The follower, for status and history on its connection. Reading the socket there
    /// can take news the fd would have announced, so the fd is made readable afterwards
    /// (one spare drain at most).
    pub(crate) fn follower(&mut self) -> &mut Follower {
        let _ = self.kick_on();
        &mut self.follower
    }

    pub(crate) fn next_query_id(&mut self) -> u64 {
        self.query_id += 1;
        self.query_id
    }
}
