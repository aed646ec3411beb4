//! Paced and stamped cases, ring against the Unix socket:
//!
//! - [`latency`]: one-way latency. The producer puts CLOCK_MONOTONIC (one clock for every
//!   process here) in each record's `seq` field ([`Pool::stamped_into`]); the reader checks
//!   the record and takes `now - stamp`. At a fixed rate each record is one publish (one
//!   ring commit, one socket write) at its due time; at saturation the producer batches as
//!   in the throughput cases.
//! - [`cpu`]: CPU time of both processes (getrusage, user + system) per delivered record
//!   at a fixed rate. Ring and socket are paced identically: a 1 ms absolute
//!   `clock_nanosleep` tick, the records due sent as one ring commit or one socket write.
//!   Readers poll once per 16 ms frame or sleep until woken. The same loop handing records
//!   off in-process ([`Transport::InProcess`]) is what the IPC costs are measured against.
//!   With several readers this is the fan-out case.

use std::io::{BufWriter, ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use firehose_transport::handoff::{recv_reader, send_reader};
use firehose_transport::ring::{Event, Policy, Producer, ReadError, Reader};
use hdrhistogram::Histogram;
use rkyv::util::AlignedVec;

use crate::cases::{Ctx, ReaderMode, Transport, PACED_PAYLOAD};
use crate::child::{send_ready, send_report, send_words, ChildArgs, ChildProc, Report, Role};
use crate::frames::{frame_len, write_frame, write_full, FrameReader, BUF_BYTES, FRAME_HEADER};
use crate::measure::{Cpu, Latency};
use crate::os::{mono_ns, process_cpu_ns, sleep_until};
use crate::payload::{access_index, BenchRecord, Checker, Pool, StampChecker, Tally};
use crate::ring_case::{check_batch, commit, recv_max, ring_config, stage, SPIN_LONG};
use crate::stats::{latency_histogram, Percentiles};
use crate::stream_case::{Ends, StreamKind};

/// The producer's tick.
const TICK_NS: u64 = 1_000_000;
/// A frame-polling reader's period (a 60 Hz GUI frame).
const FRAME_NS: u64 = 16_000_000;
/// A socket's send buffer in the paced cases: as large as the ring (4 MiB), so that a
/// reader that looks once per frame does not block the producer.
const SOCKET_BUFFER: usize = 4 << 20;

/// Records sent before the timed part of a paced or stamped run: one lap of the 4 MiB ring,
/// so that the timed part meets no first-touch page faults (of the ring's pages in either
/// process, or of a socket's buffers); readers check them but do not count them.
pub fn warm_records(payload: usize) -> u64 {
    ((4usize << 20) / frame_len(payload)) as u64
}

/// How long the producer pauses after the warm-up lap, for the readers to drain it.
const WARM_PAUSE: Duration = Duration::from_millis(60);

/// The words a stamped reader sends after its report.
fn percentile_words(h: &Histogram<u64>) -> [u64; 5] {
    let p = Percentiles::of(h);
    [p.p50, p.p99, p.p999, p.max, p.samples]
}

fn percentiles_from(w: [u64; 5]) -> Percentiles {
    Percentiles {
        p50: w[0],
        p99: w[1],
        p999: w[2],
        max: w[3],
        samples: w[4],
    }
}

/// What a reader of stamped records `0..n` of `pool` must report.
fn stamped_tally(pool: &Pool, n: u64) -> Tally {
    let mut t = Tally::default();
    for i in 0..n {
        t.add_sent(pool.data_sum(i));
    }
    t
}

/// Publishes stamped records for `time`: at `rate`, one record per `emit(.., true)` at its
/// due time (spinning until then); at saturation (`rate` 0) as fast as `emit` takes them,
/// flushing only when the batch is full. Returns how many and over how long.
fn stamped_loop(
    pool: &Pool,
    rate: u32,
    time: Duration,
    mut emit: impl FnMut(&[u8], u64, bool) -> Result<()>,
) -> Result<(u64, f64)> {
    let mut buf = AlignedVec::new();
    let warm = warm_records(pool.size());
    for i in 0..warm {
        pool.stamped_into(i, mono_ns(), &mut buf);
        emit(&buf, i, i + 1 == warm)?;
    }
    std::thread::sleep(WARM_PAUSE);
    let t0 = Instant::now();
    let mut i = warm;
    loop {
        let el = t0.elapsed();
        if el >= time {
            break;
        }
        if rate > 0 {
            let due = Duration::from_nanos((i - warm) * 1_000_000_000 / u64::from(rate));
            if el < due {
                std::hint::spin_loop();
                continue;
            }
            pool.stamped_into(i, mono_ns(), &mut buf);
            emit(&buf, i, true)?;
            i += 1;
        } else {
            for _ in 0..64 {
                pool.stamped_into(i, mono_ns(), &mut buf);
                emit(&buf, i, false)?;
                i += 1;
            }
        }
    }
    Ok((i, t0.elapsed().as_secs_f64()))
}

/// One latency run of the ring or the socket.
///
/// # Errors
/// Any failure, and a reader whose count or data checksum is not what was sent.
pub fn latency(
    transport: Transport,
    payload: usize,
    rate: u32,
    mode: ReaderMode,
    ctx: &Ctx,
) -> Result<Latency> {
    let pool = Pool::new(payload)?;
    let (sent, secs, mut child) = match transport {
        Transport::RingLossless => {
            let mut p = Producer::<BenchRecord>::new(ring_config())?;
            let fds = p.attach_remote(Policy::Lossless)?;
            let spin = if mode == ReaderMode::Spin {
                SPIN_LONG
            } else {
                0
            };
            let mut child = ChildProc::spawn(
                ChildArgs::new(Role::RingStamped, payload, ctx.cores.reader)
                    .spin(spin)
                    .mode(mode),
            )?;
            send_reader(child.sock.as_fd(), &fds).context("handing over the reader")?;
            drop(fds);
            child.expect_ready()?;
            let (n, secs) = stamped_loop(&pool, rate, ctx.latency_time, |b, _, flush| {
                stage(&mut p, b)?;
                if flush {
                    commit(&mut p)?;
                }
                Ok(())
            })?;
            commit(&mut p)?;
            p.close();
            (n, secs, child)
        }
        Transport::Uds => {
            let mut child = ChildProc::spawn(
                ChildArgs::new(Role::StreamStamped, payload, ctx.cores.reader).mode(mode),
            )?;
            let ends = Ends::parent(StreamKind::Uds, &child)?;
            child.expect_ready()?;
            let (n, secs) = {
                let mut w = BufWriter::with_capacity(BUF_BYTES, &ends.tx);
                let r = stamped_loop(&pool, rate, ctx.latency_time, |b, i, flush| {
                    write_frame(&mut w, i, b)?;
                    if flush {
                        w.flush()?;
                    }
                    Ok(())
                })?;
                w.flush()?;
                r
            };
            drop(ends.close_tx(StreamKind::Uds, &child)?);
            (n, secs, child)
        }
        t => bail!("no latency case for {}", t.name()),
    };
    let got = child.report()?;
    let p = percentiles_from(child.words::<5>()?);
    child.finish()?;
    let want = stamped_tally(&pool, sent);
    ensure!(
        got.tally == want,
        "stamped reader got {:?}; sent {:?}",
        got.tally,
        want
    );
    Ok(Latency {
        p,
        records: got.tally.count - warm_records(payload),
        secs,
    })
}

/// The stamped ring reader (child side).
///
/// # Errors
/// Any read or check failure.
pub fn ring_stamped_child(mut sock: UnixStream, args: &crate::child::ChildArgs) -> Result<()> {
    let fds = recv_reader(sock.as_fd()).context("receiving the reader")?;
    let first = fds.start_seq();
    let mut r = Reader::<BenchRecord>::open(fds)?;
    r.set_spin(args.spin);
    let mut chk = StampChecker::new(args.payload)?;
    let mut hist = latency_histogram();
    let max = recv_max(args.payload);
    let warm = warm_records(args.payload);
    send_ready(&mut sock)?;
    loop {
        let batch = match r.recv(max) {
            Ok(b) => b,
            Err(ReadError::Closed) => break,
            Err(e) => return Err(e).context("reading the ring"),
        };
        for ev in &batch {
            match ev {
                Event::Record(rec) => {
                    let t = chk.record(rec.seq() - first, rec.bytes())?;
                    if rec.seq() - first >= warm {
                        hist.record(mono_ns().saturating_sub(t))?;
                    }
                }
                other => bail!("unexpected {other:?} on a lossless ring"),
            }
        }
    }
    send_report(
        &mut sock,
        Report {
            tally: chk.tally,
            end_ns: mono_ns(),
            nvcsw: 0,
            cpu_ns: 0,
        },
    )?;
    send_words(&mut sock, &percentile_words(&hist)).context("sending percentiles")
}

/// The stamped stream reader (child side): spins on non-blocking reads or blocks.
///
/// # Errors
/// Any read or check failure.
pub fn stream_stamped_child(mut sock: UnixStream, args: &crate::child::ChildArgs) -> Result<()> {
    let mut ends = Ends::child(args.stream, &sock)?;
    let mut fr = FrameReader::new(args.payload);
    let mut chk = StampChecker::new(args.payload)?;
    let mut hist = latency_histogram();
    let warm = warm_records(args.payload);
    send_ready(&mut sock)?;
    ends.set_nonblocking(args.mode == ReaderMode::Spin)?;
    loop {
        while let Some((seq, bytes)) = fr.next_frame()? {
            let t = chk.record(seq, bytes)?;
            if seq >= warm {
                hist.record(mono_ns().saturating_sub(t))?;
            }
        }
        match fr.fill(&mut ends.rx) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e).context("reading the stream"),
        }
    }
    ends.set_nonblocking(false)?;
    drop(ends);
    send_report(
        &mut sock,
        Report {
            tally: chk.tally,
            end_ns: mono_ns(),
            nvcsw: 0,
            cpu_ns: 0,
        },
    )?;
    send_words(&mut sock, &percentile_words(&hist)).context("sending percentiles")
}

