//! The real `firehosed` for tests that need the whole service: built beside `firehose`
//! (built here if missing), watching `dir/w` with its socket, database and filter folder
//! in `dir`, killed when dropped.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for the service before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// `firehosed`, built beside `firehose` (built here if missing).
pub fn firehosed() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_firehose")).with_file_name("firehosed");
    if !exe.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "firehose-producer", "--bin", "firehosed"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo");
        assert!(st.success(), "building firehosed failed");
    }
    exe
}

/// A running `firehosed`.
pub struct Service {
    child: Child,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Service {
    /// Starts it over `dir` (creating `dir/w`), with `extra` options.
    pub fn start(dir: &Path, extra: &[&str]) -> Service {
        std::fs::create_dir_all(dir.join("w")).expect("mkdir w");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn(dir, &extra);
        Service {
            child,
            dir: dir.to_path_buf(),
            extra,
        }
    }

    /// Its control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("s.sock")
    }

    /// kill -9, then start it again over the same database and socket.
    pub fn kill_9_and_restart(&mut self, down_for: Duration) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
        std::thread::sleep(down_for);
        self.child = spawn(&self.dir, &self.extra);
    }
}

fn spawn(dir: &Path, extra: &[String]) -> Child {
    let sock = dir.join("s.sock");
    // A socket left by a killed service: the new one must be seen coming up.
    let _ = std::fs::remove_file(&sock);
    let child = Command::new(firehosed())
        .arg("--watch")
        .arg(dir.join("w"))
        .arg("--socket")
        .arg(&sock)
        .arg("--db")
        .arg(dir.join("h.db"))
        .arg("--filters")
        .arg(dir.join("filters"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start firehosed");
    let until = Instant::now() + DEADLINE;
    while !sock.exists() {
        assert!(
            Instant::now() < until,
            "firehosed did not create its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
