//! `vigil exposure`: a gate for delivery pipelines. It reads what the collector knows of a
//! service's endpoints and vulnerabilities, checks the conditions named by `--fail-on`, and
//! says in text, JSON or SARIF 2.1.0 what holds and why; the exit status tells the pipeline.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_collector::vulns::Severity;
use vigil_common::tls::ClientTlsSection;

/// Exit status when a `--fail-on` condition holds.
pub const EXIT_GATE_FAILED: u8 = 1;
/// Exit status for a bad option: an unknown kind or severity, a bad URL, an unusable CA file,
/// an output file that cannot be written (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit status when the collector cannot be read: refused or timed-out connections, TLS
/// failures, non-2xx answers, answers that are not the API's JSON (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

/// Largest answer read from the collector: a listing of every endpoint of a large fleet.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Vulnerabilities asked for, the API's maximum.
const VULNERABILITY_LIMIT: usize = 1_000;

/// The command's long help.
pub const ABOUT: &str = "Check what the collector knows of a service against conditions, \
for a delivery pipeline: exit 1 when one of --fail-on holds.

Reads /api/endpoints and /api/vulnerabilities from the collector's API listener (api.address, \
http://127.0.0.1:9001 by default) and checks every kind below; the kinds named by --fail-on \
fail the gate, the others are reported only.

  internal-public       an internal-only endpoint (api.internal_only) was reached publicly
  critical-vuln-public  a known vulnerability of --severity or worse (critical by default) is
                        on an endpoint public clients reached and got 2xx from without
                        credentials
  shadow                an endpoint was reached that the service's OpenAPI document lacks
  zombie                an endpoint the OpenAPI document declares was never reached
  unauthenticated       public clients got 2xx answers without any credential
  unverified-fix        a known vulnerability's fix (fixed_in) is deployed, but instances still
                        run an affected version or affected builds served its endpoint within
                        the collector's vulnerabilities.verify_after

Exit status: 0 when no --fail-on condition holds; 1 when one does; 64 for a bad option (an \
unknown kind, a bad URL, an unreadable --ca); 69 when the collector cannot be read \
(connection refused, TLS failure, an answer other than 2xx, or not the API's JSON).

  vigil exposure --collector http://collector:9001 --service shop \\
      --fail-on internal-public,critical-vuln-public
  vigil exposure --collector https://collector.internal:9443 --ca ca.crt --service shop \\
      --fail-on shadow,zombie --format sarif --output exposure.sarif";

/// What one condition checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An internal-only endpoint reached by public clients.
    InternalPublic,
    /// A known vulnerability at or above the threshold on a public unauthenticated endpoint.
    CriticalVulnPublic,
    /// A reached endpoint the OpenAPI document does not declare.
    Shadow,
    /// A declared endpoint never reached.
    Zombie,
    /// Public 2xx answers without credentials.
    Unauthenticated,
    /// A deployed fix not yet verified: affected builds still run or served the endpoint.
    UnverifiedFix,
}

impl Kind {
    /// Every kind, in the order reports list them.
    pub const ALL: [Kind; 6] = [
        Kind::InternalPublic,
        Kind::CriticalVulnPublic,
        Kind::Shadow,
        Kind::Zombie,
        Kind::Unauthenticated,
        Kind::UnverifiedFix,
    ];

