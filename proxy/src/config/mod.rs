//! `vigil.toml`: the sidecar's one configuration file, parsed and validated at start (and at
//! every reload). Every error names the file, the key and what was expected.

//!
//! The types here are the checked configuration; `raw` is the schema serde reads with its
//! defaults, and `build` checks each section and builds these, with the checks of single
//! values the collector's configuration shares (`vigil_common::config`).

mod build;
mod raw;

pub use build::MAX_BODY_LIMIT;
pub use vigil_common::config::{ConfigError, LogFormat};

pub use raw::{
    default_keys, SchemaDefault, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADERS,
    DEFAULT_UPSTREAM_CONNECTIONS,
};

use crate::access_log::AccessLogConfig;
use crate::exposure::inventory::InventoryLimits;
use crate::forward::normalize::PathPolicy;
use crate::identity::{Allowlist, ClientPolicy};
use raw::RawConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_common::tls::{ClientTls, ServerTlsFiles};
use vigil_host::state::StateLimits;
use vigil_host::{GuardSpec, Pattern};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, if any (`vigil run --upstream URL` needs none); guard modules
    /// and the spec are relative to its directory.
    pub file: Option<PathBuf>,
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
    /// The Redis replicas share state through (`[state] redis`); `None`: in-process only.
    pub fleet: Option<vigil_fleet::FleetConfig>,
    /// Size of the guard instance pool (fixed at start).
    pub sandbox: Sandbox,
    /// Every section but `[[guard]]`, as written: a reload swaps the guard chain only, so a
    /// change here is reported as waiting for a restart.
    pub fixed_sections: toml::Table,
    /// Reporting to a collector; `None` when `[report]` names no collector.
    pub report: Option<Reporting>,
    /// Clients that skip the guards; a reload swaps it with the chain.
    pub allowlist: Allowlist,
    /// The access log; `None` when off (the default).
    pub access_log: Option<AccessLogConfig>,
    /// Every key with the value in force (defaults filled in, overrides applied), secrets
    /// redacted: what `GET /config` and `vigil check --print` show.
    pub effective: serde_json::Value,
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
    /// How an `https://` collector is verified; `None` for `http://`.
    pub tls: Option<ClientTls>,
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
    /// Where the version of the service comes from.
    pub version: VersionSource,
}

/// Where the sidecar learns the version of the service it stands in front of, so the collector
/// can tell which instances still run a build a fix has not reached.
#[derive(Debug, Clone, Default)]
pub struct VersionSource {
    /// From `report.version`, or the variable `report.version_env` names, read at start.
    pub fixed: Option<String>,
    /// The response header (`report.version_header`) whose value, when an upstream response
    /// carries a valid one, replaces the version from then on.
    pub header: Option<http::HeaderName>,
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
    /// Whether a well-formed `X-Request-Id` from the client is kept or replaced.
    pub request_id: RequestIdPolicy,
    /// TLS on the listener (`[listen.tls]`); `None`: plain HTTP.
    pub tls: Option<ServerTlsFiles>,
}

/// What happens to an `X-Request-Id` a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestIdPolicy {
    /// Kept when well formed (1 to 128 of `A-Z a-z 0-9 - _ . : + / = @`), replaced otherwise:
    /// a request keeps the id an edge proxy in front gave it.
    Keep,
    /// Always replaced by Vigil's own.
    Replace,
}

/// Upstream settings.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Base URL of the service, `http://host:port` or `https://host:port`, perhaps with a path.
    pub url: http::Uri,
    /// The path of `url` without a trailing `/`, put before every forwarded path; empty when
    /// the URL has none.
    pub path_prefix: String,
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
    /// TLS to the upstream, for an `https://` URL.
    pub tls: Option<ClientTls>,
}

