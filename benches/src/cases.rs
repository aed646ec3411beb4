//! The cases, how they are scheduled, and the runner.
//!
//! A [`Case`] is a transport and a kind of measurement. To add a row: add a [`Transport`]
//! (and its module, like [`crate::ring_case`] or [`crate::stream_case`]), teach
//! [`Case::run`] to run it, and list it in [`Plan::new`]. The report pairs every case with
//! the same measurement on the [baseline](Transport::BASELINE) and prints the ratio.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use firehose_transport::ring::Policy;

use crate::measure::{Run, Sample};
use crate::os::Cores;
use crate::probe::cache_line_rtt;
use crate::ring_case;
use crate::stream_case::{self, StreamKind};

/// What carries the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// The Firehose ring, lossless readers.
    RingLossless,
    /// The baseline: a Unix stream socket.
    Uds,
    /// Two pipes, one each way.
    Pipe,
    /// The Firehose ring, a lagging reader.
    RingLagging,
}

impl Transport {
    /// What every other transport is compared with.
    pub const BASELINE: Transport = Transport::Uds;

    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Transport::RingLossless => "firehose-lossless",
            Transport::RingLagging => "firehose-lagging",
            Transport::Uds => "uds",
            Transport::Pipe => "pipe",
        }
    }
}

/// How a waiting reader waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReaderMode {
    /// Busy-polls (ring: a large spin budget; socket: non-blocking reads in a loop).
    Spin,
    /// Sleeps (ring: spin budget zero, the wake pipe; socket: blocking reads).
    Sleep,
}

impl ReaderMode {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ReaderMode::Spin => "spin",
            ReaderMode::Sleep => "sleep",
        }
    }
}

/// What a case measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Records and bytes per second from one producer to one reader.
    Throughput {
        /// Archived bytes per record.
        payload: usize,
    },
    /// Ping-pong round trips, one record in flight.
    RoundTrip {
        /// Archived bytes per record.
        payload: usize,
        /// How both sides wait.
        mode: ReaderMode,
    },
    /// Voluntary context switches of a producer and a sleeping reader with nothing to do.
    Idle,
}

/// One row of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Case {
    /// What it measures (first: rows group by kind).
    pub kind: Kind,
    /// What carries the records.
    pub transport: Transport,
}

impl Case {
    /// A short label for progress lines.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Throughput { payload } => {
                format!("throughput {} {payload} B", self.transport.name())
            }
            Kind::RoundTrip { payload, mode } => format!(
                "round trip {} {payload} B {}",
                self.transport.name(),
                mode.name()
            ),
            Kind::Idle => format!("idle {}", self.transport.name()),
        }
    }

    /// The same measurement on the baseline transport, if this is not it.
    pub fn baseline(&self) -> Option<Case> {
        (self.transport != Transport::BASELINE && self.kind != Kind::Idle).then_some(Case {
            kind: self.kind,
            transport: Transport::BASELINE,
        })
    }

    /// Runs the case once.
    ///
    /// # Errors
    /// The case's failure (including a checksum mismatch), or a combination that has no
    /// implementation.
    pub fn run(&self, ctx: &Ctx) -> Result<Sample> {
        use Transport::*;
        Ok(match (self.transport, self.kind) {
            (RingLossless, Kind::Throughput { payload }) => {
                Sample::Throughput(ring_case::throughput(Policy::Lossless, payload, ctx)?)
            }
            (RingLagging, Kind::Throughput { payload }) => {
                Sample::Throughput(ring_case::throughput(Policy::Lagging, payload, ctx)?)
            }
            (Uds, Kind::Throughput { payload }) => {
                Sample::Throughput(stream_case::throughput(StreamKind::Uds, payload, ctx)?)
            }
            (Pipe, Kind::Throughput { payload }) => {
                Sample::Throughput(stream_case::throughput(StreamKind::Pipe, payload, ctx)?)
            }
            (RingLossless, Kind::RoundTrip { payload, mode }) => {
                Sample::RoundTrip(ring_case::round_trip(payload, mode, ctx)?)
            }
            (Uds, Kind::RoundTrip { payload, mode }) => Sample::RoundTrip(stream_case::round_trip(
                StreamKind::Uds,
                payload,
                mode,
                ctx,
            )?),
            (Pipe, Kind::RoundTrip { payload, mode }) => Sample::RoundTrip(
                stream_case::round_trip(StreamKind::Pipe, payload, mode, ctx)?,
            ),
            (RingLossless, Kind::Idle) => Sample::Idle(ring_case::idle(ctx)?),
            (t, k) => bail!("no {k:?} case for {}", t.name()),
        })
    }
}

