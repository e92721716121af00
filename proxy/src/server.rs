//! The listeners: the public one (HTTP/1.1 and prior-knowledge HTTP/2 on one port, with
//! upgrades), served by worker threads, and the admin one, both stopping gracefully when told to.

use crate::accept::next_connection;
use crate::admin;
use crate::balance::{Admitted, Balance, Handoff, Placement};
use crate::config::DEFAULT_MAX_HEADERS;
use crate::forward::Hop;
use crate::pipeline;
use crate::sidecar::Sidecar;
use crate::upstream::UpstreamClient;
use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

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
pub fn start_workers(
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
    let (balance, inboxes) = Balance::new(gauges);
    let mut threads = Vec::with_capacity(listeners.len());
    for (index, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
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
        let seat = Seat {
            index,
            balance: balance.clone(),
            inbox,
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
}

/// One worker's place among the workers: which it is, and the connections others hand it.
struct Seat {
    index: usize,
    balance: Arc<Balance>,
    inbox: mpsc::UnboundedReceiver<Handoff>,
}

/// Serves clients on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish within the configured grace period. Each call keeps its own pool of upstream
/// connections.
pub async fn serve_public(
    sidecar: Arc<Sidecar>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let (balance, mut inboxes) = Balance::new(vec![sidecar.metrics.worker_connections(0)]);
    let seat = Seat {
        index: 0,
        balance,
        inbox: inboxes.remove(0),
    };
    serve_worker(sidecar, listener, seat, shutdown).await
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
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(sidecar.listen.header_read_timeout)
        .max_buf_size(sidecar.listen.max_header_bytes.max(8192));
    // hyper parses into a buffer on the stack sized for its own limit of 100 fields; any limit
    // set, even 100, makes it fill a new buffer of that size for every request head instead.
    if sidecar.listen.max_headers != DEFAULT_MAX_HEADERS {
        http1.max_headers(sidecar.listen.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(sidecar.listen.max_header_bytes as u32);
    let worker = Arc::new(Worker {
        upstream: UpstreamClient::new(&sidecar.upstream),
        sidecar: sidecar.clone(),
    });
    let graceful = GracefulShutdown::new();
    let serve = |stream: TcpStream, peer: SocketAddr, admitted: Admitted| {
        let _ = stream.set_nodelay(true);
        let worker = worker.clone();
        let hop = Arc::new(Hop::new(peer.ip()));
        let service = service_fn(move |req| {
            let (worker, hop) = (worker.clone(), hop.clone());
            async move {
                let response = pipeline::handle(&worker.sidecar, &worker.upstream, req, &hop).await;
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                log_connection_error(peer, &*error);
            }
            drop(admitted);
        });
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = next_connection(&listener, &mut shutdown) => {
                let Some((stream, peer)) = accepted else { break };
                let Ok(permit) = sidecar.connections.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; connection dropped");
                    continue;
                };
                match seat.balance.place(seat.index, permit) {
                    Placement::Here(admitted) => serve(stream, peer, admitted),
                    Placement::There(worker, admitted) => {
                        if let Some(returned) = hand_over(&seat.balance, worker, stream, peer, admitted) {
                            serve(returned.0, returned.1, returned.2);
                        }
                    }
                }
            }
            Some(handoff) = seat.inbox.recv() => {
                if let Some((stream, peer, admitted)) = take_over(handoff) {
                    serve(stream, peer, admitted);
                }
            }
        }
    }
    drop(listener);
    // From here a worker handing this one a connection gets it back and serves it itself;
    // those handed before are served here, within the grace period like the rest.
    seat.inbox.close();
    while let Ok(handoff) = seat.inbox.try_recv() {
        if let Some((stream, peer, admitted)) = take_over(handoff) {
            serve(stream, peer, admitted);
        }
    }
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

/// Passes a connection this worker accepted to `worker`; returns it if that worker has
/// stopped taking connections (it is shutting down), for this one to serve.
fn hand_over(
    balance: &Balance,
    worker: usize,
    stream: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
) -> Option<(TcpStream, SocketAddr, Admitted)> {
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot pass a connection to another worker; closing it");
            return None;
        }
    };
    let handoff = Handoff {
        stream,
        peer,
        admitted,
    };
    balance.hand_to(worker, handoff).err().and_then(take_over)
}

/// Registers a connection another worker accepted with this worker's event loop.
fn take_over(handoff: Handoff) -> Option<(TcpStream, SocketAddr, Admitted)> {
    let Handoff {
        stream,
        peer,
        admitted,
    } = handoff;
    match TcpStream::from_std(stream) {
        Ok(stream) => Some((stream, peer, admitted)),
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot take over a connection another worker accepted; closing it");
            None
        }
    }
}

/// Requests refused by the HTTP parser (malformed, head too large, head too slow) never reach
/// the pipeline, so this is their one log line.
fn log_connection_error(peer: std::net::SocketAddr, error: &(dyn std::error::Error + 'static)) {
    match error.downcast_ref::<hyper::Error>() {
        Some(e) if e.is_parse_too_large() => {
            tracing::info!(%peer, %error, "request refused: head too large (431)")
        }
        Some(e) if e.is_parse() => {
            tracing::info!(%peer, %error, "request refused: malformed (400)")
        }
        Some(e) if e.is_timeout() => {
            tracing::info!(%peer, %error, "connection closed: request head not received in time")
        }
        _ => tracing::debug!(%peer, %error, "connection ended with an error"),
    }
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve_admin(
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
