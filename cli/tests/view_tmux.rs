//! `firehose view` driven in tmux against the real `firehosed`: rows appear, the filter
//! narrows them, pause holds them, scrolling up stops following and `G` follows again,
//! scrolling past memory shows rows from history, and the service going away and coming
//! back is shown; the viewer is one connection to the service. Every wait polls
//! `capture-pane` under a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../../consumer/tests/real/mod.rs"]
mod real;

use real::{Service, DEADLINE};

fn have_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A tmux session running the viewer, killed when dropped.
struct Tmux(String);

impl Tmux {
    fn start(name: &str, sock: &Path, extra: &str) -> Tmux {
        let cmd = format!(
            "env TERM=xterm-256color {} --socket {} view {extra}; sleep 60",
            env!("CARGO_BIN_EXE_firehose"),
            sock.display()
        );
        let st = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "120",
                "-y",
                "40",
                &cmd,
            ])
            .status()
            .expect("run tmux");
        assert!(st.success());
        Tmux(name.to_string())
    }

    fn keys(&self, keys: &[&str]) {
        let st = Command::new("tmux")
            .args(["send-keys", "-t", &self.0])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Polls the screen until `ok` holds; panics with the last screen at the deadline.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        self.wait_doing(what, ok, || {})
    }

    /// As `wait`, doing `step` between polls.
    fn wait_doing(&self, what: &str, ok: impl Fn(&str) -> bool, step: impl Fn()) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < until, "timed out waiting for {what}:\n{s}");
            step();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

/// The `new rows held N` counter: rows that came while paused or scrolled, waiting aside.
fn aside(screen: &str) -> u64 {
    screen
        .split("new rows held ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn setup(tag: &str) -> (PathBuf, Service) {
    let dir = PathBuf::from(format!("/tmp/fh-view-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("w")).unwrap();
    std::fs::create_dir_all(dir.join("filters")).unwrap();
    let svc = Service::start(&dir, &[]);
    (dir, svc)
}

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join("w").join(name), b"x").unwrap();
}

#[test]
fn rows_filter_pause_scroll_and_the_service_going_away() {
    if !have_tmux() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let (dir, svc) = setup("main");
    let t = Tmux::start(
        &format!("fhv-main-{}", std::process::id()),
        &dir.join("s.sock"),
        "",
    );
    t.wait("the viewer", |s| s.contains("FOLLOW"));

    // Rows appear.
    for n in ["alpha-1", "alpha-2", "beta-1"] {
        touch(&dir, n);
    }
    t.wait("rows", |s| {
        s.contains("/w/beta-1") && s.contains("/w/alpha-1")
    });

    // The filter narrows them, as typed; Esc restores.
    t.keys(&["/", "alpha-2"]);
    t.wait("the filter", |s| {
        s.contains("/w/alpha-2") && !s.contains("/w/alpha-1") && !s.contains("/w/beta-1")
    });
    t.keys(&["Escape"]);
    t.wait("the filter box closed", |s| !s.contains("Esc cancels"));
    t.keys(&["f"]);
    t.wait("following, unfiltered", |s| {
        s.contains("FOLLOW") && s.contains("/w/alpha-1")
    });

    // Pause holds them: new rows are counted, not shown, until resumed.
    t.keys(&["p"]);
    let s = t.wait("paused", |s| s.contains("PAUSED"));
    let before = aside(&s);
    touch(&dir, "paused-1");
    let s = t.wait("the paused row counted", |s| aside(s) > before);
    assert!(!s.contains("paused-1"), "shown while paused:\n{s}");
    t.keys(&["p"]);
    t.wait("the paused row after resume", |s| {
        s.contains("/w/paused-1") && s.contains("FOLLOW")
    });

    // Scrolling up stops following; G follows again.
    for i in 0..30 {
        touch(&dir, &format!("fill-{i:02}"));
    }
    t.wait("a full screen", |s| s.contains("/w/fill-29"));
    t.keys(&["k", "k", "k"]);
    let s = t.wait("scrolled", |s| s.contains("SCROLL"));
    let before = aside(&s);
    for i in 0..10 {
        touch(&dir, &format!("late-{i}"));
    }
    let s = t.wait("late rows counted", |s| aside(s) >= before + 10);
    assert!(!s.contains("/w/late-9"), "followed while scrolled up:\n{s}");
    t.keys(&["G"]);
    t.wait("following again", |s| {
        s.contains("FOLLOW") && s.contains("/w/late-9")
    });

    // The service going away is shown; coming back too.
    drop(svc);
    t.wait("the banner", |s| s.contains("went away"));
    let _svc = Service::start(&dir, &[]);
    t.wait("reconnected", |s| s.contains("reconnected"));
    touch(&dir, "after-restart");
    t.wait("rows after the restart", |s| s.contains("/w/after-restart"));
    t.keys(&["q"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scrolling_past_memory_shows_rows_from_history() {
    if !have_tmux() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let (dir, _svc) = setup("hist");
    let t = Tmux::start(
        &format!("fhv-hist-{}", std::process::id()),
        &dir.join("s.sock"),
        "--buffer 50",
    );
    t.wait("the viewer", |s| s.contains("FOLLOW"));
    for i in 0..200 {
        touch(&dir, &format!("hist-{i:03}"));
    }
    let s = t.wait("the last file", |s| s.contains("/w/hist-199"));
    assert!(!s.contains("/w/hist-000"));
    // `g` goes to the oldest row held, and again into history, a page at a time.
    t.wait_doing(
        "the first file, from history",
        |s| s.contains("/w/hist-000"),
        || t.keys(&["g"]),
    );
    t.keys(&["G"]);
    t.wait("following again", |s| {
        s.contains("FOLLOW") && s.contains("/w/hist-199")
    });
    // `:` goes to a seq (or a time) in history, and `G` comes back.
    t.keys(&[":", "1", "Enter"]);
    t.wait("the jump to seq 1", |s| {
        s.contains("HISTORY") && s.contains("/w/hist-000") && !s.contains("/w/hist-199")
    });
    t.keys(&["G"]);
    t.wait("following after the jump", |s| {
        s.contains("FOLLOW") && s.contains("/w/hist-199")
    });
    // History came over the viewer's own connection: the service sees one reader for it.
    let out = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["readers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .filter(|n| *n != "firehose status")
        .collect();
    assert_eq!(names, ["firehose view"], "one connection: {v}");
    t.keys(&["q"]);
    let _ = std::fs::remove_dir_all(&dir);
}
