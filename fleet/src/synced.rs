//! `state.redis_sync`: rate limiters, window counters and distinct sets decided on this
//! replica's view of the fleet's, and reconciled with Redis in the background once per
//! interval, as Envoy's and Kong's locally deciding rate limits do. A call costs no round trip
//! once its key has a fresh view; the price is a bounded disagreement between replicas (see
//! `docs/fleet.md`).
//!
//! A view is made by an exact call (one round trip, which also tells the fleet's state) and is
//! answered from for as long as it was refreshed within [`STALE_AFTER`] intervals; every view
//! used since the last sync is sent in the next one, with what this replica added meanwhile,
//! and comes back with the fleet's state. A view not used for that long is dropped: its key's
//! next call is exact again. The tables are bounded: past their cap a new key is decided
//! exactly, as without sync.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock;

/// A view answers while it was refreshed within this many sync intervals: a key used only
/// now and then is asked exactly rather than decided on an old snapshot.
pub(crate) const STALE_AFTER: u32 = 10;

/// One replica's views of the fleet's limiters, counters and sets.
pub(crate) struct Synced {
    /// How often views are reconciled.
    pub(crate) interval: Duration,
    epoch: Instant,
    max_keys: usize,
    max_sets: usize,
    rates: Mutex<HashMap<String, RateView>>,
    counts: Mutex<HashMap<String, CountView>>,
    sets: Mutex<HashMap<String, SetView>>,
    /// Hashes members for the record of those this replica has seen; keyed per process, so no
    /// client can choose members that collide.
    members: RandomState,
}

struct RateView {
    interval_ms: f64,
    burst: u32,
    /// Theoretical arrival time on this replica's clock, ms since `epoch`.
    tat: f64,
    /// Tokens this replica let through since the last sync was sent.
    taken: u64,
    used: bool,
    refreshed: f64,
}

struct CountView {
    window_ms: u64,
    /// The fleet's total at the last refresh.
    fleet: i64,
    /// What this replica added since the last sync was sent.
    pending: i64,
    used: bool,
    refreshed: f64,
}

struct SetView {
    window_ms: u64,
    cap: usize,
    /// The fleet's size at the last refresh.
    fleet: u32,
    /// Members this replica saw (their hash → when, ms since `epoch`), so one seen again is
    /// not counted again; at most `cap`.
    seen: HashMap<u64, f64>,
    /// Members new to this replica since the last sync was sent, to send; at most `cap`.
    pending: Vec<String>,
    /// How many members were new to this replica since the last refresh.
    added: u32,
    /// When `seen` was last pruned of members out of the window.
    pruned: f64,
    used: bool,
    refreshed: f64,
}

/// What the next sync sends for one key.
pub(crate) enum Outgoing {
    /// Tokens let through: the script's interval, burst and count.
    Rate(f64, u32, u64),
    /// A delta to add over a window.
    Count(i64, u64),
    /// Members seen, the window and the cap.
    Distinct(Vec<String>, u64, usize),
}

impl Outgoing {
    /// The fleet's answer to this, from the integer Redis returned for it.
    pub(crate) fn answered(&self, value: i64) -> Incoming {
        match self {
            Outgoing::Rate(..) => Incoming::Rate(value),
            Outgoing::Count(..) => Incoming::Count(value),
            Outgoing::Distinct(..) => {
                Incoming::Distinct(value.clamp(0, i64::from(u32::MAX)) as u32)
            }
        }
    }
}

/// The fleet's answer to one [`Outgoing`].
pub(crate) enum Incoming {
    /// How far ahead of the server's clock the limiter's TAT is, in ms.
    Rate(i64),
    /// The counter's total.
    Count(i64),
    /// The set's size.
    Distinct(u32),
}

impl Synced {
    /// Empty views, reconciled every `interval`, at most `max_keys` limiters and counters each
    /// and `max_sets` distinct sets.
    pub(crate) fn new(interval: Duration, max_keys: usize, max_sets: usize) -> Synced {
        Synced {
            interval,
            epoch: Instant::now(),
            max_keys: max_keys.max(1),
            max_sets: max_sets.max(1),
            rates: Mutex::default(),
            counts: Mutex::default(),
            sets: Mutex::default(),
            members: RandomState::new(),
        }
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1000.0
    }

