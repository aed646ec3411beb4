//! The wake channel: a connected pair of Unix stream sockets. The producer holds one end and
//! only ever sends (one byte per wake, `MSG_DONTWAIT | MSG_NOSIGNAL`); the reader holds the
//! other and polls it beside its control socket.
//!
//! - Not an eventfd: a reader shares an eventfd's open file description, so it could clear
//!   `O_NONBLOCK` and fill the counter, after which the producer's write would block.
//! - Not a pipe any more: a write to a pipe whose read end is closed raises `SIGPIPE`, and a
//!   reader decides when its end closes. A host that embeds the producer with `SIGPIPE` at
//!   its default action would die. `send` with `MSG_NOSIGNAL` never raises it, and
//!   `MSG_DONTWAIT` makes every send non-blocking whatever the fd's flags: no state the
//!   reader could change decides whether the producer blocks.
//! - The producer's end is shut for reading, so a reader that writes into its own end gets
//!   `EPIPE` instead of filling a buffer in the producer.
//! - The reader's reads that must not block (draining after a wake) use `MSG_DONTWAIT` too,
//!   so stale readiness (say, from tokio's reactor) can never turn into a blocking read.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recv, send, shutdown, socketpair, AddressFamily, MsgFlags, Shutdown, SockFlag, SockType,
};

/// Makes a wake channel: `(reader's end, producer's end)`, both close-on-exec and
/// non-blocking.
pub(crate) fn wake_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    shutdown(w.as_raw_fd(), Shutdown::Read)?;
    Ok((r, w))
}

/// Sends one wake byte. A full buffer (`EAGAIN`) means a wake is pending already: not an
/// error. A closed reader's end (`EPIPE`, the reader is gone) is not an error either, and
/// raises no signal.
pub(crate) fn wake(w: BorrowedFd<'_>) {
    loop {
        match send(
            w.as_raw_fd(),
            &[1u8],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Err(Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// One blocking receive of up to 64 wake bytes (blocking if the fd is blocking and nothing
/// is there). Returns the byte count (0: the producer's end is closed), or `None` on an
/// error.
pub(crate) fn read_once(r: BorrowedFd<'_>) -> Option<usize> {
    recv_flags(r, MsgFlags::empty())
}

/// Reads away the wake bytes that are there, never blocking. Returns the byte count (0: the
/// producer's end is closed), or `None` if nothing was there (or on an error).
pub(crate) fn drain(r: BorrowedFd<'_>) -> Option<usize> {
    recv_flags(r, MsgFlags::MSG_DONTWAIT)
}

fn recv_flags(r: BorrowedFd<'_>, flags: MsgFlags) -> Option<usize> {
    let mut buf = [0u8; 64];
    loop {
        match recv(r.as_raw_fd(), &mut buf, flags) {
            Ok(n) => return Some(n),
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Clears `O_NONBLOCK` on the reader's own end (a separate open file description from the
/// producer's end, which stays non-blocking and is only ever sent to with `MSG_DONTWAIT`).
pub(crate) fn set_blocking(fd: impl AsFd) -> io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a valid fd borrowed for the duration of the call have no
    // memory-safety preconditions.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
