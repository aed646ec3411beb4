//! The seq lease: seqs stay unique across crashes.
//!
//! The service may publish seq `N` only while `N < end`, where `end` is durable in a small
//! preallocated file beside the database (`history.lease`). A renewal thread moves `end`
//! forward when half the lease is used, sizing the new lease to cover at least
//! [`LeaseConfig::cover`] at the current rate (and at least [`LeaseConfig::min_size`]
//! seqs), and writes it with `pwrite` + `fdatasync` before anyone may use it. After a crash
//! the service starts at the old `end` and records the unused rest as a `Crash` gap. If the
//! file cannot be written, [`Lease::grant`] refuses seqs at the lease end and
//! [`Lease::health`] says why: publishing stops rather than risk a reused seq.
//!
//! # File layout
//!
//! [`LEASE_FILE_SIZE`] bytes, preallocated. Two 64-byte record slots, at offsets 0 and
//! 512; each write goes to the slot not holding the newest valid record, so a torn write
//! can never destroy the last good lease (the brief's "rewrite at offset 0" with one slot
//! would lose the lease to a torn sector). Little-endian:
//!
//! ```text
//!  0        8        12       16                32       40       48       56       64
//!  +--------+--------+--------+-----------------+--------+--------+--------+--------+
//!  | magic  |version | flags  | instance id     | gener- | end    | next   | FNV-1a |
//!  |FHLEASE\0| u32   | u32    | u128            | ation  | (excl.)| seq    | of 0..56|
//!  +--------+--------+--------+-----------------+--------+--------+--------+--------+
//!  flags bit 0: clean shutdown (then `next seq` is where the next run starts).
//! ```
//!
//! # Where a run starts
//!
//! With `db_next` = the database's last committed seq + 1 (1 for an empty database):
//! - clean previous shutdown: `max(next seq, db_next)`, no gap;
//! - crash, same instance: `max(end, db_next)`, crash gap `db_next ..= end - 1`;
//! - crash or clean, other instance (the database was replaced): the larger of the two,
//!   no gap, [`Recovery::instance_changed`];
//! - no valid lease (first run, or the file was deleted): `db_next`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Size of the lease file.
pub const LEASE_FILE_SIZE: u64 = 4096;
/// Bytes of one record.
const RECORD_LEN: usize = 64;
/// Offsets of the two record slots.
const SLOTS: [u64; 2] = [0, 512];
const MAGIC: [u8; 8] = *b"FHLEASE\0";
const VERSION: u32 = 1;
const FLAG_CLEAN: u32 = 1;
/// Largest lease granted at once.
const MAX_SIZE: u64 = 1 << 32;

/// A lease file operation failed.
#[derive(Debug, thiserror::Error)]
#[error("seq lease {path}: cannot {op}: {source}")]
pub struct LeaseError {
    /// The lease file.
    pub path: PathBuf,
    /// What was being done.
    pub op: &'static str,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Lease sizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Smallest lease, in seqs (default 4096).
    pub min_size: u64,
    /// Time a renewed lease's second half covers at the current rate (default 1 s).
    pub cover: Duration,
    /// Wait before retrying a failed write (default 1 s).
    pub retry: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            min_size: 4096,
            cover: Duration::from_secs(1),
            retry: Duration::from_secs(1),
        }
    }
}

/// What the previous run left behind, and where this one starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The first seq this run may use.
    pub next_seq: u64,
    /// The previous run crashed: these seqs (inclusive) were leased but are not in the
    /// database; record them as a `Crash` gap.
    pub crash_gap: Option<(u64, u64)>,
    /// The lease belonged to another database instance (the larger seq was trusted).
    pub instance_changed: bool,
    /// A valid lease record was found.
    pub lease_found: bool,
}

