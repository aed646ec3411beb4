//! The core thread: turns kernel events into [`WatchEvent`]s, one at a time, in kernel order.
//! It owns every piece of state (descriptor map, held rename, scan memory, roots, unwatched
//! set), so none of it is shared or locked; `status` gets a copy after each batch.

use super::backend::{now_ns, Inotify, SysEvent, DIR_MASK, MODIFY_MASK, ROOT_MASK};
use super::fanotify::sys::FanEvent;
use super::limits::Unwatched;
use super::reader::{Bound, Raw};
use super::rename::{PendingMove, PAIR_WAIT};
use super::roots::Root;
use super::scan::{Dedupe, Unscanned};
use super::tree::Tree;
use super::{
    EventKind, OverflowReason, RawEvent, WatchConfig, WatchEvent, WatchStatus, UNWATCHED_LISTED,
};
use crossbeam_channel::{select, Receiver, SendTimeoutError, Sender};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests from [`Watcher`](super::Watcher).
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Replace the roots.
    SetRoots(Vec<PathBuf>),
    /// Stop the thread.
    Stop,
}

/// Overflows closer together than this are one episode: one event, one log line.
const EPISODE_NS: u64 = 1_000_000_000;

/// The core thread's state.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) cfg: WatchConfig,
    pub(crate) ino: Arc<Inotify>,
    out: Sender<WatchEvent>,
    status: Arc<Mutex<WatchStatus>>,
    stop: Arc<AtomicBool>,
    bound: Arc<Bound>,
    pub(crate) tree: Tree,
    pub(crate) roots: Vec<Root>,
    pub(crate) unwatched: Unwatched,
    pub(crate) dedupe: Dedupe,
    pub(crate) unscanned: Unscanned,
    pub(crate) pending: Option<PendingMove>,
    pub(crate) ignore: HashSet<PathBuf>,
    pub(crate) next_root_poll: Instant,
    /// When the roots' identities (device and inode) are checked next.
    pub(crate) next_identity_check: Instant,
    overflows: u64,
    last_overflow_ns: Option<u64>,
    need_rewalk: bool,
    pub(crate) last_modify: Option<PathBuf>,
    alive: bool,
    /// The fanotify backend's state when it is in use (see `fanotify/`): then no inotify
    /// watch is ever added.
    pub(crate) fan: Option<super::fanotify::FanState>,
    /// With inotify: why (fanotify was not asked for, or why it could not be used).
    pub(crate) backend_note: String,
    /// The tree index, when [`WatchConfig::index_path`] is set (see `blind.rs`).
    pub(crate) index: Option<super::blind::Indexed>,
}

impl Core {
    /// The core for `cfg`; nothing is watched until [`Core::start_roots`].
    pub(crate) fn new(
        cfg: WatchConfig,
        ino: Arc<Inotify>,
        out: Sender<WatchEvent>,
        status: Arc<Mutex<WatchStatus>>,
        stop: Arc<AtomicBool>,
        bound: Arc<Bound>,
    ) -> Self {
        let window = cfg.dedupe_window;
        Core {
            ignore: cfg.ignore.iter().cloned().collect(),
            next_root_poll: Instant::now() + cfg.root_poll,
            next_identity_check: Instant::now() + cfg.identity_check,
            cfg,
            ino,
            out,
            status,
            stop,
            bound,
            tree: Tree::default(),
            roots: Vec::new(),
            unwatched: Unwatched::default(),
            dedupe: Dedupe::new(window),
            unscanned: Unscanned::default(),
            pending: None,
            overflows: 0,
            last_overflow_ns: None,
            need_rewalk: false,
            last_modify: None,
            alive: true,
            fan: None,
            backend_note: String::new(),
            index: None,
        }
    }

    /// Runs until stopped or until nobody listens; then saves the index (a clean stop).
    /// Events come from `raw` (inotify) or `fan` (fanotify): the backend not in use is
    /// `crossbeam_channel::never()`.
    pub(crate) fn run(
        mut self,
        raw: Receiver<Raw<SysEvent>>,
        fan: Receiver<Raw<FanEvent>>,
        cmd: Receiver<Cmd>,
    ) {
        self.run_until_stopped(raw, fan, cmd);
        self.close_index();
    }

