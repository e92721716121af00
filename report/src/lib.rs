//! The report a sidecar sends to the collector: the wire format both sides share.
//!
//! A report holds what changed since the previous one (inventory deltas) and the findings of
//! that period. It covers a range of sequence numbers of one instance: one number when sent as
//! made, several when the spool merged reports that never left the machine. The collector
//! applies each range once.

#![forbid(unsafe_code)]

pub mod sketch;

use serde::{Deserialize, Serialize};
use sketch::Sketch;
use std::collections::BTreeMap;

/// The schema version this build writes and accepts.
pub const SCHEMA: u32 = 1;
/// Most endpoints one report may carry.
pub const MAX_ENDPOINTS: usize = 4_096;
/// Most findings one report may carry.
pub const MAX_FINDINGS: usize = 4_096;
/// Longest service, instance, guard or kind name.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest route template or finding detail.
pub const MAX_TEXT_BYTES: usize = 1_024;

/// One report from one sidecar instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Wire schema version, [`SCHEMA`].
    pub schema: u32,
    /// The service the sidecar stands in front of.
    pub service: String,
    /// This sidecar instance; with the sequence range it makes the idempotency key.
    pub instance: String,
    /// Sequence numbers this report covers, first to last inclusive.
    pub sequence: SequenceRange,
    /// Milliseconds since the Unix epoch: start and end of the period covered.
    pub period: Period,
    /// What each endpoint saw in the period; endpoints that saw nothing are left out.
    pub endpoints: Vec<EndpointDelta>,
    /// Findings of the period, from the sidecar itself and from guards.
    pub findings: Vec<Finding>,
    /// Every operation of the service's OpenAPI document (empty when it has none), so the
    /// collector can name documented endpoints no instance reaches.
    pub documented: Vec<EndpointKey>,
    /// What was lost before it could be reported, counted so loss is visible.
    pub dropped: Dropped,
    /// The version of the service the instance ran in this period, when the sidecar knows it
    /// (`report.version`, `version_env` or `version_header`). Left out when unknown, so
    /// reports of sidecars without it stay readable by collectors older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// An inclusive range of report sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceRange {
    /// First sequence number covered.
    pub first: u64,
    /// Last sequence number covered.
    pub last: u64,
}

/// A span of time in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// Start, inclusive.
    pub start_ms: u64,
    /// End, inclusive.
    pub end_ms: u64,
}

/// An endpoint: a method and a route template.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointKey {
    /// HTTP method, upper case.
    pub method: String,
    /// Route template, e.g. `/users/{id}`.
    pub route: String,
}

/// What one endpoint saw during a report's period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointDelta {
    /// HTTP method, upper case.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Requests that reached the sidecar for this endpoint, denied ones included.
    pub requests: u64,
    /// Of those, requests from public (non-internal) clients.
    pub public: u64,
    /// Of those, requests carrying any credential.
    pub authenticated: u64,
    /// Requests per credential kind seen (a request may carry several).
    pub credentials: Credentials,
    /// Responses per status class.
    pub status: StatusClasses,
    /// 2xx responses to requests without any credential.
    pub unauthenticated_success: u64,
    /// 2xx responses to public requests without any credential.
    pub public_unauthenticated_success: u64,
    /// First request of the period, ms since the Unix epoch.
    pub first_seen_ms: u64,
    /// Last request of the period, ms since the Unix epoch.
    pub last_seen_ms: u64,
    /// Distinct public clients (by identity key), as a mergeable sketch.
    pub public_clients: Sketch,
    /// Denials per guard name (enforced denials only).
    pub denials: BTreeMap<String, u64>,
    /// Denials per guard name that monitor-mode guards would have made: not applied, the
    /// requests went on. Absent from reports of sidecars older than the field and, to keep
    /// reports readable by collectors older than it, left out while empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub monitor_denials: BTreeMap<String, u64>,
    /// Whether the route is absent from the service's OpenAPI document (false without one).
    pub shadow: bool,
    /// Whether the route matches the sidecar's `internal_only` list.
    pub internal_only: bool,
}

