//! How `tail` and `query` print events: plain lines, NDJSON, or an inotifywait-style
//! template.

use std::io::{self, Write};

use firehose_consumer::{escape_path, Event, EventKind, GapReason, Loss, Record};

use firehose_consumer::time::rfc3339;

/// The output style.
#[derive(Debug, Clone)]
pub(crate) enum Style {
    Plain,
    Json,
    Format(Vec<Piece>),
}

/// A piece of a `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Dir,
    File,
    Events,
    Time,
    Seq,
    Rule,
    Size,
    Target,
}

/// Parses a `--format` template (see `firehose tail --help`).
pub(crate) fn parse_format(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = t.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        let piece = match chars.next() {
            Some('%') => {
                text.push('%');
                continue;
            }
            Some('w') => Piece::Dir,
            Some('f') => Piece::File,
            Some('e') => Piece::Events,
            Some('T') => Piece::Time,
            Some('s') => Piece::Seq,
            Some('r') => Piece::Rule,
            Some('z') => Piece::Size,
            Some('t') => Piece::Target,
            Some(o) => return Err(format!("unknown field %{o} in --format")),
            None => return Err("--format ends with a lone %".into()),
        };
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(piece);
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// inotifywait's names for a kind.
fn inotify_names(k: EventKind) -> &'static str {
    match k {
        EventKind::Create => "CREATE",
        EventKind::Modify => "MODIFY",
        EventKind::CloseWrite => "CLOSE_WRITE,CLOSE",
        EventKind::Metadata => "ATTRIB",
        EventKind::Remove => "DELETE",
        EventKind::Rename => "MOVED_FROM,MOVED_TO",
        EventKind::Overflow => "Q_OVERFLOW",
        EventKind::Gap | EventKind::Other | EventKind::BlindStart | EventKind::BlindEnd => {
            "UNKNOWN"
        }
    }
}

pub(crate) fn reason_name(r: GapReason) -> &'static str {
    r.name()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Writes one event; returns whether it was a record.
pub(crate) fn write_event(out: &mut impl Write, style: &Style, ev: &Event<'_>) -> io::Result<bool> {
    match ev {
        Event::Record(r) => {
            write_record(out, style, r)?;
            return Ok(true);
        }
        _ => write_notice(out, style, ev)?,
    }
    Ok(false)
}

fn write_record(out: &mut impl Write, style: &Style, r: &Record<'_>) -> io::Result<()> {
    match style {
        Style::Plain => {
            write!(
                out,
                "{} {:<11} {}",
                rfc3339(r.time_ns()),
                r.kind().name(),
                escape_path(r.path())
            )?;
            if let Some(to) = r.path_to() {
                write!(out, " -> {}", escape_path(to))?;
            }
            if let Some(b) = r.blind() {
                write!(out, "  ({}", b.reason.name())?;
                if b.since_ns > 0 {
                    write!(out, " since {}", rfc3339(b.since_ns))?;
                }
                write!(out, ")")?;
            }
            if r.reconciled() {
                write!(out, "  reconciled")?;
            }
            writeln!(out, "  rule {}", r.rule())
        }
        Style::Json => {
            write!(
                out,
                "{{\"seq\":{},\"time\":\"{}\",\"kind\":\"{}\",\"path\":{}",
                r.seq(),
                rfc3339(r.time_ns()),
                r.kind().name(),
                json_str(&escape_path(r.path()))
            )?;
            if let Some(to) = r.path_to() {
                write!(out, ",\"to\":{}", json_str(&escape_path(to)))?;
            }
            if r.reconciled() {
                write!(out, ",\"reconciled\":true")?;
            }
            if let Some(b) = r.blind() {
                write!(out, ",\"blind\":\"{}\"", b.reason.name())?;
                if b.since_ns > 0 {
                    write!(out, ",\"since\":\"{}\"", rfc3339(b.since_ns))?;
                }
            }
            write!(out, ",\"rule\":{},\"size\":", r.rule())?;
            match r.size() {
                Some(s) => writeln!(out, "{s}}}"),
                None => writeln!(out, "null}}"),
            }
        }
        Style::Format(pieces) => {
            let path = r.path();
            let cut = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
            for p in pieces {
                match p {
                    Piece::Text(t) => out.write_all(t.as_bytes())?,
                    Piece::Dir => write!(out, "{}", escape_path(&path[..cut]))?,
                    Piece::File => write!(out, "{}", escape_path(&path[cut..]))?,
                    Piece::Events => out.write_all(inotify_names(r.kind()).as_bytes())?,
                    Piece::Time => out.write_all(rfc3339(r.time_ns()).as_bytes())?,
                    Piece::Seq => write!(out, "{}", r.seq())?,
                    Piece::Rule => write!(out, "{}", r.rule())?,
                    Piece::Size => {
                        if let Some(s) = r.size() {
                            write!(out, "{s}")?;
                        }
                    }
                    Piece::Target => {
                        if let Some(t) = r.path_to() {
                            write!(out, "{}", escape_path(t))?;
                        }
                    }
                }
            }
            writeln!(out)
        }
    }
}

