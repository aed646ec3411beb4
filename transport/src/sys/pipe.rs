//! The wake pipe: the producer holds the write end (non-blocking, so a reader that never
//! drains its pipe cannot block it: a full pipe means a wake is already pending), the reader
//! holds the read end and polls it beside its control socket.
//!
//! Not an eventfd: a reader shares an eventfd's open file description, so it could clear
//! `O_NONBLOCK` and fill the counter, after which the producer's write would block. A pipe's
//! two ends are separate open file descriptions.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;

/// Makes a wake pipe: `(read end, write end)`, both close-on-exec, both non-blocking.
pub(crate) fn wake_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    Ok((r, w))
}

/// Writes one wake byte. A full pipe (`EAGAIN`) means a wake is pending already: not an
/// error. A closed read end (`EPIPE`, the reader is gone) is not an error either.
pub(crate) fn wake(w: BorrowedFd<'_>) {
    loop {
        match nix::unistd::write(w, &[1u8]) {
            Err(Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// One read of up to 64 wake bytes (blocking if the fd is blocking and the pipe empty).
/// Returns the byte count (0: the write end is closed), or `None` on an error.
pub(crate) fn read_once(r: BorrowedFd<'_>) -> Option<usize> {
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(r, &mut buf) {
            Ok(n) => return Some(n),
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Clears `O_NONBLOCK` on the reader's own end of its wake pipe (a separate open file
/// description from the producer's write end, which stays non-blocking).
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
