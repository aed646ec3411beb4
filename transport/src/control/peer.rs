//! Who is on the other end of the control socket, checked from both ends.
//!
//! - The service: [`peer_cred`] reads the kernel's SO_PEERCRED for an accepted connection,
//!   and [`is_allowed`] decides against the [`Access`] list. This is the second gate: the
//!   socket's file mode ([`super::place`]) is the first, and with an allow-list a 0666
//!   socket lets anyone connect, so every connection must pass [`is_allowed`].
//! - The client: [`connect`] turns the OS errors of `connect` into [`ConnectError`]s a user
//!   can act on, and [`check_service`] makes sure the service is who it should be (a
//!   socket planted by another uid is not trusted).
//!
//! # Known problems
//!
//! SO_PEERCRED gives the peer's primary gid only. Supplementary groups are read from
//! `/proc/<pid>/status` when the connection is checked, so they are the groups the peer
//! has then, not at connect time; the read is only trusted if that process still runs as
//! the peer's uid (a guard against pid reuse). If `/proc` hides other users' processes
//! (`hidepid`) or the peer is in another pid namespace, only primary gids count.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::geteuid;

use super::place::{self, Access, MAX_SOCKET_PATH};

/// A peer's credentials, as the kernel recorded them when the connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Its pid (0 if the peer's pid namespace hides it from us).
    pub pid: u32,
    /// Its effective uid.
    pub uid: u32,
    /// Its effective (primary) gid.
    pub gid: u32,
}

/// The credentials of the process on the other end of a connected Unix socket.
///
/// # Errors
/// The OS error of `getsockopt(SO_PEERCRED)`, e.g. `ENOTCONN`.
///
/// # Examples
/// ```
/// use std::os::fd::AsFd;
/// use firehose_transport::control::peer::peer_cred;
///
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// assert_eq!(peer_cred(a.as_fd()).unwrap().pid, std::process::id());
/// ```
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let (pid, uid, gid) = crate::sys::creds::peer_ids(fd)?;
    Ok(PeerCred { pid, uid, gid })
}

/// Whether the service lets `peer` in: its uid is the service's or root's or on
/// `access.allow_uids`, or it is a member of a group on `access.allow_gids` (primary, or
/// supplementary as `/proc/<pid>/status` lists them; see the module's "Known problems").
///
/// # Examples
/// ```
/// use firehose_transport::control::peer::{is_allowed, PeerCred};
/// use firehose_transport::control::place::Access;
///
/// let peer = PeerCred { pid: 0, uid: 1001, gid: 1001 };
/// assert!(!is_allowed(&peer, &Access::default(), 1000));
/// let access = Access { allow_uids: vec![1001], allow_gids: vec![] };
/// assert!(is_allowed(&peer, &access, 1000));
/// ```
pub fn is_allowed(peer: &PeerCred, access: &Access, service_uid: u32) -> bool {
    if peer.uid == service_uid || peer.uid == 0 || access.allow_uids.contains(&peer.uid) {
        return true;
    }
    if access.allow_gids.is_empty() {
        return false;
    }
    if access.allow_gids.contains(&peer.gid) {
        return true;
    }
    supplementary_groups(peer)
        .is_some_and(|groups| groups.iter().any(|g| access.allow_gids.contains(g)))
}

/// The peer's supplementary groups, if its process can be read and still runs as its uid.
fn supplementary_groups(peer: &PeerCred) -> Option<Vec<u32>> {
    if peer.pid == 0 {
        return None;
    }
    let text = crate::sys::procfs::status_text(peer.pid)?;
    let status = ProcStatus::parse(&text)?;
    (status.euid == peer.uid).then_some(status.groups)
}

/// What `is_allowed` needs from `/proc/<pid>/status`.
#[derive(Debug, PartialEq, Eq)]
struct ProcStatus {
    /// The second field of `Uid:` (real, effective, saved, filesystem).
    euid: u32,
    /// `Groups:`, space-separated (may be empty).
    groups: Vec<u32>,
}

impl ProcStatus {
    fn parse(text: &str) -> Option<Self> {
        let mut euid = None;
        let mut groups = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("Uid:") {
                euid = Some(rest.split_whitespace().nth(1)?.parse().ok()?);
            } else if let Some(rest) = line.strip_prefix("Groups:") {
                let parsed: Result<Vec<u32>, _> = rest.split_whitespace().map(str::parse).collect();
                groups = Some(parsed.ok()?);
            }
        }
        Some(ProcStatus {
            euid: euid?,
            groups: groups?,
        })
    }
}

