//! The stock guards compiled into the binary (`module = "builtin:NAME"`, committed under
//! `proxy/builtin/`) must be the ones the sources make. Builds are not byte-reproducible from
//! one checkout to another (the crate hashes of path dependencies include their paths) nor
//! from one Rust toolchain to another, so the committed components are held to what they can
//! honestly be held to: the sources recorded when they were built are the sources as they are
//! now, and they decide as the guards this suite builds from those sources do, request by
//! request. `scripts/refresh-builtin.sh` rebuilds them when either fails.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_host::clock::{Clock, ManualClock};
use vigil_host::{Chain, GuardSource, GuardSpec, Request, Response, Runtime, RuntimeConfig};

const REFRESH: &str = "run scripts/refresh-builtin.sh and commit proxy/builtin/";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The package names of the cdylib crates directly under `example-guards/`, sorted.
fn stock_guard_crates() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root().join("example-guards")).unwrap() {
        let Ok(manifest) = std::fs::read_to_string(entry.unwrap().path().join("Cargo.toml")) else {
            continue;
        };
        if !manifest.contains("cdylib") {
            continue;
        }
        let name = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = \"")?.strip_suffix('"'))
            .expect("a package name");
        names.push(name.to_string());
    }
    names.sort();
    names
}

#[test]
fn every_stock_guard_is_built_in() {
    let builtin: Vec<&str> = vigil::builtin::ALL.iter().map(|b| b.name).collect();
    assert_eq!(
        builtin,
        stock_guard_crates(),
        "proxy/src/builtin.rs must embed exactly the guard crates of example-guards/"
    );
}

/// Files under `dir` (relative to the root), recursively, outside build output (`target/`).
fn files_under(dir: &str, into: &mut Vec<String>) {
    for entry in std::fs::read_dir(root().join(dir)).unwrap() {
        let entry = entry.unwrap();
        let path = format!("{dir}/{}", entry.file_name().to_str().unwrap());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "target" {
                files_under(&path, into);
            }
        } else {
            into.push(path);
        }
    }
}

/// What `scripts/refresh-builtin.sh` records, as it records it: every file of every crate of
/// `example-guards/` (a guard may embed one beside its sources, as signatures does its list),
/// the guest SDK's sources and contract, and the committed components, sorted by path.
fn sources_now() -> BTreeMap<String, String> {
    let mut paths: Vec<String> = [
        "example-guards/Cargo.toml",
        "example-guards/Cargo.lock",
        "guest-sdk/Cargo.toml",
    ]
    .map(String::from)
    .to_vec();
    for entry in std::fs::read_dir(root().join("example-guards")).unwrap() {
        let dir = entry.unwrap().file_name().to_str().unwrap().to_string();
        if root()
            .join("example-guards")
            .join(&dir)
            .join("Cargo.toml")
            .is_file()
        {
            files_under(&format!("example-guards/{dir}"), &mut paths);
        }
    }
    files_under("guest-sdk/src", &mut paths);
    files_under("guest-sdk/wit", &mut paths);
    for b in vigil::builtin::ALL {
        paths.push(format!("proxy/builtin/{}.wasm", b.name));
    }
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(root().join(&p)).unwrap();
            let hash = format!("{:x}", Sha256::digest(&bytes));
            (p, hash)
        })
        .collect()
}

#[test]
fn the_builtin_guards_were_built_from_the_sources_as_they_are() {
    let recorded_text = std::fs::read_to_string(root().join("proxy/builtin/SHA256SUMS")).unwrap();
    let recorded: BTreeMap<String, String> = recorded_text
        .lines()
        .map(|l| {
            let (hash, path) = l.split_once("  ").expect("sha256sum's format");
            (path.to_string(), hash.to_string())
        })
        .collect();
    let now = sources_now();
    let mut problems = Vec::new();
    for (path, hash) in &now {
        match recorded.get(path) {
            None => problems.push(format!("{path}: new since the built-in guards were built")),
            Some(h) if h != hash => problems.push(format!(
                "{path}: changed since the built-in guards were built"
            )),
            Some(_) => {}
        }
    }
    for path in recorded.keys().filter(|p| !now.contains_key(*p)) {
        problems.push(format!("{path}: gone since the built-in guards were built"));
    }
    assert!(
        problems.is_empty(),
        "proxy/builtin/ is stale; {REFRESH}:\n  {}",
        problems.join("\n  ")
    );
}

