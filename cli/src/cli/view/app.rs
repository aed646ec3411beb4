//! [`App`]: the viewer's whole state, without a terminal: the rows held, sticky follow and
//! the selection, pause, the filter, counters, the connection and history paging.

use std::collections::VecDeque;

use firehose_consumer::{Event, EventKind};

use super::buffer::Buffer;
use super::filter::Filter;
use super::rate::Rate;
use super::row::Row;
use firehose_consumer::pages::{Direction, PageRequest, Paging};

/// What the keyboard is talking to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The table.
    Normal,
    /// The filter box, with the text to restore on Esc.
    Filter(String),
    /// The help overlay.
    Help,
}

/// The connection to the service, as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Conn {
    /// Connected; `Some(seq)` right after a reconnect (live resumed at that seq).
    Up(Option<u64>),
    /// The service went away; the follower is reconnecting.
    Down(String),
    /// Nothing more will come (another history instance, or refused).
    Ended(String),
}

/// Everything not delivered as a row, counted (nothing is dropped silently).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Records received (live and backfilled).
    pub(crate) received: u64,
    /// Seqs this reader missed (lagged).
    pub(crate) lagged: u64,
    /// Seqs never stored or streamed (gap notices and gap records).
    pub(crate) gaps: u64,
    /// Overflow records (the kernel dropped events).
    pub(crate) overflows: u64,
    /// Seqs history did not have when asked.
    pub(crate) missing: u64,
    /// Newer rows not held while browsing older history (dropped from the side buffer).
    pub(crate) tail_dropped: u64,
}

/// The viewer's state.
#[derive(Debug)]
pub(crate) struct App {
    /// The rows held.
    pub(crate) buf: Buffer,
    /// What is shown.
    pub(crate) filter: Filter,
    /// Keyboard mode.
    pub(crate) mode: Mode,
    /// Sticky follow: the newest row is selected and kept in view.
    pub(crate) follow: bool,
    /// Held still by the pause key.
    pub(crate) paused: bool,
    /// While paused: the newest position shown (newer rows are counted, not shown).
    hold_end: u64,
    /// The selected row's position (when not following).
    sel: u64,
    /// The first row in view's position (when not following).
    top: u64,
    /// The detail pane is open.
    pub(crate) detail: bool,
    /// Table rows on screen (set by the drawing).
    pub(crate) height: usize,
    /// Newer live rows, while older history pushed the newest held rows out.
    tail: Option<VecDeque<Row>>,
    /// The user scrolled into the top: ask history for older rows.
    want_older: bool,
    /// The user scrolled into the bottom while detached: ask for newer rows.
    want_newer: bool,
    /// Counters.
    pub(crate) counts: Counters,
    /// The connection.
    pub(crate) conn: Conn,
    /// History paging.
    pub(crate) paging: Paging,
    /// The oldest row held when older pages last came, and the lowest seq they looked
    /// at: a page may come back empty (a gap, retention) and the next goes on below it.
    looked_low: Option<(u64, u64)>,
    /// The newest row held when newer pages last came, and the highest seq they looked at.
    looked_high: Option<(u64, u64)>,
    /// Records per second.
    pub(crate) rate: Rate,
    /// The follower's next seq (where live resumes).
    pub(crate) live_next: u64,
    /// Something changed since the last draw.
    pub(crate) dirty: bool,
}

impl App {
    /// A viewer holding at most `cap` rows.
    pub(crate) fn new(cap: usize) -> App {
        let cap = cap.max(1);
        App {
            buf: Buffer::new(cap),
            filter: Filter::default(),
            mode: Mode::Normal,
            follow: true,
            paused: false,
            hold_end: u64::MAX,
            sel: 0,
            top: 0,
            detail: false,
            height: 20,
            tail: None,
            want_older: false,
            want_newer: false,
            counts: Counters::default(),
            conn: Conn::Up(None),
            paging: Paging::new((cap as u64 / 2).clamp(1, 500)),
            looked_low: None,
            looked_high: None,
            rate: Rate::default(),
            live_next: 0,
            dirty: true,
        }
    }

    /// Takes one event from the follower.
    pub(crate) fn ingest(&mut self, ev: &Event<'_>) {
        self.dirty = true;
        match ev {
            Event::Record(r) => self.ingest_row(Row::from_record(r)),
            Event::Gap { from, to, .. } | Event::StorageGap { from, to, .. } => {
                self.counts.gaps += to - from + 1;
            }
            Event::Lagged { from, to } => self.counts.lagged += to - from + 1,
            Event::Missing { from, to } => self.counts.missing += to - from + 1,
            Event::Truncated { oldest } => {
                self.paging.floor = self.paging.floor.max(*oldest);
            }
            Event::Disconnected { reason, detail } => {
                self.conn = Conn::Down(format!("{reason:?}: {detail}"));
            }
            Event::Reconnected { start_seq } => self.conn = Conn::Up(Some(*start_seq)),
            Event::OtherInstance { expected, found } => {
                self.conn = Conn::Ended(format!(
                    "the service now serves another history ({found}, was {expected})"
                ));
            }
            _ => {}
        }
    }

