//! Queries, on read-only connections, concurrent with the writer (WAL).
//!
//! A query is answered page by page by keyset: each page is one statement
//! (`... WHERE seq >= ?lo AND seq <= ?hi ... ORDER BY seq LIMIT n`), so each page is its
//! own short read transaction. A long-lived read transaction would pin the WAL and stop
//! checkpoints; a cursor never holds one between calls, so it may live as long as the
//! client reads.
//!
//! Filters: seq range and time range (inclusive), kind bitmask (`1 << kind`; 0: all) in
//! SQL; the path glob in Rust (globset, compiled once) against `path` and, for renames,
//! `path_to`, as raw bytes. Gap records (empty path) pass the glob filter, so a filtered
//! answer still accounts for every missing range. There is no path index on purpose (see
//! [`schema`](super::schema)).
//!
//! A gap row is stored at its first seq. A seq range that starts inside a gap (a follower
//! resuming after records that reached the ring and died with the service before their
//! commit) still gets that gap row: first when ascending, last when descending, although
//! its seq is below the range. (Retention's gap row is not: a range older than history
//! ends with `Truncated`.)

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use firehose_transport::control::wire::{row_len, HistoryQuery, QueryEnd};
use firehose_transport::path_glob::GlobMatcher;
use firehose_transport::record::{EventKind, FileEvent, GapReason};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};

use super::error::{HistoryError, SqlContext};
use super::{retention, row, schema};

/// Rows one statement reads.
pub const SCAN_ROWS: usize = 1000;
/// Seqs one statement's window spans at most: with a selective kind or time filter a
/// statement examines at most this many rows, never the whole table.
pub const SCAN_WINDOW: u64 = 16_384;
/// Statements one `next_page` call runs at most before it returns (so a selective glob over
/// a long range does not hold its caller for the whole scan).
pub const SCANS_PER_CALL: usize = 256;

/// Largest seq or time the database can hold (SQLite integers are signed).
const MAX_STORED: u64 = i64::MAX as u64;

/// What a database holds, for status and the welcome message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The database's instance id.
    pub instance_id: u128,
    /// Oldest seq history reaches back to (`None`: empty).
    pub oldest_seq: Option<u64>,
    /// Last seq stored or covered by a gap (`None`: empty).
    pub last_seq: Option<u64>,
    /// Rows (records and gap rows).
    pub rows: u64,
    /// Size of the database (page_count * page_size), WAL not included.
    pub bytes: u64,
}

/// A read-only connection to the history database.
#[derive(Debug)]
pub struct HistoryReader {
    conn: Connection,
    path: PathBuf,
}

impl HistoryReader {
    /// Opens the database read-only. It must exist (the writer creates it).
    ///
    /// # Errors
    /// [`HistoryError::Sqlite`] if it cannot be opened.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        Ok(HistoryReader {
            conn: schema::open_read(path)?,
            path: path.to_path_buf(),
        })
    }

    /// Instance id, oldest and last seq, rows and bytes.
    ///
    /// # Errors
    /// [`HistoryError`] if SQLite fails or the meta table is malformed.
    pub fn info(&self) -> Result<Info, HistoryError> {
        let p = &self.path;
        let meta = schema::read_meta(&self.conn, p)?;
        let q = |sql: &str| -> Result<i64, HistoryError> {
            self.conn.query_row(sql, [], |r| r.get(0)).ctx(p)
        };
        let last: Option<i64> = self
            .conn
            .query_row(
                "SELECT coalesce(gap_to, seq) FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .ctx(p)?;
        Ok(Info {
            instance_id: meta.instance_id,
            oldest_seq: self.oldest_seq()?,
            last_seq: last.map(|v| v as u64),
            rows: q("SELECT count(*) FROM events")? as u64,
            bytes: (q("PRAGMA page_count")? * q("PRAGMA page_size")?) as u64,
        })
    }

    /// The oldest seq history reaches back to: just after what retention removed, else the
    /// first row's seq; `None` if empty.
    ///
    /// # Errors
    /// [`HistoryError::Sqlite`].
    pub fn oldest_seq(&self) -> Result<Option<u64>, HistoryError> {
        retention::oldest(&self.conn, &self.path)
    }

    /// Starts answering `q`, oldest first, or newest first if `reverse`. Nothing is read
    /// until [`QueryCursor::next_page`]. A bad glob gives a cursor that ends at once with
    /// [`QueryEnd::Invalid`].
    ///
    /// # Errors
    /// None today; reserved for checks that need the database.
    pub fn query(&self, q: &HistoryQuery, reverse: bool) -> Result<QueryCursor<'_>, HistoryError> {
        let (lo, hi) = q.seq.unwrap_or((0, MAX_STORED));
        let (lo, hi) = (lo.min(MAX_STORED), hi.min(MAX_STORED));
        let mut end = None;
        let glob = match &q.glob {
            None => None,
            Some(g) => match firehose_transport::path_glob::compile(g) {
                Ok(g) => Some(g),
                Err(_) => {
                    end = Some(QueryEnd::Invalid);
                    None
                }
            },
        };
        if q.seq.is_some_and(|(a, b)| a > b) || q.time_ns.is_some_and(|(a, b)| a > b) {
            end = Some(QueryEnd::Invalid);
        }
        Ok(QueryCursor {
            reader: self,
            lo,
            hi,
            time: q
                .time_ns
                .map(|(a, b)| (a.min(MAX_STORED), b.min(MAX_STORED))),
            kinds: q.kinds,
            glob,
            limit: q.limit,
            sent: 0,
            reverse,
            seq_given: q.seq.is_some(),
            start_lo: lo,
            // Only a range that starts above seq 0 can start inside an earlier gap.
            lead_checked: q.seq.is_none() || lo == 0,
            scans_per_call: SCANS_PER_CALL,
            end,
            done: false,
        })
    }
}

