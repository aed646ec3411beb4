//! The Firehose ring across two processes: throughput (lossless or lagging reader),
//! ping-pong round trips over two rings, and wakeups while idle. The parent is the
//! producer; the child (this binary, [`Role`]) is the reader.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use firehose_transport::handoff::{recv_reader, send_reader};
use firehose_transport::ring::layout::frame_len;
use firehose_transport::ring::{
    Batch, Event, Policy, Producer, PublishError, ReadError, Reader, RingConfig,
};

use crate::cases::{Ctx, ReaderMode};
use crate::child::{send_ready, send_report, ChildArgs, ChildProc, Report, Role};
use crate::measure::{Idle, Throughput};
use crate::os::{mono_ns, proc_voluntary_switches, thread_cpu_ns, voluntary_switches};
use crate::payload::{BenchRecord, Checker, Pool, Tally};
use crate::stats::{latency_histogram, Percentiles};

/// Bytes of frames one receive call hands out at most in the throughput cases (a lossless
/// reader releases them at its next call). A sixteenth of the default ring: a reader that
/// takes the whole ring in one call holds the producer until it has checked all of it.
pub const RECV_BYTES: usize = 256 << 10;

/// Most events one receive call hands out for `payload`-byte records: [`RECV_BYTES`] worth,
/// between 16 and 4096.
pub fn recv_max(payload: usize) -> usize {
    (RECV_BYTES / frame_len(payload)).clamp(16, 4096)
}
/// Records staged between two looks at the clock.
const CHECK_EVERY: u64 = 256;
/// The reader's spin budget in the throughput and idle cases: the transport's default.
pub const DEFAULT_SPIN: u32 = 2000;
/// "Spin forever" for the spinning round trips (hundreds of ms before it would sleep).
pub const SPIN_LONG: u32 = 200_000_000;
/// How long a lossless reader may hold the producer back before the case fails.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Time for the idle reader to fall asleep before the window opens.
const SETTLE: Duration = Duration::from_millis(200);

/// The ring every case uses: the transport's defaults (4 MiB, 64 KiB batches).
pub fn ring_config() -> RingConfig {
    RingConfig::default()
}

/// Stages pre-archived bytes, retrying while a lossless reader holds the ring back.
pub(crate) fn stage(p: &mut Producer<BenchRecord>, bytes: &[u8]) -> Result<()> {
    let mut since: Option<Instant> = None;
    loop {
        match p.stage_archived(bytes) {
            Ok(_) => return Ok(()),
            Err(PublishError::Backpressure { .. }) => {
                let t = *since.get_or_insert_with(Instant::now);
                ensure!(t.elapsed() < STALL_LIMIT, "lossless reader stalled");
            }
            Err(e) => return Err(e).context("staging"),
        }
    }
}

/// Commits, retrying while a lossless reader holds the ring back.
pub(crate) fn commit(p: &mut Producer<BenchRecord>) -> Result<()> {
    let t = Instant::now();
    loop {
        match p.commit() {
            Ok(()) => return Ok(()),
            Err(PublishError::Backpressure { .. }) if t.elapsed() < STALL_LIMIT => {}
            Err(e) => return Err(e).context("committing"),
        }
    }
}

/// Checks every event of a batch: records are validated (rkyv), checksummed and compared
/// with the pool; lag reports are accounted. `first` is the stream's first seq.
pub(crate) fn check_batch(
    batch: &Batch<'_, BenchRecord>,
    first: u64,
    chk: &mut Checker,
) -> Result<()> {
    for ev in batch {
        match ev {
            Event::Record(rec) => {
                let a = rec.access()?;
                chk.record(rec.seq() - first, a.seq.to_native(), rec.bytes())?;
            }
            Event::Lagged { from, to } => chk.lagged(from - first, to - first)?,
            Event::Gap { from, to, reason } => {
                bail!("unexpected gap {from}..={to} (reason {reason})")
            }
        }
    }
    Ok(())
}

