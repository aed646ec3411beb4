//! `firehose export nats`: follows the service from the last seq JetStream holds for this
//! host (backfilling from history) and publishes every record, gap and loss notice, exactly
//! once per `(instance, seq)`.
//!
//! Two threads: the follower (blocking, the consumer library) renders each event into its
//! message and hands batches through a bounded channel; the publisher (async-nats on a
//! one-thread runtime) keeps at most `--in-flight` publishes unacknowledged. When the
//! window is full it waits for the oldest acknowledgement, the channel fills, and the
//! follower stops reading: the ring never waits for it (it reads lagging, and the lag is
//! backfilled from history), and memory is bounded by the window and the channel.
//!
//! Exactly once rests on three things (docs/scale-out.md): the message id
//! `<instance>:<seq>` (JetStream drops a resend inside its duplicate window); on start,
//! resuming after the last seq the stream holds for this host; and after a failed
//! acknowledgement, asking the stream which of the unacknowledged messages it did store
//! (by stream sequence, after the last acknowledged one) and sending only the others.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use firehose_consumer::{Event, FollowError, InstanceId, Loss, Options, Policy, Start};
use tokio::sync::mpsc;

use super::{checked_host, this_host, Server, INSTANCE_HEADER, SEQ_HEADER};
use crate::cli::render::{write_event, Style};
use crate::cli::{code, Cli};

/// Messages handed from the follower to the publisher at once, at most.
const BATCH: usize = 4096;
/// Batches waiting between the two, at most.
const CHANNEL_BATCHES: usize = 4;
/// The longest wait between two attempts to send what failed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) server: Server,
    /// This host's name in the subjects (firehose.<host>.<kind>) [default: the host name's
    /// first label, with anything but letters, digits, - and _ made _].
    #[arg(long, value_name = "NAME")]
    pub(crate) host: Option<String>,
    /// Publishes not yet acknowledged, at most (the backpressure window).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub(crate) in_flight: usize,
    /// Write a systemd user unit that runs this export (with these options) and exit.
    #[arg(long)]
    pub(crate) install: bool,
    /// Benchmark: publish this many made-up records (host `<host>-bench`) and print the rate.
    #[arg(long, value_name = "N", hide = true)]
    pub(crate) synthetic: Option<u64>,
}

/// One message, ready to publish.
#[derive(Debug, Clone)]
struct Item {
    subject: String,
    id: String,
    /// The last seq it covers (a record's seq, a notice's `to`).
    covered: u64,
    instance: Arc<str>,
    payload: Bytes,
}

impl Item {
    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", self.id.as_str());
        h.insert(INSTANCE_HEADER, &*self.instance);
        h.insert(SEQ_HEADER, self.covered.to_string().as_str());
        h
    }
}

pub(crate) fn run(cli: &Cli, a: &Args) -> anyhow::Result<i32> {
    let host = match &a.host {
        Some(h) => checked_host(h)?,
        None => this_host(),
    };
    if a.install {
        return super::install::install(cli, a);
    }
    anyhow::ensure!(a.in_flight > 0, "--in-flight must be at least 1");
    let rt = super::runtime()?;
    rt.block_on(export(cli, a, host))
}

