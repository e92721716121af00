//! Vigil's connections to the upstream: kept alive across requests, replaced when the upstream
//! closes them, never reused after a response left half-read or a request that timed out.

use http::StatusCode;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vigil_tests::harness::{send, start_with_upstream, tempdir, Proxy};

/// One worker: each worker keeps its own pool, and these tests count one pool's connections.
const BASE: &str = r#"
[upstream]
url = "{upstream}"
timeout = "1s"
[listen]
workers = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_serves_sequential_requests() {
    let (up, proxy) = start_with_upstream("pool-keepalive", BASE).await;
    for i in 0..20 {
        let path = if i % 5 == 0 {
            "/bytes/1048576"
        } else {
            "/echo"
        };
        let (status, _, body) = send(proxy.addr, "POST", path, &[], b"hello".to_vec()).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        if i % 5 == 0 {
            assert_eq!(body.len(), 1 << 20, "request {i}");
        } else {
            assert_eq!(&body[..], b"hello", "request {i}");
        }
    }
    assert_eq!(up.count(), 20);
    assert_eq!(
        up.connections(),
        1,
        "every request after the first reused the first connection"
    );
}

/// An upstream that answers each connection's first request and then closes it without saying
/// so (no `Connection: close`), as an upstream's keep-alive timeout does. Returns its address
/// and the number of connections it accepted.
async fn closing_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_is_replaced() {
    let (addr, accepted) = closing_upstream().await;
    let proxy = Proxy::start(&tempdir("pool-closed"), BASE, &format!("http://{addr}")).await;
    for i in 0..3 {
        let (status, _, body) = send(proxy.addr, "GET", "/", &[], vec![]).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(&body[..], b"ok");
        // Time for the close to arrive, as it would between requests in production.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_left_half_read_does_not_poison_the_pool() {
    let (up, proxy) = start_with_upstream("pool-half-read", BASE).await;
    // More than the loopback socket buffers between the upstream and the client hold, so the
    // upstream is still sending when the client goes away.
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"GET /bytes/33554432 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut start = [0u8; 1024];
    client.read_exact(&mut start).await.unwrap();
    assert!(start.starts_with(b"HTTP/1.1 200"));
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (status, _, body) = send(proxy.addr, "POST", "/echo", &[], b"after".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"after");
    assert_eq!(
        up.connections(),
        2,
        "the half-read connection was closed, not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_connection_is_not_reused() {
    let (up, proxy) = start_with_upstream("pool-timeout", BASE).await;
    let (status, _, _) = send(proxy.addr, "GET", "/slow", &[], vec![]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let (status, _, body) = send(proxy.addr, "POST", "/echo", &[], b"next".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"next");
    assert_eq!(up.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_host_sends_the_upstreams_authority() {
    let config = BASE.replace("timeout = \"1s\"", "timeout = \"1s\"\nrewrite_host = true");
    let (up, proxy) = start_with_upstream("pool-rewrite-host", &config).await;
    let (status, _, _) = send(proxy.addr, "GET", "/echo", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        up.last_headers().get("host").unwrap(),
        up.addr.to_string().as_str()
    );
}

/// An upstream that speaks HTTP/1.0: it answers each request `HTTP/1.0 200 OK`, with a
/// `Content-Length` except on `/until-close`, whose body ends when it closes the connection.
async fn http10_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                let answer: &[u8] = if head.starts_with("GET /until-close ") {
                    b"HTTP/1.0 200 OK\r\n\r\nuntil close"
                } else {
                    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                let _ = stream.write_all(answer).await;
            });
        }
    });
    addr
}

/// Reads up to the end of a head; what follows it stays unread.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => break,
            Ok(_) => head.push(byte[0]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads one response from the proxy: its head, and a body of `Content-Length` bytes or, when
/// chunked, up to the last chunk.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(stream))
        .await
        .expect("a response head");
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(length) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        body.resize(length.trim().parse().unwrap(), 0);
        stream.read_exact(&mut body).await.unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let size_line = read_line(stream).await;
            let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            stream.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    (head, String::from_utf8_lossy(&body).into_owned())
}

