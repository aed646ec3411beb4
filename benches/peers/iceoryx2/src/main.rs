//! The iceoryx2 peer of the Firehose bench suite: one binary, one role per process, run by
//! `firehose-bench` (which pins, times and checks it like its own cases).
//!
//! Roles (each prints `ready` once its ports exist, then one `result k=v ...` line):
//! - `sub`: a subscriber that validates (rkyv) and checksums every payload byte; on the
//!   first hello sample it prints `connected` (iceoryx2 drops samples sent before a
//!   subscriber is connected, so nothing is timed before that);
//! - `pub`: a publisher that sends hello samples until `go` arrives on stdin, then records
//!   for `--secs`, one sample per record or (`--batched`) one slice sample of up to 64 KiB
//!   of frames per batch; `--rate` paces records (0: as fast as it can), `--stamped` puts
//!   the publish time in each record for one-way latency;
//! - `echo` / `ping`: round trips, one sample in flight, busy-polling or (`--mode sleep`)
//!   waiting on an iceoryx2 event.
//!
//! Samples of 8 bytes are hellos and samples of 0 bytes end the stream.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use firehose_bench::frames::{write_frame, FRAME_HEADER};
use firehose_bench::os::{mono_ns, pin_to_core, thread_cpu_ns};
use firehose_bench::payload::{access_index, Checker, Pool, StampChecker};
use firehose_bench::stats::{latency_histogram, Percentiles};
use hdrhistogram::Histogram;
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;
use rkyv::util::AlignedVec;

type Pub = Publisher<ipc::Service, [u8], ()>;
type Sub = Subscriber<ipc::Service, [u8], ()>;

/// Bytes of frames in one batched sample (as the ring's and the socket's batches).
const BATCH_BYTES: usize = 64 << 10;
/// Samples a subscriber buffers: 4 MiB of 4 KiB records, as the ring's 4 MiB.
const BUFFER: usize = 1024;
/// Batched samples a subscriber buffers (64 x 64 KiB = 4 MiB).
const BATCH_BUFFER: usize = 64;
const HELLO: &[u8] = b"FHBHELLO";

#[derive(Debug, Default)]
struct Args {
    role: String,
    name: String,
    payload: usize,
    core: usize,
    prefix: String,
    root: String,
    secs: f64,
    rate: f64,
    batched: bool,
    stamped: bool,
    sleep: bool,
}

