//! The bench record, pools of pre-archived records, and the checksum every reader computes
//! over every payload byte (a reader that touches nothing measures nothing).
//!
//! A payload of nominal size `S` is the rkyv archive of a [`BenchRecord`] whose `data` holds
//! `S - 16` bytes: the archive is exactly `S` bytes (the data, then the 16-byte root).
//! Producers stage records from a [`Pool`] in turn (record `i` of a stream is pool entry
//! `i % POOL_LEN`), so serialization is not measured, and readers can check every record
//! they get against the pool's per-entry checksums, even a lagging reader that skips some.

use anyhow::{bail, ensure, Result};
use rkyv::util::AlignedVec;
use rkyv::{Archive, Serialize};

/// The record the throughput and latency cases carry.
#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct BenchRecord {
    /// The record's index in its pool (checked by readers through the archived value).
    pub seq: u64,
    /// Filler bytes, deterministic for a (size, index) pair.
    pub data: Vec<u8>,
}

/// Bytes of the archived root ([`ArchivedBenchRecord`]): what a payload has beyond `data`.
pub const ROOT_SIZE: usize = std::mem::size_of::<ArchivedBenchRecord>();

/// Distinct records a pool holds (64 x 4 KiB = 256 KiB, stays in cache).
pub const POOL_LEN: u64 = 64;

/// Smallest nominal payload: the root alone.
pub const MIN_PAYLOAD: usize = ROOT_SIZE;

/// The record of pool entry `idx` for payloads of `size` bytes.
pub fn make_record(size: usize, idx: u64) -> BenchRecord {
    let len = size.saturating_sub(ROOT_SIZE);
    // xorshift64*, seeded by size and index: every entry differs, every run is the same.
    let mut x = ((size as u64) << 32) ^ idx ^ 0x9E37_79B9_7F4A_7C15;
    let data = (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect();
    BenchRecord { seq: idx, data }
}

/// The checksum of one payload: a wrapping sum of its native-endian u64 words in four
/// lanes (vectorizes), the tail bytes, and the length. Reads every byte once.
#[inline]
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut lanes = [0u64; 4];
    let mut chunks = bytes.chunks_exact(32);
    for c in &mut chunks {
        for (lane, w) in lanes.iter_mut().zip(c.chunks_exact(8)) {
            *lane = lane.wrapping_add(u64::from_ne_bytes(w.try_into().expect("8 bytes")));
        }
    }
    let mut tail = 0u64;
    for (i, b) in chunks.remainder().iter().enumerate() {
        tail = tail.wrapping_add((u64::from(*b) << ((i % 8) * 8)) ^ ((i as u64) << 58));
    }
    let mixed = lanes[0]
        ^ lanes[1].rotate_left(16)
        ^ lanes[2].rotate_left(32)
        ^ lanes[3].rotate_left(48)
        ^ tail.rotate_left(7);
    mixed.wrapping_add(bytes.len() as u64)
}

/// Folds one record's checksum into a stream checksum (order-sensitive).
#[inline]
pub fn fold(acc: u64, record_sum: u64) -> u64 {
    (acc ^ record_sum).wrapping_mul(0x0000_0100_0000_01B3)
}

/// Pre-archived records of one nominal size, with their checksums.
#[derive(Debug)]
pub struct Pool {
    size: usize,
    archives: Vec<AlignedVec>,
    sums: Vec<u64>,
    /// Checksums of the `data` part alone (what a timestamped payload keeps unchanged).
    data_sums: Vec<u64>,
}

