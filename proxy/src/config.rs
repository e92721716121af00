//! `vigil.toml`: the sidecar's one configuration file, parsed and validated at start (and at
//! every reload). Every error names the file, the key and what was expected.

use crate::exposure::inventory::InventoryLimits;
use crate::forward::normalize::{EscapedSlashes, PathParameters, PathPolicy};
use crate::identity::{ClientPolicy, IdentityKey};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_host::state::StateLimits;
use vigil_host::{GuardSource, GuardSpec, Mode, OnError, Pattern, SandboxLimits};

/// A configuration error, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// What is wrong, and where.
    pub message: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; guard modules and the spec are relative to its directory.
    pub file: PathBuf,
    /// Public listener.
    pub listen: Listen,
    /// The service behind Vigil.
    pub upstream: Upstream,
    /// How request paths are normalised before routing and forwarding.
    pub path: PathPolicy,
    /// How clients are identified.
    pub client: ClientPolicy,
    /// API description: spec, explicit routes, internal-only routes.
    pub api: Api,
    /// The guard chain, in order.
    pub guards: Vec<GuardSpec>,
    /// Admin listener.
    pub admin: Admin,
    /// Logging.
    pub log: Log,
    /// Bounds of the exposure inventory.
    pub inventory: InventoryLimits,
    /// Bounds of the state the host keeps for guards (fixed at start).
    pub state: StateLimits,
    /// Size of the guard instance pool (fixed at start).
    pub sandbox: Sandbox,
    /// Every section but `[[guard]]`, as written: a reload swaps the guard chain only, so a
    /// change here is reported as waiting for a restart.
    pub fixed_sections: toml::Table,
    /// Reporting to a collector; `None` when `[report]` names no collector.
    pub report: Option<Reporting>,
}

/// How many guard instances the runtime may hold and how much memory a guard may be given.
/// Each instance reserves address space (not memory) up front, so the pool is sized at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Guard instances alive at once, all guards together.
    pub max_instances: u32,
    /// The most linear memory a guard's `memory_mb` may ask for, in bytes.
    pub max_guard_memory_bytes: usize,
}

/// Where and how the sidecar reports its inventory and findings.
#[derive(Debug, Clone)]
pub struct Reporting {
    /// The collector's base URL; reports go to `{collector}/v1/reports`.
    pub collector: http::Uri,
    /// Bearer token, from `token`, `token_file` or `VIGIL_REPORT_TOKEN`.
    pub token: Option<String>,
    /// The service this sidecar stands in front of.
    pub service: String,
    /// This instance's stable name; with a report's sequence numbers, the idempotency key.
    pub instance: String,
    /// Time between reports.
    pub interval: Duration,
    /// Time one delivery attempt may take.
    pub timeout: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// Directory of reports not yet acknowledged; survives restarts.
    pub spool_dir: PathBuf,
    /// Most reports kept in the spool; older ones are merged, then dropped and counted.
    pub spool_max_reports: usize,
    /// Most bytes kept in the spool.
    pub spool_max_bytes: u64,
    /// Uptime after which documented routes never reached are reported as zombie candidates.
    pub zombie_after: Duration,
}

/// Public listener settings.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Address to accept clients on.
    pub address: SocketAddr,
    /// Time a client has to send a request head once it started one, and to start its first
    /// request once connected.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight between requests (HTTP/1.1
    /// keep-alive, an HTTP/2 connection with no open stream).
    pub idle_timeout: Duration,
    /// Streams an HTTP/2 client may have open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Protocols a client may upgrade to (`Upgrade`), lower-case; `h2c` never.
    pub upgrades: Vec<String>,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Most header fields in a request.
    pub max_headers: usize,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one client address; 0: no limit.
    pub max_connections_per_ip: usize,
    /// Threads serving clients, each with its own event loop and upstream connections.
    pub workers: usize,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
}

/// Upstream settings.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Base URL of the service, `http://host:port`.
    pub url: http::Uri,
    /// Time to wait for the upstream's response head.
    pub timeout: Duration,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Replace `Host` with the upstream's authority instead of keeping the client's.
    pub rewrite_host: bool,
    /// Connections to the upstream open at once, over all workers.
    pub max_connections: usize,
    /// How long a request waits for an upstream connection when all are busy before it is
    /// answered 503.
    pub queue_timeout: Duration,
}

/// API description.
#[derive(Debug, Clone, Default)]
pub struct Api {
    /// OpenAPI 3 document, YAML or JSON.
    pub spec: Option<PathBuf>,
    /// Route templates to use before the spec and heuristics.
    pub routes: Vec<String>,
    /// Routes that reaching from a public client is a finding.
    pub internal_only: Vec<Pattern>,
    /// Heuristic route templates remembered.
    pub max_routes: usize,
}

