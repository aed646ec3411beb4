//! The service itself: `firehosed [OPTIONS]` runs it, in the foreground from a terminal and
//! under a service manager alike.
//!
//! Threads: the watcher (its own), the pipeline (filter, seq, coalesce; [`pipeline`]), the
//! history writer (its own), the ring's owner (`firehose_transport::publisher`), the lease renewer, the
//! filter-document watcher, and the control socket loop (this module). SIGTERM and SIGINT
//! shut down cleanly: the pipeline drains, the ring is closed (readers read to its end),
//! clients are told why, the database is flushed, the lease is marked clean, the socket
//! removed.

pub mod config;
pub mod info;
pub mod install;
pub mod notify;
pub mod pipeline;
pub mod rate;
pub mod synthetic;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use firehose_transport::control::place::{bind, Access};
use firehose_transport::control::server::{
    raise_fd_limit, Server, ServerConfig, FDS_PER_CONNECTION,
};
use firehose_transport::publisher::{Item, Publisher, PublisherConfig};
use firehose_transport::record::{FileEvent, GapReason};
use firehose_transport::ring::{Producer, RingConfig};

pub use config::{ServiceArgs, ServiceConfig};

use crate::filters::{FilterWatcher, RuleSet};
use crate::history::{schema::companion_files, HistoryWriter, Retention, WriterConfig};
use crate::lease::{Lease, LeaseConfig};
use crate::watch::{WatchConfig, Watcher};

/// The tree index file beside the database (`history.db` → `history.index`).
pub fn index_path(db: &std::path::Path) -> PathBuf {
    db.with_extension("index")
}

/// The write end of the stop pipe, for the signal handler (-1: none yet).
static STOP_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    // Acquire: pairs with the Release store made before the handler was installed, so a
    // handler running on any thread sees the fd (atomic loads are async-signal-safe).
    let fd = STOP_PIPE.load(Ordering::Acquire);
    if fd >= 0 {
        // Saved and restored: the interrupted code may be about to read errno.
        let saved = nix::errno::Errno::last_raw();
        // SAFETY: `fd` is the stop pipe's write end, which stays open for the life of the
        // process (ManuallyDrop, never closed). write(2) is async-signal-safe; the buffer
        // is a valid 1-byte static. A full pipe (EAGAIN) already holds a stop request, so
        // the result needs no check.
        unsafe {
            libc::write(fd, b"x".as_ptr().cast(), 1);
        }
        nix::errno::Errno::set_raw(saved);
    }
}

/// Makes the stop pipe and installs the SIGINT and SIGTERM handlers that write to it.
/// Returns the read end: the control loop polls it, so the service sleeps with no timeout
/// at rest and still stops at once.
fn install_signal_handlers() -> anyhow::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let (read, write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).context("making the stop pipe")?;
    // The write end lives as long as the process (the handler may run at any time).
    let write = std::mem::ManuallyDrop::new(write);
    // Release: see the handler's Acquire load.
    STOP_PIPE.store(write.as_raw_fd(), Ordering::Release);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only calls write(2) on a pipe, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("installing a {sig} handler"))?;
    }
    Ok(read)
}

