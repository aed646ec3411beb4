//! The file-event record the service publishes and its clients read, and the reason codes
//! of gaps. Both the ring (as its payload `T`) and the history database use it.

use rkyv::{Archive, Deserialize, Serialize};

/// What happened to a path.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq, Clone, Copy))]
#[repr(u8)]
pub enum EventKind {
    /// A file or directory was created (or moved in from outside the watched tree).
    Create,
    /// A file's content changed.
    Modify,
    /// A file opened for writing was closed.
    CloseWrite,
    /// Permissions, owner, times or extended attributes changed.
    Metadata,
    /// A file or directory was removed (or moved out of the watched tree).
    Remove,
    /// Renamed inside the watched tree: `path` is the old name, `path_to` the new one.
    Rename,
    /// The kernel's event queue overflowed: events were lost; rescan.
    Overflow,
    /// Seqs `seq ..= gap.to` are missing, for `gap.reason`.
    Gap,
    /// Anything else the watcher reported.
    Other,
    /// The service could not see changes under `path` (every root if empty) from
    /// `blind.since_ns` until now, for `blind.reason`: the records up to the matching
    /// [`EventKind::BlindEnd`] are what a walk of the disk found changed meanwhile, each
    /// marked `reconciled`.
    BlindStart,
    /// Closes the blind range its [`EventKind::BlindStart`] opened: history again matches
    /// the disk.
    BlindEnd,
}

impl EventKind {
    /// Every kind, in the order documents, the command line and the monitors list them.
    pub const ALL: [EventKind; 11] = [
        EventKind::Create,
        EventKind::Modify,
        EventKind::CloseWrite,
        EventKind::Metadata,
        EventKind::Remove,
        EventKind::Rename,
        EventKind::Overflow,
        EventKind::Gap,
        EventKind::Other,
        EventKind::BlindStart,
        EventKind::BlindEnd,
    ];

    /// The kinds a filter rule can name and the monitors toggle: all but `Gap`, `Other`
    /// and the blind-range records (always stored and streamed, as overflows are), in the
    /// same order.
    pub const FILTERABLE: [EventKind; 7] = [
        EventKind::Create,
        EventKind::Modify,
        EventKind::CloseWrite,
        EventKind::Metadata,
        EventKind::Remove,
        EventKind::Rename,
        EventKind::Overflow,
    ];

    /// Its name in filter documents, JSON output and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Modify => "modify",
            EventKind::CloseWrite => "close_write",
            EventKind::Metadata => "metadata",
            EventKind::Remove => "remove",
            EventKind::Rename => "rename",
            EventKind::Overflow => "overflow",
            EventKind::Gap => "gap",
            EventKind::Other => "other",
            EventKind::BlindStart => "blind_start",
            EventKind::BlindEnd => "blind_end",
        }
    }

    /// The kind for its code (`kind as u8`), as history and the wire store it.
    pub fn from_code(code: u8) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| *k as u8 == code)
    }

    /// The kind named `name` (exactly, lower case).
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Why a range of seqs is missing.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq, Clone, Copy))]
#[repr(u8)]
pub enum GapReason {
    /// The service crashed with these seqs leased but unused.
    Crash = 1,
    /// A rule with `store = false` matched them: never stored in history.
    NotStored = 2,
    /// A rule with `stream = false` matched them, or the publisher's queue overflowed.
    NotStreamed = 3,
    /// The history writer's queue overflowed.
    WriterOverflow = 4,
    /// Removed from history by retention.
    Retention = 5,
    /// Storage failed (disk full, read-only or failing database): streamed, never stored.
    StoreFailed = 6,
}

impl GapReason {
    /// Its name in JSON output, the C API and the Python module.
    pub fn name(self) -> &'static str {
        match self {
            GapReason::Crash => "crash",
            GapReason::NotStored => "not_stored",
            GapReason::NotStreamed => "not_streamed",
            GapReason::WriterOverflow => "writer_overflow",
            GapReason::Retention => "retention",
            GapReason::StoreFailed => "store_failed",
        }
    }

    /// The code carried in a ring gap frame.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The reason for a ring gap frame's code, if it is one this build knows.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => GapReason::Crash,
            2 => GapReason::NotStored,
            3 => GapReason::NotStreamed,
            4 => GapReason::WriterOverflow,
            5 => GapReason::Retention,
            6 => GapReason::StoreFailed,
            _ => return None,
        })
    }
}

