//! The model driven as a UI would: live rows, the filter, pause and follow, history paging
//! both ways across gaps, jumps, and the counters.

use firehose_transport::record::{EventKind, FileEvent, Loss};

use super::*;
use crate::background::Gathered;
use crate::owned::OwnedEvent;
use crate::pages::{Direction, Page, PageAnswer, PageRequest};

/// A record at seq `seq`, seen at `seq` seconds.
fn file_event(seq: u64, kind: EventKind, path: &str) -> FileEvent {
    FileEvent {
        seq,
        time_ns: seq * 1_000_000_000,
        kind,
        path: path.as_bytes().to_vec(),
        path_to: None,
        rule: 1,
        size: None,
        reconciled: false,
        blind: None,
        gap: None,
    }
}

fn rec(seq: u64, kind: EventKind, path: &str) -> OwnedEvent {
    OwnedEvent::Record(file_event(seq, kind, path))
}

fn gathered(events: Vec<OwnedEvent>) -> Gathered {
    Gathered {
        events: events.into(),
        ..Gathered::default()
    }
}

fn shown(m: &mut Model) -> Vec<u64> {
    (0..m.shown_len())
        .map(|i| m.shown_row(i).unwrap().seq)
        .collect()
}

#[test]
fn filter_toggles_pause_and_the_bound() {
    let mut m = Model::new(4);
    m.ingest(
        gathered(vec![
            rec(1, EventKind::Create, "/w/a.rs"),
            rec(2, EventKind::Remove, "/w/b.txt"),
            rec(3, EventKind::Create, "/w/sub/c.rs"),
        ]),
        0,
    );
    assert_eq!(shown(&mut m), [1, 2, 3]);
    m.set_filter("*.rs");
    assert_eq!(shown(&mut m), [1, 3]);
    m.set_filter("b.t");
    assert_eq!(shown(&mut m), [2]);
    m.set_filter("");
    m.toggle(EventKind::Create);
    assert_eq!(shown(&mut m), [2]);
    m.toggle(EventKind::Create);
    m.set_paused(true);
    m.ingest(gathered(vec![rec(4, EventKind::Modify, "/w/d")]), 0);
    assert_eq!(shown(&mut m), [1, 2, 3], "paused holds the table");
    m.set_paused(false);
    m.ingest(gathered(vec![rec(5, EventKind::Modify, "/w/e")]), 1);
    assert_eq!(shown(&mut m), [2, 3, 4, 5], "at most 4 held");
    assert_eq!(m.counts.dropped, 1);
    assert_eq!(m.counts.received, 5);
    assert_eq!((m.rate.history(), m.rate.current()), (vec![4], 1));
    // Scrolled up: held aside like a pause; following again shows them.
    m.set_follow(false);
    m.ingest(gathered(vec![rec(6, EventKind::Modify, "/w/f")]), 1);
    assert_eq!(shown(&mut m), [2, 3, 4, 5]);
    assert_eq!(m.held_len(), 1);
    m.set_follow(true);
    assert_eq!(shown(&mut m), [3, 4, 5, 6]);
}

#[test]
fn the_filtered_rows_kept_as_rows_come_and_go_match_a_full_pass() {
    let mut m = Model::new(7);
    m.set_filter("*.rs");
    m.toggle(EventKind::Remove);
    let kinds = [EventKind::Create, EventKind::Remove, EventKind::Modify];
    for seq in 1..60u64 {
        let path = if seq % 3 == 0 { "/w/x.txt" } else { "/w/y.rs" };
        m.ingest(gathered(vec![rec(seq, kinds[seq as usize % 3], path)]), 0);
        // Read every few rows (a frame), so rows also come and go between reads.
        if seq % 4 != 0 {
            continue;
        }
        let want: Vec<u64> = m
            .rows
            .iter()
            .filter(|r| r.path.ends_with(".rs") && r.kind != EventKind::Remove)
            .map(|r| r.seq)
            .collect();
        assert_eq!(shown(&mut m), want, "after seq {seq}");
        assert_eq!(m.shown_len(), want.len());
        if let Some(&last) = want.last() {
            assert_eq!(m.shown_index_of(last), want.len() - 1);
        }
    }
    assert_eq!(m.rows.len(), 7);
}

