//! `firehosed`, the Firehose service. The file watcher, filters and history arrive with the
//! service itself; today it serves the control socket over a ring of synthetic file events
//! (`serve`), and runs the ring demo (`demo`): synthetic records streamed to a reader
//! process, with the rates both sides see.

mod demo;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "firehosed", version, about = "The Firehose service")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the control socket over a ring of synthetic file events (Ctrl-C stops it).
    Serve(serve::ServeArgs),
    /// Stream synthetic file events to a reader process through the ring and print the rate.
    Demo(demo::DemoArgs),
    /// The reader side of the demo (started by `demo`).
    #[command(hide = true)]
    DemoReader,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Serve(args) => serve::run(args),
        Cmd::Demo(args) => demo::run(args),
        Cmd::DemoReader => demo::reader(),
    };
    if let Err(e) = r {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return;
        }
        eprintln!("firehosed: {e:#}");
        std::process::exit(2);
    }
}
