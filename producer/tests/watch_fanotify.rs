//! The fanotify backend on real filesystems: a workload whose history must replay to the
//! tree on disk, and the same workload seen by `inotifywait` (an independent oracle) and by
//! this watcher. fanotify needs root (CAP_SYS_ADMIN); without it these tests say so and skip.

mod support;

use crossbeam_channel::Receiver;
use firehose_producer::watch::{
    Backend, BackendChoice, EventKind, WatchConfig, WatchEvent, Watcher,
};
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

fn fanotify_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("{test}: skipped: fanotify needs root");
    }
    root
}

/// A scratch folder with the watched root `w` and a sibling `outside` on the same
/// filesystem (to move things in and out).
fn scratch(name: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::Builder::new()
        .prefix(&format!("fh-fan-{name}-"))
        .tempdir()
        .unwrap();
    let base = d.path().canonicalize().unwrap();
    fs::create_dir(base.join("w")).unwrap();
    fs::create_dir(base.join("outside")).unwrap();
    (d, base.join("w"), base.join("outside"))
}

fn start(root: &Path) -> (Watcher, Receiver<WatchEvent>) {
    let mut cfg = WatchConfig::new(vec![root.to_path_buf()]);
    cfg.backend = BackendChoice::Fanotify;
    Watcher::start(cfg).expect("fanotify starts as root")
}

fn is_sentinel(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".sentinel"))
}

/// Everything the watcher says until the sentinel's create (kernel order: everything the
/// workload did comes first), the sentinel left out.
fn settle(rx: &Receiver<WatchEvent>, root: &Path) -> Vec<WatchEvent> {
    let s = root.join(".sentinel");
    fs::write(&s, b"").unwrap();
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let ev = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("watchdog: no sentinel within {DEADLINE:?}"));
        if let WatchEvent::Event(e) = &ev {
            if e.path == s && e.kind == EventKind::Create {
                fs::remove_file(&s).unwrap();
                return got;
            }
            if is_sentinel(&e.path) {
                continue;
            }
        }
        got.push(ev);
    }
}

/// Writes a small tree of `dirs` directories with `files` files each below `at`.
fn fill(at: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let dir = at.join(format!("d{d}/sub"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            fs::write(dir.join(format!("f{f}.txt")), format!("{d}/{f}")).unwrap();
        }
    }
}

/// What users do: unpack, build, save atomically, move trees in, out and around, delete.
fn workload(w: &Path, outside: &Path) {
    fill(&w.join("unpacked"), 30, 20);
    // A directory made, filled and renamed at once (cargo's target/, npm).
    fs::create_dir(w.join("staging")).unwrap();
    fill(&w.join("staging"), 3, 5);
    fs::rename(w.join("staging"), w.join("installed")).unwrap();
    // Atomic saves: write a temporary, rename it over the original, ten times.
    fs::write(w.join("doc.txt"), b"v0").unwrap();
    for i in 1..=10 {
        let tmp = w.join(format!(".doc.txt.{i}.tmp"));
        fs::write(&tmp, format!("v{i}")).unwrap();
        fs::rename(&tmp, w.join("doc.txt")).unwrap();
    }
    // A tree moved in from outside the root, one moved out, one renamed and edited inside.
    fill(&outside.join("incoming"), 4, 4);
    fs::rename(outside.join("incoming"), w.join("incoming")).unwrap();
    fs::rename(w.join("unpacked/d1"), outside.join("d1")).unwrap();
    fs::rename(w.join("unpacked/d2"), w.join("renamed")).unwrap();
    fs::write(w.join("renamed/sub/new.txt"), b"x").unwrap();
    fs::remove_file(w.join("renamed/sub/f0.txt")).unwrap();
    // Swap two directories through a third name.
    fs::rename(w.join("unpacked/d3"), w.join("unpacked/tmp")).unwrap();
    fs::rename(w.join("unpacked/d4"), w.join("unpacked/d3")).unwrap();
    fs::rename(w.join("unpacked/tmp"), w.join("unpacked/d4")).unwrap();
    // rm -rf of a subtree, and of a directory just made.
    fs::remove_dir_all(w.join("unpacked/d5")).unwrap();
    fill(&w.join("brief"), 2, 3);
    fs::remove_dir_all(w.join("brief")).unwrap();
    // Changes outside the root make no event.
    fill(&outside.join("noise"), 5, 5);
}

