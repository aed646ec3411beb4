//! The viewer's state without a terminal.

use firehose_consumer::{Event, EventKind, FileEvent, Record};

use super::super::row::{test_row, Row};
use super::*;

fn feed(app: &mut App, seqs: std::ops::RangeInclusive<u64>) {
    for s in seqs {
        let e = FileEvent {
            seq: s,
            time_ns: s,
            kind: EventKind::Create,
            path: format!("/d/file-{s}").into_bytes(),
            path_to: None,
            rule: 0,
            size: None,
            reconciled: false,
            blind: None,
            gap: None,
        };
        app.ingest(&Event::Record(Record::Stored(&e)));
    }
    app.live_next = app.buf.back().map_or(0, |r| r.seq) + 1;
}

fn sel_seq(app: &mut App) -> u64 {
    app.selected().unwrap().seq
}

fn shown(app: &mut App) -> Vec<u64> {
    let (top, _) = app.window();
    let vis = app.buf.visible().clone();
    vis.iter()
        .take(app.shown_len())
        .skip(top)
        .take(app.height)
        .map(|&p| app.buf.get(p).unwrap().seq)
        .collect()
}

#[test]
fn sticky_follow_stops_on_scroll_up_and_resumes() {
    let mut app = App::new(1000);
    app.height = 5;
    feed(&mut app, 1..=20);
    assert!(app.follow);
    assert_eq!(shown(&mut app), [16, 17, 18, 19, 20]);
    app.move_by(-1);
    assert!(!app.follow);
    assert_eq!(sel_seq(&mut app), 19);
    feed(&mut app, 21..=30);
    assert_eq!(shown(&mut app), [16, 17, 18, 19, 20], "held still");
    app.move_by(1);
    app.move_by(100);
    assert!(app.follow, "reaching the newest row follows again");
    assert_eq!(shown(&mut app), [26, 27, 28, 29, 30]);
    app.page(-1);
    assert!(!app.follow);
    app.resume();
    assert!(app.follow);
}

#[test]
fn pause_holds_the_view_while_rows_are_counted() {
    let mut app = App::new(1000);
    app.height = 3;
    feed(&mut app, 1..=10);
    app.toggle_pause();
    assert!(app.paused && !app.follow);
    feed(&mut app, 11..=20);
    assert_eq!(shown(&mut app), [8, 9, 10]);
    assert_eq!(app.counts.received, 20);
    app.height = 10;
    assert_eq!(
        shown(&mut app),
        [8, 9, 10],
        "newer rows wait for the pause to end"
    );
    app.move_by(100);
    assert!(!app.follow, "paused: the bottom does not follow");
    app.toggle_pause();
    assert!(app.follow);
    assert_eq!(shown(&mut app), (11..=20).collect::<Vec<_>>());
}

#[test]
fn the_filter_narrows_pauses_and_restores_on_esc() {
    let mut app = App::new(1000);
    app.height = 10;
    feed(&mut app, 1..=30);
    app.open_filter();
    assert!(!app.follow);
    app.set_filter_text("file-2".into());
    assert_eq!(app.buf.visible().len(), 11); // 2, 20..=29
    app.close_filter(false);
    assert_eq!(app.buf.visible().len(), 30);
    app.open_filter();
    app.set_filter_text("*-1?".into());
    app.close_filter(true);
    assert_eq!(app.buf.visible().len(), 10);
    app.toggle_kind(EventKind::Create);
    assert_eq!(app.buf.visible().len(), 0);
}

#[test]
fn the_buffer_is_bounded_and_counts_what_it_drops() {
    let mut app = App::new(100);
    feed(&mut app, 1..=1000);
    assert_eq!(app.buf.len(), 100);
    assert_eq!(app.buf.dropped, 900);
    assert_eq!(app.buf.front().unwrap().seq, 901);
}

#[test]
fn notices_are_counted() {
    let mut app = App::new(10);
    app.ingest(&Event::Lagged { from: 1, to: 10 });
    app.ingest(&Event::Gap {
        from: 11,
        to: 12,
        reason: firehose_consumer::GapReason::Crash,
    });
    assert_eq!((app.counts.lagged, app.counts.gaps), (10, 2));
    app.ingest(&Event::Disconnected {
        reason: firehose_consumer::DisconnectReason::ShuttingDown,
        detail: "bye",
    });
    assert!(matches!(app.conn, Conn::Down(_)));
    app.ingest(&Event::Reconnected { start_seq: 40 });
    assert_eq!(app.conn, Conn::Up(Some(40)));
}

