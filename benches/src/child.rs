//! The child processes: the parent spawns this same binary with a hidden subcommand and
//! one end of a socketpair, over which ring fds, a ready word and a final report travel
//! (and, for the socket baseline, the data itself).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::cases::ReaderMode;
use crate::os::pin_to_core;
use crate::payload::Tally;
use crate::stream_case::{self, StreamKind};
use crate::{connect_case, local_case, paced, ring_case};

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "__child";

/// What a child process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Reads a ring (fds received over the socket), checks and counts every record.
    RingReader,
    /// Reads a ring with a sleeping reader and reports its context switches.
    RingIdle,
    /// Reads the ping ring, answers each record on a pong ring of its own.
    RingEcho,
    /// Reads framed records from a byte stream, checks and counts every one.
    StreamReader,
    /// Answers each framed record on a byte stream.
    StreamEcho,
    /// Reads the bare hand ring (a memfd received over the socket), summing its words.
    HandRingReader,
    /// Reads stamped records from a ring and reports publish-to-read latency.
    RingStamped,
    /// Reads stamped frames from a byte stream and reports publish-to-read latency.
    StreamStamped,
    /// Reads a paced ring once per frame or asleep, reporting its CPU time.
    RingPaced,
    /// Reads a paced byte stream once per frame or asleep, reporting its CPU time.
    StreamPaced,
    /// Runs a control-socket service (producer and server loop) until told to die.
    Service,
    /// Connects to a service: timed connects, or an idle reader that waits for its death.
    Connector,
}

/// The hidden subcommand's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    /// What to do.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Nominal payload size in bytes.
    #[arg(long)]
    pub payload: usize,
    /// Ring readers: spin budget before sleeping. Socket echo: non-zero = spin on
    /// non-blocking reads.
    #[arg(long, default_value_t = 0)]
    pub spin: u32,
    /// Stream roles: which byte stream.
    #[arg(long, value_enum, default_value = "uds")]
    pub stream: StreamKind,
    /// The core to pin to.
    #[arg(long)]
    pub core: usize,
    /// How a paced or stamped reader waits.
    #[arg(long, value_enum, default_value = "sleep")]
    pub mode: ReaderMode,
    /// Connector: how many timed connects (0: wait for the service's death instead).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Service and connector: the control socket's path.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The inherited socket's fd number (set by [`ChildProc::spawn`]).
    #[arg(long, default_value_t = -1)]
    pub sock_fd: RawFd,
}

impl ChildArgs {
    /// A `role` child for `payload`-byte records, pinned to `core`.
    pub fn new(role: Role, payload: usize, core: usize) -> Self {
        ChildArgs {
            role,
            payload,
            spin: 0,
            stream: StreamKind::Uds,
            core,
            mode: ReaderMode::Sleep,
            count: 0,
            socket: None,
            sock_fd: -1,
        }
    }

    /// Waiting this way.
    pub fn mode(mut self, mode: ReaderMode) -> Self {
        self.mode = mode;
        self
    }

    /// This many connects.
    pub fn count(mut self, count: u64) -> Self {
        self.count = count;
        self
    }

    /// With this control socket.
    pub fn socket(mut self, path: PathBuf) -> Self {
        self.socket = Some(path);
        self
    }

    /// With this spin budget.
    pub fn spin(mut self, spin: u32) -> Self {
        self.spin = spin;
        self
    }

    /// Over this byte stream.
    pub fn stream(mut self, stream: StreamKind) -> Self {
        self.stream = stream;
        self
    }
}

fn value_name<V: clap::ValueEnum + std::fmt::Debug>(v: &V) -> String {
    v.to_possible_value()
        .map_or_else(|| format!("{v:?}"), |p| p.get_name().to_string())
}

/// The word a child sends once it is ready to read.
const READY: u64 = u64::from_le_bytes(*b"FHBREADY");
/// The first word of a child's report.
const REPORT: u64 = u64::from_le_bytes(*b"FHBREPRT");
/// How long the parent waits for a ready word or a report before it gives up.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a child reports when it is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// What it received.
    pub tally: Tally,
    /// CLOCK_MONOTONIC when it saw the end of the stream.
    pub end_ns: u64,
    /// Voluntary context switches over the part it measures (idle children).
    pub nvcsw: u64,
    /// CPU time it spent from ready to the end of the stream, in nanoseconds.
    pub cpu_ns: u64,
}

