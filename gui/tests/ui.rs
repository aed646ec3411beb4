//! The monitor's UI logic, headless (egui_kittest, widgets found by their labels through
//! AccessKit), against the real `firehosed` with a scripted workload: the rows shown match
//! the files made, the filter narrows them as typed, a kind toggle hides a kind, and pause
//! holds the table until resume, and the service going away and coming back is shown.

#[path = "../../consumer/tests/real/mod.rs"]
mod real;

use std::path::Path;
use std::time::{Duration, Instant};

use eframe::egui::Key;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use firehose_gui::app::Monitor;

/// The paths of the rows in view (each row's label ends with its path).
fn paths_shown(h: &Harness<'_, Monitor>, dir: &Path) -> Vec<String> {
    let w = dir.join("w").display().to_string();
    h.query_all_by_label_contains(&w)
        .filter_map(|n| {
            let label = n.accesskit_node().label()?;
            let at = label.find(&w)?;
            Some(label[at..].to_string())
        })
        .collect()
}

/// Steps the UI until `ok` holds, under a watchdog.
fn step_until(
    h: &mut Harness<'_, Monitor>,
    what: &str,
    mut ok: impl FnMut(&Harness<'_, Monitor>) -> bool,
) {
    let deadline = Instant::now() + real::DEADLINE;
    loop {
        h.step();
        if ok(h) {
            return;
        }
        assert!(Instant::now() < deadline, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rows_filter_toggles_and_pause_against_the_real_service() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let mut svc = real::Service::start(&dir, &[]);
    let cfg = firehose_gui::Config {
        socket: Some(svc.socket()),
        rows: 1000,
        lossless: false,
        from_seq: None,
    };
    let monitor = firehose_gui::connect(&cfg, |_| {}).expect("connect");
    let mut h = Harness::builder()
        .with_size((1400.0, 900.0))
        .build_ui_state(|ui, m: &mut Monitor| m.show(ui), monitor);

    // The workload: five Rust files and five text files, each one create and one
    // close_write.
    let w = dir.join("w");
    let names: Vec<String> = (1..=5)
        .flat_map(|i| [format!("a{i}.rs"), format!("b{i}.txt")])
        .collect();
    for n in &names {
        std::fs::write(w.join(n), b"x").unwrap();
    }
    let all: Vec<String> = names
        .iter()
        .map(|n| w.join(n).display().to_string())
        .collect();
    step_until(&mut h, "every file shown", |h| {
        let shown = paths_shown(h, &dir);
        all.iter()
            .all(|p| shown.iter().filter(|s| *s == p).count() == 2)
    });
    let shown = paths_shown(&h, &dir);
    assert_eq!(
        shown.len(),
        20,
        "a create and a close_write per file: {shown:?}"
    );

    // The filter narrows as typed.
    h.get_by_label("Filter").focus();
    h.step();
    h.get_by_label("Filter").type_text("*.rs");
    step_until(&mut h, "only the Rust files", |h| {
        let shown = paths_shown(h, &dir);
        shown.len() == 10 && shown.iter().all(|p| p.ends_with(".rs"))
    });

    // A kind toggle hides that kind.
    h.get_by_label("close_write").click();
    step_until(&mut h, "creates only", |h| paths_shown(h, &dir).len() == 5);
    h.get_by_label("close_write").click();
    step_until(&mut h, "close_write back", |h| {
        paths_shown(h, &dir).len() == 10
    });

    // Pause holds the table; resume shows what came meanwhile.
    h.get_by_label("Pause").click();
    step_until(&mut h, "the button says Resume", |h| {
        h.query_by_label("Resume").is_some()
    });
    std::fs::write(w.join("late.rs"), b"x").unwrap();
    let late = w.join("late.rs").display().to_string();
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until {
        h.step();
        assert!(
            !paths_shown(&h, &dir).contains(&late),
            "a paused table took a new row"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    h.get_by_label("Resume").click();
    step_until(&mut h, "the held rows after resume", |h| {
        paths_shown(h, &dir).iter().filter(|p| **p == late).count() == 2
    });
    step_until(&mut h, "the button says Pause", |h| {
        h.query_by_label("Pause").is_some()
    });

    // The service goes away: a banner says so. It comes back: the monitor reconnects by
    // itself, says so, and new rows come again.
    svc.kill_9();
    step_until(&mut h, "the service-loss banner", |h| {
        h.query_by_label_contains("The service went away").is_some()
    });
    svc.restart();
    step_until(&mut h, "the reconnected banner", |h| {
        h.query_by_label_contains("Reconnected: live from seq")
            .is_some()
    });
    std::fs::write(w.join("after.rs"), b"x").unwrap();
    let after = w.join("after.rs").display().to_string();
    step_until(&mut h, "a row after the restart", |h| {
        paths_shown(h, &dir).contains(&after)
    });
    drop(svc);
}

#[test]
fn history_pages_in_above_the_window_and_go_to_jumps_against_the_real_service() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let svc = real::Service::start(&dir, &[]);
    // A window of 6 rows: most of the workload is only in history.
    let cfg = firehose_gui::Config {
        socket: Some(svc.socket()),
        rows: 6,
        lossless: false,
        from_seq: None,
    };
    let monitor = firehose_gui::connect(&cfg, |_| {}).expect("connect");
    let mut h = Harness::builder()
        .with_size((1400.0, 900.0))
        .build_ui_state(|ui, m: &mut Monitor| m.show(ui), monitor);
    let w = dir.join("w");
    for i in 1..=10 {
        std::fs::write(w.join(format!("f{i:02}.txt")), b"x").unwrap();
    }
    let path = |i: u32| w.join(format!("f{i:02}.txt")).display().to_string();
    let (first, last) = (path(1), path(10));
    step_until(&mut h, "the newest file shown", |h| {
        paths_shown(h, &dir).iter().filter(|p| **p == last).count() == 2
    });
    let shown = paths_shown(&h, &dir);
    assert!(shown.len() <= 6, "the window is bounded: {shown:?}");
    assert!(!shown.contains(&first));

    // Home, again and again: older pages come in from history up to the oldest row.
    step_until(&mut h, "the oldest file paged in", |h| {
        h.key_press(Key::Home);
        paths_shown(h, &dir).contains(&first)
    });
    step_until(&mut h, "the start of history", |h| {
        h.key_press(Key::Home);
        h.query_by_label("start of history").is_some()
    });
    assert!(paths_shown(&h, &dir).len() <= 6, "still bounded");
    assert!(h
        .query_by_label("BROWSING HISTORY (new rows held)")
        .is_some());

    // Follow newest: back to the live rows.
    h.get_by_label("Follow newest").click();
    step_until(&mut h, "the newest rows again", |h| {
        let shown = paths_shown(h, &dir);
        shown.contains(&last) && !shown.contains(&first)
    });

    // Go to seq 1, then to a time a minute ago: both land on the first file.
    h.get_by_label("Go to").focus();
    h.step();
    h.get_by_label("Go to").type_text("1");
    h.get_by_label("Go").click();
    step_until(&mut h, "seq 1 in view", |h| {
        paths_shown(h, &dir).contains(&first)
    });
    h.get_by_label("Follow newest").click();
    step_until(&mut h, "live again", |h| {
        !paths_shown(h, &dir).contains(&first)
    });
    h.get_by_label("Go to").focus();
    h.step();
    h.key_press(Key::Backspace);
    h.step();
    h.get_by_label("Go to").type_text("1m");
    h.get_by_label("Go").click();
    step_until(&mut h, "a minute ago in view", |h| {
        paths_shown(h, &dir).contains(&first)
    });
    drop(svc);
}