/// Whether the lease can be renewed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseHealth {
    /// Renewals work.
    Ok,
    /// The lease file cannot be written: publishing stops at the lease end.
    Failing {
        /// The error, naming the file.
        reason: String,
        /// When the failures began.
        since: SystemTime,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    flags: u32,
    instance: u128,
    generation: u64,
    end: u64,
    next_seq: u64,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Record {
    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..32].copy_from_slice(&self.instance.to_le_bytes());
        b[32..40].copy_from_slice(&self.generation.to_le_bytes());
        b[40..48].copy_from_slice(&self.end.to_le_bytes());
        b[48..56].copy_from_slice(&self.next_seq.to_le_bytes());
        let sum = fnv1a(&b[..56]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }

    fn decode(b: &[u8; RECORD_LEN]) -> Option<Record> {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        if b[0..8] != MAGIC || u32_at(8) != VERSION || u64_at(56) != fnv1a(&b[..56]) {
            return None;
        }
        Some(Record {
            flags: u32_at(12),
            instance: u128::from_le_bytes(b[16..32].try_into().unwrap_or([0; 16])),
            generation: u64_at(32),
            end: u64_at(40),
            next_seq: u64_at(48),
        })
    }
}

/// The lease file and what was last written to it.
#[derive(Debug)]
struct Store {
    file: File,
    path: PathBuf,
    instance: u128,
    generation: u64,
    /// Slot of the newest record.
    slot: usize,
    /// Test hook: fail every write.
    fail: bool,
    /// Test hook: sleep this long before each fdatasync (a slow disk).
    delay: Duration,
}

