//! Single-process tests of the ring over heap memory (they also run under Miri).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

type P = Producer<Vec<u8>>;
type R = Reader<Vec<u8>>;

fn config(capacity: usize) -> RingConfig {
    RingConfig {
        capacity,
        max_record: 256,
        batch_bytes: 1024,
        lossless_wait: Duration::ZERO,
        first_seq: 1,
    }
}

/// A payload whose bytes are a function of its seq and length.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize * 31 + i * 7) as u8)
        .collect()
}

/// What a reader saw, flattened.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Seen {
    Record(u64, Vec<u8>),
    Gap(u64, u64, u32),
    Lagged(u64, u64),
}

fn drain(r: &mut R, max: usize) -> Result<Vec<Seen>, ReadError> {
    let b = r.try_recv(max)?;
    Ok(b.iter()
        .map(|e| match e {
            Event::Record(rec) => {
                Seen::Record(rec.seq(), rec.access().expect("valid payload").to_vec())
            }
            Event::Gap { from, to, reason } => Seen::Gap(from, to, reason),
            Event::Lagged { from, to } => Seen::Lagged(from, to),
        })
        .collect())
}

fn drain_all(r: &mut R) -> Vec<Seen> {
    let mut out = Vec::new();
    loop {
        let got = match drain(r, 64) {
            Ok(got) => got,
            Err(ReadError::SegmentEnded { .. } | ReadError::Closed) => return out,
            Err(e) => panic!("drain: {e}"),
        };
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

#[test]
fn lossless_reader_sees_every_record_in_order_across_wraps() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lossless).unwrap();
    let mut next = 1;
    for round in 0..if cfg!(miri) { 20 } else { 200 } {
        for i in 0..7 {
            let len = (round * 13 + i * 29) % 200;
            assert_eq!(
                p.stage(&payload(p.next_seq(), len)).unwrap(),
                next + i as u64
            );
        }
        p.commit().unwrap();
        for seen in drain_all(&mut r) {
            let Seen::Record(seq, bytes) = seen else {
                panic!("unexpected {seen:?}")
            };
            assert_eq!(seq, next);
            assert_eq!(bytes, payload(seq, bytes.len()));
            next += 1;
        }
    }
    assert_eq!(next, p.next_seq());
    assert!(
        p.write_pos() > if cfg!(miri) { 2 } else { 10 } * 4096,
        "the test must wrap many times"
    );
}

#[test]
fn lagging_reader_is_told_exactly_what_it_missed() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lagging).unwrap();
    // Publish well over a ring's worth while the reader sleeps.
    for _ in 0..200 {
        p.stage(&payload(p.next_seq(), 40)).unwrap();
    }
    p.commit().unwrap();
    let seen = drain_all(&mut r);
    let Seen::Lagged(from, to) = seen[0].clone() else {
        panic!("expected a lag report first: {seen:?}")
    };
    assert_eq!(from, 1);
    let mut next = to + 1;
    for s in &seen[1..] {
        let Seen::Record(seq, bytes) = s else {
            panic!("unexpected {s:?}")
        };
        assert_eq!(*seq, next);
        assert_eq!(*bytes, payload(*seq, 40));
        next += 1;
    }
    assert_eq!(
        next,
        p.next_seq(),
        "after resync the reader reaches the head"
    );
}

#[test]
fn gaps_arrive_in_order() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lossless).unwrap();
    p.stage(&payload(1, 3)).unwrap();
    p.stage_gap(9, 3).unwrap();
    p.stage(&payload(10, 3)).unwrap();
    assert!(matches!(
        p.stage_gap(5, 1),
        Err(PublishError::GapBackwards { to: 5, next: 11 })
    ));
    p.commit().unwrap();
    assert_eq!(
        drain_all(&mut r),
        vec![
            Seen::Record(1, payload(1, 3)),
            Seen::Gap(2, 9, 3),
            Seen::Record(10, payload(10, 3))
        ]
    );
}

#[test]
fn a_record_over_the_limit_is_a_typed_error_and_loses_nothing() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lossless).unwrap();
    p.stage(&payload(1, 10)).unwrap();
    let err = p.stage(&payload(2, 300)).unwrap_err();
    assert!(
        matches!(err, PublishError::TooLarge { max: 256, .. }),
        "{err}"
    );
    p.commit().unwrap();
    assert_eq!(drain_all(&mut r), vec![Seen::Record(1, payload(1, 10))]);
    assert_eq!(p.next_seq(), 2, "the refused record took no seq");
}

#[test]
fn config_with_a_record_larger_than_a_quarter_ring_is_refused() {
    let mut c = config(4096);
    c.max_record = 2000;
    assert!(matches!(
        P::new_heap(c),
        Err(SegmentError::RecordTooLargeForRing { .. })
    ));
    assert!(matches!(
        P::new_heap(config(5000)),
        Err(SegmentError::Capacity { .. })
    ));
}

