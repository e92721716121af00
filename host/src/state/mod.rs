//! The state guards query through the `state` interface, kept in the host: per-client
//! history, sliding-window counters, distinct counters, keyed rate limiters and a small
//! key/value store with TTL. Shared by every thread, bounded in every dimension, and namespaced
//! per guard so one guard cannot read or disturb another's keys.

mod bans;
mod counters;
mod history;
mod rate;
mod shared;
mod table;

pub use bans::{Ban, MAX_BAN};
pub use rate::RateError;
pub use shared::{Fallback, SharedState, SharedStatus, Unavailable};
pub(crate) use table::lock;

use crate::bindings::vigil::guard::types::Event;
use crate::clock::SharedClock;
use bans::Bans;
use counters::{DistinctSet, WindowCounter};
use history::{History, Interner, MatchMemo, StoredEvent, FLAG_AUTHENTICATED, FLAG_PUBLIC};
use rate::{RateKey, RateLimiters};
use std::borrow::Cow;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;
use table::BoundedTable;
use vigil_guest::route::Pattern;

/// Bounds of the state tables. Every table evicts its least recently seen entry when full and
/// drops entries idle for longer than `idle_expiry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateLimits {
    /// Clients whose history is kept.
    pub max_clients: usize,
    /// Events kept per client.
    pub history_depth: usize,
    /// Keys per table for rate limiters and window counters.
    pub max_keys: usize,
    /// Distinct sets kept.
    pub max_distinct_sets: usize,
    /// Members remembered per distinct set; counts saturate here.
    pub max_distinct_members: usize,
    /// Key/value entries kept.
    pub max_kv_entries: usize,
    /// Largest value `set` accepts, in bytes.
    pub max_kv_value_bytes: usize,
    /// Distinct (rate, burst) quotas across all guards.
    pub max_rate_quotas: usize,
    /// Distinct route names remembered in histories; later ones read as `(other)`.
    pub max_routes: usize,
    /// Entries unused for this long are dropped.
    pub idle_expiry: Duration,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_clients: 100_000,
            history_depth: 32,
            max_keys: 100_000,
            max_distinct_sets: 10_000,
            max_distinct_members: 256,
            max_kv_entries: 10_000,
            max_kv_value_bytes: 4096,
            max_rate_quotas: 1024,
            max_routes: 10_000,
            idle_expiry: Duration::from_secs(30 * 60),
        }
    }
}

/// Keys longer than this are replaced by a 128-bit keyed hash, so a guard cannot make the
/// host store arbitrarily long keys.
const MAX_KEY_BYTES: usize = 128;

/// With a shared store, how far back this replica's own events are merged into what Redis
/// answers: they may still be on their way there. Older ones are Redis's to tell, so a
/// client forgotten fleet-wide stays forgotten on every replica past this.
const UNSHARED_MS: u64 = 2_000;

/// A guard's private key space. Derived from the guard's name, so it survives reloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuardScope(u32);

#[derive(Clone, PartialEq, Eq, Hash)]
struct ScopedKey {
    scope: u32,
    key: Box<str>,
}

struct KvValue {
    bytes: Box<[u8]>,
    expires_ms: u64,
}

/// What the host records about one request once its response status is known.
#[derive(Clone, Copy, Debug)]
pub struct EventRecord<'a> {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Request method.
    pub method: &'a str,
    /// Route template, or the path.
    pub route: &'a str,
    /// Response status.
    pub status: u16,
    /// Whether the client is public.
    pub public: bool,
    /// Whether the request carried credentials.
    pub authenticated: bool,
}

/// Entry counts of each table, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// Clients with a history.
    pub clients: usize,
    /// Rate-limited keys.
    pub rate_keys: usize,
    /// Window counters.
    pub counters: usize,
    /// Distinct sets.
    pub distinct_sets: usize,
    /// Key/value entries.
    pub kv_entries: usize,
    /// Bans in force.
    pub bans: usize,
}

