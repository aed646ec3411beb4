//! [`RuleSet`]: every rule compiled into one matcher, and [`RuleSet::matches`].
//!
//! # How matching works
//!
//! All include globs of all rules go into one `GlobSet`, all exclude globs into another;
//! each rule owns a contiguous range of each set's indexes, and a table maps a glob's
//! index back to its rule. Rules are bits in small bitsets (one `u64` word per 64 rules):
//!
//! 1. candidates = the rules of every distinct root that contains the path (a byte-prefix
//!    test ending at a `/`), intersected with the rules that take the event's kind;
//! 2. if a candidate has include globs, the include set runs once over the path
//!    (`matches_candidate_into` into a reused `Vec`); candidates keep a bit if they
//!    include everything or one of their globs matched;
//! 3. if a remaining candidate has exclude globs, the exclude set runs once and clears
//!    the bits of rules whose exclude matched;
//! 4. the lowest remaining bit, the first rule in document order, wins.
//!
//! A path outside every root costs a few prefix comparisons and no glob matching.

use super::document::RuleSpec;
use super::error::FilterError;
use super::ids::{RuleIds, IMPLICIT_RULE_ID, OVERFLOW_RULE_ID};
use super::kinds::KindSet;
use super::pattern::{self, Pattern};
use firehose_transport::record::EventKind;
use globset::{Candidate, GlobSet, GlobSetBuilder};
use std::cell::RefCell;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the winning rule says about an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// The rule's id (stable across reloads while its name stays; see [`RuleIds`]).
    pub rule: u32,
    /// Store the record in history.
    pub store: bool,
    /// Stream the record to the ring.
    pub stream: bool,
    /// The rule's coalescing window, for any kind (the [`Coalescer`](super::Coalescer)
    /// folds only create, modify and close_write).
    pub coalesce: Option<Duration>,
}

/// One rule as `status` and `check-filters` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// The document it comes from; `None` for the implicit rule.
    pub source: Option<PathBuf>,
    /// The roots it applies to (the `--watch` roots when `default_roots`).
    pub roots: Vec<PathBuf>,
    /// Whether it has no `roots` of its own and uses the `--watch` roots.
    pub default_roots: bool,
    /// Include globs as written (empty: everything).
    pub include: Vec<String>,
    /// Exclude globs as written.
    pub exclude: Vec<String>,
    /// The kinds it takes.
    pub kinds: KindSet,
    /// Whether its matches are stored.
    pub store: bool,
    /// Whether its matches are streamed.
    pub stream: bool,
    /// Its coalescing window.
    pub coalesce: Option<Duration>,
}

/// Reusable buffers for [`RuleSet::matches_with`]; one per thread that matches.
#[derive(Debug, Default)]
pub struct MatchScratch {
    globs: Vec<usize>,
    cand: Vec<u64>,
}

/// A distinct root and the rules that apply under it.
#[derive(Clone, Debug)]
struct Root {
    /// Normalised path bytes: no trailing `/` except for `/` itself.
    bytes: Vec<u8>,
    rules: Vec<u64>,
}

/// Per-rule compiled data, indexed like `RuleSet::rules`.
#[derive(Clone, Debug)]
struct Compiled {
    m: Match,
    /// This rule's indexes in `RuleSet::include`.
    include: Range<usize>,
    /// This rule's indexes in `RuleSet::exclude`.
    exclude: Range<usize>,
}

/// Every rule of a filter directory compiled into one matcher. Cheap to share behind an
/// `Arc`; immutable once built (a reload builds a new one).
#[derive(Clone, Debug)]
pub struct RuleSet {
    rules: Vec<RuleInfo>,
    compiled: Vec<Compiled>,
    include: GlobSet,
    /// Include glob index → rule index.
    include_rule: Vec<u32>,
    exclude: GlobSet,
    /// Exclude glob index → rule index.
    exclude_rule: Vec<u32>,
    roots: Vec<Root>,
    /// Per `EventKind as usize`: the rules that take it.
    kind_rules: Vec<Vec<u64>>,
    /// Rules with no include globs (they include everything).
    include_all: Vec<u64>,
    /// Rules with exclude globs.
    has_exclude: Vec<u64>,
    words: usize,
    ids: RuleIds,
    default_roots: Vec<PathBuf>,
    /// Hash of the documents it was built from (names and contents), to skip no-op reloads.
    pub(crate) digest: u64,
}

