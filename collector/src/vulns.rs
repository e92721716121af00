//! Known-vulnerable endpoints, from a JSON list or an OWASP ZAP report, ranked by how exposed
//! each endpoint really is at runtime.

use super::fixes::FixStatus;
use super::store::{Endpoint, Exposure};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Most vulnerabilities loaded from all files together.
pub const MAX_VULNERABILITIES: usize = 100_000;
/// Largest vulnerability file read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// How bad a vulnerability is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Critical.
    Critical,
    /// High.
    High,
    /// Medium.
    Medium,
    /// Low.
    Low,
    /// Informational.
    Info,
}

impl Severity {
    /// Every severity, worst first.
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    /// The name files and the API use.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        }
    }
}

/// One endpoint known to be vulnerable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vulnerability {
    /// Identifier: a CVE, a ticket, or `zap:<alertRef>`.
    pub id: String,
    /// What it is.
    pub title: String,
    /// How bad.
    pub severity: Severity,
    /// The service, when the source says.
    pub service: Option<String>,
    /// HTTP method, upper case.
    pub method: String,
    /// Route template, or the concrete path a scanner saw.
    pub route: String,
    /// Where it came from: `list` or `zap`.
    pub source: &'static str,
    /// The first version of the service with the fix, when the list says.
    pub fixed_in: Option<String>,
}

/// A vulnerability placed by the runtime exposure of its endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct RankedVulnerability {
    /// 1 for the most urgent.
    pub rank: usize,
    /// The vulnerability.
    #[serde(flatten)]
    pub vulnerability: Vulnerability,
    /// The service of the endpoint it matched, if any.
    pub matched_service: Option<String>,
    /// The route template it matched, if any.
    pub matched_route: Option<String>,
    /// How exposed that endpoint is.
    pub exposure: Exposure,
    /// Public requests to the endpoint.
    pub public_requests: u64,
    /// 2xx answers to public requests without credentials.
    pub public_unauthenticated_success: u64,
    /// Distinct public clients, estimated.
    pub public_clients: u64,
    /// All requests to the endpoint.
    pub requests: u64,
    /// Where its fix stands, when it has a `fixed_in` and a service (see [`crate::fixes`]).
    pub fix: Option<FixStatus>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownEntry {
    method: String,
    route: String,
    id: String,
    severity: Severity,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    fixed_in: Option<String>,
}

