//! The history database's error type.

use std::path::PathBuf;

/// What went wrong with the history database. Every variant names the database file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// SQLite reported an error.
    #[error("history database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation failed (creating the file, setting its mode, reading randomness).
    #[error("history database {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer build.
    #[error("history database {path} has schema version {found}; this build knows up to {known}")]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this build can migrate to.
        known: i64,
    },
    /// A meta value is missing or malformed.
    #[error("history database {path}: meta key {key} is missing or malformed")]
    Meta {
        /// The database file.
        path: PathBuf,
        /// The key.
        key: &'static str,
    },
    /// Storing is failing; the writer keeps retrying by itself.
    #[error("history database {path}: storing is degraded: {reason}")]
    Degraded {
        /// The database file.
        path: PathBuf,
        /// The last storage error.
        reason: String,
    },
    /// The writer thread has stopped (shut down, or it panicked).
    #[error("history database {path}: the writer thread has stopped")]
    WriterGone {
        /// The database file.
        path: PathBuf,
    },
}

/// Adds the database path to rusqlite errors.
pub(crate) trait SqlContext<T> {
    fn ctx(self, path: &std::path::Path) -> Result<T, HistoryError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, path: &std::path::Path) -> Result<T, HistoryError> {
        self.map_err(|source| HistoryError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
    }
}
