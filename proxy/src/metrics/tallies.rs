//! The series every request updates (requests, request and upstream time, guard time, guard
//! results), tallied per worker thread and summed when `/metrics` is read. A request touches
//! only its own thread's tallies: no label strings are allocated, no lock or cache line is
//! shared with the other workers.

use foldhash::fast::RandomState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelSetEncoder, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use vigil_host::{Decision, GuardResult, Sharded};

/// How a request ended, for the `verdict` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Disposition {
    /// Forwarded to the upstream, no guard objecting.
    Allowed,
    /// Forwarded to the upstream, though a monitor-mode guard would have denied it.
    Monitored,
    /// Refused by a guard.
    Denied,
    /// Refused by the proxy itself (bad request, too large, upstream error).
    Error,
}

/// Every disposition, in the order of their index.
const DISPOSITIONS: [Disposition; 4] = [
    Disposition::Allowed,
    Disposition::Monitored,
    Disposition::Denied,
    Disposition::Error,
];

impl Disposition {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Disposition::Allowed => "allowed",
            Disposition::Monitored => "monitored",
            Disposition::Denied => "denied",
            Disposition::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl EncodeLabelValue for Disposition {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

/// A finished request, as the metrics count it.
#[derive(Clone, Copy, Debug)]
pub struct Finished<'a> {
    /// The request method, as the client sent it.
    pub method: &'a str,
    /// The route template, `-` when refused before routing.
    pub route: &'a str,
    /// The status answered.
    pub status: u16,
    /// How it ended.
    pub verdict: Disposition,
    /// From its arrival until its response head was ready to send.
    pub elapsed: Duration,
    /// The exchange with the upstream, when it was forwarded.
    pub upstream: Option<UpstreamCall>,
}

/// One exchange with the upstream.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamCall {
    /// From sending the request until the response head arrived or the attempt failed.
    pub elapsed: Duration,
    /// Whether a response head arrived.
    pub answered: bool,
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

/// Upper bounds of the request and upstream duration histograms' buckets, in seconds: from a
/// denial answered in well under a millisecond to an upstream at its timeout.
const REQUEST_SECONDS_BUCKETS: [f64; 15] = [
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Values of the upstream histogram's `result` label, by [`UpstreamCall::answered`].
const UPSTREAM_RESULTS: [&str; 2] = ["failed", "answered"];

/// Results of a guard call, in the order of [`GuardTally::results`].
const GUARD_RESULTS: [&str; 8] = [
    "allow",
    "deny",
    "would_deny",
    "deadline",
    "limit",
    "trap",
    "instantiate",
    "state_unavailable",
];

fn result_index(result: &GuardResult, would_deny: bool) -> usize {
    let name = match result {
        GuardResult::Allowed => "allow",
        GuardResult::Denied(_) if would_deny => "would_deny",
        GuardResult::Denied(_) => "deny",
        GuardResult::Faulted(fault) => fault.kind.as_str(),
    };
    GUARD_RESULTS
        .iter()
        .position(|known| *known == name)
        .unwrap_or(GUARD_RESULTS.len() - 1)
}

/// A histogram's counts per bucket (the last above every bound: `B` is one more than the
/// bounds) and the sum of what it recorded.
#[derive(Clone, Copy, Debug)]
struct Timings<const B: usize> {
    counts: [u64; B],
    seconds: f64,
}

type GuardTimings = Timings<{ GUARD_SECONDS_BUCKETS.len() + 1 }>;
type RequestTimings = Timings<{ REQUEST_SECONDS_BUCKETS.len() + 1 }>;

impl<const B: usize> Default for Timings<B> {
    fn default() -> Self {
        Timings {
            counts: [0; B],
            seconds: 0.0,
        }
    }
}

impl<const B: usize> Timings<B> {
    fn record(&mut self, bounds: &[f64], elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = bounds
            .iter()
            .position(|upper| seconds <= *upper)
            .unwrap_or(bounds.len());
        self.counts[bucket] += 1;
        self.seconds += seconds;
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.seconds += other.seconds;
    }

    fn encode(&self, bounds: &[f64], mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.seconds, self.count(), &buckets, None)
    }
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
    time: GuardTimings,
    results: [u64; GUARD_RESULTS.len()],
}

impl GuardTally {
    fn add(&mut self, other: &GuardTally) {
        self.time.add(&other.time);
        for (mine, theirs) in self.results.iter_mut().zip(other.results) {
            *mine += theirs;
        }
    }
}

/// The whole-request and upstream histograms of one thread, or of all summed.
#[derive(Clone, Debug, Default)]
struct Latencies {
    /// By [`Disposition::index`].
    requests: [RequestTimings; DISPOSITIONS.len()],
    /// By [`UPSTREAM_RESULTS`].
    upstream: [RequestTimings; UPSTREAM_RESULTS.len()],
}

impl Latencies {
    fn add(&mut self, other: &Latencies) {
        for (mine, theirs) in self.requests.iter_mut().zip(&other.requests) {
            mine.add(theirs);
        }
        for (mine, theirs) in self.upstream.iter_mut().zip(&other.upstream) {
            mine.add(theirs);
        }
    }
}

/// One thread's tallies.
#[derive(Debug, Default)]
struct Shard {
    /// By route, then by the other labels: a lookup by the request's route borrows it.
    requests: HashMap<Box<str>, Vec<(RequestKind, u64)>, RandomState>,
    latencies: Latencies,
    guards: HashMap<Arc<str>, GuardTally, RandomState>,
}

impl Shard {
    fn guard(&mut self, guard: &Arc<str>, elapsed: Duration, result: usize) {
        let tally = match self.guards.get_mut(&**guard) {
            Some(tally) => tally,
            None => self.guards.entry(guard.clone()).or_default(),
        };
        tally.time.record(&GUARD_SECONDS_BUCKETS, elapsed);
        tally.results[result] += 1;
    }
}

/// The per-request series, one shard per core.
#[derive(Debug, Default)]
pub struct Tallies {
    shards: Sharded<Shard>,
    /// The guards loaded when last scraped: each gets its series, zeros until it is called,
    /// so that a rate over them is defined from the start.
    loaded: Mutex<Vec<Arc<str>>>,
}

impl Tallies {
    /// Counts a finished request and its time.
    pub fn request(&self, finished: &Finished) {
        let kind = RequestKind {
            method: method_label(finished.method),
            status: finished.status,
            verdict: finished.verdict,
        };
        let mut shard = self.shards.local();
        let shard = &mut *shard;
        shard.latencies.requests[finished.verdict.index()]
            .record(&REQUEST_SECONDS_BUCKETS, finished.elapsed);
        if let Some(call) = finished.upstream {
            shard.latencies.upstream[usize::from(call.answered)]
                .record(&REQUEST_SECONDS_BUCKETS, call.elapsed);
        }
        let kinds = match shard.requests.get_mut(finished.route) {
            Some(kinds) => kinds,
            None => shard.requests.entry(finished.route.into()).or_default(),
        };
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }

