//! `vigil collect` end to end: the real binary on real sockets with a real SQLite file or a
//! real PostgreSQL server, reports sent gzip-compressed as sidecars send them, results read
//! back through the JSON API, the database and headless Chromium. The behaviour tests run on
//! both engines (`test_name::sqlite`, `test_name::postgres`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use vigil_collector::config::PostgresUrl;
use vigil_collector::postgres::PostgresStore;
use vigil_collector::sqlite::SqliteStore;
use vigil_collector::store::{Applied, Cutoffs, EndpointQuery, Store, StoreError};
use vigil_report::sketch::Sketch;
use vigil_report::{
    Dropped, EndpointDelta, EndpointKey, Finding, Period, Report, SequenceRange, SCHEMA,
};
use vigil_tests::browser;
use vigil_tests::postgres::PostgresServer;
use vigil_tests::process::{eventually, free_port, http, temp_dir, Process, Response};

const FLEET_TOKEN: &str = "fleet-token-0123456789";
const SHOP_TOKEN: &str = "shop-token-0123456789";
/// Small limits, so oversized bodies are cheap to make.
const MAX_BODY: usize = 256 * 1024;
const MAX_INFLATED: usize = 2 * 1024 * 1024;

/// The storage engine behind a collector under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// A SQLite file in the collector's directory.
    Sqlite,
    /// A database of its own on the process's shared PostgreSQL server.
    Postgres,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }

    /// A store of this engine opened straight, without a collector process.
    fn open_store(self, name: &str) -> Box<dyn Store> {
        let name = format!("{name}-{}", self.name());
        match self.storage(&name) {
            Storage::Sqlite => {
                Box::new(SqliteStore::open(&temp_dir(&name).join("collector.db")).unwrap())
            }
            Storage::Postgres(url) => {
                Box::new(PostgresStore::open(&PostgresUrl::parse(&url).unwrap()).unwrap())
            }
        }
    }

    /// Where a collector named `name` stores reports: an empty database of its own.
    fn storage(self, name: &str) -> Storage {
        match self {
            Engine::Sqlite => Storage::Sqlite,
            Engine::Postgres => Storage::Postgres(
                PostgresServer::shared().database(&format!("collector_{}", name.replace('-', "_"))),
            ),
        }
    }
}

/// A collector's `[storage]`.
#[derive(Debug, Clone)]
enum Storage {
    /// `collector.db` in its directory.
    Sqlite,
    /// This PostgreSQL URL, which other collectors may share.
    Postgres(String),
}

/// Runs each named behaviour test, a function taking the [`Engine`], once per engine.
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[test]
            fn sqlite() {
                super::$test(super::Engine::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$test(super::Engine::Postgres)
            }
        }
    )*};
}

on_both_engines!(
    refused_reports_are_answered_clearly_and_store_nothing,
    a_duplicate_is_acknowledged_and_not_counted_twice,
    fifty_concurrent_reporters_merge_exactly,
    endpoint_filters_findings_and_denied_clients,
    vulnerabilities_are_ranked_by_runtime_exposure,
    metrics_count_reports_by_result_on_the_api_listener_only,
    retention_forgets_old_data_and_still_knows_old_keys,
    a_fix_is_verified_once_no_affected_build_serves_its_endpoint,
    findings_repeated_in_one_report_fold_into_one_record,
);

/// A `vigil collect` process with its own directory, database and ports.
struct Collector {
    process: Option<Process>,
    storage: Storage,
    dir: PathBuf,
    config: PathBuf,
    ingest: SocketAddr,
    api: SocketAddr,
    /// Where its standard error goes, when a test reads its logs.
    log: Option<PathBuf>,
}

impl Collector {
    fn start(name: &str) -> Collector {
        Collector::on(Engine::Sqlite, name)
    }

    /// A collector on an empty database of `engine`.
    fn on(engine: Engine, name: &str) -> Collector {
        let name = format!("{name}-{}", engine.name());
        Collector::configure(&name, "", false, engine.storage(&name), true)
    }

    /// A collector whose log lines the test reads, with `extra` added to its configuration.
    fn start_logging(name: &str, extra: &str) -> Collector {
        Collector::configure(name, extra, true, Storage::Sqlite, true)
    }

    /// A collector on `storage`, started when `launch` says so.
    fn configure(
        name: &str,
        extra: &str,
        logging: bool,
        storage: Storage,
        launch: bool,
    ) -> Collector {
        Collector::configure_api(name, extra, "127.0.0.1", "", logging, storage, launch)
    }

    /// A collector whose API listens on `api_ip`, with `api_extra` in its `[api]` section.
    fn configure_api(
        name: &str,
        extra: &str,
        api_ip: &str,
        api_extra: &str,
        logging: bool,
        storage: Storage,
        launch: bool,
    ) -> Collector {
        let dir = temp_dir(&format!("collector-{name}"));
        let storage_line = match &storage {
            Storage::Sqlite => "path = \"collector.db\"".to_string(),
            Storage::Postgres(url) => format!("url = \"{url}\""),
        };
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/collector");
        let (ingest, api) = (free_port(), free_port());
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\naddress = \"127.0.0.1:{ingest}\"\nmax_body_bytes = {MAX_BODY}\n\
                 max_inflated_bytes = {MAX_INFLATED}\n\
                 [api]\naddress = \"{api_ip}:{api}\"\n{api_extra}\
                 [storage]\n{storage_line}\n\
                 [[token]]\nname = \"fleet\"\ntoken = \"{FLEET_TOKEN}\"\n\
                 [[token]]\nname = \"shop-sidecars\"\ntoken = \"{SHOP_TOKEN}\"\nservice = \"shop\"\n\
                 [vulnerabilities]\nknown = [\"{}\"]\nzap = [\"{}\"]\n{extra}",
                fixtures.join("known-vulnerabilities.json").display(),
                fixtures.join("zap-report.json").display()
            ),
        )
        .unwrap();
        let mut collector = Collector {
            process: None,
            storage,
            log: logging.then(|| dir.join("stderr.log")),
            dir,
            config,
            ingest: ([127, 0, 0, 1], ingest).into(),
            api: ([127, 0, 0, 1], api).into(),
        };
        if launch {
            collector.launch();
        }
        collector
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Starts the process without waiting for it to listen.
    fn spawn(&mut self) {
        let args = ["collect", "--config", self.config.to_str().unwrap()];
        self.process = Some(match &self.log {
            Some(log) => Process::vigil_logging_to(&args, log),
            None => Process::vigil(&args),
        });
    }

    fn wait_ready(&self) {
        for addr in [self.ingest, self.api] {
            eventually("the collector to listen", || {
                http(addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
            });
        }
    }

    /// Kills the process without letting it close the database, as a crash would.
    fn crash(&mut self) {
        let code = self.process.take().unwrap().signal_and_wait("KILL");
        assert_eq!(code, None, "killed by the signal");
    }

    /// What it has logged so far.
    fn logged(&self) -> String {
        std::fs::read_to_string(self.log.as_ref().expect("started with start_logging")).unwrap()
    }

    /// `GET /metrics` on the API listener, as text.
    fn metrics(&self) -> String {
        let response = http(self.api, "GET", "/metrics", &[], b"").unwrap();
        assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
        assert_eq!(
            response.header("content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        response.text()
    }

    fn database(&self) -> PathBuf {
        self.dir.join("collector.db")
    }

    /// POSTs `report` as a sidecar does: gzip JSON, bearer token, idempotency key.
    fn send(&self, token: &str, report: &Report) -> Response {
        let body = gzip(&serde_json::to_vec(report).unwrap());
        let auth = format!("Bearer {token}");
        let key = report.idempotency_key();
        self.post(
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
                ("Idempotency-Key", key.as_str()),
            ],
            &body,
        )
    }

    fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> Response {
        http(self.ingest, "POST", "/v1/reports", headers, body).unwrap()
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let response = http(self.api, "GET", path, &[], b"").unwrap();
        assert_eq!(response.status, 200, "GET {path}: {}", response.text());
        response.json()
    }

    /// Rows in every table that holds reported data, in either engine.
    fn stored_rows(&self) -> BTreeMap<&'static str, i64> {
        let tables = [
            "services",
            "instances",
            "applied",
            "endpoints",
            "endpoint_instances",
            "denials",
            "monitor_denials",
            "documented",
            "findings",
        ];
        let count = |table: &str| format!("SELECT count(*) FROM {table}");
        match &self.storage {
            Storage::Sqlite => {
                let db = rusqlite::Connection::open_with_flags(
                    self.database(),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                tables
                    .into_iter()
                    .map(|table| {
                        (
                            table,
                            db.query_row(&count(table), [], |r| r.get(0)).unwrap(),
                        )
                    })
                    .collect()
            }
            Storage::Postgres(url) => {
                let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
                tables
                    .into_iter()
                    .map(|table| (table, db.query_one(&count(table), &[]).unwrap().get(0)))
                    .collect()
            }
        }
    }

    fn assert_nothing_stored(&self, after: &str) {
        let rows = self.stored_rows();
        assert!(rows.values().all(|&n| n == 0), "{after} stored {rows:?}");
        assert_eq!(self.get("/api/services"), serde_json::json!([]), "{after}");
    }
}

/// A time shortly before the test ran, ms since the Unix epoch; reported times are offsets
/// from it, so retention (which counts from now) keeps them.
fn t0() -> u64 {
    static T0: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| vigil_collector::now_ms() - 3_600_000)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn report(service: &str, instance: &str, first: u64, last: u64) -> Report {
    Report {
        schema: SCHEMA,
        service: service.into(),
        instance: instance.into(),
        sequence: SequenceRange { first, last },
        period: Period {
            start_ms: t0() + 1_000,
            end_ms: t0() + 2_000,
        },
        endpoints: Vec::new(),
        findings: Vec::new(),
        documented: Vec::new(),
        dropped: Dropped::default(),
        version: None,
    }
}

fn endpoint(method: &str, route: &str, requests: u64) -> EndpointDelta {
    let mut delta = EndpointDelta {
        method: method.into(),
        route: route.into(),
        requests,
        first_seen_ms: t0() + 1_000,
        last_seen_ms: t0() + 2_000,
        ..EndpointDelta::default()
    };
    delta.status.success = requests;
    delta
}

fn key(method: &str, route: &str) -> EndpointKey {
    EndpointKey {
        method: method.into(),
        route: route.into(),
    }
}

fn finding(kind: &str, source: &str, on: EndpointKey, client: Option<&str>, count: u64) -> Finding {
    Finding {
        kind: kind.into(),
        source: source.into(),
        endpoint: Some(on),
        detail: format!("{kind} seen {count} times"),
        client: client.map(str::to_string),
        at_ms: t0() + 1_900,
        count,
    }
}

fn endpoint_json<'a>(
    endpoints: &'a serde_json::Value,
    method: &str,
    route: &str,
) -> &'a serde_json::Value {
    endpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == method && e["route"] == route)
        .unwrap_or_else(|| panic!("{method} {route} not in {endpoints}"))
}

