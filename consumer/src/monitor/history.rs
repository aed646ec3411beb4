//! History in the live table: scrolling into the top pages older rows in from the
//! service's history (keyset by seq) so a user can scroll from now back to the oldest
//! stored row; once older pages pushed the newest rows out of the bounded window, the rows
//! are detached from the live ones, which wait aside while newer pages fill the way back
//! down. "Go to" jumps to a seq or a time.

use firehose_transport::record::FileEvent;

use super::{Model, Row};
use crate::pages::{Direction, PageAnswer, PageRequest};
use crate::time::parse_time;

impl Model {
    /// Whether the rows held are history the live rows do not continue.
    pub fn detached(&self) -> bool {
        self.detached
    }

    /// The history request to send now, if scrolling asks for one.
    pub fn history_request(&mut self) -> Option<PageRequest> {
        if self.want_older {
            let oldest = self
                .rows
                .front()
                .or(self.held.front())
                .map_or(self.live_next, |r| r.seq);
            let r = self
                .paging
                .older(self.looked_low.map_or(oldest, |l| l.min(oldest)));
            if r.is_none() && self.paging.in_flight.is_none() {
                self.want_older = false;
            }
            return r;
        }
        if self.want_newer && self.detached {
            let newest = self.rows.back().map_or(0, |r| r.seq);
            return self
                .paging
                .newer(self.looked_high.map_or(newest, |h| h.max(newest)));
        }
        None
    }

    /// The "go to" box: a seq, or a time (RFC 3339 or relative, like `10m`) before
    /// `now_ns`. The table stops following; the answer replaces the rows.
    ///
    /// # Errors
    /// If the text is neither.
    pub fn go_to(&mut self, text: &str, now_ns: u64) -> Result<PageRequest, String> {
        let text = text.trim();
        let r = match text.parse::<u64>() {
            Ok(seq) => self.paging.jump_to_seq(seq),
            Err(_) => {
                let t = parse_time(text, now_ns).map_err(|e| e.to_string())?;
                self.paging.jump_to_time(t)
            }
        };
        self.want_older = false;
        self.want_newer = false;
        self.filling = false;
        self.set_follow(false);
        Ok(r)
    }

    /// Follows the live rows again; rows from history that the live ones do not continue
    /// are let go, and one older page is asked for to fill the table above them.
    pub fn follow_newest(&mut self) {
        // A page still in flight is for what was browsed: its answer is stale now.
        self.paging.reset();
        self.looked_low = None;
        self.looked_high = None;
        if self.detached {
            self.rows.clear();
            self.detached = false;
            self.want_older = true;
            self.filling = true;
            self.stale = true;
        }
        self.want_newer = false;
        self.set_paused(false);
        self.set_follow(true);
    }

    /// Takes an answer from history; returns which way it moved the rows (`None`: a
    /// stale answer or an error, shown in `paging.error`).
    pub fn history_answer(&mut self, a: PageAnswer) -> Option<Direction> {
        let page = match a.page {
            Ok(p) => p,
            Err(e) => {
                if self.paging.answered(a.id, None).is_some() {
                    self.paging.error = Some(e.to_string());
                    self.want_older = false;
                    self.want_newer = false;
                }
                return None;
            }
        };
        let req = self.paging.answered(a.id, page.truncated)?;
        self.paging.error = None;
        match req.direction {
            Direction::Older => {
                self.prepend(&page.events);
                self.looked_low = Some(self.looked_low.map_or(req.from, |l| l.min(req.from)));
            }
            Direction::Newer => {
                // History no longer reaches the page's start: go on from what it holds.
                let to = match page.truncated {
                    Some(oldest) if oldest > req.to => oldest - 1,
                    _ => req.to,
                };
                self.looked_high = Some(self.looked_high.map_or(to, |h| h.max(to)));
                self.append(&page.events, to);
            }
            Direction::Jump => self.jump(&page.events, req),
        }
        self.stale = true;
        Some(req.direction)
    }

    fn prepend(&mut self, events: &[FileEvent]) {
        self.want_older = false;
        // Rows come in at the front: the filtered list is rebuilt.
        self.stale = true;
        let oldest = self.rows.front().or(self.held.front()).map(|r| r.seq);
        for e in events.iter().rev() {
            if oldest.is_none_or(|o| e.seq < o) {
                self.rows.push_front(Row::from_event(e));
            }
        }
        // The page that fills the table after "follow newest" keeps the live rows and lets
        // its own oldest rows go: the table must not detach under a user who asked for the
        // newest rows. Any other older page pushes the newest rows out of the bounded
        // window; newer pages bring them back from history when the user scrolls down.
        let filling = std::mem::take(&mut self.filling);
        while self.rows.len() > self.cap {
            if filling {
                self.rows.pop_front();
                self.front_dropped();
            } else {
                self.rows.pop_back();
                self.detached = true;
                self.looked_high = None;
            }
        }
    }

    /// The first seq the live rows hold (newer pages stop below it).
    fn live_start(&self) -> u64 {
        self.held.front().map_or(self.live_next, |r| r.seq)
    }

    fn append(&mut self, events: &[FileEvent], asked_to: u64) {
        self.want_newer = false;
        // Rows go at the front (`front_dropped`): the filtered list is rebuilt.
        self.stale = true;
        let newest = self.rows.back().map_or(0, |r| r.seq);
        let limit = self.live_start();
        for e in events {
            if e.seq > newest && e.seq < limit {
                self.rows.push_back(Row::from_event(e));
            }
        }
        while self.rows.len() > self.cap {
            self.rows.pop_front();
            self.front_dropped();
        }
        // Caught up only when the pages reached the live rows: an empty page (a gap, or
        // retention removed it) moves on, it does not skip to live.
        if asked_to.saturating_add(1) >= limit {
            // Caught up: the live rows continue these.
            self.detached = false;
            self.release();
        }
    }

    fn jump(&mut self, events: &[FileEvent], req: PageRequest) {
        let Some(first) = events.first() else {
            self.paging.error = Some(match req.since_ns {
                Some(_) => "history holds nothing at or after that time".into(),
                None => format!("history holds nothing at or after seq {}", req.from),
            });
            return;
        };
        // The live rows held aside were taken before the jump: they start again from here
        // (what they had is in history, newer pages bring it back).
        self.counts.dropped += self.held.len() as u64;
        self.held.clear();
        self.rows.clear();
        self.stale = true;
        self.front_dropped();
        self.looked_high = None;
        self.rows
            .extend(events.iter().take(self.cap).map(Row::from_event));
        self.selected = Some(first.seq);
        self.scroll_to = Some(first.seq);
        self.detached = true;
        let last = self.rows.back().map_or(0, |r| r.seq);
        if last.saturating_add(1) >= self.live_start() {
            self.detached = false;
        }
    }
}
