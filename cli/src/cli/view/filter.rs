//! [`Filter`]: what the table shows: a text (a glob if it has `*`, `?` or `[`, else a
//! substring) and the kinds switched on.

use firehose_consumer::EventKind;

use super::glob;
use super::row::Row;

/// The kinds keys 1..7 toggle, in order.
pub(crate) const TOGGLED: [EventKind; 7] = EventKind::FILTERABLE;

/// The rows to show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// The filter box's text; empty: everything.
    pub(crate) text: String,
    /// Bit `1 << kind as u8` for each kind hidden.
    pub(crate) hidden: u32,
}

impl Filter {
    /// Whether the row is shown.
    pub(crate) fn matches(&self, row: &Row) -> bool {
        if self.hidden & (1 << row.kind as u8) != 0 {
            return false;
        }
        self.text.is_empty()
            || self.text_matches(&row.path)
            || row.to.as_deref().is_some_and(|t| self.text_matches(t))
    }

    fn text_matches(&self, path: &str) -> bool {
        if glob::is_glob(&self.text) {
            glob::matches(&self.text, path)
        } else {
            path.contains(self.text.as_str())
        }
    }

    /// Whether the kind is shown.
    pub(crate) fn shows(&self, kind: EventKind) -> bool {
        self.hidden & (1 << kind as u8) == 0
    }

    /// Switches a kind on or off.
    pub(crate) fn toggle(&mut self, kind: EventKind) {
        self.hidden ^= 1 << kind as u8;
    }

    /// The byte ranges of `path` to highlight.
    pub(crate) fn highlights(&self, path: &str) -> Vec<(usize, usize)> {
        if self.text.is_empty() {
            return Vec::new();
        }
        let needles = if glob::is_glob(&self.text) {
            glob::literals(&self.text)
        } else {
            vec![self.text.clone()]
        };
        let mut out: Vec<(usize, usize)> = Vec::new();
        for n in needles.iter().filter(|n| !n.is_empty()) {
            for (at, m) in path.match_indices(n.as_str()) {
                out.push((at, at + m.len()));
            }
        }
        out.sort_unstable();
        // Merge overlaps so the spans can be cut in order.
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (a, b) in out {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::super::row::test_row;
    use super::*;

    #[test]
    fn text_and_kinds_filter() {
        let mut f = Filter::default();
        let r = test_row(1, EventKind::Create, "/d/alpha.txt");
        assert!(f.matches(&r));
        f.text = "pha".into();
        assert!(f.matches(&r));
        assert_eq!(f.highlights(&r.path), [(5, 8)]);
        f.text = "*.txt".into();
        assert!(f.matches(&r));
        assert_eq!(f.highlights(&r.path), [(8, 12)]);
        f.text = "*.rs".into();
        assert!(!f.matches(&r));
        f.text.clear();
        f.toggle(EventKind::Create);
        assert!(!f.matches(&r) && !f.shows(EventKind::Create));
        f.toggle(EventKind::Create);
        assert!(f.matches(&r));
    }

    #[test]
    fn renames_match_on_either_path() {
        let mut r = test_row(1, EventKind::Rename, "/d/old");
        r.to = Some("/d/new".into());
        let f = Filter {
            text: "new".into(),
            hidden: 0,
        };
        assert!(f.matches(&r));
    }
}
