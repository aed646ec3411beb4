//! [`RuleSet`]: every rule compiled into one matcher, and [`RuleSet::matches`].
//!
//! # How matching works
//!
//! Globs are compiled into shared tables, not one matcher per rule: includes and
//! excludes, each split into one `GlobSet` matched against the whole path, one matched
//! against the path below a root (`src/**/*.rs`), and a list of directory names for the
//! common `**/NAME/**` (a component test, no regex). Identical globs are compiled once
//! (forty rules saying `*.rs` cost one glob), and each glob maps to the bitset of rules
//! that use it. Rules are bits in small bitsets (one `u64` word per 64 rules):
//!
//! 1. candidates = the rules of every distinct root that contains the path (a
//!    [`RootIndex`] lookup per distinct root length, at a component boundary),
//!    intersected with the rules that take the event's kind;
//! 2. if a candidate has include globs, the whole-path include set runs once over the
//!    path, and the below-root include set once per containing root over the path's
//!    tail below it (a hit there counts only for rules with that root); candidates keep
//!    their bit if they include everything or one of their globs matched;
//! 3. the same with the exclude sets, for remaining candidates that have excludes,
//!    clearing bits;
//! 4. the lowest remaining bit, the first rule in document order, wins.
//!
//! A path outside every root costs a few hash lookups and no glob matching.
//!
//! Why two sets per side rather than one: writing a relative glob once per root
//! (`/home/me/p1/src/**/*.rs`, `/home/me/p2/src/**/*.rs`, ...) makes every copy a separate
//! regex that globset runs one after another for each `.rs` path; matched below the root,
//! they are one glob.

use super::document::RuleSpec;
use super::error::FilterError;
use super::ids::{RuleIds, IMPLICIT_RULE_ID, OVERFLOW_RULE_ID};
use super::kinds::KindSet;
use super::pattern::{self, Compiled, Pattern};
use super::roots::RootIndex;
use firehose_transport::record::EventKind;
use globset::{Candidate, GlobSet, GlobSetBuilder};
use std::cell::RefCell;
use std::collections::HashMap;
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
    hits: Vec<u64>,
    slots: Vec<usize>,
}

/// A distinct root and the rules that apply under it.
#[derive(Clone, Debug)]
struct Root {
    /// Normalised path bytes: no trailing `/` except for `/` itself.
    bytes: Vec<u8>,
    rules: Vec<u64>,
}

/// Deduplicated globs compiled into one `GlobSet`, each mapped to the rules using it.
#[derive(Clone, Debug)]
struct GlobTable {
    set: GlobSet,
    /// `words` bitset words per glob, in glob order.
    rules: Vec<u64>,
    /// Rules with at least one glob here.
    any: Vec<u64>,
}

/// Collects globs for a [`GlobTable`].
struct TableBuilder {
    globs: Vec<String>,
    index: HashMap<String, usize>,
    rules: Vec<u64>,
    any: Vec<u64>,
    words: usize,
}

impl TableBuilder {
    fn new(words: usize) -> Self {
        TableBuilder {
            globs: Vec::new(),
            index: HashMap::new(),
            rules: Vec::new(),
            any: vec![0; words],
            words,
        }
    }

    fn add(&mut self, glob: String, rule: usize) {
        let at = match self.index.get(&glob) {
            Some(&i) => i,
            None => {
                let i = self.globs.len();
                self.index.insert(glob.clone(), i);
                self.globs.push(glob);
                self.rules.extend(std::iter::repeat_n(0, self.words));
                i
            }
        };
        set_bit(
            &mut self.rules[at * self.words..(at + 1) * self.words],
            rule,
        );
        set_bit(&mut self.any, rule);
    }

    fn build(self) -> Result<GlobTable, String> {
        let mut b = GlobSetBuilder::new();
        for g in &self.globs {
            b.add(pattern::build(g).map_err(|e| e.to_string())?);
        }
        Ok(GlobTable {
            set: b.build().map_err(|e| e.to_string())?,
            rules: self.rules,
            any: self.any,
        })
    }
}

/// Directory names tested by `**/NAME/**` globs, each with the rules using it.
#[derive(Clone, Debug, Default)]
struct ComponentTable {
    /// (name, `words` bitset words).
    names: Vec<(Box<[u8]>, Vec<u64>)>,
    /// Rules with at least one name here.
    any: Vec<u64>,
    /// Length of the longest name (components longer cannot match).
    max_len: usize,
}

impl ComponentTable {
    fn new(words: usize) -> Self {
        ComponentTable {
            names: Vec::new(),
            any: vec![0; words],
            max_len: 0,
        }
    }