    /// The name `--fail-on` takes and SARIF rules carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::InternalPublic => "internal-public",
            Kind::CriticalVulnPublic => "critical-vuln-public",
            Kind::Shadow => "shadow",
            Kind::Zombie => "zombie",
            Kind::Unauthenticated => "unauthenticated",
            Kind::UnverifiedFix => "unverified-fix",
        }
    }

    fn parse(name: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "--fail-on: unknown kind {name:?}; the kinds are {}",
                    Kind::ALL.map(Kind::as_str).join(", ")
                )
            })
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::InternalPublic => "an internal-only endpoint was reached publicly",
            Kind::CriticalVulnPublic => {
                "a known vulnerability is on an endpoint public clients reach without credentials"
            }
            Kind::Shadow => "an endpoint was reached that the OpenAPI document does not declare",
            Kind::Zombie => "an endpoint the OpenAPI document declares was never reached",
            Kind::Unauthenticated => "public clients got 2xx answers without credentials",
            Kind::UnverifiedFix => {
                "a deployed fix is not verified: affected builds still run or serve the endpoint"
            }
        }
    }

    /// CamelCase, as SARIF's `rule.name` is spelled.
    fn rule_name(self) -> &'static str {
        match self {
            Kind::InternalPublic => "InternalEndpointReachedPublicly",
            Kind::CriticalVulnPublic => "VulnerabilityOnPublicUnauthenticatedEndpoint",
            Kind::Shadow => "ShadowEndpoint",
            Kind::Zombie => "ZombieEndpoint",
            Kind::Unauthenticated => "PublicUnauthenticatedEndpoint",
            Kind::UnverifiedFix => "FixNotVerified",
        }
    }

    /// GitHub's `security-severity` (0 to 10), which orders alerts in code scanning.
    fn security_severity(self) -> &'static str {
        match self {
            Kind::CriticalVulnPublic => "9.0",
            Kind::InternalPublic => "8.0",
            Kind::UnverifiedFix => "7.0",
            Kind::Unauthenticated => "6.0",
            Kind::Shadow => "5.0",
            Kind::Zombie => "3.0",
        }
    }
}

/// `--severity`: a severity by the name the collector gives it.
fn parse_severity(name: &str) -> Result<Severity, String> {
    Severity::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| {
            format!(
                "--severity: {name:?} is not a severity; use one of {}",
                Severity::ALL.map(Severity::name).join(", ")
            )
        })
}

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: every kind with what holds and why.
    Text,
    /// One JSON object: the checks and every violation.
    Json,
    /// SARIF 2.1.0, for code-scanning views.
    Sarif,
}

/// `vigil exposure`'s options.
#[derive(Debug, clap::Args)]
pub struct ExposureArgs {
    /// The collector's API base URL (api.address): http://HOST:PORT or https://HOST:PORT.
    #[arg(long, env = "VIGIL_COLLECTOR", value_name = "URL")]
    pub collector: String,
    /// Check only this service [default: every service].
    #[arg(long)]
    pub service: Option<String>,
    /// Sent as `Authorization: Bearer TOKEN`, for an API behind an authenticating proxy.
    #[arg(long, env = "VIGIL_COLLECTOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificates that verify an https:// collector [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Kinds that fail the gate, comma-separated: internal-public, critical-vuln-public,
    /// shadow, zombie, unauthenticated, unverified-fix. The other kinds are reported, not
    /// failed on.
    #[arg(long, value_delimiter = ',', value_name = "KIND,...")]
    pub fail_on: Vec<String>,
    /// The least severity critical-vuln-public counts: critical, high, medium, low or info.
    #[arg(long, default_value = "critical")]
    pub severity: String,
    /// How the report is written.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write the report to FILE instead of standard output (a text summary still goes to
    /// standard output).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// How long each request to the collector may take.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    vigil_common::config::duration("--timeout", text)
}

/// Why the gate could not decide.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A bad option.
    #[error("{0}")]
    Usage(String),
    /// The collector could not be read.
    #[error("{0}")]
    Collector(String),
}

impl GateError {
    /// The documented exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            GateError::Usage(_) => EXIT_USAGE,
            GateError::Collector(_) => EXIT_UNAVAILABLE,
        }
    }
}

/// An endpoint as `/api/endpoints` lists it (the fields the checks read).
#[derive(Debug, Clone, Deserialize)]
struct Endpoint {
    service: String,
    method: String,
    route: String,
    requests: u64,
    public: u64,
    public_unauthenticated_success: u64,
    public_clients: u64,
    shadow: bool,
    zombie: bool,
    internal_only: bool,
}

/// A vulnerability as `/api/vulnerabilities` ranks it.
#[derive(Debug, Clone, Deserialize)]
struct Vulnerability {
    id: String,
    title: String,
    severity: Severity,
    matched_service: Option<String>,
    matched_route: Option<String>,
    method: String,
    exposure: String,
    public_unauthenticated_success: u64,
    /// Where its fix stands, when the collector's list gives `fixed_in`.
    #[serde(default)]
    fix: Option<Fix>,
}

