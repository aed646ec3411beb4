//! What the monitor shows, without the toolkit: the rows held (a bounded window), the
//! filter and kind toggles, follow and pause, the counters, the rate over the last minute
//! and the connection. The UI draws it; tests drive it directly.

use std::collections::VecDeque;

use firehose_consumer::pages::Paging;
use firehose_consumer::{escape_path, EventKind, FileEvent, Gathered, OwnedEvent};

/// One record as the monitor keeps it (paths escaped for display, losslessly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Its seq.
    pub seq: u64,
    /// When the service saw it, ns since the epoch.
    pub time_ns: u64,
    /// What happened.
    pub kind: EventKind,
    /// The path.
    pub path: String,
    /// A rename's new path.
    pub to: Option<String>,
    /// The rule that matched.
    pub rule: u32,
    /// The size, if known.
    pub size: Option<u64>,
}

impl Row {
    /// From a record.
    pub fn from_event(e: &FileEvent) -> Row {
        Row {
            seq: e.seq,
            time_ns: e.time_ns,
            kind: e.kind,
            path: escape_path(&e.path).into_owned(),
            to: e.path_to.as_deref().map(|p| escape_path(p).into_owned()),
            rule: e.rule,
            size: e.size,
        }
    }

    /// From a record the row may keep: a path that needs no escaping becomes the row's
    /// text without a copy (at a million records a second, one allocation fewer each).
    pub fn from_owned(e: FileEvent) -> Row {
        fn text(bytes: Vec<u8>) -> String {
            match String::from_utf8(bytes) {
                Ok(s) if !s.contains('\\') => s,
                Ok(s) => escape_path(s.as_bytes()).into_owned(),
                Err(e) => escape_path(e.as_bytes()).into_owned(),
            }
        }
        Row {
            seq: e.seq,
            time_ns: e.time_ns,
            kind: e.kind,
            path: text(e.path),
            to: e.path_to.map(text),
            rule: e.rule,
            size: e.size,
        }
    }

    /// `HH:MM:SS.mmm` (UTC).
    pub fn clock(&self) -> String {
        let ms = self.time_ns / 1_000_000;
        let s = ms / 1000;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            s / 3600 % 24,
            s / 60 % 60,
            s % 60,
            ms % 1000
        )
    }
}

/// The filter box: a glob when it has `*`, `?` or `[` (matched against the whole path,
/// `*` crossing `/`), else a substring.
#[derive(Debug, Default)]
pub struct Filter {
    text: String,
    glob: Option<globset::GlobMatcher>,
}

impl Filter {
    /// Sets the text; a glob that does not compile matches as a substring.
    pub fn set(&mut self, text: &str) {
        self.text = text.to_string();
        self.glob = if text.contains(['*', '?', '[']) {
            globset::Glob::new(text).ok().map(|g| g.compile_matcher())
        } else {
            None
        };
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `row` passes.
    pub fn matches(&self, row: &Row) -> bool {
        if self.text.is_empty() {
            return true;
        }
        let one = |p: &str| match &self.glob {
            Some(g) => g.is_match(p),
            None => p.contains(&self.text),
        };
        one(&row.path) || row.to.as_deref().is_some_and(one)
    }
}

/// Counters that are always shown: nothing is dropped silently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records received.
    pub received: u64,
    /// Seqs this monitor lagged over (and did not get from history).
    pub lagged: u64,
    /// Seqs never stored or streamed (gap notices and gap records).
    pub gaps: u64,
    /// Overflow records (the kernel dropped events).
    pub overflows: u64,
    /// Rows dropped from memory (the window is bounded).
    pub dropped: u64,
}

/// The connection as the banner shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conn {
    /// Connected (and, after a reconnect, the seq live resumed at).
    Up(Option<u64>),
    /// The service went away; reconnecting.
    Down(String),
    /// The follower ended for good.
    Ended(String),
}

