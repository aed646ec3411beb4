//! The command line: arguments, exit codes, and the dispatch to each command.

mod doctor;
#[cfg(feature = "nats")]
mod nats;
mod query;
mod render;
mod status;
mod tail;
mod view;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use firehose_consumer::{client_socket_path, ClientError, ConnectError, FollowError};

/// Exit codes (also in `--help`).
pub(crate) mod code {
    /// Done: `--count` reached, the answer printed, or stdout closed.
    pub(crate) const OK: i32 = 0;
    /// The service cannot be reached (not running, not allowed, no socket); for `doctor`:
    /// a problem was found.
    pub(crate) const UNREACHABLE: i32 = 1;
    /// Bad usage or any other error.
    pub(crate) const ERROR: i32 = 2;
    /// The service disconnected us (the reason is printed), or a query could not be
    /// answered.
    pub(crate) const DISCONNECTED: i32 = 3;
    /// The service's history is another instance than the one we were reading.
    pub(crate) const OTHER_INSTANCE: i32 = 4;
}

const EXIT_CODES: &str = "\
Exit codes:
  0  done (--count reached, answer complete) or stdout closed (e.g. `| head`)
  1  the service cannot be reached: not running, not allowed, no socket (doctor: a problem found)
  2  usage or other error
  3  disconnected by the service (the reason is printed), or history could not answer
  4  the service's history is another instance than the one being read

Paths are printed losslessly: valid UTF-8 as it is, a backslash as \\\\, and every byte that is
not valid UTF-8 as \\xNN (in JSON too, inside the string).";

#[derive(Parser, Debug)]
#[command(name = "firehose", version, about = "The Firehose client", after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Control socket path [default: $XDG_RUNTIME_DIR/firehose/firehose.sock, else
    /// /tmp/firehose-<uid>/firehose.sock].
    #[arg(long, global = true)]
    pub(crate) socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print file events as they arrive.
    #[command(after_help = tail::HELP)]
    Tail(tail::Args),
    /// Ask the service's history; rows are printed as they arrive.
    #[command(after_help = EXIT_CODES)]
    Query(query::Args),
    /// Show the service, its ring, its readers and its history.
    #[command(after_help = EXIT_CODES)]
    Status(status::Args),
    /// Check the setup: socket, permissions, inotify limits, file systems, history, ring.
    #[command(after_help = EXIT_CODES)]
    Doctor(doctor::Args),
    /// A live terminal viewer: follow, scroll back into history, filter, details.
    View(view::Args),
    /// Export the stream to another system (NATS JetStream).
    #[cfg(feature = "nats")]
    #[command(subcommand)]
    Export(Export),
}

#[cfg(feature = "nats")]
#[derive(Subcommand, Debug)]
enum Export {
    /// Publish every record, gap and loss notice into a JetStream stream, exactly once per
    /// (instance, seq), resuming where the stream ends for this host (docs/scale-out.md).
    #[command(after_help = EXIT_CODES)]
    Nats(nats::export::Args),
}

impl Cli {
    fn socket(&self) -> anyhow::Result<PathBuf> {
        Ok(match &self.socket {
            Some(p) => p.clone(),
            None => client_socket_path()?,
        })
    }
}

/// Parses the arguments, runs the command and returns the exit code.
pub(crate) fn run() -> i32 {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Tail(a) => tail::run(&cli, a),
        Cmd::Query(a) => query::run(&cli, a),
        Cmd::Status(a) => status::run(&cli, a),
        Cmd::Doctor(a) => doctor::run(&cli, a),
        Cmd::View(a) => view::run(&cli, a),
        #[cfg(feature = "nats")]
        Cmd::Export(Export::Nats(a)) => nats::export::run(&cli, a),
    };
    match r {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => code::OK,
        Err(e) => {
            eprintln!("firehose: {e:#}");
            exit_code(&e)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The exit code for an error.
fn exit_code(e: &anyhow::Error) -> i32 {
    for c in e.chain() {
        if let Some(f) = c.downcast_ref::<FollowError>() {
            return match f {
                FollowError::OtherInstance { .. } => code::OTHER_INSTANCE,
                FollowError::Disconnected { .. } => code::DISCONNECTED,
                FollowError::Client(c) => client_code(c),
                _ if f.is_unreachable() => code::UNREACHABLE,
                _ => code::ERROR,
            };
        }
        if let Some(c) = c.downcast_ref::<ClientError>() {
            return client_code(c);
        }
    }
    code::ERROR
}

fn client_code(c: &ClientError) -> i32 {
    match c {
        ClientError::Connect(
            ConnectError::NotRunning { .. }
            | ConnectError::NotAllowed { .. }
            | ConnectError::PathTooLong { .. }
            | ConnectError::UntrustedService { .. },
        ) => code::UNREACHABLE,
        ClientError::Connect(_) => code::UNREACHABLE,
        ClientError::Disconnected { .. } => code::DISCONNECTED,
        _ => code::ERROR,
    }
}

/// Whether stdout's reader has gone (a pipe whose read end closed polls as an error).
/// Ends the process quietly (exit code 0) as soon as whoever reads stdout goes away (`tail |
/// head`), from a thread that sleeps in `poll` until then: the command's own loop then
/// needs no timer to notice. On a terminal or a file it never fires.
pub(crate) fn exit_when_stdout_closes() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let spawned = std::thread::Builder::new()
        .name("stdout-watch".into())
        .spawn(|| loop {
            let out = std::io::stdout();
            let mut fds = [PollFd::new(out.as_fd(), PollFlags::empty())];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(n) if n > 0 => {
                    let r = fds[0].revents().unwrap_or(PollFlags::empty());
                    if r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                        std::process::exit(code::OK);
                    }
                    if r.contains(PollFlags::POLLNVAL) {
                        return; // no stdout at all: nothing to watch
                    }
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        });
    // Without the thread, the loop's own check still notices (on its next record).
    drop(spawned);
}

pub(crate) fn stdout_closed() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let out = std::io::stdout();
    let fd = out.as_fd();
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}
