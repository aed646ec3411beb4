//! Reconcile: walk a root, diff it against the index, and say exactly what changed, as
//! create, remove, rename (same inode, new name) and modify changes whose replay (create
//! adds, remove drops the subtree, rename moves it and replaces what was at its target)
//! turns the old tree into the one on disk. The index is brought up to date on the way.
//!
//! # How
//!
//! 1. **Walk.** Each directory known to the index is paired with the one on disk. A pair
//!    whose mtime and ctime did not move since the index recorded them, and that the index
//!    recorded before `trusted_before_ns` (timestamps are coarse: a change in the same tick
//!    as the recording would not move them), is not listed: its known entries are looked
//!    up by name instead, and any surprise (gone, another inode) lists it after all. A
//!    listed directory splits into stable entries (same name, same inode), vanished ones
//!    (known, not there now) and appeared ones (there, not known). Appeared directories are
//!    walked whole.
//! 2. **Match.** An appeared entry whose inode (and kind) is that of exactly one vanished
//!    entry, or of one entry below a vanished directory, is that entry renamed.
//! 3. **Place**, shallowest first, so a target's parent is always in place: a matched entry
//!    is renamed there (unless it already is, below a renamed parent); an unmatched one is
//!    created. An entry in the way is removed first (then anything below it that was to be
//!    renamed is created instead: exact, though it loses the rename).
//! 4. **Remove** the vanished entries still in the index.
//! 5. **Modify**: stable and renamed files whose size or mtime moved are modified; those whose
//!    ctime alone moved had their metadata changed (a rename moves the ctime, so renamed files
//!    report only content changes). Directories' own times are updated silently.

use super::{Id, Kind, Meta, TreeIndex};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One change found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `path` is new.
    Create {
        /// The entry.
        path: PathBuf,
        /// What it is.
        meta: Meta,
    },
    /// `path` and what was below it are gone.
    Remove {
        /// The entry.
        path: PathBuf,
        /// Whether it was a directory.
        is_dir: bool,
    },
    /// `from` is now `to` (the same inode).
    Rename {
        /// The old path.
        from: PathBuf,
        /// The new path.
        to: PathBuf,
        /// Whether it is a directory.
        is_dir: bool,
    },
    /// `path`'s content changed (size or mtime).
    Modify {
        /// The entry.
        path: PathBuf,
        /// What it is now.
        meta: Meta,
    },
    /// `path`'s metadata changed (ctime only).
    Metadata {
        /// The entry.
        path: PathBuf,
        /// What it is now.
        meta: Meta,
    },
}

/// How to reconcile.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Exact paths never indexed or reported (the service's own files).
    pub ignore: &'a HashSet<PathBuf>,
    /// A directory recorded before this (ns since the epoch) and unchanged since is not
    /// listed. `i64::MIN` lists every directory.
    pub trusted_before_ns: i64,
}

/// What a reconcile did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Directories listed.
    pub listed: u64,
    /// Directories not listed (unchanged).
    pub skipped: u64,
    /// Entries looked at.
    pub entries: u64,
    /// Changes reported.
    pub changes: u64,
}

#[derive(Debug, Clone, Copy)]
enum Parent {
    Known(Id),
    New(usize),
}

#[derive(Debug)]
struct Appeared {
    parent: Parent,
    name: Box<[u8]>,
    meta: Meta,
    depth: usize,
    matched: Option<Id>,
}

#[derive(Debug)]
enum Work {
    Pair {
        path: PathBuf,
        id: Id,
        disk: Meta,
        depth: usize,
    },
    Fresh {
        path: PathBuf,
        new: usize,
        depth: usize,
    },
}

#[derive(Debug, Default)]
struct Diff {
    vanished: Vec<Id>,
    appeared: Vec<Appeared>,
    /// Every entry at or below a vanished one, parents first: each is gone unless it is
    /// found again.
    doubtful: Vec<Id>,
    /// Stable entries whose metadata moved: (node, what it is now).
    touched: Vec<(Id, Meta)>,
    out: Outcome,
}