    /// Takes one record, already a row.
    pub(crate) fn ingest_row(&mut self, row: Row) {
        self.dirty = true;
        self.counts.received += 1;
        match row.kind {
            EventKind::Overflow => self.counts.overflows += 1,
            EventKind::Gap => self.counts.gaps += 1,
            _ => {}
        }
        if matches!(self.conn, Conn::Down(_)) {
            self.conn = Conn::Up(None);
        }
        self.push_live(row);
    }

    fn push_live(&mut self, row: Row) {
        match &mut self.tail {
            Some(t) => {
                t.push_back(row);
                if t.len() > self.buf.cap {
                    t.pop_front();
                    self.counts.tail_dropped += 1;
                }
            }
            None => self.buf.push_back(row, &self.filter),
        }
    }

    /// The index in the shown rows of the first row in view, and of the selected one;
    /// keeps the selection in view.
    pub(crate) fn window(&mut self) -> (usize, usize) {
        let vis = self.buf.visible();
        let n = self.shown_len();
        let h = self.height.max(1);
        if n == 0 {
            return (0, 0);
        }
        if self.follow {
            return (n.saturating_sub(h), n - 1);
        }
        let sel = self.buf.index_of(self.sel).min(n - 1);
        let mut top = self.buf.index_of(self.top).min(sel);
        if sel >= top + h {
            top = sel + 1 - h;
        }
        self.sel = vis[sel];
        self.top = vis[top];
        (top, sel)
    }

    /// How many shown rows are on offer (while paused, those up to the pause).
    pub(crate) fn shown_len(&self) -> usize {
        let vis = self.buf.visible();
        if self.paused {
            vis.partition_point(|&p| p <= self.hold_end)
        } else {
            vis.len()
        }
    }

    /// The selected row.
    pub(crate) fn selected(&mut self) -> Option<&Row> {
        let (_, sel) = self.window();
        let pos = *self.buf.visible().get(sel)?;
        self.buf.get(pos)
    }

    /// Stops following, holding the current view.
    fn hold(&mut self) {
        if self.follow {
            let (top, sel) = self.window();
            let vis = self.buf.visible();
            if let (Some(&t), Some(&s)) = (vis.get(top), vis.get(sel)) {
                self.top = t;
                self.sel = s;
            }
            self.follow = false;
        }
    }

    /// Moves the selection by `delta` shown rows (negative: up). Moving into the top asks
    /// history for older rows; moving onto the newest row follows again.
    pub(crate) fn move_by(&mut self, delta: isize) {
        self.dirty = true;
        self.hold();
        let n = self.shown_len();
        if n == 0 {
            self.want_older = delta < 0;
            return;
        }
        let (_, sel) = self.window();
        let to = sel.saturating_add_signed(delta).min(n - 1);
        self.sel = self.buf.visible()[to];
        if delta < 0 {
            self.want_older = to == 0;
            self.want_newer = false;
        } else {
            self.want_older = false;
            if to == n - 1 {
                if self.tail.is_some() {
                    self.want_newer = true;
                } else if !self.paused {
                    self.follow = true;
                }
            }
        }
    }

    /// Page up or down.
    pub(crate) fn page(&mut self, pages: isize) {
        self.move_by(pages * self.height.max(1) as isize);
    }

    /// To the oldest row held (and ask history for older ones).
    pub(crate) fn home(&mut self) {
        self.move_by(isize::MIN / 2);
    }

    /// Follows the newest rows again (`End`, `G`, `f`); drops older history pages that
    /// pushed the live rows out.
    pub(crate) fn resume(&mut self) {
        self.dirty = true;
        self.paused = false;
        self.follow = true;
        self.want_older = false;
        self.want_newer = false;
        if let Some(t) = self.tail.take() {
            self.buf.clear();
            for r in t {
                self.buf.push_back(r, &self.filter);
            }
            self.paging.reset();
        }
    }

    /// The pause key: holds the view still, or resumes following.
    pub(crate) fn toggle_pause(&mut self) {
        if self.paused {
            self.resume();
        } else {
            self.hold();
            self.paused = true;
            self.hold_end = self.buf.last_pos();
            self.dirty = true;
        }
    }

    /// Opens the filter box (searching stops following).
    pub(crate) fn open_filter(&mut self) {
        self.hold();
        self.mode = Mode::Filter(self.filter.text.clone());
        self.dirty = true;
    }

