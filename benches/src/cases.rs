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
use crate::peer::Peer;
use crate::probe::cache_line_rtt;
use crate::stream_case::{self, StreamKind};
use crate::{connect_case, local_case, paced, ring_case};

/// `10k/s`, `100k/s`, or `saturation` for a rate of 0.
pub fn rate_name(rate: u32) -> String {
    match rate {
        0 => "saturation".into(),
        r if r % 1000 == 0 => format!("{}k/s", r / 1000),
        r => format!("{r}/s"),
    }
}

/// The payload of the paced cases (CPU, fan-out) and of connects: about a file event
/// (a 62-byte path archives to 128 B).
pub const PACED_PAYLOAD: usize = 128;

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
    /// A crossbeam bounded channel between two threads of one process.
    Crossbeam,
    /// A bare ring in shared memory: memcpy in, sum of u64 words out, nothing else.
    HandRing,
    /// Single-thread memcpy (the physical ceiling; reported only).
    Memcpy,
    /// iceoryx2 publish-subscribe, one sample per record.
    Iceoryx2,
    /// iceoryx2 publish-subscribe, one slice sample per batch of frames.
    Iceoryx2Batched,
    /// The same paced loop handing records off in-process (CPU cases only).
    InProcess,
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
            Transport::Crossbeam => "crossbeam",
            Transport::HandRing => "hand-ring",
            Transport::Memcpy => "memcpy",
            Transport::Iceoryx2 => "iceoryx2",
            Transport::Iceoryx2Batched => "iceoryx2-batched",
            Transport::InProcess => "in-process",
        }
    }

    /// An iceoryx2 row (needs the peer crate).
    pub fn is_iceoryx2(self) -> bool {
        matches!(self, Transport::Iceoryx2 | Transport::Iceoryx2Batched)
    }

    /// A Firehose ring row.
    pub fn is_ring(self) -> bool {
        matches!(self, Transport::RingLossless | Transport::RingLagging)
    }
}

/// How a waiting reader waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ReaderMode {
    /// Busy-polls (ring: a large spin budget; socket: non-blocking reads in a loop).
    Spin,
    /// Sleeps (ring: spin budget zero, the wake pipe; socket: blocking reads).
    Sleep,
    /// Looks once per 16 ms frame (a GUI): ring `try_recv`, socket non-blocking reads.
    Frame,
}

impl ReaderMode {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ReaderMode::Spin => "spin",
            ReaderMode::Sleep => "sleep",
            ReaderMode::Frame => "frame",
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
    /// Single-thread memcpy bandwidth over blocks of this size.
    Memcpy {
        /// Bytes per copy.
        block: usize,
    },
    /// One-way latency from publish to read (the publish time travels in the payload).
    Latency {
        /// Archived bytes per record.
        payload: usize,
        /// Offered records/s; 0: saturation (as fast as the producer can, batched).
        rate: u32,
        /// How the reader waits.
        mode: ReaderMode,
    },
    /// CPU time of both processes per delivered record at a paced rate (1 ms ticks).
    Cpu {
        /// Offered records/s.
        rate: u32,
        /// How the reader waits.
        mode: ReaderMode,
    },
    /// The producer's CPU per record at a paced rate with several lossless readers.
    FanOut {
        /// Offered records/s.
        rate: u32,
        /// Reader processes.
        readers: u32,
        /// How the readers wait.
        mode: ReaderMode,
    },
    /// Connect, handshake and first record over the control socket.
    Connect,
    /// An idle reader learning of the service's death (SIGKILL).
    Death,
}

impl Kind {
    /// The reader mode of the kind, if it has one.
    pub fn mode(&self) -> Option<ReaderMode> {
        match *self {
            Kind::RoundTrip { mode, .. }
            | Kind::Latency { mode, .. }
            | Kind::Cpu { mode, .. }
            | Kind::FanOut { mode, .. } => Some(mode),
            _ => None,
        }
    }

