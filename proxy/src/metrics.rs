//! Prometheus metrics of the sidecar, exposed on the admin listener's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use vigil_host::state::TableSizes;
use vigil_host::{Decision, GuardResult};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardLabels {
    guard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardVerdictLabels {
    guard: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    guard_seconds: Family<GuardLabels, Histogram>,
    guard_results: Family<GuardVerdictLabels, Counter>,
    upstream_errors: Family<KindLabels, Counter>,
    reloads: Family<KindLabels, Counter>,
    state_entries: Family<TableLabels, Gauge>,
}

/// How a request ended, for the `verdict` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded to the upstream.
    Allowed,
    /// Refused by a guard.
    Denied,
    /// Refused by the proxy itself (bad request, too large, upstream error).
    Error,
}

impl Metrics {
    /// Registers all metrics.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vigil");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by method, route, status and verdict",
            requests.clone(),
        );
        let guard_seconds = Family::<GuardLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2, 1e-1,
            ])
        });
        registry.register(
            "guard_duration_seconds",
            "Time spent in a guard's on-request",
            guard_seconds.clone(),
        );
        let guard_results = Family::<GuardVerdictLabels, Counter>::default();
        registry.register(
            "guard_results",
            "Guard results: allow, deny, and faults by kind (deadline, limit, trap, instantiate)",
            guard_results.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by kind (connect, timeout, other)",
            upstream_errors.clone(),
        );
        let reloads = Family::<KindLabels, Counter>::default();
        registry.register(
            "guard_reloads",
            "Guard chain reloads by result (ok, failed)",
            reloads.clone(),
        );
        let state_entries = Family::<TableLabels, Gauge>::default();
        registry.register(
            "state_entries",
            "Entries in each host state table",
            state_entries.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            guard_seconds,
            guard_results,
            upstream_errors,
            reloads,
            state_entries,
        }
    }

    /// Counts a finished request.
    pub fn request(&self, method: &str, route: &str, status: u16, verdict: Verdict) {
        let verdict = match verdict {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::Error => "error",
        };
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
                verdict,
            })
            .inc();
    }

    /// Records each guard's time and result for one decision.
    pub fn decision(&self, decision: &Decision) {
        for outcome in &decision.outcomes {
            let guard = outcome.guard.to_string();
            self.guard_seconds
                .get_or_create(&GuardLabels {
                    guard: guard.clone(),
                })
                .observe(outcome.elapsed.as_secs_f64());
            let result = match &outcome.result {
                GuardResult::Allowed => "allow",
                GuardResult::Denied(_) => "deny",
                GuardResult::Faulted(fault) => fault.kind.as_str(),
            };
            self.guard_results
                .get_or_create(&GuardVerdictLabels { guard, result })
                .inc();
        }
    }

    /// Counts an upstream failure of `kind`.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts a reload attempt.
    pub fn reload(&self, ok: bool) {
        let kind = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&KindLabels { kind }).inc();
    }

    /// Renders the Prometheus text format, with the state table sizes as of now.
    pub fn render(&self, sizes: TableSizes) -> String {
        for (table, n) in [
            ("clients", sizes.clients),
            ("rate_keys", sizes.rate_keys),
            ("counters", sizes.counters),
            ("distinct_sets", sizes.distinct_sets),
            ("kv_entries", sizes.kv_entries),
        ] {
            self.state_entries
                .get_or_create(&TableLabels { table })
                .set(n as i64);
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.push_str("# encoding failed\n");
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
