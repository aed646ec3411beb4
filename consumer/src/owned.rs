//! [`OwnedEvent`]: an [`Event`] that owns its data, for keeping past the next call (a
//! GUI's window of rows, a channel, an async stream).

use firehose_transport::control::wire::DisconnectReason;
use firehose_transport::record::{EventKind, FileEvent, Loss};

use crate::events::{Event, InstanceId, Record};

/// An [`Event`] that owns its record. See [`Event`] for the meaning of each variant.
///
/// # Examples
/// ```
/// use firehose_consumer::{Event, Loss, OwnedEvent};
/// let owned = OwnedEvent::Loss(Loss::Truncated { oldest: 10 });
/// assert!(matches!(owned.as_event(), Event::Loss(Loss::Truncated { oldest: 10 })));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is documented on `Event`
pub enum OwnedEvent {
    Record(FileEvent),
    Loss(Loss),
    Disconnected {
        reason: DisconnectReason,
        detail: String,
    },
    Reconnected {
        start_seq: u64,
    },
    OtherInstance {
        expected: InstanceId,
        found: InstanceId,
    },
}

impl OwnedEvent {
    /// Borrows it as an [`Event`].
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::{Loss, OwnedEvent};
    /// assert_eq!(OwnedEvent::Loss(Loss::Lagged { from: 1, to: 2 }).as_event().last_seq(), Some(2));
    /// ```
    pub fn as_event(&self) -> Event<'_> {
        match self {
            OwnedEvent::Record(e) => Event::Record(Record::Stored(e)),
            &OwnedEvent::Loss(l) => Event::Loss(l),
            OwnedEvent::Disconnected { reason, detail } => Event::Disconnected {
                reason: *reason,
                detail,
            },
            &OwnedEvent::Reconnected { start_seq } => Event::Reconnected { start_seq },
            &OwnedEvent::OtherInstance { expected, found } => {
                Event::OtherInstance { expected, found }
            }
        }
    }

    /// A history row as an event: a gap row (kind `Gap` with its end and reason) becomes
    /// [`Loss::Gap`], anything else a record.
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::{EventKind, FileEvent, GapInfo, GapReason, Loss, OwnedEvent};
    /// let row = FileEvent { seq: 4, time_ns: 0, kind: EventKind::Gap, path: vec![], path_to: None,
    ///     rule: 0, size: None, gap: Some(GapInfo { to: 6, reason: GapReason::NotStored }),
    ///     reconciled: false, blind: None };
    /// assert_eq!(OwnedEvent::from_row(row),
    ///     OwnedEvent::Loss(Loss::Gap { from: 4, to: 6, reason: GapReason::NotStored }));
    /// ```
    pub fn from_row(row: FileEvent) -> Self {
        match row.gap {
            Some(g) if row.kind == EventKind::Gap => OwnedEvent::Loss(Loss::Gap {
                from: row.seq,
                to: g.to,
                reason: g.reason,
            }),
            _ => OwnedEvent::Record(row),
        }
    }
}
