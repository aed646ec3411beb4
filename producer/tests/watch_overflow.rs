//! Watcher tests that change system-wide inotify limits: run as root, alone (own test binary;
//! its tests take a lock so they do not overlap), and restore every value they change through
//! a guard, panics included. Not root: they print why they skip.

mod support;

use crossbeam_channel::Receiver;
use firehose_producer::watch::{EventKind, OverflowReason, WatchConfig, WatchEvent, Watcher};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
static ALONE: Mutex<()> = Mutex::new(());

/// Sets a sysctl under /proc/sys and puts the old value back when dropped.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: u64) -> Sysctl {
        let old = fs::read_to_string(path).unwrap();
        fs::write(path, value.to_string()).unwrap();
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        fs::write(self.path, self.old.trim()).expect("restoring the sysctl");
    }
}

fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return false;
    }
    println!("SKIPPED {test}: needs root to change /proc/sys/fs/inotify/*");
    true
}

/// Receives until `want` matches, or panics at the deadline.
fn until(rx: &Receiver<WatchEvent>, what: &str, want: impl Fn(&WatchEvent) -> bool) -> WatchEvent {
    let end = Instant::now() + DEADLINE;
    loop {
        let ev = rx
            .recv_deadline(end)
            .unwrap_or_else(|_| panic!("watchdog: {what}"));
        if want(&ev) {
            return ev;
        }
    }
}

fn created(ev: &WatchEvent, path: &Path) -> bool {
    matches!(ev, WatchEvent::Event(e) if e.kind == EventKind::Create && e.path == path)
}

/// Unmounts when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_kernel_queue_overflow_is_reported_once_and_rewalked() {
    if skip_unless_root("kernel overflow") {
        return;
    }
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    // A burst no reader can keep up with: unmounting a file system with 400 watched
    // directories queues an IN_UNMOUNT and an IN_IGNORED for each, 800 events in one system
    // call, into a queue of 4. (With 200 into 64 the reader, on the other core, sometimes
    // drained the queue as fast as the unmount filled it on a loaded machine.)
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "firehose-test"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIPPED kernel overflow: cannot mount a tmpfs here");
        return;
    }
    let mount = Mount(mnt.clone());
    for i in 0..400 {
        fs::create_dir(mnt.join(format!("d{i}"))).unwrap();
    }
    let (watcher, rx) = {
        // The queue size is taken when the inotify instance is made.
        let _small = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", 4);
        Watcher::start(WatchConfig::new(vec![root.clone()])).unwrap()
    };
    assert_eq!(watcher.status().watched_dirs, 402);
    drop(mount);
    let ev = until(&rx, "an overflow", |e| {
        matches!(e, WatchEvent::Overflow { .. })
    });
    assert_eq!(
        ev,
        WatchEvent::Overflow {
            root: None,
            reason: OverflowReason::KernelQueue
        }
    );
    // The re-walk drops the watches of what is gone and watches what is there now (the
    // directory under the mount point).
    let end = Instant::now() + DEADLINE;
    while watcher.status().watched_dirs != 2 {
        assert!(
            Instant::now() < end,
            "watchdog: re-walk {:?}",
            watcher.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let more = Mutex::new(0);
    fs::write(mnt.join("after"), b"").unwrap();
    until(&rx, "event under the old mount point", |e| {
        if matches!(e, WatchEvent::Overflow { .. }) {
            *more.lock().unwrap() += 1;
        }
        created(e, &mnt.join("after"))
    });
    assert_eq!(*more.lock().unwrap(), 0, "one overflow event per episode");
    assert!(watcher.status().overflows >= 1);
}

/// inotify watches currently in use on the system (all users: an upper bound for ours).
fn watches_in_use() -> u64 {
    let mut n = 0;
    for p in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for f in fds.flatten() {
            if let Ok(s) = fs::read_to_string(f.path()) {
                n += s.lines().filter(|l| l.starts_with("inotify wd:")).count() as u64;
            }
        }
    }
    n
}

