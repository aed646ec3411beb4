//! `Reader`: one connection to the service (one socket, one ring reader), drained one
//! record at a time (iteration), a list at a time (`drain`) or a batch at a time
//! (`drain_batch`), with `fileno()` for a run loop, and status and history on the same
//! connection.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use firehose_consumer::{
    Event, EventKind, HistoryQuery, Loss, Options, Policy, PollFollower, QueryEnd, Start,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::PyDict;

use crate::arrow::{Columns, Row, RowsBuilder};
use crate::batch::Batch;
use crate::error::{client, to_py, Error, InvalidQuery, NoHistory};
use crate::event::{to_notice, to_object};

/// How long a blocking wait sleeps before it looks for a signal (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// At most this many rows in one history page.
const MAX_LIMIT: u64 = 1_000_000;

/// How many events one refill of the iterator takes.
const ITER_CHUNK: usize = 4096;

/// A connection to the service.
///
/// `Reader(socket=None, *, name="python", lossless=False, backfill=None, reconnect=True,
/// start="newest")`: `socket` is the control socket (default: the user's service, else the
/// system one); `start` is "newest", "oldest" or a seq to resume from (`next_seq` of an
/// earlier reader); `backfill` (default: on unless `start` is "newest") fills from history
/// what the ring did not deliver, so every stored record comes exactly once and in order.
///
/// Iterating blocks until the next record or notice (Ctrl-C interrupts it). `drain()` and
/// `drain_batch()` never wait. `fileno()` is readable when a drain has something.
#[pyclass(module = "firehose", subclass)]
#[derive(Debug)]
pub(crate) struct Reader {
    inner: Mutex<Inner>,
    /// `inner.poll`'s epoll fd, read without the lock: it is the same fd for the
    /// `PollFollower`'s whole life, and that lives as long as this value.
    fd: RawFd,
}

#[derive(Debug)]
struct Inner {
    poll: PollFollower,
    /// Converted events the iterator has not handed out yet, each with the seq to resume
    /// from if it is never handed out.
    queue: VecDeque<(Py<PyAny>, u64)>,
    /// The next id for a history query (far above the follower's own backfill ids).
    query_id: u64,
}

fn start_of(start: Option<&Bound<'_, PyAny>>) -> PyResult<Start> {
    let Some(s) = start else {
        return Ok(Start::Newest);
    };
    if let Ok(seq) = s.extract::<u64>() {
        return Ok(Start::Seq(seq));
    }
    match s.extract::<String>()?.as_str() {
        "newest" => Ok(Start::Newest),
        "oldest" => Ok(Start::Oldest),
        other => Err(PyValueError::new_err(format!(
            "start is {other:?}: expected \"newest\", \"oldest\" or a seq"
        ))),
    }
}

fn kinds_mask(kinds: Option<Vec<String>>) -> PyResult<u32> {
    let mut mask = 0u32;
    for k in kinds.unwrap_or_default() {
        let kind = EventKind::from_name(&k).ok_or_else(|| {
            let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
            InvalidQuery::new_err(format!(
                "unknown kind {k:?}: expected one of {}",
                names.join(", ")
            ))
        })?;
        mask |= 1 << kind as u8;
    }
    Ok(mask)
}

/// Where a reader resumes once `ev` is handed out; None if `ev` does not move it.
fn resume_after(ev: &Event<'_>) -> Option<u64> {
    match *ev {
        Event::Record(ref r) => Some(r.seq() + 1),
        // Not past a storage gap: its seqs may still come as records.
        Event::Loss(Loss::Gap { to, .. })
        | Event::Loss(Loss::Lagged { to, .. })
        | Event::Loss(Loss::Missing { to, .. }) => Some(to + 1),
        _ => None,
    }
}

impl Reader {
    /// Locks the reader. A thread that waits for the lock detaches from Python meanwhile:
    /// the holder may be in a detached wait (status, query) and need the GIL back.
    fn lock(&self) -> PyResult<MutexGuard<'_, Inner>> {
        Python::attach(|py| self.inner.lock_py_attached(py))
            .map_err(|_| Error::new_err("the reader was poisoned by a panic in another thread"))
    }
}

