//! The file watcher: recursive inotify watches on the roots, turned into one stream of
//! [`WatchEvent`]s.
//!
//! ```text
//! kernel queue -> reader thread (read, stamp)        -> bounded queue (in events)
//!              -> core thread (pair renames, scan new directories, dedupe, roots, limits)
//!              -> bounded channel of WatchEvent       -> the service (filters, history, ring)
//! ```
//!
//! # What it reports
//!
//! - Create, Remove, CloseWrite, Metadata (and Modify when asked for), each once, with the
//!   entry's full path and whether it is a directory.
//! - A rename inside the tree is **one** [`EventKind::Rename`] with both paths. A move out of
//!   the tree is a Remove; a move in is a Create followed by a Create for everything inside
//!   what arrived (a directory moved in is watched and scanned).
//! - New directories are watched as they appear. Files created in them before the watch
//!   landed are found by a scan right after the watch is added and reported once; the late
//!   kernel events for them are recognised and dropped (see `scan.rs`: the watch goes on
//!   before the listing, and a per-directory memory of what the scan reported, kept for
//!   [`WatchConfig::dedupe_window`], eats the duplicates).
//! - The service's own files ([`WatchConfig::ignore`]) are never reported.
//! - Overflows, root loss and return, and the watch limit are events of their own.
//!
//! # Event mask
//!
//! Asked for: `IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE |
//! IN_ATTRIB` on every directory (`IN_DELETE_SELF | IN_MOVE_SELF` on roots). Not asked for:
//! `IN_OPEN`, `IN_ACCESS`, `IN_CLOSE_NOWRITE` (reading the tree makes no events; tested), and
//! by default `IN_MODIFY`: it fires once per `write()` call, so a file written in 4 KiB
//! pieces gives thousands of events where a record stream wants one. A writer's close gives
//! one [`EventKind::CloseWrite`] instead. The trade-off: a file that is appended to and kept
//! open (a log) or written through a shared mapping gives no event until it is closed; set
//! [`WatchConfig::report_modify`] for those, and consecutive Modify events of one path are
//! folded into one.
//!
//! # Why libc inotify and not notify
//!
//! The workspace depends on `notify = "=9.0.0-rc.7"`, chosen over 8.2 for its explicit event
//! mask (8.2's inotify mask is fixed and includes `IN_MODIFY`; 9's default mask is everything,
//! `IN_OPEN` included, but `Config::with_event_kinds` can narrow it). That argument holds
//! *between those two*. Reading rc.7's inotify backend (`src/inotify.rs`) showed that four of
//! this module's promises cannot be kept through its API, so the kernel interface here is
//! ~100 lines of `libc` in `backend.rs` (no new dependency), and notify stays available for a
//! future polling fallback:
//!
//! 1. **Renamed directories.** On `IN_MOVED_FROM` notify removes the watches of the moved
//!    directory and everything below it, and a recursive watch re-adds them for the new path
//!    afterwards. In between, files created in the moved tree are lost, and a scan cannot tell
//!    them from the old contents. An inotify watch follows the inode: here a rename is a
//!    prefix rewrite of our descriptor map and nothing is ever unwatched.
//! 2. **Which directories are unwatched.** In recursive mode notify hides which directories
//!    got a watch (`watched_paths` lists only the roots) and aborts its walk at the first
//!    `ENOSPC` (`WalkFailure::Abort`), so `status` could not list what is unwatched.
//!    Watching each directory non-recursively through notify instead costs a thread round
//!    trip per directory and adds `IN_DELETE_SELF | IN_MOVE_SELF` to every watch.
//! 3. **Self events are indistinguishable.** notify's `Event` carries neither the watch
//!    descriptor nor whether the event named an entry or the watched directory itself, so a
//!    directory's own `IN_ATTRIB`/`IN_DELETE_SELF` and its parent's event for it come out as
//!    two identical events; here nameless events of non-root watches are simply dropped.
//! 4. **Synthetic events.** Recursive mode synthesises `Create(Folder)` for directories it
//!    finds while walking, which may duplicate native ones (its own comment), on top of the
//!    duplicates our scan has to remove.
//!
//! # Known Problems
//!
//! ### Watch limit
//!
//! inotify needs one watch per directory, and `fs.inotify.max_user_watches` caps them per
//! user (all processes of the user together). When it is reached the watcher keeps what it
//! has, reports [`WatchEvent::WatchLimit`] (naming the setting, its value and how to raise
//! it) and lists the unwatched directories in [`Watcher::status`]; it retries them when
//! watches are freed. Events in unwatched directories are not seen. Raise it with
//! `sysctl fs.inotify.max_user_watches=N`, and keep it with a file in `/etc/sysctl.d/`.
//! `fs.inotify.max_user_instances` (one instance per [`Watcher`]) fails [`Watcher::start`].
//!
//! ### Network and virtual file systems
//!
//! inotify sees changes made through this kernel only. On NFS, CIFS/SMB and most FUSE file
//! systems (sshfs, rclone, ...) changes made by other machines or by the server are never
//! reported; `/proc` and `/sys` report nothing useful. Such trees need a polling watcher.
//!
//! ### Races
//!
//! - A directory created and filled faster than its watch lands is recovered by the scan,
//!   but only as its state at scan time: a file created and deleted before the scan is never
//!   seen, and a file renamed inside it before the scan shows up as a Create of its new name.
//! - Contents of a directory moved into the tree, or of a root that comes back, are reported
//!   as Creates even though the files may be old.
//! - A rename is paired when its two halves are adjacent in the kernel queue, which they are
//!   unless another process's event lands between them; then it comes out as Remove + Create.
//! - After an overflow (the kernel's queue or ours) the events in between are lost for
//!   good: the watcher re-walks every root so that every directory is watched again, but the
//!   consumer must treat [`WatchEvent::Overflow`] as "state unknown" (rescan what it needs).
//! - The dedupe memory lives [`WatchConfig::dedupe_window`] (2 s) after a scan; a late
//!   kernel event delayed more than that (a reader thread starved for seconds) would be
//!   reported a second time.
//! - Hard links: a file with two names in watched directories gets events for the name it
//!   was changed through only (close-write and attribute events go to every watched parent).

