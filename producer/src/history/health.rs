//! The writer's health and counters, as `status` reports them.

use std::time::SystemTime;

/// Whether the history writer is storing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Storing works.
    Ok,
    /// Storing fails (disk full, read-only, I/O error). Records keep being accepted and
    /// are recorded as a `StoreFailed` gap once storing works again.
    Degraded {
        /// The storage error, naming the database file.
        reason: String,
        /// When this episode began.
        since: SystemTime,
    },
}

impl Health {
    /// Whether storing works.
    pub fn is_ok(&self) -> bool {
        matches!(self, Health::Ok)
    }
}

/// A snapshot of the writer's counters (totals since it started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Rows committed (records and gap rows).
    pub rows: u64,
    /// Rows committed during the last full second.
    pub rows_per_sec: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Records dropped because the queue was full (covered by `WriterOverflow` gaps).
    pub overflowed: u64,
    /// Gap rows the writer inserted itself (overflow and store-failed).
    pub gap_rows: u64,
    /// Records that could not be stored (covered by `StoreFailed` gaps).
    pub store_failed: u64,
    /// Records ignored because their seq was already stored (a bug upstream if non-zero).
    pub duplicates: u64,
    /// Rows removed by retention.
    pub retention_removed: u64,
}