async fn export(cli: &Cli, a: &Args, host: String) -> anyhow::Result<i32> {
    let js = super::connect(&a.server.url, "firehose export nats", true).await?;
    let stream = super::ensure_stream(&js, &a.server.stream).await?;
    let (tx, rx) = mpsc::channel::<Vec<Item>>(CHANNEL_BATCHES);
    let started = Instant::now();
    let feeder = if let Some(n) = a.synthetic {
        let host = format!("{host}-bench");
        std::thread::Builder::new()
            .name("synthetic".into())
            .spawn(move || synthetic(&host, n, &tx))?
    } else {
        let resume = resume_point(&stream, &host).await?;
        match resume {
            Some((id, seq)) => eprintln!(
                "firehose: exporting {host} to {} on {}: resuming after seq {seq} of instance {}",
                a.server.stream,
                a.server.url,
                InstanceId(id)
            ),
            None => eprintln!(
                "firehose: exporting {host} to {} on {}: from the oldest stored record",
                a.server.stream, a.server.url
            ),
        }
        let opts = Options::new()
            .socket(cli.socket()?)
            .name(format!(
                "firehose export nats ({} {})",
                a.server.url, a.server.stream
            ))
            .policy(Policy::Lagging)
            .backfill(true)
            .reconnect(true);
        let host = host.clone();
        std::thread::Builder::new()
            .name("follower".into())
            .spawn(move || follow(opts, &host, resume, &tx))?
    };
    let counts = publish(&js, &stream, a.in_flight, rx).await?;
    let _ = feeder.join();
    if a.synthetic.is_some() {
        let s = started.elapsed().as_secs_f64();
        println!(
            "{} records in {s:.2} s: {:.0} records/s ({} in flight at most)",
            counts.published,
            counts.published as f64 / s,
            a.in_flight
        );
    }
    Ok(code::OK)
}

/// After which seq of which instance to go on: the `Firehose-Seq` of the last message the
/// stream holds for this host.
async fn resume_point(
    stream: &stream::Stream,
    host: &str,
) -> anyhow::Result<Option<([u8; 16], u64)>> {
    match stream
        .get_last_raw_message_by_subject(&format!("firehose.{host}.>"))
        .await
    {
        Ok(m) => {
            let inst = m
                .headers
                .get(INSTANCE_HEADER)
                .and_then(|v| super::parse_instance(v.as_str()));
            let seq = m
                .headers
                .get(SEQ_HEADER)
                .and_then(|v| v.as_str().parse::<u64>().ok());
            match (inst, seq) {
                (Some(i), Some(s)) => Ok(Some((i, s))),
                _ => anyhow::bail!(
                    "the last message for host {host} in the stream (sequence {}) has no {INSTANCE_HEADER} and {SEQ_HEADER} headers: \
                     something else publishes under firehose.{host}.>",
                    m.sequence
                ),
            }
        }
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context("reading where this host's export stopped")),
    }
}

