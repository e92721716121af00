//! Prometheus metrics of the sidecar, exposed on the admin listener's `/metrics` in the
//! Prometheus text format or OpenMetrics, as the scraper asks. Every family is listed in
//! `docs/metrics.md`.

mod exposition;
#[cfg(target_os = "linux")]
mod process;
mod tallies;

pub use exposition::Format;
pub use tallies::{Disposition, Finished, UpstreamCall};

use crate::access_log::LineCounts;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tallies::Tallies;
use vigil_host::state::{SharedStatus, TableSizes};
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Kinds of upstream failure, as `UpstreamError::kind` names them.
const UPSTREAM_ERROR_KINDS: [&str; 7] = [
    "connect",
    "timeout",
    "exhausted",
    "invalid_response",
    "client_body",
    "body_too_large",
    "other",
];

/// The state tables, as [`TableSizes`] holds them.
const TABLES: [&str; 6] = [
    "clients",
    "rate_keys",
    "counters",
    "distinct_sets",
    "kv_entries",
    "bans",
];

/// Why reports were not delivered, for the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// The collector could not be reached, or answered that it did not take the report
    /// (auth, rate limit, unavailable): retried.
    Unreachable,
    /// The request went out but no usable answer came back: retried.
    Unanswered,
    /// The collector refused the report for good: set aside, not retried.
    Refused,
    /// The spool could not be written or read: a write failure loses the period's counts.
    Spool,
}

impl DeliveryFailure {
    const ALL: [DeliveryFailure; 4] = [
        DeliveryFailure::Unreachable,
        DeliveryFailure::Unanswered,
        DeliveryFailure::Refused,
        DeliveryFailure::Spool,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DeliveryFailure::Unreachable => "unreachable",
            DeliveryFailure::Unanswered => "unanswered",
            DeliveryFailure::Refused => "refused",
            DeliveryFailure::Spool => "spool",
        }
    }
}

/// The reporter's side of the metrics; clones share the series.
#[derive(Clone, Debug, Default)]
pub struct ReportMetrics {
    delivered: Counter,
    failures: Family<ReasonLabels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    spooled_reports: Gauge,
    spooled_bytes: Gauge,
}

impl ReportMetrics {
    /// Counts a report the collector accepted, at `now_ms` since the Unix epoch.
    pub fn delivered(&self, now_ms: u64) {
        self.delivered.inc();
        self.last_success.set(now_ms as f64 / 1000.0);
    }

