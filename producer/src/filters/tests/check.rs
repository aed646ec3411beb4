//! `check_dir`: what `firehosed check-filters DIR` prints.

use super::dir_with;
use crate::filters::check_dir;

#[test]
fn a_valid_directory_lists_each_document_and_its_rules() {
    let dir = dir_with(&[
        ("b.toml", "[[rule]]\nname = \"deletes\"\nkinds = [\"remove\"]\nstream = false\n"),
        (
            "a.toml",
            "[[rule]]\nname = \"code\"\nroots = [\"/src\"]\ninclude = [\"*.rs\"]\nexclude = [\"**/target/**\"]\ncoalesce_ms = 200\n",
        ),
    ]);
    let summary = check_dir(dir.path()).unwrap();
    assert_eq!(summary.documents.len(), 2);
    assert!(summary.documents[0].path.ends_with("a.toml"));
    assert_eq!(summary.documents[1].rules[0].name, "deletes");
    let text = summary
        .to_string()
        .replace(&format!("{}/", dir.path().display()), "");
    let want = "\
: 2 document(s), 2 rule(s), all valid
a.toml
  rule 2 \"code\"
    roots:   /src
    include: *.rs
    exclude: **/target/**
    kinds:   all
    records: store, stream; coalesced over 200 ms
b.toml
  rule 3 \"deletes\"
    roots:   (the --watch roots)
    include: (everything)
    kinds:   remove
    records: store
";
    assert!(text.ends_with(want), "got:\n{text}");
}

#[test]
fn an_invalid_directory_gives_every_error() {
    let dir = dir_with(&[
        ("a.toml", "[[rule]]\nname = \"a\"\nroots = [\"rel\"]\n"),
        ("b.toml", "[[rule]]\nname = \"b\"\nbogus = 1\n"),
    ]);
    let errors = check_dir(dir.path()).unwrap_err();
    let text = errors.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].ends_with(
        "a.toml:3:10: root \"rel\" is not an absolute path (roots start with `/` or `~`)"
    ));
    assert!(lines[1].contains("b.toml:3:1: unknown field `bogus`"));
}

#[test]
fn an_empty_directory_says_the_implicit_rule_applies_and_a_missing_one_is_an_error() {
    let dir = dir_with(&[]);
    let s = check_dir(dir.path()).unwrap();
    assert!(s.documents.is_empty());
    assert!(s.to_string().contains("implicit rule \"all\""));
    let e = check_dir(&dir.path().join("missing")).unwrap_err();
    assert_eq!(e.0[0].line, 0);
    assert!(e.to_string().contains("not a directory"));
}
