//! Measure, inotify against fanotify in one run, on a real tree (default 1,000,000 files in
//! 10,100 directories, made once under `--dir` and kept):
//!
//! 1. setup: `Watcher::start` until every change is seen (inotify walks and adds a watch per
//!    directory; fanotify marks the filesystem);
//! 2. the tree index: the walk that builds it, and its bytes per entry;
//! 3. reconcile after a stop: 1% of the files changed (a third rewritten, a third renamed,
//!    a third deleted and as many created), then the walk that finds exactly those;
//! 4. the fastest creation workload: one writer process per core creating, writing and
//!    closing files in their own directories, at the default kernel queue; every create must
//!    arrive, with no overflow.
//!
//! Run as root (fanotify): `cargo run --release -p firehose-producer --example watch_scale --
//! [--files N] [--dir D] [--writes N] [--burst-dir D]` (`--burst-dir /dev/shm` for the
//! creation workload on tmpfs). The page cache is warm for both backends (the tree
//! is walked once first); figures are medians of three where quick enough.

use firehose_producer::index::reconcile::{reconcile, Change, Options};
use firehose_producer::index::TreeIndex;
use firehose_producer::watch::{BackendChoice, EventKind, WatchConfig, WatchEvent, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

/// Writer child: creates, writes and closes `n` files in `dir`.
fn writer(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).expect("writer dir");
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i}")), b"x").expect("write");
    }
}