fn refused_reports_are_answered_clearly_and_store_nothing(engine: Engine) {
    let collector = Collector::on(engine, "refusals");
    let good = {
        let mut r = report("shop", "shop-1", 1, 1);
        r.endpoints.push(endpoint("GET", "/users/{id}", 3));
        r
    };
    let json = serde_json::to_vec(&good).unwrap();
    let key = good.idempotency_key();
    let auth = format!("Bearer {FLEET_TOKEN}");
    let headers = |extra: &[(&'static str, &'static str)]| -> Vec<(String, String)> {
        let mut h = vec![
            ("Authorization".to_string(), auth.clone()),
            ("Content-Encoding".to_string(), "gzip".to_string()),
            ("Idempotency-Key".to_string(), key.clone()),
        ];
        for (name, value) in extra {
            h.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if !value.is_empty() {
                h.push((name.to_string(), value.to_string()));
            }
        }
        h
    };
    let send = |extra: &[(&'static str, &'static str)], body: &[u8]| {
        let h = headers(extra);
        let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        collector.post(&h, body)
    };

    let mut wrong_schema = serde_json::to_value(&good).unwrap();
    wrong_schema["endpoints"][0]["requests"] = "three".into();
    let mut unknown_field = serde_json::to_value(&good).unwrap();
    unknown_field["surprise"] = true.into();
    let mut invalid = good.clone();
    invalid.endpoints[0].public = 10;
    let bomb = gzip(&vec![b' '; 32 << 20]);
    assert!(bomb.len() < MAX_BODY, "the bomb itself fits the body limit");
    let oversized = vec![b'x'; MAX_BODY + 1];

    let cases: Vec<(&str, u16, Response, &str)> = vec![
        (
            "no token",
            401,
            send(&[("Authorization", "")], &gzip(&json)),
            "Bearer",
        ),
        (
            "unknown token",
            401,
            send(
                &[("Authorization", "Bearer not-a-configured-token")],
                &gzip(&json),
            ),
            "Bearer",
        ),
        (
            "basic credentials",
            401,
            send(&[("Authorization", "Basic ZmxlZXQ6dG9rZW4=")], &gzip(&json)),
            "Bearer",
        ),
        (
            "service token for another service",
            403,
            {
                let mut other = good.clone();
                other.service = "billing".into();
                let body = gzip(&serde_json::to_vec(&other).unwrap());
                let shop_auth = format!("Bearer {SHOP_TOKEN}");
                collector.post(
                    &[
                        ("Authorization", shop_auth.as_str()),
                        ("Content-Encoding", "gzip"),
                        ("Idempotency-Key", key.as_str()),
                    ],
                    &body,
                )
            },
            "may report only for service \\\"shop\\\"",
        ),
        ("not gzip", 400, send(&[], &json), "not valid gzip"),
        (
            "not JSON",
            400,
            send(&[], &gzip(b"{\"schema\": 1,")),
            "not JSON",
        ),
        (
            "wrong type",
            422,
            send(&[], &gzip(wrong_schema.to_string().as_bytes())),
            "does not fit the schema",
        ),
        (
            "unknown field",
            422,
            send(&[], &gzip(unknown_field.to_string().as_bytes())),
            "unknown field `surprise`",
        ),
        (
            "counts that contradict each other",
            422,
            send(&[], &gzip(&serde_json::to_vec(&invalid).unwrap())),
            "endpoints[0].public",
        ),
        (
            "no idempotency key",
            400,
            send(&[("Idempotency-Key", "")], &gzip(&json)),
            "Idempotency-Key header missing",
        ),
        (
            "idempotency key of another range",
            422,
            send(&[("Idempotency-Key", "shop-1:1-9")], &gzip(&json)),
            "does not match",
        ),
        (
            "unsupported encoding",
            415,
            send(&[("Content-Encoding", "br")], &gzip(&json)),
            "only gzip",
        ),
        (
            "not JSON content type",
            415,
            send(&[("Content-Type", "text/plain")], &gzip(&json)),
            "application/json",
        ),
        (
            "body over the limit",
            413,
            send(&[("Content-Encoding", "identity")], &oversized),
            "listen.max_body_bytes",
        ),
        (
            "gzip bomb",
            413,
            send(&[], &bomb),
            "listen.max_inflated_bytes",
        ),
    ];
    for (what, status, response, says) in &cases {
        assert_eq!(response.status, *status, "{what}: {}", response.text());
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json"),
            "{what}"
        );
        assert!(
            response.text().contains(says),
            "{what}: {}",
            response.text()
        );
        collector.assert_nothing_stored(what);
    }
    let unauthorized = &cases[0].2;
    assert_eq!(
        unauthorized.header("www-authenticate"),
        Some("Bearer realm=\"vigil-collector\"")
    );

    // The same collector takes the good report, so the refusals above were the report's fault.
    assert_eq!(collector.send(SHOP_TOKEN, &good).status, 202);
    assert_eq!(collector.stored_rows()["endpoints"], 1);
}

fn a_duplicate_is_acknowledged_and_not_counted_twice(engine: Engine) {
    let collector = Collector::on(engine, "duplicates");
    let first = {
        let mut r = report("shop", "shop-1", 1, 1);
        r.endpoints.push(endpoint("GET", "/users/{id}", 5));
        r.findings.push(finding(
            "enumeration",
            "guard:enumeration",
            key("GET", "/users/{id}"),
            Some("203.0.113.9"),
            2,
        ));
        r
    };
    let accepted = collector.send(FLEET_TOKEN, &first);
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    assert_eq!(accepted.json()["status"], "applied");
    let again = collector.send(FLEET_TOKEN, &first);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(again.json()["idempotency_key"], "shop-1:1-1");

    // A spool-merged range that overlaps what was applied cannot be split apart: refused.
    let mut overlapping = first.clone();
    overlapping.sequence = SequenceRange { first: 1, last: 2 };
    let conflict = collector.send(FLEET_TOKEN, &overlapping);
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    assert!(conflict.text().contains("overlaps the applied range 1-1"));

    let mut next = first.clone();
    next.sequence = SequenceRange { first: 2, last: 3 };
    assert_eq!(collector.send(FLEET_TOKEN, &next).status, 202);
    let mut other_service = first.clone();
    other_service.service = "billing".into();
    assert_eq!(
        collector.send(FLEET_TOKEN, &other_service).status,
        202,
        "idempotency keys are per service"
    );

    let endpoints = collector.get("/api/endpoints?service=shop");
    assert_eq!(
        endpoint_json(&endpoints, "GET", "/users/{id}")["requests"],
        10
    );
    let findings = collector.get("/api/findings?service=shop");
    assert_eq!(findings.as_array().unwrap().len(), 1);
    assert_eq!(findings[0]["count"], 4);
    assert_eq!(collector.stored_rows()["applied"], 3);
}

