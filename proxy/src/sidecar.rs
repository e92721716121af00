//! The running sidecar's shared parts: the guard runtime and its current chain, the route
//! table, the client policy, the upstream client, the inventory, metrics, readiness, and hot
//! reload.

use crate::access_log::AccessLog;
use crate::config::{Config, Listen, Overrides, Reporting, RequestIdPolicy, Upstream};
use crate::exposure::inventory::Inventory;
use crate::forward::normalize::PathPolicy;
use crate::forward::upstream::UpstreamProbe;
use crate::identity::{Allowlist, ClientPolicy};
use crate::metrics::{Format, Metrics};
use crate::respond::X_REQUEST_ID;
use crate::routing::{ApiSpec, RouteTable};
use crate::serve::peers::PeerConnections;
use anyhow::Context as _;
use http::HeaderMap;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use vigil_common::tls::TlsListener;
use vigil_host::clock::{SharedClock, SystemClock};
use vigil_host::state::Ban;
use vigil_host::{Chain, GuardSource, GuardSpec, Runtime, RuntimeConfig};

/// Everything a request needs, shared by all connections.
pub struct Sidecar {
    /// The guard runtime; its state survives reloads.
    pub runtime: Runtime,
    chain: RwLock<Arc<Chain>>,
    /// Route templates.
    pub routes: RouteTable,
    /// Client resolution.
    pub clients: ClientPolicy,
    /// The upstream; each worker keeps its own pool of connections to it.
    pub upstream: Upstream,
    /// Client connections open now, across all workers (`listen.max_connections`).
    pub connections: Arc<Semaphore>,
    /// Client connections open now by address (`listen.max_connections_per_ip`).
    pub peers: Arc<PeerConnections>,
    /// Metrics.
    pub metrics: Metrics,
    /// The access log, when `[access_log]` names a destination.
    pub access_log: Option<Arc<AccessLog>>,
    /// Which endpoints are reached, by whom, with what outcome.
    pub inventory: Inventory,
    /// Listener limits.
    pub listen: Listen,
    /// The listener's TLS configuration, read again by every reload; `None`: plain HTTP.
    pub tls: Option<TlsListener>,
    /// How request paths are normalised.
    pub path: PathPolicy,
    /// Where reports go, if anywhere; the reporter starts with the sidecar's serving.
    pub reporting: Option<Reporting>,
    /// Clients that skip the guards; swapped by a reload.
    allowlist: RwLock<Allowlist>,
    /// The settings in force, as `GET /config` shows them.
    effective: RwLock<serde_json::Value>,
    /// `None`: started without a file, so a reload builds from the overrides again.
    config_path: Option<PathBuf>,
    overrides: Overrides,
    /// Whether the upstream accepts connections, for `/readyz`; `None` when readiness does
    /// not depend on it.
    upstream_probe: Option<UpstreamProbe>,
    /// The settings a reload cannot change, as they were at start.
    fixed_sections: toml::Table,
    ready: AtomicBool,
    request_prefix: u32,
    request_counter: AtomicU64,
    /// The runtime's lifetime count of dropped findings already passed to the inventory.
    guard_findings_lost: AtomicU64,
    /// Serialises reloads: two at once would race to swap.
    reloading: Mutex<()>,
    watched: Mutex<Vec<(PathBuf, Option<SystemTime>)>>,
}

/// What a successful reload loaded.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// Names of the guards now serving, in order.
    pub guards: Vec<String>,
    /// Sections of the file that changed but keep their start-up settings until a restart.
    pub needs_restart: Vec<String>,
}

impl Sidecar {
    /// Starts the runtime and loads the configured chain; any error here is fatal.
    pub fn new(config: Config, overrides: Overrides) -> anyhow::Result<Sidecar> {
        Sidecar::with_clock(config, overrides, Arc::new(SystemClock))
    }

