//! `collector.toml`: the collector's configuration, parsed and validated at start. Every error
//! names the file, the key and what was expected.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_common::config::ConfigError;
use vigil_common::config::{at_least, duration, log_filter, log_format, socket_addr, LogFormat};
use vigil_common::tls::{ClientTls, ClientTlsSection, ServerTlsFiles, ServerTlsSection};

/// Shortest bearer token accepted, so a guessable token cannot be configured by mistake.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The validated collector configuration.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// The file it was read from; relative paths are relative to its directory.
    pub file: PathBuf,
    /// Where sidecars send reports.
    pub listen: Listen,
    /// Where the dashboard and the JSON API are served.
    pub api: ApiListen,
    /// Where reports are stored (`[storage]`).
    pub storage: Storage,
    /// Who may report, and for what.
    pub tokens: Vec<Token>,
    /// How long data is kept.
    pub retention: Retention,
    /// Known-vulnerable endpoint files.
    pub vulnerabilities: VulnerabilityFiles,
    /// How and what it logs.
    pub log: Log,
    /// Where news of the fleet is posted.
    pub webhooks: Vec<Webhook>,
}

/// What a webhook is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    /// A service reported a finding kind it had not reported before.
    NewFindingKind,
    /// An endpoint was reached publicly for the first time, or answered public clients
    /// without credentials for the first time.
    NewlyExposed,
}

impl WebhookEvent {
    /// Every event, as `events` defaults to.
    pub const ALL: [WebhookEvent; 2] = [WebhookEvent::NewFindingKind, WebhookEvent::NewlyExposed];

    /// The name in `events` and in the posted JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::NewFindingKind => "new-finding-kind",
            WebhookEvent::NewlyExposed => "newly-exposed",
        }
    }
}

/// A `[[webhook]]`: a URL the collector POSTs JSON to when something new happens.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where the JSON goes.
    pub url: http::Uri,
    /// What it is told about.
    pub events: Vec<WebhookEvent>,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
    /// How an `https://` URL is verified; `None` for `http://`.
    pub tls: Option<ClientTls>,
}

/// The engine behind the store, and where its data is.
#[derive(Clone, PartialEq, Eq)]
pub enum Storage {
    /// A SQLite database file (`storage.path`), created when absent.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`storage.url`) that collectors may share.
    Postgres(PostgresUrl),
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Sqlite(path) => write!(f, "{}", path.display()),
            Storage::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Storage::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
        }
    }
}

/// A `postgres://` URL whose password is never displayed, and how TLS to it is verified.
#[derive(Clone)]
pub struct PostgresUrl {
    /// The URL as configured, password included: for connecting only.
    secret: String,
    /// The URL with its password replaced, for logs and messages.
    shown: String,
    /// Whether the URL asks for TLS (`sslmode=require`).
    requires_tls: bool,
    /// The URL's first TCP host: the name TLS verifies.
    tcp_host: Option<String>,
    /// With `sslmode=require`: the TLS client settings (`[storage.tls]`, or the system's
    /// roots); `None` until [`PostgresUrl::with_tls`].
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl PartialEq for PostgresUrl {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret && self.tls.is_some() == other.tls.is_some()
    }
}

impl Eq for PostgresUrl {}

impl PostgresUrl {
    /// Validates `url` as `postgres://` or `postgresql://` connection URL.
    pub fn parse(url: &str) -> Result<PostgresUrl, String> {
        let Some(rest) = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
        else {
            return Err(format!(
                "{:?} is not a PostgreSQL URL; expected postgres://user:password@host:port/database",
                redact(url)
            ));
        };
        if rest.is_empty() {
            return Err(
                "\"postgres://\" names no server; expected postgres://user:password@host:port/database"
                    .into(),
            );
        }
        let config = url
            .parse::<postgres::Config>()
            .map_err(|e| format!("{:?}: {e}", redact(url)))?;
        let requires_tls = match config.get_ssl_mode() {
            postgres::config::SslMode::Disable | postgres::config::SslMode::Prefer => false,
            postgres::config::SslMode::Require => true,
            other => {
                return Err(format!(
                    "{:?}: sslmode {other:?} is not supported; use require (verified with [storage.tls]), prefer or disable",
                    redact(url)
                ))
            }
        };
        let tcp_host = config.get_hosts().iter().find_map(|host| match host {
            postgres::config::Host::Tcp(name) => Some(name.clone()),
            #[allow(unreachable_patterns)]
            _ => None,
        });
        Ok(PostgresUrl {
            secret: url.to_string(),
            shown: redact(url),
            requires_tls,
            tcp_host,
            tls: None,
        })
    }