/// Runs the producer's tick loop for `time`: every 1 ms (absolute clock_nanosleep) hands
/// `on_tick(from, to)` the records due since the last tick. Returns records and seconds.
fn tick_loop(
    rate: u32,
    time: Duration,
    offset: u64,
    mut on_tick: impl FnMut(u64, u64) -> Result<()>,
) -> Result<(u64, f64)> {
    let start = mono_ns();
    let time = time.as_nanos() as u64;
    let mut next = start;
    let mut sent = 0u64;
    loop {
        next += TICK_NS;
        sleep_until(next);
        let el = mono_ns() - start;
        if el >= time {
            break;
        }
        let due = el * u64::from(rate) / 1_000_000_000;
        if due > sent {
            on_tick(offset + sent, offset + due)?;
            sent = due;
        }
    }
    Ok((sent, (mono_ns() - start) as f64 / 1e9))
}

/// One paced run: `readers` reader processes of `transport` (the ring: lossless readers;
/// the socket: one socket each) at `rate`, or the in-process loop. Records are
/// [`PACED_PAYLOAD`] bytes.
///
/// # Errors
/// Any failure, and a reader whose count or checksum is not what was sent.
pub fn cpu(
    transport: Transport,
    rate: u32,
    readers: u32,
    mode: ReaderMode,
    ctx: &Ctx,
) -> Result<Cpu> {
    let payload = PACED_PAYLOAD;
    let pool = Pool::new(payload)?;
    let time = ctx.cpu_time;
    let warm = warm_records(payload);
    let mut children = Vec::new();
    let (sent, secs, producer_cpu_ns) = match transport {
        Transport::InProcess => return in_process(&pool, rate, mode, time),
        Transport::RingLossless => {
            let mut p = Producer::<BenchRecord>::new(ring_config())?;
            for _ in 0..readers {
                let fds = p.attach_remote(Policy::Lossless)?;
                let child = ChildProc::spawn(
                    ChildArgs::new(Role::RingPaced, payload, ctx.cores.reader)
                        .spin(0)
                        .mode(mode),
                )?;
                send_reader(child.sock.as_fd(), &fds).context("handing over the reader")?;
                children.push(child);
            }
            for c in &mut children {
                c.expect_ready()?;
            }
            for i in 0..warm {
                stage(&mut p, pool.bytes(i))?;
            }
            commit(&mut p)?;
            std::thread::sleep(WARM_PAUSE);
            let cpu0 = process_cpu_ns()?;
            let (n, secs) = tick_loop(rate, time, warm, |from, to| {
                for i in from..to {
                    stage(&mut p, pool.bytes(i))?;
                }
                commit(&mut p)
            })?;
            let cpu = process_cpu_ns()? - cpu0;
            p.close();
            (n, secs, cpu)
        }
        Transport::Uds => {
            let mut ends = Vec::new();
            for _ in 0..readers {
                let mut child = ChildProc::spawn(
                    ChildArgs::new(Role::StreamPaced, payload, ctx.cores.reader).mode(mode),
                )?;
                let _ = nix::sys::socket::setsockopt(
                    &child.sock,
                    nix::sys::socket::sockopt::SndBufForce,
                    &SOCKET_BUFFER,
                );
                ends.push(Ends::parent(StreamKind::Uds, &child)?);
                child.expect_ready()?;
                children.push(child);
            }
            let mut buf = Vec::with_capacity(1 << 20);
            for i in 0..warm {
                write_frame(&mut buf, i, pool.bytes(i))?;
                if buf.len() >= BUF_BYTES || i + 1 == warm {
                    for e in &mut ends {
                        write_full(&mut e.tx, &buf).context("writing the stream")?;
                    }
                    buf.clear();
                }
            }
            std::thread::sleep(WARM_PAUSE);
            let cpu0 = process_cpu_ns()?;
            let (n, secs) = tick_loop(rate, time, warm, |from, to| {
                buf.clear();
                for i in from..to {
                    write_frame(&mut buf, i, pool.bytes(i))?;
                }
                for e in &mut ends {
                    write_full(&mut e.tx, &buf).context("writing the stream")?;
                }
                Ok(())
            })?;
            let cpu = process_cpu_ns()? - cpu0;
            for (e, c) in ends.into_iter().zip(&children) {
                drop(e.close_tx(StreamKind::Uds, c)?);
            }
            (n, secs, cpu)
        }
        t => bail!("no paced case for {}", t.name()),
    };
    let want = Tally::of_stream(&pool, warm + sent);
    let mut reader_cpu_ns = 0;
    for mut c in children {
        let got = c.report()?;
        c.finish()?;
        ensure!(
            got.tally == want,
            "paced reader got {:?}; sent {:?}",
            got.tally,
            want
        );
        reader_cpu_ns += got.cpu_ns;
    }
    Ok(Cpu {
        readers,
        records: sent,
        secs,
        producer_cpu_ns,
        reader_cpu_ns,
    })
}

