//! Collector ingest rate: reports and endpoints per second through the real HTTP server into
//! a file-backed SQLite database, and, as the peer measured in the same run, the same reports
//! applied straight to the store (no HTTP, gzip or JSON).
//!
//! `cargo bench -p vigil-tests --bench collector_ingest`

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_collector::config::CollectorConfig;
use vigil_collector::sqlite::SqliteStore;
use vigil_collector::store::Store;
use vigil_collector::Collector;
use vigil_report::{Dropped, EndpointDelta, Finding, Period, Report, SequenceRange, SCHEMA};
use vigil_tests::process::{http, temp_dir};

/// Sidecar instances reporting.
const INSTANCES: u64 = 20;
/// Endpoints per report; one in five has public clients (a sketch).
const ENDPOINTS: usize = 50;
/// Reports per round.
const REPORTS: u64 = 400;
/// Concurrent connections sending them.
const SENDERS: u64 = 8;
/// Rounds; the median is reported.
const ROUNDS: u64 = 7;
const TOKEN: &str = "bench-token-0123456789";

fn report(instance: u64, sequence: u64) -> Report {
    let endpoints = (0..ENDPOINTS)
        .map(|e| {
            let mut delta = EndpointDelta {
                method: if e % 3 == 0 { "POST" } else { "GET" }.into(),
                route: format!("/api/v1/resource{e}/{{id}}"),
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
        version: None,
    }
}

/// The reports of round `round`: fresh sequence numbers, spread over the instances.
fn round_reports(round: u64) -> Vec<Report> {
    (0..REPORTS)
        .map(|i| report(i % INSTANCES, round * REPORTS + i / INSTANCES + 1))
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn start_collector(dir: &Path) -> SocketAddr {
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[api]\naddress = \"127.0.0.1:1\"\n\
         [storage]\npath = \"ingest.db\"\n[[token]]\ntoken = \"{TOKEN}\"\n"
    );
    let config = CollectorConfig::parse(&dir.join("collector.toml"), &text).unwrap();
    let collector = Arc::new(Collector::open(config).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let ingest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(ingest.local_addr().unwrap()).unwrap();
            vigil_collector::serve(collector, ingest, api, std::future::pending()).await;
        });
    });
    rx.recv().unwrap()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("collector_ingest: bench");
        return;
    }
    let dir = temp_dir("bench-collector");
    let addr = start_collector(&dir);
    let store = SqliteStore::open(&dir.join("peer.db")).unwrap();
    let auth = format!("Bearer {TOKEN}");
    let sample = serde_json::to_vec(&report(0, 1)).unwrap();
    println!(
        "report: {ENDPOINTS} endpoints, {} bytes of JSON, {} gzip-compressed; {REPORTS} reports a round over {SENDERS} connections",
        sample.len(),
        gzip(&sample).len()
    );

    let (mut http_rates, mut store_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Bodies are prepared beforehand, as each sidecar compresses its own.
        let bodies: Vec<(String, Vec<u8>)> = round_reports(round)
            .iter()
            .map(|r| (r.idempotency_key(), gzip(&serde_json::to_vec(r).unwrap())))
            .collect();
        let started = Instant::now();
        std::thread::scope(|scope| {
            for sender in 0..SENDERS {
                let (bodies, auth) = (&bodies, &auth);
                scope.spawn(move || {
                    for (key, body) in bodies
                        .iter()
                        .skip(sender as usize)
                        .step_by(SENDERS as usize)
                    {
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
        let http_secs = started.elapsed().as_secs_f64();

        let reports = round_reports(round);
        let started = Instant::now();
        for r in &reports {
            store.apply(r, 3_000).unwrap();
        }
        let store_secs = started.elapsed().as_secs_f64();
        http_rates.push(REPORTS as f64 / http_secs);
        store_rates.push(REPORTS as f64 / store_secs);
        println!(
            "round {round}: http {:>7.0} reports/s   store only {:>7.0} reports/s",
            REPORTS as f64 / http_secs,
            REPORTS as f64 / store_secs
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (http_rate, store_rate) = (median(http_rates), median(store_rates));
    println!(
        "collector ingest (HTTP + gzip + JSON + SQLite): median {http_rate:.0} reports/s, {:.0} endpoints/s",
        http_rate * ENDPOINTS as f64
    );
    println!(
        "store only (SQLite apply of the same reports):   median {store_rate:.0} reports/s, {:.0} endpoints/s",
        store_rate * ENDPOINTS as f64
    );
    println!(
        "ratio: HTTP ingest runs at {:.2}x the store-only rate",
        http_rate / store_rate
    );
    let _ = std::fs::remove_dir_all(&dir);
}
