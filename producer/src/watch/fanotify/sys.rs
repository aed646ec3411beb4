//! The fanotify instance through `libc`, and the parsing of its FID event records.
//!
//! Why libc and not a crate: nix (0.30 here, 0.32 upstream) parses only the fixed part of FID
//! info records (no handle, no name); `fanotify-rs` 0.3 knows the legacy fd events only;
//! `fanotify-fid` 0.9 parses `DFID_NAME` and both sides of `FAN_RENAME` but is young and has
//! one maintainer, and its types would still need converting. The interface is two calls
//! and a record format of five fields, so it is written here: the parsing below works on
//! byte slices only (no `unsafe`), and is tested on hand-made records and on the kernel's.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

/// What the instance reports: a directory handle and a name for every event, the object's
/// own handle, and both directories and names of a rename in one event.
pub(crate) const INIT_FLAGS: libc::c_uint = libc::FAN_CLASS_NOTIF
    | libc::FAN_CLOEXEC
    | libc::FAN_NONBLOCK
    | libc::FAN_REPORT_DFID_NAME
    | libc::FAN_REPORT_FID
    | libc::FAN_REPORT_TARGET_FID;

/// The events asked for on each filesystem: the same set as inotify's (create, delete,
/// rename, close after write, attributes), for directories too (`FAN_ONDIR`). Never open or
/// access: reading the tree makes no events.
pub(crate) const MARK_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_RENAME
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR;

/// Added when modify events are asked for.
pub(crate) const MODIFY_MASK: u64 = libc::FAN_MODIFY;

/// A file handle as the kernel reports it, with the filesystem it belongs to: the key of the
/// path cache. Layout: fsid (8 bytes), handle type (4 bytes, native order), handle bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Handle(pub(crate) Box<[u8]>);

impl Handle {
    /// The filesystem id (`statfs`'s `f_fsid`, as the kernel reports it).
    pub(crate) fn fsid(&self) -> [u8; 8] {
        let mut f = [0u8; 8];
        f.copy_from_slice(&self.0[..8]);
        f
    }

    /// The handle type, for `open_by_handle_at`.
    pub(crate) fn handle_type(&self) -> i32 {
        i32::from_ne_bytes([self.0[8], self.0[9], self.0[10], self.0[11]])
    }

    /// The opaque handle bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0[12..]
    }
}

/// One event as the kernel gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FanEvent {
    /// `FAN_*` bits (several when the kernel merged events of one object).
    pub(crate) mask: u64,
    /// The directory the event names an entry of (for a rename, the old one).
    pub(crate) dir: Option<Handle>,
    /// The entry's name in `dir` (`.` for the directory itself).
    pub(crate) name: Option<OsString>,
    /// For a rename: the new directory and name.
    pub(crate) to: Option<(Handle, OsString)>,
    /// The object itself.
    pub(crate) object: Option<Handle>,
    /// When the reader read it (ns since the epoch).
    pub(crate) time_ns: u64,
    /// The same moment on the monotonic clock.
    pub(crate) read_at: Instant,
}

impl FanEvent {
    /// Whether any of `bits` is set.
    pub(crate) fn has(&self, bits: u64) -> bool {
        self.mask & bits != 0
    }
}

/// A fanotify instance in FID mode.
#[derive(Debug)]
pub(crate) struct Fanotify {
    fd: OwnedFd,
}

