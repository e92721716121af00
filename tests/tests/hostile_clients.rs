//! Vigil against clients and upstreams that do not play by the rules, in raw bytes: requests
//! that try to walk around a guard (upgrades, path spellings, hosts), sockets that hold seats,
//! clients that exhaust upstream connections, broken bodies and ambiguous responses.

use bytes::Bytes;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vigil_tests::guards;
use vigil_tests::harness::{
    guard_table, h2_client, raw, send, start_with_upstream, Proxy, Upstream,
};

const BASE: &str = r#"
[upstream]
url = "{upstream}"
timeout = "5s"
[identity]
trusted_proxies = ["127.0.0.1/32"]
[api]
internal_only = ["GET /admin/**"]
"#;

/// A guard that refuses `GET /admin/**` with 403, as an operator scoping a guard to a route.
fn admin_guard() -> String {
    guard_table(
        "no-admin",
        guards::FIXED_VERDICT,
        "routes = [\"GET /admin/**\"]\nconfig = { deny = 403, reason = \"admin is internal\" }",
    )
}

async fn guarded(name: &str, extra: &str) -> (Upstream, Proxy) {
    let config = format!("{BASE}{extra}{}", admin_guard());
    start_with_upstream(name, &config).await
}

fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

// ---- Guard bypasses ----------------------------------------------------------------------

