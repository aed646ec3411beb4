//! The Markdown tables, the target checks and the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cases::{Case, Kind, ReaderMode, Transport};
use crate::measure::{Idle, Run, Sample, Throughput};
use crate::os::Cores;
use crate::stats::{Percentiles, Spread};

/// Everything one session measured.
#[derive(Debug, Clone)]
pub struct Results {
    /// The cores the two sides ran on.
    pub cores: Cores,
    /// The cache-line round trip before the cases, ns.
    pub probe_before: Spread,
    /// The cache-line round trip after the cases, ns.
    pub probe_after: Spread,
    /// Each case's runs.
    pub cases: BTreeMap<Case, Vec<Run>>,
}

/// One line for a progress report.
pub fn brief(s: &Sample) -> String {
    match s {
        Sample::Throughput(t) => {
            let mut line = format!(
                "{} rec/s, {:.2} GB/s, CPU/record {:.1} ns producer, {:.1} ns reader, \
                 sleeps {} producer, {} reader",
                si(t.records_per_s()),
                t.gb_per_s(),
                t.producer_cpu_per_record(),
                t.reader_cpu_per_record(),
                t.producer_sleeps,
                t.reader_sleeps
            );
            if t.lost > 0 {
                let _ = write!(
                    line,
                    " (produced {} rec/s, {:.1}% missed)",
                    si(t.produced_per_s()),
                    lost_pct(t)
                );
            }
            line
        }
        Sample::RoundTrip(p) => format!(
            "p50 {} p99 {} p99.9 {} max {} ({} round trips)",
            ns(p.p50 as f64),
            ns(p.p99 as f64),
            ns(p.p999 as f64),
            ns(p.max as f64),
            p.samples
        ),
        Sample::Idle(i) => format!(
            "producer {} / reader {} voluntary switches, reader {} in the window",
            i.producer_nvcsw, i.reader_nvcsw, i.reader_window_nvcsw
        ),
    }
}

fn lost_pct(t: &Throughput) -> f64 {
    100.0 * t.lost as f64 / t.produced.max(1) as f64
}

/// `12.3 M`, `870 k`: three significant digits.
pub fn si(v: f64) -> String {
    let (x, unit) = if v >= 1e9 {
        (v / 1e9, " G")
    } else if v >= 1e6 {
        (v / 1e6, " M")
    } else if v >= 1e3 {
        (v / 1e3, " k")
    } else {
        (v, " ")
    };
    let digits = if x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$}{unit}")
}

/// Nanoseconds as `850 ns` or `12.3 µs`.
pub fn ns(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} µs", v / 1e3)
    } else {
        format!("{v:.0} ns")
    }
}

fn throughputs(samples: &[Sample]) -> Vec<Throughput> {
    samples
        .iter()
        .filter_map(|s| match s {
            Sample::Throughput(t) => Some(*t),
            _ => None,
        })
        .collect()
}

