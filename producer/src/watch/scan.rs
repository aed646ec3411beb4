//! Walking directories: putting a watch on each, and for new directories reporting what is
//! already inside, exactly once.
//!
//! The order is what makes it exact: the watch goes on first, then the directory is listed.
//! An entry created before the watch is seen by the listing only; one created after the
//! listing by its kernel event only; one created in between by both. So the listing's names
//! are remembered ([`Dedupe`]), and the first Create (or move-in) event for a remembered name
//! is dropped, as is any event for it once it is deleted or moved away (the memory of that
//! name ends). A name is remembered with its inode: a Create or rename onto a listed name is
//! an echo only if the entry there now is the one the scan saw (`mv x/t x/f` just after `x`
//! arrived replaces the listed `f`: that is news, a rename). The memory of a directory ends
//! [`WatchConfig::dedupe_window`] after its scan, measured on the monotonic clock against
//! when the reader read the event: an event read that much later than the scan cannot be
//! the late echo of something the scan saw.
//!
//! A directory reported as new whose scan could not run (it was renamed or deleted before
//! its watch or listing) is remembered in [`Unscanned`]: when a rename shows where it went,
//! it is scanned under its new name (tools fill a temporary directory and rename it at
//! once: cargo's `target/`, npm, atomic installs).
//!
//! [`WatchConfig::dedupe_window`]: super::WatchConfig::dedupe_window

use super::backend::now_ns;
use super::core::Core;
use super::EventKind;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most names remembered at once; beyond it the oldest directories are forgotten first.
const MAX_NAMES: usize = 1 << 20;

/// What the scans of new directories reported, for a short while.
#[derive(Debug)]
pub(crate) struct Dedupe {
    dirs: HashMap<PathBuf, Memo>,
    /// Directories in scan order, with the scan's expiry (entries may be stale).
    order: VecDeque<(PathBuf, Instant)>,
    names: usize,
    window: Duration,
}

#[derive(Debug)]
struct Memo {
    /// Name -> inode, as listed.
    names: HashMap<OsString, u64>,
    until: Instant,
}

/// The inode at `path` now (not following a symlink), if there is an entry.
pub(crate) fn inode_at(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

impl Dedupe {
    /// An empty memory whose entries live `window`.
    pub(crate) fn new(window: Duration) -> Self {
        Dedupe {
            dirs: HashMap::new(),
            order: VecDeque::new(),
            names: 0,
            window,
        }
    }

    /// Remembers that a scan of `dir`, finished now, reported `names` (with their inodes).
    pub(crate) fn remember(&mut self, dir: PathBuf, names: HashMap<OsString, u64>) {
        if names.is_empty() {
            return;
        }
        let until = Instant::now() + self.window;
        self.names += names.len();
        if let Some(old) = self.dirs.insert(dir.clone(), Memo { names, until }) {
            self.names -= old.names.len();
        }
        self.order.push_back((dir, until));
        while self.names > MAX_NAMES {
            let Some((d, until)) = self.order.pop_front() else {
                break;
            };
            self.drop_dir_if(&d, until);
        }
    }

    /// The inode the scan of `dir` listed for `name`, if it listed it and nothing has been
    /// seen of it since; the name is forgotten either way (the caller's event is its echo,
    /// or news).
    pub(crate) fn take(&mut self, dir: &Path, name: &OsStr) -> Option<u64> {
        let m = self.dirs.get_mut(dir)?;
        let ino = m.names.remove(name)?;
        self.names -= 1;
        if m.names.is_empty() {
            self.dirs.remove(dir);
        }
        Some(ino)
    }

    /// Whether an entry arriving at `dir/name` (created or renamed there) is the echo of
    /// what the scan listed: the scan listed that name, and the entry there now is the one
    /// it saw (or is gone again, in which case its removal follows). Forgets the name.
    pub(crate) fn take_echo(&mut self, dir: &Path, name: &OsStr) -> bool {
        let Some(listed) = self.take(dir, name) else {
            return false;
        };
        inode_at(&dir.join(name)).is_none_or(|now| now == listed)
    }

    /// Forgets every memory at or below `dir` (deleted or moved out).
    pub(crate) fn forget_subtree(&mut self, dir: &Path) {
        if self.dirs.is_empty() {
            return;
        }
        let names = &mut self.names;
        self.dirs.retain(|d, m| {
            let keep = !d.starts_with(dir);
            if !keep {
                *names -= m.names.len();
            }
            keep
        });
    }

    /// Moves the memories at or below `from` to `to`.
    pub(crate) fn rename_subtree(&mut self, from: &Path, to: &Path) {
        let moved: Vec<PathBuf> = self
            .dirs
            .keys()
            .filter(|d| d.starts_with(from))
            .cloned()
            .collect();
        for d in moved {
            if let Some(m) = self.dirs.remove(&d) {
                let new = super::tree::rebase(&d, from, to);
                self.order.push_back((new.clone(), m.until));
                self.dirs.insert(new, m);
            }
        }
    }

    /// Forgets the memories that ended before `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(_, until)) = self.order.front() {
            if until >= now {
                break;
            }
            if let Some((d, until)) = self.order.pop_front() {
                self.drop_dir_if(&d, until);
            }
        }
    }

    /// When the oldest memory ends, if any is held.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|&(_, until)| until)
    }

    /// Whether anything is remembered.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    fn drop_dir_if(&mut self, dir: &Path, until: Instant) {
        if self.dirs.get(dir).is_some_and(|m| m.until == until) {
            if let Some(m) = self.dirs.remove(dir) {
                self.names -= m.names.len();
            }
        }
    }
}