/// The paced loop with the hand-off in-process: each tick's records are staged as frames
/// into a buffer (as a producer stages them), and checked as a reader would, every frame
/// (`Frame`) or right away (`Sleep`).
fn in_process(pool: &Pool, rate: u32, mode: ReaderMode, time: Duration) -> Result<Cpu> {
    let mut chk = Checker::new(pool.size())?;
    let mut staged = AlignedVec::<16>::with_capacity(1 << 20);
    let mut next_frame = mono_ns() + FRAME_NS;
    let cpu0 = process_cpu_ns()?;
    let (n, secs) = tick_loop(rate, time, 0, |from, to| {
        for i in from..to {
            write_frame(&mut staged, i, pool.bytes(i))?;
        }
        let now = mono_ns();
        if mode != ReaderMode::Frame || now >= next_frame {
            next_frame += FRAME_NS * ((now.saturating_sub(next_frame)) / FRAME_NS + 1);
            check_frames(&staged, &mut chk)?;
            staged.clear();
        }
        Ok(())
    })?;
    check_frames(&staged, &mut chk)?;
    let cpu = process_cpu_ns()? - cpu0;
    ensure!(
        chk.tally == Tally::of_stream(pool, n),
        "in-process check failed"
    );
    Ok(Cpu {
        readers: 0,
        records: n,
        secs,
        producer_cpu_ns: cpu,
        reader_cpu_ns: 0,
    })
}

