//! Creating, configuring and migrating the database.
//!
//! The schema (version [`SCHEMA_VERSION`], documented for users in `docs/history.md`):
//!
//! ```sql
//! CREATE TABLE events(seq INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL,
//!     kind INTEGER NOT NULL, path BLOB NOT NULL, path_to BLOB, rule INTEGER NOT NULL,
//!     size INTEGER, gap_to INTEGER, gap_reason INTEGER,
//!     reconciled INTEGER NOT NULL DEFAULT 0, blind_reason INTEGER, blind_since INTEGER);
//! CREATE INDEX events_time ON events(time_ns);
//! CREATE TABLE meta(key TEXT PRIMARY KEY, value);  -- instance_id, schema_version, created_ns
//! ```
//!
//! There is deliberately no index on paths: measured here, one cuts inserts about tenfold.
//! Path globs scan a seq- or time-bounded range instead.
//!
//! The schema version lives in `PRAGMA user_version` (authoritative) and is mirrored in
//! `meta.schema_version`. [`MIGRATIONS`] step `i` takes version `i` to `i + 1`, each in its
//! own transaction, at open.
//!
//! # The WAL cap
//!
//! `wal_autocheckpoint = 1000` pages (4 MiB at the default 4 KiB page) makes the writer
//! checkpoint after every commit that leaves the WAL longer than that, and
//! `journal_size_limit = 16 MiB` truncates the WAL file back to at most 16 MiB after a
//! checkpoint that reset it. The WAL can only grow past ~4 MiB plus one transaction (the
//! writer's transactions are at most 10,000 rows, about 1–2 MiB) while a reader holds an
//! old snapshot; readers page in short statements, so that window is short.

use std::fs::{OpenOptions, Permissions};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::error::{HistoryError, SqlContext};

/// Schema migrations: entry `i` takes a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the tables.
    "CREATE TABLE events(
        seq INTEGER PRIMARY KEY,
        time_ns INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        path BLOB NOT NULL,
        path_to BLOB,
        rule INTEGER NOT NULL,
        size INTEGER,
        gap_to INTEGER,
        gap_reason INTEGER
     );
     CREATE TABLE meta(key TEXT PRIMARY KEY, value);",
    // 2: time-range queries.
    "CREATE INDEX events_time ON events(time_ns);",
    // 3: reconciled records and blind ranges (both O(1): SQLite stores the default once).
    "ALTER TABLE events ADD COLUMN reconciled INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE events ADD COLUMN blind_reason INTEGER;
     ALTER TABLE events ADD COLUMN blind_since INTEGER;",
];

/// The schema version this build creates and migrates to.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Pages after which the writer checkpoints the WAL (see the module doc).
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 1000;
/// Size the WAL file is truncated back to after a checkpoint.
pub const JOURNAL_SIZE_LIMIT: u64 = 16 << 20;

/// What the meta table says about a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Random id made when the database was created.
    pub instance_id: u128,
    /// When it was created, ns since the Unix epoch.
    pub created_ns: u64,
    /// Its schema version (after migration).
    pub schema_version: i64,
}

/// Opens (creating if needed) the database for writing: mode 0600, WAL, synchronous=NORMAL,
/// the WAL cap, and migrations up to [`SCHEMA_VERSION`].
///
/// # Errors
/// [`HistoryError`] if the file cannot be created or opened, SQLite fails, or the database
/// is newer than this build.
pub fn open_write(path: &Path) -> Result<(Connection, Meta), HistoryError> {
    open_write_at(path, SCHEMA_VERSION)
}

/// [`open_write`], migrating only up to `version` (to test migrations from older versions).
///
/// # Errors
/// As [`open_write`].
#[doc(hidden)]
pub fn open_write_at(path: &Path, version: i64) -> Result<(Connection, Meta), HistoryError> {
    // Create the file ourselves so that it is never, even briefly, readable by others.
    // SQLite gives the -wal and -shm files the main file's mode.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| io_err(path, source))?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ctx(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .ctx(path)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .ctx(path)?;
    debug_assert_eq!(mode.to_ascii_lowercase(), "wal");
    conn.execute_batch(&format!(
        "PRAGMA synchronous=NORMAL;
         PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES};
         PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT};"
    ))
    .ctx(path)?;
    migrate(&conn, path, version)?;
    restrict_modes(path)?;
    let meta = read_meta(&conn, path)?;
    Ok((conn, meta))
}

/// Opens the database read-only (`SQLITE_OPEN_READ_ONLY`), for queries concurrent with the
/// writer.
///
/// # Errors
/// [`HistoryError::Sqlite`] if it does not exist or cannot be opened.
pub fn open_read(path: &Path) -> Result<Connection, HistoryError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ctx(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .ctx(path)?;
    Ok(conn)
}

