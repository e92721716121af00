//! The collector on SQLite against the collector on PostgreSQL, in one run: reports per second
//! through the real HTTP server from 1, 10 and 100 simulated sidecars reporting at once, and
//! the latency of `/api/endpoints` over 10,000 and 100,000 stored endpoints.
//!
//! `cargo bench -p vigil-tests --bench collector_engines` (release; about ten minutes).
//! `-- --quick` runs fewer rounds on 1,000 and 10,000 endpoints, to check that it works.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use vigil_collector::config::CollectorConfig;
use vigil_collector::Collector;
use vigil_report::{Dropped, EndpointDelta, Finding, Period, Report, SequenceRange, SCHEMA};
use vigil_tests::postgres::PostgresServer;
use vigil_tests::process::{http, temp_dir};

/// Endpoints per ingest report; one in five has public clients (a sketch) and denials.
const ENDPOINTS: usize = 50;
/// Reports per ingest round, split evenly over the sidecars.
const REPORTS: u64 = 300;
/// Simulated sidecars: each a thread with an instance of its own, sending back to back.
const SIDECARS: [u64; 3] = [1, 10, 100];
/// Endpoints per report when filling the store for the query measure.
const FILL_ENDPOINTS: usize = 1_000;
const TOKEN: &str = "bench-token-0123456789";

fn report(instance: u64, sequence: u64, endpoints: usize, offset: usize) -> Report {
    let endpoints = (0..endpoints)
        .map(|e| {
            let mut delta = EndpointDelta {
                method: if e % 3 == 0 { "POST" } else { "GET" }.into(),
                route: format!("/api/v1/resource{}/{{id}}", offset + e),
                requests: 100 + e as u64,
                public: 50,
                authenticated: 80,
                unauthenticated_success: 10,
                public_unauthenticated_success: 5,
                first_seen_ms: 1_000,
                last_seen_ms: 2_000,
                ..EndpointDelta::default()
            };
            delta.status.success = 90;
            delta.status.client_error = 10 + e as u64;
            delta.credentials.bearer = 80;
            if e % 5 == 0 {
                for client in 0..50 {
                    delta
                        .public_clients
                        .insert(format!("{instance}-{client}").as_bytes());
                }
                delta.denials.insert("rate-limit".into(), 3);
            }
            delta
        })
        .collect();
    Report {
        schema: SCHEMA,
        service: format!("service-{}", instance % 4),
        instance: format!("instance-{instance}"),
        sequence: SequenceRange {
            first: sequence,
            last: sequence,
        },
        period: Period {
            start_ms: 1_000,
            end_ms: 2_000,
        },
        endpoints,
        findings: vec![Finding {
            kind: "client-denied".into(),
            source: "guard:rate-limit".into(),
            endpoint: None,
            detail: "rate limit exceeded".into(),
            client: Some(format!("203.0.113.{}", sequence % 200)),
            at_ms: 2_000,
            count: 3,
        }],
        documented: Vec::new(),
        dropped: Dropped::default(),
        // Versioned, as a fleet verifying fixes reports: the heavier path through the stores.
        version: Some("2.4.1".into()),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A collector in this process on `storage`; returns it with its ingest and API addresses.
fn start_collector(dir: &Path, storage: &str) -> (Arc<Collector>, SocketAddr, SocketAddr) {
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\nmax_connections = 4096\n\
         [api]\naddress = \"127.0.0.1:1\"\n\
         [storage]\n{storage}\n[[token]]\ntoken = \"{TOKEN}\"\n"
    );
    let config = CollectorConfig::parse(&dir.join("collector.toml"), &text).unwrap();
    let collector = Arc::new(Collector::open(config).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let serving = collector.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let ingest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send((ingest.local_addr().unwrap(), api.local_addr().unwrap()))
                .unwrap();
            vigil_collector::serve(serving, ingest, api, std::future::pending()).await;
        });
    });
    let (ingest, api) = rx.recv().unwrap();
    (collector, ingest, api)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Reports per second of one round: `sidecars` threads, each sending its share of