/// Directories reported as new whose scan could not run (renamed or deleted first). Bounded:
/// beyond [`MAX_UNSCANNED`] the set is cleared with a warning (an overflow then says the
/// view may differ).
#[derive(Debug, Default)]
pub(crate) struct Unscanned {
    dirs: HashSet<PathBuf>,
}

/// Most unscanned directories remembered.
pub(crate) const MAX_UNSCANNED: usize = 65_536;

impl Unscanned {
    /// Remembers `dir`; false if the set is full (the caller reports an overflow).
    pub(crate) fn insert(&mut self, dir: PathBuf) -> bool {
        if self.dirs.len() >= MAX_UNSCANNED {
            return false;
        }
        self.dirs.insert(dir);
        true
    }

    /// Forgets `dir` and everything below it.
    pub(crate) fn forget_subtree(&mut self, dir: &Path) {
        if !self.dirs.is_empty() {
            self.dirs.retain(|d| !d.starts_with(dir));
        }
    }

    /// Takes the unscanned directories at or below `from`, as they are named below `to`
    /// now that `from` was renamed to `to`.
    pub(crate) fn take_renamed(&mut self, from: &Path, to: &Path) -> Vec<PathBuf> {
        if self.dirs.is_empty() {
            return Vec::new();
        }
        let moved: Vec<PathBuf> = self
            .dirs
            .iter()
            .filter(|d| d.starts_with(from))
            .cloned()
            .collect();
        moved
            .into_iter()
            .map(|d| {
                self.dirs.remove(&d);
                super::tree::rebase(&d, from, to)
            })
            .collect()
    }
}