    /// Sets the filter text (as it is typed).
    pub(crate) fn set_filter_text(&mut self, text: String) {
        self.filter.text = text;
        self.buf.refilter(&self.filter);
        self.dirty = true;
    }

    /// Closes the filter box, keeping the text (Enter) or restoring the old one (Esc).
    pub(crate) fn close_filter(&mut self, keep: bool) {
        if let Mode::Filter(old) = std::mem::replace(&mut self.mode, Mode::Normal) {
            if !keep {
                self.set_filter_text(old);
            }
        }
        self.dirty = true;
    }

    /// Keys 1..7: shows or hides a kind.
    pub(crate) fn toggle_kind(&mut self, kind: EventKind) {
        self.filter.toggle(kind);
        self.buf.refilter(&self.filter);
        self.dirty = true;
    }

    /// The history request to send now, if scrolling asks for one.
    pub(crate) fn history_request(&mut self) -> Option<PageRequest> {
        if self.want_older {
            let oldest = self.buf.front().map_or(self.live_next, |r| r.seq);
            let below = match self.looked_low {
                Some((front, low)) if front == oldest => low.min(oldest),
                _ => oldest,
            };
            let r = self.paging.older(below);
            if r.is_none() && self.paging.in_flight.is_none() {
                self.want_older = false;
            }
            return r;
        }
        if self.want_newer && self.tail.is_some() {
            let newest = self.buf.back().map_or(0, |r| r.seq);
            let above = match self.looked_high {
                Some((back, high)) if back == newest => high.max(newest),
                _ => newest,
            };
            return self.paging.newer(above);
        }
        None
    }

    /// An answer from history: rows in seq order, or an error.
    pub(crate) fn history_answer(
        &mut self,
        id: u64,
        rows: Result<(Vec<Row>, Option<u64>), String>,
    ) {
        self.dirty = true;
        let (rows, truncated) = match rows {
            Ok(x) => x,
            Err(e) => {
                self.paging.answered(id, None);
                self.paging.error = Some(e);
                self.want_older = false;
                self.want_newer = false;
                return;
            }
        };
        let Some(req) = self.paging.answered(id, truncated) else {
            return;
        };
        self.paging.error = None;
        if req.direction == Direction::Older {
            self.prepend(rows);
            let front = self.buf.front().map_or(self.live_next, |r| r.seq);
            self.looked_low = Some((front, req.from));
        } else {
            // History no longer reaches the page's start: go on from what it holds.
            let to = match truncated {
                Some(oldest) if oldest > req.to => oldest - 1,
                _ => req.to,
            };
            self.append(rows, to);
            if let Some(back) = self.buf.back() {
                self.looked_high = Some((back.seq, to));
            }
        }
    }

    fn prepend(&mut self, rows: Vec<Row>) {
        let oldest = self.buf.front().map(|r| r.seq);
        let before = self.buf.visible().len();
        for r in rows.into_iter().rev() {
            if oldest.is_none_or(|o| r.seq < o) {
                self.buf.push_front(r, &self.filter);
            }
        }
        if self.buf.visible().len() > before {
            self.want_older = false;
        }
        // Older pages push the newest rows out; live rows wait on the side meanwhile.
        while self.buf.len() > self.buf.cap {
            let Some(r) = self.buf.pop_back() else { break };
            let t = self.tail.get_or_insert_with(VecDeque::new);
            if t.is_empty() || t.len() < self.buf.cap {
                t.push_front(r);
            }
        }
        // Keep the side buffer continuous with the held rows: keep only rows after them.
        if let (Some(t), Some(b)) = (&mut self.tail, self.buf.back().map(|r| r.seq)) {
            t.retain(|r| r.seq > b);
        }
    }

    fn append(&mut self, rows: Vec<Row>, asked_to: u64) {
        let newest = self.buf.back().map_or(0, |r| r.seq);
        let first_tail = self.tail.as_ref().and_then(|t| t.front()).map(|r| r.seq);
        let limit = first_tail.unwrap_or(self.live_next);
        for r in rows {
            if r.seq > newest && r.seq < limit {
                self.buf.push_back(r, &self.filter);
            }
        }
        self.want_newer = false;
        // Caught up only when the pages reached the live rows: an empty page (a gap, or
        // retention removed it) moves on, it does not skip to live.
        if asked_to.saturating_add(1) >= limit {
            // Caught up with the live rows: they join the held ones.
            if let Some(t) = self.tail.take() {
                for r in t {
                    self.buf.push_back(r, &self.filter);
                }
            }
        }
    }

    /// Whether newer live rows are held aside (older history is being browsed).
    pub(crate) fn detached(&self) -> bool {
        self.tail.is_some()
    }

    /// Rows held aside while browsing older history.
    pub(crate) fn tail_len(&self) -> usize {
        self.tail.as_ref().map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests;
