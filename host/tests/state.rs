//! The host's state tables through their public API, with a clock the test controls.

use std::sync::Arc;
use std::time::Duration;
use vigil_host::clock::{Clock, ManualClock};
use vigil_host::state::{EventRecord, StateError, StateLimits, StateStore};

fn store(limits: StateLimits) -> (StateStore, Arc<ManualClock>) {
    let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
    (StateStore::new(limits, clock.clone()), clock)
}

fn event(at_ms: u64, route: &str, status: u16) -> EventRecord<'_> {
    EventRecord {
        at_ms,
        method: "GET",
        route,
        status,
        public: true,
        authenticated: at_ms.is_multiple_of(2),
    }
}

#[test]
fn history_is_newest_first_and_bounded_by_depth() {
    let (s, _) = store(StateLimits {
        history_depth: 4,
        ..StateLimits::default()
    });
    for i in 0..10u64 {
        s.record("alice", &event(i, &format!("/r{i}"), 200 + i as u16));
    }
    let h = s.history("alice", 100).unwrap();
    let routes: Vec<&str> = h.iter().map(|e| e.route.as_str()).collect();
    assert_eq!(routes, ["/r9", "/r8", "/r7", "/r6"]);
    assert_eq!(
        (h[0].status, h[0].at_ms, h[0].method.as_str()),
        (209, 9, "GET")
    );
    assert!(!h[0].authenticated && h[1].authenticated && h[0].public);
    assert_eq!(s.history("alice", 2).unwrap().len(), 2);
    assert!(s.history("bob", 10).unwrap().is_empty());
}

#[test]
fn happened_answers_from_the_history_within_the_window() {
    let (s, clock) = store(StateLimits::default());
    let now = clock.now_ms();
    let reset = vigil_host::Pattern::parse("POST /password-reset").unwrap();
    let any_admin = vigil_host::Pattern::parse("* /admin/**").unwrap();
    s.record(
        "alice",
        &EventRecord {
            method: "POST",
            ..event(now - 120_000, "/password-reset", 500)
        },
    );
    s.record("alice", &event(now - 10_000, "/admin/users", 200));
    s.record("alice", &event(now - 1_000, "/items/{id}", 200));

    let within = |minutes: u64| minutes * 60_000;
    assert!(s
        .happened("alice", std::slice::from_ref(&reset), within(3), false)
        .unwrap());
    assert!(
        !s.happened("alice", std::slice::from_ref(&reset), within(1), false)
            .unwrap(),
        "older than the window"
    );
    assert!(
        !s.happened("alice", std::slice::from_ref(&reset), within(3), true)
            .unwrap(),
        "answered 500: not successful"
    );
    assert!(s
        .happened(
            "alice",
            &[reset.clone(), any_admin.clone()],
            within(1),
            true
        )
        .unwrap());
    assert!(
        !s.happened("bob", &[any_admin], within(60), false).unwrap(),
        "another client"
    );
    clock.advance(Duration::from_secs(3600));
    assert!(
        !s.happened("alice", &[reset], within(3), false).unwrap(),
        "time moved on"
    );
}

#[test]
fn window_counter_follows_the_clock() {
    let (s, clock) = store(StateLimits::default());
    let scope = s.scope("g");
    let window = 60_000;
    assert_eq!(s.count(scope, "k", 3, window).unwrap(), 3);
    clock.advance(Duration::from_secs(30));
    assert_eq!(s.count(scope, "k", 2, window).unwrap(), 5);
    clock.advance(Duration::from_secs(31));
    // The first three are more than a window old; the two from t=30s remain.
    assert_eq!(s.count(scope, "k", 0, window).unwrap(), 2);
    clock.advance(Duration::from_secs(60));
    assert_eq!(s.count(scope, "k", 0, window).unwrap(), 0);
    assert_eq!(s.count(scope, "k", -1, window).unwrap(), -1);
}

#[test]
fn distinct_counts_members_in_window() {
    let (s, clock) = store(StateLimits {
        max_distinct_members: 100,
        ..StateLimits::default()
    });
    let scope = s.scope("g");
    for id in ["1", "2", "2", "3", "1"] {
        s.distinct(scope, "ids", id, 10_000).unwrap();
    }
    assert_eq!(s.distinct(scope, "ids", "3", 10_000).unwrap(), 3);
    clock.advance(Duration::from_secs(11));
    assert_eq!(s.distinct(scope, "ids", "4", 10_000).unwrap(), 1);
    for id in 0..500 {
        s.distinct(scope, "many", &id.to_string(), 10_000).unwrap();
    }
    assert_eq!(
        s.distinct(scope, "many", "x", 10_000).unwrap(),
        100,
        "saturates at the member cap"
    );
}

#[test]
fn rate_limiter_allows_the_burst_then_gives_retry_after() {
    let (s, clock) = store(StateLimits::default());
    let scope = s.scope("g");
    for _ in 0..5 {
        assert_eq!(s.rate(scope, "k", 2.0, 5).unwrap(), Ok(()));
    }
    let wait = s.rate(scope, "k", 2.0, 5).unwrap().unwrap_err();
    assert!((450..=500).contains(&wait), "wait {wait} ms at 2/s");
    clock.advance(Duration::from_millis(500));
    assert_eq!(s.rate(scope, "k", 2.0, 5).unwrap(), Ok(()));
    assert!(s.rate(scope, "k", 2.0, 5).unwrap().is_err());
    // Another key is untouched.
    assert_eq!(s.rate(scope, "other", 2.0, 5).unwrap(), Ok(()));
}

