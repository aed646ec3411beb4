//! The history writer: one thread that owns the write connection, behind a bounded queue.
//!
//! - [`HistoryWriter::submit`] never blocks (the ring never waits for history). When the
//!   queue is full the record's seqs are noted, and the writer inserts ONE `WriterOverflow`
//!   gap record per run of adjacent dropped seqs, in the same transaction as the records
//!   queued after them.
//! - The thread takes what is queued (up to [`WriterConfig::batch_rows`]) and commits it in
//!   one transaction: a group commit that grows with the rate, with no waiting at low rates.
//! - When a commit fails (disk full, read-only, I/O error) the writer logs the error once
//!   for the episode, reports [`Health::Degraded`], keeps draining the queue into a set of
//!   unstored seq ranges (bounded: adjacent ranges merge), and retries every
//!   [`WriterConfig::retry_backoff`]. Retries insert `StoreFailed` gap records for those
//!   ranges; the episode ends (health back to Ok) when a commit with records succeeds. A failed transaction rolls back whole: nothing committed
//!   before it is touched.
//! - Between batches, every [`WriterConfig::retention_interval`], it runs
//!   [`retention`](super::retention).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver, Sender, TrySendError};
use firehose_transport::record::{FileEvent, GapReason};
use rusqlite::Connection;

use super::error::HistoryError;
use super::health::{Health, WriterStats};
use super::ranges::RangeSet;
use super::retention::{self, Retention};
use super::row;
use super::schema::{self, now_ns, Meta};

/// Most caller-submitted gap records kept aside (with their own reasons) while storing is
/// degraded; beyond it they are folded into the `StoreFailed` ranges.
const MAX_PENDING_GAPS: usize = 4096;

/// How the writer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// Records the queue holds before `submit` starts dropping (default 65,536).
    pub queue_capacity: usize,
    /// Most records per transaction (default 10,000).
    pub batch_rows: usize,
    /// Retention limits (default: none).
    pub retention: Retention,
    /// How often retention runs (default 1 s).
    pub retention_interval: Duration,
    /// How long the writer waits before retrying after a storage error (default 1 s).
    pub retry_backoff: Duration,
    /// How often the writer looks whether its database file is still the one at its path
    /// (deleted or replaced under the service), and how often age-based retention runs at
    /// rest (default 10 s).
    pub identity_check: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue_capacity: 65_536,
            batch_rows: 10_000,
            retention: Retention::default(),
            retention_interval: Duration::from_secs(1),
            retry_backoff: Duration::from_secs(1),
            identity_check: Duration::from_secs(10),
        }
    }
}

enum Ctl {
    /// Commit everything queued, then answer.
    Flush(Sender<()>),
    /// Commit everything queued, answer, and stop.
    Shutdown(Sender<()>),
    /// Test hook: `PRAGMA max_page_count` on the write connection (`None`: no limit).
    MaxPageCount(Option<u64>, Sender<()>),
    /// Commit what is queued, then run retention once with these limits.
    Retain(Retention, Sender<Result<u64, HistoryError>>),
}

