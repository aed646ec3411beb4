//! A monitor's state without a toolkit: the rows window a table shows, the rows held aside
//! while the user looks elsewhere, history paging, the filter, the counters, the rate over
//! the last minute and the connection. The terminal viewer (`firehose view`) and the
//! desktop monitor (`firehose-gui`) both drive this one [`Model`]; a UI of your own can
//! too. It does no I/O: the UI feeds it what [`Background::take`](crate::Background::take)
//! gathered and the history answers, and sends the requests it makes.
//!
//! ```no_run
//! use firehose_consumer::monitor::Model;
//! let bg = firehose_consumer::Options::new().connect()?.into_background(10_000, || {})?;
//! let mut m = Model::new(10_000);
//! // Once per frame:
//! m.live_next = bg.next_seq();
//! m.ingest(bg.take(), 0);
//! while let Some(a) = bg.try_answer() {
//!     m.history_answer(a);
//! }
//! if let Some(r) = m.history_request() {
//!     bg.ask(r);
//! }
//! for i in 0..m.shown_len().min(20) {
//!     let row = m.shown_row(i).unwrap();
//!     println!("{} {} {}", row.clock(), row.kind.name(), row.path);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Rows are kept in seq order, each seq once. Nothing is lost silently: every seq that is
//! not a row is counted ([`Counters`]).

mod filter;
mod history;
mod rate;
mod row;

use std::collections::VecDeque;

use firehose_transport::record::{EventKind, Loss};

use crate::background::Gathered;
use crate::owned::OwnedEvent;
use crate::pages::Paging;

pub use filter::Filter;
pub use rate::{Rate, SECONDS};
pub use row::Row;

/// Counters that are always shown: nothing is dropped silently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records received (live and backfilled).
    pub received: u64,
    /// Seqs this monitor lagged over and did not get from history.
    pub lagged: u64,
    /// Seqs a backfill asked history for that it did not have.
    pub missing: u64,
    /// Seqs never stored or streamed (gap notices and gap records).
    pub gaps: u64,
    /// Seqs the service streamed but could not store in history (they may be among the
    /// records received: a separate count, not a loss of rows).
    pub not_stored: u64,
    /// Overflow records (the kernel dropped events).
    pub overflows: u64,
    /// Rows let go from memory: the window and the rows held aside are bounded, and the
    /// follower's inbox drops the oldest when a frame came too late.
    pub dropped: u64,
}

/// The connection as a banner shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conn {
    /// Connected (and, right after a reconnect, the seq live resumed at).
    Up(Option<u64>),
    /// The service went away; reconnecting.
    Down(String),
    /// The follower ended for good.
    Ended(String),
}

/// The monitor's state. The UI reads the fields and sets `want_older`, `want_newer`,
/// `selected` and `live_next`; everything else changes through the methods.
#[derive(Debug)]
pub struct Model {
    /// The rows held, oldest first, each seq once.
    pub rows: VecDeque<Row>,
    /// Most rows held (history may add a page more while it is browsed).
    pub cap: usize,
    filter: Filter,
    /// Paused: the table holds still; records are still taken, held aside and counted.
    pub paused: bool,
    /// Following the newest rows (the table sticks to the bottom).
    pub follow: bool,
    /// The selected row's seq.
    pub selected: Option<u64>,
    /// Counters.
    pub counts: Counters,
    /// The connection.
    pub conn: Conn,
    /// Records per second over the last minute.
    pub rate: Rate,
    /// Rows that arrived while paused, scrolled or browsing history, shown on resume.
    held: VecDeque<Row>,
    /// The rows passing the filter, when they are not all: their places in `rows` plus
    /// `base`, so that a live row coming in at the back or going out at the front costs no
    /// pass over the rest (a filter over 100,000 rows at a million records a second would
    /// otherwise be matched again in full every frame).
    shown: Option<VecDeque<usize>>,
    /// Rows popped from the front since `shown` was last built.
    base: usize,
    /// `shown` is out of date.
    stale: bool,
    /// History paging.
    pub paging: Paging,
    /// The seq the next live record will have (set from the follower before each ingest).
    pub live_next: u64,
    /// The rows held do not reach the live rows (older pages pushed the newest out, or a
    /// jump went back): live rows wait aside and newer pages fill the way down.
    detached: bool,
    /// Scrolled into the top: ask history for older rows.
    pub want_older: bool,
    /// Scrolled into the bottom while detached: ask history for newer rows.
    pub want_newer: bool,
    /// Bring this seq's row into view at the top (after a jump, or a page came in).
    pub scroll_to: Option<u64>,
    /// The lowest seq older pages looked at since the front last moved: a page may come
    /// back empty (a gap, retention), and the next one goes on below it.
    looked_low: Option<u64>,
    /// The highest seq newer pages looked at since the back last moved.
    looked_high: Option<u64>,
    /// The next older page fills the table above the live rows after "follow newest": it
    /// must not push them out.
    filling: bool,
}

