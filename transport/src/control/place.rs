//! Where the control socket lives, and how one service claims it.
//!
//! - [`default_socket_path`]: `$XDG_RUNTIME_DIR/firehose/firehose.sock`, else
//!   `/tmp/firehose-<uid>/firehose.sock`.
//! - [`bind`]: checks the path and its folder, takes the lock beside the socket, replaces a
//!   stale socket, binds, and gives the socket the mode the [`Access`] list needs. It
//!   returns a [`BoundSocket`], whose drop removes the socket file again.
//! - [`PlaceError`]: why the socket cannot go there, and what to do about it.
//!
//! # Permissions
//!
//! The file mode is the first gate, SO_PEERCRED ([`super::peer`]) the second:
//!
//! | [`Access`]                     | folder created | socket                   |
//! |--------------------------------|----------------|--------------------------|
//! | default (our uid and root)     | 0700           | 0600                     |
//! | `allow_uids` non-empty         | 0711           | 0666                     |
//! | only `allow_gids`, one gid     | 0711           | 0660, group-owned by it  |
//! | only `allow_gids`, several     | 0711           | 0666                     |
//!
//! The socket's folder must be ours and not writable by group or others (whoever can write
//! it can replace the socket). When the list names anyone else, the socket may not live
//! under `$XDG_RUNTIME_DIR` (other users cannot enter it), and every folder on the way to
//! it must be searchable by the peers on the list; [`bind`] names the first folder in the
//! way. A folder that already exists is never loosened: that is its owner's call.
//!
//! # Stale or live
//!
//! A socket file left by a service that died looks just like a live one. The decision is
//! made under `flock(LOCK_EX | LOCK_NB)` on a lock file beside the socket
//! (`firehose.sock.lock`): whoever gets the lock owns the path, so a socket file found
//! then is stale and is replaced. The kernel drops the lock when its holder dies, however
//! it dies. The holder writes its pid into the lock file, so a refused service can say who
//! holds the path ([`PlaceError::Live`]). Of two services racing for one path, exactly one
//! gets the lock.
//!
//! # Known problems
//!
//! - ACLs are not consulted: the folder check reads the mode bits only.
//! - The peers' groups are not known for `allow_uids`, so a folder counts as searchable by
//!   an allowed uid only through its owner or "other" bits; for an allowed gid, through its
//!   group or "other" bits.
//! - Linux only: the path limit comes from Linux's `sockaddr_un`.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::unistd::geteuid;

/// Bytes in `sockaddr_un.sun_path` (108 on Linux), the terminating NUL included.
pub const SUN_PATH_LEN: usize =
    std::mem::size_of::<libc::sockaddr_un>() - std::mem::size_of::<libc::sa_family_t>();

/// The longest socket path, in bytes, that [`bind`] and [`super::peer::connect`] accept:
/// [`SUN_PATH_LEN`] less the NUL (107 on Linux). A longer path is refused, never truncated.
pub const MAX_SOCKET_PATH: usize = SUN_PATH_LEN - 1;

/// Suffix of the lock file beside the socket: `firehose.sock` → `firehose.sock.lock`.
const LOCK_SUFFIX: &str = ".lock";

/// Who may connect besides the service's own uid and root. Empty lists (the default) keep
/// the socket private.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Uids that may connect.
    pub allow_uids: Vec<u32>,
    /// Gids whose members may connect (primary or supplementary group).
    pub allow_gids: Vec<u32>,
}

impl Access {
    /// Whether nobody but the service's uid and root may connect.
    pub fn is_private(&self) -> bool {
        self.allow_uids.is_empty() && self.allow_gids.is_empty()
    }

    /// The socket file's mode, and the group to give it, if any.
    fn socket_mode(&self) -> (u32, Option<u32>) {
        match (self.allow_uids.is_empty(), self.allow_gids.as_slice()) {
            (true, []) => (0o600, None),
            (true, [gid]) => (0o660, Some(*gid)),
            _ => (0o666, None),
        }
    }