async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_upstream_does_not_downgrade_http11_clients() {
    let addr = http10_upstream().await;
    let proxy = Proxy::start(&tempdir("http10"), BASE, &format!("http://{addr}")).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    for (i, path) in ["/sized", "/until-close", "/sized"].iter().enumerate() {
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, body) = read_response(&mut client).await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n"),
            "request {i}: {head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "request {i} keeps the connection: {head}"
        );
        let expected = if *path == "/until-close" {
            assert!(
                head.to_ascii_lowercase()
                    .contains("transfer-encoding: chunked"),
                "a body that ends with the upstream's connection is chunked: {head}"
            );
            "until close"
        } else {
            "ok"
        };
        assert_eq!(body, expected, "request {i}: {head}");
    }

    // An HTTP/1.0 client is still answered in HTTP/1.0.
    let mut old = TcpStream::connect(proxy.addr).await.unwrap();
    old.write_all(b"GET /sized HTTP/1.0\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut old).await;
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert_eq!(body, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_of_the_upstream_url_prefixes_every_forwarded_path() {
    let upstream = vigil_tests::harness::Upstream::start().await;
    let config = format!(
        "{BASE}{}",
        vigil_tests::harness::guard_table(
            "no-admin",
            vigil_tests::guards::FIXED_VERDICT,
            "routes = [\"GET /admin/**\"]\nconfig = { deny = 403, reason = \"admin is internal\" }",
        )
    );
    let url = format!("http://{}/api/", upstream.addr);
    let proxy = Proxy::start(&tempdir("prefix"), &config, &url).await;
    for path in ["/users/7?fields=name&x=%2F", "/", "/users/8"] {
        let (status, _, _) = send(proxy.addr, "GET", path, &[], vec![]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (status, _, body) = send(proxy.addr, "GET", "/admin/stats", &[], vec![]).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the guard sees the client's path"
    );
    assert!(String::from_utf8_lossy(&body).contains("admin is internal"));
    assert_eq!(
        upstream.targets(),
        [
            "GET /api/users/7?fields=name&x=%2F",
            "GET /api/",
            "GET /api/users/8"
        ]
    );

    let (_, _, body) = send(proxy.admin, "GET", "/exposure", &[], vec![]).await;
    let exposure: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let routes: Vec<&str> = exposure["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["route"].as_str())
        .collect();
    assert!(
        routes.contains(&"/users/{id}") && !routes.iter().any(|r| r.starts_with("/api")),
        "the inventory counts the client's paths: {routes:?}"
    );
}

/// `GET /readyz` on `proxy`'s admin listener: status and body.
async fn readyz(proxy: &Proxy) -> (StatusCode, String) {
    let (status, _, body) = send(proxy.admin, "GET", "/readyz", &[], vec![]).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_whether_the_upstream_accepts_connections() {
    // A port nothing listens on, until the upstream comes up on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let proxy = Proxy::start(&tempdir("ready-upstream"), BASE, &url).await;
    let (status, body) = readyz(&proxy).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.starts_with(&format!(
            "not ready: the upstream at 127.0.0.1:{port} does not accept connections"
        )),
        "{body}"
    );

    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    // The last answer is kept for a second.
    let mut ready = readyz(&proxy).await;
    for _ in 0..30 {
        if ready.0 == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = readyz(&proxy).await;
    }
    assert_eq!(ready, (StatusCode::OK, "ready\n".to_string()));
    let (probes, asking) = (accepted.load(Ordering::SeqCst), std::time::Instant::now());
    for _ in 0..20 {
        assert_eq!(readyz(&proxy).await.0, StatusCode::OK);
    }
    let most = probes + asking.elapsed().as_secs() as usize + 1;
    assert!(
        accepted.load(Ordering::SeqCst) <= most,
        "at most one probe a second, not one per /readyz"
    );

    let unchecked = BASE.replace(
        "[listen]",
        "[admin]\nready_requires_upstream = false\n[listen]",
    );
    let dead = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let proxy = Proxy::start(&tempdir("ready-unchecked"), &unchecked, &dead).await;
    assert_eq!(
        readyz(&proxy).await,
        (StatusCode::OK, "ready\n".to_string())
    );
}