#[test]
fn a_real_workload_replays_to_the_tree_on_disk() {
    if !fanotify_or_skip("a_real_workload_replays_to_the_tree_on_disk") {
        return;
    }
    let (_d, w, outside) = scratch("replay");
    fs::write(w.join("before"), b"old").unwrap();
    let (watcher, rx) = start(&w);
    let s = watcher.status();
    assert_eq!(s.backend, Backend::Fanotify, "{s:?}");
    assert_eq!(s.watched_dirs, 0, "no watch per directory: {s:?}");
    workload(&w, &outside);
    let events = settle(&rx, &w);
    for e in &events {
        match e {
            WatchEvent::Event(e) => {
                assert!(e.path.starts_with(&w), "outside the root: {e:?}");
                if let Some(to) = &e.path_to {
                    assert!(to.starts_with(&w), "outside the root: {e:?}");
                }
            }
            other => panic!("no overflow or other notice expected: {other:?}"),
        }
    }
    let mut tree: BTreeSet<PathBuf> = [w.join("before")].into();
    for e in &events {
        support::replay(&mut tree, e);
    }
    let disk = support::on_disk_except(&w, is_sentinel);
    let missing: Vec<_> = disk.difference(&tree).collect();
    let extra: Vec<_> = tree.difference(&disk).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "replay differs from disk: missing {missing:#?}, extra {extra:#?}"
    );
    assert!(
        disk.len() > 500,
        "the workload made a real tree: {}",
        disk.len()
    );
    // The moved-in tree came as creates, with its contents; the atomic saves as renames.
    let creates: BTreeSet<&Path> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Event(e) if e.kind == EventKind::Create => Some(e.path.as_path()),
            _ => None,
        })
        .collect();
    assert!(creates.contains(w.join("incoming/d3/sub/f3.txt").as_path()));
    let saves = events
        .iter()
        .filter(|e| {
            matches!(e, WatchEvent::Event(e) if e.kind == EventKind::Rename
            && e.path_to.as_deref() == Some(w.join("doc.txt").as_path()))
        })
        .count();
    assert_eq!(saves, 10);
    let (hits, misses) = watcher.status().path_cache;
    assert!(
        hits >= 9 * misses,
        "the path cache answers at least 9 lookups of 10: {hits} hits, {misses} misses"
    );
}

/// An event as `inotifywait` would print it, relative to the root: `CREATE a/b`,
/// `MOVED_FROM a`, `MOVED_TO b`, `DELETE c` (directories with a trailing `/`).
fn ours_as_inotify(w: &Path, events: &[WatchEvent]) -> BTreeSet<String> {
    let rel = |p: &Path, dir: bool| {
        format!(
            "{}{}",
            p.strip_prefix(w).unwrap().display(),
            if dir { "/" } else { "" }
        )
    };
    let mut out = BTreeSet::new();
    for e in events {
        let WatchEvent::Event(e) = e else { continue };
        if e.path.ends_with(".probe") {
            continue; // the oracle's start-up probe
        }
        let p = rel(&e.path, e.is_dir);
        match e.kind {
            EventKind::Create => out.insert(format!("CREATE {p}")),
            EventKind::Remove => out.insert(format!("DELETE {p}")),
            EventKind::CloseWrite => out.insert(format!("CLOSE_WRITE {p}")),
            EventKind::Rename => {
                out.insert(format!("MOVED_FROM {p}"));
                out.insert(format!(
                    "MOVED_TO {}",
                    rel(e.path_to.as_ref().unwrap(), e.is_dir)
                ))
            }
            _ => false,
        };
    }
    out
}

