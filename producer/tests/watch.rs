//! The watcher on real inotify and temporary directories. Every workload has its ground truth
//! written down; the events up to a sentinel file (kernel order: everything the workload did
//! comes before it) must match it exactly, so a missing, duplicated or mis-kinded event fails.
//! Waits are watchdogs (poll the channel until a deadline), never sleep-then-assert.

use crossbeam_channel::Receiver;
use firehose_producer::watch::{
    EventKind, OverflowReason, WatchConfig, WatchEvent, WatchStatus, Watcher,
};
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

struct Rig {
    watcher: Watcher,
    rx: Receiver<WatchEvent>,
    root: PathBuf,
    _dir: tempfile::TempDir,
    sentinels: usize,
}

fn rig_with(f: impl FnOnce(&Path, &mut WatchConfig)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let mut cfg = WatchConfig::new(vec![root.clone()]);
    cfg.root_poll = Duration::from_millis(100);
    f(&root, &mut cfg);
    let (watcher, rx) = Watcher::start(cfg).unwrap();
    Rig {
        watcher,
        rx,
        root,
        _dir: dir,
        sentinels: 0,
    }
}

fn rig() -> Rig {
    rig_with(|_, _| {})
}

fn is_sentinel(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".sentinel"))
}

/// An event as text relative to the root: `"create d/f"`, `"rename a -> b"`, `"gone"`...
fn text(root: &Path, ev: &WatchEvent) -> String {
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    match ev {
        WatchEvent::Event(e) => {
            let kind = format!("{:?}", e.kind).to_lowercase();
            let dir = if e.is_dir { "/" } else { "" };
            match &e.path_to {
                Some(to) => format!("{kind} {}{dir} -> {}{dir}", rel(&e.path), rel(to)),
                None => format!("{kind} {}{dir}", rel(&e.path)),
            }
        }
        other => format!("{other:?}"),
    }
}

impl Rig {
    /// Everything the watcher says until the next sentinel shows up (sentinels left out).
    fn settle(&mut self) -> Vec<WatchEvent> {
        self.sentinels += 1;
        let s = self.root.join(format!(".sentinel{}", self.sentinels));
        fs::write(&s, b"").unwrap();
        let mut got = Vec::new();
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let ev = self.rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("watchdog: no sentinel within {DEADLINE:?}; so far: {got:#?}")
            });
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

    fn settle_text(&mut self) -> Vec<String> {
        let root = self.root.clone();
        self.settle().iter().map(|e| text(&root, e)).collect()
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Waits until `f(status)` holds.
    fn wait_status(&self, what: &str, f: impl Fn(&WatchStatus) -> bool) -> WatchStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.watcher.status();
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < end, "watchdog: {what}: {s:#?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn counts(events: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e.clone()).or_default() += 1;
    }
    m
}

#[test]
fn create_write_attributes_delete() {
    let mut r = rig();
    use std::io::Write;
    fs::write(r.p("f"), b"one").unwrap();
    let mut perm = fs::metadata(r.p("f")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    fs::set_permissions(r.p("f"), perm.clone()).unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(r.p("f")).unwrap();
    f.write_all(b"two").unwrap();
    drop(f);
    fs::create_dir(r.p("d")).unwrap();
    fs::set_permissions(r.p("d"), perm).unwrap();
    fs::remove_file(r.p("f")).unwrap();
    fs::remove_dir(r.p("d")).unwrap();
    // Ground truth: create + close of f, chmod, an append (one close, no per-write event),
    // mkdir, chmod of d (once, not also from d's own watch), unlink, rmdir (once). (Two
    // identical events in a row may be merged by the kernel, hence the chmod between.)
    assert_eq!(
        r.settle_text(),
        [
            "create f",
            "closewrite f",
            "metadata f",
            "closewrite f",
            "create d/",
            "metadata d/",
            "remove f",
            "remove d/",
        ]
    );
    let last = r.settle();
    assert!(last.is_empty(), "{last:?}");
}

#[test]
fn modify_when_asked_for_is_one_per_run_of_writes() {
    use std::io::Write;
    let mut r = rig_with(|_, cfg| cfg.report_modify = true);
    let mut f = fs::File::create(r.p("log")).unwrap();
    for _ in 0..100 {
        f.write_all(b"line\n").unwrap();
        f.flush().unwrap();
    }
    drop(f);
    fs::write(r.p("other"), b"x").unwrap();
    assert_eq!(
        r.settle_text(),
        [
            "create log",
            "modify log",
            "closewrite log",
            "create other",
            "modify other",
            "closewrite other"
        ]
    );
}

#[test]
fn close_write_carries_the_size() {
    let mut r = rig();
    fs::write(r.p("f"), b"12345").unwrap();
    let evs = r.settle();
    let sizes: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Event(e) if e.kind == EventKind::CloseWrite => Some(e.size),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [Some(5)]);
}

