//! The series every request updates (requests, guard time, guard results), tallied per worker
//! thread and summed when `/metrics` is read. A request touches only its own thread's tallies:
//! no label strings are allocated, no lock or cache line is shared with the other workers.

use foldhash::fast::RandomState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelSetEncoder, LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use vigil_host::{GuardResult, Sharded};

/// How a request ended, for the `verdict` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Disposition {
    /// Forwarded to the upstream.
    Allowed,
    /// Refused by a guard.
    Denied,
    /// Refused by the proxy itself (bad request, too large, upstream error).
    Error,
}

impl Disposition {
    fn as_str(self) -> &'static str {
        match self {
            Disposition::Allowed => "allowed",
            Disposition::Denied => "denied",
            Disposition::Error => "error",
        }
    }
}

impl EncodeLabelValue for Disposition {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

/// Methods that get a series of their own; any other method is counted as `OTHER`, so a
/// client inventing methods cannot grow the metrics without bound.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// The `method` label of a request method.
fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("OTHER")
}

/// Upper bounds of the guard duration histogram's buckets, in seconds (`+Inf` is implied).
const GUARD_SECONDS_BUCKETS: [f64; 11] = [
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2, 1e-1,
];

/// Results of a guard call, in the order of [`GuardTally::results`].
const GUARD_RESULTS: [&str; 6] = ["allow", "deny", "deadline", "limit", "trap", "instantiate"];

fn result_index(result: &GuardResult) -> usize {
    let name = match result {
        GuardResult::Allowed => "allow",
        GuardResult::Denied(_) => "deny",
        GuardResult::Faulted(fault) => fault.kind.as_str(),
    };
    GUARD_RESULTS
        .iter()
        .position(|known| *known == name)
        .unwrap_or(GUARD_RESULTS.len() - 1)
}

/// A request series' labels other than the route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct RequestKind {
    method: &'static str,
    status: u16,
    verdict: Disposition,
}

/// One guard's time and results on one thread.
#[derive(Clone, Debug, Default)]
struct GuardTally {
    /// Calls per bucket of [`GUARD_SECONDS_BUCKETS`], then the overflow.
    buckets: [u64; GUARD_SECONDS_BUCKETS.len() + 1],
    seconds: f64,
    results: [u64; GUARD_RESULTS.len()],
}

impl GuardTally {
    fn calls(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn add(&mut self, other: &GuardTally) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        for (mine, theirs) in self.results.iter_mut().zip(other.results) {
            *mine += theirs;
        }
        self.seconds += other.seconds;
    }
}

/// One thread's tallies.
#[derive(Debug, Default)]
struct Shard {
    /// By route, then by the other labels: a lookup by the request's route borrows it.
    requests: HashMap<Box<str>, Vec<(RequestKind, u64)>, RandomState>,
    guards: HashMap<Arc<str>, GuardTally, RandomState>,
}

/// The per-request series, one shard per core.
#[derive(Debug, Default)]
pub struct Tallies {
    shards: Sharded<Shard>,
}

impl Tallies {
    /// Counts a finished request.
    pub fn request(&self, method: &str, route: &str, status: u16, verdict: Disposition) {
        let kind = RequestKind {
            method: method_label(method),
            status,
            verdict,
        };
        let mut shard = self.shards.local();
        let kinds = match shard.requests.get_mut(route) {
            Some(kinds) => kinds,
            None => shard.requests.entry(route.into()).or_default(),
        };
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }

    /// Records one guard call's time and result.
    pub fn guard(&self, guard: &Arc<str>, elapsed: Duration, result: &GuardResult) {
        let seconds = elapsed.as_secs_f64();
        let bucket = GUARD_SECONDS_BUCKETS
            .iter()
            .position(|upper| seconds <= *upper)
            .unwrap_or(GUARD_SECONDS_BUCKETS.len());
        let mut shard = self.shards.local();
        let tally = match shard.guards.get_mut(&**guard) {
            Some(tally) => tally,
            None => shard.guards.entry(guard.clone()).or_default(),
        };
        tally.buckets[bucket] += 1;
        tally.seconds += seconds;
        tally.results[result_index(result)] += 1;
    }

    /// The request counts of every shard, summed and in a stable order.
    fn requests(&self) -> BTreeMap<(Box<str>, RequestKind), u64> {
        let mut sums = BTreeMap::new();
        for shard in self.shards.all() {
            for (route, kinds) in &shard.requests {
                for (kind, n) in kinds {
                    *sums.entry((route.clone(), *kind)).or_default() += n;
                }
            }
        }
        sums
    }

    /// Each guard's tallies over every shard, by name.
    fn guards(&self) -> BTreeMap<Arc<str>, GuardTally> {
        let mut sums = BTreeMap::<Arc<str>, GuardTally>::new();
        for shard in self.shards.all() {
            for (guard, tally) in &shard.guards {
                sums.entry(guard.clone()).or_default().add(tally);
            }
        }
        sums
    }
}

struct RequestLabels<'a> {
    route: &'a str,
    kind: RequestKind,
}

impl EncodeLabelSet for RequestLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("method", self.kind.method).encode(encoder.encode_label())?;
        ("route", self.route).encode(encoder.encode_label())?;
        ("status", self.kind.status).encode(encoder.encode_label())?;
        ("verdict", self.kind.verdict).encode(encoder.encode_label())
    }
}

