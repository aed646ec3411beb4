//! `firehose query --nats URL [--host H]`: reads the fleet-wide stream back, with the same
//! filters as a history query, and prints the same formats (each line says its host).
//!
//! It reads what the stream holds when the query starts (an ordered consumer on
//! `firehose.<host>.>`, or every host's `firehose.*.>`) and ends there.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::consumer;
use firehose_consumer::{unescape_path, EventKind, HistoryQuery};
use serde_json::Value;

use super::{checked_host, Server};
use crate::cli::code;

/// One fleet query: where, which hosts, what to keep, how to print.
#[derive(Debug)]
pub(crate) struct FleetQuery<'a> {
    pub(crate) server: Server,
    pub(crate) host: Option<&'a str>,
    pub(crate) query: HistoryQuery,
    pub(crate) json: bool,
    /// Print, instead of the rows, how long the kept records took from the service to
    /// the stream (median, p99, max per host).
    pub(crate) delay: bool,
}

pub(crate) fn run(q: &FleetQuery<'_>) -> anyhow::Result<i32> {
    let host = q.host.map(checked_host).transpose()?;
    let glob = match &q.query.glob {
        Some(g) => Some(
            firehose_consumer::path_glob::compile(g)
                .with_context(|| format!("--path {g:?} is not a valid glob"))?,
        ),
        None => None,
    };
    let keep = Keep {
        q: &q.query,
        glob: glob.as_ref(),
    };
    let rt = super::runtime()?;
    rt.block_on(read(q, host.as_deref(), &keep))
}

struct Keep<'a> {
    q: &'a HistoryQuery,
    glob: Option<&'a firehose_consumer::path_glob::GlobMatcher>,
}

impl Keep<'_> {
    /// Whether a message passes the filters (the same ones the service's history applies).
    fn keeps(&self, v: &Value) -> bool {
        let q = self.q;
        if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
            if let Some((lo, hi)) = q.seq {
                if seq < lo || seq > hi {
                    return false;
                }
            }
            let kind = v
                .get("kind")
                .and_then(Value::as_str)
                .and_then(EventKind::from_name);
            if q.kinds != 0 && kind.is_none_or(|k| q.kinds & (1 << k as u8) == 0) {
                return false;
            }
            if let Some((lo, hi)) = q.time_ns {
                let t = v
                    .get("time")
                    .and_then(Value::as_str)
                    .and_then(|t| firehose_consumer::time::parse_time(t, 0).ok());
                if !t.is_some_and(|t| t >= lo && t <= hi) {
                    return false;
                }
            }
            if let Some(g) = self.glob {
                let matches = |field: &str| {
                    v.get(field)
                        .and_then(Value::as_str)
                        .and_then(unescape_path)
                        .is_some_and(|raw| g.is_match(Path::new(OsStr::from_bytes(&raw))))
                };
                let empty = v.get("path").and_then(Value::as_str) == Some("");
                if !(empty || matches("path") || matches("to")) {
                    return false;
                }
            }
            return true;
        }
        // A notice (gap, missing, not stored, truncated, lagged): what a host missed. It
        // stays unless the kinds asked for leave out gaps, or it lies outside the seqs.
        if q.kinds != 0 && q.kinds & (1 << EventKind::Gap as u8) == 0 {
            return false;
        }
        if let (Some((lo, hi)), Some((from, to))) = (q.seq, notice_range(v)) {
            if to < lo || from > hi {
                return false;
            }
        }
        true
    }
}

/// A notice's seq range.
fn notice_range(v: &Value) -> Option<(u64, u64)> {
    let (_, body) = v.as_object()?.iter().next()?;
    if let Some(o) = body.get("oldest").and_then(Value::as_u64) {
        return Some((0, o.saturating_sub(1)));
    }
    Some((body.get("from")?.as_u64()?, body.get("to")?.as_u64()?))
}

async fn read(q: &FleetQuery<'_>, host: Option<&str>, keep: &Keep<'_>) -> anyhow::Result<i32> {
    let js = super::connect(&q.server.url, "firehose query", false).await?;
    let stream = js.get_stream(&q.server.stream).await.with_context(|| {
        format!(
            "the JetStream stream {} (has an exporter run yet?)",
            q.server.stream
        )
    })?;
    let filter = match host {
        Some(h) => format!("firehose.{h}.>"),
        None => "firehose.*.>".to_string(),
    };
    let config = consumer::pull::OrderedConfig {
        filter_subject: filter,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 << 10, out.lock());
    let limit = q.query.limit;
    let mut printed = 0u64;
    let mut delays: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    super::read_ordered(&stream, config, Duration::from_secs(10), |m| {
        let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let v = match serde_json::from_slice::<Value>(&m.payload) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "firehose: message {} on {} is not a record ({e}); skipped",
                    info.stream_sequence, m.subject
                );
                return Ok(true);
            }
        };
        if !keep.keeps(&v) {
            return Ok(true);
        }
        let host = m.subject.split('.').nth(1).unwrap_or("?");
        if q.delay {
            let t = v
                .get("time")
                .and_then(Value::as_str)
                .and_then(|t| firehose_consumer::time::parse_time(t, 0).ok());
            if let Some(t) = t {
                let stored = info.published.unix_timestamp_nanos().max(0) as u64;
                delays
                    .entry(host.to_string())
                    .or_default()
                    .push(stored.saturating_sub(t));
            }
            return Ok(true);
        }
        write_line(&mut out, host, &v, q.json)?;
        printed += 1;
        if limit > 0 && printed >= limit {
            if info.pending > 0 {
                eprintln!("firehose: --limit reached; there may be more rows");
            }
            return Ok(false);
        }
        Ok(true)
    })
    .await?;
    for (host, mut d) in delays {
        d.sort_unstable();
        let at = |q: f64| d[((d.len() - 1) as f64 * q) as usize] as f64 / 1e6;
        writeln!(
            out,
            "{host}: {} records, service to stream: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            d.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        )?;
    }
    out.flush()?;
    Ok(code::OK)
}

