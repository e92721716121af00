//! The sidecar end to end: a real upstream, Vigil on real sockets, real compiled guards.

use http::StatusCode;
use std::time::Duration;
use vigil_tests::guards;
use vigil_tests::harness::{
    guard_table, h2_client, metric, raw, send, start_with_upstream, tempdir, Proxy, Upstream,
};

const BASE: &str = r#"
[upstream]
url = "{upstream}"
timeout = "1s"
[listen]
max_body_bytes = 20971520
max_header_bytes = 8192
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_arrive_byte_identical() {
    let (_up, proxy) = start_with_upstream("bodies", BASE).await;
    let body: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    for method in ["GET", "POST", "PUT"] {
        let (status, _, echoed) = send(proxy.addr, method, "/echo", &[], body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{method}");
        assert!(echoed == body, "{method}: {} bytes came back", echoed.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_never_reach_the_upstream() {
    let (up, proxy) = start_with_upstream("hop", BASE).await;
    let request = b"GET /echo HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, x-private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Kept: yes\r\nConnection: close\r\n\r\n";
    let answer = raw(proxy.addr, request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.last_headers();
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            !seen.contains_key(gone),
            "{gone} reached the upstream: {seen:?}"
        );
    }
    assert_eq!(seen.get("x-kept").unwrap(), "yes");
    assert_eq!(seen.get("host").unwrap(), "app.example", "Host is kept");
    assert_eq!(seen.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(seen.get("forwarded").unwrap(), "for=127.0.0.1;proto=http");
    assert_eq!(seen.get("via").unwrap(), "1.1 vigil");
    assert_eq!(seen.get("x-request-id").unwrap().len(), 16);
}

/// Conflicting Content-Lengths are refused. With both Content-Length and Transfer-Encoding,
/// the HTTP/1 parser drops Content-Length and decodes chunked (RFC 9112 §6.3): the upstream
/// never sees both, and the connection is closed after the answer so nothing can be smuggled
/// behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_framing_cannot_smuggle() {
    let (up, proxy) = start_with_upstream("framing", BASE).await;
    let answer = raw(
        proxy.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(up.count(), 0, "nothing reached the upstream");

    let smuggle = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = raw(proxy.addr, smuggle).await;
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "only one response: {answer}"
    );
    assert_eq!(
        up.count(),
        1,
        "the smuggled request never reached the upstream"
    );
    let seen = up.last_headers();
    assert!(!seen.contains_key("content-length"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_is_problem_json_with_retry_after() {
    let config = format!(
        "{BASE}{}",
        guard_table("no-admin", guards::FIXED_VERDICT, "routes = [\"* /admin/**\"]\nconfig = { deny = 429, reason = \"slow down\", retry_after_secs = 7 }")
    );
    let (up, proxy) = start_with_upstream("deny", &config).await;
    let (status, headers, body) = send(proxy.addr, "GET", "/admin/stats", &[], vec![]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    assert_eq!(headers.get("retry-after").unwrap(), "7");
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["detail"], "slow down");
    assert_eq!(problem["guard"], "no-admin");
    assert_eq!(problem["title"], "Too Many Requests");
    assert_eq!(up.count(), 0);
    let (status, _, _) = send(proxy.addr, "GET", "/public", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK, "other routes pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_mode_lets_everything_through_and_counts() {
    let config = format!(
        "{BASE}{}",
        guard_table(
            "watch",
            guards::FIXED_VERDICT,
            "mode = \"monitor\"\nconfig = { deny = 403 }"
        )
    );
    let (up, proxy) = start_with_upstream("monitor", &config).await;
    for _ in 0..3 {
        assert_eq!(
            send(proxy.addr, "GET", "/x", &[], vec![]).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(up.count(), 3);
    let (_, _, metrics) = send(proxy.admin, "GET", "/metrics", &[], vec![]).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("vigil_guard_results_total{guard=\"watch\",result=\"would_deny\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_guard_results_total{guard=\"watch\",result=\"deny\"} 0"),
        "{metrics}"
    );
    let monitored = metrics
        .lines()
        .find(|l| l.starts_with("vigil_requests_total{") && l.contains("verdict=\"monitored\""));
    assert!(
        monitored.is_some_and(|l| l.contains("status=\"200\"") && l.ends_with(" 3")),
        "{metrics}"
    );
}

/// The client key and route the guard saw, from the finding `fixed-verdict` reports.
async fn seen_by_guard(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    proxy.sidecar.runtime.drain_findings();
    let (status, _, _) = send(proxy.addr, "GET", path, headers, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let findings = proxy.sidecar.runtime.drain_findings();
    let f = findings.last().expect("on-response reported");
    let route = f.detail.split_once(' ').unwrap().1.to_string();
    (f.client.clone(), route)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_honoured_only_from_trusted_proxies() {
    let observer = guard_table("observer", guards::FIXED_VERDICT, "config = {}");
    let (_up, untrusted) = start_with_upstream("xff-untrusted", &format!("{BASE}{observer}")).await;
    let (client, _) = seen_by_guard(&untrusted, "/", &[("x-forwarded-for", "198.51.100.9")]).await;
    assert_eq!(client, "127.0.0.1", "spoofed header ignored");

    let trusted_config =
        format!("{BASE}[identity]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{observer}");
    let (up, trusted) = start_with_upstream("xff-trusted", &trusted_config).await;
    let (client, _) = seen_by_guard(&trusted, "/", &[("x-forwarded-for", "198.51.100.9")]).await;
    assert_eq!(client, "198.51.100.9");
    assert_eq!(
        up.last_headers().get("x-forwarded-for").unwrap(),
        "198.51.100.9, 127.0.0.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_modes() {
    let observer = guard_table("observer", guards::FIXED_VERDICT, "config = {}");
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2ln"; // {"sub":"user-42"}
    for (mode, headers, expected) in [
        (
            "header:x-api-key",
            vec![("x-api-key", "key-123")],
            "key-123",
        ),
        (
            "cookie:session",
            vec![("cookie", "theme=dark; session=s-9")],
            "s-9",
        ),
        (
            "jwt-sub",
            vec![("authorization", &*format!("Bearer {jwt}"))],
            "user-42",
        ),
        ("header:x-api-key", vec![], "127.0.0.1"),
    ] {
        let config = format!("{BASE}[identity]\nkey = \"{mode}\"\n{observer}");
        let (_up, proxy) =
            start_with_upstream(&format!("id-{}", mode.replace(':', "-")), &config).await;
        let (client, _) = seen_by_guard(&proxy, "/", &headers).await;
        assert_eq!(client, expected, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_from_spec_and_heuristics_and_bounded() {
    let dir = tempdir("routes-spec");
    std::fs::write(
        dir.join("openapi.yaml"),
        "openapi: 3.0.3\ninfo: {title: shop, version: '1'}\npaths:\n  /orders/{orderId}/lines:\n    get: {}\n",
    )
    .unwrap();
    let upstream = Upstream::start().await;
    let config = format!(
        "{BASE}[api]\nspec = \"openapi.yaml\"\nmax_routes = 50\n{}",
        guard_table("observer", guards::FIXED_VERDICT, "config = {}")
    );
    let proxy = Proxy::start(&dir, &config, &format!("http://{}", upstream.addr)).await;
    assert_eq!(
        seen_by_guard(&proxy, "/orders/A-17/lines", &[]).await.1,
        "/orders/{orderId}/lines"
    );
    assert_eq!(
        seen_by_guard(&proxy, "/users/42", &[]).await.1,
        "/users/{id}"
    );
    assert_eq!(
        seen_by_guard(&proxy, "/files/0f8fad5b-d9cb-469f-a165-70867728950e", &[])
            .await
            .1,
        "/files/{uuid}"
    );
    for i in 0..500 {
        send(proxy.addr, "GET", &format!("/random-{i}/x"), &[], vec![]).await;
    }
    assert!(proxy.sidecar.routes.learned() <= 50);
    let (_, _, metrics) = send(proxy.admin, "GET", "/metrics", &[], vec![]).await;
    let metrics = String::from_utf8_lossy(&metrics);
    let route_series = metrics
        .lines()
        .filter(|l| l.starts_with("vigil_requests_total"))
        .count();
    assert!(route_series <= 60, "{route_series} request series");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_and_slow() {
    let (_up, proxy) = start_with_upstream("slow", BASE).await;
    let (status, headers, body) = send(proxy.addr, "GET", "/slow", &[], vec![]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    assert!(String::from_utf8_lossy(&body).contains("did not answer in time"));

    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(&tempdir("down"), BASE, &format!("http://{unused}")).await;
    let (status, _, body) = send(proxy.addr, "GET", "/", &[], vec![]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&body).contains("unavailable"));
}

/// A request head with `fields` header fields in all (Host among them), closing the connection.
fn head_with_fields(fields: usize) -> Vec<u8> {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 2..fields {
        head.push_str(&format!("X-F{i}: v\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_header_fields_are_refused_at_the_default_and_a_configured_limit() {
    // BASE leaves `max_headers` at its default, 100. The test upstream has the same limit and
    // Vigil adds three forwarding fields, so the largest head shown to pass is 95 fields.
    for (config, limit, passes) in [
        (BASE.to_string(), 100, 95),
        (
            BASE.replace("[listen]\n", "[listen]\nmax_headers = 20\n"),
            20,
            20,
        ),
    ] {
        let (up, proxy) = start_with_upstream("fields", &config).await;
        let answer = raw(proxy.addr, &head_with_fields(passes)).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{passes} fields: {answer}"
        );
        let answer = raw(proxy.addr, &head_with_fields(limit + 1)).await;
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "{} fields over a limit of {limit}: {answer}",
            limit + 1
        );
        assert_eq!(up.count(), 1, "refused by Vigil, not by the upstream");
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_and_body() {
    let config = BASE.replace("max_body_bytes = 20971520", "max_body_bytes = 1000");
    let (up, proxy) = start_with_upstream("limits", &config).await;
    let big = "x".repeat(20_000);
    let answer = raw(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    let (status, _, _) = send(proxy.addr, "POST", "/echo", &[], vec![0; 5000]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let chunked = format!("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1388\r\n{}\r\n0\r\n\r\n", "y".repeat(5000));
    let answer = raw(proxy.addr, chunked.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    let _ = up;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge() {
    let (up, proxy) = start_with_upstream("h2c", BASE).await;
    let mut sender = h2_client(proxy.addr).await;
    let request = http::Request::builder()
        .method("POST")
        .uri("http://app.example/echo")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"over h2",
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    assert_eq!(
        &response.into_body().collect().await.unwrap().to_bytes()[..],
        b"over h2"
    );
    assert_eq!(up.last_headers().get("host").unwrap(), "app.example");
    assert_eq!(up.last_headers().get("via").unwrap(), "2 vigil");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, proxy) = start_with_upstream("ws", BASE).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = stream.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    stream.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 23];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let config = format!("{BASE}{}", guard_table("allow", guards::ALLOW_ALL, ""));
    let (_up, proxy) = start_with_upstream("admin", &config).await;
    assert_eq!(
        send(proxy.admin, "GET", "/healthz", &[], vec![]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(proxy.admin, "GET", "/readyz", &[], vec![]).await.0,
        StatusCode::OK
    );
    send(proxy.addr, "GET", "/users/7", &[], vec![]).await;
    let (status, _, body) = send(proxy.admin, "GET", "/guards", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let guards: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(guards[0]["name"], "allow");
    assert_eq!(guards[0]["requests"], 1);
    assert_eq!(guards[0]["responses"], 1);
    assert_eq!(
        guards[0]["needs"],
        serde_json::json!({"headers": true, "responses": "all"}),
        "allow-all keeps the SDK's defaults"
    );
    assert_eq!(guards[0]["content_hash"].as_str().unwrap().len(), 16);
    assert_eq!(guards[0]["world"], "packed-guard", "the Rust SDK's world");
    let (_, _, metrics) = send(proxy.admin, "GET", "/metrics", &[], vec![]).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("vigil_requests_total{method=\"GET\",route=\"/users/{id}\",status=\"200\",verdict=\"allowed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_guard_duration_seconds_count{guard=\"allow\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_state_entries{table=\"clients\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        send(proxy.admin, "GET", "/nope", &[], vec![]).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(proxy.admin, "DELETE", "/guards", &[], vec![]).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_good_and_bad_while_traffic_flows() {
    let dir = tempdir("reload");
    let upstream = Upstream::start().await;
    let url = format!("http://{}", upstream.addr);
    let allow = format!("{BASE}{}", guard_table("gate", guards::ALLOW_ALL, ""));
    let proxy = Proxy::start(&dir, &allow, &url).await;
    let addr = proxy.addr;
    let traffic = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..300 {
            statuses.push(send(addr, "GET", "/flow", &[], vec![]).await.0);
        }
        statuses
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deny = format!(
        "{BASE}{}",
        guard_table("gate", guards::FIXED_VERDICT, "config = { deny = 403 }")
    );
    std::fs::write(dir.join("vigil.toml"), deny.replace("{upstream}", &url)).unwrap();
    let (status, _, body) = send(proxy.admin, "POST", "/guards/reload", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        send(addr, "GET", "/flow", &[], vec![]).await.0,
        StatusCode::FORBIDDEN
    );

    let bad = format!(
        "{BASE}{}",
        guard_table("gate", "/nonexistent/guard.wasm", "")
    );
    std::fs::write(dir.join("vigil.toml"), bad.replace("{upstream}", &url)).unwrap();
    let (status, _, body) = send(proxy.admin, "POST", "/guards/reload", &[], vec![]).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("/nonexistent/guard.wasm"), "{body}");
    assert_eq!(
        send(addr, "GET", "/flow", &[], vec![]).await.0,
        StatusCode::FORBIDDEN,
        "old chain serves"
    );

    let statuses = traffic.await.unwrap();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::FORBIDDEN),
        "no request failed during reloads: {statuses:?}"
    );
    let (_, _, metrics) = send(proxy.admin, "GET", "/metrics", &[], vec![]).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("vigil_guard_reloads_total{kind=\"failed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let (_up, proxy) = start_with_upstream("graceful", BASE).await;
    let addr = proxy.addr;
    let slow = tokio::spawn(async move { send(addr, "GET", "/slow", &[], vec![]).await.0 });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    proxy.shutdown().await;
    // The slow request is answered by the upstream (after 2 s) or by the upstream timeout (1 s).
    let status = slow.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "answered, not cut off");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_requests_over_64_connections_without_error() {
    let config = format!("{BASE}{}", guard_table("allow", guards::ALLOW_ALL, ""));
    let (up, proxy) = start_with_upstream("load", &config).await;
    let addr = proxy.addr;
    let mut workers = Vec::new();
    for w in 0..64 {
        workers.push(tokio::spawn(async move {
            let client = vigil_tests::harness::client();
            let mut failures = 0;
            for i in 0..(20_000 / 64 + 1) {
                if w * (20_000 / 64 + 1) + i >= 20_000 {
                    break;
                }
                let request = http::Request::get(format!("http://{addr}/items/{i}"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                match client.request(request).await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        use http_body_util::BodyExt;
                        let _ = r.into_body().collect().await;
                    }
                    _ => failures += 1,
                }
            }
            failures
        }));
    }
    let mut failures = 0;
    for w in workers {
        failures += w.await.unwrap();
    }
    assert_eq!(failures, 0);
    assert_eq!(up.count(), 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_malformed_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = format!("{BASE}header_read_timeout = \"500ms\"\n");
    let (up, proxy) = start_with_upstream("slowloris", &config).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Drip: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the connection of a client that never finishes its head is closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let answer = raw(proxy.addr, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_that_ask_get_a_body_prefix_and_the_body_still_streams_whole() {
    let settings =
        "body_limit = 16\nconfig = { max_requests = 1000, max_paths = 1000, report_header = true }";
    let config = format!(
        "{BASE}{}",
        guard_table("inspector", guards::STATEFUL, settings)
    );
    let (up, proxy) = start_with_upstream("body-prefix", &config).await;
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (status, _, problem) = send(
        proxy.addr,
        "POST",
        "/login",
        &[("x-report", "1")],
        body.clone(),
    )
    .await;
    assert_eq!(status.as_u16(), 418);
    let problem: serde_json::Value = serde_json::from_slice(&problem).unwrap();
    assert!(
        problem["detail"].as_str().unwrap().ends_with("body=16"),
        "{problem}"
    );
    assert_eq!(up.count(), 0);
    let (status, _, echoed) = send(proxy.addr, "POST", "/login", &[], body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(echoed == body, "{} bytes came back", echoed.len());
}

/// Sends `clients` requests, each from its own `x-api-key`; returns how many clients the state
/// tables then hold.
async fn clients_tracked_after(name: &str, config: &str, clients: usize) -> u64 {
    let (_up, proxy) = start_with_upstream(name, config).await;
    for client in 0..clients {
        let key = format!("client-{client}");
        let (status, _, _) = send(
            proxy.addr,
            "GET",
            "/items/1",
            &[("x-api-key", &key)],
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    metric(&proxy, "vigil_state_entries{table=\"clients\"}").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_section_bounds_the_client_table() {
    let config = format!(
        "{BASE}[identity]\nkey = \"header:x-api-key\"\n[state]\nmax_clients = 64\nhistory_depth = 4\n{}",
        guard_table("allow", guards::ALLOW_ALL, "")
    );
    let tracked = clients_tracked_after("state-bounds", &config, 300).await;
    assert!(
        (1..=64).contains(&tracked),
        "300 clients seen, max_clients = 64: {tracked} tracked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_guards_no_client_history_is_kept() {
    let config = format!("{BASE}[identity]\nkey = \"header:x-api-key\"\n");
    let tracked = clients_tracked_after("no-history", &config, 20).await;
    assert_eq!(tracked, 0, "no guard reads a history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_pool_must_hold_the_chain_at_start_and_on_reload() {
    let dir = tempdir("instance-pool");
    let upstream = Upstream::start().await;
    let url = format!("http://{}", upstream.addr);
    let pool_of_4 = format!("{BASE}workers = 2\n[sandbox]\nmax_instances = 4\n");
    let two_guards = format!(
        "{pool_of_4}{}{}",
        guard_table("first", guards::ALLOW_ALL, ""),
        guard_table("second", guards::ALLOW_ALL, "")
    );
    let path = dir.join("vigil.toml");
    std::fs::write(&path, two_guards.replace("{upstream}", &url)).unwrap();
    let config = vigil::config::Config::load(&path, &Default::default()).unwrap();
    let refused = tokio::task::spawn_blocking(move || {
        vigil::sidecar::Sidecar::new(config, Default::default()).map(|_| ())
    })
    .await
    .unwrap()
    .expect_err("2 guards on 2 workers need 8 instances, not 4");
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("sandbox.max_instances = 4 cannot hold 2 guards on 2 workers")
            && refused.contains("at least 8"),
        "{refused}"
    );

    let one_guard = format!(
        "{pool_of_4}{}",
        guard_table("first", guards::FIXED_VERDICT, "config = { deny = 403 }")
    );
    let proxy = Proxy::start(&dir, &one_guard, &url).await;
    assert_eq!(
        send(proxy.addr, "GET", "/x", &[], vec![]).await.0,
        StatusCode::FORBIDDEN
    );
    std::fs::write(&path, two_guards.replace("{upstream}", &url)).unwrap();
    let (status, _, body) = send(proxy.admin, "POST", "/guards/reload", &[], vec![]).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains("sandbox.max_instances = 4 cannot hold 2 guards"),
        "{body}"
    );
    assert_eq!(
        send(proxy.addr, "GET", "/x", &[], vec![]).await.0,
        StatusCode::FORBIDDEN,
        "the chain that fits keeps serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_names_the_sections_that_wait_for_a_restart() {
    let dir = tempdir("needs-restart");
    let upstream = Upstream::start().await;
    let url = format!("http://{}", upstream.addr);
    let guard = guard_table("gate", guards::ALLOW_ALL, "");
    let proxy = Proxy::start(&dir, &format!("{BASE}{guard}"), &url).await;
    let reload = |config: String| {
        let path = dir.join("vigil.toml");
        let admin = proxy.admin;
        let url = url.clone();
        async move {
            std::fs::write(path, config.replace("{upstream}", &url)).unwrap();
            let (status, _, body) = send(admin, "POST", "/guards/reload", &[], vec![]).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            body["needs_restart"].clone()
        }
    };
    assert_eq!(
        reload(format!("{BASE}{guard}")).await,
        serde_json::json!([]),
        "nothing changed"
    );
    let other_guard = guard_table("gate", guards::FIXED_VERDICT, "config = { deny = 403 }");
    assert_eq!(
        reload(format!("{BASE}{other_guard}")).await,
        serde_json::json!([]),
        "guards are what a reload changes"
    );
    assert_eq!(
        reload(format!(
            "{BASE}max_headers = 50\n[state]\nmax_clients = 64\n{other_guard}"
        ))
        .await,
        serde_json::json!(["listen", "state"])
    );
    assert_eq!(
        send(proxy.addr, "GET", "/x", &[], vec![]).await.0,
        StatusCode::FORBIDDEN,
        "the guards were still swapped"
    );
}

/// Guards run on the workers' event loops, where wasmtime-wasi's sync streams panicked trying
/// to enter a runtime to print: the client got no response at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_that_prints_a_lot_still_lets_the_request_through() {
    // on_error = deny: had printing faulted the guard, the request would be refused with 503.
    let config = format!(
        "{BASE}{}",
        guard_table(
            "hostile",
            guards::HOSTILE,
            "on_error = \"deny\"\ndeadline = \"5s\""
        )
    );
    let (up, proxy) = start_with_upstream("chatty-guard", &config).await;
    let chatty = [("x-attack", "chatty")];
    let (status, _, body) = send(proxy.addr, "GET", "/noisy", &chatty, vec![]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = send(proxy.addr, "GET", "/quiet", &[], vec![]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the next request is served normally"
    );
    assert_eq!(up.count(), 2);
    assert_eq!(
        metric(
            &proxy,
            "vigil_guard_results_total{guard=\"hostile\",result=\"allow\"}"
        )
        .await,
        2
    );
    proxy.shutdown().await;
}
