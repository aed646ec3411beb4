//! Handing a reader its fds over a Unix socket: [`send_reader`] on the producer's side,
//! [`recv_reader`] on the reader's. Segment switches travel the same way
//! ([`send_segment`], [`recv_segment`]). The control socket builds its welcome and
//! segment-switch messages on these; until then tests and the demo use an inherited
//! socketpair.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::fdpass::{recv_with_fds, send_with_fds};
use crate::ring::{Policy, ReaderFds, ReaderId, Segment, SegmentError};

const READER_TAG: u64 = u64::from_le_bytes(*b"FHREADER");
const SEGMENT_TAG: u64 = u64::from_le_bytes(*b"FHSEGMNT");

/// Sends a reader's fds and start position.
///
/// # Errors
/// The OS error of `sendmsg`.
pub fn send_reader(sock: BorrowedFd<'_>, fds: &ReaderFds) -> io::Result<()> {
    let mut msg = [0u8; 40];
    let policy = match fds.policy {
        Policy::Lossless => 1u64,
        Policy::Lagging => 2,
    };
    for (i, v) in [READER_TAG, fds.id.0, policy, fds.start_pos, fds.start_seq]
        .into_iter()
        .enumerate()
    {
        msg[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    send_with_fds(
        sock,
        &msg,
        &[fds.ring.as_fd(), fds.cursor.as_fd(), fds.wake.as_fd()],
    )
}

fn word(msg: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(msg[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Receives what [`send_reader`] sent.
///
/// # Errors
/// The OS error of `recvmsg`, `UnexpectedEof` if the peer closed, `InvalidData` for a
/// message that is not a reader handoff.
pub fn recv_reader(sock: BorrowedFd<'_>) -> io::Result<ReaderFds> {
    let mut msg = [0u8; 40];
    let (n, fds) = recv_with_fds(sock, &mut msg)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if n != msg.len() || word(&msg, 0) != READER_TAG || fds.len() != 3 {
        return Err(bad("not a reader handoff"));
    }
    let policy = match word(&msg, 2) {
        1 => Policy::Lossless,
        2 => Policy::Lagging,
        _ => return Err(bad("unknown reader policy")),
    };
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("three fds");
    Ok(ReaderFds {
        id: ReaderId(word(&msg, 1)),
        policy,
        start_pos: word(&msg, 3),
        start_seq: word(&msg, 4),
        ring: next(),
        cursor: next(),
        wake: next(),
    })
}

/// Sends a new segment's fd (after `Producer::rotate`).
///
/// # Errors
/// The OS error of `sendmsg`; `Unsupported` for a heap segment.
pub fn send_segment(sock: BorrowedFd<'_>, seg: &Segment) -> io::Result<()> {
    let fd = seg
        .fd()
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "heap segment has no fd"))?;
    let mut msg = [0u8; 16];
    msg[..8].copy_from_slice(&SEGMENT_TAG.to_le_bytes());
    msg[8..].copy_from_slice(&seg.epoch().to_le_bytes());
    send_with_fds(sock, &msg, &[fd])
}

/// Receives and maps what [`send_segment`] sent (checking seals, size and header).
///
/// # Errors
/// `InvalidData` for a message that is not a segment; the mapping's [`SegmentError`] as
/// `InvalidData` too.
pub fn recv_segment(sock: BorrowedFd<'_>) -> io::Result<Segment> {
    let mut msg = [0u8; 16];
    let (n, mut fds) = recv_with_fds(sock, &mut msg)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if n != msg.len() || word(&msg, 0) != SEGMENT_TAG || fds.len() != 1 {
        return Err(bad("not a segment handoff"));
    }
    Segment::open(fds.pop().expect("one fd"))
        .map_err(|e: SegmentError| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The environment variable that tells a child which fd its handoff socket is.
pub const HANDOFF_FD_ENV: &str = "FIREHOSE_HANDOFF_FD";

/// The fd number a child spawned by [`spawn_with_socket`] finds its socket at.
pub const HANDOFF_FD: i32 = 3;

/// Spawns `cmd` with one end of a new socketpair at fd [`HANDOFF_FD`] (and
/// [`HANDOFF_FD_ENV`] set), returning the child and the other end. Until the control socket
/// exists, this is how a producer hands rings to reader processes it starts itself.
///
/// # Errors
/// The OS error of `socketpair`, `dup2` or the spawn.
pub fn spawn_with_socket(
    cmd: &mut std::process::Command,
) -> io::Result<(std::process::Child, std::os::unix::net::UnixStream)> {
    use std::os::fd::{AsRawFd, OwnedFd};
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let theirs: OwnedFd = theirs.into();
    let raw = theirs.as_raw_fd();
    cmd.env(HANDOFF_FD_ENV, HANDOFF_FD.to_string());
    // Runs in the forked child before exec: only async-signal-safe calls (fcntl, dup2).
    let hook = move || -> io::Result<()> {
        let r = if raw == HANDOFF_FD {
            // The socketpair's fds are close-on-exec; keep this one across exec.
            // SAFETY: F_SETFD on an fd that is open in the child (inherited from the parent).
            unsafe { libc::fcntl(raw, libc::F_SETFD, 0) }
        } else {
            // SAFETY: dup2 of an fd open in the child; the copy does not have close-on-exec.
            unsafe { libc::dup2(raw, HANDOFF_FD) }
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe calls and touches no memory shared with
    // the parent; `raw` stays open in the parent until spawn returns.
    unsafe { std::os::unix::process::CommandExt::pre_exec(cmd, hook) };
    let child = cmd.spawn()?;
    drop(theirs);
    Ok((child, ours))
}

/// Takes the handoff socket a parent passed with [`spawn_with_socket`]. Returns `None` if
/// this process was not started that way, or if it was taken already.
pub fn inherited_socket() -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let fd: i32 = std::env::var(HANDOFF_FD_ENV).ok()?.parse().ok()?;
    // Relaxed: only the swap's atomicity matters (at most one owner).
    if fd < 0 || TAKEN.swap(true, Ordering::Relaxed) {
        return None;
    }
    // The fd must be open and a socket before we claim it.
    let st = nix::sys::stat::fstat(
        // SAFETY: borrowing the fd only for the duration of the fstat call.
        unsafe { BorrowedFd::borrow_raw(fd) },
    )
    .ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    // SAFETY: the parent put our end of a socketpair at this fd (the environment says so and
    // it is a socket); TAKEN makes sure only one OwnedFd is ever made from it.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}
