//! The follower's thread never waits on the UI: its repaint requests go through a relay
//! thread of their own.
//!
//! Asking egui for a repaint takes the context's lock, which the UI thread holds while it
//! lays out and tessellates a frame. Called from the follower's thread, that call waited
//! up to 10 ms behind a frame (measured with `scripts/gui-window`), and the records behind
//! it waited in the ring: the watcher-to-follower time of a frame's oldest record reached
//! 80–100 ms at 10,000 files/s. The follower now hands the request's deadline to the relay
//! without blocking (a bounded channel of one: a request already waiting covers this one,
//! see [`Pacer`](crate::pace::Pacer)), and the relay makes the call.

use std::time::{Duration, Instant};

/// A repaint request the follower's thread can make without waiting: `relay(delay)` hands
/// `now + delay` to a thread that calls `repaint` with what is left of it. The thread ends
/// when the last clone of the returned closure is dropped.
///
/// # Errors
/// If the thread cannot start.
pub fn relay(
    repaint: impl Fn(Duration) + Send + 'static,
) -> std::io::Result<impl Fn(Duration) + Send + Sync + Clone + 'static> {
    let (tx, rx) = crossbeam_channel::bounded::<Instant>(1);
    std::thread::Builder::new()
        .name("firehose-relay".into())
        .spawn(move || {
            for deadline in rx {
                repaint(deadline.saturating_duration_since(Instant::now()));
            }
        })?;
    Ok(move |delay: Duration| {
        // Full: a request is waiting for the relay; the frame it asks for takes these
        // records too. Disconnected cannot happen while this closure lives.
        let _waiting = tx.try_send(Instant::now() + delay);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_repaint_that_blocks_does_not_block_the_asker() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let g = gate.clone();
        let ask = relay(move |d| {
            let _wait_for_the_ui = g.lock().unwrap();
            done_tx.send(d).unwrap();
        })
        .unwrap();
        // The relay is stuck behind the "UI's" lock; the asker is not: its thousand asks
        // end while the lock is still held (were an ask to wait for the relay, this would
        // time out).
        let (asked_tx, asked_rx) = crossbeam_channel::bounded(1);
        let asker = {
            let ask = ask.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    ask(Duration::from_millis(5));
                }
                asked_tx.send(()).unwrap();
            })
        };
        asked_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the asks returned while the relay was blocked");
        asker.join().unwrap();
        drop(held);
        let d = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the relay's call, once the lock is free");
        assert!(
            d <= Duration::from_millis(5),
            "what is left of the delay: {d:?}"
        );
        // At most the one in the relay's hands and one waiting: dropping the asker ends the
        // relay, which drops `done_tx`, so this count ends.
        drop(ask);
        assert!(done_rx.iter().count() <= 1);
    }
}
