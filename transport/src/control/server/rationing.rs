//! Who may read losslessly, as a sans-IO rule: uids and `now` go in, refusals come out.
//!
//! Every rotation that leaves a lossless reader behind leaves an old segment pinned by that
//! reader's mapping, so lossless reading is rationed: only uids on a list may do it, a uid
//! whose reader was cut off for being too slow waits out a cool-down, and so does a uid
//! whose departed readers keep making the service leave mapped segments behind. (The cap
//! on how many lossless readers there are at once is the ring owner's to check: it knows
//! how many there are, departed ones included.)

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::control::wire::DisconnectReason;

/// The rationing rule and what it remembers.
#[derive(Debug)]
pub(crate) struct Rationing {
    lossless_uids: Vec<u32>,
    cooldown_for: Duration,
    /// How many left-behind segments within a cool-down earn one.
    max_left_behind: usize,
    /// Uid -> when its cool-down began.
    cooldown: HashMap<u32, Instant>,
    /// Per uid, when its departed lossless readers were left behind still mapping their
    /// segment (within a cool-down).
    left_behind: HashMap<u32, VecDeque<Instant>>,
}

impl Rationing {
    pub(crate) fn new(
        lossless_uids: Vec<u32>,
        cooldown_for: Duration,
        max_lossless: usize,
    ) -> Self {
        Rationing {
            lossless_uids,
            cooldown_for,
            max_left_behind: max_lossless.max(1),
            cooldown: HashMap::new(),
            left_behind: HashMap::new(),
        }
    }

    /// Why `uid` may not attach a lossless reader now, if it may not.
    pub(crate) fn refuse_lossless(
        &self,
        uid: u32,
        now: Instant,
    ) -> Option<(DisconnectReason, String)> {
        if !self.lossless_uids.contains(&uid) {
            return Some((
                DisconnectReason::NotAllowed,
                format!("uid {uid} may not read losslessly here"),
            ));
        }
        if self
            .cooldown
            .get(&uid)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.cooldown_for)
        {
            return Some((
                DisconnectReason::NotAllowed,
                format!(
                    "uid {uid} was cut off for being too slow; lossless is refused for a while"
                ),
            ));
        }
        None
    }

    /// A lossless reader of `uid` was cut off for being too slow.
    pub(crate) fn cut_off(&mut self, uid: u32, now: Instant) {
        self.cooldown.insert(uid, now);
    }

    /// A departed lossless reader of `uid` was left behind by a rotation while its process
    /// still mapped the old segment: one that does so again and again gets the cool-down.
    pub(crate) fn left_behind_mapped(&mut self, uid: u32, now: Instant) {
        let times = self.left_behind.entry(uid).or_default();
        times.retain(|t| now.saturating_duration_since(*t) < self.cooldown_for);
        times.push_back(now);
        if times.len() >= self.max_left_behind {
            self.cooldown.insert(uid, now);
        }
        // Forget what has expired, so the maps stay as small as the uids in trouble.
        let window = self.cooldown_for;
        self.cooldown
            .retain(|_, t| now.saturating_duration_since(*t) < window);
        self.left_behind.retain(|_, v| !v.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_uids_read_losslessly_and_a_cut_off_uid_waits_out_its_cool_down() {
        let mut r = Rationing::new(vec![1000], Duration::from_secs(30), 4);
        let t0 = Instant::now();
        assert_eq!(
            r.refuse_lossless(1001, t0).map(|x| x.0),
            Some(DisconnectReason::NotAllowed)
        );
        assert!(r.refuse_lossless(1000, t0).is_none());
        r.cut_off(1000, t0);
        assert!(r
            .refuse_lossless(1000, t0 + Duration::from_secs(29))
            .is_some());
        assert!(r
            .refuse_lossless(1000, t0 + Duration::from_secs(30))
            .is_none());
    }

    #[test]
    fn segments_left_behind_again_and_again_earn_a_cool_down() {
        let mut r = Rationing::new(vec![1000], Duration::from_secs(30), 2);
        let t0 = Instant::now();
        r.left_behind_mapped(1000, t0);
        assert!(r.refuse_lossless(1000, t0).is_none());
        r.left_behind_mapped(1000, t0 + Duration::from_secs(1));
        assert!(r
            .refuse_lossless(1000, t0 + Duration::from_secs(1))
            .is_some());
        // Spread out beyond the cool-down, they do not add up.
        let mut r = Rationing::new(vec![1000], Duration::from_secs(30), 2);
        r.left_behind_mapped(1000, t0);
        r.left_behind_mapped(1000, t0 + Duration::from_secs(31));
        assert!(r
            .refuse_lossless(1000, t0 + Duration::from_secs(31))
            .is_none());
    }
}
