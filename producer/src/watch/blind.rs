//! Blind periods: the tree index kept current from the events, and a reconcile after an
//! overflow and at start after a stop or a crash, reported between two
//! [`WatchEvent::Blind`]s as events marked `reconciled` (see [`crate::index`]).
//!
//! Repeated overflows back off: a reconcile waits at least
//! [`WatchConfig::reconcile_backoff`](super::WatchConfig::reconcile_backoff) after the last
//! one, doubling while overflows keep coming (up to a minute), so an overflow storm cannot
//! become a recrawl storm. Overflows while one is pending join it: one blind range, from the
//! first.
//!
//! The reconcile runs on the watcher's core thread; kernel events wait in the kernel queue
//! meanwhile (an overflow then joins the next blind range).

use super::backend::now_ns;
use super::core::Core;
use super::{BlindReason, EventKind, RawEvent, WatchEvent};
use crate::index::journal::{rename_path, Ended, Journal};
use crate::index::reconcile::{reconcile, Change, Options};
use crate::index::{Meta, TreeIndex};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest wait between reconciles under an overflow storm.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Timestamps are coarse: a directory recorded less than this before a blind period began
/// is listed even if its times did not move.
const TICK_MARGIN_NS: i64 = 1_000_000_000;

/// The index and what is pending on it.
#[derive(Debug)]
pub(crate) struct Indexed {
    ix: TreeIndex,
    journal: Journal,
    /// An overflow's blind range waiting for its reconcile: since when.
    pub(crate) pending: Option<u64>,
    /// When the next reconcile may run.
    pub(crate) next_ok: Instant,
    backoff: Duration,
    last: Option<Instant>,
}