#[test]
fn a_lossless_reader_holds_the_producer_back_until_it_releases() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lossless).unwrap();
    let mut published = 0;
    let err = loop {
        if let Err(e) = p.stage(&payload(p.next_seq(), 100)) {
            break e;
        }
        published += 1;
        assert!(published < 100, "the ring must fill");
    };
    let PublishError::Backpressure { reader, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(reader, r.id());
    // Borrow frames, then leak the batch: nothing is released.
    let b = r.try_recv(1000).unwrap();
    let n = b.len();
    #[allow(clippy::forget_non_drop)] // the point: no destructor is needed for soundness
    std::mem::forget(b);
    assert!(matches!(
        p.stage(&payload(p.next_seq(), 100)),
        Err(PublishError::Backpressure { .. })
    ));
    // The next call releases what the leaked batch held.
    assert!(r.try_recv(1000).unwrap().is_empty());
    p.stage(&payload(p.next_seq(), 100)).unwrap();
    p.commit().unwrap();
    let rest = drain_all(&mut r);
    assert_eq!(n + rest.len(), p.next_seq() as usize - 1);
}

#[test]
fn lagging_readers_never_hold_the_producer_back() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let _r = p.attach_local(Policy::Lagging).unwrap();
    // Dozens of laps of the 4 KiB ring (about 30 frames a lap); eight under Miri.
    for _ in 0..if cfg!(miri) { 250 } else { 1000 } {
        p.stage(&payload(p.next_seq(), 100)).unwrap();
    }
    p.commit().unwrap();
}

#[test]
fn garbage_in_a_cursor_page_does_not_disturb_the_producer_or_others() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let hostile = p.attach_local(Policy::Lagging).unwrap();
    let mut good = p.attach_local(Policy::Lossless).unwrap();
    for v in [u64::MAX, 0, 1 << 63, 12345] {
        hostile
            .cursor
            .page()
            .released
            .0
            .store(v, std::sync::atomic::Ordering::Relaxed);
        hostile
            .cursor
            .page()
            .sleeping
            .0
            .store(v, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..40 {
            p.stage(&payload(p.next_seq(), 60)).unwrap();
        }
        p.commit().unwrap();
        let seen = drain_all(&mut good);
        assert_eq!(seen.len(), 40);
    }
    // A hostile lossless reader's page is clamped: claiming to be ahead of the writer does
    // not let the producer overwrite the honest lossless reader.
    let evil = p.attach_local(Policy::Lossless).unwrap();
    evil.cursor
        .page()
        .released
        .0
        .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
    let mut n = 0;
    while p.stage(&payload(p.next_seq(), 60)).is_ok() {
        n += 1;
        assert!(
            n < 1000,
            "the honest lossless reader must hold the producer back"
        );
    }
    let first = p.committed_seq() - (p.committed_seq() - 161).min(1000);
    let seen = drain_all(&mut good);
    let expected: Vec<Seen> = (161..p.committed_seq())
        .map(|q| Seen::Record(q, payload(q, 60)))
        .collect();
    assert_eq!(
        seen, expected,
        "no record lost under a hostile page ({first})"
    );
}

#[test]
fn scribbled_frames_give_errors_never_a_panic() {
    for (seed, policy) in [
        (1u64, Policy::Lossless),
        (2, Policy::Lagging),
        (3, Policy::Lagging),
        (4, Policy::Lossless),
    ] {
        let mut p = P::new_heap(config(4096)).unwrap();
        let mut r = p.attach_local(policy).unwrap();
        for _ in 0..30 {
            p.stage(&payload(p.next_seq(), 50)).unwrap();
        }
        p.commit().unwrap();
        // Overwrite some words of the data area with garbage.
        let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15);
        for _ in 0..40 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % (30 * 80 / 8)) as usize;
            p.segment().data()[i].store(x, std::sync::atomic::Ordering::Relaxed);
        }
        let mut errors = 0;
        let mut events = 0;
        for _ in 0..100 {
            match r.try_recv(64) {
                Ok(b) => {
                    if b.is_empty() {
                        break;
                    }
                    for e in &b {
                        events += 1;
                        if let Event::Record(rec) = e {
                            let _ = rec.access(); // may fail; must not panic
                        }
                    }
                }
                Err(ReadError::Corrupt { .. }) => errors += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(errors > 0, "garbage must be noticed");
        // The reader recovers on new frames.
        p.stage(&payload(p.next_seq(), 50)).unwrap();
        p.commit().unwrap();
        let after = drain_all(&mut r);
        assert!(
            matches!(after.last(), Some(Seen::Record(..))),
            "{after:?} after {events} events"
        );
    }
}

