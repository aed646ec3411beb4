//! The Markdown tables, the target checks and the JSON file.
//!
//! Every case's runs are reduced to named metrics (`records_per_s`, `p50_ns`,
//! `cpu_ns_per_record`, ...), each the median of the runs with its min and max. Ratios
//! pair run k of a case with run k of its baseline (the same round, minutes apart at most)
//! and give the median of those ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::cases::{rate_name, Case, Kind, ReaderMode, Transport, PACED_PAYLOAD};
use crate::measure::{Idle, Run, Sample};
use crate::os::Cores;
use crate::stats::Spread;

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
    /// Rows that could not run here, and why (e.g. the iceoryx2 peer not built).
    pub missing: Vec<(String, String)>,
    /// Runs that hung (killed by the watchdog) or failed.
    pub failures: Vec<crate::cases::Failure>,
    /// Seconds the whole session took.
    pub secs: f64,
}

/// One line for a progress report.
pub fn brief(s: &Sample) -> String {
    metrics(s)
        .iter()
        .filter(|(k, _)| {
            matches!(
                *k,
                "records_per_s"
                    | "gb_per_s"
                    | "p50_ns"
                    | "p99_ns"
                    | "cpu_ns_per_record"
                    | "producer_cpu_ns_per_record"
                    | "lost_percent"
            )
        })
        .map(|(k, v)| format!("{k} {}", num(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        si(v).trim_end().to_string()
    } else {
        format!("{v:.2}")
    }
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
    if v.is_nan() {
        "—".into()
    } else if v >= 1e6 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} µs", v / 1e3)
    } else {
        format!("{v:.0} ns")
    }
}

/// The named metrics of one run.
pub fn metrics(s: &Sample) -> Vec<(&'static str, f64)> {
    match s {
        Sample::Throughput(t) => {
            let mut m = vec![
                ("records_per_s", t.records_per_s()),
                ("gb_per_s", t.gb_per_s()),
                ("producer_cpu_ns_per_record", t.producer_cpu_per_record()),
                ("reader_cpu_ns_per_record", t.reader_cpu_per_record()),
                ("producer_sleeps_per_s", t.sleeps_per_s().0),
                ("reader_sleeps_per_s", t.sleeps_per_s().1),
            ];
            if t.lost > 0 || t.produced != t.records {
                m.push(("produced_per_s", t.produced_per_s()));
                m.push((
                    "lost_percent",
                    100.0 * t.lost as f64 / t.produced.max(1) as f64,
                ));
            }
            m
        }
        Sample::RoundTrip(p) => vec![
            ("p50_ns", p.p50 as f64),
            ("p99_ns", p.p99 as f64),
            ("p999_ns", p.p999 as f64),
            ("max_ns", p.max as f64),
            ("samples", p.samples as f64),
        ],
        Sample::Latency(l) => vec![
            ("p50_ns", l.p.p50 as f64),
            ("p99_ns", l.p.p99 as f64),
            ("p999_ns", l.p.p999 as f64),
            ("max_ns", l.p.max as f64),
            ("samples", l.p.samples as f64),
            ("records_per_s", l.records_per_s()),
        ],
        Sample::Cpu(c) => vec![
            ("cpu_ns_per_record", c.total_per_record()),
            ("producer_cpu_ns_per_record", c.producer_per_record()),
            (
                "reader_cpu_ns_per_record",
                c.reader_cpu_ns as f64 / (c.records.max(1) * u64::from(c.readers.max(1))) as f64,
            ),
            ("records_per_s", c.records_per_s()),
        ],
        Sample::Idle(i) => vec![
            ("producer_nvcsw", i.producer_nvcsw as f64),
            ("reader_nvcsw", i.reader_nvcsw as f64),
            ("reader_window_nvcsw", i.reader_window_nvcsw as f64),
        ],
    }
}

/// The metric a case is judged by, and whether more is better.
pub fn headline(kind: &Kind) -> (&'static str, bool) {
    match kind {
        Kind::Throughput { .. } | Kind::Memcpy { .. } => ("records_per_s", true),
        Kind::RoundTrip { .. } | Kind::Latency { .. } | Kind::Connect | Kind::Death => {
            ("p50_ns", false)
        }
        Kind::Cpu { .. } => ("cpu_ns_per_record", false),
        Kind::FanOut { .. } => ("producer_cpu_ns_per_record", false),
        Kind::Idle => ("reader_window_nvcsw", false),
    }
}