/// Admin listener settings.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Address of `/healthz`, `/readyz`, `/metrics`, `/guards`; loopback by default.
    pub address: SocketAddr,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct Log {
    /// Filter such as `info` or `vigil=debug`.
    pub level: String,
    /// Text or JSON.
    pub format: LogFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    upstream: RawUpstream,
    #[serde(default)]
    path: RawPath,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    api: RawApi,
    #[serde(default, rename = "guard")]
    guards: Vec<RawGuard>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    inventory: RawInventory,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    sandbox: RawSandbox,
    #[serde(default)]
    report: RawReport,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSandbox {
    max_instances: Option<usize>,
    max_guard_memory_mb: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawState {
    max_clients: usize,
    history_depth: usize,
    max_keys: usize,
    max_distinct_sets: usize,
    max_distinct_members: usize,
    max_kv_entries: usize,
    idle_expiry: String,
}

impl Default for RawState {
    fn default() -> Self {
        let limits = StateLimits::default();
        RawState {
            max_clients: limits.max_clients,
            history_depth: limits.history_depth,
            max_keys: limits.max_keys,
            max_distinct_sets: limits.max_distinct_sets,
            max_distinct_members: limits.max_distinct_members,
            max_kv_entries: limits.max_kv_entries,
            idle_expiry: "30m".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawInventory {
    max_endpoints: usize,
    max_findings: usize,
}

impl Default for RawInventory {
    fn default() -> Self {
        let limits = InventoryLimits::default();
        RawInventory {
            max_endpoints: limits.max_endpoints,
            max_findings: limits.max_findings,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReport {
    collector: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    service: Option<String>,
    instance: Option<String>,
    interval: String,
    timeout: String,
    max_backoff: String,
    spool_dir: PathBuf,
    spool_max_reports: usize,
    spool_max_mb: u64,
    zombie_after: String,
}

impl Default for RawReport {
    fn default() -> Self {
        RawReport {
            collector: None,
            token: None,
            token_file: None,
            service: None,
            instance: None,
            interval: "10s".into(),
            timeout: "10s".into(),
            max_backoff: "60s".into(),
            spool_dir: PathBuf::from("vigil-spool"),
            spool_max_reports: 1_000,
            spool_max_mb: 64,
            zombie_after: "1h".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawListen {
    address: String,
    header_read_timeout: String,
    idle_timeout: String,
    max_streams_per_connection: u32,
    upgrades: Vec<String>,
    max_header_bytes: usize,
    max_headers: usize,
    max_body_bytes: u64,
    max_connections: usize,
    max_connections_per_ip: usize,
    workers: Option<usize>,
    shutdown_grace: String,
}

/// The default `listen.max_headers`: hyper's own limit, which it parses without a buffer
/// made for each request head.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// The default `listen.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            address: "0.0.0.0:8080".into(),
            header_read_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            max_streams_per_connection: 100,
            upgrades: vec!["websocket".into()],
            max_header_bytes: 16 * 1024,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: 16 << 20,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: 0,
            workers: None,
            shutdown_grace: "30s".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: String,
    #[serde(default = "default_upstream_timeout")]
    timeout: String,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: String,
    #[serde(default)]
    rewrite_host: bool,
    #[serde(default = "default_upstream_connections")]
    max_connections: usize,
    #[serde(default = "default_queue_timeout")]
    queue_timeout: String,
}

/// The default `upstream.max_connections`: well under the 1,024 descriptors a process gets by
/// default, with room left for clients.
pub const DEFAULT_UPSTREAM_CONNECTIONS: usize = 512;

fn default_upstream_connections() -> usize {
    DEFAULT_UPSTREAM_CONNECTIONS
}

fn default_queue_timeout() -> String {
    "5s".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPath {
    merge_slashes: bool,
    escaped_slashes: String,
    parameters: String,
}

impl Default for RawPath {
    fn default() -> Self {
        RawPath {
            merge_slashes: true,
            escaped_slashes: "reject".into(),
            parameters: "reject".into(),
        }
    }
}

fn default_upstream_timeout() -> String {
    "30s".into()
}

fn default_connect_timeout() -> String {
    "5s".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIdentity {
    key: String,
    trusted_proxies: Vec<String>,
    internal_ranges: Vec<String>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        RawIdentity {
            key: "ip".into(),
            trusted_proxies: Vec::new(),
            internal_ranges: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    spec: Option<PathBuf>,
    routes: Vec<String>,
    internal_only: Vec<String>,
    max_routes: usize,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            spec: None,
            routes: Vec::new(),
            internal_only: Vec::new(),
            max_routes: 10_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    name: String,
    module: PathBuf,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default = "default_on_error")]
    on_error: String,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(default)]
    body_limit: usize,
    deadline: Option<String>,
    memory_mb: Option<usize>,
}

fn default_mode() -> String {
    "enforce".into()
}

fn default_on_error() -> String {
    "allow".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    address: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            address: "127.0.0.1:9901".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Values from the environment that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `VIGIL_LISTEN`: the public listen address.
    pub listen: Option<String>,
    /// `VIGIL_UPSTREAM`: the upstream URL.
    pub upstream: Option<String>,
    /// `VIGIL_LOG`: the log filter.
    pub log_level: Option<String>,
    /// `VIGIL_REPORT_TOKEN`: the collector's bearer token, kept out of the file.
    pub report_token: Option<String>,
}

impl Config {
    /// Reads and validates `path`, applying `overrides`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            message: format!("cannot read the configuration: {e}"),
        })?;
        Config::parse(path, &text, overrides)
    }

    /// Validates configuration text as if read from `path`.
    pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let fail = |message: String| ConfigError {
            file: path.to_path_buf(),
            message,
        };
        let mut raw: RawConfig =
            toml::from_str(text).map_err(|e| fail(e.to_string().trim_end().to_string()))?;
        let mut fixed_sections: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(e.to_string().trim_end().to_string()))?;
        fixed_sections.remove("guard");
        if let Some(listen) = &overrides.listen {
            raw.listen.address = listen.clone();
        }
        if let Some(upstream) = &overrides.upstream {
            raw.upstream.url = upstream.clone();
        }
        if let Some(level) = &overrides.log_level {
            raw.log.level = level.clone();
        }
        if let Some(token) = &overrides.report_token {
            raw.report.token = Some(token.clone());
            raw.report.token_file = None;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        build(raw, fixed_sections, base, path).map_err(fail)
    }
}

fn build(
    raw: RawConfig,
    fixed_sections: toml::Table,
    base: &Path,
    file: &Path,
) -> Result<Config, String> {
    let listen = Listen {
        address: socket_addr("listen.address", &raw.listen.address)?,
        header_read_timeout: duration(
            "listen.header_read_timeout",
            &raw.listen.header_read_timeout,
        )?,
        idle_timeout: duration("listen.idle_timeout", &raw.listen.idle_timeout)?,
        max_streams_per_connection: at_least(
            "listen.max_streams_per_connection",
            raw.listen.max_streams_per_connection,
            1,
        )?,
        upgrades: upgrades(&raw.listen.upgrades)?,
        max_header_bytes: at_least("listen.max_header_bytes", raw.listen.max_header_bytes, 1024)?,
        max_headers: at_least("listen.max_headers", raw.listen.max_headers, 1)?,
        max_body_bytes: raw.listen.max_body_bytes,
        max_connections: at_least("listen.max_connections", raw.listen.max_connections, 1)?,
        max_connections_per_ip: raw.listen.max_connections_per_ip,
        workers: workers(raw.listen.workers)?,
        shutdown_grace: duration("listen.shutdown_grace", &raw.listen.shutdown_grace)?,
    };
    let url: http::Uri = raw
        .upstream
        .url
        .parse()
        .map_err(|e| format!("upstream.url: {:?} is not a URL ({e})", raw.upstream.url))?;
    if url.scheme_str() != Some("http") || url.authority().is_none() {
        return Err(format!(
            "upstream.url: expected http://HOST:PORT, got {:?} (only plain HTTP upstreams are supported)",
            raw.upstream.url
        ));
    }
    let upstream = Upstream {
        url,
        timeout: duration("upstream.timeout", &raw.upstream.timeout)?,
        connect_timeout: duration("upstream.connect_timeout", &raw.upstream.connect_timeout)?,
        rewrite_host: raw.upstream.rewrite_host,
        max_connections: at_least(
            "upstream.max_connections",
            raw.upstream.max_connections,
            listen.workers,
        )?,
        queue_timeout: duration("upstream.queue_timeout", &raw.upstream.queue_timeout)?,
    };
    let path = path_policy(&raw.path)?;
    let identity: IdentityKey = raw
        .identity
        .key
        .parse()
        .map_err(|e| format!("identity.key: {e}"))?;
    let client = ClientPolicy {
        identity,
        trusted_proxies: networks("identity.trusted_proxies", &raw.identity.trusted_proxies)?,
        internal_ranges: networks("identity.internal_ranges", &raw.identity.internal_ranges)?,
    };
    let api = Api {
        spec: raw.api.spec.map(|p| base.join(p)),
        routes: raw.api.routes,
        internal_only: patterns("api.internal_only", &raw.api.internal_only)?,
        max_routes: at_least("api.max_routes", raw.api.max_routes, 1)?,
    };
    let sandbox = sandbox(raw.sandbox, listen.workers)?;
    let mut guards = Vec::with_capacity(raw.guards.len());
    for (i, g) in raw.guards.into_iter().enumerate() {
        let key = format!("guard[{i}] ({:?})", g.name);
        if g.name.is_empty() {
            return Err(format!("guard[{i}].name: must not be empty"));
        }
        if guards.iter().any(|s: &GuardSpec| s.name == g.name) {
            return Err(format!(
                "{key}.name: another guard already has this name; names must be unique"
            ));
        }
        let mut spec = GuardSpec::new(&g.name, GuardSource::File(base.join(&g.module)));
        spec.routes = patterns(&format!("{key}.routes"), &g.routes)?;
        spec.mode = match g.mode.as_str() {
            "enforce" => Mode::Enforce,
            "monitor" => Mode::Monitor,
            other => {
                return Err(format!(
                    "{key}.mode: expected \"enforce\" or \"monitor\", got {other:?}"
                ))
            }
        };
        spec.on_error = match g.on_error.as_str() {
            "allow" => OnError::Allow,
            "deny" => OnError::Deny,
            other => {
                return Err(format!(
                    "{key}.on_error: expected \"allow\" or \"deny\", got {other:?}"
                ))
            }
        };
        spec.config_json = serde_json::to_string(&g.config.unwrap_or_default())
            .map_err(|e| format!("{key}.config: cannot be expressed as JSON: {e}"))?;
        spec.body_limit = g.body_limit;
        if g.deadline.is_some() || g.memory_mb.is_some() {
            let mut limits = SandboxLimits::default();
            if let Some(d) = &g.deadline {
                limits.deadline = duration(&format!("{key}.deadline"), d)?;
            }
            if let Some(mb) = g.memory_mb {
                let most = sandbox.max_guard_memory_bytes >> 20;
                if mb > most {
                    return Err(format!(
                        "{key}.memory_mb: {mb} is more than sandbox.max_guard_memory_mb ({most}) allows"
                    ));
                }
                limits.memory_bytes = at_least(&format!("{key}.memory_mb"), mb, 1)? << 20;
            }
            spec.limits = Some(limits);
        }
        guards.push(spec);
    }
    let log = Log {
        level: raw.log.level,
        format: raw.log.format,
    };
    let inventory = InventoryLimits {
        max_endpoints: at_least("inventory.max_endpoints", raw.inventory.max_endpoints, 1)?,
        max_findings: at_least("inventory.max_findings", raw.inventory.max_findings, 1)?,
        ..InventoryLimits::default()
    };
    let state = state_limits(raw.state)?;
    let report = reporting(raw.report, base, listen.address)?;
    Ok(Config {
        file: file.to_path_buf(),
        listen,
        upstream,
        path,
        client,
        api,
        guards,
        admin: Admin {
            address: socket_addr("admin.address", &raw.admin.address)?,
        },
        log,
        inventory,
        state,
        sandbox,
        fixed_sections,
        report,
    })
}

/// Bounds of `[sandbox]`. Each instance reserves about 8 GiB of address space (two 4 GiB
/// memory reservations), so 4,096 instances take 32 TiB of the 128 TiB a process can address;
/// a guard's memory is a wasm32 memory, at most 4 GiB.
const MAX_INSTANCES: usize = 4096;
const MIN_DEFAULT_INSTANCES: usize = 256;
const INSTANCES_PER_WORKER: usize = 32;
const MAX_GUARD_MEMORY_MB: usize = 4096;
const DEFAULT_GUARD_MEMORY_MB: usize = 256;

/// `[sandbox]`; by default 32 instances per worker (at least 256, at most 4,096): room for 16
/// guards, each called by every worker at once, twice over during a reload.
fn sandbox(raw: RawSandbox, workers: usize) -> Result<Sandbox, String> {
    let default_instances = workers
        .saturating_mul(INSTANCES_PER_WORKER)
        .clamp(MIN_DEFAULT_INSTANCES, MAX_INSTANCES);
    let max_instances = match raw.max_instances {
        Some(n) => in_range("sandbox.max_instances", n, 2, MAX_INSTANCES)?,
        None => default_instances,
    };
    let memory_mb = match raw.max_guard_memory_mb {
        Some(mb) => in_range("sandbox.max_guard_memory_mb", mb, 1, MAX_GUARD_MEMORY_MB)?,
        None => DEFAULT_GUARD_MEMORY_MB,
    };
    Ok(Sandbox {
        // At most MAX_INSTANCES, so it fits.
        max_instances: max_instances as u32,
        max_guard_memory_bytes: memory_mb << 20,
    })
}

/// Upper bounds of `[state]`: each table's memory grows with its bound (a client with a full
/// history of 32 events is about 620 bytes), so a typo must not let it grow to the machine's.
const MAX_TRACKED: usize = 10_000_000;
const MAX_HISTORY_DEPTH: usize = 1024;
const MAX_DISTINCT_MEMBERS: usize = 65_536;

fn state_limits(raw: RawState) -> Result<StateLimits, String> {
    let idle_expiry = duration("state.idle_expiry", &raw.idle_expiry)?;
    if idle_expiry < Duration::from_secs(1) {
        return Err(format!(
            "state.idle_expiry: must be at least 1s, got {}",
            raw.idle_expiry
        ));
    }
    Ok(StateLimits {
        max_clients: in_range("state.max_clients", raw.max_clients, 1, MAX_TRACKED)?,
        history_depth: in_range(
            "state.history_depth",
            raw.history_depth,
            1,
            MAX_HISTORY_DEPTH,
        )?,
        max_keys: in_range("state.max_keys", raw.max_keys, 1, MAX_TRACKED)?,
        max_distinct_sets: in_range(
            "state.max_distinct_sets",
            raw.max_distinct_sets,
            1,
            MAX_TRACKED,
        )?,
        max_distinct_members: in_range(
            "state.max_distinct_members",
            raw.max_distinct_members,
            1,
            MAX_DISTINCT_MEMBERS,
        )?,
        max_kv_entries: in_range("state.max_kv_entries", raw.max_kv_entries, 1, MAX_TRACKED)?,
        idle_expiry,
        ..StateLimits::default()
    })
}

fn reporting(raw: RawReport, base: &Path, listen: SocketAddr) -> Result<Option<Reporting>, String> {
    let Some(collector) = raw.collector else {
        let stray = [
            ("report.service", raw.service.is_some()),
            ("report.token", raw.token.is_some()),
            ("report.token_file", raw.token_file.is_some()),
            ("report.instance", raw.instance.is_some()),
        ];
        if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
            return Err(format!(
                "{key}: is set but report.collector is not; set report.collector to report"
            ));
        }
        return Ok(None);
    };
    let url: http::Uri = collector
        .parse()
        .map_err(|e| format!("report.collector: {collector:?} is not a URL ({e})"))?;
    if url.scheme_str() != Some("http") || url.authority().is_none() {
        return Err(format!(
            "report.collector: expected http://HOST:PORT, got {collector:?}"
        ));
    }
    let service = raw.service.ok_or(
        "report.service: missing; name the service this sidecar stands in front of".to_string(),
    )?;
    check_report_name("report.service", &service)?;
    let instance = match raw.instance {
        Some(instance) => instance,
        None => format!("{service}@{}:{}", hostname(), listen.port()),
    };
    check_report_name("report.instance", &instance)?;
    let token = match (raw.token, raw.token_file) {
        (Some(_), Some(_)) => {
            return Err("report.token_file: set either token or token_file, not both".into())
        }
        (Some(token), None) => Some(token),
        (None, Some(file)) => {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("report.token_file: cannot read {}: {e}", path.display()))?;
            Some(text.trim().to_string())
        }
        (None, None) => None,
    };
    if let Some(token) = &token {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "report.token: must be non-empty printable ASCII without spaces".to_string(),
            );
        }
    }
    let interval = duration("report.interval", &raw.interval)?;
    if interval < Duration::from_millis(100) {
        return Err(format!(
            "report.interval: must be at least 100ms, got {}",
            raw.interval
        ));
    }
    Ok(Some(Reporting {
        collector: url,
        token,
        service,
        instance,
        interval,
        timeout: duration("report.timeout", &raw.timeout)?,
        max_backoff: duration("report.max_backoff", &raw.max_backoff)?,
        spool_dir: base.join(raw.spool_dir),
        spool_max_reports: at_least("report.spool_max_reports", raw.spool_max_reports, 2)?,
        spool_max_bytes: in_range("report.spool_max_mb", raw.spool_max_mb, 1, MAX_SPOOL_MB)? << 20,
        zombie_after: duration("report.zombie_after", &raw.zombie_after)?,
    }))
}

/// Service and instance names travel in every report; the collector applies the same rule.
fn check_report_name(key: &str, value: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.@:".contains(c);
    if value.is_empty()
        || value.len() > crate::exposure::report::MAX_NAME_BYTES
        || !value.chars().all(allowed)
    {
        return Err(format!(
            "{key}: {value:?} must be 1 to {} characters of letters, digits and - _ . @ :",
            crate::exposure::report::MAX_NAME_BYTES
        ));
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

pub(crate) fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{key}: expected an address such as 127.0.0.1:8080, got {value:?}"))
}

pub(crate) fn duration(key: &str, value: &str) -> Result<Duration, String> {
    vigil_guest::duration::parse(value).map_err(|e| format!("{key}: {e}"))
}

/// Most worker threads: far beyond any core count a sidecar gets, low enough that a typo
/// cannot start thousands of threads.
const MAX_WORKERS: usize = 256;

/// `listen.workers`, by default one per core the process may run on.
fn workers(configured: Option<usize>) -> Result<usize, String> {
    let Some(workers) = configured else {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)));
    };
    in_range("listen.workers", workers, 1, MAX_WORKERS)
}

