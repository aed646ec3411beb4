//! The `firehose` binary against an in-test service: `tail --json` fields and escaping,
//! `tail | head` ends quietly, `query` streams, `status --json` parses, `doctor` and exit
//! codes.

#[path = "../../consumer/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firehose_consumer::{EventKind, FileEvent, GapReason};
use support::{event, gap_row, history, socket_dir, Config, Fake, WATCHDOG};

fn firehose(path: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_firehose"));
    c.arg("--socket").arg(path);
    c
}

/// Waits for a child with a watchdog (kills it and fails if it hangs).
fn wait(mut child: std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watchdog: the firehose command hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn output(mut cmd: Command) -> (i32, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let st = wait(child);
    (
        st.code().unwrap_or(-1),
        t.join().unwrap(),
        te.join().unwrap(),
    )
}

#[test]
fn tail_json_has_the_fields_and_escapes_paths() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(
        &path,
        history(),
        Config {
            first_seq: 1,
            ..Config::default()
        },
    );
    let mut odd = event(1, EventKind::Create);
    odd.path = b"/w/caf\xc3\xa9 \xff\\x\"q".to_vec();
    let mut ren = event(2, EventKind::Rename);
    ren.path_to = Some(b"/w/new".to_vec());
    ren.size = None;
    fake.publish_events(&[odd, ren]);
    fake.store(&[gap_row(3, 4, GapReason::NotStored)]);
    // Seqs 3..=4 never streamed; 5 is live.
    fake.ring_gap(4, GapReason::NotStored);
    fake.publish(1, EventKind::CloseWrite);
    let mut cmd = firehose(&path);
    cmd.args(["tail", "--json", "--from-seq", "1", "--count", "3"]);
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&lines[0]),
        ["kind", "path", "rule", "seq", "size", "time"]
    );
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[0]["kind"], "create");
    assert_eq!(lines[0]["path"], "/w/café \\xff\\\\x\"q");
    assert_eq!(lines[0]["time"], "2026-05-28T20:26:40.000000001Z");
    assert_eq!(lines[0]["size"], 1);
    assert_eq!(lines[0]["rule"], 1);
    assert_eq!(
        keys(&lines[1]),
        ["kind", "path", "rule", "seq", "size", "time", "to"]
    );
    assert_eq!(lines[1]["kind"], "rename");
    assert_eq!(lines[1]["to"], "/w/new");
    assert!(lines[1]["size"].is_null());
    assert_eq!(
        lines[2],
        serde_json::json!({"gap": {"from": 3, "to": 4, "reason": "not_stored"}})
    );
    assert_eq!(lines[3]["seq"], 5);
    assert_eq!(lines[3]["kind"], "close_write");
}

#[test]
fn tail_format_follows_inotifywait() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    let mut ren = event(1, EventKind::Rename);
    ren.path = b"/w/d/old".to_vec();
    ren.path_to = Some(b"/w/d/new".to_vec());
    fake.publish_events(&[ren, event(2, EventKind::CloseWrite)]);
    let mut cmd = firehose(&path);
    cmd.args([
        "tail",
        "--from-seq",
        "1",
        "--count",
        "2",
        "--format",
        "%w|%f|%e|%s|%r|%z|%t|%%",
    ]);
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "/w/d/|old|MOVED_FROM,MOVED_TO|1|1|1|/w/d/new|%\n/w/|f2|CLOSE_WRITE,CLOSE|2|1|2||%\n"
    );
}

#[test]
fn tail_into_a_closed_pipe_ends_quietly() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    fake.publish(5, EventKind::Create);
    let mut child = firehose(&path)
        .args(["tail", "--from-seq", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: read one line, then close the pipe.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("/w/f1"), "{first}");
    fake.publish(5, EventKind::Create);
    let mut err = child.stderr.take().unwrap();
    let st = wait(child);
    let mut e = String::new();
    err.read_to_string(&mut e).unwrap();
    assert_eq!(st.code(), Some(0), "stderr: {e}");
    assert_eq!(e, "", "quietly");
}