/// One throughput run: the parent publishes for `ctx.throughput_time`, one reader of
/// `policy` in a child reads, validates and checksums everything.
///
/// # Errors
/// Any failure, and a reader whose count or checksum is not what was sent (lossless), or
/// that cannot account for every seq (lagging).
pub fn throughput(policy: Policy, payload: usize, ctx: &Ctx) -> Result<Throughput> {
    let pool = Pool::new(payload)?;
    let mut p = Producer::<BenchRecord>::new(ring_config())?;
    let fds = p.attach_remote(policy)?;
    let mut child = ChildProc::spawn(
        ChildArgs::new(Role::RingReader, payload, ctx.cores.reader).spin(DEFAULT_SPIN),
    )?;
    send_reader(child.sock.as_fd(), &fds).context("handing over the reader")?;
    drop(fds);
    child.expect_ready()?;

    let cpu0 = thread_cpu_ns();
    let sleeps0 = voluntary_switches()?;
    let start = mono_ns();
    let t0 = Instant::now();
    let mut i = 0u64;
    while t0.elapsed() < ctx.throughput_time {
        for _ in 0..CHECK_EVERY {
            stage(&mut p, pool.bytes(i))?;
            i += 1;
        }
    }
    commit(&mut p)?;
    let producer_end = mono_ns();
    let producer_cpu_ns = thread_cpu_ns() - cpu0;
    let producer_sleeps = voluntary_switches()? - sleeps0;
    p.close();
    let got = child.report()?.ended_after(start)?;
    child.finish()?;
    drop(p);
    let sent = Tally::of_stream(&pool, i);

    match policy {
        Policy::Lossless => ensure!(
            got.tally.count == sent.count && got.tally.checksum == sent.checksum,
            "lossless reader got {} records, checksum {:#x}; sent {} records, checksum {:#x}",
            got.tally.count,
            got.tally.checksum,
            sent.count,
            sent.checksum
        ),
        Policy::Lagging => ensure!(
            got.tally.count + got.tally.lost == sent.count,
            "lagging reader got {} records and was told of {} missed; sent {}",
            got.tally.count,
            got.tally.lost,
            sent.count
        ),
    }
    Ok(Throughput {
        payload,
        records: got.tally.count,
        secs: (got.end_ns - start) as f64 / 1e9,
        produced: sent.count,
        producer_secs: (producer_end - start) as f64 / 1e9,
        lost: got.tally.lost,
        producer_cpu_ns,
        reader_cpu_ns: got.cpu_ns,
        producer_sleeps,
        reader_sleeps: got.nvcsw,
    })
}

/// The throughput reader (child side).
///
/// # Errors
/// Any read, validation or checksum failure.
pub fn reader_child(mut sock: UnixStream, args: &ChildArgs) -> Result<()> {
    let fds = recv_reader(sock.as_fd()).context("receiving the reader")?;
    let first = fds.start_seq();
    let mut r = Reader::<BenchRecord>::open(fds)?;
    r.set_spin(args.spin);
    let mut chk = Checker::new(args.payload)?;
    let max = recv_max(args.payload);
    send_ready(&mut sock)?;
    let cpu0 = thread_cpu_ns();
    let sleeps0 = voluntary_switches()?;
    loop {
        let batch = match r.recv(max) {
            Ok(b) => b,
            Err(ReadError::Closed) => break,
            Err(e) => return Err(e).context("reading the ring"),
        };
        check_batch(&batch, first, &mut chk)?;
    }
    let end_ns = mono_ns();
    send_report(
        &mut sock,
        Report {
            tally: chk.tally,
            end_ns,
            nvcsw: voluntary_switches()? - sleeps0,
            cpu_ns: thread_cpu_ns() - cpu0,
        },
    )
}

/// One round-trip run: a ping ring from the parent to the child, a pong ring back, one
/// record in flight; readers spin ([`ReaderMode::Spin`]) or sleep at once on the wake pipe
/// ([`ReaderMode::Sleep`]).
///
/// # Errors
/// Any failure, and answers that are not what was sent.
pub fn round_trip(payload: usize, mode: ReaderMode, ctx: &Ctx) -> Result<Percentiles> {
    let spin = match mode {
        ReaderMode::Spin => SPIN_LONG,
        ReaderMode::Sleep => 0,
        ReaderMode::Frame => bail!("no frame-polling round trip"),
    };
    let pool = Pool::new(payload)?;
    let mut ping = Producer::<BenchRecord>::new(ring_config())?;
    let fds = ping.attach_remote(Policy::Lossless)?;
    let mut child =
        ChildProc::spawn(ChildArgs::new(Role::RingEcho, payload, ctx.cores.reader).spin(spin))?;
    send_reader(child.sock.as_fd(), &fds).context("handing over the ping reader")?;
    drop(fds);
    let pong_fds = recv_reader(child.sock.as_fd()).context("receiving the pong reader")?;
    let first = pong_fds.start_seq();
    let mut pong = Reader::<BenchRecord>::open(pong_fds)?;
    pong.set_spin(spin);
    let mut chk = Checker::new(payload)?;
    let mut sent = Tally::default();
    let mut hist = latency_histogram();

    let begin = Instant::now();
    let (warm_until, until) = (begin + ctx.warmup, begin + ctx.warmup + ctx.round_trip_time);
    let mut i = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= until {
            break;
        }
        ping.stage_archived(pool.bytes(i))?;
        ping.commit()?;
        sent.add_sent(pool.sum(i));
        loop {
            let batch = pong.recv(1).context("reading the pong ring")?;
            if !batch.is_empty() {
                check_batch(&batch, first, &mut chk)?;
                break;
            }
        }
        let rtt = t0.elapsed();
        if t0 >= warm_until {
            hist.record(rtt.as_nanos() as u64)?;
        }
        i += 1;
    }
    ping.close();
    let got = child.report()?;
    child.finish()?;
    ensure!(
        got.tally == sent && chk.tally.count == sent.count,
        "echo got {:?}, sent {:?}, answers {}",
        got.tally,
        sent,
        chk.tally.count
    );
    Ok(Percentiles::of(&hist))
}

