//! `firehose export nats` and `firehose query --nats` against a real nats-server with
//! JetStream (Debian's `nats-server`, started here on a loopback port with its own store)
//! and the real `firehosed`: exactly once per (instance, seq) across kill -9 of the
//! exporter, kill -9 of the service and a restart of nats-server in a burst; two hosts in
//! one stream; a stream with other settings refused with the reasons.

#[path = "../../consumer/tests/real/mod.rs"]
mod real;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use real::Service;
use serde_json::Value;

/// A nats-server with JetStream on a free loopback port, its store in `dir`.
struct Nats {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nats {
    /// `None` (the test says it skipped) where nats-server is not installed.
    fn start(dir: &Path) -> Option<Nats> {
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = spawn_nats(dir, port);
        Some(Nats {
            child,
            port,
            dir: dir.to_path_buf(),
        })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill_9_and_restart(&mut self, down_for: Duration) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(down_for);
        self.child = spawn_nats(&self.dir, self.port);
    }
}

fn spawn_nats(dir: &Path, port: u16) -> Child {
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nats.log")).unwrap())
        .spawn()
        .expect("start nats-server");
    let until = Instant::now() + real::DEADLINE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn firehose() -> Command {
    Command::new(env!("CARGO_BIN_EXE_firehose"))
}

/// A running exporter, killed when dropped (a failed test leaves none behind).
struct Exporter(Child);

impl Exporter {
    fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }
    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running exporter for `svc` as `host`, its stderr in `log`.
fn exporter(svc: &Service, nats: &Nats, host: &str, log: &Path) -> Exporter {
    Exporter(
        firehose()
            .arg("--socket")
            .arg(svc.socket())
            .args(["export", "nats", "--url", &nats.url(), "--host", host])
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .spawn()
            .expect("start the exporter"),
    )
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// seq -> how many times, of every record line.
fn seq_counts(ndjson: &str) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for line in ndjson.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Some(s) = v["seq"].as_u64() {
            *m.entry(s).or_insert(0) += 1;
        }
    }
    m
}

/// The service's history, seq -> 1.
fn local(svc: &Service) -> BTreeMap<u64, usize> {
    seq_counts(&ok(
        firehose()
            .arg("--socket")
            .arg(svc.socket())
            .args(["query", "--json"])
            .output()
            .unwrap(),
        "firehose query",
    ))
}

/// The gap rows of the service's history, as inclusive seq ranges.
fn gaps(svc: &Service) -> Vec<(u64, u64)> {
    let out = ok(
        firehose()
            .arg("--socket")
            .arg(svc.socket())
            .args(["query", "--json", "--kind", "gap"])
            .output()
            .unwrap(),
        "firehose query --kind gap",
    );
    out.lines()
        .filter_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            let g = v.get("gap")?;
            Some((g["from"].as_u64()?, g["to"].as_u64()?))
        })
        .collect()
}

/// What the stream holds for `host`, as `query --nats --json` prints it.
fn fleet(nats: &Nats, host: Option<&str>) -> String {
    let mut c = firehose();
    c.args(["query", "--json", "--nats", &nats.url()]);
    if let Some(h) = host {
        c.args(["--host", h]);
    }
    ok(c.output().unwrap(), "firehose query --nats")
}

/// Waits until the stream holds every seq of the service's history for `host`, then
/// checks each is there exactly once.
fn assert_exactly_once(svc: &Service, nats: &Nats, host: &str) -> usize {
    assert_exactly_once_upto(svc, nats, host, u64::MAX)
}

