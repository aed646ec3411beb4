//! Connecting over the control socket, and learning of the service's death.
//!
//! A [`Role::Service`] child (pinned to the producer's core) runs what `firehosed` runs
//! (tests/support/roles.rs does the same): `place::bind`, the ring's owner thread
//! (`Publisher`) and the `Server::poll_once` loop. It publishes one record each time a reader attaches, so a
//! client's first record is there as soon as it can read it. A [`Role::Connector`] child
//! (pinned to the reader's core) then either times `Client::connect` plus the first record,
//! over and over, or connects, reads its first record and sleeps in `Client::recv` until
//! the service SIGKILLs itself: the service writes CLOCK_MONOTONIC to its control socket
//! just before, the connector notes the time its `recv` returns.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use firehose_transport::control::client::{Client, ConnectOptions};
use firehose_transport::control::place::{bind, Access};
use firehose_transport::control::server::{NoHistory, Server, ServerConfig};
use firehose_transport::publisher::{Item, Publisher, PublisherConfig};
use firehose_transport::ring::{Event, Policy, Producer, RingConfig};

use crate::cases::{Ctx, PACED_PAYLOAD};
use crate::child::{send_ready, send_report, send_words, ChildArgs, ChildProc, Report, Role};
use crate::os::mono_ns;
use crate::payload::{access_index, make_record, BenchRecord, Pool, Tally};
use crate::stats::{latency_histogram, Percentiles};

/// The word that stops a service cleanly.
const STOP: u64 = u64::from_le_bytes(*b"FHBSTOP!");
/// The word that makes a service write the time and SIGKILL itself.
const DIE: u64 = u64::from_le_bytes(*b"FHBDIE!!");
/// How long the idle reader sleeps in `recv` before the service dies.
const IDLE_BEFORE_DEATH: Duration = Duration::from_millis(20);

/// A fresh control socket path for this process.
fn socket_path() -> PathBuf {
    std::env::temp_dir()
        .join(format!("fhb-{}", std::process::id()))
        .join("ctl.sock")
}

fn spawn_service(ctx: &Ctx, path: &std::path::Path) -> Result<ChildProc> {
    let mut svc = ChildProc::spawn(
        ChildArgs::new(Role::Service, PACED_PAYLOAD, ctx.cores.producer).socket(path.into()),
    )?;
    svc.expect_ready()?;
    Ok(svc)
}

/// Connect + handshake + first record, `ctx.connects` times in one connector.
///
/// # Errors
/// Any failure of the service or the connector.
pub fn connect(ctx: &Ctx) -> Result<Percentiles> {
    let path = socket_path();
    let mut svc = spawn_service(ctx, &path)?;
    let mut c = ChildProc::spawn(
        ChildArgs::new(Role::Connector, PACED_PAYLOAD, ctx.cores.reader)
            .socket(path)
            .count(ctx.connects),
    )?;
    let got = c.report()?;
    let w = c.words::<5>()?;
    c.finish()?;
    send_words(&mut svc.sock, &[STOP])?;
    svc.report()?;
    svc.finish()?;
    if let Some(dir) = socket_path().parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    ensure!(
        got.tally.count == ctx.connects,
        "{} first records for {} connects",
        got.tally.count,
        ctx.connects
    );
    Ok(Percentiles {
        p50: w[0],
        p99: w[1],
        p999: w[2],
        max: w[3],
        samples: w[4],
    })
}