    fn add(&mut self, name: &str, rule: usize, words: usize) {
        let name = name.as_bytes();
        let at = match self.names.iter().position(|(n, _)| &**n == name) {
            Some(i) => i,
            None => {
                self.names.push((name.into(), vec![0; words]));
                self.max_len = self.max_len.max(name.len());
                self.names.len() - 1
            }
        };
        set_bit(&mut self.names[at].1, rule);
        set_bit(&mut self.any, rule);
    }

    /// ORs into `hits` the rules of every name that is a directory component of `path`
    /// (a component followed by `/`).
    #[inline]
    fn hits(&self, path: &[u8], hits: &mut [u64]) {
        let dirs = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => &path[..i],
            None => return,
        };
        for comp in dirs.split(|&b| b == b'/') {
            if comp.is_empty() || comp.len() > self.max_len {
                continue;
            }
            for (name, rules) in &self.names {
                if **name == *comp {
                    or(hits, rules);
                }
            }
        }
    }
}

/// The include (or exclude) side: whole-path globs, below-root globs, component names.
#[derive(Clone, Debug)]
struct Side {
    abs: GlobTable,
    rel: GlobTable,
    comp: ComponentTable,
}

/// Collects one [`Side`].
struct SideBuilder {
    abs: TableBuilder,
    rel: TableBuilder,
    comp: ComponentTable,
    words: usize,
}

impl SideBuilder {
    fn new(words: usize) -> Self {
        SideBuilder {
            abs: TableBuilder::new(words),
            rel: TableBuilder::new(words),
            comp: ComponentTable::new(words),
            words,
        }
    }

    fn add_all(&mut self, pats: &[Pattern], rule: usize) {
        for p in pats {
            for c in p.compiled() {
                match c {
                    Compiled::Whole(g) => self.abs.add(g, rule),
                    Compiled::BelowRoot(g) => self.rel.add(g, rule),
                    Compiled::Component(n) => self.comp.add(&n, rule, self.words),
                }
            }
        }
    }

    fn build(self) -> Result<Side, String> {
        Ok(Side {
            abs: self.abs.build()?,
            rel: self.rel.build()?,
            comp: self.comp,
        })
    }
}

impl Side {
    /// Whether any rule in `cand` has something on this side.
    #[inline]
    fn concerns(&self, cand: &[u64]) -> bool {
        intersects(cand, &self.abs.any)
            || intersects(cand, &self.rel.any)
            || intersects(cand, &self.comp.any)
    }

    /// How many distinct globs and names.
    fn len(&self) -> usize {
        self.abs.set.len() + self.rel.set.len() + self.comp.names.len()
    }
}