/// State shared by the handle and the thread.
#[derive(Debug)]
struct Shared {
    /// Highest seq durable in the database (0: none). Also covers gap rows' ends.
    committed: AtomicU64,
    /// Guards the wait in `wait_committed` against missed wakeups.
    committed_lock: Mutex<()>,
    committed_cv: Condvar,
    /// Seqs dropped by `submit` on a full queue, not yet taken by the thread.
    dropped: Mutex<RangeSet>,
    health: Mutex<Health>,
    rows: AtomicU64,
    rows_per_sec: AtomicU64,
    batches: AtomicU64,
    overflowed: AtomicU64,
    gap_rows: AtomicU64,
    store_failed: AtomicU64,
    duplicates: AtomicU64,
    retention_removed: AtomicU64,
    /// Rows in the database, kept current by the writer (counted once at start), so that
    /// nobody else ever runs `count(*)` over millions of rows. This and the next two are
    /// Relaxed: each is a figure read alone (status, the welcome's bounds); no other memory
    /// is published through them.
    db_rows: AtomicU64,
    /// Bytes of pages in use, refreshed at most once a second after commits.
    db_bytes: AtomicU64,
    /// The oldest seq history reaches back to, plus one (0: empty or not yet known).
    oldest_plus1: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these simple values inconsistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The handle to the writer thread. Dropping it without [`shutdown`](Self::shutdown) still
/// commits what is queued (the thread sees the queue close), but does not wait for it.
#[derive(Debug)]
pub struct HistoryWriter {
    tx: Sender<FileEvent>,
    ctl: Sender<Ctl>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    meta: Meta,
}

impl HistoryWriter {
    /// Opens (creating and migrating if needed) the database at `path` and starts the
    /// writer thread.
    ///
    /// # Errors
    /// [`HistoryError`] if the database cannot be opened or migrated, or the thread cannot
    /// be started.
    pub fn open(path: &Path, config: WriterConfig) -> Result<Self, HistoryError> {
        let (conn, meta) = schema::open_write(path)?;
        let last: Option<i64> = conn
            .query_row(
                "SELECT max(coalesce(gap_to, seq)) FROM (SELECT seq, gap_to FROM events \
                 ORDER BY seq DESC LIMIT 1000)",
                [],
                |r| r.get(0),
            )
            .map_err(|source| HistoryError::Sqlite {
                path: path.to_path_buf(),
                source,
            })?;
        let shared = Arc::new(Shared {
            committed: AtomicU64::new(last.map_or(0, |v| v as u64)),
            committed_lock: Mutex::new(()),
            committed_cv: Condvar::new(),
            dropped: Mutex::new(RangeSet::default()),
            health: Mutex::new(Health::Ok),
            rows: AtomicU64::new(0),
            rows_per_sec: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            gap_rows: AtomicU64::new(0),
            store_failed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            retention_removed: AtomicU64::new(0),
            db_rows: AtomicU64::new(0),
            db_bytes: AtomicU64::new(0),
            oldest_plus1: AtomicU64::new(0),
        });
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity.max(1));
        let (ctl, ctl_rx) = crossbeam_channel::unbounded();
        let mut thread = Thread {
            conn,
            path: path.to_path_buf(),
            config,
            shared: Arc::clone(&shared),
            rx,
            ctl: ctl_rx,
            batch: Vec::with_capacity(config.batch_rows.min(65_536)),
            overflow: RangeSet::default(),
            failed: RangeSet::default(),
            pending_gaps: Vec::new(),
            last_gap: [None; 2],
            degraded_since: None,
            next_retry: Instant::now(),
            next_retention: Instant::now(),
            rate_start: Instant::now(),
            rate_rows: 0,
            since_retention: 0,
            bytes_due: true,
            file: FileIdentity::open(path),
            next_identity_check: Instant::now() + config.identity_check,
            lost_file: false,
        };
        let handle = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || thread.run())
            .map_err(|source| HistoryError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(HistoryWriter {
            tx,
            ctl,
            shared,
            thread: Some(handle),
            path: path.to_path_buf(),
            meta,
        })
    }

