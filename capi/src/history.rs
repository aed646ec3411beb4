//! `fh_rows`: one page of a history query, asked on the reader's own connection.

use std::ffi::{c_char, CStr};

use firehose_consumer::{HistoryQuery, OwnedEvent, QueryEnd};

use crate::error::{fh_error, guard, Failure};
use crate::event::{fh_event, view};
use crate::reader::fh_reader;

/// Most rows one page may ask for: a page is held in memory whole.
pub const FH_QUERY_MAX_LIMIT: u64 = 1_000_000;

/// One history query: every field 0 (or NULL) means "no condition". Page through a range
/// by asking again from `fh_rows_next_seq` while `fh_rows_more` says so.
#[repr(C)]
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct fh_query {
    /// First seq (inclusive).
    pub from_seq: u64,
    /// Last seq (inclusive); 0: no end.
    pub to_seq: u64,
    /// Earliest time, ns since the epoch (inclusive).
    pub since_ns: u64,
    /// Latest time, ns since the epoch (inclusive); 0: no end.
    pub until_ns: u64,
    /// A glob matched against the whole path, or a rename's new path, as `firehose query
    /// --path` takes it (here `*` also crosses `/`); NULL: every path. NUL-terminated
    /// UTF-8.
    pub glob: *const c_char,
    /// Bit `1 << kind` for each wanted `fh_kind`; 0: every kind.
    pub kinds: u32,
    /// Most rows on this page, 1 ..= `FH_QUERY_MAX_LIMIT`; 0: 4096.
    pub limit: u64,
}

/// One page of rows. Made by `fh_reader_query`, freed by `fh_rows_free`.
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct fh_rows {
    rows: Vec<OwnedEvent>,
    end: QueryEnd,
    next_seq: u64,
}

/// Runs `query` on `reader`'s connection and stores the page in `*out` (the caller frees
/// it with `fh_rows_free`). Waits for the service's answer (history answers a range that
/// is not committed yet once it is). Views from the last drain stay valid.
///
/// Fails with `FH_ERR_INVALID_QUERY` (a bad glob, a limit over `FH_QUERY_MAX_LIMIT`),
/// `FH_ERR_NO_HISTORY`, `FH_ERR_TIMEOUT`, `FH_ERR_DISCONNECTED`.
///
/// # Safety
/// `reader` is a live reader used by this thread alone; `query` points to an `fh_query`
/// whose `glob` is NULL or NUL-terminated; `out` is writable for one pointer.
#[no_mangle]
pub unsafe extern "C" fn fh_reader_query(
    reader: *mut fh_reader,
    query: *const fh_query,
    out: *mut *mut fh_rows,
) -> fh_error {
    guard(|| {
        if out.is_null() {
            return Err(Failure::invalid("fh_reader_query: out is NULL"));
        }
        // SAFETY: not NULL and writable for a pointer (the caller's promise).
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: NULL or a live reader used by this thread alone (the caller's promise).
        let Some(r) = (unsafe { reader.as_mut() }) else {
            return Err(Failure::invalid("fh_reader_query: reader is NULL"));
        };
        // SAFETY: NULL or an `fh_query` (the caller's promise).
        let Some(q) = (unsafe { query.as_ref() }) else {
            return Err(Failure::invalid("fh_reader_query: query is NULL"));
        };
        let glob = if q.glob.is_null() {
            None
        } else {
            // SAFETY: not NULL, NUL-terminated (the caller's promise).
            let g = unsafe { CStr::from_ptr(q.glob) };
            Some(
                g.to_str()
                    .map_err(|_| {
                        Failure::new(fh_error::FH_ERR_INVALID_QUERY, "fh_query.glob is not UTF-8")
                    })?
                    .to_string(),
            )
        };
        let limit = match q.limit {
            0 => 4096,
            l if l > FH_QUERY_MAX_LIMIT => {
                return Err(Failure::new(
                    fh_error::FH_ERR_INVALID_QUERY,
                    format!("fh_query.limit is {l}: at most {FH_QUERY_MAX_LIMIT} rows a page"),
                ))
            }
            l => l,
        };
        let to = if q.to_seq == 0 { u64::MAX } else { q.to_seq };
        let until = if q.until_ns == 0 {
            u64::MAX
        } else {
            q.until_ns
        };
        let time = (q.since_ns != 0 || q.until_ns != 0).then_some((q.since_ns, until));
        let id = r.next_query_id();
        let (rows, end) = r.follower().client().query(HistoryQuery {
            id,
            seq: Some((q.from_seq, to)),
            time_ns: time,
            glob: glob.clone(),
            kinds: q.kinds,
            limit,
        })?;
        match end {
            QueryEnd::Unavailable => {
                return Err(Failure::new(
                    fh_error::FH_ERR_NO_HISTORY,
                    "the service keeps no history (started without a database)",
                ))
            }
            QueryEnd::Invalid => {
                return Err(Failure::new(
                    fh_error::FH_ERR_INVALID_QUERY,
                    format!("the service could not run the query (glob {glob:?})"),
                ))
            }
            _ => {}
        }
        let next_seq = rows.last().map_or(q.from_seq, |row| {
            row.gap
                .map_or(row.seq, |g| g.to.max(row.seq))
                .saturating_add(1)
        });
        let page = fh_rows {
            rows: rows.into_iter().map(OwnedEvent::from_row).collect(),
            end,
            next_seq,
        };
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(page))) };
        Ok(())
    })
}

