//! TLS on both sides of the sidecar, with certificates the tests make: the listener (ALPN,
//! minimum version, reload, client certificates as identity) and `https://` upstreams (a CA
//! file, SNI, and the certificates verification must refuse), and the collector's ingest
//! listener with the sidecar's reporter sending to it.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use vigil_tests::harness::{metric, send, tempdir, Proxy, Upstream};
use vigil_tests::pki::{connect, Issued, TestCa, ANY_VERSION};
use vigil_tests::process::{eventually, free_port, http, Process};

/// Sends `GET path` over HTTP/1.1 on a TLS stream; the status and body.
async fn get_h1<IO>(stream: IO, path: &str) -> (StatusCode, String)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Asserts that `who` is refused: at the handshake, or (TLS 1.3, where the client finishes
/// first) on its first request.
async fn assert_not_served(
    connected: std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    who: &str,
) {
    let Ok(stream) = connected else { return };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let sent = sender
        .send_request(
            Request::get("/")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await;
    assert!(sent.is_err(), "{who} must not be served: {sent:?}");
}

/// A Vigil whose listener uses a certificate from `ca` for `localhost`, with `extra_tls` keys
/// in `[listen.tls]` and `extra` sections after it.
async fn tls_proxy(
    name: &str,
    ca: &TestCa,
    extra_tls: &str,
    extra: &str,
) -> (Upstream, Proxy, std::path::PathBuf) {
    let dir = tempdir(name);
    std::fs::create_dir_all(&dir).unwrap();
    ca.server(&["localhost", "127.0.0.1"]).write(&dir, "server");
    ca.write(&dir, "ca");
    let upstream = Upstream::start().await;
    let config = format!(
        "[upstream]\nurl = \"{{upstream}}\"\n[listen.tls]\ncert = \"server.crt\"\nkey = \"server.key\"\n{extra_tls}\n{extra}"
    );
    let proxy = Proxy::start(&dir, &config, &format!("http://{}", upstream.addr)).await;
    (upstream, proxy, dir)
}

#[tokio::test]
async fn the_listener_serves_http1_and_http2_over_tls_and_tells_the_upstream_it_was_https() {
    let ca = TestCa::new("listener CA");
    let (upstream, proxy, _dir) = tls_proxy("tls-alpn", &ca, "", "").await;

    let h1 = connect(
        proxy.addr,
        "localhost",
        ca.client_config(&[b"http/1.1"], None, ANY_VERSION),
    )
    .await
    .expect("the handshake succeeds with the CA that signed the listener's certificate");
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, _) = get_h1(h1, "/hello").await;
    assert_eq!(status, StatusCode::OK);
    let seen = upstream.last_headers();
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert!(
        seen["forwarded"].to_str().unwrap().ends_with("proto=https"),
        "{:?}",
        seen["forwarded"]
    );

    let h2 = connect(
        proxy.addr,
        "localhost",
        ca.client_config(&[b"h2", b"http/1.1"], None, ANY_VERSION),
    )
    .await
    .unwrap();
    assert_eq!(
        h2.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "h2 is preferred when offered"
    );
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h2))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(
            Request::get("https://localhost/over-h2")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(upstream.targets().contains(&"GET /over-h2".to_string()));
    assert_eq!(
        metric(&proxy, "vigil_tls_handshakes_total{kind=\"ok\"}").await,
        2
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_or_speaks_plain_http_gets_nothing_served() {
    let ca = TestCa::new("listener CA");
    let (upstream, proxy, _dir) = tls_proxy("tls-untrusted", &ca, "", "").await;
    let stranger = TestCa::new("some other CA");
    let refused = connect(
        proxy.addr,
        "localhost",
        stranger.client_config(&[], None, ANY_VERSION),
    )
    .await;
    assert!(
        refused.is_err(),
        "a client trusting another CA must refuse the listener"
    );
    let wrong_name = connect(
        proxy.addr,
        "shop.example",
        ca.client_config(&[], None, ANY_VERSION),
    )
    .await;
    assert!(wrong_name.is_err(), "the certificate is for localhost only");
    // Plain HTTP to a TLS port: the bytes are not a ClientHello.
    let plain = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        vigil_tests::harness::raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await
    .expect("the connection is closed, not left hanging");
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain:?}");
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
    assert!(metric(&proxy, "vigil_tls_handshakes_total{kind=\"failed\"}").await >= 2);
}

#[tokio::test]
async fn min_version_1_3_refuses_a_tls_1_2_client() {
    let ca = TestCa::new("listener CA");
    let (_upstream, proxy, _dir) =
        tls_proxy("tls-min-version", &ca, "min_version = \"1.3\"", "").await;
    let tls12 = ca.client_config(&[], None, &[&rustls::version::TLS12]);
    assert!(connect(proxy.addr, "localhost", tls12).await.is_err());
    let tls13 = ca.client_config(&[], None, &[&rustls::version::TLS13]);
    let stream = connect(proxy.addr, "localhost", tls13).await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_connections_while_open_ones_go_on() {
    let ca = TestCa::new("listener CA");
    let (_upstream, proxy, dir) = tls_proxy("tls-reload", &ca, "", "").await;
    let config = || ca.client_config(&[b"http/1.1"], None, ANY_VERSION);
    let before = connect(proxy.addr, "localhost", config()).await.unwrap();
    let old_certificate = before.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (mut open, connection) = hyper::client::conn::http1::handshake(TokioIo::new(before))
        .await
        .unwrap();
    tokio::spawn(connection);

    let renewed = ca.server(&["localhost"]);
    renewed.write(&dir, "server");
    let sidecar = proxy.sidecar.clone();
    tokio::task::spawn_blocking(move || sidecar.reload())
        .await
        .unwrap()
        .expect("the reload succeeds");

    let after = connect(proxy.addr, "localhost", config()).await.unwrap();
    let new_certificate = after.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(
        new_certificate,
        renewed.der(),
        "a new connection gets the renewed certificate"
    );
    assert_ne!(new_certificate, old_certificate);
    let response = open
        .send_request(
            Request::get("/still-open")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .expect("the connection made before the reload still serves");
    assert_eq!(response.status(), StatusCode::OK);

    // A broken file on the next reload leaves the renewed certificate in force.
    std::fs::write(dir.join("server.key"), "not a key").unwrap();
    let sidecar = proxy.sidecar.clone();
    let _ = tokio::task::spawn_blocking(move || sidecar.reload()).await;
    let kept = connect(proxy.addr, "localhost", config()).await.unwrap();
    assert_eq!(
        kept.get_ref().1.peer_certificates().unwrap()[0],
        renewed.der()
    );
}

#[tokio::test]
async fn client_certificates_are_required_and_their_subject_is_the_identity() {
    let ca = TestCa::new("client CA");
    let (_upstream, proxy, _dir) = tls_proxy(
        "tls-mtls",
        &ca,
        "client_ca = \"ca.crt\"",
        "[identity]\nkey = \"mtls-subject\"\n\
         [[guard]]\nname = \"limit\"\nmodule = \"builtin:rate-limit\"\n\
         config = { rate = 1, per = \"minute\", burst = 1 }\n",
    )
    .await;
    // Without a certificate the server refuses the handshake; with TLS 1.3 the client learns
    // it on its first read.
    let anonymous = connect(
        proxy.addr,
        "localhost",
        ca.client_config(&[b"http/1.1"], None, ANY_VERSION),
    )
    .await;
    assert_not_served(anonymous, "a client without a certificate").await;

    let (alice, bob) = (ca.client("alice"), ca.client("bob"));
    let as_client = |who: &Issued| ca.client_config(&[b"http/1.1"], Some(who), ANY_VERSION);
    let first = connect(proxy.addr, "localhost", as_client(&alice))
        .await
        .unwrap();
    assert_eq!(get_h1(first, "/a").await.0, StatusCode::OK);
    let second = connect(proxy.addr, "localhost", as_client(&alice))
        .await
        .unwrap();
    assert_eq!(
        get_h1(second, "/a").await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "alice's budget of one is spent, whatever connection she uses"
    );
    let other = connect(proxy.addr, "localhost", as_client(&bob))
        .await
        .unwrap();
    assert_eq!(
        get_h1(other, "/a").await.0,
        StatusCode::OK,
        "bob, from the same address, has a budget of his own"
    );
    let stranger = TestCa::new("not the client CA").client("mallory");
    let forged = connect(proxy.addr, "localhost", as_client(&stranger)).await;
    assert_not_served(forged, "a certificate from another CA").await;
    let history = proxy
        .sidecar
        .runtime
        .state()
        .history("CN=alice, O=Vigil tests", 10)
        .unwrap();
    assert_eq!(
        history.len(),
        2,
        "alice's requests are kept under her certificate's subject"
    );
}

/// An HTTPS upstream with `certificate`; records the SNI name each connection asked for.
struct HttpsUpstream {
    addr: SocketAddr,
    names: Arc<Mutex<Vec<Option<String>>>>,
}

async fn https_upstream(name: &str, certificate: &Issued) -> HttpsUpstream {
    let dir = tempdir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = certificate.write(&dir, "upstream");
    let files = vigil_common_tls_files(&cert, &key);
    let listener = vigil_common::tls::TlsListener::load(files, &[b"http/1.1"]).unwrap();
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let names = Arc::new(Mutex::new(Vec::new()));
    let recorded = names.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = socket.accept().await.unwrap();
            let acceptor = listener.acceptor();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                recorded
                    .lock()
                    .unwrap()
                    .push(stream.get_ref().1.server_name().map(str::to_string));
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                        Bytes::from_static(b"secure upstream"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    HttpsUpstream { addr, names }
}

fn vigil_common_tls_files(cert: &Path, key: &Path) -> vigil_common::tls::ServerTlsFiles {
    vigil_common::tls::ServerTlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        min_version: vigil_common::tls::TlsVersion::Tls12,
        client_ca: None,
        client_auth: vigil_common::tls::ClientAuth::Required,
        section: "test".into(),
    }
}

/// A plain-HTTP Vigil in front of `upstream` (`https://NAME:PORT`) with `[upstream.tls]` keys.
async fn proxy_to(name: &str, ca: &TestCa, url: &str, tls: &str) -> Proxy {
    let dir = tempdir(name);
    std::fs::create_dir_all(&dir).unwrap();
    ca.write(&dir, "upstream-ca");
    let config = format!(
        "[upstream]\nurl = \"{{upstream}}\"\nconnect_timeout = \"5s\"\n[upstream.tls]\n{tls}\n"
    );
    Proxy::start(&dir, &config, url).await
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_the_ca_file_and_gets_sni() {
    let ca = TestCa::new("upstream CA");
    let upstream = https_upstream("tls-upstream-ok-cert", &ca.server(&["api.internal"])).await;
    let url = format!("https://127.0.0.1:{}", upstream.addr.port());
    let proxy = proxy_to(
        "tls-upstream-ok",
        &ca,
        &url,
        "ca = \"upstream-ca.crt\"\nserver_name = \"api.internal\"",
    )
    .await;
    let (status, _, body) = send(proxy.addr, "GET", "/orders", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"secure upstream");
    assert_eq!(
        upstream.names.lock().unwrap().as_slice(),
        [Some("api.internal".to_string())]
    );
}

#[tokio::test]
async fn an_upstream_certificate_that_fails_verification_is_a_502_never_a_forwarded_request() {
    let ca = TestCa::new("upstream CA");
    let cases = [
        (
            "signed by another CA",
            TestCa::new("rogue CA").server(&["api.internal"]),
        ),
        ("expired", ca.expired_server(&["api.internal"])),
        ("for another host name", ca.server(&["billing.internal"])),
    ];
    for (what, certificate) in cases {
        let upstream = https_upstream("tls-upstream-bad-cert", &certificate).await;
        let url = format!("https://127.0.0.1:{}", upstream.addr.port());
        let proxy = proxy_to(
            "tls-upstream-bad",
            &ca,
            &url,
            "ca = \"upstream-ca.crt\"\nserver_name = \"api.internal\"",
        )
        .await;
        let (status, _, body) = send(proxy.addr, "GET", "/orders", &[], vec![]).await;
        assert_eq!(
            status,
            StatusCode::BAD_GATEWAY,
            "certificate {what}: {body:?}"
        );
        assert_ne!(&body[..], b"secure upstream", "certificate {what}");
        assert_eq!(
            metric(&proxy, "vigil_upstream_errors_total{kind=\"connect\"}").await,
            1,
            "certificate {what}"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn verify_false_accepts_any_upstream_certificate() {
    let rogue = TestCa::new("rogue CA");
    let upstream = https_upstream(
        "tls-upstream-noverify-cert",
        &rogue.expired_server(&["anything"]),
    )
    .await;
    let url = format!("https://127.0.0.1:{}", upstream.addr.port());
    let proxy = proxy_to(
        "tls-upstream-noverify",
        &TestCa::new("unused"),
        &url,
        "verify = false",
    )
    .await;
    let (status, _, body) = send(proxy.addr, "GET", "/", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"secure upstream");
}

/// A `vigil collect` process whose ingest listener serves `certificate`, on loopback ports.
struct TlsCollector {
    _process: Process,
    ingest: u16,
    api: SocketAddr,
}

const COLLECTOR_TOKEN: &str = "fleet-token-0123456789abcdef";

/// Starts `vigil collect` in `dir` with ingest on `ingest_ip` and `listen_extra` in
/// `[listen]`, its standard error to `dir/stderr.log`; once its API answers, the process, the
/// ingest port and the API's address.
async fn start_collector(
    dir: &Path,
    ingest_ip: &str,
    listen_extra: &str,
) -> (Process, u16, SocketAddr) {
    let (ingest, api) = (free_port(), free_port());
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddress = \"{ingest_ip}:{ingest}\"\n{listen_extra}\n\
             [api]\naddress = \"127.0.0.1:{api}\"\n[storage]\npath = \"collector.db\"\n\
             [[token]]\nname = \"fleet\"\ntoken = \"{COLLECTOR_TOKEN}\"\n"
        ),
    )
    .unwrap();
    let process = Process::vigil_logging_to(
        &["collect", "--config", config.to_str().unwrap()],
        &dir.join("stderr.log"),
    );
    let api = SocketAddr::from(([127, 0, 0, 1], api));
    tokio::task::spawn_blocking(move || {
        eventually("the collector's API", || {
            http(api, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
        })
    })
    .await
    .unwrap();
    (process, ingest, api)
}

/// `[listen.tls]` serving `certificate`, written to `dir`.
fn listen_tls(dir: &Path, certificate: &Issued) -> String {
    let (cert, key) = certificate.write(dir, "collector");
    format!(
        "[listen.tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    )
}

async fn tls_collector(dir: &Path, certificate: &Issued) -> TlsCollector {
    let (process, ingest, api) =
        start_collector(dir, "127.0.0.1", &listen_tls(dir, certificate)).await;
    TlsCollector {
        _process: process,
        ingest,
        api,
    }
}

/// A sidecar of service `name` reporting every 100 ms to `https://localhost:PORT`, trusting
/// `ca` for it.
async fn reporting_proxy(name: &str, upstream: &Upstream, collector: u16, ca: &TestCa) -> Proxy {
    let dir = tempdir(name);
    std::fs::create_dir_all(&dir).unwrap();
    ca.write(&dir, "collector-ca");
    let config = format!(
        "[upstream]\nurl = \"{{upstream}}\"\n\
         [report]\ncollector = \"https://localhost:{collector}\"\nservice = \"{name}\"\n\
         token = \"{COLLECTOR_TOKEN}\"\ninterval = \"100ms\"\n\
         timeout = \"2s\"\nmax_backoff = \"200ms\"\nspool_dir = \"spool\"\n\
         [report.tls]\nca = \"collector-ca.crt\"\n"
    );
    Proxy::start(&dir, &config, &format!("http://{}", upstream.addr)).await
}

/// Requests the collector counted for `GET /orders` of `service`.
async fn collected(api: SocketAddr, service: &str) -> u64 {
    let path = format!("/api/endpoints?service={service}");
    let response = tokio::task::spawn_blocking(move || http(api, "GET", &path, &[], b""))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["method"] == "GET" && e["route"] == "/orders")
        .map(|e| e["requests"].as_u64().unwrap())
        .sum()
}

// Multi-threaded: the collector API is read with blocking calls while the sidecar's reporter
// runs on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_reach_an_https_collector_only_when_its_certificate_verifies() {
    let ca = TestCa::new("collector CA");
    let dir = tempdir("tls-collector");
    std::fs::create_dir_all(&dir).unwrap();
    let collector = tls_collector(&dir, &ca.server(&["localhost"])).await;
    let upstream = Upstream::start().await;
    let trusting = reporting_proxy("tls-report-trusting", &upstream, collector.ingest, &ca).await;
    let distrusting = reporting_proxy(
        "tls-report-distrusting",
        &upstream,
        collector.ingest,
        &TestCa::new("another CA"),
    )
    .await;
    for proxy in [&trusting, &distrusting] {
        for _ in 0..3 {
            let (status, _, _) = send(proxy.addr, "GET", "/orders", &[], vec![]).await;
            assert_eq!(status, StatusCode::OK);
        }
    }

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while collected(collector.api, "tls-report-trusting").await < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no report arrived");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(collected(collector.api, "tls-report-trusting").await, 3);
    assert!(metric(&trusting, "vigil_report_delivered_total").await >= 1);

    // The other sidecar does not trust the collector's certificate: it sends nothing, counts
    // the failures and keeps what it would have sent.
    while metric(
        &distrusting,
        "vigil_report_delivery_failures_total{reason=\"unreachable\"}",
    )
    .await
        < 2
    {
        assert!(tokio::time::Instant::now() < deadline, "no failed delivery");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(collected(collector.api, "tls-report-distrusting").await, 0);
    assert_eq!(
        metric(&distrusting, "vigil_report_delivered_total").await,
        0
    );
    assert!(metric(&distrusting, "vigil_report_spool_reports").await >= 1);
    trusting.shutdown().await;
    distrusting.shutdown().await;
}

/// Starts `vigil collect` with ingest on `0.0.0.0` and `listen_extra` in `[listen]`; what it
/// logged once serving.
async fn collector_start_log(name: &str, listen_extra: &str) -> String {
    let dir = tempdir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (process, _, _) = start_collector(&dir, "0.0.0.0", listen_extra).await;
    drop(process);
    std::fs::read_to_string(dir.join("stderr.log")).unwrap()
}

#[tokio::test]
async fn a_plaintext_ingest_listener_off_loopback_warns_and_a_tls_one_does_not() {
    let plaintext = collector_start_log("collector-plaintext-public", "").await;
    assert!(
        plaintext.contains("cross the network in clear") && plaintext.contains("WARN"),
        "{plaintext}"
    );

    let dir = tempdir("collector-tls-public-certs");
    std::fs::create_dir_all(&dir).unwrap();
    let tls = listen_tls(&dir, &TestCa::new("collector CA").server(&["localhost"]));
    let tls = collector_start_log("collector-tls-public", &tls).await;
    assert!(tls.contains("the collector is serving"), "{tls}");
    assert!(!tls.contains("in clear"), "{tls}");
}