#[test]
fn renames_within_and_across_directories_are_one_event() {
    let mut r = rig();
    fs::create_dir_all(r.p("a/deep")).unwrap();
    fs::create_dir(r.p("b")).unwrap();
    fs::write(r.p("a/x"), b"x").unwrap();
    r.settle();
    fs::rename(r.p("a/x"), r.p("a/y")).unwrap();
    fs::rename(r.p("a/y"), r.p("b/z")).unwrap();
    fs::rename(r.p("a"), r.p("c")).unwrap();
    // The moved tree is still watched, under its new name, with no gap.
    fs::write(r.p("c/deep/new"), b"n").unwrap();
    fs::rename(r.p("c/deep/new"), r.p("b/new")).unwrap();
    assert_eq!(
        r.settle_text(),
        [
            "rename a/x -> a/y",
            "rename a/y -> b/z",
            "rename a/ -> c/",
            "create c/deep/new",
            "closewrite c/deep/new",
            "rename c/deep/new -> b/new",
        ]
    );
    assert_eq!(r.watcher.status().watched_dirs, 4); // root, b, c, c/deep
}

#[test]
fn moves_in_and_out_of_the_tree() {
    let mut r = rig();
    let out = tempfile::tempdir().unwrap();
    let o = |rel: &str| out.path().join(rel);
    fs::write(o("f"), b"f").unwrap();
    fs::create_dir_all(o("d/sub")).unwrap();
    fs::write(o("d/1"), b"1").unwrap();
    fs::write(o("d/sub/2"), b"2").unwrap();
    fs::rename(o("f"), r.p("f")).unwrap();
    fs::rename(o("d"), r.p("d")).unwrap();
    let got = r.settle_text();
    assert_eq!(got[..2], ["create f", "create d/"]);
    // What arrived inside d is reported once each (scan order is the directory's).
    let inside: BTreeSet<_> = got[2..].iter().cloned().collect();
    assert_eq!(got.len() - 2, inside.len(), "{got:?}");
    assert_eq!(
        inside,
        ["create d/1", "create d/sub/", "create d/sub/2"]
            .map(String::from)
            .into()
    );
    // And it is watched now.
    fs::write(r.p("d/sub/3"), b"3").unwrap();
    assert_eq!(r.settle_text(), ["create d/sub/3", "closewrite d/sub/3"]);
    // Out again: removes; what happens out there is not reported.
    fs::rename(r.p("f"), o("g")).unwrap();
    fs::rename(r.p("d"), o("d2")).unwrap();
    fs::write(o("d2/sub/4"), b"4").unwrap();
    fs::write(r.p("after"), b"").unwrap();
    assert_eq!(
        r.settle_text(),
        ["remove f", "remove d/", "create after", "closewrite after"]
    );
    assert_eq!(r.watcher.status().watched_dirs, 1);
}

#[test]
fn a_burst_of_nested_directories_reports_every_file_once() {
    let mut r = rig();
    let mut truth = BTreeSet::new();
    for i in 0..150 {
        let d = format!("n{i}/m{i}/k{i}");
        fs::create_dir_all(r.p(&d)).unwrap();
        for f in [format!("n{i}/f"), format!("n{i}/m{i}/g"), format!("{d}/h")] {
            fs::write(r.p(&f), b"x").unwrap();
            truth.insert(format!("create {f}"));
        }
        truth.insert(format!("create n{i}/"));
        truth.insert(format!("create n{i}/m{i}/"));
        truth.insert(format!("create {d}/"));
    }
    let got = r.settle_text();
    let creates: Vec<String> = got
        .iter()
        .filter(|e| e.starts_with("create"))
        .cloned()
        .collect();
    let c = counts(&creates);
    let twice: Vec<_> = c.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "reported more than once: {twice:?}");
    let have: BTreeSet<String> = c.into_keys().collect();
    let missing: Vec<_> = truth.difference(&have).collect();
    let extra: Vec<_> = have.difference(&truth).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    // Nothing else but close-writes (of files whose watch was in time).
    assert!(
        got.iter()
            .all(|e| e.starts_with("create") || e.starts_with("closewrite")),
        "{got:?}"
    );
    r.wait_status("every directory watched", |s| s.watched_dirs == 1 + 450);
    // The late kernel events came and went: nothing more is reported.
    assert!(r.settle().is_empty());
}

