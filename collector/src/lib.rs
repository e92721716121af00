//! The collector (`vigil collect`): receives sidecars' reports, merges them fleet-wide per
//! service and endpoint, and shows what is exposed, what was found and which known
//! vulnerabilities matter most.
//!
//! # Layout
//!
//! - `config`: `collector.toml`, validated.
//! - `ingest`: `POST /v1/reports`, from bearer token to stored report.
//! - `store`: the storage interface; `sqlite` and `postgres`: its SQLite and PostgreSQL
//!   implementations; `rows`: the records both decode from their rows.
//! - `api`: the JSON API, the dashboard's data and who may read them; `dashboard`: the
//!   pages at `/` and `/endpoint`.
//! - `vulns`: known-vulnerable endpoints (JSON list, ZAP report) and their ranking.
//! - `fixes`: whether a vulnerability's fix has reached every instance serving its endpoint.
//! - `metrics`: the Prometheus metrics at `/metrics` on the API listener.
//! - `webhook`: what is new in a report, posted to the configured webhooks off the ingest path.
//! - `reply`: every answer the collector gives.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod dashboard;
pub mod fixes;
pub mod ingest;
pub mod metrics;
pub mod postgres;
pub mod reply;
pub mod rows;
pub mod sqlite;
pub mod store;
pub mod vulns;
pub mod webhook;

use anyhow::Context as _;
use config::{CollectorConfig, Storage};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use metrics::{Metrics, Operation};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{Cutoffs, Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use vigil_common::accept::next_connection;
use vigil_common::idle::{Activity, Tracked};
use vigil_common::reply::ProxyBody;
use vigil_common::throttle::LogThrottle;
use vigil_common::tls::TlsListener;
use vulns::Vulnerability;

/// Time in-flight requests get to finish on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a connection may stay open between requests; a sidecar's reporter opens one per
/// delivery. Before its first request a connection gets `listen.header_read_timeout`.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running collector's shared parts.
pub struct Collector {
    /// The configuration it started with.
    pub config: CollectorConfig,
    /// Where reports go.
    pub store: Arc<dyn Store>,
    /// Known-vulnerable endpoints from the configured files.
    pub vulnerabilities: Vec<Vulnerability>,
    /// What `/metrics` shows.
    pub metrics: Metrics,
    /// The ingest listener's TLS, read again on SIGHUP; `None`: plain HTTP.
    pub tls: Option<TlsListener>,
    /// The webhooks' queues; empty without `[[webhook]]`.
    pub notifier: Arc<webhook::Notifier>,
}

impl Collector {
    /// Opens the database and loads the vulnerability files. Blocks.
    pub fn open(config: CollectorConfig) -> anyhow::Result<Collector> {
        let vulnerabilities = load_vulnerabilities(&config)?;
        let store = open_store(&config)?;
        let tls = match &config.listen.tls {
            Some(files) => Some(
                TlsListener::load(files.clone(), &[b"h2", b"http/1.1"])
                    .map_err(|e| anyhow::anyhow!("{}: {e}", config.file.display()))?,
            ),
            None => None,
        };
        let metrics = Metrics::new();
        let notifier = Arc::new(webhook::Notifier::new(&config.webhooks, metrics.webhooks()));
        Ok(Collector {
            tls,
            config,
            store,
            vulnerabilities,
            metrics,
            notifier,
        })
    }

    /// Runs a store query on a blocking thread.
    pub async fn with_store<T: Send + 'static>(
        &self,
        query: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || query(&*store))
            .await
            .map_err(|e| StoreError::Database(format!("storage task failed: {e}")))?
    }
}

/// Opens the configured engine, bringing its schema up to date; errors name the key.
fn open_store(config: &CollectorConfig) -> anyhow::Result<Arc<dyn Store>> {
    let file = config.file.display();
    Ok(match &config.storage {
        Storage::Sqlite(path) => Arc::new(
            sqlite::SqliteStore::open(path)
                .map_err(|e| anyhow::anyhow!("{file} (storage.path): {e}"))?,
        ),
        Storage::Postgres(url) => Arc::new(
            postgres::PostgresStore::open(url)
                .map_err(|e| anyhow::anyhow!("{file} (storage.url): {e}"))?,
        ),
    })
}