    fn fresh(&self, refreshed: f64, now: f64) -> bool {
        now - refreshed <= self.interval.as_secs_f64() * 1000.0 * f64::from(STALE_AFTER)
    }

    /// Takes a token from the view of limiter `key`; `None` when it has no fresh view (the
    /// caller asks Redis and gives the answer to [`Synced::seed_rate`]).
    pub(crate) fn rate(&self, key: &str, interval_ms: f64, burst: u32) -> Option<Result<(), u32>> {
        let now = self.now();
        let mut rates = lock(&self.rates);
        let view = rates.get_mut(key)?;
        if !self.fresh(view.refreshed, now) || view.interval_ms != interval_ms {
            return None;
        }
        view.burst = burst;
        view.used = true;
        // The same arithmetic as the script's.
        let tau = interval_ms * f64::from(burst.max(1));
        let next = view.tat.max(now) + interval_ms;
        if next - now > tau {
            return Some(Err(
                (next - now - tau).ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
            ));
        }
        view.tat = next;
        view.taken += 1;
        Some(Ok(()))
    }

    /// Makes (or refreshes) the view of limiter `key` from an exact call's answer.
    pub(crate) fn seed_rate(&self, key: &str, interval_ms: f64, burst: u32, ahead_ms: i64) {
        let now = self.now();
        let mut rates = lock(&self.rates);
        if rates.len() >= self.max_keys && !rates.contains_key(key) {
            return;
        }
        rates.insert(
            key.to_string(),
            RateView {
                interval_ms,
                burst,
                tat: now + ahead_ms.max(0) as f64,
                taken: 0,
                used: false,
                refreshed: now,
            },
        );
    }

    /// Adds `delta` to the view of counter `key`; its total, or `None` without a fresh view.
    pub(crate) fn count(&self, key: &str, delta: i64, window_ms: u64) -> Option<i64> {
        let now = self.now();
        let mut counts = lock(&self.counts);
        let view = counts.get_mut(key)?;
        if !self.fresh(view.refreshed, now) || view.window_ms != window_ms {
            return None;
        }
        view.used = true;
        view.pending = view.pending.saturating_add(delta);
        Some(view.fleet.saturating_add(view.pending))
    }

    /// Makes the view of counter `key` from an exact call's total.
    pub(crate) fn seed_count(&self, key: &str, window_ms: u64, total: i64) {
        let now = self.now();
        let mut counts = lock(&self.counts);
        if counts.len() >= self.max_keys && !counts.contains_key(key) {
            return;
        }
        counts.insert(
            key.to_string(),
            CountView {
                window_ms,
                fleet: total,
                pending: 0,
                used: false,
                refreshed: now,
            },
        );
    }

    /// Records `member` in the view of set `key`; its size, or `None` without a fresh view.
    pub(crate) fn distinct(
        &self,
        key: &str,
        member: &str,
        window_ms: u64,
        cap: usize,
    ) -> Option<u32> {
        let now = self.now();
        let mut sets = lock(&self.sets);
        let view = sets.get_mut(key)?;
        if !self.fresh(view.refreshed, now) || view.window_ms != window_ms || view.cap != cap {
            return None;
        }
        view.used = true;
        let hash = self.members.hash_one(member);
        let window = window_ms as f64;
        let known = view.seen.get(&hash).is_some_and(|&at| now - at < window);
        // Pruned at most once a second: a client sending new members into a full set must not
        // cost every call a scan.
        if view.seen.len() >= cap && !view.seen.contains_key(&hash) && now - view.pruned >= 1000.0 {
            view.seen.retain(|_, at| now - *at < window);
            view.pruned = now;
        }
        if view.seen.len() < cap || view.seen.contains_key(&hash) {
            view.seen.insert(hash, now);
        }
        if !known {
            view.added = view.added.saturating_add(1);
            if view.pending.len() < cap {
                view.pending.push(member.to_string());
            }
        }
        Some(view.fleet.saturating_add(view.added).min(cap as u32))
    }

