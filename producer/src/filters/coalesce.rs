//! [`Coalescer`]: folds a burst of events on one path into one record, for rules with a
//! coalescing window (`coalesce_ms`).
//!
//! A burst is the create, modify and close_write events on one path within the window of
//! the first of them: the window is half-open, `[first, first + window)`. The folded record
//! is the first event, with
//!
//! - its kind: `create` if the burst began with a create (the file is new), else the kind
//!   of the last event;
//! - what [`Coalescible::absorb`] takes from each later event (for [`FileEvent`], the
//!   latest known size).
//!
//! Any other kind (metadata, remove, rename, overflow), or an event without a window,
//! passes through, after the pending burst on the same path (or on a rename's other path)
//! is emitted: per path, records keep their order. Records on different paths may leave
//! in another order than they came (a burst waits for its window); seqs are assigned after
//! coalescing, so they stay increasing.
//!
//! The clock is explicit: every call takes `now`, nothing sleeps or reads a clock. The
//! caller waits until [`Coalescer::next_deadline`] and calls [`Coalescer::flush_due`].
//!
//! Memory is bounded: at most `cap` paths are pending. A new burst at the cap first emits
//! the pending burst with the earliest deadline (the one that would leave first anyway).

use firehose_transport::record::{EventKind, FileEvent};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// What the [`Coalescer`] needs from an event.
pub trait Coalescible {
    /// The path the burst is keyed by (for a rename, the old path).
    fn path(&self) -> &[u8];
    /// A second path the event touches (a rename's new path), if any.
    fn other_path(&self) -> Option<&[u8]> {
        None
    }
    /// The event's kind.
    fn kind(&self) -> EventKind;
    /// Sets the folded record's kind.
    fn set_kind(&mut self, kind: EventKind);
    /// Takes from `later`, a later event of the same burst, what the folded record should
    /// keep (such as the latest size). The kind is handled by the coalescer.
    fn absorb(&mut self, later: &Self);
}

impl Coalescible for FileEvent {
    fn path(&self) -> &[u8] {
        &self.path
    }
    fn other_path(&self) -> Option<&[u8]> {
        self.path_to.as_deref()
    }
    fn kind(&self) -> EventKind {
        self.kind
    }
    fn set_kind(&mut self, kind: EventKind) {
        self.kind = kind;
    }
    /// Keeps the latest known size; seq, time and rule stay those of the first event.
    fn absorb(&mut self, later: &Self) {
        if later.size.is_some() {
            self.size = later.size;
        }
    }
}

#[derive(Debug)]
struct Pending<E> {
    event: E,
    /// Key in `Coalescer::deadlines`: (deadline, arrival number).
    key: (Instant, u64),
}

/// Folds bursts of events per path; see the [module docs](self).
#[derive(Debug)]
pub struct Coalescer<E> {
    pending: HashMap<Vec<u8>, Pending<E>>,
    deadlines: BTreeMap<(Instant, u64), Vec<u8>>,
    arrivals: u64,
    cap: usize,
}

/// Whether `kind` can be part of a burst.
fn foldable(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create | EventKind::Modify | EventKind::CloseWrite
    )
}

impl<E: Coalescible> Coalescer<E> {
    /// A coalescer holding at most `cap` pending paths (at least 1).
    pub fn new(cap: usize) -> Self {
        Coalescer {
            pending: HashMap::new(),
            deadlines: BTreeMap::new(),
            arrivals: 0,
            cap: cap.max(1),
        }
    }

    /// Takes `event`, seen at `now`, whose rule has the coalescing window `window`, and
    /// appends to `out` what is ready to leave, in order: bursts due by `now`, a burst
    /// evicted at the cap, the pending burst on the event's path(s) when the event cannot
    /// join it, and the event itself when it does not start or join a burst. At most a
    /// few records; `out` is not cleared.
    ///
    /// (An `out` vector rather than an `Option`: one event can release up to three
    /// records, such as a remove releasing the pending create before it.)
    pub fn push(&mut self, event: E, window: Option<Duration>, now: Instant, out: &mut Vec<E>) {
        self.flush_due_into(now, out);
        let joins = window.is_some() && foldable(event.kind());
        if joins {
            if let Some(p) = self.pending.get_mut(event.path()) {
                let kind = if p.event.kind() == EventKind::Create {
                    EventKind::Create
                } else {
                    event.kind()
                };
                p.event.absorb(&event);
                p.event.set_kind(kind);
                return;
            }
        } else {
            self.take_into(event.path(), out);
            if let Some(other) = event.other_path() {
                self.take_into(other, out);
            }
        }
        match window {
            Some(window) if joins => {
                if self.pending.len() >= self.cap {
                    if let Some((_, path)) = self.deadlines.pop_first() {
                        if let Some(p) = self.pending.remove(&path) {
                            out.push(p.event);
                        }
                    }
                }
                let key = (now + window, self.arrivals);
                self.arrivals += 1;
                let path = event.path().to_vec();
                self.deadlines.insert(key, path.clone());
                self.pending.insert(path, Pending { event, key });
            }
            _ => out.push(event),
        }
    }

    /// Removes the pending burst on `path`, if any, into `out`.
    fn take_into(&mut self, path: &[u8], out: &mut Vec<E>) {
        if let Some(p) = self.pending.remove(path) {
            self.deadlines.remove(&p.key);
            out.push(p.event);
        }
    }

    /// The bursts whose window has ended by `now`, earliest deadline first.
    pub fn flush_due(&mut self, now: Instant) -> Vec<E> {
        let mut out = Vec::new();
        self.flush_due_into(now, &mut out);
        out
    }

    /// [`Coalescer::flush_due`] appending to `out`.
    pub fn flush_due_into(&mut self, now: Instant, out: &mut Vec<E>) {
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let path = entry.remove();
            if let Some(p) = self.pending.remove(&path) {
                out.push(p.event);
            }
        }
    }

    /// Every pending burst, earliest deadline first (at shutdown).
    pub fn flush_all(&mut self) -> Vec<E> {
        let mut out = Vec::with_capacity(self.pending.len());
        while let Some((_, path)) = self.deadlines.pop_first() {
            if let Some(p) = self.pending.remove(&path) {
                out.push(p.event);
            }
        }
        out
    }

    /// When the earliest pending burst is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|(k, _)| k.0)
    }

    /// How many paths have a pending burst.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no burst is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}
