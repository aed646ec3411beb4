//! Which directory each watch descriptor stands for, both ways.
//!
//! inotify watches follow inodes: after a directory is renamed its descriptor (and those of
//! everything below it) still works, only the paths change. So a rename inside the tree is a
//! prefix rewrite here, with no window in which the moved tree is unwatched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The watched directories.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    by_wd: HashMap<i32, PathBuf>,
    by_path: HashMap<PathBuf, i32>,
}

impl Tree {
    /// Records that `path` is watched by `wd`. Returns false if it already was (same pair).
    /// A descriptor seen under another path (the directory was renamed while we did not see
    /// it, e.g. during an overflow) is moved to `path`.
    pub(crate) fn insert(&mut self, wd: i32, path: PathBuf) -> bool {
        if self.by_wd.get(&wd) == Some(&path) {
            return false;
        }
        if let Some(old) = self.by_wd.insert(wd, path.clone()) {
            self.by_path.remove(&old);
        }
        if let Some(old_wd) = self.by_path.insert(path, wd) {
            if old_wd != wd {
                self.by_wd.remove(&old_wd);
            }
        }
        true
    }

    /// The directory `wd` stands for.
    pub(crate) fn path(&self, wd: i32) -> Option<&Path> {
        self.by_wd.get(&wd).map(PathBuf::as_path)
    }

    /// The descriptor watching `path`.
    #[cfg(test)]
    pub(crate) fn wd(&self, path: &Path) -> Option<i32> {
        self.by_path.get(path).copied()
    }

    /// Forgets `wd` (the kernel dropped it). Returns the path it had.
    pub(crate) fn remove_wd(&mut self, wd: i32) -> Option<PathBuf> {
        let path = self.by_wd.remove(&wd)?;
        if self.by_path.get(&path) == Some(&wd) {
            self.by_path.remove(&path);
        }
        Some(path)
    }

    /// Forgets `dir` and everything below it; returns their descriptors.
    pub(crate) fn remove_subtree(&mut self, dir: &Path) -> Vec<i32> {
        let gone: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        gone.iter()
            .filter_map(|p| self.by_path.remove(p))
            .inspect(|wd| {
                self.by_wd.remove(wd);
            })
            .collect()
    }

    /// Rewrites every path at or below `from` to sit below `to` instead.
    pub(crate) fn rename_subtree(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, i32)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, wd)| (p.clone(), *wd))
            .collect();
        for (p, _) in &moved {
            self.by_path.remove(p);
        }
        for (p, wd) in moved {
            let new = rebase(&p, from, to);
            self.by_wd.insert(wd, new.clone());
            self.by_path.insert(new, wd);
        }
    }

    /// Every watched path (unordered).
    pub(crate) fn paths(&self) -> impl Iterator<Item = (&Path, i32)> {
        self.by_path.iter().map(|(p, wd)| (p.as_path(), *wd))
    }

    /// Number of watched directories.
    pub(crate) fn len(&self) -> usize {
        self.by_wd.len()
    }
}

/// `p` (at or below `from`) moved below `to`.
pub(crate) fn rebase(p: &Path, from: &Path, to: &Path) -> PathBuf {
    match p.strip_prefix(from) {
        Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
        Ok(rest) => to.join(rest),
        Err(_) => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_moves_the_subtree_only() {
        let mut t = Tree::default();
        t.insert(1, "/r/a".into());
        t.insert(2, "/r/a/b".into());
        t.insert(3, "/r/ab".into());
        t.rename_subtree(Path::new("/r/a"), Path::new("/r/z"));
        assert_eq!(t.path(1), Some(Path::new("/r/z")));
        assert_eq!(t.path(2), Some(Path::new("/r/z/b")));
        assert_eq!(t.path(3), Some(Path::new("/r/ab")));
        assert_eq!(t.wd(Path::new("/r/z/b")), Some(2));
        assert_eq!(t.remove_subtree(Path::new("/r/z")).len(), 2);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_descriptor_seen_under_a_new_path_moves() {
        let mut t = Tree::default();
        assert!(t.insert(1, "/r/a".into()));
        assert!(!t.insert(1, "/r/a".into()));
        assert!(t.insert(1, "/r/b".into()));
        assert_eq!(t.wd(Path::new("/r/a")), None);
        assert_eq!(t.len(), 1);
    }
}
