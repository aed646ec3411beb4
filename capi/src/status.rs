//! `fh_status`: the service's status, asked on the reader's own connection.

use std::ffi::{c_char, CString};

use crate::error::{fh_error, guard, Failure};
use crate::reader::fh_reader;

/// The service's status. Made by `fh_reader_status`, freed by `fh_status_free`; its strings
/// belong to it.
#[repr(C)]
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct fh_status {
    /// The service's pid.
    pub pid: u32,
    /// How long it has run, in ms.
    pub uptime_ms: u64,
    /// The seq the next record will get.
    pub next_seq: u64,
    /// Records published per second (recent).
    pub rate_per_s: u64,
    /// Records per second over the last minute.
    pub rate_per_min: u64,
    /// Rows in history.
    pub history_rows: u64,
    /// History's size on disk in bytes.
    pub history_bytes: u64,
    /// The ring's size in bytes.
    pub ring_capacity: u64,
    /// Connected readers.
    pub readers: u64,
    /// Directories under the roots that are not watched (the inotify watch limit).
    pub unwatched: u64,
    /// `"ok"`, or every problem in words (NUL-terminated UTF-8).
    pub health: *const c_char,
    /// `"ok"`, or why storing is degraded (NUL-terminated UTF-8).
    pub storage: *const c_char,
}

/// What `fh_status` points at, kept with it: `fh_status` is its first field, so a pointer to
/// one is a pointer to the other.
#[repr(C)]
#[derive(Debug)]
struct Owned {
    status: fh_status,
    health: CString,
    storage: CString,
}

fn c_string(s: String) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Asks the service for its status on `reader`'s connection and stores it in `*out` (the
/// caller frees it with `fh_status_free`). Views from the last drain stay valid.
///
/// # Safety
/// `reader` is a live reader used by this thread alone; `out` points to writable memory for
/// one pointer.
#[no_mangle]
pub unsafe extern "C" fn fh_reader_status(
    reader: *mut fh_reader,
    out: *mut *mut fh_status,
) -> fh_error {
    guard(|| {
        if out.is_null() {
            return Err(Failure::invalid("fh_reader_status: out is NULL"));
        }
        // SAFETY: not NULL and writable for a pointer (the caller's promise).
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: NULL or a live reader, used by this thread alone (the caller's promise).
        let Some(r) = (unsafe { reader.as_mut() }) else {
            return Err(Failure::invalid("fh_reader_status: reader is NULL"));
        };
        let s = r.follower().status()?;
        let health = c_string(s.health);
        let storage = c_string(s.storage);
        let owned = Box::new(Owned {
            status: fh_status {
                pid: s.pid,
                uptime_ms: s.uptime_ms,
                next_seq: s.next_seq,
                rate_per_s: s.rate_per_s,
                rate_per_min: s.rate_per_min,
                history_rows: s.history_rows,
                history_bytes: s.history_bytes,
                ring_capacity: s.ring_capacity,
                readers: s.readers_total,
                unwatched: s.unwatched_count,
                health: std::ptr::null(),
                storage: std::ptr::null(),
            },
            health,
            storage,
        });
        let mut owned = owned;
        // Taken once the strings are in their final place (they are not moved again).
        owned.status.health = owned.health.as_ptr();
        owned.status.storage = owned.storage.as_ptr();
        // `Owned` is repr(C) with `status` first: the pointer to it is one to `status`.
        let p: *mut Owned = Box::into_raw(owned);
        // SAFETY: as above.
        unsafe { out.write(p.cast::<fh_status>()) };
        Ok(())
    })
}

/// Frees a status from `fh_reader_status`. NULL is ignored.
///
/// # Safety
/// `status` is NULL or from `fh_reader_status`, not freed before, not used after.
#[no_mangle]
pub unsafe extern "C" fn fh_status_free(status: *mut fh_status) {
    if status.is_null() {
        return;
    }
    // SAFETY: made in `fh_reader_status` as a `Box<Owned>` whose first field this points at
    // (repr(C)), not freed before (the caller's promise).
    drop(unsafe { Box::from_raw(status.cast::<Owned>()) });
}