/// Durations and cores for one session.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Where each side runs.
    pub cores: Cores,
    /// How long a throughput run publishes.
    pub throughput_time: Duration,
    /// How long a round-trip run records.
    pub round_trip_time: Duration,
    /// Round trips before recording starts.
    pub warmup: Duration,
    /// How long the idle case idles.
    pub idle_time: Duration,
}

impl Ctx {
    /// The `--quick` settings (well under a minute in all).
    pub fn quick(cores: Cores) -> Self {
        Ctx {
            cores,
            throughput_time: Duration::from_millis(250),
            round_trip_time: Duration::from_millis(300),
            warmup: Duration::from_millis(20),
            idle_time: Duration::from_secs(2),
        }
    }

    /// The full settings (a few minutes in all).
    pub fn full(cores: Cores) -> Self {
        Ctx {
            cores,
            throughput_time: Duration::from_secs(1),
            round_trip_time: Duration::from_secs(1),
            warmup: Duration::from_millis(50),
            idle_time: Duration::from_secs(10),
        }
    }
}

/// The probe before each run: 15 samples of 200 round trips (a few ms at most).
const PROBE_SAMPLES: usize = 15;
const PROBE_PER_SAMPLE: u64 = 200;

/// The payload sizes of the throughput cases.
pub const THROUGHPUT_PAYLOADS: [usize; 4] = [64, 256, 1024, 4096];
/// The payload size of the round trips.
pub const ROUND_TRIP_PAYLOAD: usize = 64;

/// The order cases run in: every case once per round, rounds repeated, ring and socket
/// alternating within a round so that drift in the machine hits both alike.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The cases of one round, in order.
    pub round: Vec<Case>,
    /// How many rounds.
    pub runs: usize,
    /// Cases run once, after the rounds (the long idle case).
    pub once: Vec<Case>,
}

impl Plan {
    /// Every case, `runs` rounds.
    pub fn new(runs: usize) -> Self {
        let mut round = Vec::new();
        for payload in THROUGHPUT_PAYLOADS {
            for transport in [
                Transport::RingLossless,
                Transport::Uds,
                Transport::RingLagging,
                Transport::Pipe,
            ] {
                round.push(Case {
                    kind: Kind::Throughput { payload },
                    transport,
                });
            }
        }
        for mode in [ReaderMode::Spin, ReaderMode::Sleep] {
            for transport in [Transport::RingLossless, Transport::Uds, Transport::Pipe] {
                round.push(Case {
                    kind: Kind::RoundTrip {
                        payload: ROUND_TRIP_PAYLOAD,
                        mode,
                    },
                    transport,
                });
            }
        }
        let once = vec![Case {
            kind: Kind::Idle,
            transport: Transport::RingLossless,
        }];
        Plan { round, runs, once }
    }

    /// Keeps only the cases whose label contains `filter`.
    pub fn filter(mut self, filter: &str) -> Self {
        self.round.retain(|c| c.label().contains(filter));
        self.once.retain(|c| c.label().contains(filter));
        self
    }

    /// Runs every case, each run after a short cache-line probe, printing a progress line
    /// to stderr after each run; fails on the first case that fails.
    ///
    /// # Errors
    /// The first failure, named by its case and run.
    pub fn run(&self, ctx: &Ctx) -> Result<BTreeMap<Case, Vec<Run>>> {
        let steps: Vec<(Case, usize)> = (0..self.runs)
            .flat_map(|r| self.round.iter().map(move |c| (*c, r)))
            .chain(self.once.iter().map(|c| (*c, 0)))
            .collect();
        let mut out: BTreeMap<Case, Vec<Run>> = BTreeMap::new();
        let began = Instant::now();
        for (k, (case, run)) in steps.iter().enumerate() {
            let runs = if self.once.contains(case) {
                1
            } else {
                self.runs
            };
            let probe_ns = cache_line_rtt(ctx.cores, PROBE_SAMPLES, PROBE_PER_SAMPLE)?.median;
            eprint!(
                "[{:>2}/{}] {:>5.1}s  {} (run {}/{runs}, probe {probe_ns:.0} ns) ... ",
                k + 1,
                steps.len(),
                began.elapsed().as_secs_f64(),
                case.label(),
                run + 1
            );
            let sample = case
                .run(ctx)
                .map_err(|e| e.context(format!("{} (run {})", case.label(), run + 1)))?;
            eprintln!("{}", crate::report::brief(&sample));
            out.entry(*case).or_default().push(Run { sample, probe_ns });
        }
        Ok(out)
    }
}