    /// The database's instance id.
    pub fn instance_id(&self) -> u128 {
        self.meta.instance_id
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a record (or a gap record) for storing. Never blocks: if the queue is full,
    /// the record is dropped and its seqs are later covered by a `WriterOverflow` gap
    /// record. Returns false if it was dropped.
    ///
    /// Records are expected in seq order (one publishing thread, gap records in their
    /// place): [`committed_seq`](Self::committed_seq) relies on it.
    pub fn submit(&self, ev: FileEvent) -> bool {
        match self.tx.try_send(ev) {
            Ok(()) => true,
            Err(TrySendError::Full(ev) | TrySendError::Disconnected(ev)) => {
                lock(&self.shared.dropped).insert(ev.seq, row::last_seq(&ev));
                self.shared.overflowed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The highest seq durable in the database (0: none yet). Every seq up to it that was
    /// submitted is stored, or covered by a gap record.
    pub fn committed_seq(&self) -> u64 {
        // SYNC POINT (Acquire): pairs with the Release store after each commit.
        self.shared.committed.load(Ordering::Acquire)
    }

    /// Waits until `seq` is committed or `deadline` passes. Returns whether it is committed.
    pub fn wait_committed(&self, seq: u64, deadline: Instant) -> bool {
        let mut g = lock(&self.shared.committed_lock);
        loop {
            if self.committed_seq() >= seq {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .shared
                .committed_cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Whether storing works.
    pub fn health(&self) -> Health {
        lock(&self.shared.health).clone()
    }

    /// The writer's counters.
    pub fn stats(&self) -> WriterStats {
        let s = &self.shared;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            rows: r(&s.rows),
            rows_per_sec: r(&s.rows_per_sec),
            batches: r(&s.batches),
            overflowed: r(&s.overflowed),
            gap_rows: r(&s.gap_rows),
            store_failed: r(&s.store_failed),
            duplicates: r(&s.duplicates),
            retention_removed: r(&s.retention_removed),
        }
    }

    /// Rows, bytes and oldest seq, as the writer keeps them: cheap, no database access.
    pub fn cached(&self) -> Cached {
        let s = &self.shared;
        Cached {
            rows: s.db_rows.load(Ordering::Relaxed),
            bytes: s.db_bytes.load(Ordering::Relaxed),
            oldest: s.oldest_plus1.load(Ordering::Relaxed).checked_sub(1),
        }
    }

    /// Records waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Commits everything submitted before this call (overflow gaps included) and waits
    /// for it.
    ///
    /// # Errors
    /// [`HistoryError::Degraded`] if storing is failing (what was queued is then covered by
    /// the pending `StoreFailed` gap); [`HistoryError::WriterGone`] if the thread stopped.
    pub fn flush(&self) -> Result<(), HistoryError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.ctl.send(Ctl::Flush(tx)).map_err(|_| self.gone())?;
        rx.recv().map_err(|_| self.gone())?;
        match self.health() {
            Health::Ok => Ok(()),
            Health::Degraded { reason, .. } => Err(HistoryError::Degraded {
                path: self.path.clone(),
                reason,
            }),
        }
    }

    /// Commits everything queued and stops the thread (for SIGTERM).
    ///
    /// # Errors
    /// As [`flush`](Self::flush): a degraded store could not take the last records.
    pub fn shutdown(mut self) -> Result<(), HistoryError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sent = self.ctl.send(Ctl::Shutdown(tx)).is_ok();
        let answered = sent && rx.recv().is_ok();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !answered {
            return Err(self.gone());
        }
        match self.health() {
            Health::Ok => Ok(()),
            Health::Degraded { reason, .. } => Err(HistoryError::Degraded {
                path: self.path.clone(),
                reason,
            }),
        }
    }

    /// Sets `PRAGMA max_page_count` on the write connection (`None`: SQLite's maximum), to
    /// simulate a full disk in tests.
    ///
    /// # Errors
    /// [`HistoryError::WriterGone`] if the thread stopped.
    #[doc(hidden)]
    pub fn set_max_page_count(&self, pages: Option<u64>) -> Result<(), HistoryError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.ctl
            .send(Ctl::MaxPageCount(pages, tx))
            .map_err(|_| self.gone())?;
        rx.recv().map_err(|_| self.gone())
    }

    /// Commits what is queued, then runs retention with `limits` now until nothing more
    /// must go (besides the periodic passes with the configured limits). Returns the rows
    /// removed.
    ///
    /// # Errors
    /// [`HistoryError::Sqlite`] if retention fails; [`HistoryError::WriterGone`] if the
    /// thread stopped.
    pub fn retain(&self, limits: Retention) -> Result<u64, HistoryError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.ctl
            .send(Ctl::Retain(limits, tx))
            .map_err(|_| self.gone())?;
        rx.recv().map_err(|_| self.gone())?
    }

    fn gone(&self) -> HistoryError {
        HistoryError::WriterGone {
            path: self.path.clone(),
        }
    }
}

/// The writer thread's state.
struct Thread {
    conn: Connection,
    path: PathBuf,
    config: WriterConfig,
    shared: Arc<Shared>,
    rx: Receiver<FileEvent>,
    ctl: Receiver<Ctl>,
    batch: Vec<FileEvent>,
    /// Dropped seqs taken from `Shared::dropped`, not yet stored as gaps.
    overflow: RangeSet,
    /// Seqs that could not be stored, for `StoreFailed` gaps.
    failed: RangeSet,
    /// Caller gap records held back while degraded.
    pending_gaps: Vec<FileEvent>,
    /// The last gap row inserted for `[StoreFailed, WriterOverflow]`: `(seq, gap_to)`, so
    /// that a run continued in a later batch extends it instead of adding a row.
    last_gap: [Option<(u64, u64)>; 2],
    degraded_since: Option<Instant>,
    next_retry: Instant,
    next_retention: Instant,
    rate_start: Instant,
    rate_rows: u64,
    /// Rows committed since retention last ran (retention at rest only for `max_age`).
    since_retention: u64,
    /// `db_bytes` should be refreshed.
    bytes_due: bool,
    /// The database file as opened, to notice it deleted or replaced under us.
    file: Option<FileIdentity>,
    next_identity_check: Instant,
    /// The file at the path is no longer the one being written.
    lost_file: bool,
}

/// The (device, inode) of the database file when it was opened.
#[derive(Debug)]
struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn open(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Why the path no longer names this file, if it does not.
    fn check(&self, path: &Path) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => None,
            Ok(_) => Some(format!(
                "the history database {} was replaced by another file while the service ran; records go to the old, unlinked file. Restart the service to use the new one",
                path.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                "the history database {} was deleted while the service ran; records go to an unlinked file and are lost at stop. Restart the service to make a new one",
                path.display()
            )),
            Err(_) => None, // cannot tell (permissions changed): say nothing rather than guess
        }
    }
}