impl Reader {
    /// Waits (without the GIL) until the reader's fd is readable or `timeout` passes.
    fn wait_readable(&self, py: Python<'_>, timeout: Duration) {
        let fd = self.fd;
        py.detach(|| {
            // SAFETY: `fd` is `inner.poll`'s epoll fd, which stays open while `self` lives
            // (`PollFollower` never replaces or closes it before it is dropped), and `self`
            // is borrowed for this whole call.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let mut fds = [PollFd::new(borrowed, PollFlags::POLLIN)];
            let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
            let _ = poll(&mut fds, ms);
        });
    }
}

#[pymethods]
impl Reader {
    #[new]
    #[pyo3(signature = (socket=None, *, name="python", lossless=false, backfill=None, reconnect=true, start=None))]
    fn new(
        py: Python<'_>,
        socket: Option<PathBuf>,
        name: &str,
        lossless: bool,
        backfill: Option<bool>,
        reconnect: bool,
        start: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let start = start_of(start)?;
        let mut opts = Options::new()
            .name(name)
            .policy(if lossless {
                Policy::Lossless
            } else {
                Policy::Lagging
            })
            .start(start)
            .reconnect(reconnect);
        if let Some(b) = backfill {
            opts = opts.backfill(b);
        }
        if let Some(s) = socket {
            opts = opts.socket(s);
        }
        let follower = py.detach(|| opts.connect()).map_err(to_py)?;
        let poll = PollFollower::new(follower).map_err(to_py)?;
        let fd = poll.fd().as_raw_fd();
        Ok(Reader {
            fd,
            inner: Mutex::new(Inner {
                poll,
                queue: VecDeque::new(),
                query_id: 1 << 62,
            }),
        })
    }

    /// The fd to wait on (readable: call `drain` or `drain_batch`). Owned by the reader:
    /// do not close it. The same fd for the reader's whole life, across reconnects.
    fn fileno(&self) -> i32 {
        self.fd
    }

    /// The seq after the last event handed out: pass it as `start=` to resume there.
    #[getter]
    fn next_seq(&self) -> PyResult<u64> {
        let inner = self.lock()?;
        // Events queued for the iterator are handed out as far as the follower knows.
        Ok(inner
            .queue
            .front()
            .map_or_else(|| inner.poll.next_seq(), |(_, resume)| *resume))
    }

    /// What has arrived, at most `max` events (records and notices, in order), without
    /// waiting. An empty list: nothing new (wait on `fileno()`).
    #[pyo3(signature = (max=4096))]
    fn drain(&self, py: Python<'_>, max: usize) -> PyResult<Vec<Py<PyAny>>> {
        let mut inner = self.lock()?;
        let n = inner.queue.len().min(max);
        let mut out: Vec<Py<PyAny>> = inner.queue.drain(..n).map(|(o, _)| o).collect();
        if out.len() < max {
            let mut err = None;
            inner
                .poll
                .drain_each(max - out.len(), |ev| match to_object(py, &ev) {
                    Ok(o) => out.push(o),
                    Err(e) => err = Some(e),
                })
                .map_err(to_py)?;
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(out)
    }

    /// What has arrived, at most `max` events, without waiting, as one Arrow batch of its
    /// records (its `notices` hold the rest, in order). Refused while the iterator holds
    /// events it took but has not handed out.
    #[pyo3(signature = (max=65536))]
    fn drain_batch(&self, py: Python<'_>, max: usize) -> PyResult<Batch> {
        let mut inner = self.lock()?;
        if !inner.queue.is_empty() {
            // Handing out newer events around them would break the order.
            return Err(Error::new_err(format!(
                "{} events the iterator took are still queued: iterate or drain() them first",
                inner.queue.len()
            )));
        }
        let mut rows = RowsBuilder::new();
        let mut notices = Vec::new();
        let mut err = None;
        inner
            .poll
            .drain_each(max, |ev| match to_notice(&ev) {
                None => {
                    if let Event::Record(r) = &ev {
                        rows.push(Row {
                            seq: r.seq(),
                            time_ns: r.time_ns(),
                            kind: r.kind(),
                            path: r.path(),
                            path_to: r.path_to(),
                            size: r.size(),
                            rule: r.rule(),
                            reconciled: r.reconciled(),
                            gap: None,
                        });
                    }
                }
                Some(n) => match Py::new(py, n) {
                    Ok(o) => notices.push(o.into_any()),
                    Err(e) => err = Some(e),
                },
            })
            .map_err(to_py)?;
        if let Some(e) = err {
            return Err(e);
        }
        let next_seq = inner.poll.next_seq();
        Ok(Batch::new(rows.finish(), next_seq, false, None, notices))
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        loop {
            if let Some(o) = self.next_nowait(py)? {
                return Ok(o);
            }
            self.wait_readable(py, SIGNAL_CHECK);
            py.check_signals()?;
        }
    }

    /// The next event as iteration would give it, or None at once if nothing has arrived
    /// (then wait on `fileno()`). What `firehose.aio` iterates with.
    fn next_nowait(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let mut inner = self.lock()?;
        if let Some((o, _)) = inner.queue.pop_front() {
            return Ok(Some(o));
        }
        let mut got = VecDeque::new();
        let mut err = None;
        let mut resume = inner.poll.next_seq();
        inner
            .poll
            .drain_each(ITER_CHUNK, |ev| {
                let before = resume;
                resume = resume_after(&ev).unwrap_or(resume);
                match to_object(py, &ev) {
                    Ok(o) => got.push_back((o, before)),
                    Err(e) => err = Some(e),
                }
            })
            .map_err(to_py)?;
        if let Some(e) = err {
            return Err(e);
        }
        let first = got.pop_front().map(|(o, _)| o);
        inner.queue = got;
        Ok(first)
    }

    /// The service's status, as a dict (the fields of `firehose status --json`). Waits up
    /// to 10 s for the answer.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut inner = self.lock()?;
        let poll = &mut inner.poll;
        let st = py
            .detach(|| poll.follower().client().status())
            .map_err(client)?;
        crate::status::to_dict(py, &st)
    }