impl Fanotify {
    /// A new instance. Needs `CAP_SYS_ADMIN` (EPERM otherwise).
    pub(crate) fn new() -> io::Result<Self> {
        let flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as libc::c_uint;
        // SAFETY: fanotify_init takes two flag words and returns a new descriptor or -1.
        let fd = unsafe { libc::fanotify_init(INIT_FLAGS, flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by fanotify_init, is open and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Fanotify { fd })
    }

    /// Marks the whole filesystem that holds `path` (`FAN_MARK_FILESYSTEM`). Marking a
    /// filesystem twice updates the one mark.
    pub(crate) fn mark_filesystem(&self, path: &Path, mask: u64) -> io::Result<()> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM;
        // SAFETY: the descriptor is open for the life of `self`; `c` is NUL-terminated and
        // outlives the call.
        let r = unsafe {
            libc::fanotify_mark(self.fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, c.as_ptr())
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Reads what is queued (non-blocking) and appends the parsed events to `out`. Returns
    /// the number of bytes read, 0 when nothing was queued.
    pub(crate) fn read_events(
        &self,
        buf: &mut [u8],
        time_ns: u64,
        out: &mut Vec<FanEvent>,
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
        for fd in parse(&buf[..n], time_ns, Instant::now(), out) {
            // Not in FID mode, but a descriptor handed to us must not leak.
            // SAFETY: the kernel created `fd` for this process with this event; nothing else
            // owns it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Ok(n)
    }
}

impl AsFd for Fanotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `struct fanotify_event_metadata`'s size, and the version this parser knows.
const METADATA: usize = 24;
const METADATA_VERSION: u8 = 3;

/// Parses a buffer of events; returns the file descriptors events carried (none in FID
/// mode), for the caller to close. Records of an unknown version end the parse.
pub(crate) fn parse(
    mut bytes: &[u8],
    time_ns: u64,
    read_at: Instant,
    out: &mut Vec<FanEvent>,
) -> Vec<i32> {
    let mut fds = Vec::new();
    while bytes.len() >= METADATA {
        let event_len = u32_at(bytes, 0) as usize;
        let vers = bytes[4];
        let metadata_len = u16::from_ne_bytes([bytes[6], bytes[7]]) as usize;
        if vers != METADATA_VERSION
            || event_len < METADATA
            || event_len > bytes.len()
            || metadata_len < METADATA
            || metadata_len > event_len
        {
            tracing::error!("watch: fanotify record of version {vers} or length {event_len} not understood; dropping the rest of this read");
            break;
        }
        let mask = u64::from_ne_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let fd = i32::from_ne_bytes(bytes[16..20].try_into().expect("4 bytes"));
        if fd >= 0 {
            fds.push(fd);
        }
        let mut ev = FanEvent {
            mask,
            dir: None,
            name: None,
            to: None,
            object: None,
            time_ns,
            read_at,
        };
        let mut info = &bytes[metadata_len..event_len];
        while info.len() >= 4 {
            let kind = info[0];
            let len = u16::from_ne_bytes([info[2], info[3]]) as usize;
            if len < 4 || len > info.len() {
                break;
            }
            parse_info(kind, &info[..len], &mut ev);
            info = &info[len..];
        }
        out.push(ev);
        bytes = &bytes[event_len..];
    }
    fds
}

/// One info record (header included) into `ev`.
fn parse_info(kind: u8, rec: &[u8], ev: &mut FanEvent) {
    // header (4), fsid (8), handle_bytes (4), handle_type (4), handle, [name NUL]
    if rec.len() < 20 {
        return;
    }
    let handle_bytes = u32_at(rec, 12) as usize;
    let Some(end) = 20usize
        .checked_add(handle_bytes)
        .filter(|&e| e <= rec.len())
    else {
        return;
    };
    let mut key = Vec::with_capacity(12 + handle_bytes);
    key.extend_from_slice(&rec[4..12]);
    key.extend_from_slice(&rec[16..20]);
    key.extend_from_slice(&rec[20..end]);
    let handle = Handle(key.into_boxed_slice());
    let name = || {
        let raw = &rec[end..];
        let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
        OsStr::from_bytes(raw).to_os_string()
    };
    match kind {
        libc::FAN_EVENT_INFO_TYPE_FID => ev.object = Some(handle),
        libc::FAN_EVENT_INFO_TYPE_DFID => ev.dir = Some(handle),
        libc::FAN_EVENT_INFO_TYPE_DFID_NAME | libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => {
            ev.name = Some(name());
            ev.dir = Some(handle);
        }
        libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => ev.to = Some((handle, name())),
        _ => {}
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fid(kind: u8, fsid: u8, handle: &[u8], name: Option<&str>) -> Vec<u8> {
        let mut r = vec![kind, 0, 0, 0];
        r.extend_from_slice(&[fsid; 8]);
        r.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        r.extend_from_slice(&1i32.to_ne_bytes());
        r.extend_from_slice(handle);
        if let Some(n) = name {
            r.extend_from_slice(n.as_bytes());
            r.push(0);
        }
        while r.len() % 4 != 0 {
            r.push(0);
        }
        let len = r.len() as u16;
        r[2..4].copy_from_slice(&len.to_ne_bytes());
        r
    }

    fn event(mask: u64, infos: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = infos.concat();
        let mut e = Vec::new();
        e.extend_from_slice(&((METADATA + body.len()) as u32).to_ne_bytes());
        e.extend_from_slice(&[METADATA_VERSION, 0]);
        e.extend_from_slice(&(METADATA as u16).to_ne_bytes());
        e.extend_from_slice(&mask.to_ne_bytes());
        e.extend_from_slice(&(-1i32).to_ne_bytes());
        e.extend_from_slice(&42i32.to_ne_bytes());
        e.extend(body);
        e
    }

    #[test]
    fn parses_a_create_and_both_sides_of_a_rename() {
        let mut b = event(
            libc::FAN_CREATE,
            &[
                fid(
                    libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                    7,
                    b"dirh",
                    Some("new.txt"),
                ),
                fid(libc::FAN_EVENT_INFO_TYPE_FID, 7, b"fileh", None),
            ],
        );
        b.extend(event(
            libc::FAN_RENAME | libc::FAN_ONDIR,
            &[
                fid(libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, 7, b"a", Some("x")),
                fid(libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, 7, b"b", Some("y")),
                fid(libc::FAN_EVENT_INFO_TYPE_FID, 7, b"obj", None),
            ],
        ));
        let mut out = Vec::new();
        let fds = parse(&b, 1, Instant::now(), &mut out);
        assert!(fds.is_empty());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name.as_deref(), Some(OsStr::new("new.txt")));
        let dir = out[0].dir.as_ref().unwrap();
        assert_eq!(
            (dir.fsid(), dir.handle_type(), dir.bytes()),
            ([7; 8], 1, &b"dirh"[..])
        );
        assert_eq!(out[0].object.as_ref().unwrap().bytes(), b"fileh");
        assert!(out[1].has(libc::FAN_RENAME));
        assert_eq!(out[1].name.as_deref(), Some(OsStr::new("x")));
        let (to, to_name) = out[1].to.as_ref().unwrap();
        assert_eq!(
            (to.bytes(), to_name.as_os_str()),
            (&b"b"[..], OsStr::new("y"))
        );
    }

    #[test]
    fn hostile_records_end_the_parse_without_panicking() {
        let good = event(
            libc::FAN_DELETE,
            &[fid(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 1, b"h", Some("n"))],
        );
        for cut in 0..good.len() {
            let mut out = Vec::new();
            parse(&good[..cut], 0, Instant::now(), &mut out);
            assert!(out.is_empty(), "a record cut at {cut} was parsed");
        }
        // A handle longer than its record, a record length of 0, a wrong version.
        let mut bad = good.clone();
        bad[METADATA + 12..METADATA + 16].copy_from_slice(&9999u32.to_ne_bytes());
        let mut zero = good.clone();
        zero[METADATA + 2..METADATA + 4].copy_from_slice(&0u16.to_ne_bytes());
        let mut vers = good.clone();
        vers[4] = 9;
        for b in [bad, zero] {
            let mut out = Vec::new();
            parse(&b, 0, Instant::now(), &mut out);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].dir, None);
        }
        let mut out = Vec::new();
        parse(&vers, 0, Instant::now(), &mut out);
        assert!(out.is_empty());
    }
}
