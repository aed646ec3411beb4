//! `fh_event`: one event as a C view: a record's fields with pointers into the frame it
//! was read from, or news about the stream (a gap, a lag, a reconnect...).

use firehose_consumer::{BlindReason, DisconnectReason, Event, EventKind, GapReason, Loss, Record};

/// What an `fh_event` is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum fh_event_type {
    /// A record: `seq`, `time_ns`, `kind`, `path` and the rest are set.
    FH_EVENT_RECORD = 0,
    /// Seqs `seq ..= to` do not exist as records, for `reason` (an `fh_gap_reason`).
    FH_EVENT_GAP = 1,
    /// This reader missed `seq ..= to` and did not backfill them.
    FH_EVENT_LAGGED = 2,
    /// A backfill asked history for `seq ..= to` and history does not have them.
    FH_EVENT_MISSING = 3,
    /// History no longer reaches back before `seq` (the oldest it holds).
    FH_EVENT_TRUNCATED = 4,
    /// Seqs `seq ..= to` were not stored in history, for `reason` (an `fh_gap_reason`);
    /// they may still have been streamed.
    FH_EVENT_STORAGE_GAP = 5,
    /// The connection ended, for `reason` (an `fh_disconnect_reason`); `path` holds what
    /// the service or the OS said. A `FH_EVENT_RECONNECTED` follows once it is back.
    FH_EVENT_DISCONNECTED = 6,
    /// Connected again; live records resume at `seq`.
    FH_EVENT_RECONNECTED = 7,
    /// The service serves another history instance: nothing more comes on this reader.
    FH_EVENT_OTHER_INSTANCE = 8,
}

/// A record's kind (the numbers are the ones history stores).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum fh_kind {
    /// A file or directory was created (or moved in from outside the watched tree).
    FH_KIND_CREATE = 0,
    /// A file's content changed.
    FH_KIND_MODIFY = 1,
    /// A file opened for writing was closed.
    FH_KIND_CLOSE_WRITE = 2,
    /// Permissions, owner, times or extended attributes changed.
    FH_KIND_METADATA = 3,
    /// A file or directory was removed (or moved out of the watched tree).
    FH_KIND_REMOVE = 4,
    /// Renamed inside the watched tree: `path` is the old name, `path_to` the new one.
    FH_KIND_RENAME = 5,
    /// The kernel's event queue overflowed: events were lost (a blind range follows).
    FH_KIND_OVERFLOW = 6,
    /// A gap record (seen as `FH_EVENT_GAP`, never as a record).
    FH_KIND_GAP = 7,
    /// Anything else the watcher reported.
    FH_KIND_OTHER = 8,
    /// The service could not see changes under `path` (every root if empty) since
    /// `blind_since_ns`, for `blind_reason`; the records up to the matching
    /// `FH_KIND_BLIND_END` are what a walk found changed, each with `reconciled` set.
    FH_KIND_BLIND_START = 9,
    /// Closes the blind range: history again matches the disk.
    FH_KIND_BLIND_END = 10,
}

/// The kind's C name for a Rust kind; the numbers are the transport's (`kind as u8`), which
/// `kinds_keep_the_transports_numbers` checks for every kind.
pub(crate) fn c_kind(k: EventKind) -> fh_kind {
    match k {
        EventKind::Create => fh_kind::FH_KIND_CREATE,
        EventKind::Modify => fh_kind::FH_KIND_MODIFY,
        EventKind::CloseWrite => fh_kind::FH_KIND_CLOSE_WRITE,
        EventKind::Metadata => fh_kind::FH_KIND_METADATA,
        EventKind::Remove => fh_kind::FH_KIND_REMOVE,
        EventKind::Rename => fh_kind::FH_KIND_RENAME,
        EventKind::Overflow => fh_kind::FH_KIND_OVERFLOW,
        EventKind::Gap => fh_kind::FH_KIND_GAP,
        EventKind::Other => fh_kind::FH_KIND_OTHER,
        EventKind::BlindStart => fh_kind::FH_KIND_BLIND_START,
        EventKind::BlindEnd => fh_kind::FH_KIND_BLIND_END,
    }
}