/// Checks every frame of a buffer of whole frames.
fn check_frames(buf: &[u8], chk: &mut Checker) -> Result<()> {
    let mut off = 0;
    while off + FRAME_HEADER <= buf.len() {
        let len = u64::from_le_bytes(buf[off..off + 8].try_into()?) as usize;
        let seq = u64::from_le_bytes(buf[off + 8..off + 16].try_into()?);
        let p = &buf[off + FRAME_HEADER..off + FRAME_HEADER + len];
        chk.record(seq, access_index(p)?, p)?;
        off += frame_len(len);
    }
    Ok(())
}

/// The paced ring reader (child side): once per frame it takes everything there is, or
/// it sleeps on its wake pipe (spin budget 0). Reports its process's CPU time.
///
/// # Errors
/// Any read or check failure.
pub fn ring_paced_child(mut sock: UnixStream, args: &crate::child::ChildArgs) -> Result<()> {
    let fds = recv_reader(sock.as_fd()).context("receiving the reader")?;
    let first = fds.start_seq();
    let mut r = Reader::<BenchRecord>::open(fds)?;
    r.set_spin(0);
    let mut chk = Checker::new(args.payload)?;
    let max = recv_max(args.payload);
    send_ready(&mut sock)?;
    let warm = warm_records(args.payload);
    let mut cpu0 = None;
    let mut next = mono_ns();
    'outer: loop {
        if cpu0.is_none() && chk.tally.count >= warm {
            cpu0 = Some(process_cpu_ns()?);
        }
        if args.mode == ReaderMode::Frame {
            next += FRAME_NS;
            sleep_until(next);
            loop {
                match r.try_recv(max) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => check_batch(&b, first, &mut chk)?,
                    Err(ReadError::Closed) => break 'outer,
                    Err(e) => return Err(e).context("reading the ring"),
                }
            }
        } else {
            match r.recv(max) {
                Ok(b) => check_batch(&b, first, &mut chk)?,
                Err(ReadError::Closed) => break,
                Err(e) => return Err(e).context("reading the ring"),
            }
        }
    }
    let cpu_ns = process_cpu_ns()? - cpu0.context("the stream ended in the warm-up")?;
    send_report(
        &mut sock,
        Report {
            tally: chk.tally,
            end_ns: mono_ns(),
            nvcsw: 0,
            cpu_ns,
        },
    )
}

