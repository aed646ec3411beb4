//! Looking at a live batch from the ring: what it adds after `floor` (records below it
//! are duplicates of what was handed out), and, when it has holes to backfill, turning
//! it into queued events and holes.

use firehose_transport::record::{FileEvent, GapReason};
use firehose_transport::ring::{Batch, Event as RingEvent};

use crate::follow::{Cause, Pending};
use crate::owned::OwnedEvent;
use crate::Record;

/// What a batch holds after `floor`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan {
    /// Events to hand out.
    pub(crate) count: usize,
    /// The seq after the last of them.
    pub(crate) next: u64,
    /// With backfill: the batch misses seqs (lag, a ring gap, a jump) to fill from history.
    pub(crate) hole: bool,
}

/// The reason of a ring gap's code (a code this build does not know: not streamed).
pub(crate) fn ring_reason(code: u32) -> GapReason {
    GapReason::from_code(code).unwrap_or(GapReason::NotStreamed)
}

/// Looks at a batch without validating payloads.
pub(crate) fn scan(batch: &Batch<'_, FileEvent>, floor: u64, backfill: bool) -> Scan {
    let mut s = Scan {
        count: 0,
        next: floor,
        hole: false,
    };
    for e in batch {
        let (from, to) = match e {
            RingEvent::Record(r) => (r.seq(), r.seq()),
            RingEvent::Gap { from, to, .. } | RingEvent::Lagged { from, to } => {
                if backfill && to >= s.next {
                    s.hole = true;
                    return s;
                }
                (from, to)
            }
        };
        if to < s.next {
            continue;
        }
        if backfill && from > s.next {
            s.hole = true;
            return s;
        }
        s.count += 1;
        s.next = to + 1;
    }
    s
}

/// Queues a batch's events after `floor`, with a hole for every range it misses. Returns
/// the seq after the last thing queued.
pub(crate) fn to_pending(batch: &Batch<'_, FileEvent>, floor: u64, out: &mut Vec<Pending>) -> u64 {
    let mut h = floor;
    for e in batch {
        match e {
            RingEvent::Record(r) => {
                let s = r.seq();
                if s < h {
                    continue;
                }
                if s > h {
                    out.push(Pending::Hole {
                        from: h,
                        to: s - 1,
                        cause: Cause::Lag,
                    });
                }
                out.push(match r.access() {
                    Ok(a) => Pending::Event(OwnedEvent::Record(Record::Live(a).to_file_event())),
                    // Failed validation: ask history for it.
                    Err(_) => Pending::Hole {
                        from: s,
                        to: s,
                        cause: Cause::Lag,
                    },
                });
                h = s + 1;
            }
            RingEvent::Gap { from, to, reason } => {
                if to < h {
                    continue;
                }
                if from > h {
                    out.push(Pending::Hole {
                        from: h,
                        to: from - 1,
                        cause: Cause::Lag,
                    });
                }
                out.push(Pending::Hole {
                    from: from.max(h),
                    to,
                    cause: Cause::RingGap(ring_reason(reason)),
                });
                h = to + 1;
            }
            RingEvent::Lagged { from, to } => {
                if to < h {
                    continue;
                }
                // From `h`: a lag report that starts later also covers the jump before it.
                let _ = from;
                out.push(Pending::Hole {
                    from: h,
                    to,
                    cause: Cause::Lag,
                });
                h = to + 1;
            }
        }
    }
    h
}