    /// Makes the view of set `key` from an exact call that recorded `member`.
    pub(crate) fn seed_distinct(
        &self,
        key: &str,
        member: &str,
        window_ms: u64,
        cap: usize,
        size: u32,
    ) {
        let now = self.now();
        let mut sets = lock(&self.sets);
        if sets.len() >= self.max_sets && !sets.contains_key(key) {
            return;
        }
        let mut seen = HashMap::new();
        seen.insert(self.members.hash_one(member), now);
        sets.insert(
            key.to_string(),
            SetView {
                window_ms,
                cap,
                fleet: size,
                seen,
                pending: Vec::new(),
                added: 0,
                pruned: now,
                used: false,
                refreshed: now,
            },
        );
    }

    /// What the next sync sends: every view used since the last one, with what this replica
    /// added meanwhile (which is then no longer pending). Views left unused until stale are
    /// dropped here.
    pub(crate) fn outgoing(&self) -> Vec<(String, Outgoing)> {
        let now = self.now();
        let mut out = Vec::new();
        let mut rates = lock(&self.rates);
        rates.retain(|_, v| v.used || self.fresh(v.refreshed, now));
        for (key, view) in rates.iter_mut().filter(|(_, v)| v.used) {
            out.push((
                key.clone(),
                Outgoing::Rate(view.interval_ms, view.burst, view.taken),
            ));
            (view.taken, view.used) = (0, false);
        }
        drop(rates);
        let mut counts = lock(&self.counts);
        counts.retain(|_, v| v.used || self.fresh(v.refreshed, now));
        for (key, view) in counts.iter_mut().filter(|(_, v)| v.used) {
            out.push((key.clone(), Outgoing::Count(view.pending, view.window_ms)));
            // Still counted while on its way: the answer's total includes it.
            view.fleet = view.fleet.saturating_add(view.pending);
            (view.pending, view.used) = (0, false);
        }
        drop(counts);
        let mut sets = lock(&self.sets);
        sets.retain(|_, v| v.used || self.fresh(v.refreshed, now));
        for (key, view) in sets.iter_mut().filter(|(_, v)| v.used) {
            let members = std::mem::take(&mut view.pending);
            out.push((
                key.clone(),
                Outgoing::Distinct(members, view.window_ms, view.cap),
            ));
            view.used = false;
        }
        out
    }

    /// Keys with a view now, for metrics.
    pub(crate) fn views(&self) -> usize {
        lock(&self.rates).len() + lock(&self.counts).len() + lock(&self.sets).len()
    }

    /// Puts back what a sync that failed had taken out, so the next one sends it again.
    pub(crate) fn restore(&self, key: &str, sent: Outgoing) {
        match sent {
            Outgoing::Rate(_, _, taken) => {
                if let Some(view) = lock(&self.rates).get_mut(key) {
                    (view.taken, view.used) = (view.taken + taken, true);
                }
            }
            Outgoing::Count(delta, _) => {
                if let Some(view) = lock(&self.counts).get_mut(key) {
                    view.fleet = view.fleet.saturating_sub(delta);
                    (view.pending, view.used) = (view.pending.saturating_add(delta), true);
                }
            }
            Outgoing::Distinct(members, _, cap) => {
                if let Some(view) = lock(&self.sets).get_mut(key) {
                    let room = cap.saturating_sub(view.pending.len());
                    view.pending.extend(members.into_iter().take(room));
                    view.used = true;
                }
            }
        }
    }