    fn run_until_stopped(
        &mut self,
        raw: Receiver<Raw<SysEvent>>,
        fan: Receiver<Raw<FanEvent>>,
        cmd: Receiver<Cmd>,
    ) {
        while self.alive && !self.stop.load(Ordering::Acquire) {
            let timeout = self.timeout();
            select! {
                recv(raw) -> m => match m {
                    Ok(m) => self.on_raw(m, Self::on_event),
                    Err(_) => return,
                },
                recv(fan) -> m => match m {
                    Ok(m) => self.on_raw(m, Self::on_fan_event),
                    Err(_) => return,
                },
                recv(cmd) -> c => match c {
                    Ok(Cmd::SetRoots(r)) => {
                        self.settle_move();
                        self.set_roots(r);
                    }
                    Ok(Cmd::Stop) | Err(_) => return,
                },
                default(timeout) => {}
            }
            if raw.is_empty() && fan.is_empty() {
                self.idle();
            }
        }
    }

    /// How long to wait for the next message.
    fn timeout(&self) -> Duration {
        if self.pending.is_some() {
            PAIR_WAIT
        } else if self.need_rewalk {
            Duration::ZERO
        } else {
            // Whichever timer is due first: no polling at rest.
            let mut due = self.next_identity_check;
            if self.roots.iter().any(|r| r.gone) {
                due = due.min(self.next_root_poll);
            }
            if !self.unwatched.set.is_empty() {
                let retry = self.unwatched.next_retry;
                due = due.min(retry.unwrap_or_else(Instant::now));
            }
            if let Some(expiry) = self.dedupe.next_expiry() {
                due = due.min(expiry);
            }
            if let Some(at) = self.reconcile_due_at() {
                due = due.min(at);
            }
            due.saturating_duration_since(Instant::now())
        }
    }

    /// The queue is empty: settle what waits on time, then publish the status.
    fn idle(&mut self) {
        self.settle_move_if_stale();
        if self.need_rewalk && self.pending.is_none() {
            self.need_rewalk = false;
            self.rewalk();
        }
        if !self.need_rewalk && self.pending.is_none() {
            self.reconcile_if_due();
        }
        self.dedupe.expire(Instant::now());
        self.poll_roots();
        self.check_root_identities();
        self.retry_unwatched();
        self.flush_index();
        self.publish_status();
    }

    fn on_raw<E>(&mut self, m: Raw<E>, mut on_event: impl FnMut(&mut Self, &E)) {
        match m {
            Raw::Events(batch) => {
                self.bound.queued.fetch_sub(batch.len(), Ordering::AcqRel);
                for ev in &batch {
                    on_event(self, ev);
                    if !self.alive {
                        return;
                    }
                }
            }
            Raw::DropStart { time_ns } => {
                if let Some(fan) = &mut self.fan {
                    fan.paths.clear(); // a dropped rename may have left cached paths stale
                }
                self.settle_move();
                self.overflow(OverflowReason::WatcherQueue, time_ns);
            }
            Raw::DropEnd { dropped } => {
                tracing::debug!("watch: queue has room again after dropping {dropped} events");
                self.need_rewalk = true;
            }
        }
    }

