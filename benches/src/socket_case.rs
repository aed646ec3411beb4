//! The baseline: a Unix stream socket between the same two processes, batched the same
//! way (64 KiB buffered writes and reads), carrying the same payloads in frames that keep
//! them 16-byte aligned for rkyv, and read with the same validation and checksum.
//!
//! A frame is a 16-byte header (payload length, seq; little-endian u64s) and the payload,
//! zero-padded to a multiple of 16.

use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use rkyv::util::AlignedVec;

use crate::cases::{Ctx, ReaderMode};
use crate::child::{send_ready, send_report, ChildArgs, ChildProc, Report, Role};
use crate::measure::Throughput;
use crate::os::{mono_ns, thread_cpu_ns};
use crate::payload::{access_index, Checker, Pool, Tally};
use crate::ring_case::ended_after;
use crate::stats::{latency_histogram, Percentiles};

/// Bytes before each payload.
pub const FRAME_HEADER: usize = 16;
/// Payloads start at multiples of this (in a buffer aligned to it).
pub const FRAME_ALIGN: usize = 16;
/// The write buffer and the read size.
pub const BUF_BYTES: usize = 64 << 10;
/// Records written between two looks at the clock.
const CHECK_EVERY: u64 = 256;

/// Bytes a frame of `payload` bytes takes.
pub const fn frame_len(payload: usize) -> usize {
    FRAME_HEADER + payload.next_multiple_of(FRAME_ALIGN)
}

/// Writes one frame.
///
/// # Errors
/// The writer's error.
#[inline]
pub fn write_frame(w: &mut impl Write, seq: u64, payload: &[u8]) -> io::Result<()> {
    const ZEROS: [u8; FRAME_ALIGN] = [0; FRAME_ALIGN];
    let mut h = [0u8; FRAME_HEADER];
    h[..8].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[8..].copy_from_slice(&seq.to_le_bytes());
    w.write_all(&h)?;
    w.write_all(payload)?;
    w.write_all(&ZEROS[..payload.len().next_multiple_of(FRAME_ALIGN) - payload.len()])
}

/// A buffered frame reader: reads up to 64 KiB at a time into an aligned buffer and hands
/// out whole frames in place.
#[derive(Debug)]
pub struct FrameReader {
    buf: AlignedVec<FRAME_ALIGN>,
    start: usize,
    end: usize,
    max_payload: usize,
}

impl FrameReader {
    /// A reader of frames whose payloads are at most `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        let mut buf = AlignedVec::with_capacity(BUF_BYTES + frame_len(max_payload));
        buf.resize(BUF_BYTES + frame_len(max_payload), 0);
        FrameReader {
            buf,
            start: 0,
            end: 0,
            max_payload,
        }
    }

    /// Moves the partial frame left over to the front and reads what the socket has (one
    /// `read`, at least 64 KiB of room). Returns false at end of stream.
    ///
    /// # Errors
    /// The read's error (`WouldBlock` for a non-blocking socket with nothing to read).
    pub fn fill(&mut self, src: &mut impl Read) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match src.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next whole frame in the buffer: its seq and payload (exactly the payload, no
    /// padding, 16-byte aligned).
    ///
    /// # Errors
    /// A header whose length is over the maximum.
    #[inline]
    pub fn next_frame(&mut self) -> Result<Option<(u64, &[u8])>> {
        let have = self.end - self.start;
        if have < FRAME_HEADER {
            return Ok(None);
        }
        let h = &self.buf[self.start..self.start + FRAME_HEADER];
        let len = u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) as usize;
        let seq = u64::from_le_bytes(h[8..].try_into().expect("8 bytes"));
        ensure!(
            len <= self.max_payload,
            "frame of {len} bytes, over {}",
            self.max_payload
        );
        let flen = frame_len(len);
        if have < flen {
            return Ok(None);
        }
        let p = self.start + FRAME_HEADER;
        self.start += flen;
        Ok(Some((seq, &self.buf[p..p + len])))
    }

    /// True if no partial frame is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One throughput run: the parent writes frames for `ctx.throughput_time` through a 64 KiB
/// buffer, the child reads, validates and checksums every one.
///
/// # Errors
/// Any failure, and a reader whose count or checksum is not what was sent.
pub fn throughput(payload: usize, ctx: &Ctx) -> Result<Throughput> {
    let pool = Pool::new(payload)?;
    let mut child = ChildProc::spawn(Role::UdsReader, payload, 0, ctx.cores.reader)?;
    child.expect_ready()?;
    let mut sent = Tally::default();
    let cpu0 = thread_cpu_ns();
    let start = mono_ns();
    let t0 = Instant::now();
    {
        let mut w = BufWriter::with_capacity(BUF_BYTES, &child.sock);
        let mut i = 0u64;
        while t0.elapsed() < ctx.throughput_time {
            for _ in 0..CHECK_EVERY {
                write_frame(&mut w, i, pool.bytes(i)).context("writing to the socket")?;
                sent.add_sent(pool.sum(i));
                i += 1;
            }
        }
        w.flush().context("flushing the socket")?;
    }
    child.sock.shutdown(Shutdown::Write)?;
    let producer_end = mono_ns();
    let producer_cpu_ns = thread_cpu_ns() - cpu0;
    let got = ended_after(child.report()?, start)?;
    child.finish()?;
    ensure!(
        got.tally == sent,
        "socket reader got {:?}; sent {:?}",
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
    })
}

