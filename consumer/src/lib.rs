//! The Firehose client library, the part a GUI links. It will hold the control-socket
//! client (connect, authenticate the service, receive the ring, backfill from history).
//! Today it offers the reading side of the ring and the file-event record: a process that
//! receives a ring's fds (see `firehose_transport::handoff`) reads it with
//! [`Reader`], batch by batch, zero-copy.

pub use firehose_transport::record::{ArchivedFileEvent, EventKind, FileEvent, GapReason};
pub use firehose_transport::ring::{Batch, Event, Policy, ReadError, Reader, RecordRef};
