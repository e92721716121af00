//! Cost of evaluating guards per request, and of the state operations behind them.
//!
//! `cargo bench -p vigil-host --bench guard_eval`

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vigil_guard_artifacts as artifacts;
use vigil_guest::route::Pattern;
use vigil_host::state::EventRecord;
use vigil_host::{
    Chain, Client, GuardSource, GuardSpec, Request, Response, Runtime, RuntimeConfig,
};

fn spec(name: &str, path: &str, config: &str) -> GuardSpec {
    let mut spec = GuardSpec::new(name, GuardSource::File(path.into()));
    spec.config_json = config.into();
    spec
}

fn request(client: usize) -> Request {
    Request {
        method: "GET".into(),
        path: format!("/users/{}", client % 97),
        route: Some("/users/{id}".into()),
        query: None,
        headers: vec![vigil_host::Header {
            name: "user-agent".into(),
            value: b"bench/1.0".to_vec(),
        }],
        client: Client {
            key: format!("client-{}", client % 1000),
            ip: "203.0.113.9".into(),
            public: true,
            authenticated: true,
        },
        received_ms: 1_700_000_000_000,
        body: None,
    }
}

fn chain_of(runtime: &Runtime, specs: Vec<GuardSpec>) -> Chain {
    let guards = specs
        .into_iter()
        .map(|s| runtime.load_guard(s).expect("guard loads"))
        .collect();
    Chain::new(guards).unwrap()
}

