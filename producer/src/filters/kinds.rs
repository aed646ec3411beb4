//! The event kinds a rule can name in `kinds`, and [`KindSet`], a set of them.

use firehose_transport::record::EventKind;
use std::fmt;

/// The kind a document names `name`, if a rule may list it (not `gap` or `other`).
pub fn parse_kind(name: &str) -> Option<EventKind> {
    EventKind::from_name(name).filter(|k| EventKind::FILTERABLE.contains(k))
}

/// A set of event kinds, one bit per kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KindSet(u16);

impl KindSet {
    /// No kinds.
    pub const EMPTY: KindSet = KindSet(0);

    /// Every kind a rule can name (the default of `kinds`).
    pub fn all() -> KindSet {
        EventKind::FILTERABLE
            .into_iter()
            .fold(KindSet::EMPTY, KindSet::with)
    }

    /// This set with `kind` added.
    #[must_use]
    pub fn with(self, kind: EventKind) -> KindSet {
        KindSet(self.0 | bit(kind))
    }

    /// Whether `kind` is in the set.
    #[inline]
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & bit(kind) != 0
    }

    /// The kinds in the set, in [`EventKind::FILTERABLE`] order.
    pub fn iter(self) -> impl Iterator<Item = EventKind> {
        EventKind::FILTERABLE
            .into_iter()
            .filter(move |&k| self.contains(k))
    }
}

#[inline]
fn bit(kind: EventKind) -> u16 {
    1 << (kind as u8)
}

impl fmt::Debug for KindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(EventKind::name))
            .finish()
    }
}

impl fmt::Display for KindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == KindSet::all() {
            return f.write_str("all");
        }
        for (i, k) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(k.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sets_hold_what_was_added() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
        }
        for kind in EventKind::FILTERABLE {
            assert_eq!(parse_kind(kind.name()), Some(kind));
        }
        assert_eq!(parse_kind("Create"), None);
        assert_eq!(parse_kind("gap"), None);
        assert_eq!(parse_kind("other"), None);
        let s = KindSet::EMPTY
            .with(EventKind::Remove)
            .with(EventKind::Create);
        assert!(s.contains(EventKind::Create) && s.contains(EventKind::Remove));
        assert!(!s.contains(EventKind::Modify));
        assert_eq!(s.to_string(), "create, remove");
        assert_eq!(KindSet::all().to_string(), "all");
        assert!(!KindSet::all().contains(EventKind::Gap));
        assert!(!KindSet::all().contains(EventKind::Other));
    }
}
