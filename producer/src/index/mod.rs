//! The tree index: what the service believes is on disk under its roots, path → (inode,
//! kind, size, mtime, ctime). It is kept current from the watcher's events, journaled to a
//! file so that it survives a stop and a crash ([`journal`]), and diffed against the disk
//! after a blind period ([`reconcile`]) to say exactly what changed while nobody looked.
//!
//! # Layout
//!
//! One arena of nodes; a node holds its own name (not its path), its parent and its place
//! in its parent's list of children (an intrusive doubly linked list). Children are found
//! by one hash table keyed by `(parent, name)` that stores only node numbers: renaming a
//! directory rewrites one node and one table slot, whatever lies below it. Measured in
//! bytes per entry by [`TreeIndex::heap_bytes`] (about 100 B a file with a 12-byte name; see
//! `benches/index` and `docs/reconcile.md`).

pub mod journal;
pub mod reconcile;

use hashbrown::HashTable;
use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// A node number.
pub type Id = u32;

const NONE: Id = u32::MAX;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A regular file.
    File = 1,
    /// A directory.
    Dir = 2,
    /// A symbolic link.
    Symlink = 3,
    /// A socket, FIFO or device.
    Other = 4,
}

impl Kind {
    /// The kind for its code in the journal.
    pub fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::File,
            2 => Kind::Dir,
            3 => Kind::Symlink,
            4 => Kind::Other,
            _ => return None,
        })
    }
}

/// What the index knows of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The inode number (0: not known, e.g. the entry vanished before it could be looked at).
    pub ino: u64,
    /// File, directory, symlink or other.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Birth time, ns since the epoch (0: the file system does not say). With the inode it
    /// tells a renamed entry from a new one that reuses a freed inode number.
    pub btime_ns: i64,
}

