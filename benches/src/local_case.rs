//! Baselines with nothing of Firehose in them:
//!
//! - [`crossbeam`]: a crossbeam bounded channel between two threads of this process (pinned
//!   to the two cores), carrying 64 KiB buffers of the socket's frames (batched as the ring
//!   and the socket are), 64 of them in flight at most (4 MiB, the ring's size); the reader
//!   validates and checksums every record, as every reader here does;
//! - [`hand_ring`]: a bare ring of the ring's size in a memfd shared with a child process:
//!   the producer memcpys records in and stores its write cursor once per 64 KiB batch; the
//!   reader sums the u64 words of up to 256 KiB at a time and stores its read cursor. No
//!   headers, no validation: what the ring would be with nothing of ours in it;
//! - [`memcpy`]: one thread copying blocks of 4 KiB (in cache) or 1 MiB: the physical
//!   ceiling, reported only.

use std::hint::black_box;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use firehose_transport::fdpass::{recv_with_fds, send_with_fds};
use memmap2::MmapMut;
use rkyv::util::AlignedVec;

use crate::cases::Ctx;
use crate::child::{send_ready, send_report, ChildArgs, ChildProc, Report, Role};
use crate::frames::{frame_len, write_frame, FRAME_HEADER};
use crate::measure::Throughput;
use crate::os::{mono_ns, pin_to_core, thread_cpu_ns};
use crate::payload::{access_index, Checker, Pool, Tally, POOL_LEN};

/// Bytes of frames per channel message and per hand-ring batch.
const BATCH: usize = 64 << 10;
/// Buffers in flight on the channel (64 x 64 KiB = the ring's 4 MiB).
const IN_FLIGHT: usize = 64;
/// The hand ring's data area: the Firehose ring's default capacity.
const HAND_CAP: usize = 4 << 20;
/// The hand ring's header: write cursor, read cursor, closed flag, each on its own 128-byte
/// pair of cache lines.
const HAND_HEADER: usize = 4096;
/// Most bytes the hand-ring reader sums before it stores its cursor (as the ring readers
/// take at most 256 KiB per call).
const HAND_READ: usize = 256 << 10;
const WRITE_AT: usize = 0;
const READ_AT: usize = 128;
const CLOSED_AT: usize = 256;

/// One crossbeam run.
///
/// # Errors
/// A thread that fails or panics, or a reader whose count or checksum is not what was sent.
pub fn crossbeam(payload: usize, ctx: &Ctx) -> Result<Throughput> {
    let pool = Pool::new(payload)?;
    let (tx, rx) = crossbeam_channel::bounded::<AlignedVec<16>>(IN_FLIGHT);
    let (back_tx, back_rx) = crossbeam_channel::bounded::<AlignedVec<16>>(IN_FLIGHT + 2);
    for _ in 0..IN_FLIGHT + 2 {
        back_tx
            .send(AlignedVec::with_capacity(BATCH + frame_len(payload)))
            .expect("room for every buffer");
    }
    let core = ctx.cores.reader;
    std::thread::scope(|s| -> Result<Throughput> {
        let reader = s.spawn(move || -> Result<(Tally, u64, u64)> {
            pin_to_core(core)?;
            let mut chk = Checker::new(payload)?;
            let cpu0 = thread_cpu_ns();
            for buf in rx {
                let mut off = 0;
                while off + FRAME_HEADER <= buf.len() {
                    let len = u64::from_le_bytes(buf[off..off + 8].try_into()?) as usize;
                    let seq = u64::from_le_bytes(buf[off + 8..off + 16].try_into()?);
                    let p = &buf[off + FRAME_HEADER..off + FRAME_HEADER + len];
                    chk.record(seq, access_index(p)?, p)?;
                    off += frame_len(len);
                }
                // The producer may have finished: then nobody takes buffers back.
                let _ = back_tx.send(buf);
            }
            Ok((chk.tally, mono_ns(), thread_cpu_ns() - cpu0))
        });
        let cpu0 = thread_cpu_ns();
        let start = mono_ns();
        let t0 = Instant::now();
        let mut i = 0u64;
        let flen = frame_len(payload);
        let mut buf = back_rx.recv().context("a free buffer")?;
        buf.clear();
        while t0.elapsed() < ctx.throughput_time {
            for _ in 0..256 {
                if buf.len() + flen > BATCH {
                    tx.send(buf).map_err(|_| anyhow!("the reader hung up"))?;
                    buf = back_rx.recv().context("a free buffer")?;
                    buf.clear();
                }
                write_frame(&mut buf, i, pool.bytes(i))?;
                i += 1;
            }
        }
        tx.send(buf).map_err(|_| anyhow!("the reader hung up"))?;
        drop(tx);
        let producer_end = mono_ns();
        let producer_cpu_ns = thread_cpu_ns() - cpu0;
        let (tally, end, reader_cpu_ns) = reader
            .join()
            .map_err(|_| anyhow!("the reader panicked"))??;
        let sent = Tally::of_stream(&pool, i);
        ensure!(tally == sent, "channel reader got {tally:?}; sent {sent:?}");
        Ok(Throughput {
            payload,
            records: i,
            secs: (end - start) as f64 / 1e9,
            produced: i,
            producer_secs: (producer_end - start) as f64 / 1e9,
            lost: 0,
            producer_cpu_ns,
            reader_cpu_ns,
            producer_sleeps: 0,
            reader_sleeps: 0,
        })
    })
}

