//! History queries: a small pool of worker threads that pull pages, and each connection's
//! queue of queries, answered in order, one page in flight at a time.
//!
//! The control loop never runs a query itself: it hands a query's [`QueryRows`] to a worker
//! with a [`PageBudget`], and gets it back with the page through a channel (and one byte on
//! a socket pair, to wake its poll). A page is asked for only while the client's output
//! queue has room, so no answer is ever held whole in memory, and a client that does not
//! read gets no more work done for it.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::info::{PageBudget, QueryRows, QueryStep};
use crate::control::wire::QueryEnd;
use crate::record::FileEvent;

/// How long a query waiting for its range to be committed waits before it is pulled again.
pub(crate) const PENDING_RETRY: Duration = Duration::from_millis(5);

/// Queries one connection may have waiting or running; more are answered `Unavailable`.
pub(crate) const MAX_QUERIES: usize = 4;

/// One page of work for a worker.
struct Job {
    token: u64,
    id: u64,
    rows: Box<dyn QueryRows>,
    budget: PageBudget,
}

/// A page a worker pulled.
pub(crate) struct Done {
    /// The connection.
    pub(crate) token: u64,
    /// The query.
    pub(crate) id: u64,
    /// The query, for its next page.
    pub(crate) rows: Box<dyn QueryRows>,
    /// The rows.
    pub(crate) page: Vec<FileEvent>,
    /// What comes next.
    pub(crate) step: QueryStep,
}

/// The workers.
pub(crate) struct QueryPool {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    wake: UnixStream,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryPool")
            .field("workers", &self.threads.len())
            .finish()
    }
}

impl QueryPool {
    /// Starts `workers` threads (at least one).
    pub(crate) fn start(workers: usize) -> std::io::Result<Self> {
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Job>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
        let (wake, poke) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        poke.set_nonblocking(true)?;
        let poke = std::sync::Arc::new(poke);
        let mut threads = Vec::new();
        for n in 0..workers.max(1) {
            let (rx, tx, poke) = (jobs_rx.clone(), done_tx.clone(), poke.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("firehose-query-{n}"))
                    .spawn(move || work(&rx, &tx, &poke))?,
            );
        }
        Ok(QueryPool {
            jobs: Some(jobs_tx),
            done: done_rx,
            wake,
            threads,
        })
    }

    /// Hands one page of `rows` to a worker.
    pub(crate) fn submit(&self, token: u64, id: u64, rows: Box<dyn QueryRows>, budget: PageBudget) {
        if let Some(tx) = &self.jobs {
            // The workers live as long as the pool: a send cannot fail while it exists.
            let _ = tx.send(Job {
                token,
                id,
                rows,
                budget,
            });
        }
    }

    /// Readable when a page is done.
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The pages done since the last call.
    pub(crate) fn take_done(&self) -> Vec<Done> {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n == buf.len()) {}
        self.done.try_iter().collect()
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        // Each worker finishes the (bounded) page it is on, then sees the channel close.
        drop(self.jobs.take());
        for t in self.threads.drain(..) {
            let _ = t.join(); // a worker's panic was already answered as Unavailable
        }
    }
}

fn work(jobs: &Receiver<Job>, done: &Sender<Done>, poke: &UnixStream) {
    while let Ok(mut job) = jobs.recv() {
        let mut page = Vec::new();
        // A query that panics (a bug in the service's QueryRows) ends as Unavailable; the
        // worker and every other query go on.
        let step = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job.rows.next_rows(&mut page, job.budget)
        })) {
            Ok(step) => step,
            Err(_) => {
                tracing::error!("a history query panicked; it is answered as unavailable");
                page.clear();
                QueryStep::Done(QueryEnd::Unavailable)
            }
        };
        let d = Done {
            token: job.token,
            id: job.id,
            rows: job.rows,
            page,
            step,
        };
        if done.send(d).is_err() {
            return; // the pool is gone
        }
        use nix::sys::socket::{send, MsgFlags};
        // WouldBlock: a wake is pending already.
        let _ = send(
            poke.as_raw_fd(),
            &[1],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
    }
}

/// One query of a connection.
pub(crate) struct Query {
    pub(crate) id: u64,
    /// `None` while a worker holds it.
    rows: Option<Box<dyn QueryRows>>,
    /// A pending query is pulled again from then on.
    retry_at: Option<Instant>,
}

/// A connection's queries, answered in the order they came.
#[derive(Default)]
pub(crate) struct ConnQueries {
    queue: VecDeque<Query>,
}

impl std::fmt::Debug for ConnQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} queries", self.queue.len())
    }
}

/// What to do with a page a worker pulled.
pub(crate) enum Outcome {
    /// Send these rows (maybe none); the query goes on.
    Rows(Vec<FileEvent>),
    /// Send these rows, then the end; the query is over.
    End(Vec<FileEvent>, QueryEnd),
}

impl ConnQueries {
    /// Whether another query may be queued.
    pub(crate) fn has_room(&self) -> bool {
        self.queue.len() < MAX_QUERIES
    }

