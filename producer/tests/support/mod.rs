//! What the producer's integration tests share: replaying events onto a set of paths and
//! listing the tree on disk, the two sides of "history gives the tree on disk".

#![allow(dead_code)] // each test binary uses its own part

use firehose_producer::watch::{EventKind, WatchEvent};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Replays one change onto `tree`: create adds, remove drops the subtree, rename moves it
/// (over whatever was at its target); the other kinds change nothing.
pub(crate) fn replay_one(
    tree: &mut BTreeSet<PathBuf>,
    kind: EventKind,
    path: &Path,
    to: Option<&Path>,
) {
    match kind {
        EventKind::Create => {
            tree.insert(path.to_path_buf());
        }
        EventKind::Remove => tree.retain(|x| !x.starts_with(path)),
        EventKind::Rename => {
            let to = to.expect("a rename has a target");
            let moved: Vec<PathBuf> = tree
                .iter()
                .filter(|x| x.starts_with(path))
                .cloned()
                .collect();
            tree.retain(|x| !x.starts_with(path) && !x.starts_with(to));
            for m in moved {
                let rest = m.strip_prefix(path).unwrap();
                tree.insert(if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                });
            }
        }
        _ => {}
    }
}

/// Replays one watcher event (overflows and the rest change nothing).
pub(crate) fn replay(tree: &mut BTreeSet<PathBuf>, ev: &WatchEvent) {
    if let WatchEvent::Event(e) = ev {
        replay_one(tree, e.kind, &e.path, e.path_to.as_deref());
    }
}

/// Replays every event from an empty tree.
pub(crate) fn replay_all<'a>(
    events: impl IntoIterator<Item = &'a WatchEvent>,
) -> BTreeSet<PathBuf> {
    let mut tree = BTreeSet::new();
    for ev in events {
        replay(&mut tree, ev);
    }
    tree
}

/// Every path below `root` on disk, except those `skip` says to leave out.
pub(crate) fn on_disk_except(root: &Path, skip: impl Fn(&Path) -> bool) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if skip(&p) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

/// Every path below `root` on disk.
pub(crate) fn on_disk(root: &Path) -> BTreeSet<PathBuf> {
    on_disk_except(root, |_| false)
}
