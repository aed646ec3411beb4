//! `firehose-bench [--quick] [--json FILE]`: the cross-process benchmarks. See the crate
//! docs of `firehose_bench`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use firehose_bench::cases::{Ctx, Plan};
use firehose_bench::child::{self, ChildArgs};
use firehose_bench::os::{pin_to_core, Cores};
use firehose_bench::probe::cache_line_rtt;
use firehose_bench::report::{ns, Results};

/// The Firehose ring against a Unix socket, across two processes pinned to two cores.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Short runs, fewer repeats: under a minute.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
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
    let (ctx, runs) = if cli.quick {
        (Ctx::quick(cores), cli.runs.unwrap_or(2))
    } else {
        (Ctx::full(cores), cli.runs.unwrap_or(3))
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
    let mut plan = Plan::new(runs);
    if let Some(f) = &cli.only {
        plan = plan.filter(f);
    }
    let cases = plan.run(&ctx)?;
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
    };
    println!("{}", results.markdown());
    if let Some(path) = &cli.json {
        let text = results.json()?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