/// One event, as a view. Pointers point into memory the library owns: for `fh_reader_drain`
/// they stay valid until the next `fh_reader_drain` or `fh_reader_free` on that reader; for
/// `fh_rows_get` until `fh_rows_free`. Copy what you keep.
///
/// Paths are raw bytes, not NUL-terminated and not necessarily UTF-8 (a Linux file name
/// is any bytes but `/` and NUL, a newline or an escape sequence included): use
/// `path_len`, and escape before printing to a terminal.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct fh_event {
    /// What this is; says which fields below are set.
    pub what: fh_event_type,
    /// Records: the kind.
    pub kind: fh_kind,
    /// Records: the seq. Ranges (gap, lagged, missing, storage gap): the first seq.
    /// Truncated: the oldest seq history holds. Reconnected: the first live seq.
    pub seq: u64,
    /// Ranges: the last seq (inclusive). Otherwise 0.
    pub to: u64,
    /// Records: when the service saw it, ns since the Unix epoch.
    pub time_ns: u64,
    /// Records: the path (`path_len` bytes). Disconnected: what was said. Else NULL.
    pub path: *const u8,
    /// Bytes at `path`.
    pub path_len: usize,
    /// Renames: the new path (`path_to_len` bytes). Else NULL.
    pub path_to: *const u8,
    /// Bytes at `path_to`.
    pub path_to_len: usize,
    /// Records: the file's size when the service saw it, if `has_size`.
    pub size: u64,
    /// Whether `size` is known.
    pub has_size: bool,
    /// Records: found by a walk after a blind range (not seen as it happened).
    pub reconciled: bool,
    /// Records: the filter rule that matched (0: none).
    pub rule: u32,
    /// Gaps and storage gaps: an `fh_gap_reason`. Disconnected: an `fh_disconnect_reason`.
    /// Blind starts: an `fh_blind_reason`. Else 0.
    pub reason: u32,
    /// Blind starts: since when the service could not see (ns since the epoch; 0: unknown).
    pub blind_since_ns: u64,
}

/// Why seqs are missing (`reason` of gaps and storage gaps).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum fh_gap_reason {
    /// The service crashed with these seqs leased but unused.
    FH_GAP_CRASH = 1,
    /// A rule with `store = false` matched them: never stored in history.
    FH_GAP_NOT_STORED = 2,
    /// A rule with `stream = false` matched them, or the publisher's queue overflowed.
    FH_GAP_NOT_STREAMED = 3,
    /// The history writer's queue overflowed.
    FH_GAP_WRITER_OVERFLOW = 4,
    /// Removed from history by retention.
    FH_GAP_RETENTION = 5,
    /// Storage failed (disk full, read-only or failing database): streamed, never stored.
    FH_GAP_STORE_FAILED = 6,
}

/// Why the service could not see changes (`reason` of blind starts).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum fh_blind_reason {
    /// A kernel or watcher queue overflowed.
    FH_BLIND_OVERFLOW = 1,
    /// The service was stopped.
    FH_BLIND_STOPPED = 2,
    /// The service crashed or was killed.
    FH_BLIND_CRASHED = 3,
}

/// Why a connection ended (`reason` of disconnects).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum fh_disconnect_reason {
    /// A lossless reader did not keep up and was cut off.
    FH_DISCONNECT_TOO_SLOW = 1,
    /// The service has no room for another reader.
    FH_DISCONNECT_BUSY = 2,
    /// The service is shutting down.
    FH_DISCONNECT_SHUTTING_DOWN = 3,
    /// This process is not allowed.
    FH_DISCONNECT_NOT_ALLOWED = 4,
    /// A peer sent something that is not the protocol.
    FH_DISCONNECT_PROTOCOL_ERROR = 5,
    /// The peers speak different protocol versions.
    FH_DISCONNECT_VERSION_MISMATCH = 6,
    /// The other side said goodbye.
    FH_DISCONNECT_BYE = 7,
    /// The connection ended without a word (the service died).
    FH_DISCONNECT_GONE = 8,
}

fn gap_reason(r: GapReason) -> u32 {
    // The transport's codes are the C enum's numbers (`reasons_keep_the_transports_numbers`).
    r.code()
}

fn blind_reason(r: BlindReason) -> u32 {
    r as u32
}

fn disconnect_reason(r: DisconnectReason) -> u32 {
    r as u32
}

impl fh_event {
    fn blank(type_: fh_event_type) -> Self {
        fh_event {
            what: type_,
            kind: fh_kind::FH_KIND_OTHER,
            seq: 0,
            to: 0,
            time_ns: 0,
            path: std::ptr::null(),
            path_len: 0,
            path_to: std::ptr::null(),
            path_to_len: 0,
            size: 0,
            has_size: false,
            reconciled: false,
            rule: 0,
            reason: 0,
            blind_since_ns: 0,
        }
    }

    fn range(type_: fh_event_type, from: u64, to: u64, reason: u32) -> Self {
        fh_event {
            seq: from,
            to,
            reason,
            ..fh_event::blank(type_)
        }
    }

    fn record(r: &Record<'_>) -> Self {
        let path = r.path();
        let path_to = r.path_to();
        let blind = r.blind();
        fh_event {
            kind: c_kind(r.kind()),
            seq: r.seq(),
            time_ns: r.time_ns(),
            path: path.as_ptr(),
            path_len: path.len(),
            path_to: path_to.map_or(std::ptr::null(), <[u8]>::as_ptr),
            path_to_len: path_to.map_or(0, <[u8]>::len),
            size: r.size().unwrap_or(0),
            has_size: r.size().is_some(),
            reconciled: r.reconciled(),
            rule: r.rule(),
            reason: blind.map_or(0, |b| blind_reason(b.reason)),
            blind_since_ns: blind.map_or(0, |b| b.since_ns),
            ..fh_event::blank(fh_event_type::FH_EVENT_RECORD)
        }
    }
}

