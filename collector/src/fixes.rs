//! Verified fixes: whether the fix of a known vulnerability (`fixed_in`) has reached every
//! instance that serves the vulnerable endpoint.
//!
//! A fix counts as deployed from the first report of a version at or above `fixed_in`. An
//! instance is affected while the version it last reported is below `fixed_in`, or while it
//! reports none (it cannot show that it runs the fix). The fix is **verified** once no affected
//! instance has served the endpoint for `verify_after`, counted from the deployment or from the
//! last such request, whichever is later.

use super::store::{FleetVersions, InstanceVersion, Release, Store, StoreError, VersionTraffic};
use super::vulns::RankedVulnerability;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::HashMap;

/// How far a fix has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FixState {
    /// No instance has reported a version at or above `fixed_in`.
    NotDeployed,
    /// Deployed, but affected instances served the endpoint within `verify_after`, or the
    /// deployment is younger than that.
    Deployed,
    /// No affected instance has served the endpoint for `verify_after` since deployment.
    Verified,
}

impl FixState {
    /// The name the API uses.
    pub fn name(self) -> &'static str {
        match self {
            FixState::NotDeployed => "not-deployed",
            FixState::Deployed => "deployed",
            FixState::Verified => "verified",
        }
    }

    /// Words for people.
    pub fn label(self) -> &'static str {
        match self {
            FixState::NotDeployed => "fix not deployed",
            FixState::Deployed => "fix deployed, not verified",
            FixState::Verified => "fix verified",
        }
    }
}

/// An instance still running a version without the fix.
#[derive(Debug, Clone, Serialize)]
pub struct AffectedInstance {
    /// Instance name.
    pub instance: String,
    /// The version it last reported; `None` when it reports none.
    pub version: Option<String>,
    /// Its latest report, ms since the Unix epoch.
    pub last_seen_ms: u64,
}

/// Where the fix of one vulnerability on one service stands.
#[derive(Debug, Clone, Serialize)]
pub struct FixStatus {
    /// The first version with the fix.
    pub fixed_in: String,
    /// How far it has come.
    pub state: FixState,
    /// First report of a fixed version, ms since the Unix epoch.
    pub deployed_ms: Option<u64>,
    /// Instances whose current version lacks the fix.
    pub affected_instances: Vec<AffectedInstance>,
    /// Requests to the endpoint that affected instances served after the fix was deployed.
    pub requests_since_fix: u64,
    /// Of those, from public clients.
    pub public_requests_since_fix: u64,
    /// The last of those, ms since the Unix epoch.
    pub last_affected_request_ms: Option<u64>,
    /// When it is (or will be, without further affected requests) verified.
    pub verifiable_at_ms: Option<u64>,
}

/// Orders versions as release numbers: a leading `v` is ignored, dot-separated parts compare
/// as numbers when both are numbers (`1.10` after `1.9`), missing parts count as 0 (`1.2` is
/// `1.2.0`), a pre-release (`-rc.1`) comes before its release, and build metadata (`+…`) is
/// ignored. Versions that are not release numbers (commit ids) compare as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a_core, a_pre) = split_version(a);
    let (b_core, b_pre) = split_version(b);
    compare_parts(a_core, b_core, true).then_with(|| match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => compare_parts(a, b, false),
    })
}

/// Whether `version` lacks a fix first shipped in `fixed_in`; an unknown version does.
pub fn is_affected(version: Option<&str>, fixed_in: &str) -> bool {
    version.is_none_or(|v| compare_versions(v, fixed_in) == Ordering::Less)
}

/// The newest of `versions`, by [`compare_versions`].
pub fn newest<'a>(versions: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    versions
        .into_iter()
        .max_by(|a, b| compare_versions(a, b).then_with(|| a.cmp(b)))
}

fn split_version(version: &str) -> (&str, Option<&str>) {
    let version = version.split('+').next().unwrap_or_default();
    let version = version
        .strip_prefix(['v', 'V'])
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(version);
    match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    }
}

