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
//! | has a `/` elsewhere: `src/**/*.rs` | relative to each of the rule's roots | `/root/src/**/*.rs` for each root |
//!
//! A leading `./` is dropped. A glob ending in `/` is an error (paths never end in one;
//! write `dir/**` for what is under a directory).

use globset::{Glob, GlobBuilder};
use std::path::{Path, PathBuf};

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
        // Check the glob itself; prefixing an escaped root cannot make it invalid.
        let check = match &pattern {
            Pattern::Absolute(g) | Pattern::Relative(g) => g.clone(),
            Pattern::Name(g) => format!("**/{g}"),
        };
        build(&check).map_err(|e| format!("invalid glob {text:?}: {}", glob_error(&e)))?;
        Ok(pattern)
    }

    /// The globs, matched against absolute paths, that this pattern stands for under
    /// `roots`. A relative pattern gives one glob per root (none if there are no roots;
    /// roots that are not UTF-8 cannot be written into a glob and are skipped).
    pub(crate) fn globs(&self, roots: &[PathBuf]) -> Vec<String> {
        match self {
            Pattern::Absolute(g) => vec![g.clone()],
            Pattern::Name(g) => vec![format!("**/{g}")],
            Pattern::Relative(g) => roots
                .iter()
                .filter_map(|r| {
                    let Some(r) = r.to_str() else {
                        tracing::warn!(root = ?r, glob = %g, "root is not UTF-8: relative glob skipped for it");
                        return None;
                    };
                    let r = globset::escape(r.trim_end_matches('/'));
                    Some(format!("{r}/{g}"))
                })
                .collect(),
        }
    }
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

    fn matches(pattern: &Pattern, roots: &[&str], path: &str) -> bool {
        let roots: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
        pattern
            .globs(&roots)
            .iter()
            .any(|g| build(g).unwrap().compile_matcher().is_match(path))
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
    fn roots_with_glob_characters_are_escaped() {
        let rel = Pattern::parse("a/*", None).unwrap();
        assert!(matches(&rel, &["/x[1]"], "/x[1]/a/f"));
        assert!(!matches(&rel, &["/x[1]"], "/x1/a/f"));
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