/// Requests per credential kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// `Authorization: Bearer`.
    pub bearer: u64,
    /// `Authorization: Basic`.
    pub basic: u64,
    /// A configured session cookie.
    pub cookie: u64,
    /// A configured API-key header.
    pub api_key: u64,
}

/// Responses per status class; a request denied by a guard counts under its denial status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusClasses {
    /// 1xx.
    #[serde(rename = "1xx")]
    pub informational: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub redirection: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

/// A security observation, from the sidecar or from a guard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Machine-readable kind: one of [`FindingKind`]'s names for the sidecar's own, or what
    /// the guard said.
    pub kind: String,
    /// `sidecar`, or `guard:<name>`.
    pub source: String,
    /// The endpoint concerned, when there is one.
    pub endpoint: Option<EndpointKey>,
    /// Human-readable detail.
    pub detail: String,
    /// Identity key of the client concerned, when there is one.
    pub client: Option<String>,
    /// Last occurrence, ms since the Unix epoch.
    pub at_ms: u64,
    /// Occurrences folded into this record (same kind, source, endpoint and client).
    pub count: u64,
}

/// Kinds of findings the sidecar derives itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// A route listed as `internal_only` was reached by a public client.
    InternalReachedPublicly,
    /// A reached route is absent from the OpenAPI document.
    Shadow,
    /// A documented route was never reached since the sidecar started.
    ZombieCandidate,
    /// A 2xx without credentials on a route that usually has them.
    UnauthenticatedAccess,
    /// A guard's enforced denials of one client on one endpoint: `source` is the guard,
    /// `client` the client, `count` the denials. The collector ranks clients by these.
    ClientDenied,
    /// The same for a monitor-mode guard: denials it would have made, not applied.
    ClientWouldDeny,
    /// A client tried to use the sidecar as a forward proxy: a `CONNECT` (refused) or a
    /// request in absolute form (served, as HTTP requires).
    ProxyAttempt,
    /// The HTTP parser refused a client's request (400, 414, 431) before the sidecar could
    /// read it; `client` is the address.
    MalformedRequest,
    /// A client was banned: by a guard's `ban` (`source` is the guard) or by an operator
    /// (`source` is `admin`); `detail` gives the length and the reason.
    ClientBanned,
}

impl FindingKind {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::InternalReachedPublicly => "internal-reached-publicly",
            FindingKind::Shadow => "shadow-endpoint",
            FindingKind::ZombieCandidate => "zombie-candidate",
            FindingKind::UnauthenticatedAccess => "unauthenticated-access",
            FindingKind::ClientDenied => "client-denied",
            FindingKind::ClientWouldDeny => "client-would-deny",
            FindingKind::ClientBanned => "client-banned",
            FindingKind::ProxyAttempt => "proxy-attempt",
            FindingKind::MalformedRequest => "malformed-request",
        }
    }
}

/// Counts of what was lost before it reached a report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropped {
    /// Findings dropped because a bounded queue was full.
    pub findings: u64,
    /// Requests not counted per endpoint because the inventory was full (they are counted
    /// under the overflow endpoint instead).
    pub endpoints: u64,
    /// Reports dropped from a full spool that could not be merged.
    pub reports: u64,
}