    /// The payload of the kind, if it has one.
    pub fn payload(&self) -> Option<usize> {
        match *self {
            Kind::Throughput { payload }
            | Kind::RoundTrip { payload, .. }
            | Kind::Latency { payload, .. } => Some(payload),
            Kind::Memcpy { block } => Some(block),
            Kind::Cpu { .. } | Kind::FanOut { .. } => Some(PACED_PAYLOAD),
            Kind::Connect | Kind::Death => Some(PACED_PAYLOAD),
            Kind::Idle => None,
        }
    }
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
            Kind::Memcpy { block } => format!("memcpy {block} B blocks"),
            Kind::Latency {
                payload,
                rate,
                mode,
            } => format!(
                "latency {} {payload} B {} {}",
                self.transport.name(),
                rate_name(rate),
                mode.name()
            ),
            Kind::Cpu { rate, mode } => format!(
                "cpu {} {} {}",
                self.transport.name(),
                rate_name(rate),
                mode.name()
            ),
            Kind::FanOut {
                rate,
                readers,
                mode,
            } => format!(
                "fan-out {} {} {readers} readers {}",
                self.transport.name(),
                rate_name(rate),
                mode.name()
            ),
            Kind::Connect => format!("connect {}", self.transport.name()),
            Kind::Death => format!("death {}", self.transport.name()),
        }
    }

    /// The same measurement on `transport`.
    pub fn on(&self, transport: Transport) -> Case {
        Case {
            kind: self.kind,
            transport,
        }
    }

    /// The same measurement on the baseline transport, if this is not it.
    pub fn baseline(&self) -> Option<Case> {
        (self.transport != Transport::BASELINE
            && !matches!(
                self.kind,
                Kind::Idle | Kind::Memcpy { .. } | Kind::Connect | Kind::Death
            )
            && self.transport != Transport::InProcess)
            .then_some(self.on(Transport::BASELINE))
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
            (Crossbeam, Kind::Throughput { payload }) => {
                Sample::Throughput(local_case::crossbeam(payload, ctx)?)
            }
            (HandRing, Kind::Throughput { payload }) => {
                Sample::Throughput(local_case::hand_ring(payload, ctx)?)
            }
            (Memcpy, Kind::Memcpy { block }) => Sample::Throughput(local_case::memcpy(block, ctx)?),
            (Iceoryx2 | Iceoryx2Batched, Kind::Throughput { payload }) => Sample::Throughput(
                ctx.peer()?
                    .throughput(payload, self.transport == Iceoryx2Batched, ctx)?,
            ),
            (Iceoryx2, Kind::RoundTrip { payload, mode }) => {
                Sample::RoundTrip(ctx.peer()?.round_trip(payload, mode, ctx)?)
            }
            (
                Iceoryx2,
                Kind::Latency {
                    payload,
                    rate,
                    mode,
                },
            ) => Sample::Latency(ctx.peer()?.latency(payload, rate, mode, ctx)?),
            (
                RingLossless | Uds,
                Kind::Latency {
                    payload,
                    rate,
                    mode,
                },
            ) => Sample::Latency(paced::latency(self.transport, payload, rate, mode, ctx)?),
            (RingLossless | Uds | InProcess, Kind::Cpu { rate, mode }) => {
                Sample::Cpu(paced::cpu(self.transport, rate, 1, mode, ctx)?)
            }
            (
                RingLossless | Uds,
                Kind::FanOut {
                    rate,
                    readers,
                    mode,
                },
            ) => Sample::Cpu(paced::cpu(self.transport, rate, readers, mode, ctx)?),
            (RingLagging, Kind::Connect) => Sample::RoundTrip(connect_case::connect(ctx)?),
            (RingLagging, Kind::Death) => Sample::RoundTrip(connect_case::death(ctx)?),
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
    /// How long a latency run publishes.
    pub latency_time: Duration,
    /// How long a paced CPU or fan-out run publishes.
    pub cpu_time: Duration,
    /// How long one memcpy run copies.
    pub memcpy_time: Duration,
    /// Timed connects per connect run.
    pub connects: u64,
    /// Service deaths per death run.
    pub deaths: u64,
    /// The iceoryx2 peer, or why it is not there.
    pub peer: Result<Peer, String>,
}

