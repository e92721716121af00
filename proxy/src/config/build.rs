//! From the schema to a [`Config`]: each section's values checked and turned into the types the
//! sidecar uses, with errors that name the key and what was expected.

use super::raw::{RawAccessLog, RawConfig, RawPath, RawRedis, RawReport, RawSandbox, RawState};
use super::{
    Admin, Api, Config, Listen, Log, Reporting, RequestIdPolicy, Sandbox, Upstream, VersionSource,
};
use crate::access_log::{AccessLogConfig, AccessOutput};
use crate::exposure::inventory::InventoryLimits;
use crate::forward::normalize::{EscapedSlashes, PathParameters, PathPolicy};
use crate::identity::{Allowlist, ClientPolicy, IdentityKey};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use vigil_common::config::{at_least, duration, in_range, log_filter, networks, socket_addr};
use vigil_common::syntax::is_tchar;
use vigil_common::tls::{ClientTls, ClientTlsSection};
use vigil_fleet::{FleetConfig, Redis, RedisTls};
use vigil_host::state::{Fallback, StateLimits, MAX_BAN};
use vigil_host::{GuardSpec, Mode, OnError, Pattern, SandboxLimits};

pub(super) fn build(
    raw: RawConfig,
    fixed_sections: toml::Table,
    base: &Path,
    file: Option<&Path>,
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
        request_id: match raw.listen.request_id.as_str() {
            "keep" => RequestIdPolicy::Keep,
            "replace" => RequestIdPolicy::Replace,
            other => {
                return Err(format!(
                    "listen.request_id: expected \"keep\" or \"replace\", got {other:?}"
                ))
            }
        },
        tls: raw.listen.tls.files("listen.tls", base)?,
    };
    let (url, path_prefix) = upstream_url(&raw.upstream.url)?;
    let tls = client_tls("upstream", &url, &raw.upstream.tls, base, &[b"http/1.1"])?;
    let upstream = Upstream {
        tls,
        url,
        path_prefix,
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
    if identity == IdentityKey::MtlsSubject
        && listen
            .tls
            .as_ref()
            .is_none_or(|tls| tls.client_ca.is_none())
    {
        return Err(
            "identity.key: \"mtls-subject\" needs client certificates: set listen.tls.cert, \
             listen.tls.key and listen.tls.client_ca"
                .into(),
        );
    }
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
        let source =
            crate::builtin::source(&g.module, base).map_err(|e| format!("{key}.module: {e}"))?;
        let mut spec = GuardSpec::new(&g.name, source);
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
        let mut config = g.config.unwrap_or_default();
        if let Some(file) = &g.signatures {
            let text =
                signatures_file(&base.join(file)).map_err(|e| format!("{key}.signatures: {e}"))?;
            if config.contains_key("signatures") {
                return Err(format!(
                    "{key}.signatures: the guard's config sets signatures too; keep one of them"
                ));
            }
            config.insert("signatures".into(), toml::Value::String(text));
        }
        spec.config_json = serde_json::to_string(&config)
            .map_err(|e| format!("{key}.config: cannot be expressed as JSON: {e}"))?;
        spec.body_limit = in_range(
            &format!("{key}.body_limit"),
            g.body_limit,
            0,
            MAX_BODY_LIMIT,
        )?;
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
        if let Some(ban) = &g.ban {
            let ban = duration(&format!("{key}.ban"), ban)?;
            if !(MIN_BAN..=MAX_BAN).contains(&ban) {
                return Err(format!(
                    "{key}.ban: {:?} is outside 1s to 30d",
                    g.ban.as_deref().unwrap_or_default()
                ));
            }
            if spec.mode == Mode::Monitor {
                return Err(format!(
                    "{key}.ban: a guard in monitor mode refuses nobody, so it cannot ban; \
                     remove `ban` or set mode = \"enforce\""
                ));
            }
            spec.ban = Some(ban);
        }
        guards.push(spec);
    }
    let log = Log {
        level: log_filter("log.level", &raw.log.level)?,
        format: raw.log.format,
    };
    let inventory = InventoryLimits {
        max_endpoints: at_least("inventory.max_endpoints", raw.inventory.max_endpoints, 1)?,
        max_findings: at_least("inventory.max_findings", raw.inventory.max_findings, 1)?,
        ..InventoryLimits::default()
    };
    let fleet = fleet(&raw.state, base)?;
    let state = state_limits(raw.state)?;
    let report = reporting(raw.report, base, listen.address)?;
    Ok(Config {
        file: file.map(Path::to_path_buf),
        listen,
        upstream,
        path,
        client,
        api,
        guards,
        admin: Admin {
            address: socket_addr("admin.address", &raw.admin.address)?,
            ready_requires_upstream: raw.admin.ready_requires_upstream,
        },
        log,
        inventory,
        fleet: fleet.map(|f| FleetConfig {
            history_depth: state.history_depth,
            history_ttl: state.idle_expiry,
            max_bans: state.max_clients,
            max_keys: state.max_keys,
            max_sets: state.max_distinct_sets,
            ..f
        }),
        state,
        sandbox,
        fixed_sections,
        report,
        effective: serde_json::Value::Null,
        allowlist: Allowlist::new(
            networks("allowlist.networks", &raw.allowlist.networks)?,
            raw.allowlist.clients,
        ),
        access_log: access_log(raw.access_log, base),
    })
}