/// The hand ring's shared memory: the header page, then the data area.
struct HandRing {
    map: MmapMut,
}

impl HandRing {
    fn cursor(&self, at: usize) -> &AtomicU64 {
        assert!(at + 8 <= HAND_HEADER && at.is_multiple_of(8));
        let p = self.map.as_ptr().wrapping_add(at).cast::<AtomicU64>();
        // SAFETY: the map is page-aligned and HAND_HEADER + HAND_CAP bytes long, so `p`
        // (0, 128 or 256 bytes in, checked above) is an aligned u64 inside the header page
        // that lives as long as `self`; only atomics ever touch these words, in both
        // processes.
        unsafe { &*p }
    }

    fn data(&self) -> *mut u8 {
        // The data area starts HAND_HEADER bytes into the map, which is longer.
        self.map.as_ptr().wrapping_add(HAND_HEADER).cast_mut()
    }
}

fn word_sum(bytes: &[u8]) -> u64 {
    let mut lanes = [0u64; 4];
    for c in bytes.chunks_exact(32) {
        for (l, w) in lanes.iter_mut().zip(c.chunks_exact(8)) {
            *l = l.wrapping_add(u64::from_ne_bytes(w.try_into().expect("8 bytes")));
        }
    }
    lanes
        .iter()
        .fold(0u64, |a, l| a.wrapping_add(*l))
        .wrapping_add(
            bytes
                .chunks_exact(32)
                .remainder()
                .chunks_exact(8)
                .fold(0u64, |a, w| {
                    a.wrapping_add(u64::from_ne_bytes(w.try_into().expect("8 bytes")))
                }),
        )
}

