//! The control socket with real processes: a service child (producer + control socket) and
//! readers in this process or in children.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use firehose_tests::payload;
use firehose_transport::control::client::{Client, ConnectOptions};
use firehose_transport::control::wire::DisconnectReason;
use firehose_transport::ring::{Event, Policy};

use crate::watchdog::Watchdog;

const CHILD: &str = env!("CARGO_BIN_EXE_firehose-test-child");

fn socket_path() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(format!(
        "/tmp/fh-ctl-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("s.sock")
}

/// A child process with piped stdin/stdout, read line by line.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(CHILD)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        Proc { child, stdin, out }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("read child output");
        l.trim().to_string()
    }

    fn expect_prefix(&mut self, prefix: &str) -> String {
        let l = self.line();
        assert!(l.starts_with(prefix), "expected '{prefix}...', got '{l}'");
        l
    }

    fn say(&mut self) {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s).unwrap();
        s.flush().unwrap();
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service child.
struct Service {
    proc: Proc,
    path: PathBuf,
}

impl Service {
    fn start(extra: &[&str]) -> Service {
        let path = socket_path();
        let mut args = vec!["service", "--socket", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn(&args);
        proc.expect_prefix("ready");
        Service { proc, path }
    }

    /// Asks for the service's counters.
    fn stats(&mut self) -> Stats {
        self.proc.say();
        Stats::parse(&self.proc.expect_prefix("stats"))
    }

    /// Polls stats until `cond` holds (the watchdog bounds the wait).
    fn wait_until(&mut self, cond: impl Fn(&Stats) -> bool) -> Stats {
        loop {
            let s = self.stats();
            if cond(&s) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self, args: &[&str]) -> Proc {
        let mut a = vec!["client", "--socket", self.path.to_str().unwrap()];
        a.extend_from_slice(args);
        Proc::spawn(&a)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    connections: u64,
    readers: u64,
    epoch: u64,
    cut_off: u64,
    refused: u64,
    protocol_errors: u64,
    next_seq: u64,
    fds: u64,
    rss_kib: u64,
}

impl Stats {
    fn parse(line: &str) -> Stats {
        let mut s = Stats::default();
        for kv in line.split_whitespace().skip(1) {
            let (k, v) = kv.split_once('=').unwrap();
            let v: u64 = v.parse().unwrap();
            match k {
                "connections" => s.connections = v,
                "readers" => s.readers = v,
                "epoch" => s.epoch = v,
                "cut_off" => s.cut_off = v,
                "refused" => s.refused = v,
                "protocol_errors" => s.protocol_errors = v,
                "next_seq" => s.next_seq = v,
                "fds" => s.fds = v,
                "rss_kib" => s.rss_kib = v,
                _ => {}
            }
        }
        s
    }
}

/// Checks one event against the stream's expectations (order, every payload byte) and
/// counts the records.
fn check_event(e: &Event<'_, Vec<u8>>, next: &mut u64, got: &mut u64) {
    match e {
        Event::Record(r) => {
            assert_eq!(r.seq(), *next);
            assert_eq!(r.access().unwrap().as_slice(), payload(r.seq()).as_slice());
            *next += 1;
            *got += 1;
        }
        Event::Lagged { to, .. } | Event::Gap { to, .. } => *next = to + 1,
    }
}

fn read_records(c: &mut Client<Vec<u8>>, n: u64) {
    let mut got = 0;
    let mut next = c.next_seq();
    while got < n {
        for e in &c.recv(256).expect("recv") {
            check_event(&e, &mut next, &mut got);
        }
    }
}

fn opts(policy: Policy) -> ConnectOptions {
    ConnectOptions {
        name: "control test".into(),
        policy,
        ..ConnectOptions::default()
    }
}

#[test]
fn a_reader_connects_receives_and_disconnects_and_its_slot_is_freed() {
    let mut svc = Service::start(&["--pace-us", "200"]);
    let _dog = Watchdog::arm(
        "connect/receive/disconnect",
        Duration::from_secs(30),
        vec![svc.proc.child.id()],
    );
    let mut c: Client<Vec<u8>> = Client::connect(&svc.path, &opts(Policy::Lossless)).unwrap();
    assert_eq!(c.service().pid, svc.proc.child.id());
    read_records(&mut c, 5000);
    let st = c.status().unwrap();
    assert_eq!(st.readers.len(), 1);
    assert_eq!(st.readers[0].pid, std::process::id());
    assert_eq!(st.readers[0].policy, Policy::Lossless);
    c.bye();
    svc.wait_until(|s| s.connections == 0 && s.readers == 0);
}

#[test]
fn kill_9_of_a_reader_frees_its_slot_and_the_producer_goes_on() {
    let mut svc = Service::start(&["--pace-us", "100", "--capacity", "65536"]);
    let _dog = Watchdog::arm(
        "kill -9 of a reader",
        Duration::from_secs(30),
        vec![svc.proc.child.id()],
    );
    let mut reader = svc.client(&["--policy", "lossless", "--stall"]);
    reader.expect_prefix("connected");
    reader.expect_prefix("holding");
    // It holds the ring: the producer is held back.
    let held = svc.wait_until(|s| s.readers == 1);
    reader.kill9();
    let freed = svc.wait_until(|s| s.readers == 0 && s.connections == 0);
    let later = svc.wait_until(|s| s.next_seq > freed.next_seq + 1000);
    assert!(later.next_seq > held.next_seq);
}

#[test]
fn kill_9_of_the_service_wakes_an_idle_reader_at_once() {
    let mut svc = Service::start(&["--pace-us", "100000000"]);
    let mut c: Client<Vec<u8>> = Client::connect(&svc.path, &opts(Policy::Lagging)).unwrap();
    c.reader_mut().set_spin(0);
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || loop {
        match c.recv(16) {
            Ok(_) => continue,
            Err(e) => {
                tx.send(e.disconnect_reason()).unwrap();
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    svc.proc.kill9();
    // A 2 s watchdog, not a stopwatch: EOF wakes the reader at once.
    let reason = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("the idle reader must wake within the watchdog");
    assert_eq!(reason, Some(DisconnectReason::Gone));
    t.join().unwrap();
}

#[test]
fn a_stalled_lossless_reader_is_cut_off_its_frames_stay_intact_and_others_go_on() {
    let mut svc = Service::start(&[
        "--pace-us",
        "200",
        "--capacity",
        "65536",
        "--window-ms",
        "200",
    ]);
    let _dog = Watchdog::arm(
        "stalled lossless reader",
        Duration::from_secs(60),
        vec![svc.proc.child.id()],
    );
    let mut staller = svc.client(&["--policy", "lossless", "--stall"]);
    staller.expect_prefix("connected");
    let holding = staller.expect_prefix("holding=");
    assert_ne!(holding, "holding=0");
    let mut other: Client<Vec<u8>> = Client::connect(&svc.path, &opts(Policy::Lossless)).unwrap();
    // The other lossless reader keeps reading through the cut-off and the segment switch.
    read_records(&mut other, 20_000);
    let st = svc.wait_until(|s| s.cut_off >= 1);
    assert!(st.epoch >= 2, "the cut-off rotated the ring: {st:?}");
    read_records(&mut other, 5_000);
    staller.say();
    let intact = staller.expect_prefix("intact=");
    let (a, b) = intact["intact=".len()..].split_once('/').unwrap();
    assert_eq!(a, b, "the staller's borrowed frames must be intact");
    assert_eq!(
        staller.expect_prefix("disconnected="),
        "disconnected=Some(TooSlow)"
    );
}

#[test]
fn a_uid_that_stalls_again_and_again_pins_at_most_the_lossless_limit_of_segments() {
    let mut svc = Service::start(&[
        "--pace-us",
        "200",
        "--capacity",
        "65536",
        "--window-ms",
        "100",
        "--max-lossless",
        "4",
    ]);
    let _dog = Watchdog::arm(
        "stall loop",
        Duration::from_secs(120),
        vec![svc.proc.child.id()],
    );
    for _ in 0..50 {
        let mut staller = svc.client(&["--policy", "lossless", "--stall"]);
        let first = staller.line();
        if first.starts_with("refused=") {
            assert!(
                first.contains("NotAllowed") || first.contains("Busy"),
                "{first}"
            );
            continue;
        }
        staller.expect_prefix("holding=");
        let cut = svc.stats().cut_off;
        svc.wait_until(|s| s.cut_off > cut);
        staller.say();
    }
    let st = svc.stats();
    assert!(
        st.epoch <= 1 + 4,
        "at most max_lossless rotations pinned: {st:?}"
    );
    assert!(st.cut_off >= 1);
}

fn connect_raw(path: &Path) -> UnixStream {
    UnixStream::connect(path).unwrap()
}

#[test]
fn hostile_peers_do_not_disturb_the_others_and_leave_nothing_behind() {
    let mut svc = Service::start(&["--pace-us", "500", "--hello-ms", "300"]);
    let _dog = Watchdog::arm(
        "hostile peers",
        Duration::from_secs(120),
        vec![svc.proc.child.id()],
    );
    let baseline = svc.stats();
    let mut good: Client<Vec<u8>> = Client::connect(&svc.path, &opts(Policy::Lagging)).unwrap();
    read_records(&mut good, 100);
    // Garbage.
    let mut s = connect_raw(&svc.path);
    s.write_all(&[0xAB; 300]).unwrap();
    // An absurd length prefix.
    let mut s2 = connect_raw(&svc.path);
    s2.write_all(&u32::MAX.to_le_bytes()).unwrap();
    s2.write_all(&[1, 0, 0, 0]).unwrap();
    // Half a frame, then silence.
    let mut s3 = connect_raw(&svc.path);
    s3.write_all(&[40, 0, 0, 0, 1, 0, 0, 0, 1]).unwrap();
    // Fds sent by a client.
    let s4 = connect_raw(&svc.path);
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let fd = std::os::fd::AsFd::as_fd(&devnull);
    let _ = firehose_transport::fdpass::send_with_fds(
        std::os::fd::AsFd::as_fd(&s4),
        &[0u8; 8],
        &[fd, fd, fd],
    );
    // 500 simultaneous connections.
    let many: Vec<UnixStream> = (0..500).map(|_| connect_raw(&svc.path)).collect();
    read_records(&mut good, 100);
    drop(many);
    // A connect/disconnect flood.
    for _ in 0..1000 {
        drop(connect_raw(&svc.path));
    }
    read_records(&mut good, 100);
    drop((s, s2, s3, s4));
    let st = svc.wait_until(|s| s.connections == 1);
    assert!(st.protocol_errors >= 3, "{st:?}");
    assert_eq!(st.readers, 1);
    // Nothing leaks: the service holds the fds it held before plus the good reader's.
    assert!(
        st.fds <= baseline.fds + 3,
        "fds {} then {}",
        baseline.fds,
        st.fds
    );
    read_records(&mut good, 100);
}

#[test]
fn a_thousand_connect_disconnect_cycles_leave_no_fd_page_or_slot_behind() {
    let mut svc = Service::start(&["--pace-us", "2000"]);
    let _dog = Watchdog::arm(
        "1000 cycles",
        Duration::from_secs(120),
        vec![svc.proc.child.id()],
    );
    let baseline = svc.stats();
    for i in 0..1000 {
        let policy = if i % 2 == 0 {
            Policy::Lagging
        } else {
            Policy::Lossless
        };
        let c: Client<Vec<u8>> = Client::connect(&svc.path, &opts(policy)).unwrap();
        if i % 3 == 0 {
            c.bye();
        } else {
            drop(c);
        }
    }
    let st = svc.wait_until(|s| s.connections == 0 && s.readers == 0);
    assert!(
        st.fds <= baseline.fds,
        "fds {} then {}: {:?}",
        baseline.fds,
        st.fds,
        std::fs::read_dir(format!("/proc/{}/fd", svc.proc.child.id()))
            .unwrap()
            .map(|e| std::fs::read_link(e.unwrap().path()).unwrap())
            .collect::<Vec<_>>()
    );
    // Our own side leaks nothing either.
    let ours = std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(ours < 200, "{ours} fds open in the test process");
    let _ = std::os::fd::AsFd::as_fd(&std::io::stdin()).as_raw_fd();
}

fn running_as_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: dropping to other uids needs root (CI runs as root)");
    false
}

/// Other uids: refused by default at connect (the 0700 folder), refused by SO_PEERCRED when
/// not on the allow-list, and reading the ring when allowed by uid or by group.
#[test]
fn other_uids_are_refused_unless_allowed_and_allowed_ones_stream() {
    if !running_as_root() {
        return;
    }
    // Default: only our own uid (and root).
    let svc = Service::start(&["--pace-us", "500"]);
    let mut c = svc.client(&[
        "--policy",
        "lagging",
        "--records",
        "100",
        "--as-uid",
        "65534",
    ]);
    let l = c.line();
    assert!(
        l.contains("not_allowed_at_connect=true") && l.contains("uid 65534"),
        "{l}"
    );
    drop(svc);
    // An allow-list naming uid 65534 and gid 65530.
    let mut svc = Service::start(&[
        "--pace-us",
        "500",
        "--allow-uid",
        "65534",
        "--allow-gid",
        "65530",
    ]);
    let _dog = Watchdog::arm(
        "other uids",
        Duration::from_secs(60),
        vec![svc.proc.child.id()],
    );
    for who in [
        &["--as-uid", "65534"][..],
        &["--as-uid", "65533", "--group", "65530"][..],
    ] {
        let mut args = vec!["--policy", "lagging", "--records", "1000"];
        args.extend_from_slice(who);
        let mut c = svc.client(&args);
        c.expect_prefix("connected");
        let l = c.line();
        let n: u64 = l
            .strip_prefix("records=")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(n >= 1000, "{who:?}: {l}");
    }
    // On the 0666 socket, a uid that is neither listed nor in the group connects at the
    // socket level and is refused by the service, which says why.
    let mut c = svc.client(&["--policy", "lagging", "--as-uid", "65532"]);
    let l = c.line();
    assert!(
        l.starts_with("refused=Some(NotAllowed)") && l.contains("65532"),
        "{l}"
    );
    // Lossless is rationed to the service's own uid by default.
    let mut c = svc.client(&[
        "--policy",
        "lossless",
        "--records",
        "10",
        "--as-uid",
        "65534",
    ]);
    let l = c.line();
    assert!(
        l.starts_with("refused=Some(NotAllowed)") && l.contains("losslessly"),
        "{l}"
    );
    let st = svc.stats();
    assert!(st.refused >= 1, "{st:?}");
}

/// The tokio client reads the stream and learns of the service's death without polling.
#[test]
fn the_tokio_client_streams_and_learns_of_the_services_death() {
    use firehose_transport::control::tokio_client::AsyncClient;
    let mut svc = Service::start(&["--pace-us", "300"]);
    let path = svc.path.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _dog = Watchdog::arm(
        "tokio client",
        Duration::from_secs(30),
        vec![svc.proc.child.id()],
    );
    let mut c = rt
        .block_on(AsyncClient::<Vec<u8>>::connect(
            path,
            opts(Policy::Lossless),
        ))
        .unwrap();
    let mut next = c.inner().next_seq();
    let mut got = 0;
    rt.block_on(async {
        while got < 5000 {
            for e in &c.recv(512).await.unwrap() {
                check_event(&e, &mut next, &mut got);
            }
        }
    });
    svc.proc.kill9();
    let reason = rt.block_on(async {
        loop {
            match c.recv(512).await {
                Ok(_) => continue,
                Err(e) => break e.disconnect_reason(),
            }
        }
    });
    assert_eq!(reason, Some(DisconnectReason::Gone));
}

#[test]
fn a_lossless_reader_that_trickles_is_cut_off_too() {
    let mut svc = Service::start(&[
        "--pace-us",
        "200",
        "--capacity",
        "65536",
        "--window-ms",
        "200",
    ]);
    let _dog = Watchdog::arm(
        "trickling reader",
        Duration::from_secs(60),
        vec![svc.proc.child.id()],
    );
    let mut t = svc.client(&["--policy", "lossless", "--trickle"]);
    t.expect_prefix("connected");
    assert_eq!(t.line(), "disconnected=Some(TooSlow)");
    assert!(svc.stats().cut_off >= 1);
}

#[test]
fn lossless_readers_over_the_limit_are_told_busy() {
    let svc = Service::start(&["--pace-us", "1000", "--max-lossless", "1"]);
    let _dog = Watchdog::arm(
        "lossless limit",
        Duration::from_secs(30),
        vec![svc.proc.child.id()],
    );
    let first: Client<Vec<u8>> = Client::connect(&svc.path, &opts(Policy::Lossless)).unwrap();
    let e = Client::<Vec<u8>>::connect(&svc.path, &opts(Policy::Lossless)).unwrap_err();
    assert_eq!(e.disconnect_reason(), Some(DisconnectReason::Busy), "{e}");
    // A lagging reader is still welcome.
    let _lagging: Client<Vec<u8>> = Client::connect(&svc.path, &opts(Policy::Lagging)).unwrap();
    drop(first);
}

#[test]
fn a_client_reconnects_with_backoff_to_a_restarted_service_and_resumes_after_its_last_seq() {
    use firehose_transport::control::client::reconnect;
    use firehose_transport::control::wire::StartAt;
    let mut svc = Service::start(&["--pace-us", "300"]);
    let path = svc.path.clone();
    let _dog = Watchdog::arm(
        "reconnect",
        Duration::from_secs(60),
        vec![svc.proc.child.id()],
    );
    let mut c: Client<Vec<u8>> = Client::connect(&path, &opts(Policy::Lagging)).unwrap();
    read_records(&mut c, 1000);
    let last = c.next_seq() - 1;
    svc.proc.kill9();
    // The service comes back at the same path a little later (its stale socket replaced).
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut p = Proc::spawn(&[
            "service",
            "--socket",
            path.to_str().unwrap(),
            "--pace-us",
            "300",
        ]);
        p.expect_prefix("ready");
        p
    });
    // Nothing listens for a while: the helper backs off and tries again until it is back.
    let mut again: Client<Vec<u8>> =
        reconnect(&svc.path, &opts(Policy::Lagging), last, 50).unwrap();
    let new_service = restart.join().unwrap();
    assert_eq!(again.service().pid, new_service.child.id());
    // It asked to resume after `last` (the records between come from history, once the
    // service has one), and it reads the new service's stream.
    assert_eq!(again.start(), StartAt::Seq(last + 1));
    read_records(&mut again, 100);
}

/// A history query to a service without history is answered, not ignored: the rows end
/// at once with `Unavailable`; status reports the reader and the ring.
#[test]
fn queries_and_status_are_answered_over_the_socket() {
    use firehose_transport::control::wire::{HistoryQuery, QueryEnd};
    let svc = Service::start(&["--pace-us", "1000"]);
    let _dog = Watchdog::arm(
        "query and status",
        Duration::from_secs(30),
        vec![svc.proc.child.id()],
    );
    let mut c: Client<Vec<u8>> = Client::connect(&svc.path, &opts(Policy::Lagging)).unwrap();
    let (rows, end) = c
        .query(HistoryQuery {
            id: 9,
            seq: Some((1, 100)),
            ..HistoryQuery::default()
        })
        .unwrap();
    assert!(rows.is_empty());
    assert_eq!(end, QueryEnd::Unavailable);
    let st = c.status().unwrap();
    assert_eq!(st.pid, svc.proc.child.id());
    assert_eq!(st.readers.len(), 1);
    assert_eq!(st.ring_capacity, 1 << 20);
    assert!(st.health.contains("no history"), "{}", st.health);
}

/// Issue 7: a lossless client that half-closes its socket while holding a batch is a
/// disconnect to the service, but its process keeps the mapping and its borrows: the
/// producer must keep honouring it until a rotation leaves it behind, so the held frames
/// stay intact however many laps follow.
#[test]
fn a_lossless_client_that_half_closes_while_holding_a_batch_keeps_its_frames_intact() {
    let mut svc = Service::start(&[
        "--pace-us",
        "200",
        "--capacity",
        "65536",
        // No progress cut-off during the test: only the departure can free the ring.
        "--window-ms",
        "600000",
    ]);
    let _dog = Watchdog::arm(
        "half-closed lossless reader",
        Duration::from_secs(60),
        vec![svc.proc.child.id()],
    );
    let mut staller = svc.client(&["--policy", "lossless", "--stall", "--half-close"]);
    staller.expect_prefix("connected");
    assert_ne!(staller.expect_prefix("holding="), "holding=0");
    let start = svc.stats();
    // Several laps of a 64 KiB ring (records average ~110 bytes with their headers).
    let st = svc.wait_until(|s| s.next_seq > start.next_seq + 5 * 65536 / 64);
    assert!(st.epoch >= 2, "the departed reader was left behind: {st:?}");
    staller.say();
    let intact = staller.expect_prefix("intact=");
    let (a, b) = intact["intact=".len()..].split_once('/').unwrap();
    assert_eq!(
        a, b,
        "the half-closed reader's borrowed frames must be intact"
    );
}

/// Issue 7: a host that embeds the producer with SIGPIPE at its default action survives a
/// reader that raises its sleeping flag and closes its wake fd.
#[test]
fn a_host_with_sigpipe_at_its_default_action_survives_a_reader_closing_its_wake_fd() {
    let out = Command::new(CHILD)
        .arg("sigpipe-host")
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "survived");
}

/// Issue 7: a tokio reader whose wake fd readiness is stale (the byte was read behind the
/// reactor's back) must not block the runtime: the runtime's other tasks keep running while
/// it waits for a producer that is idle between batches.
#[test]
fn a_tokio_reader_with_stale_readiness_never_blocks_the_runtime() {
    use firehose_transport::control::tokio_client::AsyncClient;
    use std::os::fd::AsRawFd;
    // A batch of 64 records every 300 ms: idle in between.
    let svc = Service::start(&["--pace-us", "300000"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _dog = Watchdog::arm(
        "tokio stale readiness",
        Duration::from_secs(30),
        vec![svc.proc.child.id()],
    );
    let mut c = rt
        .block_on(AsyncClient::<Vec<u8>>::connect(
            svc.path.clone(),
            opts(Policy::Lagging),
        ))
        .unwrap();
    rt.block_on(async {
        // Catch up with what is there.
        while let Ok(Ok(b)) = tokio::time::timeout(Duration::from_millis(50), c.recv(4096)).await {
            assert!(!b.is_empty());
        }
        // Sleep by hand, so the producer's next batch writes a wake byte.
        let r = c.inner().reader_mut();
        r.set_spin(0);
        assert!(r.prepare_wait());
        let fd = r.wake_fd().unwrap().as_raw_fd();
        let mut pfd = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd for a valid fd, for the duration of the call.
        assert_eq!(unsafe { libc::poll(pfd.as_mut_ptr(), 1, 5000) }, 1);
        // Let the reactor see the fd readable, then take the byte behind its back.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut byte = [0u8; 64];
        // SAFETY: reads into a buffer we own, from a valid fd.
        let n = unsafe { libc::recv(fd, byte.as_mut_ptr().cast(), byte.len(), libc::MSG_DONTWAIT) };
        assert!(n > 0);
        c.inner().reader_mut().finish_wait(false);
        // Catch up again, so the next receive has to wait.
        while let Ok(Ok(b)) = tokio::time::timeout(Duration::from_millis(20), c.recv(4096)).await {
            assert!(!b.is_empty());
        }
        let ticks = std::sync::Arc::new(AtomicU64::new(0));
        let t2 = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                t2.fetch_add(1, Ordering::Relaxed);
            }
        });
        let got = tokio::time::timeout(Duration::from_millis(2000), c.recv(4096)).await;
        ticker.abort();
        assert!(
            ticks.load(Ordering::Relaxed) > 0,
            "the runtime's other tasks kept running"
        );
        // Either the next batch arrived or the timeout fired: both returned.
        if let Ok(r) = got {
            assert!(!r.unwrap().is_empty());
        }
    });
}

/// Issue 7: a peer that asks for status and queries as fast as it can, and never reads its
/// socket, leaves the producer publishing and the service's memory bounded.
#[test]
fn a_peer_flooding_status_and_queries_leaves_the_producer_publishing_and_memory_bounded() {
    use firehose_transport::control::conn::ClientConn;
    use firehose_transport::control::wire::{
        ClientMsg, Hello, HistoryQuery, StartAt, PROTOCOL_VERSION,
    };
    let mut svc = Service::start(&["--pace-us", "500"]);
    let _dog = Watchdog::arm(
        "status and query flood",
        Duration::from_secs(60),
        vec![svc.proc.child.id()],
    );
    let before = svc.stats();
    let mut sm = ClientConn::new(Hello {
        version: PROTOCOL_VERSION,
        name: "flood".into(),
        policy: Policy::Lagging,
        start: StartAt::Now,
    });
    let mut hello = Vec::new();
    while let Some(t) = sm.poll_transmit() {
        hello.extend_from_slice(&t.bytes);
    }
    for i in 0..200 {
        sm.send(&ClientMsg::StatusRequest);
        sm.send(&ClientMsg::Query(HistoryQuery {
            id: i,
            ..HistoryQuery::default()
        }));
    }
    let mut bytes = Vec::new();
    while let Some(t) = sm.poll_transmit() {
        bytes.extend_from_slice(&t.bytes);
    }
    let mut s = connect_raw(&svc.path);
    s.write_all(&hello).unwrap();
    s.set_nonblocking(true).unwrap();
    let mut off = 0;
    let mut max_rss = 0;
    let mut last_seq = before.next_seq;
    for round in 0..40 {
        // Write as much as the socket takes; never read.
        for _ in 0..50 {
            // Whole messages only: a partial write is resumed where it stopped.
            match (&s).write(&bytes[off..]) {
                Ok(n) => off = (off + n) % bytes.len(),
                Err(_) => break,
            }
        }
        if round % 10 == 9 {
            let st = svc.stats();
            assert!(
                st.next_seq > last_seq,
                "the producer keeps publishing: {st:?}"
            );
            last_seq = st.next_seq;
            max_rss = max_rss.max(st.rss_kib);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        max_rss < before.rss_kib + 64 * 1024,
        "service memory stays bounded: {max_rss} KiB (started at {} KiB)",
        before.rss_kib
    );
}