#[test]
fn ten_thousand_files() {
    let mut r = rig();
    for d in 0..10 {
        fs::create_dir(r.p(&format!("d{d}"))).unwrap();
    }
    r.settle();
    let mut truth = BTreeMap::new();
    let mut got = Vec::new();
    for chunk in 0..10 {
        for i in 0..1000 {
            let f = format!("d{}/f{chunk}-{i}", i % 10);
            fs::write(r.p(&f), b"data").unwrap();
            truth.insert(format!("create {f}"), 1);
            truth.insert(format!("closewrite {f}"), 1);
        }
        // A sentinel per thousand keeps what is in flight well inside the kernel queue.
        got.extend(r.settle_text());
    }
    assert_eq!(got.len(), 20_000);
    assert!(counts(&got) == truth, "differs from the ground truth");
    assert_eq!(r.watcher.status().overflows, 0);
}

#[test]
fn own_files_are_never_reported() {
    let mut r = rig_with(|root, cfg| {
        cfg.ignore = ["history.db", "history.db-wal", "history.db-shm", "lease"]
            .iter()
            .map(|n| root.join(n))
            .collect();
    });
    fs::write(r.p("history.db"), b"db").unwrap();
    fs::write(r.p("history.db-wal"), b"wal").unwrap();
    fs::write(r.p("history.db-shm"), b"shm").unwrap();
    fs::write(r.p("lease.tmp"), b"l").unwrap();
    fs::rename(r.p("lease.tmp"), r.p("lease")).unwrap();
    fs::write(r.p("lease"), b"l2").unwrap();
    fs::remove_file(r.p("history.db-shm")).unwrap();
    fs::write(r.p("user"), b"u").unwrap();
    assert_eq!(
        r.settle_text(),
        [
            "create lease.tmp",
            "closewrite lease.tmp",
            "remove lease.tmp",
            "create user",
            "closewrite user"
        ]
    );
}

#[test]
fn reading_the_tree_makes_no_events() {
    let mut r = rig();
    fs::create_dir_all(r.p("a/b")).unwrap();
    for i in 0..50 {
        fs::write(r.p(&format!("a/b/{i}")), b"content").unwrap();
    }
    r.settle();
    for _ in 0..3 {
        for e in fs::read_dir(r.p("a/b")).unwrap() {
            let p = e.unwrap().path();
            let _ = fs::read(&p).unwrap();
            let _ = fs::metadata(&p).unwrap();
        }
    }
    assert_eq!(r.settle_text(), Vec::<String>::new());
}

#[test]
fn a_root_deleted_and_recreated_is_reported_and_watched_again() {
    let other = tempfile::tempdir().unwrap();
    let other_root = other.path().canonicalize().unwrap();
    let mut r = rig_with(|_, cfg| cfg.roots.push(other_root.clone()));
    fs::create_dir(r.p("sub")).unwrap();
    fs::write(r.p("sub/f"), b"f").unwrap();
    r.settle();
    let root = r.root.clone();
    fs::remove_dir_all(&root).unwrap();
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while !seen.contains(&WatchEvent::RootGone(root.clone())) {
        seen.push(r.rx.recv_deadline(end).expect("watchdog: no RootGone"));
    }
    // The other root carries on.
    fs::write(other_root.join("x"), b"x").unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        if let WatchEvent::Event(e) = r.rx.recv_deadline(end).expect("watchdog: other root") {
            got.push((e.kind, e.path));
        }
    }
    assert_eq!(got[0], (EventKind::Create, other_root.join("x")));
    assert_eq!(r.watcher.status().gone_roots, std::slice::from_ref(&root));
    fs::create_dir(&root).unwrap();
    // Nothing comes from the gone root before it is back.
    let back = r.rx.recv_deadline(end).expect("watchdog: no RootBack");
    assert_eq!(back, WatchEvent::RootBack(root.clone()));
    // RootBack goes out as the root's watch is being set up; the status is published once
    // it is. A file written before that is found by the scan as a create only (no
    // close_write): CI once wrote it in that window on a loaded machine.
    r.wait_status("the root watched again", |s| s.gone_roots.is_empty());
    fs::write(r.p("y"), b"y").unwrap();
    assert_eq!(r.settle_text(), ["create y", "closewrite y"]);
    assert!(r.watcher.status().gone_roots.is_empty());
}