/// [`REPORTS`] with fresh sequence numbers from `first_sequence`.
fn ingest_round(addr: SocketAddr, sidecars: u64, first_sequence: u64) -> f64 {
    let each = REPORTS / sidecars;
    let auth = format!("Bearer {TOKEN}");
    // Bodies are prepared beforehand, as each sidecar compresses its own.
    let bodies: Vec<Vec<(String, Vec<u8>)>> = (0..sidecars)
        .map(|sidecar| {
            (0..each)
                .map(|i| {
                    let r = report(sidecar, first_sequence + i, ENDPOINTS, 0);
                    (r.idempotency_key(), gzip(&serde_json::to_vec(&r).unwrap()))
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for reports in &bodies {
            let auth = &auth;
            scope.spawn(move || {
                for (key, body) in reports {
                    let headers = [
                        ("Authorization", auth.as_str()),
                        ("Content-Encoding", "gzip"),
                        ("Content-Type", "application/json"),
                        ("Idempotency-Key", key.as_str()),
                    ];
                    let response = http(addr, "POST", "/v1/reports", &headers, body).unwrap();
                    assert_eq!(response.status, 202, "{}", response.text());
                }
            });
        }
    });
    (sidecars * each) as f64 / started.elapsed().as_secs_f64()
}

/// Median milliseconds of `GET path` over `times` requests, and the size of the answer.
fn query_ms(api: SocketAddr, path: &str, times: usize) -> (f64, usize) {
    let mut took = Vec::new();
    let mut bytes = 0;
    for _ in 0..times {
        let started = Instant::now();
        let response = http(api, "GET", path, &[], b"").unwrap();
        took.push(started.elapsed().as_secs_f64() * 1_000.0);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        bytes = response.body.len();
    }
    (median(took), bytes)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("collector_engines: bench");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, queries, sizes): (u64, usize, &[usize]) = if quick {
        (2, 3, &[1_000, 10_000])
    } else {
        (5, 7, &[10_000, 100_000])
    };
    let dir = temp_dir("bench-collector-engines");
    let durable = PostgresServer::start("bench", &[]);
    let relaxed = PostgresServer::start("bench-relaxed", &["synchronous_commit=off"]);
    // Each engine's name, and its server for PostgreSQL.
    let engines: [(&str, Option<&PostgresServer>); 3] = [
        ("SQLite (WAL, synchronous=NORMAL)", None),
        (
            "PostgreSQL 15 (defaults: fsync, synchronous_commit=on)",
            Some(&durable),
        ),
        ("PostgreSQL 15 (synchronous_commit=off)", Some(&relaxed)),
    ];
    // A fresh database of the engine, as a `[storage]` line.
    let storage = |server: Option<&PostgresServer>, database: &str| match server {
        Some(server) => format!("url = \"{}\"", server.database(database)),
        None => format!("path = \"{database}.db\""),
    };
    let sample = serde_json::to_vec(&report(0, 1, ENDPOINTS, 0)).unwrap();
    println!(
        "ingest report: {ENDPOINTS} endpoints, {} bytes of JSON, {} gzip-compressed; {REPORTS} reports a round, {rounds} rounds",
        sample.len(),
        gzip(&sample).len()
    );

    let mut ingest: Vec<(String, u64, f64)> = Vec::new();
    for &(name, server) in &engines {
        for sidecars in SIDECARS {
            let database = format!("ingest_{sidecars}");
            let (_collector, addr, _) = start_collector(&dir, &storage(server, &database));
            let rates: Vec<f64> = (0..rounds)
                .map(|round| ingest_round(addr, sidecars, round * REPORTS + 1))
                .collect();
            let rate = median(rates.clone());
            println!(
                "{:<56} {sidecars:>3} sidecars: median {rate:>6.0} reports/s ({:.0} endpoints/s); rounds {:?}",
                name,
                rate * ENDPOINTS as f64,
                rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>()
            );
            ingest.push((name.to_string(), sidecars, rate));
        }
    }

    let mut latency: Vec<(String, usize, f64, f64)> = Vec::new();
    for &(name, server) in &engines {
        for &size in sizes {
            let database = format!("query_{size}");
            let (collector, _, api) = start_collector(&dir, &storage(server, &database));
            // Filled straight through the store: 1,000 endpoints a report, over 4 services.
            let started = Instant::now();
            for i in 0..size / FILL_ENDPOINTS {
                let r = report(
                    i as u64 % 4,
                    i as u64 / 4 + 1,
                    FILL_ENDPOINTS,
                    i / 4 * FILL_ENDPOINTS,
                );
                collector.store.apply(&r, 3_000).unwrap();
            }
            let fill = started.elapsed().as_secs_f64();
            let (all, bytes) = query_ms(api, "/api/endpoints", queries);
            let (one, _) = query_ms(api, "/api/endpoints?service=service-1&public=true", queries);
            println!(
                "{:<56} {size:>6} endpoints (filled in {fill:.1} s): /api/endpoints median {all:.0} ms ({:.1} MB); ?service=service-1&public=true (a quarter) {one:.0} ms",
                name,
                bytes as f64 / 1e6
            );
            latency.push((name.to_string(), size, all, one));
        }
    }

    println!("\nratios PostgreSQL / SQLite (ingest: reports/s; queries: latency)");
    let sqlite = engines[0].0;
    for &(name, _) in &engines[1..] {
        for sidecars in SIDECARS {
            let rate = |name: &str| {
                ingest
                    .iter()
                    .find(|(n, s, _)| n == name && *s == sidecars)
                    .unwrap()
                    .2
            };
            println!(
                "{:<56} ingest, {sidecars:>3} sidecars: {:.2}x",
                name,
                rate(name) / rate(sqlite)
            );
        }
        for &size in sizes {
            let of = |name: &str| {
                latency
                    .iter()
                    .find(|(n, s, _, _)| n == name && *s == size)
                    .unwrap()
            };
            let (p, s) = (of(name), of(sqlite));
            println!(
                "{:<56} /api/endpoints, {size:>6} endpoints: {:.2}x (filtered {:.2}x)",
                name,
                p.2 / s.2,
                p.3 / s.3
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
