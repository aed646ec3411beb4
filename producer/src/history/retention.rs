//! Retention: removing the oldest rows by count, age and size, and recording what was
//! removed.
//!
//! Rows are removed oldest-seq first, in chunks of [`CHUNK_ROWS`], each chunk in its own
//! short transaction, and one run stops after [`RUN_BUDGET`] so the writer gets back to
//! inserting. Everything retention ever removed is covered by ONE gap row of reason
//! `Retention` at the bottom of the table: its `seq` is the first seq ever removed and its
//! `gap_to` the last, updated by every run. History therefore reaches back to `gap_to + 1`
//! ([`boundary`]), and a query that asks for older seqs ends with `Truncated`.
//!
//! Size is the bytes in use, `(page_count - freelist_count) * page_size`: SQLite reuses
//! freed pages, so the file stops growing at about the cap but does not shrink.

use std::path::Path;
use std::time::{Duration, Instant};

use firehose_transport::record::GapReason;
use rusqlite::{params, Connection, OptionalExtension};

use super::error::{HistoryError, SqlContext};
use super::row;

/// Rows removed per transaction.
pub const CHUNK_ROWS: u64 = 1000;
/// Longest one retention run takes before it yields to the writer.
pub const RUN_BUDGET: Duration = Duration::from_millis(50);

/// Limits on what history keeps. `None`: no limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Most rows kept (the retention gap row itself not counted).
    pub max_rows: Option<u64>,
    /// Oldest record kept, by its `time_ns`.
    pub max_age: Option<Duration>,
    /// Most bytes of database pages in use.
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// Whether any limit is set.
    pub fn is_active(&self) -> bool {
        self.max_rows.is_some() || self.max_age.is_some() || self.max_bytes.is_some()
    }
}

/// The retention gap row, if retention ever removed anything: `(first removed, last
/// removed)`.
///
/// # Errors
/// [`HistoryError::Sqlite`].
pub fn retention_range(conn: &Connection, path: &Path) -> Result<Option<(u64, u64)>, HistoryError> {
    let r: Option<(i64, Option<i64>, Option<i64>)> = conn
        .prepare_cached("SELECT seq, gap_to, gap_reason FROM events ORDER BY seq LIMIT 1")
        .and_then(|mut st| {
            st.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .ctx(path)?;
    Ok(match r {
        Some((seq, Some(to), Some(reason))) if reason == i64::from(GapReason::Retention.code()) => {
            Some((seq as u64, to as u64))
        }
        _ => None,
    })
}

/// The first seq history still reaches back to after retention, if retention removed
/// anything.
///
/// # Errors
/// [`HistoryError::Sqlite`].
pub fn boundary(conn: &Connection, path: &Path) -> Result<Option<u64>, HistoryError> {
    Ok(retention_range(conn, path)?.map(|(_, to)| to + 1))
}

/// The oldest seq history reaches back to: the retention boundary, else the first row
/// (`None`: empty).
///
/// # Errors
/// [`HistoryError::Sqlite`].
pub fn oldest(conn: &Connection, path: &Path) -> Result<Option<u64>, HistoryError> {
    if let Some(b) = boundary(conn, path)? {
        return Ok(Some(b));
    }
    let first: Option<i64> = conn
        .query_row("SELECT seq FROM events ORDER BY seq LIMIT 1", [], |r| {
            r.get(0)
        })
        .optional()
        .ctx(path)?;
    Ok(first.map(|v| v as u64))
}

/// Bytes of pages in use.
///
/// # Errors
/// [`HistoryError::Sqlite`].
pub fn used_bytes(conn: &Connection, path: &Path) -> Result<u64, HistoryError> {
    let q = |p: &str| -> Result<i64, HistoryError> {
        conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
            .ctx(path)
    };
    let pages = q("page_count")? - q("freelist_count")?;
    Ok((pages.max(0) as u64) * q("page_size")? as u64)
}

/// Runs retention once: removes what `limits` say must go, oldest first, within
/// [`RUN_BUDGET`]. Returns how many rows were removed. `rows` is the table's row count as
/// the caller keeps it (no `count(*)` here); it is kept current.
///
/// # Errors
/// [`HistoryError::Sqlite`]; what was committed before the error stays removed.
pub fn run(
    conn: &mut Connection,
    path: &Path,
    limits: &Retention,
    now_ns: u64,
    rows: &mut u64,
) -> Result<u64, HistoryError> {
    if !limits.is_active() {
        return Ok(0);
    }
    let deadline = Instant::now() + RUN_BUDGET;
    let cutoff = limits
        .max_age
        .map(|a| now_ns.saturating_sub(a.as_nanos() as u64));
    let mut removed = 0u64;
    loop {
        let ret = retention_range(conn, path)?;
        let floor = ret.map_or(i64::MIN, |(s, _)| s as i64);
        let mut need = 0u64;
        if let Some(max) = limits.max_rows {
            let kept = rows.saturating_sub(u64::from(ret.is_some()));
            need = need.max(kept.saturating_sub(max).min(CHUNK_ROWS));
        }
        if let Some(max) = limits.max_bytes {
            if used_bytes(conn, path)? > max {
                need = CHUNK_ROWS;
            }
        }
        // The chunk of oldest rows: (seq, last covered seq, time).
        let chunk: Vec<(i64, i64, i64)> = {
            let mut st = conn
                .prepare_cached(
                    "SELECT seq, coalesce(gap_to, seq), time_ns FROM events WHERE seq > ?1 \
                     ORDER BY seq LIMIT ?2",
                )
                .ctx(path)?;
            let rows = st
                .query_map(params![floor, CHUNK_ROWS as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .ctx(path)?;
            rows.collect::<Result<_, _>>().ctx(path)?
        };
        if let Some(cutoff) = cutoff {
            let old = chunk
                .iter()
                .take_while(|&&(_, _, t)| (t as u64) < cutoff)
                .count() as u64;
            need = need.max(old);
        }
        let n = (need as usize).min(chunk.len());
        if n == 0 {
            break;
        }
        let gone = &chunk[..n];
        let first = gone[0].0 as u64;
        let last_row = gone[n - 1].0;
        let covered = gone
            .iter()
            .map(|&(s, g, _)| s.max(g))
            .max()
            .unwrap_or(last_row) as u64;
        let last_time = gone[n - 1].2 as u64;
        let tx = conn.transaction().ctx(path)?;
        tx.execute(
            "DELETE FROM events WHERE seq > ?1 AND seq <= ?2",
            params![floor, last_row],
        )
        .ctx(path)?;
        match ret {
            Some((seq, to)) => {
                tx.execute(
                    "UPDATE events SET gap_to = ?2, time_ns = ?3 WHERE seq = ?1",
                    params![seq as i64, covered.max(to) as i64, last_time as i64],
                )
                .ctx(path)?;
            }
            None => {
                row::insert(
                    &tx,
                    &row::gap(first, covered, GapReason::Retention, last_time),
                )
                .ctx(path)?;
                *rows += 1;
            }
        }
        tx.commit().ctx(path)?;
        removed += n as u64;
        *rows = rows.saturating_sub(n as u64);
        if Instant::now() >= deadline {
            break;
        }
    }
    if removed > 0 {
        tracing::debug!(db = %path.display(), removed, "history retention");
    }
    Ok(removed)
}