impl Report {
    /// The key the collector de-duplicates on.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}:{}-{}",
            self.instance, self.sequence.first, self.sequence.last
        )
    }

    /// Checks what serde cannot: names, sizes, ranges and counts that contradict each other.
    /// The error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "schema: version {} is not supported (this collector reads {SCHEMA})",
                self.schema
            ));
        }
        check_name("service", &self.service)?;
        check_name("instance", &self.instance)?;
        if let Some(version) = &self.version {
            check_version(version).map_err(|e| format!("version: {e}"))?;
        }
        if self.sequence.first > self.sequence.last {
            return Err(format!(
                "sequence: first {} is after last {}",
                self.sequence.first, self.sequence.last
            ));
        }
        if self.period.start_ms > self.period.end_ms {
            return Err("period: start_ms is after end_ms".into());
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            return Err(format!(
                "endpoints: {} entries, at most {MAX_ENDPOINTS}",
                self.endpoints.len()
            ));
        }
        if self.findings.len() > MAX_FINDINGS {
            return Err(format!(
                "findings: {} entries, at most {MAX_FINDINGS}",
                self.findings.len()
            ));
        }
        if self.documented.len() > MAX_ENDPOINTS {
            return Err(format!(
                "documented: {} entries, at most {MAX_ENDPOINTS}",
                self.documented.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}]");
            check_endpoint(&at, &endpoint.method, &endpoint.route)?;
            if !seen.insert((&endpoint.method, &endpoint.route)) {
                return Err(format!(
                    "{at}: {} {} appears twice",
                    endpoint.method, endpoint.route
                ));
            }
            let parts = [
                ("public", endpoint.public),
                ("authenticated", endpoint.authenticated),
                ("unauthenticated_success", endpoint.unauthenticated_success),
            ];
            for (field, value) in parts {
                if value > endpoint.requests {
                    return Err(format!(
                        "{at}.{field}: {value} is more than requests ({})",
                        endpoint.requests
                    ));
                }
            }
            if endpoint.public_unauthenticated_success > endpoint.unauthenticated_success {
                return Err(format!(
                    "{at}.public_unauthenticated_success: more than unauthenticated_success"
                ));
            }
            if endpoint.first_seen_ms > endpoint.last_seen_ms {
                return Err(format!("{at}: first_seen_ms is after last_seen_ms"));
            }
            for guard in endpoint.denials.keys() {
                check_name(&format!("{at}.denials"), guard)?;
            }
            for guard in endpoint.monitor_denials.keys() {
                check_name(&format!("{at}.monitor_denials"), guard)?;
            }
        }
        for (i, finding) in self.findings.iter().enumerate() {
            let at = format!("findings[{i}]");
            check_name(&format!("{at}.kind"), &finding.kind)?;
            check_name(&format!("{at}.source"), &finding.source)?;
            check_text(&format!("{at}.detail"), &finding.detail)?;
            if let Some(client) = &finding.client {
                check_text(&format!("{at}.client"), client)?;
            }
            if let Some(endpoint) = &finding.endpoint {
                check_endpoint(&format!("{at}.endpoint"), &endpoint.method, &endpoint.route)?;
            }
            if finding.count == 0 {
                return Err(format!("{at}.count: must be at least 1"));
            }
        }
        for (i, endpoint) in self.documented.iter().enumerate() {
            check_endpoint(
                &format!("documented[{i}]"),
                &endpoint.method,
                &endpoint.route,
            )?;
        }
        Ok(())
    }

    /// Folds a later report of the same instance into this one, as the spool does when full.
    pub fn absorb(&mut self, later: Report) {
        self.sequence.first = self.sequence.first.min(later.sequence.first);
        self.sequence.last = self.sequence.last.max(later.sequence.last);
        self.period.start_ms = self.period.start_ms.min(later.period.start_ms);
        self.period.end_ms = self.period.end_ms.max(later.period.end_ms);
        for endpoint in later.endpoints {
            match self
                .endpoints
                .iter_mut()
                .find(|e| e.method == endpoint.method && e.route == endpoint.route)
            {
                Some(existing) => existing.absorb(&endpoint),
                None => self.endpoints.push(endpoint),
            }
        }
        for finding in later.findings {
            match self.findings.iter_mut().find(|f| f.same_subject(&finding)) {
                Some(existing) => {
                    existing.count += finding.count;
                    existing.at_ms = existing.at_ms.max(finding.at_ms);
                    existing.detail = finding.detail;
                }
                None => self.findings.push(finding),
            }
        }
        if !later.documented.is_empty() {
            self.documented = later.documented;
        }
        self.dropped.findings += later.dropped.findings;
        self.dropped.endpoints += later.dropped.endpoints;
        self.dropped.reports += later.dropped.reports;
        // A merged period that spans a version change keeps the earlier version: its traffic
        // then counts against the older build, which can delay a fix's verification but never
        // hasten it.
        if self.version.is_none() {
            self.version = later.version;
        }
    }
}