#[test]
fn query_streams_rows_as_they_arrive() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(
        &path,
        history(),
        Config {
            first_seq: 5001,
            ..Config::default()
        },
    );
    fake.store(
        &(1..=3000)
            .map(|s| event(s, EventKind::Modify))
            .collect::<Vec<_>>(),
    );
    // Rows up to 3000 are committed; the query wants up to 5000 and waits for the rest,
    // printing what it has meanwhile.
    let mut child = firehose(&path)
        .args(["query", "--since-seq", "1", "--until-seq", "5000", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for want in 1..=3000u64 {
        let v: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(v["seq"], want);
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting for 3001.."
    );
    fake.store(
        &(3001..=5000)
            .map(|s| event(s, EventKind::Modify))
            .collect::<Vec<_>>(),
    );
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(rest.len(), 2000);
    assert_eq!(wait(child).code(), Some(0));
}

#[test]
fn query_filters_by_kind_path_and_limit() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    let rows: Vec<FileEvent> = (1..=20)
        .map(|s| {
            event(
                s,
                if s % 2 == 0 {
                    EventKind::Remove
                } else {
                    EventKind::Create
                },
            )
        })
        .collect();
    fake.publish_events(&rows);
    let mut cmd = firehose(&path);
    cmd.args(["query", "--kind", "remove", "--path", "/w/f1*", "--json"]);
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "{err}");
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![10, 12, 14, 16, 18]);
    let mut cmd = firehose(&path);
    cmd.args(["query", "--limit", "3", "--since", "1h"]);
    let (code, out, _) = output(cmd);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().count(),
        0,
        "records are from 2026, not the last hour"
    );
    let mut cmd = firehose(&path);
    cmd.args(["query", "--limit", "3", "--since", "2026-01-01T00:00:00Z"]);
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3);
    assert!(err.contains("limit"), "{err}");
}

#[test]
fn status_json_parses() {
    let (_dir, path) = socket_dir();
    let _fake = Fake::start(&path, history(), Config::default());
    let mut cmd = firehose(&path);
    cmd.args(["status", "--json"]);
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["pid"], std::process::id());
    assert_eq!(v["roots"], serde_json::json!(["/w"]));
    assert_eq!(v["health"], "ok");
    assert_eq!(v["storage"], "ok");
    assert_eq!(v["rate_per_min"], 5);
    assert_eq!(v["unwatched"], serde_json::json!(["/w/deep"]));
    assert_eq!(v["unwatched_count"], 2);
    assert_eq!(v["counters"]["overflows"], 3);
    assert_eq!(v["counters"]["not_stored"], 4);
    assert_eq!(v["counters"]["cut_off"], 0);
    assert!(v["readers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "firehose status"));
    let mut cmd = firehose(&path);
    cmd.arg("status");
    let (code, out, _) = output(cmd);
    assert_eq!(code, 0);
    assert!(out.contains("readers") && out.contains("health"), "{out}");
    assert!(
        out.contains("2 directories (the inotify watch limit): /w/deep and 1 more"),
        "{out}"
    );
    assert!(out.contains("overflows 3, not stored 4"), "{out}");
}

#[test]
fn doctor_and_tail_fail_without_a_service() {
    let (_dir, path) = socket_dir();
    let mut cmd = firehose(&path);
    cmd.arg("doctor");
    let (code, out, _) = output(cmd);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("FAIL") && out.contains("-> "), "{out}");
    assert!(out.contains("not running"), "{out}");
    let mut cmd = firehose(&path);
    cmd.arg("tail");
    let (code, _, err) = output(cmd);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no firehose service is running"), "{err}");
}

#[test]
fn doctor_passes_against_a_running_service() {
    let (dir, path) = socket_dir();
    let _fake = Fake::start(&path, history(), Config::default());
    let mut cmd = firehose(&path);
    cmd.arg("doctor").arg("--root").arg(dir.path());
    let (code, out, err) = output(cmd);
    assert!(out.contains("ok    reachable"), "{out}\n{err}");
    assert!(out.contains("ok    ring"), "{out}");
    assert!(out.contains("ok    history"), "{out}");
    // The fake reports two unwatched directories: a problem, with what to do.
    assert!(
        out.contains("2 directories are not watched") && out.contains("max_user_watches"),
        "{out}"
    );
    assert_ne!(code, 0, "{out}");
}

