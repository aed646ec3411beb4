//! What a [`Follower`](crate::Follower) hands out: [`Event`]s, in seq order, each either a
//! [`Record`] or news about the stream.
//!
//! - [`Event::Record`]: a record, zero-copy from the ring or owned from history;
//! - [`Event::Loss`]: seqs that will not come as records, in the one loss vocabulary of
//!   the transport's record module ([`Loss`]): a [`Loss::Gap`] (never stored or streamed,
//!   with the reason), [`Loss::Lagged`] (this reader missed them and did not backfill),
//!   [`Loss::Missing`] (a backfill asked and history does not have them),
//!   [`Loss::Truncated`] (history no longer reaches back that far), [`Loss::StorageGap`]
//!   (streamed but not stored);
//! - [`Event::Disconnected`], [`Event::Reconnected`]: the connection went and came back;
//! - [`Event::OtherInstance`]: the service now serves another history instance.

use firehose_transport::control::wire::DisconnectReason;
use firehose_transport::record::{
    ArchivedFileEvent, BlindInfo, BlindReason, EventKind, FileEvent, GapInfo, GapReason, Loss,
};

/// A history database's instance id (16 bytes, shown as 32 hex digits).
///
/// # Examples
/// ```
/// let id = firehose_consumer::InstanceId([0xab; 16]);
/// assert_eq!(id.to_string(), "ab".repeat(16));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct InstanceId(pub [u8; 16]);

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One record: zero-copy from the ring ([`Record::Live`], validated by rkyv), or from
/// history ([`Record::Stored`]). The accessors read either.
///
/// # Examples
/// ```no_run
/// # let mut f = firehose_consumer::Options::new().connect()?;
/// for ev in f.drain(1024)? {
///     if let firehose_consumer::Event::Record(r) = ev {
///         println!("{} {:?} {}", r.seq(), r.kind(), firehose_consumer::escape_path(r.path()));
///     }
/// }
/// # Ok::<(), firehose_consumer::FollowError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    /// In the ring (or the reader's copy of it), archived.
    Live(&'a ArchivedFileEvent),
    /// From a history query.
    Stored(&'a FileEvent),
}

impl<'a> Record<'a> {
    /// The seq.
    ///
    /// # Examples
    /// ```
    /// # let ev = firehose_consumer::FileEvent { seq: 3, time_ns: 0, kind: firehose_consumer::EventKind::Create, path: vec![], path_to: None, rule: 0, size: None, gap: None, reconciled: false, blind: None };
    /// assert_eq!(firehose_consumer::Record::Stored(&ev).seq(), 3);
    /// ```
    pub fn seq(&self) -> u64 {
        match self {
            Record::Live(a) => a.seq.to_native(),
            Record::Stored(e) => e.seq,
        }
    }

    /// When the service saw it, in ns since the Unix epoch.
    ///
    /// # Examples
    /// ```
    /// # let ev = firehose_consumer::FileEvent { seq: 3, time_ns: 9, kind: firehose_consumer::EventKind::Create, path: vec![], path_to: None, rule: 0, size: None, gap: None, reconciled: false, blind: None };
    /// assert_eq!(firehose_consumer::Record::Stored(&ev).time_ns(), 9);
    /// ```
    pub fn time_ns(&self) -> u64 {
        match self {
            Record::Live(a) => a.time_ns.to_native(),
            Record::Stored(e) => e.time_ns,
        }
    }

    /// What happened.
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::{EventKind, FileEvent, Record};
    /// # let ev = FileEvent { seq: 3, time_ns: 9, kind: EventKind::Remove, path: vec![], path_to: None, rule: 0, size: None, gap: None, reconciled: false, blind: None };
    /// assert_eq!(Record::Stored(&ev).kind(), EventKind::Remove);
    /// ```
    pub fn kind(&self) -> EventKind {
        match self {
            Record::Live(a) => EventKind::from(a.kind),
            Record::Stored(e) => e.kind,
        }
    }

    /// The path's bytes (not necessarily UTF-8; see [`escape_path`](crate::escape_path)).
    ///
    /// # Examples
    /// ```
    /// # use firehose_consumer::{EventKind, FileEvent, Record};
    /// # let ev = FileEvent { seq: 3, time_ns: 9, kind: EventKind::Remove, path: b"/a".to_vec(), path_to: None, rule: 0, size: None, gap: None, reconciled: false, blind: None };
    /// assert_eq!(Record::Stored(&ev).path(), b"/a");
    /// ```
    pub fn path(&self) -> &'a [u8] {
        match self {
            Record::Live(a) => a.path.as_slice(),
            Record::Stored(e) => &e.path,
        }
    }

    /// A rename's new path.
    ///
    /// # Examples
    /// ```
    /// # use firehose_consumer::{EventKind, FileEvent, Record};
    /// # let ev = FileEvent { seq: 3, time_ns: 9, kind: EventKind::Rename, path: b"/a".to_vec(), path_to: Some(b"/b".to_vec()), rule: 0, size: None, gap: None, reconciled: false, blind: None };
    /// assert_eq!(Record::Stored(&ev).path_to(), Some(&b"/b"[..]));
    /// ```
    pub fn path_to(&self) -> Option<&'a [u8]> {
        match self {
            Record::Live(a) => a.path_to.as_ref().map(|p| p.as_slice()),
            Record::Stored(e) => e.path_to.as_deref(),
        }
    }

    /// The id of the rule that matched.
    ///
    /// # Examples
    /// ```
    /// # use firehose_consumer::{EventKind, FileEvent, Record};
    /// # let ev = FileEvent { seq: 3, time_ns: 9, kind: EventKind::Rename, path: vec![], path_to: None, rule: 4, size: None, gap: None, reconciled: false, blind: None };
    /// assert_eq!(Record::Stored(&ev).rule(), 4);
    /// ```
    pub fn rule(&self) -> u32 {
        match self {
            Record::Live(a) => a.rule.to_native(),
            Record::Stored(e) => e.rule,
        }
    }

    /// The file's size, when known.
    ///
    /// # Examples
    /// ```
    /// # use firehose_consumer::{EventKind, FileEvent, Record};
    /// # let ev = FileEvent { seq: 3, time_ns: 9, kind: EventKind::Modify, path: vec![], path_to: None, rule: 4, size: Some(10), gap: None, reconciled: false, blind: None };
    /// assert_eq!(Record::Stored(&ev).size(), Some(10));
    /// ```
    pub fn size(&self) -> Option<u64> {
        match self {
            Record::Live(a) => a.size.as_ref().map(|s| s.to_native()),
            Record::Stored(e) => e.size,
        }
    }

    /// Whether a reconcile after a blind period found this change.
    ///
    /// # Examples
    /// ```
    /// # use firehose_consumer::{EventKind, FileEvent, Record};
    /// # let ev = FileEvent { seq: 3, time_ns: 9, kind: EventKind::Create, path: vec![], path_to: None, rule: 4, size: None, gap: None, reconciled: true, blind: None };
    /// assert!(Record::Stored(&ev).reconciled());
    /// ```
    pub fn reconciled(&self) -> bool {
        match self {
            Record::Live(a) => a.reconciled,
            Record::Stored(e) => e.reconciled,
        }
    }

    /// For a BlindStart or BlindEnd record: why the service was blind, and since when.
    pub fn blind(&self) -> Option<BlindInfo> {
        match self {
            Record::Live(a) => a.blind.as_ref().map(|b| BlindInfo {
                reason: BlindReason::from(b.reason),
                since_ns: b.since_ns.to_native(),
            }),
            Record::Stored(e) => e.blind,
        }
    }

    /// The archived form, if the record came zero-copy from the ring.
    ///
    /// # Examples
    /// ```
    /// # use firehose_consumer::{EventKind, FileEvent, Record};
    /// # let ev = FileEvent { seq: 3, time_ns: 9, kind: EventKind::Modify, path: vec![], path_to: None, rule: 4, size: Some(10), gap: None, reconciled: false, blind: None };
    /// assert!(Record::Stored(&ev).archived().is_none());
    /// ```
    pub fn archived(&self) -> Option<&'a ArchivedFileEvent> {
        match self {
            Record::Live(a) => Some(a),
            Record::Stored(_) => None,
        }
    }

    /// An owned copy.
    ///
    /// # Examples
    /// ```
    /// # use firehose_consumer::{EventKind, FileEvent, Record};
    /// # let ev = FileEvent { seq: 3, time_ns: 9, kind: EventKind::Modify, path: vec![], path_to: None, rule: 4, size: Some(10), gap: None, reconciled: false, blind: None };
    /// assert_eq!(Record::Stored(&ev).to_file_event(), ev);
    /// ```
    pub fn to_file_event(&self) -> FileEvent {
        match self {
            Record::Live(a) => FileEvent {
                seq: a.seq.to_native(),
                time_ns: a.time_ns.to_native(),
                kind: EventKind::from(a.kind),
                path: a.path.as_slice().to_vec(),
                path_to: a.path_to.as_ref().map(|p| p.as_slice().to_vec()),
                rule: a.rule.to_native(),
                size: a.size.as_ref().map(|s| s.to_native()),
                reconciled: a.reconciled,
                blind: a.blind.as_ref().map(|b| BlindInfo {
                    reason: BlindReason::from(b.reason),
                    since_ns: b.since_ns.to_native(),
                }),
                gap: a.gap.as_ref().map(|g| GapInfo {
                    to: g.to.to_native(),
                    reason: GapReason::from(g.reason),
                }),
            },
            Record::Stored(e) => (*e).clone(),
        }
    }
}