fn parse() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        role: it.next().context("role")?,
        secs: 1.0,
        ..Args::default()
    };
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--name" => a.name = v()?,
            "--payload" => a.payload = v()?.parse()?,
            "--core" => a.core = v()?.parse()?,
            "--prefix" => a.prefix = v()?,
            "--root" => a.root = v()?,
            "--secs" => a.secs = v()?.parse()?,
            "--rate" => a.rate = v()?.parse()?,
            "--mode" => a.sleep = v()? == "sleep",
            "--batched" => a.batched = true,
            "--stamped" => a.stamped = true,
            _ => bail!("unknown argument {k}"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = parse()?;
    pin_to_core(a.core)?;
    set_log_level(LogLevel::Error);
    let mut config = Config::default();
    config.global.prefix = FileName::new(a.prefix.as_bytes()).map_err(|e| anyhow!("{e:?}"))?;
    config
        .global
        .set_root_path(&Path::new(a.root.as_bytes()).map_err(|e| anyhow!("{e:?}"))?);
    let node = NodeBuilder::new()
        .config(&config)
        .create::<ipc::Service>()
        .map_err(|e| anyhow!("node: {e:?}"))?;
    match a.role.as_str() {
        "sub" => sub(&node, &a),
        "pub" => publish(&node, &a),
        "echo" => echo(&node, &a),
        "ping" => ping(&node, &a),
        r => bail!("unknown role {r}"),
    }
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn service_name(s: &str) -> Result<ServiceName> {
    ServiceName::new(s).map_err(|e| anyhow!("service name {s}: {e:?}"))
}

fn max_len(a: &Args) -> usize {
    if a.batched {
        BATCH_BYTES + firehose_bench::frames::frame_len(a.payload)
    } else {
        a.payload.max(HELLO.len())
    }
}

/// A publish-subscribe service of byte slices, lossless (no safe overflow; publishers
/// retry until delivered), buffering as much as the ring holds.
fn pubsub(
    node: &Node<ipc::Service>,
    name: &str,
    a: &Args,
) -> Result<iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>>
{
    let buffer = if a.batched { BATCH_BUFFER } else { BUFFER };
    node.service_builder(&service_name(name)?)
        .publish_subscribe::<[u8]>()
        .payload_alignment(Alignment::ALIGN_16)
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(buffer)
        .history_size(0)
        .open_or_create()
        .map_err(|e| anyhow!("service {name}: {e:?}"))
}

fn make_pub(
    svc: &iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>,
    a: &Args,
) -> Result<Pub> {
    svc.publisher_builder()
        .initial_max_slice_len(max_len(a))
        .max_loaned_samples(2)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .map_err(|e| anyhow!("publisher: {e:?}"))
}

fn make_sub(
    svc: &iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>,
    a: &Args,
) -> Result<Sub> {
    let buffer = if a.batched { BATCH_BUFFER } else { BUFFER };
    svc.subscriber_builder()
        .buffer_size(buffer)
        .create()
        .map_err(|e| anyhow!("subscriber: {e:?}"))
}

fn listener(node: &Node<ipc::Service>, name: &str) -> Result<Listener<ipc::Service>> {
    let ev = node
        .service_builder(&service_name(name)?)
        .event()
        .open_or_create()
        .map_err(|e| anyhow!("event {name}: {e:?}"))?;
    ev.listener_builder()
        .create()
        .map_err(|e| anyhow!("listener: {e:?}"))
}

fn notifier(node: &Node<ipc::Service>, name: &str) -> Result<Notifier<ipc::Service>> {
    let ev = node
        .service_builder(&service_name(name)?)
        .event()
        .open_or_create()
        .map_err(|e| anyhow!("event {name}: {e:?}"))?;
    ev.notifier_builder()
        .create()
        .map_err(|e| anyhow!("notifier: {e:?}"))
}

fn send(p: &Pub, bytes: &[u8]) -> Result<()> {
    let s = p
        .loan_slice_uninit(bytes.len())
        .map_err(|e| anyhow!("loan: {e:?}"))?;
    s.write_from_slice(bytes)
        .send()
        .map_err(|e| anyhow!("send: {e:?}"))?;
    Ok(())
}

fn notify(n: Option<&Notifier<ipc::Service>>) -> Result<()> {
    if let Some(n) = n {
        n.notify().map_err(|e| anyhow!("notify: {e:?}"))?;
    }
    Ok(())
}

/// The next sample: busy-polls, or waits on `l` between looks.
fn next_sample(
    s: &Sub,
    l: Option<&Listener<ipc::Service>>,
) -> Result<iceoryx2::sample::Sample<ipc::Service, [u8], ()>> {
    loop {
        if let Some(x) = s.receive().map_err(|e| anyhow!("receive: {e:?}"))? {
            return Ok(x);
        }
        match l {
            Some(l) => {
                // Take the activations already there, then look for samples again before
                // sleeping: a sample delivered since the first look (whose activation was
                // just taken) is found now, not after a wake that will never come. The
                // sleep itself is bounded, so even a wake lost inside iceoryx2 costs at most
                // 10 ms, never a hang (a quick run once hung here for minutes with the
                // publisher blocked in its send).
                l.try_wait(|_| {}).map_err(|e| anyhow!("wait: {e:?}"))?;
                if let Some(x) = s.receive().map_err(|e| anyhow!("receive: {e:?}"))? {
                    return Ok(x);
                }
                l.timed_wait(|_| {}, Duration::from_millis(10))
                    .map_err(|e| anyhow!("wait: {e:?}"))?;
            }
            None => std::hint::spin_loop(),
        }
    }
}

fn hist_line(h: &Histogram<u64>) -> String {
    let p = Percentiles::of(h);
    format!(
        "p50={} p99={} p999={} max={} n={}",
        p.p50, p.p99, p.p999, p.max, p.samples
    )
}

fn sub(node: &Node<ipc::Service>, a: &Args) -> Result<()> {
    let svc = pubsub(node, &a.name, a)?;
    let s = make_sub(&svc, a)?;
    let l = if a.sleep {
        Some(listener(node, &format!("{}.ev", a.name))?)
    } else {
        None
    };
    say("ready")?;
    let mut chk = Checker::new(a.payload)?;
    let mut stamps = StampChecker::new(a.payload)?;
    let mut hist = latency_histogram();
    let mut connected = false;
    let mut cpu0 = 0;
    let mut idx = 0u64;
    loop {
        let x = next_sample(&s, l.as_ref())?;
        let bytes = x.payload();
        if bytes.is_empty() {
            break;
        }
        if bytes.len() == HELLO.len() && bytes == HELLO {
            if !connected {
                connected = true;
                cpu0 = thread_cpu_ns();
                say("connected")?;
            }
            continue;
        }
        if a.batched {
            let mut off = 0;
            while off + FRAME_HEADER <= bytes.len() {
                let len = u64::from_le_bytes(bytes[off..off + 8].try_into()?) as usize;
                let seq = u64::from_le_bytes(bytes[off + 8..off + 16].try_into()?);
                ensure!(len == a.payload, "frame of {len} bytes");
                let p = &bytes[off + FRAME_HEADER..off + FRAME_HEADER + len];
                if a.stamped {
                    let t = stamps.record(seq, p)?;
                    hist.record(mono_ns().saturating_sub(t))?;
                } else {
                    chk.record(seq, access_index(p)?, p)?;
                }
                off += firehose_bench::frames::frame_len(len);
            }
            ensure!(off == bytes.len(), "a batch that ends inside a frame");
        } else if a.stamped {
            let t = stamps.record(idx, bytes)?;
            hist.record(mono_ns().saturating_sub(t))?;
            idx += 1;
        } else {
            chk.record(idx, access_index(bytes)?, bytes)?;
            idx += 1;
        }
    }
    let end = mono_ns();
    let tally = if a.stamped { stamps.tally } else { chk.tally };
    say(&format!(
        "result count={} checksum={} end_ns={end} cpu_ns={} {}",
        tally.count,
        tally.checksum,
        thread_cpu_ns() - cpu0,
        hist_line(&hist)
    ))
}

/// Reads `go` from stdin on a thread of its own.
fn go_flag() -> Arc<AtomicBool> {
    let go = Arc::new(AtomicBool::new(false));
    let g = go.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        g.store(true, Ordering::Release);
    });
    go
}

