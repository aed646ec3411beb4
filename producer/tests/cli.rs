//! The two commands together: `firehosed --synthetic` and `firehose tail` / `status` /
//! `doctor`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const FIREHOSED: &str = env!("CARGO_BIN_EXE_firehosed");

/// The `firehose` client binary, built beside `firehosed` (built here if missing).
fn firehose() -> PathBuf {
    let exe = Path::new(FIREHOSED).with_file_name("firehose");
    if !exe.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "firehose-cli", "--bin", "firehose"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo");
        assert!(st.success(), "building the firehose client failed");
    }
    exe
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(firehose())
        .args(args)
        .output()
        .expect("run firehose")
}

fn start(sock: &str) -> Service {
    let dir = Path::new(sock).parent().unwrap();
    let db = dir.join("state/history.db");
    let filters = dir.join("filters");
    let svc = Service(
        Command::new(FIREHOSED)
            .args(["--socket", sock, "--synthetic", "5000"])
            .arg("--db")
            .arg(&db)
            .arg("--filters")
            .arg(&filters)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait for the socket (a watchdog-bounded loop, not a timing assertion).
    for _ in 0..500 {
        if Path::new(sock).exists() {
            return svc;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("firehosed did not create {sock}");
}

#[test]
fn tail_status_and_doctor_talk_to_a_running_service() {
    let dir = format!("/tmp/fh-cli-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    let sock = format!("{dir}/f.sock");
    let mut svc = start(&sock);

    let out = run(&["--socket", &sock, "tail", "--json", "--count", "20"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let seqs: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let i = l.find("\"seq\":")? + 6;
            l[i..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(seqs.len(), 20, "{text}");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive seqs: {text}"
    );
    assert!(text.contains("/synthetic/synthetic/"), "{text}");

    let out = run(&["--socket", &sock, "status"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() && text.contains(&svc.0.id().to_string()),
        "{text}"
    );
    assert!(text.contains("firehose status"), "{text}");

    let out = run(&["--socket", &sock, "doctor"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ok"), "{text}");

    // Stopping the service: a tail in progress is told why and exits with status 2.
    let tail = Command::new(firehose())
        .args(["--socket", &sock, "tail"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // SIGTERM: a clean shutdown.
    let st = Command::new("kill")
        .args(["-TERM", &svc.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = tail.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "disconnected by the service");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shutting down"), "{err}");
    assert!(svc.0.wait().unwrap().success());
    assert!(!Path::new(&sock).exists(), "the service removes its socket");
}

#[test]
fn doctor_says_when_no_service_runs() {
    let out = run(&["--socket", "/tmp/fh-cli-none/x.sock", "doctor"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("not running"), "{text}");
    let out = run(&["--socket", "/tmp/fh-cli-none/x.sock", "tail"]);
    assert_eq!(out.status.code(), Some(1), "the service cannot be reached");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}