impl Meta {
    /// From `lstat`.
    pub fn of(m: &std::fs::Metadata) -> Meta {
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other // sockets, FIFOs, devices
        };
        Meta {
            ino: m.ino(),
            kind,
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            btime_ns: m
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i64),
        }
    }

    /// `lstat` of `path`, if it exists.
    pub fn at(path: &Path) -> Option<Meta> {
        std::fs::symlink_metadata(path).ok().map(|m| Meta::of(&m))
    }

    /// An entry whose details are not known (only whether it is a directory).
    pub fn unknown(is_dir: bool) -> Meta {
        Meta {
            ino: 0,
            kind: if is_dir { Kind::Dir } else { Kind::File },
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            btime_ns: 0,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

#[derive(Debug)]
struct Node {
    name: Box<[u8]>,
    meta: Meta,
    parent: Id,
    first_child: Id,
    next: Id,
    prev: Id,
    live: bool,
}

/// The index. See the module docs.
#[derive(Debug, Default)]
pub struct TreeIndex {
    nodes: Vec<Node>,
    free: Vec<Id>,
    table: HashTable<Id>,
    hasher: std::hash::RandomState,
    /// Root nodes: a root's node holds the root's whole path as its name.
    roots: Vec<Id>,
    len: usize,
    name_bytes: usize,
    /// While set, freed node numbers are not given out again (see [`TreeIndex::hold_ids`]).
    holding: bool,
    held: Vec<Id>,
}

impl TreeIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries held (roots included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes in use: the arena (with its spare capacity), the names (with the
    /// allocator's 16-byte rounding and 8-byte header) and the hash table.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.name_bytes
            + self.table.capacity() * (std::mem::size_of::<Id>() + 1)
            + self.free.capacity() * std::mem::size_of::<Id>()
    }

    /// While `hold` is set, node numbers of removed entries are not reused: a caller that
    /// keeps numbers across removals (reconcile) can tell a removed entry by
    /// [`TreeIndex::is_live`] without mistaking a new entry for it.
    pub fn hold_ids(&mut self, hold: bool) {
        self.holding = hold;
        if !hold {
            self.free.append(&mut self.held);
        }
    }

    fn hash(&self, parent: Id, name: &[u8]) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    /// The root node for `path` (made if missing, with `meta`).
    pub fn add_root(&mut self, path: &Path, meta: Meta) -> Id {
        if let Some(id) = self.root(path) {
            self.nodes[id as usize].meta = meta;
            return id;
        }
        let id = self.alloc(path.as_os_str().as_bytes(), meta, NONE);
        self.roots.push(id);
        id
    }

    /// The root node for exactly `path`.
    pub fn root(&self, path: &Path) -> Option<Id> {
        let b = path.as_os_str().as_bytes();
        self.roots
            .iter()
            .copied()
            .find(|&id| &*self.nodes[id as usize].name == b)
    }

    /// The roots' paths.
    pub fn root_paths(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|&id| self.path(id)).collect()
    }

    /// Forgets a root and everything below it.
    pub fn remove_root(&mut self, path: &Path) {
        if let Some(id) = self.root(path) {
            self.remove(id);
        }
    }

    /// The child `name` of `parent`.
    pub fn child(&self, parent: Id, name: &[u8]) -> Option<Id> {
        let h = self.hash(parent, name);
        self.table
            .find(h, |&id| {
                let n = &self.nodes[id as usize];
                n.parent == parent && &*n.name == name
            })
            .copied()
    }

    /// The node at `path`: under the longest root that contains it.
    pub fn lookup(&self, path: &Path) -> Option<Id> {
        let (root, rest) = self.split(path)?;
        let mut id = root;
        for c in rest.components() {
            match c {
                Component::Normal(n) => id = self.child(id, n.as_bytes())?,
                _ => return None,
            }
        }
        Some(id)
    }

    /// The root holding `path` and the rest of the path below it.
    fn split<'p>(&self, path: &'p Path) -> Option<(Id, &'p Path)> {
        self.roots
            .iter()
            .filter_map(|&id| {
                let root = OsStr::from_bytes(&self.nodes[id as usize].name);
                path.strip_prefix(root)
                    .ok()
                    .map(|rest| (id, rest, root.len()))
            })
            .max_by_key(|&(_, _, len)| len)
            .map(|(id, rest, _)| (id, rest))
    }

    /// What the index holds for `id`.
    pub fn meta(&self, id: Id) -> Meta {
        self.nodes[id as usize].meta
    }

    /// Replaces what the index holds for `id`.
    pub fn set_meta(&mut self, id: Id, meta: Meta) {
        let n = &mut self.nodes[id as usize];
        if n.meta.is_dir() && !meta.is_dir() {
            self.remove_children(id);
        }
        self.nodes[id as usize].meta = meta;
    }

    /// The node's name (a root's is its whole path).
    pub fn name(&self, id: Id) -> &[u8] {
        &self.nodes[id as usize].name
    }

    /// The node's parent (`None` for a root).
    pub fn parent(&self, id: Id) -> Option<Id> {
        let p = self.nodes[id as usize].parent;
        (p != NONE).then_some(p)
    }

    /// Whether `id` names a node that is still in the index.
    pub fn is_live(&self, id: Id) -> bool {
        self.nodes.get(id as usize).is_some_and(|n| n.live)
    }

    /// The node's full path.
    pub fn path(&self, id: Id) -> PathBuf {
        let mut parts = Vec::new();
        let mut at = id;
        while at != NONE {
            let n = &self.nodes[at as usize];
            parts.push(&*n.name);
            at = n.parent;
        }
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for (i, p) in parts.iter().rev().enumerate() {
            if i > 0 && out.last() != Some(&b'/') {
                out.push(b'/');
            }
            out.extend_from_slice(p);
        }
        PathBuf::from(OsStr::from_bytes(&out))
    }

    /// How deep `id` lies (a root is 0).
    pub fn depth(&self, id: Id) -> usize {
        let mut d = 0;
        let mut at = self.nodes[id as usize].parent;
        while at != NONE {
            d += 1;
            at = self.nodes[at as usize].parent;
        }
        d
    }

    /// Whether `id` is `anc` or lies below it.
    pub fn is_within(&self, mut id: Id, anc: Id) -> bool {
        while id != NONE {
            if id == anc {
                return true;
            }
            id = self.nodes[id as usize].parent;
        }
        false
    }

    /// The children of `id`.
    pub fn children(&self, id: Id) -> Vec<Id> {
        let mut out = Vec::new();
        let mut c = self.nodes[id as usize].first_child;
        while c != NONE {
            out.push(c);
            c = self.nodes[c as usize].next;
        }
        out
    }

    /// Every node at or below `id`, parents before children.
    pub fn subtree(&self, id: Id) -> Vec<Id> {
        let mut out = vec![id];
        let mut i = 0;
        while i < out.len() {
            let mut c = self.nodes[out[i] as usize].first_child;
            while c != NONE {
                out.push(c);
                c = self.nodes[c as usize].next;
            }
            i += 1;
        }
        out
    }

    /// Puts `name` below `parent` with `meta`, replacing what was there (an entry that was a
    /// directory and is no longer one loses its children).
    pub fn insert(&mut self, parent: Id, name: &[u8], meta: Meta) -> Id {
        if let Some(id) = self.child(parent, name) {
            self.set_meta(id, meta);
            return id;
        }
        let id = self.alloc(name, meta, parent);
        self.link(id, parent);
        id
    }

    /// Puts `path` in the index with `meta`, making missing parent directories (as not
    /// known). `None` if `path` lies under no root.
    pub fn put(&mut self, path: &Path, meta: Meta) -> Option<Id> {
        let (root, rest) = self.split(path)?;
        let names: Vec<&OsStr> = rest
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let Some((last, dirs)) = names.split_last() else {
            self.nodes[root as usize].meta = meta;
            return Some(root);
        };
        let mut at = root;
        for d in dirs {
            at = match self.child(at, d.as_bytes()) {
                Some(id) if self.nodes[id as usize].meta.is_dir() => id,
                _ => self.insert(at, d.as_bytes(), Meta::unknown(true)),
            };
        }
        Some(self.insert(at, last.as_bytes(), meta))
    }

    /// Removes `id` and everything below it.
    pub fn remove(&mut self, id: Id) {
        if !self.is_live(id) {
            return;
        }
        let all = self.subtree(id);
        self.unlink(id);
        if self.nodes[id as usize].parent == NONE {
            self.roots.retain(|&r| r != id);
        }
        for n in all {
            if n != id {
                let h = self.hash(self.nodes[n as usize].parent, &self.nodes[n as usize].name);
                if let Ok(e) = self.table.find_entry(h, |&x| x == n) {
                    e.remove();
                }
            }
            self.release(n);
        }
    }

    /// Removes everything below `id`.
    pub fn remove_children(&mut self, id: Id) {
        for c in self.children(id) {
            self.remove(c);
        }
    }

    /// Moves `id` to `name` below `parent`; what was there is removed first. Refused (false)
    /// if `parent` lies within `id`.
    pub fn rename(&mut self, id: Id, parent: Id, name: &[u8]) -> bool {
        if self.is_within(parent, id) {
            return false;
        }
        if let Some(old) = self.child(parent, name) {
            if old == id {
                return true;
            }
            self.remove(old);
        }
        self.unlink(id);
        let n = &mut self.nodes[id as usize];
        self.name_bytes -= alloc_size(n.name.len());
        self.name_bytes += alloc_size(name.len());
        n.name = name.into();
        self.link(id, parent);
        true
    }

    fn alloc(&mut self, name: &[u8], meta: Meta, parent: Id) -> Id {
        let node = Node {
            name: name.into(),
            meta,
            parent,
            first_child: NONE,
            next: NONE,
            prev: NONE,
            live: true,
        };
        self.len += 1;
        self.name_bytes += alloc_size(name.len());
        if let Some(id) = self.free.pop() {
            self.nodes[id as usize] = node;
            id
        } else {
            let id = Id::try_from(self.nodes.len()).expect("fewer than 2^32 entries");
            self.nodes.push(node);
            id
        }
    }

    fn release(&mut self, id: Id) {
        let n = &mut self.nodes[id as usize];
        self.name_bytes -= alloc_size(n.name.len());
        n.name = Box::default();
        n.live = false;
        n.first_child = NONE;
        n.next = NONE;
        n.prev = NONE;
        n.parent = NONE;
        self.len -= 1;
        if self.holding {
            self.held.push(id);
        } else {
            self.free.push(id);
        }
    }

    /// Puts `id` first in `parent`'s children and into the table.
    fn link(&mut self, id: Id, parent: Id) {
        let head = self.nodes[parent as usize].first_child;
        {
            let n = &mut self.nodes[id as usize];
            n.parent = parent;
            n.prev = NONE;
            n.next = head;
        }
        if head != NONE {
            self.nodes[head as usize].prev = id;
        }
        self.nodes[parent as usize].first_child = id;
        let h = self.hash(parent, &self.nodes[id as usize].name);
        let nodes = &self.nodes;
        let hasher = &self.hasher;
        self.table.insert_unique(h, id, |&x| {
            let n = &nodes[x as usize];
            hasher.hash_one((n.parent, &*n.name))
        });
    }

    /// Takes `id` out of its parent's children and out of the table.
    fn unlink(&mut self, id: Id) {
        let (parent, prev, next) = {
            let n = &self.nodes[id as usize];
            (n.parent, n.prev, n.next)
        };
        if parent == NONE {
            return;
        }
        let h = self.hash(parent, &self.nodes[id as usize].name);
        if let Ok(e) = self.table.find_entry(h, |&x| x == id) {
            e.remove();
        }
        if prev != NONE {
            self.nodes[prev as usize].next = next;
        } else {
            self.nodes[parent as usize].first_child = next;
        }
        if next != NONE {
            self.nodes[next as usize].prev = prev;
        }
        let n = &mut self.nodes[id as usize];
        n.prev = NONE;
        n.next = NONE;
    }
}