pub(crate) fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: T,
    min: T,
) -> Result<T, String> {
    if value < min {
        return Err(format!("{key}: must be at least {min}, got {value}"));
    }
    Ok(value)
}

/// The most `report.spool_max_mb` may be: 1 TiB, far beyond any disk a sidecar is given, and
/// small enough that the size in bytes cannot overflow.
const MAX_SPOOL_MB: u64 = 1 << 20;

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, String> {
    let value = at_least(key, value, min)?;
    if value > max {
        return Err(format!("{key}: must be at most {max}, got {value}"));
    }
    Ok(value)
}

fn networks(key: &str, values: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    values
        .iter()
        .map(|v| {
            v.parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    format!("{key}: {v:?} is not an address or CIDR range such as 10.0.0.0/8")
                })
        })
        .collect()
}

/// `listen.upgrades`: protocol names as `Upgrade` carries them (RFC 9110 §7.8), lower-cased.
fn upgrades(values: &[String]) -> Result<Vec<String>, String> {
    values
        .iter()
        .map(|value| {
            let name = value.trim().to_ascii_lowercase();
            let is_token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !is_token {
                return Err(format!(
                    "listen.upgrades: {value:?} is not a protocol name without a version (such as \"websocket\")"
                ));
            }
            if name == "h2c" || name == "http" {
                return Err(format!(
                    "listen.upgrades: {value:?} cannot be allowed: an HTTP/2 upgrade would carry \
                     requests past the guards (clients may speak HTTP/2 directly instead)"
                ));
            }
            Ok(name)
        })
        .collect()
}