#[test]
fn readers_follow_a_segment_switch_and_staged_records_are_committed_before_it() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut lossless = p.attach_local(Policy::Lossless).unwrap();
    let mut lagging = p.attach_local(Policy::Lagging).unwrap();
    for _ in 0..10 {
        p.stage(&payload(p.next_seq(), 30)).unwrap();
    }
    p.commit().unwrap();
    for _ in 0..5 {
        p.stage(&payload(p.next_seq(), 30)).unwrap();
    }
    let new = p.rotate(Some(8192), &[]).unwrap();
    assert_eq!(new.epoch(), 2);
    assert_eq!(new.capacity(), 8192);
    p.commit().unwrap();
    for _ in 0..5 {
        p.stage(&payload(p.next_seq(), 30)).unwrap();
    }
    p.commit().unwrap();
    for r in [&mut lossless, &mut lagging] {
        let mut seen = drain_all(r);
        assert_eq!(
            seen.len(),
            15,
            "the staged records went out in the old segment"
        );
        let err = r.try_recv(10).unwrap_err();
        assert_eq!(
            err,
            ReadError::SegmentEnded {
                next_epoch: 2,
                next_seq: 16
            }
        );
        r.follow(new.clone()).unwrap();
        seen.extend(drain_all(r));
        let seqs: Vec<u64> = seen
            .iter()
            .map(|s| match s {
                Seen::Record(q, b) => {
                    assert_eq!(*b, payload(*q, 30));
                    *q
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    }
}

#[test]
fn a_cut_off_lossless_reader_keeps_its_frames_and_cannot_follow() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut stalled = p.attach_local(Policy::Lossless).unwrap();
    let mut other = p.attach_local(Policy::Lossless).unwrap();
    for _ in 0..20 {
        p.stage(&payload(p.next_seq(), 100)).unwrap();
    }
    p.commit().unwrap();
    let stalled_id = stalled.id();
    let held = stalled.try_recv(1000).unwrap();
    let first: Vec<u8> = match held.iter().next().unwrap() {
        Event::Record(r) => r.access().unwrap().to_vec(),
        _ => panic!(),
    };
    // `stalled` keeps its batch; the producer cuts it off and carries on far past a ring.
    let new = p.rotate(None, &[stalled_id]).unwrap();
    drain_all(&mut other);
    assert!(matches!(
        other.try_recv(1),
        Err(ReadError::SegmentEnded { .. })
    ));
    other.follow(new.clone()).unwrap();
    for _ in 0..10 {
        for _ in 0..30 {
            p.stage(&payload(p.next_seq(), 100)).unwrap();
        }
        p.commit().unwrap();
        drain_all(&mut other);
    }
    // The borrowed frames are intact.
    let again: Vec<u8> = match held.iter().next().unwrap() {
        Event::Record(r) => r.access().unwrap().to_vec(),
        _ => panic!(),
    };
    assert_eq!(first, again);
    assert_eq!(first, payload(1, 100));
    drain_all(&mut stalled);
    assert_eq!(stalled.follow(new), Err(ReadError::CutOff));
}

#[test]
fn a_closed_ring_is_read_to_its_end_then_reports_closed() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lagging).unwrap();
    p.stage(&payload(1, 5)).unwrap();
    p.close();
    assert_eq!(drain_all(&mut r), vec![Seen::Record(1, payload(1, 5))]);
    assert_eq!(r.try_recv(1).unwrap_err(), ReadError::Closed);
    assert!(matches!(p.stage(&payload(2, 5)), Err(PublishError::Closed)));
}

#[test]
fn a_reader_lapped_in_the_middle_of_its_copy_drops_the_run_and_reports_it() {
    let p = Rc::new(RefCell::new(P::new_heap(config(4096)).unwrap()));
    let mut r = p.borrow_mut().attach_local(Policy::Lagging).unwrap();
    {
        let mut p = p.borrow_mut();
        for seq in 1..=10 {
            p.stage(&payload(seq, 40)).unwrap();
        }
        p.commit().unwrap();
    }
    let pc = p.clone();
    let fired = Rc::new(RefCell::new(false));
    let f2 = fired.clone();
    reader::AFTER_COPY.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            *f2.borrow_mut() = true;
            let mut p = pc.borrow_mut();
            for _ in 0..100 {
                let seq = p.next_seq();
                p.stage(&payload(seq, 40)).unwrap();
            }
            p.commit().unwrap();
        }))
    });
    let seen = drain_all(&mut r);
    assert!(*fired.borrow());
    let Seen::Lagged(1, to) = seen[0] else {
        panic!("{seen:?}")
    };
    assert!(to > 10, "the copied run was dropped whole");
    assert_eq!(seen.len() as u64 - 1, p.borrow().next_seq() - 1 - to);
}

#[test]
fn recv_timeout_returns_empty_when_nothing_comes() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lagging).unwrap();
    r.set_spin(0);
    assert!(r
        .recv_timeout(10, Duration::from_millis(5))
        .unwrap()
        .is_empty());
    p.publish(&payload(1, 8)).unwrap();
    assert_eq!(r.recv(10).unwrap().len(), 1);
}