#[test]
fn roots_are_added_and_removed_live() {
    let mut r = rig();
    let extra = tempfile::tempdir().unwrap();
    let extra_root = extra.path().canonicalize().unwrap();
    fs::create_dir(extra_root.join("in")).unwrap();
    let both = vec![r.root.clone(), extra_root.clone()];
    r.watcher.set_roots(both.clone()).unwrap();
    r.wait_status("second root watched", |s| {
        s.roots == both && s.watched_dirs == 3
    });
    fs::write(extra_root.join("in/f"), b"f").unwrap();
    let got: Vec<_> = r
        .settle()
        .into_iter()
        .map(|e| match e {
            WatchEvent::Event(e) => (e.kind, e.path),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got[0], (EventKind::Create, extra_root.join("in/f")));
    r.watcher.set_roots(vec![r.root.clone()]).unwrap();
    r.wait_status("second root dropped", |s| s.watched_dirs == 1);
    fs::write(extra_root.join("in/g"), b"g").unwrap();
    assert_eq!(r.settle_text(), Vec::<String>::new());
}

#[test]
fn a_full_watcher_queue_is_one_overflow_and_then_everything_is_watched() {
    let mut r = rig_with(|_, cfg| cfg.queue_bound = 16);
    // Nobody reads while 2,000 files and a new directory appear: the core blocks on the
    // output channel, the reader's queue fills, events are dropped.
    for i in 0..2000 {
        fs::write(r.p(&format!("f{i}")), b"").unwrap();
    }
    fs::create_dir(r.p("late")).unwrap();
    let end = Instant::now() + DEADLINE;
    let mut overflows = 0;
    let mut creates = 0;
    // Drain until the watcher says it re-walked (status shows the new directory watched).
    loop {
        assert!(Instant::now() < end, "watchdog: draining");
        match r.rx.recv_timeout(Duration::from_millis(20)) {
            Ok(WatchEvent::Overflow { reason, root }) => {
                assert_eq!((reason, root), (OverflowReason::WatcherQueue, None));
                overflows += 1;
            }
            Ok(WatchEvent::Event(e)) if e.kind == EventKind::Create => creates += 1,
            _ => {}
        }
        let s = r.watcher.status();
        if overflows > 0 && r.rx.is_empty() && s.watched_dirs == 2 {
            break;
        }
    }
    assert_eq!(overflows, 1, "one overflow per episode");
    assert!(creates < 2001, "events were dropped, yet {creates} creates");
    let s = r.watcher.status();
    assert!(s.overflows >= 1 && s.dropped_events > 0, "{s:?}");
    // The directory whose creation was lost got its watch back from the re-walk.
    fs::write(r.p("late/x"), b"").unwrap();
    let got = r.settle_text();
    assert!(got.contains(&"create late/x".to_string()), "{got:?}");
}

/// Cross-check with inotifywait (inotify-tools) on the same tree: both see the same paths.
#[test]
fn agrees_with_inotifywait() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut r = rig();
    fs::create_dir_all(r.p("a/b")).unwrap();
    fs::create_dir(r.p("c")).unwrap();
    r.settle();
    let child = Command::new("inotifywait")
        .args([
            "-m",
            "-r",
            "-e",
            "create,delete,moved_from,moved_to,close_write",
        ])
        .args(["--format", "%e %w%f"])
        .arg(&r.root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        println!("SKIPPED: inotifywait not found (apt-get install inotify-tools)");
        return;
    };
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("Watches established") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "inotifywait: {line}");
    }
    let (tx, lines) = crossbeam_channel::unbounded();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            if tx.send(l.unwrap()).is_err() {
                break;
            }
        }
    });
    // The workload: in directories both watchers already watch.
    for i in 0..100 {
        fs::write(r.p(&format!("a/b/f{i}")), b"x").unwrap();
    }
    for i in 0..50 {
        fs::rename(r.p(&format!("a/b/f{i}")), r.p(&format!("c/g{i}"))).unwrap();
    }
    for i in 50..80 {
        fs::remove_file(r.p(&format!("a/b/f{i}"))).unwrap();
    }
    fs::create_dir(r.p("c/new")).unwrap();
    fs::remove_dir(r.p("c/new")).unwrap();
    let ours: BTreeSet<PathBuf> = r
        .settle()
        .into_iter()
        .flat_map(|e| match e {
            WatchEvent::Event(e) => [Some(e.path), e.path_to],
            other => panic!("{other:?}"),
        })
        .flatten()
        .collect();
    let sentinel = r.p(&format!(".sentinel{}", r.sentinels));
    let mut theirs = BTreeSet::new();
    let end = Instant::now() + DEADLINE;
    loop {
        let l = lines.recv_deadline(end).expect("watchdog: inotifywait");
        let path = PathBuf::from(l.split_once(' ').unwrap().1);
        if path == sentinel {
            break;
        }
        if !is_sentinel(&path) {
            theirs.insert(path);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 100 + 50 + 1);
}

