//! The exposure inventory: per endpoint (method and route template), who reaches it, from where,
//! with which credentials and with what outcome; and the findings the sidecar derives from that.
//!
//! Every endpoint keeps two tallies: the lifetime total, shown by `GET /exposure`, and the
//! delta since the last report, which the reporter takes. Both are bounded: at most
//! `max_endpoints` endpoints (later ones are counted under one overflow endpoint) and at most
//! `max_findings` pending findings (repeats fold into one record with a count).

use super::version::ServiceVersion;
use crate::config::VersionSource;
use crate::identity::{CredentialKind, ResolvedClient};
use crate::routing::{ApiSpec, Route, OVERFLOW_TEMPLATE};
use foldhash::fast::RandomState;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;
use vigil_guest::route::Pattern;
use vigil_report::{Dropped, EndpointDelta, EndpointKey, Finding, FindingKind, Period};

/// The method under which requests beyond `max_endpoints` are counted.
pub const OVERFLOW_METHOD: &str = "*";
/// The sidecar's own findings carry this source.
pub const SIDECAR_SOURCE: &str = "sidecar";
/// Distinct finding kinds counted by name in the lifetime view; later ones count as
/// [`OTHER_KINDS`].
const MAX_FINDING_KINDS: usize = 256;
/// Where kinds beyond [`MAX_FINDING_KINDS`] are counted.
const OTHER_KINDS: &str = "(other)";
/// The `by` of a ban an operator placed, and the source of its finding.
pub const ADMIN_SOURCE: &str = "admin";
/// Most version changes that close a period between two reports; beyond, the version flaps
/// (several builds behind one sidecar) and later changes are not followed until the next
/// report.
const MAX_VERSION_CHANGES: usize = 8;
/// Most recent findings `GET /exposure` shows.
const RECENT_FINDINGS: usize = 100;

/// Bounds and thresholds of the inventory.
#[derive(Clone, Debug)]
pub struct InventoryLimits {
    /// Most endpoints tracked; more are counted under one overflow endpoint.
    pub max_endpoints: usize,
    /// Most findings held until the next report; more are dropped and counted.
    pub max_findings: usize,
    /// A 2xx without credentials is a finding only once the route has seen this many
    /// authenticated requests...
    pub usual_auth_min_requests: u64,
    /// ...making up at least this share of its requests.
    pub usual_auth_share: f64,
}

impl Default for InventoryLimits {
    fn default() -> Self {
        InventoryLimits {
            max_endpoints: 2_048,
            max_findings: 1_024,
            usual_auth_min_requests: 20,
            usual_auth_share: 0.9,
        }
    }
}

/// One request's outcome, as the inventory counts it.
pub struct Observation<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The resolved route.
    pub route: &'a Route,
    /// The resolved client.
    pub client: &'a ResolvedClient,
    /// Status sent to the client.
    pub status: u16,
    /// The guard whose denial was enforced, if any.
    pub denied_by: Option<&'a str>,
    /// Monitor-mode guards that would have denied the request (not applied).
    pub would_deny: &'a [&'a str],
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// The exposure inventory of one sidecar.
pub struct Inventory {
    limits: InventoryLimits,
    internal_only: Vec<Pattern>,
    documented: Vec<EndpointKey>,
    started_ms: u64,
    /// method → route → tallies; two levels so a lookup borrows the request's strings.
    endpoints: RwLock<HashMap<String, RouteTallies, RandomState>>,
    endpoint_count: AtomicU64,
    overflowed: AtomicU64,
    period_start_ms: AtomicU64,
    findings: Mutex<Findings>,
    version: ServiceVersion,
    closed: Mutex<Closed>,
}

/// Periods a version change closed, waiting for the next report.
#[derive(Default)]
struct Closed {
    periods: Vec<Delta>,
    /// More than [`MAX_VERSION_CHANGES`] since the last report (logged once per report).
    flapping: bool,
}

/// The tallies of one method's routes.
type RouteTallies = HashMap<Arc<str>, Arc<Mutex<Tally>>, RandomState>;

/// Both tallies of one endpoint.
struct Tally {
    total: EndpointDelta,
    delta: EndpointDelta,
}