#[test]
#[cfg_attr(miri, ignore = "Miri cannot poll a pipe")]
fn a_sleeping_reader_is_woken_by_a_publish_from_another_thread() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lossless).unwrap();
    r.set_spin(0);
    let t = std::thread::spawn(move || {
        let mut got = 0;
        while got < 1000 {
            match r.recv(100) {
                Ok(b) => got += b.len(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(r.recv(1).unwrap_err(), ReadError::Closed);
        got
    });
    for i in 0..1000 {
        loop {
            match p.stage(&payload(p.next_seq(), 16)) {
                Ok(_) => break,
                Err(PublishError::Backpressure { .. }) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        if i % 7 == 0 {
            p.commit().unwrap();
        }
    }
    p.close();
    assert_eq!(t.join().unwrap(), 1000);
}

/// A producer thread and two reader threads (one lossless borrowing frames in place with
/// plain reads, one lagging copying with atomic loads) over many wraps. Under Miri this is
/// the data-race check of the whole protocol, the release edge included.
#[test]
fn threads_read_while_the_producer_writes_without_a_race() {
    let total: u64 = if cfg!(miri) { 300 } else { 200_000 };
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut lossless = p.attach_local(Policy::Lossless).unwrap();
    let mut lagging = p.attach_local(Policy::Lagging).unwrap();
    let reader = move |r: &mut R, may_lag: bool| {
        let mut next = 1u64;
        while next <= total {
            match r.try_recv(64) {
                Ok(b) => {
                    for e in &b {
                        match e {
                            Event::Record(rec) => {
                                assert_eq!(rec.seq(), next);
                                let v = rec.access().expect("valid");
                                assert_eq!(v.as_slice(), payload(next, v.len()).as_slice());
                                next += 1;
                            }
                            Event::Lagged { from, to } => {
                                assert!(may_lag && from == next);
                                next = to + 1;
                            }
                            Event::Gap { .. } => panic!("no gaps"),
                        }
                    }
                }
                Err(ReadError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
            std::thread::yield_now();
        }
        next
    };
    let t1 = std::thread::spawn(move || reader(&mut lossless, false));
    let t2 = std::thread::spawn(move || reader(&mut lagging, true));
    for seq in 1..=total {
        let v = payload(seq, (seq % 97) as usize);
        while let Err(e) = p.stage(&v) {
            assert!(matches!(e, PublishError::Backpressure { .. }), "{e}");
            std::thread::yield_now();
        }
    }
    while p.commit().is_err() {
        std::thread::yield_now();
    }
    p.close();
    assert_eq!(t1.join().unwrap(), total + 1);
    assert_eq!(t2.join().unwrap(), total + 1);
}

#[test]
#[cfg_attr(miri, ignore = "Miri cannot poll a pipe")]
fn a_reader_whose_producer_vanishes_is_told() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lagging).unwrap();
    r.set_spin(0);
    let id = r.id();
    assert!(p.remove_reader(id));
    assert_eq!(r.recv(1).unwrap_err(), ReadError::ProducerGone);
}

/// Operations of the model test.
#[derive(Debug, Clone)]
enum Op {
    Publish(Vec<usize>),
    Gap(u64),
    ReadLossless(usize),
    ReadLagging(usize),
    LapDuringCopy(usize),
    Rotate(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0usize..=240, 1..40).prop_map(Op::Publish),
        1 => (1u64..5).prop_map(Op::Gap),
        3 => (1usize..200).prop_map(Op::ReadLossless),
        3 => (1usize..200).prop_map(Op::ReadLagging),
        1 => (1usize..100).prop_map(Op::LapDuringCopy),
        1 => any::<bool>().prop_map(Op::Rotate),
    ]
}

/// Checks one reader's events against the model and advances its expected seq.
fn check_against_model(model: &VecDeque<Seen>, seen: &[Seen], expected: &mut u64, may_lag: bool) {
    for s in seen {
        match s {
            Seen::Lagged(from, to) => {
                assert!(may_lag, "a lossless reader lagged: {s:?}");
                assert_eq!(*from, *expected);
                assert!(to >= from);
                *expected = to + 1;
            }
            other => {
                let want = model.iter().find(|m| match m {
                    Seen::Record(q, _) | Seen::Gap(q, _, _) => q == expected,
                    Seen::Lagged(..) => false,
                });
                assert_eq!(Some(other), want, "at seq {expected}");
                *expected = match other {
                    Seen::Gap(_, to, _) => to + 1,
                    _ => *expected + 1,
                };
            }
        }
    }
}

fn model_run(ops: Vec<Op>, direct_min: usize) {
    let p = Rc::new(RefCell::new(P::new_heap(config(4096)).unwrap()));
    p.borrow_mut().set_direct_min(direct_min);
    let mut lossless = p.borrow_mut().attach_local(Policy::Lossless).unwrap();
    let mut lagging = p.borrow_mut().attach_local(Policy::Lagging).unwrap();
    let mut model: VecDeque<Seen> = VecDeque::new();
    // Every segment, by epoch - 1: a reader follows switches one epoch at a time, as the
    // control socket delivers them.
    let segs: Rc<RefCell<Vec<Segment>>> = Rc::new(RefCell::new(vec![p.borrow().segment().clone()]));
    let segs_for_publish = segs.clone();
    let (mut exp_lossless, mut exp_lagging) = (1u64, 1u64);
    let publish =
        |p: &mut P, model: &mut VecDeque<Seen>, lens: &[usize], lossless: &mut R, exp: &mut u64| {
            for &len in lens {
                let seq = p.next_seq();
                let v = payload(seq, len);
                loop {
                    match p.stage(&v) {
                        Ok(_) => break,
                        Err(PublishError::Backpressure { .. }) => {
                            // Make room: the lossless reader reads.
                            match drain(lossless, 1000) {
                                Ok(seen) => check_against_model(model, &seen, exp, false),
                                Err(ReadError::SegmentEnded { next_epoch, .. }) => {
                                    let seg =
                                        segs_for_publish.borrow()[next_epoch as usize - 1].clone();
                                    lossless.follow(seg).unwrap();
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                model.push_back(Seen::Record(seq, v));
            }
        };
    for op in ops {
        match op {
            Op::Publish(lens) => {
                let mut pb = p.borrow_mut();
                publish(&mut pb, &mut model, &lens, &mut lossless, &mut exp_lossless);
                while let Err(PublishError::Backpressure { .. }) = pb.commit() {
                    match drain(&mut lossless, 1000) {
                        Ok(seen) => check_against_model(&model, &seen, &mut exp_lossless, false),
                        Err(ReadError::SegmentEnded { next_epoch, .. }) => {
                            lossless
                                .follow(segs.borrow()[next_epoch as usize - 1].clone())
                                .unwrap();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            Op::Gap(n) => {
                let mut pb = p.borrow_mut();
                let from = pb.next_seq();
                if pb.stage_gap(from + n - 1, 2).is_ok() {
                    model.push_back(Seen::Gap(from, from + n - 1, 2));
                }
            }
            Op::ReadLossless(max) | Op::ReadLagging(max) | Op::LapDuringCopy(max) => {
                reader::AFTER_COPY.with(|h| h.borrow_mut().take());
                let is_lossless = matches!(op, Op::ReadLossless(_));
                let (r, exp) = if is_lossless {
                    (&mut lossless, &mut exp_lossless)
                } else {
                    (&mut lagging, &mut exp_lagging)
                };
                let added: Rc<RefCell<Vec<Seen>>> = Rc::default();
                if let Op::LapDuringCopy(n) = op {
                    let pc = p.clone();
                    let a2 = added.clone();
                    reader::AFTER_COPY.with(|h| {
                        *h.borrow_mut() = Some(Box::new(move || {
                            let mut pb = pc.borrow_mut();
                            for _ in 0..n {
                                let seq = pb.next_seq();
                                // The lossless reader cannot make room from in here: stop at
                                // backpressure (the record stays staged, so it is in the model).
                                if pb.stage(&payload(seq, 50)).is_err() {
                                    break;
                                }
                                a2.borrow_mut().push(Seen::Record(seq, payload(seq, 50)));
                                if pb.commit().is_err() {
                                    break;
                                }
                            }
                        }))
                    });
                }
                loop {
                    match drain(r, max) {
                        Ok(seen) => {
                            model.extend(added.borrow_mut().drain(..));
                            check_against_model(&model, &seen, exp, !is_lossless);
                            break;
                        }
                        Err(ReadError::SegmentEnded { next_epoch, .. }) => {
                            model.extend(added.borrow_mut().drain(..));
                            r.follow(segs.borrow()[next_epoch as usize - 1].clone())
                                .unwrap();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            Op::Rotate(grow) => {
                let mut pb = p.borrow_mut();
                let cap = if grow { 8192 } else { 4096 };
                segs.borrow_mut().push(pb.rotate(Some(cap), &[]).unwrap());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn ring_matches_a_queue_model(
        ops in prop::collection::vec(op(), 1..if cfg!(miri) { 30 } else { 60 }),
        // Frames written straight into the ring, gathered privately, or a mix.
        direct_min in prop_oneof![Just(0usize), Just(100), Just(usize::MAX)],
    ) {
        model_run(ops, direct_min);
    }
}

/// The ways safe code can try to end a lossless reader's backpressure while it holds frames.
#[derive(Clone, Copy, Debug)]
enum Departure {
    /// `remove_reader`, as the service does on every disconnect.
    Remove,
    /// `remove_reader` twice.
    RemoveTwice,
    /// An explicit cut-off by rotation.
    CutOff,
    /// Removed, then a rotation to another size for another reason.
    RemoveThenResize,
}

#[test]
fn a_held_lossless_batch_survives_every_safe_way_to_drop_its_reader() {
    for way in [
        Departure::Remove,
        Departure::RemoveTwice,
        Departure::CutOff,
        Departure::RemoveThenResize,
    ] {
        let mut p = P::new_heap(config(4096)).unwrap();
        let mut r = p.attach_local(Policy::Lossless).unwrap();
        let mut keeper = p.attach_local(Policy::Lossless).unwrap();
        for _ in 0..20 {
            p.stage(&payload(p.next_seq(), 100)).unwrap();
        }
        p.commit().unwrap();
        let id = r.id();
        let held = r.try_recv(1000).unwrap();
        let snapshot: Vec<(u64, Vec<u8>)> = held
            .iter()
            .filter_map(|e| match e {
                Event::Record(rec) => Some((rec.seq(), rec.bytes().to_vec())),
                _ => None,
            })
            .collect();
        assert_eq!(snapshot.len(), 20);
        match way {
            Departure::Remove => assert!(p.remove_reader(id)),
            Departure::RemoveTwice => {
                assert!(p.remove_reader(id));
                assert!(p.remove_reader(id), "a departed reader is still known");
            }
            Departure::CutOff => {
                p.rotate(None, &[id]).unwrap();
            }
            Departure::RemoveThenResize => {
                assert!(p.remove_reader(id));
                p.rotate(Some(8192), &[]).unwrap();
            }
        }
        // Publish several laps; the other lossless reader keeps up (following switches).
        // Three are enough for the rotation (the departed reader holds 20 of about 30
        // frames a lap); Miri runs three, the native test eight.
        for _ in 0..if cfg!(miri) { 3 } else { 8 } {
            for _ in 0..30 {
                p.stage(&payload(p.next_seq(), 100)).unwrap();
            }
            p.commit().unwrap();
            loop {
                match keeper.try_recv(1000) {
                    Ok(b) if b.is_empty() => break,
                    Ok(_) => {}
                    Err(ReadError::SegmentEnded { .. }) => {
                        keeper.follow(p.segment().clone()).unwrap();
                    }
                    Err(e) => panic!("{way:?}: {e}"),
                }
            }
        }
        assert!(
            p.segment().epoch() >= 2,
            "{way:?}: a rotation left it behind"
        );
        for (e, (seq, bytes)) in held.iter().zip(&snapshot) {
            let Event::Record(rec) = e else { panic!() };
            assert_eq!(rec.seq(), *seq);
            assert_eq!(
                rec.bytes(),
                &bytes[..],
                "{way:?}: seq {seq} changed under its borrow"
            );
            assert_eq!(rec.access().unwrap().as_slice(), payload(*seq, 100));
        }
        // Left behind: it reads the old segment to its end and may not follow.
        drain_all(&mut r);
        assert_eq!(r.follow(p.segment().clone()), Err(ReadError::CutOff));
    }
}

#[test]
fn a_departed_lossless_reader_costs_a_rotation_only_when_it_holds_the_producer_back() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut a = p.attach_local(Policy::Lossless).unwrap();
    let mut b = p.attach_local(Policy::Lossless).unwrap();
    for _ in 0..10 {
        p.stage(&payload(p.next_seq(), 100)).unwrap();
    }
    p.commit().unwrap();
    drain_all(&mut a);
    drain_all(&mut b);
    a.release();
    b.release();
    assert!(p.remove_reader(a.id()));
    assert!(p.remove_reader(b.id()));
    assert_eq!(p.lossless_readers(), (0, 2));
    // Less than a ring ahead of them: no rotation.
    for _ in 0..20 {
        p.stage(&payload(p.next_seq(), 100)).unwrap();
    }
    p.commit().unwrap();
    assert_eq!(p.segment().epoch(), 1);
    assert!(p.take_rotations().is_empty());
    // Past a ring: one rotation leaves both behind.
    for _ in 0..40 {
        p.stage(&payload(p.next_seq(), 100)).unwrap();
    }
    p.commit().unwrap();
    assert_eq!(p.segment().epoch(), 2);
    let rot = p.take_rotations();
    assert_eq!(rot.len(), 1);
    let mut left = rot[0].cut_off.clone();
    left.sort();
    assert_eq!(left, vec![a.id(), b.id()]);
    assert_eq!(p.lossless_readers(), (0, 0));
}

#[test]
fn departed_lossless_readers_are_left_behind_when_the_table_needs_their_room() {
    let mut p = P::new_heap(config(4096)).unwrap();
    for _ in 0..layout::LOSSLESS_SLOTS {
        let r = p.attach_local(Policy::Lossless).unwrap();
        assert!(p.remove_reader(r.id()));
    }
    assert_eq!(p.segment().epoch(), 1);
    let live = p.attach_local(Policy::Lossless).unwrap();
    assert_eq!(p.segment().epoch(), 2, "one rotation made room");
    assert_eq!(p.lossless_readers(), (1, 0));
    for _ in 0..layout::LOSSLESS_SLOTS - 1 {
        p.attach_local(Policy::Lossless).unwrap();
    }
    assert!(matches!(
        p.attach_local(Policy::Lossless),
        Err(SegmentError::LosslessFull { .. })
    ));
    drop(live);
}

#[test]
#[cfg_attr(miri, ignore = "memfds")]
fn reader_fds_that_claim_more_than_the_producer_granted_are_refused() {
    let mut p = P::new(config(4096)).unwrap();
    for _ in 0..5 {
        p.stage(&payload(p.next_seq(), 100)).unwrap();
    }
    p.commit().unwrap();
    // A lagging registration presented as lossless.
    let mut fds = p.attach_remote(Policy::Lagging).unwrap();
    fds.policy = Policy::Lossless;
    assert!(matches!(
        Reader::<Vec<u8>>::open(fds),
        Err(SegmentError::NotLossless)
    ));
    // A cursor page the producer never made.
    let real = p.attach_remote(Policy::Lossless).unwrap();
    let own = memory::CursorMem::new_memfd().unwrap();
    let forged = ReaderFds {
        cursor: own.fd().unwrap().try_clone_to_owned().unwrap(),
        ..real
    };
    assert!(matches!(
        Reader::<Vec<u8>>::open(forged),
        Err(SegmentError::NotLossless)
    ));
    // A start before the position the producer honours.
    let mut early = p.attach_remote(Policy::Lossless).unwrap();
    early.start_pos -= 16;
    assert!(matches!(
        Reader::<Vec<u8>>::open(early),
        Err(SegmentError::StartPosition { .. })
    ));
    // The same page opened twice (duplicated fds): one page, one reader.
    let fds = p.attach_remote(Policy::Lossless).unwrap();
    let dup = ReaderFds {
        ring: fds.ring.try_clone().unwrap(),
        cursor: fds.cursor.try_clone().unwrap(),
        wake: fds.wake.try_clone().unwrap(),
        ..fds
    };
    let first = Reader::<Vec<u8>>::open(fds).unwrap();
    assert_eq!(first.policy(), Policy::Lossless);
    assert!(matches!(
        Reader::<Vec<u8>>::open(dup),
        Err(SegmentError::CursorClaimed)
    ));
}

/// Lays out frames with raw payloads of the given lengths (their bytes are not archives:
/// only the walk matters here) and returns each frame's position.
fn lay_out(p: &mut P, lens: &[usize]) -> Vec<u64> {
    let mut at = Vec::new();
    let mut pos = p.write_pos() + p.staged_bytes() as u64;
    for &len in lens {
        let cap = p.segment().capacity() as u64;
        let flen = layout::frame_len(len) as u64;
        if pos % cap + flen > cap {
            pos += cap - pos % cap;
        }
        at.push(pos);
        p.stage_archived(&vec![0xAB; len]).unwrap();
        pos += flen;
    }
    p.commit().unwrap();
    at
}

/// Turns the frame at `pos` into a gap frame that claims no payload words.
fn empty_gap_at(p: &P, pos: u64, seq: u64) {
    let i = ((pos % p.segment().capacity() as u64) / 8) as usize;
    let data = p.segment().data();
    data[i].store(
        layout::header_word(layout::FrameKind::Gap, 0),
        std::sync::atomic::Ordering::Relaxed,
    );
    data[i + 1].store(seq, std::sync::atomic::Ordering::Relaxed);
}

fn expect_corrupt_gap(r: &mut R, pos: u64) {
    for _ in 0..10 {
        match r.try_recv(1000) {
            Ok(_) => {}
            Err(ReadError::Corrupt { pos: at, what }) => {
                assert_eq!((at, what), (pos, CorruptKind::Gap));
                return;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    panic!("the corrupt gap at {pos} was not reported");
}

#[test]
fn a_corrupt_gap_header_at_the_edge_of_a_copy_is_an_error_not_a_panic() {
    // At the end of the lagging reader's copy buffer (a quarter ring: 1024 bytes): seven
    // 128-byte frames, one of 112, then the frame at 1008 whose header ends the buffer.
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lagging).unwrap();
    let mut lens = vec![112; 7];
    lens.extend([96, 16]);
    lens.extend([112; 10]);
    let at = lay_out(&mut p, &lens);
    assert_eq!(at[8], 1008);
    empty_gap_at(&p, at[8], 9);
    expect_corrupt_gap(&mut r, 1008);

    // At the wrap: a frame that ends exactly at the end of the data area.
    for policy in [Policy::Lagging, Policy::Lossless] {
        let mut p = P::new_heap(config(4096)).unwrap();
        let mut lens = vec![112; 31]; // 31 x 128 = 3968
        lens.extend([80, 0]); // 96 bytes to 4064, 16 bytes to 4080... and one to 4096
        lens.push(0);
        lens.extend([112; 4]);
        // Read the first part first, so the reader's copy starts near the wrap.
        let mut r = p.attach_local(policy).unwrap();
        let first = lay_out(&mut p, &lens[..20]);
        assert_eq!(first[0], 0);
        while !r.try_recv(1000).unwrap().is_empty() {}
        let at = lay_out(&mut p, &lens[20..]);
        let last = at[13];
        assert_eq!(last % 4096, 4080, "{at:?}");
        empty_gap_at(&p, last, 34);
        expect_corrupt_gap(&mut r, last);
    }

    // At a resync point: a lapped lagging reader resumes at the newest batch start, whose
    // frame is a corrupt gap.
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lagging).unwrap();
    for _ in 0..3 {
        lay_out(&mut p, &[112; 32]);
    }
    let at = lay_out(&mut p, &[0]);
    let seq = p.next_seq() - 1;
    empty_gap_at(&p, at[0], seq);
    let mut corrupt = false;
    for _ in 0..10 {
        match r.try_recv(1000) {
            Ok(_) => {}
            Err(ReadError::Corrupt {
                what: CorruptKind::Gap,
                ..
            }) => corrupt = true,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(corrupt);
}

/// Issue 7, item 6: a rotation to a smaller ring while more is staged than the new ring
/// could take keeps every staged record, with its seq, exactly once.
#[test]
fn rotating_to_a_smaller_ring_with_more_staged_than_fits_loses_nothing() {
    let mut p = P::new_heap(RingConfig {
        capacity: 65536,
        max_record: 256,
        batch_bytes: 16384,
        lossless_wait: Duration::ZERO,
        first_seq: 1,
    })
    .unwrap();
    let mut r = p.attach_local(Policy::Lossless).unwrap();
    let mut staged = Vec::new();
    for _ in 0..60 {
        staged.push(p.stage(&payload(p.next_seq(), 150)).unwrap());
    }
    assert!(
        p.staged_bytes() > 4096,
        "more staged than the new ring holds"
    );
    let new = p.rotate(Some(4096), &[]).unwrap();
    let next = p.stage(&payload(p.next_seq(), 150)).unwrap();
    assert_eq!(next, 61, "no seq handed out twice");
    p.commit().unwrap();
    let mut seen = drain_all(&mut r);
    r.follow(new).unwrap();
    seen.extend(drain_all(&mut r));
    let seqs: Vec<u64> = seen
        .iter()
        .map(|s| match s {
            Seen::Record(q, b) => {
                assert_eq!(*b, payload(*q, 150));
                *q
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, (1..=61).collect::<Vec<_>>());
}

/// Review finding: a batch rebuilt after a release (or a follow) would hand out frames the
/// producer may already overwrite. Entries go with the release.
#[test]
fn a_released_batch_is_never_handed_out_again() {
    let mut p = P::new_heap(config(4096)).unwrap();
    let mut r = p.attach_local(Policy::Lossless).unwrap();
    for _ in 0..5 {
        p.stage(&payload(p.next_seq(), 40)).unwrap();
    }
    p.commit().unwrap();
    assert_eq!(r.fill_ready(64).unwrap(), 5);
    assert_eq!(r.current().len(), 5);
    r.release();
    assert!(r.current().is_empty(), "released frames handed out again");
    p.stage(&payload(p.next_seq(), 40)).unwrap();
    let new = p.rotate(None, &[]).unwrap();
    assert_eq!(r.fill_ready(64).unwrap(), 1);
    r.follow(new).unwrap();
    assert!(
        r.current().is_empty(),
        "old offsets applied to a new segment"
    );
}

/// Review finding: a lossless start before the segment's base aliases bytes the producer
/// is writing (after a rotation, the page is listed in the new segment, and its released
/// position still names the old one).
#[test]
#[cfg_attr(miri, ignore = "memfds")]
fn a_lossless_start_outside_the_segment_is_refused() {
    let mut p = P::new(config(4096)).unwrap();
    let fds = p.attach_remote(Policy::Lossless).unwrap();
    for _ in 0..5 {
        p.stage(&payload(p.next_seq(), 40)).unwrap();
    }
    p.commit().unwrap();
    p.rotate(None, &[]).unwrap();
    let ring2 = p.segment().fd().unwrap().try_clone_to_owned().unwrap();
    let forged = ReaderFds { ring: ring2, ..fds };
    assert!(matches!(
        Reader::<Vec<u8>>::open(forged),
        Err(SegmentError::StartPosition { .. })
    ));
}