/// The follower thread: reads from the service and sends rendered messages until the
/// publisher goes away.
fn follow(
    base: Options,
    host: &str,
    mut resume: Option<([u8; 16], u64)>,
    tx: &mpsc::Sender<Vec<Item>>,
) {
    let mut told = false;
    loop {
        let opts = match resume {
            Some((id, seq)) => base
                .clone()
                .start(Start::Seq(seq + 1))
                .expect_instance(InstanceId(id)),
            None => base.clone().start(Start::Oldest),
        };
        let mut f = match opts.connect() {
            Ok(f) => f,
            Err(FollowError::OtherInstance { found, .. }) => {
                // A new history (a new database): its seqs start over under a new id.
                eprintln!("firehose: the service now has history instance {found}; exporting it from its oldest record");
                resume = None;
                continue;
            }
            Err(e) => {
                if !told {
                    eprintln!("firehose: {e}; trying again every second");
                    told = true;
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        told = false;
        let id = f.instance_id();
        let hex: Arc<str> = id.to_string().into();
        loop {
            let evs = match f.recv_timeout(BATCH, Duration::from_secs(3600)) {
                Ok(evs) => evs,
                Err(e) => {
                    eprintln!("firehose: {e}; following again");
                    break;
                }
            };
            let mut batch = Vec::with_capacity(evs.len());
            let mut other = false;
            for ev in evs {
                if let Event::OtherInstance { .. } = ev {
                    other = true;
                    break;
                }
                if let Some(item) = item_for(&ev, host, &hex) {
                    resume = Some((id.0, item.covered));
                    batch.push(item);
                }
            }
            if !batch.is_empty() && tx.blocking_send(batch).is_err() {
                return; // the publisher has ended
            }
            if other {
                resume = None;
                break;
            }
        }
    }
}

/// The message for an event, or `None` for the follower's own news (disconnected,
/// reconnected), which says nothing about the host's history.
fn item_for(ev: &Event<'_>, host: &str, instance: &Arc<str>) -> Option<Item> {
    let (kind, id, covered) = match *ev {
        Event::Record(ref r) => (r.kind().name(), r.seq().to_string(), r.seq()),
        Event::Loss(Loss::Gap { from, to, .. }) => ("gap", format!("gap:{from}-{to}"), to),
        Event::Loss(Loss::StorageGap { from, to, .. }) => {
            ("not_stored", format!("not_stored:{from}-{to}"), to)
        }
        Event::Loss(Loss::Missing { from, to }) => ("missing", format!("missing:{from}-{to}"), to),
        Event::Loss(Loss::Lagged { from, to }) => ("lagged", format!("lagged:{from}-{to}"), to),
        Event::Loss(Loss::Truncated { oldest }) => (
            "truncated",
            format!("truncated:{oldest}"),
            oldest.saturating_sub(1),
        ),
        _ => return None,
    };
    let mut line = Vec::with_capacity(160);
    write_event(&mut line, &Style::Json, ev).ok()?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Some(Item {
        subject: format!("firehose.{host}.{kind}"),
        id: format!("{instance}:{id}"),
        covered,
        instance: instance.clone(),
        payload: Bytes::from(line),
    })
}

/// The benchmark's feeder: `n` made-up create records, under a fresh instance id.
fn synthetic(host: &str, n: u64, tx: &mpsc::Sender<Vec<Item>>) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let instance: Arc<str> = format!("{t:032x}").into();
    let mut seq = 0u64;
    while seq < n {
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH && seq < n {
            seq += 1;
            let line = format!(
                "{{\"seq\":{seq},\"time\":\"2026-12-07T10:00:00.000000000Z\",\"kind\":\"create\",\"path\":\"/bench/d{}/file-{seq}\",\"rule\":0,\"size\":null}}",
                seq % 1000
            );
            batch.push(Item {
                subject: format!("firehose.{host}.create"),
                id: format!("{instance}:{seq}"),
                covered: seq,
                instance: instance.clone(),
                payload: Bytes::from(line),
            });
        }
        if tx.blocking_send(batch).is_err() {
            return;
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    published: u64,
    duplicates: u64,
}

/// The publisher: at most `window` unacknowledged publishes; ends when the feeder does.
async fn publish(
    js: &jetstream::Context,
    stream: &stream::Stream,
    window: usize,
    mut rx: mpsc::Receiver<Vec<Item>>,
) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    // The stream sequence of the last acknowledged message: anything of ours stored since
    // comes after it.
    let mut floor = stream.cached_info().state.last_sequence;
    let mut inflight: VecDeque<(Item, PublishAckFuture)> = VecDeque::with_capacity(window);
    let mut waiting: VecDeque<Item> = VecDeque::new();
    let mut open = true;
    let mut report = Instant::now();
    loop {
        // Take input while there is room (waiting only when nothing is unacknowledged).
        if waiting.is_empty() && open && inflight.len() < window {
            let next = if inflight.is_empty() {
                rx.recv().await
            } else {
                match rx.try_recv() {
                    Ok(b) => Some(b),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            };
            match next {
                Some(b) => waiting.extend(b),
                None if inflight.is_empty() => {
                    open = false;
                }
                None => {}
            }
        }
        while inflight.len() < window {
            let Some(item) = waiting.pop_front() else {
                break;
            };
            match send(js, &item).await {
                Ok(f) => inflight.push_back((item, f)),
                Err(e) => {
                    // Not even handed to the client: send it and what follows again.
                    eprintln!("firehose: a publish could not be sent ({e}); sending again what is not stored");
                    waiting.push_front(item);
                    let items: Vec<Item> = inflight.drain(..).map(|(i, _)| i).collect();
                    let n = resend(js, stream, &mut floor, items).await;
                    counts.published += n;
                    break;
                }
            }
        }
        if inflight.is_empty() {
            if !open && waiting.is_empty() {
                return Ok(counts);
            }
            continue;
        }
        // Wait for the oldest acknowledgement (new input is taken right after it).
        let (item, fut) = inflight.pop_front().expect("not empty");
        match fut.await {
            Ok(ack) => {
                floor = floor.max(ack.sequence);
                counts.published += 1;
                counts.duplicates += u64::from(ack.duplicate);
            }
            Err(e) => {
                eprintln!("firehose: a publish was not acknowledged ({e}); sending again what is not stored");
                let mut items = vec![item];
                items.extend(inflight.drain(..).map(|(i, _)| i));
                counts.published += resend(js, stream, &mut floor, items).await;
            }
        }
        if report.elapsed() >= Duration::from_secs(60) {
            report = Instant::now();
            eprintln!(
                "firehose: {} messages exported ({} resends dropped as duplicates)",
                counts.published, counts.duplicates
            );
        }
    }
}

async fn send(
    js: &jetstream::Context,
    item: &Item,
) -> Result<PublishAckFuture, async_nats::jetstream::context::PublishError> {
    js.publish_with_headers(item.subject.clone(), item.headers(), item.payload.clone())
        .await
}

/// Sends `items` (in order) until every one is stored: before each attempt, asks the stream
/// which of them it already holds. Returns how many it sent and saw acknowledged.
async fn resend(
    js: &jetstream::Context,
    stream: &stream::Stream,
    floor: &mut u64,
    mut items: Vec<Item>,
) -> u64 {
    let mut backoff = Duration::from_millis(100);
    let mut sent = 0;
    loop {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let Some(first) = items.first() else {
            return sent;
        };
        // Every item is this host's: firehose.<host>.<kind>.
        let filter = match first.subject.rsplit_once('.') {
            Some((host, _)) => format!("{host}.>"),
            None => first.subject.clone(),
        };
        let stored = match stored_ids(stream, *floor, filter).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("firehose: cannot ask the stream what it holds yet ({e:#})");
                continue;
            }
        };
        items.retain(|i| !stored.contains(&i.id));
        let mut futs = Vec::with_capacity(items.len());
        let mut ok = true;
        for i in &items {
            match send(js, i).await {
                Ok(f) => futs.push(f),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        let mut done = 0;
        for f in futs {
            match f.await {
                Ok(ack) if ok => {
                    *floor = (*floor).max(ack.sequence);
                    done += 1;
                }
                _ => ok = false,
            }
            if !ok {
                break;
            }
        }
        if ok {
            return sent + done as u64;
        }
        sent += done as u64;
        items.drain(..done);
    }
}

/// The message ids the stream holds on these subjects after stream sequence `floor`.
async fn stored_ids(
    stream: &stream::Stream,
    floor: u64,
    filter: String,
) -> anyhow::Result<HashSet<String>> {
    let mut out = HashSet::new();
    let config = consumer::pull::OrderedConfig {
        filter_subject: filter,
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: floor + 1,
        },
        ..Default::default()
    };
    super::read_ordered(stream, config, Duration::from_secs(5), |m| {
        if let Some(id) = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
            out.insert(id.as_str().to_string());
        }
        Ok(true)
    })
    .await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_notices_get_ids_subjects_and_the_seq_they_cover() {
        let inst: Arc<str> = "ab".repeat(16).into();
        let gap = item_for(
            &Event::Loss(Loss::Gap {
                from: 5,
                to: 9,
                reason: firehose_consumer::GapReason::Crash,
            }),
            "h1",
            &inst,
        )
        .unwrap();
        assert_eq!(gap.subject, "firehose.h1.gap");
        assert_eq!(gap.id, format!("{inst}:gap:5-9"));
        assert_eq!(gap.covered, 9);
        assert_eq!(
            std::str::from_utf8(&gap.payload).unwrap(),
            r#"{"gap":{"from":5,"to":9,"reason":"crash"}}"#
        );
        let t = item_for(&Event::Loss(Loss::Truncated { oldest: 100 }), "h1", &inst).unwrap();
        assert_eq!(
            (t.covered, t.subject.as_str()),
            (99, "firehose.h1.truncated")
        );
        assert!(item_for(&Event::Reconnected { start_seq: 3 }, "h1", &inst).is_none());
    }
}