#[test]
fn rate_rejects_nonsense_quotas_with_a_message() {
    let (s, _) = store(StateLimits {
        max_rate_quotas: 2,
        ..StateLimits::default()
    });
    let scope = s.scope("g");
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = s.rate(scope, "k", bad, 1).unwrap_err().to_string();
        assert!(
            err.contains("per-second must be a positive finite number"),
            "{err}"
        );
    }
    s.rate(scope, "k", 1.0, 1).unwrap().ok();
    s.rate(scope, "k", 2.0, 1).unwrap().ok();
    let err = s.rate(scope, "k", 3.0, 1).unwrap_err().to_string();
    assert!(err.contains("more than 2 distinct"), "{err}");
}

#[test]
fn kv_values_expire_and_are_size_limited() {
    let (s, clock) = store(StateLimits {
        max_kv_value_bytes: 8,
        ..StateLimits::default()
    });
    let scope = s.scope("g");
    s.set(scope, "k", b"v1", 1_000).unwrap();
    assert_eq!(s.get(scope, "k").unwrap().as_deref(), Some(&b"v1"[..]));
    clock.advance(Duration::from_millis(1_001));
    assert_eq!(s.get(scope, "k").unwrap(), None);
    let err = s.set(scope, "k", b"123456789", 1_000).unwrap_err();
    assert!(matches!(
        err,
        StateError::ValueTooLarge { size: 9, limit: 8 }
    ));
    assert!(err.to_string().contains("9 bytes exceeds the 8-byte limit"));
}

#[test]
fn scopes_keep_guards_apart() {
    let (s, _) = store(StateLimits::default());
    let (a, b) = (s.scope("guard-a"), s.scope("guard-b"));
    assert_eq!(
        s.scope("guard-a"),
        a,
        "a guard's scope is stable across reloads"
    );
    s.count(a, "shared-name", 10, 60_000).unwrap();
    s.set(a, "shared-name", b"a", 60_000).unwrap();
    s.distinct(a, "shared-name", "m", 60_000).unwrap();
    assert_eq!(s.count(b, "shared-name", 0, 60_000).unwrap(), 0);
    assert_eq!(s.get(b, "shared-name").unwrap(), None);
    assert_eq!(s.distinct(b, "shared-name", "n", 60_000).unwrap(), 1);
    s.rate(a, "shared-name", 1.0, 1).unwrap().unwrap();
    assert_eq!(s.rate(b, "shared-name", 1.0, 1).unwrap(), Ok(()));
}

#[test]
fn long_keys_are_stored_hashed_and_still_distinct() {
    let (s, _) = store(StateLimits::default());
    let scope = s.scope("g");
    let long_a = "a".repeat(10_000);
    let long_b = format!("{}b", "a".repeat(9_999));
    s.count(scope, &long_a, 1, 60_000).unwrap();
    assert_eq!(s.count(scope, &long_a, 1, 60_000).unwrap(), 2);
    assert_eq!(s.count(scope, &long_b, 1, 60_000).unwrap(), 1);
}

#[test]
fn a_million_clients_stay_within_the_bounds() {
    let limits = StateLimits {
        max_clients: 10_000,
        max_keys: 10_000,
        max_distinct_sets: 5_000,
        max_kv_entries: 5_000,
        max_routes: 100,
        ..StateLimits::default()
    };
    let (s, _) = store(limits.clone());
    let scope = s.scope("g");
    for i in 0..1_000_000u64 {
        let client = format!("client-{i}");
        s.record(&client, &event(i, &format!("/route/{}", i % 1_000), 200));
        if i % 4 == 0 {
            s.count(scope, &client, 1, 60_000).unwrap();
            s.rate(scope, &client, 10.0, 10).unwrap().unwrap();
            s.distinct(scope, &client, "m", 60_000).unwrap();
            s.set(scope, &client, b"x", 60_000).unwrap();
        }
    }
    let sizes = s.sizes();
    // Each table is split in 32 shards of ceil(bound / 32) entries.
    let slack = |bound: usize| bound.div_ceil(32) * 32;
    assert!(sizes.clients <= slack(limits.max_clients), "{sizes:?}");
    assert!(sizes.counters <= slack(limits.max_keys), "{sizes:?}");
    assert!(sizes.rate_keys <= slack(limits.max_keys), "{sizes:?}");
    assert!(
        sizes.distinct_sets <= slack(limits.max_distinct_sets),
        "{sizes:?}"
    );
    assert!(
        sizes.kv_entries <= slack(limits.max_kv_entries),
        "{sizes:?}"
    );
    assert!(
        sizes.clients >= limits.max_clients * 9 / 10,
        "tables fill up to their bound: {sizes:?}"
    );
    assert_eq!(s.routes_interned(), 100);
    // The most recent client is still tracked; the first was evicted.
    assert_eq!(s.history("client-999999", 1).unwrap().len(), 1);
    assert!(s.history("client-0", 1).unwrap().is_empty());
    assert_eq!(
        s.history("client-999999", 1).unwrap()[0].route,
        "(other)",
        "routes past the bound share a name"
    );
}

#[test]
fn idle_entries_are_swept() {
    let (s, clock) = store(StateLimits {
        idle_expiry: Duration::from_secs(60),
        ..StateLimits::default()
    });
    let scope = s.scope("g");
    s.record("old", &event(0, "/", 200));
    s.count(scope, "old", 1, 1_000).unwrap();
    clock.advance(Duration::from_secs(61));
    s.record("new", &event(1, "/", 200));
    assert_eq!(s.sweep(), 2);
    assert_eq!(s.sizes().clients, 1);
    assert!(s.history("old", 1).unwrap().is_empty());
}