impl Ctx {
    /// How long one run of any case may take before the watchdog kills it: ten times the
    /// longest run time, and at least a minute.
    pub fn case_limit(&self) -> Duration {
        let longest = [
            self.throughput_time,
            self.round_trip_time + self.warmup,
            self.idle_time,
            self.latency_time,
            self.cpu_time,
            self.memcpy_time,
        ]
        .into_iter()
        .max()
        .unwrap_or_default();
        (longest * 10).max(Duration::from_secs(60))
    }

    /// The iceoryx2 peer.
    ///
    /// # Errors
    /// Why it could not be built.
    pub fn peer(&self) -> Result<&Peer> {
        self.peer
            .as_ref()
            .map_err(|e| anyhow::anyhow!("iceoryx2 peer not built: {e}"))
    }
}

impl Ctx {
    /// The `--quick` settings (well under a minute in all).
    pub fn quick(cores: Cores, peer: Result<Peer, String>) -> Self {
        Ctx {
            cores,
            throughput_time: Duration::from_millis(150),
            round_trip_time: Duration::from_millis(150),
            warmup: Duration::from_millis(20),
            idle_time: Duration::from_secs(2),
            latency_time: Duration::from_millis(200),
            cpu_time: Duration::from_millis(250),
            memcpy_time: Duration::from_millis(50),
            connects: 30,
            deaths: 3,
            peer,
        }
    }

    /// The full settings (a few minutes in all).
    pub fn full(cores: Cores, peer: Result<Peer, String>) -> Self {
        Ctx {
            cores,
            throughput_time: Duration::from_millis(700),
            round_trip_time: Duration::from_millis(700),
            warmup: Duration::from_millis(50),
            idle_time: Duration::from_secs(10),
            latency_time: Duration::from_millis(800),
            cpu_time: Duration::from_millis(1500),
            memcpy_time: Duration::from_millis(200),
            connects: 200,
            deaths: 10,
            peer,
        }
    }
}

/// The probe before each run: 15 samples of 200 round trips (a few ms at most).
const PROBE_SAMPLES: usize = 15;
const PROBE_PER_SAMPLE: u64 = 200;

