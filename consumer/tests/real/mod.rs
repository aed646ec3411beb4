//! The real `firehosed` for tests that need the whole service (the consumer's and the
//! GUI's; neither crate may depend on the producer): found in the target folder the test
//! was built in (built there if missing), watching `dir/w` with its socket, database and filter folder
//! in `dir`, killed when dropped.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for the service before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// `firehosed` in the target folder this test was built in, built or found current there
/// once per test process: a binary left from an older build (another protocol version)
/// would fail the tests for the wrong reason.
pub fn firehosed() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // A test runs as target/<profile>/deps/<name>-<hash>; the binaries sit in
            // <profile>.
            let exe = std::env::current_exe().expect("current exe");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>");
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args([
                "build",
                "-q",
                "-p",
                "firehose-producer",
                "--bin",
                "firehosed",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo");
            assert!(st.success(), "building firehosed failed");
            profile_dir.join("firehosed")
        })
        .clone()
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
        self.kill_9();
        std::thread::sleep(down_for);
        self.restart();
    }

    /// kill -9.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// Starts it again (after [`kill_9`](Self::kill_9)) over the same database and socket.
    pub fn restart(&mut self) {
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