struct Findings {
    /// Held for the next report, folded by subject.
    pending: Vec<Finding>,
    index: HashMap<Subject, usize>,
    dropped: u64,
    recent: VecDeque<Finding>,
    /// Lifetime count per kind, for `/exposure`.
    by_kind: HashMap<String, u64>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Subject {
    kind: String,
    source: String,
    endpoint: Option<EndpointKey>,
    client: Option<String>,
}

/// What the reporter takes from the inventory for one report.
#[derive(Debug)]
pub struct Delta {
    /// The period covered.
    pub period: Period,
    /// Endpoints that saw requests in the period.
    pub endpoints: Vec<EndpointDelta>,
    /// Findings of the period.
    pub findings: Vec<Finding>,
    /// Losses of the period.
    pub dropped: Dropped,
    /// The service's version during the period, when known.
    pub version: Option<String>,
}

impl Delta {
    /// Whether the period saw nothing worth a report.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.findings.is_empty() && self.dropped == Dropped::default()
    }
}

/// `GET /exposure`: the lifetime view.
#[derive(Debug, Serialize)]
pub struct Exposure {
    /// When the sidecar started, ms since the Unix epoch.
    pub started_ms: u64,
    /// Every tracked endpoint, most requested first.
    pub endpoints: Vec<EndpointView>,
    /// Documented operations never reached since start.
    pub zombie_candidates: Vec<EndpointKey>,
    /// The most recent findings, newest first.
    pub recent_findings: Vec<Finding>,
    /// Findings seen since start, per kind.
    pub findings_by_kind: HashMap<String, u64>,
    /// Requests counted under the overflow endpoint because the inventory was full.
    pub overflowed_requests: u64,
    /// Findings dropped because the pending queue was full.
    pub dropped_findings: u64,
    /// The version of the service reports carry now, when known.
    pub service_version: Option<String>,
}

/// One endpoint in `GET /exposure`.
#[derive(Debug, Serialize)]
pub struct EndpointView {
    /// Lifetime tallies.
    #[serde(flatten)]
    pub total: EndpointDelta,
    /// Estimated distinct public clients.
    pub public_clients_estimate: u64,
}

