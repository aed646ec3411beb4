//! The byte-stream baselines: a Unix stream socket ([`StreamKind::Uds`]) or a pair of pipes
//! ([`StreamKind::Pipe`]) between the same two processes, batched the same way as the ring
//! (64 KiB buffered writes and reads), carrying the same payloads in 16-byte aligned
//! [frames](crate::frames), read with the same validation and checksum.
//!
//! The socket is the child's control socket itself; pipes are made by the parent and sent
//! over the control socket (the child's report always travels on the control socket).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use firehose_transport::fdpass::{recv_with_fds, send_with_fds};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use rkyv::util::AlignedVec;

use crate::cases::{Ctx, ReaderMode};
use crate::child::{send_ready, send_report, ChildArgs, ChildProc, Report, Role};
use crate::frames::{
    build_frame, frame_buf, frame_len, read_checked, write_frame, FrameReader, BUF_BYTES,
};
use crate::measure::Throughput;
use crate::os::{mono_ns, thread_cpu_ns, voluntary_switches};
use crate::payload::{access_index, Checker, Pool, Tally};
use crate::stats::{latency_histogram, Percentiles};

/// Records written between two looks at the clock.
const CHECK_EVERY: u64 = 256;
/// The message that carries a child's two pipe ends.
const PIPES: &[u8; 8] = b"FHBPIPES";

/// Which byte stream carries the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum StreamKind {
    /// A Unix stream socket (the control socketpair itself).
    Uds,
    /// Two pipes, one each way.
    Pipe,
}

/// One side's ends of a stream: where it writes, where it reads.
#[derive(Debug)]
pub(crate) struct Ends {
    pub(crate) tx: File,
    pub(crate) rx: File,
}

impl Ends {
    /// Both ends on one socket.
    fn socket(sock: &UnixStream) -> Result<Self> {
        let fd: OwnedFd = sock.try_clone()?.into();
        Ok(Ends {
            tx: File::from(fd.try_clone()?),
            rx: File::from(fd),
        })
    }

    /// The parent's ends, after handing the child its own.
    pub(crate) fn parent(kind: StreamKind, child: &ChildProc) -> Result<Self> {
        match kind {
            StreamKind::Uds => Self::socket(&child.sock),
            StreamKind::Pipe => {
                let (down_r, down_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                let (up_r, up_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                send_with_fds(child.sock.as_fd(), PIPES, &[down_r.as_fd(), up_w.as_fd()])
                    .context("sending the pipes")?;
                Ok(Ends {
                    tx: File::from(down_w),
                    rx: File::from(up_r),
                })
            }
        }
    }

    /// The child's ends.
    pub(crate) fn child(kind: StreamKind, sock: &UnixStream) -> Result<Self> {
        match kind {
            StreamKind::Uds => Self::socket(sock),
            StreamKind::Pipe => {
                let mut msg = [0u8; PIPES.len()];
                let (n, fds) = recv_with_fds(sock.as_fd(), &mut msg).context("receiving pipes")?;
                ensure!(
                    n == msg.len() && &msg == PIPES && fds.len() == 2,
                    "not pipes"
                );
                let mut fds = fds.into_iter();
                let rx = File::from(fds.next().expect("two fds"));
                let tx = File::from(fds.next().expect("two fds"));
                Ok(Ends { tx, rx })
            }
        }
    }

    /// Ends the parent's side of the stream: the child reads end of stream.
    pub(crate) fn close_tx(self, kind: StreamKind, child: &ChildProc) -> Result<File> {
        drop(self.tx);
        if kind == StreamKind::Uds {
            child.sock.shutdown(Shutdown::Write)?;
        }
        Ok(self.rx)
    }

    /// Both ends non-blocking (spinning) or blocking. Sockets share one open file
    /// description, so this also applies to the control socket.
    pub(crate) fn set_nonblocking(&self, on: bool) -> Result<()> {
        for f in [&self.tx, &self.rx] {
            let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL)?);
            let flags = if on {
                flags | OFlag::O_NONBLOCK
            } else {
                flags & !OFlag::O_NONBLOCK
            };
            fcntl(f, FcntlArg::F_SETFL(flags))?;
        }
        Ok(())
    }
}

