//! One session: the follower's thread ([`Background`]) follows the ring, pages history and
//! keeps the service's status on its one connection. Against an in-test service whose
//! history can be held, so a slow answer is real, not simulated by timing.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use firehose_consumer::pages::{PageAnswer, PageError, Paging};
use firehose_consumer::{Background, EventKind, Options, OwnedEvent, Start};
use support::{history, socket_dir, wait_until, Config, Fake, WATCHDOG};

/// Takes the inbox until `done` says so; returns every record's seq taken.
fn take_until(bg: &Background, seqs: &mut Vec<u64>, mut done: impl FnMut(&[u64]) -> bool) {
    wait_until(WATCHDOG, "the records", || {
        for e in bg.take().events {
            if let OwnedEvent::Record(r) = e {
                seqs.push(r.seq);
            }
        }
        done(seqs)
    });
}

fn answer(bg: &Background) -> PageAnswer {
    let mut got = None;
    wait_until(WATCHDOG, "a history answer", || {
        got = bg.try_answer();
        got.is_some()
    });
    got.expect("answered")
}

fn page_seqs(a: &PageAnswer) -> Vec<u64> {
    a.page
        .as_ref()
        .expect("a page")
        .events
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[test]
fn one_connection_follows_pages_history_and_keeps_the_status() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    fake.publish(100, EventKind::Create);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let bg = Options::new()
        .socket(&path)
        .name("one session")
        .connect()
        .unwrap()
        .into_background(10_000, move || {
            c.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(bg.next_seq(), 101, "live from the newest");
    bg.poll_status(Duration::from_millis(200));
    let mut paging = Paging::new(30);
    let r = paging.older(bg.next_seq()).expect("a first page");
    bg.ask(r);
    fake.publish(50, EventKind::Modify);

    let a = answer(&bg);
    assert_eq!(paging.answered(a.id, None), Some(r));
    assert_eq!(page_seqs(&a), (71..=100).collect::<Vec<_>>());
    let mut live = Vec::new();
    take_until(&bg, &mut live, |s| s.len() >= 50);
    assert_eq!(live, (101..=150).collect::<Vec<_>>());

    // A jump, on the same connection, while live records go on coming.
    let j = paging.jump_to_seq(5);
    bg.ask(j);
    fake.publish(10, EventKind::Modify);
    let a = answer(&bg);
    assert_eq!(a.id, j.id);
    assert_eq!(page_seqs(&a), (5..=34).collect::<Vec<_>>());
    take_until(&bg, &mut live, |s| s.len() >= 60);
    assert_eq!(live, (101..=160).collect::<Vec<_>>());

    let mut status = None;
    wait_until(WATCHDOG, "a status answer", || {
        status = bg.status().ok();
        status.is_some()
    });
    let (s, _) = status.unwrap();
    let names: Vec<&str> = s.readers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["one session"], "one reader: the follower itself");
    assert_eq!(fake.reader_count(), 1, "one ring reader");
    assert!(calls.load(Ordering::Relaxed) > 0);
}

#[test]
fn a_held_history_answer_never_holds_the_records_up() {
    let (_dir, path) = socket_dir();
    let h = history();
    let fake = Fake::start(&path, h.clone(), Config::default());
    fake.publish(20, EventKind::Create);
    let bg = Options::new()
        .socket(&path)
        .connect()
        .unwrap()
        .into_background(10_000, || {})
        .unwrap();
    let hold = h.lock().unwrap().hold_queries.clone();
    hold.store(true, Ordering::Relaxed);
    let mut paging = Paging::new(10);
    let r = paging.older(bg.next_seq()).unwrap();
    bg.ask(r);
    // The service is stuck on the page; the records still come, all of them.
    fake.publish(500, EventKind::Modify);
    let mut live = Vec::new();
    take_until(&bg, &mut live, |s| s.len() >= 500);
    assert_eq!(live, (21..=520).collect::<Vec<_>>());
    assert!(bg.try_answer().is_none(), "the page is still held");
    hold.store(false, Ordering::Relaxed);
    let a = answer(&bg);
    assert_eq!(page_seqs(&a), (11..=20).collect::<Vec<_>>());
}

#[test]
fn a_backfill_and_a_page_on_one_connection_each_get_their_own_rows() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    fake.publish(3000, EventKind::Create);
    // Backfilling from 1 in pages of 100 (thirty queries), while the application pages
    // history on the same connection: neither may take the other's rows.
    let bg = Options::new()
        .socket(&path)
        .start(Start::Seq(1))
        .page_size(100)
        .connect()
        .unwrap()
        .into_background(10_000, || {})
        .unwrap();
    let mut paging = Paging::new(250);
    let mut pages = 0;
    let mut live = Vec::new();
    while pages < 5 {
        let r = paging.jump_to_seq(1 + pages * 500);
        bg.ask(r);
        let a = answer(&bg);
        assert_eq!(a.id, r.id);
        let from = 1 + pages * 500;
        assert_eq!(page_seqs(&a), (from..from + 250).collect::<Vec<_>>());
        pages += 1;
        for e in bg.take().events {
            if let OwnedEvent::Record(r) = e {
                live.push(r.seq);
            }
        }
    }
    take_until(&bg, &mut live, |s| s.len() >= 3000);
    assert_eq!(
        live,
        (1..=3000).collect::<Vec<_>>(),
        "every record once, in order"
    );
}

#[test]
fn a_page_asked_while_the_service_is_away_is_answered_and_asking_again_works() {
    let (_dir, path) = socket_dir();
    let h = history();
    let a = Fake::start(&path, h.clone(), Config::default());
    a.publish(40, EventKind::Create);
    let bg = Options::new()
        .socket(&path)
        .reconnect(true)
        .connect()
        .unwrap()
        .into_background(10_000, || {})
        .unwrap();
    a.stop();
    wait_until(WATCHDOG, "the disconnect", || {
        bg.take()
            .events
            .iter()
            .any(|e| matches!(e, OwnedEvent::Disconnected { .. }))
    });
    let mut paging = Paging::new(10);
    let r = paging.jump_to_seq(1);
    bg.ask(r);
    let got = answer(&bg);
    assert!(
        matches!(got.page, Err(PageError::Lost(_))),
        "an error, not a hang: {:?}",
        got.page
    );
    let b = Fake::start(
        &path,
        h,
        Config {
            first_seq: 41,
            ..Config::default()
        },
    );
    wait_until(WATCHDOG, "the reconnect", || {
        bg.take()
            .events
            .iter()
            .any(|e| matches!(e, OwnedEvent::Reconnected { .. }))
    });
    let r = paging.jump_to_seq(1);
    bg.ask(r);
    let got = answer(&bg);
    assert_eq!(page_seqs(&got), (1..=10).collect::<Vec<_>>());
    drop(b);
}