impl Report {
    /// Checks that the reader's end of stream comes after the producer's `start` (one
    /// clock for both processes), so the two can be subtracted.
    ///
    /// # Errors
    /// If it does not.
    pub fn ended_after(self, start: u64) -> Result<Self> {
        ensure!(
            self.end_ns > start,
            "reader ended at {} ns, before the producer started at {start} ns",
            self.end_ns
        );
        Ok(self)
    }

    fn to_words(self) -> [u64; 8] {
        let t = self.tally;
        [
            REPORT,
            t.count,
            t.checksum,
            t.lost,
            t.lag_events,
            self.end_ns,
            self.nvcsw,
            self.cpu_ns,
        ]
    }

    fn from_words(w: [u64; 8]) -> Result<Self> {
        if w[0] != REPORT {
            bail!("child sent {:#x} instead of a report", w[0]);
        }
        Ok(Report {
            tally: Tally {
                count: w[1],
                checksum: w[2],
                lost: w[3],
                lag_events: w[4],
            },
            end_ns: w[5],
            nvcsw: w[6],
            cpu_ns: w[7],
        })
    }
}

/// Writes words (little-endian) to the socket.
///
/// # Errors
/// The socket's write error.
pub fn send_words(sock: &mut UnixStream, words: &[u64]) -> std::io::Result<()> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    sock.write_all(&bytes)
}

/// Reads `N` words (little-endian) from the socket.
///
/// # Errors
/// The socket's read error, `UnexpectedEof` if the peer closed.
pub fn recv_words<const N: usize>(sock: &mut UnixStream) -> std::io::Result<[u64; N]> {
    let mut out = [0u64; N];
    let mut b = [0u8; 8];
    for w in &mut out {
        sock.read_exact(&mut b)?;
        *w = u64::from_le_bytes(b);
    }
    Ok(out)
}

/// Child side: tells the parent it is ready.
///
/// # Errors
/// The socket's write error.
pub fn send_ready(sock: &mut UnixStream) -> Result<()> {
    send_words(sock, &[READY]).context("sending ready")
}

/// Child side: sends the final report.
///
/// # Errors
/// The socket's write error.
pub fn send_report(sock: &mut UnixStream, report: Report) -> Result<()> {
    send_words(sock, &report.to_words()).context("sending the report")
}

/// A running child, seen from the parent. Killed (by its pid) if dropped before
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct ChildProc {
    child: Option<Child>,
    role: Role,
    /// The parent's end of the socketpair.
    pub sock: UnixStream,
}

