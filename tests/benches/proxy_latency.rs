//! Added latency of the proxy: the same sequential keep-alive requests sent directly to the
//! upstream, through Vigil with no guard, and through Vigil with one guard, alternating the
//! three targets in rounds so that machine noise hits them alike.
//!
//! `cargo bench -p vigil-tests --bench proxy_latency`

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vigil_tests::guards;
use vigil_tests::harness::{client, Proxy, Upstream};

const ROUNDS: usize = 20;
const PER_ROUND: usize = 1_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(measure());
}

async fn measure() {
    let upstream = Upstream::start().await;
    let url = format!("http://{}", upstream.addr);
    let dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    let base = "[upstream]\nurl = \"{upstream}\"\n[log]\nlevel = \"warn\"\n";
    let no_guard = Proxy::start(&dir.join("none"), base, &url).await;
    let one_guard_config = format!(
        "{base}[[guard]]\nname = \"allow\"\nmodule = \"{}\"\n",
        guards::ALLOW_ALL
    );
    let one_guard = Proxy::start(&dir.join("one"), &one_guard_config, &url).await;
    let targets = [
        ("direct", upstream.addr),
        ("vigil, no guard", no_guard.addr),
        ("vigil, one guard", one_guard.addr),
    ];
    let client = client();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    for (_, addr) in &targets {
        run(&client, *addr, 200).await; // warm connections and code paths
    }
    for _ in 0..ROUNDS {
        for (i, (_, addr)) in targets.iter().enumerate() {
            samples[i].extend(run(&client, *addr, PER_ROUND).await);
        }
    }
    println!(
        "{} sequential GET requests per target over keep-alive, {ROUNDS} alternating rounds",
        ROUNDS * PER_ROUND
    );
    println!(
        "{:<18} {:>10} {:>10} {:>14} {:>14}",
        "target", "p50 µs", "p99 µs", "added p50 µs", "added p99 µs"
    );
    let direct = (
        percentile(&mut samples[0].clone(), 0.50),
        percentile(&mut samples[0].clone(), 0.99),
    );
    for (i, (name, _)) in targets.iter().enumerate() {
        let p50 = percentile(&mut samples[i], 0.50);
        let p99 = percentile(&mut samples[i], 0.99);
        println!(
            "{name:<18} {:>10.1} {:>10.1} {:>14.1} {:>14.1}",
            micros(p50),
            micros(p99),
            micros(p50) - micros(direct.0),
            micros(p99) - micros(direct.1)
        );
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

async fn run(client: &Client, addr: SocketAddr, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let request = http::Request::get(format!("http://{addr}/items/{}", i % 100))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let started = Instant::now();
        let response = client.request(request).await.expect("request");
        assert!(response.status().is_success());
        let _ = response.into_body().collect().await;
        out.push(started.elapsed());
    }
    out
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