/// The monitor's state.
#[derive(Debug)]
pub struct Model {
    /// The rows held, oldest first.
    pub rows: VecDeque<Row>,
    /// Most rows held.
    pub cap: usize,
    /// The filter box.
    pub filter: Filter,
    /// Kinds hidden (bit `kind as u8`).
    pub hidden: u16,
    /// Paused: the table holds still; records are still taken and counted.
    pub paused: bool,
    /// Following the newest rows (sticky at the bottom).
    pub follow: bool,
    /// The selected row's seq.
    pub selected: Option<u64>,
    /// Counters.
    pub counts: Counters,
    /// The connection.
    pub conn: Conn,
    /// Records per second, the last 60 whole seconds (oldest first) and the current one.
    pub rate: VecDeque<u64>,
    /// The second `rate.back()` counts.
    rate_sec: u64,
    /// Rows that arrived while paused, scrolled or browsing history, shown on resume.
    pub(crate) held: VecDeque<Row>,
    /// The rows passing filter and toggles, when they are not all: their places in `rows`
    /// plus `base`, so that a live row coming in at the back or going out at the front
    /// costs no pass over the rest (a filter over 100,000 rows at a million records a
    /// second would otherwise be matched again in full every frame).
    shown: Option<VecDeque<usize>>,
    /// Rows popped from the front since `shown` was last built.
    base: usize,
    /// `shown` is out of date.
    pub(crate) stale: bool,
    /// History paging (see `history.rs`).
    pub paging: Paging,
    /// The seq the next live record will have.
    pub live_next: u64,
    /// The rows held do not reach the live rows (older pages pushed the newest out, or a
    /// jump went back): live rows wait aside and newer pages fill the way down.
    pub(crate) detached: bool,
    /// Scrolled into the top: ask history for older rows.
    pub want_older: bool,
    /// Scrolled into the bottom while detached: ask history for newer rows.
    pub want_newer: bool,
    /// Bring this seq's row into view at the top (after a jump or a page came in).
    pub scroll_to: Option<u64>,
    /// The lowest seq older pages looked at since the front last moved: a page may come
    /// back empty (a gap, retention), and the next one goes on below it.
    pub(crate) looked_low: Option<u64>,
    /// The highest seq newer pages looked at since the back last moved.
    pub(crate) looked_high: Option<u64>,
}

impl Model {
    /// A monitor holding at most `cap` rows.
    pub fn new(cap: usize) -> Model {
        Model {
            rows: VecDeque::new(),
            cap: cap.max(1),
            filter: Filter::default(),
            hidden: 0,
            paused: false,
            follow: true,
            selected: None,
            counts: Counters::default(),
            conn: Conn::Up(None),
            rate: VecDeque::from([0]),
            rate_sec: 0,
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
        }
    }

    /// Takes what the follower's thread gathered, at second `sec` (for the rate).
    pub fn ingest(&mut self, got: Gathered, sec: u64) {
        self.tick(sec);
        self.counts.received += got.dropped;
        self.counts.dropped += got.dropped;
        let mut records = got.dropped;
        for ev in got.events {
            match ev {
                OwnedEvent::Record(r) => {
                    records += 1;
                    self.counts.received += 1;
                    match r.kind {
                        EventKind::Overflow => self.counts.overflows += 1,
                        EventKind::Gap => {
                            let to = r.gap.map_or(r.seq, |g| g.to);
                            self.counts.gaps += to - r.seq + 1;
                        }
                        _ => {}
                    }
                    if matches!(self.conn, Conn::Down(_)) {
                        self.conn = Conn::Up(None);
                    }
                    self.push(Row::from_owned(r));
                }
                OwnedEvent::Gap { from, to, .. } | OwnedEvent::StorageGap { from, to, .. } => {
                    self.counts.gaps += to - from + 1;
                }
                OwnedEvent::Lagged { from, to } | OwnedEvent::Missing { from, to } => {
                    self.counts.lagged += to - from + 1;
                }
                OwnedEvent::Disconnected { reason, detail } => {
                    self.conn = Conn::Down(format!("{reason}: {detail}"));
                }
                OwnedEvent::Reconnected { start_seq } => self.conn = Conn::Up(Some(start_seq)),
                OwnedEvent::OtherInstance { expected, found } => {
                    self.conn = Conn::Ended(format!(
                        "the service now serves another history ({found}, was {expected})"
                    ));
                }
                _ => {}
            }
        }
        if let Some(e) = got.ended {
            self.conn = Conn::Ended(e.to_string());
        }
        if let Some(r) = self.rate.back_mut() {
            *r += records;
        }
    }

