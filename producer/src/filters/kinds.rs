//! The event kinds a rule can name in `kinds`, and [`KindSet`], a set of them.

use firehose_transport::record::EventKind;
use std::fmt;

/// Every kind a rule may list, by its name in documents, in the order documents show them.
pub const KIND_NAMES: [(&str, EventKind); 7] = [
    ("create", EventKind::Create),
    ("modify", EventKind::Modify),
    ("close_write", EventKind::CloseWrite),
    ("metadata", EventKind::Metadata),
    ("remove", EventKind::Remove),
    ("rename", EventKind::Rename),
    ("overflow", EventKind::Overflow),
];

/// The kind a document names `name`, if any.
pub fn parse_kind(name: &str) -> Option<EventKind> {
    KIND_NAMES.iter().find(|(n, _)| *n == name).map(|&(_, k)| k)
}

/// The name documents use for `kind` (`gap` and `other`, which rules cannot name, included).
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Create => "create",
        EventKind::Modify => "modify",
        EventKind::CloseWrite => "close_write",
        EventKind::Metadata => "metadata",
        EventKind::Remove => "remove",
        EventKind::Rename => "rename",
        EventKind::Overflow => "overflow",
        EventKind::Gap => "gap",
        EventKind::Other => "other",
    }
}

/// A set of event kinds, one bit per kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KindSet(u16);

impl KindSet {
    /// No kinds.
    pub const EMPTY: KindSet = KindSet(0);

    /// Every kind a rule can name (the default of `kinds`).
    pub fn all() -> KindSet {
        KIND_NAMES
            .iter()
            .fold(KindSet::EMPTY, |s, &(_, k)| s.with(k))
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

    /// The kinds in the set, in [`KIND_NAMES`] order.
    pub fn iter(self) -> impl Iterator<Item = EventKind> {
        KIND_NAMES
            .iter()
            .map(|&(_, k)| k)
            .filter(move |&k| self.contains(k))
    }
}

#[inline]
fn bit(kind: EventKind) -> u16 {
    1 << (kind as u8)
}

impl fmt::Debug for KindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(kind_name)).finish()
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
            f.write_str(kind_name(k))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sets_hold_what_was_added() {
        for (name, kind) in KIND_NAMES {
            assert_eq!(parse_kind(name), Some(kind));
            assert_eq!(kind_name(kind), name);
        }
        assert_eq!(parse_kind("Create"), None);
        assert_eq!(parse_kind("gap"), None);
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
