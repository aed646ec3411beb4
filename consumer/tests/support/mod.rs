//! A small in-test service built with the transport alone (the consumer may not depend on
//! the producer): a [`Server`] over a memfd ring, and a [`ServiceInfo`] backed by an
//! in-memory history that answers seq-range queries page by page, with gap rows,
//! `Truncated` below its oldest row and `Pending` for seqs not yet "committed".

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use firehose_transport::control::place::{bind, Access};
use firehose_transport::control::server::{
    PageBudget, QueryRows, QueryStep, Server, ServerConfig, ServiceInfo,
};
use firehose_transport::control::wire::{HistoryQuery, QueryEnd, Status};
use firehose_transport::publisher::{Item, Publisher, PublisherConfig};
use firehose_transport::record::{EventKind, FileEvent, GapInfo, GapReason};
use firehose_transport::ring::{Producer, RingConfig};

/// The fake history: rows in seq order.
#[derive(Debug, Default)]
pub struct History {
    pub rows: Vec<FileEvent>,
    /// Oldest seq held (queries below it answer `Truncated`).
    pub oldest: u64,
    /// Newest committed seq: queries past it wait.
    pub committed: u64,
    /// While set, a query's next page does not come (a slow statement on a huge table).
    pub hold_queries: Arc<AtomicBool>,
}

pub type SharedHistory = Arc<Mutex<History>>;

pub fn history() -> SharedHistory {
    Arc::new(Mutex::new(History {
        oldest: 1,
        ..History::default()
    }))
}

/// A record as the tests make them: path `/w/<seq>` (or `name` if given).
pub fn event(seq: u64, kind: EventKind) -> FileEvent {
    FileEvent {
        seq,
        time_ns: 1_780_000_000_000_000_000 + seq,
        kind,
        path: format!("/w/f{seq}").into_bytes(),
        path_to: None,
        rule: 1,
        size: Some(seq),
        reconciled: false,
        blind: None,
        gap: None,
    }
}

pub fn gap_row(from: u64, to: u64, reason: GapReason) -> FileEvent {
    FileEvent {
        seq: from,
        time_ns: 1_780_000_000_000_000_000 + from,
        kind: EventKind::Gap,
        path: Vec::new(),
        path_to: None,
        rule: 0,
        size: None,
        reconciled: false,
        blind: None,
        gap: Some(GapInfo { to, reason }),
    }
}

fn matches_glob(glob: &str, path: &[u8]) -> bool {
    // `*` matches any run of bytes; enough for the tests.
    let parts: Vec<&[u8]> = glob.as_bytes().split(|&b| b == b'*').collect();
    let mut rest = path;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            if !rest.starts_with(p) {
                return false;
            }
            rest = &rest[p.len()..];
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else if let Some(at) = rest.windows(p.len().max(1)).position(|w| w == *p) {
            rest = &rest[at + p.len()..];
        } else {
            return false;
        }
    }
    rest.is_empty()
}

struct Info {
    h: SharedHistory,
}

struct Rows {
    h: SharedHistory,
    q: HistoryQuery,
    cursor: u64,
    sent: u64,
    started: bool,
}

impl QueryRows for Rows {
    fn next_rows(&mut self, out: &mut Vec<FileEvent>, budget: PageBudget) -> QueryStep {
        let max = budget.rows;
        let hold = self.h.lock().unwrap().hold_queries.clone();
        while hold.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let h = self.h.lock().unwrap();
        let (lo, hi) = self.q.seq.unwrap_or((0, u64::MAX));
        if !self.started {
            self.started = true;
            self.cursor = lo;
            if lo < h.oldest && self.q.seq.is_some() {
                return QueryStep::Done(QueryEnd::Truncated { oldest: h.oldest });
            }
            // As the service does: a range starting inside a gap gets the gap row first.
            let at = h.rows.partition_point(|r| r.seq < lo);
            if let Some(g) = at.checked_sub(1).map(|i| &h.rows[i]) {
                if self.q.seq.is_some() && g.gap.is_some_and(|i| i.to >= lo) {
                    out.push(g.clone());
                    self.sent += 1;
                }
            }
        }
        let limit = if self.q.limit == 0 {
            u64::MAX
        } else {
            self.q.limit
        };
        let start = h.rows.partition_point(|r| r.seq < self.cursor);
        for r in &h.rows[start..] {
            if r.seq > hi || r.seq > h.committed {
                break;
            }
            self.cursor = r.seq + 1;
            if let Some((a, b)) = self.q.time_ns {
                if r.time_ns < a || r.time_ns > b {
                    continue;
                }
            }
            if let Some(g) = &self.q.glob {
                if !matches_glob(g, &r.path) {
                    continue;
                }
            }
            if self.q.kinds != 0 && self.q.kinds & (1 << r.kind as u8) == 0 {
                continue;
            }
            out.push(r.clone());
            self.sent += 1;
            if self.sent >= limit {
                return QueryStep::Done(QueryEnd::Limit);
            }
            if out.len() >= max {
                return QueryStep::More;
            }
        }
        if self.q.seq.is_none() || self.cursor > hi || hi <= h.committed {
            if self.cursor <= hi.min(h.committed) {
                self.cursor = hi.min(h.committed).saturating_add(1);
            }
            return QueryStep::Done(QueryEnd::Complete);
        }
        if out.is_empty() {
            QueryStep::Pending
        } else {
            QueryStep::More
        }
    }
}