    /// Whether every peer on the list can search a folder with this metadata (see the
    /// module's "Known problems" for what this assumes).
    fn can_search(&self, dir: &fs::Metadata) -> bool {
        let mode = dir.mode();
        let other = mode & 0o001 != 0;
        let uids_can = self.allow_uids.iter().all(|&uid| {
            if uid == 0 {
                true
            } else if uid == dir.uid() {
                mode & 0o100 != 0
            } else {
                other
            }
        });
        let gids_can = self.allow_gids.iter().all(|&gid| {
            if gid == dir.gid() {
                mode & 0o010 != 0
            } else {
                other
            }
        });
        uids_can && gids_can
    }
}

/// Why the control socket cannot be placed. Every message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
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
    /// A live service holds the lock beside the socket.
    #[error(
        "a firehose service ({}) is already running at {}: stop it first, or choose another \
         socket path",
        pid_text(*.pid),
        .path.display()
    )]
    Live {
        /// The pid the holder wrote into the lock file, if it could be read.
        pid: Option<u32>,
        /// The socket path.
        path: PathBuf,
    },
    /// The socket's folder belongs to someone else, who could replace the socket.
    #[error(
        "socket folder {} belongs to uid {owner_uid}, not to this service: remove it, or \
         choose a folder of your own",
        .dir.display()
    )]
    DirNotOurs {
        /// The folder.
        dir: PathBuf,
        /// Its owner.
        owner_uid: u32,
    },
    /// The socket's folder is writable by group or others, who could replace the socket.
    #[error(
        "socket folder {} has mode {mode:04o}, writable by group or others: run \
         `chmod go-w {}`, or choose another folder",
        .dir.display(),
        .dir.display()
    )]
    DirTooOpen {
        /// The folder.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The allow-list names other users, but the socket would sit under `$XDG_RUNTIME_DIR`.
    #[error(
        "socket path {} is under $XDG_RUNTIME_DIR, which other users cannot enter, but the \
         allow-list names other users: choose a path they can reach, such as \
         /run/firehose/firehose.sock (folder mode 0711)",
        .path.display()
    )]
    UnderRuntimeDir {
        /// The socket path.
        path: PathBuf,
    },
    /// A folder on the way to the socket is not searchable by the peers on the allow-list.
    #[error(
        "the peers on the allow-list cannot search folder {}, on the way to the socket: run \
         `chmod o+x {}` (or g+x for an allowed group), or choose another socket path",
        .dir.display(),
        .dir.display()
    )]
    AncestorNotSearchable {
        /// The first such folder from the root down.
        dir: PathBuf,
    },
    /// A system call failed.
    #[error(
        "{op} {} failed: {source}; check that path and its permissions, or choose another \
         socket path",
        .path.display()
    )]
    Io {
        /// The path it failed on.
        path: PathBuf,
        /// What was being done, e.g. "creating folder".
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

fn pid_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_string(),
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> PlaceError + 'a {
    move |source| PlaceError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// `Err(len)` if `path` does not fit in `sun_path` with its NUL.
pub(crate) fn check_len(path: &Path) -> Result<(), usize> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        Err(len)
    } else {
        Ok(())
    }
}

fn check_path(path: &Path) -> Result<(), PlaceError> {
    check_len(path).map_err(|len| PlaceError::PathTooLong {
        path: path.to_path_buf(),
        len,
        limit: MAX_SOCKET_PATH,
    })
}

/// The socket path a service uses when none is configured:
/// `$XDG_RUNTIME_DIR/firehose/firehose.sock` if `XDG_RUNTIME_DIR` names a directory
/// (absolute), else `/tmp/firehose-<uid>/firehose.sock`.
///
/// # Errors
/// [`PlaceError::PathTooLong`] if that path does not fit in a Unix socket address.
///
/// # Examples
/// ```
/// let path = firehose_transport::control::place::default_socket_path().unwrap();
/// assert!(path.ends_with("firehose.sock"));
/// ```
pub fn default_socket_path() -> Result<PathBuf, PlaceError> {
    socket_path_from(std::env::var_os("XDG_RUNTIME_DIR"), geteuid().as_raw())
}

/// Where the system service (`firehosed install --system`) listens.
pub const SYSTEM_SOCKET: &str = "/run/firehose/firehose.sock";

