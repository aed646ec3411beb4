//! A follower on its own thread, for applications with a draw loop: the thread drains the
//! ring as records come into a bounded inbox of owned events, calls back when it added
//! some (a GUI asks for a repaint there), and the draw loop takes the inbox once per frame
//! without ever waiting on the ring or the socket.
//!
//! At about 130 bytes a record, one 30 fps frame at 1 M records/s is about 4 MB, the whole
//! default ring: a reader that only reads once per frame would lag, this one does not.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::FollowError;
use crate::events::Event;
use crate::follow::Follower;
use crate::owned::OwnedEvent;

/// The most events one receive takes from the follower.
const RECV_MAX: usize = 65_536;
/// How long one receive waits before the thread looks at its stop flag: an idle
/// application is woken this rarely by it.
const RECV_WAIT: Duration = Duration::from_secs(10);

/// What a [`Background`] gathered since the last [`Background::take`].
#[derive(Debug, Default)]
pub struct Gathered {
    /// Records and notices, oldest first.
    pub events: VecDeque<OwnedEvent>,
    /// Records dropped because the application did not take them in time: the oldest go
    /// first, and at most the `cap` given to [`Follower::into_background`] wait. Notices
    /// (lag, gaps, disconnects) are never dropped.
    pub dropped: u64,
    /// The follower ended for good (no reconnect, another instance): why. Nothing more
    /// comes after it.
    pub ended: Option<FollowError>,
    /// When the oldest of these events came off the ring (its receive returned): how long
    /// the application let it wait is `first_at.elapsed()` at the take. After records were
    /// dropped (`dropped`), this is when the oldest of those came.
    pub first_at: Option<Instant>,
}

/// A follower draining on its own thread. Dropping it stops the thread (at once if records
/// are coming, else within ten seconds; it is not joined).
///
/// # Examples
/// ```no_run
/// let f = firehose_consumer::Options::new().name("my-gui").connect()?;
/// let bg = f.into_background(100_000, || { /* ask the UI for a repaint */ })?;
/// // Once per frame:
/// let got = bg.take();
/// for ev in &got.events {
///     println!("{:?}", ev.as_event().last_seq());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Background {
    inbox: Arc<Mutex<Gathered>>,
    next_seq: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    /// Moves this follower to a thread of its own that drains it into an inbox of at most
    /// `cap` records (see [`Background`]), calling `on_events` each time it adds some.
    ///
    /// # Errors
    /// If the thread cannot be started.
    ///
    /// # Examples
    /// ```no_run
    /// let bg = firehose_consumer::Options::new().connect()?.into_background(10_000, || {})?;
    /// assert!(bg.take().ended.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_background(
        self,
        cap: usize,
        on_events: impl Fn() + Send + 'static,
    ) -> std::io::Result<Background> {
        let inbox = Arc::new(Mutex::new(Gathered::default()));
        let next_seq = Arc::new(AtomicU64::new(self.next_seq()));
        let stop = Arc::new(AtomicBool::new(false));
        let (i, n, s) = (inbox.clone(), next_seq.clone(), stop.clone());
        std::thread::Builder::new()
            .name("firehose-follower".into())
            .spawn(move || run(self, cap.max(1), &i, &n, &s, on_events))?;
        Ok(Background {
            inbox,
            next_seq,
            stop,
        })
    }
}

impl Background {
    /// Everything gathered since the last call.
    ///
    /// # Examples
    /// ```no_run
    /// # let bg = firehose_consumer::Options::new().connect()?.into_background(10, || {})?;
    /// let got = bg.take();
    /// println!("{} events, {} dropped", got.events.len(), got.dropped);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take(&self) -> Gathered {
        std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The follower's next seq: where it resumes. Read before a [`take`](Self::take),
    /// every record below it is in that take or an earlier one (or counted as dropped).
    ///
    /// # Examples
    /// ```no_run
    /// # let bg = firehose_consumer::Options::new().connect()?.into_background(10, || {})?;
    /// println!("live from seq {}", bg.next_seq());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_seq(&self) -> u64 {
        // Relaxed is enough: it is stored inside the inbox's lock after the records before
        // it were pushed. If this load sees that store, the lock a later `take` takes comes
        // after that critical section: were it earlier, this load would happen before the
        // store it read, which coherence forbids.
        self.next_seq.load(Ordering::Relaxed)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Relaxed: the thread only has to see it eventually (after its current receive).
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run(
    mut f: Follower,
    cap: usize,
    inbox: &Mutex<Gathered>,
    next: &AtomicU64,
    stop: &AtomicBool,
    on_events: impl Fn(),
) {
    let mut local: Vec<OwnedEvent> = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        let got = f.recv_timeout(RECV_MAX, RECV_WAIT);
        let at = Instant::now();
        let ended = match got {
            Ok(evs) => {
                // Converted outside the lock: the draw loop only ever waits for an append.
                local.extend(evs.map(|e: Event<'_>| e.to_owned_event()));
                None
            }
            Err(e) => Some(e),
        };
        if local.is_empty() && ended.is_none() {
            next.store(f.next_seq(), Ordering::Relaxed);
            continue;
        }
        let mut g = inbox.lock().unwrap_or_else(|e| e.into_inner());
        if !local.is_empty() {
            g.first_at.get_or_insert(at);
        }
        g.events.extend(local.drain(..));
        bound(&mut g, cap);
        // Stored after the records before it are in the inbox (the lock orders it before
        // the next `take`): read before a `take`, `next_seq` never runs ahead of records
        // the caller has yet to take.
        next.store(f.next_seq(), Ordering::Relaxed);
        let done = ended.is_some();
        if ended.is_some() {
            g.ended = ended;
        }
        drop(g);
        on_events();
        if done {
            return;
        }
    }
}

/// Drops the oldest records beyond `cap` (never a notice), counting them.
fn bound(g: &mut Gathered, cap: usize) {
    // Cheap first: the inbox is taken every frame and rarely near its bound, and counting
    // it on every batch cost a pass over it per batch.
    if g.events.len() <= cap {
        return;
    }
    let records = g
        .events
        .iter()
        .filter(|e| matches!(e, OwnedEvent::Record(_)))
        .count();
    let mut over = records.saturating_sub(cap);
    if over == 0 {
        return;
    }
    let mut kept = Vec::new();
    while over > 0 {
        match g.events.pop_front() {
            Some(OwnedEvent::Record(_)) => {
                g.dropped += 1;
                over -= 1;
            }
            Some(e) => kept.push(e),
            None => break,
        }
    }
    for e in kept.into_iter().rev() {
        g.events.push_front(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firehose_transport::record::{EventKind, FileEvent};

    fn rec(seq: u64) -> OwnedEvent {
        OwnedEvent::Record(FileEvent {
            seq,
            time_ns: 0,
            kind: EventKind::Create,
            path: b"/a".to_vec(),
            path_to: None,
            rule: 0,
            size: None,
            reconciled: false,
            blind: None,
            gap: None,
        })
    }

    #[test]
    fn the_inbox_drops_the_oldest_records_and_keeps_every_notice() {
        let mut g = Gathered::default();
        g.events.extend([
            rec(1),
            OwnedEvent::Lagged { from: 2, to: 3 },
            rec(4),
            rec(5),
            rec(6),
        ]);
        bound(&mut g, 2);
        assert_eq!(g.dropped, 2);
        let seqs: Vec<Option<u64>> = g.events.iter().map(|e| e.as_event().last_seq()).collect();
        assert_eq!(seqs, [Some(3), Some(5), Some(6)]);
    }
}
