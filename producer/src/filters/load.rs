//! Loading a filter directory: listing its documents, parsing every one, checking names
//! across documents, compiling. Every problem of every document is collected.

use super::document::{self, Env};
use super::error::{line_column, FilterError, FilterErrors};
use super::ids::RuleIds;
use super::ruleset::{RuleSet, SourcedSpec};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

impl RuleSet {
    /// Loads every document of `dir` (see the [module docs](super) for the format).
    /// A missing directory, or one without documents, gives [`RuleSet::implicit`].
    /// `default_roots` are the service's `--watch` roots, used by rules without `roots`.
    ///
    /// # Errors
    ///
    /// Every problem of every document, each with its file, line and column; or the
    /// directory cannot be read.
    pub fn load_dir(dir: &Path, default_roots: &[PathBuf]) -> Result<RuleSet, FilterErrors> {
        Self::load_dir_with(dir, default_roots, &RuleIds::new())
    }

    /// [`RuleSet::load_dir`] keeping the ids of `previous` for names it knows (pass
    /// `current.ids()` on a reload, so history rows keep pointing at the same rules).
    ///
    /// # Errors
    ///
    /// As [`RuleSet::load_dir`].
    pub fn load_dir_with(
        dir: &Path,
        default_roots: &[PathBuf],
        previous: &RuleIds,
    ) -> Result<RuleSet, FilterErrors> {
        load(dir, default_roots, previous, &Env::from_process()).1
    }

    /// Reloads the directory `dir` with this set's `--watch` roots and ids. On an error
    /// `self` is untouched: keep using it (G6).
    ///
    /// # Errors
    ///
    /// As [`RuleSet::load_dir`].
    pub fn reload(&self, dir: &Path) -> Result<RuleSet, FilterErrors> {
        Self::load_dir_with(dir, self.default_roots(), self.ids())
    }
}

/// A document read from the directory.
#[derive(Debug)]
pub(crate) struct Document {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

/// Lists and reads the documents of `dir`: regular files (symlinks followed) named
/// `*.toml` not starting with `.`, sorted by file name (bytewise). `Ok(None)`: `dir`
/// does not exist.
pub(crate) fn read_documents(
    dir: &Path,
) -> Result<Option<Vec<Result<Document, FilterError>>>, FilterError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FilterError::whole(
                dir,
                format!("cannot read the filter directory: {e}"),
            ))
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            FilterError::whole(dir, format!("cannot list the filter directory: {e}"))
        })?;
        let name = entry.file_name();
        let bytes = name.as_bytes();
        if bytes.starts_with(b".") || !bytes.ends_with(b".toml") {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            _ => paths.push(path),
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(Some(paths.into_iter().map(read_document).collect()))
}

fn read_document(path: PathBuf) -> Result<Document, FilterError> {
    let bytes =
        std::fs::read(&path).map_err(|e| FilterError::whole(&path, format!("cannot read: {e}")))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Document { path, text }),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
            let (line, column) = line_column(&prefix, valid);
            Err(FilterError {
                path,
                line,
                column,
                message: "not UTF-8 (TOML documents are UTF-8)".into(),
            })
        }
    }
}

/// Loads `dir`. Returns a digest of what was read (file names and contents; equal
/// digests mean equal inputs) with the result.
pub(crate) fn load(
    dir: &Path,
    default_roots: &[PathBuf],
    ids: &RuleIds,
    env: &Env,
) -> (u64, Result<RuleSet, FilterErrors>) {
    let mut hasher = DefaultHasher::new();
    let docs = match read_documents(dir) {
        Ok(Some(docs)) => docs,
        Ok(None) => {
            "missing".hash(&mut hasher);
            let digest = hasher.finish();
            let mut set = RuleSet::implicit_with(default_roots, ids);
            set.digest = digest;
            return (digest, Ok(set));
        }
        Err(e) => {
            "unreadable".hash(&mut hasher);
            return (hasher.finish(), Err(FilterErrors(vec![e])));
        }
    };
    let mut errors = Vec::new();
    let mut specs = Vec::new();
    // name → (file, line, column) of its first definition.
    let mut names: HashMap<String, (PathBuf, usize, usize)> = HashMap::new();
    for doc in docs {
        let doc = match doc {
            Ok(d) => d,
            Err(e) => {
                e.path.hash(&mut hasher);
                errors.push(e);
                continue;
            }
        };
        doc.path.file_name().hash(&mut hasher);
        doc.text.hash(&mut hasher);
        match document::parse(&doc.path, &doc.text, env) {
            Err(mut e) => errors.append(&mut e),
            Ok(rules) => {
                for spec in rules {
                    let (line, column) = line_column(&doc.text, spec.name_offset);
                    if let Some((file, l, c)) = names.get(&spec.name) {
                        errors.push(FilterError {
                            path: doc.path.clone(),
                            line,
                            column,
                            message: format!(
                                "duplicate rule name {:?}: also defined in {}:{l}:{c}",
                                spec.name,
                                file.display()
                            ),
                        });
                        continue;
                    }
                    names.insert(spec.name.clone(), (doc.path.clone(), line, column));
                    specs.push(SourcedSpec {
                        source: Some(doc.path.clone()),
                        spec,
                    });
                }
            }
        }
    }
    let digest = hasher.finish();
    if !errors.is_empty() {
        return (digest, Err(FilterErrors(errors)));
    }
    if specs.is_empty() {
        let mut set = RuleSet::implicit_with(default_roots, ids);
        set.digest = digest;
        return (digest, Ok(set));
    }
    match RuleSet::compile(specs, default_roots, ids) {
        Ok(mut set) => {
            set.digest = digest;
            (digest, Ok(set))
        }
        Err(mut e) => {
            if e.path.as_os_str().is_empty() {
                e.path = dir.to_path_buf();
            }
            (digest, Err(FilterErrors(vec![e])))
        }
    }
}
