//! What the control socket asks the service beyond the ring: history bounds for the
//! welcome, history queries (page by page, on the query workers' own read-only
//! connections, concurrent with the writer), and the service's part of the status report.
//!
//! Everything the control loop calls here reads cached values: the writer keeps the row
//! count, bytes and oldest seq ([`HistoryWriter::cached`]); no statement runs on the loop.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firehose_transport::control::server::{PageBudget, QueryRows, QueryStep, ServiceInfo};
use firehose_transport::control::wire::{HistoryQuery, QueryEnd, Status};
use firehose_transport::publisher::PublisherStats;
use firehose_transport::record::FileEvent;

use super::pipeline::PipelineStats;
use crate::history::{Health, HistoryReader, HistoryWriter};
use crate::lease::{Lease, LeaseHealth};
use crate::watch::Watcher;

/// How long a backfill waits for its range to be committed before it is answered with
/// what is there.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// The service's [`ServiceInfo`].
#[derive(Debug)]
pub struct Info {
    /// The database.
    pub db: PathBuf,
    /// The writer (commit progress, health, counters, cached sizes).
    pub writer: Arc<HistoryWriter>,
    /// The lease (its health).
    pub lease: Arc<Lease>,
    /// The watcher (unwatched directories), if any.
    pub watcher: Option<Arc<Watcher>>,
    /// The pipeline's counters and rules.
    pub stats: Arc<PipelineStats>,
    /// The ring owner's counters.
    pub published: Arc<PublisherStats>,
}

impl ServiceInfo for Info {
    fn history_bounds(&self) -> (u64, u64) {
        let oldest = self.writer.cached().oldest.unwrap_or(0);
        (oldest, self.writer.committed_seq())
    }

    fn query(&self, q: &HistoryQuery) -> Box<dyn QueryRows> {
        // Nothing is opened here: the worker that pulls the first page opens the reader.
        Box::new(Answer {
            db: self.db.clone(),
            reader: None,
            q: q.clone(),
            next_lo: q.seq.map_or(0, |(lo, _)| lo),
            paged: false,
            sent: 0,
            oldest: self.writer.cached().oldest,
            writer: self.writer.clone(),
            next_seq: self.stats.next_seq.load(Ordering::Relaxed),
            waiting_since: None,
        })
    }