impl Pool {
    /// A pool for payloads of exactly `size` archived bytes.
    ///
    /// # Errors
    /// If `size` is below [`MIN_PAYLOAD`], not a multiple of 8, or the archive comes out at
    /// another size.
    pub fn new(size: usize) -> Result<Self> {
        ensure!(
            size >= MIN_PAYLOAD && size.is_multiple_of(8),
            "payload size {size} must be a multiple of 8 and at least {MIN_PAYLOAD}"
        );
        let mut archives = Vec::with_capacity(POOL_LEN as usize);
        let mut sums = Vec::with_capacity(POOL_LEN as usize);
        let mut data_sums = Vec::with_capacity(POOL_LEN as usize);
        for idx in 0..POOL_LEN {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&make_record(size, idx))?;
            ensure!(
                bytes.len() == size,
                "a {size}-byte bench record archives to {} bytes",
                bytes.len()
            );
            sums.push(checksum(&bytes));
            data_sums.push(checksum(&bytes[..size - ROOT_SIZE]));
            archives.push(bytes);
        }
        Ok(Pool {
            size,
            archives,
            sums,
            data_sums,
        })
    }

    /// Nominal (archived) size of every record.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The archived bytes of stream record `i`.
    #[inline]
    pub fn bytes(&self, i: u64) -> &[u8] {
        &self.archives[(i % POOL_LEN) as usize]
    }

    /// The checksum of stream record `i`.
    #[inline]
    pub fn sum(&self, i: u64) -> u64 {
        self.sums[(i % POOL_LEN) as usize]
    }

    /// The checksum of the `data` part of stream record `i` (all but the 16-byte root).
    #[inline]
    pub fn data_sum(&self, i: u64) -> u64 {
        self.data_sums[(i % POOL_LEN) as usize]
    }

    /// Stream record `i` with its `seq` field replaced by `stamp` (a CLOCK_MONOTONIC
    /// time, for one-way latency), written into `out` (cleared first). Still a valid archive
    /// of the nominal size; [`StampChecker`] checks it.
    #[inline]
    pub fn stamped_into(&self, i: u64, stamp: u64, out: &mut AlignedVec) {
        out.clear();
        out.extend_from_slice(self.bytes(i));
        let at = stamp_offset(self.size);
        out[at..at + 8].copy_from_slice(&stamp.to_le_bytes());
    }
}

/// Where the archived `seq` field (the stamp of a timestamped payload) sits in a payload
/// of `size` bytes: the root is the last [`ROOT_SIZE`] bytes.
pub const fn stamp_offset(size: usize) -> usize {
    size - ROOT_SIZE + std::mem::offset_of!(ArchivedBenchRecord, seq)
}

/// The checks of a reader of timestamped payloads ([`Pool::stamped_into`]): rkyv validation,
/// the data length, and a checksum of every data byte against the pool; the stamp itself
/// is the measurement.
#[derive(Debug)]
pub struct StampChecker {
    pool: Pool,
    next: u64,
    /// Records received (count, and the folded data checksums).
    pub tally: Tally,
}

impl StampChecker {
    /// Checks streams of `size`-byte stamped records.
    ///
    /// # Errors
    /// As [`Pool::new`].
    pub fn new(size: usize) -> Result<Self> {
        Ok(StampChecker {
            pool: Pool::new(size)?,
            next: 0,
            tally: Tally::default(),
        })
    }

    /// Checks stream record `idx` and returns its stamp.
    ///
    /// # Errors
    /// A record out of order, invalid, or whose data is not what the producer sent.
    #[inline]
    pub fn record(&mut self, idx: u64, bytes: &[u8]) -> Result<u64> {
        let a = rkyv::access::<ArchivedBenchRecord, rkyv::rancor::Error>(bytes)?;
        let data = bytes.len().saturating_sub(ROOT_SIZE);
        let sum = checksum(&bytes[..data]);
        if idx != self.next
            || bytes.len() != self.pool.size
            || a.data.len() != data
            || sum != self.pool.data_sum(idx)
        {
            bail!(
                "stamped record {idx} (expected {}): {} bytes, data checksum {sum:#x}, \
                 expected {:#x}: integrity failure",
                self.next,
                bytes.len(),
                self.pool.data_sum(idx)
            );
        }
        self.next += 1;
        self.tally.add_sent(sum);
        Ok(a.seq.to_native())
    }
}

/// What a reader counted: records, their folded checksum, and seqs it was told it missed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records received (and validated).
    pub count: u64,
    /// Folded checksum of the records, in order.
    pub checksum: u64,
    /// Seqs reported missing (lagging readers).
    pub lost: u64,
    /// How many times the reader was told it missed something.
    pub lag_events: u64,
}

impl Tally {
    /// What a reader must report for stream records `0..count` of `pool`, all received in
    /// order: the producers of the throughput cases send exactly those, so they count in
    /// the timed loop and fold the checksums afterwards.
    pub fn of_stream(pool: &Pool, count: u64) -> Self {
        let mut t = Tally::default();
        for i in 0..count {
            t.add_sent(pool.sum(i));
        }
        t
    }