/// The spellings of `/admin/stats` a normalising upstream serves as `/admin/stats`: each is
/// refused by the guard scoped to `GET /admin/**`, and none reaches the upstream.
const ADMIN_SPELLINGS: &[&str] = &[
    "/admin/stats",
    "/./admin/stats",
    "/x/../admin/stats",
    "/%61dmin/stats",
    "/%2e/admin/stats",
    "/x/%2e%2e/admin/stats",
    "/x/%2E%2E/admin/stats",
    "/x/.%2e/admin/stats",
    "//admin/stats",
    "/admin//stats",
    "/admin/./stats",
    "/%41dmin/../admin/stats",
    "/admin/%73tats",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_guarded_path_meets_the_guard() {
    let (up, proxy) = guarded("spellings", "").await;
    for spelling in ADMIN_SPELLINGS {
        let request = format!("GET {spelling} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
        let answer = raw(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 403, "{spelling}: {answer}");
        assert!(answer.contains("admin is internal"), "{spelling}: {answer}");
    }
    assert_eq!(up.count(), 0, "reached the upstream: {:?}", up.targets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_and_the_inventory_see_the_normalised_path() {
    let (up, proxy) = start_with_upstream("normalised", BASE).await;
    for spelling in ADMIN_SPELLINGS {
        let request = format!(
            "GET {spelling}?q=%2e%2E HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 200, "{spelling}: {answer}");
    }
    let targets = up.targets();
    assert_eq!(targets.len(), ADMIN_SPELLINGS.len());
    for target in &targets {
        // The query is the client's, untouched.
        assert_eq!(target, "GET /admin/stats?q=%2e%2E");
    }
    let (_, _, body) = send(proxy.admin, "GET", "/exposure", &[], Vec::new()).await;
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        seen["findings_by_kind"]["internal-reached-publicly"],
        ADMIN_SPELLINGS.len(),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_parameters_broken_escapes_and_climbing_above_the_root_are_refused() {
    let (up, proxy) = guarded("escapes", "").await;
    for (target, reason) in [
        ("/admin%2Fstats", "encoded slash"),
        ("/admin%2fstats", "encoded slash"),
        ("/admin%5Cstats", "encoded slash"),
        ("/admin\\stats", "encoded slash"),
        ("/admin;x=1/stats", "';' parameter"),
        ("/x/..;/admin/stats", "';' parameter"),
        ("/admin/%zz", "not followed by two hex digits"),
        ("/admin/%4", "not followed by two hex digits"),
        ("/../admin/stats", "climbs above the root"),
        ("/x/../../admin/stats", "climbs above the root"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: shop\r\n\r\n");
        let answer = raw(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{target}: {answer}");
        assert!(answer.contains(reason), "{target}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{target}: {answer}"
        );
    }
    assert_eq!(up.count(), 0, "{:?}", up.targets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoding_policies_put_encoded_slashes_and_parameters_under_the_guard() {
    let policy = "[path]\nescaped_slashes = \"decode\"\nparameters = \"strip\"\n";
    let (up, proxy) = guarded("decode", policy).await;
    for target in [
        "/admin%2Fstats",
        "/admin%5cstats",
        "/admin;x=1/stats",
        "/x/..;/admin/stats",
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
        let answer = raw(proxy.addr, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 403, "{target}: {answer}");
    }
    let answer = raw(
        proxy.addr,
        b"GET /items;jsessionid=7/list HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(up.targets(), ["GET /items/list"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_never_tunnelled() {
    let (up, proxy) = guarded("h2c-smuggle", "").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The upstream's `/ws` answers 101 whatever is asked: the attack of the report.
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: shop\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert_eq!(status_of(&head), 502, "{head}");
    // Whatever follows is an ordinary request on the connection, or nothing: never a tunnel.
    let _ = stream
        .write_all(b"GET /admin/stats HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("HTTP/1.1 200"), "{rest}");
    let seen = up.last_headers();
    for field in ["upgrade", "http2-settings", "connection"] {
        assert!(!seen.contains_key(field), "{field} was forwarded: {seen:?}");
    }
    assert!(
        !up.targets().iter().any(|t| t.contains("/admin")),
        "{:?}",
        up.targets()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_allowed_upgrades_reach_the_upstream() {
    let (up, proxy) = guarded("upgrades", "[listen]\nupgrades = []\n").await;
    let answer = raw(
        proxy.addr,
        b"GET /ws HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    assert!(!up.last_headers().contains_key("upgrade"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_requests_need_exactly_one_valid_host() {
    let (up, proxy) = guarded("host", "").await;
    for (request, reason) in [
        (&b"GET /x HTTP/1.1\r\n\r\n"[..], "must have a Host field"),
        (
            b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            "more than one Host field",
        ),
        (
            b"GET /x HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n",
            "not a host name",
        ),
        (
            b"GET /x HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
            "not a host name",
        ),
        (b"GET /x HTTP/1.1\r\nHost: \r\n\r\n", "not a host name"),
        (
            b"GET http://a.example/x HTTP/1.1\r\n\r\n",
            "must have a Host field",
        ),
    ] {
        let answer = raw(proxy.addr, request).await;
        let shown = String::from_utf8_lossy(request);
        assert_eq!(status_of(&answer), 400, "{shown}: {answer}");
        assert!(answer.contains(reason), "{shown}: {answer}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_is_the_host_everyone_sees() {
    let (up, proxy) = guarded("absolute", "").await;
    let answer = raw(
        proxy.addr,
        b"GET http://other.example/x/../admin/stats HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    let answer = raw(
        proxy.addr,
        b"GET http://other.example/x HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(up.last_headers().get("host").unwrap(), "other.example");
    assert_eq!(up.targets(), ["GET /x"], "origin form upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_normalised_and_guarded_too() {
    let (up, proxy) = guarded("h2-paths", "").await;
    let mut sender = h2_client(proxy.addr).await;
    for path in ["/x/../admin/stats", "/%61dmin/stats", "//admin/stats"] {
        let request = http::Request::builder()
            .uri(format!("http://shop{path}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let differing = http::Request::builder()
        .uri("http://shop/x")
        .header("host", "other.example")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(differing).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(up.count(), 0, "{:?}", up.targets());
}

// ---- Availability ------------------------------------------------------------------------

/// Reads until the peer closes; `None` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut sink))
        .await
        .ok()
        .map(|_| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_cannot_lock_other_clients_out() {
    let config = "[listen]\nmax_connections = 8\nheader_read_timeout = \"500ms\"\n";
    let (_up, proxy) = guarded("silent", config).await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    // An HTTP/2 connection that sends only its preface holds a seat the same way.
    let mut preface = TcpStream::connect(proxy.addr).await.unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    for (index, stream) in silent.iter_mut().enumerate() {
        let closed = closed_within(stream, Duration::from_secs(5)).await;
        assert!(
            closed.is_some(),
            "silent socket {index} still open after 5 s"
        );
    }
    assert!(
        closed_within(&mut preface, Duration::from_secs(5))
            .await
            .is_some(),
        "a preface-only HTTP/2 connection is still open after 5 s"
    );
    let (status, _, _) = send(proxy.addr, "GET", "/after", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_that_a_guard_reads_gets_408_in_time() {
    let reader = guard_table(
        "body-reader",
        guards::FIXED_VERDICT,
        "routes = [\"POST /login\"]\nbody_limit = 4096\nconfig = {}",
    );
    let config = format!("{BASE}[listen]\nheader_read_timeout = \"700ms\"\n{reader}");
    let (up, proxy) = start_with_upstream("trickled-body", &config).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /login HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\n\r\nuser=")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer and no close within 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(
        answer.contains("the request body did not arrive in time"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(up.count(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    let config = "[listen]\nidle_timeout = \"700ms\"\nheader_read_timeout = \"5s\"\n";
    let (_up, proxy) = guarded("idle", config).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = stream.read(&mut head).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&head[..n])), 200);
    let closed = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(
        closed >= Duration::from_millis(500),
        "closed too soon: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_response_is_not_cut_by_the_idle_timeout() {
    let config = "[listen]\nidle_timeout = \"300ms\"\nheader_read_timeout = \"300ms\"\n";
    let (_up, proxy) = guarded("long-response", config).await;
    // `/slow` takes 2 s to answer: the request is in flight all that time.
    let (status, _, body) = send(proxy.addr, "GET", "/slow", &[], Vec::new()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"slow"[..]));
}

/// One worker with four upstream connections, and little patience for a free one.
const BOUNDED_UPSTREAM: &str = r#"
[upstream]
url = "{upstream}"
max_connections = 4
queue_timeout = "300ms"
[listen]
workers = 1
"#;

/// Holds `count` requests open through the proxy: each sends its head and part of a body the
/// upstream echoes as it arrives, so each keeps one upstream connection busy.
async fn hold_requests(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000\r\n\r\nabc")
            .await
            .unwrap();
        held.push(stream);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_bounded_and_the_excess_gets_503() {
    let (up, proxy) = start_with_upstream("bounded", BOUNDED_UPSTREAM).await;
    let mut held = hold_requests(proxy.addr, 4).await;
    // Let the held requests reach the upstream before the next one queues.
    for _ in 0..50 {
        if up.connections() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let (status, headers, body) = send(proxy.addr, "GET", "/more", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(
        up.connections() <= 4,
        "{} upstream connections",
        up.connections()
    );
    // Once the held requests end, their connections serve the others.
    held.clear();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, _) = send(proxy.addr, "GET", "/later", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        up.connections() <= 5,
        "{} upstream connections",
        up.connections()
    );
}

// ---- Protocol hygiene --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    let (up, proxy) = guarded("chunked", "").await;
    for body in [
        &b" 5\r\nhello\r\n0\r\n\r\n"[..],
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX0\r\n\r\n",
        b"5\r\nhello\r\nzz\r\n\r\n",
    ] {
        let mut request =
            b"POST /consume HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        let answer = raw(proxy.addr, &request).await;
        let shown = String::from_utf8_lossy(body);
        assert_eq!(status_of(&answer), 400, "{shown:?}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{shown:?}: {answer}"
        );
        // No library's internal wording reaches the client.
        for internal in ["hyper", "chunk size", "error reading", "body write"] {
            assert!(!answer.contains(internal), "{shown:?}: {answer}");
        }
    }
    assert!(up.count() <= 5);
}

/// The body of a raw answer, after its head.
fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_is_answered_431_with_a_problem_body() {
    let (up, proxy) = guarded("head-431", "[listen]\nmax_headers = 20\n").await;
    let big = "x".repeat(20_000);
    let too_long = format!("GET /a HTTP/1.1\r\nHost: shop\r\nX-Big: {big}\r\n\r\n");
    let mut too_many = String::from("GET /a HTTP/1.1\r\nHost: shop\r\n");
    for i in 0..20 {
        too_many.push_str(&format!("X-F{i}: v\r\n"));
    }
    too_many.push_str("\r\n");
    for (request, starts, ends) in [
        (
            too_long,
            "the request head is 20",
            "bytes; at most 16384 are accepted",
        ),
        (
            too_many,
            "the request has 21 header fields",
            "; at most 20 are accepted",
        ),
    ] {
        // No `Connection: close` in the request: the refusal closes the connection itself.
        let answer = raw(proxy.addr, request.as_bytes()).await;
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .to_ascii_lowercase();
        assert_eq!(status_of(&answer), 431, "{head}");
        assert!(
            head.contains("content-type: application/problem+json")
                && head.contains("connection: close")
                && head.contains("x-request-id: "),
            "{head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body_of(&answer)).unwrap();
        assert_eq!(problem["status"], 431);
        assert_eq!(problem["title"], "Request Header Fields Too Large");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(starts) && detail.ends_with(ends),
            "{detail}"
        );
    }

    // Beyond twice the limit, hyper refuses the head before it is whole: still 431.
    let huge = format!(
        "GET /a HTTP/1.1\r\nHost: shop\r\nX-Big: {}\r\n\r\n",
        "x".repeat(40_000)
    );
    assert_eq!(status_of(&raw(proxy.addr, huge.as_bytes()).await), 431);
    assert_eq!(up.count(), 0, "{:?}", up.targets());
}

/// A raw upstream that answers every request with `response` and counts its connections.
async fn raw_upstream(response: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        if stream.write_all(response).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_upstream_response_is_502_and_its_connection_is_dropped() {
    let (addr, connections) = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsmuggled!",
    )
    .await;
    let dir = vigil_tests::harness::tempdir("ambiguous-upstream");
    let proxy = Proxy::start(&dir, BASE, &format!("http://{addr}")).await;
    for round in 1..=2 {
        let (status, _, body) = send(proxy.addr, "GET", "/x", &[], Vec::new()).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "round {round}");
        assert!(!String::from_utf8_lossy(&body).contains("smuggled"));
        assert_eq!(
            connections.load(Ordering::SeqCst),
            round,
            "the connection was reused"
        );
    }
}

/// Request framing a front end and a back end could read differently: each is refused before
/// it reaches the upstream, or reaches it in one reading only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_variants_are_refused() {
    let (up, proxy) = guarded("smuggling", "").await;
    for request in [
        &b"POST /consume HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /consume HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /consume HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST /consume HTTP/1.1\r\nHost: shop\r\nContent-Length: +5\r\n\r\nhello",
        b"POST /consume HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /consume HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n Transfer-Encoding: chunked\r\n\r\nhello",
        b"POST /consume HTTP/1.0\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /consume HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nContent-Length: 5, 6\r\n\r\nhello",
        b"GET /x\nHTTP/1.1\r\nHost: shop\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: shop\r\nX: a\rb\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHo\x00st: shop\r\n\r\n",
    ] {
        let answer = raw(proxy.addr, request).await;
        assert_eq!(
            status_of(&answer),
            400,
            "{:?}: {answer}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(up.count(), 0, "{:?}", up.targets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_says_nothing_of_the_proxys_internals() {
    let dir = vigil_tests::harness::tempdir("quiet-502");
    // Nothing listens on port 9 of loopback.
    let proxy = Proxy::start(&dir, BASE, "http://127.0.0.1:9").await;
    let (status, _, body) = send(proxy.addr, "GET", "/x", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let body = String::from_utf8_lossy(&body);
    for internal in ["127.0.0.1", "refused", "os error", "hyper"] {
        assert!(!body.contains(internal), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_seat_when_capped() {
    let config = "[listen]\nmax_connections_per_ip = 2\nheader_read_timeout = \"30s\"\n";
    let (_up, proxy) = guarded("per-ip", config).await;
    // Workers accept concurrently, so which of the three is refused is not fixed: one is.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut streams {
        if closed_within(stream, Duration::from_millis(1500))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 1,
        "connections closed out of three from one address"
    );
    drop(streams);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, _) = send(proxy.addr, "GET", "/x", &[], Vec::new()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "seats come back when connections close"
    );
}

/// The report's attack: HTTP/2 connections, each holding many streams whose bodies never end.
/// Upstream connections stay within the limit, the excess gets 503, and other clients are
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_http2_bodies_cannot_exhaust_upstream_connections() {
    let (up, proxy) = start_with_upstream("h2-bodies", BOUNDED_UPSTREAM).await;
    let sender = h2_client(proxy.addr).await;
    let mut bodies = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..20 {
        let (mut body, channel) = http_body_util::channel::Channel::<Bytes>::new(1);
        body.send_data(Bytes::from_static(b"abc")).await.unwrap();
        bodies.push(body);
        let request = http::Request::builder()
            .method("POST")
            .uri("http://shop/echo")
            .body(channel)
            .unwrap();
        let mut sender = sender.clone();
        responses.push(tokio::spawn(async move {
            sender.send_request(request).await.map(|r| r.status())
        }));
    }
    let mut statuses = Vec::new();
    for response in responses {
        let status = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("every stream gets an answer")
            .unwrap()
            .unwrap();
        statuses.push(status);
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    // The echo answers at once and streams the body back: 4 streams hold the 4 connections.
    assert_eq!(refused, 16, "{statuses:?}");
    assert!(
        up.connections() <= 4,
        "{} upstream connections",
        up.connections()
    );
    drop(bodies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_and_proxy_attempts_and_unparsable_requests_leave_a_trace() {
    let dir = vigil_tests::harness::tempdir("proxy-attempts-log");
    let log = dir.join("access.log");
    let extra = format!("[access_log]\npath = \"{}\"\n", log.display());
    let (up, proxy) = guarded("proxy-attempts", &extra).await;

    let connect = raw(
        proxy.addr,
        b"CONNECT smtp.example:25 HTTP/1.1\r\nHost: smtp.example:25\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    assert!(connect.contains("not a forward proxy"), "{connect}");
    assert!(connect.contains("connection: close"), "{connect}");
    assert_eq!(up.count(), 0, "nothing reached the upstream");

    let absolute = raw(
        proxy.addr,
        b"GET http://www.example.com/ HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 200"), "served: {absolute}");

    let garbage = raw(proxy.addr, b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    // Over twice listen.max_header_bytes (16 KiB by default), where the parser stops reading.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(40_000)
    );
    let huge = raw(proxy.addr, huge.as_bytes()).await;
    assert!(huge.starts_with("HTTP/1.1 431"), "{huge}");

    // A parser refusal is accounted for once its connection's task sees the error, which may
    // be just after the client saw the connection close; its access log line is the last of
    // what is done for it.
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        statuses = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["status"].clone())
            .collect();
        if statuses.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    statuses.sort_by_key(|s| s.as_u64());
    assert_eq!(statuses, [200, 400, 405, 431], "one access log line each");

    let state = proxy.sidecar.runtime.state();
    let mut seen: Vec<(String, String, u16)> = state
        .history("127.0.0.1", 10)
        .unwrap()
        .into_iter()
        .map(|e| (e.method, e.route, e.status))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("-".to_string(), "(unparsed)".to_string(), 400),
            ("-".to_string(), "(unparsed)".to_string(), 431),
            ("CONNECT".to_string(), "(connect)".to_string(), 405),
            ("GET".to_string(), "/".to_string(), 200),
        ],
        "guards reading the client's history see every one"
    );

    let findings: Vec<_> = proxy
        .sidecar
        .inventory
        .take(proxy.sidecar.now_ms())
        .into_iter()
        .flat_map(|delta| delta.findings)
        .collect();
    let about = |kind: &str| -> Vec<(String, u64)> {
        findings
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| (f.detail.clone(), f.count))
            .collect()
    };
    let proxying = about("proxy-attempt");
    // Folded per client, the latest detail kept.
    assert_eq!(
        proxying,
        [(
            "absolute-form request GET http://www.example.com/".to_string(),
            2
        )]
    );
    let malformed = about("malformed-request");
    assert_eq!(malformed.len(), 1, "folded per client: {malformed:?}");
    assert_eq!(malformed[0].1, 2);
    assert!(findings
        .iter()
        .filter(|f| f.kind != "shadow-endpoint")
        .all(|f| f.client.as_deref() == Some("127.0.0.1")));

    assert_eq!(
        vigil_tests::harness::metric(
            &proxy,
            "vigil_requests_total{method=\"OTHER\",route=\"-\",status=\"400\",verdict=\"error\"}"
        )
        .await,
        1
    );
}
