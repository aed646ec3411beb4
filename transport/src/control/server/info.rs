//! What the service knows beyond the ring, as the control server asks for it.
//!
//! The control loop serves everyone, so it may only do cheap, bounded things: read cached
//! values ([`ServiceInfo::history_bounds`], [`ServiceInfo::status`]) and make query
//! objects ([`ServiceInfo::query`]). The rows themselves are pulled on the query workers
//! ([`super::queries`]), one bounded page at a time.

use crate::control::wire::{HistoryQuery, QueryEnd, Status};
use crate::record::FileEvent;

/// The service's history and the rest of its status.
pub trait ServiceInfo: Send {
    /// Oldest seq history holds, and newest committed seq. Called on the control loop:
    /// cached values only, no database work.
    fn history_bounds(&self) -> (u64, u64);
    /// Starts answering a query. Called on the control loop: no database work here (open
    /// nothing, scan nothing); the rows are pulled on a query worker.
    fn query(&self, q: &HistoryQuery) -> Box<dyn QueryRows>;
    /// Fills the service-specific parts of a status (roots, rules, history rows, health).
    /// Called on the control loop: cached values only.
    fn status(&self, status: &mut Status);
}

/// How much one pull of a query's rows may give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageBudget {
    /// Most rows.
    pub rows: usize,
    /// Most bytes of rows, as [`row_len`](crate::control::wire::row_len) counts them.
    pub bytes: usize,
}

/// What one pull of a query's rows gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryStep {
    /// Rows were appended (maybe none); pull again.
    More,
    /// Nothing can be had now (a backfill waiting for its range to be committed): pull
    /// again a little later.
    Pending,
    /// Finished: every row was appended.
    Done(QueryEnd),
}

/// A query being answered, page by page, on a query worker.
pub trait QueryRows: Send {
    /// Appends rows in seq order to `out`, within `budget`. Each call must do a bounded
    /// amount of work (a selective filter over a long range returns with few rows, or none,
    /// and [`QueryStep::More`]), so that no query holds a worker for long.
    fn next_rows(&mut self, out: &mut Vec<FileEvent>, budget: PageBudget) -> QueryStep;
}

/// A query answered at once with `end` and no rows.
#[derive(Debug)]
pub struct NoRows(pub QueryEnd);

impl QueryRows for NoRows {
    fn next_rows(&mut self, _out: &mut Vec<FileEvent>, _budget: PageBudget) -> QueryStep {
        QueryStep::Done(self.0)
    }
}

/// A ring without history.
#[derive(Debug, Default)]
pub struct NoHistory;

impl ServiceInfo for NoHistory {
    fn history_bounds(&self) -> (u64, u64) {
        (0, 0)
    }
    fn query(&self, _q: &HistoryQuery) -> Box<dyn QueryRows> {
        Box::new(NoRows(QueryEnd::Unavailable))
    }
    fn status(&self, status: &mut Status) {
        status.health = "ok (no history)".into();
    }
}