/// What glibc's malloc takes for `n` bytes: an 8-byte header, rounded up to 16, at least 32.
fn alloc_size(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8).div_ceil(16) * 16).max(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: u64) -> Meta {
        Meta {
            ino,
            kind: Kind::File,
            size: 1,
            mtime_ns: 1,
            ctime_ns: 1,
            btime_ns: 1,
        }
    }

    fn dir(ino: u64) -> Meta {
        Meta {
            kind: Kind::Dir,
            ..file(ino)
        }
    }

    #[test]
    fn put_lookup_rename_remove() {
        let mut ix = TreeIndex::new();
        ix.add_root(Path::new("/r"), dir(1));
        let f = ix.put(Path::new("/r/a/b/f"), file(5)).unwrap();
        assert_eq!(ix.len(), 4);
        assert_eq!(ix.path(f), PathBuf::from("/r/a/b/f"));
        let a = ix.lookup(Path::new("/r/a")).unwrap();
        let r = ix.root(Path::new("/r")).unwrap();
        assert!(ix.rename(a, r, b"z"));
        assert_eq!(ix.path(f), PathBuf::from("/r/z/b/f"));
        assert_eq!(ix.lookup(Path::new("/r/a/b/f")), None);
        assert_eq!(ix.lookup(Path::new("/r/z/b/f")), Some(f));
        // A directory cannot be moved into itself.
        let b = ix.lookup(Path::new("/r/z/b")).unwrap();
        assert!(!ix.rename(a, b, b"x"));
        ix.remove(a);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.lookup(Path::new("/r/z/b/f")), None);
        assert!(ix.put(Path::new("/elsewhere/x"), file(9)).is_none());
    }

    #[test]
    fn rename_onto_an_entry_replaces_it() {
        let mut ix = TreeIndex::new();
        let r = ix.add_root(Path::new("/r"), dir(1));
        let a = ix.put(Path::new("/r/a"), file(2)).unwrap();
        ix.put(Path::new("/r/b"), file(3)).unwrap();
        assert!(ix.rename(a, r, b"b"));
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.meta(ix.lookup(Path::new("/r/b")).unwrap()).ino, 2);
    }

    #[test]
    fn nested_roots_take_the_longest() {
        let mut ix = TreeIndex::new();
        ix.add_root(Path::new("/r"), dir(1));
        ix.add_root(Path::new("/r/in"), dir(2));
        let f = ix.put(Path::new("/r/in/f"), file(3)).unwrap();
        assert_eq!(ix.parent(f), ix.root(Path::new("/r/in")));
    }

    #[test]
    fn a_file_that_becomes_a_directory_and_back_drops_its_children() {
        let mut ix = TreeIndex::new();
        ix.add_root(Path::new("/r"), dir(1));
        ix.put(Path::new("/r/d/x"), file(3)).unwrap();
        ix.put(Path::new("/r/d"), file(4)).unwrap();
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn a_million_files_fit_the_budget() {
        let mut ix = TreeIndex::new();
        let r = ix.add_root(Path::new("/r"), dir(1));
        for d in 0..1000u64 {
            let dn = ix.insert(r, format!("dir{d:04}").as_bytes(), dir(d + 2));
            for f in 0..1000u64 {
                ix.insert(dn, format!("file{f:06}.rs").as_bytes(), file(d * 1000 + f));
            }
        }
        let per = ix.heap_bytes() / ix.len();
        assert!(per < 150, "{per} B per entry");
    }
}
