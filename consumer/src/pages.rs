//! Browsing history from a table: [`Paging`] decides which page to ask for next when the
//! user scrolls past the rows held (older pages just below the oldest row, newer pages
//! back down to the live rows, or a jump to a seq or a time). The follower's thread
//! ([`Background::ask`](crate::Background::ask)) asks the service on the follower's own
//! connection, so a UI never waits for history and holds one connection.
//!
//! ```no_run
//! use firehose_consumer::pages::Paging;
//! let bg = firehose_consumer::Options::new().connect()?.into_background(10_000, || {})?;
//! let mut paging = Paging::new(500);
//! if let Some(r) = paging.older(10_000) {
//!     bg.ask(r); // seqs 9500..=9999
//! }
//! // Later, once per frame:
//! if let Some(answer) = bg.try_answer() {
//!     if let Some(req) = paging.answered(answer.id, answer.page.as_ref().ok().and_then(|p| p.truncated)) {
//!         println!("{:?}: {:?}", req.direction, answer.page.map(|p| p.events.len()));
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use firehose_transport::control::client::ClientError;
use firehose_transport::control::wire::HistoryQuery;
use firehose_transport::record::FileEvent;

/// Which way a page moves from what is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Just below the oldest row held.
    Older,
    /// Just above the newest row held, towards the live rows.
    Newer,
    /// Somewhere else: the rows held are replaced.
    Jump,
}

/// One history request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Echoed on the answer.
    pub id: u64,
    /// Which way it moves.
    pub direction: Direction,
    /// First seq (inclusive).
    pub from: u64,
    /// Last seq (inclusive).
    pub to: u64,
    /// A jump to a time: the rows at or after it, ns since the epoch (`from` and `to`
    /// are then not a bound).
    pub since_ns: Option<u64>,
    /// Most rows (zero: the seq range bounds it).
    pub limit: u64,
}

/// The paging state: one request in flight at a time, and how far back history reaches.
#[derive(Debug)]
pub struct Paging {
    /// Rows per page (at least one).
    page: u64,
    /// The request being answered.
    pub in_flight: Option<PageRequest>,
    /// The lowest seq history holds (raised by a truncated answer).
    pub floor: u64,
    /// History has nothing older than what is held.
    pub older_done: bool,
    /// The last error, shown until the next answer.
    pub error: Option<String>,
    next_id: u64,
}

impl Paging {
    /// Pages of `page` rows.
    pub fn new(page: u64) -> Paging {
        Paging {
            page: page.max(1),
            in_flight: None,
            floor: 0,
            older_done: false,
            error: None,
            next_id: 1,
        }
    }

    /// Rows per page.
    pub fn page(&self) -> u64 {
        self.page
    }

    /// The next older page below `oldest` (the oldest seq held or looked at), unless one
    /// is in flight or history has nothing older.
    pub fn older(&mut self, oldest: u64) -> Option<PageRequest> {
        if self.in_flight.is_some() || self.older_done {
            return None;
        }
        if oldest <= self.floor.max(1) {
            self.older_done = true;
            return None;
        }
        let to = oldest - 1;
        let from = to.saturating_sub(self.page - 1).max(self.floor);
        self.issue(Direction::Older, from, to, None)
    }

    /// The next newer page after `newest`, unless one is in flight.
    pub fn newer(&mut self, newest: u64) -> Option<PageRequest> {
        if self.in_flight.is_some() {
            return None;
        }
        let from = newest.saturating_add(1);
        self.issue(
            Direction::Newer,
            from,
            from.saturating_add(self.page - 1),
            None,
        )
    }

    /// A page starting at `seq`; it replaces one in flight (its answer will be stale).
    pub fn jump_to_seq(&mut self, seq: u64) -> PageRequest {
        self.in_flight = None;
        self.older_done = false;
        let r = self.issue(
            Direction::Jump,
            seq,
            seq.saturating_add(self.page - 1),
            None,
        );
        r.expect("nothing in flight")
    }

