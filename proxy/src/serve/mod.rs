//! Serving a sidecar: [`run`] is the one way in, for `vigil run`, `vigil demo` and the tests.
//! It serves the public listener (HTTP/1.1 and prior-knowledge HTTP/2 on one port, with
//! upgrades) on worker threads and the admin listener on the caller's runtime, reports and
//! reloads, until told to stop, and then drains.

pub mod admin;
pub mod balance;
pub mod peers;

use crate::config::DEFAULT_MAX_HEADERS;
use crate::forward::hygiene::ClientEnd;
use crate::forward::upstream::UpstreamClient;
use crate::pipeline;
use crate::serve::balance::{seats, Connection, Seat};
use crate::sidecar::Sidecar;
use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vigil_common::accept::next_connection;
use vigil_common::idle::{Activity, Tracked};
use vigil_common::throttle::LogThrottle;
use vigil_common::tls::{certificate_subject, TlsListener};

/// The sockets a sidecar serves.
pub struct Listeners {
    /// Clients connect here; every worker accepts from it.
    pub public: std::net::TcpListener,
    /// The admin API.
    pub admin: std::net::TcpListener,
}

impl Listeners {
    /// Binds `listen.address` and `admin.address`, naming the key of an address that fails.
    pub fn bind(
        public: std::net::SocketAddr,
        admin: std::net::SocketAddr,
    ) -> anyhow::Result<Listeners> {
        let bind = |address, key| {
            std::net::TcpListener::bind(address)
                .with_context(|| format!("cannot listen on {address} ({key})"))
        };
        Ok(Listeners {
            public: bind(public, "listen.address")?,
            admin: bind(admin, "admin.address")?,
        })
    }
}