    /// The TLS settings, with `sslmode=require`.
    pub fn tls(&self) -> Option<&std::sync::Arc<tokio_rustls::rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    /// Sets up TLS from `[storage.tls]` when the URL asks for it; setting `[storage.tls]`
    /// without `sslmode=require` is an error rather than silently plain text.
    pub fn with_tls(mut self, section: &ClientTlsSection, base: &Path) -> Result<Self, String> {
        if !self.requires_tls {
            if section.is_set() {
                return Err(format!(
                    "storage.tls: is set but storage.url {:?} does not ask for TLS; add ?sslmode=require to it",
                    self.shown
                ));
            }
            return Ok(self);
        }
        if section.server_name.is_some() {
            return Err(
                "storage.tls.server_name: not supported; the host of storage.url is the name verified"
                    .into(),
            );
        }
        let host = self.tcp_host.clone().ok_or_else(|| {
            format!(
                "storage.url: {:?} asks for TLS (sslmode=require) but names no TCP host to verify",
                self.shown
            )
        })?;
        self.tls = Some(section.client("storage.tls", &host, base, &[])?.config);
        Ok(self)
    }

    /// The URL to connect with, password included.
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

/// `url` with the password of its user-info, if any, replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // User-info ends at the last `@` before the host's path or query.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct Log {
    /// Filter such as `info` or `warn,vigil_collector=debug`.
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// The ingest listener.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Address sidecars reach.
    pub address: SocketAddr,
    /// Largest report body as sent (compressed).
    pub max_body_bytes: usize,
    /// Largest report once inflated; a body inflating past it is refused (gzip bombs).
    pub max_inflated_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send the request head.
    pub header_read_timeout: Duration,
    /// TLS on the ingest listener (`[listen.tls]`); `None`: plain HTTP.
    pub tls: Option<ServerTlsFiles>,
}

/// The dashboard and JSON API listener.
#[derive(Debug, Clone)]
pub struct ApiListen {
    /// Address of `/` and `/api/*`; loopback by default, as the API is open unless `access`
    /// asks for a credential.
    pub address: SocketAddr,
    /// The credentials the dashboard and the API accept; none configured: open.
    pub access: ApiAccess,
}

/// Who may read the dashboard, the JSON API and the metrics: a bearer token, a user name and
/// password (HTTP Basic), either, or anyone when neither is set.
#[derive(Clone, Default)]
pub struct ApiAccess {
    /// `[api] token`: accepted as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// `[api.basic_auth]`: accepted as `Authorization: Basic`, as browsers send it.
    pub basic: Option<BasicAuth>,
}

impl ApiAccess {
    /// Whether any credential is required.
    pub fn is_protected(&self) -> bool {
        self.token.is_some() || self.basic.is_some()
    }
}

impl std::fmt::Debug for ApiAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccess")
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("basic_user", &self.basic.as_ref().map(|b| &b.username))
            .finish()
    }
}

/// A user name and password for HTTP Basic authentication.
#[derive(Clone)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// A bearer token and what it may report for.
#[derive(Clone)]
pub struct Token {
    /// A name for logs, never the secret itself.
    pub name: String,
    /// The secret.
    pub secret: String,
    /// The one service it may report for; `None` for the whole fleet.
    pub service: Option<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// How long stored data is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Findings whose last occurrence is older are deleted.
    pub findings: Duration,
    /// Instances not heard from for longer are forgotten, with their idempotency keys.
    pub instances: Duration,
    /// Endpoints not reached for longer are deleted.
    pub endpoints: Duration,
    /// How often the policy is applied.
    pub interval: Duration,
}