    /// Records each guard's time and result in one decision.
    pub fn decision(&self, decision: &Decision) {
        if decision.outcomes.is_empty() {
            return;
        }
        let mut shard = self.shards.local();
        for outcome in &decision.outcomes {
            let result = result_index(&outcome.result, outcome.would_deny());
            shard.guard(&outcome.guard, outcome.elapsed, result);
        }
    }

    /// Names the guards loaded now, whose series are shown before their first call.
    pub fn set_loaded(&self, guards: Vec<Arc<str>>) {
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = guards;
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

    fn latencies(&self) -> Latencies {
        let mut sums = Latencies::default();
        for shard in self.shards.all() {
            sums.add(&shard.latencies);
        }
        sums
    }

    /// Each guard's tallies over every shard, the loaded guards included, by name.
    fn guards(&self) -> BTreeMap<Arc<str>, GuardTally> {
        let mut sums = BTreeMap::<Arc<str>, GuardTally>::new();
        for guard in self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            sums.entry(guard.clone()).or_default();
        }
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
            "Requests by method, route, status and verdict (allowed, monitored, denied, error).",
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
        let latencies = self.latencies();
        let mut durations = encoder.encode_descriptor(
            "request_duration_seconds",
            "Time from a request's arrival until its response head was ready, by verdict.",
            None,
            MetricType::Histogram,
        )?;
        for (verdict, timings) in DISPOSITIONS.iter().zip(&latencies.requests) {
            let labels = [("verdict", verdict.as_str())];
            timings.encode(&REQUEST_SECONDS_BUCKETS, durations.encode_family(&labels)?)?;
        }
        let mut upstream = encoder.encode_descriptor(
            "upstream_duration_seconds",
            "Time from sending a request upstream until its response head arrived (answered) or the attempt failed (failed).",
            None,
            MetricType::Histogram,
        )?;
        for (result, timings) in UPSTREAM_RESULTS.iter().zip(&latencies.upstream) {
            let labels = [("result", *result)];
            timings.encode(&REQUEST_SECONDS_BUCKETS, upstream.encode_family(&labels)?)?;
        }
        let guards = self.guards();
        let mut seconds = encoder.encode_descriptor(
            "guard_duration_seconds",
            "Time spent in each guard's on-request, instance acquisition included.",
            None,
            MetricType::Histogram,
        )?;
        for (guard, tally) in &guards {
            let labels = [("guard", &**guard)];
            tally
                .time
                .encode(&GUARD_SECONDS_BUCKETS, seconds.encode_family(&labels)?)?;
        }
        let mut results = encoder.encode_descriptor(
            "guard_results",
            "Guard results: allow, deny, would_deny (a monitor-mode guard's denial, not applied), and faults by kind (deadline, limit, trap, instantiate, state_unavailable).",
            None,
            MetricType::Counter,
        )?;
        for (guard, tally) in &guards {
            for (result, n) in GUARD_RESULTS.iter().zip(tally.results) {
                let labels = [("guard", &**guard), ("result", *result)];
                ConstCounter::new(n).encode(results.encode_family(&labels)?)?;
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

    fn finished<'a>(
        method: &'a str,
        route: &'a str,
        status: u16,
        verdict: Disposition,
    ) -> Finished<'a> {
        Finished {
            method,
            route,
            status,
            verdict,
            elapsed: Duration::from_micros(300),
            upstream: None,
        }
    }

    /// One guard call, as [`Tallies::decision`] records it.
    fn guard(
        tallies: &Tallies,
        guard: &Arc<str>,
        elapsed: Duration,
        result: &GuardResult,
        monitor: bool,
    ) {
        let would_deny = monitor && matches!(result, GuardResult::Denied(_));
        tallies
            .shards
            .local()
            .guard(guard, elapsed, result_index(result, would_deny));
    }

    #[test]
    fn requests_from_every_worker_are_summed_into_one_series() {
        let tallies = Arc::new(Tallies::default());
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        tallies.request(&finished("GET", "/users/{id}", 200, Disposition::Allowed));
                    }
                    tallies.request(&finished("GET", "/users/{id}", 429, Disposition::Denied));
                });
            }
        });
        let text = render(&tallies);
        let series = r#"vigil_requests_total{method="GET",route="/users/{id}",status="200",verdict="allowed"}"#;
        assert_eq!(line(&text, series), Some("300"), "{text}");
        let denied = r#"vigil_requests_total{method="GET",route="/users/{id}",status="429",verdict="denied"}"#;
        assert_eq!(line(&text, denied), Some("3"), "{text}");
        let count = r#"vigil_request_duration_seconds_count{verdict="allowed"}"#;
        assert_eq!(line(&text, count), Some("300"), "{text}");
    }

    #[test]
    fn invented_methods_share_one_series() {
        let tallies = Arc::new(Tallies::default());
        for i in 0..1000 {
            tallies.request(&finished(&format!("X{i}"), "/", 405, Disposition::Error));
        }
        tallies.request(&finished("get", "/", 405, Disposition::Error));
        let text = render(&tallies);
        let other =
            r#"vigil_requests_total{method="OTHER",route="/",status="405",verdict="error"}"#;
        assert_eq!(line(&text, other), Some("1001"), "{text}");
        assert_eq!(text.matches("vigil_requests_total{").count(), 1, "{text}");
    }

    #[test]
    fn request_and_upstream_time_have_a_series_per_verdict_and_result_from_the_start() {
        let tallies = Arc::new(Tallies::default());
        let text = render(&tallies);
        for verdict in ["allowed", "monitored", "denied", "error"] {
            let count = format!(r#"vigil_request_duration_seconds_count{{verdict="{verdict}"}}"#);
            assert_eq!(line(&text, &count), Some("0"), "{text}");
        }
        for result in ["answered", "failed"] {
            let count = format!(r#"vigil_upstream_duration_seconds_count{{result="{result}"}}"#);
            assert_eq!(line(&text, &count), Some("0"), "{text}");
        }

        let forwarded = Finished {
            elapsed: Duration::from_millis(30),
            upstream: Some(UpstreamCall {
                elapsed: Duration::from_millis(20),
                answered: true,
            }),
            ..finished("GET", "/", 200, Disposition::Monitored)
        };
        tallies.request(&forwarded);
        let failed = Finished {
            elapsed: Duration::from_secs(11),
            upstream: Some(UpstreamCall {
                elapsed: Duration::from_secs(11),
                answered: false,
            }),
            ..finished("GET", "/", 504, Disposition::Error)
        };
        tallies.request(&failed);
        let text = render(&tallies);
        let bucket = |family: &str, labels: &str, le: &str| {
            let series = format!(r#"{family}_bucket{{le="{le}",{labels}}}"#);
            line(&text, &series).map(str::to_string)
        };
        let request = "vigil_request_duration_seconds";
        assert_eq!(
            bucket(request, r#"verdict="monitored""#, "0.025").as_deref(),
            Some("0"),
            "{text}"
        );
        assert_eq!(
            bucket(request, r#"verdict="monitored""#, "0.05").as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            bucket(request, r#"verdict="error""#, "10.0").as_deref(),
            Some("0"),
            "{text}"
        );
        assert_eq!(
            bucket(request, r#"verdict="error""#, "+Inf").as_deref(),
            Some("1"),
            "{text}"
        );
        let upstream = "vigil_upstream_duration_seconds";
        assert_eq!(
            bucket(upstream, r#"result="answered""#, "0.025").as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            bucket(upstream, r#"result="answered""#, "0.01").as_deref(),
            Some("0"),
            "{text}"
        );
        assert_eq!(
            bucket(upstream, r#"result="failed""#, "+Inf").as_deref(),
            Some("1"),
            "{text}"
        );
        let sum = line(
            &text,
            r#"vigil_upstream_duration_seconds_sum{result="answered"}"#,
        )
        .and_then(|v| v.parse::<f64>().ok())
        .expect("a sum");
        assert!((sum - 0.02).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn guard_time_is_a_cumulative_histogram_and_results_are_counted_by_kind() {
        let tallies = Arc::new(Tallies::default());
        let rate: Arc<str> = "rate-limit".into();
        guard(
            &tallies,
            &rate,
            Duration::from_micros(3),
            &GuardResult::Allowed,
            false,
        );
        guard(
            &tallies,
            &rate,
            Duration::from_micros(3),
            &GuardResult::Allowed,
            false,
        );
        let deny = Deny {
            status: 429,
            reason: "slow down".into(),
            retry_after_secs: None,
        };
        guard(
            &tallies,
            &rate,
            Duration::from_millis(2),
            &GuardResult::Denied(deny.clone()),
            false,
        );
        let fault = Fault {
            kind: FaultKind::Deadline,
            detail: "late".into(),
        };
        guard(
            &tallies,
            &rate,
            Duration::from_secs(1),
            &GuardResult::Faulted(fault),
            false,
        );
        let watch: Arc<str> = "watch".into();
        guard(
            &tallies,
            &watch,
            Duration::from_micros(3),
            &GuardResult::Denied(deny),
            true,
        );
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
        let results = |guard: &str| -> Vec<(String, String)> {
            GUARD_RESULTS
                .iter()
                .map(|result| {
                    let series = format!(
                        r#"vigil_guard_results_total{{guard="{guard}",result="{result}"}}"#
                    );
                    let n = line(&text, &series).unwrap_or_else(|| panic!("{series}: {text}"));
                    (result.to_string(), n.to_string())
                })
                .filter(|(_, n)| n != "0")
                .collect()
        };
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            results("rate-limit"),
            pairs(&[("allow", "2"), ("deny", "1"), ("deadline", "1")])
        );
        assert_eq!(results("watch"), pairs(&[("would_deny", "1")]));
    }

    #[test]
    fn loaded_guards_have_zero_series_before_their_first_call() {
        let tallies = Arc::new(Tallies::default());
        tallies.set_loaded(vec!["idle".into()]);
        let text = render(&tallies);
        let count = r#"vigil_guard_duration_seconds_count{guard="idle"}"#;
        assert_eq!(line(&text, count), Some("0"), "{text}");
        for result in GUARD_RESULTS {
            let series = format!(r#"vigil_guard_results_total{{guard="idle",result="{result}"}}"#);
            assert_eq!(line(&text, &series), Some("0"), "{text}");
        }
    }
}
