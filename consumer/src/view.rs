//! [`Events`]: the events one call on a [`Follower`](crate::Follower) hands out, either
//! straight from the ring (zero-copy) or from its queue.

use firehose_transport::record::{FileEvent, Loss};
use firehose_transport::ring::{BatchIter, Event as RingEvent};

use crate::events::{Event, Record};
use crate::live::ring_reason;
use crate::owned::OwnedEvent;

/// The events one call handed out, in seq order. An iterator of [`Event`]s that borrow
/// the follower: records from the ring are read in place. [`len`](Self::len) says how
/// many are left.
///
/// # Examples
/// ```no_run
/// let mut f = firehose_consumer::Options::new().connect()?;
/// let events = f.drain(1024)?;
/// println!("{} new", events.len());
/// for ev in events {
///     println!("{:?}", ev.last_seq());
/// }
/// # Ok::<(), firehose_consumer::FollowError>(())
/// ```
#[derive(Debug)]
pub struct Events<'a> {
    inner: Inner<'a>,
    left: usize,
}

#[derive(Debug)]
enum Inner<'a> {
    Empty,
    Owned(std::slice::Iter<'a, OwnedEvent>),
    Live {
        iter: BatchIter<'a, FileEvent>,
        floor: u64,
    },
}

impl<'a> Events<'a> {
    pub(crate) fn empty() -> Self {
        Events {
            inner: Inner::Empty,
            left: 0,
        }
    }

    pub(crate) fn owned(events: &'a [OwnedEvent]) -> Self {
        Events {
            inner: Inner::Owned(events.iter()),
            left: events.len(),
        }
    }

    /// The events of a ring batch from `floor` on (`count` of them, as counted by
    /// `live::scan`).
    pub(crate) fn live(iter: BatchIter<'a, FileEvent>, floor: u64, count: usize) -> Self {
        Events {
            inner: Inner::Live { iter, floor },
            left: count,
        }
    }

    /// How many events are left.
    ///
    /// # Examples
    /// ```no_run
    /// let mut f = firehose_consumer::Options::new().connect()?;
    /// let n = f.drain(64)?.len();
    /// assert!(n <= 64);
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.left
    }

    /// True if nothing is left.
    ///
    /// # Examples
    /// ```no_run
    /// let mut f = firehose_consumer::Options::new().connect()?;
    /// if f.drain(64)?.is_empty() {
    ///     println!("nothing new this frame");
    /// }
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        let ev = match &mut self.inner {
            Inner::Empty => None,
            Inner::Owned(it) => it.next().map(OwnedEvent::as_event),
            Inner::Live { iter, floor } => loop {
                let Some(e) = iter.next() else { break None };
                match e {
                    RingEvent::Record(r) => {
                        let s = r.seq();
                        if s < *floor {
                            continue;
                        }
                        break Some(match r.access() {
                            Ok(a) => Event::Record(Record::Live(a)),
                            // Bytes that fail validation are reported, never handed out.
                            Err(_) => Event::Loss(Loss::Lagged { from: s, to: s }),
                        });
                    }
                    RingEvent::Gap { from, to, reason } => {
                        if to < *floor {
                            continue;
                        }
                        break Some(Event::Loss(Loss::Gap {
                            from: from.max(*floor),
                            to,
                            reason: ring_reason(reason),
                        }));
                    }
                    RingEvent::Lagged { from, to } => {
                        if to < *floor {
                            continue;
                        }
                        break Some(Event::Loss(Loss::Lagged {
                            from: from.max(*floor),
                            to,
                        }));
                    }
                }
            },
        };
        if ev.is_some() {
            self.left = self.left.saturating_sub(1);
        }
        ev
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}
