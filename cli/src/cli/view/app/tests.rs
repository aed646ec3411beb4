//! The viewer's state without a terminal: the keys' effects on the shared monitor model.

use firehose_consumer::pages::{Direction, Page, PageAnswer, PageError};
use firehose_consumer::{EventKind, FileEvent, OwnedEvent};

use super::*;

fn event(s: u64) -> FileEvent {
    FileEvent {
        seq: s,
        time_ns: s * 1_000_000_000,
        kind: EventKind::Create,
        path: format!("/d/file-{s}").into_bytes(),
        path_to: None,
        rule: 0,
        size: None,
        reconciled: false,
        blind: None,
        gap: None,
    }
}

fn feed(app: &mut App, seqs: std::ops::RangeInclusive<u64>) {
    for s in seqs.clone() {
        app.m.ingest_event(OwnedEvent::Record(event(s)));
    }
    app.m.live_next = app.m.live_next.max(seqs.end() + 1);
}

fn sel_seq(app: &mut App) -> u64 {
    app.selected().unwrap().seq
}

fn shown(app: &mut App) -> Vec<u64> {
    let (top, _) = app.window();
    let end = (top + app.height).min(app.m.shown_len());
    (top..end)
        .map(|i| app.m.shown_row(i).unwrap().seq)
        .collect()
}