/// A vulnerability's fix, as `/api/vulnerabilities` gives it.
#[derive(Debug, Clone, Deserialize)]
struct Fix {
    fixed_in: String,
    state: String,
    affected_instances: Vec<AffectedInstance>,
    public_requests_since_fix: u64,
}

/// An instance that lacks a fix.
#[derive(Debug, Clone, Deserialize)]
struct AffectedInstance {
    instance: String,
    version: Option<String>,
}

/// One condition that holds for one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The condition.
    pub kind: Kind,
    /// Whether `--fail-on` names it.
    pub fails: bool,
    /// Service of the endpoint.
    pub service: String,
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Why it holds, in a sentence.
    pub message: String,
    /// The vulnerability, for critical-vuln-public and unverified-fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vulnerability: Option<String>,
}

/// One kind, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The condition.
    pub kind: Kind,
    /// Whether `--fail-on` names it.
    pub fail_on: bool,
    /// Endpoints for which it holds.
    pub violations: usize,
    /// Whether it fails the gate.
    pub failed: bool,
}

/// What the gate found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The collector's base URL, as given.
    pub collector: String,
    /// The service checked; `None`: all.
    pub service: Option<String>,
    /// Whether no `--fail-on` condition holds.
    pub passed: bool,
    /// The severity threshold of critical-vuln-public.
    pub severity: Severity,
    /// Endpoints read.
    pub endpoints: usize,
    /// Vulnerabilities read.
    pub vulnerabilities: usize,
    /// Every kind, checked.
    pub checks: Vec<Check>,
    /// Every condition that holds, failing kinds first.
    pub violations: Vec<Violation>,
}

/// Checks the collector, writes the report; whether the gate passed.
pub fn run(args: &ExposureArgs) -> Result<bool, GateError> {
    let fail_on = args
        .fail_on
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .map(Kind::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(GateError::Usage)?;
    let severity = parse_severity(&args.severity).map_err(GateError::Usage)?;
    let api = Api::new(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| GateError::Collector(format!("cannot start the async runtime: {e}")))?;
    let (endpoints, vulnerabilities) = runtime.block_on(async {
        let service = args
            .service
            .as_deref()
            .map(|s| format!("service={}", utf8_percent_encode(s, NON_ALPHANUMERIC)));
        let endpoints: Vec<Endpoint> = api
            .get(&with_query("/api/endpoints", service.as_deref(), None))
            .await?;
        let vulnerabilities: Vec<Vulnerability> = api
            .get(&with_query(
                "/api/vulnerabilities",
                service.as_deref(),
                Some(&format!("limit={VULNERABILITY_LIMIT}")),
            ))
            .await?;
        Ok::<_, GateError>((endpoints, vulnerabilities))
    })?;
    let outcome = evaluate(
        &args.collector,
        args.service.as_deref(),
        &fail_on,
        severity,
        &endpoints,
        &vulnerabilities,
    );
    let rendered = match args.format {
        Format::Text => render_text(&outcome),
        Format::Json => to_json(&json!(outcome)),
        Format::Sarif => to_json(&sarif(&outcome)),
    };
    match &args.output {
        None => print!("{rendered}"),
        Some(file) => {
            write_output(file, &rendered)?;
            if args.format != Format::Text {
                print!("{}", render_text(&outcome));
            }
        }
    }
    Ok(outcome.passed)
}

fn with_query(path: &str, service: Option<&str>, extra: Option<&str>) -> String {
    let params: Vec<&str> = service.into_iter().chain(extra).collect();
    if params.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", params.join("&"))
    }
}

fn to_json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

fn write_output(file: &Path, text: &str) -> Result<(), GateError> {
    std::fs::write(file, text)
        .map_err(|e| GateError::Usage(format!("--output {}: cannot write: {e}", file.display())))
}