impl ServiceInfo for Info {
    fn history_bounds(&self) -> (u64, u64) {
        let h = self.h.lock().unwrap();
        (h.oldest, h.committed)
    }
    fn query(&self, q: &HistoryQuery) -> Box<dyn QueryRows> {
        Box::new(Rows {
            h: self.h.clone(),
            q: q.clone(),
            cursor: 0,
            sent: 0,
            started: false,
        })
    }
    fn status(&self, st: &mut Status) {
        let h = self.h.lock().unwrap();
        st.roots = vec!["/w".into()];
        st.rules = 2;
        st.history_rows = h.rows.len() as u64;
        st.health = "ok".into();
        st.storage = "ok".into();
        st.rate_per_min = 5;
        st.unwatched = vec!["/w/deep".into()];
        st.unwatched_count = 2;
        st.counters.overflows = 3;
        st.counters.not_stored = 4;
    }
}

/// A running fake service.
pub struct Fake {
    pub path: PathBuf,
    pub history: SharedHistory,
    publisher: Option<Publisher<FileEvent>>,
    /// The seq the next record gets.
    next: Mutex<u64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub struct Config {
    pub capacity: usize,
    pub first_seq: u64,
    pub instance: [u8; 16],
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 1 << 20,
            first_seq: 1,
            instance: [7; 16],
        }
    }
}

impl Fake {
    pub fn start(path: &Path, history: SharedHistory, cfg: Config) -> Fake {
        let producer = Producer::<FileEvent>::new(RingConfig {
            capacity: cfg.capacity,
            max_record: 1024,
            batch_bytes: 4 << 10,
            lossless_wait: Duration::ZERO,
            first_seq: cfg.first_seq,
        })
        .unwrap();
        let (publisher, link) = Publisher::start(producer, PublisherConfig::default()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let (path, stop, h) = (path.to_path_buf(), stop.clone(), history.clone());
            std::thread::spawn(move || {
                let bound = bind(&path, &Access::default()).unwrap();
                let config = ServerConfig {
                    instance_id: cfg.instance,
                    ..ServerConfig::default()
                };
                let mut server = Server::new(
                    bound.listener.try_clone().unwrap(),
                    link,
                    Box::new(Info { h }),
                    config,
                )
                .unwrap();
                ready_tx.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    server.poll_once(Duration::from_millis(10)).unwrap();
                }
                server.shutdown();
                drop(bound);
            })
        };
        ready_rx.recv().unwrap();
        Fake {
            path: path.to_path_buf(),
            history,
            publisher: Some(publisher),
            next: Mutex::new(cfg.first_seq),
            stop,
            thread: Some(thread),
        }
    }

    fn publisher(&self) -> &Publisher<FileEvent> {
        self.publisher
            .as_ref()
            .expect("the fake service is running")
    }

    /// Hands records to the ring's owner and waits until they are committed.
    fn stream(&self, evs: &[FileEvent]) {
        let p = self.publisher();
        for e in evs {
            p.send(Item::Record {
                seq: e.seq,
                value: e.clone(),
            })
            .unwrap();
        }
        assert!(p.sync(), "the ring's owner is gone");
    }

    /// Publishes `n` records: stored (history, committed at once) and streamed.
    pub fn publish(&self, n: u64, kind: EventKind) -> std::ops::RangeInclusive<u64> {
        let mut next = self.next.lock().unwrap();
        let first = *next;
        let evs: Vec<FileEvent> = (first..first + n).map(|s| event(s, kind)).collect();
        self.store(&evs);
        self.stream(&evs);
        *next = first + n;
        first..=first + n - 1
    }

    /// Publishes these events (their seqs must follow on) into history and the ring.
    pub fn publish_events(&self, evs: &[FileEvent]) {
        let mut next = self.next.lock().unwrap();
        for e in evs {
            assert_eq!(*next, e.seq);
            *next += 1;
        }
        self.store(evs);
        self.stream(evs);
    }

    /// Stores rows in history only (committed).
    pub fn store(&self, evs: &[FileEvent]) {
        let mut h = self.history.lock().unwrap();
        for e in evs {
            h.committed = h.committed.max(e.gap.map_or(e.seq, |g| g.to));
            h.rows.push(e.clone());
        }
    }

    /// Skips seqs in the ring (a ring gap): `next ..= to`.
    pub fn ring_gap(&self, to: u64, reason: GapReason) {
        let mut next = self.next.lock().unwrap();
        let p = self.publisher();
        p.send(Item::Gap {
            to,
            reason: reason.code(),
        })
        .unwrap();
        assert!(p.sync(), "the ring's owner is gone");
        *next = to + 1;
    }

    pub fn next_seq(&self) -> u64 {
        *self.next.lock().unwrap()
    }

    /// The ring's committed seq (everything before it is visible to readers).
    pub fn committed_seq(&self) -> u64 {
        self.publisher().snapshot().map_or(0, |s| s.committed_seq)
    }

    /// Readers attached to the ring now.
    pub fn reader_count(&self) -> usize {
        self.publisher()
            .snapshot()
            .map_or(0, |s| s.readers.iter().filter(|r| !r.departed).count())
    }

    /// Shuts down (clients are told), removes the socket.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        if let Some(p) = self.publisher.take() {
            p.finish();
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A socket path in a fresh private folder.
pub fn socket_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("fhc")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().join("firehose.sock");
    (dir, path)
}

/// Panics if `f` has not returned true before `limit` (a hang guard, not a timing test).
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "watchdog: {what} did not happen");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The watchdog's limit for one test.
pub const WATCHDOG: Duration = Duration::from_secs(60);