    /// The same, on `clock` rather than the system's (a replay drives it from a log).
    pub fn with_clock(
        config: Config,
        overrides: Overrides,
        clock: SharedClock,
    ) -> anyhow::Result<Sidecar> {
        let sandbox = &config.sandbox;
        let shared_state = match &config.fleet {
            Some(fleet) => {
                let store = vigil_fleet::RedisState::connect(fleet.clone())
                    .map_err(|e| anyhow::anyhow!("{}: state.redis: {e}", config.source()))?;
                Some(Arc::new(store) as Arc<dyn vigil_host::state::SharedState>)
            }
            None => None,
        };
        let runtime = Runtime::new(RuntimeConfig {
            state: config.state.clone(),
            shared_state,
            max_instances: sandbox.max_instances,
            max_guard_memory: sandbox.max_guard_memory_bytes,
            clock,
            ..RuntimeConfig::default()
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "{e:#}; each instance reserves about 8 GiB of address space (not memory): lower \
                 sandbox.max_instances (now {}) in {}, or raise the process's address-space \
                 limit (ulimit -v)",
                sandbox.max_instances,
                config.source()
            )
        })?;
        let chain = load_chain(&runtime, &config.guards, config.listen.workers)?;
        let spec = match &config.api.spec {
            Some(path) => Some(
                ApiSpec::load(path)
                    .map_err(|e| anyhow::anyhow!("{}: api.spec: {e}", config.source()))?,
            ),
            None => None,
        };
        let inventory = Inventory::new(
            config.inventory.clone(),
            config.api.internal_only.clone(),
            spec.as_ref(),
            &config
                .report
                .as_ref()
                .map(|report| report.version.clone())
                .unwrap_or_default(),
            runtime.state().clock().now_ms(),
        );
        let routes = RouteTable::new(config.api.routes.clone(), spec, config.api.max_routes)
            .map_err(|e| anyhow::anyhow!("{}: api.routes: {e}", config.source()))?;
        let tls = match &config.listen.tls {
            Some(files) => Some(
                TlsListener::load(files.clone(), &[b"h2", b"http/1.1"])
                    .map_err(|e| anyhow::anyhow!("{}: {e}", config.source()))?,
            ),
            None => None,
        };
        let watched = watch_list(&config);
        let metrics = Metrics::new();
        let access_log = match &config.access_log {
            Some(log) => Some(Arc::new(
                AccessLog::open(log, metrics.access_log.clone()).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: access_log.path: cannot open {}: {e}",
                        config.source(),
                        log.output.describe()
                    )
                })?,
            )),
            None => None,
        };
        Ok(Sidecar {
            runtime,
            chain: RwLock::new(Arc::new(chain)),
            routes,
            clients: config.client.clone(),
            upstream: config.upstream.clone(),
            connections: Arc::new(Semaphore::new(config.listen.max_connections)),
            peers: PeerConnections::new(config.listen.max_connections_per_ip),
            metrics,
            access_log,
            inventory,
            listen: config.listen.clone(),
            tls,
            path: config.path,
            reporting: config.report.clone(),
            config_path: config.file.clone(),
            overrides,
            upstream_probe: config
                .admin
                .ready_requires_upstream
                .then(|| UpstreamProbe::new(&config.upstream)),
            fixed_sections: config.fixed_sections.clone(),
            allowlist: RwLock::new(config.allowlist.clone()),
            effective: RwLock::new(config.effective.clone()),
            ready: AtomicBool::new(false),
            request_prefix: RandomState::new().hash_one(std::process::id()) as u32,
            request_counter: AtomicU64::new(0),
            guard_findings_lost: AtomicU64::new(0),
            reloading: Mutex::new(()),
            watched: Mutex::new(watched),
        })
    }

    /// Bans `client` for `length` on every route, and notes it for the next report; when the
    /// ban ends, in ms since the Unix epoch.
    pub fn ban(&self, client: &str, by: Arc<str>, reason: String, length: Duration) -> u64 {
        let now = self.now_ms();
        self.inventory.record_ban(client, &by, &reason, length, now);
        let until_ms = now.saturating_add(length.as_millis() as u64);
        self.runtime.state().ban(
            client,
            Ban {
                until_ms,
                by,
                reason,
            },
        );
        until_ms
    }

    /// Opens the access log file again, as log rotation expects after moving it away.
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
    }

    /// Reads the listener's certificate and key again; new connections get them, open ones
    /// keep theirs. On an error the certificate in force stays.
    pub fn reload_certificate(&self) {
        let Some(tls) = &self.tls else { return };
        match tls.reload() {
            Ok(()) => tracing::info!(
                cert = %tls.files().cert.display(),
                "listener certificate reloaded"
            ),
            Err(error) => tracing::error!(
                %error,
                "cannot reload the listener certificate; the one in force keeps serving"
            ),
        }
    }

    /// The chain serving now.
    pub fn chain(&self) -> Arc<Chain> {
        self.chain.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The id of a request with these headers: the client's own `X-Request-Id` when the
    /// policy keeps it and it is well formed and alone, a new one otherwise.
    pub fn request_id_for(&self, headers: &HeaderMap) -> String {
        if self.listen.request_id == RequestIdPolicy::Keep {
            let mut sent = headers.get_all(X_REQUEST_ID).iter();
            if let (Some(id), None) = (sent.next(), sent.next()) {
                if is_well_formed_request_id(id.as_bytes()) {
                    // Checked to be ASCII just above.
                    return String::from_utf8_lossy(id.as_bytes()).into_owned();
                }
            }
        }
        self.next_request_id()
    }

    /// The settings in force: every key with its value, secrets redacted.
    pub fn effective_config(&self) -> serde_json::Value {
        self.effective
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether a client at `ip` with key `key` skips the guards.
    pub fn allowlisted(&self, ip: std::net::IpAddr, key: &str) -> bool {
        let allowlist = self.allowlist.read().unwrap_or_else(|p| p.into_inner());
        !allowlist.is_empty() && allowlist.admits(ip, key)
    }

    /// A new request id, unique within this process and unlikely to repeat across restarts.
    pub fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        // By hand: `format!` is a measurable share of a request that does little else.
        let mut id = String::with_capacity(24);
        push_hex(&mut id, u64::from(self.request_prefix));
        push_hex(&mut id, n);
        id
    }

    /// Renders `/metrics` in `format`, as of now.
    pub fn render_metrics(&self, format: Format) -> String {
        let guards = self.chain().guards().iter().map(|g| g.name_arc()).collect();
        self.metrics
            .shared_state(self.runtime.state().shared_status());
        self.metrics
            .render(format, self.runtime.state().sizes(), guards)
    }

    /// Moves the findings guards reported into the inventory.
    pub fn collect_guard_findings(&self) {
        self.inventory
            .add_guard_findings(self.runtime.drain_findings());
        let lost = self.runtime.findings_dropped();
        let counted = self.guard_findings_lost.swap(lost, Ordering::Relaxed);
        self.inventory
            .count_dropped_findings(lost.saturating_sub(counted));
    }

    /// Marks the sidecar ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Wall-clock time in ms since the Unix epoch: the guard runtime's clock, so that the
    /// proxy, the guards and their state tables agree on what time it is.
    pub fn now_ms(&self) -> u64 {
        self.runtime.state().clock().now_ms()
    }

    /// Whether the sidecar is serving (not starting, not draining).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// What `/readyz` answers: ready while serving and, unless `admin.ready_requires_upstream`
    /// is off, while the upstream accepts connections; otherwise why not.
    pub async fn readiness(&self) -> Result<(), String> {
        if !self.is_ready() {
            return Err("not serving (starting or shutting down)".into());
        }
        match &self.upstream_probe {
            Some(probe) => probe.check().await,
            None => Ok(()),
        }
    }

    /// Re-reads the configuration file and swaps in a completely built new chain. On any
    /// error the old chain keeps serving and the error is returned. Blocking (guards are
    /// compiled): call it off the async workers.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        // Whatever becomes of the file, a SIGHUP after a rotation gets a fresh log, and after
        // a renewal a fresh certificate.
        self.reopen_access_log();
        self.reload_certificate();
        let loaded = match &self.config_path {
            Some(path) => Config::load(path, &self.overrides),
            None => Config::without_file(&self.overrides),
        };
        let result = loaded.map_err(|e| e.to_string()).and_then(|config| {
            // The pool was sized for the workers running now, not for a changed file.
            let chain = load_chain(&self.runtime, &config.guards, self.listen.workers)
                .map_err(|e| format!("{e:#}"))?;
            *self.watched.lock().unwrap_or_else(|p| p.into_inner()) = watch_list(&config);
            *self.allowlist.write().unwrap_or_else(|p| p.into_inner()) = config.allowlist.clone();
            // Only what a reload applies changes; the rest keeps its start-up value.
            let mut effective = self.effective.write().unwrap_or_else(|p| p.into_inner());
            for section in ["guard", "allowlist"] {
                if let (Some(now), Some(new)) =
                    (effective.get_mut(section), config.effective.get(section))
                {
                    *now = new.clone();
                }
            }
            Ok((
                chain,
                changed_sections(&config.fixed_sections, &self.fixed_sections),
            ))
        });
        self.metrics.reload(result.is_ok());
        match result {
            Ok((chain, needs_restart)) => {
                let guards: Vec<String> = chain
                    .guards()
                    .iter()
                    .map(|g| g.name().to_string())
                    .collect();
                *self.chain.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(chain);
                // Lists are logged joined: a field cannot be a list, and a Debug string of
                // one would reach JSON logs as a string of quoted names.
                tracing::info!(guards = %guards.join(","), "guard chain reloaded");
                if !needs_restart.is_empty() {
                    tracing::warn!(
                        sections = %needs_restart.join(","),
                        "these sections changed, but a reload only swaps the guard chain: they \
                         keep their start-up settings until the next restart"
                    );
                }
                Ok(ReloadReport {
                    guards,
                    needs_restart,
                })
            }
            Err(error) => {
                tracing::error!(%error, "reload failed; the previous guard chain keeps serving");
                Err(error)
            }
        }
    }

    /// Whether the configuration file or a guard module changed since last looked at.
    pub fn files_changed(&self) -> bool {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for (path, seen) in watched.iter_mut() {
            let now = std::fs::metadata(path.as_path())
                .and_then(|m| m.modified())
                .ok();
            if now != *seen {
                *seen = now;
                changed = true;
            }
        }
        changed
    }
}

