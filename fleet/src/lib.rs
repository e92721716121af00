//! Client state shared by the replicas of a service, kept in Redis: the implementation of
//! `vigil-host`'s [`SharedState`] that `[state] redis` turns on.
//!
//! # Layout
//! - [`RedisState`]: the store. Guards call state synchronously, so each call is handed to a
//!   small runtime of its own (one thread; one multiplexed connection that redis-rs's
//!   connection manager re-establishes, or for a Redis Cluster redis-rs's cluster connection,
//!   one per primary, following slot moves) and waited for at most `timeout`.
//! - `scripts`: one Lua script per primitive that must be atomic (GCRA, window counters,
//!   distinct sets, bans), run with the server's clock.
//!
//! # When Redis is away
//! A call that fails or outlasts the timeout marks the store down, logs it once and counts a
//! fallback; while it is down no call waits: every primitive answers from the in-process
//! tables at once, or, with [`Fallback::Deny`], is refused and so is its request. A probe pings with backoff (100 ms doubling to 5 s) and marks it up again.
//! History records are queued and written in the background, batched into one pipeline (in a
//! cluster, one per client, since a pipeline cannot span hash slots) that also publishes them;
//! `mirror` keeps the histories asked about current from what the fleet publishes.
//!
//! # Keys in a cluster
//! Every script touches the keys of one hash slot: all but the ban scripts touch one key, and
//! the ban hash and its version share the hash tag `{bans}` (`PREFIX:{bans}`,
//! `PREFIX:{bans}:version`).

#![forbid(unsafe_code)]

mod mirror;
mod scripts;
mod synced;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Notify};
use vigil_host::state::{
    Ban, EventRecord, Fallback, SharedState, SharedStatus, Unavailable, MAX_BAN,
};
use vigil_host::Event;

/// Where the shared state is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redis {
    /// One server, or a proxy in front of a cluster: `redis://[user:password@]host:port/db`,
    /// or `rediss://…` for TLS.
    Server(String),
    /// A Redis Cluster, by the URLs of some of its nodes (the others are learnt from them);
    /// every key is in database 0, as a cluster has no other.
    Cluster(Vec<String>),
}

impl Redis {
    /// The URLs, passwords hidden, for messages.
    pub fn redacted(&self) -> String {
        match self {
            Redis::Server(url) => redact(url),
            Redis::Cluster(urls) => {
                let urls: Vec<String> = urls.iter().map(|u| redact(u)).collect();
                format!("cluster [{}]", urls.join(", "))
            }
        }
    }
}

/// How to reach Redis and how to lay state out in it.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The server or the cluster.
    pub redis: Redis,
    /// For `rediss://`: the CA to trust instead of the system's roots, and a client
    /// certificate to present. `None`: the system's roots, no client certificate.
    pub tls: Option<RedisTls>,
    /// Every key starts with `PREFIX:`, so several services can share one Redis.
    pub prefix: String,
    /// The longest a request waits for one state call before deciding on local tables.
    pub timeout: Duration,
    /// Events kept per client history (`state.history_depth`).
    pub history_depth: usize,
    /// A client's shared history expires this long after its last request
    /// (`state.idle_expiry`).
    pub history_ttl: Duration,
    /// Bans kept fleet-wide (`state.max_clients`).
    pub max_bans: usize,
    /// What guards' state calls get while Redis cannot answer (`state.fallback`).
    pub fallback: Fallback,
    /// `state.redis_sync`: decide rate limits, counters and distinct sets on this replica's
    /// view and reconcile it every this long; `None`: every call asks Redis (exact).
    pub sync: Option<Duration>,
    /// Limiters and counters with a view, each (`state.max_keys`).
    pub max_keys: usize,
    /// Distinct sets with a view (`state.max_distinct_sets`).
    pub max_sets: usize,
}

/// What a `rediss://` connection trusts and presents, as PEM bytes.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// CA certificates to trust instead of the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its private key, for a Redis that asks for one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A private key never reaches a log line.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// Why the shared store cannot be used; each names the setting and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The URL does not parse, or asks for something this build cannot do.
    #[error("{url:?} is not a usable Redis URL: {reason}")]
    BadUrl {
        /// The URL (or the cluster's URLs), passwords hidden.
        url: String,
        /// What the client library said.
        reason: String,
    },
    /// Redis answered but refused us (wrong password, no such database, …).
    #[error("Redis at {address} refused the connection: {reason}")]
    Refused {
        /// Host, port and database, without credentials.
        address: String,
        /// What the server said.
        reason: String,
    },
    /// The store's own thread or runtime could not start.
    #[error("cannot start the shared state store: {0}")]
    Start(String),
}

/// Keys longer than this are replaced by a hash of them, so neither a guard nor a client can
/// make Redis store long keys. SHA-256: the same on every replica, and not steerable into
/// collisions by whoever picks the keys.
const MAX_KEY_PART: usize = 128;
/// Longest route kept in a shared event.
const MAX_ROUTE_BYTES: usize = 1024;
/// Events waiting to be written; past this they are dropped and counted.
const RECORD_QUEUE: usize = 8192;
/// Events written in one pipeline at most.
const RECORD_BATCH: usize = 256;
/// How long the writer lets events gather after the first of a batch arrives: under load a
/// batch then carries many events in one write (and one message to peers) instead of a few,
/// which spares the workers, this thread and Redis a wake-up each; short enough that a peer
/// still sees an event within a few milliseconds of its response.
const RECORD_LINGER: Duration = Duration::from_millis(1);
/// Histories the mirror keeps at most (and at most `state.max_clients`): about 100 bytes per
/// event, so 64 MiB at the default depth of 32; past it, histories are read from Redis.
const MIRROR_CLIENTS: usize = 20_000;
/// Views sent at once in a sync round.
const SYNC_SLICE: usize = 128;
/// How often a replica looks whether the fleet's bans changed.
pub const BAN_SYNC: Duration = Duration::from_millis(250);
/// The first wait between probes of a Redis that went away; it doubles up to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(5);
/// Background work (probes, ban sync, history writes) waits at least this long for Redis:
/// no request waits for it.
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long start-up waits to learn whether Redis accepts us.
const START_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest TTL any key gets; a guard's `set` with a longer one is cut to it.
const MAX_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// The fleet's state in Redis. Dropping it stops its thread.
pub struct RedisState {
    inner: Arc<Inner>,
    _stop: oneshot::Sender<()>,
}