fn fifty_concurrent_reporters_merge_exactly(engine: Engine) {
    const REPORTERS: u64 = 50;
    const REPORTS_EACH: u64 = 3;
    let collector = Collector::on(engine, "fifty");
    let sent_sketches = std::sync::Mutex::new(Sketch::new());
    let report_of = |i: u64, sequence: u64| {
        let mut r = report("shop", &format!("shop-{i}"), sequence, sequence);
        let mut users = endpoint("GET", "/users/{id}", 10 + i);
        users.public = 5 + i;
        users.authenticated = 2;
        users.credentials.bearer = 2;
        users.unauthenticated_success = 8 + i;
        users.public_unauthenticated_success = 1;
        users.first_seen_ms = t0() + 1_000 + i;
        users.last_seen_ms = t0() + 5_000 + i;
        for client in i * 7..i * 7 + 20 {
            users
                .public_clients
                .insert(format!("198.51.100.{client}").as_bytes());
        }
        users.denials.insert("enumeration".into(), 1);
        r.endpoints.push(users);
        r.endpoints.push(endpoint("POST", "/login", 3));
        r.dropped.findings = 1;
        r
    };
    std::thread::scope(|scope| {
        for i in 0..REPORTERS {
            let (collector, sent_sketches) = (&collector, &sent_sketches);
            scope.spawn(move || {
                for sequence in 1..=REPORTS_EACH {
                    let r = report_of(i, sequence);
                    sent_sketches
                        .lock()
                        .unwrap()
                        .merge(&r.endpoints[0].public_clients);
                    let response = collector.send(SHOP_TOKEN, &r);
                    assert_eq!(
                        response.status,
                        202,
                        "shop-{i} #{sequence}: {}",
                        response.text()
                    );
                }
                // A retry after a lost acknowledgement, racing the other reporters.
                let retry = collector.send(SHOP_TOKEN, &report_of(i, 2));
                assert_eq!(retry.status, 200, "{}", retry.text());
            });
        }
    });

    let sum = |f: &dyn Fn(u64) -> u64| (0..REPORTERS).map(f).sum::<u64>() * REPORTS_EACH;
    let endpoints = collector.get("/api/endpoints?service=shop");
    let users = endpoint_json(&endpoints, "GET", "/users/{id}");
    assert_eq!(users["requests"], sum(&|i| 10 + i));
    assert_eq!(users["public"], sum(&|i| 5 + i));
    assert_eq!(users["authenticated"], sum(&|_| 2));
    assert_eq!(users["credentials"]["bearer"], sum(&|_| 2));
    assert_eq!(users["status"]["2xx"], sum(&|i| 10 + i));
    assert_eq!(users["unauthenticated_success"], sum(&|i| 8 + i));
    assert_eq!(users["public_unauthenticated_success"], sum(&|_| 1));
    assert_eq!(users["denials"]["enumeration"], sum(&|_| 1));
    assert_eq!(users["instances"], REPORTERS);
    assert_eq!(users["first_seen_ms"], t0() + 1_000);
    assert_eq!(users["last_seen_ms"], t0() + 5_000 + REPORTERS - 1);
    assert_eq!(users["exposure"], "public-unauthenticated");
    assert_eq!(
        endpoint_json(&endpoints, "POST", "/login")["requests"],
        sum(&|_| 3)
    );
    // The merged sketch is the union of every instance's clients: exactly what merging the
    // sent sketches gives, and close to the true number of distinct clients.
    let merged = sent_sketches.lock().unwrap().estimate();
    assert_eq!(users["public_clients"], merged);
    let distinct = (REPORTERS - 1) * 7 + 20;
    assert!(
        merged.abs_diff(distinct) * 100 <= distinct * 5,
        "{merged} vs {distinct}"
    );

    let services = collector.get("/api/services");
    assert_eq!(services[0]["name"], "shop");
    assert_eq!(services[0]["instances"], REPORTERS);
    assert_eq!(services[0]["reports"], REPORTERS * REPORTS_EACH);
    assert_eq!(services[0]["dropped"]["findings"], REPORTERS * REPORTS_EACH);
    let rows = collector.stored_rows();
    assert_eq!(rows["applied"] as u64, REPORTERS * REPORTS_EACH);
    assert_eq!(rows["endpoint_instances"] as u64, REPORTERS * 2);
}

#[test]
fn data_survives_a_crash_and_a_restart() {
    let mut collector = Collector::start("restart");
    let mut first = report("shop", "shop-1", 1, 1);
    first.endpoints.push(endpoint("GET", "/users/{id}", 7));
    assert_eq!(collector.send(FLEET_TOKEN, &first).status, 202);
    let wal = PathBuf::from(format!("{}-wal", collector.database().display()));
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "the database is in WAL mode: {} holds the commit",
        wal.display()
    );

    collector.crash();
    collector.launch();
    let endpoints = collector.get("/api/endpoints");
    assert_eq!(
        endpoint_json(&endpoints, "GET", "/users/{id}")["requests"],
        7
    );
    // The idempotency key survived too: the resend after the crash is not counted again.
    assert_eq!(collector.send(FLEET_TOKEN, &first).status, 200);
    let mut second = report("shop", "shop-1", 2, 2);
    second.endpoints.push(endpoint("GET", "/users/{id}", 1));
    assert_eq!(collector.send(FLEET_TOKEN, &second).status, 202);

    let code = collector.process.take().unwrap().signal_and_wait("TERM");
    assert_eq!(code, Some(0), "SIGTERM drains and exits 0");
    collector.launch();
    let endpoints = collector.get("/api/endpoints");
    assert_eq!(
        endpoint_json(&endpoints, "GET", "/users/{id}")["requests"],
        8
    );
}

/// A shop fleet with every kind of exposure: public and unauthenticated, public with
/// credentials, internal-only reached publicly, internal only, and documented but never
/// reached; findings and denied clients.
fn report_shop_fleet(collector: &Collector) {
    let mut a = report("shop", "shop-a", 1, 1);
    let mut users = endpoint("GET", "/users/{id}", 120);
    users.public = 100;
    users.unauthenticated_success = 60;
    users.public_unauthenticated_success = 55;
    users.authenticated = 60;
    users.credentials.bearer = 60;
    for client in 0..40 {
        users.public_clients.insert(format!("c{client}").as_bytes());
    }
    users.denials.insert("enumeration".into(), 40);
    users.monitor_denials.insert("bots".into(), 29);
    let mut orders = endpoint("GET", "/orders/{id}", 300);
    orders.public = 280;
    orders.authenticated = 300;
    orders.credentials.cookie = 300;
    let mut admin = endpoint("GET", "/admin/stats", 9);
    admin.public = 3;
    admin.authenticated = 9;
    admin.credentials.basic = 9;
    admin.internal_only = true;
    let mut debug = endpoint("GET", "/debug/vars", 4);
    debug.shadow = true;
    a.endpoints = vec![users, orders, admin, debug];
    a.documented = vec![
        key("GET", "/users/{id}"),
        key("GET", "/orders/{id}"),
        key("GET", "/admin/stats"),
        key("POST", "/legacy/export"),
    ];
    a.findings = vec![
        finding(
            "internal-reached-publicly",
            "sidecar",
            key("GET", "/admin/stats"),
            Some("203.0.113.50"),
            3,
        ),
        finding(
            "shadow-endpoint",
            "sidecar",
            key("GET", "/debug/vars"),
            None,
            4,
        ),
        finding(
            "client-denied",
            "guard:enumeration",
            key("GET", "/users/{id}"),
            Some("203.0.113.66"),
            40,
        ),
        finding(
            "client-denied",
            "guard:rate-limit",
            key("GET", "/orders/{id}"),
            Some("198.51.100.7"),
            12,
        ),
        finding(
            "client-would-deny",
            "guard:bots",
            key("GET", "/users/{id}"),
            Some("203.0.113.66"),
            9,
        ),
        finding(
            "client-would-deny",
            "guard:bots",
            key("GET", "/users/{id}"),
            Some("192.0.2.44"),
            20,
        ),
    ];
    let mut b = report("shop", "shop-b", 1, 1);
    let mut users_b = endpoint("GET", "/users/{id}", 30);
    users_b.public = 30;
    for client in 30..60 {
        users_b
            .public_clients
            .insert(format!("c{client}").as_bytes());
    }
    b.endpoints = vec![users_b];
    // A ban is about a client, on no endpoint in particular.
    let banned = Finding {
        endpoint: None,
        detail: "banned for 900s: scanning".into(),
        ..finding(
            "client-banned",
            "guard:rate-limit",
            key("GET", "/users/{id}"),
            Some("203.0.113.66"),
            1,
        )
    };
    b.findings = vec![
        finding(
            "client-denied",
            "guard:rate-limit",
            key("GET", "/users/{id}"),
            Some("203.0.113.66"),
            5,
        ),
        banned,
    ];
    for r in [a, b] {
        let response = collector.send(SHOP_TOKEN, &r);
        assert_eq!(response.status, 202, "{}", response.text());
    }
}