/// Diffs the root at `root` (already in the index, or added now) against the disk, updates
/// the index, and hands every change to `emit` in an order whose replay is exact.
pub fn reconcile(
    ix: &mut TreeIndex,
    root: &Path,
    opts: &Options<'_>,
    emit: &mut dyn FnMut(Change),
) -> Outcome {
    let Some(disk) = Meta::at(root).filter(Meta::is_dir) else {
        return Outcome::default();
    };
    let id = match ix.root(root) {
        Some(id) => id,
        None => ix.add_root(root, Meta::unknown(true)),
    };
    ix.hold_ids(true);
    let mut d = Diff::default();
    let mut work = vec![Work::Pair {
        path: root.to_path_buf(),
        id,
        disk,
        depth: 0,
    }];
    while let Some(w) = work.pop() {
        match w {
            Work::Pair {
                path,
                id,
                disk,
                depth,
            } => pair(ix, &path, id, disk, depth, opts, &mut d, &mut work),
            Work::Fresh { path, new, depth } => fresh(&path, new, depth, opts, &mut d, &mut work),
        }
    }
    match_moves(ix, &mut d);
    place(ix, &mut d, emit);
    ix.hold_ids(false);
    d.out
}

/// Diffs one directory known to the index against the disk.
#[allow(clippy::too_many_arguments)]
fn pair(
    ix: &mut TreeIndex,
    path: &Path,
    id: Id,
    disk: Meta,
    depth: usize,
    opts: &Options<'_>,
    d: &mut Diff,
    work: &mut Vec<Work>,
) {
    let known = ix.meta(id);
    let unchanged = known.ino != 0
        && known.ino == disk.ino
        && known.mtime_ns == disk.mtime_ns
        && known.ctime_ns == disk.ctime_ns
        && known.ctime_ns < opts.trusted_before_ns;
    ix.set_meta(id, disk);
    if unchanged && look_up_known(ix, path, id, depth, d, work) {
        d.out.skipped += 1;
        return;
    }
    d.out.listed += 1;
    let Ok(entries) = std::fs::read_dir(path) else {
        return; // gone or unreadable since its parent was listed: nothing is claimed
    };
    let mut known: HashMap<Box<[u8]>, Id> = ix
        .children(id)
        .into_iter()
        .map(|c| (Box::from(ix.name(c)), c))
        .collect();
    for e in entries.flatten() {
        let name = e.file_name();
        let child_path = path.join(&name);
        if opts.ignore.contains(&child_path) {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        let m = Meta::of(&m);
        d.out.entries += 1;
        match known.remove(name.as_bytes()) {
            Some(c) if same_entry(&ix.meta(c), &m) => {
                stable(ix, c, m, &child_path, depth + 1, d, work);
            }
            old => {
                if let Some(c) = old {
                    d.vanished.push(c);
                }
                appear(
                    Parent::Known(id),
                    name.as_bytes(),
                    m,
                    child_path,
                    depth + 1,
                    d,
                    work,
                );
            }
        }
    }
    d.vanished.extend(known.into_values());
}

/// Looks up the known entries of an unchanged directory by name; false (nothing done) if
/// one is gone or is another inode now (the directory must be listed after all).
fn look_up_known(
    ix: &mut TreeIndex,
    path: &Path,
    id: Id,
    depth: usize,
    d: &mut Diff,
    work: &mut Vec<Work>,
) -> bool {
    let children = ix.children(id);
    let mut seen = Vec::with_capacity(children.len());
    for c in children {
        let p = path.join(OsStr::from_bytes(ix.name(c)));
        match Meta::at(&p) {
            Some(m) if same_entry(&ix.meta(c), &m) => seen.push((c, m, p)),
            _ => return false,
        }
    }
    d.out.entries += seen.len() as u64;
    for (c, m, p) in seen {
        stable(ix, c, m, &p, depth + 1, d, work);
    }
    true
}

fn same_entry(known: &Meta, disk: &Meta) -> bool {
    known.kind == disk.kind
        && (known.ino == 0 || (known.ino == disk.ino && known.btime_ns == disk.btime_ns))
}

/// A known entry still there under its name.
fn stable(
    ix: &mut TreeIndex,
    c: Id,
    m: Meta,
    path: &Path,
    depth: usize,
    d: &mut Diff,
    work: &mut Vec<Work>,
) {
    if m.is_dir() {
        work.push(Work::Pair {
            path: path.to_path_buf(),
            id: c,
            disk: m,
            depth,
        });
    } else {
        let was = ix.meta(c);
        if was.ino != 0
            && (was.size != m.size || was.mtime_ns != m.mtime_ns || was.ctime_ns != m.ctime_ns)
        {
            d.touched.push((c, m));
        } else {
            ix.set_meta(c, m);
        }
    }
}

fn appear(
    parent: Parent,
    name: &[u8],
    meta: Meta,
    path: PathBuf,
    depth: usize,
    d: &mut Diff,
    work: &mut Vec<Work>,
) {
    let new = d.appeared.len();
    d.appeared.push(Appeared {
        parent,
        name: name.into(),
        meta,
        depth,
        matched: None,
    });
    if meta.is_dir() {
        work.push(Work::Fresh { path, new, depth });
    }
}

/// Lists a directory the index does not know (or knows elsewhere): all of it appeared.
fn fresh(
    path: &Path,
    new: usize,
    depth: usize,
    opts: &Options<'_>,
    d: &mut Diff,
    work: &mut Vec<Work>,
) {
    d.out.listed += 1;
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for e in entries.flatten() {
        let child_path = path.join(e.file_name());
        if opts.ignore.contains(&child_path) {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        d.out.entries += 1;
        let name = e.file_name();
        appear(
            Parent::New(new),
            name.as_bytes(),
            Meta::of(&m),
            child_path,
            depth + 1,
            d,
            work,
        );
    }
}

/// Pairs appeared entries with vanished ones (or entries below vanished directories) of the
/// same inode and kind, where the inode names exactly one of each (hard links are not
/// guessed at).
fn match_moves(ix: &TreeIndex, d: &mut Diff) {
    type Key = (u64, i64, Kind);
    let mut old: HashMap<Key, Option<Id>> = HashMap::new();
    for &v in &d.vanished {
        for n in ix.subtree(v) {
            d.doubtful.push(n);
            let m = ix.meta(n);
            if m.ino != 0 {
                old.entry((m.ino, m.btime_ns, m.kind))
                    .and_modify(|e| *e = None)
                    .or_insert(Some(n));
            }
        }
    }
    let mut new: HashMap<Key, usize> = HashMap::new();
    for a in &d.appeared {
        *new.entry((a.meta.ino, a.meta.btime_ns, a.meta.kind))
            .or_default() += 1;
    }
    for a in &mut d.appeared {
        let key = (a.meta.ino, a.meta.btime_ns, a.meta.kind);
        if new.get(&key) == Some(&1) {
            a.matched = old.get(&key).copied().flatten();
        }
    }
}

/// Steps 3 to 5: applies the diff to the index and reports it.
fn place(ix: &mut TreeIndex, d: &mut Diff, emit: &mut dyn FnMut(Change)) {
    let mut order: Vec<usize> = (0..d.appeared.len()).collect();
    order.sort_by_key(|&i| d.appeared[i].depth);
    let mut placed: Vec<Option<Id>> = vec![None; d.appeared.len()];
    let mut confirmed: HashSet<Id> = HashSet::new();
    let mut changes = 0u64;
    let mut report = |c: Change| {
        changes += 1;
        emit(c);
    };
    for i in order {
        let a = &d.appeared[i];
        let parent = match a.parent {
            Parent::Known(id) => Some(id),
            Parent::New(j) => placed[j],
        };
        let Some(parent) = parent.filter(|&p| ix.is_live(p)) else {
            continue;
        };
        let occupant = ix.child(parent, &a.name);
        let target = ix.path(parent).join(OsStr::from_bytes(&a.name));
        let moving = a
            .matched
            .filter(|&m| ix.is_live(m) && !ix.is_within(parent, m));
        if let Some(m) = moving {
            confirmed.insert(m);
            if occupant == Some(m) {
                placed[i] = Some(m);
                content(ix, m, a.meta, &mut d.touched);
                continue;
            }
            if let Some(o) = occupant {
                evict(ix, o, &mut report);
            }
            let from = ix.path(m);
            report(Change::Rename {
                from,
                to: target,
                is_dir: a.meta.is_dir(),
            });
            ix.rename(m, parent, &a.name);
            placed[i] = Some(m);
            content(ix, m, a.meta, &mut d.touched);
        } else {
            if let Some(o) = occupant {
                evict(ix, o, &mut report);
            }
            report(Change::Create {
                path: target,
                meta: a.meta,
            });
            let id = ix.insert(parent, &a.name, a.meta);
            confirmed.insert(id);
            placed[i] = Some(id);
        }
    }
    // What was below a vanished entry and was not found again is gone (parents first, so
    // one remove covers a subtree).
    for n in std::mem::take(&mut d.doubtful) {
        if ix.is_live(n) && !confirmed.contains(&n) {
            evict(ix, n, &mut report);
        }
    }
    for (id, m) in std::mem::take(&mut d.touched) {
        if !ix.is_live(id) {
            continue;
        }
        let was = ix.meta(id);
        ix.set_meta(id, m);
        let path = ix.path(id);
        if was.size != m.size || was.mtime_ns != m.mtime_ns {
            report(Change::Modify { path, meta: m });
        } else if was.ctime_ns != m.ctime_ns {
            report(Change::Metadata { path, meta: m });
        }
    }
    d.out.changes = changes;
}

/// A renamed (or stable-below-a-renamed-parent) entry: files whose content moved are
/// reported as modified; the ctime a rename moves is taken silently.
fn content(ix: &mut TreeIndex, id: Id, m: Meta, touched: &mut Vec<(Id, Meta)>) {
    let was = ix.meta(id);
    if !m.is_dir() && (was.size != m.size || was.mtime_ns != m.mtime_ns) {
        touched.push((id, m));
    } else {
        ix.set_meta(id, m);
    }
}

fn evict(ix: &mut TreeIndex, id: Id, report: &mut dyn FnMut(Change)) {
    let is_dir = ix.meta(id).is_dir();
    report(Change::Remove {
        path: ix.path(id),
        is_dir,
    });
    ix.remove(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;

    /// Replays changes onto a set of paths, as `scripts/replay-check` does.
    fn replay(tree: &mut BTreeSet<PathBuf>, c: &Change) {
        match c {
            Change::Create { path, .. } => {
                tree.insert(path.clone());
            }
            Change::Remove { path, .. } => tree.retain(|x| !x.starts_with(path)),
            Change::Rename { from, to, .. } => {
                let moved: Vec<PathBuf> = tree
                    .iter()
                    .filter(|x| x.starts_with(from))
                    .cloned()
                    .collect();
                tree.retain(|x| !x.starts_with(from) && !x.starts_with(to));
                for m in moved {
                    let rest = m.strip_prefix(from).unwrap();
                    tree.insert(if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    });
                }
            }
            Change::Modify { .. } | Change::Metadata { .. } => {}
        }
    }

    fn disk(root: &Path) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if e.file_type().unwrap().is_dir() {
                    stack.push(p.clone());
                }
                out.insert(p);
            }
        }
        out
    }

    fn indexed(ix: &TreeIndex, root: &Path) -> BTreeSet<PathBuf> {
        let r = ix.root(root).unwrap();
        ix.subtree(r)
            .into_iter()
            .skip(1)
            .map(|n| ix.path(n))
            .collect()
    }

    fn run(ix: &mut TreeIndex, root: &Path, trusted: i64) -> (Vec<Change>, Outcome) {
        let ignore = HashSet::new();
        let opts = Options {
            ignore: &ignore,
            trusted_before_ns: trusted,
        };
        let mut out = Vec::new();
        let o = reconcile(ix, root, &opts, &mut |c| out.push(c));
        (out, o)
    }

    /// Indexes `root`, lets `change` change it blind, reconciles, and checks that replaying
    /// the changes onto the old tree gives the tree on disk and the index.
    fn blind(root: &Path, change: impl FnOnce(&Path)) -> Vec<Change> {
        let mut ix = TreeIndex::new();
        let (first, _) = run(&mut ix, root, i64::MAX);
        let mut tree: BTreeSet<PathBuf> = BTreeSet::new();
        for c in &first {
            replay(&mut tree, c);
        }
        assert_eq!(tree, disk(root));
        change(root);
        let (changes, _) = run(&mut ix, root, i64::MAX);
        for c in &changes {
            replay(&mut tree, c);
        }
        assert_eq!(tree, disk(root), "replay of {changes:#?}");
        assert_eq!(indexed(&ix, root), disk(root));
        // A second reconcile finds nothing.
        let (again, _) = run(&mut ix, root, i64::MAX);
        assert!(again.is_empty(), "{again:#?}");
        changes
    }

    fn touch(p: &Path, body: &str) {
        fs::write(p, body).unwrap();
    }

    #[test]
    fn renames_keep_the_inode_and_content_changes_are_modifies() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        touch(&r.join("a/b/f"), "1");
        touch(&r.join("g"), "1");
        touch(&r.join("h"), "1");
        let changes = blind(r, |r| {
            fs::rename(r.join("a"), r.join("z")).unwrap();
            touch(&r.join("z/b/f"), "longer");
            fs::rename(r.join("g"), r.join("z/g2")).unwrap();
            fs::remove_file(r.join("h")).unwrap();
            touch(&r.join("new"), "x");
        });
        assert!(changes.contains(&Change::Rename {
            from: r.join("a"),
            to: r.join("z"),
            is_dir: true
        }));
        assert!(changes.contains(&Change::Rename {
            from: r.join("g"),
            to: r.join("z/g2"),
            is_dir: false
        }));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::Modify { path, .. } if path == &r.join("z/b/f"))));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::Remove { path, .. } if path == &r.join("h"))));
        assert_eq!(changes.len(), 5, "{changes:#?}");
    }

    #[test]
    fn swaps_parent_child_moves_and_atomic_saves_replay_exactly() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("p/c")).unwrap();
        touch(&r.join("p/c/x"), "1");
        touch(&r.join("one"), "1");
        touch(&r.join("two"), "2");
        touch(&r.join("saved"), "old");
        fs::create_dir_all(r.join("gone/deep")).unwrap();
        touch(&r.join("gone/deep/keep"), "k");
        blind(r, |r| {
            // Child above its old parent.
            fs::rename(r.join("p/c"), r.join("c")).unwrap();
            fs::rename(r.join("p"), r.join("c/p")).unwrap();
            // A swap through a temporary name.
            fs::rename(r.join("one"), r.join("tmp")).unwrap();
            fs::rename(r.join("two"), r.join("one")).unwrap();
            fs::rename(r.join("tmp"), r.join("two")).unwrap();
            // An atomic save: a new inode renamed over the old name.
            touch(&r.join(".saved.tmp"), "new");
            fs::rename(r.join(".saved.tmp"), r.join("saved")).unwrap();
            // A file rescued from a directory that is then deleted.
            fs::rename(r.join("gone/deep/keep"), r.join("kept")).unwrap();
            fs::remove_dir_all(r.join("gone")).unwrap();
        });
    }

    #[test]
    fn an_unchanged_directory_is_not_listed() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in 0..10 {
            fs::create_dir_all(r.join(format!("d{d}"))).unwrap();
            touch(&r.join(format!("d{d}/f")), "1");
        }
        let mut ix = TreeIndex::new();
        run(&mut ix, r, i64::MAX);
        touch(&r.join("d3/f"), "changed");
        touch(&r.join("d4/new"), "n");
        let (changes, o) = run(&mut ix, r, i64::MAX);
        assert_eq!(changes.len(), 2, "{changes:#?}");
        // The root is listed only if it changed: it did not; d4 did.
        assert_eq!(o.listed, 1, "{o:?}");
        assert_eq!(o.skipped, 10, "{o:?}");
        // With nothing trusted every directory is listed.
        let (_, o) = run(&mut ix, r, i64::MIN);
        assert_eq!((o.listed, o.skipped), (11, 0));
    }

    /// A small deterministic generator (xorshift) so failures reproduce by seed.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    fn entries(root: &Path) -> Vec<PathBuf> {
        disk(root).into_iter().collect()
    }

    #[test]
    fn random_blind_workloads_replay_exactly() {
        for seed in 1..=60u64 {
            let t = tempfile::tempdir().unwrap();
            let r = t.path().to_path_buf();
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let step = |r: &Path, rng: &mut Rng, from: usize, n: usize| {
                for i in from..from + n {
                    let all = entries(r);
                    let dirs: Vec<PathBuf> = std::iter::once(r.to_path_buf())
                        .chain(all.iter().filter(|p| p.is_dir()).cloned())
                        .collect();
                    let dir = &dirs[rng.below(dirs.len())];
                    match rng.below(7) {
                        0 | 1 => touch(&dir.join(format!("f{seed}_{i}")), "x"),
                        2 => fs::create_dir(dir.join(format!("d{seed}_{i}"))).unwrap(),
                        3 if !all.is_empty() => {
                            let p = &all[rng.below(all.len())];
                            if p.is_dir() {
                                fs::remove_dir_all(p).unwrap();
                            } else {
                                fs::remove_file(p).unwrap();
                            }
                        }
                        4 | 5 if !all.is_empty() => {
                            let p = &all[rng.below(all.len())];
                            let to = dir.join(format!("m{seed}_{i}"));
                            if !to.starts_with(p) {
                                fs::rename(p, to).unwrap();
                            }
                        }
                        _ if !all.is_empty() => {
                            let p = &all[rng.below(all.len())];
                            if p.is_file() {
                                fs::write(p, format!("{i}{i}{i}")).unwrap();
                            }
                        }
                        _ => {}
                    }
                }
            };
            step(&r, &mut rng, 0, 30);
            let mut later = Rng(seed);
            blind(&r, |r| step(r, &mut later, 100, 25));
        }
    }
}