/// The collector's API, read with GET.
struct Api {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    base: String,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl Api {
    fn new(args: &ExposureArgs) -> Result<Api, GateError> {
        let usage = |m: String| GateError::Usage(m);
        let given = &args.collector;
        let uri: Uri = given
            .parse()
            .map_err(|e| usage(format!("--collector {given:?}: not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(usage(format!(
                    "--collector {given:?}: expected an http:// or https:// URL, such as http://127.0.0.1:9001"
                )))
            }
        };
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err(usage(format!("--collector {given:?}: the URL has no host")));
        };
        if uri.query().is_some() {
            return Err(usage(format!(
                "--collector {given:?}: the base URL takes no query; use --service to choose a service"
            )));
        }
        let tls = if https {
            let section = ClientTlsSection {
                ca: args.ca.clone(),
                ..ClientTlsSection::default()
            };
            let tls = section
                .client("--ca", host, Path::new("."), &[])
                .map_err(|e| usage(e.replace("--ca.ca", "--ca")))?;
            Some(tls)
        } else {
            if let Some(ca) = &args.ca {
                return Err(usage(format!(
                    "--ca {}: the collector {given} is plain http://; use https:// or leave --ca out",
                    ca.display()
                )));
            }
            None
        };
        let authorization = match &args.token {
            Some(token) if !token.is_empty() => Some(
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    usage("--token (VIGIL_COLLECTOR_TOKEN): not a valid header value".into())
                })?,
            ),
            _ => None,
        };
        let connector = vigil_common::client::connector(tls.as_ref(), args.timeout);
        Ok(Api {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: given.trim_end_matches('/').to_string(),
            authorization,
            timeout: args.timeout,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, GateError> {
        let url = format!("{}{path}", self.base);
        let failed = |why: String| GateError::Collector(format!("{url}: {why}"));
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header(header::ACCEPT, "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| GateError::Usage(format!("--collector: {url}: {e}")))?;
        let exchange = async {
            let response =
                self.client.request(request).await.map_err(|e| {
                    failed(format!("cannot reach the collector: {}", error_chain(&e)))
                })?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| failed(format!("the answer could not be read: {e}")))?
                .to_bytes();
            Ok::<_, GateError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                failed(format!(
                    "no answer within {}s (--timeout)",
                    self.timeout.as_secs_f64()
                ))
            })??;
        if !status.is_success() {
            return Err(failed(format!(
                "the collector answered {status}{}",
                problem_detail(&body)
            )));
        }
        serde_json::from_slice(&body).map_err(|e| {
            failed(format!(
                "the answer is not the collector API's JSON ({e}); is this the collector's api.address?"
            ))
        })
    }
}

/// An error with its causes, which hyper's client keeps behind a terse top line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `: detail` from a problem+json body, or the start of a text body.
fn problem_detail(body: &[u8]) -> String {
    if let Ok(problem) = serde_json::from_slice::<Value>(body) {
        if let Some(detail) = problem.get("detail").and_then(Value::as_str) {
            return format!(": {detail}");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.chars().take(200).collect::<String>())
    }
}