#[test]
fn notices_move_the_counters_and_the_banner() {
    let mut m = Model::new(10);
    m.ingest(
        Gathered {
            events: vec![
                OwnedEvent::Loss(Loss::Lagged { from: 1, to: 3 }),
                OwnedEvent::Loss(Loss::Missing { from: 6, to: 7 }),
                OwnedEvent::Loss(Loss::Truncated { oldest: 40 }),
                OwnedEvent::Loss(Loss::Gap {
                    from: 4,
                    to: 4,
                    reason: firehose_transport::record::GapReason::NotStored,
                }),
                rec(5, EventKind::Overflow, "/w"),
                OwnedEvent::Disconnected {
                    reason: firehose_transport::control::wire::DisconnectReason::Gone,
                    detail: "eof".into(),
                },
            ]
            .into(),
            dropped: 2,
            ..Gathered::default()
        },
        0,
    );
    assert_eq!(
        m.counts,
        Counters {
            received: 3,
            lagged: 3,
            missing: 2,
            gaps: 1,
            not_stored: 0,
            overflows: 1,
            dropped: 2,
        }
    );
    assert!(matches!(m.conn, Conn::Down(_)));
    assert_eq!(
        m.paging.floor, 40,
        "history starts at 40: no older page below it"
    );
    m.ingest(gathered(vec![OwnedEvent::Reconnected { start_seq: 9 }]), 0);
    assert_eq!(m.conn, Conn::Up(Some(9)));
}

fn ev(seq: u64) -> FileEvent {
    file_event(seq, EventKind::Create, &format!("/w/{seq}"))
}

/// What history would answer for `r`, holding seqs `1..=stored`.
fn answer(r: PageRequest, stored: u64) -> PageAnswer {
    answer_in(r, &[1..=stored])
}

/// What history would answer for `r`, holding the seqs in `stored`.
fn answer_in(r: PageRequest, stored: &[std::ops::RangeInclusive<u64>]) -> PageAnswer {
    let all = stored.iter().flat_map(|s| s.clone());
    let events: Vec<FileEvent> = match r.since_ns {
        Some(t) => all
            .filter(|&s| s * 1_000_000_000 >= t)
            .take(r.limit as usize)
            .map(ev)
            .collect(),
        None => all
            .filter(|s| (r.from..=r.to).contains(s))
            .take(r.limit as usize)
            .map(ev)
            .collect(),
    };
    PageAnswer {
        id: r.id,
        page: Ok(Page {
            events,
            truncated: None,
        }),
    }
}

fn live(m: &mut Model, seqs: std::ops::RangeInclusive<u64>) {
    let events = seqs.clone().map(|s| OwnedEvent::Record(ev(s))).collect();
    m.ingest(
        Gathered {
            events,
            ..Gathered::default()
        },
        0,
    );
    m.live_next = seqs.end() + 1;
}

fn seqs(m: &Model) -> Vec<u64> {
    m.rows.iter().map(|r| r.seq).collect()
}

#[test]
fn scrolling_up_pages_back_to_the_oldest_and_down_again_to_live() {
    // History holds 1..=100; the window holds 20 rows, pages are 10.
    let mut m = Model::new(20);
    live(&mut m, 91..=100);
    m.set_follow(false);
    let mut oldest_seen = u64::MAX;
    for _ in 0..20 {
        m.want_older = true;
        let Some(r) = m.history_request() else { break };
        assert_eq!(r.direction, Direction::Older);
        assert_eq!(m.history_answer(answer(r, 100)), Some(Direction::Older));
        oldest_seen = oldest_seen.min(m.rows[0].seq);
        assert!(m.rows.len() <= 20, "memory stays bounded");
    }
    assert_eq!(oldest_seen, 1, "scrolled back to the oldest stored row");
    assert!(m.paging.older_done);
    assert_eq!(seqs(&m), (1..=20).collect::<Vec<_>>());
    assert!(m.detached());
    // New live rows wait aside while browsing.
    live(&mut m, 101..=103);
    assert_eq!(m.rows.len(), 20);
    // Scrolling down pages newer rows until the live ones continue them.
    let mut rounds = 0;
    while m.detached() {
        m.want_newer = true;
        let r = m.history_request().expect("a newer page");
        assert_eq!(r.direction, Direction::Newer);
        m.history_answer(answer(r, 103));
        rounds += 1;
        assert!(rounds < 20);
    }
    m.set_follow(true);
    let s = seqs(&m);
    assert_eq!(s.last(), Some(&103));
    assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "no hole: {s:?}");
}

#[test]
fn go_to_a_seq_or_a_time_then_follow_newest() {
    let mut m = Model::new(50);
    live(&mut m, 1..=100);
    let r = m.go_to("30", 0).unwrap();
    assert_eq!((r.from, r.direction), (30, Direction::Jump));
    m.history_answer(answer(r, 100));
    assert_eq!(m.rows.front().map(|r| r.seq), Some(30));
    assert_eq!(m.selected, Some(30));
    assert_eq!(m.scroll_to, Some(30));
    assert!(m.detached());
    // A time: seq s happened at s seconds; "70s" before 100 s is seq 30 again, an
    // RFC 3339 time works too.
    let r = m.go_to("70s", 100_000_000_000).unwrap();
    assert_eq!(r.since_ns, Some(30_000_000_000));
    m.history_answer(answer(r, 100));
    assert_eq!(m.selected, Some(30));
    let r = m.go_to("1970-01-01T00:01:00Z", 0).unwrap();
    m.history_answer(answer(r, 100));
    assert_eq!(m.selected, Some(60));
    assert!(m.go_to("yesterday", 0).unwrap_err().contains("RFC 3339"));
    // Past the newest: nothing there, said so, rows kept.
    let r = m.go_to("500", 0).unwrap();
    m.history_answer(answer(r, 100));
    assert!(m.paging.error.as_deref().unwrap().contains("seq 500"));
    assert_eq!(m.selected, Some(60));
    // Follow newest lets the history rows go and fills from an older page.
    live(&mut m, 101..=102);
    m.follow_newest();
    assert_eq!(seqs(&m), [101, 102]);
    let r = m.history_request().expect("a fill page");
    m.history_answer(answer(r, 102));
    assert_eq!(m.rows.front().map(|r| r.seq), Some(76));
    assert_eq!(m.rows.back().map(|r| r.seq), Some(102));
}