fn compare_parts(a: &str, b: &str, pad_with_zero: bool) -> Ordering {
    let mut a_parts = a.split('.');
    let mut b_parts = b.split('.');
    loop {
        let (x, y) = match (a_parts.next(), b_parts.next()) {
            (None, None) => return Ordering::Equal,
            (Some(x), None) if pad_with_zero => (x, "0"),
            (None, Some(y)) if pad_with_zero => ("0", y),
            // Pre-release: more identifiers sort later (`rc.1.1` after `rc.1`).
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (Some(x), Some(y)) => (x, y),
        };
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// Where the fix `fixed_in` stands for an endpoint of one service, from the service's
/// instances and releases and the endpoint's traffic per version.
pub fn status(
    fixed_in: &str,
    instances: &[InstanceVersion],
    releases: &[Release],
    traffic: &[VersionTraffic],
    verify_after_ms: u64,
    now_ms: u64,
) -> FixStatus {
    let deployed_ms = releases
        .iter()
        .filter(|r| !is_affected(Some(&r.version), fixed_in))
        .map(|r| r.first_seen_ms)
        .min();
    let mut affected_instances: Vec<AffectedInstance> = instances
        .iter()
        .filter(|i| is_affected(i.version.as_deref(), fixed_in))
        .map(|i| AffectedInstance {
            instance: i.instance.clone(),
            version: i.version.clone(),
            last_seen_ms: i.last_seen_ms,
        })
        .collect();
    affected_instances.sort_by(|a, b| {
        b.last_seen_ms
            .cmp(&a.last_seen_ms)
            .then(a.instance.cmp(&b.instance))
    });
    // Traffic an affected build served once the fleet already ran the fix.
    let since_fix: Vec<&VersionTraffic> = traffic
        .iter()
        .filter(|t| is_affected(t.version.as_deref(), fixed_in))
        .filter(|t| !is_affected(t.fleet_newest.as_deref(), fixed_in))
        .collect();
    let last_affected_request_ms = since_fix.iter().map(|t| t.last_seen_ms).max();
    let verifiable_at_ms = deployed_ms.map(|deployed| {
        deployed
            .max(last_affected_request_ms.unwrap_or(0))
            .saturating_add(verify_after_ms)
    });
    let state = match verifiable_at_ms {
        None => FixState::NotDeployed,
        Some(at) if now_ms >= at => FixState::Verified,
        Some(_) => FixState::Deployed,
    };
    FixStatus {
        fixed_in: fixed_in.to_string(),
        state,
        deployed_ms,
        affected_instances,
        requests_since_fix: since_fix.iter().map(|t| t.requests).sum(),
        public_requests_since_fix: since_fix.iter().map(|t| t.public).sum(),
        last_affected_request_ms,
        verifiable_at_ms,
    }
}

/// Fills in where the fix of each ranked vulnerability with a `fixed_in` stands, for the
/// service it matched (or names): one query per service, one per matched endpoint.
pub fn attach(
    store: &dyn Store,
    ranked: &mut [RankedVulnerability],
    verify_after_ms: u64,
    now_ms: u64,
) -> Result<(), StoreError> {
    let mut fleets: HashMap<String, FleetVersions> = HashMap::new();
    for vulnerability in ranked.iter_mut() {
        let Some(fixed_in) = vulnerability.vulnerability.fixed_in.as_deref() else {
            continue;
        };
        let Some(service) = vulnerability
            .matched_service
            .as_deref()
            .or(vulnerability.vulnerability.service.as_deref())
        else {
            continue;
        };
        if !fleets.contains_key(service) {
            fleets.insert(service.to_string(), store.fleet_versions(Some(service))?);
        }
        let traffic = match &vulnerability.matched_route {
            Some(route) => {
                store.version_traffic(service, &vulnerability.vulnerability.method, route)?
            }
            None => Vec::new(),
        };
        let fleet = &fleets[service];
        vulnerability.fix = Some(status(
            fixed_in,
            &fleet.instances,
            &fleet.releases,
            &traffic,
            verify_after_ms,
            now_ms,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_as_release_numbers() {
        let ascending = [
            "0.9",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.9",
            "v1.10",
            "2",
            "2.0.1+build.7",
            "10.0",
        ];
        for (i, a) in ascending.iter().enumerate() {
            for (j, b) in ascending.iter().enumerate() {
                assert_eq!(compare_versions(a, b), i.cmp(&j), "{a} against {b}");
            }
        }
        assert_eq!(compare_versions("1.2", "1.2.0"), Ordering::Equal);
        assert_eq!(compare_versions("v2.0", "2.0"), Ordering::Equal);
        assert_eq!(compare_versions("2.0+a", "2.0+b"), Ordering::Equal);
        assert_eq!(compare_versions("a1b2c3", "a1b2c4"), Ordering::Less);
        assert_eq!(newest(["1.9", "1.10", "1.2"]), Some("1.10"));
        assert_eq!(newest([]), None);
        assert!(is_affected(None, "1.0"));
        assert!(is_affected(Some("0.9.9"), "1.0"));
        assert!(!is_affected(Some("1.0"), "1.0"));
        assert!(!is_affected(Some("1.1"), "1.0"));
    }

    fn instance(name: &str, version: Option<&str>, last_seen_ms: u64) -> InstanceVersion {
        InstanceVersion {
            service: "shop".into(),
            instance: name.into(),
            version: version.map(str::to_string),
            last_seen_ms,
        }
    }

    fn release(version: &str, first_seen_ms: u64) -> Release {
        Release {
            service: "shop".into(),
            version: version.into(),
            first_seen_ms,
            last_seen_ms: first_seen_ms,
        }
    }

    fn traffic(
        version: Option<&str>,
        fleet_newest: Option<&str>,
        public: u64,
        last_seen_ms: u64,
    ) -> VersionTraffic {
        VersionTraffic {
            instance: "shop-1".into(),
            version: version.map(str::to_string),
            fleet_newest: fleet_newest.map(str::to_string),
            requests: public + 1,
            public,
            first_seen_ms: last_seen_ms,
            last_seen_ms,
        }
    }

    #[test]
    fn a_fix_is_verified_only_once_no_affected_instance_served_the_endpoint_for_a_while() {
        let hour = 3_600_000;
        let releases = [release("1.0", 0), release("1.1", 10 * hour)];
        let instances = [
            instance("shop-1", Some("1.0"), 12 * hour),
            instance("shop-2", Some("1.1"), 12 * hour),
            instance("shop-3", None, 11 * hour),
        ];
        let traffic = [
            // Before the fix: not counted against it.
            traffic(Some("1.0"), Some("1.0"), 50, 9 * hour),
            // The old build after the fix shipped, and an instance without a version.
            traffic(Some("1.0"), Some("1.1"), 7, 11 * hour),
            traffic(None, Some("1.1"), 2, 10 * hour + 5),
            // The fixed build.
            traffic(Some("1.1"), Some("1.1"), 100, 12 * hour),
        ];
        let at = |now| status("1.1", &instances, &releases, &traffic, 24 * hour, now);

        let fresh = at(12 * hour);
        assert_eq!(fresh.state, FixState::Deployed);
        assert_eq!(fresh.deployed_ms, Some(10 * hour));
        assert_eq!(fresh.public_requests_since_fix, 9);
        assert_eq!(fresh.requests_since_fix, 11);
        assert_eq!(fresh.last_affected_request_ms, Some(11 * hour));
        assert_eq!(fresh.verifiable_at_ms, Some(35 * hour));
        let affected: Vec<_> = fresh
            .affected_instances
            .iter()
            .map(|i| (i.instance.as_str(), i.version.as_deref()))
            .collect();
        assert_eq!(affected, [("shop-1", Some("1.0")), ("shop-3", None)]);
        assert_eq!(at(35 * hour - 1).state, FixState::Deployed);
        assert_eq!(at(35 * hour).state, FixState::Verified);

        // A fix no instance runs yet.
        let pending = status("2.0", &instances, &releases, &traffic, 24 * hour, 99 * hour);
        assert_eq!(pending.state, FixState::NotDeployed);
        assert_eq!(pending.verifiable_at_ms, None);
        assert_eq!(pending.public_requests_since_fix, 0);
        assert_eq!(pending.affected_instances.len(), 3);

        // Without affected traffic, the clock runs from the deployment.
        let quiet = status("1.1", &instances, &releases, &[], 24 * hour, 34 * hour);
        assert_eq!(quiet.state, FixState::Verified);
    }
}