/// How a guard answered each request of a run, and what it reported.
#[derive(Debug, PartialEq)]
struct Run {
    denials: Vec<Option<(u16, String, Option<u32>)>>,
    findings: Vec<(String, String, String)>,
}

/// The configuration each stock guard runs the traffic with: tight, so that it refuses some
/// of it.
fn config_of(guard: &str) -> &'static str {
    match guard {
        "credential-stuffing" => {
            r#"{"login": "POST /login", "account": {"json_field": "username"},
                "max_failures": 4, "max_accounts": 3, "max_clients_per_account": 2, "window": "15m"}"#
        }
        "enumeration" => {
            r#"{"routes": ["GET /users/{id}"], "max_distinct": 6, "max_not_found_ratio": 0.5,
                "window": "10m"}"#
        }
        "login-throttle" => r#"{"per_minute": 6, "burst": 2}"#,
        "probing" => {
            r#"{"window": "10m", "min_requests": 10, "max_error_ratio": 0.4, "max_not_found": 8}"#
        }
        "rate-limit" => r#"{"rate": 20, "per": "minute", "burst": 3}"#,
        "sequence" => {
            r#"{"rules": [
                {"kind": "requires", "target": "POST /checkout", "after": ["POST /cart/items"], "within": "1m"},
                {"kind": "flow-cap", "target": "POST /checkout", "max": 2, "window": "1h"}]}"#
        }
        "signatures" => r#"{"signatures": "path /internal-backup\nagent evil-bot\n"}"#,
        other => panic!("no configuration for the stock guard {other:?}; add one here"),
    }
}

/// Runs a fixed, varied stream of requests (logins that mostly fail, object ids that are
/// often missing, carts and checkouts, a scanner's paths and agent, from four clients, 300 ms
/// apart on a manual clock)
/// through the guard `name` loaded from `source`.
fn run(name: &str, source: GuardSource) -> Run {
    let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
    let mut config = RuntimeConfig {
        clock: clock.clone(),
        ..RuntimeConfig::default()
    };
    config.default_limits.deadline = vigil_tests::RELAXED_DEADLINE;
    let runtime = Runtime::new(config).unwrap();
    let mut spec = GuardSpec::new(name, source);
    spec.config_json = config_of(name).to_string();
    spec.body_limit = 4096;
    let chain = Chain::new(vec![vigil_tests::load(&runtime, spec)]).unwrap();
    let mut denials = Vec::new();
    // A linear congruential generator: the same stream on every run, no dependency.
    let mut seed: u64 = 0x5eed;
    let mut next = |below: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % below
    };
    for _ in 0..400 {
        let client = ["203.0.113.1", "203.0.113.2", "198.51.100.3", "192.0.2.4"][next(4) as usize];
        let mut agent = "Mozilla/5.0";
        let (method, path, route, body, status) = match next(7) {
            0 => {
                let account = next(6);
                let body = format!(r#"{{"username": "user{account}", "password": "x"}}"#);
                let status = if next(4) == 0 { 200 } else { 401 };
                ("POST", "/login".to_string(), None, Some(body), status)
            }
            1 => {
                let id = next(30);
                let status = if id < 12 { 200 } else { 404 };
                let route = Some("/users/{id}".to_string());
                ("GET", format!("/users/{id}"), route, None, status)
            }
            2 => ("POST", "/cart/items".to_string(), None, None, 201),
            3 => ("POST", "/checkout".to_string(), None, None, 200),
            // What a scanner asks for: a shipped signature, the configured ones, unknown paths.
            4 => {
                let path = ["/.git/config", "/internal-backup", "/old", "/x.php"][next(4) as usize];
                if next(3) == 0 {
                    agent = "evil-bot/1.0";
                }
                ("GET", path.to_string(), None, None, 404)
            }
            _ => ("GET", "/products".to_string(), None, None, 200),
        };
        let mut req: Request =
            vigil_tests::request(method, &path, client, &[("user-agent", agent)]);
        req.client.ip = client.to_string();
        req.route = route;
        req.body = body.map(String::into_bytes);
        req.received_ms = clock.now_ms();
        let plan = chain.plan_for(&req);
        let decision = chain.evaluate(&plan, &mut req);
        let response = Response {
            status: decision.denial.as_ref().map_or(status, |d| d.status),
            headers: Vec::new(),
            latency_us: 1000,
        };
        chain.observe(&mut req, &response, &decision);
        denials.push(
            decision
                .denial
                .map(|d| (d.status, d.reason, d.retry_after_secs)),
        );
        clock.advance(Duration::from_millis(300));
    }
    let findings = runtime
        .drain_findings()
        .into_iter()
        .map(|f| (f.kind, f.detail, f.client))
        .collect();
    Run { denials, findings }
}

