//! Records per second over the last second and the last minute, for `status`. The pipeline
//! adds counts; a reader's look advances the window to now, so no timer ticks it at rest.

use std::sync::Mutex;
use std::time::Instant;

/// The shared window.
#[derive(Debug)]
pub struct Rates(Mutex<Window>);

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Records in each of the last 60 seconds (a ring indexed by second number).
    per_sec: [u64; 60],
    /// The second the newest slot belongs to.
    sec: u64,
}

impl Window {
    /// Moves the window to the second `now` falls in, clearing the seconds passed.
    fn advance(&mut self, now: Instant) {
        let s = now.saturating_duration_since(self.started).as_secs();
        if s.saturating_sub(self.sec) >= 60 {
            self.per_sec = [0; 60];
            self.sec = s;
            return;
        }
        while self.sec < s {
            self.sec += 1;
            self.per_sec[(self.sec % 60) as usize] = 0;
        }
    }
}

impl Default for Rates {
    fn default() -> Self {
        Rates(Mutex::new(Window {
            started: Instant::now(),
            per_sec: [0; 60],
            sec: 0,
        }))
    }
}

impl Rates {
    /// Counts `n` records now.
    pub fn add(&self, n: u64) {
        self.add_at(n, Instant::now());
    }

    fn add_at(&self, n: u64, now: Instant) {
        let mut w = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.advance(now);
        let slot = (w.sec % 60) as usize;
        w.per_sec[slot] += n;
    }

    /// (records in the last whole second, mean records per second over the last minute).
    pub fn read(&self) -> (u64, u64) {
        self.read_at(Instant::now())
    }

    fn read_at(&self, now: Instant) -> (u64, u64) {
        let mut w = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.advance(now);
        let last = w.per_sec[((w.sec + 59) % 60) as usize];
        let minute: u64 = w.per_sec.iter().sum::<u64>() - w.per_sec[(w.sec % 60) as usize];
        (last, minute / 59)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_follow_the_counts_and_fall_to_zero_without_a_tick() {
        let r = Rates::default();
        let t0 = r.0.lock().unwrap().started;
        let at = |s: u64| t0 + Duration::from_millis(s * 1000 + 500);
        for s in 0..10 {
            r.add_at(590, at(s));
        }
        assert_eq!(r.read_at(at(10)), (590, 590 * 10 / 59));
        // Long silence: nothing ticked meanwhile, the look itself clears the window.
        assert_eq!(r.read_at(at(200)), (0, 0));
        r.add_at(5, at(201));
        assert_eq!(r.read_at(at(202)), (5, 0));
    }
}