/// What history holding `stored` answers for `r`.
fn answer(r: PageRequest, stored: impl Fn(u64) -> bool) -> PageAnswer {
    let events: Vec<FileEvent> = match r.since_ns {
        Some(t) => (1..100_000)
            .filter(|&s| stored(s) && s * 1_000_000_000 >= t)
            .take(r.limit as usize)
            .map(event)
            .collect(),
        None => (r.from..=r.to)
            .filter(|&s| stored(s))
            .take(r.limit as usize)
            .map(event)
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

#[test]
fn sticky_follow_stops_on_scroll_up_and_resumes() {
    let mut app = App::new(1000);
    app.height = 5;
    feed(&mut app, 1..=20);
    assert!(app.m.follow);
    assert_eq!(shown(&mut app), [16, 17, 18, 19, 20]);
    app.move_by(-1);
    assert!(!app.m.follow);
    assert_eq!(sel_seq(&mut app), 19);
    feed(&mut app, 21..=30);
    assert_eq!(shown(&mut app), [16, 17, 18, 19, 20], "held still");
    assert_eq!(app.m.held_len(), 10, "new rows wait aside");
    app.move_by(1);
    assert!(app.m.follow, "reaching the newest row follows again");
    assert_eq!(shown(&mut app), [26, 27, 28, 29, 30]);
    app.page(-1);
    assert!(!app.m.follow);
    app.resume();
    assert!(app.m.follow);
}

#[test]
fn pause_holds_the_view_while_rows_are_counted() {
    let mut app = App::new(1000);
    app.height = 3;
    feed(&mut app, 1..=10);
    app.toggle_pause();
    assert!(app.m.paused && !app.m.follow);
    feed(&mut app, 11..=20);
    assert_eq!(shown(&mut app), [8, 9, 10]);
    assert_eq!(app.m.counts.received, 20);
    app.height = 10;
    assert_eq!(
        shown(&mut app),
        [8, 9, 10],
        "newer rows wait for the pause to end"
    );
    app.move_by(100);
    assert!(!app.m.follow, "paused: the bottom does not follow");
    app.toggle_pause();
    assert!(app.m.follow);
    assert_eq!(shown(&mut app), (11..=20).collect::<Vec<_>>());
}

#[test]
fn the_filter_narrows_pauses_and_restores_on_esc() {
    let mut app = App::new(1000);
    app.height = 10;
    feed(&mut app, 1..=30);
    app.open_filter();
    assert!(!app.m.follow);
    app.set_filter_text("file-2");
    assert_eq!(app.m.shown_len(), 11); // 2, 20..=29
    app.close_filter(false);
    assert_eq!(app.m.shown_len(), 30);
    app.open_filter();
    app.set_filter_text("*-1?");
    app.close_filter(true);
    assert_eq!(app.m.shown_len(), 10);
    // The one dialect: `*` crosses `/`, `{a,b}` alternates.
    app.set_filter_text("/d/*-{3,30}");
    assert_eq!(app.m.shown_len(), 2);
    app.toggle_kind(EventKind::Create);
    assert_eq!(app.m.shown_len(), 0);
}

#[test]
fn the_rows_are_bounded_and_what_is_dropped_is_counted() {
    let mut app = App::new(100);
    feed(&mut app, 1..=1000);
    assert_eq!(app.m.rows.len(), 100);
    assert_eq!(app.m.counts.dropped, 900);
    assert_eq!(app.m.rows.front().unwrap().seq, 901);
}

#[test]
fn scrolling_past_memory_pages_history_and_end_returns_live() {
    let mut app = App::new(50);
    app.height = 10;
    feed(&mut app, 1..=200);
    assert_eq!(app.m.rows.front().unwrap().seq, 151);
    app.home();
    let r = app.history_request().expect("an older page");
    assert_eq!(r.direction, Direction::Older);
    assert_eq!((r.from, r.to), (126, 150));
    assert!(app.history_request().is_none(), "one at a time");
    app.history_answer(answer(r, |_| true));
    assert_eq!(app.m.rows.front().unwrap().seq, 126);
    assert_eq!(app.m.rows.len(), 50);
    assert!(app.m.detached());
    feed(&mut app, 201..=205);
    assert_eq!(app.m.rows.back().unwrap().seq, 175, "live rows wait aside");
    // Walk to the very start.
    loop {
        app.home();
        let Some(r) = app.history_request() else {
            break;
        };
        app.history_answer(answer(r, |_| true));
    }
    assert_eq!(app.m.rows.front().unwrap().seq, 1);
    assert_eq!(shown(&mut app)[0], 1);
    assert!(app.m.paging.older_done);
    // Down to the bottom pages newer history back in.
    app.move_by(1000);
    let r = app.history_request().expect("a newer page");
    assert_eq!(r.direction, Direction::Newer);
    assert_eq!(r.from, 51);
    app.resume();
    assert!(app.m.follow && !app.m.detached());
    assert_eq!(app.m.rows.back().unwrap().seq, 205);
}

#[test]
fn a_history_error_is_shown_and_stops_paging() {
    let mut app = App::new(10);
    feed(&mut app, 5..=20);
    app.home();
    let r = app.history_request().unwrap();
    app.history_answer(PageAnswer {
        id: r.id,
        page: Err(PageError::Unavailable),
    });
    assert!(app
        .m
        .paging
        .error
        .as_deref()
        .unwrap()
        .contains("no history"));
    assert!(app.history_request().is_none());
}

#[test]
fn history_paging_goes_on_across_a_gap_wider_than_a_page() {
    // Stored: 1..=30 and 3031..=3062, the 3000 seqs between never stored. Pages of 10.
    let stored = |s: u64| (1..=30).contains(&s) || (3031..=3062).contains(&s);
    let mut app = App::new(20);
    app.height = 10;
    feed(&mut app, 3041..=3060);
    let mut requests = 0;
    loop {
        app.home();
        let Some(r) = app.history_request() else {
            break;
        };
        app.history_answer(answer(r, stored));
        requests += 1;
        assert!(requests < 1000, "stuck paging older");
    }
    assert_eq!(app.m.rows.front().unwrap().seq, 1, "reached the oldest");
    feed(&mut app, 3061..=3062);
    // Down again: the newer pages cover every seq from the newest row held to the live
    // rows held aside, each starting where the last ended, empty pages included.
    let mut next_from = app.m.rows.back().unwrap().seq + 1;
    let mut seen: Vec<u64> = app.m.rows.iter().map(|r| r.seq).collect();
    let mut last_to = 0;
    while app.m.detached() {
        app.move_by(1000);
        let Some(r) = app.history_request() else {
            break;
        };
        assert_eq!(r.from, next_from, "a newer page skipped seqs");
        next_from = r.to + 1;
        last_to = r.to;
        app.history_answer(answer(r, stored));
        seen.extend(app.m.rows.iter().map(|r| r.seq));
        requests += 1;
        assert!(requests < 2000, "stuck paging newer");
    }
    assert!(last_to + 1 >= 3061, "joined live early at {last_to}");
    app.move_by(1000);
    assert!(app.m.follow);
    seen.extend(app.m.rows.iter().map(|r| r.seq));
    seen.sort_unstable();
    seen.dedup();
    let want: Vec<u64> = (1..=30).chain(3031..=3062).collect();
    assert_eq!(
        seen, want,
        "every stored row seen on the way down, none skipped"
    );
}

#[test]
fn go_to_jumps_to_a_seq_or_a_time_and_a_bad_one_says_why() {
    let mut app = App::new(50);
    app.height = 10;
    feed(&mut app, 1..=100);
    app.open_go_to();
    app.mode = Mode::GoTo("30".into());
    app.close_go_to(Some(0));
    let r = app.history_request().expect("the jump");
    assert_eq!((r.direction, r.from), (Direction::Jump, 30));
    app.history_answer(answer(r, |s| s <= 100));
    assert_eq!(sel_seq(&mut app), 30);
    assert_eq!(shown(&mut app)[0], 30, "the row jumped to is at the top");
    // Seq s happened at s seconds: "65s" before 100 s is seq 35.
    app.mode = Mode::GoTo("65s".into());
    app.close_go_to(Some(100_000_000_000));
    let r = app.history_request().expect("the jump");
    app.history_answer(answer(r, |s| s <= 100));
    assert_eq!(sel_seq(&mut app), 35);
    app.mode = Mode::GoTo("yesterday".into());
    app.close_go_to(Some(0));
    assert!(app.history_request().is_none());
    assert!(app.m.paging.error.as_deref().unwrap().contains("RFC 3339"));
    // Esc cancels.
    app.open_go_to();
    app.close_go_to(None);
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.history_request().is_none());
}