impl Collector for Tallies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut requests = encoder.encode_descriptor(
            "requests",
            "Requests by method, route, status and verdict",
            None,
            MetricType::Counter,
        )?;
        for ((route, kind), n) in self.requests() {
            let labels = RequestLabels {
                route: &route,
                kind,
            };
            ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
        }
        let guards = self.guards();
        let mut seconds = encoder.encode_descriptor(
            "guard_duration_seconds",
            "Time spent in a guard's on-request",
            None,
            MetricType::Histogram,
        )?;
        for (guard, tally) in &guards {
            let buckets: Vec<(f64, u64)> = GUARD_SECONDS_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(tally.buckets)
                .collect();
            seconds
                .encode_family(&[("guard", &**guard)])?
                .encode_histogram::<NoLabelSet>(tally.seconds, tally.calls(), &buckets, None)?;
        }
        let mut results = encoder.encode_descriptor(
            "guard_results",
            "Guard results: allow, deny, and faults by kind (deadline, limit, trap, instantiate)",
            None,
            MetricType::Counter,
        )?;
        for (guard, tally) in &guards {
            for (result, n) in GUARD_RESULTS.iter().zip(tally.results) {
                if n > 0 {
                    let labels = [("guard", &**guard), ("result", *result)];
                    ConstCounter::new(n).encode(results.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use vigil_host::{Deny, Fault, FaultKind};

    fn render(tallies: &Arc<Tallies>) -> String {
        let mut registry = Registry::with_prefix("vigil");
        registry.register_collector(Box::new(tallies.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn line<'t>(text: &'t str, series: &str) -> Option<&'t str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn requests_from_every_worker_are_summed_into_one_series() {
        let tallies = Arc::new(Tallies::default());
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        tallies.request("GET", "/users/{id}", 200, Disposition::Allowed);
                    }
                    tallies.request("GET", "/users/{id}", 429, Disposition::Denied);
                });
            }
        });
        let text = render(&tallies);
        let series = r#"vigil_requests_total{method="GET",route="/users/{id}",status="200",verdict="allowed"}"#;
        assert_eq!(line(&text, series), Some("300"), "{text}");
        let denied = r#"vigil_requests_total{method="GET",route="/users/{id}",status="429",verdict="denied"}"#;
        assert_eq!(line(&text, denied), Some("3"), "{text}");
    }

    #[test]
    fn invented_methods_share_one_series() {
        let tallies = Arc::new(Tallies::default());
        for i in 0..1000 {
            tallies.request(&format!("X{i}"), "/", 405, Disposition::Error);
        }
        tallies.request("get", "/", 405, Disposition::Error);
        let text = render(&tallies);
        let other =
            r#"vigil_requests_total{method="OTHER",route="/",status="405",verdict="error"}"#;
        assert_eq!(line(&text, other), Some("1001"), "{text}");
        assert_eq!(text.matches("vigil_requests_total{").count(), 1, "{text}");
    }

    #[test]
    fn guard_time_is_a_cumulative_histogram_and_results_are_counted_by_kind() {
        let tallies = Arc::new(Tallies::default());
        let guard: Arc<str> = "rate-limit".into();
        tallies.guard(&guard, Duration::from_micros(3), &GuardResult::Allowed);
        tallies.guard(&guard, Duration::from_micros(3), &GuardResult::Allowed);
        let deny = Deny {
            status: 429,
            reason: "slow down".into(),
            retry_after_secs: None,
        };
        tallies.guard(&guard, Duration::from_millis(2), &GuardResult::Denied(deny));
        let fault = Fault {
            kind: FaultKind::Deadline,
            detail: "late".into(),
        };
        tallies.guard(&guard, Duration::from_secs(1), &GuardResult::Faulted(fault));
        let text = render(&tallies);
        let bucket = |le: &str| {
            let series =
                format!(r#"vigil_guard_duration_seconds_bucket{{le="{le}",guard="rate-limit"}}"#);
            line(&text, &series).map(str::to_string)
        };
        assert_eq!(bucket("0.000002").as_deref(), Some("0"), "{text}");
        assert_eq!(bucket("0.000005").as_deref(), Some("2"), "{text}");
        assert_eq!(bucket("0.01").as_deref(), Some("3"), "{text}");
        assert_eq!(bucket("+Inf").as_deref(), Some("4"), "{text}");
        let count = r#"vigil_guard_duration_seconds_count{guard="rate-limit"}"#;
        assert_eq!(line(&text, count), Some("4"), "{text}");
        let sum = line(
            &text,
            r#"vigil_guard_duration_seconds_sum{guard="rate-limit"}"#,
        )
        .and_then(|v| v.parse::<f64>().ok())
        .expect("a sum");
        assert!((sum - 1.002006).abs() < 1e-9, "{sum}");
        for (result, n) in [("allow", "2"), ("deny", "1"), ("deadline", "1")] {
            let series =
                format!(r#"vigil_guard_results_total{{guard="rate-limit",result="{result}"}}"#);
            assert_eq!(line(&text, &series), Some(n), "{text}");
        }
        assert!(!text.contains(r#"result="trap""#), "{text}");
    }
}