struct Inner {
    /// The store's own runtime: guards' calls arrive on the proxy's worker threads, each on
    /// its own current-thread runtime, where nothing can be awaited.
    handle: Handle,
    conn: Conn,
    /// For the sync rounds, the history writes and the ban sync.
    background: Conn,
    /// Whether `conn` is a cluster's: a pipeline must then keep to one hash slot.
    cluster: bool,
    prefix: String,
    /// Host, port and database, for logs.
    address: String,
    timeout: Duration,
    history_depth: usize,
    history_ttl_ms: u64,
    max_bans: usize,
    fallback: Fallback,
    up: AtomicBool,
    fallbacks: AtomicU64,
    records_dropped: AtomicU64,
    sync_rounds_failed: AtomicU64,
    sync_rounds: AtomicU64,
    sync_round_micros: AtomicU64,
    /// Milliseconds since the epoch of the last error logged for a call, so a storm of them
    /// writes one line every ten seconds.
    last_error_logged: AtomicU64,
    probe: Notify,
    records: mpsc::Sender<(String, String)>,
    /// The fleet's bans as last synchronised, by stored client key.
    bans: RwLock<HashMap<String, Ban>>,
    /// Whether `bans` holds any: a request looks no further while it does not.
    any_bans: AtomicBool,
    /// With `state.redis_sync`, the views calls are decided on.
    synced: Option<synced::Synced>,
    /// The histories asked about, kept current by what the fleet publishes: answered without
    /// a round trip.
    mirror: mirror::Mirror,
    /// Tells this replica's published events from its peers'.
    replica_id: String,
}

impl RedisState {
    /// Connects to the Redis server or cluster `config.redis` names. Fails when a URL is
    /// unusable or Redis refuses the credentials or database; when Redis cannot be reached the
    /// store starts down (local tables decide, as when it goes away later) and keeps trying.
    pub fn connect(config: FleetConfig) -> Result<RedisState, FleetError> {
        let bad_url = |e: RedisError| FleetError::BadUrl {
            url: config.redis.redacted(),
            reason: e.to_string(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| FleetError::Start(e.to_string()))?;
        let handle = runtime.handle().clone();
        // Both connections start their background work on the runtime they are made in.
        let entered = handle.enter();
        let (conn, address) = open_conn(&config).map_err(bad_url)?;
        // Background work gets a connection of its own, so that a request's call never waits
        // in line behind a sync round or a batch of history writes.
        let (background, _) = open_conn(&config).map_err(bad_url)?;
        drop(entered);
        let (records, queued) = mpsc::channel(RECORD_QUEUE);
        let inner = Arc::new(Inner {
            handle,
            cluster: matches!(conn, Conn::Cluster(_)),
            conn,
            background,
            prefix: config.prefix,
            address,
            timeout: config.timeout,
            history_depth: config.history_depth.max(1),
            history_ttl_ms: (config.history_ttl.as_millis() as u64).clamp(1, MAX_TTL_MS),
            max_bans: config.max_bans.max(1),
            fallback: config.fallback,
            up: AtomicBool::new(false),
            fallbacks: AtomicU64::new(0),
            records_dropped: AtomicU64::new(0),
            sync_rounds_failed: AtomicU64::new(0),
            sync_rounds: AtomicU64::new(0),
            sync_round_micros: AtomicU64::new(0),
            last_error_logged: AtomicU64::new(0),
            probe: Notify::new(),
            records,
            bans: RwLock::new(HashMap::new()),
            any_bans: AtomicBool::new(false),
            synced: config
                .sync
                .map(|every| synced::Synced::new(every, config.max_keys, config.max_sets)),
            // Exact or not: a history heard of is as fresh as one read, since events are
            // published in the same pipeline that writes them.
            mirror: mirror::Mirror::new(
                config.history_depth,
                (config.history_ttl.as_millis() as u64).max(1),
                config.max_bans.min(MIRROR_CLIENTS),
            ),
            replica_id: replica_id(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("vigil-fleet".into())
            .spawn(move || runtime.block_on(stopped))
            .map_err(|e| FleetError::Start(e.to_string()))?;

        match inner.wait(START_TIMEOUT, ping(inner.conn.clone())) {
            Ok(()) => {
                inner.up.store(true, Ordering::Relaxed);
                tracing::info!(redis = %inner.address, "client state is shared through Redis");
            }
            Err(Failure::Redis(e)) if !is_unreachable(&e) => {
                return Err(FleetError::Refused {
                    address: inner.address.clone(),
                    reason: e.to_string(),
                });
            }
            Err(failure) => {
                tracing::warn!(
                    redis = %inner.address,
                    error = %failure,
                    "cannot reach Redis at start: {} until it answers; retrying in the background",
                    inner.meanwhile()
                );
                inner.probe.notify_one();
            }
        }
        let background = inner.clone();
        inner.handle.spawn(background.clone().probe_loop());
        inner.handle.spawn(background.clone().ban_sync_loop());
        inner.handle.spawn(background.clone().write_records(queued));
        if inner.synced.is_some() {
            inner.handle.spawn(background.clone().sync_loop());
        }
        // A cluster passes what is published on any node to every node: one subscription to
        // any of them hears the fleet, and the next is tried when it fails.
        let urls = match &config.redis {
            Redis::Server(url) => std::slice::from_ref(url),
            Redis::Cluster(urls) => urls.as_slice(),
        };
        let clients = urls
            .iter()
            .map(|url| open_client(url, config.tls.as_ref()))
            .collect::<RedisResult<Vec<Client>>>()
            .map_err(bad_url)?;
        inner.handle.spawn(background.subscribe_loop(clients));
        Ok(RedisState { inner, _stop: stop })
    }

    /// Host, port and database, without credentials.
    pub fn address(&self) -> &str {
        &self.inner.address
    }
}

/// A connection to the server or cluster `config` names, and its address for logs.
fn open_conn(config: &FleetConfig) -> RedisResult<(Conn, String)> {
    Ok(match &config.redis {
        Redis::Server(url) => {
            let client = open_client(url, config.tls.as_ref())?;
            let info = client.get_connection_info();
            let address = format!("{}/{}", info.addr(), info.redis_settings().db());
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(START_TIMEOUT))
                .set_response_timeout(Some(BACKGROUND_TIMEOUT))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(2))
                .set_number_of_retries(2);
            let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
            (Conn::Server(manager), address)
        }
        Redis::Cluster(urls) => {
            let client = open_cluster(urls, config.tls.as_ref())?;
            let cluster_config = ClusterConfig::new()
                .set_connection_timeout(START_TIMEOUT)
                .set_response_timeout(BACKGROUND_TIMEOUT);
            let conn = client.get_pending_async_connection_with_config(cluster_config);
            (Conn::Cluster(conn), config.redis.redacted())
        }
    })
}

/// A client for `url`; for `rediss://` with [`RedisTls`], trusting its CA and presenting its
/// certificate.
fn open_client(url: &str, tls: Option<&RedisTls>) -> RedisResult<Client> {
    match tls {
        None => Client::open(url),
        Some(tls) => Client::build_with_tls(url, certificates(tls)),
    }
}

/// A client for the cluster some of whose nodes `urls` name, with TLS as [`open_client`].
fn open_cluster(urls: &[String], tls: Option<&RedisTls>) -> RedisResult<ClusterClient> {
    let mut builder = ClusterClient::builder(urls.iter().map(String::as_str));
    if let Some(tls) = tls {
        builder = builder.certs(certificates(tls));
    }
    builder.build()
}

fn certificates(tls: &RedisTls) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: tls
            .client
            .clone()
            .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: tls.ca.clone(),
    }
}

