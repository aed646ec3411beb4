//! Firehose transport: a shared-memory broadcast ring for one producer and many reader
//! processes, with zero-copy rkyv frames.
//!
//! The data flow:
//!
//! ```text
//!  Producer::stage(&T) ──► private staging buffer (rkyv archive + frame header)
//!  Producer::commit()  ──► bulk copy into the ring, one Release store of the write cursor,
//!                          one wake byte per sleeping reader
//!  Reader::recv(max)   ──► Batch of Events: Record(RecordRef) | Gap | Lagged
//!  RecordRef::access() ──► &Archived<T>, validated by rkyv (zero-copy)
//! ```
//!
//! - [`ring`]: the ring itself ([`ring::Producer`], [`ring::Reader`], [`ring::Segment`]);
//! - [`record`]: the file-event record both the service and its clients use;
//! - [`path_glob`]: the one glob dialect of history queries and client filter boxes;
//! - [`publisher`]: the thread that owns the producer, fed through a bounded queue and
//!   commanded by the control loop (no lock is ever held across a wait for room);
//! - [`fdpass`] and [`handoff`]: fds over Unix sockets, and handing a reader its ring;
//! - the atomics go through a loom shim (`--cfg firehose_loom`), so the same cursor code is
//!   model-checked.
//!
//! Linux only: the OS-specific pieces (memfd seals, the wake pipe) sit in one private module.

#![cfg_attr(not(test), warn(missing_docs))]
// Under loom only heap segments exist: the memfd paths are compiled out.
#![cfg_attr(firehose_loom, allow(dead_code, irrefutable_let_patterns))]

#[cfg(not(firehose_loom))]
pub mod control;
#[cfg(not(firehose_loom))]
pub mod fdpass;
#[cfg(not(firehose_loom))]
pub mod handoff;
#[cfg(not(firehose_loom))]
pub mod path_glob;
#[cfg(not(firehose_loom))]
pub mod publisher;
pub mod record;
pub mod ring;
pub(crate) mod sync;
#[cfg(not(firehose_loom))]
pub(crate) mod sys;

pub use ring::{Batch, Event, Policy, Producer, Reader, RecordRef, RingConfig};