impl Store {
    fn write(&mut self, end: u64, next_seq: u64, clean: bool) -> Result<(), LeaseError> {
        let err = |op, source| LeaseError {
            path: self.path.clone(),
            op,
            source,
        };
        if self.fail {
            return Err(err(
                "write",
                std::io::Error::other("write failure injected by a test"),
            ));
        }
        let rec = Record {
            flags: if clean { FLAG_CLEAN } else { 0 },
            instance: self.instance,
            generation: self.generation + 1,
            end,
            next_seq,
        };
        let slot = 1 - self.slot;
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.file
            .write_all_at(&rec.encode(), SLOTS[slot])
            .map_err(|e| err("write", e))?;
        self.file.sync_data().map_err(|e| err("fdatasync", e))?;
        self.generation += 1;
        self.slot = slot;
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    /// Seqs below it may be published.
    end: AtomicU64,
    /// A grant at or past it asks for a renewal.
    renew_at: AtomicU64,
    /// Highest seq granted.
    highest: AtomicU64,
    requested: AtomicBool,
    stop: AtomicBool,
    wake_lock: Mutex<()>,
    wake: Condvar,
    /// Notified (under `wake_lock`) after each renewal, for [`Lease::wait_grant`].
    renewed: Condvar,
    health: Mutex<LeaseHealth>,
    store: Mutex<Store>,
    config: LeaseConfig,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A held seq lease, renewed by its own thread.
#[derive(Debug)]
pub struct Lease {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Lease {
    /// Opens (creating and preallocating if needed) the lease file, works out where this
    /// run starts (see the module doc) from it and from the database's
    /// `last_committed_seq`, writes a first lease from there and starts the renewal thread.
    ///
    /// # Errors
    /// [`LeaseError`] if the file cannot be opened, read, preallocated or written: the
    /// service then must not publish.
    pub fn open(
        path: &Path,
        instance_id: u128,
        last_committed_seq: Option<u64>,
        config: LeaseConfig,
    ) -> Result<(Lease, Recovery), LeaseError> {
        let err = |op, source| LeaseError {
            path: path.to_path_buf(),
            op,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| err("open", e))?;
        let len = file.metadata().map_err(|e| err("stat", e))?.len();
        if len < LEASE_FILE_SIZE {
            // Allocate the blocks now, so a full disk cannot stop a later rewrite.
            if nix::fcntl::posix_fallocate(&file, 0, LEASE_FILE_SIZE as i64).is_err() {
                file.set_len(LEASE_FILE_SIZE)
                    .map_err(|e| err("preallocate", e))?;
            }
        }
        let mut best: Option<(usize, Record)> = None;
        for (i, &off) in SLOTS.iter().enumerate() {
            let mut b = [0u8; RECORD_LEN];
            file.read_exact_at(&mut b, off)
                .map_err(|e| err("read", e))?;
            if let Some(r) = Record::decode(&b) {
                if best.is_none_or(|(_, o)| r.generation > o.generation) {
                    best = Some((i, r));
                }
            }
        }
        let db_next = last_committed_seq.map_or(1, |s| s.saturating_add(1)).max(1);
        let mut rec = Recovery {
            next_seq: db_next,
            crash_gap: None,
            instance_changed: false,
            lease_found: best.is_some(),
        };
        if let Some((_, old)) = best {
            let clean = old.flags & FLAG_CLEAN != 0;
            rec.instance_changed = old.instance != instance_id;
            if clean {
                rec.next_seq = old.next_seq.max(db_next);
            } else {
                rec.next_seq = old.end.max(db_next);
                if !rec.instance_changed && db_next < old.end {
                    rec.crash_gap = Some((db_next, old.end - 1));
                }
            }
            if rec.instance_changed {
                // Trust the larger seq: the database or the lease may have been replaced.
                rec.next_seq = rec.next_seq.max(old.end).max(old.next_seq);
            }
        }
        let mut store = Store {
            file,
            path: path.to_path_buf(),
            instance: instance_id,
            generation: best.map_or(0, |(_, r)| r.generation),
            slot: best.map_or(1, |(i, _)| i),
            fail: false,
            delay: Duration::ZERO,
        };
        let size = config.min_size.max(1);
        let end = rec.next_seq.saturating_add(size);
        store.write(end, rec.next_seq, false)?;
        let shared = Arc::new(Shared {
            end: AtomicU64::new(end),
            renew_at: AtomicU64::new(rec.next_seq + size / 2),
            highest: AtomicU64::new(rec.next_seq.saturating_sub(1)),
            requested: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
            renewed: Condvar::new(),
            health: Mutex::new(LeaseHealth::Ok),
            store: Mutex::new(store),
            config,
        });
        let s2 = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("seq-lease".into())
            .spawn(move || renew_loop(&s2))
            .map_err(|e| err("start the renewal thread", e))?;
        Ok((
            Lease {
                shared,
                thread: Some(thread),
            },
            rec,
        ))
    }

    /// Whether seq `seq` may be published (`seq < end`). Call it for the highest seq of a
    /// batch before publishing the batch: it also asks for a renewal at half use. Cheap: a
    /// few atomic operations, a lock only when it asks for a renewal.
    pub fn grant(&self, seq: u64) -> bool {
        let s = &self.shared;
        // Relaxed suffices: `highest` is only a rate hint for the renewal thread.
        if seq > s.highest.load(Ordering::Relaxed) {
            s.highest.store(seq, Ordering::Relaxed);
        }
        // SYNC POINT (Acquire): pairs with the Release store of `end` after the fdatasync,
        // so the durable write happens-before any grant under the new end.
        let end = s.end.load(Ordering::Acquire);
        if seq >= s.renew_at.load(Ordering::Relaxed) && !s.requested.swap(true, Ordering::AcqRel) {
            let _g = lock(&s.wake_lock);
            s.wake.notify_one();
        }
        seq < end
    }

    /// Like [`grant`](Self::grant), but if `seq` is past the lease end, waits up to
    /// `timeout` for a renewal to cover it (a burst faster than one renewal). Returns
    /// false at once, without waiting, while renewals are failing: waiting would not help,
    /// and the caller must account for what it cannot publish.
    pub fn wait_grant(&self, seq: u64, timeout: Duration) -> bool {
        if self.grant(seq) {
            return true;
        }
        let s = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut g = lock(&s.wake_lock);
        loop {
            // Acquire: as in `grant`, the durable write happens-before the use of the seq.
            if seq < s.end.load(Ordering::Acquire) {
                return true;
            }
            if matches!(*lock(&s.health), LeaseHealth::Failing { .. }) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // The renewal thread stores `end` before it takes `wake_lock` to notify, and we
            // hold `wake_lock` from the check to the wait: no renewal is missed.
            g = s
                .renewed
                .wait_timeout(g, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The current lease end (exclusive).
    pub fn end(&self) -> u64 {
        self.shared.end.load(Ordering::Acquire)
    }

    /// Whether renewals work.
    pub fn health(&self) -> LeaseHealth {
        lock(&self.shared.health).clone()
    }

    /// Test hook: makes every later lease write fail (or work again).
    #[doc(hidden)]
    pub fn inject_write_failure(&self, fail: bool) {
        lock(&self.shared.store).fail = fail;
    }

    /// Test hook: makes every later lease write sleep `delay` first (a slow disk).
    #[doc(hidden)]
    pub fn inject_write_delay(&self, delay: Duration) {
        lock(&self.shared.store).delay = delay;
    }

    /// Stops the renewal thread and marks a clean shutdown: the next run starts at
    /// `next_seq` (at least one past the highest seq granted) with no crash gap.
    ///
    /// # Errors
    /// [`LeaseError`] if the record cannot be written; the next run then treats this one
    /// as crashed, which wastes seqs but reuses none.
    pub fn close_clean(mut self, next_seq: u64) -> Result<(), LeaseError> {
        self.stop_thread();
        let s = &self.shared;
        let highest = s.highest.load(Ordering::Relaxed);
        let next = next_seq.max(highest.saturating_add(1));
        let end = s.end.load(Ordering::Acquire).max(next);
        lock(&s.store).write(end, next, true)
    }

    fn stop_thread(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _g = lock(&self.shared.wake_lock);
            self.shared.wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Lease {
    /// Stops the renewal thread without marking a clean shutdown.
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn renew_loop(s: &Shared) {
    let mut last_at = Instant::now();
    let mut last_seq = s.highest.load(Ordering::Relaxed);
    let mut rate = 0.0f64; // seqs per second
    let mut failing = false;
    loop {
        {
            let g = lock(&s.wake_lock);
            if !s.stop.load(Ordering::Acquire) {
                if failing {
                    // Back off; `requested` stays set so grants do not wake us early.
                    drop(s.wake.wait_timeout(g, s.config.retry));
                } else if !s.requested.load(Ordering::Acquire) {
                    // No timer at rest: `grant` sets `requested` and notifies under
                    // `wake_lock` (held here from the check to the wait), as `stop` does.
                    // The rate is measured between renewals, which is what sizes them.
                    drop(
                        s.wake
                            .wait(g)
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                    );
                }
            }
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let highest = s.highest.load(Ordering::Relaxed);
        let dt = now.duration_since(last_at).as_secs_f64();
        if dt > 0.0 {
            let r = highest.saturating_sub(last_seq) as f64 / dt;
            // Rise at once, decay slowly: a burst should not run into the lease end.
            rate = if r > rate { r } else { rate * 0.5 + r * 0.5 };
        }
        last_at = now;
        last_seq = highest;
        let end = s.end.load(Ordering::Relaxed);
        let renew_at = s.renew_at.load(Ordering::Relaxed);
        if !s.requested.load(Ordering::Acquire) && highest < renew_at && !failing {
            continue;
        }
        // The half left after the next renewal point covers `cover` at this rate.
        let want = (2.0 * rate * s.config.cover.as_secs_f64()) as u64;
        let size = want.clamp(s.config.min_size.max(1), MAX_SIZE);
        let new_end = end.max(highest.saturating_add(1).saturating_add(size));
        let res = lock(&s.store).write(new_end, highest.saturating_add(1), false);
        match res {
            Ok(()) => {
                // SYNC POINT (Release): the record is durable; pairs with `grant`'s Acquire.
                s.end.store(new_end, Ordering::Release);
                let from = highest.saturating_add(1);
                s.renew_at
                    .store(from + (new_end - from) / 2, Ordering::Relaxed);
                s.requested.store(false, Ordering::Release);
                {
                    let _g = lock(&s.wake_lock);
                    s.renewed.notify_all();
                }
                if failing {
                    tracing::info!("seq lease renewals work again");
                    *lock(&s.health) = LeaseHealth::Ok;
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "seq lease cannot be renewed; publishing stops at seq {end}");
                    *lock(&s.health) = LeaseHealth::Failing {
                        reason: e.to_string(),
                        since: SystemTime::now(),
                    };
                    failing = true;
                }
                // Retry after the backoff; `requested` stays set meanwhile. Waiters learn
                // of the failure now rather than at their deadline.
                s.requested.store(true, Ordering::Release);
                let _g = lock(&s.wake_lock);
                s.renewed.notify_all();
            }
        }
    }
}
