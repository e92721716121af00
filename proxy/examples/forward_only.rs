//! The floor under Vigil's request path, for the load test: the same transport (one
//! current-thread event loop per worker accepting from a shared socket, connections shared
//! evenly among the workers, hyper's HTTP/1 server, Vigil's per-worker upstream pool)
//! forwarding every request untouched, with no client or route resolution, guards, history,
//! inventory or metrics. Set beside `vigil run` without guards, it tells the cost of Vigil's
//! own work from the cost of the HTTP stack it is built on.
//!
//! `forward_only <listen address> <upstream URL> [workers]`

use anyhow::Context as _;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioTimer;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use vigil::config::{Upstream, DEFAULT_MAX_CONNECTIONS, DEFAULT_UPSTREAM_CONNECTIONS};
use vigil::forward::upstream::UpstreamClient;
use vigil::respond::{ProxyBody, ProxyError};
use vigil::serve::balance::{seats, Connection, Seat};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: forward_only <listen address> <upstream URL> [workers]";
    let (Some(listen), Some(upstream_url)) = (args.get(1), args.get(2)) else {
        anyhow::bail!(usage);
    };
    let workers: usize = match args.get(3) {
        Some(text) => text.parse().with_context(|| format!("workers: {text:?}"))?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let upstream = Upstream {
        url: upstream_url
            .parse()
            .with_context(|| format!("upstream URL {upstream_url:?}"))?,
        path_prefix: String::new(),
        timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        rewrite_host: false,
        max_connections: DEFAULT_UPSTREAM_CONNECTIONS,
        queue_timeout: Duration::from_secs(5),
        tls: None,
    };
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    listener.set_nonblocking(true)?;
    let limit = Arc::new(Semaphore::new(DEFAULT_MAX_CONNECTIONS));
    let threads = seats((0..workers).map(|_| Gauge::default()).collect())
        .into_iter()
        .enumerate()
        .map(|(index, seat)| {
            let listener = listener.try_clone()?;
            let (upstream, limit) = (upstream.clone(), limit.clone());
            // Named as Vigil's workers are, for the load test's per-worker CPU.
            Ok(std::thread::Builder::new()
                .name(format!("vigil-worker-{index}"))
                .spawn(move || serve(listener, workers, seat, &limit, &upstream))?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for thread in threads {
        thread.join().expect("worker panicked")?;
    }
    Ok(())
}

/// Serves like `vigil::serve::serve_public`, with the same HTTP settings (header timeout,
/// size limits), but hands each request straight to the upstream client.
fn serve(
    listener: std::net::TcpListener,
    workers: usize,
    mut seat: Seat,
    limit: &Arc<Semaphore>,
    upstream: &Upstream,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let client = Arc::new(UpstreamClient::new(upstream, workers));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .max_buf_size(16 * 1024);
        // hyper's own limit of 100 header fields is Vigil's default, which it leaves unset.
        while let Some(Connection {
            stream, admitted, ..
        }) = seat
            .next_connection(&listener, limit, std::future::pending())
            .await
        {
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                async move { Ok::<_, Infallible>(forward(&client, req).await) }
            });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
                drop(admitted);
            });
        }
        Ok(())
    })
}

async fn forward(client: &UpstreamClient, req: Request<Incoming>) -> Response<ProxyBody> {
    let req = req.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed());
    match client.send(req).await {
        Ok(response) => response.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed()),
        Err(error) => ProxyError::UpstreamUnavailable(format!("{error:?}")).response("-"),
    }
}