fn replay(events: &[WatchEvent]) -> BTreeSet<PathBuf> {
    support::replay_all(events)
}

/// Every path below `root` on disk (sentinels left out).
fn on_disk(root: &Path) -> BTreeSet<PathBuf> {
    support::on_disk_except(root, is_sentinel)
}

#[test]
fn directories_filled_and_renamed_at_once_replay_to_the_tree_on_disk() {
    // What cargo does with target/, npm and atomic installs: make a directory, fill it,
    // rename it at once. The watcher often reads the directory's creation after the rename.
    let mut r = rig();
    let mut events = Vec::new();
    for round in 0..3 {
        for i in 0..200 {
            let tmp = r.p(&format!("tmp{round}-{i}"));
            fs::create_dir(&tmp).unwrap();
            fs::write(tmp.join("a"), b"a").unwrap();
            fs::write(tmp.join("b"), b"b").unwrap();
            fs::create_dir(tmp.join("sub")).unwrap();
            fs::write(tmp.join("sub/c"), b"c").unwrap();
            fs::rename(&tmp, r.p(&format!("final{round}-{i}"))).unwrap();
        }
        events.extend(r.settle());
        let want = on_disk(&r.root);
        let got = replay(&events);
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "round {round}: {} missing (e.g. {:?}), {} extra (e.g. {:?})",
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first()
        );
    }
    // And everything that arrived is watched: a write deep inside is seen.
    fs::write(r.p("final2-199/sub/d"), b"d").unwrap();
    let got = r.settle_text();
    assert!(
        got.contains(&"create final2-199/sub/d".to_string()),
        "{got:?}"
    );
}

#[test]
fn a_root_symlink_pointed_elsewhere_is_noticed_and_what_is_there_reported() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    fs::create_dir_all(base.join("a")).unwrap();
    fs::create_dir_all(base.join("b/sub")).unwrap();
    fs::write(base.join("b/sub/f"), b"f").unwrap();
    let link = base.join("root");
    std::os::unix::fs::symlink(base.join("a"), &link).unwrap();
    let mut cfg = WatchConfig::new(vec![link.clone()]);
    cfg.identity_check = Duration::from_millis(200);
    let (watcher, rx) = Watcher::start(cfg).unwrap();
    // Re-point the root: no inotify event says so.
    let tmp = base.join("root.new");
    std::os::unix::fs::symlink(base.join("b"), &tmp).unwrap();
    fs::rename(&tmp, &link).unwrap();
    let mut got = Vec::new();
    let end = Instant::now() + DEADLINE;
    while !got
        .iter()
        .any(|e| matches!(e, WatchEvent::Event(e) if e.path == link.join("sub/f")))
    {
        let left = end.saturating_duration_since(Instant::now());
        got.push(
            rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("watchdog: the re-pointed root was not noticed: {got:#?}")
            }),
        );
    }
    assert_eq!(
        got[0],
        WatchEvent::Overflow {
            root: Some(link.clone()),
            reason: OverflowReason::RootReplaced
        }
    );
    assert!(got
        .iter()
        .any(|e| matches!(e, WatchEvent::Event(e) if e.path == link.join("sub") && e.kind == EventKind::Create)));
    // The new directory is the one watched now.
    fs::write(base.join("b/sub/g"), b"g").unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let ev = rx
            .recv_timeout(left)
            .expect("watchdog: no event from the new directory");
        if matches!(&ev, WatchEvent::Event(e) if e.path == link.join("sub/g")) {
            break;
        }
    }
    drop(watcher);
}
