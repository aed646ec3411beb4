//! The history database: every stored record in SQLite, written by one thread, read by
//! many read-only connections.
//!
//! Data flows like this:
//!
//! ```text
//!  filter engine --submit(FileEvent)--> HistoryWriter --(bounded queue)--> writer thread
//!                                                                  |  batched transactions
//!                                                                  v
//!                                                         history.db (WAL, 0600)
//!                                                                  ^
//!  socket query --> HistoryReader::query --> QueryCursor::next_page (keyset pages, one
//!                                            short read transaction each)
//! ```
//!
//! - [`HistoryWriter`] ([`writer`]) owns the one write connection. `submit` never blocks:
//!   when the queue is full the record is counted and a `WriterOverflow` gap record later
//!   covers it. Storage failures (disk full, read-only, I/O error) make the writer
//!   [`Health::Degraded`]; it keeps accepting, retries by itself, and records what it could
//!   not store as a `StoreFailed` gap once storing works again.
//! - [`Retention`] ([`retention`]) removes the oldest rows by count, age and bytes, and keeps
//!   one `Retention` gap row at the bottom that covers everything it ever removed.
//! - [`HistoryReader`] ([`query`]) answers [`HistoryQuery`](firehose_transport::control::wire::HistoryQuery)s
//!   page by page, oldest or newest first, so that no answer is held whole in memory.
//! - [`schema`] creates and migrates the database; `docs/history.md` documents it for
//!   the `sqlite3` shell.

mod error;
mod health;
pub mod query;
mod ranges;
pub mod retention;
mod row;
pub mod schema;
pub mod writer;

pub use error::HistoryError;
pub use health::{Health, WriterStats};
pub use query::{HistoryReader, Info, QueryCursor, SCANS_PER_CALL, SCAN_WINDOW};
pub use retention::Retention;
pub use writer::{Cached, HistoryWriter, WriterConfig};

/// Formats an instance id as the 32 lowercase hex digits the database stores.
pub fn instance_hex(id: u128) -> String {
    format!("{id:032x}")
}