fn metric_of(run: &Run, name: &str) -> Option<f64> {
    metrics(&run.sample)
        .into_iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn cell(s: Spread, f: impl Fn(f64) -> String) -> String {
    if s.runs > 1 {
        format!("{} ({}–{})", f(s.median), f(s.min), f(s.max))
    } else {
        f(s.median)
    }
}

fn x(s: Option<Spread>) -> String {
    s.map_or("—".into(), |s| cell(s, |r| format!("{r:.2}x")))
}

impl Results {
    fn runs(&self, c: &Case) -> &[Run] {
        self.cases.get(c).map_or(&[][..], Vec::as_slice)
    }

    /// The spread of one metric over a case's runs.
    pub fn metric(&self, c: &Case, name: &str) -> Option<Spread> {
        let v: Vec<f64> = self
            .runs(c)
            .iter()
            .filter_map(|r| metric_of(r, name))
            .collect();
        Spread::of(&v)
    }

    fn probe(&self, c: &Case) -> Option<Spread> {
        let v: Vec<f64> = self.runs(c).iter().map(|r| r.probe_ns).collect();
        Spread::of(&v)
    }

    /// Run-by-run `f(a_k, b_k)` over the runs both cases have.
    fn per_run(&self, a: &Case, b: &Case, f: impl Fn(&Run, &Run) -> Option<f64>) -> Option<Spread> {
        let v: Vec<f64> = self
            .runs(a)
            .iter()
            .zip(self.runs(b))
            .filter_map(|(x, y)| f(x, y))
            .collect();
        Spread::of(&v)
    }

    /// The ratio of `c` to the same measurement on `base`, > 1 meaning `c` is better.
    pub fn vs(&self, c: &Case, base: Transport) -> Option<Spread> {
        if c.transport == base {
            return None;
        }
        let (name, more_is_better) = headline(&c.kind);
        self.per_run(c, &c.on(base), |a, b| {
            let (a, b) = (metric_of(a, name)?, metric_of(b, name)?);
            Some(if more_is_better { a / b } else { b / a })
        })
    }

    /// A paced case's IPC share: its CPU per record minus the in-process loop's, run by run.
    pub fn ipc_share(&self, c: &Case) -> Option<Spread> {
        if c.transport == Transport::InProcess || !matches!(c.kind, Kind::Cpu { .. }) {
            return None;
        }
        self.per_run(c, &c.on(Transport::InProcess), |a, b| {
            Some(metric_of(a, "cpu_ns_per_record")? - metric_of(b, "cpu_ns_per_record")?)
        })
    }

    /// The ring's IPC share over the socket's, run by run (< 1: the ring costs less).
    fn ipc_ratio(&self, c: &Case) -> Option<Spread> {
        let inproc = c.on(Transport::InProcess);
        let uds = c.on(Transport::Uds);
        let a = self.runs(c);
        let b = self.runs(&uds);
        let i = self.runs(&inproc);
        let v: Vec<f64> = (0..a.len().min(b.len()).min(i.len()))
            .filter_map(|k| {
                let base = metric_of(&i[k], "cpu_ns_per_record")?;
                let ra = metric_of(&a[k], "cpu_ns_per_record")? - base;
                let rb = metric_of(&b[k], "cpu_ns_per_record")? - base;
                Some(ra / rb)
            })
            .collect();
        Spread::of(&v)
    }

    fn of_kind(&self, f: impl Fn(&Kind) -> bool) -> Vec<Case> {
        self.cases.keys().filter(|c| f(&c.kind)).copied().collect()
    }

    /// The report: probe, tables, targets. Medians of the runs, (min–max) beside them.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(
            m,
            "Cache-line round trip (cores {}↔{}): {} before the cases, {} after \
             (median of {} samples, min–max {}–{} / {}–{}). {:.0} s in all.\n",
            self.cores.producer,
            self.cores.reader,
            ns(self.probe_before.median),
            ns(self.probe_after.median),
            self.probe_before.runs,
            ns(self.probe_before.min),
            ns(self.probe_before.max),
            ns(self.probe_after.min),
            ns(self.probe_after.max),
            self.secs,
        );
        for (what, why) in &self.missing {
            let _ = writeln!(m, "**{what}: not measured.** {why}\n");
        }
        for f in &self.failures {
            let _ = writeln!(
                m,
                "**{} (run {}): {}.** {}\n",
                f.case, f.run, f.status, f.why
            );
        }
        self.throughput_table(&mut m);
        self.round_trip_table(&mut m);
        self.latency_table(&mut m);
        self.cpu_table(&mut m);
        self.fan_out_table(&mut m);
        self.connect_table(&mut m);
        self.idle_table(&mut m);
        let targets = self.targets();
        if !targets.is_empty() {
            m.push_str("### Targets\n\n| target | measured | met |\n| --- | --- | --- |\n");
            for (what, measured, met) in targets {
                let _ = writeln!(
                    m,
                    "| {what} | {measured} | {} |",
                    match met {
                        Some(true) => "yes",
                        Some(false) => "**no**",
                        None => "—",
                    }
                );
            }
        }
        m
    }

    fn throughput_table(&self, m: &mut String) {
        let cases = self.of_kind(|k| matches!(k, Kind::Throughput { .. }));
        if !cases.is_empty() {
            m.push_str(
                "### Throughput (one reader, validated and checksummed; vs X: this / X, run by run)\n\n\
                 | payload | transport | records/s | GB/s | vs uds | vs iceoryx2 | vs hand-ring | CPU ns/record (producer / reader) | probe | note |\n\
                 | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
            );
        }
        for c in &cases {
            let Kind::Throughput { payload } = c.kind else {
                continue;
            };
            let (Some(r), Some(gb)) = (self.metric(c, "records_per_s"), self.metric(c, "gb_per_s"))
            else {
                continue;
            };
            let med = |k| self.metric(c, k).map_or(f64::NAN, |s| s.median);
            let note = match self.metric(c, "lost_percent") {
                Some(l) if c.transport == Transport::RingLagging => format!(
                    "producer {} rec/s; {:.1}% missed (reported as lagged)",
                    si(med("produced_per_s")).trim_end(),
                    l.median
                ),
                _ if c.transport == Transport::HandRing => "no validation (word sum)".into(),
                _ => String::new(),
            };
            let _ = writeln!(
                m,
                "| {payload} B | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {} | {note} |",
                c.transport.name(),
                cell(r, si),
                cell(gb, |v| format!("{v:.2}")),
                x(self.vs(c, Transport::Uds)),
                x(self.vs(c, Transport::Iceoryx2)),
                x(self.vs(c, Transport::HandRing)),
                med("producer_cpu_ns_per_record"),
                med("reader_cpu_ns_per_record"),
                self.probe(c).map_or("—".into(), |p| cell(p, ns)),
            );
        }
        let mem = self.of_kind(|k| matches!(k, Kind::Memcpy { .. }));
        if !mem.is_empty() {
            m.push_str(
                "\nCeiling (reported only): single-thread memcpy\n\n| block | GB/s |\n| ---: | ---: |\n",
            );
        }
        for c in &mem {
            let Kind::Memcpy { block } = c.kind else {
                continue;
            };
            if let Some(gb) = self.metric(c, "gb_per_s") {
                let _ = writeln!(
                    m,
                    "| {} KiB | {} |",
                    block >> 10,
                    cell(gb, |v| format!("{v:.1}"))
                );
            }
        }
        m.push('\n');
    }

    fn percentile_cells(&self, c: &Case) -> Option<String> {
        let p50 = self.metric(c, "p50_ns")?;
        let med = |k| self.metric(c, k).map_or(f64::NAN, |s| s.median);
        Some(format!(
            "{} | {} | {} | {}",
            cell(p50, ns),
            ns(med("p99_ns")),
            ns(med("p999_ns")),
            ns(med("max_ns"))
        ))
    }

    fn round_trip_table(&self, m: &mut String) {
        let cases = self.of_kind(|k| matches!(k, Kind::RoundTrip { .. }));
        if cases.is_empty() {
            return;
        }
        m.push_str(
            "### Round trips (two processes, one record in flight; vs X: X's p50 / this p50)\n\n\
             | payload | transport | readers | p50 | p99 | p99.9 | max | vs uds | vs iceoryx2 | probe |\n\
             | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for c in &cases {
            let Kind::RoundTrip { payload, mode } = c.kind else {
                continue;
            };
            let Some(p) = self.percentile_cells(c) else {
                continue;
            };
            let _ = writeln!(
                m,
                "| {payload} B | {} | {} | {p} | {} | {} | {} |",
                c.transport.name(),
                wait_name(c.transport, mode),
                x(self.vs(c, Transport::Uds)),
                x(self.vs(c, Transport::Iceoryx2)),
                self.probe(c).map_or("—".into(), |p| cell(p, ns)),
            );
        }
        m.push('\n');
    }

    fn latency_table(&self, m: &mut String) {
        let cases = self.of_kind(|k| matches!(k, Kind::Latency { .. }));
        if cases.is_empty() {
            return;
        }
        m.push_str(
            "### One-way latency, publish to read (64 B; at a rate: one publish per record; at saturation: batched; vs X: X's p50 / this p50)\n\n\
             | rate | reader | transport | p50 | p99 | p99.9 | max | delivered/s | vs uds | vs iceoryx2 | probe |\n\
             | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        let mut cases = cases;
        cases.sort_by_key(|c| match c.kind {
            Kind::Latency { rate, mode, .. } => {
                (if rate == 0 { u32::MAX } else { rate }, mode, c.transport)
            }
            _ => (0, ReaderMode::Spin, c.transport),
        });
        for c in &cases {
            let Kind::Latency { rate, mode, .. } = c.kind else {
                continue;
            };
            let Some(p) = self.percentile_cells(c) else {
                continue;
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {p} | {} | {} | {} | {} |",
                rate_name(rate),
                mode.name(),
                c.transport.name(),
                self.metric(c, "records_per_s")
                    .map_or("—".into(), |s| si(s.median)),
                x(self.vs(c, Transport::Uds)),
                x(self.vs(c, Transport::Iceoryx2)),
                self.probe(c).map_or("—".into(), |p| cell(p, ns)),
            );
        }
        m.push('\n');
    }

    fn cpu_table(&self, m: &mut String) {
        let cases = self.of_kind(|k| matches!(k, Kind::Cpu { .. }));
        if cases.is_empty() {
            return;
        }
        let _ = writeln!(
            m,
            "### CPU per delivered record ({PACED_PAYLOAD} B records, 1 ms ticks, each tick's records one ring commit or one socket write; getrusage of both processes; IPC share = total − the in-process loop)\n\n\
             | rate | reader | transport | total CPU ns/record | producer | reader | IPC share ns/record | IPC share / uds's |\n\
             | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for c in &cases {
            let Kind::Cpu { rate, mode } = c.kind else {
                continue;
            };
            let Some(t) = self.metric(c, "cpu_ns_per_record") else {
                continue;
            };
            let med = |k| self.metric(c, k).map_or(f64::NAN, |s| s.median);
            let ratio = if c.transport == Transport::RingLossless {
                x(self.ipc_ratio(c))
            } else {
                "—".into()
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {ratio} |",
                rate_name(rate),
                mode.name(),
                c.transport.name(),
                cell(t, |v| format!("{v:.0}")),
                med("producer_cpu_ns_per_record"),
                med("reader_cpu_ns_per_record"),
                self.ipc_share(c)
                    .map_or("—".into(), |s| cell(s, |v| format!("{v:.0}"))),
            );
        }
        m.push('\n');
    }

    fn fan_out_table(&self, m: &mut String) {
        let mut cases = self.of_kind(|k| matches!(k, Kind::FanOut { .. }));
        if cases.is_empty() {
            return;
        }
        cases.sort_by_key(|c| match c.kind {
            Kind::FanOut { readers, mode, .. } => (mode, c.transport, readers),
            _ => (ReaderMode::Spin, c.transport, 0),
        });
        m.push_str(
            "### Fan-out: the producer's CPU per record with 1–3 lossless readers (128 B at 100k/s; producer on core 0, every reader on core 1)\n\n\
             | reader | transport | readers | producer CPU ns/record | vs 1 reader | reader CPU ns/record |\n\
             | --- | --- | ---: | ---: | ---: | ---: |\n",
        );
        for c in &cases {
            let Kind::FanOut {
                rate,
                readers,
                mode,
            } = c.kind
            else {
                continue;
            };
            let Some(p) = self.metric(c, "producer_cpu_ns_per_record") else {
                continue;
            };
            let one = Case {
                kind: Kind::FanOut {
                    rate,
                    readers: 1,
                    mode,
                },
                transport: c.transport,
            };
            let grow = self.per_run(c, &one, |a, b| {
                Some(
                    metric_of(a, "producer_cpu_ns_per_record")?
                        / metric_of(b, "producer_cpu_ns_per_record")?,
                )
            });
            let _ = writeln!(
                m,
                "| {} | {} | {readers} | {} | {} | {:.0} |",
                mode.name(),
                c.transport.name(),
                cell(p, |v| format!("{v:.0}")),
                x(grow),
                self.metric(c, "reader_cpu_ns_per_record")
                    .map_or(f64::NAN, |s| s.median),
            );
        }
        m.push('\n');
    }

    fn connect_table(&self, m: &mut String) {
        let cases = self.of_kind(|k| matches!(k, Kind::Connect | Kind::Death));
        if cases.is_empty() {
            return;
        }
        m.push_str(
            "### Connecting over the control socket\n\n\
             | what | p50 | p99 | p99.9 | max |\n| --- | ---: | ---: | ---: | ---: |\n",
        );
        for c in &cases {
            let what = match c.kind {
                Kind::Connect => "connect + handshake + first record",
                _ => "an idle reader learns of the service's death (SIGKILL)",
            };
            if let Some(p) = self.percentile_cells(c) {
                let _ = writeln!(m, "| {what} | {p} |");
            }
        }
        m.push('\n');
    }

    fn idle_table(&self, m: &mut String) {
        for (c, runs) in &self.cases {
            if c.kind != Kind::Idle {
                continue;
            }
            let Some(Sample::Idle(i)) = runs.first().map(|r| r.sample) else {
                continue;
            };
            let Idle {
                secs,
                producer_nvcsw,
                reader_nvcsw,
                reader_window_nvcsw,
            } = i;
            let _ = writeln!(
                m,
                "### Idle ({} for {secs:.1} s, reader asleep on its wake pipe)\n\n\
                 | process | voluntary context switches | of which its own one sleep | wakeups |\n\
                 | --- | ---: | ---: | ---: |\n\
                 | producer (getrusage, over the idle window) | {producer_nvcsw} | 1 | {} |\n\
                 | reader (getrusage, over its whole wait) | {reader_nvcsw} | 1 | {} |\n\
                 | reader (/proc, over the idle window) | {reader_window_nvcsw} | 0 | {reader_window_nvcsw} |\n",
                c.transport.name(),
                producer_nvcsw.saturating_sub(1),
                reader_nvcsw.saturating_sub(1),
            );
        }
    }

    /// The targets: (what, measured, met; `None` when not measured).
    pub fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        use Transport::*;
        let mut out = Vec::new();
        let ring = |kind| Case {
            kind,
            transport: RingLossless,
        };
        let mut check = |what: &str, s: Option<Spread>, ok: &dyn Fn(f64) -> bool| {
            out.push((what.to_string(), x(s), s.map(|s| ok(s.median))));
        };
        let tput = |payload| ring(Kind::Throughput { payload });
        check(
            "ring vs batched socket, 64 B records/s ≥ 1.5x (goal 2x)",
            self.vs(&tput(64), Uds),
            &|r| r >= 1.5,
        );
        check(
            "ring vs batched socket, 1 KiB GB/s ≥ 1.5x",
            self.vs(&tput(1024), Uds),
            &|r| r >= 1.5,
        );
        for (p, lim, what) in [
            (64, 10.0, "ring vs iceoryx2, 64 B records/s ≥ 10x"),
            (256, 10.0, "ring vs iceoryx2, 256 B records/s ≥ 10x"),
            (1024, 4.0, "ring vs iceoryx2, 1 KiB records/s ≥ 4x"),
            (4096, 1.0, "ring vs iceoryx2, 4 KiB records/s ahead (> 1x)"),
        ] {
            check(what, self.vs(&tput(p), Iceoryx2), &move |r| {
                if lim == 1.0 {
                    r > 1.0
                } else {
                    r >= lim
                }
            });
        }
        check(
            "ring 4 KiB GB/s ≥ 0.7x the bare hand ring",
            self.vs(&tput(4096), HandRing),
            &|r| r >= 0.7,
        );
        let rt = |mode| {
            ring(Kind::RoundTrip {
                payload: crate::cases::ROUND_TRIP_PAYLOAD,
                mode,
            })
        };
        check(
            "spinning round trip p50 ≤ 1/2 of iceoryx2 busy-poll (iceoryx2/ring ≥ 2x)",
            self.vs(&rt(ReaderMode::Spin), Iceoryx2),
            &|r| r >= 2.0,
        );
        check(
            "sleeping round trip p50 no worse than the blocking socket (uds/ring ≥ 1x)",
            self.vs(&rt(ReaderMode::Sleep), Uds),
            &|r| r >= 1.0,
        );
        check(
            "sleeping round trip p50 ≤ 1/2 of iceoryx2 event wakeup (iceoryx2/ring ≥ 2x)",
            self.vs(&rt(ReaderMode::Sleep), Iceoryx2),
            &|r| r >= 2.0,
        );
        check(
            "CPU/record at 100k/s, frame-polling: ring IPC share ≤ 1/2 of the socket's (ratio ≤ 0.5x)",
            self.ipc_ratio(&ring(Kind::Cpu {
                rate: 100_000,
                mode: ReaderMode::Frame,
            })),
            &|r| r <= 0.5,
        );
        let fan = |readers| {
            ring(Kind::FanOut {
                rate: crate::cases::FAN_OUT_RATE,
                readers,
                mode: ReaderMode::Frame,
            })
        };
        check(
            "fan-out: producer CPU/record with 3 frame-polling readers ≤ 1.2x that with 1",
            self.per_run(&fan(3), &fan(1), |a, b| {
                Some(
                    metric_of(a, "producer_cpu_ns_per_record")?
                        / metric_of(b, "producer_cpu_ns_per_record")?,
                )
            }),
            &|r| r <= 1.2,
        );
        let us = |c: &Case, lim: f64, what: &str, out: &mut Vec<(String, String, Option<bool>)>| {
            let s = self.metric(c, "p50_ns");
            out.push((
                what.into(),
                s.map_or("—".into(), |s| cell(s, ns)),
                s.map(|s| s.median < lim),
            ));
        };
        us(
            &Case {
                kind: Kind::Connect,
                transport: RingLagging,
            },
            1e6,
            "connect + handshake + first record, median < 1 ms (issue 3)",
            &mut out,
        );
        us(
            &Case {
                kind: Kind::Death,
                transport: RingLagging,
            },
            1e6,
            "an idle reader learns of the service's death, median < 1 ms (issue 3)",
            &mut out,
        );
        if let Some(Some(Sample::Idle(i))) = self
            .cases
            .get(&ring(Kind::Idle))
            .map(|r| r.first().map(|r| r.sample))
        {
            let wakeups = i.producer_nvcsw.saturating_sub(1)
                + i.reader_nvcsw.saturating_sub(1)
                + i.reader_window_nvcsw;
            out.push((
                "idle: zero wakeups".into(),
                format!("{wakeups} wakeups in {:.0} s", i.secs),
                Some(wakeups == 0),
            ));
        }
        out
    }

    /// The JSON document `--json` writes: `cache_line_rtt_ns` and a `cases` array whose
    /// names other tools read (keep them stable).
    ///
    /// # Errors
    /// If serialization fails.
    pub fn json(&self) -> serde_json::Result<String> {
        let mut cases = Vec::new();
        for (c, runs) in &self.cases {
            let mut o = Map::new();
            o.insert("transport".into(), json!(c.transport.name()));
            o.insert("kind".into(), json!(kind_name(&c.kind)));
            if let Some(p) = c.kind.payload() {
                o.insert("payload".into(), json!(p));
            }
            let readers = match c.kind {
                Kind::FanOut { readers, .. } => readers,
                Kind::Memcpy { .. } => 0,
                _ if c.transport == Transport::InProcess => 0,
                _ => 1,
            };
            o.insert("readers".into(), json!(readers));
            match c.kind {
                Kind::Latency { rate, .. } if rate > 0 => {
                    o.insert("rate".into(), json!(rate));
                }
                Kind::Cpu { rate, .. } | Kind::FanOut { rate, .. } => {
                    o.insert("rate".into(), json!(rate));
                }
                _ => {}
            }
            if let Some(mode) = c.kind.mode() {
                o.insert("reader_mode".into(), json!(mode.name()));
            }
            let names: Vec<&str> = runs
                .first()
                .map(|r| metrics(&r.sample).into_iter().map(|(k, _)| k).collect())
                .unwrap_or_default();
            for k in names {
                if let Some(s) = self.metric(c, k) {
                    let key = if k == "cpu_ns_per_record" {
                        "cpu_ns_per_record"
                    } else {
                        k
                    };
                    o.insert(key.into(), json!(s.median));
                }
            }
            if matches!(c.kind, Kind::FanOut { .. }) {
                if let Some(s) = self.metric(c, "producer_cpu_ns_per_record") {
                    o.insert("cpu_ns_per_record".into(), json!(s.median));
                }
            }
            if let Some(s) = self.ipc_share(c) {
                o.insert("ipc_cpu_ns_per_record".into(), json!(s.median));
            }
            let (metric, _) = headline(&c.kind);
            o.insert("metric".into(), json!(metric));
            o.insert("runs".into(), json!(runs.len()));
            if let Some(s) = self.metric(c, metric) {
                o.insert("min".into(), json!(s.min));
                o.insert("max".into(), json!(s.max));
            }
            let mut vs = Map::new();
            for b in [Transport::Uds, Transport::Iceoryx2, Transport::HandRing] {
                if let Some(s) = self.vs(c, b) {
                    vs.insert(b.name().into(), serde_json::to_value(s)?);
                }
            }
            if !vs.is_empty() {
                o.insert("vs".into(), Value::Object(vs));
            }
            o.insert(
                "values".into(),
                json!(runs
                    .iter()
                    .filter_map(|r| metric_of(r, metric))
                    .collect::<Vec<_>>()),
            );
            o.insert(
                "probes".into(),
                json!(runs.iter().map(|r| r.probe_ns).collect::<Vec<_>>()),
            );
            cases.push(Value::Object(o));
        }
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|(what, measured, met)| json!({"target": what, "measured": measured, "met": met}))
            .collect();
        let missing: Vec<Value> = self
            .missing
            .iter()
            .map(|(what, why)| json!({"transport": what, "why": why}))
            .collect();
        let failures: Vec<Value> = self
            .failures
            .iter()
            .map(|f| json!({"case": f.case, "run": f.run, "status": f.status, "why": f.why}))
            .collect();
        let doc = JsonDoc {
            cache_line_rtt_ns: self.probe_before.median,
            cache_line_rtt_ns_after: self.probe_after.median,
            cache_line_rtt_before: self.probe_before,
            cache_line_rtt_after: self.probe_after,
            cores: [self.cores.producer, self.cores.reader],
            secs: self.secs,
            missing,
            failures,
            targets,
            cases,
        };
        serde_json::to_string_pretty(&doc)
    }
}

fn wait_name(t: Transport, mode: ReaderMode) -> &'static str {
    match (t, mode) {
        (Transport::Iceoryx2, ReaderMode::Spin) => "busy-poll",
        (Transport::Iceoryx2, _) => "event wakeup",
        (t, ReaderMode::Spin) if t.is_ring() => "spin (large budget)",
        (t, _) if t.is_ring() => "sleep (spin 0, wake pipe)",
        (_, ReaderMode::Spin) => "spin (non-blocking reads)",
        _ => "sleep (blocking reads)",
    }
}

fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Throughput { .. } => "throughput",
        Kind::RoundTrip { .. } => "round_trip",
        Kind::Idle => "idle",
        Kind::Memcpy { .. } => "memcpy",
        Kind::Latency { .. } => "latency",
        Kind::Cpu { .. } => "cpu",
        Kind::FanOut { .. } => "fan_out",
        Kind::Connect => "connect",
        Kind::Death => "death",
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
    secs: f64,
    missing: Vec<Value>,
    failures: Vec<Value>,
    targets: Vec<Value>,
    cases: Vec<Value>,
}