/// The connection every call goes through, to a server or to a cluster.
#[derive(Clone)]
enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Why a call did not answer.
enum Failure {
    Redis(RedisError),
    TimedOut(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Redis(e) => write!(f, "{e}"),
            Failure::TimedOut(after) => write!(f, "no answer within {after:?}"),
        }
    }
}

/// Whether the error says Redis could not be reached (rather than that it refused us). For a
/// cluster: no node reached, or slots without a primary while it fails over or re-forms.
fn is_unreachable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_cluster_error()
        || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
}

/// In a cluster, every primary is pinged: a cluster with one away cannot serve its slots.
async fn ping(mut conn: Conn) -> RedisResult<()> {
    redis::cmd("PING").query_async::<()>(&mut conn).await
}

impl Inner {
    /// Runs `op` on the store's runtime and waits for it at most `timeout`.
    fn wait<T, F>(&self, timeout: Duration, op: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: Future<Output = RedisResult<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let answer = tokio::time::timeout(timeout, op).await;
            let _ = tx.send(answer);
        });
        // The timer above ticks in whole milliseconds; this one is the bound a request sees.
        match rx.recv_timeout(timeout + Duration::from_millis(1)) {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(Failure::Redis(e)),
            Ok(Err(_)) | Err(_) => Err(Failure::TimedOut(timeout)),
        }
    }

    /// One state call on behalf of a request: answered, or [`Unavailable`] at once while the
    /// store is down, or after at most the timeout.
    fn call<T, F>(&self, what: &'static str, op: F) -> Result<T, Unavailable>
    where
        T: Send + 'static,
        F: Future<Output = RedisResult<T>> + Send + 'static,
    {
        if !self.up.load(Ordering::Relaxed) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable);
        }
        match self.wait(self.timeout, op) {
            Ok(value) => Ok(value),
            Err(failure) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.failed(what, &failure);
                Err(Unavailable)
            }
        }
    }

    /// What happens to guards' state calls while Redis is away, for the log.
    fn meanwhile(&self) -> &'static str {
        match self.fallback {
            Fallback::Local => {
                "deciding on this replica's own state tables (limits count this replica's \
                 traffic only meanwhile)"
            }
            Fallback::Deny => {
                "refusing with 503 every request whose guards need client state \
                 (state.fallback = \"deny\"); requests whose guards need none are served"
            }
        }
    }

    /// Marks the store down when Redis cannot be reached or is too slow; logs other errors
    /// (a refused command) at most once every ten seconds.
    fn failed(&self, what: &str, failure: &Failure) {
        let unreachable = match failure {
            Failure::TimedOut(_) => true,
            Failure::Redis(e) => is_unreachable(e),
        };
        if unreachable {
            if self.up.swap(false, Ordering::Relaxed) {
                tracing::warn!(
                    redis = %self.address,
                    call = what,
                    error = %failure,
                    fallback = self.fallback.as_str(),
                    "Redis is unavailable: {} until it is back",
                    self.meanwhile()
                );
                self.probe.notify_one();
            }
            return;
        }
        let now = now_ms();
        let last = self.last_error_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_error_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let answered = match self.fallback {
                Fallback::Local => "answered from local tables",
                Fallback::Deny => "its request is refused (503)",
            };
            tracing::warn!(redis = %self.address, call = what, error = %failure, "Redis refused a state call; {answered}");
        }
    }

    async fn probe_loop(self: Arc<Self>) {
        loop {
            self.probe.notified().await;
            let mut wait = PROBE_FIRST;
            while !self.up.load(Ordering::Relaxed) {
                tokio::time::sleep(wait).await;
                // Both connections: the background one broke in the same outage, and would
                // otherwise report it again on its first write.
                let both = async {
                    ping(self.conn.clone()).await?;
                    ping(self.background.clone()).await
                };
                if in_background(both).await.is_ok() {
                    self.up.store(true, Ordering::Relaxed);
                    let again = match self.fallback {
                        Fallback::Local => "client state is fleet-wide again",
                        Fallback::Deny => {
                            "requests whose guards need client state are served again (no more 503)"
                        }
                    };
                    tracing::info!(redis = %self.address, fallback = self.fallback.as_str(), "Redis answers again: {again}");
                    break;
                }
                wait = (wait * 2).min(PROBE_MAX);
            }
        }
    }

    async fn ban_sync_loop(self: Arc<Self>) {
        let mut seen: Option<Option<i64>> = None;
        let mut tick = tokio::time::interval(BAN_SYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.up.load(Ordering::Relaxed) {
                continue;
            }
            let mut conn = self.background.clone();
            let version = in_background(
                redis::cmd("GET")
                    .arg(self.bans_version_key())
                    .query_async::<Option<i64>>(&mut conn),
            )
            .await;
            let version = match version {
                Ok(v) => v,
                Err(failure @ Failure::Redis(_)) => {
                    self.failed("ban sync", &failure);
                    continue;
                }
                Err(Failure::TimedOut(_)) => continue,
            };
            if seen == Some(version) {
                continue;
            }
            let all = in_background(
                redis::cmd("HGETALL")
                    .arg(self.bans_key())
                    .query_async::<HashMap<String, String>>(&mut conn),
            )
            .await;
            let Ok(all) = all else { continue };
            let now = now_ms();
            let bans: HashMap<String, Ban> = all
                .into_iter()
                .filter_map(|(client, value)| Some((client, decode_ban(&value)?)))
                .filter(|(_, ban)| ban.until_ms > now)
                .collect();
            self.any_bans.store(!bans.is_empty(), Ordering::Relaxed);
            *self.bans.write().unwrap_or_else(|p| p.into_inner()) = bans;
            seen = Some(version);
        }
    }

    async fn write_records(self: Arc<Self>, mut queued: mpsc::Receiver<(String, String)>) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        while queued.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            if batch.len() < RECORD_BATCH {
                tokio::time::sleep(RECORD_LINGER).await;
                while batch.len() < RECORD_BATCH {
                    let Ok(record) = queued.try_recv() else { break };
                    batch.push(record);
                }
            }
            if !self.up.load(Ordering::Relaxed) {
                self.records_dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                continue;
            }
            if let Err(failure) = in_background(self.write(&batch)).await {
                self.records_dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.failed("record", &failure);
            }
            batch.clear();
        }
    }

    /// Every `state.redis_sync`, sends each view used since the last round with what this
    /// replica added, a slice at a time (the connection pipelines each), and takes the fleet's
    /// state back. A round that fails puts back what it took out, for the next.
    async fn sync_loop(self: Arc<Self>) {
        let Some(views) = &self.synced else { return };
        let mut tick = tokio::time::interval(views.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.up.load(Ordering::Relaxed) {
                continue;
            }
            let started = std::time::Instant::now();
            let mut failure = None;
            let mut outgoing = views.outgoing();
            while !outgoing.is_empty() {
                // In slices, so Redis serves requests' own calls in between.
                let rest = outgoing.split_off(outgoing.len().min(SYNC_SLICE));
                let slice = std::mem::replace(&mut outgoing, rest);
                let sent = if self.cluster {
                    self.sync_each(views, slice).await
                } else {
                    self.sync_at_once(views, slice).await
                };
                if let Err(e) = sent {
                    failure = Some(e);
                }
            }
            self.sync_rounds.fetch_add(1, Ordering::Relaxed);
            self.sync_round_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            if let Some(failure) = failure {
                self.sync_rounds_failed.fetch_add(1, Ordering::Relaxed);
                self.failed("sync", &failure);
            }
        }
    }

    /// Sends a slice of a sync round to one server in one script ([`scripts::SYNC`]); a
    /// failure puts every view of the slice back.
    async fn sync_at_once(
        &self,
        views: &synced::Synced,
        slice: Vec<(String, synced::Outgoing)>,
    ) -> Result<(), Failure> {
        use synced::Outgoing;
        let mut invocation = scripts::SYNC.prepare_invoke();
        for (key, sent) in &slice {
            invocation.key(key);
            match sent {
                Outgoing::Rate(interval_ms, burst, taken) => {
                    invocation
                        .arg("r")
                        .arg(*interval_ms)
                        .arg((*burst).max(1))
                        .arg(MAX_TTL_MS)
                        .arg(*taken);
                }
                Outgoing::Count(delta, window_ms) => {
                    invocation.arg("c").arg(*delta).arg(*window_ms);
                }
                Outgoing::Distinct(members, window_ms, cap) => {
                    invocation
                        .arg("d")
                        .arg(*window_ms)
                        .arg(*cap)
                        .arg(members.len())
                        .arg(members);
                }
            }
        }
        let mut conn = self.background.clone();
        let failure = match in_background(invocation.invoke_async::<Vec<i64>>(&mut conn)).await {
            Ok(values) if values.len() == slice.len() => {
                for ((key, sent), value) in slice.into_iter().zip(values) {
                    views.incoming(&key, sent.answered(value));
                }
                return Ok(());
            }
            Ok(values) => Failure::Redis(RedisError::from((
                redis::ErrorKind::Parse,
                "a sync script answered for the wrong number of keys",
                format!("{} answers for {} keys", values.len(), slice.len()),
            ))),
            Err(failure) => failure,
        };
        for (key, sent) in slice {
            views.restore(&key, sent);
        }
        Err(failure)
    }

    /// Sends a slice of a sync round to a cluster, one script per view (a script's keys must
    /// share a slot there), all at once; a view whose call failed is put back.
    async fn sync_each(
        &self,
        views: &synced::Synced,
        slice: Vec<(String, synced::Outgoing)>,
    ) -> Result<(), Failure> {
        let mut calls = tokio::task::JoinSet::new();
        for (key, sent) in slice {
            let mut conn = self.background.clone();
            calls.spawn(async move {
                let answer = in_background(sync_one(&mut conn, &key, &sent)).await;
                (key, sent, answer)
            });
        }
        let mut result = Ok(());
        while let Some(done) = calls.join_next().await {
            let Ok((key, sent, answer)) = done else {
                continue;
            };
            match answer {
                Ok(value) => views.incoming(&key, sent.answered(value)),
                Err(failure) => {
                    views.restore(&key, sent);
                    result = Err(failure);
                }
            }
        }
        result
    }

    /// Keeps the mirror fed with the events the fleet publishes, resubscribing with backoff
    /// (to a cluster, through its nodes in turn); the mirror answers only while subscribed.
    async fn subscribe_loop(self: Arc<Self>, clients: Vec<Client>) {
        use futures_util::StreamExt;
        let mirror = &self.mirror;
        let mut wait = PROBE_FIRST;
        for client in clients.iter().cycle() {
            let subscribed = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(self.events_channel()).await?;
                RedisResult::Ok(pubsub)
            };
            match tokio::time::timeout(BACKGROUND_TIMEOUT, subscribed).await {
                Ok(Ok(mut pubsub)) => {
                    mirror.set_live(true);
                    wait = PROBE_FIRST;
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        self.mirror_published(mirror, message.get_payload_bytes());
                    }
                    mirror.set_live(false);
                    tracing::debug!(redis = %self.address, "the fleet's event subscription ended; histories are read from Redis until it is back");
                }
                _ => mirror.set_live(false),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(PROBE_MAX);
        }
    }

    /// Adds a peer's published batch to the mirror; this replica's own are there already.
    fn mirror_published(&self, mirror: &mirror::Mirror, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let mut fields = Framed(text);
        if fields.next() != Some(self.replica_id.as_str()) {
            while let (Some(key), Some(event)) = (fields.next(), fields.next()) {
                if let Some(event) = decode_event(event) {
                    mirror.add(key, event);
                }
            }
        }
    }

    fn events_channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Writes a batch of history records: one pipeline to a server; to a cluster one per
    /// client, all at once, since a pipeline's keys must share a hash slot there.
    async fn write(&self, batch: &[(String, String)]) -> RedisResult<()> {
        // The message to peers goes after the writes: a replica that reads a history on
        // hearing of it finds them.
        let mut message = String::new();
        frame(&mut message, &self.replica_id);
        for (key, event) in batch {
            frame(&mut message, key);
            frame(&mut message, event);
        }
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.events_channel()).arg(message);
        if !self.cluster {
            let mut pipe = redis::pipe();
            for (key, events) in by_client(batch) {
                self.push_events(&mut pipe, key, &events);
            }
            pipe.add_command(publish).ignore();
            return pipe.query_async::<()>(&mut self.background.clone()).await;
        }
        let mut writes = tokio::task::JoinSet::new();
        for (key, events) in by_client(batch) {
            let mut pipe = redis::pipe();
            self.push_events(&mut pipe, key, &events);
            let mut conn = self.background.clone();
            writes.spawn(async move { pipe.query_async::<()>(&mut conn).await });
        }
        let mut result = Ok(());
        while let Some(done) = writes.join_next().await {
            if let Ok(Err(e)) = done {
                result = Err(e);
            }
        }
        result?;
        publish.query_async(&mut self.background.clone()).await
    }

    /// One client's events of a batch, oldest first: one `LPUSH` leaves the newest at the
    /// head, then one trim and one TTL for them all.
    fn push_events(&self, pipe: &mut Pipeline, key: &str, events: &[&str]) {
        pipe.cmd("LPUSH").arg(key).arg(events).ignore();
        pipe.cmd("LTRIM")
            .arg(key)
            .arg(0)
            .arg(self.history_depth as i64 - 1)
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(key)
            .arg(self.history_ttl_ms)
            .ignore();
    }

    fn client_key(&self, kind: &str, client: &str) -> String {
        let client = bounded(client);
        // Sized once: keys are made on every state call.
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + client.len() + 2);
        let _ = write!(key, "{}:{kind}:{client}", self.prefix);
        key
    }

    /// A guard's key: the guard's name is length-prefixed, so no choice of names and keys
    /// makes two guards share one.
    fn guard_key(&self, kind: &str, guard: &str, key: &str) -> String {
        let (guard, key) = (bounded(guard), bounded(key));
        // Sized once, as for client keys; 20 digits hold any length.
        let mut out =
            String::with_capacity(self.prefix.len() + kind.len() + guard.len() + key.len() + 24);
        let _ = write!(out, "{}:{kind}:{}:{guard}:{key}", self.prefix, guard.len());
        out
    }

    /// The fleet's ban hash. The ban scripts touch it and its version together: the hash tag
    /// keeps both in one slot of a cluster.
    fn bans_key(&self) -> String {
        format!("{}:{{bans}}", self.prefix)
    }

    fn bans_version_key(&self) -> String {
        format!("{}:{{bans}}:version", self.prefix)
    }
}