/// Files of known-vulnerable endpoints.
#[derive(Debug, Clone, Default)]
pub struct VulnerabilityFiles {
    /// JSON lists of `{method, route, id, severity}`.
    pub known: Vec<PathBuf>,
    /// OWASP ZAP JSON reports.
    pub zap: Vec<PathBuf>,
    /// How long no affected instance may serve a vulnerable endpoint before its fix counts
    /// as verified.
    pub verify_after: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default, rename = "token")]
    tokens: Vec<RawToken>,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    vulnerabilities: RawVulnerabilities,
    #[serde(default)]
    log: RawLog,
    #[serde(default, rename = "webhook")]
    webhooks: Vec<RawWebhook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    events: Option<Vec<String>>,
    timeout: Option<String>,
    ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawListen {
    address: String,
    max_body_bytes: usize,
    max_inflated_bytes: usize,
    max_connections: usize,
    header_read_timeout: String,
    tls: ServerTlsSection,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            address: "0.0.0.0:9000".into(),
            max_body_bytes: 1 << 20,
            max_inflated_bytes: 16 << 20,
            max_connections: 1_024,
            header_read_timeout: "10s".into(),
            tls: ServerTlsSection::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    address: String,
    token: Option<String>,
    basic_auth: Option<RawBasicAuth>,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            address: "127.0.0.1:9001".into(),
            token: None,
            basic_auth: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    path: Option<PathBuf>,
    url: Option<String>,
    tls: ClientTlsSection,
}

/// The SQLite file when `[storage]` names none.
const DEFAULT_DATABASE: &str = "vigil-collector.db";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Option<String>,
    token: String,
    service: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetention {
    findings_days: u32,
    instances_days: u32,
    endpoints_days: u32,
    interval: String,
}

impl Default for RawRetention {
    fn default() -> Self {
        RawRetention {
            findings_days: 30,
            instances_days: 7,
            endpoints_days: 90,
            interval: "1h".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawVulnerabilities {
    known: Vec<PathBuf>,
    zap: Vec<PathBuf>,
    verify_after: String,
}

impl Default for RawVulnerabilities {
    fn default() -> Self {
        RawVulnerabilities {
            known: Vec::new(),
            zap: Vec::new(),
            verify_after: "24h".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl CollectorConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<CollectorConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            message: format!("cannot read the configuration: {e}"),
        })?;
        CollectorConfig::parse(path, &text)
    }

    /// Validates configuration text as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<CollectorConfig, ConfigError> {
        let fail = |message: String| ConfigError {
            file: path.to_path_buf(),
            message,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| fail(e.to_string().trim_end().to_string()))?;
        build(raw, path).map_err(fail)
    }
}

fn build(raw: RawConfig, file: &Path) -> Result<CollectorConfig, String> {
    let base = file.parent().unwrap_or(Path::new("."));
    let listen = Listen {
        address: socket_addr("listen.address", &raw.listen.address)?,
        max_body_bytes: at_least("listen.max_body_bytes", raw.listen.max_body_bytes, 1024)?,
        max_inflated_bytes: at_least(
            "listen.max_inflated_bytes",
            raw.listen.max_inflated_bytes,
            raw.listen.max_body_bytes,
        )?,
        max_connections: at_least("listen.max_connections", raw.listen.max_connections, 1)?,
        header_read_timeout: duration(
            "listen.header_read_timeout",
            &raw.listen.header_read_timeout,
        )?,
        tls: raw.listen.tls.files("listen.tls", base)?,
    };
    let api = ApiListen {
        address: socket_addr("api.address", &raw.api.address)?,
        access: api_access(raw.api.token, raw.api.basic_auth)?,
    };
    if api.address == listen.address {
        return Err(format!(
            "api.address: {} is also listen.address; the API needs its own address",
            api.address
        ));
    }
    if raw.tokens.is_empty() {
        return Err(
            "token: no [[token]] is configured, so no sidecar could report; add one with `token = \"...\"` and optionally `service = \"...\"`"
                .into(),
        );
    }
    let mut tokens: Vec<Token> = Vec::with_capacity(raw.tokens.len());
    for (i, t) in raw.tokens.into_iter().enumerate() {
        let key = format!("token[{i}]");
        if t.token.len() < MIN_TOKEN_BYTES {
            return Err(format!(
                "{key}.token: {} bytes, at least {MIN_TOKEN_BYTES} are needed",
                t.token.len()
            ));
        }
        if !t.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{key}.token: only visible ASCII characters can travel in an Authorization header"
            ));
        }
        if tokens.iter().any(|other| other.secret == t.token) {
            return Err(format!("{key}.token: the same token is configured twice"));
        }
        if let Some(service) = &t.service {
            if service.is_empty() {
                return Err(format!(
                    "{key}.service: must not be empty (leave it out for a fleet token)"
                ));
            }
        }
        tokens.push(Token {
            name: t.name.unwrap_or_else(|| key.clone()),
            secret: t.token,
            service: t.service,
        });
    }
    let days = |key: &str, value: u32| -> Result<Duration, String> {
        at_least(key, value, 1).map(|d| Duration::from_secs(u64::from(d) * 86_400))
    };
    let retention = Retention {
        findings: days("retention.findings_days", raw.retention.findings_days)?,
        instances: days("retention.instances_days", raw.retention.instances_days)?,
        endpoints: days("retention.endpoints_days", raw.retention.endpoints_days)?,
        interval: duration("retention.interval", &raw.retention.interval)?,
    };
    if retention.interval < Duration::from_secs(1) {
        return Err("retention.interval: must be at least 1s".into());
    }
    if raw.storage.url.is_none() && raw.storage.tls.is_set() {
        return Err("storage.tls: is set but storage.url is not; TLS is for PostgreSQL".into());
    }
    let storage = match (raw.storage.path, raw.storage.url) {
        (Some(_), Some(_)) => return Err(
            "storage: both storage.path (SQLite) and storage.url (PostgreSQL) are set; keep one"
                .into(),
        ),
        (None, Some(url)) => Storage::Postgres(
            PostgresUrl::parse(&url)
                .map_err(|e| format!("storage.url: {e}"))?
                .with_tls(&raw.storage.tls, base)?,
        ),
        (Some(path), None) if path.as_os_str().is_empty() => {
            return Err("storage.path: must not be empty".into())
        }
        (path, None) => Storage::Sqlite(base.join(path.unwrap_or_else(|| DEFAULT_DATABASE.into()))),
    };
    let log = Log {
        level: log_filter("log.level", &raw.log.level)?,
        format: log_format("log.format", &raw.log.format)?,
    };
    let webhooks = raw
        .webhooks
        .iter()
        .enumerate()
        .map(|(i, hook)| webhook(&format!("webhook[{i}]"), hook, base))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CollectorConfig {
        webhooks,
        file: file.to_path_buf(),
        listen,
        api,
        storage,
        tokens,
        retention,
        vulnerabilities: VulnerabilityFiles {
            known: raw
                .vulnerabilities
                .known
                .iter()
                .map(|p| base.join(p))
                .collect(),
            zap: raw
                .vulnerabilities
                .zap
                .iter()
                .map(|p| base.join(p))
                .collect(),
            verify_after: duration(
                "vulnerabilities.verify_after",
                &raw.vulnerabilities.verify_after,
            )?,
        },
        log,
    })
}