fn publish(node: &Node<ipc::Service>, a: &Args) -> Result<()> {
    let svc = pubsub(node, &a.name, a)?;
    let p = make_pub(&svc, a)?;
    let n = if a.sleep {
        Some(notifier(node, &format!("{}.ev", a.name))?)
    } else {
        None
    };
    let go = go_flag();
    say("ready")?;
    // Hellos until the parent has seen the subscriber receive one.
    let t = Instant::now();
    while !go.load(Ordering::Acquire) {
        ensure!(t.elapsed() < Duration::from_secs(20), "no go");
        p.update_connections()
            .map_err(|e| anyhow!("update connections: {e:?}"))?;
        send(&p, HELLO)?;
        notify(n.as_ref())?;
        std::thread::sleep(Duration::from_micros(200));
    }
    let pool = Pool::new(a.payload)?;
    let mut stamped = AlignedVec::<16>::new();
    let mut batch = AlignedVec::<16>::with_capacity(max_len(a));
    let cpu0 = thread_cpu_ns();
    let start = mono_ns();
    let t0 = Instant::now();
    let secs = Duration::from_secs_f64(a.secs);
    let mut i = 0u64;
    loop {
        let elapsed = t0.elapsed();
        if elapsed >= secs {
            break;
        }
        if a.rate > 0.0 {
            // Paced: record i is due at i / rate.
            let due = Duration::from_secs_f64(i as f64 / a.rate);
            if elapsed < due {
                std::hint::spin_loop();
                continue;
            }
        }
        let n_now = if a.rate > 0.0 { 1 } else { 64 };
        for _ in 0..n_now {
            if a.stamped {
                pool.stamped_into(i, mono_ns(), &mut stamped);
            }
            let bytes: &[u8] = if a.stamped { &stamped } else { pool.bytes(i) };
            if a.batched {
                if batch.len() + firehose_bench::frames::frame_len(a.payload) > BATCH_BYTES {
                    send(&p, &batch)?;
                    notify(n.as_ref())?;
                    batch.clear();
                }
                write_frame(&mut batch, i, bytes)?;
                if a.rate > 0.0 {
                    send(&p, &batch)?;
                    notify(n.as_ref())?;
                    batch.clear();
                }
            } else {
                send(&p, bytes)?;
                notify(n.as_ref())?;
            }
            i += 1;
        }
    }
    if !batch.is_empty() {
        send(&p, &batch)?;
    }
    let end = mono_ns();
    let cpu = thread_cpu_ns() - cpu0;
    send(&p, &[])?;
    notify(n.as_ref())?;
    // The subscriber must read the end marker before the publisher's memory goes away.
    say(&format!(
        "result sent={i} start_ns={start} end_ns={end} cpu_ns={cpu}"
    ))?;
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    Ok(())
}