impl Model {
    /// A monitor holding at most `cap` rows, paging history half a window at a time (at
    /// most 1000 rows a page).
    pub fn new(cap: usize) -> Model {
        Model {
            rows: VecDeque::new(),
            cap: cap.max(1),
            filter: Filter::default(),
            paused: false,
            follow: true,
            selected: None,
            counts: Counters::default(),
            conn: Conn::Up(None),
            rate: Rate::default(),
            held: VecDeque::new(),
            shown: None,
            base: 0,
            stale: false,
            paging: Paging::new((cap as u64 / 2).clamp(1, 1000)),
            live_next: 0,
            detached: false,
            want_older: false,
            want_newer: false,
            scroll_to: None,
            looked_low: None,
            looked_high: None,
            filling: false,
        }
    }

    /// Takes what the follower's thread gathered, at second `sec` since the monitor
    /// started (for the rate). Returns whether anything changed that a frame shows: an
    /// event came, records were dropped, the follower ended, or a second of the rate ended.
    pub fn ingest(&mut self, got: Gathered, sec: u64) -> bool {
        let changed = !got.events.is_empty() || got.dropped > 0 || got.ended.is_some();
        self.counts.received += got.dropped;
        self.counts.dropped += got.dropped;
        let mut records = got.dropped;
        for ev in got.events {
            records += u64::from(matches!(ev, OwnedEvent::Record(_)));
            self.ingest_event(ev);
        }
        if let Some(e) = got.ended {
            self.conn = Conn::Ended(e.to_string());
        }
        let moved = self.rate.add(sec, records);
        changed || moved
    }

    /// Takes one event (a record or news about the stream); counts it and, for a record,
    /// shows or holds its row.
    pub fn ingest_event(&mut self, ev: OwnedEvent) {
        match ev {
            OwnedEvent::Record(r) => {
                self.counts.received += 1;
                match r.kind {
                    EventKind::Overflow => self.counts.overflows += 1,
                    EventKind::Gap => {
                        let to = r.gap.map_or(r.seq, |g| g.to.max(r.seq));
                        self.counts.gaps += to - r.seq + 1;
                    }
                    _ => {}
                }
                if matches!(self.conn, Conn::Down(_)) {
                    self.conn = Conn::Up(None);
                }
                self.push(Row::from_owned(r));
            }
            OwnedEvent::Loss(l) => match l {
                Loss::Gap { .. } => self.counts.gaps += l.count(),
                Loss::StorageGap { .. } => self.counts.not_stored += l.count(),
                Loss::Lagged { .. } => self.counts.lagged += l.count(),
                Loss::Missing { .. } => self.counts.missing += l.count(),
                Loss::Truncated { oldest } => {
                    self.paging.floor = self.paging.floor.max(oldest);
                }
            },
            OwnedEvent::Disconnected { reason, detail } => {
                self.conn = Conn::Down(format!("{reason}: {detail}"));
            }
            OwnedEvent::Reconnected { start_seq } => self.conn = Conn::Up(Some(start_seq)),
            OwnedEvent::OtherInstance { expected, found } => {
                self.conn = Conn::Ended(format!(
                    "the service now serves another history ({found}, was {expected})"
                ));
            }
        }
    }