/// What the database holds, as the writer keeps it (no query needed to read it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cached {
    /// Rows (records and gap rows).
    pub rows: u64,
    /// Bytes of pages in use.
    pub bytes: u64,
    /// The oldest seq history reaches back to (`None`: empty or not yet known).
    pub oldest: Option<u64>,
}

impl Thread {
    fn run(&mut self) {
        self.count_rows();
        self.refresh_oldest();
        self.refresh_bytes();
        let mut open = true;
        loop {
            let now = Instant::now();
            // At rest the writer sleeps until the identity check (and age-based
            // retention) is due; retention by rows or bytes only follows commits.
            let mut wake = self.next_identity_check;
            if self.since_retention > 0 || self.rate_rows > 0 {
                wake = wake.min(self.next_retention);
            }
            if self.degraded_since.is_some() {
                wake = wake.min(self.next_retry);
            }
            let timeout = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            let mut ctl = None;
            if open {
                select! {
                    recv(self.rx) -> m => match m {
                        Ok(ev) => self.batch.push(ev),
                        Err(_) => open = false,
                    },
                    recv(self.ctl) -> c => ctl = c.ok(),
                    default(timeout) => {}
                }
            } else {
                // Every handle is gone: store what is left and stop.
                self.drain_all();
                return;
            }
            while self.batch.len() < self.config.batch_rows {
                match self.rx.try_recv() {
                    Ok(ev) => self.batch.push(ev),
                    Err(_) => break,
                }
            }
            self.store();
            match ctl {
                Some(Ctl::Flush(reply)) => {
                    self.drain_all();
                    let _ = reply.send(());
                }
                Some(Ctl::Shutdown(reply)) => {
                    self.drain_all();
                    let _ = reply.send(());
                    return;
                }
                Some(Ctl::MaxPageCount(pages, reply)) => {
                    let n = pages.unwrap_or(u64::from(u32::MAX - 1));
                    if let Err(e) =
                        self.conn
                            .query_row(&format!("PRAGMA max_page_count = {n}"), [], |_| Ok(()))
                    {
                        tracing::warn!(db = %self.path.display(), error = %e, "max_page_count");
                    }
                    let _ = reply.send(());
                }
                Some(Ctl::Retain(limits, reply)) => {
                    self.drain_all();
                    // Whole passes until nothing more must go.
                    let mut r = Ok(0);
                    while let Ok(total) = r {
                        let mut rows = self.shared.db_rows.load(Ordering::Relaxed);
                        let res = retention::run(
                            &mut self.conn,
                            &self.path,
                            &limits,
                            now_ns(),
                            &mut rows,
                        );
                        self.shared.db_rows.store(rows, Ordering::Relaxed);
                        match res {
                            Ok(0) => break,
                            Ok(n) => r = Ok(total + n),
                            Err(e) => r = Err(e),
                        }
                    }
                    if let Ok(n) = r {
                        self.shared
                            .retention_removed
                            .fetch_add(n, Ordering::Relaxed);
                    }
                    self.refresh_oldest();
                    self.bytes_due = true;
                    let _ = reply.send(r);
                }
                None => {}
            }
            self.periodic();
        }
    }