/// Longest client request id kept.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Whether a client's `X-Request-Id` is kept: short, and only characters that cannot break a
/// log line or a header (UUIDs, hex, base64 and the ids of common edge proxies pass).
fn is_well_formed_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(&b))
}

/// Loads the chain, first checking that the instance pool can hold it: every worker may be
/// inside every guard at once, and after a reload the old chain's instances live until its
/// last request ends. A pool too small would fail calls under load, not at start.
fn load_chain(runtime: &Runtime, specs: &[GuardSpec], workers: usize) -> anyhow::Result<Chain> {
    let needed = 2 * specs.len() * workers;
    let pool = runtime.config().max_instances as usize;
    if needed > pool {
        anyhow::bail!(
            "sandbox.max_instances = {pool} cannot hold {} guards on {workers} workers: that \
             needs at least {needed} (2 × guards × workers: each worker may be in every guard \
             at once, and a reload keeps the old chain's instances until its last request ends); \
             raise it, or run fewer guards or workers",
            specs.len()
        );
    }
    let mut guards = Vec::with_capacity(specs.len());
    for spec in specs {
        guards.push(runtime.load_guard(spec.clone())?);
    }
    Chain::new(guards).context("cannot form the guard chain")
}

/// Keys of `new` and `running` whose values differ, sorted.
fn changed_sections(new: &toml::Table, running: &toml::Table) -> Vec<String> {
    let mut changed: Vec<String> = new
        .keys()
        .chain(running.keys())
        .filter(|key| new.get(*key) != running.get(*key))
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    changed
}

