//! Prometheus metrics of the collector, served at `/metrics` on the API listener. Every family
//! and label value is registered at start, so a scrape shows zeros rather than nothing before
//! the first report.

use super::ingest::Refusal;
use super::store::{Applied, Pruned, Totals};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::hash::Hash;
use std::time::Duration;

/// The store operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Storing a report.
    Apply,
    /// A query of the API, the dashboard or `/metrics`.
    Read,
    /// Applying the retention policy.
    Prune,
}

impl Operation {
    const ALL: [Operation; 3] = [Operation::Apply, Operation::Read, Operation::Prune];

    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "apply",
            Operation::Read => "read",
            Operation::Prune => "prune",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeletedLabels {
    data: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric of the collector, registered once.
pub struct Metrics {
    registry: Registry,
    reports: Family<ResultLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    ingest_seconds: Histogram,
    store_errors: Family<OperationLabels, Counter>,
    services: Gauge,
    endpoints: Gauge,
    retention_runs: Family<ResultLabels, Counter>,
    retention_last_run: Gauge,
    retention_last_ok: Gauge,
    retention_deleted: Family<DeletedLabels, Counter>,
    webhooks: Family<ResultLabels, Counter>,
}

/// Outcomes of webhook notifications, counted by the delivery tasks.
#[derive(Clone)]
pub struct WebhookCounts(Family<ResultLabels, Counter>);

impl WebhookCounts {
    /// One notification posted and answered 2xx.
    pub fn delivered(&self) {
        self.count("delivered");
    }

    /// One notification given up after its attempts, or refused by the receiver.
    pub fn failed(&self) {
        self.count("failed");
    }

    /// One notification not queued: the webhook's queue was full.
    pub fn dropped(&self) {
        self.count("dropped");
    }

    fn count(&self, result: &'static str) {
        self.0.get_or_create(&ResultLabels { result }).inc();
    }
}

impl Metrics {
    /// Registers every metric, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vigil_collector");
        registry.register(
            "build",
            "The collector's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let reports =
            at_zero(["stored", "duplicate", "refused"].map(|result| ResultLabels { result }));
        registry.register(
            "reports",
            "Reports received, by result (stored, duplicate, refused)",
            reports.clone(),
        );
        let refused = at_zero(Refusal::REASONS.map(|reason| ReasonLabels { reason }));
        registry.register(
            "reports_refused",
            "Reports refused, by reason (unauthorized, forbidden, too_large, unsupported, malformed, invalid, conflict, unavailable)",
            refused.clone(),
        );
        // From a millisecond (a refusal at the token) to 8 s (a large report behind a busy
        // writer); the store waits up to 5 s for its lock.
        let ingest_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "ingest_seconds",
            "Time from a report's request head to its answer, whatever the result",
            ingest_seconds.clone(),
        );
        let store_errors = at_zero(Operation::ALL.map(|operation| OperationLabels {
            operation: operation.as_str(),
        }));
        registry.register(
            "store_errors",
            "Storage failures, by operation (apply: storing a report, read: a query, prune: retention)",
            store_errors.clone(),
        );
        let services = Gauge::default();
        registry.register(
            "services",
            "Services that have reported, as of the scrape",
            services.clone(),
        );
        let endpoints = Gauge::default();
        registry.register(
            "endpoints",
            "Endpoints known across services (reached, or documented and never reached), as of the scrape",
            endpoints.clone(),
        );
        let retention_runs = at_zero(["ok", "failed"].map(|result| ResultLabels { result }));
        registry.register(
            "retention_runs",
            "Retention passes, by result (ok, failed)",
            retention_runs.clone(),
        );
        let retention_last_run = Gauge::default();
        registry.register(
            "retention_last_run_timestamp_seconds",
            "When the last retention pass ran, seconds since the Unix epoch; 0 before the first",
            retention_last_run.clone(),
        );
        let retention_last_ok = Gauge::default();
        registry.register(
            "retention_last_run_ok",
            "1 when the last retention pass succeeded, 0 when it failed or none has run",
            retention_last_ok.clone(),
        );
        let retention_deleted = at_zero(
            ["findings", "instances", "endpoints", "keys"].map(|data| DeletedLabels { data }),
        );
        registry.register(
            "retention_deleted",
            "Records retention deleted, by kind (findings, instances, endpoints, idempotency keys)",
            retention_deleted.clone(),
        );
        let webhooks =
            at_zero(["delivered", "failed", "dropped"].map(|result| ResultLabels { result }));
        registry.register(
            "webhook_notifications",
            "Webhook notifications, by result (delivered; failed: refused, or given up after retries; dropped: the queue was full)",
            webhooks.clone(),
        );
        Metrics {
            webhooks,
            registry,
            reports,
            refused,
            ingest_seconds,
            store_errors,
            services,
            endpoints,
            retention_runs,
            retention_last_run,
            retention_last_ok,
            retention_deleted,
        }
    }

    /// Counts a report answered after `elapsed`: stored, duplicate or refused.
    pub fn report(&self, result: Result<Applied, &Refusal>, elapsed: Duration) {
        let result = match result {
            Ok(Applied::New) => "stored",
            Ok(Applied::Duplicate) => "duplicate",
            Err(refusal) => {
                self.refused
                    .get_or_create(&ReasonLabels {
                        reason: refusal.reason(),
                    })
                    .inc();
                "refused"
            }
        };
        self.reports.get_or_create(&ResultLabels { result }).inc();
        self.ingest_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts a storage failure.
    pub fn store_error(&self, operation: Operation) {
        self.store_errors
            .get_or_create(&OperationLabels {
                operation: operation.as_str(),
            })
            .inc();
    }

    /// Records a retention pass that ran at `at_ms` and deleted `pruned`, or failed.
    pub fn retention(&self, at_ms: u64, pruned: Option<Pruned>) {
        self.retention_last_run.set(gauge(at_ms / 1_000));
        self.retention_last_ok.set(i64::from(pruned.is_some()));
        let result = if pruned.is_some() { "ok" } else { "failed" };
        self.retention_runs
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(pruned) = pruned {
            for (data, n) in [
                ("findings", pruned.findings),
                ("instances", pruned.instances),
                ("endpoints", pruned.endpoints),
                ("keys", pruned.keys),
            ] {
                self.retention_deleted
                    .get_or_create(&DeletedLabels { data })
                    .inc_by(n);
            }
        }
    }

    /// The webhook counters, for the delivery tasks.
    pub fn webhooks(&self) -> WebhookCounts {
        WebhookCounts(self.webhooks.clone())
    }

    /// Sets what the store knows, as of a scrape.
    pub fn known(&self, totals: Totals) {
        self.services.set(gauge(totals.services));
        self.endpoints.set(gauge(totals.endpoints));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
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

/// A counter family with a series at zero for each of `labels`, so they show before they count.
fn at_zero<L: Clone + Hash + Eq>(labels: impl IntoIterator<Item = L>) -> Family<L, Counter> {
    let family = Family::default();
    for label in labels {
        drop(family.get_or_create(&label));
    }
    family
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The value of the sample `name` (with its labels, as rendered) in `text`.
#[cfg(test)]
pub(crate) fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_there_at_zero_from_the_start() {
        let text = Metrics::new().render();
        for name in [
            "vigil_collector_reports_total{result=\"stored\"}",
            "vigil_collector_reports_total{result=\"duplicate\"}",
            "vigil_collector_reports_total{result=\"refused\"}",
            "vigil_collector_reports_refused_total{reason=\"unauthorized\"}",
            "vigil_collector_reports_refused_total{reason=\"unavailable\"}",
            "vigil_collector_ingest_seconds_count",
            "vigil_collector_store_errors_total{operation=\"apply\"}",
            "vigil_collector_store_errors_total{operation=\"read\"}",
            "vigil_collector_store_errors_total{operation=\"prune\"}",
            "vigil_collector_services",
            "vigil_collector_endpoints",
            "vigil_collector_retention_runs_total{result=\"ok\"}",
            "vigil_collector_retention_runs_total{result=\"failed\"}",
            "vigil_collector_retention_last_run_timestamp_seconds",
            "vigil_collector_retention_last_run_ok",
            "vigil_collector_retention_deleted_total{data=\"keys\"}",
            "vigil_collector_webhook_notifications_total{result=\"delivered\"}",
            "vigil_collector_webhook_notifications_total{result=\"failed\"}",
            "vigil_collector_webhook_notifications_total{result=\"dropped\"}",
        ] {
            assert_eq!(sample(&text, name), Some(0.0), "{name} in\n{text}");
        }
        let build = format!(
            "vigil_collector_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&text, &build), Some(1.0), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn reports_and_retention_are_counted() {
        let metrics = Metrics::new();
        let refusal = Refusal::TooLarge("too large".into());
        metrics.report(Ok(Applied::New), Duration::from_millis(3));
        metrics.report(Ok(Applied::Duplicate), Duration::from_millis(2));
        metrics.report(Err(&refusal), Duration::from_micros(200));
        metrics.store_error(Operation::Prune);
        metrics.retention(1_700_000_000_500, None);
        metrics.retention(
            1_700_000_060_000,
            Some(Pruned {
                findings: 4,
                ..Pruned::default()
            }),
        );
        metrics.known(Totals {
            services: 2,
            endpoints: 7,
        });
        let text = metrics.render();
        for (name, value) in [
            ("vigil_collector_reports_total{result=\"stored\"}", 1.0),
            ("vigil_collector_reports_total{result=\"duplicate\"}", 1.0),
            ("vigil_collector_reports_total{result=\"refused\"}", 1.0),
            (
                "vigil_collector_reports_refused_total{reason=\"too_large\"}",
                1.0,
            ),
            (
                "vigil_collector_reports_refused_total{reason=\"invalid\"}",
                0.0,
            ),
            ("vigil_collector_ingest_seconds_count", 3.0),
            ("vigil_collector_ingest_seconds_bucket{le=\"0.001\"}", 1.0),
            ("vigil_collector_ingest_seconds_bucket{le=\"0.004\"}", 3.0),
            (
                "vigil_collector_store_errors_total{operation=\"prune\"}",
                1.0,
            ),
            ("vigil_collector_retention_runs_total{result=\"ok\"}", 1.0),
            (
                "vigil_collector_retention_runs_total{result=\"failed\"}",
                1.0,
            ),
            (
                "vigil_collector_retention_last_run_timestamp_seconds",
                1_700_000_060.0,
            ),
            ("vigil_collector_retention_last_run_ok", 1.0),
            (
                "vigil_collector_retention_deleted_total{data=\"findings\"}",
                4.0,
            ),
            ("vigil_collector_services", 2.0),
            ("vigil_collector_endpoints", 7.0),
        ] {
            assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
        }
    }
}