impl RedisState {
    /// The newest `limit` events of the history under `key`, read from Redis.
    fn read_history(&self, key: String, limit: usize) -> Result<Vec<Event>, Unavailable> {
        let mut conn = self.inner.conn.clone();
        let events = self.inner.call("history", async move {
            redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(limit as i64 - 1)
                .query_async::<Vec<String>>(&mut conn)
                .await
        })?;
        Ok(events.iter().filter_map(|e| decode_event(e)).collect())
    }

    /// After the mirror had no answer: the history under `key` read from Redis, all of its
    /// depth so that the mirror keeps it for the next question, and its newest `limit` returned.
    fn read_to_keep(&self, key: String, limit: usize) -> Result<Vec<Event>, Unavailable> {
        let mirror = &self.inner.mirror;
        if !mirror.begin_read(&key, now_ms()) {
            return self.read_history(key, limit);
        }
        let read = self.read_history(key.clone(), self.inner.history_depth);
        mirror.end_read(&key, read.as_deref().ok());
        let mut events = read?;
        events.truncate(limit);
        Ok(events)
    }
}

impl SharedState for RedisState {
    fn history(&self, client: &str, limit: usize) -> Result<Vec<Event>, Unavailable> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.inner.client_key("h", client);
        if let Some(events) = self.inner.mirror.history(&key, limit, now_ms()) {
            return Ok(events);
        }
        self.read_to_keep(key, limit)
    }

    fn any_event(
        &self,
        client: &str,
        limit: usize,
        check: &mut dyn FnMut(&Event) -> bool,
    ) -> Result<bool, Unavailable> {
        let key = self.inner.client_key("h", client);
        if let Some(found) = self.inner.mirror.any(&key, limit, now_ms(), check) {
            return Ok(found);
        }
        let events = self.read_to_keep(key, limit)?;
        Ok(events.iter().any(check))
    }

    fn record(&self, client: &str, event: &EventRecord<'_>) {
        let queued = (self.inner.client_key("h", client), encode_event(event));
        self.inner.mirror.add(&queued.0, shared_event(event));
        if self.inner.records.try_send(queued).is_err() {
            self.inner.records_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn rate(
        &self,
        guard: &str,
        key: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Result<(), u32>, Unavailable> {
        let key = self.inner.guard_key("r", guard, key);
        let interval_ms = 1000.0 / per_second;
        let synced = self.inner.synced.as_ref();
        if let Some(answer) = synced.and_then(|views| views.rate(&key, interval_ms, burst)) {
            return Ok(answer);
        }
        let mut conn = self.inner.conn.clone();
        let script_key = key.clone();
        let (wait, ahead) = self.inner.call("rate", async move {
            scripts::RATE
                .key(script_key)
                .arg(interval_ms)
                .arg(burst.max(1))
                .arg(MAX_TTL_MS)
                .arg(0)
                .arg(1)
                .invoke_async::<(u64, i64)>(&mut conn)
                .await
        })?;
        if let Some(views) = synced {
            views.seed_rate(&key, interval_ms, burst, ahead);
        }
        Ok(match wait {
            0 => Ok(()),
            ms => Err(ms.min(u32::MAX as u64) as u32),
        })
    }

    fn count(
        &self,
        guard: &str,
        key: &str,
        delta: i64,
        window_ms: u64,
    ) -> Result<i64, Unavailable> {
        let key = self.inner.guard_key("c", guard, key);
        let window_ms = window_ms.min(MAX_TTL_MS);
        let synced = self.inner.synced.as_ref();
        if let Some(total) = synced.and_then(|views| views.count(&key, delta, window_ms)) {
            return Ok(total);
        }
        let mut conn = self.inner.conn.clone();
        let script_key = key.clone();
        let total = self.inner.call("count", async move {
            scripts::COUNT
                .key(script_key)
                .arg(delta)
                .arg(window_ms)
                .invoke_async::<i64>(&mut conn)
                .await
        })?;
        if let Some(views) = synced {
            views.seed_count(&key, window_ms, total);
        }
        Ok(total)
    }

    fn distinct(
        &self,
        guard: &str,
        key: &str,
        member: &str,
        window_ms: u64,
        cap: usize,
    ) -> Result<u32, Unavailable> {
        let key = self.inner.guard_key("d", guard, key);
        let member = bounded(member);
        let window_ms = window_ms.min(MAX_TTL_MS);
        let synced = self.inner.synced.as_ref();
        if let Some(size) = synced.and_then(|views| views.distinct(&key, &member, window_ms, cap)) {
            return Ok(size);
        }
        let mut conn = self.inner.conn.clone();
        let (script_key, script_member) = (key.clone(), member.to_string());
        let size = self.inner.call("distinct", async move {
            scripts::DISTINCT
                .key(script_key)
                .arg(window_ms)
                .arg(cap)
                .arg(script_member)
                .invoke_async::<u32>(&mut conn)
                .await
        })?;
        if let Some(views) = synced {
            views.seed_distinct(&key, &member, window_ms, cap, size);
        }
        Ok(size)
    }

    fn get(&self, guard: &str, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        let key = self.inner.guard_key("v", guard, key);
        let mut conn = self.inner.conn.clone();
        self.inner.call("get", async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
        })
    }

    fn set(&self, guard: &str, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), Unavailable> {
        let key = self.inner.guard_key("v", guard, key);
        let value = value.to_vec();
        let mut conn = self.inner.conn.clone();
        self.inner.call("set", async move {
            // A zero TTL stores a value already expired, as the in-process table does.
            if ttl_ms == 0 {
                return redis::cmd("DEL")
                    .arg(key)
                    .query_async::<()>(&mut conn)
                    .await;
            }
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms.min(MAX_TTL_MS))
                .query_async::<()>(&mut conn)
                .await
        })
    }

    fn place_ban(&self, client: &str, ban: &Ban) -> Result<(), Unavailable> {
        let client = bounded(client).into_owned();
        let (hash, version) = (self.inner.bans_key(), self.inner.bans_version_key());
        let value = encode_ban(ban);
        let cap = self.inner.max_bans;
        let mut conn = self.inner.conn.clone();
        let field = client.clone();
        self.inner.call("ban", async move {
            scripts::PLACE_BAN
                .key(hash)
                .key(version)
                .arg(field)
                .arg(value)
                .arg(cap)
                .arg(MAX_BAN.as_millis() as u64)
                .invoke_async::<()>(&mut conn)
                .await
        })?;
        // This replica refuses the client from its next request on; its peers within a sync.
        let mut bans = self.inner.bans.write().unwrap_or_else(|p| p.into_inner());
        bans.insert(client, ban.clone());
        self.inner.any_bans.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn cached_ban(&self, client: &str, now_ms: u64) -> Option<Ban> {
        if !self.inner.any_bans.load(Ordering::Relaxed) {
            return None;
        }
        let bans = self.inner.bans.read().unwrap_or_else(|p| p.into_inner());
        bans.get(bounded(client).as_ref())
            .filter(|ban| ban.until_ms > now_ms)
            .cloned()
    }

    fn lift_ban(&self, client: &str) -> Result<bool, Unavailable> {
        let client = bounded(client).into_owned();
        let (hash, version) = (self.inner.bans_key(), self.inner.bans_version_key());
        let mut conn = self.inner.conn.clone();
        let field = client.clone();
        let lifted = self.inner.call("lift ban", async move {
            scripts::LIFT_BAN
                .key(hash)
                .key(version)
                .arg(field)
                .arg(now_ms())
                .arg(MAX_BAN.as_millis() as u64)
                .invoke_async::<i64>(&mut conn)
                .await
        })?;
        self.inner
            .bans
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&client);
        Ok(lifted == 1)
    }

    fn bans(&self, now_ms: u64) -> Result<Vec<(String, Ban)>, Unavailable> {
        let hash = self.inner.bans_key();
        let mut conn = self.inner.conn.clone();
        let all = self.inner.call("bans", async move {
            redis::cmd("HGETALL")
                .arg(hash)
                .query_async::<HashMap<String, String>>(&mut conn)
                .await
        })?;
        let mut bans: Vec<(String, Ban)> = all
            .into_iter()
            .filter_map(|(client, value)| Some((client, decode_ban(&value)?)))
            .filter(|(_, ban)| ban.until_ms > now_ms)
            .collect();
        bans.sort_by(|a, b| (a.1.until_ms, &a.0).cmp(&(b.1.until_ms, &b.0)));
        Ok(bans)
    }

    fn forget_client(&self, client: &str) -> Result<bool, Unavailable> {
        let history = self.inner.client_key("h", client);
        let had_history = {
            let mut conn = self.inner.conn.clone();
            self.inner.call("forget", async move {
                redis::cmd("DEL")
                    .arg(history)
                    .query_async::<i64>(&mut conn)
                    .await
            })? > 0
        };
        Ok(self.lift_ban(client)? | had_history)
    }

    fn status(&self) -> SharedStatus {
        SharedStatus {
            up: self.inner.up.load(Ordering::Relaxed),
            fallbacks: self.inner.fallbacks.load(Ordering::Relaxed),
            records_dropped: self.inner.records_dropped.load(Ordering::Relaxed),
            views: self.inner.synced.as_ref().map_or(0, |v| v.views() as u64),
            sync_rounds_failed: self.inner.sync_rounds_failed.load(Ordering::Relaxed),
            sync_rounds: self.inner.sync_rounds.load(Ordering::Relaxed),
            sync_round_micros: self.inner.sync_round_micros.load(Ordering::Relaxed),
        }
    }

    fn fallback(&self) -> Fallback {
        self.inner.fallback
    }
}