mod backend;
mod blind;
mod core;
mod fanotify;
mod limits;
mod reader;
mod rename;
mod roots;
mod scan;
mod tree;

use crossbeam_channel::{Receiver, Sender};
pub use firehose_transport::record::{BlindReason, EventKind};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How to watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Absolute directories, watched recursively. A root that does not exist yet is reported
    /// as gone and picked up when it appears.
    pub roots: Vec<PathBuf>,
    /// Exact paths never reported, even under a root: the service's own files (database,
    /// `-wal`, `-shm`, lease, logs). A rename from or to one of them is reported as the
    /// Create or Remove of the other name.
    pub ignore: Vec<PathBuf>,
    /// How many kernel events may wait for the core thread; beyond it they are dropped and
    /// an [`WatchEvent::Overflow`] says so. Also the capacity of the output channel, where
    /// the core waits for the consumer (so a slow consumer ends in an overflow, not a stall
    /// of the kernel queue).
    pub queue_bound: usize,
    /// Also ask for `IN_MODIFY` and report [`EventKind::Modify`] (one per run of writes to a
    /// path). Off by default: see the module docs.
    pub report_modify: bool,
    /// How often a gone root is looked for.
    pub root_poll: Duration,
    /// How long the scan of a new directory remembers what it reported, to drop the late
    /// kernel events for the same entries.
    pub dedupe_window: Duration,
    /// How often unwatched directories (the watch limit, permissions) are tried again even
    /// when the kernel freed no watch: the limit may have been raised (default 10 s).
    pub unwatched_retry: Duration,
    /// How often each root's device and inode are checked: a mount over a root or a root
    /// symlink pointed elsewhere makes no inotify event (default 10 s).
    pub identity_check: Duration,
    /// The tree index's file (see [`crate::index`]). With it the watcher keeps an index of
    /// everything under the roots, and after an overflow and at start after a stop or a
    /// crash reports exactly what changed while it was blind. `None`: no index.
    pub index_path: Option<PathBuf>,
    /// The shortest wait between two reconciles after overflows; it doubles with each
    /// overflow less than a minute after the last reconcile, up to a minute.
    pub reconcile_backoff: Duration,
    /// Which kernel interface to watch with (default: inotify).
    pub backend: BackendChoice,
}

/// The kernel interface a watcher uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// A watch per directory (`inotify(7)`).
    #[default]
    Inotify,
    /// One mark per filesystem (`fanotify(7)`, needs `CAP_SYS_ADMIN` and
    /// `CAP_DAC_READ_SEARCH`).
    Fanotify,
}

impl Backend {
    /// `inotify` or `fanotify`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Inotify => "inotify",
            Backend::Fanotify => "fanotify",
        }
    }
}

/// Which backend to start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendChoice {
    /// fanotify when this process may use it and every root's filesystem supports it,
    /// inotify otherwise (status says why).
    Auto,
    /// Always inotify.
    #[default]
    Inotify,
    /// fanotify, or fail to start.
    Fanotify,
}