    fn status(&self, st: &mut Status) {
        let rules = self
            .stats
            .rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(rules) = &rules {
            st.roots = rules
                .roots()
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            st.rules = rules.rules().len() as u32;
        }
        (st.rate_per_s, st.rate_per_min) = self.stats.rates.read();
        st.next_seq = self.stats.next_seq.load(Ordering::Relaxed);
        let ws = self.writer.stats();
        let cached = self.writer.cached();
        st.history_rows = cached.rows;
        st.history_bytes = cached.bytes;
        st.history_rows_per_s = ws.rows_per_sec;
        st.storage = "ok".into();
        let c = &mut st.counters;
        c.records = self.stats.records.load(Ordering::Relaxed);
        c.overflows = self.stats.overflows.load(Ordering::Relaxed);
        c.not_stored = ws.store_failed;
        let p = &self.published;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        c.not_streamed = r(&p.refused) + r(&p.failed) + r(&p.dropped_at_finish);
        c.writer_overflowed = ws.overflowed;
        c.retention_removed = ws.retention_removed;
        c.lease_blocked = self.stats.lease_blocked.load(Ordering::Relaxed);
        let mut problems = Vec::new();
        if let Health::Degraded { reason, .. } = self.writer.health() {
            st.storage = format!("degraded: {reason}");
            problems.push(format!("storage degraded: {reason}"));
        }
        if let LeaseHealth::Failing { reason, .. } = self.lease.health() {
            problems.push(format!(
                "seq lease failing (publishing stops at seq {}): {reason}",
                self.lease.end()
            ));
        }
        if let Some(w) = &self.watcher {
            let ws = w.status();
            st.backend = if ws.backend_detail.is_empty() {
                ws.backend.name().to_string()
            } else {
                format!("{}: {}", ws.backend.name(), ws.backend_detail)
            };
            let shown = |p: &[PathBuf], n: usize| -> Vec<String> {
                p.iter().take(n).map(|p| p.display().to_string()).collect()
            };
            st.unwatched = shown(&ws.unwatched, Status::UNWATCHED_LISTED);
            st.unwatched_count = ws.unwatched_count as u64;
            st.roots_gone = shown(&ws.gone_roots, usize::MAX);
            if ws.unwatched_count > 0 {
                problems.push(format!(
                    "{} directories unwatched ({}), e.g. {}",
                    ws.unwatched_count,
                    match ws.backend {
                        crate::watch::Backend::Inotify => "inotify watch limit or permissions",
                        crate::watch::Backend::Fanotify => "a filesystem fanotify cannot mark",
                    },
                    ws.unwatched
                        .iter()
                        .take(3)
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !ws.gone_roots.is_empty() {
                problems.push(format!(
                    "roots gone: {}",
                    ws.gone_roots
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if let Some(e) = self
            .stats
            .last_reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            problems.push(format!("last filter reload rejected: {e}"));
        }
        st.health = if problems.is_empty() {
            "ok".into()
        } else {
            problems.join("; ")
        };
    }
}

/// One query being answered, page by page (keyset by seq: each page is a fresh cursor over
/// what is left of the range, one short read transaction).
struct Answer {
    db: PathBuf,
    /// Opened by the first pull, on a query worker.
    reader: Option<HistoryReader>,
    q: HistoryQuery,
    /// The lowest seq not yet scanned.
    next_lo: u64,
    /// A page was read: later pages leave out the gap row below their start (the first
    /// page sent it if the query's range starts inside a gap).
    paged: bool,
    sent: u64,
    /// Oldest seq history held when the query began.
    oldest: Option<u64>,
    writer: Arc<HistoryWriter>,
    /// Seqs below this were given out when the query began.
    next_seq: u64,
    waiting_since: Option<Instant>,
}

impl QueryRows for Answer {
    fn next_rows(&mut self, out: &mut Vec<FileEvent>, budget: PageBudget) -> QueryStep {
        // A backfill of a range that is given out but not yet committed waits for it.
        if let Some((_, hi)) = self.q.seq {
            let want = hi.min(self.next_seq.saturating_sub(1));
            if want > self.writer.committed_seq() {
                let since = *self.waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() < COMMIT_WAIT {
                    return QueryStep::Pending;
                }
            }
        }
        let hi = self.q.seq.map_or(u64::MAX >> 1, |(_, hi)| hi);
        if self.next_lo > hi {
            return QueryStep::Done(self.end());
        }
        let mut page = self.q.clone();
        page.seq = Some((self.next_lo, hi));
        page.limit = if self.q.limit == 0 {
            0
        } else {
            self.q.limit - self.sent
        };
        let before = out.len();
        if self.reader.is_none() {
            match HistoryReader::open(&self.db) {
                Ok(r) => self.reader = Some(r),
                Err(e) => {
                    tracing::error!("cannot open the history database for a query: {e}");
                    return QueryStep::Done(QueryEnd::Unavailable);
                }
            }
        }
        let Some(reader) = &self.reader else {
            return QueryStep::Done(QueryEnd::Unavailable);
        };
        let mut cursor = match reader.query(&page, false) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("a history query failed: {e}");
                return QueryStep::Done(QueryEnd::Unavailable);
            }
        };
        if std::mem::replace(&mut self.paged, true) {
            cursor.skip_lead_gap();
        }
        let end = match cursor.next_page_within(out, budget.rows, budget.bytes) {
            Ok(end) => end,
            Err(e) => {
                tracing::error!("a history query failed: {e}");
                return QueryStep::Done(QueryEnd::Unavailable);
            }
        };
        // Carry on after everything this page scanned, matched or not.
        self.next_lo = self.next_lo.max(cursor.remaining().0);
        self.sent += (out.len() - before) as u64;
        if let Some(last) = out[before..].last() {
            // Never back: a gap row from below the range's start has a lower seq.
            self.next_lo = self.next_lo.max(last.seq + 1);
        }
        match end {
            None => QueryStep::More,
            Some(QueryEnd::Complete) => QueryStep::Done(self.end()),
            Some(other) => QueryStep::Done(other),
        }
    }
}

impl Answer {
    fn end(&self) -> QueryEnd {
        let lo = self.q.seq.map_or(0, |(lo, _)| lo);
        match self.oldest {
            Some(oldest) if lo < oldest && self.q.seq.is_some() => QueryEnd::Truncated { oldest },
            _ => QueryEnd::Complete,
        }
    }
}