fn evaluate(c: &mut Criterion) {
    let mut group = c.benchmark_group("evaluate");
    group.measurement_time(Duration::from_secs(5));

    let warm = Runtime::new(RuntimeConfig::default()).unwrap();
    let trivial = chain_of(&warm, vec![spec("allow", artifacts::ALLOW_ALL, "")]);
    let mut n = 0;
    group.bench_function("allow-all/warm-pool", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                request(n)
            },
            |req| assert!(trivial.evaluate(&trivial.plan_for(req), req).allowed()),
            BatchSize::SmallInput,
        )
    });

    let fresh = Runtime::new(RuntimeConfig {
        recycle_after_calls: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let trivial_fresh = chain_of(&fresh, vec![spec("allow", artifacts::ALLOW_ALL, "")]);
    group.bench_function("allow-all/fresh-instance", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                request(n)
            },
            |req| {
                assert!(trivial_fresh
                    .evaluate(&trivial_fresh.plan_for(req), req)
                    .allowed())
            },
            BatchSize::SmallInput,
        )
    });

    let stateful = r#"{"max_requests": 1000000000, "max_paths": 1000}"#;
    let three = chain_of(
        &warm,
        (0..3)
            .map(|i| spec(&format!("stateful-{i}"), artifacts::STATEFUL, stateful))
            .collect(),
    );
    group.bench_function("three-stateful/warm-pool", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                request(n)
            },
            |req| assert!(three.evaluate(&three.plan_for(req), req).allowed()),
            BatchSize::SmallInput,
        )
    });

    // Three guards that each take a rate-limiter token: the common shape of a stock chain.
    let throttles = chain_of(
        &warm,
        (0..3)
            .map(|i| {
                let config = r#"{"per_minute": 600000000, "burst": 1000}"#;
                spec(&format!("throttle-{i}"), artifacts::LOGIN_THROTTLE, config)
            })
            .collect(),
    );
    group.bench_function("three-rate-limit/warm-pool", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                request(n)
            },
            |req| assert!(throttles.evaluate(&throttles.plan_for(req), req).allowed()),
            BatchSize::SmallInput,
        )
    });

    let resp = Response {
        status: 200,
        headers: vec![],
        latency_us: 900,
    };
    group.bench_function("allow-all/evaluate+observe", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                request(n)
            },
            |req| {
                let d = trivial.evaluate(&trivial.plan_for(req), req);
                trivial.observe(req, &resp, &d);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The stock guards one by one on a request each applies to, and the demo's whole chain.
fn stock(c: &mut Criterion) {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let rate_limit = spec(
        "rate-limit",
        artifacts::RATE_LIMIT,
        r#"{"rate": 1000000, "burst": 1000}"#,
    );
    let sequence = spec(
        "sequence",
        artifacts::SEQUENCE,
        r#"{"rules": [{"kind": "forbids", "target": "GET /users/{id}", "after": ["POST /password-reset"], "within": "10m"}, {"kind": "distinct-param", "target": "GET /users/{id}", "param": "id", "max": 1000, "window": "10m"}]}"#,
    );
    let mut stuffing = spec(
        "credential-stuffing",
        artifacts::CREDENTIAL_STUFFING,
        r#"{"login": "GET /users/{id}", "account": {"json_field": "username"}, "max_accounts": 1000, "max_failures": 1000000}"#,
    );
    stuffing.body_limit = 4096;
    let enumeration = spec(
        "enumeration",
        artifacts::ENUMERATION,
        r#"{"routes": ["GET /users/{id}"], "max_distinct": 1000}"#,
    );
    let all = [rate_limit, sequence, stuffing, enumeration];
    let mut group = c.benchmark_group("stock");
    group.measurement_time(Duration::from_secs(5));
    let mut n = 0;
    let mut with_body = move || {
        n += 1;
        let mut req = request(n);
        req.body = Some(br#"{"username": "alice", "password": "x"}"#.to_vec());
        req
    };
    for guard in &all {
        let chain = chain_of(&runtime, vec![guard.clone()]);
        group.bench_function(guard.name.as_str(), |b| {
            b.iter_batched_ref(
                &mut with_body,
                |req| chain.evaluate(&chain.plan_for(req), req),
                BatchSize::SmallInput,
            )
        });
    }
    let chain = chain_of(
        &runtime,
        all.iter()
            .map(|g| GuardSpec {
                name: format!("{}-chain", g.name),
                ..g.clone()
            })
            .collect(),
    );
    group.bench_function("whole-chain", |b| {
        b.iter_batched_ref(
            &mut with_body,
            |req| chain.evaluate(&chain.plan_for(req), req),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The C, Python and JavaScript example guards, each allowing the request after its full check, against
/// the Rust stock rate-limit guard in the same run.
fn polyglot(c: &mut Criterion) {
    let guards = [
        spec(
            "rust-rate-limit",
            artifacts::RATE_LIMIT,
            r#"{"rate": 1000000, "burst": 1000}"#,
        ),
        spec(
            "c-path-guard",
            artifacts::PATH_GUARD,
            r#"{"user_agents": ["evil-bot"], "paths": [".backup"]}"#,
        ),
        spec(
            "python-method-allow",
            artifacts::METHOD_ALLOW,
            r#"{"routes": {"/users/{id}": ["GET", "PUT"], "/login": ["POST"]}}"#,
        ),
        // The benchmark's requests carry no key: the guard looks for its one header field
        // (the only one it is sent) and allows, without a state call.
        spec(
            "js-idempotency-key",
            artifacts::IDEMPOTENCY_KEY,
            r#"{"required": false}"#,
        ),
    ];
    each_alone(c, "polyglot", guards);
}

/// A bare call in each world of the contract: the same request (one header field, a route)
/// lowered whole into a guard that allows it at once, as records or as one packed byte list.
fn worlds(c: &mut Criterion) {
    let guards = [
        spec("guard", artifacts::ECHO_RECORDS, ""),
        spec("packed-guard", artifacts::ECHO, ""),
    ];
    each_alone(c, "worlds", guards);
}

/// Benchmarks in `group` of one chain per guard, each guard alone, named after the guard;
/// every request must be allowed.
fn each_alone(c: &mut Criterion, group: &str, guards: impl IntoIterator<Item = GuardSpec>) {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let mut group = c.benchmark_group(group);
    group.measurement_time(Duration::from_secs(5));
    let mut n = 0;
    let mut next = move || {
        n += 1;
        request(n)
    };
    for guard in guards {
        let name = guard.name.clone();
        let chain = chain_of(&runtime, vec![guard]);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                &mut next,
                |req| assert!(chain.evaluate(&chain.plan_for(req), req).allowed()),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn state(c: &mut Criterion) {
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let state = runtime.state();
    let scope = state.scope("bench");
    let keys: Vec<String> = (0..10_000).map(|i| format!("client-{i}")).collect();
    let mut group = c.benchmark_group("state");
    let mut i = 0usize;
    group.bench_function("record-event", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            state.record(
                &keys[i],
                &EventRecord {
                    at_ms: i as u64,
                    method: "GET",
                    route: "/users/{id}",
                    status: 200,
                    public: true,
                    authenticated: false,
                },
            )
        })
    });
    group.bench_function("history-8", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            state.history(&keys[i], 8).unwrap()
        })
    });
    // The stock `forbids` rule asked of clients whose history is full and never matches it:
    // every event is scanned.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let full = &keys[..1_000];
    let event = EventRecord {
        at_ms: now_ms,
        method: "GET",
        route: "/items/{id}",
        status: 200,
        public: true,
        authenticated: false,
    };
    let depth = RuntimeConfig::default().state.history_depth;
    for key in full {
        for _ in 0..depth {
            state.record(key, &event);
        }
    }
    let forbidden_after = [Pattern::parse("POST /password-reset").unwrap()];
    group.bench_function("happened-full-history", |b| {
        b.iter(|| {
            i = (i + 1) % full.len();
            state
                .happened(&full[i], &forbidden_after, 600_000, false)
                .unwrap()
        })
    });
    group.bench_function("count", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            state.count(scope, &keys[i], 1, 60_000).unwrap()
        })
    });
    group.bench_function("rate", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            state.rate(scope, &keys[i], 1000.0, 100).unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = evaluate, stock, polyglot, worlds, state
}
criterion_main!(benches);