/// Seqs that do not reach a reader as records, and why: the one loss vocabulary of the
/// control socket's notices, of the client library's events (`Event::Loss`,
/// `OwnedEvent::Loss` in `firehose-consumer`), of the monitor's counters, the C API and the
/// Python module. Nothing is lost silently: each seq a reader does not get as a record is
/// in exactly one [`Loss::Gap`], [`Loss::Lagged`] or [`Loss::Missing`];
/// [`Loss::StorageGap`] and [`Loss::Truncated`] are about history (seqs it does not hold,
/// which may still have streamed, and where it starts). Not `non_exhaustive` on purpose: a new kind of loss must be a
/// compile error in every match that accounts for seqs, not fall into a `_` arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Loss {
    /// Seqs `from ..= to` do not exist as records, for `reason` (a gap row of history, or
    /// a gap of the ring when not backfilling).
    Gap {
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
        /// Why.
        reason: GapReason,
    },
    /// Seqs `from ..= to` were not stored in history, for `reason` (they may still have
    /// been streamed).
    StorageGap {
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
        /// Why.
        reason: GapReason,
    },
    /// This reader missed `from ..= to` (it lagged) and did not get them from history
    /// (backfill is off, or a record failed validation).
    Lagged {
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
    },
    /// A backfill asked history for `from ..= to` and history does not have them.
    Missing {
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
    },
    /// History no longer reaches back before `oldest`: what was wanted before it is gone.
    Truncated {
        /// Oldest seq history holds.
        oldest: u64,
    },
}

impl Loss {
    /// The seqs it accounts for (`None` for [`Loss::Truncated`], which says where history
    /// starts, not which seqs went).
    ///
    /// # Examples
    /// ```
    /// use firehose_transport::record::Loss;
    /// assert_eq!(Loss::Lagged { from: 3, to: 5 }.seqs(), Some((3, 5)));
    /// assert_eq!(Loss::Truncated { oldest: 9 }.seqs(), None);
    /// ```
    pub fn seqs(&self) -> Option<(u64, u64)> {
        match *self {
            Loss::Gap { from, to, .. }
            | Loss::StorageGap { from, to, .. }
            | Loss::Lagged { from, to }
            | Loss::Missing { from, to } => Some((from, to)),
            Loss::Truncated { .. } => None,
        }
    }

    /// How many seqs it accounts for (zero for [`Loss::Truncated`] and a reversed range).
    pub fn count(&self) -> u64 {
        self.seqs().map_or(0, |(f, t)| {
            t.checked_sub(f).map_or(0, |d| d.saturating_add(1))
        })
    }

    /// Its name in JSON output, the C API and the Python module.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::Gap { .. } => "gap",
            Loss::StorageGap { .. } => "storage_gap",
            Loss::Lagged { .. } => "lagged",
            Loss::Missing { .. } => "missing",
            Loss::Truncated { .. } => "truncated",
        }
    }

    /// Why, for the two gaps.
    pub fn reason(&self) -> Option<GapReason> {
        match *self {
            Loss::Gap { reason, .. } | Loss::StorageGap { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Why the service could not see changes for a while.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq, Clone, Copy))]
#[repr(u8)]
pub enum BlindReason {
    /// Events were lost: a kernel or watcher queue overflowed.
    Overflow = 1,
    /// The service was stopped.
    Stopped = 2,
    /// The service crashed or was killed.
    Crashed = 3,
}

impl BlindReason {
    /// Its name in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            BlindReason::Overflow => "overflow",
            BlindReason::Stopped => "stopped",
            BlindReason::Crashed => "crashed",
        }
    }

    /// The reason for a stored code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => BlindReason::Overflow,
            2 => BlindReason::Stopped,
            3 => BlindReason::Crashed,
            _ => return None,
        })
    }
}

/// The reason and start of a blind range (on its BlindStart and BlindEnd records).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct BlindInfo {
    /// Why the service was blind.
    pub reason: BlindReason,
    /// Since when (ns since the epoch; 0 if not known).
    pub since_ns: u64,
}

