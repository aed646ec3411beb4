//! Tests of the filters module that span its files.

mod check;
mod coalesce;
mod documents;
mod matching;
mod reload;

use super::document::Env;
use super::error::FilterErrors;
use super::ids::RuleIds;
use super::load::load;
use super::ruleset::RuleSet;
use std::path::{Path, PathBuf};

/// The `$HOME` the tests use.
pub(super) const HOME: &str = "/home/me";

/// Writes `docs` (file name, text) into a fresh temporary directory.
pub(super) fn dir_with(docs: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in docs {
        std::fs::write(dir.path().join(name), text).expect("write document");
    }
    dir
}

/// Loads `dir` with `HOME` as `$HOME`.
pub(super) fn load_in(
    dir: &Path,
    default_roots: &[&str],
    ids: &RuleIds,
) -> Result<RuleSet, FilterErrors> {
    let roots: Vec<PathBuf> = default_roots.iter().map(PathBuf::from).collect();
    let env = Env {
        home: Some(PathBuf::from(HOME)),
    };
    load(dir, &roots, ids, &env).1
}

/// Loads the documents `docs` and returns the errors as `file:line:col: message` strings,
/// with the directory stripped.
pub(super) fn errors_of(docs: &[(&str, &str)]) -> Vec<String> {
    let dir = dir_with(docs);
    let errors = load_in(dir.path(), &["/w"], &RuleIds::new()).expect_err("load should fail");
    let prefix = format!("{}/", dir.path().display());
    errors
        .iter()
        .map(|e| e.to_string().replace(&prefix, ""))
        .collect()
}

/// Loads one document that must be valid.
pub(super) fn set_of(docs: &[(&str, &str)], default_roots: &[&str]) -> RuleSet {
    let dir = dir_with(docs);
    match load_in(dir.path(), default_roots, &RuleIds::new()) {
        Ok(s) => s,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}