fn endpoint_filters_findings_and_denied_clients(engine: Engine) {
    let collector = Collector::on(engine, "filters");
    report_shop_fleet(&collector);
    let routes = |query: &str| -> Vec<String> {
        let list = collector.get(&format!("/api/endpoints{query}"));
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["method"].as_str().unwrap(),
                    e["route"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        routes("?public=true"),
        ["GET /orders/{id}", "GET /users/{id}", "GET /admin/stats"]
    );
    assert_eq!(routes("?unauthenticated=true"), ["GET /users/{id}"]);
    assert_eq!(routes("?shadow=true"), ["GET /debug/vars"]);
    assert_eq!(routes("?zombie=true"), ["POST /legacy/export"]);
    assert_eq!(routes("?internal=true"), ["GET /admin/stats"]);
    assert_eq!(
        routes("?public=1&unauthenticated=1&service=shop"),
        ["GET /users/{id}"]
    );
    assert!(routes("?service=billing").is_empty());
    assert_eq!(routes("").len(), 5);
    let users = collector.get("/api/endpoints?unauthenticated=true");
    assert_eq!(users[0]["requests"], 150);
    assert_eq!(users[0]["instances"], 2);
    let clients = users[0]["public_clients"].as_u64().unwrap();
    assert!(
        (57..=63).contains(&clients),
        "about 60 distinct clients: {clients}"
    );

    for bad in [
        "/api/endpoints?public=maybe",
        "/api/endpoints?color=red",
        "/api/findings?limit=0",
        "/api/findings?limit=1001",
        "/api/services?x=1",
    ] {
        let response = http(collector.api, "GET", bad, &[], b"").unwrap();
        assert_eq!(response.status, 400, "{bad}: {}", response.text());
    }
    let response = http(collector.api, "POST", "/api/services", &[], b"").unwrap();
    assert_eq!(response.status, 405);
    let response = http(collector.api, "GET", "/v1/reports", &[], b"").unwrap();
    assert_eq!(
        response.status, 404,
        "reports are not taken on the API listener"
    );

    let findings = collector.get("/api/findings?kind=internal-reached-publicly");
    assert_eq!(findings.as_array().unwrap().len(), 1);
    assert_eq!(findings[0]["route"], "/admin/stats");
    assert_eq!(findings[0]["client"], "203.0.113.50");
    assert_eq!(
        collector
            .get("/api/findings?limit=2")
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let denied = collector.get("/api/clients/denied");
    assert_eq!(denied[0]["client"], "203.0.113.66");
    assert_eq!(denied[0]["denials"], 45);
    assert_eq!(
        denied[0]["sources"],
        serde_json::json!(["guard:enumeration", "guard:rate-limit"])
    );
    assert_eq!(denied[0]["monitor_denials"], 9);
    assert_eq!(
        denied[0]["monitor_sources"],
        serde_json::json!(["guard:bots"])
    );
    assert_eq!(denied[0]["banned"], true);
    assert_eq!(denied[0]["endpoints"], 1, "a ban names no endpoint");
    assert_eq!(denied[1]["banned"], false);
    let bans = collector.get("/api/findings?kind=client-banned");
    assert_eq!(bans[0]["client"], "203.0.113.66");
    assert_eq!(bans[0]["source"], "guard:rate-limit");
    assert_eq!(bans[0]["detail"], "banned for 900s: scanning");
    // Ranked by all its denials: a client only a monitor-mode guard would have denied is
    // listed too, its denials marked as monitor ones.
    assert_eq!(denied[1]["client"], "192.0.2.44");
    assert_eq!(denied[1]["denials"], 0);
    assert_eq!(denied[1]["sources"], serde_json::json!([]));
    assert_eq!(denied[1]["monitor_denials"], 20);
    assert_eq!(denied[2]["client"], "198.51.100.7");
    assert_eq!(denied[2]["denials"], 12);
    assert_eq!(denied[2]["monitor_denials"], 0);
    let users = collector.get("/api/endpoints?unauthenticated=true");
    assert_eq!(users[0]["denials"], serde_json::json!({"enumeration": 40}));
    assert_eq!(users[0]["monitor_denials"], serde_json::json!({"bots": 29}));

    let services = collector.get("/api/services");
    assert_eq!(services[0]["public_endpoints"], 3);
    assert_eq!(services[0]["zombie_endpoints"], 1);
}

fn vulnerabilities_are_ranked_by_runtime_exposure(engine: Engine) {
    let collector = Collector::on(engine, "ranking");
    report_shop_fleet(&collector);
    let ranked = collector.get("/api/vulnerabilities");
    let order: Vec<String> = ranked
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{} {} {}",
                v["id"].as_str().unwrap(),
                v["exposure"].as_str().unwrap(),
                v["matched_route"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            // Public and unauthenticated first, though neither is the most severe.
            "zap:40018 public-unauthenticated /users/{id}",
            "VULN-104 public-unauthenticated /users/{id}",
            // Then public: by severity, then by public traffic.
            "VULN-103 public /orders/{id}",
            "VULN-102 public /admin/stats",
            "zap:10021 public /admin/stats",
            "zap:90019 internal /debug/vars",
            // The critical one last: no instance ever reached it.
            "VULN-101 never /legacy/export",
        ],
        "{ranked:#}"
    );
    assert_eq!(ranked[0]["rank"], 1);
    assert_eq!(ranked[0]["severity"], "high");
    assert_eq!(ranked[0]["source"], "zap");
    assert_eq!(ranked[0]["public_unauthenticated_success"], 55);
    assert_eq!(ranked[6]["severity"], "critical");
    assert_eq!(
        collector
            .get("/api/vulnerabilities?limit=1")
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

fn a_fix_is_verified_once_no_affected_build_serves_its_endpoint(engine: Engine) {
    let name = format!("fixes-{}", engine.name());
    let collector = Collector::configure(
        &name,
        "verify_after = \"2s\"\n",
        false,
        engine.storage(&name),
        true,
    );
    let sequence = std::cell::Cell::new(0);
    // `public` requests to the vulnerable GET /orders/{id} (VULN-103, fixed in 2.4.1), served
    // just now by `instance` running `version`.
    let serve = |instance: &str, version: Option<&str>, public: u64| {
        sequence.set(sequence.get() + 1);
        let mut report = report("shop", instance, sequence.get(), sequence.get());
        report.version = version.map(str::to_string);
        let mut orders = endpoint("GET", "/orders/{id}", public);
        orders.public = public;
        orders.last_seen_ms = vigil_collector::now_ms();
        report.endpoints = vec![orders];
        assert_eq!(collector.send(FLEET_TOKEN, &report).status, 202);
    };
    let fix = || {
        let ranked = collector.get("/api/vulnerabilities");
        let entry = ranked
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == "VULN-103")
            .unwrap_or_else(|| panic!("VULN-103 not in {ranked:#}"))
            .clone();
        assert_eq!(entry["matched_route"], "/orders/{id}", "{entry:#}");
        entry["fix"].clone()
    };
    // Sorted by name: the API lists the most recently heard from first.
    let affected = |fix: &serde_json::Value| -> Vec<String> {
        let mut names: Vec<String> = fix["affected_instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{} {}", i["instance"].as_str().unwrap(), i["version"]))
            .collect();
        names.sort();
        names
    };

    serve("shop-1", Some("2.4.0"), 10);
    serve("shop-2", Some("2.4.0"), 4);
    serve("shop-3", None, 1);
    let before = fix();
    assert_eq!(before["state"], "not-deployed", "{before:#}");
    assert_eq!(before["fixed_in"], "2.4.1");
    assert!(before["deployed_ms"].is_null());
    assert_eq!(
        affected(&before),
        ["shop-1 \"2.4.0\"", "shop-2 \"2.4.0\"", "shop-3 null"]
    );
    assert_eq!(
        before["public_requests_since_fix"], 0,
        "before the fix: none"
    );

    // shop-2 runs the fix; shop-1 still serves the endpoint on the old build.
    serve("shop-2", Some("v2.4.1"), 5);
    serve("shop-1", Some("2.4.0"), 3);
    serve("shop-3", None, 2);
    let deployed = fix();
    assert_eq!(deployed["state"], "deployed", "{deployed:#}");
    assert!(deployed["deployed_ms"].as_u64().is_some());
    assert_eq!(affected(&deployed), ["shop-1 \"2.4.0\"", "shop-3 null"]);
    assert_eq!(
        deployed["public_requests_since_fix"], 5,
        "3 + 2, not the fixed build's"
    );
    assert_eq!(deployed["requests_since_fix"], 5);

    // Every instance upgrades; the fix is verified once 2 s pass with no affected request.
    serve("shop-1", Some("2.4.1"), 1);
    serve("shop-3", Some("2.5.0"), 1);
    let upgraded = fix();
    assert_eq!(
        upgraded["state"], "deployed",
        "the last affected request is too recent"
    );
    assert!(affected(&upgraded).is_empty(), "{upgraded:#}");
    let verifiable_at = upgraded["verifiable_at_ms"].as_u64().unwrap();
    assert_eq!(
        verifiable_at,
        upgraded["last_affected_request_ms"].as_u64().unwrap() + 2_000
    );
    while vigil_collector::now_ms() <= verifiable_at {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let verified = fix();
    assert_eq!(verified["state"], "verified", "{verified:#}");
    assert_eq!(
        verified["public_requests_since_fix"], 5,
        "the evidence stays"
    );

    let versions = collector.get("/api/versions?service=shop");
    let instances: Vec<String> = versions["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{} {}", i["instance"].as_str().unwrap(), i["version"]))
        .collect();
    assert_eq!(
        instances,
        ["shop-1 \"2.4.1\"", "shop-2 \"v2.4.1\"", "shop-3 \"2.5.0\""]
    );
    let mut releases: Vec<&str> = versions["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    releases.sort();
    assert_eq!(releases, ["2.4.0", "2.4.1", "2.5.0", "v2.4.1"]);

    let endpoint_page = page(
        &collector,
        "/endpoint?service=shop&method=GET&route=%2Forders%2F%7Bid%7D",
    );
    assert!(
        endpoint_page.contains("data-fix=\"verified\""),
        "{endpoint_page}"
    );
    assert!(endpoint_page.contains("No instance runs an affected version."));
    let dashboard = page(&collector, "/");
    assert!(dashboard.contains("badge fix-verified"), "{dashboard}");
}

fn findings_repeated_in_one_report_fold_into_one_record(engine: Engine) {
    let collector = Collector::on(engine, "repeated-findings");
    let mut shipped = report("shop", "shop-1", 1, 1);
    shipped.endpoints = vec![endpoint("GET", "/users/{id}", 5)];
    let on = key("GET", "/users/{id}");
    let mut later = finding(
        "client-denied",
        "guard:rate",
        on.clone(),
        Some("mallory"),
        2,
    );
    later.at_ms += 50;
    later.detail = "the later detail".into();
    shipped.findings = vec![
        finding(
            "client-denied",
            "guard:rate",
            on.clone(),
            Some("mallory"),
            3,
        ),
        later,
        finding("client-denied", "guard:rate", on, Some("alice"), 1),
    ];
    assert_eq!(collector.send(FLEET_TOKEN, &shipped).status, 202);
    let findings = collector.get("/api/findings");
    let mallory: Vec<&serde_json::Value> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["client"] == "mallory")
        .collect();
    assert_eq!(mallory.len(), 1, "{findings:#}");
    assert_eq!(mallory[0]["count"], 5);
    assert_eq!(mallory[0]["detail"], "the later detail");
    assert_eq!(mallory[0]["at_ms"], t0() + 1_950);
    assert_eq!(mallory[0]["first_at_ms"], t0() + 1_900);
}

/// The section `id` of a page, from its opening tag to its end.
fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("<section id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id} in {page}"));
    let end = page[start..].find("</section>").unwrap() + start;
    &page[start..end]
}

