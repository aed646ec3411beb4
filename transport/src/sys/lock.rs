//! Advisory file locks (`flock`).

use std::fs::File;
use std::io;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A held exclusive lock on a file; released when dropped.
pub(crate) type Locked = Flock<File>;

/// What one non-blocking attempt at an exclusive lock gave.
#[derive(Debug)]
pub(crate) enum TryLock {
    /// We hold it.
    Locked(Locked),
    /// Someone else does; the file back.
    Held(File),
}

/// Tries to take an exclusive lock on `file` without waiting.
pub(crate) fn try_exclusive(file: File) -> io::Result<TryLock> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(TryLock::Locked(lock)),
        Err((file, Errno::EWOULDBLOCK)) => Ok(TryLock::Held(file)),
        Err((_, errno)) => Err(errno.into()),
    }
}