impl WatchConfig {
    /// Defaults for `roots`.
    pub fn new(roots: Vec<PathBuf>) -> Self {
        WatchConfig {
            roots,
            ..Self::default()
        }
    }
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            roots: Vec::new(),
            ignore: Vec::new(),
            queue_bound: 65_536,
            report_modify: false,
            root_poll: Duration::from_secs(1),
            dedupe_window: Duration::from_secs(2),
            unwatched_retry: Duration::from_secs(10),
            identity_check: Duration::from_secs(10),
            index_path: None,
            reconcile_backoff: Duration::from_millis(500),
            backend: BackendChoice::Inotify,
        }
    }
}

/// One change in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// When the watcher read the kernel event, or ran the scan that found the entry (ns since
    /// the Unix epoch).
    pub time_ns: u64,
    /// Create, Remove, Rename, CloseWrite, Metadata or (when asked for) Modify.
    pub kind: EventKind,
    /// The entry; for a rename, its old path.
    pub path: PathBuf,
    /// For a rename, the new path.
    pub path_to: Option<PathBuf>,
    /// The size in bytes, for CloseWrite and for entries found by a scan.
    pub size: Option<u64>,
    /// Whether the entry is a directory.
    pub is_dir: bool,
    /// Found by a reconcile after a blind period (between [`WatchEvent::Blind`]s), not
    /// reported by the kernel as it happened.
    pub reconciled: bool,
}

/// Why events were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowReason {
    /// The kernel's queue (`fs.inotify.max_queued_events`) overflowed.
    KernelQueue,
    /// The watcher's own queue ([`WatchConfig::queue_bound`]) was full.
    WatcherQueue,
    /// A directory had no watch for a while (the watch limit, or permissions) and has one
    /// now: it is scanned again, its changes in between are unknown.
    WasUnwatched,
    /// A root's directory was replaced under its path (a mount over it, a symlink pointed
    /// elsewhere): what lies there now is reported as created.
    RootReplaced,
    /// Too many new directories vanished before they could be scanned to keep track.
    Untracked,
}

/// The watch limit was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchLimit {
    /// The first directory that could not be watched.
    pub path: PathBuf,
    /// `fs.inotify.max_user_watches`, if it could be read.
    pub limit: Option<u64>,
    /// What to tell the user: the setting, its value and how to raise it.
    pub message: String,
}

/// What the watcher says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A change in the tree.
    Event(RawEvent),
    /// Events were lost (once per episode: overflows less than a second apart are one). The
    /// watcher has re-walked (or is about to re-walk) the roots so every directory is watched
    /// again; what changed in between is unknown. `root` is `None` when all roots are
    /// affected (one kernel queue serves them all).
    Overflow {
        /// The root affected, `None` for all.
        root: Option<PathBuf>,
        /// Which queue overflowed.
        reason: OverflowReason,
    },
    /// A root was deleted, moved away or unmounted. The others go on; it is looked for every
    /// [`WatchConfig::root_poll`].
    RootGone(PathBuf),
    /// A gone root is back and watched again; Creates for what it holds follow.
    RootBack(PathBuf),
    /// The watch limit was reached (once, until every directory is watched again).
    WatchLimit(WatchLimit),
    /// A blind range opens (`start`) or closes: the reconciled events in between are what a
    /// walk of the disk found changed under `root` (every root if `None`) since `since_ns`.
    Blind {
        /// The root, `None` for all.
        root: Option<PathBuf>,
        /// Whether this opens the range (else it closes it).
        start: bool,
        /// Why the watcher was blind.
        reason: BlindReason,
        /// Since when (ns since the epoch; 0 if not known).
        since_ns: u64,
    },
}

/// The watcher's state, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStatus {
    /// The backend in force.
    pub backend: Backend,
    /// With fanotify: filesystems marked and the path cache's hit rate; with inotify: why
    /// not fanotify (empty if it was not asked for).
    pub backend_detail: String,
    /// With fanotify: directory lookups the path cache answered, and those that asked the
    /// kernel (`open_by_handle_at`).
    pub path_cache: (u64, u64),
    /// The roots asked for.
    pub roots: Vec<PathBuf>,
    /// Directories with a watch.
    pub watched_dirs: usize,
    /// Directories without one because of the watch limit (at most
    /// [`UNWATCHED_LISTED`], sorted).
    pub unwatched: Vec<PathBuf>,
    /// How many directories are unwatched in all.
    pub unwatched_count: usize,
    /// Overflows since start (each kernel or queue overflow, not episodes).
    pub overflows: u64,
    /// Events dropped because the watcher's queue was full.
    pub dropped_events: u64,
    /// Roots that are gone right now.
    pub gone_roots: Vec<PathBuf>,
}

