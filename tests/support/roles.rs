//! The control-socket roles of the test child: a service and a client.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use firehose_tests::payload;
use firehose_transport::control::client::{Client, ConnectOptions};
use firehose_transport::control::place::{bind, Access};
use firehose_transport::control::server::{
    raise_fd_limit, NoHistory, Server, ServerConfig, FDS_PER_CONNECTION,
};
use firehose_transport::publisher::progress::ProgressConfig;
use firehose_transport::publisher::{Item, Publisher, PublisherConfig};
use firehose_transport::ring::{Event, Policy, Producer, RingConfig};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn nums(args: &[String], name: &str) -> Vec<u32> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .filter_map(|w| w[1].parse().ok())
        .collect()
}

/// `service --socket PATH [--capacity B] [--window-ms MS] [--max-lossless N]
/// [--allow-uid U]... [--allow-gid G]... [--lossless-uid U]... [--pace-us US]`:
/// binds the socket, publishes `payload(seq)` records forever (a batch of 64 every pace),
/// serves the control socket, prints `ready` and, on each line read from stdin, `stats ...`.
pub(crate) fn service(args: &[String]) -> anyhow::Result<()> {
    let path = PathBuf::from(arg(args, "--socket").context("--socket")?);
    let access = Access {
        allow_uids: nums(args, "--allow-uid"),
        allow_gids: nums(args, "--allow-gid"),
    };
    let bound = bind(&path, &access).context("binding the socket")?;
    let limit = raise_fd_limit().unwrap_or(1024);
    let producer = Producer::<Vec<u8>>::new(RingConfig {
        capacity: num(args, "--capacity", 1 << 20) as usize,
        max_record: 4096,
        batch_bytes: 16 << 10,
        lossless_wait: Duration::ZERO,
        first_seq: 1,
    })?;
    let (publisher, link) = Publisher::start(
        producer,
        PublisherConfig {
            queue: 1024,
            progress: ProgressConfig {
                window: Duration::from_millis(num(args, "--window-ms", 300)),
                min_progress: 64 << 10,
            },
            ..PublisherConfig::default()
        },
    )?;
    let publisher = Arc::new(publisher);
    let mut lossless_uids = nums(args, "--lossless-uid");
    lossless_uids.push(nix::unistd::geteuid().as_raw());
    let config = ServerConfig {
        access,
        max_connections: ((limit.saturating_sub(64)) / FDS_PER_CONNECTION) as usize,
        max_lossless: num(args, "--max-lossless", 4) as usize,
        lossless_uids,
        cooldown: Duration::from_secs(60),
        hello_timeout: Duration::from_millis(num(args, "--hello-ms", 1000)),
        ..ServerConfig::default()
    };
    let mut server = Server::new(
        bound.listener.try_clone()?,
        link,
        Box::new(NoHistory),
        config,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let pace = Duration::from_micros(num(args, "--pace-us", 1000));
    // The feeder waits while the owner's queue is full (`send`), as the old producer did
    // under backpressure: a lossless reader in budget holds the stream back, losing nothing.
    let feeder = {
        let publisher = publisher.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seq = 1u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    let item = Item::Record {
                        seq,
                        value: payload(seq),
                    };
                    if publisher.send(item).is_err() {
                        return;
                    }
                    seq += 1;
                }
                std::thread::sleep(pace);
            }
        })
    };
    println!("ready");
    std::io::stdout().flush()?;
    // Stats on request: a line on stdin asks, EOF stops.
    let (tx, rx) = std::sync::mpsc::channel::<bool>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() || tx.send(true).is_err() {
                break;
            }
        }
        let _ = tx.send(false);
    });
    loop {
        server.poll_once(Duration::from_millis(20))?;
        match rx.try_recv() {
            Ok(true) => {
                let st = server.stats();
                let ps = publisher.stats();
                let snap = publisher.snapshot().context("the ring's owner is gone")?;
                println!(
                    "stats connections={} readers={} epoch={} cut_off={} refused={} busy={} protocol_errors={} next_seq={} fds={} rss_kib={}",
                    server.connection_count(),
                    // Departed lossless readers count until released: they still pin their pages.
                    snap.readers.len(),
                    snap.epoch,
                    ps.cut_off.load(Ordering::Relaxed),
                    st.refused,
                    st.busy,
                    st.protocol_errors,
                    snap.committed_seq,
                    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
                    rss_kib(),
                );
                std::io::stdout().flush()?;
            }
            Ok(false) => break,
            Err(_) => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.shutdown();
    let _ = feeder.join();
    if let Ok(p) = Arc::try_unwrap(publisher) {
        p.finish();
    }
    Ok(())
}

/// `client --socket PATH --policy lossless|lagging (--records N | --idle | --stall)`.
pub(crate) fn client(args: &[String]) -> anyhow::Result<()> {
    let path = PathBuf::from(arg(args, "--socket").context("--socket")?);
    let policy = match arg(args, "--policy").as_deref() {
        Some("lossless") => Policy::Lossless,
        _ => Policy::Lagging,
    };
    // Drop privileges first if asked (the tests run as root): become `--as-uid`, with
    // `--group` supplementary groups and the uid as primary group.
    if let Some(uid) = arg(args, "--as-uid").and_then(|v| v.parse::<u32>().ok()) {
        let groups: Vec<nix::unistd::Gid> = nums(args, "--group")
            .into_iter()
            .map(nix::unistd::Gid::from_raw)
            .collect();
        nix::unistd::setgroups(&groups).context("setgroups")?;
        nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).context("setgid")?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).context("setuid")?;
    }
    let opts = ConnectOptions {
        name: "test child".into(),
        policy,
        ..ConnectOptions::default()
    };
    let mut c: Client<Vec<u8>> = match Client::connect(&path, &opts) {
        Ok(c) => c,
        Err(e) => {
            let not_allowed = matches!(
                e,
                firehose_transport::control::client::ClientError::Connect(
                    firehose_transport::control::peer::ConnectError::NotAllowed { .. }
                )
            );
            println!(
                "refused={:?} not_allowed_at_connect={not_allowed} error={e}",
                e.disconnect_reason()
            );
            return Ok(());
        }
    };
    println!("connected reader={}", c.welcome().reader_id);
    std::io::stdout().flush()?;
    if args.iter().any(|a| a == "--trickle") {
        // Reads one record every 20 ms: enough to dodge a plain timeout, far too little
        // to keep up.
        let reason = loop {
            match c.recv(1) {
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => break e,
            }
        };
        println!("disconnected={:?}", reason.disconnect_reason());
        return Ok(());
    }
    if args.iter().any(|a| a == "--stall") {
        return stall(&mut c, args.iter().any(|a| a == "--half-close"));
    }
    let want = num(args, "--records", u64::MAX);
    let mut got = 0u64;
    let mut next = c.welcome().start_seq;
    let reason = loop {
        if got >= want {
            break None;
        }
        match c.recv(256) {
            Ok(b) => {
                for e in &b {
                    match e {
                        Event::Record(r) => {
                            if r.seq() != next
                                || r.access()?.as_slice() != payload(r.seq()).as_slice()
                            {
                                bail!("record {} wrong (expected seq {next})", r.seq());
                            }
                            next += 1;
                            got += 1;
                        }
                        Event::Lagged { to, .. } | Event::Gap { to, .. } => next = to + 1,
                    }
                }
            }
            Err(e) => break Some(e),
        }
    };
    match reason {
        None => {
            println!("records={got}");
            c.bye();
        }
        Some(e) => println!(
            "disconnected={:?} records={got} error={e}",
            e.disconnect_reason()
        ),
    }
    Ok(())
}

