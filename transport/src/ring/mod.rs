//! The shared-memory ring: one producer, many reader processes, variable-size rkyv frames.
//!
//! - [`Producer`] stages records, commits them in bulk, and wakes sleeping readers;
//! - [`Reader`] reads them as a [`Policy::Lossless`] (zero-copy, holds the producer back) or
//!   [`Policy::Lagging`] (copies, never holds anyone back, is told what it missed) reader;
//! - [`Segment`] is one ring memory (a sealed memfd, or the heap in tests); the producer can
//!   [rotate](Producer::rotate) to a new one, which readers [follow](Reader::follow).
//!
//! The layout is documented in [`layout`].

pub(crate) mod bulk;
pub(crate) mod error;
#[cfg(all(any(test, feature = "fuzzing"), not(firehose_loom)))]
pub mod fuzzing;
pub mod layout;
pub(crate) mod memory;
pub(crate) mod producer;
pub(crate) mod reader;
pub(crate) mod wake;

pub use error::{AccessError, CorruptKind, PublishError, ReadError, SegmentError};
pub use memory::{Segment, MIN_CAPACITY};
pub use producer::{Encode, Producer, ReaderFds, ReaderId, ReaderProgress, RingConfig, Rotation};
pub use reader::{Batch, BatchIter, Event, Policy, Reader, RecordRef};

#[cfg(all(test, firehose_loom))]
mod loom_tests;
#[cfg(all(test, not(firehose_loom)))]
mod tests;