/// One rule ready to compile: its spec and where it comes from.
#[derive(Debug)]
pub(crate) struct SourcedSpec {
    pub(crate) source: Option<PathBuf>,
    pub(crate) spec: RuleSpec,
}

impl RuleSet {
    /// The rule set used when there are no filter documents: one rule, `all`
    /// (id [`IMPLICIT_RULE_ID`]), taking every kind under `default_roots`, stored and
    /// streamed.
    pub fn implicit(default_roots: &[PathBuf]) -> RuleSet {
        Self::implicit_with(default_roots, &RuleIds::new())
    }

    pub(crate) fn implicit_with(default_roots: &[PathBuf], ids: &RuleIds) -> RuleSet {
        let spec = RuleSpec {
            name: "all".into(),
            name_offset: 0,
            roots: None,
            include: None,
            include_text: Vec::new(),
            exclude_text: Vec::new(),
            exclude: Vec::new(),
            kinds: KindSet::all(),
            store: true,
            stream: true,
            coalesce: None,
        };
        let mut set = Self::compile(vec![SourcedSpec { source: None, spec }], default_roots, ids)
            .unwrap_or_else(|_| unreachable!("the implicit rule has no globs to fail"));
        set.rules[0].id = IMPLICIT_RULE_ID;
        set.compiled[0].m.rule = IMPLICIT_RULE_ID;
        set.ids = ids.clone();
        set
    }

