//! The ring demo: this process publishes synthetic file-event records; a child process
//! (this binary again, `demo-reader`) reads them, validates every record, checksums every
//! path byte, and reports what it saw.

use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use firehose_transport::handoff::{inherited_socket, send_reader, spawn_with_socket};
use firehose_transport::record::{EventKind, FileEvent};
use firehose_transport::ring::{
    Event, Policy, Producer, PublishError, ReadError, Reader, RingConfig,
};

/// Options of `firehosed demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// How long to stream, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The reader's policy: lossless (holds the producer back, zero-copy) or lagging.
    #[arg(long, value_enum, default_value_t = DemoPolicy::Lossless)]
    policy: DemoPolicy,
    /// Ring capacity in bytes (a power of two).
    #[arg(long, default_value_t = 4 << 20)]
    capacity: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DemoPolicy {
    Lossless,
    Lagging,
}

/// A synthetic file event for `seq`.
pub(crate) fn event(seq: u64, now_ns: u64) -> FileEvent {
    let path = format!(
        "/home/user/project/src/module_{:03}/file_{:06}.rs",
        seq % 997,
        seq % 100_003
    );
    FileEvent {
        seq,
        time_ns: now_ns,
        kind: if seq.is_multiple_of(5) {
            EventKind::Create
        } else {
            EventKind::CloseWrite
        },
        path: path.into_bytes(),
        path_to: None,
        rule: (seq % 3) as u32,
        size: Some(seq % 65_536),
        reconciled: false,
        blind: None,
        gap: None,
    }
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut p = Producer::<FileEvent>::new(RingConfig {
        capacity: args.capacity,
        ..RingConfig::default()
    })
    .context("creating the ring")?;
    let exe = std::env::current_exe().context("finding this program")?;
    let mut cmd = Command::new(exe);
    cmd.arg("demo-reader").stdout(Stdio::piped());
    let (mut child, sock) = spawn_with_socket(&mut cmd).context("starting the reader process")?;
    let policy = match args.policy {
        DemoPolicy::Lossless => Policy::Lossless,
        DemoPolicy::Lagging => Policy::Lagging,
    };
    let fds = p.attach_remote(policy).context("attaching the reader")?;
    send_reader(sock.as_fd(), &fds).context("handing the ring to the reader")?;
    drop(fds);
    println!(
        "firehosed demo: ring {} KiB, {:?} reader pid {}, streaming for {} s",
        args.capacity >> 10,
        policy,
        child.id(),
        args.seconds
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut next_report = start + Duration::from_secs(1);
    let (mut published, mut at_last) = (0u64, 0u64);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    while Instant::now() < end {
        for _ in 0..1024 {
            let seq = p.next_seq();
            match p.stage(&event(seq, now_ns + seq)) {
                Ok(_) => published += 1,
                Err(PublishError::Backpressure { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if Instant::now() >= next_report {
            let rate = (published - at_last) as f64;
            println!(
                "  published {published:>12} records  {:>8.2} M records/s",
                rate / 1e6
            );
            at_last = published;
            next_report += Duration::from_secs(1);
        }
    }
    while let Err(e) = p.commit() {
        if !matches!(e, PublishError::Backpressure { .. }) {
            return Err(e.into());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    p.close();
    let out = child.stdout.take().context("reader stdout")?;
    for line in BufReader::new(out).lines() {
        println!("  reader: {}", line?);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("the reader process failed ({status})");
    }
    println!(
        "firehosed demo: {published} records in {secs:.2} s = {:.2} M records/s",
        published as f64 / secs / 1e6
    );
    Ok(())
}

pub(crate) fn reader() -> anyhow::Result<()> {
    let sock = inherited_socket()
        .context("no handoff socket: `demo-reader` is started by `firehosed demo`")?;
    let fds =
        firehose_transport::handoff::recv_reader(sock.as_fd()).context("receiving the ring")?;
    let mut r: Reader<FileEvent> = Reader::open(fds).context("opening the ring")?;
    let start = Instant::now();
    let (mut records, mut lagged, mut bytes, mut checksum) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let batch = match r.recv(4096) {
            Ok(b) => b,
            Err(ReadError::Closed) => break,
            Err(e) => return Err(e.into()),
        };
        for ev in &batch {
            match ev {
                Event::Record(rec) => {
                    let e = rec.access()?;
                    if e.seq != rec.seq() {
                        bail!("record {} carries seq {}", rec.seq(), e.seq);
                    }
                    for b in e.path.as_slice() {
                        checksum = checksum.wrapping_mul(31).wrapping_add(u64::from(*b));
                    }
                    bytes += rec.bytes().len() as u64;
                    records += 1;
                }
                Event::Lagged { from, to } => lagged += to - from + 1,
                Event::Gap { .. } => {}
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{records} records validated ({:.2} M/s, {:.2} GB/s of payload), {lagged} reported lagged, path checksum {checksum:#x}",
        records as f64 / secs / 1e6,
        bytes as f64 / secs / 1e9
    );
    Ok(())
}