/// The most unwatched directories [`WatchStatus::unwatched`] lists.
pub const UNWATCHED_LISTED: usize = 100;

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A root is not an absolute path.
    #[error("watch root {0:?} is not an absolute path")]
    RelativeRoot(PathBuf),
    /// No inotify instance could be made.
    #[error(
        "cannot create an inotify instance: {0} (if this says too many open files, the limit \
         is fs.inotify.max_user_instances: raise it with `sysctl fs.inotify.max_user_instances=N`)"
    )]
    Init(#[source] std::io::Error),
    /// `--backend fanotify` was asked for and cannot be used.
    #[error("cannot use fanotify: {0}")]
    Fanotify(String),
    /// A thread or the wake socket could not be made.
    #[error("cannot start the watcher: {0}")]
    Io(#[from] std::io::Error),
}

/// A running watcher. Dropping it stops its threads.
#[derive(Debug)]
pub struct Watcher {
    cmd: Sender<core::Cmd>,
    status: Arc<Mutex<WatchStatus>>,
    stop: Arc<AtomicBool>,
    wake: UnixStream,
    threads: Vec<JoinHandle<()>>,
}

impl Watcher {
    /// Watches `config.roots` and returns the watcher and its events. The initial walk (a watch
    /// on every directory) is done before this returns, so changes made afterwards are seen;
    /// what already exists is not reported.
    pub fn start(config: WatchConfig) -> Result<(Watcher, Receiver<WatchEvent>), WatchError> {
        if let Some(r) = config.roots.iter().find(|r| !r.is_absolute()) {
            return Err(WatchError::RelativeRoot(r.clone()));
        }
        let (fan, note) = match config.backend {
            BackendChoice::Inotify => (None, String::new()),
            BackendChoice::Fanotify => (
                Some(
                    fanotify::open(&config.roots, config.report_modify)
                        .map_err(WatchError::Fanotify)?,
                ),
                String::new(),
            ),
            BackendChoice::Auto => match fanotify::open(&config.roots, config.report_modify) {
                Ok(f) => (Some(f), String::new()),
                Err(why) => {
                    tracing::info!("watch: using inotify: {why}");
                    (None, why)
                }
            },
        };
        let ino = Arc::new(backend::Inotify::new().map_err(WatchError::Init)?);
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        let stop = Arc::new(AtomicBool::new(false));
        let bound = Arc::new(reader::Bound {
            queued: 0.into(),
            limit: config.queue_bound.max(1),
            dropped: 0.into(),
        });
        let (raw_tx, raw_rx) = crossbeam_channel::unbounded();
        let (fan_tx, fan_rx) = crossbeam_channel::unbounded();
        let (out_tx, out_rx) = crossbeam_channel::bounded(config.queue_bound.max(1));
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let status = Arc::new(Mutex::new(WatchStatus::default()));
        let mut core = core::Core::new(
            config,
            ino.clone(),
            out_tx,
            status.clone(),
            stop.clone(),
            bound.clone(),
        );
        core.backend_note = note;
        let fan_queue = fan.as_ref().map(|f| f.fan.clone());
        core.fan = fan;
        core.start_roots();
        let (reader, raw_rx, fan_rx) = match fan_queue {
            Some(q) => {
                drop(raw_tx);
                let r = reader::spawn(q, wake_rx, stop.clone(), fan_tx, bound)?;
                (r, crossbeam_channel::never(), fan_rx)
            }
            None => {
                drop(fan_tx);
                let r = reader::spawn(ino, wake_rx, stop.clone(), raw_tx, bound)?;
                (r, raw_rx, crossbeam_channel::never())
            }
        };
        let core = std::thread::Builder::new()
            .name("firehose-watch".into())
            .spawn(move || core.run(raw_rx, fan_rx, cmd_rx))?;
        let watcher = Watcher {
            cmd: cmd_tx,
            status,
            stop,
            wake: wake_tx,
            threads: vec![reader, core],
        };
        Ok((watcher, out_rx))
    }

    /// Replaces the roots (for a filter reload): new ones are walked and watched (their
    /// contents are not reported), removed ones unwatched. Returns at once; the core applies
    /// it in order with the events, and [`Watcher::status`] shows it once applied.
    pub fn set_roots(&self, roots: Vec<PathBuf>) -> Result<(), WatchError> {
        if let Some(r) = roots.iter().find(|r| !r.is_absolute()) {
            return Err(WatchError::RelativeRoot(r.clone()));
        }
        let _ = self.cmd.send(core::Cmd::SetRoots(roots));
        Ok(())
    }

    /// The watcher's state as of the last batch it handled.
    pub fn status(&self) -> WatchStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        use std::io::Write;
        self.stop.store(true, Ordering::Release);
        let _ = (&self.wake).write(&[1]);
        let _ = self.cmd.send(core::Cmd::Stop);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