    /// Moves the rate to second `sec`, keeping the last 60 whole seconds.
    pub fn tick(&mut self, sec: u64) {
        while self.rate_sec < sec {
            self.rate_sec += 1;
            self.rate.push_back(0);
            while self.rate.len() > 61 {
                self.rate.pop_front();
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

    pub(crate) fn push(&mut self, row: Row) {
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
        let pass = !self.stale && self.shown.is_some() && self.passes(&row);
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

    /// Whether a row passes the kind toggles and the filter.
    fn passes(&self, r: &Row) -> bool {
        self.hidden & (1 << r.kind as u8) == 0 && self.filter.matches(r)
    }

    /// The oldest row held went: history has older rows again, from the new front down.
    pub(crate) fn front_dropped(&mut self) {
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
        self.follow = follow;
        self.release();
    }

    pub(crate) fn release(&mut self) {
        if !self.holding() {
            for row in std::mem::take(&mut self.held) {
                self.push(row);
            }
        }
    }

    /// Sets the filter text.
    pub fn set_filter(&mut self, text: &str) {
        if text != self.filter.text() {
            self.filter.set(text);
            self.stale = true;
        }
    }

    /// Shows or hides a kind.
    pub fn toggle(&mut self, kind: EventKind) {
        self.hidden ^= 1 << kind as u8;
        self.stale = true;
    }

    /// Whether a kind is shown.
    pub fn kind_shown(&self, kind: EventKind) -> bool {
        self.hidden & (1 << kind as u8) == 0
    }

    /// The index among the rows passing filter and toggles of the first with a seq at or
    /// after `seq`.
    pub fn shown_index_of(&mut self, seq: u64) -> usize {
        self.refresh();
        match &self.shown {
            Some(v) => v.partition_point(|&i| self.rows[i - self.base].seq < seq),
            None => self.rows.partition_point(|r| r.seq < seq),
        }
    }

    /// How many rows pass filter and toggles.
    pub fn shown_len(&mut self) -> usize {
        self.refresh();
        self.shown.as_ref().map_or(self.rows.len(), VecDeque::len)
    }

    /// The `i`th row passing filter and toggles.
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
        self.shown = if self.filter.text().is_empty() && self.hidden == 0 {
            None
        } else {
            Some(
                (0..self.rows.len())
                    .filter(|&i| self.passes(&self.rows[i]))
                    .collect(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, kind: EventKind, path: &str) -> OwnedEvent {
        OwnedEvent::Record(FileEvent {
            seq,
            time_ns: seq * 1_000_000_000,
            kind,
            path: path.as_bytes().to_vec(),
            path_to: None,
            rule: 1,
            size: None,
            reconciled: false,
            blind: None,
            gap: None,
        })
    }

    fn gathered(events: Vec<OwnedEvent>) -> Gathered {
        Gathered {
            events: events.into(),
            ..Gathered::default()
        }
    }

    fn shown(m: &mut Model) -> Vec<u64> {
        (0..m.shown_len())
            .map(|i| m.shown_row(i).unwrap().seq)
            .collect()
    }

    #[test]
    fn filter_toggles_pause_and_the_bound() {
        let mut m = Model::new(4);
        m.ingest(
            gathered(vec![
                rec(1, EventKind::Create, "/w/a.rs"),
                rec(2, EventKind::Remove, "/w/b.txt"),
                rec(3, EventKind::Create, "/w/sub/c.rs"),
            ]),
            0,
        );
        assert_eq!(shown(&mut m), [1, 2, 3]);
        m.set_filter("*.rs");
        assert_eq!(shown(&mut m), [1, 3]);
        m.set_filter("b.t");
        assert_eq!(shown(&mut m), [2]);
        m.set_filter("");
        m.toggle(EventKind::Create);
        assert_eq!(shown(&mut m), [2]);
        m.toggle(EventKind::Create);
        m.set_paused(true);
        m.ingest(gathered(vec![rec(4, EventKind::Modify, "/w/d")]), 0);
        assert_eq!(shown(&mut m), [1, 2, 3], "paused holds the table");
        m.set_paused(false);
        m.ingest(gathered(vec![rec(5, EventKind::Modify, "/w/e")]), 1);
        assert_eq!(shown(&mut m), [2, 3, 4, 5], "at most 4 held");
        assert_eq!(m.counts.dropped, 1);
        assert_eq!(m.counts.received, 5);
        assert_eq!(m.rate, [4, 1]);
        // Scrolled up: held aside like a pause; following again shows them.
        m.set_follow(false);
        m.ingest(gathered(vec![rec(6, EventKind::Modify, "/w/f")]), 1);
        assert_eq!(shown(&mut m), [2, 3, 4, 5]);
        assert_eq!(m.held_len(), 1);
        m.set_follow(true);
        assert_eq!(shown(&mut m), [3, 4, 5, 6]);
    }

    #[test]
    fn the_filtered_rows_kept_as_rows_come_and_go_match_a_full_pass() {
        let mut m = Model::new(7);
        m.set_filter("*.rs");
        m.toggle(EventKind::Remove);
        let kinds = [EventKind::Create, EventKind::Remove, EventKind::Modify];
        for seq in 1..60u64 {
            let path = if seq % 3 == 0 { "/w/x.txt" } else { "/w/y.rs" };
            m.ingest(gathered(vec![rec(seq, kinds[seq as usize % 3], path)]), 0);
            // Read every few rows (a frame), so rows also come and go between reads.
            if seq % 4 != 0 {
                continue;
            }
            let want: Vec<u64> = m
                .rows
                .iter()
                .filter(|r| r.path.ends_with(".rs") && r.kind != EventKind::Remove)
                .map(|r| r.seq)
                .collect();
            assert_eq!(shown(&mut m), want, "after seq {seq}");
            assert_eq!(m.shown_len(), want.len());
            if let Some(&last) = want.last() {
                assert_eq!(m.shown_index_of(last), want.len() - 1);
            }
        }
        assert_eq!(m.rows.len(), 7);
    }

    #[test]
    fn an_owned_record_escapes_like_a_borrowed_one() {
        for path in [&b"/w/plain"[..], b"/w/back\\slash", b"/w/bad\xff"] {
            let e = FileEvent {
                seq: 1,
                time_ns: 0,
                kind: EventKind::Rename,
                path: path.to_vec(),
                path_to: Some(path.to_vec()),
                rule: 1,
                size: None,
                reconciled: false,
                blind: None,
                gap: None,
            };
            assert_eq!(Row::from_owned(e.clone()), Row::from_event(&e));
        }
    }

    #[test]
    fn notices_move_the_counters_and_the_banner() {
        let mut m = Model::new(10);
        m.ingest(
            Gathered {
                events: vec![
                    OwnedEvent::Lagged { from: 1, to: 3 },
                    OwnedEvent::Gap {
                        from: 4,
                        to: 4,
                        reason: firehose_consumer::GapReason::NotStored,
                    },
                    rec(5, EventKind::Overflow, "/w"),
                    OwnedEvent::Disconnected {
                        reason: firehose_consumer::DisconnectReason::Gone,
                        detail: "eof".into(),
                    },
                ]
                .into(),
                dropped: 2,
                ..Gathered::default()
            },
            0,
        );
        assert_eq!(
            m.counts,
            Counters {
                received: 3,
                lagged: 3,
                gaps: 1,
                overflows: 1,
                dropped: 2,
            }
        );
        assert!(matches!(m.conn, Conn::Down(_)));
        m.ingest(gathered(vec![OwnedEvent::Reconnected { start_seq: 9 }]), 0);
        assert_eq!(m.conn, Conn::Up(Some(9)));
    }
}