/// One view of a sync round sent on its own: what this replica added; the integer its script
/// answers with the fleet's state.
async fn sync_one(conn: &mut Conn, key: &str, sent: &synced::Outgoing) -> RedisResult<i64> {
    use synced::Outgoing;
    match sent {
        Outgoing::Rate(interval_ms, burst, taken) => {
            let (_, ahead) = scripts::RATE
                .key(key)
                .arg(*interval_ms)
                .arg((*burst).max(1))
                .arg(MAX_TTL_MS)
                .arg(*taken)
                .arg(0)
                .invoke_async::<(u64, i64)>(conn)
                .await?;
            Ok(ahead)
        }
        Outgoing::Count(delta, window_ms) => {
            scripts::COUNT
                .key(key)
                .arg(*delta)
                .arg(*window_ms)
                .invoke_async(conn)
                .await
        }
        Outgoing::Distinct(members, window_ms, cap) => {
            scripts::DISTINCT
                .key(key)
                .arg(*window_ms)
                .arg(*cap)
                .arg(members)
                .invoke_async(conn)
                .await
        }
    }
}

/// Background work on Redis, waited for at most [`BACKGROUND_TIMEOUT`].
async fn in_background<T>(op: impl Future<Output = RedisResult<T>>) -> Result<T, Failure> {
    match tokio::time::timeout(BACKGROUND_TIMEOUT, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure::Redis(e)),
        Err(_) => Err(Failure::TimedOut(BACKGROUND_TIMEOUT)),
    }
}