impl Inventory {
    /// An empty inventory; `spec` lists the documented operations, `internal_only` the routes
    /// public clients should never reach.
    pub fn new(
        limits: InventoryLimits,
        internal_only: Vec<Pattern>,
        spec: Option<&ApiSpec>,
        version: &VersionSource,
        now_ms: u64,
    ) -> Inventory {
        let documented = spec
            .map(|spec| {
                spec.operations()
                    .map(|(method, route)| EndpointKey {
                        method: method.to_ascii_uppercase(),
                        route: route.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Inventory {
            limits,
            internal_only,
            documented,
            started_ms: now_ms,
            endpoints: RwLock::new(HashMap::default()),
            endpoint_count: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            period_start_ms: AtomicU64::new(now_ms),
            findings: Mutex::new(Findings::default()),
            version: ServiceVersion::new(version),
            closed: Mutex::new(Closed::default()),
        }
    }

    /// Follows the version an upstream response announces: a change closes the period so far
    /// under the version it ran, so the collector never counts an old build's requests
    /// against the new one.
    pub fn see_version(&self, headers: &http::HeaderMap, now_ms: impl FnOnce() -> u64) {
        let Some(announced) = self.version.announced(headers) else {
            return;
        };
        let now_ms = now_ms();
        let mut closed = lock(&self.closed);
        // Another response may have made the same change while this one waited.
        if self.version.is_current(&announced) {
            return;
        }
        if closed.periods.len() >= MAX_VERSION_CHANGES {
            if !std::mem::replace(&mut closed.flapping, true) {
                tracing::warn!(
                    current = self.version.current().as_deref().unwrap_or("-"),
                    announced = %announced,
                    "the service's version changes on nearly every response (several builds behind one sidecar?); until the next report, counts stay with the current version"
                );
            }
            return;
        }
        let delta = self.take_delta(now_ms);
        let previous = self.version.replace(announced.clone());
        tracing::info!(
            from = previous.as_deref().unwrap_or("-"),
            to = %announced,
            "the service's version changed; requests from now on are reported under the new one"
        );
        closed.periods.push(delta);
    }

    /// Every operation of the OpenAPI document.
    pub fn documented(&self) -> &[EndpointKey] {
        &self.documented
    }

    /// Counts one request and derives the sidecar's findings from it.
    pub fn record(&self, seen: &Observation<'_>) {
        let (tally, created) = self.tally(seen.method, seen.route);
        let client = seen.client;
        let success = (200..300).contains(&seen.status);
        let (internal_only, shadow, usually_authenticated) = {
            let mut guard = lock(&tally);
            let tally = &mut *guard;
            let usually_authenticated = tally.total.authenticated
                >= self.limits.usual_auth_min_requests
                && tally.total.authenticated as f64
                    >= self.limits.usual_auth_share * tally.total.requests as f64;
            let public_hash = client
                .public
                .then(|| vigil_report::sketch::stable_hash(client.key.as_bytes()));
            for side in [&mut tally.total, &mut tally.delta] {
                count(side, seen, public_hash, success);
            }
            (
                tally.total.internal_only,
                tally.total.shadow,
                usually_authenticated,
            )
        };
        // The endpoint the request was counted under (see `tally`).
        let endpoint = || {
            if vigil_report::is_reportable_endpoint(seen.method, &seen.route.template) {
                EndpointKey {
                    method: seen.method.to_string(),
                    route: seen.route.template.to_string(),
                }
            } else {
                EndpointKey {
                    method: OVERFLOW_METHOD.into(),
                    route: OVERFLOW_TEMPLATE.into(),
                }
            }
        };
        if created && shadow {
            self.add_finding(
                FindingKind::Shadow.as_str(),
                SIDECAR_SOURCE,
                Some(endpoint()),
                None,
                format!(
                    "{} {} is reached but absent from the OpenAPI document",
                    seen.method, seen.route.template
                ),
                seen.at_ms,
            );
        }
        if internal_only && client.public {
            self.add_finding(
                FindingKind::InternalReachedPublicly.as_str(),
                SIDECAR_SOURCE,
                Some(endpoint()),
                Some(client.key.clone()),
                format!(
                    "internal-only {} {} reached from public address {} (status {})",
                    seen.method, seen.route.template, client.ip, seen.status
                ),
                seen.at_ms,
            );
        }
        if let Some(guard) = seen.denied_by {
            self.add_finding(
                FindingKind::ClientDenied.as_str(),
                &format!("guard:{guard}"),
                Some(endpoint()),
                Some(client.key.clone()),
                format!(
                    "{guard} denied {} {} with {}",
                    seen.method, seen.route.template, seen.status
                ),
                seen.at_ms,
            );
        }
        for guard in seen.would_deny {
            self.add_finding(
                FindingKind::ClientWouldDeny.as_str(),
                &format!("guard:{guard}"),
                Some(endpoint()),
                Some(client.key.clone()),
                format!(
                    "{guard} (monitor mode) would have denied {} {}; answered {}",
                    seen.method, seen.route.template, seen.status
                ),
                seen.at_ms,
            );
        }
        if success && !client.authenticated && usually_authenticated {
            self.add_finding(
                FindingKind::UnauthenticatedAccess.as_str(),
                SIDECAR_SOURCE,
                Some(endpoint()),
                Some(client.key.clone()),
                format!(
                    "{} {} answered {} without credentials, though its requests usually carry them",
                    seen.method, seen.route.template, seen.status
                ),
                seen.at_ms,
            );
        }
    }

    /// Queues a finding of the sidecar's own about `client` on no endpoint in particular.
    pub fn record_client_finding(
        &self,
        kind: FindingKind,
        client: &str,
        detail: String,
        at_ms: u64,
    ) {
        self.add_finding(
            kind.as_str(),
            SIDECAR_SOURCE,
            None,
            Some(client.to_string()),
            detail,
            at_ms,
        );
    }

    /// Queues the finding that `client` was banned at `at_ms` for `length` by `by` (a guard's
    /// name, or `admin`).
    pub fn record_ban(&self, client: &str, by: &str, reason: &str, length: Duration, at_ms: u64) {
        let source = if by == ADMIN_SOURCE {
            ADMIN_SOURCE.to_string()
        } else {
            format!("guard:{by}")
        };
        self.add_finding(
            FindingKind::ClientBanned.as_str(),
            &source,
            None,
            Some(client.to_string()),
            format!("banned for {}s: {reason}", length.as_secs()),
            at_ms,
        );
    }

    /// Queues findings reported by guards.
    pub fn add_guard_findings(&self, findings: Vec<vigil_host::Finding>) {
        for finding in findings {
            self.add_finding(
                &finding.kind,
                &format!("guard:{}", finding.guard),
                None,
                Some(finding.client),
                finding.detail,
                finding.at_ms,
            );
        }
    }

    /// Counts findings lost before they reached the inventory (e.g. by the guard runtime).
    pub fn count_dropped_findings(&self, dropped: u64) {
        lock(&self.findings).dropped += dropped;
    }

    /// Documented operations never reached since start.
    pub fn zombie_candidates(&self) -> Vec<EndpointKey> {
        let endpoints = self
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        self.documented
            .iter()
            .filter(|key| {
                endpoints
                    .get(&key.method)
                    .and_then(|routes| routes.get(key.route.as_str()))
                    .is_none()
            })
            .cloned()
            .collect()
    }

    /// Queues a zombie-candidate finding for each documented operation never reached.
    pub fn report_zombies(&self, now_ms: u64) {
        let uptime = std::time::Duration::from_millis(now_ms.saturating_sub(self.started_ms));
        for key in self.zombie_candidates() {
            let detail = format!(
                "documented {} {} has not been reached in {}s since start",
                key.method,
                key.route,
                uptime.as_secs()
            );
            self.add_finding(
                FindingKind::ZombieCandidate.as_str(),
                SIDECAR_SOURCE,
                Some(key),
                None,
                detail,
                now_ms,
            );
        }
    }

    /// Takes what changed since the last call, one delta per version the service ran in the
    /// meantime, oldest first; empty ones are left out unless nothing changed at all.
    pub fn take(&self, now_ms: u64) -> Vec<Delta> {
        let mut closed = std::mem::take(&mut *lock(&self.closed)).periods;
        closed.retain(|delta| !delta.is_empty());
        let last = self.take_delta(now_ms);
        if closed.is_empty() || !last.is_empty() {
            closed.push(last);
        }
        closed
    }

    /// Takes what changed since the last call under the current version.
    fn take_delta(&self, now_ms: u64) -> Delta {
        let start = self.period_start_ms.swap(now_ms, Ordering::Relaxed);
        let tallies = self.all_tallies();
        let mut endpoints = Vec::new();
        for tally in tallies {
            let mut tally = lock(&tally);
            if tally.delta.requests == 0 {
                continue;
            }
            let fresh = EndpointDelta {
                method: tally.delta.method.clone(),
                route: tally.delta.route.clone(),
                shadow: tally.delta.shadow,
                internal_only: tally.delta.internal_only,
                ..EndpointDelta::default()
            };
            endpoints.push(std::mem::replace(&mut tally.delta, fresh));
        }
        endpoints.sort_by(|a, b| (&a.method, &a.route).cmp(&(&b.method, &b.route)));
        let mut findings = lock(&self.findings);
        findings.index.clear();
        Delta {
            period: Period {
                start_ms: start,
                end_ms: now_ms.max(start),
            },
            endpoints,
            findings: std::mem::take(&mut findings.pending),
            dropped: Dropped {
                findings: std::mem::take(&mut findings.dropped),
                endpoints: self.overflowed.swap(0, Ordering::Relaxed),
                reports: 0,
            },
            version: self.version.current(),
        }
    }

    /// The lifetime view for `GET /exposure`.
    pub fn exposure(&self) -> Exposure {
        let tallies = self.all_tallies();
        let mut endpoints: Vec<EndpointView> = tallies
            .iter()
            .map(|tally| {
                let total = lock(tally).total.clone();
                EndpointView {
                    public_clients_estimate: total.public_clients.estimate(),
                    total,
                }
            })
            .collect();
        endpoints.sort_by(|a, b| {
            b.total.requests.cmp(&a.total.requests).then_with(|| {
                (&a.total.method, &a.total.route).cmp(&(&b.total.method, &b.total.route))
            })
        });
        let findings = lock(&self.findings);
        Exposure {
            started_ms: self.started_ms,
            endpoints,
            zombie_candidates: self.zombie_candidates(),
            recent_findings: findings.recent.iter().rev().cloned().collect(),
            findings_by_kind: findings.by_kind.clone(),
            overflowed_requests: self.overflowed.load(Ordering::Relaxed),
            dropped_findings: findings.dropped,
            service_version: self.version.current(),
        }
    }

    /// Every endpoint's tallies, taken out from under the map's lock so each can be locked in
    /// turn without holding the map.
    fn all_tallies(&self) -> Vec<Arc<Mutex<Tally>>> {
        let endpoints = self
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        endpoints
            .values()
            .flat_map(|routes| routes.values().cloned())
            .collect()
    }

    /// The tally of an endpoint, created on first sight; the overflow one when full.
    fn tally(&self, method: &str, route: &Route) -> (Arc<Mutex<Tally>>, bool) {
        {
            let endpoints = self
                .endpoints
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(tally) = endpoints
                .get(method)
                .and_then(|routes| routes.get(&*route.template))
            {
                return (tally.clone(), false);
            }
        }
        let full = self.endpoint_count.load(Ordering::Relaxed) >= self.limits.max_endpoints as u64;
        // A method or template a report cannot carry would get the whole report refused by the
        // collector: such requests are counted under the overflow endpoint instead.
        let unfit = !vigil_report::is_reportable_endpoint(method, &route.template);
        let (method, template) = if full || unfit {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            (OVERFLOW_METHOD, Arc::from(OVERFLOW_TEMPLATE))
        } else {
            (method, route.template.clone())
        };
        let mut endpoints = self
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let routes = endpoints.entry(method.to_string()).or_default();
        if let Some(tally) = routes.get(&template) {
            return (tally.clone(), false);
        }
        // The overflow endpoint is allowed beyond the cap: it is what keeps the cap.
        self.endpoint_count.fetch_add(1, Ordering::Relaxed);
        let internal_only = self
            .internal_only
            .iter()
            .any(|pattern| pattern.matches(method, &template));
        let blank = EndpointDelta {
            method: method.to_string(),
            route: template.to_string(),
            shadow: !self.documented.is_empty() && !route.documented && !full,
            internal_only,
            ..EndpointDelta::default()
        };
        let tally = Arc::new(Mutex::new(Tally {
            total: blank.clone(),
            delta: blank,
        }));
        routes.insert(template, tally.clone());
        (tally, true)
    }

    fn add_finding(
        &self,
        kind: &str,
        source: &str,
        endpoint: Option<EndpointKey>,
        client: Option<String>,
        detail: String,
        at_ms: u64,
    ) {
        let mut findings = lock(&self.findings);
        // Guards and clients choose much of this text; a report must still pass validation.
        let finding = Finding {
            kind: vigil_report::fit_name(kind),
            source: vigil_report::fit_name(source),
            endpoint,
            detail: vigil_report::fit_text(&detail),
            client: client.as_deref().map(vigil_report::fit_text),
            at_ms,
            count: 1,
        };
        // Guards name their kinds: past a bound, new ones are counted together.
        let known = findings.by_kind.len() < MAX_FINDING_KINDS
            || findings.by_kind.contains_key(&finding.kind);
        let counted_as = if known { &*finding.kind } else { OTHER_KINDS };
        *findings.by_kind.entry(counted_as.to_string()).or_default() += 1;
        if findings.recent.len() >= RECENT_FINDINGS {
            findings.recent.pop_front();
        }
        findings.recent.push_back(finding.clone());
        let subject = Subject {
            kind: finding.kind.clone(),
            source: finding.source.clone(),
            endpoint: finding.endpoint.clone(),
            client: finding.client.clone(),
        };
        if let Some(&at) = findings.index.get(&subject) {
            let folded = &mut findings.pending[at];
            folded.count += 1;
            folded.at_ms = folded.at_ms.max(at_ms);
            folded.detail = finding.detail;
        } else if findings.pending.len() < self.limits.max_findings {
            let at = findings.pending.len();
            findings.pending.push(finding);
            findings.index.insert(subject, at);
        } else {
            findings.dropped += 1;
        }
    }
}

impl Default for Findings {
    fn default() -> Self {
        Findings {
            pending: Vec::new(),
            index: HashMap::new(),
            dropped: 0,
            recent: VecDeque::with_capacity(RECENT_FINDINGS),
            by_kind: HashMap::new(),
        }
    }
}

fn count(
    side: &mut EndpointDelta,
    seen: &Observation<'_>,
    public_hash: Option<u64>,
    success: bool,
) {
    let client = seen.client;
    if side.requests == 0 {
        side.first_seen_ms = seen.at_ms;
    }
    side.requests += 1;
    side.last_seen_ms = side.last_seen_ms.max(seen.at_ms);
    if let Some(hash) = public_hash {
        side.public += 1;
        side.public_clients.insert_hash(hash);
    }
    if client.authenticated {
        side.authenticated += 1;
    } else if success {
        side.unauthenticated_success += 1;
        if client.public {
            side.public_unauthenticated_success += 1;
        }
    }
    for kind in &client.credentials {
        match kind {
            CredentialKind::Bearer => side.credentials.bearer += 1,
            CredentialKind::Basic => side.credentials.basic += 1,
            CredentialKind::Cookie => side.credentials.cookie += 1,
            CredentialKind::ApiKey => side.credentials.api_key += 1,
            // The report has no counter of its own for certificates yet; such requests still
            // count as authenticated.
            CredentialKind::ClientCertificate => {}
        }
    }
    side.status.count(seen.status);
    if let Some(guard) = seen.denied_by {
        count_denial(&mut side.denials, guard);
    }
    for guard in seen.would_deny {
        count_denial(&mut side.monitor_denials, guard);
    }
}

/// Counts one denial by `guard`, allocating its name only the first time.
fn count_denial(denials: &mut std::collections::BTreeMap<String, u64>, guard: &str) {
    match denials.get_mut(guard) {
        Some(denials) => *denials += 1,
        None => {
            denials.insert(guard.to_string(), 1);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::RouteSource;
    use std::net::IpAddr;

    const SPEC: &str = "openapi: 3.0.0\npaths:\n  /users/{id}:\n    get: {}\n  /orders:\n    get: {}\n    post: {}\n";

    fn route(template: &str, documented: bool) -> Route {
        Route {
            template: Arc::from(template),
            source: RouteSource::Heuristic,
            documented,
        }
    }

    fn client(key: &str, public: bool, credentials: Vec<CredentialKind>) -> ResolvedClient {
        let ip: IpAddr = if public { "203.0.113.9" } else { "10.0.0.9" }
            .parse()
            .unwrap();
        ResolvedClient {
            ip,
            key: key.to_string(),
            public,
            authenticated: !credentials.is_empty(),
            credentials,
        }
    }

    fn inventory(limits: InventoryLimits) -> Inventory {
        let spec = ApiSpec::parse(SPEC).unwrap();
        let internal = vec![Pattern::parse("GET /admin/**").unwrap()];
        Inventory::new(
            limits,
            internal,
            Some(&spec),
            &VersionSource {
                fixed: Some("1.0".into()),
                header: Some(http::HeaderName::from_static("x-app-version")),
            },
            1_000,
        )
    }

    /// The one delta of a period without version changes.
    fn take_one(inventory: &Inventory, now_ms: u64) -> Delta {
        let mut deltas = inventory.take(now_ms);
        assert_eq!(deltas.len(), 1, "{deltas:?}");
        deltas.remove(0)
    }

    fn announcing(version: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-app-version", version.parse().unwrap());
        headers
    }

    #[test]
    fn a_version_change_closes_the_period_under_the_old_version() {
        let inventory = inventory(InventoryLimits::default());
        let users = route("/users/{id}", true);
        let alice = client("alice", true, vec![]);
        record(&inventory, "GET", &users, &alice, 200);
        record(&inventory, "GET", &users, &alice, 200);
        inventory.see_version(&announcing("1.0"), || 1_250);
        inventory.see_version(&announcing("1.1"), || 1_300);
        record(&inventory, "GET", &users, &alice, 200);
        let deltas = inventory.take(2_000);
        let summary: Vec<_> = deltas
            .iter()
            .map(|d| (d.version.as_deref(), d.endpoints[0].requests, d.period))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    Some("1.0"),
                    2,
                    Period {
                        start_ms: 1_000,
                        end_ms: 1_300
                    }
                ),
                (
                    Some("1.1"),
                    1,
                    Period {
                        start_ms: 1_300,
                        end_ms: 2_000
                    }
                ),
            ]
        );
        // The next period starts under the new version, with nothing closed.
        assert_eq!(take_one(&inventory, 3_000).version.as_deref(), Some("1.1"));
    }

    #[test]
    fn a_flapping_version_closes_a_bounded_number_of_periods() {
        let inventory = inventory(InventoryLimits::default());
        let users = route("/users/{id}", true);
        let alice = client("alice", true, vec![]);
        for i in 0..100u64 {
            record(&inventory, "GET", &users, &alice, 200);
            let version = if i % 2 == 0 { "2.0" } else { "1.0" };
            inventory.see_version(&announcing(version), || 1_000 + i);
        }
        let deltas = inventory.take(2_000);
        assert_eq!(deltas.len(), MAX_VERSION_CHANGES + 1);
        let requests: u64 = deltas.iter().map(|d| d.endpoints[0].requests).sum();
        assert_eq!(requests, 100, "nothing lost while flapping");
        // A report later, changes are followed again.
        inventory.see_version(&announcing("3.0"), || 2_500);
        assert_eq!(
            inventory.take(3_000).last().unwrap().version.as_deref(),
            Some("3.0")
        );
    }

    fn record(
        inventory: &Inventory,
        method: &str,
        route: &Route,
        client: &ResolvedClient,
        status: u16,
    ) {
        inventory.record(&Observation {
            method,
            route,
            client,
            status,
            denied_by: (status == 429).then_some("rate"),
            would_deny: if status == 404 { &["bots"] } else { &[] },
            at_ms: 2_000,
        });
    }

    #[test]
    fn counts_each_dimension_and_resets_only_the_delta() {
        let inventory = inventory(InventoryLimits::default());
        let users = route("/users/{id}", true);
        let bearer = client("alice", true, vec![CredentialKind::Bearer]);
        let anonymous = client("10.0.0.9", false, vec![]);
        for _ in 0..3 {
            record(&inventory, "GET", &users, &bearer, 200);
        }
        record(&inventory, "GET", &users, &anonymous, 404);
        record(&inventory, "GET", &users, &bearer, 429);

        let delta = take_one(&inventory, 3_000);
        assert_eq!(
            delta.period,
            Period {
                start_ms: 1_000,
                end_ms: 3_000
            }
        );
        let [users_delta] = &delta.endpoints[..] else {
            panic!("{:?}", delta.endpoints)
        };
        assert_eq!(users_delta.requests, 5);
        assert_eq!(users_delta.public, 4);
        assert_eq!(users_delta.authenticated, 4);
        assert_eq!(users_delta.credentials.bearer, 4);
        assert_eq!(
            (users_delta.status.success, users_delta.status.client_error),
            (3, 2)
        );
        assert_eq!(users_delta.denials["rate"], 1);
        assert_eq!(
            users_delta.monitor_denials["bots"], 1,
            "the 404 was let through"
        );
        let kinds: Vec<(&str, &str, Option<&str>)> = delta
            .findings
            .iter()
            .map(|f| (f.kind.as_str(), f.source.as_str(), f.client.as_deref()))
            .collect();
        assert!(
            kinds.contains(&("client-denied", "guard:rate", Some("alice"))),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("client-would-deny", "guard:bots", Some("10.0.0.9"))),
            "{kinds:?}"
        );
        assert_eq!(users_delta.public_clients.estimate(), 1);
        assert!(!users_delta.shadow);

        assert!(
            take_one(&inventory, 4_000).endpoints.is_empty(),
            "the delta was taken"
        );
        let exposure = inventory.exposure();
        assert_eq!(exposure.endpoints[0].total.requests, 5, "the total stays");
        assert_eq!(exposure.endpoints[0].public_clients_estimate, 1);
    }

    #[test]
    fn derives_shadow_internal_and_unauthenticated_findings() {
        let inventory = inventory(InventoryLimits {
            usual_auth_min_requests: 5,
            ..InventoryLimits::default()
        });
        let outsider = client("203.0.113.9", true, vec![]);
        let admin = route("/admin/stats", false);
        record(&inventory, "GET", &admin, &outsider, 200);
        record(&inventory, "GET", &admin, &outsider, 200);
        let orders = route("/orders", true);
        let member = client("bob", true, vec![CredentialKind::Cookie]);
        for _ in 0..5 {
            record(&inventory, "POST", &orders, &member, 201);
        }
        record(&inventory, "POST", &orders, &outsider, 201);

        let findings = take_one(&inventory, 3_000).findings;
        let kinds: Vec<(&str, u64)> = findings
            .iter()
            .map(|f| (f.kind.as_str(), f.count))
            .collect();
        assert_eq!(
            kinds,
            [
                ("shadow-endpoint", 1),
                ("internal-reached-publicly", 2),
                ("unauthenticated-access", 1)
            ]
        );
        let internal = &findings[1];
        assert_eq!(internal.client.as_deref(), Some("203.0.113.9"));
        assert_eq!(internal.endpoint.as_ref().unwrap().route, "/admin/stats");
        assert!(take_one(&inventory, 4_000).findings.is_empty());
        // An internal client reaching it is no finding.
        record(
            &inventory,
            "GET",
            &admin,
            &client("ops", false, vec![]),
            200,
        );
        assert!(take_one(&inventory, 5_000).findings.is_empty());
    }

    #[test]
    fn zombie_candidates_are_documented_operations_never_reached() {
        let inventory = inventory(InventoryLimits::default());
        let reader = client("carol", true, vec![]);
        record(&inventory, "GET", &route("/orders", true), &reader, 200);
        let zombies: Vec<String> = inventory
            .zombie_candidates()
            .iter()
            .map(|k| format!("{} {}", k.method, k.route))
            .collect();
        assert_eq!(zombies, ["GET /users/{id}", "POST /orders"]);
        inventory.report_zombies(9_000);
        let findings = take_one(&inventory, 9_000).findings;
        assert_eq!(findings.len(), 2);
        assert!(findings.iter().all(|f| f.kind == "zombie-candidate"));
    }

    #[test]
    fn guard_findings_are_cut_to_what_a_report_carries_and_their_kinds_bounded() {
        let inventory = inventory(InventoryLimits::default());
        let finding = |kind: String, detail: String| vigil_host::Finding {
            guard: "g".into(),
            kind,
            detail,
            client: "é".repeat(600),
            at_ms: 1,
        };
        inventory.add_guard_findings(vec![finding("k\n".repeat(100), "d".repeat(5000))]);
        for i in 0..MAX_FINDING_KINDS + 10 {
            inventory.add_guard_findings(vec![finding(format!("kind-{i}"), String::new())]);
        }
        let findings = take_one(&inventory, 2).findings;
        assert!(findings
            .iter()
            .all(|f| f.kind.len() <= vigil_report::MAX_NAME_BYTES
                && f.detail.len() <= vigil_report::MAX_TEXT_BYTES
                && f.client.as_ref().unwrap().len() <= vigil_report::MAX_TEXT_BYTES));
        assert!(
            findings[0].kind.starts_with("k?k?"),
            "{:?}",
            findings[0].kind
        );
        let by_kind = inventory.exposure().findings_by_kind;
        assert_eq!(
            by_kind.len(),
            MAX_FINDING_KINDS + 1,
            "the bound and (other)"
        );
        assert_eq!(by_kind[OTHER_KINDS], 11);
    }

    #[test]
    fn bans_are_reported_with_who_placed_them() {
        let inventory = inventory(InventoryLimits::default());
        let fifteen_minutes = Duration::from_secs(900);
        inventory.record_ban("mallory", "rate-limit", "too fast", fifteen_minutes, 5_000);
        inventory.record_ban("eve", ADMIN_SOURCE, "by hand", fifteen_minutes, 6_000);
        let findings = take_one(&inventory, 9_000).findings;
        let seen: Vec<(&str, &str, Option<&str>, &str, u64)> = findings
            .iter()
            .map(|f| {
                (
                    f.kind.as_str(),
                    f.source.as_str(),
                    f.client.as_deref(),
                    f.detail.as_str(),
                    f.at_ms,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "client-banned",
                    "guard:rate-limit",
                    Some("mallory"),
                    "banned for 900s: too fast",
                    5_000
                ),
                (
                    "client-banned",
                    "admin",
                    Some("eve"),
                    "banned for 900s: by hand",
                    6_000
                ),
            ]
        );
        assert!(findings.iter().all(|f| f.endpoint.is_none()));
    }

    #[test]
    fn endpoints_and_findings_are_bounded_and_losses_counted() {
        let inventory = inventory(InventoryLimits {
            max_endpoints: 3,
            max_findings: 2,
            ..InventoryLimits::default()
        });
        let outsider = client("203.0.113.9", true, vec![]);
        for i in 0..10 {
            record(
                &inventory,
                "GET",
                &route(&format!("/admin/r{i}"), false),
                &outsider,
                200,
            );
        }
        let delta = take_one(&inventory, 3_000);
        assert_eq!(
            delta.endpoints.len(),
            4,
            "three endpoints and the overflow one"
        );
        let overflow = delta
            .endpoints
            .iter()
            .find(|e| e.route == OVERFLOW_TEMPLATE)
            .unwrap();
        assert_eq!(
            (overflow.method.as_str(), overflow.requests),
            (OVERFLOW_METHOD, 7)
        );
        assert_eq!(delta.dropped.endpoints, 7);
        assert_eq!(delta.findings.len(), 2);
        assert!(delta.dropped.findings > 0);
        assert_eq!(
            delta.endpoints.iter().map(|e| e.requests).sum::<u64>(),
            10,
            "no request uncounted"
        );
    }
}
