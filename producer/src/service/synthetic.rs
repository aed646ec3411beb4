//! Synthetic load: events made up at a chosen rate and path length, fed into the same
//! pipeline as the watcher's (filter, history, ring), for benchmarks and tests that need a
//! firehose without a file system.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use firehose_transport::record::EventKind;

use crate::watch::RawEvent;

/// Events per batch handed to the pipeline.
const BATCH: usize = 1024;

/// The running generator; dropping it stops it.
#[derive(Debug)]
pub struct Synthetic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Synthetic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The path of synthetic event `i` under `root`, padded to `len` bytes.
pub fn path_of(root: &std::path::Path, i: u64, len: usize) -> PathBuf {
    let mut s = format!("{}/synthetic/d{:03}/f{:010}", root.display(), i % 1000, i);
    if s.len() < len {
        s.push('.');
        while s.len() < len {
            s.push('x');
        }
    }
    PathBuf::from(s)
}

/// Starts making `rate` events per second under `root` (a path that need not exist).
///
/// # Errors
/// If the thread cannot start.
pub fn start(
    root: PathBuf,
    rate: u64,
    path_len: usize,
) -> std::io::Result<(Synthetic, Receiver<Vec<RawEvent>>)> {
    let (tx, rx) = crossbeam_channel::bounded(64);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name("firehose-synthetic".into())
        .spawn(move || generate(root, rate, path_len, tx, s))?;
    Ok((
        Synthetic {
            stop,
            thread: Some(thread),
        },
        rx,
    ))
}

fn generate(
    root: PathBuf,
    rate: u64,
    path_len: usize,
    tx: Sender<Vec<RawEvent>>,
    stop: Arc<AtomicBool>,
) {
    let kinds = [
        EventKind::Create,
        EventKind::CloseWrite,
        EventKind::Metadata,
        EventKind::Remove,
    ];
    let started = Instant::now();
    let mut made = 0u64;
    let mut dropped = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Due by now at `rate`; at most a batch at a time.
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if due <= made {
            let wait = Duration::from_secs_f64(((made + 1) as f64 / rate as f64).max(0.0))
                .saturating_sub(started.elapsed());
            std::thread::sleep(wait.min(Duration::from_millis(10)));
            continue;
        }
        let n = ((due - made) as usize).min(BATCH);
        let time_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let batch: Vec<RawEvent> = (0..n as u64)
            .map(|k| {
                let i = made + k;
                RawEvent {
                    time_ns,
                    kind: kinds[(i % 4) as usize],
                    path: path_of(&root, i, path_len),
                    path_to: None,
                    size: Some(i % 65_536),
                    is_dir: false,
                    reconciled: false,
                }
            })
            .collect();
        made += n as u64;
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // The pipeline is behind: the load is shed here, as a kernel queue would
                // overflow (counted; the pipeline never waits for it).
                dropped += n as u64;
                if dropped.is_power_of_two() {
                    tracing::warn!("synthetic load ahead of the pipeline: {dropped} events shed");
                }
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}