/// The view of `ev`. Its pointers borrow from what `ev` borrows: the caller keeps that
/// memory alive (and unchanged) for as long as the view is handed out.
pub(crate) fn view(ev: &Event<'_>) -> fh_event {
    use fh_event_type::*;
    match *ev {
        Event::Record(ref r) => fh_event::record(r),
        Event::Loss(Loss::Gap { from, to, reason }) => {
            fh_event::range(FH_EVENT_GAP, from, to, gap_reason(reason))
        }
        Event::Loss(Loss::Lagged { from, to }) => fh_event::range(FH_EVENT_LAGGED, from, to, 0),
        Event::Loss(Loss::Missing { from, to }) => fh_event::range(FH_EVENT_MISSING, from, to, 0),
        Event::Loss(Loss::Truncated { oldest }) => {
            fh_event::range(FH_EVENT_TRUNCATED, oldest, 0, 0)
        }
        Event::Loss(Loss::StorageGap { from, to, reason }) => {
            fh_event::range(FH_EVENT_STORAGE_GAP, from, to, gap_reason(reason))
        }
        Event::Disconnected { reason, detail } => fh_event {
            path: detail.as_ptr(),
            path_len: detail.len(),
            reason: disconnect_reason(reason),
            ..fh_event::blank(FH_EVENT_DISCONNECTED)
        },
        Event::Reconnected { start_seq } => fh_event::range(FH_EVENT_RECONNECTED, start_seq, 0, 0),
        Event::OtherInstance { .. } => fh_event::blank(FH_EVENT_OTHER_INSTANCE),
        // A kind of news this build does not know (the enum is non-exhaustive).
        _ => fh_event::blank(FH_EVENT_OTHER_INSTANCE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_the_transports_numbers() {
        for k in EventKind::ALL {
            assert_eq!(c_kind(k) as u8, k as u8, "{k:?}");
        }
    }

    #[test]
    fn reasons_keep_the_transports_numbers() {
        use fh_gap_reason::*;
        let gaps = [
            (GapReason::Crash, FH_GAP_CRASH),
            (GapReason::NotStored, FH_GAP_NOT_STORED),
            (GapReason::NotStreamed, FH_GAP_NOT_STREAMED),
            (GapReason::WriterOverflow, FH_GAP_WRITER_OVERFLOW),
            (GapReason::Retention, FH_GAP_RETENTION),
            (GapReason::StoreFailed, FH_GAP_STORE_FAILED),
        ];
        for (r, c) in gaps {
            assert_eq!(gap_reason(r), c as u32);
            assert_eq!(GapReason::from_code(c as u32), Some(r));
        }
        use fh_blind_reason::*;
        for (r, c) in [
            (BlindReason::Overflow, FH_BLIND_OVERFLOW),
            (BlindReason::Stopped, FH_BLIND_STOPPED),
            (BlindReason::Crashed, FH_BLIND_CRASHED),
        ] {
            assert_eq!(blind_reason(r), c as u32);
        }
        use fh_disconnect_reason::*;
        for (r, c) in [
            (DisconnectReason::TooSlow, FH_DISCONNECT_TOO_SLOW),
            (DisconnectReason::Busy, FH_DISCONNECT_BUSY),
            (DisconnectReason::ShuttingDown, FH_DISCONNECT_SHUTTING_DOWN),
            (DisconnectReason::NotAllowed, FH_DISCONNECT_NOT_ALLOWED),
            (
                DisconnectReason::ProtocolError,
                FH_DISCONNECT_PROTOCOL_ERROR,
            ),
            (
                DisconnectReason::VersionMismatch,
                FH_DISCONNECT_VERSION_MISMATCH,
            ),
            (DisconnectReason::Bye, FH_DISCONNECT_BYE),
            (DisconnectReason::Gone, FH_DISCONNECT_GONE),
        ] {
            assert_eq!(disconnect_reason(r), c as u32);
        }
    }

    #[test]
    fn a_record_view_points_at_the_records_own_bytes() {
        let ev = firehose_consumer::FileEvent {
            seq: 7,
            time_ns: 9,
            kind: EventKind::Rename,
            path: b"/w/a\n\x1b[2J".to_vec(),
            path_to: Some(b"/w/b".to_vec()),
            rule: 2,
            size: Some(12),
            gap: None,
            reconciled: false,
            blind: None,
        };
        let v = view(&Event::Record(Record::Stored(&ev)));
        assert_eq!(v.what, fh_event_type::FH_EVENT_RECORD);
        assert_eq!(v.kind, fh_kind::FH_KIND_RENAME);
        assert_eq!(
            (v.seq, v.time_ns, v.rule, v.size, v.has_size),
            (7, 9, 2, 12, true)
        );
        assert_eq!(v.path, ev.path.as_ptr());
        assert_eq!(v.path_len, ev.path.len());
        assert_eq!(v.path_to_len, 4);
    }
}