fn page(from: u64, to: u64) -> Vec<Row> {
    (from..=to)
        .map(|s| test_row(s, EventKind::Create, &format!("/d/file-{s}")))
        .collect()
}

#[test]
fn scrolling_past_memory_pages_history_and_end_returns_live() {
    let mut app = App::new(50);
    app.height = 10;
    feed(&mut app, 1..=200);
    assert_eq!(app.buf.front().unwrap().seq, 151);
    app.home();
    let r = app.history_request().expect("an older page");
    assert_eq!(r.direction, firehose_consumer::pages::Direction::Older);
    assert_eq!((r.from, r.to), (126, 150));
    assert!(app.history_request().is_none(), "one at a time");
    app.history_answer(r.id, Ok((page(r.from, r.to), None)));
    assert_eq!(app.buf.front().unwrap().seq, 126);
    assert_eq!(app.buf.len(), 50);
    assert!(app.detached());
    feed(&mut app, 201..=205);
    assert_eq!(app.buf.back().unwrap().seq, 175, "live rows wait aside");
    // Walk to the very start.
    loop {
        app.home();
        let Some(r) = app.history_request() else {
            break;
        };
        app.history_answer(r.id, Ok((page(r.from.max(1), r.to), None)));
    }
    assert_eq!(app.buf.front().unwrap().seq, 1);
    assert_eq!(shown(&mut app)[0], 1);
    assert!(app.paging.older_done);
    // Down to the bottom pages newer history back in.
    app.move_by(1000);
    let r = app.history_request().expect("a newer page");
    assert_eq!(r.direction, firehose_consumer::pages::Direction::Newer);
    assert_eq!(r.from, 51);
    app.resume();
    assert!(app.follow && !app.detached());
    assert_eq!(app.buf.back().unwrap().seq, 205);
}

#[test]
fn a_history_error_is_shown_and_stops_paging() {
    let mut app = App::new(10);
    feed(&mut app, 5..=20);
    app.home();
    let r = app.history_request().unwrap();
    app.history_answer(r.id, Err("no history".into()));
    assert_eq!(app.paging.error.as_deref(), Some("no history"));
    assert!(app.history_request().is_none());
}

#[test]
fn history_paging_goes_on_across_a_gap_wider_than_a_page() {
    // Stored: 1..=30 and 3031..=3062, the 3000 seqs between never stored. Pages of 10.
    let stored = |from: u64, to: u64| -> Vec<Row> {
        (from..=to)
            .filter(|s| (1..=30).contains(s) || (3031..=3062).contains(s))
            .map(|s| test_row(s, EventKind::Create, &format!("/d/file-{s}")))
            .collect()
    };
    let mut app = App::new(20);
    app.height = 10;
    feed(&mut app, 3041..=3060);
    let mut requests = 0;
    loop {
        app.home();
        let Some(r) = app.history_request() else {
            break;
        };
        app.history_answer(r.id, Ok((stored(r.from, r.to), None)));
        requests += 1;
        assert!(requests < 1000, "stuck paging older");
    }
    assert_eq!(app.buf.front().unwrap().seq, 1, "reached the oldest");
    feed(&mut app, 3061..=3062);
    // Down again: the newer pages cover every seq from the newest row held to the live
    // rows held aside, each starting where the last ended, empty pages included.
    let mut next_from = app.buf.back().unwrap().seq + 1;
    let live_start = 3043; // the side buffer keeps the newest 20 live rows
    let mut last_to = 0;
    while app.detached() {
        app.move_by(1000);
        let Some(r) = app.history_request() else {
            break;
        };
        assert_eq!(r.from, next_from, "a newer page skipped seqs");
        next_from = r.to + 1;
        last_to = r.to;
        app.history_answer(r.id, Ok((stored(r.from, r.to), None)));
        requests += 1;
        assert!(requests < 2000, "stuck paging newer");
    }
    assert!(last_to + 1 >= live_start, "joined live early at {last_to}");
    app.resume();
    assert_eq!(app.buf.back().unwrap().seq, 3062);
}