/// Where a client looks for the service: this user's own service's socket
/// ([`default_socket_path`]) if it is there, else the system service's ([`SYSTEM_SOCKET`])
/// if that is there, else this user's (so that the error names where the user's service
/// would be).
///
/// # Errors
/// As [`default_socket_path`].
pub fn client_socket_path() -> Result<PathBuf, PlaceError> {
    let user = default_socket_path()?;
    if !user.exists() && Path::new(SYSTEM_SOCKET).exists() {
        return Ok(PathBuf::from(SYSTEM_SOCKET));
    }
    Ok(user)
}

fn socket_path_from(runtime_dir: Option<OsString>, uid: u32) -> Result<PathBuf, PlaceError> {
    let folder = match runtime_dir.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() && dir.is_dir() => dir.join("firehose"),
        _ => PathBuf::from(format!("/tmp/firehose-{uid}")),
    };
    let path = folder.join("firehose.sock");
    check_path(&path)?;
    Ok(path)
}

/// A listening control socket, and the lock that makes it ours. Dropping it removes the
/// socket file and the lock file, if they are still the ones we made, then releases the
/// lock.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listening socket (close-on-exec).
    pub listener: UnixListener,
    /// Where it is bound.
    pub path: PathBuf,
    /// The lock file, holding the flock as long as we live.
    lock: crate::sys::lock::Locked,
    lock_path: PathBuf,
    /// The socket file's (device, inode), to tell it from a replacement.
    socket_id: (u64, u64),
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        // Errors are ignored: there is nobody to tell, and the next service replaces what
        // is left. The lock file goes before the lock is released (the fields drop after
        // this); a service that opened it just before sees it gone and retries
        // (`take_lock`).
        if file_id(&self.path).ok() == Some(self.socket_id) {
            let _ = fs::remove_file(&self.path);
        }
        if let Ok(meta) = self.lock.metadata() {
            if file_id(&self.lock_path).ok() == Some((meta.dev(), meta.ino())) {
                let _ = fs::remove_file(&self.lock_path);
            }
        }
    }
}

fn file_id(path: &Path) -> io::Result<(u64, u64)> {
    let meta = fs::symlink_metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Binds the control socket at `path`, for the peers `access` allows.
///
/// In order: the path must fit in `sun_path`; with an allow-list, it may not be under
/// `$XDG_RUNTIME_DIR`; a missing folder is created (0700, or 0711 with an allow-list);
/// the folder must be ours and not writable by group or others; with an allow-list, every
/// folder on the way must be searchable by the peers on it. Then the lock beside the
/// socket is taken, a stale socket is removed, the socket is bound, given its mode (see the
/// module doc) and only then listens, and our pid goes into the lock file.
///
/// # Errors
/// - [`PlaceError::PathTooLong`]: `path` is longer than [`MAX_SOCKET_PATH`] bytes;
/// - [`PlaceError::UnderRuntimeDir`], [`PlaceError::AncestorNotSearchable`]: the peers on
///   the allow-list could not reach the socket;
/// - [`PlaceError::DirNotOurs`], [`PlaceError::DirTooOpen`]: someone else could replace the
///   socket;
/// - [`PlaceError::Live`]: another service holds the lock;
/// - [`PlaceError::Io`]: a system call failed, e.g. the folder could not be created, or the
///   socket could not be given to the allowed group.
///
/// # Examples
/// ```
/// use firehose_transport::control::place::{bind, Access, PlaceError};
///
/// let dir = std::env::temp_dir().join(format!("fh-doc-bind-{}", std::process::id()));
/// let path = dir.join("firehose.sock");
/// let service = bind(&path, &Access::default()).unwrap();
/// // A second service on the same path is refused, and told who holds it.
/// match bind(&path, &Access::default()) {
///     Err(PlaceError::Live { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
///     other => panic!("expected Live, got {other:?}"),
/// }
/// drop(service);
/// assert!(!path.exists());
/// std::fs::remove_dir(&dir).unwrap();
/// ```
pub fn bind(path: &Path, access: &Access) -> Result<BoundSocket, PlaceError> {
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from);
    bind_in(path, access, runtime_dir.as_deref())
}

