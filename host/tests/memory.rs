//! Memory per tracked client, measured with a counting allocator (its own test binary, so no
//! other test's allocations are counted).

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::time::Duration;
use vigil_host::clock::ManualClock;
use vigil_host::state::{EventRecord, StateLimits, StateStore};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes held per client with a full history of depth 32 (the target: at most 1 KiB).
#[test]
fn a_tracked_client_with_full_history_costs_at_most_1_kib() {
    const CLIENTS: usize = 20_000;
    let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
    let store = StateStore::new(
        StateLimits {
            max_clients: CLIENTS,
            history_depth: 32,
            ..StateLimits::default()
        },
        clock,
    );
    // Intern the routes first: they are shared by all clients, not a per-client cost.
    store.record("warm-up", &record(0, "/users/{id}"));
    store.record("warm-up", &record(0, "/cart/items"));
    let region = Region::new(GLOBAL);
    for c in 0..CLIENTS {
        let key = format!("203.0.113.{}:{c:06}", c % 256);
        for i in 0..32 {
            let route = if i % 2 == 0 {
                "/users/{id}"
            } else {
                "/cart/items"
            };
            store.record(&key, &record(i, route));
        }
    }
    let change = region.change();
    // Growth by realloc is already counted in bytes_allocated.
    let held = change.bytes_allocated as i64 - change.bytes_deallocated as i64;
    let per_client = held as f64 / CLIENTS as f64;
    println!("bytes per tracked client at depth 32: {per_client:.0}");
    assert!(store.sizes().clients >= CLIENTS * 9 / 10);
    assert!(per_client <= 1024.0, "{per_client:.0} bytes per client");
}

fn record(at_ms: u64, route: &str) -> EventRecord<'_> {
    EventRecord {
        at_ms,
        method: "GET",
        route,
        status: 200,
        public: true,
        authenticated: false,
    }
}
