//! [`Rate`]: records per second over the last 60 s, for the sparkline.

use std::collections::VecDeque;

/// Seconds the sparkline covers.
pub(crate) const SECONDS: usize = 60;

/// Counts per whole second, the newest last.
#[derive(Debug, Default)]
pub(crate) struct Rate {
    /// Completed seconds, oldest first (at most [`SECONDS`]).
    done: VecDeque<u64>,
    /// The second being counted (seconds since the viewer started) and its count.
    cur: (u64, u64),
}

impl Rate {
    /// Counts `n` records seen at `sec` (seconds since start). Returns true if a second
    /// ended (the sparkline moved).
    pub(crate) fn add(&mut self, sec: u64, n: u64) -> bool {
        let mut moved = false;
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

    /// Whether the sparkline shows nothing but zeros and nothing is being counted: then the
    /// passing seconds change nothing on screen, and no timer needs to tick it.
    pub(crate) fn is_quiet(&self) -> bool {
        self.cur.1 == 0 && self.done.iter().all(|&n| n == 0)
    }

    /// The completed seconds, oldest first.
    pub(crate) fn history(&self) -> Vec<u64> {
        self.done.iter().copied().collect()
    }

    /// The last completed second's count.
    pub(crate) fn last(&self) -> u64 {
        self.done.back().copied().unwrap_or(0)
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
    }
}
