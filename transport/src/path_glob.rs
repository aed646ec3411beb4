//! The path glob: one dialect for a history query's glob ([`HistoryQuery::glob`], answered
//! by the service) and for a client's filter box (the monitor model in
//! `firehose-consumer`, which the terminal viewer and the desktop monitor both drive).
//!
//! The syntax is globset's, matched against the **whole path**:
//!
//! - `*` is any run of characters, `/` included (`*.rs` matches `/a/b/main.rs`), and `?`
//!   is any one character;
//! - `**` is the same as `*` here; `[abc]`, `[a-z]` and `[!x]` are classes; `{a,b}` is an
//!   alternation; `\` escapes the next character.
//!
//! Filter documents differ on purpose (see `docs/filters.md`): there `*` never crosses `/`
//! and a glob without a `/` names files, because a rule is written once and must not match
//! more than it says. A filter box is typed quickly to find rows: `*.rs` should find every
//! Rust file without `**/`.
//!
//! [`HistoryQuery::glob`]: crate::control::wire::HistoryQuery::glob

pub use globset::{Error as GlobError, GlobMatcher};

/// Compiles `text` in the path-glob dialect.
///
/// # Errors
/// If `text` is not a valid glob (an unclosed `[` or `{`); the error says where.
///
/// # Examples
/// ```
/// let g = firehose_transport::path_glob::compile("*.rs").unwrap();
/// assert!(g.is_match("/a/b/main.rs"));
/// assert!(!g.is_match("/a/b/main.rsx"));
/// assert!(firehose_transport::path_glob::compile("src/[a").is_err());
/// ```
pub fn compile(text: &str) -> Result<GlobMatcher, GlobError> {
    globset::GlobBuilder::new(text)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
}

/// Whether `text` uses glob syntax (`*`, `?`, `[` or `{`); a filter box matches any other
/// text as a substring.
///
/// # Examples
/// ```
/// use firehose_transport::path_glob::is_glob;
/// assert!(is_glob("*.rs") && is_glob("{a,b}") && !is_glob("main.rs"));
/// ```
pub fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '[', '{'])
}

/// The literal runs of a glob, for highlighting what it matched: the text outside
/// wildcards, classes and alternations, with escapes resolved.
///
/// # Examples
/// ```
/// use firehose_transport::path_glob::literals;
/// assert_eq!(literals("/t/*file-[0-9].txt"), ["/t/", "file-", ".txt"]);
/// assert_eq!(literals(r"*\*x{a,b}y"), ["*x", "y"]);
/// ```
pub fn literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                cur.push(chars.get(i + 1).copied().unwrap_or('\\'));
                i += 2;
            }
            c @ ('*' | '?' | '[' | '{') => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                i = match c {
                    '[' => after_class(&chars, i),
                    '{' => after_alternation(&chars, i),
                    _ => i + 1,
                };
            }
            c => {
                cur.push(c);
                i += 1;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The index after the class opening at `at` (`[`): a `]` right after `[` or `[!` is a
/// member, as globset reads it; unclosed, the end of the text.
fn after_class(chars: &[char], at: usize) -> usize {
    let mut i = at + 1;
    if matches!(chars.get(i), Some('!' | '^')) {
        i += 1;
    }
    if chars.get(i) == Some(&']') {
        i += 1;
    }
    while i < chars.len() && chars[i] != ']' {
        i += 1;
    }
    (i + 1).min(chars.len())
}

/// The index after the alternation opening at `at` (`{`), across nested alternations,
/// classes and escapes; unclosed, the end of the text.
fn after_alternation(chars: &[char], at: usize) -> usize {
    let mut depth = 0usize;
    let mut i = at;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' => {
                i = after_class(chars, i);
                continue;
            }
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_skip_classes_and_alternations_as_globset_reads_them() {
        assert_eq!(literals("[]a]b"), ["b"]);
        assert_eq!(literals("x[!]]y"), ["x", "y"]);
        assert_eq!(literals("{a,[}]}z"), ["z"]);
        assert_eq!(literals("{a,{b,c}}d"), ["d"]);
        assert_eq!(literals(r"a\"), [r"a\"]);
        assert_eq!(literals("open[ab"), ["open"]);
        assert_eq!(literals("open{ab"), ["open"]);
        // globset agrees on what the class holds.
        let g = compile("[]a]b").unwrap();
        assert!(g.is_match("]b") && g.is_match("ab") && !g.is_match("a]b"));
        let g = compile("{a,[}]}z").unwrap();
        assert!(g.is_match("az") && g.is_match("}z"));
    }

    #[test]
    fn the_dialect_matches_whole_paths_and_crosses_slashes() {
        let m = |g: &str, p: &str| compile(g).unwrap().is_match(p);
        assert!(m("*.rs", "/a/b/main.rs"));
        assert!(!m("*.rs", "/a/b/main.rsx"));
        assert!(m("/a/?/c", "/a/b/c"));
        assert!(m("*file-[0-9]*", "/t/file-7.txt"));
        assert!(!m("*file-[!0-9]*", "/t/file-7.txt"));
        assert!(m("/w/**/*.rs", "/w/x/y/z.rs"));
        assert!(m("*.{rs,toml}", "/w/Cargo.toml"));
        assert!(m(r"*\*", "/w/star*"));
        assert!(!m(r"*\*", "/w/star"));
        assert!(m("*", ""));
        assert!(compile("a[").is_err());
    }
}
