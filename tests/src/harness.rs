//! Real servers for end-to-end tests: an upstream that echoes and records what it received,
//! and an in-process Vigil on real sockets. Both stop when their handle is dropped.

use crate::RELAXED_DEADLINE;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

type Body = BoxBody<Bytes, hyper::Error>;

/// A test upstream on 127.0.0.1. Paths: `/slow` answers after 2 s, `/status/N` answers N,
/// `/bytes/N` answers N bytes, `/ws` answers 101 (whatever the request asked) and echoes raw
/// bytes, `/consume` reads the whole body before answering with its length, anything else
/// echoes the request body as it streams.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Headers of every request received, in order.
    pub seen: Arc<Mutex<Vec<HeaderMap>>>,
    /// Method and target (`GET /a?b`) of every request received, in order.
    pub targets: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    /// Starts the upstream.
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel();
        let recorder = (seen.clone(), targets.clone());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    _ = &mut stopped => return,
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let recorder = recorder.clone();
                let service = service_fn(move |req| upstream_handler(req, recorder.clone()));
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            targets,
            accepted,
            _stop: stop,
        }
    }

    /// The last request's headers.
    pub fn last_headers(&self) -> HeaderMap {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Method and target of every request received so far.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

type Recorder = (Arc<Mutex<Vec<HeaderMap>>>, Arc<Mutex<Vec<String>>>);

async fn upstream_handler(
    mut req: Request<Incoming>,
    (seen, targets): Recorder,
) -> Result<Response<Body>, Infallible> {
    seen.lock().unwrap().push(req.headers().clone());
    targets
        .lock()
        .unwrap()
        .push(format!("{} {}", req.method(), req.uri()));
    let path = req.uri().path().to_string();
    if path == "/consume" {
        let text = match req.into_body().collect().await {
            Ok(body) => format!("{} bytes", body.to_bytes().len()),
            Err(error) => format!("body error: {error}"),
        };
        return Ok(Response::new(
            Full::new(Bytes::from(text))
                .map_err(|never| match never {})
                .boxed(),
        ));
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
        return Ok(Response::new(full("slow")));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let mut r = Response::new(full(""));
        *r.status_mut() = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
        return Ok(r);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let body = Bytes::from(vec![b'x'; n.parse().unwrap_or(0)]);
        return Ok(Response::new(
            Full::new(body).map_err(|never| match never {}).boxed(),
        ));
    }
    if path == "/ws" {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(full(""));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        return Ok(r);
    }
    // The build of the service, as an application announces it: asked for by the test.
    let announced = req.headers().get("x-test-app-version").cloned();
    let mut echo = Response::new(req.into_body().boxed());
    if let Some(version) = announced {
        echo.headers_mut().insert("x-app-version", version);
    }
    Ok(echo)
}

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}

/// Vigil serving in this process on real sockets.
pub struct Proxy {
    /// Public address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// The sidecar, for inspection.
    pub sidecar: Arc<vigil::sidecar::Sidecar>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Proxy {
    /// Starts Vigil from configuration text written to `dir/vigil.toml`. `{upstream}` in the
    /// text is replaced by `upstream_url`.
    pub async fn start(dir: &Path, config: &str, upstream_url: &str) -> Proxy {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("vigil.toml");
        std::fs::write(&path, config.replace("{upstream}", upstream_url)).unwrap();
        let config = vigil::config::Config::load(&path, &Default::default()).expect("valid config");
        let sidecar = Arc::new(
            tokio::task::spawn_blocking(move || {
                vigil::sidecar::Sidecar::new(config, Default::default())
            })
            .await
            .unwrap()
            .expect("sidecar starts"),
        );
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = vigil::serve::Listeners::bind(loopback, loopback).unwrap();
        let (addr, admin_addr) = (
            listeners.public.local_addr().unwrap(),
            listeners.admin.local_addr().unwrap(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(vigil::serve::run(sidecar.clone(), listeners, async move {
            let _ = stopped.await;
        }));
        // Serving once the admin API answers, as `vigil run` is once it logs so.
        while !TcpStream::connect(admin_addr)
            .await
            .is_ok_and(|_| sidecar.is_ready())
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Proxy {
            addr,
            admin: admin_addr,
            sidecar,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Stops accepting and waits until in-flight requests finished.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().expect("the sidecar stops cleanly");
        }
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and collects the response.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    let response = client()
        .request(builder.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// A prior-knowledge HTTP/2 connection to `addr`, driven in the background, for requests with
/// bodies of type `B`.
pub async fn h2_client<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// Writes raw bytes on a fresh connection and reads until the server closes or 2 s pass.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A fresh, empty directory for one test's files.
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `vigil.toml` text for one `[[guard]]` table with `module` and extra lines. Unless `extra`
/// sets a `deadline`, the guard gets [`RELAXED_DEADLINE`]: on a loaded machine a trivial call
/// can overrun the product's 10 ms, fail open, and lose the decision a test asserts.
pub fn guard_table(name: &str, module: &str, extra: &str) -> String {
    let sets_deadline = extra
        .lines()
        .any(|line| line.trim_start().starts_with("deadline"));
    let deadline = if sets_deadline {
        String::new()
    } else {
        format!("deadline = \"{}ms\"\n", RELAXED_DEADLINE.as_millis())
    };
    format!("\n[[guard]]\nname = \"{name}\"\nmodule = \"{module}\"\n{deadline}{extra}\n")
}

/// Starts an upstream and Vigil in front of it with this configuration.
pub async fn start_with_upstream(name: &str, config: &str) -> (Upstream, Proxy) {
    let upstream = Upstream::start().await;
    let url = format!("http://{}", upstream.addr);
    let proxy = Proxy::start(&tempdir(name), config, &url).await;
    (upstream, proxy)
}

/// The value of one series of the admin API's `/metrics` (0 when absent), e.g.
/// `vigil_guard_results_total{guard="g",result="deny"}`.
pub async fn metric(proxy: &Proxy, series: &str) -> u64 {
    metric_value(proxy, series).await as u64
}

/// As [`metric`], for a series whose value need not be whole (seconds).
pub async fn metric_value(proxy: &Proxy, series: &str) -> f64 {
    let (_, _, metrics) = send(proxy.admin, "GET", "/metrics", &[], vec![]).await;
    String::from_utf8_lossy(&metrics)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_table_gets_the_relaxed_deadline_unless_it_sets_one() {
        let relaxed = guard_table("g", "g.wasm", "config = {}");
        assert!(relaxed.contains(&format!(
            "deadline = \"{}ms\"\n",
            RELAXED_DEADLINE.as_millis()
        )));
        let own = guard_table("g", "g.wasm", "deadline = \"500ms\"\nconfig = {}");
        assert_eq!(
            own.matches("deadline").count(),
            1,
            "one deadline key: {own}"
        );
        assert!(own.contains("deadline = \"500ms\""));
    }
}
