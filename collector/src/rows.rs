//! The store's records decoded from result rows, once for both engines: each engine reads its
//! rows through [`Columns`], and the queries both run select the columns in the order the
//! decoders here expect.

use super::store::{
    Endpoint, EndpointQuery, Exposure, FindingRecord, InstanceVersion, Release, StoreError,
    VersionTraffic,
};
use std::collections::{BTreeMap, HashMap};
use vigil_report::sketch::Sketch;
use vigil_report::{Credentials, StatusClasses};

/// A result row of either engine, read by column index.
pub trait Columns {
    /// A text column.
    fn text(&self, i: usize) -> Result<String, StoreError>;
    /// A text column that may be NULL.
    fn nullable_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    /// An integer column.
    fn integer(&self, i: usize) -> Result<i64, StoreError>;
    /// A boolean column.
    fn flag(&self, i: usize) -> Result<bool, StoreError>;
    /// A binary column that may be NULL.
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError>;

    /// A count: integers are signed in both engines, and a negative one never is a count.
    fn count(&self, i: usize) -> Result<u64, StoreError> {
        self.integer(i).map(|v| v.max(0) as u64)
    }

    /// A text column where `''` stands for absent (so that it can be part of a key).
    fn text_or_absent(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.text(i).map(|v| (!v.is_empty()).then_some(v))
    }
}

/// Service, method and route.
pub type EndpointId = (String, String, String);

/// Counts per guard of each endpoint (denials, monitor denials).
pub type GuardCounts = HashMap<EndpointId, BTreeMap<String, u64>>;

/// What [`reached_endpoint`] reads, from `endpoints e`; `{instances}` and `{documented}` are
/// the same in both dialects.
pub const ENDPOINT_COLUMNS: &str =
    "e.service, e.method, e.route, e.requests, e.public, e.authenticated,
     e.bearer, e.basic, e.cookie, e.api_key, e.s1xx, e.s2xx, e.s3xx, e.s4xx, e.s5xx,
     e.unauthenticated_success, e.public_unauthenticated_success,
     e.first_seen_ms, e.last_seen_ms, e.public_clients, e.shadow, e.internal_only,
     (SELECT count(*) FROM endpoint_instances i
      WHERE i.service = e.service AND i.method = e.method AND i.route = e.route),
     EXISTS (SELECT 1 FROM documented d
      WHERE d.service = e.service AND d.method = e.method AND d.route = e.route)";

/// Adds a `(service, method, route, guard, count)` row to `counts`.
pub fn add_guard_count(counts: &mut GuardCounts, row: &impl Columns) -> Result<(), StoreError> {
    counts
        .entry((row.text(0)?, row.text(1)?, row.text(2)?))
        .or_default()
        .insert(row.text(3)?, row.count(4)?);
    Ok(())
}

/// An endpoint some instance reached, from a row of [`ENDPOINT_COLUMNS`], with its counts per
/// guard taken from `denials` and `monitor_denials`.
pub fn reached_endpoint(
    row: &impl Columns,
    denials: &mut GuardCounts,
    monitor_denials: &mut GuardCounts,
) -> Result<Endpoint, StoreError> {
    let key: EndpointId = (row.text(0)?, row.text(1)?, row.text(2)?);
    let public = row.count(4)?;
    let public_unauthenticated_success = row.count(16)?;
    Ok(Endpoint {
        exposure: if public_unauthenticated_success > 0 {
            Exposure::PublicUnauthenticated
        } else if public > 0 {
            Exposure::Public
        } else {
            Exposure::Internal
        },
        requests: row.count(3)?,
        public,
        authenticated: row.count(5)?,
        credentials: Credentials {
            bearer: row.count(6)?,
            basic: row.count(7)?,
            cookie: row.count(8)?,
            api_key: row.count(9)?,
        },
        status: StatusClasses {
            informational: row.count(10)?,
            success: row.count(11)?,
            redirection: row.count(12)?,
            client_error: row.count(13)?,
            server_error: row.count(14)?,
        },
        unauthenticated_success: row.count(15)?,
        public_unauthenticated_success,
        first_seen_ms: Some(row.count(17)?),
        last_seen_ms: Some(row.count(18)?),
        public_clients: row
            .bytes(19)?
            .and_then(|bytes| Sketch::from_bytes(&bytes))
            .map_or(0, |s| s.estimate()),
        shadow: row.flag(20)?,
        internal_only: row.flag(21)?,
        instances: row.count(22)?,
        documented: row.flag(23)?,
        zombie: false,
        denials: denials.remove(&key).unwrap_or_default(),
        monitor_denials: monitor_denials.remove(&key).unwrap_or_default(),
        service: key.0,
        method: key.1,
        route: key.2,
    })
}

