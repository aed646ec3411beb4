//! Passing fds over a Unix socket with `SCM_RIGHTS`.
//!
//! A plain `read()` on a Unix socket silently discards passed fds, so every message that
//! may carry fds is read with [`recv_with_fds`]: `recvmsg` with a control buffer sized for
//! [`MAX_FDS`], `MSG_CMSG_CLOEXEC`, and a check of `MSG_CTRUNC`. The producer reads client
//! messages with plain reads (no control buffer), so a client cannot plant fds in it.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The most fds one message carries (a reader handoff: ring, cursor page, wake pipe).
pub const MAX_FDS: usize = 4;

/// Sends `bytes` (at least one byte) with `fds` attached, in one `sendmsg`.
///
/// # Errors
/// The OS error of `sendmsg`, or `WriteZero` if the message was cut short.
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let n = send_some_with_fds(sock, bytes, fds)?;
    if n != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "message with fds cut short",
        ));
    }
    Ok(())
}

/// One `sendmsg` of `bytes` with `fds` attached to its first byte; returns how many bytes
/// went (on a non-blocking socket, maybe fewer than all: send the rest without fds).
///
/// # Errors
/// The OS error of `sendmsg` (`WouldBlock` on a full non-blocking socket: nothing was sent).
pub fn send_some_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    assert!(!bytes.is_empty() && fds.len() <= MAX_FDS);
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let iov = [IoSlice::new(bytes)];
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// Receives one message into `buf`, and the fds attached to it (close-on-exec). Returns the
/// byte count (0: the peer closed) and the fds.
///
/// # Errors
/// The OS error of `recvmsg`, or `InvalidData` if the control data was truncated
/// (`MSG_CTRUNC`: fds were lost) or carried something other than fds.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r?,
        }
    };
    let mut fds = Vec::new();
    let mut unexpected = false;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::ScmRights(raw) => {
                for fd in raw {
                    // SAFETY: the kernel just installed `fd` in our table for this message;
                    // nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            _ => unexpected = true,
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control data truncated: passed fds were lost",
        ));
    }
    if unexpected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected control message",
        ));
    }
    Ok((msg.bytes, fds))
}