/// How often the configuration file and guard modules are checked for changes.
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves `sidecar` on `listeners` until `shutdown` resolves, then drains: stops accepting,
/// lets in-flight requests finish within `listen.shutdown_grace`, and delivers the last
/// report. Reloads the guard chain when the configuration or a module changes. Runs on a
/// tokio runtime of the caller's (the control runtime); clients are served by the workers'.
pub async fn run(
    sidecar: Arc<Sidecar>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Listeners { public, admin } = listeners;
    admin
        .set_nonblocking(true)
        .context("cannot make the admin listener non-blocking")?;
    let admin = TcpListener::from_std(admin).context("cannot register the admin listener")?;
    let reporter = match sidecar.reporting.clone() {
        Some(settings) => {
            tracing::info!(collector = %settings.collector, service = %settings.service, instance = %settings.instance, interval = ?settings.interval, "reporting to the collector");
            Some(crate::exposure::reporter::Reporter::start(
                sidecar.clone(),
                settings,
            )?)
        }
        None => None,
    };
    warn_of_unverified_servers(&sidecar);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin_served = tokio::spawn(serve_admin(
        sidecar.clone(),
        admin,
        stopped(stop_rx.clone()),
    ));
    let watcher = tokio::spawn(reload_on_change(sidecar.clone()));
    let workers = start_workers(sidecar.clone(), public, stop_rx)?;
    sidecar.set_ready(true);
    tracing::info!(
        workers = sidecar.listen.workers,
        guards = sidecar.chain().guards().len(),
        "vigil is serving"
    );
    shutdown.await;
    let _ = stop_tx.send(true);
    workers.wait().await;
    watcher.abort();
    let _ = admin_served.await;
    if let Some(reporter) = reporter {
        reporter.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `verify = false` is for tests; said at every start so that it is not forgotten in production.
fn warn_of_unverified_servers(sidecar: &Sidecar) {
    let unverified = [
        ("upstream.tls.verify", sidecar.upstream.tls.as_ref()),
        (
            "report.tls.verify",
            sidecar.reporting.as_ref().and_then(|r| r.tls.as_ref()),
        ),
    ];
    for (key, tls) in unverified {
        if tls.is_some_and(|tls| !tls.verify) {
            tracing::warn!(
                "{key} is false: any certificate is accepted, so anyone on the path can read \
                 and change this traffic; set it to true outside tests"
            );
        }
    }
}

/// Reloads the guard chain when the configuration file or a guard module changes.
async fn reload_on_change(sidecar: Arc<Sidecar>) {
    let mut poll = tokio::time::interval(RELOAD_POLL);
    loop {
        poll.tick().await;
        let watched = sidecar.clone();
        if tokio::task::spawn_blocking(move || watched.files_changed())
            .await
            .unwrap_or(false)
        {
            tracing::info!(cause = "file change", "reloading the guard chain");
            let reloading = sidecar.clone();
            let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
        }
    }
}

/// The threads serving the public listener. Each runs an event loop of its own and accepts
/// from the shared listening socket, so a connection, its requests and their upstream
/// exchanges stay on one thread: no request is handed between threads, as with nginx's workers.
/// A worker that accepts more than its share hands the connection to a less busy one
/// (`balance`) before serving it.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Starts `listen.workers` threads serving `listener` until `shutdown` turns true; each then
/// drains its connections within the grace period.
fn start_workers(
    sidecar: Arc<Sidecar>,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Workers> {
    let listeners = (0..sidecar.listen.workers)
        .map(|_| listener.try_clone())
        .collect::<Result<Vec<_>, _>>()
        .context("cannot share the public listener with a worker")?;
    start_workers_on(sidecar, listeners, shutdown)
}

/// Starts one worker per listener, as [`start_workers`] does with clones of one socket. The
/// workers balance their connections among themselves whatever socket each accepted from.
pub fn start_workers_on(
    sidecar: Arc<Sidecar>,
    listeners: Vec<std::net::TcpListener>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Workers> {
    let gauges = (0..listeners.len())
        .map(|index| sidecar.metrics.worker_connections(index))
        .collect();
    let mut threads = Vec::with_capacity(listeners.len());
    for (index, (listener, seat)) in listeners.into_iter().zip(seats(gauges)).enumerate() {
        // Everything that can fail happens here, before the thread starts, so it is reported
        // as a start-up error rather than a worker that silently never serves.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .with_context(|| format!("cannot start the event loop of worker {index}"))?;
        let listener = {
            let _registered_with = runtime.enter();
            listener
                .set_nonblocking(true)
                .context("cannot make the public listener non-blocking")?;
            TcpListener::from_std(listener).context("cannot register the public listener")?
        };
        let (sidecar, mut shutdown) = (sidecar.clone(), shutdown.clone());
        let thread = std::thread::Builder::new()
            .name(format!("vigil-worker-{index}"))
            .spawn(move || {
                runtime.block_on(serve_worker(sidecar, listener, seat, async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                }));
            })
            .with_context(|| format!("cannot start worker thread {index}"))?;
        threads.push(thread);
    }
    Ok(Workers { threads })
}

impl Workers {
    /// Waits until every worker has drained and stopped.
    pub async fn wait(self) {
        let _ = tokio::task::spawn_blocking(move || {
            for thread in self.threads {
                if thread.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        })
        .await;
    }
}

/// What one worker's requests share. Each request clones this handle rather than the
/// sidecar's, so its reference count lives in this worker's cache, not in one every worker
/// writes to.
struct Worker {
    sidecar: Arc<Sidecar>,
    upstream: UpstreamClient,
    builder: auto::Builder<TokioExecutor>,
}

/// Serves the connections this worker accepts and keeps, and those other workers hand it.
async fn serve_worker(
    sidecar: Arc<Sidecar>,
    listener: TcpListener,
    mut seat: Seat,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    // hyper answers a head over its limits with a bare 431 and no body; the pipeline checks
    // the configured limits (`hygiene::check_head_size`) and answers with a problem body, so
    // hyper's stand at twice them: the bound on what a connection buffers for a head.
    let parser_head_bytes = sidecar.listen.max_header_bytes.saturating_mul(2);
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(sidecar.listen.header_read_timeout)
        .max_buf_size(parser_head_bytes.max(8192));
    // hyper parses into a buffer on the stack sized for its own limit of 100 fields; any limit
    // set, even 100, makes it fill a new buffer of that size for every request head instead.
    // Up to 100 the pipeline counts; above, hyper does, as that buffer is then needed anyway.
    if sidecar.listen.max_headers > DEFAULT_MAX_HEADERS {
        http1.max_headers(sidecar.listen.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(parser_head_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(sidecar.listen.max_streams_per_connection);
    let worker = Arc::new(Worker {
        upstream: UpstreamClient::new(&sidecar.upstream, sidecar.listen.workers),
        sidecar: sidecar.clone(),
        builder,
    });
    let graceful = GracefulShutdown::new();
    let serve = |connection: Connection| {
        let Connection {
            stream,
            peer,
            admitted,
        } = connection;
        let Some(peer_seat) = sidecar.peers.admit(peer.ip()) else {
            static LIMIT_REACHED: LogThrottle = LogThrottle::new();
            if let Some(left_out) = LIMIT_REACHED.allow() {
                tracing::warn!(%peer, left_out, "connection limit per address reached; connection dropped");
            }
            return;
        };
        let _ = stream.set_nodelay(true);
        let (worker, watcher) = (worker.clone(), graceful.watcher());
        tokio::spawn(async move {
            match &worker.sidecar.tls {
                None => {
                    serve_connection(&worker, watcher, stream, ClientEnd::new(peer.ip()), peer)
                        .await
                }
                Some(tls) => {
                    if let Some((stream, client_end)) =
                        handshake(&worker.sidecar, tls, stream, peer).await
                    {
                        serve_connection(&worker, watcher, stream, client_end, peer).await;
                    }
                }
            }
            drop((admitted, peer_seat));
        });
    };
    tokio::pin!(shutdown);
    while let Some(connection) = seat
        .next_connection(&listener, &sidecar.connections, &mut shutdown)
        .await
    {
        serve(connection);
    }
    drop(listener);
    seat.close().into_iter().for_each(serve);
    sidecar.set_ready(false);
    let grace = sidecar.listen.shutdown_grace;
    let worker = std::thread::current().name().unwrap_or("-").to_string();
    tracing::info!(
        worker,
        ?grace,
        "no longer accepting; waiting for in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(worker, "all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(worker, "grace period over; closing remaining connections"),
    }
}

/// Serves the requests of one client connection, plain or TLS, until it closes, fails, or
/// stays without a request in flight past the timeouts.
async fn serve_connection<IO>(
    worker: &Arc<Worker>,
    watcher: Watcher,
    io: IO,
    client_end: ClientEnd,
    peer: std::net::SocketAddr,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client_end = Arc::new(client_end);
    let activity = Activity::new();
    let tracker = activity.clone();
    let serving = worker.clone();
    let service = service_fn(move |req| {
        let (worker, client_end) = (serving.clone(), client_end.clone());
        let in_flight = tracker.begin();
        async move {
            let response =
                pipeline::handle(&worker.sidecar, &worker.upstream, req, &client_end).await;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
        }
    });
    let connection = worker
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let connection = watcher.watch(connection);
    let sidecar = &worker.sidecar;
    let (first, between) = (
        sidecar.listen.header_read_timeout,
        sidecar.listen.idle_timeout,
    );
    tokio::select! {
        served = connection => if let Err(error) = served {
            connection_failed(sidecar, peer, &*error);
        },
        () = activity.expired(first, between) => {
            tracing::debug!(%peer, "connection closed: no request in flight within the timeout");
        }
    }
}

/// The TLS handshake of a new connection, within `listen.header_read_timeout`: the stream and
/// its client end (with the client certificate's subject), or `None` when it failed, which is
/// logged (at most once a second) and counted.
async fn handshake(
    sidecar: &Sidecar,
    tls: &TlsListener,
    stream: TcpStream,
    peer: std::net::SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, ClientEnd)> {
    static FAILED: LogThrottle = LogThrottle::new();
    let accepted = tokio::time::timeout(
        sidecar.listen.header_read_timeout,
        tls.acceptor().accept(stream),
    )
    .await;
    let error = match accepted {
        Ok(Ok(stream)) => {
            sidecar.metrics.tls_handshake("ok");
            let subject = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(certificate_subject);
            let client_end = ClientEnd::with_tls(peer.ip(), true, subject);
            return Some((stream, client_end));
        }
        Ok(Err(error)) => {
            sidecar.metrics.tls_handshake("failed");
            error.to_string()
        }
        Err(_) => {
            sidecar.metrics.tls_handshake("timeout");
            format!(
                "not completed within listen.header_read_timeout ({:?})",
                sidecar.listen.header_read_timeout
            )
        }
    };
    if let Some(left_out) = FAILED.allow() {
        tracing::info!(%peer, %error, left_out, "TLS handshake failed; connection closed");
    }
    None
}

/// Requests refused by the HTTP parser (malformed, head too large, head too slow) never reach
/// the pipeline: this is their log line, and the parser's refusals are accounted for there.
fn connection_failed(
    sidecar: &Sidecar,
    peer: std::net::SocketAddr,
    error: &(dyn std::error::Error + 'static),
) {
    let Some(error) = error.downcast_ref::<hyper::Error>() else {
        tracing::debug!(%peer, %error, "connection ended with an error");
        return;
    };
    // The status hyper answered with (see its `on_error`); a URI too long is a parse error
    // that only its text tells apart.
    let status = if error.is_parse_too_large() {
        431
    } else if error.is_parse() && error.to_string().starts_with("URI too long") {
        414
    } else if error.is_parse() {
        400
    } else {
        if error.is_timeout() {
            tracing::info!(%peer, %error, "connection closed: request head not received in time");
        } else {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
        return;
    };
    tracing::info!(%peer, %error, status, "request refused by the HTTP parser");
    pipeline::refused_by_parser(sidecar, peer.ip(), status, &error.to_string());
}

/// Serves the admin API on `listener` until `shutdown` resolves.
async fn serve_admin(
    sidecar: Arc<Sidecar>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    while let Some((stream, _)) = next_connection(&listener, &mut shutdown).await {
        let sidecar = sidecar.clone();
        let service = service_fn(move |req| {
            let sidecar = sidecar.clone();
            async move { Ok::<_, Infallible>(admin::handle(sidecar, req).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