/// The paced stream reader (child side): once per frame it reads until the socket is
/// empty (non-blocking), or it blocks in `read`. Reports its process's CPU time.
///
/// # Errors
/// Any read or check failure.
pub fn stream_paced_child(mut sock: UnixStream, args: &crate::child::ChildArgs) -> Result<()> {
    let mut ends = Ends::child(args.stream, &sock)?;
    let mut fr = FrameReader::new(args.payload);
    let mut chk = Checker::new(args.payload)?;
    send_ready(&mut sock)?;
    let frame = args.mode == ReaderMode::Frame;
    ends.set_nonblocking(frame)?;
    let warm = warm_records(args.payload);
    let mut cpu0 = None;
    let mut next = mono_ns();
    'outer: loop {
        if cpu0.is_none() && chk.tally.count >= warm {
            cpu0 = Some(process_cpu_ns()?);
        }
        if frame {
            next += FRAME_NS;
            sleep_until(next);
        }
        loop {
            while let Some((seq, bytes)) = fr.next_frame()? {
                chk.record(seq, access_index(bytes)?, bytes)?;
            }
            if cpu0.is_none() && chk.tally.count >= warm {
                cpu0 = Some(process_cpu_ns()?);
            }
            match fr.fill(&mut ends.rx) {
                Ok(true) => {}
                Ok(false) => break 'outer,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("reading the stream"),
            }
        }
    }
    let cpu_ns = process_cpu_ns()? - cpu0.context("the stream ended in the warm-up")?;
    ensure!(fr.is_empty(), "the stream ended inside a frame");
    ends.set_nonblocking(false)?;
    drop(ends);
    send_report(
        &mut sock,
        Report {
            tally: chk.tally,
            end_ns: mono_ns(),
            nvcsw: 0,
            cpu_ns,
        },
    )
}
