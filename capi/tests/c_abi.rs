//! The C API from C: `tests/c/reader_test.c` and `examples/tail.c`, compiled with gcc
//! against `libfirehose.a` and `include/firehose.h` (warnings are errors), run against a
//! real `firehosed`, the test under valgrind (memory errors and definite leaks fail).

#[path = "../../consumer/tests/real/mod.rs"]
mod real;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use firehose_consumer::{Client, ConnectOptions, EventKind, FileEvent, HistoryQuery};
use real::{Service, DEADLINE};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// `libfirehose.a`, built (or found current) in the target folder of this test.
fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", "firehose-capi", "--lib"])
        .current_dir(Path::new(MANIFEST).join(".."));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building libfirehose.a");
    let lib = profile_dir.join("libfirehose.a");
    assert!(lib.exists(), "{} missing", lib.display());
    lib
}

/// Compiles `source` into `out` with the header and the static library.
fn gcc(source: &str, out: &Path) {
    let lib = staticlib();
    let o = Command::new("gcc")
        .args([
            "-std=gnu11",
            "-O1",
            "-g",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
        ])
        .arg(Path::new(MANIFEST).join("include"))
        .arg(Path::new(MANIFEST).join(source))
        .arg(&lib)
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
            "-o",
        ])
        .arg(out)
        .output()
        .expect("gcc (apt-get install gcc)");
    assert!(
        o.status.success(),
        "gcc {source}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn valgrind() -> Option<Vec<String>> {
    let found = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("note: valgrind not found (apt-get install valgrind): running without it");
        return None;
    }
    Some(
        [
            "valgrind",
            "-q",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
        ]
        .map(String::from)
        .to_vec(),
    )
}

/// Creates of paths ending in `/<prefix>...` that history holds.
fn stored_creates(socket: &Path, glob: &str) -> usize {
    let Ok(mut c) = Client::<FileEvent>::connect(socket, &ConnectOptions::default()) else {
        return 0;
    };
    c.query(HistoryQuery {
        id: 1,
        glob: Some(glob.to_string()),
        kinds: 1 << EventKind::Create as u8,
        ..HistoryQuery::default()
    })
    .map_or(0, |(rows, _)| rows.len())
}

/// Waits until the service watches: a file written now shows up in history.
fn wait_watching(svc: &Service, dir: &Path) {
    let until = Instant::now() + DEADLINE;
    for i in 0.. {
        std::fs::write(dir.join(format!("ready-{i}")), b"").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if stored_creates(&svc.socket(), "**/ready-*") > 0 {
            return;
        }
        assert!(
            Instant::now() < until,
            "the service never watched {}",
            dir.display()
        );
    }
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_c_reader_test_passes_against_a_real_service_under_valgrind() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("reader_test");
    gcc("tests/c/reader_test.c", &exe);
    let svc = Service::start(tmp.path(), &[]);
    let w = tmp.path().join("w");
    wait_watching(&svc, &w);
    const BEFORE: usize = 300;
    for i in 0..BEFORE {
        std::fs::write(w.join(format!("f-{i}")), b"x").unwrap();
    }
    let until = Instant::now() + DEADLINE;
    while stored_creates(&svc.socket(), "**/f-*") < BEFORE {
        assert!(Instant::now() < until, "history never held the first files");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cmd = match valgrind() {
        Some(v) => {
            let mut c = Command::new(&v[0]);
            c.args(&v[1..]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let o = cmd
        .arg(svc.socket())
        .arg(&w)
        .arg(BEFORE.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("ok "), "{}", show(&o));
    assert!(out.contains(&format!("creates={}", 2 * BEFORE)), "{out}");
}

#[test]
fn the_tail_example_prints_records_with_their_names_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("tail");
    gcc("examples/tail.c", &exe);
    let svc = Service::start(tmp.path(), &[]);
    let w = tmp.path().join("w");
    wait_watching(&svc, &w);
    let mut child = Command::new(&exe)
        .arg(svc.socket())
        .arg("3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It starts at the newest record: write until it has printed three.
    let until = Instant::now() + DEADLINE;
    let mut i = 0;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "tail.c never printed 3 records");
        std::fs::write(w.join(format!("e-{i}\x1b[2J")), b"").unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8(o.stdout.clone()).expect("escaped output is ASCII");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        !out.contains('\x1b'),
        "a raw escape reached the terminal: {out:?}"
    );
    assert!(out.contains("\\x1b[2J"), "{out}");
    for line in out.lines() {
        let (seq, path) = line.split_once(' ').expect("seq and path");
        assert!(seq.parse::<u64>().is_ok(), "{line}");
        assert!(path.starts_with('/'), "{line}");
    }
}
