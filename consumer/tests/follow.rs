//! The library against an in-test service: follow and drain, lag then backfill, a service
//! restart in the middle, gaps never stored, truncated history, another instance.

mod support;

use std::time::{Duration, Instant};

use firehose_consumer::{
    Event, EventKind, FollowError, Follower, GapReason, InstanceId, Loss, Options, OwnedEvent,
    Record, Start,
};
use support::{event, gap_row, history, socket_dir, Config, Fake, WATCHDOG};

/// Drains `f` (as a GUI would, once per "frame") until `done` says so; returns every event
/// and how many records came zero-copy from the ring.
fn collect(
    f: &mut Follower,
    mut done: impl FnMut(&[OwnedEvent]) -> bool,
) -> (Vec<OwnedEvent>, usize) {
    let deadline = Instant::now() + WATCHDOG;
    let mut all = Vec::new();
    let mut live = 0;
    while !done(&all) {
        assert!(
            Instant::now() < deadline,
            "watchdog: gave up with {} events, last {:?}",
            all.len(),
            all.last()
        );
        let evs = f.drain(1000).expect("drain");
        if evs.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
        for ev in evs {
            if let Event::Record(Record::Live(_)) = ev {
                live += 1;
            }
            all.push(ev.to_owned_event());
        }
    }
    (all, live)
}

fn record_seqs(evs: &[OwnedEvent]) -> Vec<u64> {
    evs.iter()
        .filter_map(|e| match e {
            OwnedEvent::Record(r) => Some(r.seq),
            _ => None,
        })
        .collect()
}

fn has_seq(n: u64) -> impl FnMut(&[OwnedEvent]) -> bool {
    move |evs| evs.iter().any(|e| e.as_event().last_seq() >= Some(n))
}

#[test]
fn follows_and_drains_in_order() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    let mut f = Options::new().socket(&path).name("test").connect().unwrap();
    assert!(f.drain(100).unwrap().is_empty());
    fake.publish(300, EventKind::Create);
    let (evs, live) = collect(&mut f, has_seq(300));
    assert_eq!(record_seqs(&evs), (1..=300).collect::<Vec<_>>());
    assert_eq!(live, 300, "a live follower reads the ring zero-copy");
    let OwnedEvent::Record(r) = &evs[0] else {
        panic!()
    };
    assert_eq!(r, &event(1, EventKind::Create));
    // Drain honours its maximum.
    fake.publish(50, EventKind::Modify);
    support::wait_until(WATCHDOG, "records visible", || fake.committed_seq() > 350);
    let mut got = 0;
    let deadline = Instant::now() + WATCHDOG;
    while got < 50 {
        assert!(Instant::now() < deadline, "watchdog");
        let n = f.drain(7).unwrap().len();
        assert!(n <= 7);
        got += n;
    }
}

#[test]
fn one_drain_hands_out_more_than_one_ring_copy() {
    // A lagging reader copies at most a quarter of the ring at a time (256 KiB here); a
    // drain gathers copies until it has everything there, up to its maximum.
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    let mut f = Options::new().socket(&path).name("test").connect().unwrap();
    assert!(f.drain(100).unwrap().is_empty());
    // A bare client beside it: one receive is one copy.
    let mut one: firehose_consumer::Client<firehose_consumer::FileEvent> =
        firehose_consumer::Client::connect(&path, &firehose_consumer::ConnectOptions::default())
            .unwrap();
    let seqs = fake.publish(6000, EventKind::Create);
    let copy = one.recv(100_000).unwrap().len();
    assert!(copy < 3000, "one copy holds less than half: {copy}");
    let all: Vec<OwnedEvent> = f
        .drain(100_000)
        .unwrap()
        .map(|e| e.to_owned_event())
        .collect();
    assert_eq!(all.len(), 6000, "one drain, everything there");
    assert_eq!(record_seqs(&all), seqs.clone().collect::<Vec<_>>());
    // Up to its maximum, and the rest in order after.
    let more = fake.publish(6000, EventKind::Modify);
    let first: Vec<OwnedEvent> = f.drain(4000).unwrap().map(|e| e.to_owned_event()).collect();
    assert_eq!(first.len(), 4000);
    let rest: Vec<OwnedEvent> = f
        .drain(100_000)
        .unwrap()
        .map(|e| e.to_owned_event())
        .collect();
    let got: Vec<u64> = record_seqs(&first)
        .into_iter()
        .chain(record_seqs(&rest))
        .collect();
    assert_eq!(got, more.collect::<Vec<_>>());
}