/// `[access_log]`: off without a path, `-` for standard output, else a file beside the
/// configuration when relative.
fn access_log(raw: RawAccessLog, base: &Path) -> Option<AccessLogConfig> {
    let output = match raw.path.as_str() {
        "" => return None,
        "-" => AccessOutput::Stdout,
        path => AccessOutput::File(base.join(path)),
    };
    Some(AccessLogConfig {
        output,
        format: raw.format,
    })
}

/// The most body a guard may read: the prefix is held in memory for every request in flight.
pub const MAX_BODY_LIMIT: usize = 1 << 20;

/// The shortest `ban` a guard may set (the longest is the host's `MAX_BAN`).
const MIN_BAN: Duration = Duration::from_secs(1);

/// `upstream.url`: the URL and its path as a prefix (without a trailing `/`). Parts a prefix
/// cannot use are refused rather than dropped: `http::Uri` would parse a fragment and forget it.
fn upstream_url(value: &str) -> Result<(http::Uri, String), String> {
    let url: http::Uri = value
        .parse()
        .map_err(|e| format!("upstream.url: {value:?} is not a URL ({e})"))?;
    let scheme_known = matches!(url.scheme_str(), Some("http" | "https"));
    let Some(authority) = url.authority().filter(|_| scheme_known) else {
        return Err(format!(
            "upstream.url: expected http://HOST:PORT or https://HOST:PORT, perhaps with a \
             /PREFIX, got {value:?}"
        ));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "upstream.url: {value:?} carries user information (USER@HOST); Vigil sends no \
             credentials to the upstream, so leave it out"
        ));
    }
    if url.query().is_some() || value.contains('?') {
        return Err(format!(
            "upstream.url: {value:?} has a query; only a path can be put before the client's \
             path, whose query is forwarded as it came"
        ));
    }
    if value.contains('#') {
        return Err(format!(
            "upstream.url: {value:?} has a fragment (#...), which is never sent; leave it out"
        ));
    }
    let prefix = url.path().trim_end_matches('/').to_string();
    Ok((url, prefix))
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

/// The longest `state.redis_timeout`: a request waits this long for each state call while
/// Redis is slow, and a guard's own deadline (10 ms by default) counts that wait.
const MAX_REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Bounds of `state.redis_sync`: more often than this the syncs cost Redis more than the calls
/// they replace; less often, replicas disagree for longer than a limit's window is useful.
const MIN_REDIS_SYNC: Duration = Duration::from_millis(10);
const MAX_REDIS_SYNC: Duration = Duration::from_secs(10);

