//! `firehose status`: the service, its ring, its readers and its history, for a person
//! (aligned `label  value` lines) or as JSON. Each field is one entry in `fields`, so a
//! field the service adds to `Status` is one line here.

use firehose_consumer::{
    escape_path, Client, ConnectOptions, FileEvent, Policy, Status, StatusCounters,
};
use serde_json::{json, Value};

use super::{code, Cli};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// JSON output.
    #[arg(long)]
    json: bool,
}

fn policy(p: Policy) -> &'static str {
    match p {
        Policy::Lossless => "lossless",
        Policy::Lagging => "lagging",
    }
}

fn kib(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{:01} s", s, ms % 1000 / 100),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

/// (label, text for a person, JSON key, JSON value) for every field.
fn fields(s: &Status, socket: &str) -> Vec<(&'static str, String, &'static str, Value)> {
    let fill = if s.ring_capacity > 0 {
        format!(
            "{} of {} ({:.0}%) held by the slowest lossless reader",
            kib(s.ring_fill),
            kib(s.ring_capacity),
            s.ring_fill as f64 * 100.0 / s.ring_capacity as f64
        )
    } else {
        "-".into()
    };
    vec![
        ("socket", socket.to_string(), "socket", json!(socket)),
        ("pid", s.pid.to_string(), "pid", json!(s.pid)),
        (
            "uptime",
            uptime(s.uptime_ms),
            "uptime_ms",
            json!(s.uptime_ms),
        ),
        (
            "roots",
            if s.roots.is_empty() {
                "(none)".into()
            } else {
                s.roots.join(", ")
            },
            "roots",
            json!(s.roots),
        ),
        ("rules", s.rules.to_string(), "rules", json!(s.rules)),
        (
            "backend",
            if s.backend.is_empty() {
                "(no watcher)".into()
            } else {
                s.backend.clone()
            },
            "backend",
            json!(s.backend),
        ),
        (
            "rate",
            format!(
                "{} records/s (last minute: {}/s)",
                s.rate_per_s, s.rate_per_min
            ),
            "rate_per_s",
            json!(s.rate_per_s),
        ),
        ("", String::new(), "rate_per_min", json!(s.rate_per_min)),
        (
            "unwatched",
            if s.unwatched_count == 0 {
                "none".into()
            } else {
                let more = s.unwatched_count.saturating_sub(s.unwatched.len() as u64);
                format!(
                    "{} directories ({}): {}{}",
                    s.unwatched_count,
                    if s.backend.starts_with("fanotify") {
                        "on filesystems fanotify cannot mark"
                    } else {
                        "the inotify watch limit"
                    },
                    s.unwatched.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            },
            "unwatched",
            json!(s.unwatched),
        ),
        (
            "",
            String::new(),
            "unwatched_count",
            json!(s.unwatched_count),
        ),
        (
            "roots gone",
            if s.roots_gone.is_empty() {
                "none".into()
            } else {
                s.roots_gone.join(", ")
            },
            "roots_gone",
            json!(s.roots_gone),
        ),
        (
            "ring",
            format!("{}, segment {}", kib(s.ring_capacity), s.epoch),
            "ring_capacity",
            json!(s.ring_capacity),
        ),
        ("ring fill", fill, "ring_fill", json!(s.ring_fill)),
        ("", String::new(), "epoch", json!(s.epoch)),
        (
            "next seq",
            s.next_seq.to_string(),
            "next_seq",
            json!(s.next_seq),
        ),
        (
            "history",
            format!(
                "{} rows, {}, writing {} rows/s",
                s.history_rows,
                kib(s.history_bytes),
                s.history_rows_per_s
            ),
            "history_rows",
            json!(s.history_rows),
        ),
        ("", String::new(), "history_bytes", json!(s.history_bytes)),
        (
            "",
            String::new(),
            "history_rows_per_s",
            json!(s.history_rows_per_s),
        ),
        ("storage", s.storage.clone(), "storage", json!(s.storage)),
        ("health", s.health.clone(), "health", json!(s.health)),
        (
            "counters",
            counters(&s.counters)
                .iter()
                .map(|(k, v)| format!("{} {v}", k.replace('_', " ")))
                .collect::<Vec<_>>()
                .join(", "),
            "counters",
            Value::Object(
                counters(&s.counters)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect(),
            ),
        ),
    ]
}

/// The counters by name (the JSON keys; with spaces for a person).
fn counters(c: &StatusCounters) -> [(&'static str, u64); 9] {
    [
        ("records", c.records),
        ("overflows", c.overflows),
        ("not_stored", c.not_stored),
        ("not_streamed", c.not_streamed),
        ("writer_overflowed", c.writer_overflowed),
        ("retention_removed", c.retention_removed),
        ("lease_blocked", c.lease_blocked),
        ("cut_off", c.cut_off),
        ("left_behind", c.left_behind),
    ]
}

pub(crate) fn run(cli: &Cli, a: &Args) -> anyhow::Result<i32> {
    let path = cli.socket()?;
    let opts = ConnectOptions {
        name: "firehose status".into(),
        ..ConnectOptions::default()
    };
    let mut client: Client<FileEvent> = Client::connect(&path, &opts)?;
    let s = client.status()?;
    client.bye();
    let socket = path.display().to_string();
    let fields = fields(&s, &socket);
    if a.json {
        let mut obj = serde_json::Map::new();
        for (_, _, key, v) in fields {
            obj.insert(key.into(), v);
        }
        let readers: Vec<Value> = s
            .readers
            .iter()
            .map(|r| {
                json!({"id": r.id, "pid": r.pid, "uid": r.uid, "name": r.name,
                       "policy": policy(r.policy), "lag_bytes": r.lag_bytes})
            })
            .collect();
        obj.insert("readers".into(), Value::Array(readers));
        println!("{}", Value::Object(obj));
        return Ok(code::OK);
    }
    let width = fields.iter().map(|f| f.0.len()).max().unwrap_or(0);
    for (label, text, _, _) in fields.iter().filter(|f| !f.0.is_empty()) {
        // Roots, unwatched paths and messages carry file names: no raw control characters.
        println!("{label:<width$}  {}", escape_path(text.as_bytes()));
    }
    println!("{:<width$}  {}", "readers", s.readers.len());
    if !s.readers.is_empty() {
        println!(
            "  {:>6} {:>8} {:>6} {:<8} {:>11}  name",
            "id", "pid", "uid", "policy", "lag"
        );
        for r in &s.readers {
            println!(
                "  {:>6} {:>8} {:>6} {:<8} {:>11}  {}",
                r.id,
                r.pid,
                r.uid,
                policy(r.policy),
                kib(r.lag_bytes),
                // A reader names itself: it must not forge lines or send escapes.
                escape_path(r.name.as_bytes())
            );
        }
    }
    Ok(code::OK)
}
