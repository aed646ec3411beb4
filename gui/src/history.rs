//! History in the live table: scrolling into the top pages older rows in from the
//! service's history (keyset by seq) so a user can scroll from now back to the oldest
//! stored row; once older pages pushed the newest rows out of the bounded window, the rows
//! are detached from the live ones, which wait aside while newer pages fill the way back
//! down. "Go to" jumps to a seq or a time.

use firehose_consumer::pages::{Direction, PageAnswer, PageRequest};
use firehose_consumer::time::parse_time;
use firehose_consumer::FileEvent;

use crate::model::{Model, Row};

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
        // Older pages push the newest rows out of the bounded window; newer pages bring
        // them back from history when the user scrolls down again.
        while self.rows.len() > self.cap {
            self.rows.pop_back();
            self.detached = true;
            self.looked_high = None;
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

#[cfg(test)]
mod tests {
    use firehose_consumer::pages::{Page, PageAnswer};
    use firehose_consumer::{EventKind, Gathered, OwnedEvent};

    use super::*;

    fn ev(seq: u64) -> FileEvent {
        FileEvent {
            seq,
            time_ns: seq * 1_000_000_000,
            kind: EventKind::Create,
            path: format!("/w/{seq}").into_bytes(),
            path_to: None,
            rule: 1,
            size: None,
            reconciled: false,
            blind: None,
            gap: None,
        }
    }

    /// What history would answer for `r`, holding seqs `1..=stored`.
    fn answer(r: PageRequest, stored: u64) -> PageAnswer {
        answer_in(r, &[1..=stored])
    }

    /// What history would answer for `r`, holding the seqs in `stored`.
    fn answer_in(r: PageRequest, stored: &[std::ops::RangeInclusive<u64>]) -> PageAnswer {
        let all = stored.iter().flat_map(|s| s.clone());
        let events: Vec<FileEvent> = match r.since_ns {
            Some(t) => all
                .filter(|&s| s * 1_000_000_000 >= t)
                .take(r.limit as usize)
                .map(ev)
                .collect(),
            None => all
                .filter(|s| (r.from..=r.to).contains(s))
                .take(r.limit as usize)
                .map(ev)
                .collect(),
        };
        PageAnswer {
            id: r.id,
            page: Ok(Page {
                events,
                truncated: None,
            }),
        }
    }

    fn live(m: &mut Model, seqs: std::ops::RangeInclusive<u64>) {
        let events = seqs.clone().map(|s| OwnedEvent::Record(ev(s))).collect();
        m.ingest(
            Gathered {
                events,
                ..Gathered::default()
            },
            0,
        );
        m.live_next = seqs.end() + 1;
    }

    fn seqs(m: &Model) -> Vec<u64> {
        m.rows.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn scrolling_up_pages_back_to_the_oldest_and_down_again_to_live() {
        // History holds 1..=100; the window holds 20 rows, pages are 10.
        let mut m = Model::new(20);
        live(&mut m, 91..=100);
        m.set_follow(false);
        let mut oldest_seen = u64::MAX;
        for _ in 0..20 {
            m.want_older = true;
            let Some(r) = m.history_request() else { break };
            assert_eq!(r.direction, Direction::Older);
            assert_eq!(m.history_answer(answer(r, 100)), Some(Direction::Older));
            oldest_seen = oldest_seen.min(m.rows[0].seq);
            assert!(m.rows.len() <= 20, "memory stays bounded");
        }
        assert_eq!(oldest_seen, 1, "scrolled back to the oldest stored row");
        assert!(m.paging.older_done);
        assert_eq!(seqs(&m), (1..=20).collect::<Vec<_>>());
        assert!(m.detached());
        // New live rows wait aside while browsing.
        live(&mut m, 101..=103);
        assert_eq!(m.rows.len(), 20);
        // Scrolling down pages newer rows until the live ones continue them.
        let mut rounds = 0;
        while m.detached() {
            m.want_newer = true;
            let r = m.history_request().expect("a newer page");
            assert_eq!(r.direction, Direction::Newer);
            m.history_answer(answer(r, 103));
            rounds += 1;
            assert!(rounds < 20);
        }
        m.set_follow(true);
        let s = seqs(&m);
        assert_eq!(s.last(), Some(&103));
        assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "no hole: {s:?}");
    }

    #[test]
    fn go_to_a_seq_or_a_time_then_follow_newest() {
        let mut m = Model::new(50);
        live(&mut m, 1..=100);
        let r = m.go_to("30", 0).unwrap();
        assert_eq!((r.from, r.direction), (30, Direction::Jump));
        m.history_answer(answer(r, 100));
        assert_eq!(m.rows.front().map(|r| r.seq), Some(30));
        assert_eq!(m.selected, Some(30));
        assert_eq!(m.scroll_to, Some(30));
        assert!(m.detached());
        // A time: seq s happened at s seconds; "70s" before 100 s is seq 30 again, an
        // RFC 3339 time works too.
        let r = m.go_to("70s", 100_000_000_000).unwrap();
        assert_eq!(r.since_ns, Some(30_000_000_000));
        m.history_answer(answer(r, 100));
        assert_eq!(m.selected, Some(30));
        let r = m.go_to("1970-01-01T00:01:00Z", 0).unwrap();
        m.history_answer(answer(r, 100));
        assert_eq!(m.selected, Some(60));
        assert!(m.go_to("yesterday", 0).unwrap_err().contains("RFC 3339"));
        // Past the newest: nothing there, said so, rows kept.
        let r = m.go_to("500", 0).unwrap();
        m.history_answer(answer(r, 100));
        assert!(m.paging.error.as_deref().unwrap().contains("seq 500"));
        assert_eq!(m.selected, Some(60));
        // Follow newest lets the history rows go and fills from an older page.
        live(&mut m, 101..=102);
        m.follow_newest();
        assert_eq!(seqs(&m), [101, 102]);
        let r = m.history_request().expect("a fill page");
        m.history_answer(answer(r, 102));
        assert_eq!(m.rows.front().map(|r| r.seq), Some(76));
        assert_eq!(m.rows.back().map(|r| r.seq), Some(102));
    }

    #[test]
    fn paging_goes_on_across_a_gap_wider_than_a_page_both_ways() {
        // Stored: 1..=30 and 3031..=3060; 3000 seqs between never stored (a crash gap, or
        // retention). Pages of 10, a window of 20.
        let stored = [1..=30, 3031..=3060];
        let mut m = Model::new(20);
        live(&mut m, 3051..=3060);
        m.set_follow(false);
        let mut requests = 0;
        while !m.paging.older_done {
            m.want_older = true;
            let Some(r) = m.history_request() else { break };
            m.history_answer(answer_in(r, &stored));
            requests += 1;
            assert!(requests < 1000, "stuck paging older");
        }
        assert_eq!(m.rows.front().map(|r| r.seq), Some(1), "reached the oldest");
        assert!(m.detached());
        live(&mut m, 3061..=3062);
        let mut got: Vec<u64> = m.rows.iter().map(|r| r.seq).collect();
        while m.detached() {
            m.want_newer = true;
            let r = m.history_request().expect("a newer page");
            m.history_answer(answer_in(r, &[1..=30, 3031..=3062]));
            got.extend(m.rows.iter().map(|r| r.seq));
            requests += 1;
            assert!(requests < 2000, "stuck paging newer");
        }
        m.set_follow(true);
        got.extend(m.rows.iter().map(|r| r.seq));
        got.sort_unstable();
        got.dedup();
        let want: Vec<u64> = (1..=30).chain(3031..=3062).collect();
        assert_eq!(
            got, want,
            "every stored row seen on the way down, none skipped"
        );
    }

    #[test]
    fn follow_newest_makes_a_page_in_flight_stale_and_live_rows_are_kept_once() {
        let mut m = Model::new(20);
        live(&mut m, 1..=10);
        m.set_follow(false);
        m.want_older = true;
        live(&mut m, 11..=11);
        m.rows.pop_front();
        let r = m.history_request().expect("an older page");
        m.follow_newest();
        assert_eq!(
            m.history_answer(answer(r, 11)),
            None,
            "stale after follow newest"
        );
        // History handed out seqs the follower has yet to deliver: they are kept once.
        let j = m.go_to("5", 0).unwrap();
        m.history_answer(answer(j, 14));
        live(&mut m, 12..=15);
        m.set_follow(true);
        let s: Vec<u64> = m.rows.iter().map(|r| r.seq).collect();
        assert_eq!(s, (5..=15).collect::<Vec<_>>());
    }

    #[test]
    fn a_stale_or_failed_answer_leaves_the_rows() {
        let mut m = Model::new(10);
        live(&mut m, 1..=5);
        let old = m.go_to("1", 0).unwrap();
        let new = m.go_to("3", 0).unwrap();
        assert_eq!(m.history_answer(answer(old, 5)), None, "stale");
        m.history_answer(PageAnswer {
            id: new.id,
            page: Err(firehose_consumer::pages::PageError::Unavailable),
        });
        assert!(m.paging.error.as_deref().unwrap().contains("no history"));
        assert_eq!(seqs(&m), [1, 2, 3, 4, 5]);
    }
}
