//! [`Rate`]: records per second over the last minute, for a sparkline.

use std::collections::VecDeque;

/// Seconds a [`Rate`] keeps.
pub const SECONDS: usize = 60;

/// Counts per whole second, the newest last.
#[derive(Clone, Debug, Default)]
pub struct Rate {
    /// Completed seconds, oldest first (at most [`SECONDS`]).
    done: VecDeque<u64>,
    /// The second being counted (seconds since the monitor started) and its count.
    cur: (u64, u64),
}

impl Rate {
    /// Counts `n` records seen at `sec` (seconds since start). Returns true if a second
    /// ended (the sparkline moved).
    ///
    /// # Examples
    /// ```
    /// let mut r = firehose_consumer::monitor::Rate::default();
    /// assert!(!r.add(0, 5));
    /// assert!(r.add(1, 2));
    /// assert_eq!((r.history(), r.last(), r.current()), (vec![5], 5, 2));
    /// ```
    pub fn add(&mut self, sec: u64, n: u64) -> bool {
        let mut moved = false;
        // Past a minute of silence every kept second is zero: skip ahead, not one by one.
        if sec > self.cur.0.saturating_add(SECONDS as u64) {
            self.done.clear();
            self.cur = (sec - SECONDS as u64, 0);
        }
        while self.cur.0 < sec {
            self.done.push_back(self.cur.1);
            if self.done.len() > SECONDS {
                self.done.pop_front();
            }
            self.cur = (self.cur.0 + 1, 0);
            moved = true;
        }
        self.cur.1 += n;
        moved
    }

    /// Whether nothing but zeros is shown and nothing is being counted: then the passing
    /// seconds change nothing on screen, and no timer needs to tick it.
    pub fn is_quiet(&self) -> bool {
        self.cur.1 == 0 && self.done.iter().all(|&n| n == 0)
    }

    /// The completed seconds, oldest first.
    pub fn history(&self) -> Vec<u64> {
        self.done.iter().copied().collect()
    }

    /// The last completed second's count.
    pub fn last(&self) -> u64 {
        self.done.back().copied().unwrap_or(0)
    }

    /// The count of the second under way.
    pub fn current(&self) -> u64 {
        self.cur.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_roll_and_stay_bounded() {
        let mut r = Rate::default();
        assert!(!r.add(0, 5));
        assert!(r.add(1, 2));
        assert_eq!(r.history(), [5]);
        assert!(r.add(100, 0));
        assert_eq!(r.history().len(), SECONDS);
        assert_eq!(r.last(), 0);
        assert!(r.is_quiet());
        // A long silence is not walked second by second.
        assert!(r.add(u64::MAX / 2, 3));
        assert_eq!((r.history().len(), r.current()), (SECONDS, 3));
    }
}
