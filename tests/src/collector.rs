//! A `vigil collect` process for tests that need a collector holding data: its own directory,
//! database and loopback ports, reports sent as sidecars send them, and small builders of
//! reports.

use crate::process::{eventually, free_port, http, temp_dir, Process, Response};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use vigil_report::{
    Dropped, EndpointDelta, EndpointKey, Finding, Period, Report, SequenceRange, SCHEMA,
};

/// The fleet token every [`CollectorProcess`] accepts.
pub const TOKEN: &str = "fleet-token-0123456789";

/// A running `vigil collect`, stopped when dropped.
pub struct CollectorProcess {
    process: Option<Process>,
    /// Its directory: configuration, database, log.
    pub dir: PathBuf,
    config: PathBuf,
    /// The ingest listener.
    pub ingest: SocketAddr,
    /// The API listener.
    pub api: SocketAddr,
    log: PathBuf,
}

impl CollectorProcess {
    /// Starts a collector named `name` with `extra` appended to its configuration; its
    /// standard error goes to a file [`CollectorProcess::logged`] reads.
    pub fn start(name: &str, extra: &str) -> CollectorProcess {
        let dir = temp_dir(&format!("collector-{name}"));
        let (ingest, api) = (free_port(), free_port());
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\naddress = \"127.0.0.1:{ingest}\"\n\
                 [api]\naddress = \"127.0.0.1:{api}\"\n\
                 [storage]\npath = \"collector.db\"\n\
                 [[token]]\nname = \"fleet\"\ntoken = \"{TOKEN}\"\n{extra}"
            ),
        )
        .unwrap();
        let mut collector = CollectorProcess {
            process: None,
            log: dir.join("stderr.log"),
            dir,
            config,
            ingest: ([127, 0, 0, 1], ingest).into(),
            api: ([127, 0, 0, 1], api).into(),
        };
        collector.launch();
        collector
    }

    fn launch(&mut self) {
        let args = ["collect", "--config", self.config.to_str().unwrap()];
        self.process = Some(Process::vigil_logging_to(&args, &self.log));
        for addr in [self.ingest, self.api] {
            eventually("the collector to listen", || {
                http(addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
            });
        }
    }

    /// Stops it with SIGTERM and starts it again on the same database (its log starts anew).
    pub fn restart(&mut self) {
        let code = self.process.take().unwrap().signal_and_wait("TERM");
        assert_eq!(code, Some(0), "the collector exits 0 on SIGTERM");
        self.launch();
    }

    /// The API's base URL, as `vigil exposure --collector` takes it.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// What it has logged since it last started.
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// POSTs `report` as a sidecar does: gzip JSON, bearer token, idempotency key.
    pub fn send(&self, report: &Report) -> Response {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder
            .write_all(&serde_json::to_vec(report).unwrap())
            .unwrap();
        let body = encoder.finish().unwrap();
        let auth = format!("Bearer {TOKEN}");
        let key = report.idempotency_key();
        http(
            self.ingest,
            "POST",
            "/v1/reports",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
                ("Idempotency-Key", key.as_str()),
            ],
            &body,
        )
        .unwrap()
    }

    /// Sends `report`, asserting that it is applied (202).
    pub fn apply(&self, report: &Report) {
        let response = self.send(report);
        assert_eq!(response.status, 202, "report refused: {}", response.text());
    }

    /// `GET path` on the API listener, as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let response = http(self.api, "GET", path, &[], b"").unwrap();
        assert_eq!(response.status, 200, "GET {path}: {}", response.text());
        response.json()
    }

    /// The value of the sample `series` (name and labels as rendered) in `/metrics`.
    pub fn metric(&self, series: &str) -> f64 {
        let response = http(self.api, "GET", "/metrics", &[], b"").unwrap();
        let text = response.text();
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok())?
            })
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    }
}

/// A time an hour before the test ran, ms since the Unix epoch; reported times are offsets
/// from it, so retention (which counts from now) keeps them.
pub fn t0() -> u64 {
    static T0: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| vigil_collector::now_ms() - 3_600_000)
}

/// An empty report of `service` from `instance` with sequence numbers `first..=last`.
pub fn report(service: &str, instance: &str, first: u64, last: u64) -> Report {
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

/// `requests` internal requests to `METHOD route`, answered 2xx.
pub fn endpoint(method: &str, route: &str, requests: u64) -> EndpointDelta {
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

/// `requests` public requests to `METHOD route`, answered 2xx; `authenticated` of them carry a
/// credential.
pub fn public_endpoint(
    method: &str,
    route: &str,
    requests: u64,
    authenticated: u64,
) -> EndpointDelta {
    let mut delta = endpoint(method, route, requests);
    delta.public = requests;
    delta.authenticated = authenticated;
    delta.unauthenticated_success = requests - authenticated;
    delta.public_unauthenticated_success = requests - authenticated;
    delta
}

/// `METHOD route` as a report names an endpoint.
pub fn key(method: &str, route: &str) -> EndpointKey {
    EndpointKey {
        method: method.into(),
        route: route.into(),
    }
}

/// A finding of `kind` by `source` on `on`.
pub fn finding(kind: &str, source: &str, on: EndpointKey, client: Option<&str>) -> Finding {
    Finding {
        kind: kind.into(),
        source: source.into(),
        endpoint: Some(on),
        detail: format!("{kind} seen"),
        client: client.map(str::to_string),
        at_ms: t0() + 1_900,
        count: 1,
    }
}
