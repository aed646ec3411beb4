//! `fh_reader`: the owning handle of one connection to the service: one socket and one
//! ring reader, drained into caller-provided `fh_event` views, with one fd for the host's
//! run loop.
//!
//! The fd is an epoll instance holding the ring's wake channel, the control socket and an
//! eventfd of our own (the "kick"). It is readable whenever a drain has something to hand
//! out or news to tell; after a drain that handed out nothing it sleeps until the service
//! publishes (the reader's sleeping flag is set, so the service writes a wake byte), says
//! something on the socket, or the reader reconnects.

use std::os::fd::AsRawFd;

use firehose_consumer::{Follower, PollFollower};

use crate::error::{fh_error, guard, Failure};
use crate::event::{fh_event, view};
use crate::options::{fh_options, to_options};

/// One connection to the service. Made by `fh_connect`, freed by `fh_reader_free`; not
/// thread-safe: use one reader from one thread at a time (moving it between threads is
/// fine).
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct fh_reader {
    /// The follower and the epoll fd that `fh_reader_fd` hands out.
    poll: PollFollower,
    /// The next id for a history query (far above the follower's own backfill ids).
    query_id: u64,
}

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
        let opts = unsafe { to_options(options) }?;
        let reader = fh_reader {
            poll: PollFollower::new(opts.connect()?)?,
            query_id: 1 << 62,
        };
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
        Some(r) => r.poll.fd().as_raw_fd(),
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
    unsafe { reader.as_ref() }.map_or(0, |r| r.poll.next_seq())
}

impl fh_reader {
    /// One drain (see `fh_reader_drain`) into `out[.. capacity]`.
    ///
    /// # Safety
    /// `out` is writable for `capacity` events (not necessarily initialised).
    unsafe fn drain(&mut self, out: *mut fh_event, capacity: usize) -> Result<usize, Failure> {
        let mut n = 0;
        self.poll.drain_each(capacity, |ev| {
            if n == capacity {
                return;
            }
            // The views point into the follower's current batch (or its queue), which
            // stays as it is until the follower is drained again: the next call here.
            // SAFETY: `n < capacity` (checked above), and `out` is writable for `capacity`
            // events (this function's contract): the slot is inside that memory.
            let slot = unsafe { out.add(n) };
            // SAFETY: `slot` is writable for one event (above); `write` does not read the
            // old bytes, which may be uninitialised.
            unsafe { slot.write(view(&ev)) };
            n += 1;
        })?;
        Ok(n)
    }

    /// The follower, for status and history on its connection (the fd is left readable:
    /// reading the socket there can take news it would have announced).
    pub(crate) fn follower(&mut self) -> &mut Follower {
        self.poll.follower()
    }

    pub(crate) fn next_query_id(&mut self) -> u64 {
        self.query_id += 1;
        self.query_id
    }
}
