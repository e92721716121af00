//! The seam to a store shared by the replicas of a service (Redis, in the `vigil-fleet`
//! crate): when the runtime is given one, every state primitive asks it, and falls back to the
//! in-process tables while it cannot answer, or refuses the call under [`Fallback::Deny`]. The trait is synchronous because guards call
//! state synchronously from inside their sandbox; an implementation bounds each call by its
//! own short timeout. This crate stays free of network code: it only owns the trait.

use super::{Ban, EventRecord};
use crate::bindings::vigil::guard::types::Event;

/// The shared store could not answer in time (down, slow, or refusing); the caller decides on
/// its own tables instead. The implementation has already logged and counted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the shared state store is unavailable")]
pub struct Unavailable;

/// What a state call the shared store cannot answer gets (`state.fallback`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fallback {
    /// Answered from this replica's own tables, as if state were in-process.
    #[default]
    Local,
    /// Refused with [`StateError::SharedUnavailable`](super::StateError::SharedUnavailable):
    /// the guard stops there, and the proxy refuses the request.
    Deny,
}

impl Fallback {
    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Local => "local",
            Fallback::Deny => "deny",
        }
    }
}

/// How the shared store is doing, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedStatus {
    /// Whether calls go to the shared store now (false: deciding on local tables).
    pub up: bool,
    /// State calls answered from local tables because the shared store could not answer.
    pub fallbacks: u64,
    /// History records dropped because the write queue to the shared store was full.
    pub records_dropped: u64,
    /// With `state.redis_sync`: keys decided on this replica's view now.
    pub views: u64,
    /// With `state.redis_sync`: sync rounds that failed (what they carried is sent again).
    pub sync_rounds_failed: u64,
    /// With `state.redis_sync`: sync rounds run while the store was up.
    pub sync_rounds: u64,
    /// With `state.redis_sync`: microseconds those rounds took, all told; against the rounds
    /// and the interval it tells whether the views keep up.
    pub sync_round_micros: u64,
}

