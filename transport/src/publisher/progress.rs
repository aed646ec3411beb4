//! The lossless readers' progress budget, as a sans-IO rule: positions and `now` go in, the
//! readers to cut off come out. The ring's owner ([`super`]) feeds it, since it is the side
//! that sees a reader hold the producer back.
//!
//! A lossless reader *holds the producer back* while less than a quarter of the ring is free
//! ahead of it. From the moment it starts to, it has [`ProgressConfig::window`] to release at
//! least [`ProgressConfig::min_progress`] bytes; one that does not (stalled, or trickling just
//! enough to dodge a plain timeout) is cut off. One that does starts a new window from where
//! it is. One that stops holding back has its window closed. Departed readers are not judged:
//! the producer leaves them behind by itself the moment they would hold it back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ring::{Policy, ReaderId, ReaderProgress};

/// The budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressConfig {
    /// How long a lossless reader may hold the producer back...
    pub window: Duration,
    /// ...without releasing at least this many bytes, before it is cut off.
    pub min_progress: u64,
}

impl Default for ProgressConfig {
    fn default() -> Self {
        ProgressConfig {
            window: Duration::from_secs(3),
            min_progress: 1 << 20,
        }
    }
}

/// The windows of the lossless readers that hold the producer back now.
#[derive(Debug, Default)]
pub struct Progress {
    config: ProgressConfig,
    /// Reader -> (when its window began, its released position then).
    windows: HashMap<ReaderId, (Instant, u64)>,
}

impl Progress {
    /// The rule for `config`.
    pub fn new(config: ProgressConfig) -> Self {
        Progress {
            config,
            windows: HashMap::new(),
        }
    }

    /// The budget in force.
    pub fn config(&self) -> ProgressConfig {
        self.config
    }

    /// Looks at every reader of a ring of `capacity` bytes at `now`; returns the lossless
    /// readers to cut off (their windows are closed). Readers not in `readers` are
    /// forgotten.
    pub fn observe(
        &mut self,
        now: Instant,
        capacity: u64,
        readers: &[ReaderProgress],
    ) -> Vec<ReaderId> {
        self.observe_blocked(now, capacity, readers, None)
    }

    /// As [`observe`](Self::observe), with `blocker` the reader a record is waiting for
    /// now: it holds the ring back whatever room it leaves (a large record may need more
    /// than the quarter of the ring the rule below looks for).
    pub fn observe_blocked(
        &mut self,
        now: Instant,
        capacity: u64,
        readers: &[ReaderProgress],
        blocker: Option<ReaderId>,
    ) -> Vec<ReaderId> {
        let mut cut = Vec::new();
        let mut seen = Vec::with_capacity(self.windows.len());
        for r in readers {
            if r.policy != Policy::Lossless || r.departed {
                continue;
            }
            // Holding back: less than a quarter of the ring left ahead of it, or a record
            // waits for it.
            if r.lag.saturating_add(capacity / 4) < capacity && blocker != Some(r.id) {
                self.windows.remove(&r.id);
                continue;
            }
            seen.push(r.id);
            match self.windows.get(&r.id).copied() {
                None => {
                    self.windows.insert(r.id, (now, r.released));
                }
                Some((since, at))
                    if now.saturating_duration_since(since) >= self.config.window
                        && r.released.saturating_sub(at) < self.config.min_progress =>
                {
                    self.windows.remove(&r.id);
                    cut.push(r.id);
                }
                Some((since, _)) if now.saturating_duration_since(since) >= self.config.window => {
                    self.windows.insert(r.id, (now, r.released));
                }
                Some(_) => {}
            }
        }
        self.windows
            .retain(|id, _| seen.contains(id) && !cut.contains(id));
        cut
    }

    /// When the earliest open window ends (`None`: no reader holds the producer back).
    pub fn next_due(&self) -> Option<Instant> {
        self.windows
            .values()
            .map(|(since, _)| *since + self.config.window)
            .min()
    }

    /// Whether some reader's window is open.
    pub fn is_watching(&self) -> bool {
        !self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 1 << 20;

    fn lossless(id: u64, released: u64, lag: u64) -> ReaderProgress {
        ReaderProgress {
            id: ReaderId(id),
            policy: Policy::Lossless,
            departed: false,
            released,
            lag,
        }
    }

    fn rule() -> Progress {
        Progress::new(ProgressConfig {
            window: Duration::from_secs(3),
            min_progress: 1000,
        })
    }

    #[test]
    fn a_stalled_reader_is_cut_when_its_window_ends_and_not_before() {
        let mut p = rule();
        let t0 = Instant::now();
        let full = [lossless(1, 0, CAP)];
        assert!(p.observe(t0, CAP, &full).is_empty());
        assert_eq!(p.next_due(), Some(t0 + Duration::from_secs(3)));
        assert!(p
            .observe(t0 + Duration::from_millis(2999), CAP, &full)
            .is_empty());
        assert_eq!(
            p.observe(t0 + Duration::from_secs(3), CAP, &full),
            vec![ReaderId(1)]
        );
        assert!(!p.is_watching());
    }

    #[test]
    fn a_trickling_reader_is_cut_and_a_moving_one_gets_a_new_window() {
        let mut p = rule();
        let t0 = Instant::now();
        p.observe(t0, CAP, &[lossless(1, 0, CAP), lossless(2, 0, CAP)]);
        let later = t0 + Duration::from_secs(3);
        // Reader 1 released 999 bytes (under the minimum), reader 2 released 5000.
        let cut = p.observe(later, CAP, &[lossless(1, 999, CAP), lossless(2, 5000, CAP)]);
        assert_eq!(cut, vec![ReaderId(1)]);
        assert_eq!(p.next_due(), Some(later + Duration::from_secs(3)));
    }

    #[test]
    fn a_reader_that_stops_holding_back_is_forgiven_and_others_are_not_judged() {
        let mut p = rule();
        let t0 = Instant::now();
        p.observe(t0, CAP, &[lossless(1, 0, CAP)]);
        // It caught up: more than a quarter free.
        p.observe(t0 + Duration::from_secs(1), CAP, &[lossless(1, 0, CAP / 2)]);
        assert!(!p.is_watching());
        let lagging = ReaderProgress {
            policy: Policy::Lagging,
            ..lossless(2, 0, CAP)
        };
        let departed = ReaderProgress {
            departed: true,
            ..lossless(3, 0, CAP)
        };
        for dt in [0, 10] {
            assert!(p
                .observe(t0 + Duration::from_secs(dt), CAP, &[lagging, departed])
                .is_empty());
        }
        assert!(!p.is_watching());
    }

    #[test]
    fn a_reader_that_left_is_forgotten() {
        let mut p = rule();
        let t0 = Instant::now();
        p.observe(t0, CAP, &[lossless(1, 0, CAP)]);
        p.observe(t0, CAP, &[]);
        assert_eq!(p.next_due(), None);
    }
}
