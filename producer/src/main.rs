//! `firehosed`, the Firehose service: watches directory trees, filters the events by the
//! rules in filter documents, stores the matches in a history database and streams them to
//! readers through a shared-memory ring. With no subcommand it runs the service.

mod demo;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use firehose_producer::filters::check_dir;
use firehose_producer::service::{self, install, ServiceArgs};

#[derive(Parser, Debug)]
#[command(
    name = "firehosed",
    version,
    about = "The Firehose service: file-system events, filtered, stored and streamed",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    service: ServiceArgs,
}

// Parsed once at start: the size of `Install`'s options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check filter documents (file, line and column of every error) without touching a
    /// running service.
    CheckFilters {
        /// The folder of documents [default: the service's default filters folder].
        dir: Option<PathBuf>,
    },
    /// Write and enable a systemd user unit running `firehosed` with these options
    /// (replacing an older one). Where no user service manager runs, the unit is written and
    /// the command says how to enable it.
    Install {
        /// Install for this user (the only kind today).
        #[arg(long)]
        user: bool,
        /// Where to write the unit [default: $XDG_CONFIG_HOME/systemd/user].
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// The service's options, as for `firehosed` itself.
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Stop, disable and remove the systemd user unit.
    Uninstall {
        /// For this user (the only kind today).
        #[arg(long)]
        user: bool,
        /// Where the unit is [default: $XDG_CONFIG_HOME/systemd/user].
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
    },
    /// Stream synthetic file events to a reader process through the ring and print the rate.
    Demo(demo::DemoArgs),
    /// The reader side of the demo (started by `demo`).
    #[command(hide = true)]
    DemoReader,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        None => service::run(cli.service),
        Some(Cmd::CheckFilters { dir }) => {
            let dir = match dir {
                Some(d) => d,
                None => service::config::default_filters_dir()?,
            };
            match check_dir(&dir) {
                Ok(summary) => {
                    print!("{summary}");
                    Ok(())
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    std::process::exit(1);
                }
            }
        }
        Some(Cmd::Install {
            user: _,
            unit_dir,
            service: args,
        }) => {
            let dir = match unit_dir {
                Some(d) => d,
                None => install::default_unit_dir()?,
            };
            let exe = std::env::current_exe().context("finding this executable")?;
            // Resolved here, so the unit runs what this shell would: absolute paths, and
            // the socket and database this shell's XDG variables chose.
            let spec = install::UnitSpec::for_service(&exe, &args)?;
            match install::install(&dir, &spec)? {
                install::Installed::Enabled { replaced } => println!(
                    "{} {}/{} and started it (systemctl --user status {})",
                    if replaced { "replaced" } else { "installed" },
                    dir.display(),
                    install::UNIT,
                    install::UNIT
                ),
                install::Installed::Unchanged => {
                    println!("{}/{} is already installed", dir.display(), install::UNIT)
                }
                install::Installed::WrittenOnly { replaced } => println!(
                    "{} {}/{}; no user service manager runs here, so it is not enabled. Where one runs: systemctl --user daemon-reload && systemctl --user enable --now {}",
                    if replaced { "replaced" } else { "wrote" },
                    dir.display(),
                    install::UNIT,
                    install::UNIT
                ),
            }
            Ok(())
        }
        Some(Cmd::Uninstall { user: _, unit_dir }) => {
            let dir = match unit_dir {
                Some(d) => d,
                None => install::default_unit_dir()?,
            };
            if install::uninstall(&dir)? {
                println!("removed {}/{}", dir.display(), install::UNIT);
            } else {
                println!("no {}/{} was installed", dir.display(), install::UNIT);
            }
            Ok(())
        }
        Some(Cmd::Demo(args)) => demo::run(args),
        Some(Cmd::DemoReader) => demo::reader(),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return;
        }
        eprintln!("firehosed: {e:#}");
        std::process::exit(2);
    }
}
