//! Frame pacing: when records come, the next frame is asked for one frame interval after
//! the last frame began, not one interval after the records came.
//!
//! Asking "repaint in 16 ms" from the follower's thread each time a batch lands made the
//! period the draw time plus 16 ms (a batch lands just after each frame takes the inbox):
//! 42–46 frames/s under load, and records waited up to two frames. Paced from the last
//! frame's start, frames run at the display's pace while records stream, and the first
//! record after a quiet spell is drawn at once.
//!
//! One request per frame: a request made just before a frame begins is handled by the
//! event loop only after that frame ran, and would then ask for a second frame at once
//! (frames 8 ms apart, 70–78 frames/s). So a frame is asked for only when none is pending
//! since the last one began.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One frame at 60 Hz.
pub const FRAME: Duration = Duration::from_nanos(16_666_667);

/// Frames after which a frame asked for and not begun counts as lost, and is asked again.
const STUCK: u32 = 4;

/// Shared between the draw loop (which says when a frame begins) and the threads that ask
/// for frames.
#[derive(Clone, Debug)]
pub struct Pacer {
    base: Instant,
    /// When the last frame began, ns after `base` (0: none yet).
    last_ns: Arc<AtomicU64>,
    /// A frame was asked for and has not begun yet.
    pending: Arc<AtomicBool>,
    frame: Duration,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new(FRAME)
    }
}

impl Pacer {
    /// A pacer for frames `frame` apart.
    pub fn new(frame: Duration) -> Pacer {
        Pacer {
            base: Instant::now(),
            last_ns: Arc::new(AtomicU64::new(0)),
            pending: Arc::new(AtomicBool::new(false)),
            frame,
        }
    }

    /// The draw loop began a frame.
    pub fn frame_began(&self) {
        self.began_at(Instant::now());
    }

    fn began_at(&self, t: Instant) {
        // Relaxed: a stale value only moves one frame request by less than a frame.
        let ns = t.saturating_duration_since(self.base).as_nanos() as u64;
        self.last_ns.store(ns.max(1), Ordering::Relaxed);
        // Release, and the follower's swap in `ask` acquires: records pushed after this
        // frame takes the inbox ask again. (The inbox's lock already orders the push after
        // the take, and so after this store.)
        self.pending.store(false, Ordering::Release);
    }

    /// Records came: how long from now the next frame should begin, or `None` if a frame
    /// is already asked for (it takes these records too, it has not begun yet).
    pub fn ask(&self) -> Option<Duration> {
        self.ask_at(Instant::now())
    }

    fn ask_at(&self, now: Instant) -> Option<Duration> {
        // Asked already and no frame began since: that frame takes these records too,
        // unless it is long overdue (a request the toolkit dropped): then ask again.
        let overdue = self
            .since_began(now)
            .is_none_or(|d| d >= STUCK * self.frame);
        if self.pending.swap(true, Ordering::AcqRel) && !overdue {
            return None;
        }
        Some(self.delay_at(now))
    }

    /// How long ago the last frame began (`None`: none yet).
    fn since_began(&self, now: Instant) -> Option<Duration> {
        // Relaxed: a stale value only moves one frame request by less than a frame (or asks
        // again early once, if it looks overdue).
        let last = self.last_ns.load(Ordering::Relaxed);
        (last != 0).then(|| {
            now.saturating_duration_since(self.base)
                .saturating_sub(Duration::from_nanos(last))
        })
    }

    /// How long from `now` until the next frame should begin: what is left of the frame
    /// interval since the last frame began (zero if it has passed, or before the first).
    fn delay_at(&self, now: Instant) -> Duration {
        self.since_began(now)
            .map_or(Duration::ZERO, |since| self.frame.saturating_sub(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_frame_is_one_interval_after_the_last_began() {
        let p = Pacer::new(Duration::from_millis(16));
        let t0 = p.base + Duration::from_secs(1);
        assert_eq!(p.delay_at(t0), Duration::ZERO, "before any frame: at once");
        p.began_at(t0);
        assert_eq!(p.delay_at(t0), Duration::from_millis(16));
        // Records landing 10 ms into the frame wait the 6 ms left, not 16 more.
        assert_eq!(
            p.delay_at(t0 + Duration::from_millis(10)),
            Duration::from_millis(6)
        );
        // After a quiet spell they are drawn at once.
        assert_eq!(p.delay_at(t0 + Duration::from_secs(5)), Duration::ZERO);
        // A clone shares the clock.
        let q = p.clone();
        q.began_at(t0 + Duration::from_secs(5));
        assert_eq!(
            p.delay_at(t0 + Duration::from_secs(5) + Duration::from_millis(4)),
            Duration::from_millis(12)
        );
    }

    #[test]
    fn one_frame_is_asked_for_until_it_begins() {
        let p = Pacer::new(Duration::from_millis(16));
        let t0 = p.base + Duration::from_secs(1);
        p.began_at(t0);
        assert_eq!(
            p.ask_at(t0 + Duration::from_millis(2)),
            Some(Duration::from_millis(14))
        );
        // More batches before that frame begins: it takes them too.
        assert_eq!(p.ask_at(t0 + Duration::from_millis(5)), None);
        assert_eq!(p.ask_at(t0 + Duration::from_millis(20)), None);
        // Unless it never comes (a request the toolkit dropped): then ask again, at once.
        assert_eq!(
            p.ask_at(t0 + Duration::from_millis(70)),
            Some(Duration::ZERO)
        );
        // The frame began: the next batch asks for the one after.
        p.began_at(t0 + Duration::from_millis(16));
        assert_eq!(
            p.ask_at(t0 + Duration::from_millis(17)),
            Some(Duration::from_millis(15))
        );
    }
}
