//! Firehose benchmarks.
//!
//! - `benches/ring.rs`: criterion micro benches of the ring in one process;
//! - the `firehose-bench` binary: the ring across two processes against a Unix socket
//!   ([`cases::Plan`]), after a cache-line round-trip [`probe`].
//!
//! The binary is its own child: it runs the reader side of each case as a
//! [`child::Role`] in a copy of itself, pinned to the second core.

pub mod cases;
pub mod child;
pub mod connect_case;
pub mod frames;
pub mod local_case;
pub mod measure;
pub mod os;
pub mod paced;
pub mod payload;
pub mod peer;
pub mod plot;
pub mod probe;
pub mod report;
pub mod ring_case;
pub mod stats;
pub mod stream_case;
