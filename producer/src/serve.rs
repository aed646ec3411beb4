//! `firehosed serve`: the control socket over a ring fed with synthetic file events (the
//! watcher comes later). Clients connect with `firehose tail`, `firehose status`, or the
//! consumer library.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use firehose_transport::control::place::{bind, default_socket_path, Access};
use firehose_transport::control::server::{
    raise_fd_limit, NoHistory, Server, ServerConfig, FDS_PER_CONNECTION,
};
use firehose_transport::record::FileEvent;
use firehose_transport::ring::{Producer, PublishError, RingConfig};

use crate::demo::event;

/// Options of `firehosed serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// Control socket path [default: $XDG_RUNTIME_DIR/firehose/firehose.sock, else
    /// /tmp/firehose-<uid>/firehose.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Synthetic file events per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Ring capacity in bytes (a power of two).
    #[arg(long, default_value_t = 4 << 20)]
    capacity: usize,
    /// Another uid that may connect (repeatable).
    #[arg(long = "allow-uid")]
    allow_uids: Vec<u32>,
    /// A gid whose members may connect (repeatable).
    #[arg(long = "allow-gid")]
    allow_gids: Vec<u32>,
    /// Most lossless readers at once.
    #[arg(long, default_value_t = 4)]
    max_lossless: usize,
    /// Seconds a lossless reader may hold the ring back without progress before it is cut off.
    #[arg(long, default_value_t = 3)]
    lossless_window: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Relaxed: a flag polled by the event loop; only async-signal-safe work here.
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("installing a {sig} handler"))?;
    }
    Ok(())
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let path = match args.socket {
        Some(p) => p,
        None => default_socket_path()?,
    };
    let access = Access {
        allow_uids: args.allow_uids,
        allow_gids: args.allow_gids,
    };
    let bound = bind(&path, &access)?;
    let fd_limit = raise_fd_limit().unwrap_or(1024);
    let producer = Arc::new(Mutex::new(
        Producer::<FileEvent>::new(RingConfig {
            capacity: args.capacity,
            lossless_wait: Duration::ZERO,
            ..RingConfig::default()
        })
        .context("creating the ring")?,
    ));
    let mut instance_id = [0u8; 16];
    instance_id[..8].copy_from_slice(&std::process::id().to_le_bytes().repeat(2));
    instance_id[8..].copy_from_slice(&now_ns().to_le_bytes());
    let config = ServerConfig {
        access,
        max_connections: (fd_limit.saturating_sub(64) / FDS_PER_CONNECTION) as usize,
        max_lossless: args.max_lossless,
        progress_window: Duration::from_secs(args.lossless_window),
        instance_id,
        ..ServerConfig::default()
    };
    let max_connections = config.max_connections;
    let mut server = Server::new(
        bound.listener.try_clone()?,
        producer.clone(),
        Box::new(NoHistory),
        config,
    )?;
    install_signal_handlers()?;
    println!(
        "firehosed: serving {} (pid {}), {} synthetic events/s, ring {} KiB, up to {max_connections} clients",
        path.display(),
        std::process::id(),
        args.rate,
        args.capacity >> 10
    );
    let publisher = {
        let producer = producer.clone();
        let rate = args.rate;
        std::thread::spawn(move || publish_synthetic(&producer, rate))
    };
    while !STOP.load(Ordering::Relaxed) {
        server.poll_once(Duration::from_millis(100))?;
    }
    println!("firehosed: shutting down");
    server.shutdown();
    producer.lock().unwrap_or_else(|e| e.into_inner()).close();
    let _ = publisher.join();
    Ok(())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Publishes `rate` events per second, a tick's worth every millisecond. The service never
/// waits for a reader: a record a lossless reader has no room for is not made (no seq is
/// spent on it) and is retried on the next tick.
fn publish_synthetic(producer: &Mutex<Producer<FileEvent>>, rate: u64) {
    let start = Instant::now();
    let mut made = 0u64;
    while !STOP.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if due > made {
            let mut p = producer.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_ns();
            while made < due {
                let seq = p.next_seq();
                match p.stage(&event(seq, now)) {
                    Ok(_) => made += 1,
                    Err(PublishError::Backpressure { .. }) => break,
                    Err(_) => return,
                }
            }
            let _ = p.commit();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
