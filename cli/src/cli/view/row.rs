//! [`Row`]: one record as the viewer keeps it (paths already escaped for display).

use firehose_consumer::{escape_path, EventKind, FileEvent, Record};

/// One record held by the viewer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    /// The record's seq.
    pub(crate) seq: u64,
    /// When the service saw it, ns since the epoch.
    pub(crate) time_ns: u64,
    /// What happened.
    pub(crate) kind: EventKind,
    /// The path, escaped losslessly (see `escape_path`).
    pub(crate) path: Box<str>,
    /// A rename's new path, escaped.
    pub(crate) to: Option<Box<str>>,
    /// The rule that matched.
    pub(crate) rule: u32,
    /// The size, if known.
    pub(crate) size: Option<u64>,
}

impl Row {
    /// From a record, live or stored.
    pub(crate) fn from_record(r: &Record<'_>) -> Row {
        Row {
            seq: r.seq(),
            time_ns: r.time_ns(),
            kind: r.kind(),
            path: escape_path(r.path()).into(),
            to: r.path_to().map(|p| escape_path(p).into()),
            rule: r.rule(),
            size: r.size(),
        }
    }

    /// From a history row.
    pub(crate) fn from_event(e: &FileEvent) -> Row {
        Row::from_record(&Record::Stored(e))
    }
}

#[cfg(test)]
pub(crate) fn test_row(seq: u64, kind: EventKind, path: &str) -> Row {
    Row {
        seq,
        time_ns: seq * 1_000_000_000,
        kind,
        path: path.into(),
        to: None,
        rule: 0,
        size: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_or_escape_in_a_name_is_shown_as_its_code() {
        let e = FileEvent {
            seq: 1,
            time_ns: 0,
            kind: EventKind::Rename,
            path: b"/w/nl\nname".to_vec(),
            path_to: Some(b"/w/\x1b[2Jx".to_vec()),
            rule: 0,
            size: None,
            reconciled: false,
            blind: None,
            gap: None,
        };
        let r = Row::from_event(&e);
        assert_eq!(&*r.path, "/w/nl\\x0aname");
        assert_eq!(r.to.as_deref(), Some("/w/\\x1b[2Jx"));
    }
}