/// Sets up logging through tracing: `RUST_LOG` if set, else `level`.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "firehose={level},firehose_producer={level},firehosed={level},{level}"
        ))
    });
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The lease file beside the database: `history.lease` for `history.db`.
pub fn lease_path(db: &Path) -> PathBuf {
    db.with_extension("lease")
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Runs the service until SIGTERM or SIGINT.
///
/// # Errors
/// Anything that keeps it from starting: a broken filter document, a database or lease file
/// it cannot open, a socket it cannot bind (another service running), a ring it cannot make.
pub fn run(args: ServiceArgs) -> anyhow::Result<()> {
    init_logging(&args.log_level);
    let cfg = args.resolve()?;
    let stop_pipe = install_signal_handlers()?;
    // Synthetic load is made up under the first --watch root, else under /synthetic, which
    // then counts as a root for the rules (not for the watcher).
    let synthetic_root = cfg
        .watch
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/synthetic"));
    let mut rule_roots = cfg.watch.clone();
    if cfg.synthetic.is_some() && !rule_roots.contains(&synthetic_root) {
        rule_roots.push(synthetic_root.clone());
    }
    let rules = RuleSet::load_dir(&cfg.filters, &rule_roots).map_err(|e| {
        anyhow::anyhow!(
            "the filter documents in {} have errors:\n{e}",
            cfg.filters.display()
        )
    })?;
    if let Some(parent) = cfg.db.parent() {
        make_private_dir(parent)?;
    }
    let writer = HistoryWriter::open(
        &cfg.db,
        WriterConfig {
            retention: Retention {
                max_rows: cfg.max_rows,
                max_age: cfg.max_age,
                max_bytes: cfg.max_bytes,
            },
            ..WriterConfig::default()
        },
    )
    .with_context(|| format!("opening the history database {}", cfg.db.display()))?;
    let writer = Arc::new(writer);
    let last = writer.committed_seq();
    let (lease, recovery) = Lease::open(
        &lease_path(&cfg.db),
        writer.instance_id(),
        (last > 0).then_some(last),
        LeaseConfig::default(),
    )?;
    let lease = Arc::new(lease);
    let mut first_seq = recovery.next_seq;
    if let Some((from, to)) = recovery.crash_gap {
        tracing::warn!("the last run did not stop cleanly: seqs {from}..={to} were leased but never used (recorded as a crash gap)");
        writer.submit(pipeline::gap_row(from, to, GapReason::Crash));
        first_seq = from;
    }
    let access = Access {
        allow_uids: cfg.allow_uid.clone(),
        allow_gids: cfg.allow_gid.clone(),
    };
    let bound = bind(&cfg.socket, &access)?;
    let producer = Producer::<FileEvent>::new(RingConfig {
        capacity: cfg.ring_size,
        first_seq,
        ..RingConfig::default()
    })
    .context("making the ring")?;
    let (publisher, link) = Publisher::start(
        producer,
        PublisherConfig {
            hole_reason: GapReason::NotStreamed.code(),
            ..PublisherConfig::default()
        },
    )
    .context("starting the ring's owner thread")?;
    if let Some((_, to)) = recovery.crash_gap {
        let crash = Item::Gap {
            to,
            reason: GapReason::Crash.code(),
        };
        if publisher.send(crash).is_err() {
            anyhow::bail!("the ring's owner thread stopped at start");
        }
    }
    // The watcher: the rules' roots and the --watch roots; never the service's own files.
    let mut roots = rules.roots();
    for r in &cfg.watch {
        if !roots.contains(r) {
            roots.push(r.clone());
        }
    }
    if !cfg.watch.contains(&synthetic_root) {
        roots.retain(|r| r != &synthetic_root);
    }
    let mut ignore: Vec<PathBuf> = companion_files(&cfg.db).to_vec();
    ignore.push(lease_path(&cfg.db));
    let index_path = index_path(&cfg.db);
    let (watcher, watch_rx) = if roots.is_empty() {
        (None, None)
    } else {
        let (w, rx) = Watcher::start(WatchConfig {
            roots: roots.clone(),
            ignore,
            index_path: Some(index_path),
            backend: cfg.backend,
            ..WatchConfig::default()
        })?;
        (Some(Arc::new(w)), Some(rx))
    };
    let (filter_watcher, reloads) = match FilterWatcher::spawn(&cfg.filters, &rules) {
        Ok((w, rx)) => (Some(w), Some(rx)),
        Err(e) => {
            tracing::warn!("filter documents will not be reloaded live: {e}");
            (None, None)
        }
    };
    let (synthetic, synth_rx) = match cfg.synthetic {
        Some(rate) => {
            let (s, rx) = synthetic::start(synthetic_root.clone(), rate, cfg.synthetic_path_len)?;
            (Some(s), Some(rx))
        }
        None => (None, None),
    };
    let stats = Arc::new(pipeline::PipelineStats::default());
    let info = info::Info {
        db: cfg.db.clone(),
        writer: writer.clone(),
        lease: lease.clone(),
        watcher: watcher.clone(),
        stats: stats.clone(),
        published: publisher.stats().clone(),
    };
    let fd_limit = raise_fd_limit().unwrap_or(1024);
    let server_config = ServerConfig {
        access,
        max_connections: (fd_limit.saturating_sub(128) / FDS_PER_CONNECTION).max(8) as usize,
        lossless_uids: cfg.allow_lossless_uid.clone(),
        instance_id: writer.instance_id().to_be_bytes(),
        ..ServerConfig::default()
    };
    let mut server = Server::new(
        bound.listener.try_clone()?,
        link,
        Box::new(info),
        server_config,
    )?;
    server.stop_when_readable(stop_pipe);
    let mut pipe = pipeline::Pipeline::new(
        rules,
        writer.clone(),
        publisher,
        lease.clone(),
        watcher.clone(),
        rule_roots,
        recovery.next_seq,
        stats,
    );
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let inputs = pipeline::Inputs {
        watch: watch_rx,
        synthetic: synth_rx,
        reloads,
        stop: stop_rx,
    };
    let pipe_thread = std::thread::Builder::new()
        .name("firehose-pipeline".into())
        .spawn(move || {
            pipe.run(inputs);
            pipe
        })?;
    tracing::info!(
        "firehosed {} serving {} (pid {}), roots {:?}, database {}, ring {} KiB, next seq {}",
        env!("CARGO_PKG_VERSION"),
        cfg.socket.display(),
        std::process::id(),
        roots,
        cfg.db.display(),
        cfg.ring_size >> 10,
        recovery.next_seq
    );
    notify::notify("READY=1");
    // Nothing here polls: the loop sleeps until a client, the ring's owner, a query worker,
    // a due timer or the stop pipe has something for it.
    while !server.stop_requested() {
        if let Err(e) = server.poll_once(Duration::from_secs(3600)) {
            tracing::error!("the control socket loop failed: {e}");
            break;
        }
    }
    tracing::info!("shutting down");
    notify::notify("STOPPING=1");
    drop(synthetic);
    drop(filter_watcher);
    let _ = stop_tx.send(());
    let pipe = pipe_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
    let next_seq = pipe.next_seq();
    let publisher = pipe.into_publisher();
    // Readers read the ring to its end, then learn it closed; clients are told why.
    publisher.finish();
    server.shutdown();
    drop(server);
    drop(watcher);
    match Arc::try_unwrap(writer) {
        Ok(w) => w.shutdown().context("flushing the history database")?,
        Err(w) => w.flush().context("flushing the history database")?,
    }
    match Arc::try_unwrap(lease) {
        Ok(l) => l.close_clean(next_seq)?,
        Err(_) => tracing::warn!("the lease is still shared; not marked clean"),
    }
    drop(bound);
    tracing::info!("stopped at seq {next_seq}");
    Ok(())
}
