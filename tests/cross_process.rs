//! The ring across processes: the producer here, readers in child processes.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::time::Duration;

use firehose_tests::{payload, record_hash, spawn_child, ReaderReport};
use firehose_transport::handoff::{send_reader, send_segment};
use firehose_transport::ring::{Policy, Producer, PublishError, RingConfig};

use crate::watchdog::Watchdog;

const CHILD: &str = env!("CARGO_BIN_EXE_firehose-test-child");

fn attach(p: &mut Producer<Vec<u8>>, policy: Policy, args: &[&str]) -> (Child, UnixStream) {
    let (child, sock) = spawn_child(CHILD, args).expect("spawn child");
    let fds = p.attach_remote(policy).expect("attach");
    send_reader(sock.as_fd(), &fds).expect("send handoff");
    (child, sock)
}

fn report(mut child: Child) -> ReaderReport {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed ({status}); stdout: {out}");
    ReaderReport::parse(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|| panic!("bad report: {out}"))
}

/// Ten million records through a 1 MiB ring (many wraps) and two segment switches, to two
/// lossless readers and one slow lagging reader, each checking every payload byte.
#[test]
fn ten_million_records_reach_lossless_readers_whole_and_lagging_readers_accounted() {
    let total: u64 = 10_000_000;
    let mut p = Producer::<Vec<u8>>::new(RingConfig {
        capacity: 1 << 20,
        max_record: 4096,
        batch_bytes: 32 << 10,
        lossless_wait: Duration::from_secs(30),
        first_seq: 1,
    })
    .unwrap();
    let readers = [
        attach(&mut p, Policy::Lossless, &["reader"]),
        attach(&mut p, Policy::Lossless, &["reader"]),
        attach(&mut p, Policy::Lagging, &["reader", "--slow"]),
    ];
    let _dog = Watchdog::arm(
        "the 10M-record stress test",
        Duration::from_secs(600),
        readers.iter().map(|(c, _)| c.id()).collect(),
    );
    let mut checksum = 0u64;
    let switch_at = [total / 3, 2 * total / 3];
    for seq in 1..=total {
        let v = payload(seq);
        checksum = checksum.wrapping_add(record_hash(seq, &v));
        loop {
            match p.stage(&v) {
                Ok(s) => {
                    assert_eq!(s, seq);
                    break;
                }
                Err(PublishError::Backpressure { .. }) => continue,
                Err(e) => panic!("{e}"),
            }
        }
        if switch_at.contains(&seq) {
            // Grow the ring on the first switch, shrink it back on the second.
            let cap = if seq == switch_at[0] {
                2 << 20
            } else {
                1 << 20
            };
            let seg = p.rotate(Some(cap), &[]).unwrap();
            for (_, sock) in &readers {
                send_segment(sock.as_fd(), &seg).unwrap();
            }
        }
    }
    while let Err(e) = p.commit() {
        assert!(matches!(e, PublishError::Backpressure { .. }), "{e}");
    }
    assert!(p.write_pos() > 100 * (1 << 20), "must wrap many times");
    p.close();
    let [a, b, c] = readers;
    for (child, _sock) in [a, b] {
        let r = report(child);
        assert_eq!(r.records, total, "a lossless reader must see every record");
        assert_eq!(r.checksum, checksum, "payload checksum");
        assert_eq!(r.lagged, 0);
        assert_eq!(r.switches, 2);
        assert_eq!(r.next_seq, total + 1);
    }
    let lagging = report(c.0);
    assert_eq!(
        lagging.records + lagging.lagged,
        total,
        "every seq is seen or reported: {lagging:?}"
    );
    assert!(
        lagging.lag_reports > 0,
        "the slow reader must have lagged: {lagging:?}"
    );
    assert!(lagging.records > 0);
    assert_eq!(lagging.switches, 2);
}

/// A reader process sleeping in `recv` learns at once that the producer dropped it (its
/// wake pipe hangs up), and an idle producer with a sleeping reader costs no wakeups.
#[test]
fn a_sleeping_reader_learns_that_the_producer_is_gone() {
    let mut p = Producer::<Vec<u8>>::new(RingConfig::default()).unwrap();
    let (child, sock) = spawn_child(CHILD, &["idle"]).unwrap();
    let fds = p.attach_remote(Policy::Lagging).unwrap();
    let id = fds.id();
    send_reader(sock.as_fd(), &fds).unwrap();
    drop(fds);
    let _dog = Watchdog::arm(
        "the producer-gone test",
        Duration::from_secs(20),
        vec![child.id()],
    );
    p.publish(&payload(1)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(p.remove_reader(id));
    let mut out = String::new();
    let mut child = child;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(out.trim(), "gone=ProducerGone");
}

/// A closed ring ends a sleeping reader's wait with `Closed`.
#[test]
fn a_sleeping_reader_learns_that_the_ring_closed() {
    let mut p = Producer::<Vec<u8>>::new(RingConfig::default()).unwrap();
    let (child, sock) = spawn_child(CHILD, &["idle"]).unwrap();
    let fds = p.attach_remote(Policy::Lossless).unwrap();
    send_reader(sock.as_fd(), &fds).unwrap();
    drop(fds);
    let _dog = Watchdog::arm(
        "the closed-ring test",
        Duration::from_secs(20),
        vec![child.id()],
    );
    std::thread::sleep(Duration::from_millis(50));
    p.close();
    let mut out = String::new();
    let mut child = child;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(out.trim(), "gone=Closed");
}
