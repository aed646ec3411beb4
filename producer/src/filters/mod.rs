//! Filter documents: the rules that decide which file events the service records,
//! compiled into one matcher and reloaded live.
//!
//! # Data flow
//!
//! ```text
//!  *.toml in the filter directory
//!    -> document   (parse + check each document: FilterError with file:line:column)
//!    -> load       (all documents by file name; names unique across them; ids kept)
//!    -> RuleSet    (one include GlobSet + one exclude GlobSet for every rule)
//!    -> matches(path, kind) -> Option<Match { rule, store, stream, coalesce }>
//!    -> Coalescer  (folds a burst on one path when the rule has a window)
//!  FilterWatcher  (notify on the directory and its parent; debounced reload:
//!                  Reload::Applied(RuleSet) or Reload::Rejected(FilterErrors))
//!  check_dir      (`firehosed check-filters DIR`: a Summary or every error)
//! ```
//!
//! # The format
//!
//! A filter document is a TOML file named `*.toml` in the filter directory (by default
//! `$XDG_CONFIG_HOME/firehose/filters/`; files whose names start with `.` are ignored).
//! It holds one or more `[[rule]]` tables:
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `name` | string | required | unique across all documents; keeps the rule's id stable |
//! | `roots` | array of absolute paths | the `--watch` roots | directories the rule applies to (recursively); `~` is `$HOME` |
//! | `include` | array of globs | everything | the path must match one of them |
//! | `exclude` | array of globs | none | the path must match none of them |
//! | `kinds` | array of kind names | all | `create`, `modify`, `close_write`, `metadata`, `remove`, `rename`, `overflow` |
//! | `store` | bool | `true` | store matches in the history database |
//! | `stream` | bool | `true` | stream matches to live readers |
//! | `coalesce_ms` | integer, 1..=60000 | none | fold a burst on one path (create, modify, close_write within this many ms of the first) into one record |
//!
//! Any other key is an error, as are empty `roots`, `include` or `kinds` arrays (leave
//! the key out for its default), relative roots, roots with `..`, unknown kinds, invalid
//! globs and duplicate names. Every error names the file, line and column.
//!
//! ## Globs
//!
//! Globs are matched against the full absolute path of the event (for a rename, its old
//! path). `*`, `?` and `[...]` never cross a `/`; `**` spans whole components; `{a,b}`
//! is an alternation; `\` escapes. By shape:
//!
//! - no `/` at all (`*.rs`, `Makefile`): matches the **file name** at any depth;
//! - starting with `/` (`/srv/www/**/*.html`): matches the whole path;
//! - starting with `~/`: the same, with `~` expanded to `$HOME`;
//! - starting with `**/` (`**/target/**`): matches the whole path, at any depth;
//! - any other glob with a `/` (`src/**/*.rs`): relative to **each root** of the rule.
//!
//! To exclude everything under directories named `target` anywhere, write
//! `**/target/**` (a glob without `/`, like `target`, names files, not directories).
//!
//! ## Matching order
//!
//! Documents are taken in file-name order and rules in document order. The first rule
//! whose roots contain the path (a root `/a/b` contains `/a/b` and `/a/b/c`, never
//! `/a/bc`), whose include globs match (or that has none), whose exclude globs do not
//! match, and whose kinds contain the event's kind wins: the record carries its id and
//! follows its `store`, `stream` and `coalesce_ms`. An event no rule takes is not
//! recorded.
//!
//! Overflow records always match and are always stored and streamed: they carry the id of
//! the first rule that takes `overflow` and whose roots contain the overflowing root (globs
//! are not applied), or the implicit id [`OVERFLOW_RULE_ID`] (0).
//!
//! With no documents (or no directory), one implicit rule `all` (id
//! [`IMPLICIT_RULE_ID`], 1) takes everything under the `--watch` roots. Document rules
//! get ids from 2 up, kept across reloads while their names stay ([`RuleIds`]).
//!
//! ## Example
//!
//! ```toml
//! # ~/.config/firehose/filters/code.toml
//! [[rule]]
//! name = "rust-sources"
//! roots = ["~/src"]
//! include = ["*.rs", "Cargo.toml"]
//! exclude = ["**/target/**"]
//! coalesce_ms = 200          # one record per save, not create+modify+close_write
//!
//! [[rule]]
//! name = "deletions-everywhere"   # no roots: the --watch roots
//! kinds = ["remove", "rename"]
//! store = true
//! stream = false             # history only
//! ```
//!
//! # Live reload and G6
//!
//! [`FilterWatcher`] reloads the directory when it changes and sends a [`Reload`]. A
//! document with an error never replaces the working set: [`Reload::apply_to`] replaces
//! the caller's set only for [`Reload::Applied`].

mod check;
mod coalesce;
mod document;
mod error;
mod ids;
mod kinds;
mod load;
mod pattern;
mod reload;
mod roots;
mod ruleset;

#[cfg(test)]
mod tests;

pub use check::{check_dir, DocumentSummary, Summary};
pub use coalesce::{Coalescer, Coalescible};
pub use document::MAX_COALESCE_MS;
pub use error::{FilterError, FilterErrors};
pub use ids::{RuleIds, FIRST_RULE_ID, IMPLICIT_RULE_ID, OVERFLOW_RULE_ID};
pub use kinds::{parse_kind, KindSet};
pub use reload::{FilterWatcher, Reload, RootsDiff, WatchError, DEFAULT_DEBOUNCE};
pub use ruleset::{Match, MatchScratch, RuleInfo, RuleSet};