/// Checks every kind against what the collector answered.
fn evaluate(
    collector: &str,
    service: Option<&str>,
    fail_on: &[Kind],
    severity: Severity,
    endpoints: &[Endpoint],
    vulnerabilities: &[Vulnerability],
) -> Outcome {
    let mut violations = Vec::new();
    let mut add = |kind: Kind, e: (&str, &str, &str), message: String, vulnerability| {
        violations.push(Violation {
            kind,
            fails: fail_on.contains(&kind),
            service: e.0.to_string(),
            method: e.1.to_string(),
            route: e.2.to_string(),
            message,
            vulnerability,
        });
    };
    for e in endpoints {
        let at = (e.service.as_str(), e.method.as_str(), e.route.as_str());
        if e.internal_only && e.public > 0 {
            add(
                Kind::InternalPublic,
                at,
                format!(
                    "{} {} is internal-only and was reached by {} public request(s) from about {} client(s)",
                    e.method, e.route, e.public, e.public_clients
                ),
                None,
            );
        }
        if e.shadow {
            add(
                Kind::Shadow,
                at,
                format!(
                    "{} {} was reached ({} request(s)) but the OpenAPI document does not declare it",
                    e.method, e.route, e.requests
                ),
                None,
            );
        }
        if e.zombie {
            add(
                Kind::Zombie,
                at,
                format!(
                    "{} {} is declared in the OpenAPI document and was never reached",
                    e.method, e.route
                ),
                None,
            );
        }
        if e.public_unauthenticated_success > 0 {
            add(
                Kind::Unauthenticated,
                at,
                format!(
                    "{} {} answered 2xx to {} public request(s) without credentials",
                    e.method, e.route, e.public_unauthenticated_success
                ),
                None,
            );
        }
    }
    for v in vulnerabilities {
        let (Some(matched_service), Some(route)) = (&v.matched_service, &v.matched_route) else {
            continue;
        };
        if v.exposure != "public-unauthenticated"
            || v.severity > severity
            || service.is_some_and(|s| s != matched_service)
        {
            continue;
        }
        add(
            Kind::CriticalVulnPublic,
            (matched_service, &v.method, route),
            format!(
                "{} ({}, {}) is on {} {}, which answered 2xx to {} public request(s) without credentials",
                v.id,
                v.severity.name(),
                v.title,
                v.method,
                route,
                v.public_unauthenticated_success
            ),
            Some(v.id.clone()),
        );
    }
    for v in vulnerabilities {
        let (Some(matched_service), Some(route), Some(fix)) =
            (&v.matched_service, &v.matched_route, &v.fix)
        else {
            continue;
        };
        if fix.state != "deployed" || service.is_some_and(|s| s != matched_service) {
            continue;
        }
        let lacking: Vec<String> = fix
            .affected_instances
            .iter()
            .map(|i| {
                format!(
                    "{} ({})",
                    i.instance,
                    i.version.as_deref().unwrap_or("no version")
                )
            })
            .collect();
        let why = if lacking.is_empty() {
            "no instance runs an affected version any more, but the last affected request or the \
             deployment is more recent than the collector's verify_after"
                .to_string()
        } else {
            format!("{} still run an affected version", lacking.join(", "))
        };
        add(
            Kind::UnverifiedFix,
            (matched_service, &v.method, route),
            format!(
                "{} on {} {} is fixed in {}: {why}; affected builds served {} public request(s) since the fix was deployed",
                v.id, v.method, route, fix.fixed_in, fix.public_requests_since_fix
            ),
            Some(v.id.clone()),
        );
    }
    violations.sort_by(|a, b| {
        (!a.fails, a.kind, &a.service, &a.route, &a.method)
            .cmp(&(!b.fails, b.kind, &b.service, &b.route, &b.method))
    });
    let checks: Vec<Check> = Kind::ALL
        .into_iter()
        .map(|kind| {
            let count = violations.iter().filter(|v| v.kind == kind).count();
            let fail_on = fail_on.contains(&kind);
            Check {
                kind,
                fail_on,
                violations: count,
                failed: fail_on && count > 0,
            }
        })
        .collect();
    Outcome {
        collector: collector.to_string(),
        service: service.map(str::to_string),
        passed: checks.iter().all(|c| !c.failed),
        severity,
        endpoints: endpoints.len(),
        vulnerabilities: vulnerabilities.len(),
        checks,
        violations,
    }
}

/// The report for people: one line per kind, the endpoints under it, the verdict last.
pub fn render_text(outcome: &Outcome) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let scope = outcome
        .service
        .as_ref()
        .map_or_else(|| "every service".to_string(), |s| format!("service {s}"));
    let _ = writeln!(
        text,
        "exposure of {scope} at {}: {} endpoint(s), {} vulnerability record(s)",
        outcome.collector, outcome.endpoints, outcome.vulnerabilities
    );
    for check in &outcome.checks {
        let status = match (check.failed, check.violations, check.fail_on) {
            (true, _, _) => "FAIL",
            (false, 0, true) => "pass",
            (false, 0, false) => "ok",
            (false, _, _) => "note",
        };
        let _ = writeln!(
            text,
            "{status:<5} {:<21} {:>4}  {}{}",
            check.kind.as_str(),
            check.violations,
            check.kind.describe(),
            if check.fail_on {
                ""
            } else {
                " (not in --fail-on)"
            }
        );
        for v in outcome.violations.iter().filter(|v| v.kind == check.kind) {
            let _ = writeln!(text, "        {}: {}", v.service, v.message);
        }
    }
    let failed: Vec<&str> = outcome
        .checks
        .iter()
        .filter(|c| c.failed)
        .map(|c| c.kind.as_str())
        .collect();
    if failed.is_empty() {
        let _ = writeln!(text, "gate passed: no --fail-on condition holds");
    } else {
        let _ = writeln!(text, "gate FAILED: {} hold(s)", failed.join(", "));
    }
    text
}

