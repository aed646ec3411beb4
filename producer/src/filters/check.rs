//! [`check_dir`]: validate a filter directory without a running service, for
//! `firehosed check-filters DIR`.

use super::document::Env;
use super::error::{FilterError, FilterErrors};
use super::ids::RuleIds;
use super::load::load;
use super::ruleset::{RuleInfo, RuleSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// What `check-filters` prints for a valid directory. Its `Display` is that text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The directory checked.
    pub dir: PathBuf,
    /// Each document, in match order; empty: the implicit rule applies.
    pub documents: Vec<DocumentSummary>,
}

/// One document and its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentSummary {
    /// The document.
    pub path: PathBuf,
    /// Its rules, in order. Ids are those a fresh service would give; rules without roots
    /// show empty `roots` (they use the service's `--watch` roots).
    pub rules: Vec<RuleInfo>,
}

/// Checks every document in `dir` as the service would load it.
///
/// # Errors
///
/// Every problem of every document with file, line and column (print one per line), or
/// `dir` is missing or unreadable (the service would fall back to its implicit rule for a
/// missing directory, but a check of a directory that is not there is an error).
///
/// # Examples
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("a.toml"), "[[rule]]\nname = \"x\"\nkinds = [\"mkdir\"]\n").unwrap();
/// let errors = firehose_producer::filters::check_dir(dir.path()).unwrap_err();
/// assert!(errors.to_string().ends_with("a.toml:3:10: unknown kind \"mkdir\"; kinds are create, modify, close_write, metadata, remove, rename, overflow"));
/// ```
pub fn check_dir(dir: &Path) -> Result<Summary, FilterErrors> {
    if !dir.is_dir() {
        return Err(FilterErrors(vec![FilterError::whole(
            dir,
            "not a directory (or it does not exist)",
        )]));
    }
    let set: RuleSet = load(dir, &[], &RuleIds::new(), &Env::from_process()).1?;
    let mut documents: Vec<DocumentSummary> = Vec::new();
    for rule in set.rules() {
        let Some(source) = &rule.source else {
            continue; // the implicit rule: no documents
        };
        match documents.last_mut() {
            Some(d) if &d.path == source => d.rules.push(rule.clone()),
            _ => documents.push(DocumentSummary {
                path: source.clone(),
                rules: vec![rule.clone()],
            }),
        }
    }
    Ok(Summary {
        dir: dir.to_path_buf(),
        documents,
    })
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.documents.is_empty() {
            return write!(
                f,
                "{}: no filter documents; the implicit rule \"all\" takes everything under the --watch roots",
                self.dir.display()
            );
        }
        let rules: usize = self.documents.iter().map(|d| d.rules.len()).sum();
        writeln!(
            f,
            "{}: {} document(s), {} rule(s), all valid",
            self.dir.display(),
            self.documents.len(),
            rules
        )?;
        for d in &self.documents {
            writeln!(f, "{}", d.path.display())?;
            for r in &d.rules {
                write_rule(f, r)?;
            }
        }
        Ok(())
    }
}

fn write_rule(f: &mut fmt::Formatter<'_>, r: &RuleInfo) -> fmt::Result {
    writeln!(f, "  rule {} {:?}", r.id, r.name)?;
    if r.default_roots {
        writeln!(f, "    roots:   (the --watch roots)")?;
    } else {
        let roots: Vec<String> = r.roots.iter().map(|p| p.display().to_string()).collect();
        writeln!(f, "    roots:   {}", roots.join(", "))?;
    }
    if r.include.is_empty() {
        writeln!(f, "    include: (everything)")?;
    } else {
        writeln!(f, "    include: {}", r.include.join(", "))?;
    }
    if !r.exclude.is_empty() {
        writeln!(f, "    exclude: {}", r.exclude.join(", "))?;
    }
    writeln!(f, "    kinds:   {}", r.kinds)?;
    let mut to = Vec::new();
    if r.store {
        to.push("store");
    }
    if r.stream {
        to.push("stream");
    }
    if to.is_empty() {
        to.push("neither stored nor streamed");
    }
    write!(f, "    records: {}", to.join(", "))?;
    if let Some(w) = r.coalesce {
        write!(f, "; coalesced over {} ms", w.as_millis())?;
    }
    writeln!(f)
}
