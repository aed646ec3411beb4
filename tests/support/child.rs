//! The child program of the cross-process tests. Its socket is fd 3.
//!
//! `firehose-test-child reader [--slow]`: receives a reader handoff, reads every event until
//! the ring closes (following segment switches it receives on the socket), checks order,
//! gap accounting and every payload byte, and prints a `ReaderReport` line.
//! `firehose-test-child idle`: receives a reader handoff and sleeps in `recv` until the ring
//! closes or the producer goes away; prints `gone=<error>`.
//! `firehose-test-child service ...` and `client ...`: the control-socket roles (`roles.rs`).

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use anyhow::{bail, Context};
use firehose_tests::{payload, record_hash, ReaderReport};
use firehose_transport::handoff::{recv_reader, recv_segment};
use firehose_transport::ring::{Event, ReadError, Reader};

fn main() {
    if let Err(e) = run() {
        eprintln!("firehose-test-child: {e:#}");
        std::process::exit(2);
    }
}

mod roles;

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("service") => return roles::service(&args),
        Some("client") => return roles::client(&args),
        Some("sigpipe-host") => return roles::sigpipe_host(),
        _ => {}
    }
    let sock = firehose_transport::handoff::inherited_socket()
        .context("no handoff socket: run me from the tests")?;
    let fds = recv_reader(sock.as_fd()).context("receiving the reader handoff")?;
    let mut r: Reader<Vec<u8>> = Reader::open(fds).context("opening the ring")?;
    match args.first().map(String::as_str) {
        Some("reader") => read_all(&mut r, sock, args.iter().any(|a| a == "--slow")),
        Some("idle") => {
            r.set_spin(0);
            let e = loop {
                match r.recv(1) {
                    Ok(_) => continue,
                    Err(e) => break e,
                }
            };
            println!("gone={e:?}");
            Ok(())
        }
        other => bail!("unknown role {other:?}"),
    }
}

fn read_all(r: &mut Reader<Vec<u8>>, sock: OwnedFd, slow: bool) -> anyhow::Result<()> {
    let mut rep = ReaderReport {
        next_seq: r.next_seq(),
        ..Default::default()
    };
    let mut calls = 0u64;
    loop {
        let batch = match r.recv(if slow { 50 } else { 4096 }) {
            Ok(b) => b,
            Err(ReadError::Closed) => break,
            Err(ReadError::SegmentEnded { next_epoch, .. }) => {
                let seg = recv_segment(sock.as_fd()).context("receiving the next segment")?;
                if seg.epoch() != next_epoch {
                    bail!("got segment {} while waiting for {next_epoch}", seg.epoch());
                }
                r.follow(seg)?;
                rep.switches += 1;
                continue;
            }
            Err(e) => bail!("read failed at seq {}: {e}", rep.next_seq),
        };
        for ev in &batch {
            match ev {
                Event::Record(rec) => {
                    if rec.seq() != rep.next_seq {
                        bail!("record {} arrived when {} was due", rec.seq(), rep.next_seq);
                    }
                    let v = rec
                        .access()
                        .with_context(|| format!("record {}", rec.seq()))?;
                    let want = payload(rec.seq());
                    if v.as_slice() != want.as_slice() {
                        bail!(
                            "record {} payload differs from what was published",
                            rec.seq()
                        );
                    }
                    rep.checksum = rep
                        .checksum
                        .wrapping_add(record_hash(rec.seq(), v.as_slice()));
                    rep.records += 1;
                    rep.next_seq += 1;
                }
                Event::Lagged { from, to } => {
                    if from != rep.next_seq || to < from {
                        bail!("lag report {from}..={to} when {} was due", rep.next_seq);
                    }
                    rep.lagged += to - from + 1;
                    rep.lag_reports += 1;
                    rep.next_seq = to + 1;
                }
                Event::Gap { from, to, .. } => bail!("unexpected gap {from}..={to}"),
            }
        }
        calls += 1;
        if slow && calls.is_multiple_of(8) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    println!("{}", rep.to_line());
    Ok(())
}