/// One `[[webhook]]`, checked; errors name `key` (`webhook[0]`).
fn webhook(key: &str, raw: &RawWebhook, base: &Path) -> Result<Webhook, String> {
    let url: http::Uri = raw
        .url
        .parse()
        .map_err(|e| format!("{key}.url: {:?} is not a URL: {e}", raw.url))?;
    let https = match url.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(format!(
                "{key}.url: {:?}: expected an http:// or https:// URL",
                raw.url
            ))
        }
    };
    let host = url
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{key}.url: {:?} has no host", raw.url))?;
    let events = match &raw.events {
        None => WebhookEvent::ALL.to_vec(),
        Some(names) if names.is_empty() => {
            return Err(format!(
                "{key}.events: empty, so nothing would be sent; leave it out for every event"
            ))
        }
        Some(names) => names
            .iter()
            .map(|name| {
                WebhookEvent::ALL
                    .into_iter()
                    .find(|e| e.as_str() == name)
                    .ok_or_else(|| {
                        format!(
                            "{key}.events: {name:?} is not an event; the events are {}",
                            WebhookEvent::ALL.map(WebhookEvent::as_str).join(", ")
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let timeout = duration(
        &format!("{key}.timeout"),
        raw.timeout.as_deref().unwrap_or("5s"),
    )?;
    if timeout.is_zero() {
        return Err(format!("{key}.timeout: must be more than 0"));
    }
    let tls = if https {
        let section = ClientTlsSection {
            ca: raw.ca.clone(),
            ..ClientTlsSection::default()
        };
        Some(section.client(key, host, base, &[])?)
    } else {
        if raw.ca.is_some() {
            return Err(format!(
                "{key}.ca: is set but {} is plain http://; use https:// or remove ca",
                raw.url
            ));
        }
        None
    };
    Ok(Webhook {
        url,
        events,
        timeout,
        tls,
    })
}

/// Checks `[api] token` and `[api.basic_auth]`: long enough not to be guessed, and made of
/// characters that travel in an `Authorization` header.
fn api_access(token: Option<String>, basic: Option<RawBasicAuth>) -> Result<ApiAccess, String> {
    let secret = |key: &str, value: &str| -> Result<(), String> {
        if value.len() < MIN_TOKEN_BYTES {
            return Err(format!(
                "{key}: {} bytes, at least {MIN_TOKEN_BYTES} are needed",
                value.len()
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{key}: only visible ASCII characters (no spaces) are accepted"
            ));
        }
        Ok(())
    };
    if let Some(token) = &token {
        secret("api.token", token)?;
    }
    let basic = match basic {
        None => None,
        Some(RawBasicAuth { username, password }) => {
            if username.is_empty() || username.contains(':') {
                return Err(format!(
                    "api.basic_auth.username: {username:?} must be non-empty and hold no ':'"
                ));
            }
            if username.chars().any(char::is_control) {
                return Err("api.basic_auth.username: control characters are not accepted".into());
            }
            secret("api.basic_auth.password", &password)?;
            Some(BasicAuth { username, password })
        }
    };
    Ok(ApiAccess { token, basic })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CollectorConfig, String> {
        CollectorConfig::parse(Path::new("/etc/vigil/collector.toml"), text)
            .map_err(|e| e.to_string())
    }

    const TOKEN: &str = "[[token]]\ntoken = \"0123456789abcdef\"\n";

    #[test]
    fn defaults_need_only_a_token() {
        let config = parse(TOKEN).unwrap();
        assert_eq!(config.listen.address.to_string(), "0.0.0.0:9000");
        assert_eq!(config.api.address.to_string(), "127.0.0.1:9001");
        assert!(!config.api.access.is_protected());
        assert_eq!(
            config.storage,
            Storage::Sqlite("/etc/vigil/vigil-collector.db".into())
        );
        assert_eq!(config.tokens[0].service, None);
        assert_eq!(config.retention.findings, Duration::from_secs(30 * 86_400));
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn webhooks_default_to_every_event() {
        let config = parse(&format!(
            "{TOKEN}[[webhook]]\nurl = \"http://127.0.0.1:8000/hook\"\n\
             [[webhook]]\nurl = \"http://127.0.0.1:8001/\"\nevents = [\"newly-exposed\"]\ntimeout = \"2s\"\n"
        ))
        .unwrap();
        assert_eq!(config.webhooks.len(), 2);
        assert_eq!(config.webhooks[0].events, WebhookEvent::ALL);
        assert_eq!(config.webhooks[0].timeout, Duration::from_secs(5));
        assert!(config.webhooks[0].tls.is_none());
        assert_eq!(config.webhooks[1].events, [WebhookEvent::NewlyExposed]);
        assert_eq!(config.webhooks[1].timeout, Duration::from_secs(2));
        assert!(parse(TOKEN).unwrap().webhooks.is_empty());
    }

    #[test]
    fn api_credentials_are_read_and_kept_out_of_debug_output() {
        let config = parse(&format!(
            "{TOKEN}[api]\ntoken = \"dashboard-token-0123\"\n\
             [api.basic_auth]\nusername = \"security\"\npassword = \"correct-horse-battery\"\n"
        ))
        .unwrap();
        let access = &config.api.access;
        assert!(access.is_protected());
        assert_eq!(access.token.as_deref(), Some("dashboard-token-0123"));
        let basic = access.basic.as_ref().unwrap();
        assert_eq!(
            (basic.username.as_str(), basic.password.as_str()),
            ("security", "correct-horse-battery")
        );
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("dashboard-token-0123") && !debug.contains("correct-horse-battery"),
            "{debug}"
        );
    }

    #[test]
    fn storage_is_a_sqlite_path_or_a_postgres_url() {
        let config = parse(&format!("{TOKEN}[storage]\npath = \"data/c.db\"\n")).unwrap();
        assert_eq!(
            config.storage,
            Storage::Sqlite("/etc/vigil/data/c.db".into())
        );
        let config = parse(&format!(
            "{TOKEN}[storage]\nurl = \"postgres://vigil:s3cret@db.internal:5433/vigil\"\n"
        ))
        .unwrap();
        let Storage::Postgres(url) = &config.storage else {
            panic!("{:?}", config.storage)
        };
        assert_eq!(
            url.secret(),
            "postgres://vigil:s3cret@db.internal:5433/vigil"
        );
        assert_eq!(
            config.storage.to_string(),
            "postgres://vigil:***@db.internal:5433/vigil"
        );
        assert!(!format!("{config:?}").contains("s3cret"), "{config:?}");
        let config = parse(&format!(
            "{TOKEN}[storage]\nurl = \"postgresql://vigil@localhost/vigil?connect_timeout=5\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.storage.to_string(),
            "postgresql://vigil@localhost/vigil?connect_timeout=5"
        );
        let Storage::Postgres(plain) = &config.storage else {
            panic!("{:?}", config.storage)
        };
        assert!(plain.tls().is_none(), "no TLS unless the URL asks for it");
        // sslmode=require without [storage.tls]: verified with the system's roots.
        let config = parse(&format!(
            "{TOKEN}[storage]\nurl = \"postgres://vigil@db.internal/vigil?sslmode=require\"\n"
        ))
        .unwrap();
        let Storage::Postgres(tls) = &config.storage else {
            panic!("{:?}", config.storage)
        };
        assert!(tls.tls().is_some());
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://u:p@h/d"), "postgres://u:***@h/d");
        assert_eq!(redact("postgres://u:p@ss@h:1/d"), "postgres://u:***@h:1/d");
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact("postgres://h/d?x=a@b"), "postgres://h/d?x=a@b");
        let error = parse(&format!(
            "{TOKEN}[storage]\nurl = \"mysql://root:hunter2@db/vigil\"\n"
        ))
        .unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn logging_is_read_from_the_log_section() {
        let config = parse(&format!(
            "{TOKEN}[log]\nlevel = \"warn,vigil_collector=debug\"\nformat = \"json\"\n"
        ))
        .unwrap();
        assert_eq!(config.log.level, "warn,vigil_collector=debug");
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let cases = [
            ("", "token: no [[token]]"),
            ("[[token]]\ntoken = \"short\"\n", "token[0].token: 5 bytes"),
            (
                "[[token]]\ntoken = \"0123456789abcdef\"\n[[token]]\ntoken = \"0123456789abcdef\"\n",
                "token[1].token: the same token",
            ),
            (
                "[[token]]\ntoken = \"0123456789abcdef\"\nservice = \"\"\n",
                "token[0].service",
            ),
            (
                &format!("{TOKEN}[listen]\naddress = \"nowhere\"\n"),
                "listen.address",
            ),
            (
                &format!("{TOKEN}[listen]\nmax_body_bytes = 4096\nmax_inflated_bytes = 2048\n"),
                "listen.max_inflated_bytes: must be at least 4096",
            ),
            (
                &format!("{TOKEN}[retention]\nfindings_days = 0\n"),
                "retention.findings_days",
            ),
            (
                &format!("{TOKEN}[retention]\ninterval = \"soon\"\n"),
                "retention.interval",
            ),
            (
                &format!("{TOKEN}[api]\naddress = \"0.0.0.0:9000\"\n"),
                "api.address",
            ),
            (&format!("{TOKEN}[storage]\nfile = \"x\"\n"), "unknown field `file`"),
            (
                &format!("{TOKEN}[storage]\npath = \"c.db\"\nurl = \"postgres://h/d\"\n"),
                "storage: both storage.path (SQLite) and storage.url (PostgreSQL) are set",
            ),
            (
                &format!("{TOKEN}[storage]\npath = \"\"\n"),
                "storage.path: must not be empty",
            ),
            (
                &format!("{TOKEN}[storage]\nurl = \"mysql://root:pw@db/vigil\"\n"),
                "storage.url: \"mysql://root:***@db/vigil\" is not a PostgreSQL URL",
            ),
            (
                &format!("{TOKEN}[storage]\nurl = \"postgres://\"\n"),
                "storage.url: \"postgres://\" names no server",
            ),
            (
                &format!("{TOKEN}[storage]\nurl = \"postgres://h/d?sslmode=verify-full\"\n"),
                "storage.url: \"postgres://h/d?sslmode=verify-full\": invalid",
            ),
            (
                &format!("{TOKEN}[storage]\nurl = \"postgres://h/d\"\n[storage.tls]\nca = \"ca.crt\"\n"),
                "storage.tls: is set but storage.url \"postgres://h/d\" does not ask for TLS; add ?sslmode=require",
            ),
            (
                &format!("{TOKEN}[storage]\npath = \"c.db\"\n[storage.tls]\nca = \"ca.crt\"\n"),
                "storage.tls: is set but storage.url is not",
            ),
            (
                &format!("{TOKEN}[storage]\nurl = \"postgres://h/d?sslmode=require\"\n[storage.tls]\nca = \"missing-ca.crt\"\n"),
                "storage.tls.ca: cannot read /etc/vigil/missing-ca.crt",
            ),
            (
                &format!("{TOKEN}[storage]\nurl = \"postgres://h/d?sslmode=require\"\n[storage.tls]\nserver_name = \"db\"\n"),
                "storage.tls.server_name: not supported",
            ),
            (
                &format!("{TOKEN}[storage]\nurl = \"postgres:///d?host=/run/postgresql&sslmode=require\"\n"),
                "asks for TLS (sslmode=require) but names no TCP host to verify",
            ),
            (
                &format!("{TOKEN}[storage]\nurl = \"postgres://h:port/d\"\n"),
                "storage.url: \"postgres://h:port/d\": invalid",
            ),
            (
                &format!("{TOKEN}[log]\nlevel = \"verbose\"\n"),
                "log.level: \"verbose\" in \"verbose\" does not name a level",
            ),
            (
                &format!("{TOKEN}[log]\nlevel = \"info,vigil_collector=chatty\"\n"),
                "log.level: \"vigil_collector=chatty\"",
            ),
            (
                &format!("{TOKEN}[log]\nformat = \"xml\"\n"),
                "log.format: \"xml\" is not a log format",
            ),
            (
                &format!("{TOKEN}[[webhook]]\nurl = \"ftp://hooks\"\n"),
                "webhook[0].url: \"ftp://hooks\": expected an http:// or https:// URL",
            ),
            (
                &format!("{TOKEN}[[webhook]]\nurl = \"http://h/\"\nevents = [\"new-kind\"]\n"),
                "webhook[0].events: \"new-kind\" is not an event; the events are new-finding-kind, newly-exposed",
            ),
            (
                &format!("{TOKEN}[[webhook]]\nurl = \"http://h/\"\nevents = []\n"),
                "webhook[0].events: empty",
            ),
            (
                &format!("{TOKEN}[[webhook]]\nurl = \"http://h/\"\ntimeout = \"0s\"\n"),
                "webhook[0].timeout",
            ),
            (
                &format!("{TOKEN}[[webhook]]\nurl = \"http://h/\"\nca = \"ca.pem\"\n"),
                "webhook[0].ca: is set but http://h/ is plain http://",
            ),
            (
                &format!("{TOKEN}[[webhook]]\nurl = \"https://h/\"\nca = \"missing.pem\"\n"),
                "webhook[0].ca: ",
            ),
            (
                &format!("{TOKEN}[[webhook]]\nurl = \"http://h/\"\nsecret = \"x\"\n"),
                "unknown field `secret`",
            ),
            (
                &format!("{TOKEN}[api]\ntoken = \"short\"\n"),
                "api.token: 5 bytes, at least 16",
            ),
            (
                &format!("{TOKEN}[api]\ntoken = \"with a space in it!\"\n"),
                "api.token: only visible ASCII",
            ),
            (
                &format!(
                    "{TOKEN}[api.basic_auth]\nusername = \"a:b\"\npassword = \"0123456789abcdef\"\n"
                ),
                "api.basic_auth.username: \"a:b\"",
            ),
            (
                &format!("{TOKEN}[api.basic_auth]\nusername = \"sec\"\npassword = \"hunter2\"\n"),
                "api.basic_auth.password: 7 bytes",
            ),
            (
                &format!("{TOKEN}[api.basic_auth]\nusername = \"sec\"\n"),
                "missing field `password`",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(
                error.starts_with("/etc/vigil/collector.toml: ") && error.contains(expected),
                "{error:?} should name {expected:?}"
            );
        }
    }
}