/// The payload sizes of the throughput cases.
pub const THROUGHPUT_PAYLOADS: [usize; 4] = [64, 256, 1024, 4096];
/// The payload size of the round trips and the latency cases.
pub const ROUND_TRIP_PAYLOAD: usize = 64;
/// The block sizes of the memcpy ceiling.
pub const MEMCPY_BLOCKS: [usize; 2] = [4096, 1 << 20];
/// The offered rates of the latency cases (0: saturation).
pub const LATENCY_RATES: [u32; 3] = [10_000, 100_000, 0];
/// The offered rates of the CPU cases.
pub const CPU_RATES: [u32; 2] = [10_000, 100_000];
/// The offered rate of the fan-out cases.
pub const FAN_OUT_RATE: u32 = 100_000;

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
    /// Every case, `runs` rounds; `quick` leaves out the fan-out with sleeping readers.
    pub fn new(runs: usize, quick: bool) -> Self {
        use Transport::*;
        let mut round = Vec::new();
        let mut add = |kind: Kind, transports: &[Transport]| {
            for &transport in transports {
                round.push(Case { kind, transport });
            }
        };
        for payload in THROUGHPUT_PAYLOADS {
            add(
                Kind::Throughput { payload },
                &[
                    RingLossless,
                    Uds,
                    Iceoryx2,
                    HandRing,
                    RingLagging,
                    Pipe,
                    Crossbeam,
                    Iceoryx2Batched,
                ],
            );
        }
        for block in MEMCPY_BLOCKS {
            add(Kind::Memcpy { block }, &[Memcpy]);
        }
        for mode in [ReaderMode::Spin, ReaderMode::Sleep] {
            let kind = Kind::RoundTrip {
                payload: ROUND_TRIP_PAYLOAD,
                mode,
            };
            add(kind, &[RingLossless, Uds, Pipe, Iceoryx2]);
        }
        for rate in LATENCY_RATES {
            for mode in [ReaderMode::Spin, ReaderMode::Sleep] {
                let kind = Kind::Latency {
                    payload: ROUND_TRIP_PAYLOAD,
                    rate,
                    mode,
                };
                add(kind, &[RingLossless, Uds, Iceoryx2]);
            }
        }
        for rate in CPU_RATES {
            for mode in [ReaderMode::Frame, ReaderMode::Sleep] {
                add(Kind::Cpu { rate, mode }, &[RingLossless, Uds, InProcess]);
            }
        }
        let fan_modes: &[ReaderMode] = if quick {
            &[ReaderMode::Frame]
        } else {
            &[ReaderMode::Frame, ReaderMode::Sleep]
        };
        for &mode in fan_modes {
            for readers in 1..=3 {
                let kind = Kind::FanOut {
                    rate: FAN_OUT_RATE,
                    readers,
                    mode,
                };
                add(kind, &[RingLossless, Uds]);
            }
        }
        add(Kind::Connect, &[RingLagging]);
        add(Kind::Death, &[RingLagging]);
        let once = vec![Case {
            kind: Kind::Idle,
            transport: Transport::RingLossless,
        }];
        Plan { round, runs, once }
    }

    /// Drops the cases of transports that cannot run here.
    pub fn without(mut self, drop: impl Fn(Transport) -> bool) -> Self {
        self.round.retain(|c| !drop(c.transport));
        self.once.retain(|c| !drop(c.transport));
        self
    }

    /// Keeps only the cases whose label contains `filter`.
    pub fn filter(mut self, filter: &str) -> Self {
        self.round.retain(|c| c.label().contains(filter));
        self.once.retain(|c| c.label().contains(filter));
        self
    }

    /// Runs every case, each run after a short cache-line probe, printing a progress line
    /// to stderr after each run. Each run has a watchdog: a run that overruns
    /// [`Ctx::case_limit`] has its child processes killed and is reported `hung`; a run
    /// that fails is reported `failed`; either way the suite goes on, so whoever runs it
    /// always gets its table.
    ///
    /// # Errors
    /// Only if the cache-line probe cannot run.
    pub fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        let steps: Vec<(Case, usize)> = (0..self.runs)
            .flat_map(|r| self.round.iter().map(move |c| (*c, r)))
            .chain(self.once.iter().map(|c| (*c, 0)))
            .collect();
        let mut out: BTreeMap<Case, Vec<Run>> = BTreeMap::new();
        let mut failures = Vec::new();
        let limit = ctx.case_limit();
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
            let dog = crate::watchdog::Watchdog::arm(limit);
            let result = case.run(ctx);
            let hung = dog.disarm();
            match result {
                Ok(sample) if !hung => {
                    eprintln!("{}", crate::report::brief(&sample));
                    out.entry(*case).or_default().push(Run { sample, probe_ns });
                }
                other => {
                    let (status, why) = if hung {
                        (
                            "hung",
                            format!(
                                "overran {:.0} s: its processes were killed",
                                limit.as_secs_f64()
                            ),
                        )
                    } else {
                        ("failed", format!("{:#}", other.expect_err("not ok")))
                    };
                    eprintln!("{status}: {why}");
                    failures.push(Failure {
                        case: case.label(),
                        run: run + 1,
                        status,
                        why,
                    });
                }
            }
        }
        Ok((out, failures))
    }
}

/// What a plan's runs gave: the samples by case, and the runs that did not give one.
pub type Outcome = (BTreeMap<Case, Vec<Run>>, Vec<Failure>);

/// A run that did not give a sample.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The case's label.
    pub case: String,
    /// Which run (from 1).
    pub run: usize,
    /// `hung` (killed by the watchdog) or `failed`.
    pub status: &'static str,
    /// What happened.
    pub why: String,
}