/// One throughput run: the parent writes frames for `ctx.throughput_time` through a 64 KiB
/// buffer, the child reads, validates and checksums every one.
///
/// # Errors
/// Any failure, and a reader whose count or checksum is not what was sent.
pub fn throughput(kind: StreamKind, payload: usize, ctx: &Ctx) -> Result<Throughput> {
    let pool = Pool::new(payload)?;
    let mut child = ChildProc::spawn(
        ChildArgs::new(Role::StreamReader, payload, ctx.cores.reader).stream(kind),
    )?;
    let ends = Ends::parent(kind, &child)?;
    child.expect_ready()?;
    let cpu0 = thread_cpu_ns();
    let sleeps0 = voluntary_switches()?;
    let start = mono_ns();
    let t0 = Instant::now();
    let mut i = 0u64;
    {
        let mut w = BufWriter::with_capacity(BUF_BYTES, &ends.tx);
        while t0.elapsed() < ctx.throughput_time {
            for _ in 0..CHECK_EVERY {
                write_frame(&mut w, i, pool.bytes(i)).context("writing the stream")?;
                i += 1;
            }
        }
        w.flush().context("flushing the stream")?;
    }
    drop(ends.close_tx(kind, &child)?);
    let producer_end = mono_ns();
    let producer_cpu_ns = thread_cpu_ns() - cpu0;
    let producer_sleeps = voluntary_switches()? - sleeps0;
    let got = child.report()?.ended_after(start)?;
    child.finish()?;
    let sent = Tally::of_stream(&pool, i);
    ensure!(
        got.tally == sent,
        "stream reader got {:?}; sent {:?}",
        got.tally,
        sent
    );
    Ok(Throughput {
        payload,
        records: got.tally.count,
        secs: (got.end_ns - start) as f64 / 1e9,
        produced: sent.count,
        producer_secs: (producer_end - start) as f64 / 1e9,
        lost: 0,
        producer_cpu_ns,
        reader_cpu_ns: got.cpu_ns,
        producer_sleeps,
        reader_sleeps: got.nvcsw,
    })
}

/// The throughput reader (child side).
///
/// # Errors
/// Any read, validation or checksum failure, or a stream that ends inside a frame.
pub fn reader_child(mut sock: UnixStream, args: &ChildArgs) -> Result<()> {
    let mut ends = Ends::child(args.stream, &sock)?;
    let mut fr = FrameReader::new(args.payload);
    let mut chk = Checker::new(args.payload)?;
    send_ready(&mut sock)?;
    let cpu0 = thread_cpu_ns();
    let sleeps0 = voluntary_switches()?;
    loop {
        while let Some((seq, bytes)) = fr.next_frame()? {
            chk.record(seq, access_index(bytes)?, bytes)?;
        }
        if !fr.fill(&mut ends.rx).context("reading the stream")? {
            break;
        }
    }
    let end_ns = mono_ns();
    ensure!(fr.is_empty(), "the stream ended inside a frame");
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

/// One round-trip run: one frame in flight; both sides block in `read`
/// ([`ReaderMode::Sleep`]) or spin on non-blocking reads ([`ReaderMode::Spin`]).
///
/// # Errors
/// Any failure, and answers that are not what was sent.
pub fn round_trip(
    kind: StreamKind,
    payload: usize,
    mode: ReaderMode,
    ctx: &Ctx,
) -> Result<Percentiles> {
    let spin = mode == ReaderMode::Spin;
    let pool = Pool::new(payload)?;
    let mut child = ChildProc::spawn(
        ChildArgs::new(Role::StreamEcho, payload, ctx.cores.reader)
            .spin(u32::from(spin))
            .stream(kind),
    )?;
    let mut ends = Ends::parent(kind, &child)?;
    child.expect_ready()?;
    let mut chk = Checker::new(payload)?;
    let mut sent = Tally::default();
    let mut hist = latency_histogram();
    let mut out = AlignedVec::with_capacity(frame_len(payload));
    let mut inb = frame_buf(payload);
    ends.set_nonblocking(spin)?;

    let begin = Instant::now();
    let (warm_until, until) = (begin + ctx.warmup, begin + ctx.warmup + ctx.round_trip_time);
    let mut i = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= until {
            break;
        }
        build_frame(&mut out, &pool, i);
        crate::frames::write_full(&mut ends.tx, &out).context("writing the stream")?;
        sent.add_sent(pool.sum(i));
        ensure!(
            read_checked(&mut ends.rx, &mut inb, &mut chk)?,
            "echo closed the stream"
        );
        let rtt = t0.elapsed();
        if t0 >= warm_until {
            hist.record(rtt.as_nanos() as u64)?;
        }
        i += 1;
    }
    ends.set_nonblocking(false)?;
    drop(ends.close_tx(kind, &child)?);
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

/// The echo (child side of the stream round trips): answers each frame with the same pool
/// entry; `--spin` non-zero: non-blocking reads and writes in a loop.
///
/// # Errors
/// Any read, validation, checksum or write failure.
pub fn echo_child(mut sock: UnixStream, args: &ChildArgs) -> Result<()> {
    let mut ends = Ends::child(args.stream, &sock)?;
    let mut chk = Checker::new(args.payload)?;
    let mut inb = frame_buf(args.payload);
    let mut out = AlignedVec::with_capacity(frame_len(args.payload));
    send_ready(&mut sock)?;
    ends.set_nonblocking(args.spin != 0)?;
    while read_checked(&mut ends.rx, &mut inb, &mut chk)? {
        build_frame(&mut out, chk.pool(), chk.tally.count - 1);
        crate::frames::write_full(&mut ends.tx, &out).context("answering")?;
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
    sock.flush()?;
    Ok(())
}