/// `[path]`: how request paths are normalised.
fn path_policy(raw: &RawPath) -> Result<PathPolicy, String> {
    let escaped_slashes = match raw.escaped_slashes.as_str() {
        "reject" => EscapedSlashes::Reject,
        "keep" => EscapedSlashes::Keep,
        "decode" => EscapedSlashes::Decode,
        other => {
            return Err(format!(
                "path.escaped_slashes: expected \"reject\", \"keep\" or \"decode\", got {other:?}"
            ))
        }
    };
    let parameters = match raw.parameters.as_str() {
        "reject" => PathParameters::Reject,
        "keep" => PathParameters::Keep,
        "strip" => PathParameters::Strip,
        other => {
            return Err(format!(
                "path.parameters: expected \"reject\", \"keep\" or \"strip\", got {other:?}"
            ))
        }
    };
    Ok(PathPolicy {
        merge_slashes: raw.merge_slashes,
        escaped_slashes,
        parameters,
    })
}

fn patterns(key: &str, values: &[String]) -> Result<Vec<Pattern>, String> {
    values
        .iter()
        .map(|v| Pattern::parse(v).map_err(|e| format!("{key}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(
            Path::new("/etc/vigil/vigil.toml"),
            text,
            &Overrides::default(),
        )
        .map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n";

    #[test]
    fn defaults_are_sensible() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen.address.to_string(), "0.0.0.0:8080");
        assert_eq!(
            c.admin.address.to_string(),
            "127.0.0.1:9901",
            "admin on loopback by default"
        );
        assert_eq!(c.listen.header_read_timeout, Duration::from_secs(10));
        assert_eq!(
            c.listen.workers,
            std::thread::available_parallelism().unwrap().get(),
            "one worker per core"
        );
        assert_eq!(
            parse(&format!("{MINIMAL}[listen]\nworkers = 3\n"))
                .unwrap()
                .listen
                .workers,
            3
        );
        assert!(c.guards.is_empty());
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.listen.idle_timeout, Duration::from_secs(60));
        assert_eq!(
            c.listen.upgrades,
            ["websocket"],
            "only WebSocket upgrades by default"
        );
        assert_eq!(c.listen.max_connections_per_ip, 0);
        assert_eq!(c.upstream.max_connections, DEFAULT_UPSTREAM_CONNECTIONS);
        assert_eq!(c.upstream.queue_timeout, Duration::from_secs(5));
        assert_eq!(
            c.path,
            PathPolicy {
                merge_slashes: true,
                escaped_slashes: EscapedSlashes::Reject,
                parameters: PathParameters::Reject,
            },
            "the safe choices by default"
        );
        let lenient = parse(&format!(
            "{MINIMAL}[path]\nmerge_slashes = false\nescaped_slashes = \"keep\"\nparameters = \"strip\"\n[listen]\nupgrades = [\"WebSocket\", \"x-custom\"]\n"
        ))
        .unwrap();
        assert_eq!(
            lenient.path,
            PathPolicy {
                merge_slashes: false,
                escaped_slashes: EscapedSlashes::Keep,
                parameters: PathParameters::Strip,
            }
        );
        assert_eq!(lenient.listen.upgrades, ["websocket", "x-custom"]);
    }

    #[test]
    fn guards_resolve_relative_to_the_file_and_carry_their_settings() {
        let c = parse(&format!(
            "{MINIMAL}[[guard]]\nname = \"t\"\nmodule = \"guards/t.wasm\"\nroutes = [\"POST /login\"]\nmode = \"monitor\"\n\
             on_error = \"deny\"\ndeadline = \"5ms\"\nmemory_mb = 16\nbody_limit = 512\nconfig = {{ per_minute = 10, nested = {{ a = [1, 2] }} }}\n"
        ))
        .unwrap();
        let g = &c.guards[0];
        assert!(
            matches!(&g.source, GuardSource::File(p) if p == Path::new("/etc/vigil/guards/t.wasm"))
        );
        assert_eq!(g.mode, Mode::Monitor);
        assert_eq!(g.on_error, OnError::Deny);
        assert_eq!(g.body_limit, 512);
        let limits = g.limits.as_ref().unwrap();
        assert_eq!(
            (limits.deadline, limits.memory_bytes),
            (Duration::from_millis(5), 16 << 20)
        );
        assert!(
            g.config_json.starts_with("{\"per_minute\""),
            "file order kept: {}",
            g.config_json
        );
        let json: serde_json::Value = serde_json::from_str(&g.config_json).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"per_minute": 10, "nested": {"a": [1, 2]}})
        );
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_expectation() {
        for (text, expected) in [
            ("[upstream]\nurl = \"http://x:1\"\ntimout = \"1s\"\n", "unknown field `timout`"),
            ("[listen]\naddress = \"0.0.0.0:8080\"\n", "missing field `upstream`"),
            ("[upstream]\nurl = \"https://x\"\n", "upstream.url: expected http://HOST:PORT"),
            (&format!("{MINIMAL}[listen]\naddress = \"localhost\"\n"), "listen.address: expected an address"),
            (&format!("{MINIMAL}[listen]\nheader_read_timeout = \"10 seconds\"\n"), "listen.header_read_timeout: expected a duration"),
            (&format!("{MINIMAL}[identity]\nkey = \"email\"\n"), "identity.key: invalid identity key \"email\""),
            (&format!("{MINIMAL}[identity]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"), "identity.trusted_proxies: \"10.0.0.0/33\""),
            (&format!("{MINIMAL}[api]\ninternal_only = [\"admin\"]\n"), "api.internal_only: invalid route pattern \"admin\""),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nmode = \"enforcing\"\n"), "guard[0] (\"g\").mode: expected \"enforce\" or \"monitor\""),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\non_error = \"open\"\n"), "guard[0] (\"g\").on_error"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"a.wasm\"\n[[guard]]\nname = \"g\"\nmodule = \"b.wasm\"\n"), "guard[1] (\"g\").name: another guard already has this name"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\n"), "missing field `module`"),
            (&format!("{MINIMAL}[log]\nformat = \"xml\"\n"), "unknown variant `xml`"),
            (&format!("{MINIMAL}[report]\nservice = \"shop\"\n"), "report.service: is set but report.collector is not"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\n"), "report.service: missing"),
            (&format!("{MINIMAL}[report]\ncollector = \"https://c\"\nservice = \"shop\"\n"), "report.collector: expected http://HOST:PORT"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"my shop\"\n"), "report.service: \"my shop\" must be"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\ninterval = \"10ms\"\n"), "report.interval: must be at least 100ms"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\ntoken = \"a b\"\n"), "report.token: must be non-empty printable ASCII"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\ntoken_file = \"missing-token\"\n"), "report.token_file: cannot read /etc/vigil/missing-token"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\nspool_max_reports = 1\n"), "report.spool_max_reports: must be at least 2"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\nspool_max_mb = 17592186044416\n"), "report.spool_max_mb: must be at most 1048576, got 17592186044416"),
            (&format!("{MINIMAL}[inventory]\nmax_endpoints = 0\n"), "inventory.max_endpoints: must be at least 1"),
            (&format!("{MINIMAL}[listen]\nworkers = 0\n"), "listen.workers: must be at least 1, got 0"),
            (&format!("{MINIMAL}[listen]\nupgrades = [\"h2c\"]\n"), "listen.upgrades: \"h2c\" cannot be allowed"),
            (&format!("{MINIMAL}[listen]\nupgrades = [\"web socket\"]\n"), "listen.upgrades: \"web socket\" is not a protocol name"),
            (&format!("{MINIMAL}[listen]\nupgrades = [\"HTTP/2.0\"]\n"), "listen.upgrades: \"HTTP/2.0\" is not a protocol name without a version"),
            (&format!("{MINIMAL}[listen]\nidle_timeout = \"forever\"\n"), "listen.idle_timeout: expected a duration"),
            (&format!("{MINIMAL}[listen]\nmax_streams_per_connection = 0\n"), "listen.max_streams_per_connection: must be at least 1"),
            ("[upstream]\nurl = \"http://x:1\"\nmax_connections = 0\n", "upstream.max_connections: must be at least"),
            ("[upstream]\nurl = \"http://x:1\"\nqueue_timeout = \"a while\"\n", "upstream.queue_timeout: expected a duration"),
            (&format!("{MINIMAL}[path]\nescaped_slashes = \"allow\"\n"), "path.escaped_slashes: expected \"reject\", \"keep\" or \"decode\", got \"allow\""),
            (&format!("{MINIMAL}[path]\nparameters = \"decode\"\n"), "path.parameters: expected \"reject\", \"keep\" or \"strip\", got \"decode\""),
            (&format!("{MINIMAL}[path]\nmerge_slash = true\n"), "unknown field `merge_slash`"),
            (&format!("{MINIMAL}[listen]\nworkers = 100000\n"), "listen.workers: must be at most 256, got 100000"),
            (&format!("{MINIMAL}[state]\nmax_clients = 0\n"), "state.max_clients: must be at least 1, got 0"),
            (&format!("{MINIMAL}[state]\nmax_clients = 20000000\n"), "state.max_clients: must be at most 10000000, got 20000000"),
            (&format!("{MINIMAL}[state]\nhistory_depth = 5000\n"), "state.history_depth: must be at most 1024"),
            (&format!("{MINIMAL}[state]\nmax_distinct_members = 0\n"), "state.max_distinct_members: must be at least 1"),
            (&format!("{MINIMAL}[state]\nidle_expiry = \"500ms\"\n"), "state.idle_expiry: must be at least 1s, got 500ms"),
            (&format!("{MINIMAL}[state]\nidle_expiry = \"soon\"\n"), "state.idle_expiry: expected a duration"),
            (&format!("{MINIMAL}[state]\nmax_client = 10\n"), "unknown field `max_client`"),
            (&format!("{MINIMAL}[sandbox]\nmax_instances = 1\n"), "sandbox.max_instances: must be at least 2, got 1"),
            (&format!("{MINIMAL}[sandbox]\nmax_instances = 100000\n"), "sandbox.max_instances: must be at most 4096, got 100000"),
            (&format!("{MINIMAL}[sandbox]\nmax_guard_memory_mb = 0\n"), "sandbox.max_guard_memory_mb: must be at least 1, got 0"),
            (&format!("{MINIMAL}[sandbox]\nmax_guard_memory_mb = 8192\n"), "sandbox.max_guard_memory_mb: must be at most 4096, got 8192"),
            (&format!("{MINIMAL}[sandbox]\nmax_instance = 10\n"), "unknown field `max_instance`"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nmemory_mb = 300\n"), "guard[0] (\"g\").memory_mb: 300 is more than sandbox.max_guard_memory_mb (256) allows"),
            (&format!("{MINIMAL}[sandbox]\nmax_guard_memory_mb = 16\n[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nmemory_mb = 32\n"), "guard[0] (\"g\").memory_mb: 32 is more than sandbox.max_guard_memory_mb (16) allows"),
        ] {
            let error = parse(text).expect_err(expected);
            assert!(error.starts_with("/etc/vigil/vigil.toml: "), "{error}");
            assert!(error.contains(expected), "expected {expected:?} in: {error}");
        }
    }

    #[test]
    fn state_bounds_default_to_the_hosts_and_can_be_sized() {
        let defaults = StateLimits::default();
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            (
                c.state.max_clients,
                c.state.history_depth,
                c.state.idle_expiry
            ),
            (
                defaults.max_clients,
                defaults.history_depth,
                defaults.idle_expiry
            )
        );
        let c = parse(&format!(
            "{MINIMAL}[state]\nmax_clients = 1000000\nhistory_depth = 8\nmax_keys = 500\nmax_distinct_sets = 40\n\
             max_distinct_members = 1024\nmax_kv_entries = 7\nidle_expiry = \"5m\"\n"
        ))
        .unwrap();
        let s = &c.state;
        assert_eq!(
            (
                s.max_clients,
                s.history_depth,
                s.max_keys,
                s.max_distinct_sets
            ),
            (1_000_000, 8, 500, 40)
        );
        assert_eq!((s.max_distinct_members, s.max_kv_entries), (1024, 7));
        assert_eq!(s.idle_expiry, Duration::from_secs(300));
        assert_eq!(
            s.max_kv_value_bytes, defaults.max_kv_value_bytes,
            "keys not in [state] keep the host's defaults"
        );
    }

    #[test]
    fn the_sandbox_grows_with_the_workers_and_can_be_sized() {
        let pool = |workers: usize| {
            parse(&format!("{MINIMAL}[listen]\nworkers = {workers}\n"))
                .unwrap()
                .sandbox
        };
        assert_eq!(pool(2).max_instances, 256, "at least 256");
        assert_eq!(pool(8).max_instances, 256);
        assert_eq!(pool(64).max_instances, 2048, "32 per worker");
        assert_eq!(pool(256).max_instances, 4096, "at most 4096");
        assert_eq!(pool(2).max_guard_memory_bytes, 256 << 20);
        let c = parse(&format!(
            "{MINIMAL}[sandbox]\nmax_instances = 40\nmax_guard_memory_mb = 64\n\
             [[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nmemory_mb = 64\n"
        ))
        .unwrap();
        assert_eq!(
            c.sandbox,
            Sandbox {
                max_instances: 40,
                max_guard_memory_bytes: 64 << 20
            }
        );
        assert_eq!(c.guards[0].limits.as_ref().unwrap().memory_bytes, 64 << 20);
    }

    #[test]
    fn the_sections_a_reload_cannot_change_are_kept_as_written() {
        let c = parse(&format!(
            "{MINIMAL}[state]\nmax_clients = 10\n[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\n"
        ))
        .unwrap();
        let sections: Vec<&String> = c.fixed_sections.keys().collect();
        assert_eq!(
            sections,
            ["upstream", "state"],
            "[[guard]] is not among them"
        );
        assert_eq!(
            c.fixed_sections["state"]["max_clients"].as_integer(),
            Some(10)
        );
    }

    #[test]
    fn reporting_is_off_without_a_collector_and_defaults_sensibly_with_one() {
        assert!(parse(MINIMAL).unwrap().report.is_none());
        let c = parse(&format!(
            "{MINIMAL}[listen]\naddress = \"0.0.0.0:8088\"\n[report]\ncollector = \"http://collector:9000\"\nservice = \"shop\"\ntoken = \"s3cret\"\n"
        ))
        .unwrap();
        let report = c.report.unwrap();
        assert_eq!(report.interval, Duration::from_secs(10));
        assert_eq!(report.spool_dir, Path::new("/etc/vigil/vigil-spool"));
        assert_eq!(report.token.as_deref(), Some("s3cret"));
        assert!(
            report.instance.starts_with("shop@") && report.instance.ends_with(":8088"),
            "instance names service, host and port: {}",
            report.instance
        );
        let overrides = Overrides {
            report_token: Some("from-env".into()),
            ..Overrides::default()
        };
        let c = Config::parse(
            Path::new("v.toml"),
            &format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\ntoken = \"from-file\"\n"),
            &overrides,
        )
        .unwrap();
        assert_eq!(c.report.unwrap().token.as_deref(), Some("from-env"));
    }

    #[test]
    fn environment_overrides_win() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:7000".into()),
            upstream: Some("http://127.0.0.1:4000".into()),
            log_level: Some("debug".into()),
            report_token: None,
        };
        let c = Config::parse(Path::new("v.toml"), MINIMAL, &overrides).unwrap();
        assert_eq!(c.listen.address.to_string(), "127.0.0.1:7000");
        assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:4000/");
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn missing_file_is_named() {
        let e = Config::load(Path::new("/no/such/vigil.toml"), &Overrides::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/no/such/vigil.toml: cannot read"),
            "{e}"
        );
    }
}