fn echo(node: &Node<ipc::Service>, a: &Args) -> Result<()> {
    let ping_svc = pubsub(node, &format!("{}.ping", a.name), a)?;
    let pong_svc = pubsub(node, &format!("{}.pong", a.name), a)?;
    let s = make_sub(&ping_svc, a)?;
    let p = make_pub(&pong_svc, a)?;
    let (l, n) = if a.sleep {
        (
            Some(listener(node, &format!("{}.ping.ev", a.name))?),
            Some(notifier(node, &format!("{}.pong.ev", a.name))?),
        )
    } else {
        (None, None)
    };
    say("ready")?;
    let mut chk = Checker::new(a.payload)?;
    loop {
        let x = next_sample(&s, l.as_ref())?;
        let bytes = x.payload();
        if bytes.is_empty() {
            break;
        }
        p.update_connections()
            .map_err(|e| anyhow!("update connections: {e:?}"))?;
        if bytes == HELLO {
            send(&p, HELLO)?;
        } else {
            let i = chk.tally.count;
            chk.record(i, access_index(bytes)?, bytes)?;
            send(&p, chk.pool().bytes(i))?;
        }
        notify(n.as_ref())?;
    }
    say(&format!(
        "result count={} checksum={}",
        chk.tally.count, chk.tally.checksum
    ))
}

fn ping(node: &Node<ipc::Service>, a: &Args) -> Result<()> {
    let ping_svc = pubsub(node, &format!("{}.ping", a.name), a)?;
    let pong_svc = pubsub(node, &format!("{}.pong", a.name), a)?;
    let p = make_pub(&ping_svc, a)?;
    let s = make_sub(&pong_svc, a)?;
    let (l, n) = if a.sleep {
        (
            Some(listener(node, &format!("{}.pong.ev", a.name))?),
            Some(notifier(node, &format!("{}.ping.ev", a.name))?),
        )
    } else {
        (None, None)
    };
    say("ready")?;
    // Handshake: hellos until one comes back.
    let t = Instant::now();
    'hello: loop {
        ensure!(t.elapsed() < Duration::from_secs(20), "no answer to hellos");
        p.update_connections()
            .map_err(|e| anyhow!("update connections: {e:?}"))?;
        send(&p, HELLO)?;
        notify(n.as_ref())?;
        let w = Instant::now();
        while w.elapsed() < Duration::from_millis(2) {
            if let Some(x) = s.receive().map_err(|e| anyhow!("receive: {e:?}"))? {
                if x.payload() == HELLO {
                    break 'hello;
                }
            }
        }
    }
    // Hellos sent while the echo was not yet connected may still come back: drain them.
    std::thread::sleep(Duration::from_millis(5));
    while let Some(x) = s.receive().map_err(|e| anyhow!("receive: {e:?}"))? {
        ensure!(x.payload() == HELLO, "unexpected sample in the handshake");
    }
    let pool = Pool::new(a.payload)?;
    let mut chk = Checker::new(a.payload)?;
    let mut hist = latency_histogram();
    let warm = Duration::from_millis(50);
    let begin = Instant::now();
    let until = begin + warm + Duration::from_secs_f64(a.secs);
    let mut i = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= until {
            break;
        }
        send(&p, pool.bytes(i))?;
        notify(n.as_ref())?;
        let x = next_sample(&s, l.as_ref())?;
        let bytes = x.payload();
        chk.record(i, access_index(bytes)?, bytes)?;
        drop(x);
        if t0 >= begin + warm {
            hist.record(t0.elapsed().as_nanos() as u64)?;
        }
        i += 1;
    }
    send(&p, &[])?;
    notify(n.as_ref())?;
    say(&format!("result {}", hist_line(&hist)))
}