    /// Compiles checked rules, in match order. Ids come from `ids` (new names get new ids).
    pub(crate) fn compile(
        specs: Vec<SourcedSpec>,
        default_roots: &[PathBuf],
        ids: &RuleIds,
    ) -> Result<RuleSet, FilterError> {
        let mut ids = ids.clone();
        let default_roots: Vec<PathBuf> = dedup(default_roots.iter().map(|r| normalize(r)));
        let n = specs.len();
        let words = n.div_ceil(64).max(1);
        let mut include_b = GlobSetBuilder::new();
        let mut exclude_b = GlobSetBuilder::new();
        let (mut include_rule, mut exclude_rule) = (Vec::new(), Vec::new());
        let mut rules = Vec::with_capacity(n);
        let mut compiled = Vec::with_capacity(n);
        let mut roots: Vec<Root> = Vec::new();
        let mut kind_rules = vec![vec![0u64; words]; 9];
        let mut include_all = vec![0u64; words];
        let mut has_exclude = vec![0u64; words];
        for (i, SourcedSpec { source, spec }) in specs.into_iter().enumerate() {
            let where_ = source.clone().unwrap_or_default();
            let rule_roots = match &spec.roots {
                Some(r) => dedup(r.iter().cloned()),
                None => default_roots.clone(),
            };
            for r in &rule_roots {
                let bytes = r.as_os_str().as_bytes().to_vec();
                let slot = match roots.iter().position(|x| x.bytes == bytes) {
                    Some(p) => p,
                    None => {
                        roots.push(Root {
                            bytes,
                            rules: vec![0; words],
                        });
                        roots.len() - 1
                    }
                };
                set_bit(&mut roots[slot].rules, i);
            }
            for k in spec.kinds.iter() {
                set_bit(&mut kind_rules[k as usize], i);
            }
            let add = |b: &mut GlobSetBuilder,
                       map: &mut Vec<u32>,
                       pats: &[Pattern]|
             -> Result<Range<usize>, FilterError> {
                let start = map.len();
                for p in pats {
                    for g in p.globs(&rule_roots) {
                        let glob = pattern::build(&g).map_err(|e| {
                            FilterError::whole(&where_, format!("rule {:?}: {e}", spec.name))
                        })?;
                        b.add(glob);
                        map.push(i as u32);
                    }
                }
                Ok(start..map.len())
            };
            let include = match &spec.include {
                None => {
                    set_bit(&mut include_all, i);
                    include_rule.len()..include_rule.len()
                }
                Some(p) => add(&mut include_b, &mut include_rule, p)?,
            };
            let exclude = add(&mut exclude_b, &mut exclude_rule, &spec.exclude)?;
            if !exclude.is_empty() {
                set_bit(&mut has_exclude, i);
            }
            let id = ids.assign(&spec.name);
            let m = Match {
                rule: id,
                store: spec.store,
                stream: spec.stream,
                coalesce: spec.coalesce,
            };
            compiled.push(Compiled {
                m,
                include,
                exclude,
            });
            rules.push(RuleInfo {
                id,
                name: spec.name,
                source,
                default_roots: spec.roots.is_none(),
                roots: rule_roots,
                include: spec.include_text,
                exclude: spec.exclude_text,
                kinds: spec.kinds,
                store: spec.store,
                stream: spec.stream,
                coalesce: spec.coalesce,
            });
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| {
                FilterError::whole(Path::new(""), format!("cannot compile the globs: {e}"))
            })
        };
        Ok(RuleSet {
            rules,
            compiled,
            include: build(include_b)?,
            include_rule,
            exclude: build(exclude_b)?,
            exclude_rule,
            roots,
            kind_rules,
            include_all,
            has_exclude,
            words,
            ids,
            default_roots,
            digest: 0,
        })
    }

    /// The rule that takes an event of `kind` on `path` (raw bytes: Linux paths need not
    /// be UTF-8), if any: the first rule, in order, whose roots contain the path, whose
    /// include globs match it (or that has none), whose exclude globs do not, and that
    /// takes `kind`.
    ///
    /// `Overflow` always matches: the first rule that takes `overflow` and whose roots
    /// contain the path gives its id, otherwise the implicit id [`OVERFLOW_RULE_ID`];
    /// globs are not applied (an overflow names a root, not a file) and the record is
    /// always stored and streamed (a loss notice is never filtered away). `Gap` and
    /// `Other` never match.
    ///
    /// Uses a thread-local [`MatchScratch`]; [`RuleSet::matches_with`] takes one explicitly.
    ///
    /// # Examples
    ///
    /// ```
    /// use firehose_producer::filters::RuleSet;
    /// use firehose_transport::record::EventKind;
    /// use std::path::PathBuf;
    ///
    /// let set = RuleSet::implicit(&[PathBuf::from("/home/me")]);
    /// let m = set.matches(b"/home/me/a.txt", EventKind::Create).unwrap();
    /// assert_eq!(m.rule, 1);
    /// assert!(set.matches(b"/home/meg/a.txt", EventKind::Create).is_none());
    /// ```
    #[inline]
    pub fn matches(&self, path: &[u8], kind: EventKind) -> Option<Match> {
        thread_local! {
            static SCRATCH: RefCell<MatchScratch> = RefCell::new(MatchScratch::default());
        }
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => self.matches_with(path, kind, &mut s),
            Err(_) => self.matches_with(path, kind, &mut MatchScratch::default()),
        })
    }

    /// [`RuleSet::matches`] for a `Path`.
    pub fn matches_path(&self, path: &Path, kind: EventKind) -> Option<Match> {
        self.matches(path.as_os_str().as_bytes(), kind)
    }

    /// [`RuleSet::matches`] with caller-owned buffers.
    pub fn matches_with(
        &self,
        path: &[u8],
        kind: EventKind,
        scratch: &mut MatchScratch,
    ) -> Option<Match> {
        let w = self.words;
        let cand = &mut scratch.cand;
        cand.clear();
        cand.resize(w, 0);
        for root in &self.roots {
            if contains(&root.bytes, path) {
                or(cand, &root.rules);
            }
        }
        let kinds = &self.kind_rules[kind as usize];
        and(cand, kinds);
        if kind == EventKind::Overflow {
            let rule = first_bit(cand).map_or(OVERFLOW_RULE_ID, |i| self.compiled[i].m.rule);
            return Some(Match {
                rule,
                store: true,
                stream: true,
                coalesce: None,
            });
        }
        if !any(cand) {
            return None;
        }
        let needs_include = cand.iter().zip(&self.include_all).any(|(c, a)| c & !a != 0);
        let mut candidate = None;
        if needs_include {
            let c = candidate.insert(Candidate::from_bytes(path));
            self.include.matches_candidate_into(c, &mut scratch.globs);
            // Keep rules that include everything or had a glob match.
            let mut hits = [0u64; 4];
            if w <= hits.len() {
                let hits = &mut hits[..w];
                hits.copy_from_slice(&self.include_all);
                for &g in &scratch.globs {
                    set_bit(hits, self.include_rule[g] as usize);
                }
                and(cand, hits);
            } else {
                let mut hits = self.include_all.clone();
                for &g in &scratch.globs {
                    set_bit(&mut hits, self.include_rule[g] as usize);
                }
                and(cand, &hits);
            }
            if !any(cand) {
                return None;
            }
        }
        let needs_exclude = cand.iter().zip(&self.has_exclude).any(|(c, e)| c & e != 0);
        if needs_exclude {
            let c = candidate.get_or_insert_with(|| Candidate::from_bytes(path));
            self.exclude.matches_candidate_into(c, &mut scratch.globs);
            for &g in &scratch.globs {
                clear_bit(cand, self.exclude_rule[g] as usize);
            }
        }
        first_bit(cand).map(|i| self.compiled[i].m)
    }

    /// Every root some rule applies to, deduplicated and sorted (the `--watch` roots are
    /// included when a rule has no roots of its own). Nested roots are all listed.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .roots
            .iter()
            .map(|r| PathBuf::from(std::ffi::OsStr::from_bytes(&r.bytes)))
            .collect();
        out.sort();
        out
    }

    /// The rules, in match order.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }

    /// The name → id map this set was built with (pass it to the next load).
    pub fn ids(&self) -> &RuleIds {
        &self.ids
    }

    /// The `--watch` roots this set was built with.
    pub fn default_roots(&self) -> &[PathBuf] {
        &self.default_roots
    }

    /// The index ranges of rule `index` in the include and exclude glob sets (for tests
    /// and diagnostics).
    pub fn glob_ranges(&self, index: usize) -> Option<(Range<usize>, Range<usize>)> {
        self.compiled
            .get(index)
            .map(|c| (c.include.clone(), c.exclude.clone()))
    }

    /// How many globs the combined include and exclude sets hold.
    pub fn glob_counts(&self) -> (usize, usize) {
        (self.include.len(), self.exclude.len())
    }
}