/// The number a dashboard tile shows.
fn tile(page: &str, id: &str) -> usize {
    let start = page
        .find(&format!("id=\"tile-{id}\""))
        .unwrap_or_else(|| panic!("no tile {id} in {page}"));
    let rest = &page[start..];
    let number = &rest[rest.find("<b>").unwrap() + 3..rest.find("</b>").unwrap()];
    number
        .parse()
        .unwrap_or_else(|_| panic!("tile {id}: {number:?}"))
}

/// The count a table's heading shows, and the rows it lists.
fn table_count(page: &str, id: &str) -> (usize, usize) {
    let section = section(page, id);
    let marker = format!("id=\"count-{id}\">(");
    let start = section
        .find(&marker)
        .unwrap_or_else(|| panic!("no count in {section}"))
        + marker.len();
    let count = section[start..start + section[start..].find(')').unwrap()]
        .parse()
        .unwrap();
    (count, section.matches("<tr data-endpoint>").count())
}

/// Reports a second service, billing, through the fleet token: no OpenAPI document, so its
/// endpoints are shadow endpoints, one of them public.
fn report_billing(collector: &Collector) {
    let mut r = report("billing", "billing-a", 1, 1);
    let mut invoices = endpoint("GET", "/invoices/{id}", 50);
    invoices.public = 20;
    invoices.authenticated = 50;
    invoices.credentials.api_key = 50;
    invoices.shadow = true;
    let mut health = endpoint("GET", "/status", 7);
    health.shadow = true;
    r.endpoints = vec![invoices, health];
    r.findings = vec![finding(
        "shadow-endpoint",
        "sidecar",
        key("GET", "/invoices/{id}"),
        None,
        1,
    )];
    let response = collector.send(FLEET_TOKEN, &r);
    assert_eq!(response.status, 202, "{}", response.text());
}

/// `GET path` on the API listener, as text, with its status checked.
fn page(collector: &Collector, path: &str) -> String {
    let response = http(collector.api, "GET", path, &[], b"").unwrap();
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{path}"
    );
    response.text()
}

#[test]
fn the_dashboards_counts_are_the_apis_for_every_scope() {
    let collector = Collector::start("counts");
    report_shop_fleet(&collector);
    report_billing(&collector);
    let length = |path: &str| collector.get(path).as_array().unwrap().len();
    // Reports were made an hour ago: 30m keeps only what was never reached (zombies).
    for scope in [
        "",
        "service=shop",
        "service=billing",
        "service=nobody",
        "since=24h",
        "since=30m",
        "service=shop&since=30m",
        "service=billing&since=7d",
    ] {
        let html = page(&collector, &format!("/?{scope}"));
        let api = |path: &str, filter: &str| {
            let query = [filter, scope]
                .into_iter()
                .filter(|q| !q.is_empty())
                .collect::<Vec<_>>()
                .join("&");
            length(&format!("{path}?{query}"))
        };
        for (id, table, filter) in [
            ("public", Some("public-endpoints"), "public=true"),
            ("unauthenticated", None, "exposure=public-unauthenticated"),
            ("internal", Some("internal-endpoints"), "internal=true"),
            ("shadow", Some("shadow-endpoints"), "shadow=true"),
            ("zombie", Some("zombie-endpoints"), "zombie=true"),
        ] {
            let expected = api("/api/endpoints", filter);
            assert_eq!(tile(&html, id), expected, "tile {id} for {scope:?}");
            if let Some(table) = table {
                assert_eq!(
                    table_count(&html, table),
                    (expected, expected),
                    "table {table} for {scope:?}"
                );
            }
        }
        let findings = api("/api/findings", "denials=false&limit=1000");
        assert_eq!(tile(&html, "findings"), findings, "findings for {scope:?}");
        let query = if scope.is_empty() {
            "limit=1000".to_string()
        } else {
            format!("limit=1000&{scope}")
        };
        let ranked = collector.get(&format!("/api/vulnerabilities?{query}"));
        let on_public = ranked
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["exposure"] == "public-unauthenticated" || v["exposure"] == "public")
            .count();
        assert_eq!(
            tile(&html, "vulnerable"),
            on_public,
            "vulnerable for {scope:?}"
        );
    }
    // The figures themselves, so that agreeing on nothing cannot pass.
    let all = page(&collector, "/");
    assert_eq!(
        [
            "public",
            "unauthenticated",
            "internal",
            "shadow",
            "zombie",
            "findings"
        ]
        .map(|id| tile(&all, id)),
        [4, 1, 1, 3, 1, 4]
    );
    let billing = page(&collector, "/?service=billing");
    assert_eq!(tile(&billing, "shadow"), 2);
    assert_eq!(tile(&billing, "zombie"), 0);
    assert!(
        billing.contains("service billing, 1 instance(s) reporting"),
        "{billing}"
    );
    let later = page(&collector, "/?since=30m");
    assert_eq!((tile(&later, "public"), tile(&later, "zombie")), (0, 1));
    assert_eq!(tile(&later, "findings"), 0);
    assert!(
        later.contains("<option value=\"30m\" selected>last 30m</option>"),
        "{later}"
    );
    assert!(later.contains("id=\"scope-note\""), "{later}");
    assert_eq!(length("/api/clients/denied?since=30m"), 0);
    assert_eq!(length("/api/clients/denied?since=24h"), 3);
    assert_eq!(length("/api/findings?since=30m"), 0);

    for bad in [
        "/?since=yesterday",
        "/?color=red",
        "/api/endpoints?since=-1h",
        "/api/endpoints?exposure=very",
        "/api/findings?denials=perhaps",
        "/endpoint?service=shop&method=GET",
        "/endpoint?service=shop&method=GET&route=/users/{id}&since=soon",
    ] {
        let response = http(collector.api, "GET", bad, &[], b"").unwrap();
        assert_eq!(response.status, 400, "{bad}: {}", response.text());
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
    }
    let response = http(
        collector.api,
        "GET",
        "/endpoint?service=shop&method=GET&route=/nowhere",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(response.text().contains("/nowhere"), "{}", response.text());
}

