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
        /// A user unit: the service runs as you, with inotify (the default).
        #[arg(long, conflicts_with = "system")]
        user: bool,
        /// A system unit: the service runs as root with fanotify (whole filesystems, no
        /// watch limit) and only CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH, serving one uid at
        /// /run/firehose/firehose.sock. Run it with sudo.
        #[arg(long)]
        system: bool,
        /// With --system: the uid served [default: $SUDO_UID, else yours].
        #[arg(long, value_name = "UID", requires = "system")]
        for_uid: Option<u32>,
        /// Where to write the unit [default: $XDG_CONFIG_HOME/systemd/user, or
        /// /etc/systemd/system with --system].
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// The service's options, as for `firehosed` itself.
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Stop, disable and remove the systemd user unit.
    Uninstall {
        /// The user unit (the default).
        #[arg(long, conflicts_with = "system")]
        user: bool,
        /// The system unit.
        #[arg(long)]
        system: bool,
        /// Where the unit is [default: $XDG_CONFIG_HOME/systemd/user, or
        /// /etc/systemd/system with --system].
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
            system,
            for_uid,
            unit_dir,
            service: args,
        }) => {
            let dir = unit_dir_for(unit_dir, system)?;
            let exe = std::env::current_exe().context("finding this executable")?;
            // Resolved here, so the unit runs what this shell would: absolute paths, and
            // the socket and database this shell's XDG variables chose.
            let spec = if system {
                let uid = for_uid
                    .or_else(|| std::env::var("SUDO_UID").ok()?.parse().ok())
                    .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
                let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.dir);
                install::UnitSpec::for_system(&exe, &args, uid, home.as_deref())?
            } else {
                install::UnitSpec::for_service(&exe, &args)?
            };
            let user_flag = if system { "" } else { "--user " };
            match install::install(&dir, &spec)? {
                install::Installed::Enabled { replaced } => println!(
                    "{} {}/{} and started it (systemctl {user_flag}status {})",
                    if replaced { "replaced" } else { "installed" },
                    dir.display(),
                    install::UNIT,
                    install::UNIT
                ),
                install::Installed::Unchanged => {
                    println!("{}/{} is already installed", dir.display(), install::UNIT)
                }
                install::Installed::WrittenOnly { replaced } => println!(
                    "{} {}/{}; no {} service manager runs here, so it is not enabled. Where one runs: systemctl {user_flag}daemon-reload && systemctl {user_flag}enable --now {}",
                    if replaced { "replaced" } else { "wrote" },
                    dir.display(),
                    install::UNIT,
                    if system { "system" } else { "user" },
                    install::UNIT
                ),
            }
            Ok(())
        }
        Some(Cmd::Uninstall {
            user: _,
            system,
            unit_dir,
        }) => {
            let dir = unit_dir_for(unit_dir, system)?;
            let scope = if system {
                install::Scope::System
            } else {
                install::Scope::User
            };
            if install::uninstall(&dir, scope)? {
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

/// The unit folder asked for, or the default of the scope.
fn unit_dir_for(given: Option<PathBuf>, system: bool) -> anyhow::Result<PathBuf> {
    Ok(match given {
        Some(d) => d,
        None if system => PathBuf::from(install::SYSTEM_UNIT_DIR),
        None => install::default_unit_dir()?,
    })
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