    /// Whether new rows wait aside: paused, scrolled away from the newest, or browsing
    /// history.
    pub fn holding(&self) -> bool {
        self.paused || !self.follow || self.detached
    }

    /// Rows waiting aside.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    fn push(&mut self, row: Row) {
        // History may have handed out a record before it arrives live: keep one, in order.
        if self
            .held
            .back()
            .or(self.rows.back())
            .is_some_and(|last| row.seq <= last.seq)
        {
            return;
        }
        if self.holding() {
            self.held.push_back(row);
            if self.held.len() > self.cap {
                self.held.pop_front();
                self.counts.dropped += 1;
            }
            return;
        }
        let pass = !self.stale && self.shown.is_some() && self.filter.matches(&row);
        self.rows.push_back(row);
        let at = self.base + self.rows.len() - 1;
        if let (true, Some(s)) = (pass, &mut self.shown) {
            s.push_back(at);
        }
        if self.rows.len() > self.cap {
            self.rows.pop_front();
            if let Some(s) = &mut self.shown {
                if s.front() == Some(&self.base) {
                    s.pop_front();
                }
            }
            self.base += 1;
            self.counts.dropped += 1;
            self.front_dropped();
        }
    }

    /// The oldest row held went: history has older rows again, from the new front down.
    pub(super) fn front_dropped(&mut self) {
        self.paging.older_done = false;
        self.looked_low = None;
    }

    /// Pauses, or resumes (the rows that came meanwhile join the table).
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        self.release();
    }

    /// Follows the newest rows (the table sticks to the bottom), or stops (the user
    /// scrolled up: the table holds still as if paused).
    pub fn set_follow(&mut self, follow: bool) {
        if !follow {
            // Scrolled away: an older page now is the user's, and may detach.
            self.filling = false;
        }
        self.follow = follow;
        self.release();
    }

    fn release(&mut self) {
        if !self.holding() {
            for row in std::mem::take(&mut self.held) {
                self.push(row);
            }
        }
    }

    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Sets the filter box's text.
    pub fn set_filter(&mut self, text: &str) {
        if text != self.filter.text() {
            self.filter.set_text(text);
            self.stale = true;
        }
    }

    /// Shows or hides a kind.
    pub fn toggle(&mut self, kind: EventKind) {
        self.filter.toggle(kind);
        self.stale = true;
    }

    /// Whether a kind is shown.
    pub fn kind_shown(&self, kind: EventKind) -> bool {
        self.filter.shows(kind)
    }

    /// The index among the shown rows of the first with a seq at or after `seq` (the
    /// number of shown rows if none).
    pub fn shown_index_of(&mut self, seq: u64) -> usize {
        self.refresh();
        match &self.shown {
            Some(v) => v.partition_point(|&i| self.rows[i - self.base].seq < seq),
            None => self.rows.partition_point(|r| r.seq < seq),
        }
    }

    /// How many rows pass the filter.
    pub fn shown_len(&mut self) -> usize {
        self.refresh();
        self.shown.as_ref().map_or(self.rows.len(), VecDeque::len)
    }

    /// The `i`th row passing the filter.
    pub fn shown_row(&mut self, i: usize) -> Option<&Row> {
        self.refresh();
        let at = match &self.shown {
            Some(v) => *v.get(i)? - self.base,
            None => i,
        };
        self.rows.get(at)
    }

    /// The selected row, if still held.
    pub fn selected_row(&self) -> Option<&Row> {
        let seq = self.selected?;
        let i = self.rows.partition_point(|r| r.seq < seq);
        self.rows.get(i).filter(|r| r.seq == seq)
    }

    fn refresh(&mut self) {
        if !self.stale {
            return;
        }
        self.stale = false;
        self.base = 0;
        self.shown = if self.filter.is_empty() {
            None
        } else {
            Some(
                (0..self.rows.len())
                    .filter(|&i| self.filter.matches(&self.rows[i]))
                    .collect(),
            )
        };
    }
}

#[cfg(test)]
mod tests;
