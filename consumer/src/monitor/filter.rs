//! [`Filter`]: which rows a monitor shows: the filter box's text and the kinds switched
//! off.
//!
//! The text is a glob when it uses glob syntax, in the one path-glob dialect of history
//! queries ([`path_glob`]: matched against the whole path, `*` crossing `/`), else a
//! substring. A glob that does not compile (typed halfway, `src/[a`) matches as a
//! substring until it does.

use firehose_transport::path_glob::{self, GlobMatcher};
use firehose_transport::record::EventKind;

use super::row::Row;

/// The rows to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    text: String,
    glob: Option<GlobMatcher>,
    /// Bit `1 << kind as u8` for each kind hidden.
    hidden: u32,
}

impl Filter {
    /// Sets the text (empty: every path).
    pub fn set_text(&mut self, text: &str) {
        self.text = text.to_string();
        self.glob = if path_glob::is_glob(text) {
            path_glob::compile(text).ok()
        } else {
            None
        };
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it shows every row (no text, no kind hidden).
    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.hidden == 0
    }

    /// Whether `row` is shown: its kind is on and its path (or a rename's new path)
    /// matches.
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::monitor::{Filter, Row};
    /// use firehose_consumer::EventKind;
    /// let row = Row { seq: 1, time_ns: 0, kind: EventKind::Create, path: "/w/src/main.rs".into(),
    ///     to: None, rule: 0, size: None };
    /// let mut f = Filter::default();
    /// f.set_text("*.rs");
    /// assert!(f.matches(&row));
    /// f.set_text("src/m");
    /// assert!(f.matches(&row));
    /// f.toggle(EventKind::Create);
    /// assert!(!f.matches(&row));
    /// ```
    pub fn matches(&self, row: &Row) -> bool {
        self.shows(row.kind)
            && (self.text.is_empty()
                || self.text_matches(&row.path)
                || row.to.as_deref().is_some_and(|t| self.text_matches(t)))
    }

    fn text_matches(&self, path: &str) -> bool {
        match &self.glob {
            Some(g) => g.is_match(path),
            None => path.contains(self.text.as_str()),
        }
    }

    /// Whether the kind is shown.
    pub fn shows(&self, kind: EventKind) -> bool {
        self.hidden & (1 << kind as u8) == 0
    }

    /// Switches a kind on or off.
    pub fn toggle(&mut self, kind: EventKind) {
        self.hidden ^= 1 << kind as u8;
    }

    /// The byte ranges of `path` to highlight, ascending and not overlapping: where the
    /// substring, or the glob's literal runs, occur.
    pub fn highlights(&self, path: &str) -> Vec<(usize, usize)> {
        if self.text.is_empty() {
            return Vec::new();
        }
        let needles = if self.glob.is_some() {
            path_glob::literals(&self.text)
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
    use super::*;

    fn row(kind: EventKind, path: &str, to: Option<&str>) -> Row {
        Row {
            seq: 1,
            time_ns: 0,
            kind,
            path: path.into(),
            to: to.map(Into::into),
            rule: 0,
            size: None,
        }
    }

    #[test]
    fn text_globs_and_kinds_filter_and_highlight() {
        let mut f = Filter::default();
        let r = row(EventKind::Create, "/d/alpha.txt", None);
        assert!(f.matches(&r) && f.is_empty());
        f.set_text("pha");
        assert!(f.matches(&r));
        assert_eq!(f.highlights(&r.path), [(5, 8)]);
        f.set_text("*.txt");
        assert!(f.matches(&r));
        assert_eq!(f.highlights(&r.path), [(8, 12)]);
        f.set_text("*.{rs,md}");
        assert!(!f.matches(&r));
        // Typed halfway: a substring until the glob compiles.
        f.set_text("[al");
        assert!(!f.matches(&r));
        assert!(f.matches(&row(EventKind::Create, "/d/[alpha", None)));
        f.set_text("");
        f.toggle(EventKind::Create);
        assert!(!f.matches(&r) && !f.shows(EventKind::Create) && !f.is_empty());
        f.toggle(EventKind::Create);
        assert!(f.matches(&r));
    }

    #[test]
    fn renames_match_on_either_path() {
        let mut f = Filter::default();
        f.set_text("new");
        assert!(f.matches(&row(EventKind::Rename, "/d/old", Some("/d/new"))));
        assert!(!f.matches(&row(EventKind::Rename, "/d/old", Some("/d/x"))));
    }
}
