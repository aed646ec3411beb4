//! The cache-line round-trip probe: two threads pinned to the two cores ping-pong one
//! `AtomicU64`. Cross-core latency on these VMs drifts between ~64 and ~700 ns over
//! minutes, so every report quotes it beside the figures it may have shifted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{anyhow, Result};

use crate::os::{pin_to_core, Cores};
use crate::stats::Spread;

/// The line the threads bounce, alone on its (pair of) cache lines.
#[repr(C, align(128))]
struct Line(AtomicU64);

const STOP: u64 = u64::MAX;

/// Median, min and max nanoseconds per round trip over `samples` samples of `per_sample`
/// round trips each.
///
/// # Errors
/// If a thread cannot be pinned or panics.
pub fn cache_line_rtt(cores: Cores, samples: usize, per_sample: u64) -> Result<Spread> {
    let line = Line(AtomicU64::new(0));
    let line = &line;
    std::thread::scope(|s| {
        let echo = s.spawn(move || -> Result<()> {
            // Keep echoing even if pinning failed, so the pinging thread never hangs.
            let pinned = pin_to_core(cores.reader);
            let mut expect = 1;
            loop {
                let v = line.0.load(Ordering::Acquire);
                if v == STOP {
                    return pinned;
                }
                if v == expect {
                    line.0.store(v + 1, Ordering::Release);
                    expect += 2;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let ping = s.spawn(move || -> Result<Vec<f64>> {
            let pinned = pin_to_core(cores.producer);
            let mut v = 0u64;
            let mut out = Vec::with_capacity(samples);
            // One warm-up sample, dropped; then the samples. Always stop the echo thread.
            for i in 0..=samples {
                if pinned.is_err() {
                    break;
                }
                let t = Instant::now();
                for _ in 0..per_sample {
                    v += 1;
                    line.0.store(v, Ordering::Release);
                    v += 1;
                    while line.0.load(Ordering::Acquire) != v {
                        std::hint::spin_loop();
                    }
                }
                if i > 0 {
                    out.push(t.elapsed().as_nanos() as f64 / per_sample as f64);
                }
            }
            line.0.store(STOP, Ordering::Release);
            pinned?;
            Ok(out)
        });
        let out = ping
            .join()
            .map_err(|_| anyhow!("probe thread panicked"))??;
        echo.join()
            .map_err(|_| anyhow!("probe thread panicked"))??;
        Spread::of(&out).ok_or_else(|| anyhow!("no probe samples"))
    })
}