    /// Stores everything queued right now, a batch at a time; when degraded, makes one
    /// attempt to store even if the backoff has not passed.
    fn drain_all(&mut self) {
        if self.degraded_since.is_some() {
            self.next_retry = Instant::now();
        }
        loop {
            while self.batch.len() < self.config.batch_rows {
                match self.rx.try_recv() {
                    Ok(ev) => self.batch.push(ev),
                    Err(_) => break,
                }
            }
            let more = self.batch.len() >= self.config.batch_rows;
            self.store();
            if !more {
                break;
            }
        }
    }

    /// Commits the batch with every pending gap, or folds it into the failed ranges.
    fn store(&mut self) {
        // Taken after the batch was drained: a seq dropped before a queued record was sent
        // is visible here (the mutex orders it), so its gap commits with that record.
        let dropped = lock(&self.shared.dropped).take();
        self.overflow.extend(dropped);
        // Which dropped seqs may commit now without moving `committed` past a record still
        // queued. Records are submitted in seq order, and a seq is added to `dropped`
        // before the next record is sent. If the queue is empty after the take, every
        // record sent before a taken drop has been received. Otherwise only drops below
        // the batch's last record are known to precede everything still queued (a run of
        // drops cannot contain that record, so it ends below it too).
        let safe_below = if self.rx.is_empty() {
            u64::MAX
        } else {
            self.batch.iter().map(row::last_seq).max().unwrap_or(0)
        };
        let later = self.overflow.split_off(safe_below);
        let nothing = self.batch.is_empty()
            && self.overflow.is_empty()
            && self.failed.is_empty()
            && self.pending_gaps.is_empty();
        if nothing {
            self.overflow.extend(later);
            return;
        }
        if self.degraded_since.is_some() && Instant::now() < self.next_retry {
            self.fold_batch();
            self.overflow.extend(later);
            return;
        }
        let had_records = !self.batch.is_empty();
        let result = self.commit();
        if result.is_ok() {
            self.overflow = later;
        } else {
            self.overflow.extend(later);
        }
        match result {
            Ok(c) => {
                self.last_gap = c.last_gap;
                if self.shared.oldest_plus1.load(Ordering::Relaxed) == 0 {
                    self.refresh_oldest();
                }
                let s = &self.shared;
                s.rows.fetch_add(c.rows, Ordering::Relaxed);
                s.gap_rows.fetch_add(c.gaps, Ordering::Relaxed);
                s.duplicates.fetch_add(c.duplicates, Ordering::Relaxed);
                s.batches.fetch_add(1, Ordering::Relaxed);
                s.db_rows.fetch_add(c.rows, Ordering::Relaxed);
                self.rate_rows += c.rows;
                self.since_retention += c.rows;
                self.bytes_due = true;
                self.failed = RangeSet::default();
                self.pending_gaps.clear();
                self.batch.clear();
                if c.max_seq > s.committed.load(Ordering::Relaxed) {
                    // SYNC POINT (Release): the commit happened before; pairs with the
                    // Acquire in `committed_seq`.
                    s.committed.store(c.max_seq, Ordering::Release);
                    let _g = lock(&s.committed_lock);
                    s.committed_cv.notify_all();
                }
                // A retry that stored only gap rows does not end the episode: the next
                // records may still fail (a nearly full disk takes a small gap row).
                if let Some(since) = self.degraded_since.take_if(|_| had_records) {
                    tracing::info!(
                        db = %self.path.display(),
                        after = ?since.elapsed(),
                        "history storing resumed"
                    );
                    *lock(&s.health) = Health::Ok;
                }
            }
            Err(e) => {
                let reason = format!("cannot store in {}: {e}", self.path.display());
                if self.degraded_since.is_none() {
                    tracing::error!(
                        db = %self.path.display(),
                        error = %e,
                        "history storing failed; records are streamed but not stored until it works again (retrying every {:?})",
                        self.config.retry_backoff
                    );
                    self.degraded_since = Some(Instant::now());
                    *lock(&self.shared.health) = Health::Degraded {
                        reason,
                        since: SystemTime::now(),
                    };
                } else if let Health::Degraded { reason: r, .. } = &mut *lock(&self.shared.health) {
                    *r = reason;
                }
                self.next_retry = Instant::now() + self.config.retry_backoff;
                self.fold_batch();
            }
        }
    }