    /// Queues a query.
    pub(crate) fn push(&mut self, id: u64, rows: Box<dyn QueryRows>) {
        self.queue.push_back(Query {
            id,
            rows: Some(rows),
            retry_at: None,
        });
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Forgets every query (the connection is closing).
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    /// The front query's next page to hand a worker, if it is idle and due.
    pub(crate) fn next_job(&mut self, now: Instant) -> Option<(u64, Box<dyn QueryRows>)> {
        let q = self.queue.front_mut()?;
        if q.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        let rows = q.rows.take()?;
        q.retry_at = None;
        Some((q.id, rows))
    }

    /// When the front query, waiting for its range to be committed, is due again.
    pub(crate) fn due(&self) -> Option<Instant> {
        let q = self.queue.front()?;
        q.rows.as_ref()?;
        q.retry_at
    }

    /// Whether the front query is idle and due now (for the poll's timeout).
    pub(crate) fn ready(&self, now: Instant) -> bool {
        self.queue
            .front()
            .is_some_and(|q| q.rows.is_some() && q.retry_at.is_none_or(|t| now >= t))
    }

    /// A worker brought the front query back with a page.
    pub(crate) fn done(&mut self, d: Done, now: Instant) -> Option<Outcome> {
        let q = self.queue.front_mut()?;
        if q.id != d.id || q.rows.is_some() {
            return None;
        }
        match d.step {
            QueryStep::More => {
                q.rows = Some(d.rows);
                Some(Outcome::Rows(d.page))
            }
            QueryStep::Pending => {
                q.rows = Some(d.rows);
                q.retry_at = Some(now + PENDING_RETRY);
                Some(Outcome::Rows(d.page))
            }
            QueryStep::Done(end) => {
                self.queue.pop_front();
                Some(Outcome::End(d.page, end))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives `pages` pages of one row each, then ends.
    struct Counting {
        left: u32,
        pending_first: bool,
    }

    impl QueryRows for Counting {
        fn next_rows(&mut self, out: &mut Vec<FileEvent>, _b: PageBudget) -> QueryStep {
            if std::mem::take(&mut self.pending_first) {
                return QueryStep::Pending;
            }
            if self.left == 0 {
                return QueryStep::Done(QueryEnd::Complete);
            }
            self.left -= 1;
            out.push(FileEvent {
                seq: 1,
                time_ns: 0,
                kind: crate::record::EventKind::Create,
                path: b"/x".to_vec(),
                path_to: None,
                rule: 0,
                size: None,
                reconciled: false,
                blind: None,
                gap: None,
            });
            QueryStep::More
        }
    }

    struct Panics;
    impl QueryRows for Panics {
        fn next_rows(&mut self, _out: &mut Vec<FileEvent>, _b: PageBudget) -> QueryStep {
            panic!("a buggy query");
        }
    }

    const B: PageBudget = PageBudget {
        rows: 10,
        bytes: 1 << 20,
    };

    fn run_one(pool: &QueryPool, qs: &mut ConnQueries) -> Option<Outcome> {
        let now = Instant::now();
        let (id, rows) = qs.next_job(now)?;
        pool.submit(1, id, rows, B);
        loop {
            let done = pool.take_done();
            if let Some(d) = done.into_iter().next() {
                return qs.done(d, Instant::now());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn pages_come_back_in_order_one_at_a_time_and_pending_waits() {
        let pool = QueryPool::start(2).unwrap();
        let mut qs = ConnQueries::default();
        qs.push(
            7,
            Box::new(Counting {
                left: 2,
                pending_first: true,
            }),
        );
        qs.push(
            8,
            Box::new(Counting {
                left: 0,
                pending_first: false,
            }),
        );
        assert!(matches!(run_one(&pool, &mut qs), Some(Outcome::Rows(r)) if r.is_empty()));
        // Pending: not due at once.
        assert!(qs.next_job(Instant::now()).is_none());
        assert!(qs.due().is_some());
        std::thread::sleep(PENDING_RETRY);
        let mut rows = 0;
        loop {
            match run_one(&pool, &mut qs) {
                Some(Outcome::Rows(r)) => rows += r.len(),
                Some(Outcome::End(_, end)) => {
                    assert_eq!(end, QueryEnd::Complete);
                    break;
                }
                None => panic!("the front query went missing"),
            }
        }
        assert_eq!(rows, 2);
        // The second query follows.
        assert!(matches!(
            run_one(&pool, &mut qs),
            Some(Outcome::End(_, QueryEnd::Complete))
        ));
        assert!(qs.is_empty());
    }

    #[test]
    fn a_query_that_panics_ends_unavailable_and_the_pool_goes_on() {
        let pool = QueryPool::start(1).unwrap();
        let mut qs = ConnQueries::default();
        qs.push(1, Box::new(Panics));
        qs.push(
            2,
            Box::new(Counting {
                left: 0,
                pending_first: false,
            }),
        );
        assert!(matches!(
            run_one(&pool, &mut qs),
            Some(Outcome::End(_, QueryEnd::Unavailable))
        ));
        assert!(matches!(
            run_one(&pool, &mut qs),
            Some(Outcome::End(_, QueryEnd::Complete))
        ));
    }
}
