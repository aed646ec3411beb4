//! `firehose query`: asks the history and prints rows page by page as they arrive (a
//! million-row answer is never held whole).

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use firehose_consumer::{
    Client, ConnectOptions, EventKind, FileEvent, HistoryQuery, OwnedEvent, QueryEnd, QueryPage,
};

use super::render::{write_event, Style};
use super::{code, Cli};
use firehose_consumer::time::parse_time;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// First seq (inclusive).
    #[arg(long, value_name = "N")]
    since_seq: Option<u64>,
    /// Last seq (inclusive).
    #[arg(long, value_name = "N")]
    until_seq: Option<u64>,
    /// From this time: RFC 3339 (2026-12-01T06:19:16Z) or relative (30s, 10m, 2h, 3d, 1w ago).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Up to this time, as --since.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only paths matching this glob.
    #[arg(long, value_name = "GLOB")]
    path: Option<String>,
    /// Only this kind (repeatable): create, modify, close_write, metadata, remove, rename,
    /// overflow, gap, other.
    #[arg(long, value_name = "K")]
    kind: Vec<String>,
    /// At most this many rows.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// NDJSON output, the same fields as `tail --json`.
    #[arg(long)]
    json: bool,
    /// Read the fleet-wide JetStream stream at this server instead of this service's
    /// history (what `firehose export nats` wrote); lines then say their host.
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// With --nats: only this host [default: every host].
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "NAME", requires = "nats")]
    host: Option<String>,
    /// With --nats: the stream.
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "NAME", default_value = "FIREHOSE")]
    stream: String,
    /// With --nats: instead of the rows, how long the records took from the service into
    /// the stream, per host (median, p99, max).
    #[cfg(feature = "nats")]
    #[arg(long, requires = "nats")]
    export_delay: bool,
}

fn build(a: &Args) -> anyhow::Result<HistoryQuery> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let time = |t: &Option<String>| -> anyhow::Result<Option<u64>> {
        t.as_deref()
            .map(|t| parse_time(t, now).map_err(anyhow::Error::from))
            .transpose()
    };
    let (since, until) = (time(&a.since)?, time(&a.until)?);
    let mut kinds = 0u32;
    for k in &a.kind {
        let Some(kind) = EventKind::from_name(k) else {
            bail!("unknown kind {k:?}: one of create, modify, close_write, metadata, remove, rename, overflow, gap, other");
        };
        kinds |= 1 << kind as u8;
    }
    Ok(HistoryQuery {
        id: 1,
        seq: (a.since_seq.is_some() || a.until_seq.is_some())
            .then(|| (a.since_seq.unwrap_or(0), a.until_seq.unwrap_or(u64::MAX))),
        time_ns: (since.is_some() || until.is_some())
            .then(|| (since.unwrap_or(0), until.unwrap_or(u64::MAX))),
        glob: a.path.clone(),
        kinds,
        limit: a.limit.unwrap_or(0),
    })
}

pub(crate) fn run(cli: &Cli, a: &Args) -> anyhow::Result<i32> {
    let q = build(a)?;
    #[cfg(feature = "nats")]
    if let Some(url) = &a.nats {
        return super::nats::fleet::run(&super::nats::fleet::FleetQuery {
            server: super::nats::Server {
                url: url.clone(),
                stream: a.stream.clone(),
            },
            host: a.host.as_deref(),
            query: q,
            json: a.json,
            delay: a.export_delay,
        });
    }
    let path = cli.socket()?;
    let opts = ConnectOptions {
        name: "firehose query".into(),
        ..ConnectOptions::default()
    };
    let mut client: Client<FileEvent> = Client::connect(&path, &opts)?;
    let style = if a.json { Style::Json } else { Style::Plain };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 << 10, out.lock());
    let mut end = QueryEnd::Complete;
    for page in client.query_pages(q, Duration::from_secs(60))? {
        match page.context("reading the answer")? {
            QueryPage::Rows(rows) => {
                for row in rows {
                    let ev = OwnedEvent::from_row(row);
                    write_event(&mut out, &style, &ev.as_event())?;
                }
                out.flush()?;
            }
            QueryPage::End(e) => end = e,
        }
    }
    out.flush()?;
    Ok(match end {
        QueryEnd::Complete => code::OK,
        QueryEnd::Limit => {
            eprintln!("firehose: --limit reached; there may be more rows");
            code::OK
        }
        QueryEnd::Truncated { oldest } => {
            eprintln!(
                "firehose: history no longer reaches back that far; it starts at seq {oldest}"
            );
            code::OK
        }
        QueryEnd::Unavailable => {
            eprintln!(
                "firehose: this service has no history to query (or too many queries at once)"
            );
            code::DISCONNECTED
        }
        QueryEnd::Invalid => {
            eprintln!("firehose: the service refused the query as invalid (check --path's glob)");
            code::ERROR
        }
    })
}