    /// One page of history, as an Arrow batch. `from_seq`/`to_seq` bound the seqs (both
    /// inclusive), `since_ns`/`until_ns` the times, `glob` the path (globset's syntax: `*`
    /// crosses `/`), `kinds` a list of kind names; at most `limit` rows (1 to 1,000,000).
    /// The batch's `more` says there is more past it: ask again from its `next_seq`. Waits
    /// up to 60 s for the page.
    #[pyo3(signature = (*, from_seq=1, to_seq=None, since_ns=None, until_ns=None, glob=None, kinds=None, limit=65536))]
    #[allow(clippy::too_many_arguments)]
    fn query(
        &self,
        py: Python<'_>,
        from_seq: u64,
        to_seq: Option<u64>,
        since_ns: Option<u64>,
        until_ns: Option<u64>,
        glob: Option<String>,
        kinds: Option<Vec<String>>,
        limit: u64,
    ) -> PyResult<Batch> {
        if limit == 0 || limit > MAX_LIMIT {
            return Err(InvalidQuery::new_err(format!(
                "limit is {limit}: a page has 1 to {MAX_LIMIT} rows"
            )));
        }
        let kinds = kinds_mask(kinds)?;
        let time = (since_ns.is_some() || until_ns.is_some())
            .then(|| (since_ns.unwrap_or(0), until_ns.unwrap_or(u64::MAX)));
        let mut inner = self.lock()?;
        inner.query_id += 1;
        let q = HistoryQuery {
            id: inner.query_id,
            seq: Some((from_seq, to_seq.unwrap_or(u64::MAX))),
            time_ns: time,
            glob: glob.clone(),
            kinds,
            limit,
        };
        let poll = &mut inner.poll;
        let (rows, end) = py
            .detach(|| poll.follower().client().query(q))
            .map_err(client)?;
        let truncated = match end {
            QueryEnd::Unavailable => {
                return Err(NoHistory::new_err(
                    "the service keeps no history (started without a database)",
                ))
            }
            QueryEnd::Invalid => {
                return Err(InvalidQuery::new_err(format!(
                    "the service could not run the query (glob {glob:?})"
                )))
            }
            QueryEnd::Truncated { oldest } => Some(oldest),
            _ => None,
        };
        let next_seq = rows.last().map_or(from_seq, |row| {
            row.gap
                .map_or(row.seq, |g| g.to.max(row.seq))
                .saturating_add(1)
        });
        Ok(Batch::new(
            Columns::of(&rows),
            next_seq,
            end == QueryEnd::Limit,
            truncated,
            Vec::new(),
        ))
    }

    fn __repr__(&self) -> PyResult<String> {
        let inner = self.lock()?;
        Ok(format!("Reader(next_seq={})", inner.poll.next_seq()))
    }
}
