//! Prometheus metrics of the sidecar, exposed on the admin listener's `/metrics`.

mod tallies;

pub use tallies::Disposition;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use tallies::Tallies;
use vigil_host::state::TableSizes;
use vigil_host::Decision;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: usize,
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Mutex<Registry>,
    tallies: Arc<Tallies>,
    upstream_errors: Family<KindLabels, Counter>,
    reloads: Family<KindLabels, Counter>,
    state_entries: Family<TableLabels, Gauge>,
    decisions_active: Gauge,
    worker_connections: Family<WorkerLabels, Gauge>,
}

impl Metrics {
    /// Registers all metrics.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vigil");
        let tallies = Arc::new(Tallies::default());
        registry.register_collector(Box::new(tallies.clone()));
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by kind (connect, timeout, exhausted, invalid_response, client_body, body_too_large, other)",
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
        let decisions_active = Gauge::default();
        registry.register(
            "decisions_active",
            "Clients banned now (by a guard's `ban` or through the admin API)",
            decisions_active.clone(),
        );
        let worker_connections = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "worker_connections",
            "Client connections each worker serves now",
            worker_connections.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            tallies,
            upstream_errors,
            reloads,
            state_entries,
            decisions_active,
            worker_connections,
        }
    }

    /// Counts a finished request.
    pub fn request(&self, method: &str, route: &str, status: u16, verdict: Disposition) {
        self.tallies.request(method, route, status, verdict);
    }

    /// Records each guard's time and result for one decision.
    pub fn decision(&self, decision: &Decision) {
        for outcome in &decision.outcomes {
            self.tallies
                .guard(&outcome.guard, outcome.elapsed, &outcome.result);
        }
    }

    /// Counts an upstream failure of `kind`.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// The count of client connections `worker` serves, shared with the worker that keeps it.
    pub fn worker_connections(&self, worker: usize) -> Gauge {
        self.worker_connections
            .get_or_create(&WorkerLabels { worker })
            .clone()
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
            ("bans", sizes.bans),
        ] {
            self.state_entries
                .get_or_create(&TableLabels { table })
                .set(n as i64);
        }
        self.decisions_active.set(sizes.bans as i64);
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
