//! Measure: a workload creating files as fast as it can on one core (CPU 0) while the watcher
//! runs (its threads and a consumer on the other core), at the default kernel queue size.
//! Prints files/s created, events/s received, and whether anything overflowed.
//!
//! `cargo run --release -p firehose-producer --example watch_rate [FILES]`

use firehose_producer::watch::{WatchConfig, WatchEvent, Watcher};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

fn main() {
    let files: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical");
    let dirs = 20;
    for d in 0..dirs {
        std::fs::create_dir(root.join(format!("d{d}"))).expect("mkdir");
    }
    // Watcher threads are spawned from a thread pinned to CPU 1 and inherit it.
    let (watcher, rx) = std::thread::spawn({
        let root = root.clone();
        move || {
            pin(1);
            Watcher::start(WatchConfig::new(vec![root])).expect("start")
        }
    })
    .join()
    .expect("start thread");
    let consumer = std::thread::spawn(move || {
        pin(1);
        let (mut events, mut overflows) = (0u64, 0u64);
        let mut last = Instant::now();
        let want = 2 * files as u64; // a create and a close-write per file
        while events < want {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(WatchEvent::Event(_)) => {
                    events += 1;
                    last = Instant::now();
                }
                Ok(WatchEvent::Overflow { .. }) => overflows += 1,
                Ok(_) => {}
                Err(_) => break, // lost events never come
            }
        }
        (events, overflows, last)
    });
    pin(0);
    let start = Instant::now();
    for i in 0..files {
        std::fs::File::create(root.join(format!("d{}/f{i}", i % dirs))).expect("create");
    }
    let wrote = start.elapsed();
    let (events, overflows, last) = consumer.join().expect("consumer");
    let received = last.duration_since(start);
    let status = watcher.status();
    let queue = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap_or_default()
        .trim()
        .to_string();
    println!(
        "files: {files} in {:.3} s = {:.0} files/s (writer on CPU 0)",
        wrote.as_secs_f64(),
        files as f64 / wrote.as_secs_f64()
    );
    println!(
        "events: {events} of {} in {:.3} s = {:.0} events/s (watcher and consumer on CPU 1)",
        2 * files,
        received.as_secs_f64(),
        events as f64 / received.as_secs_f64()
    );
    println!(
        "overflow events: {overflows}; status overflows {}, dropped {}; max_queued_events {queue}",
        status.overflows, status.dropped_events
    );
}