#[test]
fn the_watch_limit_keeps_what_it_can_and_says_how_to_raise_it() {
    if skip_unless_root("watch limit") {
        return;
    }
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let dirs: Vec<PathBuf> = (0..100).map(|i| root.join(format!("a/d{i:03}"))).collect();
    for d in &dirs {
        fs::create_dir_all(d).unwrap();
    }
    let limit = watches_in_use() + 20;
    let guard = Sysctl::set("/proc/sys/fs/inotify/max_user_watches", limit);
    let (watcher, rx) = Watcher::start(WatchConfig::new(vec![root.clone()])).unwrap();
    let ev = until(&rx, "WatchLimit", |e| {
        matches!(e, WatchEvent::WatchLimit(_))
    });
    let WatchEvent::WatchLimit(w) = ev else {
        unreachable!()
    };
    assert_eq!(w.limit, Some(limit));
    for needle in [
        "fs.inotify.max_user_watches = ",
        "sysctl fs.inotify.max_user_watches=",
        "/etc/sysctl.d/",
    ] {
        assert!(w.message.contains(needle), "{needle} in {}", w.message);
    }
    let s = watcher.status();
    assert!(s.watched_dirs >= 2, "{s:?}"); // the root and a were walked first
    assert!(s.unwatched_count > 0 && s.unwatched_count <= 100, "{s:?}");
    assert_eq!(s.unwatched.len(), s.unwatched_count.min(100));
    assert!(s.unwatched.iter().all(|p| dirs.contains(p)), "{s:?}");
    // Watched directories still report.
    fs::write(root.join("x"), b"").unwrap();
    until(&rx, "event in a watched dir", |e| {
        created(e, &root.join("x"))
    });
    // With the limit back and a watch freed, the rest is watched again.
    drop(guard);
    let watched = dirs
        .iter()
        .find(|d| !s.unwatched.contains(d))
        .expect("some d* is watched");
    fs::remove_dir(watched).unwrap();
    let end = Instant::now() + DEADLINE;
    while watcher.status().unwatched_count > 0 {
        assert!(
            Instant::now() < end,
            "watchdog: retry {:?}",
            watcher.status()
        );
        while rx.try_recv().is_ok() {}
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = dirs.iter().rev().find(|d| *d != watched).unwrap();
    fs::write(last.join("y"), b"").unwrap();
    until(&rx, "event in a formerly unwatched dir", |e| {
        created(e, &last.join("y"))
    });
}

#[test]
fn raising_the_watch_limit_is_enough_and_what_changed_meanwhile_is_rescanned() {
    if skip_unless_root("watch limit") {
        return;
    }
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let dirs: Vec<PathBuf> = (0..60).map(|i| root.join(format!("a/d{i:03}"))).collect();
    for d in &dirs {
        fs::create_dir_all(d).unwrap();
    }
    let limit = watches_in_use() + 20;
    let guard = Sysctl::set("/proc/sys/fs/inotify/max_user_watches", limit);
    let mut cfg = WatchConfig::new(vec![root.clone()]);
    cfg.unwatched_retry = Duration::from_millis(300);
    let (watcher, rx) = Watcher::start(cfg).unwrap();
    until(&rx, "WatchLimit", |e| {
        matches!(e, WatchEvent::WatchLimit(_))
    });
    let s = watcher.status();
    let unwatched = s
        .unwatched
        .first()
        .cloned()
        .expect("an unwatched directory");
    // A change inside an unwatched directory: no event can say so.
    fs::write(unwatched.join("meanwhile"), b"m").unwrap();
    // Raise the limit, as the message advises; no watch is freed.
    drop(guard);
    let ev = until(
        &rx,
        "the overflow of a directory watched at last",
        |e| matches!(e, WatchEvent::Overflow { root: Some(p), reason: OverflowReason::WasUnwatched } if *p == unwatched),
    );
    drop(ev);
    until(&rx, "the rescan of what changed meanwhile", |e| {
        created(e, &unwatched.join("meanwhile"))
    });
    let end = Instant::now() + DEADLINE;
    while watcher.status().unwatched_count > 0 {
        assert!(Instant::now() < end, "watchdog: {:?}", watcher.status());
        while rx.try_recv().is_ok() {}
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(unwatched.join("after"), b"").unwrap();
    until(&rx, "an event in the formerly unwatched directory", |e| {
        created(e, &unwatched.join("after"))
    });
}

use support::{on_disk, replay};

#[test]
fn after_an_overflow_a_reconcile_reports_exactly_what_changed() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    // Nobody reads the watcher's events during the workload and its queues hold 8: events
    // are dropped, and an overflow says so (the same path as a kernel queue overflow).
    overflow_then_reconcile(|cfg| cfg.queue_bound = 8, None);
}

#[test]
fn after_a_fanotify_kernel_queue_overflow_a_reconcile_reports_exactly_what_changed() {
    if skip_unless_root("after_a_fanotify_kernel_queue_overflow") {
        return;
    }
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    // fanotify's queue is sized when the instance is made: 4 events, so the workload
    // overflows the kernel's queue itself (FAN_Q_OVERFLOW), not the watcher's.
    let small = Sysctl::set("/proc/sys/fs/fanotify/max_queued_events", 4);
    overflow_then_reconcile(
        |cfg| cfg.backend = firehose_producer::watch::BackendChoice::Fanotify,
        Some((small, OverflowReason::KernelQueue)),
    );
}

/// A workload far beyond a queue, then: an overflow (of `want`'s reason, if given; the
/// sysctl guard in it is dropped once the watcher runs), a blind range, and a replay of
/// everything that gives the tree on disk, where the live events alone do not.
fn overflow_then_reconcile(
    setup: impl FnOnce(&mut WatchConfig),
    want: Option<(Sysctl, OverflowReason)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let root = base.join("w");
    for d in 0..20 {
        fs::create_dir_all(root.join(format!("old{d}/sub"))).unwrap();
        for f in 0..10 {
            fs::write(root.join(format!("old{d}/sub/f{f}")), b"1").unwrap();
        }
    }
    let before = on_disk(&root);
    let mut cfg = WatchConfig::new(vec![root.clone()]);
    cfg.index_path = Some(base.join("index"));
    setup(&mut cfg);
    let (watcher, rx) = Watcher::start(cfg).unwrap();
    let want = want.map(|(guard, reason)| {
        drop(guard); // the instance has its queue size: put the sysctl back
        reason
    });
    // A workload far beyond the queue: new trees, renames of old ones, edits, removes.
    for d in 0..20 {
        match d % 4 {
            0 => fs::rename(root.join(format!("old{d}")), root.join(format!("moved{d}"))).unwrap(),
            1 => fs::remove_dir_all(root.join(format!("old{d}"))).unwrap(),
            2 => fs::write(root.join(format!("old{d}/sub/f3")), b"changed").unwrap(),
            _ => {
                fs::rename(
                    root.join(format!("old{d}/sub/f1")),
                    root.join(format!("up{d}")),
                )
                .unwrap();
            }
        }
        fs::create_dir_all(root.join(format!("new{d}/a/b"))).unwrap();
        for f in 0..10 {
            fs::write(root.join(format!("new{d}/a/b/n{f}")), b"n").unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // Collect until quiet: the last overflow's blind range has closed and nothing came for
    // two seconds.
    let mut events = Vec::new();
    let mut open = false;
    let mut overflowed = false;
    let end = Instant::now() + DEADLINE;
    loop {
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(ev) => {
                match &ev {
                    WatchEvent::Overflow { reason, .. } => {
                        overflowed |= want.is_none_or(|w| w == *reason);
                        open = true;
                    }
                    WatchEvent::Blind { start: false, .. } => open = false,
                    _ => {}
                }
                events.push(ev);
            }
            Err(_) if !open => break,
            Err(_) => {}
        }
        assert!(
            Instant::now() < end,
            "watchdog: the blind range never closed"
        );
    }
    assert!(overflowed, "the workload overflowed the queue ({want:?})");
    assert!(events.iter().any(|e| matches!(
        e,
        WatchEvent::Blind {
            start: true,
            reason: firehose_producer::watch::BlindReason::Overflow,
            ..
        }
    )));
    assert!(events
        .iter()
        .any(|e| matches!(e, WatchEvent::Event(r) if r.reconciled)));
    let disk = on_disk(&root);
    // Without the reconciled events the replay would be wrong: the overflow lost some.
    let mut live_only = before.clone();
    for ev in events
        .iter()
        .filter(|e| !matches!(e, WatchEvent::Event(r) if r.reconciled))
    {
        replay(&mut live_only, ev);
    }
    assert_ne!(live_only, disk, "the overflow lost events");
    let mut tree = before;
    for ev in &events {
        replay(&mut tree, ev);
    }
    let missing: Vec<_> = disk.difference(&tree).collect();
    let extra: Vec<_> = tree.difference(&disk).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    drop(watcher);
}
