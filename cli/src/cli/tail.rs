//! `firehose tail`: prints events as they arrive.

use std::io::Write;
use std::time::Duration;

use firehose_consumer::{Options, Policy, Start};

use super::render::{parse_format, write_event, Style};
use super::{code, Cli};

pub(crate) const HELP: &str = "\
Output:
  default   one line per record: time (RFC 3339, UTC), kind, path [-> new path], rule;
            notices as lines starting with `-- `
  --json    one JSON object per line (NDJSON) with exactly the fields
              seq, time (\"2026-12-01T06:19:16.123456789Z\"), kind (create, modify,
              close_write, metadata, remove, rename, overflow, gap, other), path,
              to (renames only), rule, size (null if unknown);
            notices: {\"lagged\":{\"from\":N,\"to\":M}}, {\"gap\":{\"from\":N,\"to\":M,\"reason\":R}}
            (R: crash, not_stored, not_streamed, writer_overflow, retention, store_failed),
            {\"missing\":..}, {\"truncated\":{\"oldest\":N}}, {\"disconnected\":{\"reason\":..}},
            {\"reconnected\":{\"start_seq\":N}}
  --format  a template, in the spirit of inotifywait's --format (notices go to stderr):
              %w  the directory, with a trailing slash     %f  the file name
              %e  event names, inotifywait style: CREATE, MODIFY, CLOSE_WRITE,CLOSE,
                  ATTRIB, DELETE, MOVED_FROM,MOVED_TO (a rename is one record: %w%f
                  is the old path, %t the new one), Q_OVERFLOW, UNKNOWN
              %T  the time (RFC 3339, UTC, ns)   %s  seq   %r  rule   %z  size
              %t  a rename's new path            %%  a percent sign
            e.g. --format '%w%f %e'

--backfill reads from history first (from --from-seq, else from the oldest stored record),
then live; it never misses a stored record, reconnects by itself when the service
restarts, and resumes after the last seq it printed.

Exit codes:
  0  --count reached, or stdout closed (e.g. `| head`)
  1  the service cannot be reached (not running, not allowed, no socket)
  2  usage or other error
  3  disconnected by the service (without --backfill); the reason is printed
  4  the service's history is another instance than the one being read

Paths are printed losslessly: valid UTF-8 as it is, a backslash as \\\\, and every byte that is
not valid UTF-8 as \\xNN (in JSON too, inside the string).";

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// NDJSON output (see below).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// A template for each record (see below).
    #[arg(long, value_name = "FMT")]
    format: Option<String>,
    /// Start at this seq (records before the live head come from history).
    #[arg(long, value_name = "N")]
    from_seq: Option<u64>,
    /// Never miss a stored record: backfill lag and restarts from history, reconnect.
    #[arg(long)]
    backfill: bool,
    /// Read losslessly (the service holds back for this reader, within its budget).
    #[arg(long)]
    lossless: bool,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

pub(crate) fn run(cli: &Cli, a: &Args) -> anyhow::Result<i32> {
    let style = match (&a.format, a.json) {
        (Some(f), _) => Style::Format(parse_format(f).map_err(anyhow::Error::msg)?),
        (None, true) => Style::Json,
        (None, false) => Style::Plain,
    };
    let start = match (a.from_seq, a.backfill) {
        (Some(n), _) => Start::Seq(n),
        (None, true) => Start::Oldest,
        (None, false) => Start::Newest,
    };
    let mut f = Options::new()
        .socket(cli.socket()?)
        .name("firehose tail")
        .policy(if a.lossless {
            Policy::Lossless
        } else {
            Policy::Lagging
        })
        .start(start)
        .backfill(a.backfill || a.from_seq.is_some())
        .reconnect(a.backfill)
        .connect()?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 << 10, out.lock());
    let mut printed = 0u64;
    if a.count == Some(0) {
        return Ok(code::OK);
    }
    super::exit_when_stdout_closes();
    loop {
        // No timer: records, the service's words, or stdout's reader going away (the
        // watcher thread) are what end a wait.
        let evs = f.recv_timeout(4096, Duration::from_secs(3600))?;
        let idle = evs.is_empty();
        for ev in evs {
            if write_event(&mut out, &style, &ev)? {
                printed += 1;
                if a.count.is_some_and(|c| printed >= c) {
                    out.flush()?;
                    return Ok(code::OK);
                }
            }
        }
        out.flush()?;
        if idle && super::stdout_closed() {
            return Ok(code::OK);
        }
    }
}
