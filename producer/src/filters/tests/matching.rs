//! Matching: order, include/exclude, kinds, roots, overflow, non-UTF-8 paths, ids.

use super::{dir_with, load_in, set_of};
use crate::filters::{Match, MatchScratch, RuleIds, RuleSet, IMPLICIT_RULE_ID, OVERFLOW_RULE_ID};
use firehose_transport::record::EventKind::{self, *};
use std::path::PathBuf;

/// The name of the rule that takes (`path`, `kind`), or `-`.
fn winner(set: &RuleSet, path: &[u8], kind: EventKind) -> String {
    match set.matches(path, kind) {
        None => "-".into(),
        Some(m) => set
            .rules()
            .iter()
            .find(|r| r.id == m.rule)
            .map_or_else(|| format!("#{}", m.rule), |r| r.name.clone()),
    }
}

const DOCS: &[(&str, &str)] = &[
    (
        "20-late.toml",
        r#"
[[rule]]
name = "catch-all"
"#,
    ),
    (
        "10-early.toml",
        r#"
[[rule]]
name = "rust"
roots = ["/p"]
include = ["*.rs"]
exclude = ["**/target/**", "/p/gen/*"]

[[rule]]
name = "docs"
roots = ["/p"]
include = ["docs/**/*.md"]
kinds = ["create", "remove"]
store = false

[[rule]]
name = "p-deletes"
roots = ["/p"]
kinds = ["remove"]
stream = false
"#,
    ),
];

#[test]
fn first_matching_rule_wins_in_file_then_document_order() {
    let set = set_of(DOCS, &["/w", "/p"]);
    let names: Vec<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["rust", "docs", "p-deletes", "catch-all"]);
    // (path, kind, winner)
    let table: &[(&[u8], EventKind, &str)] = &[
        (b"/p/src/main.rs", Create, "rust"),
        (b"/p/main.rs", Remove, "rust"),
        // exclude
        (b"/p/target/debug/x.rs", Modify, "catch-all"),
        (b"/p/a/target/x.rs", Remove, "p-deletes"),
        (b"/p/gen/x.rs", Create, "catch-all"),
        (b"/p/gen/sub/x.rs", Create, "rust"), // `*` does not cross `/`
        // include, relative to the root
        (b"/p/docs/a/b.md", Create, "docs"),
        (b"/p/docs/b.md", Create, "docs"),
        (b"/p/x/docs/b.md", Create, "catch-all"),
        // kinds
        (b"/p/docs/b.md", Modify, "catch-all"),
        (b"/p/docs/b.md", Remove, "docs"),
        (b"/p/readme", Remove, "p-deletes"),
        (b"/p/readme", Metadata, "catch-all"),
        // default roots
        (b"/w/anything", CloseWrite, "catch-all"),
        (b"/elsewhere/x.rs", Create, "-"),
        // never matched kinds
        (b"/w/x", Gap, "-"),
        (b"/w/x", Other, "-"),
    ];
    for (path, kind, want) in table {
        assert_eq!(
            winner(&set, path, *kind),
            *want,
            "{} {kind:?}",
            String::from_utf8_lossy(path)
        );
    }
}

#[test]
fn match_carries_the_rules_flags() {
    let set = set_of(DOCS, &["/w"]);
    let docs = set.matches(b"/p/docs/a.md", Create).unwrap();
    assert!(!docs.store && docs.stream);
    let del = set.matches(b"/p/x", Remove).unwrap();
    assert!(del.store && !del.stream);
    assert_eq!(docs.rule, set.rules()[1].id);
}

#[test]
fn a_root_matches_by_component_not_by_prefix() {
    let set = set_of(
        &[("a.toml", "[[rule]]\nname = \"ab\"\nroots = [\"/a/b/\"]\n")],
        &[],
    );
    assert_eq!(winner(&set, b"/a/b", Create), "ab");
    assert_eq!(winner(&set, b"/a/b/c", Create), "ab");
    assert_eq!(winner(&set, b"/a/bc", Create), "-");
    assert_eq!(winner(&set, b"/a/bc/d", Create), "-");
    assert_eq!(winner(&set, b"/a", Create), "-");
    let slash = set_of(
        &[("a.toml", "[[rule]]\nname = \"all\"\nroots = [\"/\"]\n")],
        &[],
    );
    assert_eq!(winner(&slash, b"/any/thing", Create), "all");
}

#[test]
fn non_utf8_paths_match() {
    let set = set_of(
        &[(
            "a.toml",
            "[[rule]]\nname = \"rs\"\nroots = [\"/r\"]\ninclude = [\"*.rs\"]\nexclude = [\"*skip*\"]\n",
        )],
        &[],
    );
    assert_eq!(winner(&set, b"/r/\xff\xfe/a.rs", Create), "rs");
    assert_eq!(winner(&set, b"/r/\xff.rs", Create), "rs");
    assert_eq!(winner(&set, b"/r/\xffskip.rs", Create), "-");
    assert_eq!(winner(&set, b"/r/\xff.txt", Create), "-");
    let implicit = RuleSet::implicit(&[PathBuf::from("/r")]);
    assert_eq!(
        implicit.matches(b"/r/\x80", Remove).map(|m| m.rule),
        Some(IMPLICIT_RULE_ID)
    );
}

