//! How a glob written in a document becomes globs matched against absolute paths.
//!
//! Every glob is compiled with `literal_separator`: `*`, `?` and `[...]` never match a
//! `/`, and `**` matches any number of whole path components. Then, by its shape:
//!
//! | written | means | compiled as |
//! | --- | --- | --- |
//! | no `/` at all: `*.rs`, `Makefile` | the file name, at any depth | `**/*.rs` |
//! | starts with `/`: `/srv/www/**/*.html` | the whole absolute path | as written |
//! | starts with `**/`: `**/target/**` | the whole path, at any depth | as written |
//! | starts with `~/`: `~/notes/*.md` | the whole path, `~` being `$HOME` | `/home/me/notes/*.md` |
//! | has a `/` elsewhere: `src/**/*.rs` | relative to each of the rule's roots | `src/**/*.rs`, matched against the path below the root |
//!
//! A leading `./` is dropped. A glob ending in `/` is an error (paths never end in one;
//! write `dir/**` for what is under a directory).

use globset::{Glob, GlobBuilder};
use std::path::Path;

/// A glob from a document, classified by how it is anchored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// Matched against the whole absolute path (written with a leading `/`, `~/` or `**/`).
    Absolute(String),
    /// Matched against the file name at any depth (written without any `/`).
    Name(String),
    /// Matched below each root of the rule (written with a `/` that is not leading).
    Relative(String),
}

impl Pattern {
    /// Classifies and checks `text`. `home` expands a leading `~/`.
    ///
    /// # Errors
    ///
    /// A message for the document when the glob is invalid, ends in `/`, or starts with
    /// `~` while `home` is unknown (or as `~user`, which is not supported).
    pub(crate) fn parse(text: &str, home: Option<&Path>) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty glob".into());
        }
        if text.ends_with('/') && text != "/" {
            return Err(format!(
                "glob {text:?} ends in `/` and would match nothing; write `{}**` for what is under a directory",
                text
            ));
        }
        let pattern = if let Some(rest) = text.strip_prefix('~') {
            if !(rest.is_empty() || rest.starts_with('/')) {
                return Err(format!(
                    "glob {text:?}: only `~` and `~/...` are expanded (to $HOME), not `~user`"
                ));
            }
            let Some(home) = home else {
                return Err(format!(
                    "glob {text:?} starts with `~` but $HOME is not set"
                ));
            };
            let Some(home) = home.to_str() else {
                return Err(format!(
                    "glob {text:?} starts with `~` but $HOME is not UTF-8"
                ));
            };
            Pattern::Absolute(format!(
                "{}{}",
                globset::escape(home.trim_end_matches('/')),
                rest
            ))
        } else if text.starts_with('/') || text.starts_with("**/") {
            Pattern::Absolute(text.to_string())
        } else {
            let text = text.strip_prefix("./").unwrap_or(text);
            if text.contains('/') {
                Pattern::Relative(text.to_string())
            } else {
                Pattern::Name(text.to_string())
            }
        };
        // Check the glob as it will be compiled.
        let check = match &pattern {
            Pattern::Absolute(g) | Pattern::Relative(g) => g.clone(),
            Pattern::Name(g) => format!("**/{g}"),
        };
        build(&check).map_err(|e| format!("invalid glob {text:?}: {}", glob_error(&e)))?;
        Ok(pattern)
    }

    /// What to compile for this pattern. Equivalent forms that match faster are chosen:
    /// one `{a,b}` group is expanded into one glob per alternative (so `*.{c,h}` becomes
    /// two extension lookups instead of a regex), and `**/NAME/**` with a plain `NAME`
    /// becomes a path-component test.
    pub(crate) fn compiled(&self) -> Vec<Compiled> {
        let (glob, relative) = match self {
            Pattern::Absolute(g) => (g.clone(), false),
            Pattern::Name(g) => (format!("**/{g}"), false),
            Pattern::Relative(g) => (g.clone(), true),
        };
        expand_braces(&glob)
            .into_iter()
            .map(|g| {
                if relative {
                    return Compiled::BelowRoot(g);
                }
                match g.strip_prefix("**/").and_then(|r| r.strip_suffix("/**")) {
                    Some(name) if !name.is_empty() && !name.contains(is_special) => {
                        Compiled::Component(name.to_string())
                    }
                    _ => Compiled::Whole(g),
                }
            })
            .collect()
    }
}

/// One unit of matching a [`Pattern`] compiles to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Compiled {
    /// A glob matched against the whole path.
    Whole(String),
    /// A glob matched against the path below a root.
    BelowRoot(String),
    /// Some directory component of the path (not the last component) is exactly this.
    Component(String),
}

/// Characters with a meaning in globs (and `/`, which a component cannot hold).
fn is_special(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '/' | ',')
}

