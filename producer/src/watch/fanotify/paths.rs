//! Directory handles to paths: `open_by_handle_at` plus `/proc/self/fd` on a miss (about
//! 10 µs here), through a bounded cache keyed by handle that follows renames and deletes in
//! event order.
//!
//! The cache holds the path a directory had *as of the last event handled*: a directory
//! rename rewrites the cached paths at and below it, a delete drops them. A miss asks the
//! kernel, which answers with the path the directory has *now*; if the directory was renamed
//! by an event still queued, that path is newer than the event (a race documented in the
//! module docs).

use super::sys::Handle;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The most directories cached; past it the cache starts over (each entry costs about
/// 150 bytes: a 20-30 byte handle, the path twice).
pub(crate) const CACHE_LIMIT: usize = 65_536;

/// A directory on each marked filesystem, for `open_by_handle_at`.
#[derive(Debug, Default)]
pub(crate) struct Mounts {
    by_fsid: HashMap<[u8; 8], OwnedFd>,
}

impl Mounts {
    /// Remembers `dir` (a descriptor opened for reading: open_by_handle_at refuses `O_PATH`
    /// ones with EBADF) as the way into its filesystem; returns its fsid.
    pub(crate) fn add(&mut self, dir: &Path) -> io::Result<[u8; 8]> {
        let fsid = fsid_of(dir)?;
        if let std::collections::hash_map::Entry::Vacant(slot) = self.by_fsid.entry(fsid) {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(dir)?;
            slot.insert(OwnedFd::from(f));
        }
        Ok(fsid)
    }

    /// The path of the directory `h` names now, if it still exists.
    pub(crate) fn open(&self, h: &Handle) -> Option<PathBuf> {
        let mount = self.by_fsid.get(&h.fsid())?;
        let bytes = h.bytes();
        // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }, in u32s
        // so that it is aligned as the struct is.
        let mut words = vec![0u32; 2 + bytes.len().div_ceil(4)];
        words[0] = bytes.len() as u32;
        words[1] = h.handle_type() as u32;
        for (i, b) in bytes.iter().enumerate() {
            let w = &mut words[2 + i / 4];
            let mut four = w.to_ne_bytes();
            four[i % 4] = *b;
            *w = u32::from_ne_bytes(four);
        }
        // SAFETY: `words` is a live, writable, 4-aligned buffer holding a file_handle header
        // followed by `handle_bytes` bytes of handle, as open_by_handle_at reads it; `mount`
        // is an open descriptor for the life of `self`.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                words.as_mut_ptr().cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None; // ESTALE: gone; EPERM: no CAP_DAC_READ_SEARCH (checked at start)
        }
        // SAFETY: `fd` was just returned by open_by_handle_at and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        use std::os::unix::ffi::OsStrExt;
        if link.as_os_str().as_bytes().ends_with(b" (deleted)") || !link.is_absolute() {
            return None;
        }
        Some(link)
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// The filesystem id of `path`, as fanotify reports it (`statfs`'s `f_fsid`).
pub(crate) fn fsid_of(path: &Path) -> io::Result<[u8; 8]> {
    let st = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    let id = st.filesystem_id();
    // SAFETY: `fsid_t` is `#[repr(C)] struct { __val: [c_int; 2] }`, 8 bytes with no padding,
    // so its bytes are exactly the 8 bytes the kernel reports in an event's fsid field.
    Ok(unsafe { std::mem::transmute::<libc::fsid_t, [u8; 8]>(id) })
}

/// The cache.
#[derive(Debug, Default)]
pub(crate) struct Paths {
    by_handle: HashMap<Handle, PathBuf>,
    by_path: BTreeMap<PathBuf, Handle>,
    /// Lookups answered from the cache, and those that asked the kernel.
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

impl Paths {
    /// The path of the directory `h`, from the cache or the kernel.
    pub(crate) fn resolve(&mut self, h: &Handle, mounts: &Mounts) -> Option<PathBuf> {
        if let Some(p) = self.by_handle.get(h) {
            self.hits += 1;
            return Some(p.clone());
        }
        self.misses += 1;
        let p = mounts.open(h)?;
        self.insert(h.clone(), p.clone());
        Some(p)
    }

    /// Records that `h` is the directory at `path` (a rename's target, a new directory).
    pub(crate) fn insert(&mut self, h: Handle, path: PathBuf) {
        if self.by_handle.len() >= CACHE_LIMIT {
            self.by_handle.clear();
            self.by_path.clear();
        }
        if let Some(old) = self.by_path.insert(path.clone(), h.clone()) {
            if old != h {
                self.by_handle.remove(&old);
            }
        }
        if let Some(old) = self.by_handle.insert(h, path.clone()) {
            if old != path {
                self.by_path.remove(&old);
            }
        }
    }

    /// A directory was renamed: what is cached at and below `from` moves to `to`. If
    /// something is cached at `to` (a directory replaced, or the first half of a swap),
    /// both subtrees are forgotten and asked of the kernel again: the cache cannot tell
    /// yet whether the displaced one is gone or about to come back at `from`.
    pub(crate) fn moved(&mut self, from: &Path, to: &Path) {
        let displaced = self
            .by_path
            .range(to.to_path_buf()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(to));
        if displaced {
            self.removed(from);
            self.removed(to);
            return;
        }
        for (old, h) in self.take_subtree(from) {
            let rest = old.strip_prefix(from).unwrap_or(Path::new(""));
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.insert(h, new);
        }
    }

    /// A directory (`object`, when the kernel named it) was renamed from `from` to `to`
    /// (either `None` where it could not be resolved). The cache follows the directory by
    /// its handle: if the cache holds it elsewhere than `from` (the second half of a swap,
    /// or a source that could not be resolved), that subtree is the one that moves.
    pub(crate) fn renamed(
        &mut self,
        from: Option<&Path>,
        to: Option<&Path>,
        object: Option<&Handle>,
    ) {
        let cached = object.and_then(|o| self.by_handle.get(o).cloned());
        let from = match (&cached, from) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(f)) if object.is_none() => Some(f.to_path_buf()),
            (None, Some(f)) => {
                // The directory itself is not cached: nothing below `from` can be trusted
                // to be it.
                self.removed(f);
                None
            }
            (None, None) => None,
        };
        match (from, to) {
            (Some(f), Some(t)) => self.moved(&f, t),
            (Some(f), None) => self.removed(&f),
            (None, Some(t)) => {
                self.removed(t);
                if let Some(o) = object {
                    self.insert(o.clone(), t.to_path_buf());
                }
            }
            (None, None) => {}
        }
    }

    /// Forgets everything: after an overflow a lost rename may have left cached paths stale.
    pub(crate) fn clear(&mut self) {
        self.by_handle.clear();
        self.by_path.clear();
    }

    /// A directory was deleted (or moved where it is not followed): forget it and below.
    pub(crate) fn removed(&mut self, dir: &Path) {
        self.take_subtree(dir);
    }

    /// How many directories are cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_handle.len()
    }

    fn take_subtree(&mut self, dir: &Path) -> Vec<(PathBuf, Handle)> {
        // Component order puts `dir`'s descendants right after it.
        let keys: Vec<PathBuf> = self
            .by_path
            .range(dir.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(dir))
            .map(|(p, _)| p.clone())
            .collect();
        keys.into_iter()
            .filter_map(|p| {
                let h = self.by_path.remove(&p)?;
                self.by_handle.remove(&h);
                Some((p, h))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> Handle {
        Handle(vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b].into_boxed_slice())
    }

    #[test]
    fn renames_move_the_subtree_and_deletes_drop_it() {
        let mut c = Paths::default();
        let m = Mounts::default();
        c.insert(h(1), "/r/a".into());
        c.insert(h(2), "/r/a/b".into());
        c.insert(h(3), "/r/ab".into()); // a sibling whose name starts like `a`
        c.moved(Path::new("/r/a"), Path::new("/r/z"));
        assert_eq!(c.resolve(&h(1), &m), Some("/r/z".into()));
        assert_eq!(c.resolve(&h(2), &m), Some("/r/z/b".into()));
        assert_eq!(c.resolve(&h(3), &m), Some("/r/ab".into()));
        // A swap: a -> b, then b -> a, each a directory known by its handle.
        let mut s = Paths::default();
        s.insert(h(1), "/s/a".into());
        s.insert(h(2), "/s/b".into());
        s.insert(h(3), "/s/a/in".into());
        s.renamed(
            Some(Path::new("/s/a")),
            Some(Path::new("/s/b")),
            Some(&h(1)),
        );
        s.renamed(
            Some(Path::new("/s/b")),
            Some(Path::new("/s/a")),
            Some(&h(2)),
        );
        // Never a wrong path: the swapped pair is asked of the kernel again (no mount here,
        // so a miss resolves nothing), and the one the second half named is known.
        assert_eq!(s.resolve(&h(1), &m), None);
        assert_eq!(s.resolve(&h(3), &m), None);
        assert_eq!(s.resolve(&h(2), &m), Some("/s/a".into()));
        c.removed(Path::new("/r/z"));
        assert_eq!(c.len(), 1);
        assert_eq!(c.resolve(&h(2), &m), None); // no mount known: a miss resolves nothing
        assert_eq!((c.hits, c.misses), (3, 1));
    }

    #[test]
    fn the_kernel_resolves_a_directory_handle_to_its_path() {
        if !nix::unistd::geteuid().is_root() {
            return; // open_by_handle_at needs CAP_DAC_READ_SEARCH
        }
        let Ok(fan) = super::super::sys::Fanotify::new() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        fan.mark_filesystem(&root, super::super::sys::MARK_MASK)
            .unwrap();
        let mut mounts = Mounts::default();
        mounts.add(&root).unwrap();
        std::fs::write(root.join("sub/f"), b"x").unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        for _ in 0..100 {
            fan.read_events(&mut buf, 0, &mut out).unwrap();
            if out
                .iter()
                .any(|e| e.name.as_deref() == Some(std::ffi::OsStr::new("f")))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let ev = out
            .iter()
            .find(|e| e.name.as_deref() == Some(std::ffi::OsStr::new("f")))
            .expect("the create of sub/f");
        let mut c = Paths::default();
        let d = ev.dir.as_ref().unwrap();
        assert_eq!(c.resolve(d, &mounts), Some(root.join("sub")));
        assert_eq!(c.resolve(d, &mounts), Some(root.join("sub")));
        assert_eq!((c.hits, c.misses), (1, 1));
    }
}
