//! A set of inclusive seq ranges that merges adjacent and overlapping ones: the writer's
//! record of dropped or unstored seqs, turned into gap records later.

use std::collections::BTreeMap;

/// Inclusive ranges `start ..= end`, disjoint and never adjacent (adjacent ones merge).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RangeSet {
    /// start -> end.
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Adds `from ..= to` (`from <= to`).
    pub(crate) fn insert(&mut self, from: u64, to: u64) {
        debug_assert!(from <= to);
        let (mut from, mut to) = (from, to);
        // Merge a range that starts before `from` and reaches it (or touches it).
        if let Some((&s, &e)) = self.map.range(..=from).next_back() {
            if e.saturating_add(1) >= from {
                from = s;
                to = to.max(e);
                self.map.remove(&s);
            }
        }
        // Merge every range that starts inside `from ..= to + 1`.
        loop {
            let next = self
                .map
                .range(from..=to.saturating_add(1))
                .next()
                .map(|(&s, &e)| (s, e));
            match next {
                Some((s, e)) => {
                    to = to.max(e);
                    self.map.remove(&s);
                }
                None => break,
            }
        }
        self.map.insert(from, to);
    }

    /// Adds every range of `other`.
    pub(crate) fn extend(&mut self, other: RangeSet) {
        for (s, e) in other.map {
            self.insert(s, e);
        }
    }

    /// Removes and returns the ranges that start at or after `at`.
    pub(crate) fn split_off(&mut self, at: u64) -> RangeSet {
        RangeSet {
            map: self.map.split_off(&at),
        }
    }

    /// No ranges.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The ranges, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    /// Empties the set, returning what it held.
    pub(crate) fn take(&mut self) -> RangeSet {
        std::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_a_bitmap(ranges in proptest::collection::vec((0u64..200, 0u64..20), 0..40)) {
            let mut set = RangeSet::default();
            let mut bits = [false; 230];
            for &(s, l) in &ranges {
                set.insert(s, s + l);
                for b in &mut bits[s as usize..=(s + l) as usize] {
                    *b = true;
                }
            }
            // Rebuild maximal runs from the bitmap and compare.
            let mut want = Vec::new();
            let mut i = 0;
            while i < bits.len() {
                if bits[i] {
                    let s = i;
                    while i + 1 < bits.len() && bits[i + 1] { i += 1; }
                    want.push((s as u64, i as u64));
                }
                i += 1;
            }
            let got: Vec<_> = set.iter().collect();
            prop_assert_eq!(got, want);
        }
    }
}
