//! Parsing: every key, every default, and every kind of error at its exact line and column.

use super::{errors_of, set_of};
use crate::filters::{KindSet, RuleInfo};
use firehose_transport::record::EventKind;
use std::path::PathBuf;
use std::time::Duration;

const FULL: &str = r#"
[[rule]]
name = "code"
roots = ["/src", "~/proj", "/src/"]
include = ["*.rs", "docs/**"]
exclude = ["**/target/**"]
kinds = ["create", "modify", "close_write", "metadata", "remove", "rename", "overflow"]
store = false
stream = true
coalesce_ms = 250

[[rule]]
name = "defaults"
"#;

#[test]
fn every_key_is_parsed() {
    let set = set_of(&[("a.toml", FULL)], &["/w1", "/w2"]);
    let rules: &[RuleInfo] = set.rules();
    assert_eq!(rules.len(), 2);
    let code = &rules[0];
    assert_eq!(code.name, "code");
    assert_eq!(
        code.roots,
        vec![PathBuf::from("/src"), PathBuf::from("/home/me/proj")],
        "~ expands to $HOME, duplicates and trailing slashes go"
    );
    assert!(!code.default_roots);
    assert_eq!(code.include, vec!["*.rs", "docs/**"]);
    assert_eq!(code.exclude, vec!["**/target/**"]);
    assert_eq!(code.kinds, KindSet::all());
    assert!(!code.store);
    assert!(code.stream);
    assert_eq!(code.coalesce, Some(Duration::from_millis(250)));
    assert!(code.source.as_ref().is_some_and(|p| p.ends_with("a.toml")));
    // *.rs on the whole path, docs/** below each root: one glob each.
    assert_eq!(set.glob_counts(), (2, 1));
}

#[test]
fn defaults_apply_when_keys_are_left_out() {
    let set = set_of(&[("a.toml", FULL)], &["/w1", "/w2"]);
    let d = &set.rules()[1];
    assert_eq!(d.name, "defaults");
    assert!(d.default_roots);
    assert_eq!(d.roots, vec![PathBuf::from("/w1"), PathBuf::from("/w2")]);
    assert!(d.include.is_empty() && d.exclude.is_empty());
    assert_eq!(d.kinds, KindSet::all());
    assert!(d.store && d.stream);
    assert_eq!(d.coalesce, None);
}

#[test]
fn kinds_subset_is_parsed() {
    let set = set_of(
        &[(
            "a.toml",
            "[[rule]]\nname = \"k\"\nkinds = [\"remove\", \"rename\"]\n",
        )],
        &["/w"],
    );
    let k = set.rules()[0].kinds;
    assert!(k.contains(EventKind::Remove) && k.contains(EventKind::Rename));
    assert!(!k.contains(EventKind::Create));
}

