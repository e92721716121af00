//! The schema of `vigil.toml` as serde reads it, with every default: what a key may be spelt
//! as, before any value is checked.
//!
//! The structs also derive `Serialize`, for two uses: [`default_keys`] lists the keys and
//! defaults the configuration reference (`docs/configuration.md`) is checked against, and
//! [`effective_settings`] shows the settings in force (`GET /config`, `vigil check --print`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use vigil_common::tls::{ClientTlsSection, ServerTlsSection};
use vigil_host::state::StateLimits;

use super::LogFormat;
use crate::access_log::AccessFormat;
use crate::exposure::inventory::InventoryLimits;

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) listen: RawListen,
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) path: RawPath,
    #[serde(default)]
    pub(super) identity: RawIdentity,
    #[serde(default)]
    pub(super) api: RawApi,
    #[serde(default, rename = "guard")]
    pub(super) guards: Vec<RawGuard>,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) inventory: RawInventory,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) sandbox: RawSandbox,
    #[serde(default)]
    pub(super) report: RawReport,
    #[serde(default)]
    pub(super) allowlist: RawAllowlist,
    #[serde(default)]
    pub(super) access_log: RawAccessLog,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAccessLog {
    pub(super) path: String,
    pub(super) format: AccessFormat,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAllowlist {
    pub(super) networks: Vec<String>,
    pub(super) clients: Vec<String>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSandbox {
    pub(super) max_instances: Option<usize>,
    pub(super) max_guard_memory_mb: Option<usize>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawState {
    pub(super) max_clients: usize,
    pub(super) history_depth: usize,
    pub(super) max_keys: usize,
    pub(super) max_distinct_sets: usize,
    pub(super) max_distinct_members: usize,
    pub(super) max_kv_entries: usize,
    pub(super) idle_expiry: String,
    pub(super) redis: Option<RawRedis>,
    pub(super) redis_prefix: String,
    pub(super) redis_timeout: String,
    pub(super) redis_sync: Option<String>,
    pub(super) redis_ca: Option<std::path::PathBuf>,
    pub(super) redis_cert: Option<std::path::PathBuf>,
    pub(super) redis_key: Option<std::path::PathBuf>,
    pub(super) fallback: Option<String>,
}

/// `state.redis`: one URL, or a list of a Redis Cluster's node URLs.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub(super) enum RawRedis {
    Server(String),
    Cluster(Vec<String>),
}

impl<'de> Deserialize<'de> for RawRedis {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawRedis;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Redis URL, or a list of the URLs of a Redis Cluster's nodes")
            }
            fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<RawRedis, E> {
                Ok(RawRedis::Server(url.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawRedis, A::Error> {
                let mut urls = Vec::new();
                while let Some(url) = seq.next_element::<String>()? {
                    urls.push(url);
                }
                Ok(RawRedis::Cluster(urls))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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
            redis: None,
            redis_prefix: "vigil".into(),
            redis_timeout: "5ms".into(),
            redis_sync: None,
            redis_ca: None,
            redis_cert: None,
            redis_key: None,
            fallback: None,
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawInventory {
    pub(super) max_endpoints: usize,
    pub(super) max_findings: usize,
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

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReport {
    pub(super) collector: Option<String>,
    pub(super) token: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) service: Option<String>,
    pub(super) instance: Option<String>,
    pub(super) interval: String,
    pub(super) timeout: String,
    pub(super) max_backoff: String,
    pub(super) spool_dir: PathBuf,
    pub(super) spool_max_reports: usize,
    pub(super) spool_max_mb: u64,
    pub(super) zombie_after: String,
    pub(super) version: Option<String>,
    pub(super) version_env: Option<String>,
    pub(super) version_header: Option<String>,
    pub(super) tls: ClientTlsSection,
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
            version: None,
            version_env: None,
            version_header: None,
            tls: ClientTlsSection::default(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawListen {
    pub(super) address: String,
    pub(super) header_read_timeout: String,
    pub(super) idle_timeout: String,
    pub(super) max_streams_per_connection: u32,
    pub(super) upgrades: Vec<String>,
    pub(super) max_header_bytes: usize,
    pub(super) max_headers: usize,
    pub(super) max_body_bytes: u64,
    pub(super) max_connections: usize,
    pub(super) max_connections_per_ip: usize,
    pub(super) workers: Option<usize>,
    pub(super) shutdown_grace: String,
    pub(super) request_id: String,
    pub(super) tls: ServerTlsSection,
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
            request_id: "keep".into(),
            tls: ServerTlsSection::default(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: String,
    #[serde(default = "default_upstream_timeout")]
    pub(super) timeout: String,
    #[serde(default = "default_connect_timeout")]
    pub(super) connect_timeout: String,
    #[serde(default)]
    pub(super) rewrite_host: bool,
    #[serde(default = "default_upstream_connections")]
    pub(super) max_connections: usize,
    #[serde(default = "default_queue_timeout")]
    pub(super) queue_timeout: String,
    #[serde(default)]
    pub(super) tls: ClientTlsSection,
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

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPath {
    pub(super) merge_slashes: bool,
    pub(super) escaped_slashes: String,
    pub(super) parameters: String,
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

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIdentity {
    pub(super) key: String,
    pub(super) trusted_proxies: Vec<String>,
    pub(super) internal_ranges: Vec<String>,
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

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawApi {
    pub(super) spec: Option<PathBuf>,
    pub(super) routes: Vec<String>,
    pub(super) internal_only: Vec<String>,
    pub(super) max_routes: usize,
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

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuard {
    pub(super) name: String,
    pub(super) module: PathBuf,
    #[serde(default)]
    pub(super) routes: Vec<String>,
    #[serde(default = "default_mode")]
    pub(super) mode: String,
    #[serde(default = "default_on_error")]
    pub(super) on_error: String,
    #[serde(default)]
    pub(super) config: Option<toml::Table>,
    #[serde(default)]
    pub(super) body_limit: usize,
    pub(super) deadline: Option<String>,
    pub(super) memory_mb: Option<usize>,
    pub(super) ban: Option<String>,
    /// A signatures file, read into the guard's `config` as its `signatures` text.
    pub(super) signatures: Option<PathBuf>,
}

fn default_mode() -> String {
    "enforce".into()
}

fn default_on_error() -> String {
    "allow".into()
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub(super) address: String,
    pub(super) ready_requires_upstream: bool,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            address: "127.0.0.1:9901".into(),
            ready_requires_upstream: true,
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) level: String,
    pub(super) format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The smallest file serde accepts: the keys that have no default, with placeholder values, and
/// one `[[guard]]` so that the guard keys are listed too.
const REQUIRED_KEYS: &str = r#"
[upstream]
url = "http://127.0.0.1:3000"
[[guard]]
name = "guard"
module = "guard.wasm"
"#;

/// What the schema gives a key of `vigil.toml` that the file leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaDefault {
    /// Nothing: the key must be written.
    Required,
    /// Nothing either, but the key may be left out (an `Option`): the sidecar then decides, or
    /// goes without.
    Unset,
    /// This value, in TOML syntax: `"10s"`, `100`, `true`, `["websocket"]`.
    Value(String),
}

/// Every key of `vigil.toml` as a dotted path (`listen.address`, `guard.mode` for each
/// `[[guard]]`), in the schema's order, with its default: what the configuration reference is
/// checked against.
pub fn default_keys() -> Vec<(String, SchemaDefault)> {
    let raw: RawConfig = toml::from_str(REQUIRED_KEYS).expect("the required keys parse");
    let schema = serde_json::to_value(&raw).expect("the schema serialises");
    let written: toml::Table = REQUIRED_KEYS.parse().expect("the required keys parse");
    let written = serde_json::to_value(&written).expect("a TOML table serialises");
    let mut required = Vec::new();
    flatten("", &written, &mut required);
    let mut keys = Vec::new();
    flatten("", &schema, &mut keys);
    keys.into_iter()
        .map(|(key, value)| {
            let default = if required.iter().any(|(k, _)| *k == key) {
                SchemaDefault::Required
            } else if value.is_null() {
                SchemaDefault::Unset
            } else {
                let value = toml::Value::try_from(&value).expect("a default is a TOML value");
                SchemaDefault::Value(value.to_string())
            };
            (key, default)
        })
        .collect()
}

/// The leaves of `value` under dotted paths. An array of tables (`[[guard]]`) contributes the
/// keys of its first table; any other array is a value, and so is an empty table, which would
/// otherwise leave no key behind.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    let table = match value {
        serde_json::Value::Object(table) => Some(table),
        serde_json::Value::Array(items) => items.first().and_then(|first| first.as_object()),
        _ => None,
    };
    match table {
        Some(table) if !table.is_empty() => {
            for (key, value) in table {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, out);
            }
        }
        _ => out.push((prefix.to_string(), value.clone())),
    }
}

/// What stands in for a secret in [`effective_settings`].
pub const REDACTED: &str = "(redacted)";

/// `raw` as JSON, every key with its value, the report token and the Redis URL's password
/// replaced by [`REDACTED`].
pub(super) fn effective_settings(raw: &RawConfig) -> serde_json::Value {
    let mut settings = serde_json::to_value(raw).unwrap_or(serde_json::Value::Null);
    let hide = |url: &mut serde_json::Value| {
        if let Some(text) = url.as_str() {
            *url = serde_json::Value::String(vigil_fleet::redact(text).replace("***", REDACTED));
        }
    };
    match settings.pointer_mut("/state/redis") {
        Some(serde_json::Value::Array(urls)) => urls.iter_mut().for_each(hide),
        Some(url) => hide(url),
        None => {}
    }
    if let Some(token) = settings.pointer_mut("/report/token") {
        if !token.is_null() {
            *token = serde_json::Value::String(REDACTED.into());
        }
    }
    settings
}
