//! Roots: watched at start and on [`Watcher::set_roots`](super::Watcher::set_roots), lost when
//! deleted, moved away or unmounted (the root's own `IN_DELETE_SELF`, `IN_MOVE_SELF`,
//! `IN_UNMOUNT`, or its watch vanishing), and looked for every
//! [`WatchConfig::root_poll`](super::WatchConfig::root_poll) until they come back. The other
//! roots carry on meanwhile.

use super::core::Core;
use super::{OverflowReason, WatchEvent};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One root.
#[derive(Debug)]
pub(crate) struct Root {
    /// The directory.
    pub(crate) path: PathBuf,
    /// Whether it is gone right now.
    pub(crate) gone: bool,
    /// Device and inode of the directory watched (following a symlink, as the watch does).
    pub(crate) id: Option<(u64, u64)>,
}

/// Device and inode of the directory at `path`, following symlinks.
pub(crate) fn dir_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

impl Core {
    /// Watches the configured roots (at start: nothing is reported but roots that are
    /// missing).
    pub(crate) fn start_roots(&mut self) {
        let paths: Vec<PathBuf> = self.cfg.roots.clone();
        self.roots.clear();
        self.add_roots(paths);
        self.open_index();
        self.publish_status();
    }

    fn add_roots(&mut self, paths: Vec<PathBuf>) {
        for path in paths {
            if self.roots.iter().any(|r| r.path == path) {
                continue;
            }
            self.roots.push(Root {
                path: path.clone(),
                gone: false,
                id: dir_identity(&path),
            });
            if path.is_dir() {
                self.watch_tree(&path, false);
                self.index_silently(&path);
            } else {
                self.mark_gone(&path);
            }
        }
    }

    /// Whether `path` is a root.
    pub(crate) fn is_root(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| r.path == path)
    }

    /// The root at `path` is gone: drop the watches below it, report it, poll for it.
    pub(crate) fn mark_gone(&mut self, path: &Path) {
        let Some(root) = self.roots.iter_mut().find(|r| r.path == path) else {
            return;
        };
        if root.gone {
            return;
        }
        root.gone = true;
        self.forget_subtree(path, true);
        tracing::warn!("watch: root {} is gone; looking for it", path.display());
        self.emit(WatchEvent::RootGone(path.to_path_buf()));
        self.next_root_poll = Instant::now() + self.cfg.root_poll;
    }

    /// Looks for gone roots; a root that is back is watched, reported, and its contents
    /// reported as Creates.
    pub(crate) fn poll_roots(&mut self) {
        if Instant::now() < self.next_root_poll {
            return;
        }
        self.next_root_poll = Instant::now() + self.cfg.root_poll;
        let back: Vec<PathBuf> = self
            .roots
            .iter()
            .filter(|r| r.gone && r.path.is_dir())
            .map(|r| r.path.clone())
            .collect();
        for path in back {
            if let Some(r) = self.roots.iter_mut().find(|r| r.path == path) {
                r.gone = false;
                r.id = dir_identity(&path);
            }
            tracing::info!("watch: root {} is back", path.display());
            self.emit(WatchEvent::RootBack(path.clone()));
            self.watch_tree(&path, true);
        }
    }

    /// Every [`WatchConfig::identity_check`](super::WatchConfig::identity_check): a root whose path now leads to another directory (mounted
    /// over, symlink re-pointed) is watched afresh; an overflow says what changed in
    /// between is unknown, and what lies there now is reported as created.
    pub(crate) fn check_root_identities(&mut self) {
        if Instant::now() < self.next_identity_check {
            return;
        }
        self.next_identity_check = Instant::now() + self.cfg.identity_check;
        let replaced: Vec<(PathBuf, Option<(u64, u64)>)> = self
            .roots
            .iter()
            .filter(|r| !r.gone)
            .filter_map(|r| {
                let now = dir_identity(&r.path)?;
                (r.id != Some(now)).then(|| (r.path.clone(), Some(now)))
            })
            .collect();
        for (path, id) in replaced {
            tracing::warn!(
                "watch: root {} now leads to another directory (a mount over it, or a symlink \
                 pointed elsewhere); watching and reporting what is there now",
                path.display()
            );
            self.forget_subtree(&path, true);
            if let Some(r) = self.roots.iter_mut().find(|r| r.path == path) {
                r.id = id;
            }
            self.emit(WatchEvent::Overflow {
                root: Some(path.clone()),
                reason: OverflowReason::RootReplaced,
            });
            self.watch_tree(&path, true);
        }
    }

    /// Replaces the roots: removed ones are unwatched (except what lies under a kept root),
    /// added ones walked.
    pub(crate) fn set_roots(&mut self, paths: Vec<PathBuf>) {
        let removed: Vec<PathBuf> = self
            .roots
            .iter()
            .filter(|r| !paths.contains(&r.path))
            .map(|r| r.path.clone())
            .collect();
        self.roots.retain(|r| paths.contains(&r.path));
        for gone in removed {
            let covered = |p: &Path| paths.iter().any(|k| p.starts_with(k));
            let drop: Vec<(PathBuf, i32)> = self
                .tree
                .paths()
                .filter(|(p, _)| p.starts_with(&gone) && !covered(p))
                .map(|(p, wd)| (p.to_path_buf(), wd))
                .collect();
            for (p, wd) in drop {
                let _ = self.ino.rm_watch(wd);
                self.tree.remove_wd(wd);
                self.dedupe.forget_subtree(&p);
            }
            self.unwatched
                .set
                .retain(|p| !p.starts_with(&gone) || covered(p));
            self.index_root_removed(&gone);
        }
        self.add_roots(paths);
        self.publish_status();
    }
}