/// A batch of `(key, event)` records grouped by key, keys in the order they first appear and
/// each key's events in the batch's order.
fn by_client(batch: &[(String, String)]) -> Vec<(&str, Vec<&str>)> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
    for (key, event) in batch {
        let at = *index.entry(key).or_insert_with(|| {
            grouped.push((key, Vec::new()));
            grouped.len() - 1
        });
        grouped[at].1.push(event);
    }
    grouped
}

/// A mutex's guard, even after a panic elsewhere poisoned it: the tables stay usable.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// `part` itself when short, else `#` and 32 hex digits of its SHA-256.
fn bounded(part: &str) -> Cow<'_, str> {
    if part.len() <= MAX_KEY_PART {
        return Cow::Borrowed(part);
    }
    let digest = Sha256::digest(part.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    Cow::Owned(format!("#{hex}"))
}

/// `at\tstatus\tflags\tmethod\troute`: methods are tokens and hold no tab, the route comes
/// last and may hold anything.
fn encode_event(event: &EventRecord<'_>) -> String {
    let flags = event.public as u8 | (event.authenticated as u8) << 1;
    format!(
        "{}\t{}\t{flags}\t{}\t{}",
        event.at_ms,
        event.status,
        event.method,
        kept_route(event.route)
    )
}

/// The event as peers decode it from [`encode_event`], made without the round trip.
fn shared_event(event: &EventRecord<'_>) -> Event {
    Event {
        at_ms: event.at_ms,
        status: event.status,
        public: event.public,
        authenticated: event.authenticated,
        method: event.method.to_string(),
        route: kept_route(event.route).to_string(),
    }
}

