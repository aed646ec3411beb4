//! `libfirehose`: the Firehose client library for C, and for every language with a C FFI
//! (Swift, C++, Python's ctypes, Go's cgo...). A thin border over `firehose-consumer`:
//! the same follower (lossless or lagging, backfill from history, reconnect), one
//! connection per reader (status and history pages are asked on it), and one fd for the
//! host's run loop.
//!
//! The header is `capi/include/firehose.h`, made from this source by cbindgen
//! (`tests/header.rs` fails if it is stale; `scripts/capi-header` writes it). The rules
//! every function keeps:
//! - **Errors** are `fh_error` codes; `fh_last_error()` has the message of the last failure
//!   on the calling thread. A panic never unwinds into C: it is `FH_ERR_INTERNAL`.
//! - **Ownership**: `fh_connect`, `fh_reader_status` and `fh_reader_query` make owning
//!   handles that the caller frees with the matching `_free` (NULL is ignored).
//!   `fh_event` views borrow: a drain's views live until the next drain of that reader, a
//!   page's until the page is freed.
//! - **Threads**: a reader is used by one thread at a time; different readers are
//!   independent.

mod error;
mod event;
mod history;
mod options;
mod reader;
mod status;

pub use error::{fh_error, fh_error_name, fh_last_error};
pub use event::{
    fh_blind_reason, fh_disconnect_reason, fh_event, fh_event_type, fh_gap_reason, fh_kind,
};
pub use history::{
    fh_query, fh_reader_query, fh_rows, fh_rows_free, fh_rows_get, fh_rows_len, fh_rows_more,
    fh_rows_next_seq, fh_rows_truncated, FH_QUERY_MAX_LIMIT,
};
pub use options::{fh_options, fh_options_init, fh_start};
pub use reader::{
    fh_connect, fh_reader, fh_reader_drain, fh_reader_fd, fh_reader_free, fh_reader_next_seq,
};
pub use status::{fh_reader_status, fh_status, fh_status_free};