/// Writes a notice (gap, lag, ...): as JSON in `--json`, else as a `-- ` line. With
/// `--format`, notices go to stderr so that scripts see only records.
fn write_notice(out: &mut impl Write, style: &Style, ev: &Event<'_>) -> io::Result<()> {
    let json = match *ev {
        Event::Loss(Loss::Gap { from, to, reason }) => format!(
            "{{\"gap\":{{\"from\":{from},\"to\":{to},\"reason\":\"{}\"}}}}",
            reason_name(reason)
        ),
        Event::Loss(Loss::Lagged { from, to }) => {
            format!("{{\"lagged\":{{\"from\":{from},\"to\":{to}}}}}")
        }
        Event::Loss(Loss::Missing { from, to }) => {
            format!("{{\"missing\":{{\"from\":{from},\"to\":{to}}}}}")
        }
        Event::Loss(Loss::Truncated { oldest }) => {
            format!("{{\"truncated\":{{\"oldest\":{oldest}}}}}")
        }
        Event::Loss(Loss::StorageGap { from, to, reason }) => format!(
            "{{\"not_stored\":{{\"from\":{from},\"to\":{to},\"reason\":\"{}\"}}}}",
            reason_name(reason)
        ),
        Event::Disconnected { reason, detail } => format!(
            "{{\"disconnected\":{{\"reason\":{}}}}}",
            json_str(&if detail.is_empty() {
                reason.to_string()
            } else {
                format!("{reason} ({detail})")
            })
        ),
        Event::Reconnected { start_seq } => {
            format!("{{\"reconnected\":{{\"start_seq\":{start_seq}}}}}")
        }
        Event::OtherInstance { expected, found } => {
            format!("{{\"other_instance\":{{\"expected\":\"{expected}\",\"found\":\"{found}\"}}}}")
        }
        // Records are not notices; `Event` may grow.
        _ => return Ok(()),
    };
    let plain = match *ev {
        Event::Loss(Loss::Gap { from, to, reason }) => {
            format!("-- gap {from}..={to}: {}", reason_name(reason))
        }
        Event::Loss(Loss::Lagged { from, to }) => {
            format!("-- lagged {from}..={to}: missed by this reader")
        }
        Event::Loss(Loss::Missing { from, to }) => {
            format!("-- missing {from}..={to}: not in history")
        }
        Event::Loss(Loss::Truncated { oldest }) => format!("-- history starts at seq {oldest}"),
        Event::Loss(Loss::StorageGap { from, to, reason }) => {
            format!("-- {from}..={to} not stored: {}", reason_name(reason))
        }
        Event::Disconnected { reason, detail } => format!("-- disconnected: {reason} {detail}"),
        Event::Reconnected { start_seq } => format!("-- reconnected; live from seq {start_seq}"),
        Event::OtherInstance { expected, found } => {
            format!("-- the service now has history instance {found}, not {expected}")
        }
        _ => return Ok(()),
    };
    match style {
        Style::Json => writeln!(out, "{json}"),
        Style::Plain => writeln!(out, "{plain}"),
        Style::Format(_) => {
            eprintln!("{plain}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        assert_eq!(
            parse_format("%w%f %e 100%%").unwrap(),
            vec![
                Piece::Dir,
                Piece::File,
                Piece::Text(" ".into()),
                Piece::Events,
                Piece::Text(" 100%".into())
            ]
        );
        assert!(parse_format("%q").is_err());
        assert!(parse_format("x%").is_err());
    }
}