/// A documented endpoint no instance reached, from `(service, method, route)`.
pub fn zombie_endpoint(row: &impl Columns) -> Result<Endpoint, StoreError> {
    Ok(Endpoint {
        service: row.text(0)?,
        method: row.text(1)?,
        route: row.text(2)?,
        exposure: Exposure::Never,
        requests: 0,
        public: 0,
        authenticated: 0,
        unauthenticated_success: 0,
        public_unauthenticated_success: 0,
        public_clients: 0,
        credentials: Credentials::default(),
        status: StatusClasses::default(),
        denials: BTreeMap::new(),
        monitor_denials: BTreeMap::new(),
        instances: 0,
        first_seen_ms: None,
        last_seen_ms: None,
        documented: true,
        shadow: false,
        zombie: true,
        internal_only: false,
    })
}

/// Keeps the endpoints `query` selects, by service, then most public requests first.
pub fn select_endpoints(mut endpoints: Vec<Endpoint>, query: &EndpointQuery) -> Vec<Endpoint> {
    endpoints.retain(|e| query.matches(e));
    endpoints.sort_by(|a, b| {
        (&a.service, b.public, b.requests, &a.route, &a.method)
            .cmp(&(&b.service, a.public, a.requests, &b.route, &b.method))
    });
    endpoints
}

/// What [`finding`] reads, from `findings`.
pub const FINDING_COLUMNS: &str =
    "service, kind, source, method, route, client, detail, instance, count, first_at_ms, at_ms";

/// A finding record, from a row of [`FINDING_COLUMNS`].
pub fn finding(row: &impl Columns) -> Result<FindingRecord, StoreError> {
    Ok(FindingRecord {
        service: row.text(0)?,
        kind: row.text(1)?,
        source: row.text(2)?,
        method: row.text_or_absent(3)?,
        route: row.text_or_absent(4)?,
        client: row.text_or_absent(5)?,
        detail: row.text(6)?,
        instance: row.text(7)?,
        count: row.count(8)?,
        first_at_ms: row.count(9)?,
        at_ms: row.count(10)?,
    })
}

/// What [`instance_version`] reads, from `instances`.
pub const INSTANCE_VERSION_COLUMNS: &str = "service, instance, version, last_seen_ms";

/// An instance and its version, from a row of [`INSTANCE_VERSION_COLUMNS`].
pub fn instance_version(row: &impl Columns) -> Result<InstanceVersion, StoreError> {
    Ok(InstanceVersion {
        service: row.text(0)?,
        instance: row.text(1)?,
        version: row.nullable_text(2)?,
        last_seen_ms: row.count(3)?,
    })
}

/// What [`release`] reads, from `releases`.
pub const RELEASE_COLUMNS: &str = "service, version, first_seen_ms, last_seen_ms";

/// A release, from a row of [`RELEASE_COLUMNS`].
pub fn release(row: &impl Columns) -> Result<Release, StoreError> {
    Ok(Release {
        service: row.text(0)?,
        version: row.text(1)?,
        first_seen_ms: row.count(2)?,
        last_seen_ms: row.count(3)?,
    })
}

/// What [`version_traffic`] reads, from `version_traffic`.
pub const VERSION_TRAFFIC_COLUMNS: &str =
    "instance, version, fleet_newest, requests, public, first_seen_ms, last_seen_ms";

/// One instance's traffic under one version, from a row of [`VERSION_TRAFFIC_COLUMNS`].
pub fn version_traffic(row: &impl Columns) -> Result<VersionTraffic, StoreError> {
    Ok(VersionTraffic {
        instance: row.text(0)?,
        version: row.text_or_absent(1)?,
        fleet_newest: row.text_or_absent(2)?,
        requests: row.count(3)?,
        public: row.count(4)?,
        first_seen_ms: row.count(5)?,
        last_seen_ms: row.count(6)?,
    })
}