/// An idle reader learning of the service's death, `ctx.deaths` times (a new service
/// each time).
///
/// # Errors
/// Any failure, or a reader that does not see the death within 60 s.
pub fn death(ctx: &Ctx) -> Result<Percentiles> {
    let path = socket_path();
    let mut hist = latency_histogram();
    for _ in 0..ctx.deaths {
        let mut svc = spawn_service(ctx, &path)?;
        let mut c = ChildProc::spawn(
            ChildArgs::new(Role::Connector, PACED_PAYLOAD, ctx.cores.reader).socket(path.clone()),
        )?;
        c.expect_ready()?;
        std::thread::sleep(IDLE_BEFORE_DEATH);
        send_words(&mut svc.sock, &[DIE])?;
        let [died] = svc.words::<1>()?;
        let [seen] = c.words::<1>()?;
        c.finish()?;
        let end = svc.wait_end(Duration::from_secs(5));
        ensure!(
            end.contains("SIGKILL"),
            "the service ended otherwise: {end}"
        );
        ensure!(
            seen >= died,
            "death seen at {seen} before it happened at {died}"
        );
        hist.record(seen - died)?;
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(Percentiles::of(&hist))
}

/// The service (child side): serves the control socket for a ring of bench records until
/// told to stop or die.
///
/// # Errors
/// Any failure to bind or serve.
pub fn service_child(mut sock: UnixStream, args: &ChildArgs) -> Result<()> {
    let path = args.socket.clone().context("--socket")?;
    let bound = bind(&path, &Access::default()).context("binding the socket")?;
    let producer = Producer::<BenchRecord>::new(RingConfig {
        lossless_wait: Duration::ZERO,
        ..RingConfig::default()
    })?;
    let mut seq = producer.next_seq();
    let (publisher, link) = Publisher::start(producer, PublisherConfig::default())?;
    let mut server = Server::new(
        bound.listener.try_clone()?,
        link,
        Box::new(NoHistory),
        ServerConfig::default(),
    )?;
    let first = make_record(args.payload, 0);
    send_ready(&mut sock)?;
    sock.set_nonblocking(true)?;
    let mut next_id = 1u64;
    let mut published = 0u64;
    let mut word = [0u8; 8];
    loop {
        server.poll_once(Duration::from_millis(2))?;
        // Reader ids count up from 1: publish one record per reader that attached since
        // the last look (one that came and went in between is skipped past).
        let snap = publisher.snapshot().context("the ring's owner is gone")?;
        let newest = snap
            .readers
            .iter()
            .map(|r| r.id.0)
            .filter(|&id| id >= next_id)
            .max();
        if let Some(id) = newest {
            publisher
                .send(Item::Record {
                    seq,
                    value: first.clone(),
                })
                .map_err(|_| anyhow::anyhow!("the ring's owner is gone"))?;
            publisher.sync();
            seq += 1;
            published += 1;
            next_id = id + 1;
        }
        match sock.read(&mut word) {
            Ok(8) => match u64::from_le_bytes(word) {
                STOP => break,
                DIE => {
                    sock.set_nonblocking(false)?;
                    send_words(&mut sock, &[mono_ns()])?;
                    nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL)?;
                    unreachable!("SIGKILL");
                }
                w => bail!("unknown command {w:#x}"),
            },
            Ok(0) => bail!("the parent went away"),
            Ok(n) => bail!("a command of {n} bytes"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("reading commands"),
        }
    }
    server.shutdown();
    publisher.finish();
    sock.set_nonblocking(false)?;
    send_report(
        &mut sock,
        Report {
            tally: Tally {
                count: published,
                ..Tally::default()
            },
            end_ns: mono_ns(),
            nvcsw: 0,
            cpu_ns: 0,
        },
    )
}

/// Connects and waits for the first record; checks it against the pool.
fn connect_first(path: &std::path::Path, pool: &Pool) -> Result<Client<BenchRecord>> {
    let opts = ConnectOptions {
        name: "firehose-bench".into(),
        policy: Policy::Lagging,
        ..ConnectOptions::default()
    };
    let mut c = Client::<BenchRecord>::connect(path, &opts)?;
    loop {
        let b = c.recv(16)?;
        for e in &b {
            if let Event::Record(r) = e {
                let bytes = r.bytes();
                ensure!(
                    access_index(bytes)? == 0 && crate::payload::checksum(bytes) == pool.sum(0),
                    "the first record is not what the service sent"
                );
                return Ok(c);
            }
        }
    }
}

/// The connector (child side): `--count N` timed connects, or (`--count 0`) one idle
/// reader that reports when it learns of the service's death.
///
/// # Errors
/// Any failure to connect or read.
pub fn connector_child(mut sock: UnixStream, args: &ChildArgs) -> Result<()> {
    let path = args.socket.clone().context("--socket")?;
    let pool = Pool::new(args.payload)?;
    if args.count == 0 {
        let mut c = connect_first(&path, &pool)?;
        send_ready(&mut sock)?;
        let t = match c.recv(16) {
            Ok(b) => bail!("an idle reader got {} events", b.len()),
            Err(_) => mono_ns(),
        };
        return send_words(&mut sock, &[t]).context("reporting the death");
    }
    let mut hist = latency_histogram();
    for _ in 0..args.count {
        let t = Instant::now();
        let c = connect_first(&path, &pool)?;
        hist.record(t.elapsed().as_nanos() as u64)?;
        c.bye();
        // Let the service see the goodbye before the next hello.
        std::thread::sleep(Duration::from_millis(1));
    }
    let p = Percentiles::of(&hist);
    send_report(
        &mut sock,
        Report {
            tally: Tally {
                count: args.count,
                ..Tally::default()
            },
            end_ns: mono_ns(),
            nvcsw: 0,
            cpu_ns: 0,
        },
    )?;
    send_words(&mut sock, &[p.p50, p.p99, p.p999, p.max, p.samples]).context("percentiles")
}