/// Every rule of a filter directory compiled into one matcher. Cheap to share behind an
/// `Arc`; immutable once built (a reload builds a new one).
#[derive(Clone, Debug)]
pub struct RuleSet {
    rules: Vec<RuleInfo>,
    /// Per rule: what a match returns.
    outcome: Vec<Match>,
    include: Side,
    exclude: Side,
    roots: Vec<Root>,
    /// Finds the slots in `roots` that contain a path.
    root_index: RootIndex,
    /// Per `EventKind as usize`: the rules that take it.
    kind_rules: Vec<Vec<u64>>,
    /// Rules with no include globs (they include everything).
    include_all: Vec<u64>,
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
        set.outcome[0].rule = IMPLICIT_RULE_ID;
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
        let mut include = SideBuilder::new(words);
        let mut exclude = SideBuilder::new(words);
        let mut rules = Vec::with_capacity(n);
        let mut outcome = Vec::with_capacity(n);
        let mut roots: Vec<Root> = Vec::new();
        let mut kind_rules = vec![vec![0u64; words]; EventKind::ALL.len()];
        let mut include_all = vec![0u64; words];
        for (i, SourcedSpec { source, spec }) in specs.into_iter().enumerate() {
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
            match &spec.include {
                None => set_bit(&mut include_all, i),
                Some(pats) => include.add_all(pats, i),
            }
            exclude.add_all(&spec.exclude, i);
            let id = ids.assign(&spec.name);
            outcome.push(Match {
                rule: id,
                store: spec.store,
                stream: spec.stream,
                coalesce: spec.coalesce,
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
        let mut root_index = RootIndex::default();
        for (slot, r) in roots.iter().enumerate() {
            root_index.insert(&r.bytes, slot);
        }
        let build = |b: SideBuilder| {
            b.build().map_err(|e| {
                FilterError::whole(Path::new(""), format!("cannot compile the globs: {e}"))
            })
        };
        Ok(RuleSet {
            rules,
            outcome,
            include: build(include)?,
            exclude: build(exclude)?,
            roots,
            root_index,
            kind_rules,
            include_all,
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
        let MatchScratch {
            globs,
            cand,
            hits,
            slots,
        } = scratch;
        cand.clear();
        cand.resize(w, 0);
        slots.clear();
        let roots = &self.roots;
        self.root_index.containing(path, |slot| {
            or(cand, &roots[slot].rules);
            slots.push(slot);
        });
        and(cand, &self.kind_rules[kind as usize]);
        if kind == EventKind::Overflow {
            let rule = first_bit(cand).map_or(OVERFLOW_RULE_ID, |i| self.outcome[i].rule);
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
        // Includes: keep rules that include everything or had a glob match.
        if cand.iter().zip(&self.include_all).any(|(c, a)| c & !a != 0) {
            hits.clear();
            hits.extend_from_slice(&self.include_all);
            self.glob_hits(path, cand, &self.include, slots, globs, hits);
            and(cand, hits);
            if !any(cand) {
                return None;
            }
        }
        // Excludes: drop rules whose exclude matched.
        if self.exclude.concerns(cand) {
            hits.clear();
            hits.resize(w, 0);
            self.glob_hits(path, cand, &self.exclude, slots, globs, hits);
            for (c, h) in cand.iter_mut().zip(hits.iter()) {
                *c &= !h;
            }
        }
        first_bit(cand).map(|i| self.outcome[i])
    }

    /// Sets in `hits` the rules among `cand` that `side` matches: a whole-path glob or
    /// component name on the path, or a below-root glob on the path below one of the
    /// containing roots `slots` (for that root's rules).
    #[inline]
    fn glob_hits(
        &self,
        path: &[u8],
        cand: &[u64],
        side: &Side,
        slots: &[usize],
        globs: &mut Vec<usize>,
        hits: &mut [u64],
    ) {
        let w = self.words;
        let (abs, rel) = (&side.abs, &side.rel);
        if intersects(cand, &side.comp.any) {
            side.comp.hits(path, hits);
        }
        if intersects(cand, &abs.any) {
            abs.set
                .matches_candidate_into(&Candidate::from_bytes(path), globs);
            for &g in globs.iter() {
                or(hits, &abs.rules[g * w..(g + 1) * w]);
            }
        }
        if !intersects(cand, &rel.any) {
            return;
        }
        for &slot in slots {
            let root = &self.roots[slot];
            let wanted = root
                .rules
                .iter()
                .zip(cand)
                .zip(&rel.any)
                .any(|((r, c), a)| r & c & a != 0);
            if !wanted {
                continue;
            }
            let tail = tail_below(&root.bytes, path);
            rel.set
                .matches_candidate_into(&Candidate::from_bytes(tail), globs);
            for &g in globs.iter() {
                let glob_rules = &rel.rules[g * w..(g + 1) * w];
                for ((h, r), gr) in hits.iter_mut().zip(&root.rules).zip(glob_rules) {
                    *h |= r & gr;
                }
            }
        }
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

    /// How many distinct globs the include and exclude sides hold (whole-path and
    /// below-root globs and `**/NAME/**` names).
    pub fn glob_counts(&self) -> (usize, usize) {
        (self.include.len(), self.exclude.len())
    }
}

/// The part of `path` below `root` (which contains it), without the leading `/`.
#[inline]
fn tail_below<'a>(root: &[u8], path: &'a [u8]) -> &'a [u8] {
    let rest = &path[root.len().min(path.len())..];
    rest.strip_prefix(b"/").unwrap_or(rest)
}

#[inline]
fn intersects(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).any(|(x, y)| x & y != 0)
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
    fn bit_helpers() {
        let mut b = vec![0u64; 2];
        set_bit(&mut b, 70);
        set_bit(&mut b, 3);
        assert_eq!(first_bit(&b), Some(3));
        assert!(intersects(&b, &[0, 1 << 6]));
        assert!(!intersects(&b, &[1, 0]));
        assert!(any(&b));
        assert_eq!(tail_below(b"/a", b"/a/b/c"), b"b/c");
        assert_eq!(tail_below(b"/", b"/a/b"), b"a/b");
        assert_eq!(tail_below(b"/a", b"/a"), b"");
        assert_eq!(normalize(Path::new("/a//b/./c/")), PathBuf::from("/a/b/c"));
    }
}