/// Longest service version.
pub const MAX_VERSION_BYTES: usize = 64;

/// Checks a service version: 1 to [`MAX_VERSION_BYTES`] of letters, digits and `. - _ + :`
/// (so `2.4.1`, `v2.4.1-rc.1+build.7`, a commit id, a date). The error says what is wrong.
pub fn check_version(version: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_+:".contains(c);
    if version.is_empty() || version.len() > MAX_VERSION_BYTES || !version.chars().all(allowed) {
        return Err(format!(
            "{:?} must be 1 to {MAX_VERSION_BYTES} characters of letters, digits and . - _ + :",
            cut(version, MAX_VERSION_BYTES)
        ));
    }
    Ok(())
}

impl EndpointDelta {
    /// The endpoint this delta is about.
    pub fn key(&self) -> EndpointKey {
        EndpointKey {
            method: self.method.clone(),
            route: self.route.clone(),
        }
    }

    /// Adds another delta of the same endpoint into this one.
    pub fn absorb(&mut self, other: &EndpointDelta) {
        if self.requests == 0 {
            self.first_seen_ms = other.first_seen_ms;
        } else if other.requests > 0 {
            self.first_seen_ms = self.first_seen_ms.min(other.first_seen_ms);
        }
        self.last_seen_ms = self.last_seen_ms.max(other.last_seen_ms);
        self.requests += other.requests;
        self.public += other.public;
        self.authenticated += other.authenticated;
        self.credentials.bearer += other.credentials.bearer;
        self.credentials.basic += other.credentials.basic;
        self.credentials.cookie += other.credentials.cookie;
        self.credentials.api_key += other.credentials.api_key;
        self.status.informational += other.status.informational;
        self.status.success += other.status.success;
        self.status.redirection += other.status.redirection;
        self.status.client_error += other.status.client_error;
        self.status.server_error += other.status.server_error;
        self.unauthenticated_success += other.unauthenticated_success;
        self.public_unauthenticated_success += other.public_unauthenticated_success;
        self.public_clients.merge(&other.public_clients);
        for (guard, denials) in &other.denials {
            *self.denials.entry(guard.clone()).or_default() += denials;
        }
        for (guard, denials) in &other.monitor_denials {
            *self.monitor_denials.entry(guard.clone()).or_default() += denials;
        }
        self.shadow = other.shadow;
        self.internal_only = other.internal_only;
    }
}

impl StatusClasses {
    /// Counts one response.
    pub fn count(&mut self, status: u16) {
        match status {
            100..=199 => self.informational += 1,
            200..=299 => self.success += 1,
            300..=399 => self.redirection += 1,
            400..=499 => self.client_error += 1,
            _ => self.server_error += 1,
        }
    }
}

impl Finding {
    /// Whether two findings are about the same thing and can be folded into one record.
    pub fn same_subject(&self, other: &Finding) -> bool {
        self.kind == other.kind
            && self.source == other.source
            && self.endpoint == other.endpoint
            && self.client == other.client
    }
}

/// Whether a report can carry `method` and `route` as an endpoint ([`Report::validate`]
/// refuses the whole report otherwise).
pub fn is_reportable_endpoint(method: &str, route: &str) -> bool {
    check_endpoint("", method, route).is_ok()
}

/// `value` made fit for a name field (kind, source): control characters replaced by `?`, cut
/// to [`MAX_NAME_BYTES`] at a character boundary, `-` for an empty one.
pub fn fit_name(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let mut fitted = cut(&cleaned, MAX_NAME_BYTES).to_string();
    if fitted.is_empty() {
        fitted.push('-');
    }
    fitted
}

