//! The owner thread against real readers in this process: order and holes, commands
//! answered while a lossless reader stalls, the stalled reader cut off, and a bounded
//! `finish` that tells readers what it dropped.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::progress::ProgressConfig;
use super::{Item, LinkEvent, Publisher, PublisherConfig, RingLink};
use crate::ring::{Event, Policy, Producer, ReadError, Reader, RingConfig, Segment};

const WATCHDOG: Duration = Duration::from_secs(60);

fn ring() -> Producer<u64> {
    Producer::new(RingConfig {
        capacity: 64 << 10,
        max_record: 1024,
        batch_bytes: 4 << 10,
        lossless_wait: Duration::ZERO,
        first_seq: 1,
    })
    .unwrap()
}

/// Attaches a reader through the link, as the control loop does for a client.
fn attach(link: &RingLink, token: u64, policy: Policy) -> Reader<u64> {
    link.attach(token, policy, 4).unwrap();
    let deadline = Instant::now() + WATCHDOG;
    loop {
        assert!(Instant::now() < deadline, "watchdog: no answer to attach");
        match link.try_event().unwrap() {
            Some(LinkEvent::Attached { token: t, result }) if t == token => {
                return Reader::open(result.unwrap().fds).unwrap();
            }
            Some(_) | None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// The new segments the owner announced, in order.
fn rotations(link: &RingLink) -> Vec<Segment> {
    let mut out = Vec::new();
    while let Ok(Some(ev)) = link.try_event() {
        if let LinkEvent::Rotated { rotation, .. } = ev {
            out.push(rotation.segment);
        }
    }
    out
}

/// What a lagging reader sees, to the ring's close: (first, last, what) per event.
fn read_to_close(r: &mut Reader<u64>, link: &RingLink) -> Vec<(u64, u64, &'static str)> {
    let mut seen = Vec::new();
    let mut segments = Vec::new();
    let deadline = Instant::now() + WATCHDOG;
    loop {
        assert!(
            Instant::now() < deadline,
            "watchdog: the ring never closed ({} events)",
            seen.len()
        );
        match r.recv_timeout(1024, Duration::from_millis(50)) {
            Ok(b) => {
                for e in &b {
                    seen.push(match e {
                        Event::Record(x) => (x.seq(), x.seq(), "record"),
                        Event::Gap { from, to, .. } => (from, to, "gap"),
                        Event::Lagged { from, to } => (from, to, "lagged"),
                    });
                }
            }
            Err(ReadError::SegmentEnded { .. }) => {
                segments.extend(rotations(link));
                assert!(
                    !segments.is_empty(),
                    "a segment ended with no rotation told"
                );
                r.follow(segments.remove(0)).unwrap();
            }
            Err(ReadError::Closed) => return seen,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Every seq from 1 to `last` covered exactly once, in order.
fn assert_covers(seen: &[(u64, u64, &str)], last: u64) {
    let tail = &seen[seen.len().saturating_sub(4)..];
    let mut next = 1;
    for &(from, to, what) in seen {
        assert_eq!(from, next, "{what} {from}..={to} breaks the line");
        next = to + 1;
    }
    assert_eq!(
        next,
        last + 1,
        "the line ends at {}; its end: {tail:?}",
        next - 1
    );
}

#[test]
fn records_go_in_in_order_and_a_hole_becomes_a_gap_before_the_next_record() {
    let (p, link) = Publisher::start(ring(), PublisherConfig::default()).unwrap();
    let mut r = attach(&link, 1, Policy::Lagging);
    for seq in [1, 2, 3, 7, 8] {
        p.send(Item::Record { seq, value: seq }).unwrap();
    }
    p.send(Item::Gap { to: 10, reason: 9 }).unwrap();
    p.send(Item::Record { seq: 5, value: 5 }).unwrap(); // behind the line: dropped
    p.send(Item::Record { seq: 11, value: 11 }).unwrap();
    assert!(p.sync());
    assert_eq!(
        p.stats().behind.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    p.finish();
    let seen = read_to_close(&mut r, &link);
    assert_covers(&seen, 11);
    let kinds: Vec<&str> = seen.iter().map(|s| s.2).collect();
    assert_eq!(
        kinds,
        ["record", "record", "record", "gap", "record", "record", "gap", "record"]
    );
}

#[test]
fn commands_are_answered_while_a_record_waits_and_the_stalled_reader_is_cut_off() {
    let cfg = PublisherConfig {
        progress: ProgressConfig {
            window: Duration::from_millis(300),
            min_progress: 1 << 10,
        },
        ..PublisherConfig::default()
    };
    let (p, link) = Publisher::start(ring(), cfg).unwrap();
    let _staller = attach(&link, 1, Policy::Lossless); // never reads
                                                       // Far more than the ring holds: the owner waits for the staller with items queued.
    for seq in 1..=20_000 {
        p.send(Item::Record { seq, value: seq }).unwrap();
    }
    // The owner answers while it waits (a command, not a lock).
    let snap = p.snapshot().expect("a snapshot while blocked");
    assert_eq!(snap.readers.len(), 1);
    // Within its budget the staller is cut off with the reason, and the rest goes in.
    assert!(p.sync(), "everything queued went in after the cut");
    let too_slow: Vec<_> = std::iter::from_fn(|| link.try_event().ok().flatten())
        .filter_map(|e| match e {
            LinkEvent::Rotated { too_slow, .. } => Some(too_slow),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(too_slow.len(), 1, "the staller is named as too slow");
    assert_eq!(
        p.stats().cut_off.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    p.finish();
}

#[test]
fn finish_ends_within_its_wait_despite_a_stalled_reader_and_tells_readers_what_it_dropped() {
    let cfg = PublisherConfig {
        finish_wait: Duration::from_millis(200),
        // A long budget: the staller is within it when the service stops.
        progress: ProgressConfig {
            window: Duration::from_secs(3600),
            min_progress: 1 << 10,
        },
        ..PublisherConfig::default()
    };
    let (p, link) = Publisher::start(ring(), cfg).unwrap();
    let _staller = attach(&link, 1, Policy::Lossless);
    let mut lagging = attach(&link, 2, Policy::Lagging);
    for seq in 1..=20_000 {
        p.send(Item::Record { seq, value: seq }).unwrap();
    }
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        p.finish();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(WATCHDOG)
        .expect("watchdog: finish waited for the stalled reader");
    // The lagging reader gets records up to the stall, then one gap up to 20,000, then
    // the close: nothing dropped silently.
    let seen = read_to_close(&mut lagging, &link);
    assert_covers(&seen, 20_000);
    assert_eq!(
        seen.last().unwrap().2,
        "gap",
        "{:?}",
        &seen[seen.len() - 3..]
    );
}