/// One hand-ring run.
///
/// # Errors
/// Any failure, and a reader whose byte count or word sum is not what was sent.
pub fn hand_ring(payload: usize, ctx: &Ctx) -> Result<Throughput> {
    ensure!(
        HAND_CAP.is_multiple_of(payload) && payload.is_multiple_of(32),
        "hand-ring payloads divide the ring"
    );
    let pool = Pool::new(payload)?;
    let fd = nix::sys::memfd::memfd_create(
        c"firehose-bench-hand-ring",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?;
    nix::unistd::ftruncate(&fd, (HAND_HEADER + HAND_CAP) as i64)?;
    // SAFETY: a fresh memfd of exactly this size, shared only with our child, which only
    // touches what the cursor protocol gives it (see `hand_ring_child`).
    let map = unsafe { MmapMut::map_mut(&fd)? };
    let ring = HandRing { map };
    let mut child = ChildProc::spawn(ChildArgs::new(
        Role::HandRingReader,
        payload,
        ctx.cores.reader,
    ))?;
    send_with_fds(child.sock.as_fd(), b"FHBHRING", &[fd.as_fd()]).context("sending the ring")?;
    child.expect_ready()?;
    let sums: Vec<u64> = (0..POOL_LEN).map(|i| word_sum(pool.bytes(i))).collect();
    let (wc, rc) = (ring.cursor(WRITE_AT), ring.cursor(READ_AT));
    let data = ring.data();
    let cpu0 = thread_cpu_ns();
    let start = mono_ns();
    let t0 = Instant::now();
    let (mut w, mut published, mut r_cached) = (0u64, 0u64, 0u64);
    let mut i = 0u64;
    while t0.elapsed() < ctx.throughput_time {
        for _ in 0..256 {
            while w + payload as u64 > r_cached + HAND_CAP as u64 {
                // SYNC POINT (release): pairs with the reader's Release store of its
                // cursor after it has read everything before it.
                r_cached = rc.load(Ordering::Acquire);
                std::hint::spin_loop();
            }
            let off = (w % HAND_CAP as u64) as usize;
            let dst = data.wrapping_add(off);
            // SAFETY: [off, off + payload) lies inside the data area (payloads divide it),
            // and the reader is done with these bytes: it released them (r_cached), and it
            // reads nothing at or past the write cursor we publish below.
            unsafe {
                std::ptr::copy_nonoverlapping(pool.bytes(i).as_ptr(), dst, payload);
            }
            w += payload as u64;
            i += 1;
            if w - published >= BATCH as u64 {
                // SYNC POINT (publish): pairs with the reader's Acquire load.
                wc.store(w, Ordering::Release);
                published = w;
            }
        }
    }
    wc.store(w, Ordering::Release);
    ring.cursor(CLOSED_AT).store(1, Ordering::Release);
    let producer_end = mono_ns();
    let producer_cpu_ns = thread_cpu_ns() - cpu0;
    let got = child.report()?.ended_after(start)?;
    child.finish()?;
    let want = (0..i).fold(0u64, |a, k| a.wrapping_add(sums[(k % POOL_LEN) as usize]));
    ensure!(
        got.tally.count == i && got.tally.checksum == want,
        "hand-ring reader summed {} records to {:#x}; sent {i}, sum {want:#x}",
        got.tally.count,
        got.tally.checksum
    );
    Ok(Throughput {
        payload,
        records: i,
        secs: (got.end_ns - start) as f64 / 1e9,
        produced: i,
        producer_secs: (producer_end - start) as f64 / 1e9,
        lost: 0,
        producer_cpu_ns,
        reader_cpu_ns: got.cpu_ns,
        producer_sleeps: 0,
        reader_sleeps: 0,
    })
}

/// The hand-ring reader (child side): spins on the write cursor, sums the words of what
/// it sees, releases it.
///
/// # Errors
/// A bad handoff.
pub fn hand_ring_child(mut sock: UnixStream, args: &ChildArgs) -> Result<()> {
    let mut msg = [0u8; 8];
    let (n, fds) = recv_with_fds(sock.as_fd(), &mut msg).context("receiving the ring")?;
    ensure!(
        n == 8 && &msg == b"FHBHRING" && fds.len() == 1,
        "not a ring"
    );
    let fd = fds.into_iter().next().expect("one fd");
    // SAFETY: the parent's memfd of HAND_HEADER + HAND_CAP bytes; we only read the data
    // the write cursor publishes and the parent only writes what our cursor released.
    let map = unsafe { MmapMut::map_mut(&fd)? };
    let ring = HandRing { map };
    let (wc, rc, closed) = (
        ring.cursor(WRITE_AT),
        ring.cursor(READ_AT),
        ring.cursor(CLOSED_AT),
    );
    let data = ring.data().cast_const();
    send_ready(&mut sock)?;
    let cpu0 = thread_cpu_ns();
    let (mut r, mut sum) = (0u64, 0u64);
    loop {
        // SYNC POINT (publish): pairs with the producer's Release store.
        let w = wc.load(Ordering::Acquire);
        if w == r {
            if closed.load(Ordering::Acquire) == 1 && wc.load(Ordering::Acquire) == r {
                break;
            }
            std::hint::spin_loop();
            continue;
        }
        let off = (r % HAND_CAP as u64) as usize;
        let n = ((w - r) as usize).min(HAND_READ).min(HAND_CAP - off);
        // SAFETY: [off, off + n) is inside the data area and below the published write
        // cursor, so the producer wrote it before its Release store and writes it again
        // only after our Release store below.
        let bytes = unsafe { std::slice::from_raw_parts(data.wrapping_add(off), n) };
        sum = sum.wrapping_add(word_sum(bytes));
        r += n as u64;
        // SYNC POINT (release): pairs with the producer's Acquire load.
        rc.store(r, Ordering::Release);
    }
    let end_ns = mono_ns();
    send_report(
        &mut sock,
        Report {
            tally: Tally {
                count: r / args.payload as u64,
                checksum: sum,
                ..Tally::default()
            },
            end_ns,
            nvcsw: 0,
            cpu_ns: thread_cpu_ns() - cpu0,
        },
    )
}

/// One memcpy run: blocks of `block` bytes copied for `ctx.memcpy_time` by one thread.
///
/// # Errors
/// None in practice.
pub fn memcpy(block: usize, ctx: &Ctx) -> Result<Throughput> {
    let src: Vec<u8> = (0..block).map(|i| i as u8).collect();
    let mut dst = vec![0u8; block];
    let per_check = ((1 << 24) / block).max(1);
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < ctx.memcpy_time {
        for _ in 0..per_check {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        }
        n += per_check as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(Throughput {
        payload: block,
        records: n,
        secs,
        produced: n,
        producer_secs: secs,
        lost: 0,
        producer_cpu_ns: 0,
        reader_cpu_ns: 0,
        producer_sleeps: 0,
        reader_sleeps: 0,
    })
}