fn make_tree(root: &Path, files: usize) {
    let marker = root.join(format!(".complete-{files}"));
    if marker.exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(root);
    let per = 100;
    let dirs = files.div_ceil(per);
    let t = Instant::now();
    for d in 0..dirs {
        let dir = root.join(format!("d{}/e{}", d / 100, d % 100));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..per.min(files - d * per) {
            std::fs::write(dir.join(format!("f{f}")), b"x").expect("file");
        }
        if d % 1000 == 0 {
            eprint!("\rmaking the tree: {}/{files} files", d * per);
        }
    }
    std::fs::write(&marker, b"").expect("marker");
    eprintln!("\rmade {files} files in {:.1} s", t.elapsed().as_secs_f64());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Setup until the watcher sees a change in the deepest last directory.
fn setup(root: &Path, backend: BackendChoice) -> f64 {
    let mut cfg = WatchConfig::new(vec![root.to_path_buf()]);
    cfg.backend = backend;
    let t = Instant::now();
    let (w, rx) = Watcher::start(cfg).expect("start");
    let took = t.elapsed().as_secs_f64();
    let probe = root.join("d0/e0/.probe");
    std::fs::write(&probe, b"").expect("probe");
    loop {
        match rx
            .recv_timeout(Duration::from_secs(30))
            .expect("probe event")
        {
            WatchEvent::Event(e) if e.path == probe => break,
            _ => {}
        }
    }
    let _ = std::fs::remove_file(&probe);
    drop(w);
    took
}

fn index_and_reconcile(root: &Path, files: usize) {
    let ignore = HashSet::new();
    let all = Options {
        ignore: &ignore,
        trusted_before_ns: i64::MIN,
    };
    let mut ix = TreeIndex::new();
    let t = Instant::now();
    reconcile(&mut ix, root, &all, &mut |_| {});
    let built = t.elapsed().as_secs_f64();
    println!(
        "index     built by a walk of {} entries in {built:.2} s; {:.1} bytes per entry ({:.1} MiB)",
        ix.len(),
        ix.heap_bytes() as f64 / ix.len() as f64,
        ix.heap_bytes() as f64 / (1 << 20) as f64
    );
    // The stop: recorded now, changes made more than the timestamp margin later.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    std::thread::sleep(Duration::from_millis(1100));
    let changed = files / 100;
    let dirs = files.div_ceil(100);
    let mut made = 0;
    for k in 0..changed {
        // Spread over the tree: every 100th file, in a different directory each time.
        let d = (k * 7919) % dirs;
        let dir = root.join(format!("d{}/e{}", d / 100, d % 100));
        let f = k % 100;
        let p = dir.join(format!("f{f}"));
        if !p.exists() {
            continue;
        }
        match k % 3 {
            0 => std::fs::write(&p, b"changed while stopped").expect("rewrite"),
            1 => std::fs::rename(&p, dir.join(format!("r{f}"))).expect("rename"),
            _ => {
                std::fs::remove_file(&p).expect("remove");
                std::fs::write(dir.join(format!("n{f}")), b"new").expect("create");
            }
        }
        made += 1;
    }
    let opts = Options {
        ignore: &ignore,
        trusted_before_ns: since - 1_000_000_000,
    };
    let mut counts = [0usize; 5];
    let t = Instant::now();
    let out = reconcile(&mut ix, root, &opts, &mut |c| {
        counts[match c {
            Change::Create { .. } => 0,
            Change::Remove { .. } => 1,
            Change::Rename { .. } => 2,
            Change::Modify { .. } => 3,
            Change::Metadata { .. } => 4,
        }] += 1
    });
    let took = t.elapsed().as_secs_f64();
    println!(
        "reconcile {made} files changed (1%): {took:.2} s; {} directories listed, {} skipped; \
         found {} creates, {} removes, {} renames, {} modifies, {} metadata",
        out.listed, out.skipped, counts[0], counts[1], counts[2], counts[3], counts[4]
    );
    // Put the tree back for the next run.
    for k in 0..changed {
        let d = (k * 7919) % dirs;
        let dir = root.join(format!("d{}/e{}", d / 100, d % 100));
        let f = k % 100;
        for stale in [format!("r{f}"), format!("n{f}")] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        let _ = std::fs::write(dir.join(format!("f{f}")), b"x");
    }
}

/// One writer process per core; returns (files/s, creates seen, overflows and why).
fn creation(base: &Path, backend: BackendChoice, writes: usize) -> (f64, usize, String) {
    let root = base.join(format!("burst-{backend:?}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("burst root");
    let mut cfg = WatchConfig::new(vec![root.clone()]);
    cfg.backend = backend;
    let (w, rx) = Watcher::start(cfg).expect("start");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let exe = std::env::current_exe().expect("exe");
    let want = cores * writes;
    // The consumer drains while the writers write, as the service does.
    let consumer = std::thread::spawn(move || {
        let (mut creates, mut overflows) = (0, Vec::new());
        let end = Instant::now() + Duration::from_secs(120);
        while creates < want && Instant::now() < end {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(WatchEvent::Event(e)) if e.kind == EventKind::Create && !e.is_dir => {
                    creates += 1
                }
                Ok(WatchEvent::Overflow { reason, .. }) => overflows.push(format!("{reason:?}")),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (creates, overflows)
    });
    let t = Instant::now();
    let kids: Vec<_> = (0..cores)
        .map(|c| {
            Command::new(&exe)
                .arg("--writer")
                .arg(root.join(format!("w{c}")))
                .arg(writes.to_string())
                .spawn()
                .expect("writer")
        })
        .collect();
    for mut k in kids {
        assert!(k.wait().expect("writer").success());
    }
    let took = t.elapsed().as_secs_f64();
    let (creates, mut overflows) = consumer.join().expect("consumer");
    let (hits, misses) = w.status().path_cache;
    if hits + misses > 0 {
        overflows.push(format!("path cache {hits} hits, {misses} misses"));
    }
    drop(w);
    let _ = std::fs::remove_dir_all(&root);
    let overflows = if overflows.iter().all(|o| o.starts_with("path cache")) {
        format!("no overflow {}", overflows.join(""))
    } else {
        format!("overflows: {}", overflows.join(", "))
    };
    ((want as f64) / took, creates, overflows)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.get(1).map(String::as_str) == Some("--writer") {
        writer(Path::new(&a[2]), a[3].parse().expect("count"));
        return;
    }
    let files: usize = arg("--files")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let base = PathBuf::from(arg("--dir").unwrap_or_else(|| "/var/tmp/firehose-scale".into()));
    let writes: usize = arg("--writes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tree = base.join("tree");
    make_tree(&tree, files);
    // Warm the page cache and the dentry cache for both backends alike.
    let ix_warm = Instant::now();
    let mut n = 0u64;
    let mut stack = vec![tree.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("list").flatten() {
            n += 1;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    println!(
        "tree      {} entries, one warm walk {:.2} s",
        n,
        ix_warm.elapsed().as_secs_f64()
    );
    for backend in [BackendChoice::Inotify, BackendChoice::Fanotify] {
        let runs: Vec<f64> = (0..3).map(|_| setup(&tree, backend)).collect();
        println!(
            "setup     {:<9} median {:.3} s of {:?}",
            format!("{backend:?}"),
            median(runs.clone()),
            runs.iter()
                .map(|r| (r * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        );
    }
    index_and_reconcile(&tree, files);
    let burst = arg("--burst-dir").map_or(base.clone(), PathBuf::from);
    // Interleaved, twice: this machine's file creation rate drifts by a factor of several.
    for backend in [
        BackendChoice::Inotify,
        BackendChoice::Fanotify,
        BackendChoice::Inotify,
        BackendChoice::Fanotify,
    ] {
        let (rate, seen, overflows) = creation(&burst, backend, writes);
        println!(
            "creation  {:<9} {:.0} files/s by {} writer processes; {seen} of {} creates seen, {overflows}",
            format!("{backend:?}"),
            rate,
            std::thread::available_parallelism().map_or(2, |n| n.get()),
            writes * std::thread::available_parallelism().map_or(2, |n| n.get()),
        );
    }
}