#[test]
fn the_builtin_guards_decide_as_the_guards_built_from_source() {
    for builtin in vigil::builtin::ALL {
        let built = vigil_tests::guards::path(builtin.name);
        let fresh = std::fs::read(built).unwrap();
        if fresh == builtin.wasm {
            eprintln!("{}: the same bytes as the build from source", builtin.name);
        } else {
            // Expected on another checkout path or toolchain: the behaviour decides.
            eprintln!(
                "{}: other bytes than the build from source ({} against {}); comparing decisions",
                builtin.name,
                builtin.wasm.len(),
                fresh.len()
            );
        }
        let embedded = run(builtin.name, GuardSource::Bytes(builtin.wasm.to_vec()));
        let from_source = run(builtin.name, GuardSource::File(built.into()));
        let refused = embedded.denials.iter().filter(|d| d.is_some()).count();
        assert!(
            refused > 0 && refused < embedded.denials.len(),
            "{}: the traffic must be partly refused to tell two guards apart; {refused} of {} \
             were",
            builtin.name,
            embedded.denials.len()
        );
        if embedded != from_source {
            let first = embedded
                .denials
                .iter()
                .zip(&from_source.denials)
                .position(|(a, b)| a != b);
            panic!(
                "builtin:{} decides differently from example-guards/{} as built now (first \
                 difference at request {first:?}; findings {} against {}); {REFRESH}",
                builtin.name,
                builtin.name,
                embedded.findings.len(),
                from_source.findings.len()
            );
        }
    }
}

#[test]
fn a_builtin_guard_loads_under_its_name_and_serves_through_the_sidecar_config() {
    // The configuration path, not only the bytes: `builtin:` resolves without any file.
    let dir = vigil_tests::harness::tempdir("builtin-config");
    let file = dir.join("vigil.toml");
    std::fs::write(
        &file,
        "[upstream]\nurl = \"http://127.0.0.1:9\"\n[[guard]]\nname = \"limit\"\n\
         module = \"builtin:rate-limit\"\nconfig = { rate = 1, per = \"minute\" }\n",
    )
    .unwrap();
    let config = vigil::config::Config::load(&file, &vigil::config::Overrides::default()).unwrap();
    let runtime = vigil_tests::runtime();
    let guard = vigil_tests::load(&runtime, config.guards[0].clone());
    let chain = Chain::new(vec![guard]).unwrap();
    let statuses: Vec<Option<u16>> = (0..3)
        .map(|_| {
            let mut req = vigil_tests::request("GET", "/", "c", &[]);
            let plan = chain.plan_for(&req);
            chain.evaluate(&plan, &mut req).denial.map(|d| d.status)
        })
        .collect();
    assert_eq!(statuses, [None, Some(429), Some(429)]);
}