impl Core {
    /// At start, after the roots are watched: reads the index and reconciles each root it
    /// knows (a stop or crash blind range); roots it does not know are indexed silently.
    pub(crate) fn open_index(&mut self) {
        let Some(path) = self.cfg.index_path.clone() else {
            return;
        };
        let (journal, ix, ended) = match Journal::open(&path) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("{e}; starting with an empty index");
                match Journal::open(&path) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!("{e}; no tree index, blind periods are not reconciled");
                        return;
                    }
                }
            }
        };
        self.ignore.insert(path.with_extension("tmp"));
        self.ignore.insert(path.clone());
        self.index = Some(Indexed {
            ix,
            journal,
            pending: None,
            next_ok: Instant::now(),
            backoff: self.cfg.reconcile_backoff,
            last: None,
        });
        let configured: Vec<PathBuf> = self.roots.iter().map(|r| r.path.clone()).collect();
        if let Some(x) = &mut self.index {
            for old in x.ix.root_paths() {
                if !configured.contains(&old) {
                    x.ix.remove_root(&old);
                    x.journal.drop_root(&old);
                }
            }
        }
        let (reason, since) = match ended {
            Ended::Fresh => (None, 0),
            Ended::Stopped(t) => (Some(BlindReason::Stopped), t),
            Ended::Crashed(t) => (Some(BlindReason::Crashed), t),
        };
        for root in configured {
            let known = self
                .index
                .as_ref()
                .is_some_and(|x| x.ix.root(&root).is_some());
            match reason {
                Some(r) if known => self.reconcile_root(Some(&root), r, since),
                _ => self.index_silently(&root),
            }
        }
        self.flush_index();
    }

    /// Indexes a root that the index does not know (a new root): nothing is reported.
    pub(crate) fn index_silently(&mut self, root: &Path) {
        let ignore = self.ignore.clone();
        let Some(x) = &mut self.index else { return };
        let opts = Options {
            ignore: &ignore,
            trusted_before_ns: i64::MIN,
        };
        reconcile(&mut x.ix, root, &opts, &mut |_| {});
        save(x);
    }

    /// Reconciles `root` (all roots if `None`) and reports it as one blind range.
    fn reconcile_root(&mut self, root: Option<&Path>, reason: BlindReason, since_ns: u64) {
        let roots: Vec<PathBuf> = match root {
            Some(r) => vec![r.to_path_buf()],
            None => self
                .roots
                .iter()
                .filter(|r| !r.gone)
                .map(|r| r.path.clone())
                .collect(),
        };
        let ignore = self.ignore.clone();
        let Some(x) = &mut self.index else { return };
        let started = Instant::now();
        let opts = Options {
            ignore: &ignore,
            trusted_before_ns: (since_ns as i64).saturating_sub(TICK_MARGIN_NS),
        };
        let mut changes = Vec::new();
        let mut listed = 0;
        for r in &roots {
            let o = reconcile(&mut x.ix, r, &opts, &mut |c| changes.push(c));
            listed += o.listed;
        }
        save(x);
        tracing::info!(
            "reconciled {} after {} ({} changes, {listed} directories listed, {:?})",
            root.map_or_else(|| "every root".into(), |r| r.display().to_string()),
            reason.name(),
            changes.len(),
            started.elapsed()
        );
        let root = root.map(Path::to_path_buf);
        self.emit(WatchEvent::Blind {
            root: root.clone(),
            start: true,
            reason,
            since_ns,
        });
        let t = now_ns();
        for c in changes {
            let (kind, path, path_to, is_dir, size) = match c {
                Change::Create { path, meta } => {
                    let size = (!meta.is_dir()).then_some(meta.size);
                    (EventKind::Create, path, None, meta.is_dir(), size)
                }
                Change::Remove { path, is_dir } => (EventKind::Remove, path, None, is_dir, None),
                Change::Rename { from, to, is_dir } => {
                    (EventKind::Rename, from, Some(to), is_dir, None)
                }
                Change::Modify { path, meta } => {
                    (EventKind::Modify, path, None, false, Some(meta.size))
                }
                Change::Metadata { path, meta } => {
                    (EventKind::Metadata, path, None, meta.is_dir(), None)
                }
            };
            self.emit(WatchEvent::Event(RawEvent {
                time_ns: t,
                kind,
                path,
                path_to,
                size,
                is_dir,
                reconciled: true,
            }));
        }
        self.emit(WatchEvent::Blind {
            root,
            start: false,
            reason,
            since_ns,
        });
    }

    /// Events were lost: a reconcile of every root is due (after the backoff).
    pub(crate) fn blind_overflow(&mut self, time_ns: u64) {
        if let Some(x) = &mut self.index {
            x.pending.get_or_insert(time_ns);
        }
    }

    /// When the pending reconcile may run, if one is pending.
    pub(crate) fn reconcile_due_at(&self) -> Option<Instant> {
        self.index
            .as_ref()
            .filter(|x| x.pending.is_some())
            .map(|x| x.next_ok)
    }

    /// Runs the pending reconcile if its backoff has passed (after the re-walk).
    pub(crate) fn reconcile_if_due(&mut self) {
        let now = Instant::now();
        let Some(x) = &mut self.index else { return };
        let Some(since) = x.pending else { return };
        if now < x.next_ok {
            return;
        }
        x.pending = None;
        let storm = x.last.is_some_and(|l| now.duration_since(l) < MAX_BACKOFF);
        x.backoff = if storm {
            (x.backoff * 2).min(MAX_BACKOFF)
        } else {
            self.cfg.reconcile_backoff
        };
        self.reconcile_root(None, BlindReason::Overflow, since);
        if let Some(x) = &mut self.index {
            x.last = Some(Instant::now());
            x.next_ok = Instant::now() + x.backoff;
        }
    }

    /// Applies an event the kernel reported to the index. Returns false for an event that
    /// changes nothing the index knows (a create of an entry it holds with the same inode,
    /// a remove or rename of one it does not hold): a late echo of what a reconcile already
    /// reported (the kernel queued it while the walk ran), dropped so that replaying
    /// history stays exact.
    pub(crate) fn index_event(&mut self, ev: &WatchEvent) -> bool {
        let Some(x) = &mut self.index else {
            return true;
        };
        match ev {
            WatchEvent::Event(raw) if !raw.reconciled => return apply(x, raw),
            WatchEvent::RootGone(root) => {
                x.ix.remove_root(root);
                x.journal.drop_root(root);
            }
            WatchEvent::RootBack(root) => {
                if let Some(m) = Meta::at(root) {
                    x.ix.add_root(root, untimed(m));
                    x.journal.root(root, &untimed(m));
                }
            }
            _ => {}
        }
        true
    }

    /// What history never got of an event's path: the directories above it, and the entry
    /// itself if the event is not its create (their creates were lost in an overflow, yet a
    /// later event came through: fanotify sees every directory, watched or not), outermost
    /// first, with whether each is a directory. They are reported as created before the
    /// event, so that a replay has the entry, and a parent to put it in.
    pub(crate) fn unreported_ancestors(&self, raw: &RawEvent) -> Vec<(PathBuf, bool)> {
        let Some(x) = &self.index else {
            return Vec::new();
        };
        if raw.reconciled || matches!(raw.kind, EventKind::Remove | EventKind::Rename) {
            return Vec::new();
        }
        let mut missing = Vec::new();
        let mut at = if raw.kind == EventKind::Create {
            raw.path.parent()
        } else {
            Some(raw.path.as_path())
        };
        while let Some(dir) = at {
            if x.ix.lookup(dir).is_some() || x.ix.root(dir).is_some() {
                break;
            }
            if !self
                .roots
                .iter()
                .any(|r| dir.starts_with(&r.path) && dir != r.path)
            {
                return Vec::new(); // not below a root: nothing to report
            }
            if std::fs::symlink_metadata(dir).is_err() {
                // Gone already (a late echo of something deleted): creating it in history
                // would leave an entry the disk does not have.
                return Vec::new();
            }
            missing.push((dir.to_path_buf(), dir != raw.path || raw.is_dir));
            at = dir.parent();
        }
        missing.reverse();
        missing
    }

    /// A root was added or removed by a reload.
    pub(crate) fn index_root_removed(&mut self, root: &Path) {
        if let Some(x) = &mut self.index {
            x.ix.remove_root(root);
            x.journal.drop_root(root);
        }
    }

    /// Writes the journal out (the watcher is idle).
    pub(crate) fn flush_index(&mut self) {
        if let Some(x) = &mut self.index {
            x.journal.flush(&x.ix, now_ns());
        }
    }

    /// A clean stop.
    pub(crate) fn close_index(&mut self) {
        if let Some(x) = &mut self.index {
            x.journal.close(&x.ix, now_ns());
        }
    }
}