#[test]
fn the_dashboard_shows_real_data_in_a_browser() {
    let collector = Collector::start("dashboard");
    report_shop_fleet(&collector);
    report_billing(&collector);
    let url = format!("http://{}/", collector.api);

    let dom = browser::dump_dom(&url);
    let in_dom = |id: &str| section(&dom, id);
    assert!(dom.contains("<title>Vigil — fleet exposure</title>"));
    assert!(
        dom.contains("2 service(s), 3 instance(s) reporting · all the collector keeps"),
        "{dom}"
    );
    assert_eq!(tile(&dom, "public"), 4);
    assert_eq!(tile(&dom, "unauthenticated"), 1);
    assert_eq!(tile(&dom, "internal"), 1);
    assert_eq!(tile(&dom, "shadow"), 3);
    assert_eq!(tile(&dom, "zombie"), 1);
    let form = &dom[dom.find("<form class=\"scope\"").unwrap()..];
    let form = &form[..form.find("</form>").unwrap()];
    for option in [
        "<option value=\"\">all services</option>",
        "<option value=\"billing\">billing</option>",
        "<option value=\"shop\">shop</option>",
        "<option value=\"24h\">last 24 hours</option>",
    ] {
        assert!(form.contains(option), "{option} in {form}");
    }

    let vulnerabilities = in_dom("vulnerabilities");
    let first = &vulnerabilities[vulnerabilities.find("data-rank=\"1\"").unwrap()..];
    let first = &first[..first.find("</tr>").unwrap()];
    assert!(
        first.contains("zap:40018")
            && first.contains("SQL Injection")
            && first.contains("/users/{id}")
            && first.contains("public, unauthenticated"),
        "{first}"
    );
    assert!(vulnerabilities.contains("VULN-101") && vulnerabilities.contains("never reached"));

    let public = in_dom("public-endpoints");
    for route in [
        "/users/{id}",
        "/orders/{id}",
        "/admin/stats",
        "/invoices/{id}",
    ] {
        assert!(public.contains(route), "{route} in {public}");
    }
    assert!(!public.contains("/debug/vars"), "internal only: {public}");
    assert!(public.contains("internal-only"));
    assert!(
        public.contains(
            "href=\"/endpoint?service=shop&amp;method=GET&amp;route=%2Fusers%2F%7Bid%7D\""
        ),
        "{public}"
    );
    let internal = in_dom("internal-endpoints");
    assert!(
        internal.contains("/admin/stats") && !internal.contains("/users/"),
        "{internal}"
    );
    let shadow = in_dom("shadow-endpoints");
    for route in ["/debug/vars", "/invoices/{id}", "/status"] {
        assert!(shadow.contains(route), "{route} in {shadow}");
    }
    let zombie = in_dom("zombie-endpoints");
    assert!(
        zombie.contains("/legacy/export") && zombie.contains("never"),
        "{zombie}"
    );

    let findings = in_dom("findings");
    assert!(findings.contains("internal-reached-publicly") && findings.contains("shadow-endpoint"));
    assert!(
        !findings.contains("client-denied") && !findings.contains("client-would-deny"),
        "denials have their own table"
    );
    let denied = in_dom("denied-clients");
    assert!(
        denied.contains("203.0.113.66") && denied.contains(">45<"),
        "{denied}"
    );
    assert!(
        denied.contains("192.0.2.44") && denied.contains("would deny (monitor)"),
        "{denied}"
    );
    assert!(
        denied.contains("guard:bots") && denied.contains(">monitor<"),
        "{denied}"
    );
    assert!(public.contains("29 would deny (monitor)"), "{public}");

    // One service over a range: the selector keeps both, every table follows.
    let shop = browser::dump_dom(&format!("{url}?service=shop&since=24h"));
    assert!(
        shop.contains("<option value=\"shop\" selected=\"\">shop</option>"),
        "{shop}"
    );
    assert!(
        shop.contains("<option value=\"24h\" selected=\"\">last 24 hours</option>"),
        "{shop}"
    );
    assert!(
        shop.contains("service shop, 2 instance(s) reporting · last 24h"),
        "{shop}"
    );
    assert_eq!((tile(&shop, "public"), tile(&shop, "shadow")), (3, 1));
    assert!(!shop.contains("/invoices/{id}"), "billing left out: {shop}");
    assert!(
        section(&shop, "public-endpoints").contains("route=%2Fusers%2F%7Bid%7D&amp;since=24h\""),
        "links keep the range"
    );

    // The endpoint page: clients, statuses, denials per guard, findings, first and last seen.
    let endpoint_url = format!(
        "http://{}/endpoint?service=shop&method=GET&route=%2Fusers%2F%7Bid%7D&since=24h",
        collector.api
    );
    let users = browser::dump_dom(&endpoint_url);
    let facts = section(&users, "summary");
    assert!(facts.contains("id=\"requests\">150<"), "{facts}");
    assert!(facts.contains("id=\"public-requests\">130<"), "{facts}");
    assert!(
        facts.contains("public, unauthenticated") && facts.contains("documented"),
        "{facts}"
    );
    let clients = section(&users, "clients");
    let estimate = &clients[clients.find("id=\"public-clients\">").unwrap() + 20..];
    let estimate: u64 = estimate[..estimate.find('<').unwrap()].parse().unwrap();
    assert!(
        (57..=63).contains(&estimate),
        "about 60 distinct clients: {estimate}"
    );
    assert!(
        clients.contains("<td>bearer token</td><td class=\"n\">60</td>"),
        "{clients}"
    );
    assert!(
        clients.contains("<td>none</td><td class=\"n\">90</td>"),
        "{clients}"
    );
    assert!(
        clients.contains("203.0.113.66") && clients.contains("192.0.2.44"),
        "{clients}"
    );
    let statuses = section(&users, "statuses");
    assert!(statuses.contains("<td class=\"n\">150</td>"), "{statuses}");
    let denials = section(&users, "denials");
    assert!(
        denials.contains("<td>enumeration</td><td class=\"n\">40</td><td class=\"n\">0</td>")
            && denials.contains("<td>bots</td><td class=\"n\">0</td><td class=\"n\">29</td>"),
        "{denials}"
    );
    let on_it = section(&users, "endpoint-findings");
    assert!(
        on_it.contains("client-denied") && on_it.contains("client-would-deny"),
        "{on_it}"
    );
    assert!(
        !on_it.contains("internal-reached-publicly"),
        "another endpoint's: {on_it}"
    );
    assert!(section(&users, "endpoint-vulnerabilities").contains("zap:40018"));
    let over_time = section(&users, "over-time");
    assert!(
        over_time.contains("keeps no series over time"),
        "{over_time}"
    );
    assert!(
        users.contains("id=\"first-seen\">") && users.contains("GMT"),
        "{users}"
    );
    assert!(
        users.contains("id=\"back\" href=\"/?service=shop&amp;since=24h\""),
        "{users}"
    );

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for (name, url, height, least) in [
        ("collector-dashboard.png", url.clone(), 2600, 80_000),
        (
            "collector-dashboard-shop.png",
            format!("{url}?service=shop&since=24h"),
            2600,
            80_000,
        ),
        ("collector-endpoint.png", endpoint_url.clone(), 1800, 40_000),
    ] {
        let png = target.join(name);
        browser::screenshot(&url, &png, 1280, height);
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(
            browser::png_size(&bytes),
            Some((1280, height)),
            "{}",
            png.display()
        );
        assert!(
            bytes.len() > least,
            "{name}: a page with content, not a blank one: {} bytes",
            bytes.len()
        );
        println!("screenshot: {}", png.display());
    }
}

/// Names a sidecar could send that would be markup if printed as they are.
const HOSTILE_SERVICE: &str = "<script>alert(\"svc\")</script>'";
const HOSTILE_ROUTE: &str = "/q/<script>alert('r')</script>\"x";

#[test]
fn reported_names_cannot_inject_markup_into_the_pages() {
    let collector = Collector::start("hostile");
    let mut r = report(HOSTILE_SERVICE, "<b>i</b>", 1, 1);
    let mut delta = endpoint("GET", HOSTILE_ROUTE, 5);
    delta.public = 5;
    delta.shadow = true;
    delta.internal_only = true;
    delta
        .denials
        .insert("<img src=x onerror=alert(1)>".into(), 2);
    r.endpoints = vec![delta];
    r.findings = vec![Finding {
        detail: "<iframe src=\"//evil\"></iframe>".into(),
        ..finding(
            "<svg onload=alert(1)>",
            "guard:\"><script>",
            key("GET", HOSTILE_ROUTE),
            Some("\"><script>alert(2)</script>"),
            1,
        )
    }];
    let response = collector.send(FLEET_TOKEN, &r);
    assert_eq!(response.status, 202, "{}", response.text());

    let encode = url_encode;
    let endpoint_path = format!(
        "/endpoint?service={}&method=GET&route={}",
        encode(HOSTILE_SERVICE),
        encode(HOSTILE_ROUTE)
    );
    for path in [
        "/".to_string(),
        format!("/?service={}", encode(HOSTILE_SERVICE)),
        endpoint_path.clone(),
    ] {
        let html = page(&collector, &path);
        for raw in ["<script", "<img", "<svg", "<iframe", "<b>i"] {
            assert!(!html.contains(raw), "{path}: {raw} unescaped in {html}");
        }
        assert!(
            html.contains("&lt;script&gt;alert(&quot;svc&quot;)&lt;/script&gt;&#39;"),
            "{path}: {html}"
        );
        assert!(
            html.contains("/q/&lt;script&gt;alert(&#39;r&#39;)&lt;/script&gt;&quot;x"),
            "{path}: {html}"
        );
    }
    // The link on the dashboard leads to the endpoint's page, however odd its name.
    let dashboard = page(&collector, "/");
    assert!(
        dashboard.contains("/endpoint?service=%3Cscript%3E"),
        "{dashboard}"
    );
    // And the browser builds no element from reported text.
    let dom = browser::dump_dom(&format!("http://{}{endpoint_path}", collector.api));
    for raw in ["<script", "<img", "<svg", "<iframe"] {
        assert!(!dom.contains(raw), "{raw} became an element: {dom}");
    }
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
}

/// Percent-encodes `text` for a query string value.
fn url_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Standard base64 with padding, as `Authorization: Basic` carries it.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const API_TOKEN: &str = "dashboard-token-0123456789";
const API_USER: &str = "security";
const API_PASSWORD: &str = "correct-horse-battery-staple";

