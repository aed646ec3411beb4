//! `firehosed` as users run it: a real process on temporary directories, real inotify, its
//! history read back over the control socket. Every wait is a bounded loop (a watchdog),
//! never a timing assertion.

mod support;

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firehose_transport::control::client::{Client, ConnectOptions};
use firehose_transport::control::wire::{DisconnectReason, HistoryQuery, QueryEnd, Status};
use firehose_transport::record::{EventKind, FileEvent, GapReason};
use firehose_transport::ring::{Event, Policy};

const FIREHOSED: &str = env!("CARGO_BIN_EXE_firehosed");

/// A scratch folder: watched trees, the database, the filters and the socket.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("fh-svc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("w")).unwrap();
        std::fs::create_dir_all(d.join("filters")).unwrap();
        Scratch(d.canonicalize().unwrap())
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Svc {
    child: Child,
    sock: PathBuf,
}

impl Svc {
    fn start(s: &Scratch, db: &Path, extra: &[&str]) -> Svc {
        Self::start_under(s, db, extra, &[])
    }

    /// Starts the service under `wrapper` (a command that then runs it, such as
    /// `setpriv ... --`); empty: directly.
    fn start_under(s: &Scratch, db: &Path, extra: &[&str], wrapper: &[&str]) -> Svc {
        let sock = s.p("s.sock");
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(FIREHOSED);
                c
            }
            None => Command::new(FIREHOSED),
        };
        let child = cmd
            .arg("--socket")
            .arg(&sock)
            .arg("--db")
            .arg(db)
            .arg("--filters")
            .arg(s.p("filters"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn firehosed");
        let svc = Svc { child, sock };
        // A socket file may be left from a killed run: wait until this service answers.
        wait_for("the service to answer", Duration::from_secs(20), || {
            Client::<FileEvent>::connect(&svc.sock, &ConnectOptions::default()).is_ok()
        });
        svc
    }

    fn client(&self) -> Client<FileEvent> {
        Client::connect(
            &self.sock,
            &ConnectOptions {
                name: "service test".into(),
                policy: Policy::Lagging,
                ..ConnectOptions::default()
            },
        )
        .expect("connect")
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "a clean shutdown: {st}");
        assert!(!self.sock.exists(), "the socket is removed");
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds; panics with `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn history(c: &mut Client<FileEvent>) -> Vec<FileEvent> {
    let (rows, end) = c
        .query(HistoryQuery {
            id: 1,
            ..HistoryQuery::default()
        })
        .expect("query");
    assert!(
        matches!(end, QueryEnd::Complete | QueryEnd::Truncated { .. }),
        "{end:?}"
    );
    rows
}

fn status(c: &mut Client<FileEvent>) -> Status {
    c.status().expect("status")
}

/// (kind, path, to) of the file records in `rows`, relative to `root`.
fn facts(rows: &[FileEvent], root: &Path) -> Vec<(EventKind, String, Option<String>)> {
    let rel = |p: &[u8]| {
        let p = Path::new(std::ffi::OsStr::from_bytes(p));
        p.strip_prefix(root)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    rows.iter()
        .filter(|r| r.kind != EventKind::Gap)
        .map(|r| (r.kind, rel(&r.path), r.path_to.as_deref().map(rel)))
        .collect()
}

#[test]
fn file_changes_are_recorded_once_each_with_the_right_kind_stored_and_streamed() {
    let s = Scratch::new("changes");
    let w = s.p("w");
    let outside = s.p("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let svc = Svc::start(&s, &s.p("state/h.db"), &["--watch", w.to_str().unwrap()]);
    let mut live = svc.client();
    // The workload, and its ground truth.
    std::fs::write(w.join("a"), b"1").unwrap();
    std::fs::create_dir(w.join("d")).unwrap();
    // A rename into a directory made a moment ago races with its watch (its half of the
    // rename may come before the watch, and then it is a remove and a create): let the
    // watch land first, as it has for any directory that is not brand new.
    let mut c = svc.client();
    wait_for("the new directory", Duration::from_secs(20), || {
        facts(&history(&mut c), &w).iter().any(|f| f.1 == "d")
    });
    std::fs::rename(w.join("a"), w.join("d/a2")).unwrap();
    std::fs::write(outside.join("m"), b"22").unwrap();
    std::fs::rename(outside.join("m"), w.join("m")).unwrap();
    std::fs::rename(w.join("m"), outside.join("m2")).unwrap();
    std::fs::remove_file(w.join("d/a2")).unwrap();
    std::fs::write(w.join("done"), b"").unwrap();
    use EventKind::*;
    let truth: Vec<(EventKind, String, Option<String>)> = vec![
        (Create, "a".into(), None),
        (CloseWrite, "a".into(), None),
        (Create, "d".into(), None),
        (Rename, "a".into(), Some("d/a2".into())),
        (Create, "m".into(), None),
        (Remove, "m".into(), None),
        (Remove, "d/a2".into(), None),
        (Create, "done".into(), None),
        (CloseWrite, "done".into(), None),
    ];

    let mut rows = Vec::new();
    wait_for(
        "the history to hold every change",
        Duration::from_secs(20),
        || {
            rows = history(&mut c);
            facts(&rows, &w).len() >= truth.len()
        },
    );
    assert_eq!(
        facts(&rows, &w),
        truth,
        "each change once, in order, right kind"
    );
    // Seqs are consecutive from 1 (no gaps here) and the live reader got the same records.
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=truth.len() as u64).collect::<Vec<_>>());
    let mut streamed = Vec::new();
    wait_for("the stream", Duration::from_secs(20), || {
        if let Ok(b) = live.recv_timeout(64, Duration::from_millis(50)) {
            for e in &b {
                if let Event::Record(r) = e {
                    streamed.push(r.seq());
                }
            }
        }
        streamed.len() >= truth.len()
    });
    assert_eq!(streamed, seqs);
    svc.stop();
}

#[test]
fn the_database_under_a_watched_root_does_not_feed_itself() {
    let s = Scratch::new("own");
    let w = s.p("w");
    let db = w.join("state/h.db");
    let svc = Svc::start(&s, &db, &["--watch", w.to_str().unwrap()]);
    let mut c = svc.client();
    for i in 0..20 {
        std::fs::write(w.join(format!("f{i}")), b"x").unwrap();
    }
    let mut rows = Vec::new();
    wait_for("40 records", Duration::from_secs(20), || {
        rows = history(&mut c);
        rows.len() >= 40
    });
    // Quiet now: the writer's own commits must not make records.
    let before = status(&mut c).next_seq;
    std::thread::sleep(Duration::from_millis(1500));
    let after = status(&mut c).next_seq;
    assert_eq!(before, after, "the database's writes fed the stream");
    let own = w.join("state");
    assert!(
        rows.iter().all(|r| {
            let p = Path::new(std::ffi::OsStr::from_bytes(&r.path));
            !p.starts_with(&own) || p == own
        }),
        "no record of the service's own files"
    );
    svc.stop();
}

#[test]
fn filter_documents_reload_live_and_a_broken_one_keeps_the_previous_rules() {
    let s = Scratch::new("reload");
    let w = s.p("w");
    let w2 = s.p("w2");
    std::fs::create_dir_all(&w2).unwrap();
    let doc = |name: &str, text: String| std::fs::write(s.p("filters").join(name), text).unwrap();
    doc(
        "a.toml",
        format!(
            "[[rule]]\nname = \"rust\"\nroots = [\"{}\"]\ninclude = [\"*.rs\"]\nkinds = [\"create\"]\n",
            w.display()
        ),
    );
    let svc = Svc::start(&s, &s.p("state/h.db"), &[]);
    let mut c = svc.client();
    std::fs::write(w.join("one.rs"), b"").unwrap();
    std::fs::write(w.join("one.txt"), b"").unwrap();
    wait_for("one.rs", Duration::from_secs(20), || {
        facts(&history(&mut c), &w).iter().any(|f| f.1 == "one.rs")
    });
    // A broken document: reported, the previous rules stay.
    doc("b.toml", "[[rule]]\nname = 3\n".into());
    wait_for("the rejection in status", Duration::from_secs(20), || {
        status(&mut c).health.contains("rejected")
    });
    std::fs::write(w.join("two.rs"), b"").unwrap();
    wait_for(
        "two.rs under the old rules",
        Duration::from_secs(20),
        || facts(&history(&mut c), &w).iter().any(|f| f.1 == "two.rs"),
    );
    // A good document with a new root: the root is watched.
    doc(
        "b.toml",
        format!(
            "[[rule]]\nname = \"all-w2\"\nroots = [\"{}\"]\n",
            w2.display()
        ),
    );
    wait_for("the new root", Duration::from_secs(20), || {
        status(&mut c)
            .roots
            .iter()
            .any(|r| Path::new(r) == w2.as_path())
    });
    // The new root's watch lands shortly after the reload: write until one is recorded.
    let mut n = 0;
    wait_for(
        "a record from the new root",
        Duration::from_secs(20),
        || {
            n += 1;
            std::fs::write(w2.join(format!("x{n}")), b"").unwrap();
            history(&mut c)
                .iter()
                .any(|r| Path::new(std::ffi::OsStr::from_bytes(&r.path)).starts_with(&w2))
        },
    );
    let f = facts(&history(&mut c), &w);
    assert!(!f.iter().any(|f| f.1.ends_with(".txt")), "{f:?}");
    svc.stop();
}

#[test]
fn kill_9_during_heavy_writes_loses_nothing_committed_and_reuses_no_seq() {
    let s = Scratch::new("crash");
    let db = s.p("state/h.db");
    // 20 rounds in the test suite; `scripts/soak-crash N` runs a longer soak.
    let rounds: usize = std::env::var("FIREHOSE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut committed: Vec<u64> = Vec::new();
    let mut highest_given = 0u64;
    for round in 0..rounds {
        let mut svc = Svc::start(&s, &db, &["--synthetic", "20000"]);
        let mut c = svc.client();
        let rows = history(&mut c);
        // Everything reported committed before is still there.
        let now: BTreeSet<u64> = rows
            .iter()
            .filter(|r| r.kind != EventKind::Gap)
            .map(|r| r.seq)
            .collect();
        for q in &committed {
            assert!(now.contains(q), "round {round}: committed seq {q} is gone");
        }
        if round > 0 {
            // The crash is recorded, and nothing new reuses a seq given out before.
            assert!(
                rows.iter()
                    .any(|r| r.gap.is_some_and(|g| g.reason == GapReason::Crash)),
                "round {round}: no crash gap"
            );
        }
        let first_new = rows
            .iter()
            .filter(|r| r.kind != EventKind::Gap && r.seq > highest_given)
            .map(|r| r.seq)
            .min();
        if let Some(f) = first_new {
            assert!(f > highest_given, "round {round}: seq {f} reused");
        }
        // Let it write for a moment, take what it reports committed, then kill it.
        let start = status(&mut c).next_seq;
        wait_for("some writes", Duration::from_secs(20), || {
            status(&mut c).next_seq > start + 2000
        });
        let rows = history(&mut c);
        committed = rows
            .iter()
            .filter(|r| r.kind != EventKind::Gap)
            .map(|r| r.seq)
            .collect();
        highest_given = highest_given.max(status(&mut c).next_seq);
        svc.kill9();
    }
    assert!(committed.len() > 500 * rounds / 2);
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn a_full_disk_degrades_storage_and_the_stream_goes_on() {
    if !running_as_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let s = Scratch::new("full");
    let state = s.p("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs"])
        .arg(&state)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(state.clone());
    let svc = Svc::start(
        &s,
        &state.join("h.db"),
        &["--synthetic", "20000", "--synthetic-path-len", "200"],
    );
    let mut c = svc.client();
    let mut live = svc.client();
    wait_for("storage degraded", Duration::from_secs(60), || {
        let st = status(&mut c);
        st.storage.starts_with("degraded") && st.health.contains("degraded")
    });
    let before = history(&mut c);
    // The stream goes on while storage fails.
    let mut got = 0;
    wait_for("the stream while degraded", Duration::from_secs(20), || {
        if let Ok(b) = live.recv_timeout(1024, Duration::from_millis(50)) {
            got += b.len();
        }
        got > 10_000
    });
    // Space returns: storing resumes by itself, and a gap covers what was not stored.
    assert!(Command::new("mount")
        .args(["-o", "remount,size=256M"])
        .arg(&state)
        .status()
        .unwrap()
        .success());
    wait_for("storage ok again", Duration::from_secs(60), || {
        let st = status(&mut c);
        st.storage == "ok" && st.health.starts_with("ok")
    });
    let st = status(&mut c);
    assert!(
        st.counters.not_stored > 0,
        "what was not stored is counted: {:?}",
        st.counters
    );
    assert!(st.counters.records > st.counters.not_stored);
    assert!(st.history_bytes > 0 && st.rate_per_min > 0, "{st:?}");
    let mut after = Vec::new();
    wait_for("a StoreFailed gap", Duration::from_secs(60), || {
        after = history(&mut c);
        after
            .iter()
            .any(|r| r.gap.is_some_and(|g| g.reason == GapReason::StoreFailed))
    });
    let kept: BTreeSet<u64> = after.iter().map(|r| r.seq).collect();
    assert!(
        before.iter().all(|r| kept.contains(&r.seq)),
        "nothing committed before the disk filled is lost"
    );
    svc.stop();
}

#[test]
fn install_and_uninstall_a_user_unit_in_a_scratch_folder() {
    let s = Scratch::new("install");
    let units = s.p("units");
    let run = |args: &[&str]| {
        let out = Command::new(FIREHOSED)
            .args(args)
            .env("FIREHOSE_NO_SERVICE_MANAGER", "1")
            .env("XDG_RUNTIME_DIR", s.p("run"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let w = s.p("w");
    let out = run(&[
        "install",
        "--user",
        "--unit-dir",
        units.to_str().unwrap(),
        "--watch",
        w.to_str().unwrap(),
    ]);
    assert!(out.contains("no user service manager"), "{out}");
    let unit = std::fs::read_to_string(units.join("firehosed.service")).unwrap();
    assert!(unit.contains(&format!("--watch {}", w.display())), "{unit}");
    let out = run(&[
        "install",
        "--user",
        "--unit-dir",
        units.to_str().unwrap(),
        "--watch",
        w.to_str().unwrap(),
    ]);
    assert!(out.contains("already installed"), "{out}");
    run(&[
        "install",
        "--user",
        "--unit-dir",
        units.to_str().unwrap(),
        "--watch",
        "/srv",
    ]);
    let unit = std::fs::read_to_string(units.join("firehosed.service")).unwrap();
    assert!(
        unit.contains("--watch /srv") && !unit.contains(&w.display().to_string()),
        "{unit}"
    );
    assert!(
        run(&["uninstall", "--user", "--unit-dir", units.to_str().unwrap()]).contains("removed")
    );
    assert!(run(&["uninstall", "--user", "--unit-dir", units.to_str().unwrap()]).contains("no "));
    assert!(!units.join("firehosed.service").exists());
}

#[test]
fn check_filters_names_the_file_line_and_column_of_an_error() {
    let s = Scratch::new("check");
    std::fs::write(
        s.p("filters/bad.toml"),
        "[[rule]]\nname = \"x\"\nkinds = [\"create\", \"explode\"]\n",
    )
    .unwrap();
    let out = Command::new(FIREHOSED)
        .args(["check-filters"])
        .arg(s.p("filters"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:"), "{err}");
    std::fs::write(s.p("filters/bad.toml"), "[[rule]]\nname = \"x\"\n").unwrap();
    let out = Command::new(FIREHOSED)
        .args(["check-filters"])
        .arg(s.p("filters"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_path_glob_query_scans_history_to_its_end() {
    let s = Scratch::new("glob");
    let svc = Svc::start(&s, &s.p("state/h.db"), &["--synthetic", "50000"]);
    let mut c = svc.client();
    wait_for("30,000 records stored", Duration::from_secs(30), || {
        status(&mut c).history_rows > 30_000
    });
    let q = |c: &mut Client<FileEvent>, glob: &str| {
        c.query(HistoryQuery {
            id: 7,
            seq: Some((1, 30_000)),
            glob: Some(glob.into()),
            ..HistoryQuery::default()
        })
        .expect("query")
    };
    let (rows, end) = q(&mut c, "/synthetic/synthetic/d007/*");
    assert_eq!(end, QueryEnd::Complete);
    // The same rows as a scan of everything, filtered here.
    let (all, _) = c
        .query(HistoryQuery {
            id: 8,
            seq: Some((1, 30_000)),
            ..HistoryQuery::default()
        })
        .expect("query");
    let want: Vec<u64> = all
        .iter()
        .filter(|r| r.path.windows(6).any(|w| w == b"/d007/"))
        .map(|r| r.seq)
        .collect();
    assert!(want.len() > 10, "{}", want.len());
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), want);
    let (rows, end) = q(&mut c, "*.nothing");
    assert_eq!((rows.len(), end), (0, QueryEnd::Complete));
    svc.stop();
}

#[test]
fn a_query_paged_across_a_gap_row_sends_it_once() {
    use firehose_producer::history::{HistoryWriter, WriterConfig};
    use firehose_transport::record::GapInfo;
    let s = Scratch::new("gap-pages");
    let db = s.p("state/h.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    // 1..=1023, a gap row 1024..=1100, then 1101..=1200: the service's first page of 1024
    // rows ends on the gap row, and the next page starts inside it.
    // Recent: retention by age would remove older rows when the service starts.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let rec = |seq: u64| FileEvent {
        seq,
        time_ns: now + seq,
        kind: EventKind::Create,
        path: format!("/w/f{seq}").into_bytes(),
        path_to: None,
        rule: 0,
        size: None,
        reconciled: false,
        blind: None,
        gap: None,
    };
    let w = HistoryWriter::open(&db, WriterConfig::default()).unwrap();
    for seq in 1..=1023 {
        assert!(w.submit(rec(seq)));
    }
    assert!(w.submit(FileEvent {
        kind: EventKind::Gap,
        path: Vec::new(),
        reconciled: false,
        blind: None,
        gap: Some(GapInfo {
            to: 1100,
            reason: GapReason::NotStored,
        }),
        ..rec(1024)
    }));
    for seq in 1101..=1200 {
        assert!(w.submit(rec(seq)));
    }
    w.flush().unwrap();
    w.shutdown().unwrap();
    let svc = Svc::start(&s, &db, &[]);
    let mut c = svc.client();
    for (id, from) in [(1, 1), (2, 1050)] {
        let (rows, end) = c
            .query(HistoryQuery {
                id,
                seq: Some((from, 1200)),
                ..HistoryQuery::default()
            })
            .expect("query");
        assert_eq!(end, QueryEnd::Complete);
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        let want: Vec<u64> = (from.min(1024)..=1024).chain(1101..=1200).collect();
        assert_eq!(seqs, want, "from {from}");
    }
    svc.stop();
}

#[test]
fn a_stalled_lossless_reader_freezes_neither_status_nor_the_other_readers_and_is_cut_off() {
    let s = Scratch::new("stall");
    let svc = Svc::start(&s, &s.p("state/h.db"), &["--synthetic", "50000"]);
    // Connects losslessly and never reads: it holds the ring back from the first record.
    let mut staller: Client<FileEvent> = Client::connect(
        &svc.sock,
        &ConnectOptions {
            name: "staller".into(),
            policy: Policy::Lossless,
            ..ConnectOptions::default()
        },
    )
    .expect("connect lossless");
    let mut other = svc.client();
    let mut c = svc.client();
    // While it stalls (a 4 MiB ring fills in well under a second at 50k/s), status is
    // answered and the lagging reader keeps receiving.
    let t = Instant::now();
    let mut records = 0u64;
    while t.elapsed() < Duration::from_secs(2) {
        let st = status(&mut c);
        assert!(st.next_seq > 0);
        for e in &other
            .recv_timeout(4096, Duration::from_millis(20))
            .expect("the other reader")
        {
            if matches!(e, Event::Record(_)) {
                records += 1;
            }
        }
    }
    assert!(
        records > 1000,
        "the other reader received only {records} records"
    );
    // The stalled reader is cut off within its budget (3 s of no progress), with the reason.
    wait_for("the staller to be cut off", Duration::from_secs(30), || {
        status(&mut c).counters.cut_off >= 1
    });
    let err = loop {
        match staller.recv(4096) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(
        err.disconnect_reason(),
        Some(DisconnectReason::TooSlow),
        "{err}"
    );
    // Streaming goes on for the others, and SIGTERM still stops the service cleanly.
    let before = status(&mut c).next_seq;
    wait_for("records after the cut", Duration::from_secs(30), || {
        status(&mut c).next_seq > before + 10_000
    });
    drop((staller, other, c));
    svc.stop();
}

#[test]
fn four_kib_paths_are_paged_under_the_frame_limit() {
    let s = Scratch::new("long-paths");
    let svc = Svc::start(
        &s,
        &s.p("state/h.db"),
        &["--synthetic", "20000", "--synthetic-path-len", "4000"],
    );
    let mut c = svc.client();
    wait_for(
        "3,000 long-path records stored",
        Duration::from_secs(60),
        || status(&mut c).history_rows > 3_000,
    );
    // 3,000 rows of 4 KiB are 12 MiB: many pages, each under the message cap.
    let (rows, end) = c
        .query(HistoryQuery {
            id: 3,
            seq: Some((1, 3_000)),
            ..HistoryQuery::default()
        })
        .expect("a query over 4 KiB paths");
    assert_eq!(end, QueryEnd::Complete);
    assert_eq!(rows.len(), 3_000);
    assert!(rows.iter().all(|r| r.path.len() >= 3_900), "long paths");
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=3_000).collect::<Vec<_>>()
    );
    svc.stop();
}

#[test]
fn the_service_tells_systemd_when_it_is_ready_and_when_it_stops() {
    use std::os::unix::net::UnixDatagram;
    let s = Scratch::new("notify");
    let notify = s.p("notify.sock");
    let manager = UnixDatagram::bind(&notify).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let sock = s.p("s.sock");
    let mut child = Command::new(FIREHOSED)
        .arg("--socket")
        .arg(&sock)
        .arg("--db")
        .arg(s.p("state/h.db"))
        .arg("--filters")
        .arg(s.p("filters"))
        .arg("--watch")
        .arg(s.p("w"))
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = manager.recv(&mut buf).expect("READY=1 within the watchdog");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving: a client connects at once.
    Client::<FileEvent>::connect(&sock, &ConnectOptions::default()).expect("serving when ready");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    let n = manager
        .recv(&mut buf)
        .expect("STOPPING=1 within the watchdog");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}

/// Replays history (create adds, remove drops the subtree, rename moves it) and returns the
/// tree it gives below `root`.
fn replayed(rows: &[FileEvent], root: &Path) -> BTreeSet<PathBuf> {
    let mut tree = BTreeSet::new();
    let p = |b: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(b));
    for r in rows {
        let to = r.path_to.as_deref().map(p);
        support::replay_one(&mut tree, r.kind, &p(&r.path), to.as_deref());
    }
    tree.retain(|x| x.starts_with(root) && x != root);
    tree
}

use support::on_disk;

/// Makes a tree, lets the service see it, ends the service with `end`, changes the tree
/// blind, starts it again and checks that history reports exactly what changed.
fn changes_while_down_are_reconciled(name: &str, kill: bool) {
    let s = Scratch::new(name);
    let w = s.p("w");
    let db = s.p("state/h.db");
    let args = ["--watch", w.to_str().unwrap()];
    std::fs::create_dir_all(w.join("a/deep")).unwrap();
    std::fs::write(w.join("a/deep/f"), b"1").unwrap();
    std::fs::write(w.join("b"), b"1").unwrap();
    std::fs::write(w.join("kept"), b"1").unwrap();
    let mut svc = Svc::start(&s, &db, &args);
    std::fs::write(w.join("seen"), b"1").unwrap();
    let mut c = svc.client();
    wait_for("the live create", Duration::from_secs(20), || {
        facts(&history(&mut c), &w).iter().any(|f| f.1 == "seen")
    });
    drop(c);
    // Let the watcher go idle and write its journal out.
    std::thread::sleep(Duration::from_millis(300));
    if kill {
        svc.kill9();
    } else {
        svc.stop();
    }
    std::fs::rename(w.join("a"), w.join("z")).unwrap();
    std::fs::write(w.join("z/deep/f"), b"longer").unwrap();
    std::fs::remove_file(w.join("b")).unwrap();
    std::fs::write(w.join("new"), b"n").unwrap();
    let svc = Svc::start(&s, &db, &args);
    let mut c = svc.client();
    let mut rows = Vec::new();
    wait_for("the blind range to close", Duration::from_secs(20), || {
        rows = history(&mut c);
        rows.iter().any(|r| r.kind == EventKind::BlindEnd)
    });
    let start = rows
        .iter()
        .position(|r| r.kind == EventKind::BlindStart)
        .expect("a blind start");
    let end = rows
        .iter()
        .position(|r| r.kind == EventKind::BlindEnd)
        .unwrap();
    let want = if kill {
        firehose_transport::record::BlindReason::Crashed
    } else {
        firehose_transport::record::BlindReason::Stopped
    };
    assert_eq!(rows[start].blind.map(|b| b.reason), Some(want));
    assert!(rows[start].blind.unwrap().since_ns > 0);
    let inside = &rows[start + 1..end];
    assert!(inside.iter().all(|r| r.reconciled), "{inside:#?}");
    use EventKind::*;
    let mut got = facts(inside, &w);
    got.sort_by_key(|f| (f.0 as u8, f.1.clone()));
    let mut truth = vec![
        (Create, "new".to_string(), None),
        (Modify, "z/deep/f".to_string(), None),
        (Remove, "b".to_string(), None),
        (Rename, "a".to_string(), Some("z".to_string())),
    ];
    truth.sort_by_key(|f| (f.0 as u8, f.1.clone()));
    assert_eq!(got, truth);
    // Before the service first saw the tree it was not reported: replay from then on.
    let tree = on_disk(&w);
    let base: std::collections::BTreeSet<PathBuf> = ["a", "a/deep", "a/deep/f", "b", "kept"]
        .iter()
        .map(|p| w.join(p))
        .collect();
    // The first tree was indexed silently: add it as if created first, then replay.
    let mut seeded: Vec<FileEvent> = base
        .iter()
        .map(|p| FileEvent {
            seq: 0,
            time_ns: 0,
            kind: Create,
            path: p.as_os_str().as_bytes().to_vec(),
            path_to: None,
            rule: 0,
            size: None,
            gap: None,
            reconciled: false,
            blind: None,
        })
        .collect();
    seeded.extend(rows.iter().cloned());
    assert_eq!(
        replayed(&seeded, &w),
        tree,
        "replaying history gives the tree on disk"
    );
    // The records after the range are live again.
    std::fs::write(w.join("after"), b"1").unwrap();
    wait_for(
        "a live record after the range",
        Duration::from_secs(20),
        || {
            history(&mut c)
                .iter()
                .any(|r| r.path.ends_with(b"/after") && !r.reconciled)
        },
    );
}

#[test]
fn changes_made_while_the_service_was_stopped_are_reported_exactly_at_the_next_start() {
    changes_while_down_are_reconciled("stopped", false);
}

#[test]
fn changes_made_while_the_service_was_killed_are_reported_exactly_at_the_next_start() {
    changes_while_down_are_reconciled("killed", true);
}

/// `setpriv` arguments that run a command as root without CAP_SYS_ADMIN (in no set, so it
/// cannot get it back).
const WITHOUT_SYS_ADMIN: [&str; 4] = [
    "setpriv",
    "--bounding-set=-sys_admin",
    "--inh-caps=-sys_admin",
    "--",
];

fn setpriv_or_skip(test: &str) -> bool {
    let ok = running_as_root() && Command::new("setpriv").arg("--version").output().is_ok();
    if !ok {
        eprintln!("{test}: skipped: needs root and setpriv (util-linux)");
    }
    ok
}

#[test]
fn without_cap_sys_admin_auto_falls_back_to_inotify_and_fanotify_refuses_to_start() {
    if !setpriv_or_skip("without_cap_sys_admin_auto_falls_back_to_inotify") {
        return;
    }
    let s = Scratch::new("fallback");
    let w = s.p("w");
    let db = s.p("state/h.db");
    // Asked for outright, fanotify without the privilege is one clear line and exit 2.
    let out = Command::new(WITHOUT_SYS_ADMIN[0])
        .args(&WITHOUT_SYS_ADMIN[1..])
        .arg(FIREHOSED)
        .args(["--backend", "fanotify", "--watch", w.to_str().unwrap()])
        .arg("--socket")
        .arg(s.p("s.sock"))
        .arg("--db")
        .arg(&db)
        .arg("--filters")
        .arg(s.p("filters"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("firehosed: cannot use fanotify") && last.contains("needs CAP_SYS_ADMIN"),
        "{err}"
    );
    // auto falls back, says why, and watches.
    let svc = Svc::start_under(
        &s,
        &db,
        &["--watch", w.to_str().unwrap()],
        &WITHOUT_SYS_ADMIN,
    );
    let mut c = svc.client();
    let st = status(&mut c);
    assert!(
        st.backend.starts_with("inotify: ") && st.backend.contains("needs CAP_SYS_ADMIN"),
        "{:?}",
        st.backend
    );
    std::fs::write(w.join("seen"), b"1").unwrap();
    wait_for("the create under inotify", Duration::from_secs(20), || {
        history(&mut c).iter().any(|r| r.path.ends_with(b"/seen"))
    });
    // With the privilege, auto is fanotify.
    drop(c);
    svc.stop();
    let svc = Svc::start(&s, &db, &["--watch", w.to_str().unwrap()]);
    let st = status(&mut svc.client());
    assert!(
        st.backend.starts_with("fanotify: 1 filesystem marked"),
        "{:?}",
        st.backend
    );
    svc.stop();
}

/// The other side of `a_whole_filesystem_service_serves_only_its_allowed_uid`: this test
/// binary run again as another uid. It connects to `FH_PEER_SOCK`, says `connected` or
/// `refused: ...`, then prints the path of every record it reads for 20 s.
#[test]
fn peer_helper() {
    let Some(sock) = std::env::var_os("FH_PEER_SOCK") else {
        return; // run directly: nothing to do
    };
    let opts = ConnectOptions {
        name: "peer helper".into(),
        policy: Policy::Lagging,
        ..ConnectOptions::default()
    };
    let mut c = match Client::<FileEvent>::connect(Path::new(&sock), &opts) {
        Ok(c) => c,
        Err(e) => {
            println!("refused: {e}");
            return;
        }
    };
    println!("connected");
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if let Ok(b) = c.recv_timeout(64, Duration::from_millis(50)) {
            for e in &b {
                if let Event::Record(r) = e {
                    let path = r
                        .access()
                        .map(|a| a.path.as_slice().to_vec())
                        .unwrap_or_default();
                    println!("record {}", String::from_utf8_lossy(&path));
                }
            }
        }
    }
}

#[test]
fn a_whole_filesystem_service_serves_only_its_allowed_uid() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    if !running_as_root() {
        eprintln!("a_whole_filesystem_service_serves_only_its_allowed_uid: skipped: needs root");
        return;
    }
    const ALLOWED: u32 = 65533;
    const OTHER: u32 = 65534;
    let s = Scratch::new("uids");
    let w = s.p("w");
    let svc = Svc::start(
        &s,
        &s.p("state/h.db"),
        &[
            "--backend",
            "fanotify",
            "--watch",
            w.to_str().unwrap(),
            "--allow-uid",
            "65533",
        ],
    );
    assert!(status(&mut svc.client()).backend.starts_with("fanotify"));
    let helper = |uid: u32| {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "peer_helper", "--nocapture", "--test-threads=1"])
            .env("FH_PEER_SOCK", &svc.sock)
            .uid(uid)
            .gid(uid)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                // The harness prints `test peer_helper ... ` before the first line.
                let l = l.rsplit("... ").next().unwrap_or_default().to_string();
                let _ = tx.send(l);
            }
        });
        let first = loop {
            let l = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the helper answers");
            if l == "connected" || l.starts_with("refused") {
                break l;
            }
        };
        (child, rx, first)
    };
    // Another uid is refused at the handshake and reads nothing.
    let (mut other, other_rx, first) = helper(OTHER);
    assert!(
        first.starts_with("refused") && first.contains(&format!("uid {OTHER} is not allowed")),
        "{first}"
    );
    // The allowed uid reads what changes under the root, and nothing outside it.
    let (mut allowed, rx, first) = helper(ALLOWED);
    assert_eq!(first, "connected");
    std::fs::write(s.p("outside"), b"x").unwrap();
    std::fs::write(w.join("inside"), b"x").unwrap();
    let mut seen = Vec::new();
    wait_for(
        "the allowed uid sees the change",
        Duration::from_secs(20),
        || {
            while let Ok(l) = rx.try_recv() {
                seen.push(l);
            }
            seen.iter().any(|l| l.ends_with("/w/inside"))
        },
    );
    assert!(seen.iter().all(|l| !l.ends_with("/outside")), "{seen:?}");
    let _ = allowed.kill();
    let _ = allowed.wait();
    let _ = other.wait();
    assert!(other_rx.try_iter().all(|l| !l.starts_with("record")));
    svc.stop();
}

#[test]
fn the_system_unit_runs_with_only_its_two_capabilities() {
    if !setpriv_or_skip("the_system_unit_runs_with_only_its_two_capabilities") {
        return;
    }
    let s = Scratch::new("system-unit");
    let w = s.p("w");
    let units = s.p("units");
    let out = Command::new(FIREHOSED)
        .args(["install", "--system", "--for-uid", "65533", "--unit-dir"])
        .arg(&units)
        .args([
            "--watch",
            w.to_str().unwrap(),
            "--filters",
            s.p("filters").to_str().unwrap(),
        ])
        .env("FIREHOSE_NO_SERVICE_MANAGER", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no system service manager"));
    let text = std::fs::read_to_string(units.join("firehosed.service")).unwrap();
    let caps = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("a capability bounding set");
    assert_eq!(caps, "CAP_SYS_ADMIN CAP_DAC_READ_SEARCH");
    // Run the unit's command as systemd would (the bounding set only), with the socket and
    // database moved into the scratch folder.
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let mut args: Vec<String> = exec.split(' ').skip(1).map(str::to_string).collect();
    let mut drop_opt = |name: &str| {
        let i = args.iter().position(|a| a == name).unwrap();
        args.drain(i..i + 2);
    };
    drop_opt("--socket");
    drop_opt("--db");
    drop_opt("--filters");
    let bounding = format!(
        "--bounding-set=-all,{}",
        caps.split(' ')
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect::<Vec<_>>()
            .join(",")
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let wrapper = [
        "setpriv",
        bounding.as_str(),
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ];
    let svc = Svc::start_under(&s, &s.p("state/h.db"), &args, &wrapper);
    let mut c = svc.client();
    let st = status(&mut c);
    assert!(
        st.backend.starts_with("fanotify: 1 filesystem marked"),
        "{:?}",
        st.backend
    );
    std::fs::write(w.join("seen"), b"1").unwrap();
    wait_for("the create under fanotify", Duration::from_secs(20), || {
        history(&mut c).iter().any(|r| r.path.ends_with(b"/w/seen"))
    });
    drop(c);
    svc.stop();
}

#[test]
fn a_filesystem_fanotify_cannot_mark_falls_back_to_inotify_and_says_which() {
    if !running_as_root() {
        eprintln!("a_filesystem_fanotify_cannot_mark_falls_back: skipped: needs root");
        return;
    }
    // procfs has no FID support (EOPNOTSUPP), as network and some virtual filesystems.
    let s = Scratch::new("no-fid");
    let db = s.p("state/h.db");
    let out = Command::new(FIREHOSED)
        .args(["--backend", "fanotify", "--watch", "/proc/sys", "--socket"])
        .arg(s.p("s.sock"))
        .arg("--db")
        .arg(&db)
        .arg("--filters")
        .arg(s.p("filters"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.lines().last().unwrap_or("").contains(
            "cannot use fanotify: fanotify cannot watch /proc/sys: its filesystem does not \
             support FID reports"
        ),
        "{err}"
    );
    let svc = Svc::start(&s, &db, &["--watch", "/proc/sys"]);
    let st = status(&mut svc.client());
    assert_eq!(
        st.backend,
        "inotify: fanotify cannot watch /proc/sys: its filesystem does not support FID reports"
    );
    svc.stop();
}