    /// One kernel event.
    fn on_event(&mut self, ev: &SysEvent) {
        if ev.has(libc::IN_Q_OVERFLOW) {
            self.settle_move();
            self.overflow(OverflowReason::KernelQueue, ev.time_ns);
            return;
        }
        if ev.has(libc::IN_IGNORED) {
            self.ignored(ev.wd);
            return;
        }
        self.dedupe.expire(ev.read_at);
        // Anything but the To of a held From settles it first: a directory moved out loses
        // its watches before any later event of it is looked up.
        let pairs = ev.has(libc::IN_MOVED_TO)
            && self.pending.as_ref().is_some_and(|p| p.cookie == ev.cookie);
        if !pairs {
            self.settle_move();
        }
        let Some(dir) = self.tree.path(ev.wd).map(Path::to_path_buf) else {
            return; // a descriptor we already forgot
        };
        let Some(name) = &ev.name else {
            self.self_event(ev, dir);
            return;
        };
        let path = dir.join(name);
        if pairs {
            if let Some(from) = self.take_move(ev.cookie) {
                self.renamed(from, path, ev);
                return;
            }
        }
        let is_dir = ev.has(libc::IN_ISDIR);
        let t = ev.time_ns;
        if ev.has(libc::IN_CREATE) || ev.has(libc::IN_MOVED_TO) {
            if self.dedupe.take_echo(&dir, name) {
                return; // the scan of `dir` reported this very entry already
            }
            self.emit_raw(EventKind::Create, path.clone(), None, is_dir, None, t);
            if is_dir && !self.ignore.contains(&path) {
                self.watch_tree(&path, true);
            }
        } else if ev.has(libc::IN_MOVED_FROM) {
            self.dedupe.take(&dir, name);
            self.hold_move(ev, path);
        } else if ev.has(libc::IN_DELETE) {
            self.dedupe.take(&dir, name);
            if is_dir {
                self.forget_subtree(&path, false);
            }
            self.emit_raw(EventKind::Remove, path, None, is_dir, None, t);
        } else if ev.has(libc::IN_CLOSE_WRITE) {
            let size = std::fs::metadata(&path).ok().map(|m| m.len());
            self.emit_raw(EventKind::CloseWrite, path, None, is_dir, size, t);
        } else if ev.has(libc::IN_ATTRIB) {
            self.emit_raw(EventKind::Metadata, path, None, is_dir, None, t);
        } else if ev.has(libc::IN_MODIFY) && self.last_modify.as_deref() != Some(path.as_path()) {
            // A run of writes to one path is one Modify.
            self.emit_raw(EventKind::Modify, path.clone(), None, is_dir, None, t);
            self.last_modify = Some(path);
        }
    }

    /// An event about a watched directory itself. For a root: its loss, or its attributes.
    /// For any other directory it repeats its parent's event for it and is dropped.
    fn self_event(&mut self, ev: &SysEvent, dir: PathBuf) {
        let root = self.is_root(&dir);
        if ev.has(libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) && root {
            self.mark_gone(&dir);
        } else if ev.has(libc::IN_UNMOUNT) {
            if root {
                self.mark_gone(&dir);
            } else {
                // The mount under it went away: what is there now is the directory beneath.
                self.forget_subtree(&dir, true);
                self.need_rewalk = true;
            }
        } else if ev.has(libc::IN_ATTRIB) && root {
            self.emit_raw(EventKind::Metadata, dir, None, true, None, ev.time_ns);
        }
    }

    /// The kernel dropped a watch (its directory was deleted, or we removed it).
    fn ignored(&mut self, wd: i32) {
        self.unwatched.freed = true;
        if let Some(path) = self.tree.remove_wd(wd) {
            if self.is_root(&path) && !path.is_dir() {
                self.mark_gone(&path);
            }
        }
    }

    /// Forgets the watches at or below `dir`; with `rm`, also removes them from the kernel
    /// (needed when the directories still exist elsewhere).
    pub(crate) fn forget_subtree(&mut self, dir: &Path, rm: bool) {
        for wd in self.tree.remove_subtree(dir) {
            if rm {
                let _ = self.ino.rm_watch(wd);
            }
        }
        self.unwatched.remove_subtree(dir);
        self.dedupe.forget_subtree(dir);
        self.unscanned.forget_subtree(dir);
    }

    /// The watcher lost track of what it should have scanned: an overflow, then a re-walk.
    pub(crate) fn lost_track(&mut self) {
        self.overflow(OverflowReason::Untracked, now_ns());
    }