    /// Moves the batch into the failed ranges (and caller gaps aside, up to a cap).
    fn fold_batch(&mut self) {
        let mut n = 0;
        for ev in self.batch.drain(..) {
            if ev.gap.is_some() && self.pending_gaps.len() < MAX_PENDING_GAPS {
                self.pending_gaps.push(ev);
            } else {
                self.failed.insert(ev.seq, row::last_seq(&ev));
                n += 1;
            }
        }
        self.shared.store_failed.fetch_add(n, Ordering::Relaxed);
    }

    fn commit(&mut self) -> rusqlite::Result<Committed> {
        let now = now_ns();
        let mut c = Committed::default();
        let tx = self.conn.transaction()?;
        let put = |ev: &FileEvent, c: &mut Committed| -> rusqlite::Result<()> {
            if row::insert(&tx, ev)? {
                c.rows += 1;
            } else {
                c.duplicates += 1;
            }
            c.max_seq = c.max_seq.max(row::last_seq(ev));
            Ok(())
        };
        for (i, (reason, set)) in [
            (GapReason::StoreFailed, &self.failed),
            (GapReason::WriterOverflow, &self.overflow),
        ]
        .into_iter()
        .enumerate()
        {
            let mut last = self.last_gap[i];
            for (from, to) in set.iter() {
                match last {
                    // Continues the previous gap row of this reason: extend that row.
                    Some((seq, end))
                        if end.checked_add(1) == Some(from)
                            && tx.execute(
                                "UPDATE events SET gap_to = ?2 WHERE seq = ?1 AND gap_to = ?3",
                                rusqlite::params![seq as i64, to as i64, end as i64],
                            )? == 1 =>
                    {
                        // (If retention removed that row meanwhile, a new row is added.)
                        c.max_seq = c.max_seq.max(to);
                        last = Some((seq, to));
                    }
                    _ => {
                        put(&row::gap(from, to, reason, now), &mut c)?;
                        c.gaps += 1;
                        last = Some((from, to));
                    }
                }
            }
            c.last_gap[i] = last;
        }
        for ev in self.pending_gaps.iter().chain(self.batch.iter()) {
            put(ev, &mut c)?;
        }
        tx.commit()?;
        Ok(c)
    }