/// One line: the `tail --json` object with `"host"` first, or the plain line with the host
/// in front.
fn write_line(out: &mut impl Write, host: &str, v: &Value, json: bool) -> std::io::Result<()> {
    if json {
        let mut o = serde_json::Map::new();
        o.insert("host".into(), Value::String(host.into()));
        if let Some(m) = v.as_object() {
            o.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        return writeln!(out, "{}", Value::Object(o));
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    if v.get("seq").is_some() {
        write!(out, "{host} {} {:<11} {}", s("time"), s("kind"), s("path"))?;
        if v.get("to").is_some() {
            write!(out, " -> {}", s("to"))?;
        }
        if v.get("blind").is_some() {
            write!(out, "  ({}", s("blind"))?;
            if v.get("since").is_some() {
                write!(out, " since {}", s("since"))?;
            }
            write!(out, ")")?;
        }
        if v.get("reconciled").is_some() {
            write!(out, "  reconciled")?;
        }
        return writeln!(out, "  rule {}", v.get("rule").unwrap_or(&Value::Null));
    }
    let Some((what, body)) = v.as_object().and_then(|o| o.iter().next()) else {
        return writeln!(out, "-- {host}: {v}");
    };
    let n = |k: &str| body.get(k).and_then(Value::as_u64).unwrap_or(0);
    let reason = body.get("reason").and_then(Value::as_str).unwrap_or("");
    match what.as_str() {
        "gap" => writeln!(out, "-- {host}: gap {}..={}: {reason}", n("from"), n("to")),
        "lagged" => writeln!(
            out,
            "-- {host}: lagged {}..={}: missed by the exporter",
            n("from"),
            n("to")
        ),
        "missing" => writeln!(
            out,
            "-- {host}: missing {}..={}: not in history",
            n("from"),
            n("to")
        ),
        "not_stored" => writeln!(
            out,
            "-- {host}: {}..={} not stored: {reason}",
            n("from"),
            n("to")
        ),
        "truncated" => writeln!(out, "-- {host}: history starts at seq {}", n("oldest")),
        _ => writeln!(out, "-- {host}: {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> HistoryQuery {
        HistoryQuery {
            id: 1,
            seq: None,
            time_ns: None,
            glob: None,
            kinds: 0,
            limit: 0,
        }
    }

    fn rec(seq: u64, kind: &str, path: &str) -> Value {
        serde_json::json!({"seq": seq, "time": "2026-12-07T10:00:00.000000000Z", "kind": kind,
            "path": path, "rule": 0, "size": null})
    }

    #[test]
    fn the_filters_are_the_history_querys() {
        let g = firehose_consumer::path_glob::compile("/w/**/*.rs").unwrap();
        let mut hq = q();
        hq.seq = Some((2, 3));
        hq.kinds = 1 << EventKind::Create as u8;
        let k = Keep {
            q: &hq,
            glob: Some(&g),
        };
        assert!(k.keeps(&rec(2, "create", "/w/a/b.rs")));
        assert!(!k.keeps(&rec(1, "create", "/w/a/b.rs")), "seq");
        assert!(!k.keeps(&rec(2, "remove", "/w/a/b.rs")), "kind");
        assert!(!k.keeps(&rec(3, "create", "/w/a/b.txt")), "glob");
        let gap = serde_json::json!({"gap": {"from": 1, "to": 2, "reason": "crash"}});
        assert!(
            !k.keeps(&gap),
            "gaps are left out when only creates are asked for"
        );
        let mut hq = q();
        hq.seq = Some((10, 20));
        let k = Keep { q: &hq, glob: None };
        assert!(!k.keeps(&gap), "outside the seqs");
        assert!(k.keeps(&serde_json::json!({"gap": {"from": 5, "to": 12, "reason": "crash"}})));
        let mut hq = q();
        hq.time_ns = Some((0, 1));
        assert!(
            !Keep { q: &hq, glob: None }.keeps(&rec(2, "create", "/x")),
            "time"
        );
    }

    #[test]
    fn lines_say_their_host() {
        let mut out = Vec::new();
        write_line(&mut out, "h1", &rec(7, "create", "/w/a"), true).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["host"].as_str(), v["seq"].as_u64()),
            (Some("h1"), Some(7))
        );
        out.clear();
        write_line(&mut out, "h1", &rec(7, "create", "/w/a"), false).unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "h1 2026-12-07T10:00:00.000000000Z create      /w/a  rule 0\n"
        );
        out.clear();
        let gap = serde_json::json!({"gap": {"from": 1, "to": 2, "reason": "crash"}});
        write_line(&mut out, "h2", &gap, false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "-- h2: gap 1..=2: crash\n");
    }
}