/// The throughput reader (child side).
///
/// # Errors
/// Any read, validation or checksum failure, or a stream that ends inside a frame.
pub fn reader_child(mut sock: UnixStream, args: &ChildArgs) -> Result<()> {
    let mut fr = FrameReader::new(args.payload);
    let mut chk = Checker::new(args.payload)?;
    send_ready(&mut sock)?;
    let cpu0 = thread_cpu_ns();
    loop {
        while let Some((seq, bytes)) = fr.next_frame()? {
            chk.record(seq, access_index(bytes)?, bytes)?;
        }
        if !fr.fill(&mut sock).context("reading the socket")? {
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
            nvcsw: 0,
            cpu_ns: thread_cpu_ns() - cpu0,
        },
    )
}

/// Reads exactly `buf.len()` bytes, spinning on `WouldBlock` (non-blocking sockets).
/// Returns false on end of stream before the first byte.
fn read_full(sock: &mut UnixStream, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match sock.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes all of `buf`, spinning on `WouldBlock` (non-blocking sockets).
fn write_full(sock: &mut UnixStream, buf: &[u8]) -> io::Result<()> {
    let mut put = 0;
    while put < buf.len() {
        match sock.write(&buf[put..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => put += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Builds frame `seq` of `pool` into `out`.
fn build_frame(out: &mut AlignedVec<FRAME_ALIGN>, pool: &Pool, seq: u64) {
    out.clear();
    write_frame(out, seq, pool.bytes(seq)).expect("writing to memory");
}

/// Reads one frame of `payload` bytes into `buf` and checks it. Returns false at end of
/// stream.
fn read_checked(
    sock: &mut UnixStream,
    buf: &mut AlignedVec<FRAME_ALIGN>,
    chk: &mut Checker,
) -> Result<bool> {
    if !read_full(sock, buf)? {
        return Ok(false);
    }
    let len = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
    let seq = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    ensure!(
        frame_len(len) == buf.len(),
        "frame of {len} bytes in a {}-byte slot",
        buf.len()
    );
    let bytes = &buf[FRAME_HEADER..FRAME_HEADER + len];
    chk.record(seq, access_index(bytes)?, bytes)?;
    Ok(true)
}

fn frame_buf(payload: usize) -> AlignedVec<FRAME_ALIGN> {
    let mut b = AlignedVec::with_capacity(frame_len(payload));
    b.resize(frame_len(payload), 0);
    b
}

/// One round-trip run: one frame in flight; both sides block in `read`
/// ([`ReaderMode::Sleep`]) or spin on non-blocking reads ([`ReaderMode::Spin`]).
///
/// # Errors
/// Any failure, and answers that are not what was sent.
pub fn round_trip(payload: usize, mode: ReaderMode, ctx: &Ctx) -> Result<Percentiles> {
    let spin = mode == ReaderMode::Spin;
    let pool = Pool::new(payload)?;
    let mut child = ChildProc::spawn(Role::UdsEcho, payload, u32::from(spin), ctx.cores.reader)?;
    child.expect_ready()?;
    let mut chk = Checker::new(payload)?;
    let mut sent = Tally::default();
    let mut hist = latency_histogram();
    let mut out = AlignedVec::with_capacity(frame_len(payload));
    let mut inb = frame_buf(payload);
    child.sock.set_nonblocking(spin)?;

    let begin = Instant::now();
    let (warm_until, until) = (begin + ctx.warmup, begin + ctx.warmup + ctx.round_trip_time);
    let mut i = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= until {
            break;
        }
        build_frame(&mut out, &pool, i);
        write_full(&mut child.sock, &out).context("writing to the socket")?;
        sent.add_sent(pool.sum(i));
        ensure!(
            read_checked(&mut child.sock, &mut inb, &mut chk)?,
            "echo closed the socket"
        );
        let rtt = t0.elapsed();
        if t0 >= warm_until {
            hist.record(rtt.as_nanos() as u64)?;
        }
        i += 1;
    }
    child.sock.set_nonblocking(false)?;
    child.sock.shutdown(Shutdown::Write)?;
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

/// The echo (child side of the socket round trips): answers each frame with the same pool
/// entry; `--spin` non-zero: non-blocking reads in a loop.
///
/// # Errors
/// Any read, validation, checksum or write failure.
pub fn echo_child(mut sock: UnixStream, args: &ChildArgs) -> Result<()> {
    let mut chk = Checker::new(args.payload)?;
    let mut inb = frame_buf(args.payload);
    let mut out = AlignedVec::with_capacity(frame_len(args.payload));
    send_ready(&mut sock)?;
    sock.set_nonblocking(args.spin != 0)?;
    while read_checked(&mut sock, &mut inb, &mut chk)? {
        build_frame(&mut out, chk.pool(), chk.tally.count - 1);
        write_full(&mut sock, &out).context("answering")?;
    }
    sock.set_nonblocking(false)?;
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
