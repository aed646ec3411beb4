//! The live reader: a thread that owns the follower and drains the ring as fast as records
//! come, converting each into a [`Row`] and handing them to the screen through a bounded
//! inbox. The screen takes the inbox once per frame, so a frame's worth of records never
//! has to fit in the ring (at 1M records/s one 30 fps frame is about 4 MB, the whole
//! default ring), and the screen never waits on the ring or the socket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use firehose_consumer::{Event, Follower, OwnedEvent};

use super::row::Row;

/// The most events one receive takes from the follower.
const RECV_MAX: usize = 65_536;
/// How long one receive waits for records before it looks at `stop` again.
const RECV_WAIT: Duration = Duration::from_millis(100);

/// What the reader hands the screen.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A record.
    Row(Row),
    /// A notice: lag, a gap, a disconnect or reconnect, ...
    Notice(OwnedEvent),
    /// The follower ended for good (why).
    Ended(String),
}

/// What the reader has gathered since the screen last looked.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Oldest first.
    pub(crate) msgs: VecDeque<Msg>,
    /// Rows dropped from the inbox because the screen did not take them in time (the
    /// oldest first; they would have been pushed out of the screen's buffer anyway).
    pub(crate) dropped: u64,
}

/// The reader thread's handle; stops and joins it when dropped.
pub(crate) struct Live {
    inbox: Arc<Mutex<Inbox>>,
    next_seq: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Live {
    /// Starts draining `f`, holding at most `cap` rows for the screen.
    pub(crate) fn start(f: Follower, cap: usize) -> std::io::Result<Live> {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let next_seq = Arc::new(AtomicU64::new(f.next_seq()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (inbox, next_seq, stop) = (inbox.clone(), next_seq.clone(), stop.clone());
            std::thread::Builder::new()
                .name("firehose-view-live".into())
                .spawn(move || run(f, cap.max(1), &inbox, &next_seq, &stop))?
        };
        Ok(Live {
            inbox,
            next_seq,
            stop,
            thread: Some(thread),
        })
    }

    /// Everything gathered since the last call, and how many rows were dropped meanwhile.
    pub(crate) fn take(&self) -> (VecDeque<Msg>, u64) {
        let mut i = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut i.msgs), std::mem::take(&mut i.dropped))
    }

    /// The follower's next seq (where live resumes).
    pub(crate) fn next_seq(&self) -> u64 {
        // Relaxed: a display value; no other memory depends on it.
        self.next_seq.load(Ordering::Relaxed)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Relaxed: the thread only needs to see it eventually (within one RECV_WAIT).
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut f: Follower, cap: usize, inbox: &Mutex<Inbox>, next: &AtomicU64, stop: &AtomicBool) {
    let mut local: Vec<Msg> = Vec::with_capacity(RECV_MAX);
    while !stop.load(Ordering::Relaxed) {
        let ended = match f.recv_timeout(RECV_MAX, RECV_WAIT) {
            Ok(evs) => {
                // Converted outside the lock: the screen only waits for the append.
                for ev in evs {
                    local.push(match &ev {
                        Event::Record(r) => Msg::Row(Row::from_record(r)),
                        other => Msg::Notice(other.to_owned_event()),
                    });
                }
                None
            }
            Err(e) => Some(e.to_string()),
        };
        next.store(f.next_seq(), Ordering::Relaxed);
        let mut i = inbox.lock().unwrap_or_else(|e| e.into_inner());
        i.msgs.extend(local.drain(..));
        if let Some(why) = &ended {
            i.msgs.push_back(Msg::Ended(why.clone()));
        }
        bound(&mut i, cap);
        drop(i);
        if ended.is_some() {
            return;
        }
    }
}

/// Drops the oldest rows beyond `cap` (never a notice), counting them.
fn bound(i: &mut Inbox, cap: usize) {
    let mut over = i.msgs.len().saturating_sub(cap);
    if over == 0 {
        return;
    }
    let mut kept = Vec::new();
    while over > 0 {
        match i.msgs.pop_front() {
            Some(Msg::Row(_)) => {
                i.dropped += 1;
                over -= 1;
            }
            Some(m) => kept.push(m),
            None => break,
        }
    }
    for m in kept.into_iter().rev() {
        i.msgs.push_front(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firehose_consumer::EventKind;

    #[test]
    fn the_inbox_drops_the_oldest_rows_and_keeps_every_notice() {
        let row = |s| Msg::Row(super::super::row::test_row(s, EventKind::Create, "/a"));
        let msgs = vec![
            row(1),
            Msg::Notice(OwnedEvent::Lagged { from: 2, to: 3 }),
            row(4),
            row(5),
            row(6),
        ];
        let mut i = Inbox::default();
        i.msgs.extend(msgs);
        bound(&mut i, 2);
        assert_eq!(i.dropped, 3);
        let seqs: Vec<String> = i
            .msgs
            .iter()
            .map(|m| match m {
                Msg::Row(r) => r.seq.to_string(),
                Msg::Notice(_) => "lag".into(),
                Msg::Ended(_) => "end".into(),
            })
            .collect();
        assert_eq!(seqs, ["lag", "6"]);
    }
}