/// `[state] redis*`: the shared store's settings, its depth and TTLs filled in by the caller;
/// certificate paths relative to `base`.
fn fleet(raw: &RawState, base: &Path) -> Result<Option<FleetConfig>, String> {
    let Some(redis) = &raw.redis else {
        for (key, set) in [
            ("redis_ca", raw.redis_ca.is_some()),
            ("redis_cert", raw.redis_cert.is_some()),
            ("redis_key", raw.redis_key.is_some()),
            ("fallback", raw.fallback.is_some()),
            ("redis_sync", raw.redis_sync.is_some()),
        ] {
            if set {
                return Err(format!("state.{key}: is set but state.redis is not"));
            }
        }
        return Ok(None);
    };
    let redis = match redis {
        RawRedis::Server(url) => {
            redis_url("state.redis", url)?;
            Redis::Server(url.clone())
        }
        RawRedis::Cluster(urls) => {
            if urls.is_empty() {
                return Err(
                    "state.redis: an empty list; give one URL, or the URLs of a Redis Cluster's nodes"
                        .into(),
                );
            }
            for (i, url) in urls.iter().enumerate() {
                redis_url(&format!("state.redis[{i}]"), url)?;
            }
            let tls = urls[0].starts_with("rediss://");
            if urls.iter().any(|url| url.starts_with("rediss://") != tls) {
                return Err(
                    "state.redis: the nodes of one cluster are all redis:// or all rediss://"
                        .into(),
                );
            }
            Redis::Cluster(urls.clone())
        }
    };
    let url = match &redis {
        Redis::Server(url) => url,
        Redis::Cluster(urls) => &urls[0],
    };
    let timeout = duration("state.redis_timeout", &raw.redis_timeout)?;
    if timeout.is_zero() || timeout > MAX_REDIS_TIMEOUT {
        return Err(format!(
            "state.redis_timeout: must be from 1ms to 1s, got {}",
            raw.redis_timeout
        ));
    }
    let prefix = &raw.redis_prefix;
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "state.redis_prefix: expected 1 to 64 letters, digits, '-', '_' or '.', got {prefix:?}"
        ));
    }
    let sync = match &raw.redis_sync {
        None => None,
        Some(text) => {
            let every = duration("state.redis_sync", text)?;
            if every < MIN_REDIS_SYNC || every > MAX_REDIS_SYNC {
                return Err(format!(
                    "state.redis_sync: must be from 10ms to 10s, got {text}; leave it out for \
                     exact fleet-wide limits"
                ));
            }
            Some(every)
        }
    };
    let fallback = match raw.fallback.as_deref() {
        None | Some("local") => Fallback::Local,
        Some("deny") => Fallback::Deny,
        Some(other) => {
            return Err(format!(
                "state.fallback: expected \"local\" or \"deny\", got {other:?}"
            ))
        }
    };
    Ok(Some(FleetConfig {
        tls: redis_tls(raw, url, base)?,
        redis,
        prefix: prefix.clone(),
        timeout,
        history_depth: 0,
        history_ttl: Duration::ZERO,
        max_bans: 0,
        fallback,
        sync,
        max_keys: 0,
        max_sets: 0,
    }))
}

/// Checks that `url`, the value of `key`, is a Redis URL.
fn redis_url(key: &str, url: &str) -> Result<(), String> {
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        return Ok(());
    }
    Err(format!(
        "{key}: expected a URL redis://[user:password@]host:port/db or rediss://…, got {:?}",
        vigil_fleet::redact(url)
    ))
}

/// `state.redis_ca`, `redis_cert` and `redis_key`, read and checked as PEM now, so that a bad
/// file is a configuration error rather than a Redis that never answers.
fn redis_tls(raw: &RawState, url: &str, base: &Path) -> Result<Option<RedisTls>, String> {
    if raw.redis_ca.is_none() && raw.redis_cert.is_none() && raw.redis_key.is_none() {
        return Ok(None);
    }
    if !url.starts_with("rediss://") {
        let key = match (&raw.redis_ca, &raw.redis_cert) {
            (Some(_), _) => "redis_ca",
            (None, Some(_)) => "redis_cert",
            (None, None) => "redis_key",
        };
        return Err(format!(
            "state.{key}: is set but state.redis is plain redis://; use rediss:// for TLS"
        ));
    }
    let pem = |key: &str, path: &Path| -> Result<Vec<u8>, String> {
        let path = base.join(path);
        vigil_common::tls::read_certificates(key, &path)?;
        std::fs::read(&path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))
    };
    let ca = match &raw.redis_ca {
        Some(path) => Some(pem("state.redis_ca", path)?),
        None => None,
    };
    let client = match (&raw.redis_cert, &raw.redis_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let key = base.join(key);
            vigil_common::tls::read_private_key("state.redis_key", &key)?;
            let key = std::fs::read(&key)
                .map_err(|e| format!("state.redis_key: cannot read {}: {e}", key.display()))?;
            Some((pem("state.redis_cert", cert)?, key))
        }
        (Some(_), None) => return Err("state.redis_key: missing (redis_cert is set)".into()),
        (None, Some(_)) => return Err("state.redis_cert: missing (redis_key is set)".into()),
    };
    Ok(Some(RedisTls { ca, client }))
}

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
            ("report.version", raw.version.is_some()),
            ("report.version_env", raw.version_env.is_some()),
            ("report.version_header", raw.version_header.is_some()),
            ("report.tls", raw.tls.is_set()),
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
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
        return Err(format!(
            "report.collector: expected http://HOST:PORT or https://HOST:PORT, got {collector:?}"
        ));
    }
    // No ALPN here: the reporter's connector (vigil_common::client) offers its own.
    let tls = client_tls("report", &url, &raw.tls, base, &[])?;
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
        tls,
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
        version: version_source(raw.version, raw.version_env, raw.version_header)?,
    }))
}