/// [`bind`], with `$XDG_RUNTIME_DIR` passed in (tests do not touch the environment).
fn bind_in(
    path: &Path,
    access: &Access,
    runtime_dir: Option<&Path>,
) -> Result<BoundSocket, PlaceError> {
    check_path(path)?;
    let Some(name) = path.file_name() else {
        return Err(PlaceError::Io {
            path: path.to_path_buf(),
            op: "binding (the path names no file)",
            source: io::ErrorKind::InvalidInput.into(),
        });
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !access.is_private() {
        if let Some(runtime_dir) = runtime_dir {
            if is_under(path, runtime_dir) {
                return Err(PlaceError::UnderRuntimeDir {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    create_dirs(dir, if access.is_private() { 0o700 } else { 0o711 })?;
    check_dir_is_ours(dir)?;
    if !access.is_private() {
        check_searchable(dir, access)?;
    }

    let mut lock_name = name.to_os_string();
    lock_name.push(LOCK_SUFFIX);
    let lock_path = dir.join(lock_name);
    let lock = take_lock(path, &lock_path)?;
    remove_stale(path)?;
    let listener = listen(path, access)?;
    let bound = BoundSocket {
        socket_id: file_id(path).map_err(io_err(path, "inspecting socket"))?,
        listener,
        path: path.to_path_buf(),
        lock,
        lock_path,
    };
    write_pid(&bound.lock, &bound.lock_path)?;
    Ok(bound)
}

/// `path` made absolute, with its longest existing ancestor resolved (symlinks followed).
fn resolve(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    for base in abs.ancestors() {
        if let Ok(real) = fs::canonicalize(base) {
            let rest = abs.strip_prefix(base).expect("an ancestor is a prefix");
            return real.join(rest);
        }
    }
    abs
}

fn is_under(path: &Path, dir: &Path) -> bool {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    abs.starts_with(dir) || resolve(path).starts_with(resolve(dir))
}

/// Creates `dir` and any missing ancestors with `mode` (umask undone).
fn create_dirs(dir: &Path, mode: u32) -> Result<(), PlaceError> {
    let mut missing = Vec::new();
    for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        match fs::symlink_metadata(d) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(d),
            Err(e) => return Err(io_err(d, "inspecting folder")(e)),
        }
    }
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(mode).create(d) {
            Ok(()) => fs::set_permissions(d, Permissions::from_mode(mode))
                .map_err(io_err(d, "setting the mode of folder"))?,
            // A service racing us made it; `check_dir_is_ours` looks at it next.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(d, "creating folder")(e)),
        }
    }
    Ok(())
}

/// The folder (and a symlink to it) must be ours and not writable by group or others.
fn check_dir_is_ours(dir: &Path) -> Result<(), PlaceError> {
    let uid = geteuid().as_raw();
    let link = fs::symlink_metadata(dir).map_err(io_err(dir, "inspecting folder"))?;
    if link.file_type().is_symlink() && link.uid() != uid {
        return Err(PlaceError::DirNotOurs {
            dir: dir.to_path_buf(),
            owner_uid: link.uid(),
        });
    }
    let meta = fs::metadata(dir).map_err(io_err(dir, "inspecting folder"))?;
    if !meta.is_dir() {
        return Err(PlaceError::Io {
            path: dir.to_path_buf(),
            op: "using as the socket folder",
            source: io::ErrorKind::NotADirectory.into(),
        });
    }
    if meta.uid() != uid {
        return Err(PlaceError::DirNotOurs {
            dir: dir.to_path_buf(),
            owner_uid: meta.uid(),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(PlaceError::DirTooOpen {
            dir: dir.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Every folder from the root down to `dir`, as given and with symlinks resolved, must be
/// searchable by the peers on `access`.
fn check_searchable(dir: &Path, access: &Access) -> Result<(), PlaceError> {
    let given = std::path::absolute(dir).map_err(io_err(dir, "resolving folder"))?;
    let real = fs::canonicalize(dir).map_err(io_err(dir, "resolving folder"))?;
    let given_chain: Vec<&Path> = given.ancestors().collect();
    let real_chain: Vec<&Path> = real.ancestors().collect();
    for d in given_chain
        .into_iter()
        .rev()
        .chain(real_chain.into_iter().rev())
    {
        let meta = fs::metadata(d).map_err(io_err(d, "inspecting folder"))?;
        if !access.can_search(&meta) {
            return Err(PlaceError::AncestorNotSearchable {
                dir: d.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Takes the lock beside the socket, or says who holds it.
fn take_lock(path: &Path, lock_path: &Path) -> Result<crate::sys::lock::Locked, PlaceError> {
    // Only our own uid (or root) can make the lock file churn (see `try_lock`), so a few
    // tries suffice.
    for _ in 0..8 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(lock_path)
            .map_err(io_err(lock_path, "opening lock file"))?;
        match try_lock(file, lock_path)? {
            Attempt::Locked(lock) => return Ok(lock),
            Attempt::Held(pid) => {
                return Err(PlaceError::Live {
                    pid,
                    path: path.to_path_buf(),
                })
            }
            Attempt::Replaced => continue,
        }
    }
    Err(PlaceError::Io {
        path: lock_path.to_path_buf(),
        op: "locking (the lock file keeps being replaced)",
        source: io::ErrorKind::WouldBlock.into(),
    })
}

/// What came of one attempt to lock an opened lock file.
#[derive(Debug)]
enum Attempt {
    /// The path is ours.
    Locked(crate::sys::lock::Locked),
    /// A live service holds it; the pid it wrote, if any.
    Held(Option<u32>),
    /// We locked a file that `lock_path` no longer names: open it again.
    Replaced,
}

/// Locks `file`, opened from `lock_path`. A service shutting down unlinks the lock file
/// while still holding the lock; if we opened the file before that and lock it after, we
/// hold a lock nobody else sees. So the path must still name the file we locked.
fn try_lock(file: File, lock_path: &Path) -> Result<Attempt, PlaceError> {
    use crate::sys::lock::{try_exclusive, TryLock};
    match try_exclusive(file).map_err(io_err(lock_path, "locking"))? {
        TryLock::Locked(lock) => {
            let meta = lock
                .metadata()
                .map_err(io_err(lock_path, "inspecting lock file"))?;
            if file_id(lock_path).ok() == Some((meta.dev(), meta.ino())) {
                Ok(Attempt::Locked(lock))
            } else {
                Ok(Attempt::Replaced)
            }
        }
        TryLock::Held(file) => Ok(Attempt::Held(read_pid(&file))),
    }
}

/// The pid in a lock file, if it holds one (the holder may not have written it yet).
fn read_pid(file: &File) -> Option<u32> {
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn write_pid(lock: &File, lock_path: &Path) -> Result<(), PlaceError> {
    // Truncate first: a reader then sees no pid or the whole pid, never our digits mixed
    // with a dead holder's.
    lock.set_len(0)
        .and_then(|()| lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0))
        .map_err(io_err(lock_path, "writing our pid into"))
}

/// Under the lock, a socket file at `path` is a dead service's: remove it.
fn remove_stale(path: &Path) -> Result<(), PlaceError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, "inspecting")(e)),
        Ok(meta) if meta.file_type().is_socket() || meta.file_type().is_symlink() => {
            fs::remove_file(path).map_err(io_err(path, "removing stale socket"))
        }
        Ok(_) => Err(PlaceError::Io {
            path: path.to_path_buf(),
            op: "replacing (it is not a socket)",
            source: io::ErrorKind::AlreadyExists.into(),
        }),
    }
}

/// socket, bind, mode, listen: nobody can connect before the socket has its final mode.
fn listen(path: &Path, access: &Access) -> Result<UnixListener, PlaceError> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| io_err(path, "creating socket for")(e.into()))?;
    let addr = UnixAddr::new(path).map_err(|e| io_err(path, "addressing")(e.into()))?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(|e| io_err(path, "binding socket")(e.into()))?;
    let finish = || -> Result<(), PlaceError> {
        let (mode, group) = access.socket_mode();
        if let Some(gid) = group {
            chown(path, None, Some(gid)).map_err(io_err(
                path,
                "giving the allowed group (we must be root or a member) socket",
            ))?;
        }
        fs::set_permissions(path, Permissions::from_mode(mode))
            .map_err(io_err(path, "setting the mode of socket"))?;
        socket::listen(&fd, Backlog::MAXCONN).map_err(|e| io_err(path, "listening on")(e.into()))
    };
    if let Err(e) = finish() {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(fd))
}

#[cfg(test)]
mod tests;