/// The end and reason of a gap record.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GapInfo {
    /// Last missing seq (the first is the record's `seq`).
    pub to: u64,
    /// Why they are missing.
    pub reason: GapReason,
}

/// One file-system event as the service records it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct FileEvent {
    /// The service's sequence number: strictly increasing, never reused.
    pub seq: u64,
    /// When the service saw it, in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// What happened.
    pub kind: EventKind,
    /// The path, as bytes (Linux paths need not be UTF-8).
    pub path: Vec<u8>,
    /// For a rename, the new path.
    pub path_to: Option<Vec<u8>>,
    /// Id of the filter rule that matched.
    pub rule: u32,
    /// File size in bytes, when known.
    pub size: Option<u64>,
    /// For a gap record, its end and reason.
    pub gap: Option<GapInfo>,
    /// Whether a reconcile after a blind period found this change (rather than the kernel
    /// reporting it as it happened).
    pub reconciled: bool,
    /// For BlindStart and BlindEnd records, why and since when.
    pub blind: Option<BlindInfo>,
}

impl From<ArchivedEventKind> for EventKind {
    fn from(k: ArchivedEventKind) -> Self {
        match k {
            ArchivedEventKind::Create => EventKind::Create,
            ArchivedEventKind::Modify => EventKind::Modify,
            ArchivedEventKind::CloseWrite => EventKind::CloseWrite,
            ArchivedEventKind::Metadata => EventKind::Metadata,
            ArchivedEventKind::Remove => EventKind::Remove,
            ArchivedEventKind::Rename => EventKind::Rename,
            ArchivedEventKind::Overflow => EventKind::Overflow,
            ArchivedEventKind::Gap => EventKind::Gap,
            ArchivedEventKind::Other => EventKind::Other,
            ArchivedEventKind::BlindStart => EventKind::BlindStart,
            ArchivedEventKind::BlindEnd => EventKind::BlindEnd,
        }
    }
}

impl From<ArchivedGapReason> for GapReason {
    fn from(r: ArchivedGapReason) -> Self {
        match r {
            ArchivedGapReason::Crash => GapReason::Crash,
            ArchivedGapReason::NotStored => GapReason::NotStored,
            ArchivedGapReason::NotStreamed => GapReason::NotStreamed,
            ArchivedGapReason::WriterOverflow => GapReason::WriterOverflow,
            ArchivedGapReason::Retention => GapReason::Retention,
            ArchivedGapReason::StoreFailed => GapReason::StoreFailed,
        }
    }
}

impl From<ArchivedBlindReason> for BlindReason {
    fn from(r: ArchivedBlindReason) -> Self {
        match r {
            ArchivedBlindReason::Overflow => BlindReason::Overflow,
            ArchivedBlindReason::Stopped => BlindReason::Stopped,
            ArchivedBlindReason::Crashed => BlindReason::Crashed,
        }
    }
}

impl ArchivedFileEvent {
    /// The path as an OS string.
    pub fn path_os(&self) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(self.path.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_utf8_path_round_trips() {
        let ev = FileEvent {
            seq: 7,
            time_ns: 1,
            kind: EventKind::Rename,
            path: b"/tmp/\xff\xfe".to_vec(),
            path_to: Some(b"/tmp/b".to_vec()),
            rule: 3,
            size: Some(10),
            gap: None,
            reconciled: true,
            blind: Some(BlindInfo {
                reason: BlindReason::Crashed,
                since_ns: 5,
            }),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&ev).unwrap();
        let a = rkyv::access::<ArchivedFileEvent, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(a.path.as_slice(), b"/tmp/\xff\xfe");
        assert_eq!(a.kind, ArchivedEventKind::Rename);
        assert_eq!(a.path_to.as_ref().unwrap().as_slice(), b"/tmp/b");
        let back: FileEvent = rkyv::deserialize::<FileEvent, rkyv::rancor::Error>(a).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn gap_codes_round_trip() {
        for r in [
            GapReason::Crash,
            GapReason::NotStored,
            GapReason::NotStreamed,
            GapReason::WriterOverflow,
            GapReason::Retention,
            GapReason::StoreFailed,
        ] {
            assert_eq!(GapReason::from_code(r.code()), Some(r));
        }
        assert_eq!(GapReason::from_code(0), None);
    }
}
