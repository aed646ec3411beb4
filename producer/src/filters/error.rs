//! Errors of loading filter documents: one [`FilterError`] per problem, each with the file,
//! line and column it is about, and [`FilterErrors`], every problem of one load.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one filter document (or with the filter directory itself).
///
/// Displays as `path:line:column: message`, the form editors and terminals turn into a
/// link. `line` and `column` count from 1; `column` counts characters (not bytes). A
/// problem that has no position in the file (the file cannot be read, the directory is
/// missing) has `line == 0` and `column == 0` and displays as `path: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FilterError {
    /// The document (or directory) the problem is in.
    pub path: PathBuf,
    /// Line, from 1; 0 when the problem has no position.
    pub line: usize,
    /// Column in characters, from 1; 0 when the problem has no position.
    pub column: usize,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl FilterError {
    /// An error at byte offset `offset` of `text`, the contents of `path`.
    pub(crate) fn at(path: &Path, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_column(text, offset);
        FilterError {
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error about `path` as a whole (no position).
    pub(crate) fn whole(path: &Path, message: impl Into<String>) -> Self {
        FilterError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }
}

/// Every problem found by one load of a filter directory, in document order (documents
/// by file name, problems by position). Never empty.
///
/// Displays one [`FilterError`] per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FilterErrors(pub Vec<FilterError>);

impl fmt::Display for FilterErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl FilterErrors {
    /// The individual problems.
    pub fn iter(&self) -> std::slice::Iter<'_, FilterError> {
        self.0.iter()
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false for a value a load returned (a failed load has at least one problem).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a FilterErrors {
    type Item = &'a FilterError;
    type IntoIter = std::slice::Iter<'a, FilterError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The 1-based line and character column of byte `offset` in `text`. An offset past the
/// end (or inside a character) is clamped to the nearest character boundary before it.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_lines_and_characters() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 1), (1, 2));
        assert_eq!(line_column(text, 3), (2, 1));
        // 'é' is two bytes: the 'f' line starts at byte 8.
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, 8), (3, 1));
        assert_eq!(line_column(text, 100), (3, 2));
        // Inside 'é' clamps to its start.
        assert_eq!(line_column(text, 6), (2, 3));
    }

    #[test]
    fn display_with_and_without_position() {
        let e = FilterError::at(Path::new("/f/a.toml"), "x\ny = 1", 2, "bad");
        assert_eq!(e.to_string(), "/f/a.toml:2:1: bad");
        let w = FilterError::whole(Path::new("/f/b.toml"), "cannot read");
        assert_eq!(w.to_string(), "/f/b.toml: cannot read");
        let all = FilterErrors(vec![e, w]);
        assert_eq!(
            all.to_string(),
            "/f/a.toml:2:1: bad\n/f/b.toml: cannot read"
        );
    }
}