    /// Counts a failed delivery or spool operation.
    pub fn failed(&self, why: DeliveryFailure) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Shows what waits in the spool now.
    pub fn spooled(&self, reports: usize, bytes: u64) {
        self.spooled_reports.set(reports as i64);
        self.spooled_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn register(&self, registry: &mut Registry) {
        for why in DeliveryFailure::ALL {
            // Created now so the series reads 0 until the first failure.
            let _ = self.failures.get_or_create(&ReasonLabels {
                reason: why.as_str(),
            });
        }
        registry.register(
            "report_delivered",
            "Reports the collector accepted",
            self.delivered.clone(),
        );
        registry.register(
            "report_delivery_failures",
            "Failed report deliveries and spool operations by reason (unreachable, unanswered, refused, spool)",
            self.failures.clone(),
        );
        registry.register(
            "report_last_success_timestamp_seconds",
            "When the collector last accepted a report, in seconds since the Unix epoch (0: never since start)",
            self.last_success.clone(),
        );
        registry.register(
            "report_spool_reports",
            "Reports waiting in the spool for delivery",
            self.spooled_reports.clone(),
        );
        registry.register(
            "report_spool_bytes",
            "Bytes of the reports waiting in the spool",
            self.spooled_bytes.clone(),
        );
    }
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Mutex<Registry>,
    tallies: Arc<Tallies>,
    upstream_errors: Family<KindLabels, Counter>,
    reloads: Family<KindLabels, Counter>,
    tls_handshakes: Family<KindLabels, Counter>,
    state_entries: Family<TableLabels, Gauge>,
    decisions_active: Gauge,
    state_backend_up: Gauge,
    state_fallbacks: Counter,
    state_records_dropped: Counter,
    state_sync_views: Gauge,
    state_sync_rounds_failed: Counter,
    state_sync_rounds: Counter,
    state_sync_round_seconds: Counter<f64, AtomicU64>,
    worker_connections: Family<WorkerLabels, Gauge>,
    /// The reporter's delivery.
    pub report: ReportMetrics,
    /// The access log's lines, queued and dropped.
    pub access_log: LineCounts,
}

impl Metrics {
    /// Registers all metrics; those without labels or with a fixed set of them start at zero.
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        #[cfg(target_os = "linux")]
        root.register_collector(Box::new(process::Process));
        let registry = root.sub_registry_with_prefix("vigil");
        registry.register(
            "build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let tallies = Arc::new(Tallies::default());
        registry.register_collector(Box::new(tallies.clone()));
        let upstream_errors = Family::<KindLabels, Counter>::default();
        for kind in UPSTREAM_ERROR_KINDS {
            let _ = upstream_errors.get_or_create(&KindLabels { kind });
        }
        registry.register(
            "upstream_errors",
            "Upstream failures by kind (connect, timeout, exhausted, invalid_response, client_body, body_too_large, other)",
            upstream_errors.clone(),
        );
        let reloads = Family::<KindLabels, Counter>::default();
        for kind in ["ok", "failed"] {
            let _ = reloads.get_or_create(&KindLabels { kind });
        }
        registry.register(
            "guard_reloads",
            "Guard chain reloads by result (ok, failed)",
            reloads.clone(),
        );
        let tls_handshakes = Family::<KindLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the public listener by kind of result (ok, failed, timeout); none without [listen.tls]",
            tls_handshakes.clone(),
        );
        let state_entries = Family::<TableLabels, Gauge>::default();
        for table in TABLES {
            let _ = state_entries.get_or_create(&TableLabels { table });
        }
        registry.register(
            "state_entries",
            "Entries in each host state table",
            state_entries.clone(),
        );
        let decisions_active = Gauge::default();
        registry.register(
            "decisions_active",
            "Clients banned now (by a guard's `ban` or through the admin API); with [state] redis, across the fleet",
            decisions_active.clone(),
        );
        let state_backend_up = Gauge::default();
        state_backend_up.set(1);
        registry.register(
            "state_backend_up",
            "Whether the state store answers: always 1 with in-process state; with `[state] redis`, 0 while Redis is away and guards decide on this replica's tables (or, with state.fallback deny, requests that need state are refused)",
            state_backend_up.clone(),
        );
        let state_fallbacks = Counter::default();
        registry.register(
            "state_backend_fallbacks",
            "State calls Redis could not answer in time: answered from this replica's tables, or with state.fallback deny refused with their requests (503)",
            state_fallbacks.clone(),
        );
        let state_records_dropped = Counter::default();
        registry.register(
            "state_history_writes_dropped",
            "Request events not written to the shared history (Redis away, or the write queue full)",
            state_records_dropped.clone(),
        );
        let state_sync_views = Gauge::default();
        registry.register(
            "state_sync_views",
            "With state.redis_sync: rate limiters, counters and distinct sets decided on this replica's view of the fleet's now",
            state_sync_views.clone(),
        );
        let state_sync_rounds_failed = Counter::default();
        registry.register(
            "state_sync_rounds_failed",
            "With state.redis_sync: rounds that could not reconcile the views with Redis (what they carried goes with the next)",
            state_sync_rounds_failed.clone(),
        );
        let state_sync_rounds = Counter::default();
        registry.register(
            "state_sync_rounds",
            "With state.redis_sync: rounds run to reconcile the views with Redis while it was up",
            state_sync_rounds.clone(),
        );
        let state_sync_round_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "state_sync_round_seconds",
            "With state.redis_sync: time those rounds took; per round, near the interval means the views fall behind",
            state_sync_round_seconds.clone(),
        );
        let worker_connections = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "worker_connections",
            "Client connections each worker serves now",
            worker_connections.clone(),
        );
        let report = ReportMetrics::default();
        report.register(registry);
        let access_log = LineCounts::default();
        registry.register(
            "access_log_lines_queued",
            "Access log lines handed to the writer",
            access_log.queued.clone(),
        );
        registry.register(
            "access_log_lines_dropped",
            "Access log lines left out: the writer was behind or the destination failed",
            access_log.dropped.clone(),
        );
        Metrics {
            registry: Mutex::new(root),
            tallies,
            upstream_errors,
            reloads,
            tls_handshakes,
            state_entries,
            decisions_active,
            state_backend_up,
            state_fallbacks,
            state_records_dropped,
            state_sync_views,
            state_sync_rounds_failed,
            state_sync_rounds,
            state_sync_round_seconds,
            worker_connections,
            report,
            access_log,
        }
    }

    /// Takes the shared state store's status as of now (`None`: state is in-process).
    pub fn shared_state(&self, status: Option<SharedStatus>) {
        let Some(status) = status else { return };
        // Under the registry's lock, so that two renders do not both add the same increase.
        let _rendering = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        self.state_backend_up.set(status.up as i64);
        self.state_sync_views.set(status.views as i64);
        for (counter, total) in [
            (&self.state_fallbacks, status.fallbacks),
            (&self.state_records_dropped, status.records_dropped),
            (&self.state_sync_rounds_failed, status.sync_rounds_failed),
            (&self.state_sync_rounds, status.sync_rounds),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let seconds = status.sync_round_micros as f64 / 1e6;
        let counted = self.state_sync_round_seconds.get();
        if seconds > counted {
            self.state_sync_round_seconds.inc_by(seconds - counted);
        }
    }

    /// Counts a finished request and its time.
    pub fn request(&self, finished: &Finished) {
        self.tallies.request(finished);
    }

    /// Records each guard's time and result for one decision.
    pub fn decision(&self, decision: &Decision) {
        self.tallies.decision(decision);
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

    /// Counts a TLS handshake on the public listener by its result: `ok`, `failed`, `timeout`.
    pub fn tls_handshake(&self, result: &'static str) {
        self.tls_handshakes
            .get_or_create(&KindLabels { kind: result })
            .inc();
    }

    /// Counts a reload attempt.
    pub fn reload(&self, ok: bool) {
        let kind = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&KindLabels { kind }).inc();
    }

    /// Renders every family in `format`, with the state table sizes as of now and a series
    /// for each of the `guards` loaded now, called yet or not.
    pub fn render(&self, format: Format, sizes: TableSizes, guards: Vec<Arc<str>>) -> String {
        for (table, n) in TABLES.into_iter().zip([
            sizes.clients,
            sizes.rate_keys,
            sizes.counters,
            sizes.distinct_sets,
            sizes.kv_entries,
            sizes.bans,
        ]) {
            self.state_entries
                .get_or_create(&TableLabels { table })
                .set(n as i64);
        }
        self.decisions_active.set(sizes.bans as i64);
        self.tallies.set_loaded(guards);
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.push_str("# encoding failed\n");
        }
        drop(registry);
        match format {
            Format::OpenMetrics => text,
            Format::Prometheus => exposition::to_prometheus(&text),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(metrics: &Metrics, format: Format) -> String {
        metrics.render(format, TableSizes::default(), vec!["g".into()])
    }

    #[test]
    fn every_family_is_there_from_the_start() {
        let metrics = Metrics::new();
        // As each worker does when it starts.
        let _connections = metrics.worker_connections(0);
        let text = render(&metrics, Format::Prometheus);
        for series in [
            format!(
                "vigil_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "vigil_upstream_errors_total{kind=\"timeout\"} 0".into(),
            "vigil_guard_reloads_total{kind=\"failed\"} 0".into(),
            "vigil_state_entries{table=\"kv_entries\"} 0".into(),
            "vigil_report_delivered_total 0".into(),
            "vigil_report_delivery_failures_total{reason=\"unreachable\"} 0".into(),
            "vigil_report_last_success_timestamp_seconds 0.0".into(),
            "vigil_report_spool_reports 0".into(),
            "vigil_report_spool_bytes 0".into(),
            "vigil_request_duration_seconds_count{verdict=\"monitored\"} 0".into(),
            "vigil_upstream_duration_seconds_count{result=\"answered\"} 0".into(),
            "vigil_guard_results_total{guard=\"g\",result=\"would_deny\"} 0".into(),
        ] {
            assert!(text.lines().any(|l| l == series), "{series}:\n{text}");
        }
        for family in ["vigil_requests_total", "vigil_worker_connections"] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family}:\n{text}"
            );
        }
        #[cfg(target_os = "linux")]
        for family in [
            "process_cpu_seconds_total counter",
            "process_resident_memory_bytes gauge",
            "process_open_fds gauge",
            "process_start_time_seconds gauge",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "{family}:\n{text}"
            );
        }
    }

    #[test]
    fn help_texts_read_the_same_in_both_formats() {
        let text = render(&Metrics::new(), Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        for help in text.lines().filter(|l| l.starts_with("# HELP ")) {
            assert!(!help.contains(['\\', '"']), "{help}");
        }
    }

    #[test]
    fn reports_show_their_delivery_and_spool() {
        let metrics = Metrics::new();
        metrics.report.spooled(3, 4096);
        metrics.report.failed(DeliveryFailure::Refused);
        metrics.report.delivered(1_700_000_000_500);
        let text = render(&metrics, Format::Prometheus);
        for series in [
            "vigil_report_delivered_total 1",
            "vigil_report_delivery_failures_total{reason=\"refused\"} 1",
            "vigil_report_last_success_timestamp_seconds 1700000000.5",
            "vigil_report_spool_reports 3",
            "vigil_report_spool_bytes 4096",
        ] {
            assert!(text.lines().any(|l| l == series), "{series}:\n{text}");
        }
    }
}