    /// A page of the rows at or after `time_ns`; it replaces one in flight.
    pub fn jump_to_time(&mut self, time_ns: u64) -> PageRequest {
        self.in_flight = None;
        self.older_done = false;
        let r = self.issue(Direction::Jump, 0, u64::MAX, Some(time_ns));
        r.expect("nothing in flight")
    }

    /// Forgets the request in flight (its answer will be stale) and whether history has
    /// older rows: for when the rows held are replaced by live ones.
    pub fn reset(&mut self) {
        self.in_flight = None;
        self.older_done = false;
    }

    fn issue(
        &mut self,
        direction: Direction,
        from: u64,
        to: u64,
        since_ns: Option<u64>,
    ) -> Option<PageRequest> {
        let r = PageRequest {
            id: self.next_id,
            direction,
            from,
            to,
            since_ns,
            limit: self.page,
        };
        self.next_id += 1;
        self.in_flight = Some(r);
        Some(r)
    }

    /// Takes the answer to the request in flight (`truncated`: the oldest seq history
    /// holds, if it did not reach back to the request); `None` if the answer is stale.
    pub fn answered(&mut self, id: u64, truncated: Option<u64>) -> Option<PageRequest> {
        let r = self.in_flight.filter(|r| r.id == id)?;
        self.in_flight = None;
        if let Some(oldest) = truncated {
            self.floor = self.floor.max(oldest);
        }
        if r.direction == Direction::Older && r.from <= self.floor.max(1) {
            self.older_done = true;
        }
        Some(r)
    }
}

/// The rows of one answered page.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// In seq order.
    pub events: Vec<FileEvent>,
    /// History no longer reaches back to the request: the oldest seq it holds.
    pub truncated: Option<u64>,
}

/// Why a page could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    /// Connecting or querying failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The service keeps no history.
    #[error("this service keeps no history to browse")]
    Unavailable,
    /// The service refused the query.
    #[error("the service refused the history query")]
    Invalid,
    /// The answer did not come: the connection was lost, or the service took too long.
    /// Asking again is safe.
    #[error("history page lost: {0}")]
    Lost(String),
}

impl PageRequest {
    /// The history query that asks for this page, under the wire id `id`.
    pub fn query(&self, id: u64) -> HistoryQuery {
        HistoryQuery {
            id,
            seq: self.since_ns.is_none().then_some((self.from, self.to)),
            time_ns: self.since_ns.map(|t| (t, u64::MAX)),
            limit: self.limit,
            ..HistoryQuery::default()
        }
    }
}

/// An answer from [`Background::ask`](crate::Background::ask).
#[derive(Debug)]
pub struct PageAnswer {
    /// The request's id.
    pub id: u64,
    /// Its rows, or why not.
    pub page: Result<Page, PageError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_pages_walk_down_to_the_floor() {
        let mut p = Paging::new(500);
        let r = p.older(1201).unwrap();
        assert_eq!((r.from, r.to, r.direction), (701, 1200, Direction::Older));
        assert!(p.older(701).is_none(), "one in flight at a time");
        assert_eq!(p.answered(r.id, None), Some(r));
        let r = p.older(701).unwrap();
        assert_eq!((r.from, r.to), (201, 700));
        p.answered(r.id, Some(300));
        assert_eq!(p.floor, 300);
        assert!(p.older_done);
        assert!(p.older(201).is_none());
    }

    #[test]
    fn newer_pages_jumps_and_stale_answers() {
        let mut p = Paging::new(10);
        let r = p.newer(20).unwrap();
        assert_eq!((r.from, r.to, r.direction), (21, 30, Direction::Newer));
        assert!(p.answered(r.id + 1, None).is_none());
        let j = p.jump_to_seq(100);
        assert_eq!((j.from, j.to, j.limit), (100, 109, 10));
        assert!(p.answered(r.id, None).is_none(), "the jump made it stale");
        assert!(p.answered(j.id, None).is_some());
        let t = p.jump_to_time(5);
        assert_eq!((t.from, t.to, t.since_ns), (0, u64::MAX, Some(5)));
        assert!(p.in_flight.is_some());
    }
}