#[test]
fn fanotify_and_inotifywait_see_the_same_changes() {
    if !fanotify_or_skip("fanotify_and_inotifywait_see_the_same_changes") {
        return;
    }
    if Command::new("inotifywait").arg("--help").output().is_err() {
        eprintln!("skipped: inotifywait is not installed (apt-get install inotify-tools)");
        return;
    }
    let (_d, w, outside) = scratch("oracle");
    let (_watcher, rx) = start(&w);
    let mut oracle = Command::new("inotifywait")
        .args([
            "-m",
            "-r",
            "-q",
            "-e",
            "create,delete,moved_from,moved_to,close_write",
        ])
        .args(["--format", "%e|%w%f"])
        .arg(&w)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // inotifywait says nothing with -q once its watches are up: wait until it reports a
    // probe file.
    let out = oracle.stdout.take().unwrap();
    let (tx, lines) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let end = Instant::now() + DEADLINE;
    loop {
        fs::write(w.join(".probe"), b"").unwrap();
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
            if l.contains(".probe") {
                break;
            }
        }
        assert!(Instant::now() < end, "inotifywait never came up");
    }
    fs::remove_file(w.join(".probe")).unwrap();
    // Paced where inotifywait needs it: it adds a watch to each new directory only after
    // seeing its create, so a file made in it sooner would be its miss, not ours.
    let pace = || std::thread::sleep(Duration::from_millis(50));
    for d in 0..5 {
        fs::create_dir(w.join(format!("d{d}"))).unwrap();
        pace();
        for f in 0..10 {
            fs::write(w.join(format!("d{d}/f{f}")), b"x").unwrap();
        }
    }
    fs::rename(w.join("d0"), w.join("d0-renamed")).unwrap();
    fs::rename(w.join("d1/f1"), w.join("d2/f1-moved")).unwrap();
    fs::write(w.join("save.tmp"), b"new").unwrap();
    fs::rename(w.join("save.tmp"), w.join("d3/f3")).unwrap();
    fs::write(outside.join("in"), b"x").unwrap();
    fs::rename(outside.join("in"), w.join("in")).unwrap();
    fs::rename(w.join("d4/f4"), outside.join("out")).unwrap();
    fs::remove_dir_all(w.join("d4")).unwrap();
    pace();
    let ours = ours_as_inotify(&w, &settle(&rx, &w));
    // The oracle's view up to the same sentinel. A move from outside the root is its
    // MOVED_TO alone, a move out its MOVED_FROM alone: ours are a create and a delete.
    let mut seen: Vec<(String, String)> = Vec::new();
    let end = Instant::now() + DEADLINE;
    loop {
        let l = lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .expect("inotifywait reports the sentinel");
        let (ev, path) = l.split_once('|').unwrap();
        let path = Path::new(path);
        if is_sentinel(path) {
            if ev.contains("DELETE") {
                break;
            }
            continue;
        }
        if path.ends_with(".probe") {
            continue;
        }
        let dir = ev.contains("ISDIR");
        let rel = format!(
            "{}{}",
            path.strip_prefix(&w).unwrap().display(),
            if dir { "/" } else { "" }
        );
        for kind in ev.split(',').filter(|k| !matches!(*k, "ISDIR" | "CLOSE")) {
            seen.push((kind.to_string(), rel.clone()));
        }
    }
    let mut theirs = BTreeSet::new();
    for (i, (kind, rel)) in seen.iter().enumerate() {
        let next_is_to = seen.get(i + 1).is_some_and(|(k, _)| k == "MOVED_TO");
        let prev_is_from = i > 0 && seen[i - 1].0 == "MOVED_FROM";
        let kind = match kind.as_str() {
            "MOVED_FROM" if !next_is_to => "DELETE",
            "MOVED_TO" if !prev_is_from => "CREATE",
            k => k,
        };
        theirs.insert(format!("{kind} {rel}"));
    }
    let _ = oracle.kill();
    let _ = oracle.wait();
    let only_ours: Vec<_> = ours.difference(&theirs).collect();
    let only_theirs: Vec<_> = theirs.difference(&ours).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "fanotify and inotifywait differ: only ours {only_ours:#?}, only inotifywait's {only_theirs:#?}"
    );
    assert!(ours.len() > 100, "{}", ours.len());
}