/// Characters escaped in a SARIF artifact URI: everything but RFC 3986's unreserved
/// characters and `/`.
const URI_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// The report as SARIF 2.1.0: one rule per kind, one result per violation, located at the
/// service's endpoint (a logical location, and an artifact URI `SERVICE/METHOD/ROUTE`).
pub fn sarif(outcome: &Outcome) -> Value {
    let rules: Vec<Value> = Kind::ALL
        .into_iter()
        .map(|kind| {
            json!({
                "id": kind.as_str(),
                "name": kind.rule_name(),
                "shortDescription": { "text": kind.describe() },
                "fullDescription": { "text": kind.describe() },
                "help": { "text": format!("vigil exposure --fail-on {}: fails when {}.", kind.as_str(), kind.describe()) },
                "defaultConfiguration": { "level": "error" },
                "properties": {
                    "tags": ["security", "exposure"],
                    "security-severity": kind.security_severity(),
                },
            })
        })
        .collect();
    let results: Vec<Value> = outcome
        .violations
        .iter()
        .map(|v| {
            let endpoint = format!("{} {}", v.method, v.route);
            let uri =
                utf8_percent_encode(&format!("{}/{}{}", v.service, v.method, v.route), URI_PATH)
                    .to_string();
            let fingerprint = match &v.vulnerability {
                Some(id) => format!("{}|{}|{endpoint}|{id}", v.kind.as_str(), v.service),
                None => format!("{}|{}|{endpoint}", v.kind.as_str(), v.service),
            };
            json!({
                "ruleId": v.kind.as_str(),
                "ruleIndex": Kind::ALL.iter().position(|k| *k == v.kind).unwrap_or(0),
                "level": if v.fails { "error" } else { "warning" },
                "message": { "text": format!("{}: {}", v.service, v.message) },
                "locations": [{
                    "physicalLocation": { "artifactLocation": { "uri": uri } },
                    "logicalLocations": [{
                        "name": endpoint,
                        "fullyQualifiedName": format!("{}/{endpoint}", v.service),
                        "kind": "resource",
                    }],
                }],
                "partialFingerprints": { "vigilExposure/v1": fingerprint },
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "vigil exposure",
                    "version": env!("CARGO_PKG_VERSION"),
                    // The collector's dashboard is where the findings are explained.
                    "informationUri": format!("{}/", outcome.collector.trim_end_matches('/')),
                    "rules": rules,
                }
            },
            "results": results,
            "properties": {
                "service": outcome.service,
                "passed": outcome.passed,
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(route: &str) -> Endpoint {
        Endpoint {
            service: "shop".into(),
            method: "GET".into(),
            route: route.into(),
            requests: 1,
            public: 0,
            public_unauthenticated_success: 0,
            public_clients: 0,
            shadow: false,
            zombie: false,
            internal_only: false,
        }
    }

    fn vulnerability(severity: Severity, exposure: &str) -> Vulnerability {
        Vulnerability {
            id: "VULN-1".into(),
            title: "t".into(),
            severity,
            matched_service: Some("shop".into()),
            matched_route: Some("/users/{id}".into()),
            method: "GET".into(),
            exposure: exposure.into(),
            public_unauthenticated_success: 3,
            fix: None,
        }
    }

    #[test]
    fn only_a_deployed_fix_that_is_not_verified_holds() {
        let with_fix = |state: &str, affected: Vec<AffectedInstance>| {
            let mut v = vulnerability(Severity::Low, "internal");
            v.fix = Some(Fix {
                fixed_in: "3.0".into(),
                state: state.into(),
                affected_instances: affected,
                public_requests_since_fix: 4,
            });
            v
        };
        let old_build = || AffectedInstance {
            instance: "shop-1".into(),
            version: None,
        };
        let vulns = [
            with_fix("deployed", vec![old_build()]),
            with_fix("deployed", vec![]),
            with_fix("verified", vec![]),
            with_fix("not-deployed", vec![old_build()]),
            vulnerability(Severity::Critical, "public"),
        ];
        let outcome = evaluate(
            "http://c",
            None,
            &[Kind::UnverifiedFix],
            Severity::Critical,
            &[],
            &vulns,
        );
        let messages: Vec<&str> = outcome
            .violations
            .iter()
            .map(|v| v.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "VULN-1 on GET /users/{id} is fixed in 3.0: shop-1 (no version) still run an affected version; affected builds served 4 public request(s) since the fix was deployed",
                "VULN-1 on GET /users/{id} is fixed in 3.0: no instance runs an affected version any more, but the last affected request or the deployment is more recent than the collector's verify_after; affected builds served 4 public request(s) since the fix was deployed",
            ]
        );
        assert!(!outcome.passed);
        assert!(outcome.violations.iter().all(|v| v.fails));
    }

    #[test]
    fn unknown_kinds_and_severities_name_the_valid_ones() {
        let error = Kind::parse("shadows").unwrap_err();
        assert!(error.contains("\"shadows\""), "{error}");
        for kind in Kind::ALL {
            assert!(error.contains(kind.as_str()), "{error}");
            assert_eq!(Kind::parse(kind.as_str()), Ok(kind));
        }
        let error = parse_severity("urgent").unwrap_err();
        assert!(
            error.contains("\"urgent\"") && error.contains("critical, high"),
            "{error}"
        );
    }

    #[test]
    fn the_severity_threshold_counts_what_is_at_least_as_bad() {
        let vulns = [
            vulnerability(Severity::High, "public-unauthenticated"),
            vulnerability(Severity::Critical, "public"),
        ];
        let run = |threshold| {
            evaluate(
                "http://c",
                None,
                &[Kind::CriticalVulnPublic],
                threshold,
                &[],
                &vulns,
            )
        };
        assert!(run(Severity::Critical).passed);
        let high = run(Severity::High);
        assert!(!high.passed);
        assert_eq!(high.violations.len(), 1);
        assert_eq!(high.violations[0].vulnerability.as_deref(), Some("VULN-1"));
    }

    #[test]
    fn only_fail_on_kinds_fail_and_they_are_listed_first() {
        let mut shadow = endpoint("/debug");
        shadow.shadow = true;
        let mut zombie = endpoint("/legacy");
        zombie.zombie = true;
        let outcome = evaluate(
            "http://c",
            Some("shop"),
            &[Kind::Zombie],
            Severity::Critical,
            &[shadow, zombie],
            &[],
        );
        assert!(!outcome.passed);
        assert_eq!(outcome.violations[0].kind, Kind::Zombie);
        assert!(outcome.violations[0].fails);
        assert!(!outcome.violations[1].fails);
        let text = render_text(&outcome);
        assert!(text.contains("FAIL  zombie"), "{text}");
        assert!(text.contains("note  shadow"), "{text}");
        assert!(text.contains("gate FAILED: zombie"), "{text}");
    }

    #[test]
    fn artifact_uris_escape_route_braces() {
        let mut e = endpoint("/users/{id}");
        e.public = 2;
        e.internal_only = true;
        let outcome = evaluate("http://c", None, &[], Severity::Critical, &[e], &[]);
        let sarif = sarif(&outcome);
        let location = &sarif["runs"][0]["results"][0]["locations"][0];
        assert_eq!(
            location["physicalLocation"]["artifactLocation"]["uri"],
            "shop/GET/users/%7Bid%7D"
        );
        assert_eq!(
            location["logicalLocations"][0]["fullyQualifiedName"],
            "shop/GET /users/{id}"
        );
        assert_eq!(sarif["runs"][0]["results"][0]["level"], "warning");
    }
}
