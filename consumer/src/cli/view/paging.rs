//! [`Paging`]: which history page to ask for next, when scrolling runs past the rows held.
//! Older pages are seq ranges just below the oldest held row, newest-first; newer pages
//! fill the way back down to the live rows after older pages pushed them out.

/// One history request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// Echoed on the reply.
    pub(crate) id: u64,
    /// Inclusive seq range.
    pub(crate) from: u64,
    /// Inclusive seq range.
    pub(crate) to: u64,
    /// Older than what is held (else newer).
    pub(crate) older: bool,
}

/// The paging state.
#[derive(Debug)]
pub(crate) struct Paging {
    /// Rows per page.
    pub(crate) page: u64,
    /// The request being answered.
    pub(crate) in_flight: Option<Request>,
    /// The lowest seq history holds (raised by a truncated answer).
    pub(crate) floor: u64,
    /// History has nothing older than what is held.
    pub(crate) older_done: bool,
    /// The last error, shown until the next answer.
    pub(crate) error: Option<String>,
    next_id: u64,
}

impl Paging {
    /// Pages of `page` rows.
    pub(crate) fn new(page: u64) -> Paging {
        Paging {
            page: page.max(1),
            in_flight: None,
            floor: 0,
            older_done: false,
            error: None,
            next_id: 1,
        }
    }

    /// The next older request below `oldest` (the oldest seq held or looked at), unless
    /// one is in flight or history has nothing older.
    pub(crate) fn older(&mut self, oldest: u64) -> Option<Request> {
        if self.in_flight.is_some() || self.older_done {
            return None;
        }
        if oldest <= self.floor.max(1) {
            self.older_done = true;
            return None;
        }
        let to = oldest - 1;
        let from = to.saturating_sub(self.page - 1).max(self.floor);
        self.issue(from, to, true)
    }

    /// The next newer request after `newest`.
    pub(crate) fn newer(&mut self, newest: u64) -> Option<Request> {
        if self.in_flight.is_some() {
            return None;
        }
        let from = newest + 1;
        self.issue(from, from + self.page - 1, false)
    }

    fn issue(&mut self, from: u64, to: u64, older: bool) -> Option<Request> {
        let r = Request {
            id: self.next_id,
            from,
            to,
            older,
        };
        self.next_id += 1;
        self.in_flight = Some(r);
        Some(r)
    }

    /// Takes the answer to the request in flight; `None` if it is stale.
    pub(crate) fn answered(&mut self, id: u64, truncated: Option<u64>) -> Option<Request> {
        let r = self.in_flight.filter(|r| r.id == id)?;
        self.in_flight = None;
        if let Some(oldest) = truncated {
            self.floor = self.floor.max(oldest);
        }
        if r.older && r.from <= self.floor.max(1) {
            self.older_done = true;
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_pages_walk_down_to_the_floor() {
        let mut p = Paging::new(500);
        let r = p.older(1201).unwrap();
        assert_eq!((r.from, r.to, r.older), (701, 1200, true));
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
    fn newer_pages_and_stale_answers() {
        let mut p = Paging::new(10);
        let r = p.newer(20).unwrap();
        assert_eq!((r.from, r.to, r.older), (21, 30, false));
        assert!(p.answered(r.id + 1, None).is_none());
        assert!(p.answered(r.id, None).is_some());
        assert!(p.in_flight.is_none());
    }
}