/// `report.version`, `version_env` and `version_header`: the version is checked as the
/// collector checks it, so a sidecar never sends a report the collector would refuse.
fn version_source(
    version: Option<String>,
    env: Option<String>,
    header: Option<String>,
) -> Result<VersionSource, String> {
    let fixed = match (version, env) {
        (Some(_), Some(_)) => {
            return Err("report.version_env: set either version or version_env, not both".into())
        }
        (Some(version), None) => {
            vigil_report::check_version(&version).map_err(|e| format!("report.version: {e}"))?;
            Some(version)
        }
        (None, Some(name)) => {
            let value = std::env::var(&name).map_err(|_| {
                format!("report.version_env: the environment variable {name:?} is not set")
            })?;
            let value = value.trim().to_string();
            vigil_report::check_version(&value)
                .map_err(|e| format!("report.version_env: {name}: {e}"))?;
            Some(value)
        }
        (None, None) => None,
    };
    let header = match header {
        Some(name) => Some(
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("report.version_header: {name:?} is not a header name"))?,
        ),
        None => None,
    };
    Ok(VersionSource { fixed, header })
}

/// `[SECTION.tls]` for a client of `url`: the checked settings for `https://`, `None` for
/// `http://`, where setting any of its keys is an error rather than silently plain text.
fn client_tls(
    section: &str,
    url: &http::Uri,
    raw: &ClientTlsSection,
    base: &Path,
    alpn: &[&[u8]],
) -> Result<Option<ClientTls>, String> {
    let key = format!("{section}.tls");
    if url.scheme_str() != Some("https") {
        if raw.is_set() {
            return Err(format!(
                "{key}: is set but {url} is plain http://; use https:// or remove [{key}]"
            ));
        }
        return Ok(None);
    }
    raw.client(&key, url.host().unwrap_or_default(), base, alpn)
        .map(Some)
}

/// Service and instance names travel in every report; the collector applies the same rule.
fn check_report_name(key: &str, value: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.@:".contains(c);
    if value.is_empty() || value.len() > vigil_report::MAX_NAME_BYTES || !value.chars().all(allowed)
    {
        return Err(format!(
            "{key}: {value:?} must be 1 to {} characters of letters, digits and - _ . @ :",
            vigil_report::MAX_NAME_BYTES
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

/// The most `report.spool_max_mb` may be: 1 TiB, far beyond any disk a sidecar is given, and
/// small enough that the size in bytes cannot overflow.
const MAX_SPOOL_MB: u64 = 1 << 20;

/// `listen.upgrades`: protocol names as `Upgrade` carries them (RFC 9110 §7.8), lower-cased.
fn upgrades(values: &[String]) -> Result<Vec<String>, String> {
    values
        .iter()
        .map(|value| {
            let name = value.trim().to_ascii_lowercase();
            let is_token = !name.is_empty() && name.bytes().all(is_tchar);
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
/// Largest signatures file read: far above any real list, below what would make every
/// instance's `init` slow to parse.
const MAX_SIGNATURES_BYTES: u64 = 1 << 20;

/// The text of a guard's signatures file. The guard parses it (it knows the format); read
/// here because guards have no files, and again at each reload, so an updated file takes
/// effect with the next reload.
fn signatures_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .len();
    if len > MAX_SIGNATURES_BYTES {
        return Err(format!(
            "{shown} is {len} bytes; at most {MAX_SIGNATURES_BYTES} are read"
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))
}

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