/// Why a client could not reach a service it trusts. Every message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The socket's permissions (or a folder's on the way) keep us out.
    #[error(
        "not allowed to connect to {} as uid {uid}: ask the service's owner to add you to its \
         allow-list",
        .path.display()
    )]
    NotAllowed {
        /// The socket path.
        path: PathBuf,
        /// Our effective uid.
        uid: u32,
    },
    /// Nothing listens there: no socket file (`ENOENT`), or a dead service's
    /// (`ECONNREFUSED`).
    #[error(
        "no firehose service is running at {}: start it, or give the socket path it uses",
        .path.display()
    )]
    NotRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// The path does not fit in `sockaddr_un`.
    #[error(
        "socket path {} is {len} bytes, but a Unix socket path holds at most {limit} bytes: \
         choose a shorter path",
        .path.display()
    )]
    PathTooLong {
        /// The path, as given.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// [`MAX_SOCKET_PATH`].
        limit: usize,
    },
    /// The service runs as a uid we do not trust: anyone may have planted that socket.
    #[error(
        "the service at {} runs as uid {uid}, which is neither ours nor root's: someone else \
         may have planted that socket; add uid {uid} to the trusted service uids only if you \
         trust it",
        path_text(.path.as_deref())
    )]
    UntrustedService {
        /// The socket path, if the kernel reports one.
        path: Option<PathBuf>,
        /// The service's uid.
        uid: u32,
    },
    /// Another OS error.
    #[error(
        "{op} {} failed: {source}; check that it is a firehose service's socket",
        path_text(.path.as_deref())
    )]
    Io {
        /// The socket path, if known.
        path: Option<PathBuf>,
        /// What was being done, e.g. "connecting to".
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

fn path_text(path: Option<&Path>) -> String {
    match path {
        Some(path) => path.display().to_string(),
        None => "<unnamed socket>".to_string(),
    }
}

/// Connects to the control socket at `path`.
///
/// # Errors
/// - [`ConnectError::PathTooLong`]: `path` is longer than [`MAX_SOCKET_PATH`] bytes;
/// - [`ConnectError::NotAllowed`]: `EACCES` or `EPERM`, the permissions keep us out;
/// - [`ConnectError::NotRunning`]: `ENOENT` or `ECONNREFUSED`;
/// - [`ConnectError::Io`]: any other error.
///
/// # Examples
/// ```
/// use firehose_transport::control::peer::{connect, ConnectError};
///
/// let err = connect("/nonexistent/firehose.sock".as_ref()).unwrap_err();
/// assert!(matches!(err, ConnectError::NotRunning { .. }));
/// ```
pub fn connect(path: &Path) -> Result<UnixStream, ConnectError> {
    place::check_len(path).map_err(|len| ConnectError::PathTooLong {
        path: path.to_path_buf(),
        len,
        limit: MAX_SOCKET_PATH,
    })?;
    UnixStream::connect(path).map_err(|source| {
        let path = path.to_path_buf();
        match source.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EACCES | Errno::EPERM) => ConnectError::NotAllowed {
                path,
                uid: geteuid().as_raw(),
            },
            Some(Errno::ENOENT | Errno::ECONNREFUSED) => ConnectError::NotRunning { path },
            _ => ConnectError::Io {
                path: Some(path),
                op: "connecting to",
                source,
            },
        }
    })
}

/// Checks that the service on the other end of `stream` runs as our own uid, root, or one
/// of `trusted_uids`, and returns its credentials.
///
/// # Errors
/// - [`ConnectError::UntrustedService`]: it runs as any other uid;
/// - [`ConnectError::Io`]: SO_PEERCRED could not be read.
///
/// # Examples
/// ```
/// use firehose_transport::control::peer::check_service;
///
/// // Both ends are ours, so the "service" is trusted.
/// let (client, _service) = std::os::unix::net::UnixStream::pair().unwrap();
/// let cred = check_service(&client, &[]).unwrap();
/// assert_eq!(cred.pid, std::process::id());
/// ```
pub fn check_service(stream: &UnixStream, trusted_uids: &[u32]) -> Result<PeerCred, ConnectError> {
    let path = || {
        let addr = stream.peer_addr().ok()?;
        addr.as_pathname().map(Path::to_path_buf)
    };
    let cred = peer_cred(stream.as_fd()).map_err(|source| ConnectError::Io {
        path: path(),
        op: "reading SO_PEERCRED of",
        source,
    })?;
    if is_trusted_service(cred.uid, geteuid().as_raw(), trusted_uids) {
        Ok(cred)
    } else {
        Err(ConnectError::UntrustedService {
            path: path(),
            uid: cred.uid,
        })
    }
}

fn is_trusted_service(service_uid: u32, our_uid: u32, trusted_uids: &[u32]) -> bool {
    service_uid == our_uid || service_uid == 0 || trusted_uids.contains(&service_uid)
}

#[cfg(test)]
mod tests;
