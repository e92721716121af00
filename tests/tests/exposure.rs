//! The exposure inventory end to end: real traffic through Vigil on real sockets, read back from
//! `GET /exposure` on the admin listener.

use http::StatusCode;
use serde_json::Value;
use vigil_tests::collector::{CollectorProcess, TOKEN};
use vigil_tests::harness::{send, tempdir, Proxy, Upstream};
use vigil_tests::process::eventually;

const SPEC: &str = r#"
openapi: 3.0.3
info: { title: shop, version: "1" }
paths:
  /users/{id}:
    get: {}
  /orders:
    get: {}
    post: {}
  /admin/stats:
    get: {}
"#;

const CONFIG: &str = r#"
[upstream]
url = "{upstream}"
[identity]
trusted_proxies = ["127.0.0.1/32"]
[api]
spec = "openapi.yaml"
internal_only = ["GET /admin/**"]
"#;

/// Sends a request as if from `client` (a public address behind the trusted local proxy).
async fn from(proxy: &Proxy, client: &str, method: &str, path: &str, extra: &[(&str, &str)]) {
    let mut headers = vec![("x-forwarded-for", client)];
    headers.extend_from_slice(extra);
    let (status, _, _) = send(proxy.addr, method, path, &headers, Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{method} {path}");
}

async fn exposure(proxy: &Proxy) -> Value {
    let (status, headers, body) = send(proxy.admin, "GET", "/exposure", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    serde_json::from_slice(&body).unwrap()
}

fn endpoint<'a>(exposure: &'a Value, method: &str, route: &str) -> &'a Value {
    exposure["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == method && e["route"] == route)
        .unwrap_or_else(|| panic!("{method} {route} missing from {exposure:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_traffic_shows_up_in_the_inventory_with_its_findings() {
    let upstream = Upstream::start().await;
    let dir = tempdir("exposure");
    std::fs::write(dir.join("openapi.yaml"), SPEC).unwrap();
    let proxy = Proxy::start(&dir, CONFIG, &format!("http://{}", upstream.addr)).await;

    // Three public clients with bearer tokens read users; one internal caller too.
    for (i, client) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .iter()
        .enumerate()
    {
        for id in 0..3 {
            let path = format!("/users/{}", i * 10 + id);
            from(
                &proxy,
                client,
                "GET",
                &path,
                &[("authorization", "Bearer t")],
            )
            .await;
        }
    }
    from(&proxy, "10.1.2.3", "GET", "/users/99", &[]).await;
    // A public client reaches an internal-only route, twice.
    for _ in 0..2 {
        from(&proxy, "198.51.100.7", "GET", "/admin/stats", &[]).await;
    }
    // A route the spec does not document.
    from(&proxy, "198.51.100.7", "GET", "/debug/vars", &[]).await;
    // Orders are placed with a session cookie, then once without any credential.
    for _ in 0..25 {
        from(
            &proxy,
            "203.0.113.1",
            "POST",
            "/orders",
            &[("cookie", "session=abc")],
        )
        .await;
    }
    from(&proxy, "198.51.100.8", "POST", "/orders", &[]).await;

    let seen = exposure(&proxy).await;
    let users = endpoint(&seen, "GET", "/users/{id}");
    assert_eq!(users["requests"], 10);
    assert_eq!(users["public"], 9);
    assert_eq!(users["authenticated"], 9);
    assert_eq!(users["credentials"]["bearer"], 9);
    assert_eq!(users["status"]["2xx"], 10);
    assert_eq!(users["public_clients_estimate"], 3);
    assert_eq!(users["shadow"], false);
    let admin = endpoint(&seen, "GET", "/admin/stats");
    assert_eq!(
        (admin["internal_only"].clone(), admin["public"].clone()),
        (Value::Bool(true), 2.into())
    );
    assert_eq!(endpoint(&seen, "GET", "/debug/vars")["shadow"], true);
    let orders = endpoint(&seen, "POST", "/orders");
    assert_eq!(orders["credentials"]["cookie"], 25);
    assert_eq!(orders["unauthenticated_success"], 1);

    let zombies: Vec<String> = seen["zombie_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            format!(
                "{} {}",
                k["method"].as_str().unwrap(),
                k["route"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(zombies, ["GET /orders"]);

    let kinds = &seen["findings_by_kind"];
    assert_eq!(kinds["internal-reached-publicly"], 2);
    assert_eq!(kinds["shadow-endpoint"], 1);
    assert_eq!(kinds["unauthenticated-access"], 1);
    let unauthenticated = seen["recent_findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "unauthenticated-access")
        .unwrap();
    assert_eq!(unauthenticated["client"], "198.51.100.8");
    assert_eq!(unauthenticated["endpoint"]["route"], "/orders");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposure_endpoint_is_read_only() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &tempdir("exposure-ro"),
        CONFIG.replace("spec = \"openapi.yaml\"\n", "").as_str(),
        &format!("http://{}", upstream.addr),
    )
    .await;
    let (status, _, _) = send(proxy.admin, "POST", "/exposure", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let seen = exposure(&proxy).await;
    assert_eq!(seen["endpoints"], Value::Array(vec![]));
    assert_eq!(
        seen["zombie_candidates"],
        Value::Array(vec![]),
        "no spec, no zombies"
    );
    proxy.shutdown().await;
}

/// What the reporter would send for the period so far.
fn next_report(proxy: &Proxy) -> vigil_report::Report {
    let mut deltas = proxy.sidecar.inventory.take(proxy.sidecar.now_ms());
    assert_eq!(deltas.len(), 1, "no version change, one period");
    let delta = deltas.remove(0);
    vigil_report::Report {
        schema: vigil_report::SCHEMA,
        service: "shop".into(),
        instance: "shop-1".into(),
        sequence: vigil_report::SequenceRange { first: 1, last: 1 },
        period: delta.period,
        endpoints: delta.endpoints,
        findings: delta.findings,
        documented: proxy.sidecar.inventory.documented().to_vec(),
        dropped: delta.dropped,
        version: delta.version,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_make_a_report_the_collector_refuses() {
    let upstream = Upstream::start().await;
    let dir = tempdir("exposure-hostile-report");
    std::fs::write(dir.join("openapi.yaml"), SPEC).unwrap();
    let proxy = Proxy::start(&dir, CONFIG, &format!("http://{}", upstream.addr)).await;

    // A method longer than the report carries, a path whose template is longer than a route
    // may be, and a client key with control characters, long enough to be cut.
    let long_method = "X".repeat(40);
    // Segments of up to 64 letters stay literal in a guessed template: 20 of them are over the
    // 1,024 bytes a route may have.
    let long_path: String = (b'g'..b'z')
        .map(|c| format!("/{}", (c as char).to_string().repeat(60)))
        .collect();
    let client = format!("203.0.113.{}", 9);
    from(&proxy, &client, &long_method, "/orders", &[]).await;
    from(&proxy, &client, "GET", &long_path, &[]).await;
    from(&proxy, &client, "GET", "/admin/stats", &[]).await;

    let report = next_report(&proxy);
    assert_eq!(report.validate(), Ok(()), "{report:#?}");
    let requests: u64 = report.endpoints.iter().map(|e| e.requests).sum();
    assert_eq!(requests, 3, "every request is counted: {report:#?}");
    assert!(
        report.dropped.endpoints >= 2,
        "the two that cannot be carried as they are count as dropped: {:?}",
        report.dropped
    );
}

// Multi-threaded: the collector is read with blocking calls while the reporter runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_carry_the_version_the_upstream_announces() {
    let dir = tempdir("exposure-versions");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("known.json"),
        r#"[{"method": "GET", "route": "/orders/{id}", "id": "SHOP-7", "severity": "high",
             "service": "shop", "fixed_in": "2.0"}]"#,
    )
    .unwrap();
    let collector = tokio::task::spawn_blocking({
        let known = dir.join("known.json");
        move || {
            CollectorProcess::start(
                "versions",
                &format!("[vulnerabilities]\nknown = [\"{}\"]\n", known.display()),
            )
        }
    })
    .await
    .unwrap();
    let upstream = Upstream::start().await;
    let config = format!(
        "[upstream]\nurl = \"{{upstream}}\"\n\
         [report]\ncollector = \"http://{}\"\nservice = \"shop\"\ninstance = \"shop-1\"\n\
         token = \"{TOKEN}\"\ninterval = \"300ms\"\nspool_dir = \"spool\"\n\
         version = \"1.0\"\nversion_header = \"X-App-Version\"\n",
        collector.ingest
    );
    let proxy = Proxy::start(&dir, &config, &format!("http://{}", upstream.addr)).await;
    for order in 1..=3 {
        let path = format!("/orders/{order}");
        assert_eq!(send(proxy.addr, "GET", &path, &[], Vec::new()).await.0, 200);
    }
    // The new build answers from now on; a malformed announcement changes nothing.
    let new_build = [("x-test-app-version", "2.0")];
    for order in 4..=5 {
        let path = format!("/orders/{order}");
        assert_eq!(
            send(proxy.addr, "GET", &path, &new_build, Vec::new())
                .await
                .0,
            200
        );
    }
    let garbled = [("x-test-app-version", "2.0 (final)")];
    send(proxy.addr, "GET", "/orders/6", &garbled, Vec::new()).await;

    let versions = tokio::task::spawn_blocking(move || {
        let mut last = Value::Null;
        eventually("the collector to hold both versions' reports", || {
            last = collector.get("/api/versions?service=shop");
            last["instances"][0]["version"] == "2.0"
                && last["releases"].as_array().is_some_and(|r| r.len() == 2)
        });
        let ranked = collector.get("/api/vulnerabilities");
        (last, ranked)
    })
    .await
    .unwrap();
    let (versions, ranked) = versions;
    assert_eq!(exposure(&proxy).await["service_version"], "2.0");
    let releases: Vec<&str> = versions["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(releases, ["1.0", "2.0"], "{versions:#}");
    // The three requests before the change went out under 1.0, before 2.0 was known: none
    // counts against the fix, and no instance lacks it now.
    let fix = &ranked[0]["fix"];
    assert_eq!(fix["state"], "deployed", "{ranked:#}");
    assert_eq!(fix["requests_since_fix"], 0, "{fix:#}");
    assert_eq!(fix["affected_instances"], Value::Array(vec![]));
    proxy.shutdown().await;
}