/// Reads the meta table.
///
/// # Errors
/// [`HistoryError::Meta`] if a key is missing or malformed.
pub fn read_meta(conn: &Connection, path: &Path) -> Result<Meta, HistoryError> {
    let get = |key: &'static str| -> Result<String, HistoryError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .optional()
        .ctx(path)?
        .and_then(|v| match v {
            rusqlite::types::Value::Text(s) => Some(s),
            rusqlite::types::Value::Integer(i) => Some(i.to_string()),
            _ => None,
        })
        .ok_or_else(|| HistoryError::Meta {
            path: path.to_path_buf(),
            key,
        })
    };
    let bad = |key| HistoryError::Meta {
        path: path.to_path_buf(),
        key,
    };
    Ok(Meta {
        instance_id: u128::from_str_radix(&get("instance_id")?, 16)
            .map_err(|_| bad("instance_id"))?,
        created_ns: get("created_ns")?.parse().map_err(|_| bad("created_ns"))?,
        schema_version: get("schema_version")?
            .parse()
            .map_err(|_| bad("schema_version"))?,
    })
}

fn migrate(conn: &Connection, path: &Path, target: i64) -> Result<(), HistoryError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .ctx(path)?;
    if found > SCHEMA_VERSION {
        return Err(HistoryError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for v in found..target {
        conn.execute_batch("BEGIN IMMEDIATE").ctx(path)?;
        let step = (|| -> Result<(), HistoryError> {
            conn.execute_batch(MIGRATIONS[v as usize]).ctx(path)?;
            if v == 0 {
                let id = random_id(path)?;
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('instance_id', ?1), ('created_ns', ?2)",
                    rusqlite::params![super::instance_hex(id), now_ns().to_string()],
                )
                .ctx(path)?;
            }
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?1)",
                [(v + 1).to_string()],
            )
            .ctx(path)?;
            conn.execute_batch(&format!("PRAGMA user_version = {}", v + 1))
                .ctx(path)?;
            Ok(())
        })();
        match step {
            Ok(()) => conn.execute_batch("COMMIT").ctx(path)?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        tracing::info!(db = %path.display(), version = v + 1, "history schema migrated");
    }
    Ok(())
}

/// Sets mode 0600 on the database and its -wal and -shm files (those that exist).
fn restrict_modes(path: &Path) -> Result<(), HistoryError> {
    for p in companion_files(path) {
        match std::fs::set_permissions(&p, Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_err(&p, source)),
        }
    }
    Ok(())
}

/// The database file and its -wal and -shm companions.
pub fn companion_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

fn random_id(path: &Path) -> Result<u128, HistoryError> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|source| io_err(Path::new("/dev/urandom"), source))
        .map_err(|e| match e {
            HistoryError::Io { source, .. } => io_err(path, source),
            e => e,
        })?;
    Ok(u128::from_le_bytes(b))
}

fn io_err(path: &Path, source: std::io::Error) -> HistoryError {
    HistoryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Now, in ns since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_new_database_has_the_schema_and_meta() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.db");
        let (conn, meta) = open_write(&p).unwrap();
        assert_eq!(meta.schema_version, SCHEMA_VERSION);
        let uv: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(uv, SCHEMA_VERSION);
        let idx: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type='index' AND name='events_time'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(idx, 1);
        let jm: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(jm, "wal");
        drop(conn);
        // Reopening keeps the instance id; a new database gets a new one.
        let (_c, again) = open_write(&p).unwrap();
        assert_eq!(again.instance_id, meta.instance_id);
        let (_c2, other) = open_write(&dir.path().join("other.db")).unwrap();
        assert_ne!(other.instance_id, meta.instance_id);
    }

    #[test]
    fn an_older_version_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.db");
        let (conn, meta) = open_write_at(&p, 1).unwrap();
        assert_eq!(meta.schema_version, 1);
        conn.execute(
            "INSERT INTO events(seq, time_ns, kind, path, rule) VALUES (1, 2, 0, x'2f61', 0)",
            [],
        )
        .unwrap();
        drop(conn);
        let (conn, after) = open_write(&p).unwrap();
        assert_eq!(after.schema_version, SCHEMA_VERSION);
        assert_eq!(after.instance_id, meta.instance_id);
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name='events_time'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.db");
        let (conn, _) = open_write(&p).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        assert!(matches!(
            open_write(&p),
            Err(HistoryError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.db");
        let (conn, _) = open_write(&p).unwrap();
        conn.execute(
            "INSERT INTO events(seq, time_ns, kind, path, rule) VALUES (1, 2, 0, x'2f61', 0)",
            [],
        )
        .unwrap();
        for f in companion_files(&p) {
            let mode = std::fs::metadata(&f).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
}
