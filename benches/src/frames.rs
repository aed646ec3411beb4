//! The frame format of the byte-stream baselines (Unix socket, pipe), and blocking or
//! spinning reads and writes of whole frames.
//!
//! A frame is a 16-byte header (payload length, seq; little-endian u64s) and the payload,
//! zero-padded to a multiple of 16, so that in a 16-aligned buffer every payload is
//! aligned for rkyv, and the payload slice handed to rkyv ends exactly at the archive's end.

use std::io::{self, ErrorKind, Read, Write};

use anyhow::{ensure, Result};
use rkyv::util::AlignedVec;

use crate::payload::{access_index, Checker, Pool};

/// Bytes before each payload.
pub const FRAME_HEADER: usize = 16;
/// Payloads start at multiples of this (in a buffer aligned to it).
pub const FRAME_ALIGN: usize = 16;
/// The write buffer and the read size.
pub const BUF_BYTES: usize = 64 << 10;

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

    /// Moves the partial frame left over to the front and reads what the stream has (one
    /// `read`, at least 64 KiB of room). Returns false at end of stream.
    ///
    /// # Errors
    /// The read's error.
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

/// Reads exactly `buf.len()` bytes, spinning on `WouldBlock` (non-blocking fds). Returns
/// false on end of stream before the first byte.
///
/// # Errors
/// The read's error; `UnexpectedEof` inside the buffer.
pub fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match src.read(&mut buf[got..]) {
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

/// Writes all of `buf`, spinning on `WouldBlock` (non-blocking fds).
///
/// # Errors
/// The write's error.
pub fn write_full(dst: &mut impl Write, buf: &[u8]) -> io::Result<()> {
    let mut put = 0;
    while put < buf.len() {
        match dst.write(&buf[put..]) {
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
pub fn build_frame(out: &mut AlignedVec<FRAME_ALIGN>, pool: &Pool, seq: u64) {
    out.clear();
    write_frame(out, seq, pool.bytes(seq)).expect("writing to memory");
}

/// A buffer for exactly one frame of `payload` bytes.
pub fn frame_buf(payload: usize) -> AlignedVec<FRAME_ALIGN> {
    let mut b = AlignedVec::with_capacity(frame_len(payload));
    b.resize(frame_len(payload), 0);
    b
}

/// Reads one frame (exactly `buf.len()` bytes) and checks it: rkyv validation, checksum,
/// order. Returns false at end of stream.
///
/// # Errors
/// A read error, a frame of another size, or a record that fails the checks.
pub fn read_checked(
    src: &mut impl Read,
    buf: &mut AlignedVec<FRAME_ALIGN>,
    chk: &mut Checker,
) -> Result<bool> {
    if !read_full(src, buf)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_reader_in_odd_chunks() {
        let pool = Pool::new(64).unwrap();
        let mut stream = Vec::new();
        for i in 0..100 {
            write_frame(&mut stream, i, pool.bytes(i)).unwrap();
        }
        assert_eq!(stream.len(), 100 * frame_len(64));
        // A reader that returns 37 bytes at a time.
        struct Chunks<'a>(&'a [u8]);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(37);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut src = Chunks(&stream);
        let mut fr = FrameReader::new(64);
        let mut chk = Checker::new(64).unwrap();
        loop {
            while let Some((seq, bytes)) = fr.next_frame().unwrap() {
                chk.record(seq, access_index(bytes).unwrap(), bytes)
                    .unwrap();
            }
            if !fr.fill(&mut src).unwrap() {
                break;
            }
        }
        assert!(fr.is_empty());
        assert_eq!(chk.tally.count, 100);
    }
}
