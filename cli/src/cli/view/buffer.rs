//! [`Buffer`]: the rows held in memory, in seq order, bounded, with the positions of the
//! rows the filter shows.
//!
//! Every row has an absolute position (`base` is the position of the first held row), so
//! the selection survives rows dropped at the front or pages of history added there.

use std::collections::VecDeque;

use super::filter::Filter;
use super::row::Row;

/// The rows held, oldest first.
#[derive(Debug)]
pub(crate) struct Buffer {
    rows: VecDeque<Row>,
    /// Absolute position of `rows[0]`.
    base: u64,
    /// Absolute positions of the rows the filter shows, ascending.
    visible: VecDeque<u64>,
    /// Most rows held by live appends (history may add a page more).
    pub(crate) cap: usize,
    /// Rows dropped at the front to stay within `cap`.
    pub(crate) dropped: u64,
}

impl Buffer {
    /// An empty buffer holding at most `cap` rows.
    pub(crate) fn new(cap: usize) -> Buffer {
        Buffer {
            rows: VecDeque::new(),
            base: 1 << 62,
            visible: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// Rows held.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The oldest and newest held rows.
    pub(crate) fn front(&self) -> Option<&Row> {
        self.rows.front()
    }

    /// The newest held row.
    pub(crate) fn back(&self) -> Option<&Row> {
        self.rows.back()
    }

    /// The positions of the shown rows.
    pub(crate) fn visible(&self) -> &VecDeque<u64> {
        &self.visible
    }

    /// The newest held row's position (one before the first if empty).
    pub(crate) fn last_pos(&self) -> u64 {
        self.base + self.rows.len() as u64 - 1
    }

    /// The row at an absolute position.
    pub(crate) fn get(&self, pos: u64) -> Option<&Row> {
        let i = pos.checked_sub(self.base)?;
        self.rows.get(usize::try_from(i).ok()?)
    }

    /// Appends a newer row, dropping the oldest past `cap`.
    pub(crate) fn push_back(&mut self, row: Row, filter: &Filter) {
        let pos = self.base + self.rows.len() as u64;
        if filter.matches(&row) {
            self.visible.push_back(pos);
        }
        self.rows.push_back(row);
        while self.rows.len() > self.cap {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if self.rows.pop_front().is_some() {
            if self.visible.front() == Some(&self.base) {
                self.visible.pop_front();
            }
            self.base += 1;
            self.dropped += 1;
        }
    }

    /// Adds an older row in front (from history).
    pub(crate) fn push_front(&mut self, row: Row, filter: &Filter) {
        self.base -= 1;
        if filter.matches(&row) {
            self.visible.push_front(self.base);
        }
        self.rows.push_front(row);
    }

    /// Removes the newest row.
    pub(crate) fn pop_back(&mut self) -> Option<Row> {
        let row = self.rows.pop_back()?;
        let pos = self.base + self.rows.len() as u64;
        if self.visible.back() == Some(&pos) {
            self.visible.pop_back();
        }
        Some(row)
    }

    /// Removes every row (positions go on from where they were).
    pub(crate) fn clear(&mut self) {
        self.base += self.rows.len() as u64;
        self.rows.clear();
        self.visible.clear();
    }

    /// Recomputes the shown rows for a new filter.
    pub(crate) fn refilter(&mut self, filter: &Filter) {
        self.visible = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| filter.matches(r))
            .map(|(i, _)| self.base + i as u64)
            .collect();
    }

    /// The index in `visible` of the first shown row at or after `pos` (clamped to the
    /// last one).
    pub(crate) fn index_of(&self, pos: u64) -> usize {
        self.visible
            .partition_point(|&p| p < pos)
            .min(self.visible.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::super::row::test_row;
    use super::*;
    use firehose_consumer::EventKind;

    fn push(b: &mut Buffer, f: &Filter, seqs: std::ops::RangeInclusive<u64>) {
        for s in seqs {
            b.push_back(test_row(s, EventKind::Create, &format!("/f{s}")), f);
        }
    }

    #[test]
    fn bounded_with_positions_that_survive_drops() {
        let f = Filter::default();
        let mut b = Buffer::new(3);
        push(&mut b, &f, 1..=5);
        assert_eq!(b.len(), 3);
        assert_eq!(b.dropped, 2);
        assert_eq!(b.front().unwrap().seq, 3);
        let first = b.visible()[0];
        assert_eq!(b.get(first).unwrap().seq, 3);
        b.push_front(test_row(2, EventKind::Create, "/f2"), &f);
        assert_eq!(b.get(first).unwrap().seq, 3);
        assert_eq!(b.get(first - 1).unwrap().seq, 2);
        assert_eq!(b.pop_back().unwrap().seq, 5);
        assert_eq!(b.visible().len(), 3);
    }

    #[test]
    fn the_filter_picks_visible_rows() {
        let mut f = Filter::default();
        let mut b = Buffer::new(10);
        push(&mut b, &f, 1..=12);
        f.text = "f1".into();
        b.refilter(&f);
        let seqs: Vec<u64> = b.visible().iter().map(|&p| b.get(p).unwrap().seq).collect();
        assert_eq!(seqs, [10, 11, 12]);
        push(&mut b, &f, 13..=14);
        assert_eq!(b.visible().len(), 5);
        assert_eq!(b.index_of(0), 0);
        assert_eq!(b.index_of(u64::MAX), 4);
    }
}