/// Expands a glob with exactly one `{...}` group, not nested and without escapes, into
/// one glob per alternative; any other glob is returned as it is.
fn expand_braces(glob: &str) -> Vec<String> {
    let simple =
        !glob.contains('\\') && glob.matches('{').count() == 1 && glob.matches('}').count() == 1;
    let (Some(open), Some(close)) = (glob.find('{'), glob.find('}')) else {
        return vec![glob.to_string()];
    };
    if !simple || close < open {
        return vec![glob.to_string()];
    }
    let (head, body, tail) = (&glob[..open], &glob[open + 1..close], &glob[close + 1..]);
    let mut out: Vec<String> = Vec::new();
    for alt in body.split(',') {
        let g = format!("{head}{alt}{tail}");
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// Builds one glob with the module's semantics.
pub(crate) fn build(glob: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// globset's message without the glob repeated.
fn glob_error(e: &globset::Error) -> String {
    e.kind().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pattern` under `roots` matches `path`, as the rule set applies it.
    fn matches(pattern: &Pattern, roots: &[&str], path: &str) -> bool {
        pattern.compiled().into_iter().any(|c| match c {
            Compiled::Whole(g) => build(&g).unwrap().compile_matcher().is_match(path),
            Compiled::Component(name) => {
                let dirs = path.rsplit_once('/').map_or("", |(d, _)| d);
                dirs.split('/').any(|c| c == name)
            }
            Compiled::BelowRoot(g) => {
                let m = build(&g).unwrap().compile_matcher();
                roots.iter().any(|r| {
                    let r = r.trim_end_matches('/');
                    path.strip_prefix(r)
                        .and_then(|t| t.strip_prefix('/'))
                        .is_some_and(|tail| m.is_match(tail))
                })
            }
        })
    }

    #[test]
    fn shapes_are_classified_and_anchored() {
        let home = Some(Path::new("/home/me"));
        let name = Pattern::parse("*.rs", home).unwrap();
        assert_eq!(name, Pattern::Name("*.rs".into()));
        assert!(matches(&name, &[], "/a/b/c.rs"));
        assert!(matches(&name, &[], "/c.rs"));
        assert!(!matches(&name, &[], "/a/b.rs/c"));

        let abs = Pattern::parse("/srv/*.html", home).unwrap();
        assert!(matches(&abs, &[], "/srv/i.html"));
        assert!(!matches(&abs, &[], "/srv/x/i.html"), "* does not cross /");

        let tilde = Pattern::parse("~/notes/**", home).unwrap();
        assert_eq!(tilde, Pattern::Absolute("/home/me/notes/**".into()));
        assert!(matches(&tilde, &[], "/home/me/notes/a/b.md"));

        let rel = Pattern::parse("./src/**/*.rs", home).unwrap();
        assert_eq!(rel, Pattern::Relative("src/**/*.rs".into()));
        assert!(matches(&rel, &["/p", "/q/"], "/q/src/a/b.rs"));
        assert!(matches(&rel, &["/p"], "/p/src/b.rs"));
        assert!(!matches(&rel, &["/p"], "/x/p/src/b.rs"));
        assert!(!matches(&rel, &[], "/p/src/b.rs"));

        let anywhere = Pattern::parse("**/target/**", home).unwrap();
        assert_eq!(anywhere, Pattern::Absolute("**/target/**".into()));
        assert!(matches(&anywhere, &[], "/p/a/target/x"));
        assert!(matches(&anywhere, &[], "/target/x"));
        assert!(!matches(&anywhere, &[], "/p/targets/x"));
    }

    #[test]
    fn faster_equivalent_forms() {
        let p = |t: &str| Pattern::parse(t, None).unwrap().compiled();
        use Compiled::*;
        assert_eq!(
            p("*.{c,h}"),
            [Whole("**/*.c".into()), Whole("**/*.h".into())]
        );
        assert_eq!(
            p("src/{a,b}/*"),
            [BelowRoot("src/a/*".into()), BelowRoot("src/b/*".into())]
        );
        assert_eq!(p("{a,b}{c,d}"), [Whole("**/{a,b}{c,d}".into())]);
        assert_eq!(p("x{,y}"), [Whole("**/x".into()), Whole("**/xy".into())]);
        assert_eq!(p("**/target/**"), [Component("target".into())]);
        assert_eq!(p("**/.git/**"), [Component(".git".into())]);
        assert_eq!(p("**/t*/**"), [Whole("**/t*/**".into())]);
        assert_eq!(p("a/**/target/**"), [BelowRoot("a/**/target/**".into())]);
        // Each expanded form matches what the original matches.
        for (glob, path) in [("*.{c,h}", "/x/y.h"), ("**/target/**", "/p/target/a/b")] {
            assert!(build(&format!("**/{glob}"))
                .unwrap()
                .compile_matcher()
                .is_match(path));
        }
    }

    #[test]
    fn bad_globs_are_errors() {
        assert!(Pattern::parse("a[", None)
            .unwrap_err()
            .contains("invalid glob"));
        assert!(Pattern::parse("{a,b", None).is_err());
        assert!(Pattern::parse("target/", None)
            .unwrap_err()
            .contains("target/**"));
        assert!(Pattern::parse("~/x", None).unwrap_err().contains("HOME"));
        assert!(Pattern::parse("~bob/x", Some(Path::new("/h")))
            .unwrap_err()
            .contains("~user"));
        assert!(Pattern::parse("", None).is_err());
    }
}
