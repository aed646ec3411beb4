//! Unix-socket peer credentials (`SO_PEERCRED`).

use std::io;
use std::os::fd::BorrowedFd;

use nix::sys::socket::{getsockopt, sockopt};

/// `(pid, uid, gid)` of the process on the other end of a connected Unix socket, as the
/// kernel recorded them at connect time (pid 0 if its pid namespace hides it from us).
pub(crate) fn peer_ids(fd: BorrowedFd<'_>) -> io::Result<(u32, u32, u32)> {
    let cred = getsockopt(&fd, sockopt::PeerCredentials)?;
    Ok((
        u32::try_from(cred.pid()).unwrap_or(0),
        cred.uid(),
        cred.gid(),
    ))
}