fn load_vulnerabilities(config: &CollectorConfig) -> anyhow::Result<Vec<Vulnerability>> {
    let file = config.file.display();
    let mut all = Vec::new();
    for (i, path) in config.vulnerabilities.known.iter().enumerate() {
        all.extend(
            vulns::load_known(path)
                .map_err(|e| anyhow::anyhow!("{file}: vulnerabilities.known[{i}]: {e}"))?,
        );
    }
    for (i, path) in config.vulnerabilities.zap.iter().enumerate() {
        all.extend(
            vulns::load_zap(path)
                .map_err(|e| anyhow::anyhow!("{file}: vulnerabilities.zap[{i}]: {e}"))?,
        );
    }
    if all.len() > vulns::MAX_VULNERABILITIES {
        anyhow::bail!(
            "{file}: vulnerabilities: {} entries, at most {}",
            all.len(),
            vulns::MAX_VULNERABILITIES
        );
    }
    Ok(all)
}

/// Checks what `config` refers to without opening the database or binding an address: the
/// vulnerability files parse, and a SQLite database's directory exists (SQLite creates the
/// file, not its directory; a PostgreSQL URL is only parsed). Returns a one-line summary for
/// `vigil collect --check`.
pub fn check(config: &CollectorConfig) -> anyhow::Result<String> {
    let vulnerabilities = load_vulnerabilities(config)?;
    if let Storage::Sqlite(database) = &config.storage {
        let directory = match database.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => std::path::Path::new("."),
        };
        if !directory.is_dir() {
            anyhow::bail!(
                "{}: storage.path: the directory {} of the database does not exist",
                config.file.display(),
                directory.display()
            );
        }
    }
    Ok(format!(
        "{} is valid; reports on {}, API and metrics on {}, {} token(s), {} known vulnerabilities, database {}",
        config.file.display(),
        config.listen.address,
        config.api.address,
        config.tokens.len(),
        vulnerabilities.len(),
        config.storage
    ))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens the collector, binds its two listeners and serves until `shutdown` resolves.
pub async fn run(
    config: CollectorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (ingest_address, api_address) = (config.listen.address, config.api.address);
    let collector = Arc::new(tokio::task::block_in_place(|| Collector::open(config))?);
    let ingest = TcpListener::bind(ingest_address)
        .await
        .with_context(|| format!("cannot listen on {ingest_address} (listen.address)"))?;
    let api = TcpListener::bind(api_address)
        .await
        .with_context(|| format!("cannot listen on {api_address} (api.address)"))?;
    tracing::info!(
        %ingest_address,
        %api_address,
        tls = collector.tls.is_some(),
        database = %collector.config.storage,
        vulnerabilities = collector.vulnerabilities.len(),
        "the collector is serving"
    );
    if collector.tls.is_none() && !ingest_address.ip().is_loopback() {
        tracing::warn!(
            %ingest_address,
            "listen.address is not a loopback address and [listen.tls] is not set: reports and \
             the sidecars' bearer tokens cross the network in clear; set listen.tls.cert and \
             listen.tls.key"
        );
    }
    if !collector.config.api.access.is_protected() && !api_address.ip().is_loopback() {
        tracing::warn!(
            %api_address,
            "api.address is not a loopback address and neither api.token nor [api.basic_auth] \
             is set: anyone who reaches it reads the dashboard and the API; set one of them, or \
             listen on 127.0.0.1"
        );
    }
    tokio::spawn(reload_certificate_on_sighup(collector.clone()));
    serve(collector, ingest, api, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves reports on `ingest` and the dashboard and API on `api`, applying the retention
/// policy periodically, until `shutdown` resolves; then lets in-flight requests finish.
pub async fn serve(
    collector: Arc<Collector>,
    ingest: TcpListener,
    api: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let retention = tokio::spawn(apply_retention(collector.clone(), stop_rx.clone()));
    let webhooks = collector.notifier.start();
    let reports = collector.clone();
    let ingest_loop = accept(
        ingest,
        Listener::Ingest,
        collector.clone(),
        stop_rx.clone(),
        move |req| {
            let collector = reports.clone();
            async move { route_ingest(collector, req).await }
        },
    );
    let reads = collector.clone();
    let api_loop = accept(api, Listener::Api, collector, stop_rx, move |req| {
        let collector = reads.clone();
        async move { api::handle(collector, req).await }
    });
    tokio::join!(ingest_loop, api_loop);
    retention.abort();
    for task in webhooks {
        task.abort();
    }
}

async fn route_ingest(collector: Arc<Collector>, req: Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/reports") => ingest::handle(collector, req).await,
        (&Method::GET, "/healthz") => reply::text(StatusCode::OK, "ok\n"),
        (_, "/v1/reports") => reply::problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "reports are sent with POST",
        ),
        _ => reply::problem(
            StatusCode::NOT_FOUND,
            "this listener takes POST /v1/reports (and GET /healthz); the dashboard and API are on api.address",
        ),
    }
}

