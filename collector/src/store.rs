//! The collector's storage interface: what ingest, the API and retention need from a database,
//! in domain terms, so that an engine other than SQLite can stand behind the same trait.

use serde::Serialize;
use std::collections::BTreeMap;
use vigil_report::{Credentials, Report, StatusClasses};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The report's sequence range overlaps one already applied without being the same range.
    #[error("sequence {first}-{last} of instance {instance:?} overlaps the applied range {applied_first}-{applied_last}")]
    Conflict {
        /// Instance of the refused report.
        instance: String,
        /// Its first sequence number.
        first: u64,
        /// Its last sequence number.
        last: u64,
        /// First number of the range already applied.
        applied_first: u64,
        /// Last number of the range already applied.
        applied_last: u64,
    },
    /// The database failed; the operation can be retried.
    #[error("storage failed: {0}")]
    Database(String),
}

/// What became of a report handed to [`Store::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Counted now.
    New,
    /// This exact range was applied before; nothing changed.
    Duplicate,
}

/// How much an endpoint was exposed, from most to least: the order of prioritisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exposure {
    /// Public clients got 2xx answers without any credential.
    PublicUnauthenticated,
    /// Reached by public clients (with credentials, or without success).
    Public,
    /// Reached only by internal clients.
    Internal,
    /// Never reached by any instance.
    Never,
}

impl Exposure {
    /// Words for people.
    pub fn label(self) -> &'static str {
        match self {
            Exposure::PublicUnauthenticated => "public, unauthenticated",
            Exposure::Public => "public",
            Exposure::Internal => "internal only",
            Exposure::Never => "never reached",
        }
    }
}

/// A service and its totals across the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// Service name, as reported.
    pub name: String,
    /// Instances heard from and not yet forgotten by retention.
    pub instances: u64,
    /// Reports applied.
    pub reports: u64,
    /// Endpoints reached by any instance.
    pub endpoints: u64,
    /// Of those, endpoints reached by public clients.
    pub public_endpoints: u64,
    /// Documented endpoints no instance reached.
    pub zombie_endpoints: u64,
    /// Requests across all endpoints.
    pub requests: u64,
    /// Finding records.
    pub findings: u64,
    /// Losses the sidecars reported (findings, endpoint counts, whole reports).
    pub dropped: Dropped,
    /// First report, ms since the Unix epoch.
    pub first_seen_ms: u64,
    /// Latest report, ms since the Unix epoch.
    pub last_seen_ms: u64,
}

/// Losses reported by sidecars, summed.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Dropped {
    /// Findings lost to full queues.
    pub findings: u64,
    /// Requests counted under the overflow endpoint.
    pub endpoints: u64,
    /// Reports lost from full spools.
    pub reports: u64,
}

/// One endpoint of one service, merged across every instance.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// Service name.
    pub service: String,
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// How exposed it is.
    pub exposure: Exposure,
    /// Requests seen.
    pub requests: u64,
    /// Of those, from public clients.
    pub public: u64,
    /// Of those, carrying a credential.
    pub authenticated: u64,
    /// 2xx answers to requests without credentials.
    pub unauthenticated_success: u64,
    /// 2xx answers to public requests without credentials.
    pub public_unauthenticated_success: u64,
    /// Estimated distinct public clients, merged across instances.
    pub public_clients: u64,
    /// Requests per credential kind.
    pub credentials: Credentials,
    /// Responses per status class.
    pub status: StatusClasses,
    /// Enforced denials per guard.
    pub denials: BTreeMap<String, u64>,
    /// Denials monitor-mode guards would have made, per guard (not applied).
    pub monitor_denials: BTreeMap<String, u64>,
    /// Instances that reached it.
    pub instances: u64,
    /// First request, ms since the Unix epoch; `None` when never reached.
    pub first_seen_ms: Option<u64>,
    /// Latest request; `None` when never reached.
    pub last_seen_ms: Option<u64>,
    /// In the service's OpenAPI document.
    pub documented: bool,
    /// Reached but not documented.
    pub shadow: bool,
    /// Documented but never reached by any instance.
    pub zombie: bool,
    /// Listed as internal-only by the sidecars.
    pub internal_only: bool,
}

impl Endpoint {
    /// An internal-only endpoint that public clients reached.
    pub fn internal_reached_publicly(&self) -> bool {
        self.internal_only && self.public > 0
    }
}

/// Which endpoints to list; every set condition must hold.
#[derive(Debug, Clone, Default)]
pub struct EndpointQuery {
    /// Only this service.
    pub service: Option<String>,
    /// Only endpoints reached by public clients.
    pub public: bool,
    /// Only endpoints that answered 2xx without credentials.
    pub unauthenticated: bool,
    /// Only shadow endpoints.
    pub shadow: bool,
    /// Only zombie endpoints.
    pub zombie: bool,
    /// Only internal-only endpoints reached publicly.
    pub internal_reached_publicly: bool,
}

impl EndpointQuery {
    /// Whether `endpoint` passes every condition.
    pub fn matches(&self, endpoint: &Endpoint) -> bool {
        self.service
            .as_ref()
            .is_none_or(|service| &endpoint.service == service)
            && (!self.public || endpoint.public > 0)
            && (!self.unauthenticated || endpoint.unauthenticated_success > 0)
            && (!self.shadow || endpoint.shadow)
            && (!self.zombie || endpoint.zombie)
            && (!self.internal_reached_publicly || endpoint.internal_reached_publicly())
    }
}

