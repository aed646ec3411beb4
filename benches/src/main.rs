//! `firehose-bench [--quick] [--json FILE] [--plot DIR]`: the cross-process benchmarks.
//! See the crate docs of `firehose_bench`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use firehose_bench::cases::{Ctx, Plan};
use firehose_bench::child::{self, ChildArgs};
use firehose_bench::os::{pin_to_core, Cores};
use firehose_bench::peer::Peer;
use firehose_bench::probe::cache_line_rtt;
use firehose_bench::report::{ns, Results};

/// The Firehose ring side by side with a Unix socket, a pipe, a crossbeam channel, a bare
/// hand ring, memcpy and iceoryx2, across processes pinned to two cores.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Short runs, fewer repeats: under a minute.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write SVG plots into this folder.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Rounds of every case (default: 3, or 2 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Only the cases whose label contains this (e.g. "throughput", "uds", "1024 B").
    #[arg(long)]
    only: Option<String>,
    #[command(subcommand)]
    sub: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// The reader side of a case (spawned by the bench itself).
    #[command(name = "__child", hide = true)]
    Child(ChildArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Sub::Child(args)) = &cli.sub {
        return child::main(args).with_context(|| format!("{:?} child", args.role));
    }
    let began = Instant::now();
    let cores = Cores::detect()?;
    if cores.producer == cores.reader {
        eprintln!(
            "warning: only one core available; both sides share core {}",
            cores.producer
        );
    }
    anyhow::ensure!(cli.runs != Some(0), "--runs must be at least 1");
    let wants_peer = cli.only.as_deref().is_none_or(|f| {
        Plan::new(1, false)
            .filter(f)
            .round
            .iter()
            .any(|c| c.transport.is_iceoryx2())
    });
    let peer = if wants_peer {
        eprintln!(
            "building the iceoryx2 peer ({}) ...",
            firehose_bench::peer::MANIFEST
        );
        let p = Peer::build();
        if let Err(why) = &p {
            eprintln!("iceoryx2 peer not built: {why}");
        }
        p
    } else {
        Err("not asked for".into())
    };
    let mut missing = Vec::new();
    if let Err(why) = &peer {
        if wants_peer {
            missing.push((
                "iceoryx2, iceoryx2-batched".to_string(),
                format!("not built: {why}"),
            ));
        }
    }
    let peer_ok = peer.is_ok();
    let (ctx, runs) = if cli.quick {
        (Ctx::quick(cores, peer), cli.runs.unwrap_or(2))
    } else {
        (Ctx::full(cores, peer), cli.runs.unwrap_or(3))
    };
    let probe_samples = if cli.quick { 100 } else { 300 };
    let probe_before = cache_line_rtt(cores, probe_samples, 2000)?;
    eprintln!(
        "cache-line round trip, cores {}↔{}: median {} (min {}, max {})",
        cores.producer,
        cores.reader,
        ns(probe_before.median),
        ns(probe_before.min),
        ns(probe_before.max)
    );
    pin_to_core(cores.producer)?;
    let mut plan = Plan::new(runs, cli.quick);
    if let Some(f) = &cli.only {
        plan = plan.filter(f);
    }
    if !peer_ok {
        plan = plan.without(|t| t.is_iceoryx2());
    }
    let cases = plan.run(&ctx);
    if let Ok(p) = ctx.peer() {
        p.cleanup();
    }
    let (cases, failures) = cases?;
    let probe_after = cache_line_rtt(cores, probe_samples, 2000)?;
    eprintln!(
        "cache-line round trip after the cases: median {}; {:.1} s in all",
        ns(probe_after.median),
        began.elapsed().as_secs_f64()
    );
    let results = Results {
        cores,
        probe_before,
        probe_after,
        cases,
        missing,
        failures,
        secs: began.elapsed().as_secs_f64(),
    };
    println!("{}", results.markdown());
    if let Some(path) = &cli.json {
        let text = results.json()?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &cli.plot {
        for p in firehose_bench::plot::write_all(&results, dir)? {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}