/// A state store shared by every replica of a service. Keys are the guard's own (unbounded,
/// unscoped): the implementation namespaces them by guard name and bounds them, because the
/// in-process scope ids and hash seeds differ between replicas.
pub trait SharedState: Send + Sync + 'static {
    /// The client's most recent events across the fleet, newest first, at most `limit`.
    fn history(&self, client: &str, limit: usize) -> Result<Vec<Event>, Unavailable>;
    /// Whether any of the client's most recent events across the fleet (at most `limit`)
    /// satisfies `check`. By default the history is read and looked through; a store that keeps
    /// histories at hand looks without copying them.
    fn any_event(
        &self,
        client: &str,
        limit: usize,
        check: &mut dyn FnMut(&Event) -> bool,
    ) -> Result<bool, Unavailable> {
        Ok(self.history(client, limit)?.iter().any(check))
    }
    /// Appends an event to the client's shared history without waiting for it to be written.
    fn record(&self, client: &str, event: &EventRecord<'_>);
    /// Takes a token from the fleet-wide limiter `key` of `guard`; `Ok(Err(ms))`: wait `ms`.
    fn rate(
        &self,
        guard: &str,
        key: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Result<(), u32>, Unavailable>;
    /// Adds `delta` to a fleet-wide window counter; its total over `window_ms`.
    fn count(&self, guard: &str, key: &str, delta: i64, window_ms: u64)
        -> Result<i64, Unavailable>;
    /// Records `member` in a fleet-wide distinct set of at most `cap` members; its size.
    fn distinct(
        &self,
        guard: &str,
        key: &str,
        member: &str,
        window_ms: u64,
        cap: usize,
    ) -> Result<u32, Unavailable>;
    /// The value under `key`, unless absent or expired.
    fn get(&self, guard: &str, key: &str) -> Result<Option<Vec<u8>>, Unavailable>;
    /// Stores `value` under `key` for `ttl_ms`.
    fn set(&self, guard: &str, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), Unavailable>;
    /// Places a fleet-wide ban, replacing any the client had.
    fn place_ban(&self, client: &str, ban: &Ban) -> Result<(), Unavailable>;
    /// The client's ban as last synchronised from the fleet (no round trip), if in force at
    /// `now_ms`.
    fn cached_ban(&self, client: &str, now_ms: u64) -> Option<Ban>;
    /// Lifts the client's fleet-wide ban; whether one was in force.
    fn lift_ban(&self, client: &str) -> Result<bool, Unavailable>;
    /// The fleet's bans in force at `now_ms`, by client key.
    fn bans(&self, now_ms: u64) -> Result<Vec<(String, Ban)>, Unavailable>;
    /// Forgets the client's shared history and ban; whether anything was kept.
    fn forget_client(&self, client: &str) -> Result<bool, Unavailable>;
    /// How the store is doing.
    fn status(&self) -> SharedStatus;
    /// What the calls it cannot answer get. The store says, so that what it logs when it goes
    /// away and what the runtime does meanwhile cannot disagree.
    fn fallback(&self) -> Fallback {
        Fallback::Local
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::state::{StateError, StateLimits, StateStore};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use vigil_guest::route::Pattern;

    /// A shared store that answers from fixed values while `up`, and is unavailable otherwise.
    #[derive(Default)]
    struct Fake {
        up: AtomicBool,
        fallback: Fallback,
        events: Mutex<Vec<Event>>,
        bans: Mutex<Vec<(String, Ban)>>,
        recorded: Mutex<Vec<String>>,
    }

    impl Fake {
        fn answer<T>(&self, value: T) -> Result<T, Unavailable> {
            if self.up.load(Ordering::Relaxed) {
                Ok(value)
            } else {
                Err(Unavailable)
            }
        }
    }

    impl SharedState for Fake {
        fn history(&self, _: &str, limit: usize) -> Result<Vec<Event>, Unavailable> {
            let events = self.events.lock().unwrap();
            self.answer(events.iter().take(limit).cloned().collect())
        }
        fn record(&self, client: &str, _: &EventRecord<'_>) {
            self.recorded.lock().unwrap().push(client.to_string());
        }
        fn rate(&self, _: &str, _: &str, _: f64, _: u32) -> Result<Result<(), u32>, Unavailable> {
            self.answer(Err(1234))
        }
        fn count(&self, guard: &str, _: &str, _: i64, _: u64) -> Result<i64, Unavailable> {
            self.answer(if guard == "g" { 42 } else { -1 })
        }
        fn distinct(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: u64,
            cap: usize,
        ) -> Result<u32, Unavailable> {
            self.answer(cap as u32)
        }
        fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, Unavailable> {
            self.answer(Some(b"shared".to_vec()))
        }
        fn set(&self, _: &str, _: &str, _: &[u8], _: u64) -> Result<(), Unavailable> {
            self.answer(())
        }
        fn place_ban(&self, client: &str, ban: &Ban) -> Result<(), Unavailable> {
            self.answer(())?;
            self.bans
                .lock()
                .unwrap()
                .push((client.to_string(), ban.clone()));
            Ok(())
        }
        fn cached_ban(&self, client: &str, now_ms: u64) -> Option<Ban> {
            let bans = self.bans.lock().unwrap();
            bans.iter()
                .find(|(c, b)| c == client && b.until_ms > now_ms)
                .map(|(_, b)| b.clone())
        }
        fn lift_ban(&self, client: &str) -> Result<bool, Unavailable> {
            self.answer(())?;
            let mut bans = self.bans.lock().unwrap();
            let before = bans.len();
            bans.retain(|(c, _)| c != client);
            Ok(bans.len() < before)
        }
        fn bans(&self, _: u64) -> Result<Vec<(String, Ban)>, Unavailable> {
            self.answer(self.bans.lock().unwrap().clone())
        }
        fn forget_client(&self, _: &str) -> Result<bool, Unavailable> {
            self.answer(false)
        }
        fn status(&self) -> SharedStatus {
            SharedStatus {
                up: self.up.load(Ordering::Relaxed),
                ..SharedStatus::default()
            }
        }
        fn fallback(&self) -> Fallback {
            self.fallback
        }
    }

    const NOW: Duration = Duration::from_secs(1_000_000);

    fn store() -> (StateStore, Arc<Fake>) {
        store_falling_back(Fallback::Local)
    }

    fn store_falling_back(fallback: Fallback) -> (StateStore, Arc<Fake>) {
        let fake = Arc::new(Fake {
            fallback,
            ..Fake::default()
        });
        let store =
            StateStore::with_shared(StateLimits::default(), ManualClock::new(NOW), fake.clone());
        (store, fake)
    }

    fn record(store: &StateStore, route: &str, at_ms: u64) {
        let event = EventRecord {
            at_ms,
            method: "POST",
            route,
            status: 200,
            public: true,
            authenticated: false,
        };
        store.record("c", &event);
    }

    #[test]
    fn every_primitive_asks_the_shared_store_while_it_answers() {
        let (store, fake) = store();
        fake.up.store(true, Ordering::Relaxed);
        let g = store.scope("g");
        assert_eq!(
            store.count(g, "k", 1, 1_000).unwrap(),
            42,
            "by the guard's name"
        );
        assert_eq!(
            store.count(store.scope("other"), "k", 1, 1_000).unwrap(),
            -1
        );
        assert_eq!(store.rate(g, "k", 1.0, 5).unwrap(), Err(1234));
        assert_eq!(store.distinct(g, "k", "m", 1_000).unwrap(), 256);
        assert_eq!(store.get(g, "k").unwrap().as_deref(), Some(&b"shared"[..]));
        assert!(
            store.rate(g, "k", -1.0, 5).is_err(),
            "a bad rate traps either way"
        );
        record(&store, "/cart", NOW.as_millis() as u64);
        assert_eq!(*fake.recorded.lock().unwrap(), ["c"]);
    }

    #[test]
    fn while_it_cannot_answer_the_local_tables_decide() {
        let (store, fake) = store();
        let g = store.scope("g");
        assert_eq!(store.count(g, "k", 2, 60_000).unwrap(), 2);
        assert_eq!(store.count(g, "k", 3, 60_000).unwrap(), 5);
        assert_eq!(store.rate(g, "k", 1.0, 1).unwrap(), Ok(()));
        assert!(store.rate(g, "k", 1.0, 1).unwrap().is_err());
        store.set(g, "k", b"local", 60_000).unwrap();
        assert_eq!(store.get(g, "k").unwrap().as_deref(), Some(&b"local"[..]));
        let now = NOW.as_millis() as u64;
        record(&store, "/cart", now - 10_000);
        let cart = [Pattern::parse("POST /cart").unwrap()];
        assert!(
            store.happened("c", &cart, 60_000, true).unwrap(),
            "the whole local history"
        );
        let ban = Ban {
            until_ms: now + 1_000,
            by: "admin".into(),
            reason: String::new(),
        };
        store.ban("m", ban.clone());
        assert_eq!(
            store.ban_of("m"),
            Some(ban),
            "kept locally when it cannot be shared"
        );
        fake.up.store(true, Ordering::Relaxed);
        assert!(store.lift_ban("m"), "a local ban is lifted too");
    }

    #[test]
    fn the_fleet_history_is_merged_with_this_replicas_recent_events_only() {
        let (store, fake) = store();
        fake.up.store(true, Ordering::Relaxed);
        let now = NOW.as_millis() as u64;
        record(&store, "/old", now - 10_000);
        record(&store, "/recent", now - 100);
        fake.events.lock().unwrap().push(Event {
            at_ms: now - 50,
            method: "POST".into(),
            route: "/peer".into(),
            status: 200,
            public: true,
            authenticated: false,
        });
        let routes: Vec<String> = store
            .history("c", 10)
            .unwrap()
            .into_iter()
            .map(|e| e.route)
            .collect();
        assert_eq!(
            routes,
            ["/peer", "/recent"],
            "older local events are Redis's to tell"
        );
        let p = |s: &str| [Pattern::parse(s).unwrap()];
        assert!(store
            .happened("c", &p("POST /recent"), 60_000, true)
            .unwrap());
        assert!(store.happened("c", &p("POST /peer"), 60_000, true).unwrap());
        assert!(!store.happened("c", &p("POST /old"), 60_000, true).unwrap());
        let ban = Ban {
            until_ms: now + 1_000,
            by: "g".into(),
            reason: "r".into(),
        };
        store.ban("m", ban.clone());
        assert_eq!(
            store.ban_of("m"),
            Some(ban.clone()),
            "read from the shared copy"
        );
        assert_eq!(store.bans_in_force(), [("m".to_string(), ban)]);
        assert!(store.lift_ban("m"));
        assert_eq!(store.ban_of("m"), None);
    }

    #[test]
    fn under_deny_a_call_it_cannot_answer_is_refused_and_touches_no_local_table() {
        let (store, fake) = store_falling_back(Fallback::Deny);
        let g = store.scope("g");
        let unavailable = |e: StateError| matches!(e, StateError::SharedUnavailable);
        assert!(unavailable(store.count(g, "k", 2, 60_000).unwrap_err()));
        assert!(unavailable(store.rate(g, "k", 1.0, 1).unwrap_err()));
        assert!(unavailable(
            store.distinct(g, "k", "m", 60_000).unwrap_err()
        ));
        assert!(unavailable(store.get(g, "k").unwrap_err()));
        assert!(unavailable(store.set(g, "k", b"v", 60_000).unwrap_err()));
        assert!(unavailable(store.history("c", 10).unwrap_err()));
        let now = NOW.as_millis() as u64;
        record(&store, "/old", now - 10_000);
        record(&store, "/cart", now - 100);
        let p = |s: &str| [Pattern::parse(s).unwrap()];
        assert!(
            store.happened("c", &p("POST /cart"), 60_000, true).unwrap(),
            "what this replica served itself moments ago needs no shared store"
        );
        assert!(
            store.happened("c", &p("POST /old"), 60_000, true).is_err(),
            "older events are the shared store's to tell"
        );
        assert!(
            store.rate(g, "k", -1.0, 1).is_err(),
            "a bad rate is its own error"
        );
        assert!(matches!(
            store.set(g, "k", &[0; 5000], 1).unwrap_err(),
            StateError::ValueTooLarge { .. }
        ));

        fake.up.store(true, Ordering::Relaxed);
        assert_eq!(store.count(g, "k", 1, 1_000).unwrap(), 42);
        assert_eq!(store.get(g, "k").unwrap().as_deref(), Some(&b"shared"[..]));
        fake.up.store(false, Ordering::Relaxed);
        assert_eq!(
            store.sizes().counters,
            0,
            "nothing was counted locally meanwhile"
        );
        assert_eq!(store.sizes().kv_entries, 0);
    }
}