/// Whether `root` (normalised) contains `path`: equal, or a prefix ending at a `/`.
#[inline]
fn contains(root: &[u8], path: &[u8]) -> bool {
    path.starts_with(root)
        && (path.len() == root.len() || root.ends_with(b"/") || path[root.len()] == b'/')
}

/// Drops `.` components, repeated and trailing `/`.
fn normalize(p: &Path) -> PathBuf {
    p.components().collect()
}

fn dedup(it: impl Iterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in it {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

#[inline]
fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

#[inline]
fn clear_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] &= !(1 << (i % 64));
}

#[inline]
fn or(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x |= y;
    }
}

#[inline]
fn and(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x &= y;
    }
}

#[inline]
fn any(a: &[u64]) -> bool {
    a.iter().any(|&x| x != 0)
}

#[inline]
fn first_bit(a: &[u64]) -> Option<usize> {
    a.iter()
        .position(|&x| x != 0)
        .map(|w| w * 64 + a[w].trailing_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_containment_is_by_component() {
        assert!(contains(b"/a/b", b"/a/b"));
        assert!(contains(b"/a/b", b"/a/b/c"));
        assert!(!contains(b"/a/b", b"/a/bc"));
        assert!(!contains(b"/a/b", b"/a"));
        assert!(contains(b"/", b"/x"));
    }

    #[test]
    fn bit_helpers() {
        let mut b = vec![0u64; 2];
        set_bit(&mut b, 70);
        set_bit(&mut b, 3);
        assert_eq!(first_bit(&b), Some(3));
        clear_bit(&mut b, 3);
        assert_eq!(first_bit(&b), Some(70));
        assert!(any(&b));
        assert_eq!(normalize(Path::new("/a//b/./c/")), PathBuf::from("/a/b/c"));
    }
}
