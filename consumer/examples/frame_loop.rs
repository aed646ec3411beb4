//! A GUI-style frame loop: every 16 ms, `drain` what arrived into a bounded window of the
//! newest rows (as a table widget would hold), and print a one-line summary per second.
//!
//! ```text
//! cargo run -p firehose-consumer --example frame_loop -- [SOCKET] [--from-seq N]
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use firehose_consumer::{escape_path, Event, Options, OwnedEvent, Start};

/// Rows the "table" keeps.
const WINDOW: usize = 10_000;
/// Most events taken per frame: a frame never does unbounded work.
const PER_FRAME: usize = 50_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = Options::new().name("frame_loop example");
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--from-seq" {
            let n: u64 = args.get(i + 1).ok_or("--from-seq N")?.parse()?;
            opts = opts.start(Start::Seq(n));
            i += 1;
        } else {
            opts = opts.socket(&args[i]);
        }
        i += 1;
    }
    let mut follower = opts.connect()?;
    let mut window: VecDeque<OwnedEvent> = VecDeque::with_capacity(WINDOW);
    let (mut records, mut notices, mut frames) = (0u64, 0u64, 0u64);
    let mut last_report = Instant::now();
    loop {
        let frame_start = Instant::now();
        for ev in follower.drain(PER_FRAME)? {
            match ev {
                Event::Record(_) => records += 1,
                _ => notices += 1,
            }
            if window.len() == WINDOW {
                window.pop_front();
            }
            window.push_back(ev.to_owned_event());
        }
        frames += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            let newest = window.iter().rev().find_map(|e| match e {
                OwnedEvent::Record(r) => Some(format!("{} {}", r.seq, escape_path(&r.path))),
                _ => None,
            });
            println!(
                "{frames} frames, {records} records/s, {notices} notices, window {} rows, next seq {}, newest: {}",
                window.len(),
                follower.next_seq(),
                newest.unwrap_or_else(|| "-".into())
            );
            (records, notices, frames) = (0, 0, 0);
            last_report = Instant::now();
        }
        // Sleep out the rest of the 16 ms frame.
        std::thread::sleep(Duration::from_millis(16).saturating_sub(frame_start.elapsed()));
    }
}