/// The echo (child side of the round trips): reads the ping ring, answers each record with
/// the same pool entry on its own pong ring.
///
/// # Errors
/// Any read, validation, checksum or publish failure.
pub fn echo_child(mut sock: UnixStream, args: &ChildArgs) -> Result<()> {
    let fds = recv_reader(sock.as_fd()).context("receiving the ping reader")?;
    let first = fds.start_seq();
    let mut ping = Reader::<BenchRecord>::open(fds)?;
    ping.set_spin(args.spin);
    let mut pong = Producer::<BenchRecord>::new(ring_config())?;
    let pong_fds = pong.attach_remote(Policy::Lossless)?;
    send_reader(sock.as_fd(), &pong_fds).context("handing over the pong reader")?;
    drop(pong_fds);
    let mut chk = Checker::new(args.payload)?;
    loop {
        let before = chk.tally.count;
        match ping.recv(16) {
            Ok(batch) => check_batch(&batch, first, &mut chk)?,
            Err(ReadError::Closed) => break,
            Err(e) => return Err(e).context("reading the ping ring"),
        }
        for i in before..chk.tally.count {
            stage(&mut pong, chk.pool().bytes(i))?;
        }
        commit(&mut pong)?;
    }
    pong.close();
    send_report(
        &mut sock,
        Report {
            tally: chk.tally,
            end_ns: mono_ns(),
            nvcsw: 0,
            cpu_ns: 0,
        },
    )
}

/// The idle run: a producer and one lossless reader (default spin budget, then asleep on
/// its wake pipe), nothing published for `ctx.idle_time`.
///
/// # Errors
/// Any failure.
pub fn idle(ctx: &Ctx) -> Result<Idle> {
    let mut p = Producer::<BenchRecord>::new(ring_config())?;
    let fds = p.attach_remote(Policy::Lossless)?;
    let mut child =
        ChildProc::spawn(ChildArgs::new(Role::RingIdle, 64, ctx.cores.reader).spin(DEFAULT_SPIN))?;
    send_reader(child.sock.as_fd(), &fds).context("handing over the reader")?;
    drop(fds);
    child.expect_ready()?;
    std::thread::sleep(SETTLE);
    let reader0 = proc_voluntary_switches(child.pid())?;
    let own0 = voluntary_switches()?;
    let t = Instant::now();
    std::thread::sleep(ctx.idle_time);
    let secs = t.elapsed().as_secs_f64();
    let own1 = voluntary_switches()?;
    let reader1 = proc_voluntary_switches(child.pid())?;
    p.close();
    let got = child.report()?;
    child.finish()?;
    Ok(Idle {
        secs,
        producer_nvcsw: own1 - own0,
        reader_nvcsw: got.nvcsw,
        reader_window_nvcsw: reader1 - reader0,
    })
}

/// The idle reader (child side): reports its voluntary context switches from just before
/// it starts waiting until the ring closes.
///
/// # Errors
/// Any failure, or a record arriving on the idle ring.
pub fn idle_child(mut sock: UnixStream, args: &ChildArgs) -> Result<()> {
    let fds = recv_reader(sock.as_fd()).context("receiving the reader")?;
    let mut r = Reader::<BenchRecord>::open(fds)?;
    r.set_spin(args.spin);
    send_ready(&mut sock)?;
    let before = voluntary_switches()?;
    match r.recv(1) {
        Err(ReadError::Closed) => {}
        Ok(b) => bail!("idle reader got {} events", b.len()),
        Err(e) => return Err(e).context("waiting on the idle ring"),
    }
    let nvcsw = voluntary_switches()? - before;
    send_report(
        &mut sock,
        Report {
            tally: Tally::default(),
            end_ns: mono_ns(),
            nvcsw,
            cpu_ns: 0,
        },
    )
}
