//! `firehose`, the command-line client: `tail` prints events as they arrive, `status` shows
//! the service and its readers, `doctor` checks the setup. (`query` and `view` come with the
//! history database and the terminal viewer.)

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use firehose_consumer::{default_socket_path, Client, ConnectOptions, Event, FileEvent, Policy};

#[derive(Parser, Debug)]
#[command(name = "firehose", version, about = "The Firehose client")]
struct Cli {
    /// Control socket path [default: $XDG_RUNTIME_DIR/firehose/firehose.sock, else
    /// /tmp/firehose-<uid>/firehose.sock].
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print file events as they arrive.
    Tail {
        /// Read losslessly (the service holds back for this reader, within its budget).
        #[arg(long)]
        lossless: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Show the service, its ring and its readers.
    Status,
    /// Print the defaults and check that the service can be reached.
    Doctor,
}

fn socket(cli: &Cli) -> anyhow::Result<PathBuf> {
    Ok(match &cli.socket {
        Some(p) => p.clone(),
        None => default_socket_path()?,
    })
}

fn main() {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Tail { lossless, count } => tail(&cli, *lossless, *count),
        Cmd::Status => status(&cli),
        Cmd::Doctor => doctor(&cli),
    };
    if let Err(e) = r {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return;
        }
        eprintln!("firehose: {e:#}");
        std::process::exit(2);
    }
}

fn tail(cli: &Cli, lossless: bool, count: Option<u64>) -> anyhow::Result<()> {
    let path = socket(cli)?;
    let opts = ConnectOptions {
        name: "firehose tail".into(),
        policy: if lossless {
            Policy::Lossless
        } else {
            Policy::Lagging
        },
        ..ConnectOptions::default()
    };
    let mut client: Client<FileEvent> = Client::connect(&path, &opts)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let mut seen = 0u64;
    loop {
        let batch = client.recv(4096)?;
        for ev in &batch {
            match ev {
                Event::Record(r) => {
                    let e = r.access()?;
                    let to = e
                        .path_to
                        .as_ref()
                        .map(|p| format!(" -> {}", String::from_utf8_lossy(p.as_slice())));
                    writeln!(
                        out,
                        "{:>10} {:<10} {}{}",
                        r.seq(),
                        format!("{:?}", e.kind),
                        e.path_os().to_string_lossy(),
                        to.unwrap_or_default()
                    )?;
                }
                Event::Lagged { from, to } => {
                    writeln!(out, "-- missed {from}..={to} (this reader fell behind)")?
                }
                Event::Gap { from, to, reason } => {
                    writeln!(out, "-- {from}..={to} not streamed (reason {reason})")?
                }
            }
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
}

fn status(cli: &Cli) -> anyhow::Result<()> {
    let path = socket(cli)?;
    let opts = ConnectOptions {
        name: "firehose status".into(),
        ..ConnectOptions::default()
    };
    let mut client: Client<FileEvent> = Client::connect(&path, &opts)?;
    let s = client.status()?;
    println!(
        "service   pid {} at {}, up {:.1} s, {}",
        s.pid,
        path.display(),
        s.uptime_ms as f64 / 1000.0,
        s.health
    );
    println!(
        "ring      {} KiB, segment {}, next seq {}, slowest lossless reader {} KiB behind",
        s.ring_capacity >> 10,
        s.epoch,
        s.next_seq,
        s.ring_fill >> 10
    );
    println!("readers   {}", s.readers.len());
    for r in &s.readers {
        println!(
            "  #{:<5} pid {:<8} uid {:<6} {:<9} {:>8} KiB behind  {}",
            r.id,
            r.pid,
            r.uid,
            format!("{:?}", r.policy).to_lowercase(),
            r.lag_bytes >> 10,
            r.name
        );
    }
    client.bye();
    Ok(())
}

fn doctor(cli: &Cli) -> anyhow::Result<()> {
    let path = socket(cli).context("working out the socket path")?;
    println!("socket            {}", path.display());
    println!(
        "runtime dir       {}",
        std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "(unset: /tmp/firehose-<uid>)".into())
    );
    println!(
        "ring default      4096 KiB, records up to 64 KiB, lossless budget 3 s, 4 lossless readers"
    );
    if std::fs::symlink_metadata(&path).is_err() {
        println!("service           not running (no socket): start it with `firehosed serve`");
        return Ok(());
    }
    let opts = ConnectOptions {
        name: "firehose doctor".into(),
        ..ConnectOptions::default()
    };
    match Client::<FileEvent>::connect(&path, &opts) {
        Ok(mut c) => {
            let s = c.status()?;
            println!(
                "service           ok: pid {}, uid {}, {} readers",
                s.pid,
                c.service().uid,
                s.readers.len()
            );
            println!(
                "ring              {} KiB mapped read-only, seals checked",
                c.welcome().capacity >> 10
            );
            c.bye();
        }
        Err(e) => println!("service           cannot connect: {e}"),
    }
    Ok(())
}
