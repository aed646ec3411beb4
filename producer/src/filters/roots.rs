//! [`RootIndex`]: which of a rule set's roots contain a path, without comparing the path
//! with every root.
//!
//! Roots are grouped by byte length. A root of length `n` can contain a path only if the
//! path's first `n` bytes end at a component boundary (the path ends there or a `/`
//! follows), so for each distinct length the index checks that boundary and then looks the
//! prefix up in a hash map: cost grows with the number of distinct root lengths, not with
//! the number of roots.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes only the last 8 bytes of a key (and its length). Keys in one map have the same
/// length and are roots, which differ mostly at their ends (`/home/me/p1`, `/home/me/p2`);
/// equal tails only cost a comparison. The keys are the user's own roots, so flooding is
/// not a concern. Constant time per lookup, whatever the root's length.
#[derive(Debug, Default)]
struct TailHash(u64);

impl Hasher for TailHash {
    fn finish(&self) -> u64 {
        // Final mix (from splitmix64) so that hashbrown's top bits vary.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        let start = bytes.len().saturating_sub(8);
        let mut v = [0u8; 8];
        v[..bytes.len() - start].copy_from_slice(&bytes[start..]);
        self.0 =
            (self.0.rotate_left(17) ^ u64::from_le_bytes(v)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type TailMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<TailHash>>;

/// Distinct roots, each with a slot number, looked up by length then bytes.
#[derive(Clone, Debug, Default)]
pub(crate) struct RootIndex {
    /// (length, root bytes → slot), by increasing length.
    by_len: Vec<(usize, TailMap<usize>)>,
}

impl RootIndex {
    /// Adds `root` (normalised bytes: no trailing `/` except for `/` itself) as `slot`.
    pub(crate) fn insert(&mut self, root: &[u8], slot: usize) {
        let len = root.len();
        let at = match self.by_len.binary_search_by_key(&len, |(l, _)| *l) {
            Ok(i) => i,
            Err(i) => {
                self.by_len.insert(i, (len, TailMap::default()));
                i
            }
        };
        self.by_len[at].1.insert(root.into(), slot);
    }

    /// Calls `f` with the slot of every root that contains `path` (is equal to it or an
    /// ancestor of it).
    #[inline]
    pub(crate) fn containing(&self, path: &[u8], mut f: impl FnMut(usize)) {
        for (len, map) in &self.by_len {
            let len = *len;
            if len > path.len() {
                break;
            }
            let boundary =
                len == path.len() || path[len] == b'/' || (len > 0 && path[len - 1] == b'/');
            if boundary {
                if let Some(&slot) = map.get(&path[..len]) {
                    f(slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(index: &RootIndex, path: &[u8]) -> Vec<usize> {
        let mut v = Vec::new();
        index.containing(path, |s| v.push(s));
        v
    }

    #[test]
    fn finds_every_ancestor_root_and_only_those() {
        let mut ix = RootIndex::default();
        for (i, r) in ["/a/b", "/a", "/a/bc", "/x/y", "/"].iter().enumerate() {
            ix.insert(r.as_bytes(), i);
        }
        assert_eq!(hits(&ix, b"/a/b/c"), [4, 1, 0]);
        assert_eq!(hits(&ix, b"/a/b"), [4, 1, 0]);
        assert_eq!(hits(&ix, b"/a/bc"), [4, 1, 2]);
        assert_eq!(hits(&ix, b"/a/bcd"), [4, 1]);
        assert_eq!(hits(&ix, b"/x/yz"), [4]);
        assert_eq!(hits(&ix, b""), Vec::<usize>::new());
        let mut no_slash = RootIndex::default();
        no_slash.insert(b"/a", 0);
        assert_eq!(hits(&no_slash, b"/"), Vec::<usize>::new());
        assert_eq!(hits(&no_slash, b"/ab"), Vec::<usize>::new());
    }
}
