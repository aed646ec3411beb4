//! What one run of a case measured.

use crate::stats::Percentiles;

/// One throughput run: what the reader received, over the time from the producer's first
/// record to the reader seeing the end of the stream (one clock for both processes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Nominal payload bytes per record (the archived size).
    pub payload: usize,
    /// Records the reader received and checked.
    pub records: u64,
    /// Seconds from the producer's first record to the reader's end of stream.
    pub secs: f64,
    /// Records the producer sent.
    pub produced: u64,
    /// Seconds the producer spent sending them.
    pub producer_secs: f64,
    /// Records the reader was told it missed (lagging readers).
    pub lost: u64,
    /// CPU time of the producer while it sent, in nanoseconds.
    pub producer_cpu_ns: u64,
    /// CPU time of the reader from ready to end of stream, in nanoseconds.
    pub reader_cpu_ns: u64,
    /// Voluntary context switches (sleeps) of the producer while it sent.
    pub producer_sleeps: u64,
    /// Voluntary context switches (sleeps) of the reader from ready to end of stream.
    pub reader_sleeps: u64,
}

impl Throughput {
    /// Records delivered per second.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.secs
    }

    /// Payload gigabytes (1e9) delivered per second.
    pub fn gb_per_s(&self) -> f64 {
        self.records_per_s() * self.payload as f64 / 1e9
    }

    /// Producer CPU nanoseconds per record sent.
    pub fn producer_cpu_per_record(&self) -> f64 {
        self.producer_cpu_ns as f64 / self.produced.max(1) as f64
    }

    /// Reader CPU nanoseconds per record received.
    pub fn reader_cpu_per_record(&self) -> f64 {
        self.reader_cpu_ns as f64 / self.records.max(1) as f64
    }

    /// Sleeps per second of the producer and of the reader.
    pub fn sleeps_per_s(&self) -> (f64, f64) {
        (
            self.producer_sleeps as f64 / self.producer_secs,
            self.reader_sleeps as f64 / self.secs,
        )
    }

    /// Records the producer sent per second.
    pub fn produced_per_s(&self) -> f64 {
        self.produced as f64 / self.producer_secs
    }
}

/// One one-way latency run: publish-to-read percentiles and what was delivered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Nanoseconds from the publish stamp to the reader's check of the record.
    pub p: Percentiles,
    /// Records the reader received and checked.
    pub records: u64,
    /// Seconds the producer published.
    pub secs: f64,
}

impl Latency {
    /// Records delivered per second.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

/// One paced run: CPU time (getrusage of each process, user + system) over a paced stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cpu {
    /// Reader processes (0: the in-process loop).
    pub readers: u32,
    /// Records published (and delivered to every reader).
    pub records: u64,
    /// Seconds the producer published.
    pub secs: f64,
    /// The producer process's CPU time, ns.
    pub producer_cpu_ns: u64,
    /// The reader processes' CPU time, summed, ns.
    pub reader_cpu_ns: u64,
}

impl Cpu {
    /// CPU ns of both sides per delivered record (each reader's copy counts once).
    pub fn total_per_record(&self) -> f64 {
        (self.producer_cpu_ns + self.reader_cpu_ns) as f64
            / (self.records.max(1) * u64::from(self.readers.max(1))) as f64
    }

    /// The producer's CPU ns per published record.
    pub fn producer_per_record(&self) -> f64 {
        self.producer_cpu_ns as f64 / self.records.max(1) as f64
    }

    /// Records published per second.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

/// One idle run: voluntary context switches while nothing is published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Idle {
    /// Seconds idle.
    pub secs: f64,
    /// The producer process over the idle window (`getrusage`), its own one sleep included.
    pub producer_nvcsw: u64,
    /// The reader process over its whole wait (`getrusage` in the reader), its one
    /// sleep included.
    pub reader_nvcsw: u64,
    /// The reader process over the idle window, read from `/proc` while it sleeps.
    pub reader_window_nvcsw: u64,
}

/// One run of a case: what it measured, and the cache-line round trip just before it
/// (the machine's cross-core latency drifts; this says which state a run saw).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    /// What the run measured.
    pub sample: Sample,
    /// Median cache-line round trip between the two cores just before the run, ns.
    pub probe_ns: f64,
}

/// What one run of a case measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// Records and bytes per second.
    Throughput(Throughput),
    /// Round-trip percentiles.
    RoundTrip(Percentiles),
    /// Wakeups while idle.
    Idle(Idle),
    /// One-way latency.
    Latency(Latency),
    /// CPU per record at a paced rate.
    Cpu(Cpu),
}