fn percentiles(samples: &[Sample]) -> Vec<Percentiles> {
    samples
        .iter()
        .filter_map(|s| match s {
            Sample::RoundTrip(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn idles(samples: &[Sample]) -> Vec<Idle> {
    samples
        .iter()
        .filter_map(|s| match s {
            Sample::Idle(i) => Some(*i),
            _ => None,
        })
        .collect()
}

fn spread(v: impl IntoIterator<Item = f64>) -> Spread {
    Spread::of(&v.into_iter().collect::<Vec<_>>()).unwrap_or(Spread {
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
        runs: 0,
    })
}

/// The summary of one case that tables, targets and JSON read.
#[derive(Debug, Clone, Copy)]
enum Summary {
    Throughput {
        records: Spread,
        gb: Spread,
        produced: Spread,
        lost_pct: Spread,
        producer_cpu: Spread,
        reader_cpu: Spread,
        producer_sleeps: Spread,
        reader_sleeps: Spread,
    },
    RoundTrip {
        p50: Spread,
        p99: Spread,
        p999: Spread,
        max: Spread,
        samples: Spread,
    },
    Idle(Idle),
}

fn summarize(runs: &[Run]) -> Option<Summary> {
    let samples: Vec<Sample> = runs.iter().map(|r| r.sample).collect();
    let samples = &samples[..];
    match samples.first()? {
        Sample::Throughput(_) => {
            let t = throughputs(samples);
            Some(Summary::Throughput {
                records: spread(t.iter().map(Throughput::records_per_s)),
                gb: spread(t.iter().map(Throughput::gb_per_s)),
                produced: spread(t.iter().map(Throughput::produced_per_s)),
                lost_pct: spread(t.iter().map(lost_pct)),
                producer_cpu: spread(t.iter().map(Throughput::producer_cpu_per_record)),
                reader_cpu: spread(t.iter().map(Throughput::reader_cpu_per_record)),
                producer_sleeps: spread(t.iter().map(|t| t.sleeps_per_s().0)),
                reader_sleeps: spread(t.iter().map(|t| t.sleeps_per_s().1)),
            })
        }
        Sample::RoundTrip(_) => {
            let p = percentiles(samples);
            Some(Summary::RoundTrip {
                p50: spread(p.iter().map(|p| p.p50 as f64)),
                p99: spread(p.iter().map(|p| p.p99 as f64)),
                p999: spread(p.iter().map(|p| p.p999 as f64)),
                max: spread(p.iter().map(|p| p.max as f64)),
                samples: spread(p.iter().map(|p| p.samples as f64)),
            })
        }
        Sample::Idle(_) => idles(samples)
            .into_iter()
            .max_by_key(|i| i.reader_window_nvcsw + i.producer_nvcsw + i.reader_nvcsw)
            .map(Summary::Idle),
    }
}

/// The headline number of a run (records/s, or p50 ns), for ratios.
fn headline(s: &Sample) -> Option<f64> {
    match s {
        Sample::Throughput(t) => Some(t.records_per_s()),
        Sample::RoundTrip(p) => Some(p.p50 as f64),
        Sample::Idle(_) => None,
    }
}

fn cell(s: Spread, f: impl Fn(f64) -> String) -> String {
    if s.runs > 1 {
        format!("{} ({}–{})", f(s.median), f(s.min), f(s.max))
    } else {
        f(s.median)
    }
}

impl Results {
    /// The cache-line round trips measured just before each run of `case`.
    fn probe(&self, case: &Case) -> Spread {
        spread(
            self.cases
                .get(case)
                .into_iter()
                .flatten()
                .map(|r| r.probe_ns),
        )
    }

    fn summaries(&self) -> BTreeMap<Case, Summary> {
        self.cases
            .iter()
            .filter_map(|(c, s)| Some((*c, summarize(s)?)))
            .collect()
    }

    /// The ratios of a case's headline to its baseline's run by run (run k of both in the
    /// same round, minutes apart at most), oriented so that > 1 means the case is better
    /// (more records/s, or a shorter round trip).
    fn paired(&self, case: &Case) -> Option<Spread> {
        let base = self.cases.get(&case.baseline()?)?;
        let this = self.cases.get(case)?;
        let ratios: Vec<f64> = this
            .iter()
            .zip(base)
            .filter_map(|(a, b)| {
                let (a, b) = (headline(&a.sample)?, headline(&b.sample)?);
                Some(match case.kind {
                    Kind::RoundTrip { .. } => b / a,
                    _ => a / b,
                })
            })
            .collect();
        Spread::of(&ratios)
    }

    fn ratio_cell(&self, case: &Case) -> String {
        self.paired(case)
            .map_or("—".into(), |s| cell(s, |r| format!("{r:.2}x")))
    }

    /// The report: probe, tables, targets. Medians of the runs, (min–max) beside them.
    pub fn markdown(&self) -> String {
        let sums = self.summaries();
        let mut m = String::new();
        let _ = writeln!(
            m,
            "Cache-line round trip (cores {}↔{}): {} before the cases, {} after \
             (median of {} samples, min–max {}–{} / {}–{}).\n",
            self.cores.producer,
            self.cores.reader,
            ns(self.probe_before.median),
            ns(self.probe_after.median),
            self.probe_before.runs,
            ns(self.probe_before.min),
            ns(self.probe_before.max),
            ns(self.probe_after.min),
            ns(self.probe_after.max),
        );

        let tput: Vec<_> = sums
            .iter()
            .filter(|(c, _)| matches!(c.kind, Kind::Throughput { .. }))
            .collect();
        if !tput.is_empty() {
            m.push_str(
                "### Throughput (one reader; validated and checksummed; median (min–max) of the \
                 runs; vs uds: ratio to the uds run of the same round)\n\n\
                 | payload | transport | records/s | GB/s | vs uds | CPU ns/record (producer / reader) | sleeps/s (producer / reader) | probe | note |\n\
                 | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
            );
            for (c, s) in &tput {
                let Kind::Throughput { payload } = c.kind else {
                    continue;
                };
                let Summary::Throughput {
                    records,
                    gb,
                    produced,
                    lost_pct,
                    producer_cpu,
                    reader_cpu,
                    producer_sleeps,
                    reader_sleeps,
                } = s
                else {
                    continue;
                };
                let ratio = self.ratio_cell(c);
                let note = if c.transport == Transport::RingLagging {
                    format!(
                        "producer {} rec/s; {:.1}% missed (reported as lagged)",
                        si(produced.median),
                        lost_pct.median
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    m,
                    "| {payload} B | {} | {} | {} | {ratio} | {:.1} / {:.1} | {} / {} | {} | {note} |",
                    c.transport.name(),
                    cell(*records, si),
                    cell(*gb, |v| format!("{v:.2}")),
                    producer_cpu.median,
                    reader_cpu.median,
                    si(producer_sleeps.median).trim_end(),
                    si(reader_sleeps.median).trim_end(),
                    cell(self.probe(c), ns),
                );
            }
            m.push('\n');
        }

        let rtt: Vec<_> = sums
            .iter()
            .filter(|(c, _)| matches!(c.kind, Kind::RoundTrip { .. }))
            .collect();
        if !rtt.is_empty() {
            m.push_str(
                "### Round trips (two processes, one record in flight; median of runs; uds p50 / this p50: \
                 ratio to the uds run of the same round)\n\n\
                 | payload | transport | readers | p50 (min–max) | p99 | p99.9 | max | uds p50 / this p50 | round trips | probe |\n\
                 | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            );
            for (c, s) in &rtt {
                let Kind::RoundTrip { payload, mode } = c.kind else {
                    continue;
                };
                let Summary::RoundTrip {
                    p50,
                    p99,
                    p999,
                    max,
                    samples,
                } = s
                else {
                    continue;
                };
                let ratio = self.ratio_cell(c);
                let ring = matches!(
                    c.transport,
                    Transport::RingLossless | Transport::RingLagging
                );
                let readers = match (ring, mode) {
                    (false, ReaderMode::Spin) => "spin (non-blocking reads)",
                    (false, ReaderMode::Sleep) => "sleep (blocking reads)",
                    (true, ReaderMode::Spin) => "spin (large budget)",
                    (true, ReaderMode::Sleep) => "sleep (spin 0, wake pipe)",
                };
                let _ = writeln!(
                    m,
                    "| {payload} B | {} | {readers} | {} | {} | {} | {} | {ratio} | {} | {} |",
                    c.transport.name(),
                    cell(*p50, ns),
                    ns(p99.median),
                    ns(p999.median),
                    ns(max.median),
                    si(samples.median),
                    cell(self.probe(c), ns),
                );
            }
            m.push('\n');
        }

        for (c, s) in &sums {
            let Summary::Idle(i) = s else { continue };
            let _ = writeln!(
                m,
                "### Idle ({} for {:.1} s, reader asleep on its wake pipe)\n\n\
                 | process | voluntary context switches | of which its own one sleep | wakeups |\n\
                 | --- | ---: | ---: | ---: |\n\
                 | producer (getrusage, over the idle window) | {} | 1 | {} |\n\
                 | reader (getrusage, over its whole wait) | {} | 1 | {} |\n\
                 | reader (/proc, over the idle window) | {} | 0 | {} |\n",
                c.transport.name(),
                i.secs,
                i.producer_nvcsw,
                i.producer_nvcsw.saturating_sub(1),
                i.reader_nvcsw,
                i.reader_nvcsw.saturating_sub(1),
                i.reader_window_nvcsw,
                i.reader_window_nvcsw,
            );
        }

        let targets = self.targets(&sums);
        if !targets.is_empty() {
            m.push_str("### Targets\n\n| target | measured | met |\n| --- | --- | --- |\n");
            for (what, measured, met) in targets {
                let _ = writeln!(
                    m,
                    "| {what} | {measured} | {} |",
                    if met { "yes" } else { "**no**" }
                );
            }
        }
        m
    }

    fn targets(&self, sums: &BTreeMap<Case, Summary>) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        let ring = |kind| Case {
            kind,
            transport: Transport::RingLossless,
        };
        let show = |s: Spread| cell(s, |r| format!("{r:.2}x"));
        // Same payload on both sides: the records/s ratio is the GB/s ratio.
        for (payload, what) in [
            (64, "lossless 64 B records/s ≥ 1.5x uds (goal 2x)"),
            (1024, "lossless 1 KiB GB/s ≥ 1.5x uds"),
        ] {
            if let Some(r) = self.paired(&ring(Kind::Throughput { payload })) {
                out.push((what.into(), show(r), r.median >= 1.5));
            }
        }
        for (mode, what, limit) in [
            (
                ReaderMode::Spin,
                "spinning round trip p50 ≤ 1/4 of spinning uds",
                4.0,
            ),
            (
                ReaderMode::Sleep,
                "spin-0 ring round trip p50 ≤ blocking uds",
                1.0,
            ),
        ] {
            let c = ring(Kind::RoundTrip {
                payload: crate::cases::ROUND_TRIP_PAYLOAD,
                mode,
            });
            if let Some(r) = self.paired(&c) {
                out.push((
                    what.into(),
                    format!("uds/ring = {}", show(r)),
                    r.median >= limit,
                ));
            }
        }
        if let Some(Summary::Idle(i)) = sums.get(&ring(Kind::Idle)) {
            let wakeups = i.producer_nvcsw.saturating_sub(1)
                + i.reader_nvcsw.saturating_sub(1)
                + i.reader_window_nvcsw;
            out.push((
                "idle: zero wakeups".into(),
                format!("{wakeups} wakeups in {:.0} s", i.secs),
                wakeups == 0,
            ));
        }
        out
    }

    /// The JSON document `--json` writes.
    ///
    /// # Errors
    /// If serialization fails.
    pub fn json(&self) -> serde_json::Result<String> {
        let sums = self.summaries();
        let doc = JsonDoc {
            cache_line_rtt_ns: self.probe_before.median,
            cache_line_rtt_ns_after: self.probe_after.median,
            cache_line_rtt_before: self.probe_before,
            cache_line_rtt_after: self.probe_after,
            cores: [self.cores.producer, self.cores.reader],
            cases: sums
                .iter()
                .map(|(c, s)| {
                    let mut j = CaseJson::new(c, s, self.paired(c), self.probe(c));
                    let runs = self.cases.get(c).map_or(&[][..], Vec::as_slice);
                    j.values = runs.iter().filter_map(|r| headline(&r.sample)).collect();
                    j.probes = runs.iter().map(|r| r.probe_ns).collect();
                    j
                })
                .collect(),
        };
        serde_json::to_string_pretty(&doc)
    }
}

/// The JSON file.
#[derive(Debug, Serialize)]
struct JsonDoc {
    /// Median cache-line round trip before the cases, ns.
    cache_line_rtt_ns: f64,
    /// The same after the cases.
    cache_line_rtt_ns_after: f64,
    cache_line_rtt_before: Spread,
    cache_line_rtt_after: Spread,
    /// Producer core, reader core.
    cores: [usize; 2],
    cases: Vec<CaseJson>,
}

/// One case in the JSON file. `min` and `max` are of the headline (`metric`) over the runs.
#[derive(Debug, Serialize)]
struct CaseJson {
    transport: &'static str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<usize>,
    readers: u32,
    reader_mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    records_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    produced_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    producer_cpu_ns_per_record: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reader_cpu_ns_per_record: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    producer_sleeps_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reader_sleeps_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p999_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    producer_nvcsw: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reader_nvcsw: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reader_window_nvcsw: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric: Option<&'static str>,
    runs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<f64>,
    /// Run-by-run ratios to the same case on the baseline (uds), > 1 = better.
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_baseline: Option<Spread>,
    /// The cache-line round trip just before each run, ns.
    probe_ns: Spread,
    /// The headline (`metric`) of each run, in run order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    values: Vec<f64>,
    /// The probe before each run, in run order.
    probes: Vec<f64>,
}

impl CaseJson {
    fn new(c: &Case, s: &Summary, ratio: Option<Spread>, probe_ns: Spread) -> Self {
        let mut j = CaseJson {
            transport: c.transport.name(),
            kind: "",
            payload: None,
            readers: 1,
            reader_mode: "sleep",
            records_per_s: None,
            gb_per_s: None,
            produced_per_s: None,
            lost_percent: None,
            producer_cpu_ns_per_record: None,
            reader_cpu_ns_per_record: None,
            producer_sleeps_per_s: None,
            reader_sleeps_per_s: None,
            p50_ns: None,
            p99_ns: None,
            p999_ns: None,
            max_ns: None,
            idle_s: None,
            producer_nvcsw: None,
            reader_nvcsw: None,
            reader_window_nvcsw: None,
            metric: None,
            runs: 1,
            min: None,
            max: None,
            vs_baseline: ratio,
            probe_ns,
            values: Vec::new(),
            probes: Vec::new(),
        };
        match (c.kind, s) {
            (
                Kind::Throughput { payload },
                Summary::Throughput {
                    records,
                    gb,
                    produced,
                    lost_pct,
                    producer_cpu,
                    reader_cpu,
                    producer_sleeps,
                    reader_sleeps,
                },
            ) => {
                j.producer_sleeps_per_s = Some(producer_sleeps.median);
                j.reader_sleeps_per_s = Some(reader_sleeps.median);
                j.producer_cpu_ns_per_record = Some(producer_cpu.median);
                j.reader_cpu_ns_per_record = Some(reader_cpu.median);
                j.kind = "throughput";
                j.payload = Some(payload);
                j.records_per_s = Some(records.median);
                j.gb_per_s = Some(gb.median);
                if c.transport == Transport::RingLagging {
                    j.produced_per_s = Some(produced.median);
                    j.lost_percent = Some(lost_pct.median);
                }
                j.metric = Some("records_per_s");
                j.runs = records.runs;
                j.min = Some(records.min);
                j.max = Some(records.max);
            }
            (
                Kind::RoundTrip { payload, mode },
                Summary::RoundTrip {
                    p50,
                    p99,
                    p999,
                    max,
                    ..
                },
            ) => {
                j.kind = "round_trip";
                j.payload = Some(payload);
                j.reader_mode = mode.name();
                j.p50_ns = Some(p50.median);
                j.p99_ns = Some(p99.median);
                j.p999_ns = Some(p999.median);
                j.max_ns = Some(max.median);
                j.metric = Some("p50_ns");
                j.runs = p50.runs;
                j.min = Some(p50.min);
                j.max = Some(p50.max);
            }
            (_, Summary::Idle(i)) => {
                j.kind = "idle";
                j.idle_s = Some(i.secs);
                j.producer_nvcsw = Some(i.producer_nvcsw);
                j.reader_nvcsw = Some(i.reader_nvcsw);
                j.reader_window_nvcsw = Some(i.reader_window_nvcsw);
            }
            _ => {}
        }
        j
    }
}