/// The route as shared events keep it: at most [`MAX_ROUTE_BYTES`], cut on a character.
fn kept_route(route: &str) -> &str {
    let mut end = route.len().min(MAX_ROUTE_BYTES);
    while !route.is_char_boundary(end) {
        end -= 1;
    }
    &route[..end]
}

fn decode_event(text: &str) -> Option<Event> {
    let mut fields = text.splitn(5, '\t');
    let at_ms = fields.next()?.parse().ok()?;
    let status = fields.next()?.parse().ok()?;
    let flags: u8 = fields.next()?.parse().ok()?;
    Some(Event {
        at_ms,
        status,
        public: flags & 1 != 0,
        authenticated: flags & 2 != 0,
        method: fields.next()?.to_string(),
        route: fields.next()?.to_string(),
    })
}

/// Appends `field` to a published message as `LENGTH:FIELD`, so keys and routes may hold any
/// character.
fn frame(message: &mut String, field: &str) {
    message.push_str(&field.len().to_string());
    message.push(':');
    message.push_str(field);
}

/// The fields of a message [`frame`] made; stops at the first malformed one.
struct Framed<'a>(&'a str);

impl<'a> Iterator for Framed<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let (length, rest) = self.0.split_once(':')?;
        let length: usize = length.parse().ok()?;
        let field = rest.get(..length)?;
        self.0 = &rest[length..];
        Some(field)
    }
}