/// A finding folded across the fleet: same service, kind, source, endpoint and client.
#[derive(Debug, Clone, Serialize)]
pub struct FindingRecord {
    /// Service name.
    pub service: String,
    /// Finding kind.
    pub kind: String,
    /// `sidecar` or `guard:<name>`.
    pub source: String,
    /// Method of the endpoint concerned.
    pub method: Option<String>,
    /// Route of the endpoint concerned.
    pub route: Option<String>,
    /// Client concerned.
    pub client: Option<String>,
    /// Latest detail.
    pub detail: String,
    /// Instance that reported it last.
    pub instance: String,
    /// Occurrences.
    pub count: u64,
    /// First occurrence, ms since the Unix epoch.
    pub first_at_ms: u64,
    /// Latest occurrence.
    pub at_ms: u64,
}

/// Which findings to list, newest first.
#[derive(Debug, Clone)]
pub struct FindingQuery {
    /// Only this service.
    pub service: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Leave out the per-client denial kinds, enforced and monitor (the dashboard shows
    /// them apart).
    pub without_client_denials: bool,
    /// Most records returned.
    pub limit: usize,
}

/// A client and the denials guards reported for it, across the fleet: those enforced, and
/// those monitor-mode guards would have made.
#[derive(Debug, Clone, Serialize)]
pub struct DeniedClient {
    /// Service name.
    pub service: String,
    /// Client identity key.
    pub client: String,
    /// Enforced denials.
    pub denials: u64,
    /// The guards that denied it.
    pub sources: Vec<String>,
    /// Denials monitor-mode guards would have made: its requests went on.
    pub monitor_denials: u64,
    /// The monitor-mode guards that would have denied it.
    pub monitor_sources: Vec<String>,
    /// Endpoints concerned.
    pub endpoints: u64,
    /// Whether a guard's `ban` or an operator banned it in the period kept.
    pub banned: bool,
    /// Latest denial, ms since the Unix epoch.
    pub at_ms: u64,
}

/// Cut-off times of the retention policy, ms since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    /// Findings last seen before are deleted.
    pub findings_ms: u64,
    /// Instances last heard from before are forgotten.
    pub instances_ms: u64,
    /// Endpoints last reached before are deleted.
    pub endpoints_ms: u64,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Pruned {
    /// Finding records.
    pub findings: u64,
    /// Instances.
    pub instances: u64,
    /// Endpoints.
    pub endpoints: u64,
    /// Applied idempotency keys.
    pub keys: u64,
}

/// How much the store holds, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Services that have reported.
    pub services: u64,
    /// Endpoints across services: reached, or documented and never reached.
    pub endpoints: u64,
}

/// An instance and the version it last reported.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceVersion {
    /// Service name.
    pub service: String,
    /// Instance name.
    pub instance: String,
    /// The version of its latest report; `None` when that report carried none.
    pub version: Option<String>,
    /// Its latest report, ms since the Unix epoch (collector's clock).
    pub last_seen_ms: u64,
}

/// A version of a service some instance reported.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    /// Service name.
    pub service: String,
    /// The version.
    pub version: String,
    /// First report carrying it, ms since the Unix epoch (collector's clock).
    pub first_seen_ms: u64,
    /// Latest report carrying it.
    pub last_seen_ms: u64,
}

/// Requests one instance served on one endpoint while running one version, split by the
/// newest version the service's fleet had reported when they were counted (so a fix's
/// deployment divides before from after).
#[derive(Debug, Clone, Serialize)]
pub struct VersionTraffic {
    /// Instance name.
    pub instance: String,
    /// The version it ran; `None`: it reported none.
    pub version: Option<String>,
    /// The newest version of the service known when these requests were counted.
    pub fleet_newest: Option<String>,
    /// Requests.
    pub requests: u64,
    /// Of those, from public clients.
    pub public: u64,
    /// First request, ms since the Unix epoch (sidecar's clock).
    pub first_seen_ms: u64,
    /// Latest request.
    pub last_seen_ms: u64,
}

/// The versions a service's fleet runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetVersions {
    /// Instances not yet forgotten by retention, with their current version.
    pub instances: Vec<InstanceVersion>,
    /// Versions reported, oldest first by first report.
    pub releases: Vec<Release>,
}

/// Storage behind the collector. Calls block: async callers run them on blocking threads.
pub trait Store: Send + Sync + 'static {
    /// Applies a validated report once: its counts, findings and idempotency key in one
    /// transaction. The same range again is a [`Applied::Duplicate`]; an overlapping range is
    /// a [`StoreError::Conflict`]. Nothing is stored on error.
    fn apply(&self, report: &Report, received_ms: u64) -> Result<Applied, StoreError>;

    /// Every service with its totals, by name.
    fn services(&self) -> Result<Vec<Service>, StoreError>;

    /// Endpoints matching `query`, reached and documented-but-never-reached, merged across
    /// instances; by service, then most public requests first.
    fn endpoints(&self, query: &EndpointQuery) -> Result<Vec<Endpoint>, StoreError>;

    /// Findings matching `query`, newest first.
    fn findings(&self, query: &FindingQuery) -> Result<Vec<FindingRecord>, StoreError>;

    /// Clients with the most guard denials, enforced and monitor together, most first.
    fn denied_clients(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeniedClient>, StoreError>;

    /// Deletes what the retention policy no longer keeps.
    fn prune(&self, cutoffs: Cutoffs) -> Result<Pruned, StoreError>;

    /// The instances and versions of `service`, or of every service.
    fn fleet_versions(&self, service: Option<&str>) -> Result<FleetVersions, StoreError>;

    /// Requests per instance and version on one endpoint; empty while the service reports no
    /// versions.
    fn version_traffic(
        &self,
        service: &str,
        method: &str,
        route: &str,
    ) -> Result<Vec<VersionTraffic>, StoreError>;

    /// Services and endpoints known, counted without merging them (as `/api/endpoints`
    /// lists them, one per service, method and route).
    fn totals(&self) -> Result<Totals, StoreError>;
}