    /// Events were lost: count, report once per episode, and re-walk when the queue drains.
    pub(crate) fn overflow(&mut self, reason: OverflowReason, time_ns: u64) {
        self.overflows += 1;
        self.need_rewalk = true;
        self.blind_overflow(time_ns);
        let new_episode = self
            .last_overflow_ns
            .is_none_or(|t| time_ns.saturating_sub(t) > EPISODE_NS);
        self.last_overflow_ns = Some(time_ns);
        if new_episode {
            tracing::warn!(
                "watch: events lost ({reason:?} overflow); re-walking every root so no \
                 directory stays unwatched (the kernel queue holds \
                 fs.inotify.max_queued_events, the watcher's {} events)",
                self.bound.limit
            );
            self.emit(WatchEvent::Overflow { root: None, reason });
        }
    }

    /// After an overflow: forget watches of directories that no longer exist and put a watch
    /// on every directory that lacks one.
    fn rewalk(&mut self) {
        let stale: Vec<(PathBuf, i32)> = self
            .tree
            .paths()
            .filter(|(p, _)| !p.is_dir())
            .map(|(p, wd)| (p.to_path_buf(), wd))
            .collect();
        for (_, wd) in stale {
            let _ = self.ino.rm_watch(wd);
            self.tree.remove_wd(wd);
        }
        let roots: Vec<PathBuf> = self
            .roots
            .iter()
            .filter(|r| !r.gone)
            .map(|r| r.path.clone())
            .collect();
        for root in roots {
            if root.is_dir() {
                self.watch_tree(&root, false);
            } else {
                self.mark_gone(&root);
            }
        }
    }

    /// The watch mask for `dir`.
    pub(crate) fn mask_for(&self, dir: &Path) -> u32 {
        let mut mask = DIR_MASK;
        if self.is_root(dir) {
            // A root may be given through a symlink; follow it.
            mask = (mask & !libc::IN_DONT_FOLLOW) | ROOT_MASK;
        }
        if self.cfg.report_modify {
            mask |= MODIFY_MASK;
        }
        mask
    }

    /// Reports a change, unless it concerns an ignored path.
    pub(crate) fn emit_raw(
        &mut self,
        kind: EventKind,
        path: PathBuf,
        path_to: Option<PathBuf>,
        is_dir: bool,
        size: Option<u64>,
        time_ns: u64,
    ) {
        if self.ignore.contains(&path) {
            return;
        }
        if kind != EventKind::Modify {
            self.last_modify = None;
        }
        self.emit(WatchEvent::Event(RawEvent {
            time_ns,
            kind,
            path,
            path_to,
            size,
            is_dir,
            reconciled: false,
        }));
    }

    /// Hands an event to the consumer, waiting while its channel is full (the reader thread
    /// meanwhile drops what does not fit in its queue and says so).
    pub(crate) fn emit(&mut self, mut ev: WatchEvent) {
        if let WatchEvent::Event(raw) = &ev {
            for (path, is_dir) in self.unreported_ancestors(raw) {
                self.emit_raw(EventKind::Create, path, None, is_dir, None, raw.time_ns);
            }
        }
        if !self.index_event(&ev) {
            return;
        }
        while self.alive {
            match self.out.send_timeout(ev, Duration::from_millis(100)) {
                Ok(()) => return,
                Err(SendTimeoutError::Timeout(back)) => {
                    if self.stop.load(Ordering::Acquire) {
                        self.alive = false;
                        return;
                    }
                    ev = back;
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    self.alive = false;
                    return;
                }
            }
        }
    }

    /// Copies the state into the shared status.
    pub(crate) fn publish_status(&self) {
        let (backend, backend_detail) = self.backend_line();
        let s = WatchStatus {
            backend,
            backend_detail,
            path_cache: self
                .fan
                .as_ref()
                .map_or((0, 0), |f| (f.paths.hits, f.paths.misses)),
            roots: self.roots.iter().map(|r| r.path.clone()).collect(),
            watched_dirs: self.tree.len(),
            unwatched: self
                .unwatched
                .set
                .iter()
                .take(UNWATCHED_LISTED)
                .cloned()
                .collect(),
            unwatched_count: self.unwatched.set.len(),
            overflows: self.overflows,
            dropped_events: self.bound.dropped.load(Ordering::Relaxed),
            gone_roots: self
                .roots
                .iter()
                .filter(|r| r.gone)
                .map(|r| r.path.clone())
                .collect(),
        };
        *self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
    }
}
