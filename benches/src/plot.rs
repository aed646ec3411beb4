//! SVG plots of a session (plotters, SVG backend, no system fonts needed):
//! throughput by payload for every transport, latency percentiles, CPU per record, and
//! the fan-out.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::cases::{
    rate_name, Case, Kind, ReaderMode, Transport, CPU_RATES, FAN_OUT_RATE, LATENCY_RATES,
    ROUND_TRIP_PAYLOAD, THROUGHPUT_PAYLOADS,
};
use crate::report::Results;

const SIZE: (u32, u32) = (900, 560);

fn color(t: Transport) -> RGBColor {
    match t {
        Transport::RingLossless => RGBColor(214, 39, 40),
        Transport::RingLagging => RGBColor(255, 127, 14),
        Transport::Uds => RGBColor(31, 119, 180),
        Transport::Pipe => RGBColor(23, 190, 207),
        Transport::Crossbeam => RGBColor(148, 103, 189),
        Transport::HandRing => RGBColor(127, 127, 127),
        Transport::Memcpy => RGBColor(0, 0, 0),
        Transport::Iceoryx2 => RGBColor(44, 160, 44),
        Transport::Iceoryx2Batched => RGBColor(188, 189, 34),
        Transport::InProcess => RGBColor(140, 86, 75),
    }
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// Writes `throughput.svg`, `latency.svg`, `cpu.svg` and `fanout.svg` into `dir`.
///
/// # Errors
/// If the folder or a file cannot be written.
pub fn write_all(r: &Results, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let p = dir.join("throughput.svg");
    throughput(r, &p)?;
    out.push(p);
    let p = dir.join("latency.svg");
    latency(r, &p)?;
    out.push(p);
    let p = dir.join("cpu.svg");
    cpu(r, &p)?;
    out.push(p);
    let p = dir.join("fanout.svg");
    fan_out(r, &p)?;
    out.push(p);
    Ok(out)
}

fn median(r: &Results, c: &Case, k: &str) -> Option<f64> {
    r.metric(c, k).map(|s| s.median).filter(|v| v.is_finite())
}

fn throughput(r: &Results, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut series = Vec::new();
    let mut top = 1.0f64;
    for t in [
        Transport::RingLossless,
        Transport::RingLagging,
        Transport::HandRing,
        Transport::Uds,
        Transport::Pipe,
        Transport::Crossbeam,
        Transport::Iceoryx2,
        Transport::Iceoryx2Batched,
    ] {
        let pts: Vec<(f64, f64)> = THROUGHPUT_PAYLOADS
            .iter()
            .filter_map(|&p| {
                let c = Case {
                    kind: Kind::Throughput { payload: p },
                    transport: t,
                };
                median(r, &c, "gb_per_s").map(|v| (p as f64, v))
            })
            .collect();
        top = pts.iter().fold(top, |a, p| a.max(p.1));
        if !pts.is_empty() {
            series.push((t, pts));
        }
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput across processes, one reader (GB/s of validated payload)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((48f64..5500f64).log_scale(), 0f64..top * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("payload bytes")
        .y_desc("GB/s")
        .x_label_formatter(&|v| format!("{:.0}", v))
        .draw()
        .map_err(err)?;
    for (t, pts) in series {
        let c = color(t);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(t.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn latency(r: &Results, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let groups: Vec<(u32, ReaderMode)> = LATENCY_RATES
        .iter()
        .flat_map(|&rate| [ReaderMode::Spin, ReaderMode::Sleep].map(|m| (rate, m)))
        .collect();
    let n = groups.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "One-way latency, 64 B: p50 (solid) and p99 (dashed)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            -0.5f64..(n as f64 - 0.5),
            (50f64..20_000_000f64).log_scale(),
        )
        .map_err(err)?;
    let labels: Vec<String> = groups
        .iter()
        .map(|(rate, m)| format!("{} {}", rate_name(*rate), m.name()))
        .collect();
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| {
            let i = v.round() as isize;
            if (v - i as f64).abs() < 0.01 && i >= 0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("ns")
        .y_label_formatter(&|v| crate::report::ns(*v))
        .draw()
        .map_err(err)?;
    for (k, t) in [Transport::RingLossless, Transport::Uds, Transport::Iceoryx2]
        .into_iter()
        .enumerate()
    {
        let c = color(t);
        let dx = (k as f64 - 1.0) * 0.12;
        let get = |key: &str| -> Vec<(f64, f64)> {
            groups
                .iter()
                .enumerate()
                .filter_map(|(i, &(rate, mode))| {
                    let case = Case {
                        kind: Kind::Latency {
                            payload: ROUND_TRIP_PAYLOAD,
                            rate,
                            mode,
                        },
                        transport: t,
                    };
                    median(r, &case, key).map(|v| (i as f64 + dx, v.max(50.0)))
                })
                .collect()
        };
        let p50 = get("p50_ns");
        let p99 = get("p99_ns");
        if p50.is_empty() {
            continue;
        }
        chart
            .draw_series(p50.iter().map(|p| Circle::new(*p, 5, c.filled())))
            .map_err(err)?
            .label(format!("{} p50", t.name()))
            .legend(move |(x, y)| Circle::new((x + 9, y), 5, c.filled()));
        chart
            .draw_series(
                p99.iter()
                    .map(|p| TriangleMarker::new(*p, 5, c.stroke_width(2))),
            )
            .map_err(err)?
            .label(format!("{} p99", t.name()))
            .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 5, c.stroke_width(2)));
        for (a, b) in p50.iter().zip(&p99) {
            chart
                .draw_series(DashedLineSeries::new(vec![*a, *b], 3, 3, c.stroke_width(1)))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn bars(
    r: &Results,
    path: &Path,
    caption: &str,
    groups: &[(String, Vec<(Transport, Case)>)],
    key: &str,
) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top = groups
        .iter()
        .flat_map(|(_, cs)| cs.iter().filter_map(|(_, c)| median(r, c, key)))
        .fold(1.0f64, f64::max);
    let n = groups.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top * 1.15)
        .map_err(err)?;
    let labels: Vec<String> = groups.iter().map(|(l, _)| l.clone()).collect();
    chart
        .configure_mesh()
        .x_labels(n)
        .disable_x_mesh()
        .x_label_formatter(&|v| {
            let i = v.round() as isize;
            if (v - i as f64).abs() < 0.01 && i >= 0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("CPU ns per record")
        .draw()
        .map_err(err)?;
    let mut legend: Vec<Transport> = Vec::new();
    for (i, (_, cs)) in groups.iter().enumerate() {
        let w = 0.8 / cs.len().max(1) as f64;
        for (k, (t, c)) in cs.iter().enumerate() {
            let Some(v) = median(r, c, key) else { continue };
            let x0 = i as f64 - 0.4 + k as f64 * w;
            let col = color(*t);
            let s = chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + w * 0.9, v)],
                    col.filled(),
                )))
                .map_err(err)?;
            if !legend.contains(t) {
                legend.push(*t);
                s.label(t.name()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled())
                });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn cpu(r: &Results, path: &Path) -> Result<()> {
    let mut groups = Vec::new();
    for rate in CPU_RATES {
        for mode in [ReaderMode::Frame, ReaderMode::Sleep] {
            let cs = [
                Transport::RingLossless,
                Transport::Uds,
                Transport::InProcess,
            ]
            .map(|t| {
                (
                    t,
                    Case {
                        kind: Kind::Cpu { rate, mode },
                        transport: t,
                    },
                )
            })
            .to_vec();
            groups.push((format!("{} {} readers", rate_name(rate), mode.name()), cs));
        }
    }
    bars(
        r,
        path,
        "CPU per delivered record, both processes (128 B, paced)",
        &groups,
        "cpu_ns_per_record",
    )
}

fn fan_out(r: &Results, path: &Path) -> Result<()> {
    let mut groups = Vec::new();
    for mode in [ReaderMode::Frame, ReaderMode::Sleep] {
        for readers in 1..=3 {
            let cs = [Transport::RingLossless, Transport::Uds]
                .map(|t| {
                    (
                        t,
                        Case {
                            kind: Kind::FanOut {
                                rate: FAN_OUT_RATE,
                                readers,
                                mode,
                            },
                            transport: t,
                        },
                    )
                })
                .to_vec();
            groups.push((format!("{readers} {} reader(s)", mode.name()), cs));
        }
    }
    bars(
        r,
        path,
        "Fan-out: the producer's CPU per record at 100k/s",
        &groups,
        "producer_cpu_ns_per_record",
    )
}
