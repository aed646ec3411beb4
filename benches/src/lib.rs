//! Firehose benchmarks.
//!
//! - `benches/ring.rs`: criterion micro benches of the ring in one process;
//! - the `firehose-bench` binary: the ring across processes side by side with a Unix
//!   socket, a pipe ([`stream_case`]), a crossbeam channel, a bare hand ring and memcpy
//!   ([`local_case`]) and iceoryx2 ([`peer`], a crate outside the workspace), for
//!   throughput, round trips, one-way latency and CPU per record at paced rates
//!   ([`paced`]), fan-out, connecting ([`connect_case`]) and idle wakeups
//!   ([`cases::Plan`]), after a cache-line round-trip [`probe`]; Markdown, JSON
//!   ([`report`]) and SVG plots ([`plot`]). Results: `BENCHMARKS.md`.
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
pub mod watchdog;