/// How many rows the page holds (0 if `rows` is NULL).
///
/// # Safety
/// `rows` is NULL or a live page from `fh_reader_query`.
#[no_mangle]
pub unsafe extern "C" fn fh_rows_len(rows: *const fh_rows) -> usize {
    // SAFETY: NULL or a live page (the caller's promise).
    unsafe { rows.as_ref() }.map_or(0, |r| r.rows.len())
}

/// Stores row `index` of the page in `*event` as a view valid until `fh_rows_free`. A gap
/// row is an `FH_EVENT_GAP`. `FH_ERR_INVALID_ARGUMENT` if `index` is out of range.
///
/// # Safety
/// `rows` is NULL or a live page; `event` is NULL or writable for one `fh_event`.
#[no_mangle]
pub unsafe extern "C" fn fh_rows_get(
    rows: *const fh_rows,
    index: usize,
    event: *mut fh_event,
) -> fh_error {
    guard(|| {
        // SAFETY: NULL or a live page (the caller's promise).
        let Some(r) = (unsafe { rows.as_ref() }) else {
            return Err(Failure::invalid("fh_rows_get: rows is NULL"));
        };
        if event.is_null() {
            return Err(Failure::invalid("fh_rows_get: event is NULL"));
        }
        let Some(row) = r.rows.get(index) else {
            return Err(Failure::invalid(format!(
                "fh_rows_get: index {index} out of range (the page has {} rows)",
                r.rows.len()
            )));
        };
        // The view points into `row`, which the page owns until `fh_rows_free`.
        let v = view(&row.as_event());
        // SAFETY: not NULL and writable for one `fh_event` (the caller's promise).
        unsafe { event.write(v) };
        Ok(())
    })
}

/// True if the page stopped at its limit: ask again with `from_seq = fh_rows_next_seq`.
///
/// # Safety
/// `rows` is NULL or a live page.
#[no_mangle]
pub unsafe extern "C" fn fh_rows_more(rows: *const fh_rows) -> bool {
    // SAFETY: NULL or a live page (the caller's promise).
    unsafe { rows.as_ref() }.is_some_and(|r| r.end == QueryEnd::Limit)
}

/// The seq after the page's last row (the query's `from_seq` if it has none).
///
/// # Safety
/// `rows` is NULL or a live page.
#[no_mangle]
pub unsafe extern "C" fn fh_rows_next_seq(rows: *const fh_rows) -> u64 {
    // SAFETY: NULL or a live page (the caller's promise).
    unsafe { rows.as_ref() }.map_or(0, |r| r.next_seq)
}

/// True if history no longer reaches back to the query's start; then `*oldest` (if not
/// NULL) is the oldest seq it holds.
///
/// # Safety
/// `rows` is NULL or a live page; `oldest` is NULL or writable for one `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn fh_rows_truncated(rows: *const fh_rows, oldest: *mut u64) -> bool {
    // SAFETY: NULL or a live page (the caller's promise).
    match unsafe { rows.as_ref() }.map(|r| r.end) {
        Some(QueryEnd::Truncated { oldest: o }) => {
            if !oldest.is_null() {
                // SAFETY: not NULL and writable (the caller's promise).
                unsafe { oldest.write(o) };
            }
            true
        }
        _ => false,
    }
}

/// Frees a page and the views into it. NULL is ignored.
///
/// # Safety
/// `rows` is NULL or a page from `fh_reader_query`, not freed before, not used after.
#[no_mangle]
pub unsafe extern "C" fn fh_rows_free(rows: *mut fh_rows) {
    if rows.is_null() {
        return;
    }
    // SAFETY: made by `Box::into_raw` in `fh_reader_query`, not freed before (the caller's
    // promise).
    drop(unsafe { Box::from_raw(rows) });
}