#[test]
fn lag_is_backfilled_with_nothing_lost_or_duplicated() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(
        &path,
        history(),
        Config {
            capacity: 64 << 10,
            ..Config::default()
        },
    );
    let mut f = Options::new()
        .socket(&path)
        .backfill(true)
        .page_size(500)
        .connect()
        .unwrap();
    const N: u64 = 20_000;
    // The follower does not read while the ring wraps many times over.
    for _ in 0..N / 100 {
        fake.publish(100, EventKind::CloseWrite);
    }
    let (evs, live) = collect(&mut f, has_seq(N));
    assert_eq!(record_seqs(&evs), (1..=N).collect::<Vec<_>>());
    assert!(
        evs.iter().all(|e| matches!(e, OwnedEvent::Record(_))),
        "no lag is reported when it was backfilled"
    );
    assert!(
        live < N as usize,
        "the ring was lapped: history filled the lag"
    );
}

#[test]
fn a_restart_in_the_middle_is_bridged() {
    let (_dir, path) = socket_dir();
    let h = history();
    let a = Fake::start(&path, h.clone(), Config::default());
    a.publish(50, EventKind::Create);
    let mut f = Options::new().socket(&path).follow_from(1).unwrap();
    let (first, _) = collect(&mut f, has_seq(50));
    a.stop();
    // While the follower is away, the new service stores and streams 51..=80.
    let b = Fake::start(
        &path,
        h.clone(),
        Config {
            first_seq: 51,
            ..Config::default()
        },
    );
    b.publish(30, EventKind::Modify);
    let (second, _) = collect(&mut f, |evs| {
        evs.iter()
            .any(|e| matches!(e, OwnedEvent::Reconnected { .. }))
    });
    b.publish(40, EventKind::Remove);
    let (third, _) = collect(&mut f, has_seq(120));
    let all: Vec<OwnedEvent> = first.into_iter().chain(second).chain(third).collect();
    assert_eq!(record_seqs(&all), (1..=120).collect::<Vec<_>>());
    let disc = all
        .iter()
        .position(|e| matches!(e, OwnedEvent::Disconnected { .. }))
        .expect("the disconnect is reported");
    let reco = all
        .iter()
        .position(|e| matches!(e, OwnedEvent::Reconnected { .. }))
        .expect("the reconnect is reported");
    assert!(disc < reco);
    assert_eq!(f.next_seq(), 121);
}

#[test]
fn gaps_never_stored_arrive_with_their_reason() {
    let (_dir, path) = socket_dir();
    let h = history();
    // History: 1..=3, a gap row 4..=6 (not stored), 7..=10; the ring starts at 11.
    let fake = Fake::start(
        &path,
        h.clone(),
        Config {
            first_seq: 11,
            ..Config::default()
        },
    );
    let mut rows: Vec<_> = (1..=3).map(|s| event(s, EventKind::Create)).collect();
    rows.push(gap_row(4, 6, GapReason::NotStored));
    rows.extend((7..=10).map(|s| event(s, EventKind::Create)));
    fake.store(&rows);
    let mut f = Options::new().socket(&path).follow_from(1).unwrap();
    fake.publish(2, EventKind::Create); // 11, 12 live
                                        // 13..=15 stored but not streamed: the ring skips them, history has them.
    fake.store(
        &(13..=15)
            .map(|s| event(s, EventKind::Modify))
            .collect::<Vec<_>>(),
    );
    fake.ring_gap(15, GapReason::NotStreamed);
    fake.publish(1, EventKind::Create); // 16
    let (evs, _) = collect(&mut f, has_seq(16));
    let want_records: Vec<u64> = (1..=3).chain(7..=16).collect();
    assert_eq!(record_seqs(&evs), want_records);
    let gaps: Vec<_> = evs
        .iter()
        .filter(|e| matches!(e, OwnedEvent::Loss(Loss::Gap { .. })))
        .collect();
    assert_eq!(
        gaps,
        vec![&OwnedEvent::Loss(Loss::Gap {
            from: 4,
            to: 6,
            reason: GapReason::NotStored
        })]
    );
    let gap_at = evs
        .iter()
        .position(|e| matches!(e, OwnedEvent::Loss(Loss::Gap { .. })));
    assert_eq!(gap_at, Some(3), "the gap comes in its place");
}