/// Takes one batch and holds it (a lossless reader that stops reading); with `half_close`,
/// then shuts its socket for writing (the service sees a disconnect, while this process
/// keeps its mapping and its borrows). On a line from stdin, checks that every held record
/// is still intact, then reads on until disconnected.
fn stall(c: &mut Client<Vec<u8>>, half_close: bool) -> anyhow::Result<()> {
    // The raw fd is a plain number: safe code can keep it while the batch borrows `c`.
    let sock = c.socket_fd().as_raw_fd();
    let (seqs, bytes): (Vec<u64>, Vec<&[u8]>) = {
        let b = c.recv(64)?;
        let recs: Vec<_> = b
            .iter()
            .filter_map(|e| match e {
                Event::Record(r) => Some((r.seq(), r.bytes())),
                _ => None,
            })
            .collect();
        // The borrows outlive the batch value: they borrow the client, like the batch did.
        recs.into_iter().unzip()
    };
    if half_close {
        nix::sys::socket::shutdown(sock, nix::sys::socket::Shutdown::Write)?;
    }
    println!("holding={}", seqs.len());
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let mut intact = 0;
    for (seq, b) in seqs.iter().zip(&bytes) {
        let v = rkyv::access::<rkyv::Archived<Vec<u8>>, rkyv::rancor::Error>(b)?;
        if v.as_slice() == payload(*seq).as_slice() {
            intact += 1;
        }
    }
    println!("intact={intact}/{}", seqs.len());
    let reason = loop {
        match c.recv(4096) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    println!("disconnected={:?}", reason.disconnect_reason());
    Ok(())
}

/// Resident memory of this process, from /proc/self/status.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `sigpipe-host`: a host that embeds the producer with `SIGPIPE` at its default action (as
/// a C program would). A reader raises its sleeping flag and closes its wake fd; the
/// producer then publishes, which wakes it. Prints `survived` if the process lives.
pub(crate) fn sigpipe_host() -> anyhow::Result<()> {
    // SAFETY: setting a signal's disposition to its default has no memory-safety
    // preconditions; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut p = Producer::<Vec<u8>>::new(RingConfig::default())?;
    let fds = p.attach_remote(Policy::Lagging)?;
    let mut r = firehose_transport::ring::Reader::<Vec<u8>>::open(fds)?;
    r.set_spin(0);
    assert!(r.prepare_wait(), "nothing to read yet");
    drop(r); // closes the reader's end of its wake channel, with its flag raised
    p.publish(&payload(1))?;
    p.publish(&payload(2))?;
    println!("survived");
    Ok(())
}
