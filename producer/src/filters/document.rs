//! Parsing one filter document (TOML) into checked rule specifications, with every problem
//! reported at its line and column.
//!
//! Parsing has two passes: serde (syntax, types, unknown keys, missing `name`; it stops at
//! the first problem, which toml reports with a byte span), then a check of every value
//! (roots, globs, kinds, windows), which reports every problem it finds.

use super::error::FilterError;
use super::kinds::{parse_kind, KindSet};
use super::pattern::Pattern;
use firehose_transport::record::EventKind;
use serde::Deserialize;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The longest coalescing window a rule may ask for, in milliseconds.
pub const MAX_COALESCE_MS: u64 = 60_000;

/// What parsing needs from the outside world.
#[derive(Clone, Debug, Default)]
pub(crate) struct Env {
    /// `$HOME`, for `~` in roots and globs.
    pub(crate) home: Option<PathBuf>,
}

impl Env {
    /// The process's environment.
    pub(crate) fn from_process() -> Env {
        Env {
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// One rule as a document states it, checked but not compiled.
#[derive(Clone, Debug)]
pub(crate) struct RuleSpec {
    /// Unique name.
    pub(crate) name: String,
    /// Byte offset of the name's value in the document (for duplicate-name errors).
    pub(crate) name_offset: usize,
    /// Absolute, normalised roots; `None`: the service's `--watch` roots.
    pub(crate) roots: Option<Vec<PathBuf>>,
    /// `None`: everything.
    pub(crate) include: Option<Vec<Pattern>>,
    /// The include globs as written.
    pub(crate) include_text: Vec<String>,
    /// The exclude globs as written.
    pub(crate) exclude_text: Vec<String>,
    /// Globs that exclude.
    pub(crate) exclude: Vec<Pattern>,
    /// Kinds the rule takes.
    pub(crate) kinds: KindSet,
    /// Store matches in history.
    pub(crate) store: bool,
    /// Stream matches to the ring.
    pub(crate) stream: bool,
    /// Coalescing window.
    pub(crate) coalesce: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentToml {
    #[serde(default)]
    rule: Vec<RuleToml>,
}

type SpannedList = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    name: Spanned<String>,
    roots: Option<SpannedList>,
    include: Option<SpannedList>,
    exclude: Option<SpannedList>,
    kinds: Option<SpannedList>,
    store: Option<bool>,
    stream: Option<bool>,
    coalesce_ms: Option<Spanned<i64>>,
}

/// Parses the document `text`, read from `path`.
///
/// # Errors
///
/// Every problem found, each with its line and column: one for a syntax, type or
/// unknown-key error (serde stops there), otherwise all value problems of all rules.
/// Duplicate names within the document are reported here; across documents by the loader.
pub(crate) fn parse(path: &Path, text: &str, env: &Env) -> Result<Vec<RuleSpec>, Vec<FilterError>> {
    let doc: DocumentToml = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            return Err(vec![FilterError::at(
                path,
                text,
                offset,
                e.message().trim_end().to_string(),
            )]);
        }
    };
    let mut errors = Vec::new();
    if doc.rule.is_empty() {
        errors.push(FilterError::at(
            path,
            text,
            0,
            "no [[rule]] table: a filter document holds one or more rules",
        ));
    }
    let mut specs: Vec<RuleSpec> = Vec::with_capacity(doc.rule.len());
    for rule in doc.rule {
        let mut err = |span: Range<usize>, msg: String| {
            errors.push(FilterError::at(path, text, span.start, msg));
        };
        let name_span = rule.name.span();
        let name = rule.name.into_inner();
        if name.trim().is_empty() {
            err(name_span.clone(), "rule name is empty".into());
        }
        if let Some(first) = specs.iter().find(|s| s.name == name) {
            let (l, c) = super::error::line_column(text, first.name_offset);
            err(
                name_span.clone(),
                format!(
                    "duplicate rule name {name:?} (first defined at {}:{l}:{c})",
                    path.display()
                ),
            );
        }
        let roots = rule.roots.map(|list| {
            check_nonempty(
                &list,
                "roots",
                "leave `roots` out to use the --watch roots",
                &mut err,
            );
            list.into_inner()
                .into_iter()
                .filter_map(|r| {
                    let span = r.span();
                    parse_root(r.get_ref(), env).map_err(|m| err(span, m)).ok()
                })
                .collect::<Vec<_>>()
        });
        let patterns =
            |list: Option<SpannedList>, key: &str, err: &mut dyn FnMut(Range<usize>, String)| {
                list.map(|list| {
                    list.into_inner()
                        .into_iter()
                        .filter_map(|g| {
                            let span = g.span();
                            Pattern::parse(g.get_ref(), env.home.as_deref())
                                .map_err(|m| err(span, format!("{key}: {m}")))
                                .ok()
                        })
                        .collect::<Vec<_>>()
                })
            };
        if let Some(list) = &rule.include {
            check_nonempty(
                list,
                "include",
                "leave `include` out to match every path",
                &mut err,
            );
        }
        let include_text = texts(&rule.include);
        let exclude_text = texts(&rule.exclude);
        let include = patterns(rule.include, "include", &mut err);
        let exclude = patterns(rule.exclude, "exclude", &mut err).unwrap_or_default();
        let kinds = match rule.kinds {
            None => KindSet::all(),
            Some(list) => {
                check_nonempty(
                    &list,
                    "kinds",
                    "leave `kinds` out to take every kind",
                    &mut err,
                );
                let mut set = KindSet::EMPTY;
                for k in list.into_inner() {
                    match parse_kind(k.get_ref()) {
                        Some(kind) => set = set.with(kind),
                        None => {
                            let names: Vec<&str> =
                                EventKind::FILTERABLE.map(EventKind::name).to_vec();
                            err(
                                k.span(),
                                format!(
                                    "unknown kind {:?}; kinds are {}",
                                    k.get_ref(),
                                    names.join(", ")
                                ),
                            );
                        }
                    }
                }
                set
            }
        };
        let coalesce = rule.coalesce_ms.and_then(|ms| {
            let span = ms.span();
            match u64::try_from(*ms.get_ref()) {
                Ok(v) if (1..=MAX_COALESCE_MS).contains(&v) => Some(Duration::from_millis(v)),
                _ => {
                    err(
                        span,
                        format!(
                            "coalesce_ms must be between 1 and {MAX_COALESCE_MS} (milliseconds); leave it out for no coalescing"
                        ),
                    );
                    None
                }
            }
        });
        specs.push(RuleSpec {
            name,
            name_offset: name_span.start,
            roots,
            include,
            include_text,
            exclude_text,
            exclude,
            kinds,
            store: rule.store.unwrap_or(true),
            stream: rule.stream.unwrap_or(true),
            coalesce,
        });
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}

fn texts(list: &Option<SpannedList>) -> Vec<String> {
    list.as_ref()
        .map(|l| l.get_ref().iter().map(|g| g.get_ref().clone()).collect())
        .unwrap_or_default()
}

fn check_nonempty(
    list: &SpannedList,
    key: &str,
    hint: &str,
    err: &mut dyn FnMut(Range<usize>, String),
) {
    if list.get_ref().is_empty() {
        err(list.span(), format!("`{key}` is empty; {hint}"));
    }
}

/// Checks and normalises one root: absolute (after `~` expansion), no `..`, no trailing
/// `/` (except the root directory itself).
fn parse_root(text: &str, env: &Env) -> Result<PathBuf, String> {
    let expanded: PathBuf = if let Some(rest) = text.strip_prefix('~') {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(format!(
                "root {text:?}: only `~` and `~/...` are expanded (to $HOME), not `~user`"
            ));
        }
        let Some(home) = &env.home else {
            return Err(format!(
                "root {text:?} starts with `~` but $HOME is not set"
            ));
        };
        home.join(rest.trim_start_matches('/'))
    } else {
        PathBuf::from(text)
    };
    if !expanded.is_absolute() {
        return Err(format!(
            "root {text:?} is not an absolute path (roots start with `/` or `~`)"
        ));
    }
    let mut out = PathBuf::new();
    for c in expanded.components() {
        match c {
            Component::ParentDir => {
                return Err(format!(
                    "root {text:?} contains `..`; write the path without it"
                ));
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}