#[test]
fn tail_without_backfill_exits_3_when_the_service_leaves() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    let mut child = firehose(&path)
        .args(["tail", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is attached, then stop the service.
    support::wait_until(WATCHDOG, "tail attached", || fake.reader_count() > 0);
    fake.stop();
    let mut err = child.stderr.take().unwrap();
    let st = wait(child);
    let mut e = String::new();
    err.read_to_string(&mut e).unwrap();
    assert_eq!(st.code(), Some(3), "{e}");
    assert!(
        e.contains("shutting down") || e.contains("disconnected"),
        "{e}"
    );
}

#[test]
fn tail_backfill_bridges_a_service_restart() {
    let (_dir, path) = socket_dir();
    let h = history();
    let a = Fake::start(&path, h.clone(), Config::default());
    a.publish(30, EventKind::Create);
    let mut child = firehose(&path)
        .args(["tail", "--json", "--backfill", "--count", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seqs = Vec::new();
    let mut notices = Vec::new();
    let mut read_until = |n: usize, seqs: &mut Vec<u64>| {
        while seqs.len() < n {
            let l = lines.next().expect("tail ended early").unwrap();
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            match v["seq"].as_u64() {
                Some(s) => seqs.push(s),
                None => notices.push(v),
            }
        }
    };
    read_until(30, &mut seqs);
    a.stop();
    let b = Fake::start(
        &path,
        h,
        Config {
            first_seq: 31,
            ..Config::default()
        },
    );
    b.publish(15, EventKind::Modify); // stored while tail may still be away
    read_until(40, &mut seqs);
    b.publish(15, EventKind::Remove);
    read_until(60, &mut seqs);
    assert_eq!(seqs, (1..=60).collect::<Vec<u64>>());
    assert!(
        notices.iter().any(|n| n.get("reconnected").is_some()),
        "{notices:?}"
    );
    assert_eq!(wait(child).code(), Some(0));
}

#[test]
fn control_characters_in_names_never_reach_the_terminal_raw() {
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    let hostile: [&[u8]; 4] = [
        b"/w/nl\nforged 99 create /etc/passwd",
        b"/w/esc\x1b[2J\x1b]0;title\x07",
        "/w/c1\u{9b}31m".as_bytes(),
        b"/w/del\x7f\rcr",
    ];
    let evs: Vec<FileEvent> = hostile
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut e = event(i as u64 + 1, EventKind::Create);
            e.path = p.to_vec();
            e
        })
        .collect();
    fake.publish_events(&evs);
    let clean = |out: &str| {
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "a control character reached the output: {out:?}"
        );
        assert_eq!(out.lines().count(), 4, "one line per record: {out:?}");
    };
    for args in [
        &["tail", "--from-seq", "1", "--count", "4"][..],
        &["tail", "--json", "--from-seq", "1", "--count", "4"][..],
        &["query", "--since-seq", "1", "--until-seq", "4"][..],
    ] {
        let mut cmd = firehose(&path);
        cmd.args(args);
        let (code, out, err) = output(cmd);
        assert_eq!(code, 0, "{args:?}: {err}");
        clean(&out);
        // JSON writes each backslash of the escape as `\\`.
        let out = out.replace("\\\\", "\\");
        assert!(out.contains("nl\\x0aforged"), "{out}");
        assert!(out.contains("esc\\x1b[2J\\x1b]0;title\\x07"), "{out}");
        assert!(out.contains("c1\\xc2\\x9b31m"), "{out}");
    }
    // A reader's self-chosen name is shown escaped by status too.
    let _named = firehose_consumer::Client::<FileEvent>::connect(
        &path,
        &firehose_consumer::ConnectOptions {
            name: "evil\n\x1b[31mname".into(),
            ..firehose_consumer::ConnectOptions::default()
        },
    )
    .unwrap();
    let mut cmd = firehose(&path);
    cmd.arg("status");
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "{err}");
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    assert!(out.contains("evil\\x0a\\x1b[31mname"), "{out}");
}

#[test]
fn a_query_stuck_on_a_slow_page_leaves_status_answered() {
    use std::sync::atomic::Ordering;
    let (_dir, path) = socket_dir();
    let fake = Fake::start(&path, history(), Config::default());
    fake.publish(10, EventKind::Create);
    let hold = fake.history.lock().unwrap().hold_queries.clone();
    hold.store(true, Ordering::Relaxed);
    // A query whose page does not come (the service's worker is busy with it).
    let mut slow = firehose(&path)
        .args(["query", "--since-seq", "1", "--until-seq", "10", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        slow.try_wait().unwrap().is_none(),
        "the held query ended early"
    );
    // Meanwhile the control loop answers status, from another client.
    let mut cmd = firehose(&path);
    cmd.args(["status", "--json"]);
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "status while a query is held: {err}");
    assert!(out.contains("\"next_seq\""), "{out}");
    hold.store(false, Ordering::Relaxed);
    let mut lines = String::new();
    slow.stdout
        .take()
        .unwrap()
        .read_to_string(&mut lines)
        .unwrap();
    assert_eq!(wait(slow).code(), Some(0));
    assert_eq!(lines.lines().count(), 10);
}
