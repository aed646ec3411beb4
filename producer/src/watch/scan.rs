//! Walking directories: putting a watch on each, and for new directories reporting what is
//! already inside, exactly once.
//!
//! The order is what makes it exact: the watch goes on first, then the directory is listed.
//! An entry created before the watch is seen by the listing only; one created after the
//! listing by its kernel event only; one created in between by both. So the listing's names
//! are remembered ([`Dedupe`]), and the first Create (or move-in) event for a remembered name
//! is dropped, as is any event for it once it is deleted or moved away (the memory of that
//! name ends). The memory of a directory ends [`WatchConfig::dedupe_window`] after its scan,
//! measured on the reader's clock: an event read that much later than the scan cannot be
//! the late echo of something the scan saw.
//!
//! [`WatchConfig::dedupe_window`]: super::WatchConfig::dedupe_window

use super::backend::now_ns;
use super::core::Core;
use super::EventKind;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Most names remembered at once; beyond it the oldest directories are forgotten first.
const MAX_NAMES: usize = 1 << 20;

/// What the scans of new directories reported, for a short while.
#[derive(Debug)]
pub(crate) struct Dedupe {
    dirs: HashMap<PathBuf, Memo>,
    /// Directories in scan order, with the scan's expiry (entries may be stale).
    order: VecDeque<(PathBuf, u64)>,
    names: usize,
    window_ns: u64,
}

#[derive(Debug)]
struct Memo {
    names: HashSet<OsString>,
    until_ns: u64,
}

impl Dedupe {
    /// An empty memory whose entries live `window_ns`.
    pub(crate) fn new(window_ns: u64) -> Self {
        Dedupe {
            dirs: HashMap::new(),
            order: VecDeque::new(),
            names: 0,
            window_ns,
        }
    }

    /// Remembers that a scan of `dir`, finished now, reported `names`.
    pub(crate) fn remember(&mut self, dir: PathBuf, names: HashSet<OsString>) {
        if names.is_empty() {
            return;
        }
        let until_ns = now_ns() + self.window_ns;
        self.names += names.len();
        if let Some(old) = self.dirs.insert(dir.clone(), Memo { names, until_ns }) {
            self.names -= old.names.len();
        }
        self.order.push_back((dir, until_ns));
        while self.names > MAX_NAMES {
            let Some((d, until)) = self.order.pop_front() else {
                break;
            };
            self.drop_dir_if(&d, until);
        }
    }

    /// Whether the scan of `dir` reported `name` and nothing has been seen of it since; the
    /// name is forgotten either way (the caller's event is its echo, or news).
    pub(crate) fn take(&mut self, dir: &Path, name: &OsStr) -> bool {
        let Some(m) = self.dirs.get_mut(dir) else {
            return false;
        };
        if m.names.remove(name) {
            self.names -= 1;
            if m.names.is_empty() {
                self.dirs.remove(dir);
            }
            true
        } else {
            false
        }
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
                self.order.push_back((new.clone(), m.until_ns));
                self.dirs.insert(new, m);
            }
        }
    }

    /// Forgets the memories that ended before `time_ns`.
    pub(crate) fn expire(&mut self, time_ns: u64) {
        while let Some((_, until)) = self.order.front() {
            if *until >= time_ns {
                break;
            }
            let (d, until) = self.order.pop_front().unwrap_or_default();
            self.drop_dir_if(&d, until);
        }
    }

    /// Whether anything is remembered.
    pub(crate) fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    fn drop_dir_if(&mut self, dir: &Path, until: u64) {
        if self.dirs.get(dir).is_some_and(|m| m.until_ns == until) {
            if let Some(m) = self.dirs.remove(dir) {
                self.names -= m.names.len();
            }
        }
    }
}

impl Core {
    /// Watches `top` and every directory below it. With `report`, `top` is new (created,
    /// moved in, a root that came back): every entry below it is reported as a Create, and
    /// directories that already had a watch are not entered again (their contents were
    /// reported by their own events). Without `report` (start, new roots, re-walks) nothing is
    /// reported and every directory is visited, to put back any missing watch.
    pub(crate) fn watch_tree(&mut self, top: &Path, report: bool) {
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
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::debug!("watch: cannot watch {}: {e}", dir.display());
                    }
                    continue;
                }
            };
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names = HashSet::new();
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
                    let t = now_ns();
                    self.emit_raw(EventKind::Create, path.clone(), None, ft.is_dir(), size, t);
                    if watched {
                        names.insert(entry.file_name());
                    }
                }
                if ft.is_dir() {
                    stack.push(path);
                }
            }
            if report {
                self.dedupe.remember(dir, names);
            }
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
        let mut d = Dedupe::new(1_000_000_000);
        d.remember("/r/a".into(), [OsString::from("f")].into());
        assert!(d.take(Path::new("/r/a"), OsStr::new("f")));
        assert!(!d.take(Path::new("/r/a"), OsStr::new("f")));
        assert!(d.is_empty());
    }

    #[test]
    fn memories_expire_and_move() {
        let mut d = Dedupe::new(0);
        d.remember("/r/a".into(), [OsString::from("f")].into());
        d.rename_subtree(Path::new("/r"), Path::new("/s"));
        assert!(!d.is_empty());
        d.expire(u64::MAX);
        assert!(d.is_empty());
        assert!(!d.take(Path::new("/s/a"), OsStr::new("f")));
    }
}
