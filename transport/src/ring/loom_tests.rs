//! Loom models of the ring's own cursor code (`--cfg firehose_loom`): publish, reserve and
//! lap detection, the lossless room check, and the sleep/wake handshake. Each model also
//! runs with one ordering or fence switched off and must then fail, which shows that the
//! model can see the bug the ordering prevents.
//!
//! Run: `RUSTFLAGS="--cfg firehose_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p
//! firehose-transport --lib --release --target-dir target/loom loom`.
//!
//! The release edge (a lossless reader's Release store of `released`, the producer's
//! Acquire load) orders the reader's *loads* before the producer's later stores: a
//! load-buffering shape, which loom does not model. It is exercised instead by the
//! threaded tests, where a lossless reader borrows frames in place with plain reads while
//! the producer writes with atomics: under Miri a missing edge is a reported data race.

use std::time::Duration;

use loom::thread;

use super::*;
use crate::sync::loom_mutant::with_disabled;
use crate::sync::Site;

type P = Producer<Vec<u8>>;

/// 128-byte ring: four 32-byte frames of 8-byte payloads; a lagging copy takes one frame.
fn config() -> RingConfig {
    RingConfig {
        capacity: 128,
        max_record: 16,
        batch_bytes: 32,
        lossless_wait: Duration::from_secs(3600),
        first_seq: 1,
    }
}

fn payload(seq: u64) -> [u8; 8] {
    [seq as u8; 8]
}

/// A producer for a model: `direct` writes every frame straight into the ring, otherwise
/// frames gather privately and are copied in bulk at commit. Models run both ways.
fn producer(direct: bool) -> P {
    let mut p = P::new_heap(config()).unwrap();
    p.set_direct_min(if direct { 0 } else { usize::MAX });
    p
}

/// Collects records from one call, checking each payload against its seq.
fn take(r: &mut Reader<Vec<u8>>, got: &mut Vec<u64>, lagged: &mut u64) {
    match r.try_recv(8) {
        Ok(b) => {
            for e in &b {
                match e {
                    Event::Record(rec) => {
                        assert_eq!(rec.bytes(), payload(rec.seq()), "torn record {}", rec.seq());
                        got.push(rec.seq());
                    }
                    Event::Lagged { from, to } => *lagged += to - from + 1,
                    Event::Gap { .. } => panic!("no gaps here"),
                }
            }
        }
        Err(ReadError::Closed) => {}
        Err(e) => panic!("{e}"),
    }
}

fn publish_model() {
    for direct in [false, true] {
        publish_model_with(direct);
    }
}

fn publish_model_with(direct: bool) {
    loom::model(move || {
        let mut p = producer(direct);
        let mut r = p.attach_local(Policy::Lossless).unwrap();
        let t = thread::spawn(move || {
            for seq in 1..=2 {
                p.stage_archived(&payload(seq)).unwrap();
                p.commit().unwrap();
            }
            p
        });
        let (mut got, mut lagged) = (Vec::new(), 0);
        while got.len() < 2 {
            take(&mut r, &mut got, &mut lagged);
            thread::yield_now();
        }
        assert_eq!(got, [1, 2]);
        assert_eq!(lagged, 0);
        drop(t.join().unwrap());
    });
}

#[test]
fn loom_publish_is_seen_whole() {
    publish_model();
}

#[test]
#[should_panic]
fn loom_publish_without_release_store_fails() {
    with_disabled(Site::PublishStore, publish_model);
}

#[test]
#[should_panic]
fn loom_publish_without_acquire_load_fails() {
    with_disabled(Site::PublishLoad, publish_model);
}

/// A lagging reader copies the oldest frame while the producer laps it: it must either get
/// the frame whole or report it lagged, never hand out a torn one.
fn lap_model() {
    for direct in [false, true] {
        lap_model_with(direct);
    }
}

fn lap_model_with(direct: bool) {
    loom::model(move || {
        let mut p = producer(direct);
        let mut r = p.attach_local(Policy::Lagging).unwrap();
        for seq in 1..=4 {
            p.stage_archived(&payload(seq)).unwrap();
            p.commit().unwrap();
        }
        let t = thread::spawn(move || {
            p.stage_archived(&payload(5)).unwrap();
            p.commit().unwrap();
            p
        });
        let (mut got, mut lagged) = (Vec::new(), 0);
        take(&mut r, &mut got, &mut lagged);
        let p = t.join().unwrap();
        take(&mut r, &mut got, &mut lagged);
        // Whatever was handed out is whole (checked in `take`) and accounted for.
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        assert!(got.len() as u64 + lagged <= 5);
        drop(p);
    });
}

#[test]
fn loom_lapped_copy_is_detected() {
    lap_model();
}

#[test]
#[should_panic]
fn loom_lap_without_reserve_fence_fails() {
    with_disabled(Site::ReserveFence, lap_model);
}

#[test]
#[should_panic]
fn loom_lap_without_copy_fence_fails() {
    with_disabled(Site::CopyFence, lap_model);
}

/// A reader with no spin budget sleeps on its wake channel; a publish must wake it.
fn sleep_model() {
    for direct in [false, true] {
        sleep_model_with(direct);
    }
}

fn sleep_model_with(direct: bool) {
    loom::model(move || {
        let mut p = producer(direct);
        let mut r = p.attach_local(Policy::Lagging).unwrap();
        r.set_spin(0);
        let t = thread::spawn(move || {
            p.stage_archived(&payload(1)).unwrap();
            p.commit().unwrap();
            p
        });
        assert_eq!(r.recv(1).unwrap().len(), 1);
        drop(t.join().unwrap());
    });
}

#[test]
fn loom_sleeping_reader_is_woken() {
    sleep_model();
}

#[test]
#[should_panic]
fn loom_sleep_without_reader_fence_deadlocks() {
    with_disabled(Site::SleepReader, sleep_model);
}

#[test]
#[should_panic]
fn loom_sleep_without_producer_fence_deadlocks() {
    with_disabled(Site::SleepProducer, sleep_model);
}

/// The lossless room check: with a full ring, the producer waits for the reader's release
/// and never overwrites a frame the reader has not read.
fn room_model() {
    for direct in [false, true] {
        room_model_with(direct);
    }
}

fn room_model_with(direct: bool) {
    loom::model(move || {
        let mut p = producer(direct);
        let mut r = p.attach_local(Policy::Lossless).unwrap();
        for seq in 1..=4 {
            p.stage_archived(&payload(seq)).unwrap();
            p.commit().unwrap();
        }
        let t = thread::spawn(move || {
            p.stage_archived(&payload(5)).unwrap();
            p.commit().unwrap();
            p
        });
        let (mut got, mut lagged) = (Vec::new(), 0);
        while got.len() < 5 {
            take(&mut r, &mut got, &mut lagged);
            thread::yield_now();
        }
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert_eq!(lagged, 0);
        drop(t.join().unwrap());
    });
}

#[test]
fn loom_lossless_reader_is_never_overwritten() {
    room_model();
}

#[test]
#[should_panic]
fn loom_lap_written_in_place_without_reserve_fence_fails() {
    with_disabled(Site::ReserveFence, || lap_model_with(true));
}

#[test]
#[should_panic]
fn loom_publish_written_in_place_without_release_store_fails() {
    with_disabled(Site::PublishStore, || publish_model_with(true));
}