#[test]
fn a_protected_api_asks_for_its_credential_on_every_read_route() {
    let collector = Collector::configure_api(
        "protected",
        &format!("[api.basic_auth]\nusername = \"{API_USER}\"\npassword = \"{API_PASSWORD}\"\n"),
        "0.0.0.0",
        &format!("token = \"{API_TOKEN}\"\n"),
        true,
        Storage::Sqlite,
        true,
    );
    report_shop_fleet(&collector);
    let bearer = format!("Bearer {API_TOKEN}");
    let basic = format!(
        "Basic {}",
        base64_encode(format!("{API_USER}:{API_PASSWORD}").as_bytes())
    );
    let wrong_basic = format!(
        "Basic {}",
        base64_encode(format!("{API_USER}:{API_TOKEN}").as_bytes())
    );
    for path in [
        "/",
        "/?service=shop&since=24h",
        "/endpoint?service=shop&method=GET&route=%2Fusers%2F%7Bid%7D",
        "/api/services",
        "/api/endpoints?public=true",
        "/api/findings",
        "/api/clients/denied",
        "/api/vulnerabilities",
        "/metrics",
    ] {
        for refused in [
            None,
            Some("Bearer not-the-token-at-all"),
            Some(wrong_basic.as_str()),
        ] {
            let headers: Vec<(&str, &str)> =
                refused.iter().map(|v| ("Authorization", *v)).collect();
            let response = http(collector.api, "GET", path, &headers, b"").unwrap();
            assert_eq!(response.status, 401, "{path} with {refused:?}");
            let challenges: Vec<&str> = response
                .headers
                .iter()
                .filter(|(n, _)| n == "www-authenticate")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(
                challenges,
                [
                    "Bearer realm=\"vigil collector\"",
                    "Basic realm=\"vigil collector\", charset=\"UTF-8\""
                ],
                "{path}"
            );
            assert!(
                !response.text().contains("203.0.113"),
                "nothing leaks: {path}"
            );
        }
        for accepted in [&bearer, &basic] {
            let response = http(
                collector.api,
                "GET",
                path,
                &[("Authorization", accepted.as_str())],
                b"",
            )
            .unwrap();
            assert_eq!(response.status, 200, "{path}: {}", response.text());
        }
    }
    // Probes carry no credential; a write is refused as unauthenticated before anything else.
    let health = http(collector.api, "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(health.status, 200);
    let post = http(collector.api, "POST", "/api/services", &[], b"").unwrap();
    assert_eq!(post.status, 401);
    assert!(
        !collector
            .logged()
            .contains("api.address is not a loopback address"),
        "protected, so no warning: {}",
        collector.logged()
    );
}

#[test]
fn an_open_api_off_loopback_is_warned_about() {
    let collector =
        Collector::configure_api("open-api", "", "0.0.0.0", "", true, Storage::Sqlite, true);
    let logged = collector.logged();
    assert!(
        logged.contains("api.address is not a loopback address") && logged.contains("api.token"),
        "{logged}"
    );
    let local = Collector::start_logging("loopback-api", "");
    assert!(
        !local
            .logged()
            .contains("api.address is not a loopback address"),
        "{}",
        local.logged()
    );
}

#[test]
fn configuration_errors_name_the_file_and_key() {
    let dir = temp_dir("collector-config");
    let bad = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(vigil_tests::process::vigil_binary())
            .args(["collect", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = bad("none.toml", "[listen]\naddress = \"127.0.0.1:0\"\n");
    assert_eq!(code, Some(64));
    assert!(err.contains("none.toml: token: no [[token]]"), "{err}");
    let (code, err) = bad(
        "vulns.toml",
        "[[token]]\ntoken = \"0123456789abcdef\"\n[vulnerabilities]\nknown = [\"missing.json\"]\n",
    );
    assert_eq!(code, Some(64));
    assert!(
        err.contains("vulns.toml: vulnerabilities.known[0]") && err.contains("missing.json"),
        "{err}"
    );
    std::fs::write(
        dir.join("bad.json"),
        r#"[{"method":"GET","route":"/a","id":"X","severity":"severe"}]"#,
    )
    .unwrap();
    let (code, err) = bad(
        "severity.toml",
        "[[token]]\ntoken = \"0123456789abcdef\"\n[vulnerabilities]\nknown = [\"bad.json\"]\n",
    );
    assert_eq!(code, Some(64));
    assert!(err.contains("bad.json") && err.contains("severe"), "{err}");
    let (code, err) = bad(
        "both.toml",
        "[[token]]\ntoken = \"0123456789abcdef\"\n\
         [storage]\npath = \"c.db\"\nurl = \"postgres://vigil@127.0.0.1/vigil\"\n",
    );
    assert_eq!(code, Some(64));
    assert!(
        err.contains("both.toml: storage: both storage.path (SQLite) and storage.url"),
        "{err}"
    );

    let help = std::process::Command::new(vigil_tests::process::vigil_binary())
        .args(["collect", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("/v1/reports") && help.contains("[[token]]"),
        "{help}"
    );
}

#[test]
fn silent_connections_do_not_hold_the_ingest_listener() {
    let mut collector = Collector::start("silent");
    let text = std::fs::read_to_string(&collector.config).unwrap();
    std::fs::write(
        &collector.config,
        text.replacen(
            "[listen]\n",
            "[listen]\nheader_read_timeout = \"500ms\"\n",
            1,
        ),
    )
    .unwrap();
    collector.crash();
    collector.launch();
    let mut silent = std::net::TcpStream::connect(collector.ingest).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut sink = Vec::new();
    let read = std::io::Read::read_to_end(&mut silent, &mut sink);
    assert!(
        read.is_ok() && started.elapsed() < std::time::Duration::from_secs(4),
        "a connection that never sent a byte was still open after {:?}: {read:?}",
        started.elapsed()
    );
}

/// The value of the sample `name` (labels included, as rendered) in a `/metrics` text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

fn metrics_count_reports_by_result_on_the_api_listener_only(engine: Engine) {
    let collector = Collector::on(engine, "metrics");
    let fresh = collector.metrics();
    for name in [
        "vigil_collector_reports_total{result=\"stored\"}",
        "vigil_collector_reports_total{result=\"duplicate\"}",
        "vigil_collector_reports_total{result=\"refused\"}",
        "vigil_collector_reports_refused_total{reason=\"unauthorized\"}",
        "vigil_collector_ingest_seconds_count",
        "vigil_collector_store_errors_total{operation=\"apply\"}",
        "vigil_collector_services",
        "vigil_collector_endpoints",
    ] {
        assert_eq!(sample(&fresh, name), 0.0, "{name} before any report");
    }
    assert_eq!(
        sample(
            &fresh,
            &format!(
                "vigil_collector_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );

    let mut shop = report("shop", "shop-1", 1, 1);
    shop.endpoints.push(endpoint("GET", "/users/{id}", 3));
    shop.endpoints.push(endpoint("POST", "/login", 1));
    assert_eq!(collector.send(SHOP_TOKEN, &shop).status, 202);
    assert_eq!(collector.send(SHOP_TOKEN, &shop).status, 200);
    assert_eq!(collector.send("not-a-known-token-0123", &shop).status, 401);
    let billing = report("billing", "billing-1", 1, 1);
    assert_eq!(collector.send(SHOP_TOKEN, &billing).status, 403);

    let text = collector.metrics();
    for (name, value) in [
        ("vigil_collector_reports_total{result=\"stored\"}", 1.0),
        ("vigil_collector_reports_total{result=\"duplicate\"}", 1.0),
        ("vigil_collector_reports_total{result=\"refused\"}", 2.0),
        (
            "vigil_collector_reports_refused_total{reason=\"unauthorized\"}",
            1.0,
        ),
        (
            "vigil_collector_reports_refused_total{reason=\"forbidden\"}",
            1.0,
        ),
        (
            "vigil_collector_reports_refused_total{reason=\"too_large\"}",
            0.0,
        ),
        ("vigil_collector_ingest_seconds_count", 4.0),
        (
            "vigil_collector_store_errors_total{operation=\"apply\"}",
            0.0,
        ),
        (
            "vigil_collector_store_errors_total{operation=\"read\"}",
            0.0,
        ),
        ("vigil_collector_services", 1.0),
        ("vigil_collector_endpoints", 2.0),
    ] {
        assert_eq!(sample(&text, name), value, "{name} in\n{text}");
    }
    assert!(sample(&text, "vigil_collector_ingest_seconds_sum") > 0.0);
    let listed = collector.get("/api/endpoints").as_array().unwrap().len();
    assert_eq!(sample(&text, "vigil_collector_endpoints"), listed as f64);

    // Retention runs once at start.
    eventually("a retention pass in the metrics", || {
        let text = collector.metrics();
        sample(&text, "vigil_collector_retention_runs_total{result=\"ok\"}") >= 1.0
    });
    let text = collector.metrics();
    assert_eq!(sample(&text, "vigil_collector_retention_last_run_ok"), 1.0);
    let last_run = sample(
        &text,
        "vigil_collector_retention_last_run_timestamp_seconds",
    );
    let now_s = (vigil_collector::now_ms() / 1_000) as f64;
    assert!(
        (now_s - 600.0..=now_s).contains(&last_run),
        "{last_run} is not a moment ago ({now_s})"
    );
    assert_eq!(
        sample(
            &text,
            "vigil_collector_retention_runs_total{result=\"failed\"}"
        ),
        0.0
    );

    // The ingest listener faces the sidecars, and perhaps more: it does not serve metrics.
    let public = http(collector.ingest, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(public.status, 404, "{}", public.text());
}

#[test]
fn logs_are_json_lines_with_plain_fields_when_asked() {
    let collector = Collector::start_logging("json-logs", "[log]\nformat = \"json\"\n");
    let report = report("billing", "billing-1", 1, 1);
    assert_eq!(
        collector.send("not-a-known-token-0123", &report).status,
        401
    );
    assert_eq!(collector.send(SHOP_TOKEN, &report).status, 403);
    eventually("both refusals and the retention pass logged", || {
        let logged = collector.logged();
        logged.matches("report refused").count() == 2 && logged.contains("retention applied")
    });
    let logged = collector.logged();
    let lines: Vec<serde_json::Value> = logged
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    for line in &lines {
        assert!(
            line["timestamp"].is_string()
                && line["level"].is_string()
                && line["target"].is_string()
                && line["fields"]["message"].is_string(),
            "{line}"
        );
    }
    let with = |message: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|line| line["fields"]["message"] == message)
            .collect()
    };

    let serving = with("the collector is serving");
    assert_eq!(serving.len(), 1, "{logged}");
    assert_eq!(serving[0]["level"], "INFO");
    assert_eq!(
        serving[0]["fields"]["ingest_address"],
        collector.ingest.to_string()
    );
    assert_eq!(
        serving[0]["fields"]["api_address"],
        collector.api.to_string()
    );
    assert!(serving[0]["fields"]["vulnerabilities"].as_u64().unwrap() > 0);

    let retention = &with("retention applied")[0]["fields"];
    for kind in ["findings", "instances", "endpoints", "keys"] {
        assert_eq!(retention[kind], 0, "{retention}");
    }

    let refused = with("report refused");
    let unauthorized = &refused[0]["fields"];
    assert_eq!(unauthorized["status"], 401, "{unauthorized}");
    assert!(unauthorized.get("token").is_none(), "{unauthorized}");
    let forbidden = &refused[1]["fields"];
    assert_eq!(forbidden["status"], 403, "{forbidden}");
    assert_eq!(forbidden["token"], "shop-sidecars");
    assert_eq!(
        forbidden["reason"],
        "token \"shop-sidecars\" may report only for service \"shop\", not \"billing\""
    );
}

#[test]
fn text_logs_are_plain_when_not_written_to_a_terminal() {
    let collector = Collector::start_logging("text-logs", "");
    eventually("the retention pass logged", || {
        collector.logged().contains("retention applied")
    });
    let logged = collector.logged();
    assert!(!logged.contains('\u{1b}'), "colour codes in {logged:?}");
    assert!(!logged.trim_start().starts_with('{'), "{logged}");
    let retention = logged
        .lines()
        .find(|line| line.contains("retention applied"))
        .unwrap();
    assert!(
        retention.contains(" INFO ")
            && retention.ends_with("retention applied findings=0 instances=0 endpoints=0 keys=0"),
        "{retention}"
    );
    assert!(!logged.contains("Pruned"), "a Debug dump in {logged}");
}

/// Retention through the store itself, with chosen times: what is older than the cut-offs
/// goes, and an instance still alive keeps recognising the keys whose ranges were pruned.
fn retention_forgets_old_data_and_still_knows_old_keys(engine: Engine) {
    let store = engine.open_store("retention");
    let at = |instance: &str, sequence: u64, when: u64, route: &str| {
        let mut r = report("shop", instance, sequence, sequence);
        let mut e = endpoint("GET", route, 2);
        (e.first_seen_ms, e.last_seen_ms) = (when, when);
        r.endpoints.push(e);
        let mut f = finding(
            "enumeration",
            "guard:enumeration",
            key("GET", route),
            None,
            1,
        );
        f.at_ms = when;
        r.findings.push(f);
        r
    };
    let apply = |r: &Report, received_ms: u64| store.apply(r, received_ms);
    assert_eq!(
        apply(&at("shop-gone", 1, 1_000, "/old"), 1_000).unwrap(),
        Applied::New
    );
    assert_eq!(
        apply(&at("shop-live", 1, 1_500, "/live"), 1_500).unwrap(),
        Applied::New
    );
    assert_eq!(
        apply(&at("shop-live", 2, 5_000, "/live"), 5_000).unwrap(),
        Applied::New
    );

    let pruned = store
        .prune(Cutoffs {
            findings_ms: 3_000,
            instances_ms: 3_000,
            endpoints_ms: 3_000,
        })
        .unwrap();
    assert_eq!(
        (
            pruned.findings,
            pruned.instances,
            pruned.endpoints,
            pruned.keys
        ),
        (1, 1, 1, 2),
        "the finding on /old, shop-gone, /old, and the keys 1-1 of both instances: {pruned:?}"
    );
    let endpoints = store.endpoints(&EndpointQuery::default()).unwrap();
    let routes: Vec<&str> = endpoints.iter().map(|e| e.route.as_str()).collect();
    assert_eq!(routes, ["/live"]);
    assert_eq!(endpoints[0].requests, 4);
    assert_eq!(endpoints[0].instances, 1);
    let services = store.services().unwrap();
    assert_eq!((services[0].instances, services[0].findings), (1, 1));
    assert_eq!(store.totals().unwrap().endpoints, 1);

    // shop-live's pruned key is still known; a range across it cannot be told apart.
    let late = at("shop-live", 1, 1_500, "/live");
    assert_eq!(apply(&late, 6_000).unwrap(), Applied::Duplicate);
    let mut across = late.clone();
    across.sequence.last = 2;
    match apply(&across, 6_000) {
        Err(StoreError::Conflict {
            applied_first,
            applied_last,
            ..
        }) => assert_eq!((applied_first, applied_last), (0, 1)),
        other => panic!("a range across the pruned keys: {other:?}"),
    }
    assert_eq!(
        apply(&at("shop-live", 2, 5_000, "/live"), 6_000).unwrap(),
        Applied::Duplicate
    );
    assert_eq!(
        apply(&at("shop-live", 3, 6_000, "/live"), 6_000).unwrap(),
        Applied::New
    );
    // A forgotten instance starts afresh.
    assert_eq!(
        apply(&at("shop-gone", 1, 1_000, "/old"), 6_000).unwrap(),
        Applied::New
    );
    let endpoints = store.endpoints(&EndpointQuery::default()).unwrap();
    assert_eq!(endpoints.len(), 2);
    let services = store.services().unwrap();
    assert_eq!((services[0].instances, services[0].reports), (2, 4));
}

#[test]
fn collectors_sharing_postgres_count_a_report_retried_on_the_other_once() {
    const INSTANCES: u64 = 20;
    const REPORTS_EACH: u64 = 3;
    let url = PostgresServer::shared().database("collector_shared");
    let mut collectors = [
        Collector::configure("shared-a", "", false, Storage::Postgres(url.clone()), false),
        Collector::configure("shared-b", "", false, Storage::Postgres(url), false),
    ];
    // Started together, on an empty database: both apply the migrations, one after the other.
    for collector in &mut collectors {
        collector.spawn();
    }
    for collector in &collectors {
        collector.wait_ready();
    }
    let [a, b] = &collectors;

    let mut first = report("shop", "shop-0", 1, 1);
    first.endpoints.push(endpoint("GET", "/users/{id}", 5));
    let applied = a.send(SHOP_TOKEN, &first);
    assert_eq!(applied.status, 202, "{}", applied.text());
    // The acknowledgement was lost: the sidecar retries, and reaches the other collector.
    let retried = b.send(SHOP_TOKEN, &first);
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.json()["status"], "duplicate");

    // Reporters spread over both collectors, each report retried on the other one, racing.
    std::thread::scope(|scope| {
        for i in 1..=INSTANCES {
            let collectors = &collectors;
            scope.spawn(move || {
                for sequence in 1..=REPORTS_EACH {
                    let mut r = report("shop", &format!("shop-{i}"), sequence, sequence);
                    r.endpoints.push(endpoint("GET", "/users/{id}", i));
                    r.endpoints.push(endpoint("POST", "/login", 1));
                    let (to, retry) = if (i + sequence) % 2 == 0 {
                        (0, 1)
                    } else {
                        (1, 0)
                    };
                    let response = collectors[to].send(SHOP_TOKEN, &r);
                    assert_eq!(
                        response.status,
                        202,
                        "shop-{i} #{sequence}: {}",
                        response.text()
                    );
                    let response = collectors[retry].send(SHOP_TOKEN, &r);
                    assert_eq!(
                        response.status,
                        200,
                        "shop-{i} #{sequence}: {}",
                        response.text()
                    );
                }
            });
        }
    });

    let users = 5 + (1..=INSTANCES).sum::<u64>() * REPORTS_EACH;
    for collector in [a, b] {
        let endpoints = collector.get("/api/endpoints?service=shop");
        assert_eq!(
            endpoint_json(&endpoints, "GET", "/users/{id}")["requests"],
            users
        );
        assert_eq!(
            endpoint_json(&endpoints, "POST", "/login")["requests"],
            INSTANCES * REPORTS_EACH
        );
        assert_eq!(
            endpoint_json(&endpoints, "GET", "/users/{id}")["instances"],
            INSTANCES + 1
        );
        let services = collector.get("/api/services");
        assert_eq!(services[0]["reports"], 1 + INSTANCES * REPORTS_EACH);
    }
    assert_eq!(
        a.stored_rows()["applied"] as u64,
        1 + INSTANCES * REPORTS_EACH
    );
}

/// Starts `vigil collect` on the PostgreSQL at `url`, expecting it to stop at once with 64;
/// what it wrote to standard error.
fn failed_start(name: &str, url: &str) -> String {
    let path = temp_dir(name).join("collector.toml");
    std::fs::write(
        &path,
        format!("[storage]\nurl = \"{url}\"\n[[token]]\ntoken = \"0123456789abcdef\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(vigil_tests::process::vigil_binary())
        .args(["collect", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{err}");
    err
}

#[test]
fn an_unreachable_postgres_stops_the_collector_at_start_naming_the_key() {
    let port = free_port();
    let err = failed_start(
        "collector-no-postgres",
        &format!("postgres://vigil:not-shown@127.0.0.1:{port}/vigil"),
    );
    assert!(
        err.contains("collector.toml (storage.url)")
            && err.contains(&format!("postgres://vigil:***@127.0.0.1:{port}/vigil")),
        "{err}"
    );
    assert!(!err.contains("not-shown"), "the password in {err}");
}

#[test]
fn postgres_over_tls_is_verified_with_the_ca_configured() {
    let ca = vigil_tests::pki::TestCa::new("database CA");
    let server = PostgresServer::start_tls("tls", &ca.server(&["localhost"]));
    // The certificate names localhost, the name the URL gives.
    let url = server
        .database("collector_tls")
        .replace("127.0.0.1", "localhost")
        + "?sslmode=require";
    let files = temp_dir("collector-postgres-tls-ca");
    let trusted = ca.write(&files, "database-ca");
    let collector = Collector::configure(
        "postgres-tls",
        &format!("[storage.tls]\nca = \"{}\"\n", trusted.display()),
        false,
        Storage::Postgres(url.clone()),
        true,
    );
    let mut shipped = report("shop", "shop-1", 1, 1);
    shipped.endpoints = vec![endpoint("GET", "/orders", 3)];
    assert_eq!(collector.send(FLEET_TOKEN, &shipped).status, 202);
    assert_eq!(
        endpoint_json(&collector.get("/api/endpoints"), "GET", "/orders")["requests"],
        3
    );
    // Every connection of the collector is encrypted.
    let mut admin = server.connect("postgres").unwrap();
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid
             WHERE a.application_name = 'vigil-collector'",
            &[],
        )
        .unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|row| row.get::<_, bool>(0)), "{rows:?}");
    drop(collector);

    // Without the CA, the system's roots do not know the certificate: the start fails,
    // naming the key and the cause.
    let err = failed_start("collector-postgres-tls-untrusted", &url);
    assert!(
        err.contains("collector.toml (storage.url)") && err.contains("certificate"),
        "{err}"
    );
}