/// Why a state call is refused; the calling guard traps with this message.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// See [`RateError`].
    #[error(transparent)]
    Rate(#[from] RateError),
    /// A value passed to `set` is over the size limit.
    #[error("set: value of {size} bytes exceeds the {limit}-byte limit")]
    ValueTooLarge {
        /// Size of the value offered.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The shared store could not answer and `state.fallback` is `deny`: the call is not
    /// decided on this replica's tables, and the request the guard was called for is refused.
    #[error("the shared state store is unavailable (state.fallback = \"deny\")")]
    SharedUnavailable,
}

/// The host's state tables.
pub struct StateStore {
    limits: StateLimits,
    clock: SharedClock,
    histories: BoundedTable<Box<str>, History>,
    counters: BoundedTable<ScopedKey, WindowCounter>,
    distinct: BoundedTable<ScopedKey, DistinctSet>,
    kv: BoundedTable<ScopedKey, KvValue>,
    bans: Bans,
    rates: RateLimiters,
    routes: Interner,
    methods: Interner,
    scopes: Interner,
    hash_a: RandomState,
    hash_b: RandomState,
    /// The store the replicas of a service share, when configured: asked first by every
    /// primitive, the tables above answering while it cannot.
    shared: Option<Arc<dyn SharedState>>,
    /// What a guard's call gets while `shared` cannot answer (the store's own setting).
    fallback: Fallback,
}

impl StateStore {
    /// Empty tables with these bounds, reading time from `clock`.
    pub fn new(limits: StateLimits, clock: SharedClock) -> StateStore {
        let idle_ms = limits.idle_expiry.as_millis() as u64;
        StateStore {
            histories: BoundedTable::new(limits.max_clients, idle_ms),
            counters: BoundedTable::new(limits.max_keys, idle_ms),
            distinct: BoundedTable::new(limits.max_distinct_sets, idle_ms),
            kv: BoundedTable::new(limits.max_kv_entries, idle_ms),
            bans: Bans::new(limits.max_clients),
            rates: RateLimiters::new(
                limits.max_keys,
                idle_ms,
                limits.max_rate_quotas,
                clock.clone(),
            ),
            routes: Interner::new(limits.max_routes, "(other)"),
            methods: Interner::new(64, "OTHER"),
            scopes: Interner::new(u32::MAX as usize - 1, ""),
            hash_a: RandomState::new(),
            hash_b: RandomState::new(),
            shared: None,
            fallback: Fallback::Local,
            limits,
            clock,
        }
    }

    /// Empty tables that stand in for `shared` while it cannot answer, unless its
    /// [`SharedState::fallback`] is [`Fallback::Deny`].
    pub fn with_shared(
        limits: StateLimits,
        clock: SharedClock,
        shared: Arc<dyn SharedState>,
    ) -> StateStore {
        StateStore {
            fallback: shared.fallback(),
            shared: Some(shared),
            ..StateStore::new(limits, clock)
        }
    }

    /// How the shared store is doing; `None` when state is in-process only.
    pub fn shared_status(&self) -> Option<SharedStatus> {
        self.shared.as_ref().map(|s| s.status())
    }

    /// What a guard's call does once the shared store could not answer it: go on to the local
    /// tables (`Ok`), or stop with [`StateError::SharedUnavailable`].
    fn unanswered(&self) -> Result<(), StateError> {
        match self.fallback {
            Fallback::Local => Ok(()),
            Fallback::Deny => Err(StateError::SharedUnavailable),
        }
    }

    /// The name of the guard a scope belongs to: shared keys are namespaced by name, because
    /// scope ids are given in load order, which replicas need not share.
    fn scope_name(&self, scope: GuardScope) -> Arc<str> {
        self.scopes.names().shared(scope.0).clone()
    }

    /// The bounds in force.
    pub fn limits(&self) -> &StateLimits {
        &self.limits
    }

    /// The clock the tables read.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The key space of the guard named `guard`.
    pub fn scope(&self, guard: &str) -> GuardScope {
        GuardScope(self.scopes.id(guard))
    }

    fn bounded_key<'k>(&self, key: &'k str) -> Cow<'k, str> {
        if key.len() <= MAX_KEY_BYTES {
            return Cow::Borrowed(key);
        }
        let (a, b) = (self.hash_a.hash_one(key), self.hash_b.hash_one(key));
        Cow::Owned(format!("#{a:016x}{b:016x}"))
    }

    fn scoped(&self, scope: GuardScope, key: &str) -> ScopedKey {
        ScopedKey {
            scope: scope.0,
            key: self.bounded_key(key).into(),
        }
    }

    /// Refuses `client` on every route until `ban.until_ms`, replacing any ban it had.
    /// With a shared store the ban is placed fleet-wide, and only kept locally when the store
    /// cannot take it.
    pub fn ban(&self, client: &str, ban: Ban) {
        if let Some(shared) = &self.shared {
            if shared.place_ban(client, &ban).is_ok() {
                return;
            }
        }
        self.bans
            .place(&self.bounded_key(client), ban, self.clock.now_ms());
    }

    /// The ban `client` is under now, if any. With a shared store this reads the fleet's bans
    /// as last synchronised, without a round trip, and the bans placed here while the store
    /// was away.
    pub fn ban_of(&self, client: &str) -> Option<Ban> {
        let now = self.clock.now_ms();
        if let Some(shared) = &self.shared {
            if let Some(ban) = shared.cached_ban(client, now) {
                return Some(ban);
            }
        }
        self.bans.of(&self.bounded_key(client), now)
    }

    /// Lifts `client`'s ban; whether one was in force.
    pub fn lift_ban(&self, client: &str) -> bool {
        let lifted_shared = self
            .shared
            .as_ref()
            .is_some_and(|shared| shared.lift_ban(client).unwrap_or(false));
        self.bans
            .lift(&self.bounded_key(client), self.clock.now_ms())
            | lifted_shared
    }

    /// The bans in force, by client key (as stored: keys over 128 bytes are hashed), soonest
    /// to end first. With a shared store: the fleet's, and those placed here while it was away.
    pub fn bans_in_force(&self) -> Vec<(String, Ban)> {
        let now = self.clock.now_ms();
        let mut bans = self.bans.in_force(now);
        if let Some(shared) = &self.shared {
            if let Ok(fleet) = shared.bans(now) {
                bans.retain(|(client, _)| !fleet.iter().any(|(c, _)| c == client));
                bans.extend(fleet);
                bans.sort_by(|a, b| (a.1.until_ms, &a.0).cmp(&(b.1.until_ms, &b.0)));
            }
        }
        bans
    }

    /// Forgets what the host keeps under `client`'s key: its history and its ban. Counters a
    /// guard keyed by its own strings end with their windows. Whether anything was kept.
    pub fn forget_client(&self, client: &str) -> bool {
        let had_shared = self
            .shared
            .as_ref()
            .is_some_and(|shared| shared.forget_client(client).unwrap_or(false));
        let key = self.bounded_key(client);
        let now = self.clock.now_ms();
        let had_history = self.histories.remove::<str>(&key, now).is_some();
        self.bans.lift(&key, now) | had_history | had_shared
    }

    /// Appends a request to its client's history. With a shared store the event is also
    /// queued for it, written in the background: the local copy is what a fallback decides on.
    pub fn record(&self, client_key: &str, event: &EventRecord<'_>) {
        if let Some(shared) = &self.shared {
            shared.record(client_key, event);
        }
        let stored = StoredEvent {
            at_ms: event.at_ms,
            route: self.routes.id(event.route),
            status: event.status,
            method: self.methods.id(event.method) as u8,
            flags: (event.public as u8 * FLAG_PUBLIC)
                | (event.authenticated as u8 * FLAG_AUTHENTICATED),
        };
        let depth = self.limits.history_depth;
        self.histories.upsert_borrowed::<str, _>(
            &self.bounded_key(client_key),
            |key: &str| key.into(),
            self.clock.now_ms(),
            History::default,
            |h| h.push(stored, depth),
        );
    }

    /// The client's most recent events, newest first. With a shared store: the fleet's,
    /// merged with this replica's own, which may not have reached Redis yet (events equal in
    /// every field are shown once).
    pub fn history(&self, client_key: &str, limit: u32) -> Result<Vec<Event>, StateError> {
        let local = self.local_history(client_key, limit);
        let Some(shared) = &self.shared else {
            return Ok(local);
        };
        let limit = (limit as usize).min(self.limits.history_depth);
        let Ok(mut events) = shared.history(client_key, limit) else {
            self.unanswered()?;
            return Ok(local);
        };
        let recent = self.clock.now_ms().saturating_sub(UNSHARED_MS);
        for event in local {
            if event.at_ms >= recent && !events.contains(&event) {
                events.push(event);
            }
        }
        events.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        events.truncate(limit);
        Ok(events)
    }

    fn local_history(&self, client_key: &str, limit: u32) -> Vec<Event> {
        let key = self.bounded_key(client_key);
        self.histories
            .read::<str, _>(&key, self.clock.now_ms(), |h| {
                let (methods, routes) = (self.methods.names(), self.routes.names());
                h.newest_first(limit as usize)
                    .map(|e| Event {
                        at_ms: e.at_ms,
                        method: methods.get(e.method.into()).to_string(),
                        route: routes.get(e.route).to_string(),
                        status: e.status,
                        public: e.flags & FLAG_PUBLIC != 0,
                        authenticated: e.flags & FLAG_AUTHENTICATED != 0,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `client_key` made a request matching one of `patterns` in the last `within_ms`
    /// milliseconds, counting only 2xx and 3xx answers when `successful_only`. With a shared
    /// store this replica's own history is asked first (a match there costs no round trip and
    /// covers events still on their way to Redis), then the fleet's.
    pub fn happened(
        &self,
        client_key: &str,
        patterns: &[Pattern],
        within_ms: u64,
        successful_only: bool,
    ) -> Result<bool, StateError> {
        let now = self.clock.now_ms();
        let since = now.saturating_sub(within_ms);
        let Some(shared) = &self.shared else {
            return Ok(self.local_happened(client_key, patterns, now, since, successful_only));
        };
        let recent = since.max(now.saturating_sub(UNSHARED_MS));
        if self.local_happened(client_key, patterns, now, recent, successful_only) {
            return Ok(true);
        }
        // Replicas write in the background, so the shared list is only nearly in time
        // order: every event is looked at.
        let mut check = |e: &Event| {
            e.at_ms >= since
                && (!successful_only || (200..400).contains(&e.status))
                && patterns.iter().any(|p| p.matches(&e.method, &e.route))
        };
        match shared.any_event(client_key, self.limits.history_depth, &mut check) {
            Ok(found) => Ok(found),
            Err(Unavailable) => {
                self.unanswered()?;
                Ok(self.local_happened(client_key, patterns, now, since, successful_only))
            }
        }
    }

    fn local_happened(
        &self,
        client_key: &str,
        patterns: &[Pattern],
        now: u64,
        since: u64,
        successful_only: bool,
    ) -> bool {
        let key = self.bounded_key(client_key);
        self.histories
            .read::<str, _>(&key, now, |h| {
                let (methods, routes) = (self.methods.names(), self.routes.names());
                let mut memo = MatchMemo::new(|method: u8, route| {
                    let (method, route) = (methods.get(method.into()), routes.get(route));
                    patterns.iter().any(|p| p.matches(method, route))
                });
                h.newest_first(usize::MAX)
                    .take_while(|e| e.at_ms >= since)
                    .filter(|e| !successful_only || (200..400).contains(&e.status))
                    .any(|e| memo.matches(e))
            })
            .unwrap_or(false)
    }

    /// Takes a token from rate limiter `key`; `Ok(Err(ms))` means wait `ms` milliseconds.
    pub fn rate(
        &self,
        scope: GuardScope,
        key: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Result<(), u32>, StateError> {
        if let Some(shared) = &self.shared {
            // Refused quotas trap the same way with or without a shared store.
            if !(per_second.is_finite() && per_second > 0.0) {
                return Err(RateError::BadRate(per_second).into());
            }
            if let Ok(answer) = shared.rate(&self.scope_name(scope), key, per_second, burst) {
                return Ok(answer);
            }
            self.unanswered()?;
        }
        let key = RateKey {
            scope: scope.0,
            key: self.bounded_key(key).into(),
        };
        Ok(self.rates.check(key, per_second, burst)?)
    }

    /// Adds `delta` to window counter `key` and returns its total over `window_ms`.
    pub fn count(
        &self,
        scope: GuardScope,
        key: &str,
        delta: i64,
        window_ms: u64,
    ) -> Result<i64, StateError> {
        if let Some(shared) = &self.shared {
            if let Ok(total) = shared.count(&self.scope_name(scope), key, delta, window_ms) {
                return Ok(total);
            }
            self.unanswered()?;
        }
        let now = self.clock.now_ms();
        Ok(self.counters.upsert(
            self.scoped(scope, key),
            now,
            || WindowCounter::new(window_ms),
            |c| c.add(delta, window_ms, now),
        ))
    }

    /// Records `member` in distinct set `key`; returns the members seen within `window_ms`.
    pub fn distinct(
        &self,
        scope: GuardScope,
        key: &str,
        member: &str,
        window_ms: u64,
    ) -> Result<u32, StateError> {
        let cap = self.limits.max_distinct_members;
        if let Some(shared) = &self.shared {
            let guard = self.scope_name(scope);
            if let Ok(size) = shared.distinct(&guard, key, member, window_ms, cap) {
                return Ok(size);
            }
            self.unanswered()?;
        }
        let now = self.clock.now_ms();
        let member = self.hash_a.hash_one(member);
        Ok(self
            .distinct
            .upsert(self.scoped(scope, key), now, DistinctSet::default, |s| {
                s.add(member, window_ms, now, cap)
            }))
    }

    /// The value under `key`, unless absent or expired.
    pub fn get(&self, scope: GuardScope, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(shared) = &self.shared {
            if let Ok(value) = shared.get(&self.scope_name(scope), key) {
                return Ok(value);
            }
            self.unanswered()?;
        }
        let now = self.clock.now_ms();
        Ok(self
            .kv
            .read(&self.scoped(scope, key), now, |v| {
                (v.expires_ms > now).then(|| v.bytes.to_vec())
            })
            .flatten())
    }

    /// Stores `value` under `key` for `ttl_ms`.
    pub fn set(
        &self,
        scope: GuardScope,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<(), StateError> {
        if value.len() > self.limits.max_kv_value_bytes {
            return Err(StateError::ValueTooLarge {
                size: value.len(),
                limit: self.limits.max_kv_value_bytes,
            });
        }
        if let Some(shared) = &self.shared {
            if shared
                .set(&self.scope_name(scope), key, value, ttl_ms)
                .is_ok()
            {
                return Ok(());
            }
            self.unanswered()?;
        }
        let now = self.clock.now_ms();
        let fresh = || KvValue {
            bytes: value.into(),
            expires_ms: now.saturating_add(ttl_ms),
        };
        self.kv
            .upsert(self.scoped(scope, key), now, fresh, |v| *v = fresh());
        Ok(())
    }

    /// Entry counts of every table.
    pub fn sizes(&self) -> TableSizes {
        // With a shared store, the fleet's bans (read when metrics are scraped, not per
        // request), or this replica's when the store cannot answer.
        let bans = match &self.shared {
            Some(_) => self.bans_in_force().len(),
            None => self.bans.count_in_force(self.clock.now_ms()),
        };
        TableSizes {
            clients: self.histories.len(),
            rate_keys: self.rates.keys(),
            counters: self.counters.len(),
            distinct_sets: self.distinct.len(),
            kv_entries: self.kv.len(),
            bans,
        }
    }

    /// Drops idle entries from every table; returns how many. The runtime calls it
    /// periodically so memory is returned even for clients that never come back.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        self.histories.sweep(now)
            + self.counters.sweep(now)
            + self.distinct.sweep(now)
            + self.kv.sweep(now)
            + self.rates.sweep(now)
    }

    /// Distinct route names remembered.
    pub fn routes_interned(&self) -> usize {
        self.routes.len()
    }
}