    fn periodic(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.rate_start) >= Duration::from_secs(1) {
            let secs = now.duration_since(self.rate_start).as_secs_f64();
            self.shared
                .rows_per_sec
                .store((self.rate_rows as f64 / secs) as u64, Ordering::Relaxed);
            self.rate_rows = 0;
            self.rate_start = now;
            if self.bytes_due {
                self.refresh_bytes();
            }
        }
        if self.degraded_since.is_some() && now >= self.next_retry {
            // Retry with nothing new queued: store the pending gaps.
            self.store();
        }
        let at_rest_due = now >= self.next_identity_check;
        if at_rest_due {
            self.next_identity_check = now + self.config.identity_check;
            self.check_identity();
        }
        let retention_due = now >= self.next_retention
            && (self.since_retention > 0
                || (at_rest_due && self.config.retention.max_age.is_some()));
        if retention_due {
            self.next_retention = now + self.config.retention_interval;
            self.since_retention = 0;
            if self.degraded_since.is_none() && self.config.retention.is_active() {
                let mut rows = self.shared.db_rows.load(Ordering::Relaxed);
                let res = retention::run(
                    &mut self.conn,
                    &self.path,
                    &self.config.retention,
                    now_ns(),
                    &mut rows,
                );
                self.shared.db_rows.store(rows, Ordering::Relaxed);
                match res {
                    Ok(n) => {
                        if n > 0 {
                            self.refresh_oldest();
                            self.bytes_due = true;
                        }
                        self.shared
                            .retention_removed
                            .fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(db = %self.path.display(), error = %e, "history retention failed")
                    }
                }
            }
        }
    }

    /// Counts the rows once (at start; from then on commits and retention keep the count).
    fn count_rows(&mut self) {
        match self
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
        {
            Ok(n) => self.shared.db_rows.store(n as u64, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(db = %self.path.display(), error = %e, "counting history rows")
            }
        }
    }

    fn refresh_oldest(&mut self) {
        let oldest = retention::oldest(&self.conn, &self.path).ok().flatten();
        self.shared
            .oldest_plus1
            .store(oldest.map_or(0, |o| o.saturating_add(1)), Ordering::Relaxed);
    }

    fn refresh_bytes(&mut self) {
        self.bytes_due = false;
        if let Ok(b) = retention::used_bytes(&self.conn, &self.path) {
            self.shared.db_bytes.store(b, Ordering::Relaxed);
        }
    }

    /// Notices the database file deleted or replaced under the service: storing is then
    /// reported degraded (status names the file and what to do), as it is in effect.
    fn check_identity(&mut self) {
        let Some(id) = &self.file else { return };
        match id.check(&self.path) {
            Some(reason) => {
                if !self.lost_file {
                    tracing::error!("{reason}");
                    self.lost_file = true;
                }
                // Set again at every check (a storage episode ending must not clear it),
                // keeping when it was first seen.
                let mut health = lock(&self.shared.health);
                let since = match &*health {
                    Health::Degraded { reason: r, since } if *r == reason => *since,
                    _ => SystemTime::now(),
                };
                *health = Health::Degraded { reason, since };
            }
            None if self.lost_file => {
                self.lost_file = false;
                if self.degraded_since.is_none() {
                    *lock(&self.shared.health) = Health::Ok;
                }
            }
            None => {}
        }
    }
}

/// What one commit stored.
#[derive(Default)]
struct Committed {
    last_gap: [Option<(u64, u64)>; 2],
    rows: u64,
    gaps: u64,
    duplicates: u64,
    max_seq: u64,
}

impl Drop for HistoryWriter {
    fn drop(&mut self) {
        // The thread sees the queue close and stores what is left; it is not waited for,
        // so a drop never blocks the caller.
        let _ = self.thread.take();
    }
}