impl Core {
    /// Watches `top` and every directory below it. With `report`, `top` is new (created,
    /// moved in, a root that came back): every entry below it is reported as a Create, and
    /// directories that already had a watch are not entered again (their contents were
    /// reported by their own events). Without `report` (start, new roots, re-walks) nothing is
    /// reported and every directory is visited, to put back any missing watch.
    pub(crate) fn watch_tree(&mut self, top: &Path, report: bool) {
        if self.fan.is_some() {
            self.fan_tree(top, report);
            return;
        }
        let mut stack = vec![top.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let watched = match self.add_dir_watch(&dir) {
                Ok(true) => true,
                Ok(false) if report => continue,
                Ok(false) => true,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    self.watch_limit_hit(&dir);
                    false
                }
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        // Renamed or deleted before it could be watched: if a rename
                        // shows where it went, it is scanned there.
                        if report {
                            self.note_unscanned(dir);
                        }
                    } else {
                        self.cannot_watch(&dir, &e);
                    }
                    continue;
                }
            };
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    if report && e.kind() == std::io::ErrorKind::NotFound {
                        // Watched, then renamed away before the listing: drop the watch so
                        // the rename (still queued) finds it unscanned and scans it there.
                        self.forget_subtree(&dir, true);
                        self.note_unscanned(dir);
                    } else if e.kind() != std::io::ErrorKind::NotFound {
                        self.cannot_watch(&dir, &e);
                    }
                    continue;
                }
            };
            self.list_dir(dir, entries, report, watched, &mut stack);
        }
    }

    /// Goes through one listing of `dir`: with `report`, each entry is reported as created
    /// (with its size if it is a file) and, if `dir` is watched (`remember`), its name and
    /// inode are remembered against the late kernel events for it; subdirectories go onto
    /// `subdirs`. Ignored paths are skipped.
    pub(crate) fn list_dir(
        &mut self,
        dir: PathBuf,
        entries: std::fs::ReadDir,
        report: bool,
        remember: bool,
        subdirs: &mut Vec<PathBuf>,
    ) {
        let mut names = HashMap::new();
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if self.ignore.contains(&path) {
                continue;
            }
            if report {
                let size = if ft.is_file() {
                    entry.metadata().ok().map(|m| m.len())
                } else {
                    None
                };
                self.emit_raw(
                    EventKind::Create,
                    path.clone(),
                    None,
                    ft.is_dir(),
                    size,
                    now_ns(),
                );
                if remember {
                    names.insert(entry.file_name(), entry.ino());
                }
            }
            if ft.is_dir() {
                subdirs.push(path);
            }
        }
        if report {
            self.dedupe.remember(dir, names);
        }
    }

    /// Remembers a new directory whose scan could not run.
    fn note_unscanned(&mut self, dir: PathBuf) {
        if !self.unscanned.insert(dir) {
            tracing::warn!(
                "watch: over {MAX_UNSCANNED} new directories vanished before they could be \
                 scanned; re-walking"
            );
            self.unscanned = Unscanned::default();
            self.lost_track();
        }
    }

    /// A directory that cannot be watched or listed for another reason than being gone
    /// (EACCES, ELOOP...): logged once per directory, and listed as unwatched.
    fn cannot_watch(&mut self, dir: &Path, e: &std::io::Error) {
        if self.unwatched.set.insert(dir.to_path_buf()) {
            tracing::warn!(
                "watch: cannot watch {}: {e}; its changes are not seen",
                dir.display()
            );
        }
    }

    /// Adds (or refreshes) the watch of one directory; `Ok(true)` if it had none.
    pub(crate) fn add_dir_watch(&mut self, dir: &Path) -> std::io::Result<bool> {
        let wd = self.ino.add_watch(dir, self.mask_for(dir))?;
        self.unwatched.remove(dir);
        Ok(self.tree.insert(wd, dir.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_name_is_taken_once() {
        let mut d = Dedupe::new(Duration::from_secs(1));
        d.remember("/r/a".into(), [(OsString::from("f"), 7)].into());
        assert_eq!(d.take(Path::new("/r/a"), OsStr::new("f")), Some(7));
        assert_eq!(d.take(Path::new("/r/a"), OsStr::new("f")), None);
        assert!(d.is_empty());
    }

    #[test]
    fn a_rename_onto_a_listed_name_is_news_and_the_listed_entry_itself_an_echo() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("t"), b"t").unwrap();
        std::fs::write(d.join("f"), b"f").unwrap();
        let listed: HashMap<OsString, u64> = ["t", "f"]
            .into_iter()
            .map(|n| (OsString::from(n), inode_at(&d.join(n)).unwrap()))
            .collect();
        let mut m = Dedupe::new(Duration::from_secs(60));
        m.remember(d.to_path_buf(), listed.clone());
        // `mv t f` after the listing: the f there now is not the f the scan saw.
        std::fs::rename(d.join("t"), d.join("f")).unwrap();
        assert!(m.take(d, OsStr::new("t")).is_some()); // its MOVED_FROM forgets t
        assert!(
            !m.take_echo(d, OsStr::new("f")),
            "the rename onto f is news"
        );
        // The entry the scan listed, arriving late: an echo.
        std::fs::write(d.join("g"), b"g").unwrap();
        let g = inode_at(&d.join("g")).unwrap();
        m.remember(d.to_path_buf(), [(OsString::from("g"), g)].into());
        assert!(m.take_echo(d, OsStr::new("g")));
    }

    #[test]
    fn memories_expire_and_move() {
        let mut d = Dedupe::new(Duration::ZERO);
        d.remember("/r/a".into(), [(OsString::from("f"), 7)].into());
        d.rename_subtree(Path::new("/r"), Path::new("/s"));
        assert!(!d.is_empty());
        d.expire(Instant::now() + Duration::from_secs(1));
        assert!(d.is_empty());
        assert_eq!(d.take(Path::new("/s/a"), OsStr::new("f")), None);
    }
}