#[test]
fn paging_goes_on_across_a_gap_wider_than_a_page_both_ways() {
    // Stored: 1..=30 and 3031..=3060; 3000 seqs between never stored (a crash gap, or
    // retention). Pages of 10, a window of 20.
    let stored = [1..=30, 3031..=3060];
    let mut m = Model::new(20);
    live(&mut m, 3051..=3060);
    m.set_follow(false);
    let mut requests = 0;
    while !m.paging.older_done {
        m.want_older = true;
        let Some(r) = m.history_request() else { break };
        m.history_answer(answer_in(r, &stored));
        requests += 1;
        assert!(requests < 1000, "stuck paging older");
    }
    assert_eq!(m.rows.front().map(|r| r.seq), Some(1), "reached the oldest");
    assert!(m.detached());
    live(&mut m, 3061..=3062);
    let mut got: Vec<u64> = m.rows.iter().map(|r| r.seq).collect();
    while m.detached() {
        m.want_newer = true;
        let r = m.history_request().expect("a newer page");
        m.history_answer(answer_in(r, &[1..=30, 3031..=3062]));
        got.extend(m.rows.iter().map(|r| r.seq));
        requests += 1;
        assert!(requests < 2000, "stuck paging newer");
    }
    m.set_follow(true);
    got.extend(m.rows.iter().map(|r| r.seq));
    got.sort_unstable();
    got.dedup();
    let want: Vec<u64> = (1..=30).chain(3031..=3062).collect();
    assert_eq!(
        got, want,
        "every stored row seen on the way down, none skipped"
    );
}

#[test]
fn follow_newest_makes_a_page_in_flight_stale_and_live_rows_are_kept_once() {
    let mut m = Model::new(20);
    live(&mut m, 1..=10);
    m.set_follow(false);
    m.want_older = true;
    live(&mut m, 11..=11);
    m.rows.pop_front();
    let r = m.history_request().expect("an older page");
    m.follow_newest();
    assert_eq!(
        m.history_answer(answer(r, 11)),
        None,
        "stale after follow newest"
    );
    // History handed out seqs the follower has yet to deliver: they are kept once.
    let j = m.go_to("5", 0).unwrap();
    m.history_answer(answer(j, 14));
    live(&mut m, 12..=15);
    m.set_follow(true);
    let s: Vec<u64> = m.rows.iter().map(|r| r.seq).collect();
    assert_eq!(s, (5..=15).collect::<Vec<_>>());
}

#[test]
fn a_stale_or_failed_answer_leaves_the_rows() {
    let mut m = Model::new(10);
    live(&mut m, 1..=5);
    let old = m.go_to("1", 0).unwrap();
    let new = m.go_to("3", 0).unwrap();
    assert_eq!(m.history_answer(answer(old, 5)), None, "stale");
    m.history_answer(PageAnswer {
        id: new.id,
        page: Err(crate::pages::PageError::Unavailable),
    });
    assert!(m.paging.error.as_deref().unwrap().contains("no history"));
    assert_eq!(seqs(&m), [1, 2, 3, 4, 5]);
}

#[test]
fn following_again_with_a_full_window_keeps_the_live_rows_and_never_detaches() {
    // A window of 20, pages of 10: browsing older history detaches, 18 live rows wait aside.
    let mut m = Model::new(20);
    live(&mut m, 91..=110);
    m.set_follow(false);
    m.want_older = true;
    let r = m.history_request().expect("an older page");
    m.history_answer(answer(r, 200));
    assert!(m.detached());
    live(&mut m, 111..=128);
    assert_eq!(m.held_len(), 18);
    // "Follow newest": the live rows come back and one older page fills the table above
    // them; it must not push them out again while following.
    m.follow_newest();
    let r = m.history_request().expect("the fill page");
    m.history_answer(answer(r, 200));
    assert!(!m.detached() && m.follow, "following, not browsing history");
    assert_eq!(m.rows.back().map(|r| r.seq), Some(128));
    assert_eq!(m.rows.len(), 20);
    live(&mut m, 129..=130);
    assert_eq!(m.held_len(), 0, "new rows are shown, not held");
    assert_eq!(m.rows.back().map(|r| r.seq), Some(130));
}