/// A random id for this replica's published messages.
fn replica_id() -> String {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new();
    format!("{:016x}", random.hash_one((std::process::id(), now_ms())))
}

fn encode_ban(ban: &Ban) -> String {
    let reason: String = ban.reason.chars().take(1024).collect();
    format!("{}\t{}\t{reason}", ban.until_ms, ban.by)
}

fn decode_ban(text: &str) -> Option<Ban> {
    let mut fields = text.splitn(3, '\t');
    Some(Ban {
        until_ms: fields.next()?.parse().ok()?,
        by: fields.next()?.into(),
        reason: fields.next()?.to_string(),
    })
}

/// The URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_their_encoding_whatever_the_route_holds() {
        let event = EventRecord {
            at_ms: 1_700_000_000_123,
            method: "POST",
            route: "/odd\tpath/{id}",
            status: 201,
            public: true,
            authenticated: false,
        };
        let decoded = decode_event(&encode_event(&event)).unwrap();
        assert_eq!(decoded.at_ms, event.at_ms);
        assert_eq!(decoded.method, "POST");
        assert_eq!(decoded.route, "/odd\tpath/{id}");
        assert_eq!(decoded.status, 201);
        assert!(decoded.public && !decoded.authenticated);
        assert!(decode_event("garbage").is_none());
    }

    #[test]
    fn a_replicas_own_event_is_kept_as_its_peers_decode_it() {
        // Long enough to be cut, and cut inside a character.
        let route = format!("/{}", "é".repeat(MAX_ROUTE_BYTES));
        let event = EventRecord {
            at_ms: 1_700_000_000_123,
            method: "GET",
            route: &route,
            status: 404,
            public: false,
            authenticated: true,
        };
        let (own, decoded) = (
            shared_event(&event),
            decode_event(&encode_event(&event)).unwrap(),
        );
        assert!(own.route.len() <= MAX_ROUTE_BYTES && own.route.len() > MAX_ROUTE_BYTES - 2);
        assert_eq!(
            (
                own.at_ms,
                own.status,
                own.public,
                own.authenticated,
                own.method,
                own.route
            ),
            (
                decoded.at_ms,
                decoded.status,
                decoded.public,
                decoded.authenticated,
                decoded.method,
                decoded.route
            )
        );
    }

    #[test]
    fn a_batch_is_written_one_push_per_client_in_the_order_served() {
        let batch: Vec<(String, String)> =
            [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("a", "5")]
                .iter()
                .map(|(k, e)| (k.to_string(), e.to_string()))
                .collect();
        assert_eq!(
            by_client(&batch),
            [
                ("a", vec!["1", "3", "5"]),
                ("b", vec!["2"]),
                ("c", vec!["4"])
            ]
        );
    }

    #[test]
    fn long_key_parts_are_hashed_the_same_everywhere() {
        assert_eq!(bounded("short"), "short");
        let long = "k".repeat(MAX_KEY_PART + 1);
        let hashed = bounded(&long);
        assert_eq!(hashed.len(), 33);
        assert_eq!(hashed, bounded(&long), "stable across calls and processes");
        assert_ne!(hashed, bounded(&"j".repeat(MAX_KEY_PART + 1)));
    }

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redact("redis://app:s3cret@cache:6379/2"),
            "redis://app:***@cache:6379/2"
        );
        assert_eq!(redact("rediss://:s3cret@cache/0"), "rediss://:***@cache/0");
        assert_eq!(redact("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact("not a url"), "not a url");
    }
}
