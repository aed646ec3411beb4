//! [`RuleIds`]: the map from rule names to rule ids that keeps ids stable across reloads.

use std::collections::HashMap;

/// The id of the implicit rule that takes overflow records no rule claims.
pub const OVERFLOW_RULE_ID: u32 = 0;
/// The id of the implicit rule `all` (used when there are no documents).
pub const IMPLICIT_RULE_ID: u32 = 1;
/// The first id given to a rule from a document.
pub const FIRST_RULE_ID: u32 = 2;

/// Rule name → rule id, for every name seen so far.
///
/// History rows store a rule's id, so a rule keeps its id for as long as its name stays
/// the same: a reload takes the previous set's `RuleIds` (see
/// [`RuleSet::load_dir_with`](super::RuleSet::load_dir_with)), keeps the ids of names it
/// knows and gives new names fresh ids. Ids of removed rules are never given to another
/// name. To keep ids across service restarts, persist [`RuleIds::iter`] and rebuild with
/// [`RuleIds::from_pairs`].
///
/// Ids 0 and 1 belong to the implicit rules ([`OVERFLOW_RULE_ID`], [`IMPLICIT_RULE_ID`]);
/// document rules get ids from [`FIRST_RULE_ID`] up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleIds {
    by_name: HashMap<String, u32>,
    next: u32,
}

impl Default for RuleIds {
    fn default() -> Self {
        RuleIds::new()
    }
}

impl RuleIds {
    /// No names known yet.
    pub fn new() -> RuleIds {
        RuleIds {
            by_name: HashMap::new(),
            next: FIRST_RULE_ID,
        }
    }

    /// Rebuilds a map from persisted `(name, id)` pairs. Pairs with an id below
    /// [`FIRST_RULE_ID`] are ignored; new names get ids above the largest one given.
    pub fn from_pairs<I: IntoIterator<Item = (String, u32)>>(pairs: I) -> RuleIds {
        let mut ids = RuleIds::new();
        for (name, id) in pairs {
            if id >= FIRST_RULE_ID {
                ids.next = ids.next.max(id.saturating_add(1));
                ids.by_name.insert(name, id);
            }
        }
        ids
    }

    /// The id of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Every `(name, id)` pair known, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.by_name.iter().map(|(n, &i)| (n.as_str(), i))
    }

    /// The id of `name`, given a fresh one if it has none.
    pub(crate) fn assign(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.next;
        self.next = self.next.saturating_add(1);
        self.by_name.insert(name.to_string(), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_never_reused() {
        let mut ids = RuleIds::new();
        assert_eq!(ids.assign("a"), 2);
        assert_eq!(ids.assign("b"), 3);
        assert_eq!(ids.assign("a"), 2);
        let restored = RuleIds::from_pairs(ids.iter().map(|(n, i)| (n.to_string(), i)));
        let mut restored = restored;
        assert_eq!(restored.get("b"), Some(3));
        assert_eq!(restored.assign("c"), 4);
        let mut odd = RuleIds::from_pairs([("x".to_string(), 0), ("y".to_string(), 9)]);
        assert_eq!(odd.get("x"), None);
        assert_eq!(odd.assign("z"), 10);
    }
}