impl ChildProc {
    /// Spawns this binary as the child `args` describe (its `sock_fd` is filled in here).
    ///
    /// # Errors
    /// If the socketpair or the process cannot be made.
    pub fn spawn(args: ChildArgs) -> Result<Self> {
        let role = args.role;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("socketpair")?;
        // The child's end must survive exec; ours must not. No other thread spawns
        // processes while this end is inheritable, and it is closed right after the spawn.
        fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty())).context("clearing FD_CLOEXEC")?;
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg(SUBCOMMAND)
            .args(["--mode", &value_name(&args.mode)])
            .args(["--count", &args.count.to_string()]);
        if let Some(p) = &args.socket {
            cmd.arg("--socket").arg(p);
        }
        let child = cmd
            .args(["--role", &value_name(&role)])
            .args(["--payload", &args.payload.to_string()])
            .args(["--spin", &args.spin.to_string()])
            .args(["--stream", &value_name(&args.stream)])
            .args(["--core", &args.core.to_string()])
            .args(["--sock-fd", &theirs.as_raw_fd().to_string()])
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning a {role:?} child"))?;
        drop(theirs);
        Ok(ChildProc {
            child: Some(child),
            role,
            sock: UnixStream::from(ours),
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits for the child's ready word.
    ///
    /// # Errors
    /// If it sends something else, or exits first.
    pub fn expect_ready(&mut self) -> Result<()> {
        let w = self.control(recv_words::<1>)?;
        if w[0] != READY {
            bail!("{:?} child sent {:#x} instead of ready", self.role, w[0]);
        }
        Ok(())
    }

    /// Waits for the child's report.
    ///
    /// # Errors
    /// If it sends something else, or exits first.
    pub fn report(&mut self) -> Result<Report> {
        let w = self.control(recv_words::<8>)?;
        Report::from_words(w)
    }

    /// Waits for `N` more words from the child (what a role sends after its report).
    ///
    /// # Errors
    /// If the child exits first.
    pub fn words<const N: usize>(&mut self) -> Result<[u64; N]> {
        self.control(recv_words::<N>)
    }

    /// Waits for the child to end and returns how (for children that end themselves by a
    /// signal).
    pub fn wait_end(mut self, patience: Duration) -> String {
        self.reap(patience)
    }

    /// A control read with a timeout; an error names the child's exit status if it died.
    fn control<R>(&mut self, f: impl FnOnce(&mut UnixStream) -> std::io::Result<R>) -> Result<R> {
        self.sock.set_read_timeout(Some(CONTROL_TIMEOUT))?;
        let r = f(&mut self.sock);
        self.sock.set_read_timeout(None)?;
        match r {
            Ok(r) => Ok(r),
            Err(e) => {
                let status = self.reap(Duration::from_secs(2));
                bail!("{:?} child: {e} (child {status})", self.role)
            }
        }
    }

    /// Waits for the child to exit (up to `patience`, then kills it); describes how it ended.
    fn reap(&mut self, patience: Duration) -> String {
        let Some(mut child) = self.child.take() else {
            return "already reaped".into();
        };
        let deadline = std::time::Instant::now() + patience;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return describe(s),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    let _ = child.kill();
                    return match child.wait() {
                        Ok(s) => format!("killed after {patience:?}: {}", describe(s)),
                        Err(e) => format!("could not be waited for: {e}"),
                    };
                }
            }
        }
    }

    /// Waits for the child to exit and checks that it succeeded.
    ///
    /// # Errors
    /// If it failed, or did not exit within 30 s.
    pub fn finish(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait()? {
                if !s.success() {
                    bail!("{:?} child {}", self.role, describe(s));
                }
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{:?} child did not exit; killed", self.role);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn describe(s: ExitStatus) -> String {
    match s.code() {
        Some(c) => format!("exited with status {c}"),
        None => format!("ended by {s}"),
    }
}

/// The hidden subcommand: runs one child role.
///
/// # Errors
/// Whatever the role's run fails with (the parent sees the exit status).
pub fn main(args: &ChildArgs) -> Result<()> {
    // Claim the descriptor only if it is an open socket: this subcommand is hidden, but a
    // person can still run it by hand with any number.
    let is_socket = args.sock_fd >= 0
        && std::fs::metadata(format!("/proc/self/fd/{}", args.sock_fd))
            .is_ok_and(|m| m.file_type().is_socket());
    ensure!(
        is_socket,
        "--sock-fd {} is not an open socket: this subcommand is run by the bench itself",
        args.sock_fd
    );
    // SAFETY: the parent spawned this process with `--sock-fd` naming its end of a
    // socketpair that it left open across exec for us alone (checked above to be an open
    // socket); nothing else in this process knows or owns that descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(args.sock_fd) };
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).context("inherited socket")?;
    pin_to_core(args.core)?;
    let sock = UnixStream::from(fd);
    match args.role {
        Role::RingReader => ring_case::reader_child(sock, args),
        Role::RingIdle => ring_case::idle_child(sock, args),
        Role::RingEcho => ring_case::echo_child(sock, args),
        Role::StreamReader => stream_case::reader_child(sock, args),
        Role::StreamEcho => stream_case::echo_child(sock, args),
        Role::HandRingReader => local_case::hand_ring_child(sock, args),
        Role::RingStamped => paced::ring_stamped_child(sock, args),
        Role::StreamStamped => paced::stream_stamped_child(sock, args),
        Role::RingPaced => paced::ring_paced_child(sock, args),
        Role::StreamPaced => paced::stream_paced_child(sock, args),
        Role::Service => connect_case::service_child(sock, args),
        Role::Connector => connect_case::connector_child(sock, args),
    }
}