    /// Counts a record whose checksum the producer side knows from its pool.
    #[inline]
    pub fn add_sent(&mut self, record_sum: u64) {
        self.count += 1;
        self.checksum = fold(self.checksum, record_sum);
    }
}

/// A reader's checks: every record is the pool entry its stream index says, bytes and all.
#[derive(Debug)]
pub struct Checker {
    pool: Pool,
    /// Stream index of the next record expected.
    next: u64,
    /// What was received.
    pub tally: Tally,
}

impl Checker {
    /// Checks streams of `size`-byte records.
    ///
    /// # Errors
    /// As [`Pool::new`].
    pub fn new(size: usize) -> Result<Self> {
        Ok(Checker {
            pool: Pool::new(size)?,
            next: 0,
            tally: Tally::default(),
        })
    }

    /// The pool the checked stream comes from (readers that answer use it too).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Checks stream record `idx`: `archived_idx` is the pool index read through the
    /// validated archive, `bytes` the whole payload (checksummed here).
    ///
    /// # Errors
    /// A record out of order, or whose index or bytes are not what the producer sent.
    #[inline]
    pub fn record(&mut self, idx: u64, archived_idx: u64, bytes: &[u8]) -> Result<()> {
        let sum = checksum(bytes);
        if idx != self.next || archived_idx != idx % POOL_LEN || sum != self.pool.sum(idx) {
            bail!(
                "record {idx} (expected {}): pool index {archived_idx}, checksum {sum:#x}, \
                 expected {:#x}: integrity failure",
                self.next,
                self.pool.sum(idx)
            );
        }
        self.next += 1;
        self.tally.count += 1;
        self.tally.checksum = fold(self.tally.checksum, sum);
        Ok(())
    }

    /// Records that stream records `from ..= to` (indexes) were reported missing.
    ///
    /// # Errors
    /// A report that does not start where the stream is.
    pub fn lagged(&mut self, from: u64, to: u64) -> Result<()> {
        ensure!(
            from == self.next && to >= from,
            "lag report {from}..={to} while expecting record {}",
            self.next
        );
        self.next = to + 1;
        self.tally.lost += to - from + 1;
        self.tally.lag_events += 1;
        Ok(())
    }
}

/// Validates `bytes` as an archived [`BenchRecord`] and returns its pool index.
///
/// # Errors
/// If rkyv's validation fails.
#[inline]
pub fn access_index(bytes: &[u8]) -> Result<u64> {
    let a = rkyv::access::<ArchivedBenchRecord, rkyv::rancor::Error>(bytes)?;
    Ok(a.seq.to_native())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_have_the_nominal_size() {
        for size in [16, 64, 256, 1024, 4096] {
            let pool = Pool::new(size).unwrap();
            assert_eq!(pool.bytes(3).len(), size);
            assert_eq!(access_index(pool.bytes(70)).unwrap(), 70 % POOL_LEN);
        }
    }

    #[test]
    fn checker_accepts_the_stream_and_rejects_a_flipped_byte() {
        let mut c = Checker::new(64).unwrap();
        let pool = Pool::new(64).unwrap();
        let mut sent = Tally::default();
        for i in 0..200 {
            let b = pool.bytes(i);
            c.record(i, access_index(b).unwrap(), b).unwrap();
            sent.add_sent(pool.sum(i));
        }
        assert_eq!(c.tally, sent);
        let mut bad = pool.bytes(200).to_vec();
        bad[5] ^= 1;
        assert!(c.record(200, 200 % POOL_LEN, &bad).is_err());
    }

    #[test]
    fn stamped_records_carry_the_stamp_and_keep_their_data() {
        let pool = Pool::new(64).unwrap();
        let mut c = StampChecker::new(64).unwrap();
        let mut buf = AlignedVec::new();
        for i in 0..100 {
            pool.stamped_into(i, 1_000 + i, &mut buf);
            assert_eq!(buf.len(), 64);
            assert_eq!(c.record(i, &buf).unwrap(), 1_000 + i);
        }
        pool.stamped_into(100, 7, &mut buf);
        buf[3] ^= 1;
        assert!(c.record(100, &buf).is_err());
    }

    #[test]
    fn checksum_sees_every_byte() {
        let base = vec![7u8; 75];
        for i in 0..base.len() {
            let mut b = base.clone();
            b[i] ^= 0x10;
            assert_ne!(checksum(&b), checksum(&base), "byte {i}");
        }
    }
}
