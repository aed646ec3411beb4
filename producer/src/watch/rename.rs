//! Renames: the kernel reports one as `IN_MOVED_FROM` in the old directory and `IN_MOVED_TO`
//! in the new one, with the same cookie, back to back. A From is held until the next event:
//! if that is its To, the pair is one [`EventKind::Rename`]; otherwise the entry left the
//! tree (a Remove). A To with no held From is a move into the tree (a Create, and a scan of
//! what arrived). When the queue is empty after a From, the core waits [`PAIR_WAIT`] for the
//! To before deciding.

use super::backend::SysEvent;
use super::core::Core;
use super::{EventKind, WatchEvent};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a held From waits for its To when nothing else arrives.
pub(crate) const PAIR_WAIT: Duration = Duration::from_millis(10);

/// The first half of a rename.
#[derive(Debug)]
pub(crate) struct PendingMove {
    /// Pairs it with its `IN_MOVED_TO`.
    pub(crate) cookie: u32,
    /// The old path.
    pub(crate) path: PathBuf,
    /// Whether a directory moved.
    pub(crate) is_dir: bool,
    /// When the kernel event was read.
    pub(crate) time_ns: u64,
    /// When the core took it up.
    pub(crate) held_at: Instant,
}

impl Core {
    /// Holds a From (after settling any older one).
    pub(crate) fn hold_move(&mut self, ev: &SysEvent, path: PathBuf) {
        self.settle_move();
        self.pending = Some(PendingMove {
            cookie: ev.cookie,
            path,
            is_dir: ev.has(libc::IN_ISDIR),
            time_ns: ev.time_ns,
            held_at: Instant::now(),
        });
    }

    /// Takes the held From if `cookie` is its To.
    pub(crate) fn take_move(&mut self, cookie: u32) -> Option<PendingMove> {
        self.pending.take_if(|p| p.cookie == cookie)
    }

    /// The held From found no To: the entry left the tree. Its watches (a directory moved out
    /// keeps them in the kernel) are removed.
    pub(crate) fn settle_move(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if p.is_dir {
            self.forget_subtree(&p.path, true);
        }
        self.emit_raw(EventKind::Remove, p.path, None, p.is_dir, None, p.time_ns);
    }

    /// Settles a held From that waited [`PAIR_WAIT`] with nothing else arriving.
    pub(crate) fn settle_move_if_stale(&mut self) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.held_at.elapsed() >= PAIR_WAIT)
        {
            self.settle_move();
        }
    }

    /// A From and its To: one rename (or, when one side is an ignored path or the new name was
    /// already reported by a scan, what is left of it).
    pub(crate) fn renamed(&mut self, from: PendingMove, to: PathBuf, ev: &SysEvent) {
        let is_dir = from.is_dir || ev.has(libc::IN_ISDIR);
        if is_dir {
            self.tree.rename_subtree(&from.path, &to);
            self.unwatched.rename_subtree(&from.path, &to);
            self.dedupe.rename_subtree(&from.path, &to);
        }
        let scanned = to
            .parent()
            .zip(to.file_name())
            .is_some_and(|(d, n)| self.dedupe.take_echo(d, n));
        // Directories reported as new but never scanned (renamed before their watch or
        // listing): scanned now, under their new names, once the rename is reported.
        let unscanned = if is_dir {
            self.unscanned.take_renamed(&from.path, &to)
        } else {
            Vec::new()
        };
        let from_ignored = self.ignore.contains(&from.path);
        let to_ignored = self.ignore.contains(&to);
        let t = ev.time_ns;
        match (from_ignored, to_ignored || scanned) {
            (true, true) => {}
            (true, false) => self.emit_raw(EventKind::Create, to, None, is_dir, None, t),
            (false, true) => self.emit_raw(EventKind::Remove, from.path, None, is_dir, None, t),
            (false, false) => self.emit(WatchEvent::Event(super::RawEvent {
                time_ns: t,
                kind: EventKind::Rename,
                path: from.path,
                path_to: Some(to),
                size: None,
                is_dir,
                reconciled: false,
            })),
        }
        if !to_ignored {
            for dir in unscanned {
                self.watch_tree(&dir, true);
            }
        }
    }
}