/// One thing a follower reports, in seq order. Borrows the follower until the next call
/// on it; [`to_owned_event`](Event::to_owned_event) keeps it longer.
///
/// # Examples
/// ```no_run
/// use firehose_consumer::{Event, Loss};
/// let mut f = firehose_consumer::follow_from(1)?;
/// loop {
///     for ev in f.recv(4096)? {
///         match ev {
///             Event::Record(r) => println!("{}", r.seq()),
///             Event::Loss(Loss::Gap { from, to, reason }) => println!("{from}..={to} never stored: {reason:?}"),
///             Event::Loss(Loss::Truncated { oldest }) => println!("history starts at {oldest}"),
///             other => println!("{other:?}"),
///         }
///     }
/// }
/// # Ok::<(), firehose_consumer::FollowError>(())
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A record.
    Record(Record<'a>),
    /// Seqs that will not come as records, and why (a gap, lag, what history does not
    /// have, where history starts). A ring gap code this build does not know is reported as
    /// a [`Loss::Gap`] with [`GapReason::NotStreamed`].
    Loss(Loss),
    /// The connection ended. With reconnect on, a [`Event::Reconnected`] follows once the
    /// service is back.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// What the service or the OS said.
        detail: &'a str,
    },
    /// Connected again; live records resume at `start_seq` (the hole before it is
    /// backfilled, or reported as lagged).
    Reconnected {
        /// The first live seq of the new connection.
        start_seq: u64,
    },
    /// The service serves another history instance than the one this follower started
    /// with. Nothing after this is delivered: the follower's seqs mean nothing there.
    OtherInstance {
        /// The instance the follower started with.
        expected: InstanceId,
        /// The service's instance now.
        found: InstanceId,
    },
}