/// Reads a JSON list of `{method, route, id, severity, title?, service?, fixed_in?}`. Errors name the file
/// and the entry.
pub fn load_known(path: &Path) -> Result<Vec<Vulnerability>, String> {
    let text = read(path)?;
    let entries: Vec<KnownEntry> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: expected a JSON list of {{\"method\", \"route\", \"id\", \"severity\"}}: {e}",
            path.display()
        )
    })?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let at = format!("{}: [{i}]", path.display());
            if !e.route.starts_with('/') {
                return Err(format!("{at}.route: {:?} does not start with /", e.route));
            }
            if e.method.is_empty() || !e.method.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(format!("{at}.method: {:?} is not an HTTP method", e.method));
            }
            if e.id.is_empty() {
                return Err(format!("{at}.id: must not be empty"));
            }
            if let Some(version) = &e.fixed_in {
                vigil_report::check_version(version)
                    .map_err(|problem| format!("{at}.fixed_in: {problem}"))?;
            }
            Ok(Vulnerability {
                title: e.title.unwrap_or_else(|| e.id.clone()),
                id: e.id,
                severity: e.severity,
                service: e.service,
                method: e.method.to_ascii_uppercase(),
                route: e.route,
                source: "list",
                fixed_in: e.fixed_in,
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct ZapReport {
    #[serde(default)]
    site: Vec<ZapSite>,
}

#[derive(Deserialize)]
struct ZapSite {
    #[serde(default)]
    alerts: Vec<ZapAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZapAlert {
    #[serde(default)]
    pluginid: String,
    #[serde(default)]
    alert_ref: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    alert: Option<String>,
    riskcode: String,
    #[serde(default)]
    instances: Vec<ZapInstance>,
}

#[derive(Deserialize)]
struct ZapInstance {
    uri: String,
    #[serde(default)]
    method: Option<String>,
}

/// Reads an OWASP ZAP JSON report (`site[].alerts[].instances[]`): one vulnerability per alert
/// and distinct method and path. Informational alerts (riskcode 0) are left out.
pub fn load_zap(path: &Path) -> Result<Vec<Vulnerability>, String> {
    let text = read(path)?;
    let report: ZapReport = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a ZAP JSON report: {e}", path.display()))?;
    let mut out: Vec<Vulnerability> = Vec::new();
    for (s, site) in report.site.iter().enumerate() {
        for (a, alert) in site.alerts.iter().enumerate() {
            let at = format!("{}: site[{s}].alerts[{a}]", path.display());
            let severity = match alert.riskcode.trim() {
                "3" => Severity::High,
                "2" => Severity::Medium,
                "1" => Severity::Low,
                "0" => continue,
                other => {
                    return Err(format!(
                        "{at}.riskcode: expected \"0\" to \"3\", got {other:?}"
                    ))
                }
            };
            let reference = alert.alert_ref.clone().unwrap_or(alert.pluginid.clone());
            if reference.is_empty() {
                return Err(format!("{at}: has neither alertRef nor pluginid"));
            }
            let title = alert
                .name
                .clone()
                .or(alert.alert.clone())
                .unwrap_or_else(|| reference.clone());
            for (i, instance) in alert.instances.iter().enumerate() {
                let path = url_path(&instance.uri).ok_or_else(|| {
                    format!("{at}.instances[{i}].uri: {:?} is not a URL", instance.uri)
                })?;
                let vulnerability = Vulnerability {
                    id: format!("zap:{reference}"),
                    title: title.clone(),
                    severity,
                    service: None,
                    method: instance
                        .method
                        .as_deref()
                        .unwrap_or("GET")
                        .to_ascii_uppercase(),
                    route: path,
                    source: "zap",
                    fixed_in: None,
                };
                if !out.contains(&vulnerability) {
                    out.push(vulnerability);
                }
            }
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "{}: {size} bytes, at most {MAX_FILE_BYTES}",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// The path of an absolute URL or of a bare path, without query or fragment.
fn url_path(uri: &str) -> Option<String> {
    let uri: http::Uri = uri.trim().parse().ok()?;
    let path = uri.path();
    path.starts_with('/').then(|| path.to_string())
}

/// Whether `path` (a concrete path, or a template) is an instance of route `template`: same
/// number of segments, each literal equal, each `{param}` matching any non-empty segment.
pub fn matches_template(template: &str, path: &str) -> bool {
    let mut template = template.trim_end_matches('/').split('/');
    let mut path = path.trim_end_matches('/').split('/');
    loop {
        match (template.next(), path.next()) {
            (None, None) => return true,
            (Some(t), Some(p)) => {
                let parameter = t.starts_with('{') && t.ends_with('}');
                if !(t == p || parameter && !p.is_empty()) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Literal segments of a template: a more specific template wins when several match.
fn specificity(template: &str) -> usize {
    template.split('/').filter(|s| !s.starts_with('{')).count()
}

/// Places every vulnerability on the endpoints it concerns and orders them: publicly reached
/// and unauthenticated first, then publicly reached, internal only, never reached; within a
/// class by severity, then by public traffic.
pub fn rank(vulnerabilities: &[Vulnerability], endpoints: &[Endpoint]) -> Vec<RankedVulnerability> {
    let mut ranked = Vec::new();
    for v in vulnerabilities {
        let candidates = endpoints.iter().filter(|e| {
            e.method == v.method
                && v.service.as_ref().is_none_or(|s| &e.service == s)
                && matches_template(&e.route, &v.route)
        });
        // Per service, keep the most specific template the path matches.
        let mut best: Vec<&Endpoint> = Vec::new();
        for endpoint in candidates {
            match best.iter_mut().find(|b| b.service == endpoint.service) {
                Some(b) if specificity(&endpoint.route) > specificity(&b.route) => *b = endpoint,
                Some(_) => {}
                None => best.push(endpoint),
            }
        }
        let matched = !best.is_empty();
        // A scanner reports each concrete path; several may land on one template.
        best.retain(|endpoint| {
            !ranked.iter().any(|r: &RankedVulnerability| {
                r.vulnerability.id == v.id
                    && r.vulnerability.method == v.method
                    && r.matched_service.as_ref() == Some(&endpoint.service)
                    && r.matched_route.as_ref() == Some(&endpoint.route)
            })
        });
        let already_unmatched = ranked.iter().any(|r| {
            r.matched_route.is_none()
                && r.vulnerability.id == v.id
                && r.vulnerability.route == v.route
        });
        if !matched && !already_unmatched {
            ranked.push(RankedVulnerability {
                rank: 0,
                vulnerability: v.clone(),
                matched_service: None,
                matched_route: None,
                exposure: Exposure::Never,
                public_requests: 0,
                public_unauthenticated_success: 0,
                public_clients: 0,
                requests: 0,
                fix: None,
            });
        }
        for endpoint in best {
            ranked.push(RankedVulnerability {
                rank: 0,
                vulnerability: v.clone(),
                matched_service: Some(endpoint.service.clone()),
                matched_route: Some(endpoint.route.clone()),
                exposure: endpoint.exposure,
                public_requests: endpoint.public,
                public_unauthenticated_success: endpoint.public_unauthenticated_success,
                public_clients: endpoint.public_clients,
                requests: endpoint.requests,
                fix: None,
            });
        }
    }
    ranked.sort_by(|a, b| {
        (a.exposure, a.vulnerability.severity)
            .cmp(&(b.exposure, b.vulnerability.severity))
            .then(
                b.public_unauthenticated_success
                    .cmp(&a.public_unauthenticated_success),
            )
            .then(b.public_requests.cmp(&a.public_requests))
            .then(b.requests.cmp(&a.requests))
            .then(a.vulnerability.id.cmp(&b.vulnerability.id))
    });
    for (i, r) in ranked.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` in a file of its own, for `load_known`.
    fn list_file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-vulns-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("known.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_known_list_may_say_where_the_fix_is_and_a_bad_entry_is_named() {
        let good = list_file(
            "good",
            r#"[{"method": "get", "route": "/orders/{id}", "id": "SHOP-7", "severity": "high",
                 "fixed_in": "2.4.1"},
                {"method": "GET", "route": "/users/{id}", "id": "SHOP-8", "severity": "low"}]"#,
        );
        let known = load_known(&good).unwrap();
        assert_eq!(known[0].fixed_in.as_deref(), Some("2.4.1"));
        assert_eq!(known[0].method, "GET");
        assert_eq!(known[1].fixed_in, None);
        let cases = [
            (
                r#"[{"method": "GET", "route": "/a", "id": "X", "severity": "high", "fixed_in": "2.4 beta"}]"#,
                "[0].fixed_in: \"2.4 beta\" must be",
            ),
            (
                r#"[{"method": "GET", "route": "a", "id": "X", "severity": "high"}]"#,
                "[0].route: \"a\" does not start with /",
            ),
            (
                r#"[{"method": "G T", "route": "/a", "id": "X", "severity": "high"}]"#,
                "[0].method: \"G T\" is not an HTTP method",
            ),
            (
                r#"[{"method": "GET", "route": "/a", "id": "", "severity": "high"}]"#,
                "[0].id: must not be empty",
            ),
            (
                r#"[{"method": "GET", "route": "/a", "id": "X", "severity": "urgent"}]"#,
                "expected a JSON list",
            ),
            (
                r#"[{"method": "GET", "route": "/a", "id": "X", "severity": "high", "fixed": "1"}]"#,
                "unknown field `fixed`",
            ),
        ];
        for (i, (text, expected)) in cases.iter().enumerate() {
            let path = list_file(&format!("bad-{i}"), text);
            let error = load_known(&path).unwrap_err();
            assert!(
                error.starts_with(&path.display().to_string()) && error.contains(expected),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn paths_match_templates_segment_by_segment() {
        assert!(matches_template("/users/{id}", "/users/42"));
        assert!(matches_template("/users/{id}", "/users/{userId}"));
        assert!(matches_template("/users/{id}/", "/users/42"));
        assert!(matches_template("/", "/"));
        assert!(!matches_template("/users/{id}", "/users"));
        assert!(!matches_template("/users/{id}", "/users/42/orders"));
        assert!(!matches_template("/users/{id}", "/accounts/42"));
        assert!(!matches_template("/users/{id}", "/users//"));
    }

    #[test]
    fn url_paths_drop_host_query_and_fragment() {
        assert_eq!(
            url_path("http://shop.example:8080/users/7?x=1").as_deref(),
            Some("/users/7")
        );
        assert_eq!(url_path("/admin/stats").as_deref(), Some("/admin/stats"));
        assert_eq!(url_path("not a url"), None);
    }
}