fn watch_list(config: &Config) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut paths: Vec<PathBuf> = config.file.iter().cloned().collect();
    // A renewed certificate (cert-manager, certbot) is picked up like a changed module.
    if let Some(tls) = &config.listen.tls {
        paths.extend([tls.cert.clone(), tls.key.clone()]);
        paths.extend(tls.client_ca.clone());
    }
    for spec in &config.guards {
        if let GuardSource::File(path) = &spec.source {
            paths.push(path.clone());
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, modified)
        })
        .collect()
}

/// Shared handle.
pub type SharedSidecar = Arc<Sidecar>;

/// Appends `value` in lower-case hex, at least 8 digits (as `{:08x}` would).
fn push_hex(out: &mut String, value: u64) {
    let digits = (64 - value.leading_zeros() as usize).div_ceil(4).max(8);
    for shift in (0..digits).rev().map(|digit| digit * 4) {
        out.push(char::from(
            b"0123456789abcdef"[(value >> shift) as usize & 0xf],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::{is_well_formed_request_id, push_hex};

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        for kept in [
            "0af7651916cd43dd8448eb211c80319c",
            "f47ac10b-58cc-4372-a567-0e02b2c3d479",
            "Root=1-67891233-abcdef012345678912345678",
            "aGVsbG8+d29ybGQ/Pz0=",
        ] {
            assert!(is_well_formed_request_id(kept.as_bytes()), "{kept}");
        }
        let long = "a".repeat(129);
        for replaced in [
            "",
            "two words",
            "line\nbreak",
            "quote\"",
            long.as_str(),
            "é",
        ] {
            assert!(
                !is_well_formed_request_id(replaced.as_bytes()),
                "{replaced:?}"
            );
        }
    }

    #[test]
    fn request_ids_are_written_as_format_would() {
        for value in [0, 1, 0xabc, 0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            let mut id = String::new();
            push_hex(&mut id, value);
            assert_eq!(id, format!("{value:08x}"));
        }
    }
}