#[test]
fn history_that_no_longer_reaches_back_is_reported() {
    let (_dir, path) = socket_dir();
    let h = history();
    h.lock().unwrap().oldest = 5;
    let fake = Fake::start(
        &path,
        h.clone(),
        Config {
            first_seq: 11,
            ..Config::default()
        },
    );
    fake.store(
        &(5..=10)
            .map(|s| event(s, EventKind::Create))
            .collect::<Vec<_>>(),
    );
    let mut f = Options::new().socket(&path).follow_from(1).unwrap();
    fake.publish(1, EventKind::Create);
    let (evs, _) = collect(&mut f, has_seq(11));
    assert_eq!(evs[0], OwnedEvent::Loss(Loss::Truncated { oldest: 5 }));
    assert_eq!(record_seqs(&evs), (5..=11).collect::<Vec<_>>());
}

#[test]
fn another_instance_is_told_plainly() {
    let (_dir, path) = socket_dir();
    let a = Fake::start(&path, history(), Config::default());
    let mut f = Options::new().socket(&path).follow_from(1).unwrap();
    assert_eq!(f.instance_id(), InstanceId([7; 16]));
    a.publish(5, EventKind::Create);
    collect(&mut f, has_seq(5));
    a.stop();
    let b = Fake::start(
        &path,
        history(),
        Config {
            instance: [9; 16],
            ..Config::default()
        },
    );
    b.publish(5, EventKind::Create);
    let (evs, _) = collect(&mut f, |evs| {
        evs.iter()
            .any(|e| matches!(e, OwnedEvent::OtherInstance { .. }))
    });
    assert!(evs.contains(&OwnedEvent::OtherInstance {
        expected: InstanceId([7; 16]),
        found: InstanceId([9; 16])
    }));
    assert!(record_seqs(&evs).is_empty(), "no silent jump");
    assert!(matches!(
        f.drain(10),
        Err(FollowError::OtherInstance { .. })
    ));
    // Asked for up front, a mismatch is refused at connect.
    let err = Options::new()
        .socket(&path)
        .expect_instance(InstanceId([7; 16]))
        .connect()
        .unwrap_err();
    assert!(matches!(err, FollowError::OtherInstance { .. }), "{err}");
}