/// `value` cut to [`MAX_TEXT_BYTES`] at a character boundary, for a text field (detail,
/// client).
pub fn fit_text(value: &str) -> String {
    cut(value, MAX_TEXT_BYTES).to_string()
}

fn cut(value: &str, max: usize) -> &str {
    &value[..value.floor_char_boundary(max)]
}

fn check_name(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{field}: {} bytes, at most {MAX_NAME_BYTES}",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field}: contains control characters"));
    }
    Ok(())
}

fn check_text(field: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "{field}: {} bytes, at most {MAX_TEXT_BYTES}",
            value.len()
        ));
    }
    Ok(())
}

fn check_endpoint(at: &str, method: &str, route: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if method.is_empty() || method.len() > 32 || !method.chars().all(token) {
        return Err(format!("{at}.method: {method:?} is not an HTTP method"));
    }
    if !route.starts_with('/') {
        return Err(format!("{at}.route: {route:?} does not start with /"));
    }
    check_text(&format!("{at}.route"), route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(route: &str, requests: u64) -> EndpointDelta {
        EndpointDelta {
            method: "GET".into(),
            route: route.into(),
            requests,
            public: requests,
            first_seen_ms: 10,
            last_seen_ms: 20,
            ..Default::default()
        }
    }

    fn report(first: u64, endpoints: Vec<EndpointDelta>) -> Report {
        Report {
            schema: SCHEMA,
            service: "shop".into(),
            instance: "shop-1".into(),
            sequence: SequenceRange { first, last: first },
            period: Period {
                start_ms: 0,
                end_ms: 100,
            },
            endpoints,
            findings: Vec::new(),
            documented: Vec::new(),
            dropped: Dropped::default(),
            version: None,
        }
    }

    #[test]
    fn the_version_is_optional_on_the_wire_and_checked() {
        let json = serde_json::to_value(report(1, vec![])).unwrap();
        assert!(
            json.get("version").is_none(),
            "left out while unknown, so older collectors read the report: {json}"
        );
        let mut versioned = report(1, vec![]);
        versioned.version = Some("v2.4.1-rc.1+build.7".into());
        let again: Report =
            serde_json::from_value(serde_json::to_value(&versioned).unwrap()).unwrap();
        assert_eq!(again.version.as_deref(), Some("v2.4.1-rc.1+build.7"));
        assert_eq!(again.validate(), Ok(()));
        for bad in ["", "2.4 beta", "2.4\n", &"1".repeat(65)] {
            versioned.version = Some(bad.into());
            let error = versioned.validate().unwrap_err();
            assert!(error.starts_with("version: "), "{bad:?}: {error}");
        }
    }

    #[test]
    fn merging_across_a_version_change_keeps_the_earlier_version() {
        let mut earlier = report(1, vec![endpoint("/a", 1)]);
        earlier.version = Some("1.0".into());
        let mut later = report(2, vec![endpoint("/a", 1)]);
        later.version = Some("1.1".into());
        earlier.absorb(later.clone());
        assert_eq!(earlier.version.as_deref(), Some("1.0"));
        let mut unversioned = report(1, vec![]);
        unversioned.absorb(later);
        assert_eq!(unversioned.version.as_deref(), Some("1.1"));
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(report(1, vec![endpoint("/a", 3)]).validate(), Ok(()));
        type Breaker = Box<dyn Fn(&mut Report)>;
        let cases: Vec<(Breaker, &str)> = vec![
            (Box::new(|r| r.schema = 9), "schema"),
            (Box::new(|r| r.service.clear()), "service"),
            (Box::new(|r| r.instance = "x".repeat(200)), "instance"),
            (Box::new(|r| r.sequence.first = 5), "sequence"),
            (
                Box::new(|r| r.endpoints[0].public = 7),
                "endpoints[0].public",
            ),
            (
                Box::new(|r| r.endpoints[0].route = "a".into()),
                "endpoints[0].route",
            ),
            (
                Box::new(|r| r.endpoints[0].method = "GE T".into()),
                "endpoints[0].method",
            ),
            (
                Box::new(|r| r.endpoints.push(endpoint("/a", 1))),
                "appears twice",
            ),
        ];
        for (break_it, field) in cases {
            let mut bad = report(1, vec![endpoint("/a", 3)]);
            bad.sequence.last = 4;
            break_it(&mut bad);
            let error = bad.validate().unwrap_err();
            assert!(error.contains(field), "{error} should name {field}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut json = serde_json::to_value(report(1, vec![])).unwrap();
        json["extra"] = 1.into();
        assert!(serde_json::from_value::<Report>(json).is_err());
    }

    #[test]
    fn fitted_text_passes_validation() {
        let mut report = report(1, vec![endpoint("/users/{id}", 1)]);
        report.findings.push(Finding {
            kind: fit_name(&"\u{7}é".repeat(100)),
            source: "guard:g".into(),
            endpoint: None,
            detail: fit_text(&"é".repeat(1000)),
            client: None,
            at_ms: 1,
            count: 1,
        });
        assert_eq!(report.validate(), Ok(()));
        assert!(report.findings[0].kind.starts_with("?é?é"));
        assert_eq!(report.findings[0].detail.len(), 1024);
        assert_eq!(fit_name(""), "-");
        assert!(is_reportable_endpoint("PURGE", "/cache/{key}"));
        assert!(!is_reportable_endpoint(&"X".repeat(33), "/"));
        assert!(!is_reportable_endpoint(
            "GET",
            &format!("/{}", "a".repeat(1024))
        ));
    }

    #[test]
    fn monitor_denials_are_optional_on_the_wire() {
        let mut json = serde_json::to_value(report(1, vec![endpoint("/a", 3)])).unwrap();
        assert!(
            json["endpoints"][0].get("monitor_denials").is_none(),
            "left out while empty, so older collectors read the report: {json}"
        );
        json["endpoints"][0]
            .as_object_mut()
            .unwrap()
            .remove("monitor_denials");
        let older: Report = serde_json::from_value(json.clone()).unwrap();
        assert!(older.endpoints[0].monitor_denials.is_empty());

        json["endpoints"][0]["monitor_denials"] = serde_json::json!({"bots": 2});
        let newer: Report = serde_json::from_value(json).unwrap();
        assert_eq!(newer.endpoints[0].monitor_denials["bots"], 2);
        assert_eq!(newer.validate(), Ok(()));
        let again = serde_json::to_value(&newer).unwrap();
        assert_eq!(again["endpoints"][0]["monitor_denials"]["bots"], 2);

        let mut bad = newer;
        bad.endpoints[0].monitor_denials.insert(String::new(), 1);
        assert!(bad.validate().unwrap_err().contains("monitor_denials"));
    }

    #[test]
    fn absorbing_sums_endpoints_and_widens_the_range() {
        let mut merged = report(1, vec![endpoint("/a", 3)]);
        let mut later = report(2, vec![endpoint("/a", 2), endpoint("/b", 1)]);
        later.endpoints[0].first_seen_ms = 5;
        later.endpoints[0].denials.insert("rate".into(), 2);
        later.endpoints[0].monitor_denials.insert("bots".into(), 4);
        merged.endpoints[0].monitor_denials.insert("bots".into(), 1);
        merged.absorb(later);
        assert_eq!(merged.sequence, SequenceRange { first: 1, last: 2 });
        assert_eq!(merged.endpoints.len(), 2);
        assert_eq!(merged.endpoints[0].requests, 5);
        assert_eq!(merged.endpoints[0].first_seen_ms, 5);
        assert_eq!(merged.endpoints[0].denials["rate"], 2);
        assert_eq!(merged.endpoints[0].monitor_denials["bots"], 5);
        assert_eq!(merged.idempotency_key(), "shop-1:1-2");
        assert_eq!(merged.validate(), Ok(()));
    }
}