impl Event<'_> {
    /// Whether this is a record (not news about the stream).
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::{Event, Loss};
    /// assert!(!Event::Loss(Loss::Lagged { from: 1, to: 1 }).is_record());
    /// ```
    pub fn is_record(&self) -> bool {
        matches!(self, Event::Record(_))
    }

    /// An owned copy, to keep past the next call on the follower.
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::{Event, Loss, OwnedEvent};
    /// let e = Event::Loss(Loss::Lagged { from: 1, to: 2 }).to_owned_event();
    /// assert_eq!(e, OwnedEvent::Loss(Loss::Lagged { from: 1, to: 2 }));
    /// ```
    pub fn to_owned_event(&self) -> crate::OwnedEvent {
        use crate::OwnedEvent as O;
        match *self {
            Event::Record(r) => O::Record(r.to_file_event()),
            Event::Loss(l) => O::Loss(l),
            Event::Disconnected { reason, detail } => O::Disconnected {
                reason,
                detail: detail.to_owned(),
            },
            Event::Reconnected { start_seq } => O::Reconnected { start_seq },
            Event::OtherInstance { expected, found } => O::OtherInstance { expected, found },
        }
    }

    /// The last seq this event accounts for, if it is about seqs.
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::{Event, Loss};
    /// assert_eq!(Event::Loss(Loss::Lagged { from: 1, to: 5 }).last_seq(), Some(5));
    /// assert_eq!(Event::Reconnected { start_seq: 9 }.last_seq(), None);
    /// ```
    pub fn last_seq(&self) -> Option<u64> {
        match self {
            Event::Record(r) => Some(r.seq()),
            // A storage gap's seqs may still stream: it does not move past them.
            Event::Loss(
                Loss::Gap { to, .. } | Loss::Lagged { to, .. } | Loss::Missing { to, .. },
            ) => Some(*to),
            _ => None,
        }
    }
}