/// Which of the collector's two listeners a loop serves: only ingest speaks TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    Ingest,
    Api,
}

/// Reads the ingest listener's certificate again on each SIGHUP (after a renewal); open
/// connections keep theirs.
async fn reload_certificate_on_sighup(collector: Arc<Collector>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Some(tls) = &collector.tls else { return };
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; the certificate is read at start only");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!(cause = "SIGHUP", "ingest certificate reloaded"),
            Err(error) => tracing::error!(
                %error,
                "cannot reload the ingest certificate; the one in force keeps serving"
            ),
        }
    }
}

async fn accept<H, F>(
    listener: TcpListener,
    which: Listener,
    collector: Arc<Collector>,
    mut stop: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let limits = &collector.config.listen;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let first = limits.header_read_timeout;
    let graceful = GracefulShutdown::new();
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    while let Some((stream, peer)) = next_connection(&listener, &mut stopped).await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            static LIMIT_REACHED: LogThrottle = LogThrottle::new();
            if let Some(left_out) = LIMIT_REACHED.allow() {
                tracing::warn!(%peer, left_out, "connection limit reached; connection dropped");
            }
            continue;
        };
        let (handler, builder, watcher) = (handler.clone(), builder.clone(), graceful.watcher());
        let collector = collector.clone();
        tokio::spawn(async move {
            match collector.tls.as_ref().filter(|_| which == Listener::Ingest) {
                None => serve_connection(stream, peer, handler, &builder, watcher, first).await,
                Some(tls) => match tokio::time::timeout(first, tls.acceptor().accept(stream)).await
                {
                    Ok(Ok(stream)) => {
                        serve_connection(stream, peer, handler, &builder, watcher, first).await;
                    }
                    Ok(Err(error)) => handshake_failed(peer, &error.to_string()),
                    Err(_) => {
                        handshake_failed(peer, "not completed within listen.header_read_timeout")
                    }
                },
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// Says, at most once a second, that a client's TLS handshake failed.
fn handshake_failed(peer: std::net::SocketAddr, error: &str) {
    static FAILED: LogThrottle = LogThrottle::new();
    if let Some(left_out) = FAILED.allow() {
        tracing::info!(%peer, %error, left_out, "TLS handshake failed; connection closed");
    }
}

/// Serves one connection's requests with `handler` until it closes or stays idle.
async fn serve_connection<IO, H, F>(
    io: IO,
    peer: std::net::SocketAddr,
    handler: H,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    first: Duration,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let activity = Activity::new();
    let tracker = activity.clone();
    let service = service_fn(move |req| {
        let in_flight = tracker.begin();
        let answer = handler(req);
        async move {
            let response = answer.await;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
        }
    });
    let connection = watcher.watch(
        builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned(),
    );
    tokio::select! {
        served = connection => if let Err(error) = served {
            tracing::debug!(%peer, %error, "connection ended with an error");
        },
        () = activity.expired(first, IDLE_TIMEOUT) => {
            tracing::debug!(%peer, "connection closed: no request in flight within the timeout");
        }
    }
}

async fn apply_retention(collector: Arc<Collector>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(collector.config.retention.interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        retain(&collector).await;
    }
}

/// Applies the retention policy once, and records the pass in the metrics.
async fn retain(collector: &Arc<Collector>) {
    let retention = collector.config.retention;
    let now = now_ms();
    let before = |keep: Duration| now.saturating_sub(keep.as_millis() as u64);
    let cutoffs = Cutoffs {
        findings_ms: before(retention.findings),
        instances_ms: before(retention.instances),
        endpoints_ms: before(retention.endpoints),
    };
    match collector
        .with_store(move |store| store.prune(cutoffs))
        .await
    {
        Ok(pruned) => {
            collector.metrics.retention(now, Some(pruned));
            tracing::info!(
                findings = pruned.findings,
                instances = pruned.instances,
                endpoints = pruned.endpoints,
                keys = pruned.keys,
                "retention applied"
            );
        }
        Err(error) => {
            collector.metrics.retention(now, None);
            collector.metrics.store_error(Operation::Prune);
            tracing::error!(%error, "retention failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use metrics::sample;
    use store::{
        Applied, DeniedClient, Endpoint, EndpointQuery, FindingQuery, FindingRecord, FleetVersions,
        Pruned, Service, Totals, VersionTraffic,
    };

    /// A store whose every call fails, as a full disk or a damaged file makes it.
    struct Broken;

    fn broken<T>() -> Result<T, StoreError> {
        Err(StoreError::Database("disk I/O error".into()))
    }

    impl Store for Broken {
        fn apply(&self, _: &vigil_report::Report, _: u64) -> Result<Applied, StoreError> {
            broken()
        }
        fn services(&self) -> Result<Vec<Service>, StoreError> {
            broken()
        }
        fn endpoints(&self, _: &EndpointQuery) -> Result<Vec<Endpoint>, StoreError> {
            broken()
        }
        fn findings(&self, _: &FindingQuery) -> Result<Vec<FindingRecord>, StoreError> {
            broken()
        }
        fn denied_clients(
            &self,
            _: Option<&str>,
            _: usize,
        ) -> Result<Vec<DeniedClient>, StoreError> {
            broken()
        }
        fn prune(&self, _: Cutoffs) -> Result<Pruned, StoreError> {
            broken()
        }
        fn fleet_versions(&self, _: Option<&str>) -> Result<FleetVersions, StoreError> {
            broken()
        }
        fn version_traffic(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<Vec<VersionTraffic>, StoreError> {
            broken()
        }
        fn totals(&self) -> Result<Totals, StoreError> {
            broken()
        }
    }

    fn broken_collector() -> Arc<Collector> {
        let config = CollectorConfig::parse(
            std::path::Path::new("/etc/vigil/collector.toml"),
            "[[token]]\ntoken = \"0123456789abcdef\"\n",
        )
        .unwrap();
        Arc::new(Collector {
            config,
            store: Arc::new(Broken),
            vulnerabilities: Vec::new(),
            metrics: Metrics::new(),
            tls: None,
            notifier: Arc::new(webhook::Notifier::new(&[], Metrics::new().webhooks())),
        })
    }

    #[tokio::test]
    async fn a_failed_retention_pass_shows_in_the_metrics() {
        let collector = broken_collector();
        let started_s = (now_ms() / 1_000) as f64;
        retain(&collector).await;
        let text = collector.metrics.render();
        for (name, value) in [
            (
                "vigil_collector_retention_runs_total{result=\"failed\"}",
                1.0,
            ),
            ("vigil_collector_retention_runs_total{result=\"ok\"}", 0.0),
            ("vigil_collector_retention_last_run_ok", 0.0),
            (
                "vigil_collector_store_errors_total{operation=\"prune\"}",
                1.0,
            ),
        ] {
            assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
        }
        let last_run = sample(
            &text,
            "vigil_collector_retention_last_run_timestamp_seconds",
        );
        assert!(last_run.is_some_and(|s| s >= started_s), "{text}");
    }

    #[tokio::test]
    async fn metrics_are_served_when_the_store_cannot_count() {
        let collector = broken_collector();
        let response = api::metrics_page(&collector).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(
            sample(
                &text,
                "vigil_collector_store_errors_total{operation=\"read\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "vigil_collector_services"),
            Some(0.0),
            "{text}"
        );
    }
}
