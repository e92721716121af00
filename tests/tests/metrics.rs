//! `/metrics` of a running sidecar, read by Prometheus's own parser in both text formats: every
//! family is there from the start with its type, and allowed, denied, monitored and failed
//! requests move the series they should.

use http::StatusCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vigil_tests::guards;
use vigil_tests::harness::{guard_table, send, start_with_upstream, Proxy};
use vigil_tests::prometheus::Exposition;

/// The upstream doubles as the collector: it answers the reporter's POSTs with 200.
const BASE: &str = r#"
[upstream]
url = "{upstream}"
timeout = "1s"
[report]
collector = "{upstream}"
service = "shop"
interval = "100ms"
spool_dir = "spool"
"#;

/// What Prometheus 3 sends by default.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

const VERDICTS: [&str; 4] = ["allowed", "monitored", "denied", "error"];

/// Families as the OpenMetrics parser names them, with their types.
const FAMILIES: [(&str, &str); 21] = [
    ("vigil_requests", "counter"),
    ("vigil_request_duration_seconds", "histogram"),
    ("vigil_upstream_duration_seconds", "histogram"),
    ("vigil_guard_duration_seconds", "histogram"),
    ("vigil_guard_results", "counter"),
    ("vigil_upstream_errors", "counter"),
    ("vigil_guard_reloads", "counter"),
    ("vigil_state_entries", "gauge"),
    ("vigil_worker_connections", "gauge"),
    ("vigil_report_delivered", "counter"),
    ("vigil_report_delivery_failures", "counter"),
    ("vigil_report_last_success_timestamp_seconds", "gauge"),
    ("vigil_report_spool_reports", "gauge"),
    ("vigil_report_spool_bytes", "gauge"),
    ("process_cpu_seconds", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
    ("process_threads", "gauge"),
    ("process_start_time_seconds", "gauge"),
];

/// `/metrics` in both formats, each checked for its content type and parsed.
async fn scrape(proxy: &Proxy) -> [Exposition; 2] {
    let (status, headers, body) = send(proxy.admin, "GET", "/metrics", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(headers["vary"], "accept");
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    let prometheus = Exposition::parse(&text, "prometheus");

    let asked = [("accept", "text/plain")];
    let (_, headers, _) = send(proxy.admin, "GET", "/metrics", &asked, vec![]).await;
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );

    let asked = [("accept", PROMETHEUS_ACCEPT)];
    let (status, headers, body) = send(proxy.admin, "GET", "/metrics", &asked, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let openmetrics = Exposition::parse(&text, "openmetrics");
    [prometheus, openmetrics]
}

fn assert_families(prometheus: &Exposition, openmetrics: &Exposition) {
    let build = env!("CARGO_PKG_VERSION");
    for (exposition, build_family) in [
        (prometheus, ("vigil_build_info", "gauge")),
        (openmetrics, ("vigil_build", "info")),
    ] {
        for (name, kind) in FAMILIES.iter().chain([&build_family]) {
            let family = exposition
                .family(name)
                .unwrap_or_else(|| panic!("no family {name}: {exposition:#?}"));
            assert_eq!(family.kind, *kind, "{name}");
        }
        assert!(
            exposition
                .families
                .iter()
                .all(|f| f.kind != "unknown" && f.kind != "untyped"),
            "every sample has its family's type: {exposition:#?}"
        );
        assert_eq!(
            exposition.value("vigil_build_info", &[("version", build)]),
            1.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_formats_parse_and_count_allowed_denied_and_monitored_requests() {
    let config = format!(
        "{BASE}{}{}",
        guard_table(
            "gate",
            guards::FIXED_VERDICT,
            "routes = [\"* /admin/**\"]\nconfig = { deny = 403 }"
        ),
        guard_table(
            "watch",
            guards::FIXED_VERDICT,
            "mode = \"monitor\"\nroutes = [\"* /watched/**\"]\nconfig = { deny = 429 }"
        ),
    );
    let (_up, proxy) = start_with_upstream("metrics", &config).await;

    // From the start: every family, the fixed label sets at zero.
    for exposition in scrape(&proxy).await {
        for verdict in VERDICTS {
            let labels = [("verdict", verdict)];
            assert_eq!(
                exposition.value("vigil_request_duration_seconds_count", &labels),
                0.0
            );
        }
        for result in ["answered", "failed"] {
            let labels = [("result", result)];
            assert_eq!(
                exposition.value("vigil_upstream_duration_seconds_count", &labels),
                0.0
            );
        }
        for guard in ["gate", "watch"] {
            for result in ["allow", "deny", "would_deny", "deadline"] {
                let labels = [("guard", guard), ("result", result)];
                assert_eq!(exposition.value("vigil_guard_results_total", &labels), 0.0);
            }
            let labels = [("guard", guard)];
            assert_eq!(
                exposition.value("vigil_guard_duration_seconds_count", &labels),
                0.0
            );
        }
        let labels = [("kind", "timeout")];
        assert_eq!(
            exposition.value("vigil_upstream_errors_total", &labels),
            0.0
        );
        let labels = [("reason", "unreachable")];
        assert_eq!(
            exposition.value("vigil_report_delivery_failures_total", &labels),
            0.0
        );
        assert_eq!(exposition.sum("vigil_requests_total", &[]), 0.0);
    }
    let [prometheus, openmetrics] = scrape(&proxy).await;
    assert_families(&prometheus, &openmetrics);

    let get = |path: &'static str| send(proxy.addr, "GET", path, &[], vec![]);
    for _ in 0..3 {
        assert_eq!(get("/public").await.0, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_eq!(get("/admin/x").await.0, StatusCode::FORBIDDEN);
    }
    for _ in 0..4 {
        assert_eq!(get("/watched/x").await.0, StatusCode::OK, "monitor mode");
    }
    // The upstream takes 2 s; its timeout is 1 s.
    assert_eq!(get("/slow").await.0, StatusCode::GATEWAY_TIMEOUT);

    // The reporter delivers to the upstream within a few intervals.
    let delivered = async {
        loop {
            let [now, _] = scrape(&proxy).await;
            if now.value("vigil_report_delivered_total", &[]) >= 1.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), delivered)
        .await
        .expect("a report was delivered");

    let [prometheus, openmetrics] = scrape(&proxy).await;
    assert_families(&prometheus, &openmetrics);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for m in [&prometheus, &openmetrics] {
        for (verdict, n) in VERDICTS.into_iter().zip([3.0, 4.0, 2.0, 1.0]) {
            let labels = [("verdict", verdict)];
            assert_eq!(m.sum("vigil_requests_total", &labels), n, "{verdict}");
            assert_eq!(
                m.value("vigil_request_duration_seconds_count", &labels),
                n,
                "{verdict}"
            );
            let inf = [("verdict", verdict), ("le", "+Inf")];
            assert_eq!(m.value("vigil_request_duration_seconds_bucket", &inf), n);
        }
        let labels = [
            ("verdict", "monitored"),
            ("status", "200"),
            ("route", "/watched/x"),
        ];
        assert_eq!(m.sum("vigil_requests_total", &labels), 4.0);
        let labels = [("verdict", "denied"), ("status", "403")];
        assert_eq!(m.sum("vigil_requests_total", &labels), 2.0);
        let labels = [("verdict", "error")];
        assert!(m.value("vigil_request_duration_seconds_sum", &labels) >= 1.0);

        let labels = [("result", "answered")];
        assert_eq!(
            m.value("vigil_upstream_duration_seconds_count", &labels),
            7.0
        );
        let labels = [("result", "failed")];
        assert_eq!(
            m.value("vigil_upstream_duration_seconds_count", &labels),
            1.0
        );
        assert!(m.value("vigil_upstream_duration_seconds_sum", &labels) >= 1.0);
        let labels = [("kind", "timeout")];
        assert_eq!(m.value("vigil_upstream_errors_total", &labels), 1.0);

        let results = |guard, result| {
            m.value(
                "vigil_guard_results_total",
                &[("guard", guard), ("result", result)],
            )
        };
        assert_eq!(results("gate", "deny"), 2.0);
        assert_eq!(results("gate", "would_deny"), 0.0);
        assert_eq!(results("watch", "would_deny"), 4.0);
        assert_eq!(
            results("watch", "deny"),
            0.0,
            "monitor denials are not denials"
        );
        for (guard, calls) in [("gate", 2.0), ("watch", 4.0)] {
            let labels = [("guard", guard)];
            assert_eq!(
                m.value("vigil_guard_duration_seconds_count", &labels),
                calls
            );
        }

        assert!(m.value("vigil_report_delivered_total", &[]) >= 1.0);
        let last = m.value("vigil_report_last_success_timestamp_seconds", &[]);
        assert!(last > now - 60.0 && last <= now + 1.0, "{last} vs {now}");
        assert!(m.value("vigil_report_spool_reports", &[]) >= 0.0);
        assert!(m.value("vigil_state_entries", &[("table", "clients")]) >= 1.0);

        assert!(m.value("process_resident_memory_bytes", &[]) > 1e6);
        assert!(m.value("process_cpu_seconds_total", &[]) > 0.0);
        assert!(m.value("process_open_fds", &[]) >= 3.0);
        assert!(m.value("process_threads", &[]) >= 2.0);
        let started = m.value("process_start_time_seconds", &[]);
        assert!(
            started <= now && started > now - 3600.0,
            "{started} vs {now}"
        );
    }
    proxy.shutdown().await;
}
