//! Sliding-window counters and distinct-member sets, each of fixed or capped size.

const BUCKETS: usize = 8;

/// A sum over a sliding window, kept in eight buckets of a window's eighth each: an update is
/// counted for at least 7/8 of the window and at most the whole window.
pub(crate) struct WindowCounter {
    window_ms: u64,
    newest_bucket: u64,
    buckets: [i64; BUCKETS],
}

impl WindowCounter {
    pub(crate) fn new(window_ms: u64) -> Self {
        WindowCounter {
            window_ms,
            newest_bucket: 0,
            buckets: [0; BUCKETS],
        }
    }

    /// Adds `delta` at `now_ms` and returns the window's total.
    pub(crate) fn add(&mut self, delta: i64, window_ms: u64, now_ms: u64) -> i64 {
        if window_ms != self.window_ms {
            *self = WindowCounter::new(window_ms);
        }
        let bucket_ms = (self.window_ms / BUCKETS as u64).max(1);
        let bucket = now_ms / bucket_ms;
        if bucket > self.newest_bucket {
            let stale = (bucket - self.newest_bucket).min(BUCKETS as u64);
            for i in 1..=stale {
                self.buckets[((self.newest_bucket + i) % BUCKETS as u64) as usize] = 0;
            }
            self.newest_bucket = bucket;
        }
        // Clocks may step back; count late updates in the newest bucket.
        let index = (self.newest_bucket % BUCKETS as u64) as usize;
        self.buckets[index] = self.buckets[index].saturating_add(delta);
        self.buckets
            .iter()
            .fold(0i64, |sum, b| sum.saturating_add(*b))
    }
}

/// Distinct members seen within a window, stored as 64-bit keyed hashes with their last-seen
/// time, at most `cap` of them (the oldest is forgotten first).
#[derive(Default)]
pub(crate) struct DistinctSet {
    members: Vec<(u64, u64)>,
}

impl DistinctSet {
    pub(crate) fn add(&mut self, member: u64, window_ms: u64, now_ms: u64, cap: usize) -> u32 {
        let horizon = now_ms.saturating_sub(window_ms);
        self.members.retain(|(_, seen)| *seen > horizon);
        match self.members.iter_mut().find(|(m, _)| *m == member) {
            Some((_, seen)) => *seen = now_ms,
            None => {
                if self.members.len() >= cap {
                    let oldest = (0..self.members.len())
                        .min_by_key(|i| self.members[*i].1)
                        .unwrap_or(0);
                    self.members.swap_remove(oldest);
                }
                self.members.push((member, now_ms));
            }
        }
        self.members.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_forgets_old_updates() {
        let mut c = WindowCounter::new(8_000);
        assert_eq!(c.add(5, 8_000, 0), 5);
        assert_eq!(c.add(1, 8_000, 3_500), 6);
        // The first update (bucket 0) is still inside at 7.9 s.
        assert_eq!(c.add(0, 8_000, 7_900), 6);
        // At 8 s bucket 0 falls out.
        assert_eq!(c.add(0, 8_000, 8_000), 1);
        assert_eq!(c.add(0, 8_000, 12_000), 0);
        assert_eq!(c.add(-2, 8_000, 12_000), -2);
        // A long silence clears everything.
        assert_eq!(c.add(1, 8_000, 1_000_000), 1);
    }

    #[test]
    fn window_change_resets() {
        let mut c = WindowCounter::new(1_000);
        c.add(10, 1_000, 0);
        assert_eq!(c.add(1, 2_000, 10), 1);
    }

    #[test]
    fn distinct_counts_members_within_window_and_caps() {
        let mut s = DistinctSet::default();
        assert_eq!(s.add(1, 1_000, 0, 4), 1);
        assert_eq!(s.add(1, 1_000, 10, 4), 1);
        assert_eq!(s.add(2, 1_000, 20, 4), 2);
        assert_eq!(
            s.add(3, 1_000, 1_015, 4),
            2,
            "member 1 last seen at 10 expired"
        );
        for m in 10..20 {
            s.add(m, 1_000, 1_100, 4);
        }
        assert_eq!(s.add(99, 1_000, 1_100, 4), 4);
    }
}
