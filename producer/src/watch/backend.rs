//! The one OS-specific piece: an inotify instance through `libc` (see the module docs for why
//! not through notify), and the parsing of the events it returns.
//!
//! Everything above this file works on [`SysEvent`]s: a watch descriptor, a mask, a cookie and
//! a name. A macOS port replaces this file (and the masks), not the pairing, scans or roots.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

/// What every directory watch asks for: create, delete, both halves of a move, close after
/// write and attribute changes. Never `IN_OPEN`, `IN_ACCESS` or `IN_CLOSE_NOWRITE`: reading
/// the tree must not make events. `IN_ONLYDIR | IN_DONT_FOLLOW`: a watch lands on the
/// directory itself, never through a symlink; `IN_EXCL_UNLINK`: no events for unlinked files
/// still held open.
pub(crate) const DIR_MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW
    | libc::IN_EXCL_UNLINK;

/// Added for a root only: the root itself deleted or moved away (its parent is not watched).
pub(crate) const ROOT_MASK: u32 = libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;

/// Added when [`WatchConfig::report_modify`](super::WatchConfig::report_modify) is set: one
/// event per `write()` call (the kernel merges identical consecutive ones).
pub(crate) const MODIFY_MASK: u32 = libc::IN_MODIFY;

/// One event as the kernel gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SysEvent {
    /// Watch descriptor (-1 for a queue overflow).
    pub(crate) wd: i32,
    /// `IN_*` bits.
    pub(crate) mask: u32,
    /// Pairs `IN_MOVED_FROM` with `IN_MOVED_TO`.
    pub(crate) cookie: u32,
    /// The entry's name inside the watched directory; `None` for the directory itself.
    pub(crate) name: Option<OsString>,
    /// When the reader thread read it (ns since the Unix epoch).
    pub(crate) time_ns: u64,
    /// The same moment on the monotonic clock (what scan memories expire by: the wall
    /// clock may step).
    pub(crate) read_at: Instant,
}

impl SysEvent {
    /// Whether `bit` is set in the mask.
    pub(crate) fn has(&self, bit: u32) -> bool {
        self.mask & bit != 0
    }
}

/// An inotify instance. Adding and removing watches and reading may happen on different
/// threads: each is one system call on the same descriptor.
#[derive(Debug)]
pub(crate) struct Inotify {
    fd: OwnedFd,
}

impl Inotify {
    /// A new non-blocking, close-on-exec instance.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by inotify_init1, is open and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify { fd })
    }

    /// Adds (or updates) the watch of `path`; returns its descriptor. inotify gives the same
    /// descriptor again for the same inode, whatever path names it.
    pub(crate) fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: the descriptor is open for the life of `self`, `c` is a NUL-terminated string
        // that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(wd)
        }
    }

    /// Removes a watch. The kernel answers with `IN_IGNORED` for it.
    pub(crate) fn rm_watch(&self, wd: i32) -> io::Result<()> {
        // SAFETY: plain integer arguments; the descriptor is open for the life of `self`.
        let r = unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Reads what is queued (non-blocking) into `buf` and appends the parsed events to `out`.
    /// Returns the number of bytes read, 0 when nothing was queued.
    pub(crate) fn read_events(
        &self,
        buf: &mut [u8],
        time_ns: u64,
        out: &mut Vec<SysEvent>,
    ) -> io::Result<usize> {
        // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes for the whole call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        parse(&buf[..n], time_ns, Instant::now(), out);
        Ok(n)
    }
}

impl AsFd for Inotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Size of the fixed part of `struct inotify_event`.
const HEADER: usize = 16;

/// Parses a buffer of `struct inotify_event` records (safe: byte slices only).
pub(crate) fn parse(mut bytes: &[u8], time_ns: u64, read_at: Instant, out: &mut Vec<SysEvent>) {
    let word = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    while bytes.len() >= HEADER {
        let wd = word(bytes, 0) as i32;
        let mask = word(bytes, 4);
        let cookie = word(bytes, 8);
        let len = word(bytes, 12) as usize;
        let end = (HEADER + len).min(bytes.len());
        let raw = &bytes[HEADER..end];
        let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
        let name = (!raw.is_empty()).then(|| OsStr::from_bytes(raw).to_os_string());
        out.push(SysEvent {
            wd,
            mask,
            cookie,
            name,
            time_ns,
            read_at,
        });
        bytes = &bytes[end..];
    }
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_padded_names_and_nameless_events() {
        let mut b = Vec::new();
        for (wd, mask, cookie, name) in [(1i32, libc::IN_CREATE, 0u32, &b"ab"[..]), (2, 8, 7, b"")]
        {
            let len = if name.is_empty() { 0 } else { 16 };
            b.extend_from_slice(&wd.to_ne_bytes());
            b.extend_from_slice(&mask.to_ne_bytes());
            b.extend_from_slice(&cookie.to_ne_bytes());
            b.extend_from_slice(&(len as u32).to_ne_bytes());
            let mut n = name.to_vec();
            n.resize(len, 0);
            b.extend_from_slice(&n);
        }
        let mut out = Vec::new();
        parse(&b, 5, Instant::now(), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name.as_deref(), Some(OsStr::new("ab")));
        assert_eq!(
            (out[1].wd, out[1].cookie, out[1].name.clone()),
            (2, 7, None)
        );
    }
}