impl Upstream {
    /// `host:port` to connect to (port 80, or 443 for `https://`, when the URL names none).
    pub fn address(&self) -> String {
        let host = self.url.host().unwrap_or("localhost");
        let default_port = if self.tls.is_some() { 443 } else { 80 };
        format!("{host}:{}", self.url.port_u16().unwrap_or(default_port))
    }
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
    /// `/readyz` answers 503 while the upstream refuses connections.
    pub ready_requires_upstream: bool,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct Log {
    /// Filter such as `info` or `vigil=debug`.
    pub level: String,
    /// Text or JSON.
    pub format: LogFormat,
}

/// Values from the environment that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `VIGIL_LISTEN`: the public listen address.
    pub listen: Option<String>,
    /// `VIGIL_UPSTREAM`: the upstream URL.
    pub upstream: Option<String>,
    /// `VIGIL_ADMIN`: the admin listen address.
    pub admin: Option<String>,
    /// `VIGIL_LOG`: the log filter.
    pub log_level: Option<String>,
    /// `VIGIL_REPORT_TOKEN`: the collector's bearer token, kept out of the file.
    pub report_token: Option<String>,
}

/// What messages name in place of the file when the sidecar runs without one.
const NO_FILE: &str = "(no configuration file)";

impl Config {
    /// Reads and validates `path`, applying `overrides`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            message: format!("cannot read the configuration: {e}"),
        })?;
        Config::parse(path, &text, overrides)
    }

    /// The configuration of a sidecar started without a file: the upstream from `overrides`
    /// (required), every other key at its default but those `overrides` set. Relative paths
    /// are relative to the working directory.
    pub fn without_file(overrides: &Overrides) -> Result<Config, ConfigError> {
        let fail = |message: String| ConfigError {
            file: PathBuf::from(NO_FILE),
            message,
        };
        let url = overrides.upstream.clone().ok_or_else(|| {
            fail("upstream.url: missing; pass --upstream URL (or set VIGIL_UPSTREAM)".into())
        })?;
        let mut upstream = toml::Table::new();
        upstream.insert("url".into(), toml::Value::String(url));
        let mut table = toml::Table::new();
        table.insert("upstream".into(), toml::Value::Table(upstream));
        let raw: RawConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| fail(e.to_string().trim_end().to_string()))?;
        Config::build(raw, toml::Table::new(), None, overrides).map_err(fail)
    }

    /// Validates configuration text as if read from `path`.
    pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let fail = |message: String| ConfigError {
            file: path.to_path_buf(),
            message,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| fail(e.to_string().trim_end().to_string()))?;
        let mut fixed_sections: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(e.to_string().trim_end().to_string()))?;
        fixed_sections.remove("guard");
        fixed_sections.remove("allowlist");
        Config::build(raw, fixed_sections, Some(path), overrides).map_err(fail)
    }

    /// Applies `overrides` to `raw` and checks the result.
    fn build(
        mut raw: RawConfig,
        fixed_sections: toml::Table,
        file: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Config, String> {
        if let Some(listen) = &overrides.listen {
            raw.listen.address = listen.clone();
        }
        if let Some(upstream) = &overrides.upstream {
            raw.upstream.url = upstream.clone();
        }
        if let Some(admin) = &overrides.admin {
            raw.admin.address = admin.clone();
        }
        if let Some(level) = &overrides.log_level {
            // Named as the user gave it, not as the key it replaces.
            raw.log.level = vigil_common::config::log_filter("--log (VIGIL_LOG)", level)?;
        }
        if let Some(token) = &overrides.report_token {
            raw.report.token = Some(token.clone());
            raw.report.token_file = None;
        }
        let base = file.and_then(Path::parent).unwrap_or(Path::new("."));
        let effective = raw::effective_settings(&raw);
        let mut config = build::build(raw, fixed_sections, base, file)?;
        config.effective = effective;
        Ok(config)
    }

    /// The file's name for messages, or what stands in for it when there is none.
    pub fn source(&self) -> String {
        self.file
            .as_ref()
            .map_or_else(|| NO_FILE.to_string(), |f| f.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::normalize::{EscapedSlashes, PathParameters};
    use vigil_fleet::Redis;
    use vigil_host::state::Fallback;
    use vigil_host::{GuardSource, Mode, OnError};

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
    fn a_signatures_file_is_read_into_the_guards_config() {
        let dir = std::env::temp_dir().join(format!("vigil-signatures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mine.txt"), "path /.env\nagent sqlmap\n").unwrap();
        let file = dir.join("vigil.toml");
        let parse_at = |guard: &str| {
            let text = format!("{MINIMAL}[[guard]]\nname = \"s\"\nmodule = \"s.wasm\"\n{guard}");
            Config::parse(&file, &text, &Overrides::default()).map_err(|e| e.to_string())
        };
        let c = parse_at("signatures = \"mine.txt\"\nconfig = { status = 404 }\n").unwrap();
        let json: serde_json::Value = serde_json::from_str(&c.guards[0].config_json).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": 404, "signatures": "path /.env\nagent sqlmap\n"})
        );
        let missing = parse_at("signatures = \"gone.txt\"\n").unwrap_err();
        assert!(
            missing.contains("guard[0] (\"s\").signatures: cannot read ")
                && missing.contains("gone.txt"),
            "{missing}"
        );
        let twice = parse_at("signatures = \"mine.txt\"\nconfig = { signatures = \"path /x\" }\n")
            .unwrap_err();
        assert!(
            twice.contains("guard[0] (\"s\").signatures: the guard's config sets signatures too"),
            "{twice}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
    fn a_builtin_module_needs_no_file() {
        let c = parse(&format!(
            "{MINIMAL}[[guard]]\nname = \"limit\"\nmodule = \"builtin:rate-limit\"\n"
        ))
        .unwrap();
        let builtin = crate::builtin::find("rate-limit").unwrap();
        assert!(matches!(&c.guards[0].source, GuardSource::Bytes(b) if b == builtin.wasm));
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_expectation() {
        for (text, expected) in [
            ("[upstream]\nurl = \"http://x:1\"\ntimout = \"1s\"\n", "unknown field `timout`"),
            ("[listen]\naddress = \"0.0.0.0:8080\"\n", "missing field `upstream`"),
            (&format!("{MINIMAL}[listen]\naddress = \"localhost\"\n"), "listen.address: expected an address"),
            (&format!("{MINIMAL}[listen]\nheader_read_timeout = \"10 seconds\"\n"), "listen.header_read_timeout: expected a duration"),
            (&format!("{MINIMAL}[identity]\nkey = \"email\"\n"), "identity.key: invalid identity key \"email\""),
            (&format!("{MINIMAL}[identity]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"), "identity.trusted_proxies: \"10.0.0.0/33\""),
            (&format!("{MINIMAL}[api]\ninternal_only = [\"admin\"]\n"), "api.internal_only: invalid route pattern \"admin\""),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nmode = \"enforcing\"\n"), "guard[0] (\"g\").mode: expected \"enforce\" or \"monitor\""),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\non_error = \"open\"\n"), "guard[0] (\"g\").on_error"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"a.wasm\"\n[[guard]]\nname = \"g\"\nmodule = \"b.wasm\"\n"), "guard[1] (\"g\").name: another guard already has this name"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\n"), "missing field `module`"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"builtin:ratelimit\"\n"), "guard[0] (\"g\").module: unknown built-in guard \"builtin:ratelimit\"; the built-in guards are builtin:credential-stuffing, builtin:enumeration, "),
            (&format!("{MINIMAL}[log]\nformat = \"xml\"\n"), "unknown variant `xml`"),
            (&format!("{MINIMAL}[log]\nlevel = \"verbose\"\n"), "log.level: \"verbose\" in \"verbose\" does not name a level: expected one of trace, debug, info, warn, error, off"),
            (&format!("{MINIMAL}[log]\nlevel = \"vigil=debug,hyper=loud\"\n"), "log.level: \"hyper=loud\" in \"vigil=debug,hyper=loud\" does not name a level"),
            ("[upstream]\nurl = \"http://user:secret@x:1\"\n", "upstream.url: \"http://user:secret@x:1\" carries user information"),
            ("[upstream]\nurl = \"http://x:1/api?v=2\"\n", "upstream.url: \"http://x:1/api?v=2\" has a query"),
            ("[upstream]\nurl = \"http://x:1/api#top\"\n", "upstream.url: \"http://x:1/api#top\" has a fragment"),
            (&format!("{MINIMAL}[report]\nservice = \"shop\"\n"), "report.service: is set but report.collector is not"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\n"), "report.service: missing"),
            (&format!("{MINIMAL}[report]\ncollector = \"ftp://c\"\nservice = \"shop\"\n"), "report.collector: expected http://HOST:PORT or https://HOST:PORT"),
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
            (&format!("{MINIMAL}[state]\nredis = \"http://:pw@cache:6379\"\n"), "state.redis: expected a URL redis://[user:password@]host:port/db or rediss://…, got \"http://:***@cache:6379\""),
            (&format!("{MINIMAL}[state]\nredis = \"redis://cache\"\nredis_timeout = \"0ms\"\n"), "state.redis_timeout: must be from 1ms to 1s, got 0ms"),
            (&format!("{MINIMAL}[state]\nredis = \"redis://cache\"\nredis_timeout = \"5s\"\n"), "state.redis_timeout: must be from 1ms to 1s, got 5s"),
            (&format!("{MINIMAL}[state]\nredis = \"redis://cache\"\nredis_prefix = \"a b\"\n"), "state.redis_prefix: expected 1 to 64 letters, digits, '-', '_' or '.', got \"a b\""),
            (&format!("{MINIMAL}[state]\nredis_ca = \"ca.pem\"\n"), "state.redis_ca: is set but state.redis is not"),
            (&format!("{MINIMAL}[state]\nredis = []\n"), "state.redis: an empty list; give one URL, or the URLs of a Redis Cluster's nodes"),
            (&format!("{MINIMAL}[state]\nredis = [\"redis://a:7000\", \"a:7001\"]\n"), "state.redis[1]: expected a URL redis://[user:password@]host:port/db or rediss://…, got \"a:7001\""),
            (&format!("{MINIMAL}[state]\nredis = [\"redis://a:7000\", \"rediss://b:7001\"]\n"), "state.redis: the nodes of one cluster are all redis:// or all rediss://"),
            (&format!("{MINIMAL}[state]\nredis = 6379\n"), "a Redis URL, or a list of the URLs of a Redis Cluster's nodes"),
            (&format!("{MINIMAL}[state]\nfallback = \"deny\"\n"), "state.fallback: is set but state.redis is not"),
            (&format!("{MINIMAL}[state]\nredis_sync = \"100ms\"\n"), "state.redis_sync: is set but state.redis is not"),
            (&format!("{MINIMAL}[state]\nredis = \"redis://cache\"\nredis_sync = \"1ms\"\n"), "state.redis_sync: must be from 10ms to 10s, got 1ms; leave it out for exact fleet-wide limits"),
            (&format!("{MINIMAL}[state]\nredis = \"redis://cache\"\nredis_sync = \"often\"\n"), "state.redis_sync: expected a duration"),
            (&format!("{MINIMAL}[state]\nredis = \"redis://cache\"\nfallback = \"refuse\"\n"), "state.fallback: expected \"local\" or \"deny\", got \"refuse\""),
            (&format!("{MINIMAL}[state]\nredis = \"redis://cache\"\nredis_ca = \"ca.pem\"\n"), "state.redis_ca: is set but state.redis is plain redis://; use rediss:// for TLS"),
            (&format!("{MINIMAL}[state]\nredis = \"rediss://cache\"\nredis_ca = \"missing-ca.pem\"\n"), "state.redis_ca: cannot read /etc/vigil/missing-ca.pem"),
            (&format!("{MINIMAL}[state]\nredis = \"rediss://cache\"\nredis_cert = \"client.pem\"\n"), "state.redis_key: missing (redis_cert is set)"),
            (&format!("{MINIMAL}[state]\nredis = \"rediss://cache\"\nredis_key = \"client.key\"\n"), "state.redis_cert: missing (redis_key is set)"),
            (&format!("{MINIMAL}[sandbox]\nmax_instances = 1\n"), "sandbox.max_instances: must be at least 2, got 1"),
            (&format!("{MINIMAL}[sandbox]\nmax_instances = 100000\n"), "sandbox.max_instances: must be at most 4096, got 100000"),
            (&format!("{MINIMAL}[sandbox]\nmax_guard_memory_mb = 0\n"), "sandbox.max_guard_memory_mb: must be at least 1, got 0"),
            (&format!("{MINIMAL}[sandbox]\nmax_guard_memory_mb = 8192\n"), "sandbox.max_guard_memory_mb: must be at most 4096, got 8192"),
            (&format!("{MINIMAL}[sandbox]\nmax_instance = 10\n"), "unknown field `max_instance`"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nmemory_mb = 300\n"), "guard[0] (\"g\").memory_mb: 300 is more than sandbox.max_guard_memory_mb (256) allows"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nbody_limit = 4194304\n"), "guard[0] (\"g\").body_limit: must be at most 1048576, got 4194304"),
            (&format!("{MINIMAL}[listen]\nrequest_id = \"sometimes\"\n"), "listen.request_id: expected \"keep\" or \"replace\", got \"sometimes\""),
            (&format!("{MINIMAL}[allowlist]\nnetworks = [\"10.0.0.0/40\"]\n"), "allowlist.networks: \"10.0.0.0/40\" is not an address"),
            (&format!("{MINIMAL}[allowlist]\nclient = [\"a\"]\n"), "unknown field `client`"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nban = \"a while\"\n"), "guard[0] (\"g\").ban: expected a duration"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nban = \"90d\"\n"), "guard[0] (\"g\").ban: \"90d\" is outside 1s to 30d"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nban = \"0s\"\n"), "guard[0] (\"g\").ban: \"0s\" is outside 1s to 30d"),
            (&format!("{MINIMAL}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nmode = \"monitor\"\nban = \"1m\"\n"), "guard[0] (\"g\").ban: a guard in monitor mode refuses nobody"),
            (&format!("{MINIMAL}[listen.tls]\ncert = \"shop.crt\"\n"), "listen.tls.key: missing (listen.tls.cert is set)"),
            (&format!("{MINIMAL}[listen.tls]\nkey = \"shop.key\"\n"), "listen.tls.cert: missing (listen.tls.key is set)"),
            (&format!("{MINIMAL}[listen.tls]\nclient_ca = \"ca.crt\"\n"), "listen.tls.client_ca: client certificates need TLS"),
            (&format!("{MINIMAL}[listen.tls]\ncert = \"missing.crt\"\nkey = \"missing.key\"\n"), "listen.tls.cert: cannot read /etc/vigil/missing.crt"),
            (&format!("{MINIMAL}[listen.tls]\ncert = \"a.crt\"\nkey = \"a.key\"\nmin_version = \"1.0\"\n"), "listen.tls.min_version: expected \"1.2\" or \"1.3\", got \"1.0\""),
            (&format!("{MINIMAL}[listen.tls]\ncert = \"a.crt\"\nkey = \"a.key\"\nclient_auth = \"maybe\"\n"), "listen.tls.client_auth: expected \"required\" or \"optional\", got \"maybe\""),
            (&format!("{MINIMAL}[listen.tls]\ncrt = \"a.crt\"\n"), "unknown field `crt`"),
            (&format!("{MINIMAL}[identity]\nkey = \"mtls-subject\"\n"), "identity.key: \"mtls-subject\" needs client certificates"),
            (&format!("{MINIMAL}[upstream.tls]\nca = \"ca.crt\"\n"), "upstream.tls: is set but http://127.0.0.1:3000/ is plain http://"),
            ("[upstream]\nurl = \"https://x\"\n[upstream.tls]\nca = \"missing-ca.crt\"\n", "upstream.tls.ca: cannot read /etc/vigil/missing-ca.crt"),
            ("[upstream]\nurl = \"https://x\"\n[upstream.tls]\nverify = false\ncert = \"c.crt\"\n", "upstream.tls.key: missing (cert is set)"),
            ("[upstream]\nurl = \"https://x\"\n[upstream.tls]\nverify = false\nserver_name = \"not a name\"\n", "upstream.tls.server_name: \"not a name\" is neither a DNS name nor an IP address"),
            (&format!("{MINIMAL}[report.tls]\nca = \"ca.crt\"\n"), "report.tls: is set but report.collector is not"),
            (&format!("{MINIMAL}[report]\nversion_header = \"X-App-Version\"\n"), "report.version_header: is set but report.collector is not"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\nversion = \"2.4 beta\"\n"), "report.version: \"2.4 beta\" must be 1 to 64 characters"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\nversion = \"2.4\"\nversion_env = \"V\"\n"), "report.version_env: set either version or version_env, not both"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\nversion_env = \"VIGIL_TEST_VERSION_NEVER_SET\"\n"), "report.version_env: the environment variable \"VIGIL_TEST_VERSION_NEVER_SET\" is not set"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\nversion_header = \"X App\"\n"), "report.version_header: \"X App\" is not a header name"),
            (&format!("{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\n[report.tls]\nverify = false\n"), "report.tls: is set but http://c:9000/ is plain http://"),
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
    fn state_is_in_process_unless_redis_is_named_and_its_password_is_never_shown() {
        assert!(parse(MINIMAL).unwrap().fleet.is_none());
        let c = parse(&format!(
            "{MINIMAL}[state]\nredis = \"redis://app:s3cret@cache:6379/2\"\nhistory_depth = 8\nidle_expiry = \"10m\"\nmax_clients = 500\n"
        ))
        .unwrap();
        let fleet = c.fleet.as_ref().unwrap();
        assert_eq!(
            fleet.redis,
            Redis::Server("redis://app:s3cret@cache:6379/2".into())
        );
        assert_eq!(
            (fleet.prefix.as_str(), fleet.timeout),
            ("vigil", Duration::from_millis(5))
        );
        assert_eq!(
            (fleet.history_depth, fleet.history_ttl, fleet.max_bans),
            (8, Duration::from_secs(600), 500),
            "the shared store keeps the local bounds"
        );
        assert_eq!(fleet.fallback, Fallback::Local, "by default");
        let deny = parse(&format!(
            "{MINIMAL}[state]\nredis = \"redis://cache\"\nfallback = \"deny\"\n"
        ))
        .unwrap();
        assert_eq!(deny.fleet.unwrap().fallback, Fallback::Deny);
        let shown = c
            .effective
            .pointer("/state/redis")
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(shown, "redis://app:(redacted)@cache:6379/2");

        let c = parse(&format!(
            "{MINIMAL}[state]\nredis = [\"redis://:pw@a:7000\", \"redis://:pw@b:7001\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.fleet.unwrap().redis,
            Redis::Cluster(vec![
                "redis://:pw@a:7000".into(),
                "redis://:pw@b:7001".into()
            ]),
            "a list is a cluster's nodes"
        );
        let shown = c.effective.pointer("/state/redis").unwrap();
        assert_eq!(
            shown,
            &serde_json::json!(["redis://:(redacted)@a:7000", "redis://:(redacted)@b:7001"])
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
    fn the_service_version_comes_from_the_file_the_environment_or_a_header() {
        let report = |keys: &str| {
            parse(&format!(
                "{MINIMAL}[report]\ncollector = \"http://c:9000\"\nservice = \"shop\"\n{keys}"
            ))
            .map(|c| c.report.unwrap().version)
        };
        assert!(report("").unwrap().fixed.is_none());
        let fixed = report("version = \"2.4.1\"\n").unwrap();
        assert_eq!(fixed.fixed.as_deref(), Some("2.4.1"));
        assert!(fixed.header.is_none());
        // A name no other test uses: the environment is shared by the test threads.
        std::env::set_var("VIGIL_TEST_VERSION_FROM_ENV", " v3.0.0-rc.1\n");
        let from_env = report("version_env = \"VIGIL_TEST_VERSION_FROM_ENV\"\n").unwrap();
        assert_eq!(from_env.fixed.as_deref(), Some("v3.0.0-rc.1"));
        std::env::set_var("VIGIL_TEST_VERSION_BAD", "3.0 final");
        let bad = report("version_env = \"VIGIL_TEST_VERSION_BAD\"\n").unwrap_err();
        assert!(
            bad.contains("report.version_env: VIGIL_TEST_VERSION_BAD: \"3.0 final\""),
            "{bad}"
        );
        let header = report("version_header = \"X-App-Version\"\n").unwrap();
        assert_eq!(header.header.unwrap().as_str(), "x-app-version");
    }

    #[test]
    fn environment_overrides_win() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:7000".into()),
            upstream: Some("http://127.0.0.1:4000".into()),
            admin: Some("127.0.0.1:7001".into()),
            log_level: Some("debug".into()),
            report_token: None,
        };
        let c = Config::parse(Path::new("v.toml"), MINIMAL, &overrides).unwrap();
        assert_eq!(c.listen.address.to_string(), "127.0.0.1:7000");
        assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:4000/");
        assert_eq!(c.admin.address.to_string(), "127.0.0.1:7001");
        assert_eq!(c.log.level, "debug");

        let bad_log = Overrides {
            log_level: Some("verbose".into()),
            ..Overrides::default()
        };
        let error = Config::parse(Path::new("v.toml"), MINIMAL, &bad_log)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("v.toml: --log (VIGIL_LOG): \"verbose\""),
            "the override is named as given: {error}"
        );
    }

    #[test]
    fn an_upstream_path_is_a_prefix_without_its_trailing_slash() {
        let prefix = |url: &str| {
            parse(&format!("[upstream]\nurl = \"{url}\"\n"))
                .unwrap()
                .upstream
        };
        assert_eq!(prefix("http://127.0.0.1:3000").path_prefix, "");
        assert_eq!(prefix("http://127.0.0.1:3000/").path_prefix, "");
        assert_eq!(prefix("http://127.0.0.1:3000/api").path_prefix, "/api");
        assert_eq!(prefix("http://127.0.0.1:3000/api/").path_prefix, "/api");
        assert_eq!(prefix("http://backend/v1/shop").path_prefix, "/v1/shop");
        assert_eq!(prefix("http://backend/v1/shop").address(), "backend:80");
    }

    #[test]
    fn without_a_file_the_upstream_is_enough_and_the_rest_is_default() {
        let overrides = Overrides {
            upstream: Some("http://127.0.0.1:3000/api".into()),
            ..Overrides::default()
        };
        let c = Config::without_file(&overrides).unwrap();
        assert!(c.file.is_none());
        assert_eq!(c.source(), "(no configuration file)");
        assert_eq!(c.upstream.path_prefix, "/api");
        assert_eq!(c.listen.address.to_string(), "0.0.0.0:8080");
        assert_eq!(c.admin.address.to_string(), "127.0.0.1:9901");
        assert!(c.admin.ready_requires_upstream);
        assert!(c.guards.is_empty() && c.report.is_none());
        assert_eq!(c.log.level, "info");

        let error = Config::without_file(&Overrides::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "(no configuration file): upstream.url: missing; pass --upstream URL (or set VIGIL_UPSTREAM)"
        );
        let error = Config::without_file(&Overrides {
            upstream: Some("ftp://x".into()),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("upstream.url: expected http://HOST:PORT or https://HOST:PORT"),
            "{error}"
        );
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