/// Bytes a page may still take.
#[derive(Debug)]
struct Budget {
    used: usize,
    max: usize,
}

impl Budget {
    fn fits(&self, len: usize) -> bool {
        self.used.saturating_add(len) <= self.max
    }
    fn full(&self) -> bool {
        self.used >= self.max
    }
    fn close(&mut self) {
        self.used = self.max;
    }
}

/// An answer being read, page by page. Holds no transaction between calls.
#[derive(Debug)]
pub struct QueryCursor<'r> {
    reader: &'r HistoryReader,
    /// The seq window still to scan, inclusive.
    lo: u64,
    hi: u64,
    time: Option<(u64, u64)>,
    kinds: u32,
    glob: Option<GlobMatcher>,
    limit: u64,
    sent: u64,
    reverse: bool,
    seq_given: bool,
    start_lo: u64,
    /// The gap row that began before the range and reaches into it was looked for.
    lead_checked: bool,
    /// Set when the answer is over.
    end: Option<QueryEnd>,
    /// The end was returned once.
    done: bool,
    /// Statements one call runs at most.
    scans_per_call: usize,
}

impl QueryCursor<'_> {
    /// Runs at most `n` statements (each over at most [`SCAN_WINDOW`] seqs) per call
    /// instead of [`SCANS_PER_CALL`]: shorter calls for a caller that must answer others
    /// between them. At least 1.
    pub fn with_scans_per_call(mut self, n: usize) -> Self {
        self.scans_per_call = n.max(1);
        self
    }

    /// Appends up to `max_rows` matching rows to `out`. Returns `Some(end)` when the answer
    /// is over (the rows appended by this call still belong to it), `None` when more may
    /// follow. A call may append fewer rows than asked, even none, and still return `None`
    /// (a selective glob: it scans at most [`SCANS_PER_CALL`] pages per call).
    ///
    /// # Errors
    /// [`HistoryError::Sqlite`] if a statement fails.
    pub fn next_page(
        &mut self,
        out: &mut Vec<FileEvent>,
        max_rows: usize,
    ) -> Result<Option<QueryEnd>, HistoryError> {
        self.next_page_within(out, max_rows, usize::MAX)
    }

    /// As [`next_page`](Self::next_page), and stops before the rows appended would exceed
    /// `max_bytes` as [`row_len`] counts them (one row is always taken, however long, so an
    /// answer always moves on).
    ///
    /// # Errors
    /// [`HistoryError::Sqlite`] if a statement fails.
    pub fn next_page_within(
        &mut self,
        out: &mut Vec<FileEvent>,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Option<QueryEnd>, HistoryError> {
        if let Some(end) = self.end {
            self.done = true;
            return Ok(Some(end));
        }
        let want = if self.limit == 0 {
            max_rows
        } else {
            max_rows.min((self.limit - self.sent) as usize)
        };
        let mut got = 0usize;
        let mut bytes = Budget {
            used: 0,
            max: max_bytes,
        };
        if !self.reverse && !self.lead_checked && want > 0 {
            self.lead_gap(out, &mut got)?;
        }
        for _ in 0..self.scans_per_call {
            if got >= want || bytes.full() {
                break;
            }
            if self.scan(out, want - got, &mut got, &mut bytes)? {
                if self.reverse && !self.lead_checked {
                    if got >= want {
                        // No room in this page: the next call adds it and ends.
                        break;
                    }
                    self.lead_gap(out, &mut got)?;
                }
                self.end = Some(self.final_end()?);
                break;
            }
        }
        if self.end.is_none() && self.limit != 0 && self.sent >= self.limit {
            self.end = Some(QueryEnd::Limit);
        }
        if let Some(end) = self.end {
            self.done = true;
            return Ok(Some(end));
        }
        Ok(None)
    }

    /// Leaves out the gap row stored below the range's start: for a caller that pages with
    /// a fresh cursor per page, every page after the first starts where the last one
    /// stopped, maybe inside a gap row it already sent.
    pub fn skip_lead_gap(&mut self) {
        self.lead_checked = true;
    }

    /// Whether the answer is over and its end was returned.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The seq window not yet scanned, inclusive: where an ascending answer carries on
    /// (the lower end) or a descending one (the upper end). Lets a caller page with fresh
    /// cursors, one per call, without rescanning rows a selective glob skipped.
    pub fn remaining(&self) -> (u64, u64) {
        (self.lo, self.hi)
    }

    /// Runs one statement over at most [`SCAN_WINDOW`] seqs of the window; appends matches
    /// (at most `room`, and within `bytes`); moves the window past the last row examined.
    /// Returns whether the window is exhausted.
    fn scan(
        &mut self,
        out: &mut Vec<FileEvent>,
        room: usize,
        got: &mut usize,
        bytes: &mut Budget,
    ) -> Result<bool, HistoryError> {
        if self.lo > self.hi {
            return Ok(true);
        }
        let start = *got;
        // This statement's slice of the window.
        let (lo, hi) = if self.reverse {
            (
                self.lo.max(self.hi.saturating_sub(SCAN_WINDOW - 1)),
                self.hi,
            )
        } else {
            (
                self.lo,
                self.hi.min(self.lo.saturating_add(SCAN_WINDOW - 1)),
            )
        };
        // `+time_ns`: never the time index here, whose range could span the whole table;
        // the seq slice bounds the statement.
        let mut sql = format!(
            "SELECT {} FROM events WHERE seq >= ? AND seq <= ?",
            row::COLUMNS
        );
        let mut params: Vec<i64> = vec![lo as i64, hi as i64];
        if let Some((a, b)) = self.time {
            sql.push_str(" AND +time_ns >= ? AND +time_ns <= ?");
            params.extend([a as i64, b as i64]);
        }
        if self.kinds != 0 {
            sql.push_str(" AND ((1 << kind) & ?) != 0");
            params.push(i64::from(self.kinds));
        }
        sql.push_str(if self.reverse {
            " ORDER BY seq DESC LIMIT ?"
        } else {
            " ORDER BY seq LIMIT ?"
        });
        params.push(SCAN_ROWS as i64);
        let path = &self.reader.path;
        let mut n = 0usize;
        {
            let mut st = self.reader.conn.prepare_cached(&sql).ctx(path)?;
            let mut rows = st
                .query(rusqlite::params_from_iter(params.iter()))
                .ctx(path)?;
            while let Some(r) = rows.next().ctx(path)? {
                n += 1;
                let seq = r.get::<_, i64>(0).ctx(path)? as u64;
                if self.glob_matches(r).ctx(path)? {
                    let ev = row::from_row(r).ctx(path)?;
                    let len = row_len(&ev);
                    if *got > 0 && !bytes.fits(len) {
                        // No room for it in this page: the next page starts at this row.
                        bytes.close();
                        return Ok(false);
                    }
                    bytes.used += len;
                    out.push(ev);
                    *got += 1;
                    self.sent += 1;
                }
                // Keyset: the next statement starts past this row.
                self.step_past(seq);
                if *got - start >= room || bytes.full() {
                    // Stopped early: the window resumes after this row.
                    return Ok(self.lo > self.hi);
                }
            }
        }
        if n < SCAN_ROWS {
            // The slice ran out of rows: the window resumes after the slice, at the next
            // row there is (one index seek over an empty stretch of seqs).
            if self.reverse {
                if lo <= self.lo {
                    self.exhaust();
                } else {
                    self.hi = lo - 1;
                    self.seek_below()?;
                }
            } else if hi >= self.hi {
                self.exhaust();
            } else {
                self.lo = hi + 1;
                self.seek_above()?;
            }
        }
        Ok(self.lo > self.hi)
    }

    fn exhaust(&mut self) {
        self.lo = 1;
        self.hi = 0;
    }

    fn step_past(&mut self, seq: u64) {
        if self.reverse {
            if seq == 0 {
                self.exhaust();
            } else {
                self.hi = seq - 1;
            }
        } else if seq >= MAX_STORED {
            self.lo = MAX_STORED;
            self.hi = 0;
        } else {
            self.lo = seq + 1;
        }
    }

    /// Moves `lo` up to the first row at or above it (or exhausts the window).
    fn seek_above(&mut self) -> Result<(), HistoryError> {
        let path = &self.reader.path;
        let next: Option<i64> = self
            .reader
            .conn
            .prepare_cached("SELECT seq FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1")
            .ctx(path)?
            .query_row([self.lo as i64], |r| r.get(0))
            .optional()
            .ctx(path)?;
        match next {
            Some(s) if (s as u64) <= self.hi => self.lo = s as u64,
            _ => self.exhaust(),
        }
        Ok(())
    }

    /// Moves `hi` down to the last row at or below it (or exhausts the window).
    fn seek_below(&mut self) -> Result<(), HistoryError> {
        let path = &self.reader.path;
        let prev: Option<i64> = self
            .reader
            .conn
            .prepare_cached("SELECT seq FROM events WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1")
            .ctx(path)?
            .query_row([self.hi as i64], |r| r.get(0))
            .optional()
            .ctx(path)?;
        match prev {
            Some(s) if (s as u64) >= self.lo => self.hi = s as u64,
            _ => self.exhaust(),
        }
        Ok(())
    }

    /// Appends the gap row stored below the range's start that reaches into it, if there is
    /// one and it passes the time and kind filters.
    fn lead_gap(&mut self, out: &mut Vec<FileEvent>, got: &mut usize) -> Result<(), HistoryError> {
        self.lead_checked = true;
        let path = &self.reader.path;
        let sql = format!(
            "SELECT {} FROM events WHERE seq < ?1 ORDER BY seq DESC LIMIT 1",
            row::COLUMNS
        );
        let before = self
            .reader
            .conn
            .prepare_cached(&sql)
            .ctx(path)?
            .query_row([self.start_lo as i64], row::from_row)
            .optional()
            .ctx(path)?;
        let Some(ev) = before else {
            return Ok(());
        };
        // Retention's range is answered by `Truncated`, as for any query older than history.
        let reaches = ev.kind == EventKind::Gap
            && ev
                .gap
                .is_some_and(|g| g.to >= self.start_lo && g.reason != GapReason::Retention);
        let in_time = self.time.is_none_or(|(a, b)| (a..=b).contains(&ev.time_ns));
        let kind_shown = self.kinds == 0 || self.kinds & (1 << EventKind::Gap as u32) != 0;
        if reaches && in_time && kind_shown {
            out.push(ev);
            *got += 1;
            self.sent += 1;
        }
        Ok(())
    }

    fn glob_matches(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<bool> {
        let Some(g) = &self.glob else {
            return Ok(true);
        };
        if r.get::<_, i64>(2)? == i64::from(EventKind::Gap as u8) {
            return Ok(true);
        }
        let m = |v: ValueRef<'_>| match v {
            ValueRef::Blob(b) | ValueRef::Text(b) => g.is_match(Path::new(OsStr::from_bytes(b))),
            _ => false,
        };
        Ok(m(r.get_ref(3)?) || m(r.get_ref(4)?))
    }

    /// Complete, or Truncated if history no longer reaches back to the query's start.
    fn final_end(&self) -> Result<QueryEnd, HistoryError> {
        let path = &self.reader.path;
        let conn = &self.reader.conn;
        let Some(oldest) = retention::boundary(conn, path)? else {
            return Ok(QueryEnd::Complete);
        };
        let truncated = if self.seq_given {
            self.start_lo < oldest
        } else if let Some((t0, _)) = self.time {
            let first: Option<i64> = conn
                .query_row(
                    "SELECT time_ns FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1",
                    [oldest as i64],
                    |r| r.get(0),
                )
                .optional()
                .ctx(path)?;
            first.is_none_or(|t| t0 < t as u64)
        } else {
            true
        };
        Ok(if truncated {
            QueryEnd::Truncated { oldest }
        } else {
            QueryEnd::Complete
        })
    }
}