#[test]
fn overflow_always_matches_and_is_always_kept() {
    let set = set_of(DOCS, &["/w"]);
    // The first rule that takes overflow under that root: "rust" (globs not applied).
    let m = set.matches(b"/p", Overflow).unwrap();
    assert_eq!(m.rule, set.rules()[0].id);
    assert!(m.store && m.stream);
    // Outside every root: the implicit overflow rule.
    assert_eq!(
        set.matches(b"/nowhere", Overflow),
        Some(Match {
            rule: OVERFLOW_RULE_ID,
            store: true,
            stream: true,
            coalesce: None
        })
    );
    assert_eq!(
        set.matches(b"", Overflow).map(|m| m.rule),
        Some(OVERFLOW_RULE_ID)
    );
    // A rule that does not take overflow does not claim it, and store=false does not drop it.
    let quiet = set_of(
        &[(
            "a.toml",
            "[[rule]]\nname = \"q\"\nroots = [\"/q\"]\nkinds = [\"create\"]\nstore = false\n",
        )],
        &[],
    );
    assert_eq!(
        quiet.matches(b"/q", Overflow).map(|m| (m.rule, m.store)),
        Some((OVERFLOW_RULE_ID, true))
    );
}

#[test]
fn implicit_set_without_documents_or_directory() {
    let empty = dir_with(&[("notes.txt", "not a document"), (".hidden.toml", "garbage")]);
    let set = load_in(empty.path(), &["/w"], &RuleIds::new()).unwrap();
    assert_eq!(set.rules().len(), 1);
    assert_eq!(set.rules()[0].name, "all");
    assert_eq!(set.rules()[0].id, IMPLICIT_RULE_ID);
    assert_eq!(winner(&set, b"/w/x", Metadata), "all");
    assert_eq!(winner(&set, b"/v/x", Metadata), "-");
    let missing = load_in(&empty.path().join("nope"), &["/w"], &RuleIds::new()).unwrap();
    assert_eq!(missing.rules()[0].name, "all");
    assert_eq!(missing.roots(), vec![PathBuf::from("/w")]);
}

#[test]
fn roots_are_the_deduplicated_union() {
    let set = set_of(DOCS, &["/w", "/p/", "/w"]);
    assert_eq!(set.roots(), vec![PathBuf::from("/p"), PathBuf::from("/w")]);
}

#[test]
fn identical_globs_are_compiled_once() {
    let set = set_of(DOCS, &["/w"]);
    // rust: *.rs, docs: docs/**/*.md (below the root); excludes: **/target/**, /p/gen/*.
    assert_eq!(set.glob_counts(), (2, 2));
    let mut doc = String::new();
    for i in 0..20 {
        doc.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nroots = [\"/p{i}\"]\ninclude = [\"*.rs\", \"src/**\"]\nexclude = [\"**/target/**\"]\n"
        ));
    }
    let shared = set_of(&[("a.toml", &doc)], &[]);
    assert_eq!(shared.glob_counts(), (2, 1));
    // A below-root glob counts only for the rules of the root it matched under.
    assert_eq!(winner(&shared, b"/p3/src/x.txt", Create), "r3");
    assert_eq!(winner(&shared, b"/p4/target/x.rs", Create), "-");
    assert_eq!(winner(&shared, b"/p4/a/x.rs", Create), "r4");
}

#[test]
fn ids_are_stable_across_reloads() {
    let dir = dir_with(&[(
        "a.toml",
        "[[rule]]\nname = \"one\"\n[[rule]]\nname = \"two\"\n",
    )]);
    let first = load_in(dir.path(), &["/w"], &RuleIds::new()).unwrap();
    let id = |s: &RuleSet, n: &str| s.rules().iter().find(|r| r.name == n).map(|r| r.id);
    assert_eq!((id(&first, "one"), id(&first, "two")), (Some(2), Some(3)));
    // Reorder, drop "one", add "three".
    std::fs::write(
        dir.path().join("a.toml"),
        "[[rule]]\nname = \"three\"\n[[rule]]\nname = \"two\"\n",
    )
    .unwrap();
    let second = load_in(dir.path(), &["/w"], first.ids()).unwrap();
    assert_eq!(
        (id(&second, "two"), id(&second, "three")),
        (Some(3), Some(4))
    );
    // "one" comes back with its old id.
    std::fs::write(dir.path().join("b.toml"), "[[rule]]\nname = \"one\"\n").unwrap();
    let third = load_in(dir.path(), &["/w"], second.ids()).unwrap();
    assert_eq!(id(&third, "one"), Some(2));
    // A rejected load assigns nothing.
    std::fs::write(
        dir.path().join("c.toml"),
        "[[rule]]\nname = \"four\"\nkinds = [\"x\"]\n",
    )
    .unwrap();
    assert!(load_in(dir.path(), &["/w"], third.ids()).is_err());
    assert_eq!(third.ids().get("four"), None);
}

#[test]
fn many_rules_beyond_one_bitset_word() {
    let mut doc = String::new();
    for i in 0..150 {
        doc.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nroots = [\"/d{i}\"]\ninclude = [\"*.x{i}\"]\nexclude = [\"skip*\"]\n"
        ));
    }
    let set = set_of(&[("a.toml", &doc)], &[]);
    let mut scratch = MatchScratch::default();
    for i in [0usize, 63, 64, 127, 149] {
        let p = format!("/d{i}/f.x{i}");
        let m = set
            .matches_with(p.as_bytes(), Create, &mut scratch)
            .unwrap();
        assert_eq!(m.rule, set.rules()[i].id, "{p}");
        let skip = format!("/d{i}/skip.x{i}");
        assert!(set
            .matches_with(skip.as_bytes(), Create, &mut scratch)
            .is_none());
        let other = format!("/d{i}/f.y");
        assert!(set.matches(other.as_bytes(), Create).is_none());
    }
}