/// Writes the index afresh after a walk changed it (a walk's changes are not journaled one
/// by one).
fn save(x: &mut Indexed) {
    if let Err(e) = x.journal.snapshot(&x.ix, Some(now_ns())) {
        tracing::error!(
            "cannot save the tree index: {e}; after a stop or crash the next start reports \
             the blind period from the last save"
        );
    }
}

/// A directory's times as the index keeps them from events: unknown, so that the next
/// reconcile lists it (an event's `lstat` may already see a change whose event was lost).
fn untimed(mut m: Meta) -> Meta {
    if m.is_dir() {
        m.mtime_ns = 0;
        m.ctime_ns = 0;
    }
    m
}

/// Applies `raw` to the index; false if it was an echo (see [`Core::index_event`]).
fn apply(x: &mut Indexed, raw: &RawEvent) -> bool {
    match raw.kind {
        EventKind::Remove => {
            let Some(id) = x.ix.lookup(&raw.path) else {
                return false;
            };
            x.ix.remove(id);
            x.journal.remove(&raw.path);
        }
        EventKind::Rename => {
            let Some(to) = &raw.path_to else { return true };
            if x.ix.lookup(&raw.path).is_none() {
                return false;
            }
            rename_path(&mut x.ix, &raw.path, to);
            x.journal.rename(&raw.path, to);
        }
        kind => {
            // An entry gone again before it could be looked at is still held (as not
            // known), so that its remove is not taken for an echo.
            let m = Meta::at(&raw.path).map_or_else(|| Meta::unknown(raw.is_dir), untimed);
            if kind == EventKind::Create && m.ino != 0 {
                if let Some(id) = x.ix.lookup(&raw.path) {
                    let held = x.ix.meta(id);
                    if held.ino == m.ino && held.btime_ns == m.btime_ns {
                        return false;
                    }
                }
            }
            if x.ix.put(&raw.path, m).is_some() {
                x.journal.put(&raw.path, &m);
            }
        }
    }
    true
}