/// As [`assert_exactly_once`], for the seqs up to `upto` (a service still writing).
fn assert_exactly_once_upto(svc: &Service, nats: &Nats, host: &str, upto: u64) -> usize {
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let mut want = local(svc);
        want.retain(|&s, _| s <= upto);
        let have = seq_counts(&fleet(nats, Some(host)));
        let dups: Vec<_> = have.iter().filter(|(_, &n)| n > 1).collect();
        assert!(dups.is_empty(), "seqs exported more than once: {dups:?}");
        let missing: Vec<_> = want.keys().filter(|s| !have.contains_key(s)).collect();
        // A record can reach the ring and not the database before a kill -9: it is in
        // the stream, and history covers it with a gap row (written when the service
        // starts again). Anything else in the stream and not in history is wrong.
        let gaps = gaps(svc);
        let uncovered: Vec<_> = have
            .keys()
            .filter(|&&s| s <= upto && !want.contains_key(&s))
            .filter(|&&s| !gaps.iter().any(|&(a, b)| a <= s && s <= b))
            .collect();
        if missing.is_empty() && uncovered.is_empty() && !want.is_empty() {
            return want.len();
        }
        assert!(
            Instant::now() < until,
            "{} of {} seqs never reached the stream, e.g. {:?}; {} in the stream that \
             history neither holds nor covers with a gap, e.g. {:?}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(5)],
            uncovered.len(),
            &uncovered[..uncovered.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the service reports a change in its folder (its watch is in place).
/// A file written before the watch is in place is never seen, so each round writes a new one.
fn wait_watching(svc: &Service, svc_dir: &Path) {
    let until = Instant::now() + real::DEADLINE;
    for round in 0.. {
        std::fs::write(svc_dir.join(format!("w/ready-{round}")), b"x").unwrap();
        for _ in 0..10 {
            if !local(svc).is_empty() {
                return;
            }
            assert!(Instant::now() < until, "the service never saw w/ready-*");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits until history holds `n` creates whose names start with `prefix`.
fn wait_stored(svc: &Service, prefix: &str, n: usize) {
    let until = Instant::now() + real::DEADLINE;
    loop {
        let out = ok(
            firehose()
                .arg("--socket")
                .arg(svc.socket())
                .args(["query", "--json", "--kind", "create", "--path"])
                .arg(format!("**/{prefix}*"))
                .output()
                .unwrap(),
            "firehose query",
        );
        let got = out.lines().count();
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < until,
            "history has {got} of {n} {prefix}* files"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `n` files into the watched folder, `tag` in their names.
fn burst(svc_dir: &Path, tag: &str, n: usize) {
    let w = svc_dir.join("w");
    for i in 0..n {
        std::fs::write(w.join(format!("{tag}-{i}")), b"x").unwrap();
    }
}

/// Lines the stream holds for `host` (0 before the exporter has made the stream).
fn stream_len(nats: &Nats, host: &str) -> usize {
    let out = firehose()
        .args(["query", "--json", "--nats", &nats.url(), "--host", host])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn exactly_once_across_kill_9_of_the_exporter_and_of_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(dir.path()) else {
        return;
    };
    let sdir = dir.path().join("svc");
    let mut svc = Service::start(&sdir, &[]);
    let log = dir.path().join("export.log");
    let mut ex = exporter(&svc, &nats, "h1", &log);
    burst(&sdir, "a", 2000);
    // kill -9 the exporter once part of the burst is out, write more while it is gone.
    let until = Instant::now() + real::DEADLINE;
    while stream_len(&nats, "h1") < 500 {
        assert!(Instant::now() < until, "nothing exported");
        std::thread::sleep(Duration::from_millis(20));
    }
    ex.kill().unwrap();
    ex.wait().unwrap();
    let before = stream_len(&nats, "h1");
    burst(&sdir, "b", 1000);
    let mut ex = exporter(&svc, &nats, "h1", &log);
    // kill -9 the service in a burst; the exporter follows it across the restart.
    let writer = {
        let sdir = sdir.clone();
        std::thread::spawn(move || {
            for k in 0..20 {
                let w = sdir.join("w");
                for i in 0..200 {
                    // The folder exists again once the service is back.
                    let _ = std::fs::write(w.join(format!("c{k}-{i}")), b"x");
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    svc.kill_9_and_restart(Duration::from_millis(300));
    writer.join().unwrap();
    burst(&sdir, "d", 500);
    let n = assert_exactly_once(&svc, &nats, "h1");
    assert!(n >= 3500, "history has only {n} records");
    let text = std::fs::read_to_string(&log).unwrap();
    let resumed: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split("resuming after seq ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(
        resumed.len(),
        1,
        "the restarted exporter says where it resumed:\n{text}"
    );
    assert!(
        resumed[0] as usize >= before,
        "it resumed after seq {}, but the stream already held {before} records:\n{text}",
        resumed[0]
    );
    ex.kill().unwrap();
    ex.wait().unwrap();
}

#[test]
fn nats_server_restarted_in_a_burst_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nats) = Nats::start(dir.path()) else {
        return;
    };
    let sdir = dir.path().join("svc");
    // 5,000 made-up records a second: publishes are always in flight when the server dies.
    let svc = Service::start(&sdir, &["--synthetic", "5000"]);
    let log = dir.path().join("export.log");
    let mut ex = exporter(&svc, &nats, "h1", &log);
    let until = Instant::now() + real::DEADLINE;
    while stream_len(&nats, "h1") < 5000 {
        assert!(Instant::now() < until, "too little exported");
        std::thread::sleep(Duration::from_millis(10));
    }
    nats.kill_9_and_restart(Duration::from_millis(500));
    // Everything history holds a second after the restart must arrive exactly once.
    std::thread::sleep(Duration::from_secs(1));
    let upto = *local(&svc).keys().next_back().unwrap();
    let n = assert_exactly_once_upto(&svc, &nats, "h1", upto);
    assert!(n > 5_000, "history has only {n} records");
    // Whether a publish was in flight at the kill is timing (the client buffers what it is
    // given while reconnecting): say which case this run tested.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        ex.try_wait().unwrap().is_none(),
        "the exporter ended: {text}"
    );
    if !(text.contains("sending again what is not stored") || text.contains("cannot ask")) {
        eprintln!("note: no publish failed in this restart (all were buffered and delivered)");
    }
    ex.kill().unwrap();
    ex.wait().unwrap();
}

#[test]
fn two_hosts_meet_in_one_stream_and_are_read_back_apart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(dir.path()) else {
        return;
    };
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let (a, b) = (Service::start(&da, &[]), Service::start(&db, &[]));
    let log = dir.path().join("export.log");
    let mut ea = exporter(&a, &nats, "host-a", &log);
    let mut eb = exporter(&b, &nats, "host-b", &log);
    // The filters below pick files by name: each create must be seen.
    wait_watching(&a, &da);
    wait_watching(&b, &db);
    burst(&da, "a", 300);
    burst(&db, "b", 200);
    // Each burst whole in history first: the stream is compared with history as it is.
    wait_stored(&a, "a-", 300);
    wait_stored(&b, "b-", 200);
    let na = assert_exactly_once(&a, &nats, "host-a");
    let nb = assert_exactly_once(&b, &nats, "host-b");
    let only_a = fleet(&nats, Some("host-a"));
    assert!(
        only_a
            .lines()
            .all(|l| l.contains("\"host\":\"host-a\"") && l.contains("/a/w/")),
        "{only_a}"
    );
    let all = fleet(&nats, None);
    let hosts: BTreeMap<String, usize> = all.lines().fold(BTreeMap::new(), |mut m, l| {
        let v: Value = serde_json::from_str(l).unwrap();
        *m.entry(v["host"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
        m
    });
    assert_eq!(hosts.get("host-a"), Some(&na), "{hosts:?}");
    assert_eq!(hosts.get("host-b"), Some(&nb), "{hosts:?}");
    // The same filters as a local query, and the plain format with the host in front.
    let plain = ok(
        firehose()
            .args([
                "query",
                "--nats",
                &nats.url(),
                "--kind",
                "create",
                "--path",
                "**/b-1?",
            ])
            .output()
            .unwrap(),
        "query --nats --kind --path",
    );
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines.len(), 10, "{plain}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("host-b ") && l.contains(" create ")),
        "{plain}"
    );
    for e in [&mut ea, &mut eb] {
        e.kill().unwrap();
        e.wait().unwrap();
    }
}

#[test]
fn a_stream_with_other_settings_is_refused_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(dir.path()) else {
        return;
    };
    let url = nats.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = async_nats::connect(&url).await.unwrap();
        let js = async_nats::jetstream::new(c);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "FIREHOSE".into(),
            subjects: vec!["other.>".into()],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let sdir = dir.path().join("svc");
    let svc = Service::start(&sdir, &[]);
    let out = firehose()
        .arg("--socket")
        .arg(svc.socket())
        .args(["export", "nats", "--url", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for want in [
        "FIREHOSE already exists with other settings",
        "\"other.>\"",
        "Memory",
        "--stream",
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    // Another stream name works beside it.
    let ok_out = firehose()
        .arg("--socket")
        .arg(svc.socket())
        .args([
            "export",
            "nats",
            "--url",
            &url,
            "--stream",
            "FH2",
            "--synthetic",
            "100",
        ])
        .output()
        .unwrap();
    assert!(
        ok_out.status.success(),
        "{}",
        String::from_utf8_lossy(&ok_out.stderr)
    );
}

#[test]
fn install_writes_a_user_unit_that_runs_the_same_export() {
    let dir = tempfile::tempdir().unwrap();
    let out = firehose()
        .env("XDG_CONFIG_HOME", dir.path())
        .args([
            "--socket",
            "/run/x y/s.sock",
            "export",
            "nats",
            "--url",
            "nats://10.0.0.1:4222",
            "--host",
            "web-1",
            "--install",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit =
        std::fs::read_to_string(dir.path().join("systemd/user/firehose-export-nats.service"))
            .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    assert!(exec.starts_with(env!("CARGO_BIN_EXE_firehose")), "{exec}");
    assert!(
        exec.contains("--socket \"/run/x y/s.sock\" export nats --url nats://10.0.0.1:4222"),
        "{exec}"
    );
    assert!(exec.contains("--host web-1"), "{exec}");
    assert!(unit.contains("Restart=always"), "{unit}");
}