#[test]
fn without_reconnect_a_disconnect_ends_with_its_reason() {
    let (_dir, path) = socket_dir();
    let a = Fake::start(&path, history(), Config::default());
    let mut f = Options::new()
        .socket(&path)
        .reconnect(false)
        .connect()
        .unwrap();
    a.stop();
    let (evs, _) = collect(&mut f, |evs| !evs.is_empty());
    assert!(matches!(evs[0], OwnedEvent::Disconnected { .. }), "{evs:?}");
    let deadline = Instant::now() + WATCHDOG;
    loop {
        assert!(Instant::now() < deadline, "watchdog");
        match f.drain(10) {
            Err(FollowError::Disconnected { .. }) => break,
            Ok(e) => assert!(e.is_empty()),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn blocking_iterator_and_oldest_start() {
    let (_dir, path) = socket_dir();
    let h = history();
    let fake = Fake::start(
        &path,
        h,
        Config {
            first_seq: 4,
            ..Config::default()
        },
    );
    fake.store(
        &(1..=3)
            .map(|s| event(s, EventKind::Create))
            .collect::<Vec<_>>(),
    );
    let mut f = Options::new()
        .socket(&path)
        .start(Start::Oldest)
        .connect()
        .unwrap();
    fake.publish(2, EventKind::Create);
    let evs: Vec<OwnedEvent> = f.iter().take(5).map(Result::unwrap).collect();
    assert_eq!(record_seqs(&evs), vec![1, 2, 3, 4, 5]);
}

#[test]
fn oldest_start_before_the_first_commit_still_gets_what_was_given_out() {
    // The service has given out seqs 1..=3 but history has committed none of them yet:
    // the follower must not start at the live head and skip them. An empty history says
    // its oldest is 0, as the service's does.
    let (_dir, path) = socket_dir();
    let empty = history();
    empty.lock().unwrap().oldest = 0;
    let fake = Fake::start(
        &path,
        empty,
        Config {
            first_seq: 4,
            ..Config::default()
        },
    );
    let mut f = Options::new()
        .socket(&path)
        .start(Start::Oldest)
        .connect()
        .unwrap();
    fake.store(
        &(1..=3)
            .map(|s| event(s, EventKind::Create))
            .collect::<Vec<_>>(),
    );
    fake.publish(2, EventKind::Create);
    let mut got = Vec::new();
    let deadline = Instant::now() + WATCHDOG;
    while got.len() < 5 {
        assert!(Instant::now() < deadline, "watchdog: got {got:?}");
        let evs: Vec<OwnedEvent> = f.drain(16).unwrap().map(|e| e.to_owned_event()).collect();
        got.extend(record_seqs(&evs));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
}

#[cfg(feature = "tokio")]
#[test]
fn async_stream_yields_owned_events() {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    let mut s = Options::new()
        .socket(&path)
        .follow_from(1)
        .unwrap()
        .into_stream();
    fake.publish(3, EventKind::Create);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut got = Vec::new();
    let deadline = Instant::now() + WATCHDOG;
    while got.len() < 3 {
        assert!(Instant::now() < deadline, "watchdog");
        match futures_core::Stream::poll_next(std::pin::Pin::new(&mut s), &mut cx) {
            Poll::Ready(Some(ev)) => got.push(ev.unwrap()),
            Poll::Ready(None) => panic!("ended"),
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(50)),
        }
    }
    assert_eq!(record_seqs(&got), vec![1, 2, 3]);
}

#[test]
fn a_follower_can_move_to_another_thread() {
    fn is_send<T: Send>() {}
    is_send::<Follower>();
    is_send::<FollowError>();
}

#[test]
fn a_background_follower_gathers_between_takes_and_says_since_when() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    let f = Options::new().socket(&path).name("test").connect().unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let bg = f
        .into_background(1000, move || {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    let empty = bg.take();
    assert!(empty.events.is_empty() && empty.first_at.is_none());
    let before = Instant::now();
    fake.publish(40, EventKind::Create);
    support::wait_until(WATCHDOG, "the follower's callback", || {
        calls.load(std::sync::atomic::Ordering::Relaxed) > 0 && bg.next_seq() > 40
    });
    std::thread::sleep(Duration::from_millis(20));
    let got = bg.take();
    assert_eq!(
        record_seqs(&got.events.iter().cloned().collect::<Vec<_>>()),
        (1..=40).collect::<Vec<_>>()
    );
    let first = got.first_at.expect("first_at with records");
    assert!(
        first >= before,
        "stamped when the records came off the ring"
    );
    assert!(
        first.elapsed() >= Duration::from_millis(20),
        "the oldest waited since then"
    );
    assert!(bg.take().first_at.is_none(), "a take starts a new wait");
}

#[test]
fn following_from_inside_a_gap_names_the_rest_of_it() {
    // A reader that printed records which died with the service before their commit
    // resumes inside the crash gap: history answers with the gap row stored at its first
    // seq, and the follower hands out the part from where it resumed.
    let (_dir, path) = socket_dir();
    let h = history();
    let fake = Fake::start(
        &path,
        h.clone(),
        Config {
            first_seq: 13,
            ..Config::default()
        },
    );
    let mut rows: Vec<_> = (1..=3).map(|s| event(s, EventKind::Create)).collect();
    rows.push(gap_row(4, 9, GapReason::Crash));
    rows.extend((10..=12).map(|s| event(s, EventKind::Create)));
    fake.store(&rows);
    let mut f = Options::new().socket(&path).follow_from(6).unwrap();
    fake.publish(1, EventKind::Create); // 13 live
    let (evs, _) = collect(&mut f, has_seq(13));
    assert_eq!(
        evs.first(),
        Some(&OwnedEvent::Loss(Loss::Gap {
            from: 6,
            to: 9,
            reason: GapReason::Crash
        }))
    );
    assert_eq!(record_seqs(&evs), (10..=13).collect::<Vec<_>>());
}

#[test]
fn drain_owned_hands_out_what_drain_would_each_once_in_order() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    fake.publish(500, EventKind::Create);
    let mut f = Options::new().socket(&path).follow_from(1).unwrap();
    // History first (backfill), then live batches above the gathering size.
    fake.publish(5000, EventKind::Modify);
    let mut all = Vec::new();
    let deadline = Instant::now() + WATCHDOG;
    while record_seqs(&all).len() < 5500 {
        assert!(Instant::now() < deadline, "watchdog: {} records", all.len());
        let before = all.len();
        let n = f.drain_owned(2000, &mut all).expect("drain");
        assert_eq!(n, all.len() - before);
        assert!(n <= 2000, "at most max");
        if n == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(record_seqs(&all), (1..=5500).collect::<Vec<_>>());
    assert_eq!(f.next_seq(), 5501);
}
