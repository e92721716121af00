//! Cost of the exposure inventory's accounting per request, beside the Prometheus request
//! counter every request already pays for, measured in the same run.
//!
//! `cargo bench -p vigil-tests --bench inventory`

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use vigil::config::VersionSource;
use vigil::exposure::inventory::{Inventory, InventoryLimits, Observation};
use vigil::identity::{CredentialKind, ResolvedClient};
use vigil::metrics::{Disposition, Finished, Metrics, UpstreamCall};
use vigil::routing::{Route, RouteSource};

fn accounting(c: &mut Criterion) {
    let inventory = Inventory::new(
        InventoryLimits::default(),
        Vec::new(),
        None,
        &VersionSource::default(),
        0,
    );
    let metrics = Metrics::new();
    let routes: Vec<Route> = (0..50)
        .map(|i| Route {
            template: Arc::from(format!("/api/v1/resource{i}/{{id}}")),
            source: RouteSource::Heuristic,
            documented: false,
        })
        .collect();
    let clients: Vec<ResolvedClient> = (0..1_000u32)
        .map(|i| ResolvedClient {
            ip: std::net::IpAddr::from([203, 0, (i >> 8) as u8, i as u8]),
            key: format!("203.0.{}.{}", i >> 8, i & 255),
            public: true,
            authenticated: i % 2 == 0,
            credentials: if i % 2 == 0 {
                vec![CredentialKind::Bearer]
            } else {
                vec![]
            },
        })
        .collect();
    // Warm: every endpoint exists, as in steady state.
    for route in &routes {
        inventory.record(&observation(route, &clients[0]));
    }

    let mut group = c.benchmark_group("accounting");
    let mut n = 0usize;
    group.bench_function("inventory.record", |b| {
        b.iter(|| {
            n = n.wrapping_add(7);
            inventory.record(black_box(&observation(
                &routes[n % 50],
                &clients[n % 1_000],
            )));
        })
    });
    group.bench_function("metrics.request (peer)", |b| {
        b.iter(|| {
            n = n.wrapping_add(7);
            metrics.request(black_box(&Finished {
                method: "GET",
                route: &routes[n % 50].template,
                status: 200,
                verdict: Disposition::Allowed,
                elapsed: Duration::from_micros(n as u64 % 5_000),
                upstream: Some(UpstreamCall {
                    elapsed: Duration::from_micros(n as u64 % 4_000),
                    answered: true,
                }),
            }));
        })
    });
    group.bench_function("inventory.take (50 endpoints)", |b| {
        b.iter(|| {
            for route in &routes {
                inventory.record(&observation(route, &clients[1]));
            }
            black_box(inventory.take(1));
        })
    });
    group.finish();
}

fn observation<'a>(route: &'a Route, client: &'a ResolvedClient) -> Observation<'a> {
    Observation {
        method: "GET",
        route,
        client,
        status: 200,
        denied_by: None,
        would_deny: &[],
        at_ms: 1_700_000_000_000,
    }
}

criterion_group!(benches, accounting);
criterion_main!(benches);