    /// Takes the fleet's answer to what [`Synced::outgoing`] sent for `key`: the view is fresh
    /// again, and what this replica added since the sync was sent stays on top of it.
    pub(crate) fn incoming(&self, key: &str, answer: Incoming) {
        let now = self.now();
        match answer {
            Incoming::Rate(ahead_ms) => {
                if let Some(view) = lock(&self.rates).get_mut(key) {
                    let fleet = now + ahead_ms.max(0) as f64 + view.taken as f64 * view.interval_ms;
                    view.tat = view.tat.max(fleet);
                    view.refreshed = now;
                }
            }
            Incoming::Count(total) => {
                if let Some(view) = lock(&self.counts).get_mut(key) {
                    view.fleet = total;
                    view.refreshed = now;
                }
            }
            Incoming::Distinct(size) => {
                if let Some(view) = lock(&self.sets).get_mut(key) {
                    view.fleet = size;
                    view.added = view.pending.len() as u32;
                    view.refreshed = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced() -> Synced {
        Synced::new(Duration::from_secs(3600), 2, 2)
    }

    #[test]
    fn a_key_without_a_view_is_asked_exactly_then_decided_on_its_view() {
        let views = synced();
        assert_eq!(views.rate("k", 1000.0, 3), None);
        // The fleet already spent one of three.
        views.seed_rate("k", 1000.0, 3, 1000);
        assert_eq!(views.rate("k", 1000.0, 3), Some(Ok(())));
        assert_eq!(views.rate("k", 1000.0, 3), Some(Ok(())));
        assert!(matches!(views.rate("k", 1000.0, 3), Some(Err(ms)) if ms > 900));
        // A different rate for the same key is not decided on the old view.
        assert_eq!(views.rate("k", 500.0, 3), None);
    }

    #[test]
    fn a_sync_sends_what_was_taken_and_keeps_what_came_after_its_answer() {
        let views = synced();
        views.seed_rate("k", 1000.0, 10, 0);
        for _ in 0..3 {
            assert_eq!(views.rate("k", 1000.0, 10), Some(Ok(())));
        }
        let out = views.outgoing();
        assert!(matches!(out.as_slice(), [(k, Outgoing::Rate(_, 10, 3))] if k == "k"));
        // Taken while the sync was on its way.
        assert_eq!(views.rate("k", 1000.0, 10), Some(Ok(())));
        // The fleet's TAT is 8 tokens ahead (its peers took 5); with the one taken since, 9 of
        // 10 are spent: one more goes through.
        views.incoming("k", Incoming::Rate(8000));
        assert_eq!(views.rate("k", 1000.0, 10), Some(Ok(())));
        assert!(matches!(views.rate("k", 1000.0, 10), Some(Err(_))));
        // Nothing used since: nothing to send.
        let _ = views.outgoing();
        views.incoming("k", Incoming::Rate(10_000));
        assert!(views.outgoing().is_empty());
    }

    #[test]
    fn counters_add_the_fleets_total_and_this_replicas_pending_delta() {
        let views = synced();
        assert_eq!(views.count("c", 1, 60_000), None);
        views.seed_count("c", 60_000, 7);
        assert_eq!(views.count("c", 2, 60_000), Some(9));
        let out = views.outgoing();
        assert!(matches!(out.as_slice(), [(_, Outgoing::Count(2, 60_000))]));
        assert_eq!(views.count("c", 1, 60_000), Some(10));
        views.incoming("c", Incoming::Count(20));
        assert_eq!(views.count("c", 0, 60_000), Some(21));
    }

    #[test]
    fn a_member_seen_again_is_not_counted_again_and_new_ones_are_sent() {
        let views = synced();
        views.seed_distinct("s", "a", 60_000, 10, 4);
        assert_eq!(views.distinct("s", "a", 60_000, 10), Some(4));
        assert_eq!(views.distinct("s", "b", 60_000, 10), Some(5));
        assert_eq!(views.distinct("s", "b", 60_000, 10), Some(5));
        let out = views.outgoing();
        assert!(matches!(out.as_slice(), [(_, Outgoing::Distinct(m, 60_000, 10))] if m == &["b"]));
        assert_eq!(views.distinct("s", "c", 60_000, 10), Some(6));
        views.incoming("s", Incoming::Distinct(8));
        assert_eq!(views.distinct("s", "c", 60_000, 10), Some(9));
        // Saturates at the cap, as in Redis.
        for m in ["d", "e", "f", "g"] {
            views.distinct("s", m, 60_000, 10);
        }
        assert_eq!(views.distinct("s", "h", 60_000, 10), Some(10));
    }

    #[test]
    fn past_the_cap_new_keys_have_no_view_and_are_asked_exactly() {
        let views = synced();
        views.seed_count("a", 1000, 0);
        views.seed_count("b", 1000, 0);
        views.seed_count("c", 1000, 0);
        assert_eq!(views.count("c", 1, 1000), None);
        assert_eq!(views.count("a", 1, 1000), Some(1));
    }

    #[test]
    fn a_view_left_unused_goes_stale_and_is_dropped() {
        let views = Synced::new(Duration::from_millis(1), 10, 10);
        views.seed_count("c", 60_000, 3);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(views.count("c", 1, 60_000), None);
        assert!(views.outgoing().is_empty());
        assert!(lock(&views.counts).is_empty());
    }
}