/// (document, expected error lines). Columns count characters from 1.
const ERROR_CASES: &[(&str, &[&str])] = &[
    // Syntax.
    (
        "[[rule]]\nname = \"a\nkinds = []\n",
        // At the end of the line, where the closing quote is missing.
        &["a.toml:2:10: invalid basic string, expected `\"`"],
    ),
    // Unknown key.
    (
        "[[rule]]\nname = \"a\"\ncolour = \"red\"\n",
        &["a.toml:3:1: unknown field `colour`, expected one of `name`, `roots`, `include`, `exclude`, `kinds`, `store`, `stream`, `coalesce_ms`"],
    ),
    // Unknown top-level key.
    (
        "[[rules]]\nname = \"a\"\n",
        &["a.toml:1:3: unknown field `rules`, expected `rule`"],
    ),
    // Bad types.
    (
        "[[rule]]\nname = \"a\"\nstore = \"yes\"\n",
        &["a.toml:3:9: invalid type: string \"yes\", expected a boolean"],
    ),
    (
        "[[rule]]\nname = \"a\"\nroots = \"/x\"\n",
        &["a.toml:3:9: invalid type: string \"/x\", expected a sequence"],
    ),
    (
        "[[rule]]\nname = 5\n",
        &["a.toml:2:8: invalid type: integer `5`, expected a string"],
    ),
    // Missing name.
    (
        "[[rule]]\nkinds = [\"create\"]\n",
        &["a.toml:1:1: missing field `name`"],
    ),
    // No rules at all.
    ("# nothing\n", &["a.toml:1:1: no [[rule]] table: a filter document holds one or more rules"]),
    // Value problems: all of them, in one report.
    (
        concat!(
            "[[rule]]\n",
            "name = \"a\"\n",
            "roots = [\"relative/dir\", \"/ok\", \"/x/../y\", \"~bob/x\"]\n",
            "include = [\"*.rs\", \"src/[a\"]\n",
            "exclude = [\"target/\"]\n",
            "kinds = [\"create\", \"mkdir\"]\n",
            "coalesce_ms = 0\n",
        ),
        &[
            "a.toml:3:10: root \"relative/dir\" is not an absolute path (roots start with `/` or `~`)",
            "a.toml:3:33: root \"/x/../y\" contains `..`; write the path without it",
            "a.toml:3:44: root \"~bob/x\": only `~` and `~/...` are expanded (to $HOME), not `~user`",
            "a.toml:4:20: include: invalid glob \"src/[a\": unclosed character class; missing ']'",
            "a.toml:5:12: exclude: glob \"target/\" ends in `/` and would match nothing; write `target/**` for what is under a directory",
            "a.toml:6:20: unknown kind \"mkdir\"; kinds are create, modify, close_write, metadata, remove, rename, overflow",
            "a.toml:7:15: coalesce_ms must be between 1 and 60000 (milliseconds); leave it out for no coalescing",
        ],
    ),
    // Empty arrays where a default exists.
    (
        "[[rule]]\nname = \"a\"\nroots = []\ninclude = []\nkinds = []\n",
        &[
            "a.toml:3:9: `roots` is empty; leave `roots` out to use the --watch roots",
            "a.toml:4:11: `include` is empty; leave `include` out to match every path",
            "a.toml:5:9: `kinds` is empty; leave `kinds` out to take every kind",
        ],
    ),
    // Window too long, negative.
    (
        "[[rule]]\nname = \"a\"\ncoalesce_ms = 60001\n[[rule]]\nname = \"b\"\ncoalesce_ms = -3\n",
        &[
            "a.toml:3:15: coalesce_ms must be between 1 and 60000 (milliseconds); leave it out for no coalescing",
            "a.toml:6:15: coalesce_ms must be between 1 and 60000 (milliseconds); leave it out for no coalescing",
        ],
    ),
    // Duplicate name in one document; columns count characters, not bytes.
    (
        "[[rule]]\nname = \"dup\" # é\n[[rule]]\nname = \"é\"\n[[rule]]\n  name = \"dup\"\n",
        &["a.toml:6:10: duplicate rule name \"dup\" (first defined at a.toml:2:8)"],
    ),
    // Columns count characters: "é" is two bytes, one column.
    (
        "[[rule]]\nname = \"a\"\nkinds = [\"é\", \"zz\"]\n",
        &[
            "a.toml:3:10: unknown kind \"é\"; kinds are create, modify, close_write, metadata, remove, rename, overflow",
            "a.toml:3:15: unknown kind \"zz\"; kinds are create, modify, close_write, metadata, remove, rename, overflow",
        ],
    ),
    // Empty name.
    ("[[rule]]\nname = \" \"\n", &["a.toml:2:8: rule name is empty"]),
];

#[test]
fn every_error_has_its_line_and_column() {
    for (doc, expected) in ERROR_CASES {
        let got = errors_of(&[("a.toml", doc)]);
        // The duplicate-name message names the file with its directory: strip it.
        let got: Vec<String> = got
            .into_iter()
            .map(|s| match s.find("(first defined at /") {
                Some(i) => {
                    let tail = &s[i..];
                    let file = tail.rfind('/').map_or(tail, |j| &tail[j + 1..]);
                    format!("{}(first defined at {file}", &s[..i])
                }
                None => s,
            })
            .collect();
        assert_eq!(&got, expected, "document:\n{doc}");
    }
}

#[test]
fn duplicate_names_across_documents_name_both_files() {
    let got = errors_of(&[
        ("10-a.toml", "[[rule]]\nname = \"x\"\n"),
        (
            "20-b.toml",
            "\n[[rule]]\nname = \"y\"\n[[rule]]\nname   = \"x\"\n",
        ),
    ]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("20-b.toml:5:10: duplicate rule name \"x\": also defined in "),
        "{}",
        got[0]
    );
    assert!(got[0].ends_with("10-a.toml:2:8"), "{}", got[0]);
}

#[test]
fn every_broken_document_is_reported() {
    let got = errors_of(&[
        ("a.toml", "[[rule]]\nname = \"a\"\nkinds = [\"nope\"]\n"),
        ("b.toml", "[[rule]]\nname = \"b\"\n"),
        ("c.toml", "[[rule]\n"),
        ("d.toml", "[[rule]]\nname = \"d\"\nroots = [\"x\"]\n"),
    ]);
    let files: Vec<&str> = got.iter().map(|s| &s[..6]).collect();
    assert_eq!(files, ["a.toml", "c.toml", "d.toml"], "{got:?}");
}

#[test]
fn a_document_that_is_not_utf8_is_reported_at_the_bad_byte() {
    let dir = super::dir_with(&[]);
    std::fs::write(dir.path().join("a.toml"), b"[[rule]]\nname = \"a\xff\"\n").unwrap();
    let e = super::load_in(dir.path(), &[], &Default::default()).unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (2, 10));
    assert!(e.0[0].message.contains("not UTF-8"));
}

#[test]
fn tilde_needs_home() {
    let dir = super::dir_with(&[("a.toml", "[[rule]]\nname = \"a\"\nroots = [\"~/x\"]\n")]);
    let env = crate::filters::document::Env { home: None };
    let e = crate::filters::load::load(dir.path(), &[], &Default::default(), &env)
        .1
        .unwrap_err();
    assert_eq!(e.0[0].line, 3);
    assert_eq!(e.0[0].column, 10);
    assert!(e.0[0].message.contains("$HOME is not set"));
}
