//! File event to reader, through a running `firehosed`: creates files at a steady rate in a
//! directory the service watches, reads the stream as a lagging reader, and reports the
//! latency from the moment the watcher read each kernel event (the record's `time_ns`) to
//! the moment this reader got the record, as HDR percentiles, plus from the file's creation
//! to the record (the whole path a user sees).
//!
//! ```sh
//! firehosed --watch /tmp/fh-lat &            # release build
//! cargo run --release -p firehose-producer --example file_latency -- /tmp/fh-lat 10000 10
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firehose_transport::control::client::{Client, ConnectOptions};
use firehose_transport::control::place::default_socket_path;
use firehose_transport::record::{ArchivedEventKind, FileEvent};
use firehose_transport::ring::{Event, Policy};
use hdrhistogram::Histogram;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn line(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<28} p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs  max {:>8.1} µs  n {}",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.max() as f64 / 1e3,
        h.len()
    );
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/fh-lat".into()));
    let rate: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let secs: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(10);
    let socket = match args.next() {
        Some(s) => PathBuf::from(s),
        None => default_socket_path()?,
    };
    // A fresh directory per run: a directory that once held many files is slower to create
    // in on ext4, and the writer would fall behind its rate.
    let dir = dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut c: Client<FileEvent> = Client::connect(
        &socket,
        &ConnectOptions {
            name: "file_latency".into(),
            policy: Policy::Lagging,
            ..ConnectOptions::default()
        },
    )?;
    c.reader_mut().set_spin(20_000);
    // The writer: one file per tick, its creation time remembered by name.
    let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
    let d = dir.clone();
    let writer = std::thread::spawn(move || {
        let start = Instant::now();
        let n = rate * secs;
        for i in 0..n {
            // Sleep to each file's due time rather than spin: on two cores a spinning writer
            // takes the core the service needs, and the latency measured would be ours.
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(ahead);
            }
            let t = now_ns();
            let _ = std::fs::File::create(d.join(format!("f{i}")));
            let _ = tx.send((i, t));
        }
        start.elapsed()
    });
    let mut created: HashMap<u64, u64> = HashMap::new();
    let mut early: Vec<(u64, u64)> = Vec::new();
    let mut watcher_to_reader = Histogram::<u64>::new(3)?;
    let mut file_to_reader = Histogram::<u64>::new(3)?;
    let mut lagged = 0u64;
    let deadline = Instant::now() + Duration::from_secs(secs + 5);
    let expected = rate * secs;
    while file_to_reader.len() < expected && Instant::now() < deadline {
        let batch = c.recv_timeout(4096, Duration::from_millis(100))?;
        let got = now_ns();
        let mut names = Vec::new();
        for e in &batch {
            match e {
                Event::Record(r) => {
                    let a = r.access()?;
                    if a.kind != ArchivedEventKind::Create {
                        continue;
                    }
                    watcher_to_reader.record(got.saturating_sub(a.time_ns.to_native()).max(1))?;
                    let p = a.path_os().to_string_lossy().into_owned();
                    if let Some(i) = p
                        .rsplit('/')
                        .next()
                        .and_then(|f| f.strip_prefix('f'))
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        names.push(i);
                    }
                }
                Event::Lagged { from, to } => lagged += to - from + 1,
                Event::Gap { .. } => {}
            }
        }
        while let Ok((i, t)) = rx.try_recv() {
            created.insert(i, t);
        }
        // A record can overtake its creation time on the channel: keep its arrival until the
        // time comes in.
        early.extend(names.into_iter().map(|i| (i, got)));
        early.retain(|&(i, got)| match created.remove(&i) {
            Some(t) => {
                let _ = file_to_reader.record(got.saturating_sub(t).max(1));
                false
            }
            None => true,
        });
    }
    let wrote_in = writer.join().unwrap_or_default();
    println!(
        "{expected} files at {rate}/s for {secs} s (written in {:.2} s), {lagged} seqs lagged",
        wrote_in.as_secs_f64()
    );
    line("watcher read -> reader", &watcher_to_reader);
    line("file created -> reader", &file_to_reader);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
