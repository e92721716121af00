//! The reporter: every interval, takes the inventory's delta and the findings, spools the report
//! durably, and delivers the spool to the collector oldest first, retrying with exponential
//! backoff and jitter while the collector is away. On shutdown it spools the last delta and
//! makes one bounded attempt to deliver everything.

use crate::config::Reporting;
use crate::exposure::spool::{Spool, SpoolLimits, Spooled};
use crate::forward::hygiene::source_text;
use crate::metrics::DeliveryFailure;
use crate::sidecar::Sidecar;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use vigil_report::{Report, SequenceRange, SCHEMA};

/// The collector's ingest path, under `report.collector`.
pub const INGEST_PATH: &str = "/v1/reports";
/// First wait after a failed delivery.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Largest answer body read from the collector (for its error message).
const MAX_ANSWER_BYTES: usize = 4096;

/// A running reporter.
pub struct Reporter {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    /// Opens the spool (an error here is fatal: reports would have nowhere to go) and starts
    /// the reporting task.
    pub fn start(sidecar: Arc<Sidecar>, settings: Reporting) -> anyhow::Result<Reporter> {
        let spool = Spool::open(
            &settings.spool_dir,
            SpoolLimits {
                max_reports: settings.spool_max_reports,
                max_bytes: settings.spool_max_bytes,
            },
        )
        .map_err(|e| anyhow::anyhow!("report.spool_dir: {e}"))?;
        sidecar.metrics.report.spooled(spool.len(), spool.bytes());
        if !spool.is_empty() {
            tracing::info!(
                reports = spool.len(),
                spool = %settings.spool_dir.display(),
                "reports left from an earlier run are waiting in the spool; delivering them first"
            );
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let delivery = Delivery::new(&settings)?;
        let state = ReporterState {
            sidecar,
            settings,
            spool: Arc::new(Mutex::new(spool)),
            delivery,
            made_first: false,
            zombies_reported: false,
            started: Instant::now(),
        };
        let task = tokio::spawn(state.run(stopped));
        Ok(Reporter { stop, task })
    }

    /// Spools the last delta and tries to deliver the spool once, within the delivery
    /// timeout; what is not delivered stays spooled for the next start.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the reporter stopped abnormally");
        }
    }
}

struct ReporterState {
    sidecar: Arc<Sidecar>,
    settings: Reporting,
    spool: Arc<Mutex<Spool>>,
    delivery: Delivery,
    made_first: bool,
    zombies_reported: bool,
    started: Instant,
}

impl ReporterState {
    async fn run(mut self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut backoff = Backoff::new(self.settings.max_backoff);
        let mut retry_at: Option<Instant> = Some(Instant::now());
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {
                    self.make_report().await;
                    if retry_at.is_none() {
                        retry_at = Some(Instant::now());
                    }
                }
                _ = retry => {
                    retry_at = match self.deliver_spool().await {
                        Ok(()) => {
                            if backoff.failures > 0 {
                                tracing::info!(collector = %self.settings.collector, "the collector is reachable again; spool delivered");
                            }
                            backoff.reset();
                            None
                        }
                        Err(failure) => {
                            let wait = backoff.next();
                            let spool = self.lock_spool();
                            tracing::warn!(
                                collector = %self.settings.collector,
                                failure = %failure,
                                spooled_reports = spool.len(),
                                spooled_bytes = spool.bytes(),
                                retry_in_ms = wait.as_millis() as u64,
                                "cannot deliver reports; they stay in the spool"
                            );
                            Some(Instant::now() + wait)
                        }
                    };
                }
                _ = async { let _ = stopped.wait_for(|stop| *stop).await; } => break,
            }
        }
        self.make_report().await;
        match tokio::time::timeout(self.settings.timeout, self.deliver_spool()).await {
            Ok(Ok(())) => tracing::info!("final report delivered"),
            Ok(Err(failure)) => tracing::warn!(
                %failure,
                spooled_reports = self.lock_spool().len(),
                spool = %self.settings.spool_dir.display(),
                "could not deliver the final reports; they stay in the spool for the next start"
            ),
            Err(_) => tracing::warn!(
                spool = %self.settings.spool_dir.display(),
                "delivering the final reports timed out; they stay in the spool for the next start"
            ),
        }
    }

    /// Turns the inventory's deltas (one per version the service ran since the last report)
    /// into spooled reports. A spool error is logged: the counts of that period are then
    /// lost, and the log says so.
    async fn make_report(&mut self) {
        let now = self.sidecar.now_ms();
        self.sidecar.collect_guard_findings();
        if !self.zombies_reported && self.started.elapsed() >= self.settings.zombie_after {
            self.sidecar.inventory.report_zombies(now);
            self.zombies_reported = true;
        }
        for delta in self.sidecar.inventory.take(now) {
            // The first report goes out even when empty: it tells the collector this instance
            // and its documented endpoints exist.
            if delta.is_empty() && self.made_first {
                continue;
            }
            self.made_first = true;
            self.spool_report(Report {
                schema: SCHEMA,
                service: self.settings.service.clone(),
                instance: self.settings.instance.clone(),
                sequence: SequenceRange { first: 0, last: 0 },
                period: delta.period,
                endpoints: delta.endpoints,
                findings: delta.findings,
                documented: self.sidecar.inventory.documented().to_vec(),
                dropped: delta.dropped,
                version: delta.version,
            })
            .await;
        }
    }

    /// Numbers a report and writes it to the spool.
    async fn spool_report(&self, base: Report) {
        let spool = self.spool.clone();
        let requests: u64 = base.endpoints.iter().map(|e| e.requests).sum();
        let metrics = self.sidecar.metrics.report.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(PoisonError::into_inner);
            let mut report = base;
            let sequence = spool.next_sequence()?;
            report.sequence = SequenceRange {
                first: sequence,
                last: sequence,
            };
            report.dropped.reports += spool.take_dropped()?;
            let pushed = spool.push(&report);
            metrics.spooled(spool.len(), spool.bytes());
            pushed?;
            Ok::<_, std::io::Error>(sequence)
        })
        .await;
        if !matches!(written, Ok(Ok(_))) {
            self.sidecar.metrics.report.failed(DeliveryFailure::Spool);
        }
        match written {
            Ok(Ok(sequence)) => tracing::debug!(sequence, requests, "report spooled"),
            Ok(Err(error)) => tracing::error!(
                %error,
                requests,
                spool = %self.settings.spool_dir.display(),
                "cannot write the report to the spool; this period's counts are lost"
            ),
            Err(error) => tracing::error!(%error, "the spool writer failed"),
        }
    }

    /// Sends spooled reports oldest first until the spool is empty or a delivery fails.
    async fn deliver_spool(&self) -> Result<(), String> {
        let metrics = &self.sidecar.metrics.report;
        loop {
            let (entry, body) = {
                let spool = self.lock_spool();
                let Some(entry) = spool.oldest().cloned() else {
                    return Ok(());
                };
                let body = spool.body(&entry).map_err(|e| {
                    metrics.failed(DeliveryFailure::Spool);
                    format!("cannot read the spooled report: {e}")
                })?;
                (entry, body)
            };
            let outcome = self.delivery.send(&self.settings, &entry, body).await;
            match &outcome {
                Outcome::Accepted => metrics.delivered(self.sidecar.now_ms()),
                Outcome::Refused(_) => metrics.failed(DeliveryFailure::Refused),
                Outcome::NotDelivered(_) => metrics.failed(DeliveryFailure::Unreachable),
                Outcome::MaybeDelivered(_) => metrics.failed(DeliveryFailure::Unanswered),
            }
            let mut spool = self.lock_spool();
            let result = match outcome {
                Outcome::Accepted => spool.remove(entry.first).map_err(|e| e.to_string()),
                Outcome::Refused(why) => {
                    let kept = spool.reject(entry.first).map_err(|e| e.to_string())?;
                    tracing::error!(
                        reason = %why,
                        kept = %kept.display(),
                        first = entry.first,
                        last = entry.last,
                        "the collector refused a report for good; it is set aside and not retried"
                    );
                    Ok(())
                }
                Outcome::NotDelivered(why) => Err(why),
                Outcome::MaybeDelivered(why) => {
                    spool
                        .mark_maybe_delivered(entry.first)
                        .map_err(|e| e.to_string())?;
                    Err(why)
                }
            };
            metrics.spooled(spool.len(), spool.bytes());
            result?;
        }
    }

    fn lock_spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What became of one delivery attempt.
enum Outcome {
    /// The collector stored it (or already had it).
    Accepted,
    /// The collector will never accept it (malformed, too large, conflicting).
    Refused(String),
    /// It did not reach the collector, or the collector said it did not process it.
    NotDelivered(String),
    /// The request went out but no answer came back: the collector may hold it.
    MaybeDelivered(String),
}

struct Delivery {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    authorization: Option<http::HeaderValue>,
}

impl Delivery {
    fn new(settings: &Reporting) -> anyhow::Result<Delivery> {
        let connector = vigil_common::client::connector(settings.tls.as_ref(), settings.timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2)
            .build(connector);
        let base = settings.collector.to_string();
        let url = format!("{}{INGEST_PATH}", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| anyhow::anyhow!("report.collector: {base:?}: {e}"))?;
        let authorization = match &settings.token {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| anyhow::anyhow!("report.token: not a valid header value"))?,
            ),
            None => None,
        };
        Ok(Delivery {
            client,
            url,
            authorization,
        })
    }

    async fn send(&self, settings: &Reporting, entry: &Spooled, body: Vec<u8>) -> Outcome {
        let key = format!("{}:{}-{}", settings.instance, entry.first, entry.last);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, "gzip")
            .header("idempotency-key", key);
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = match request.body(Full::new(Bytes::from(body))) {
            Ok(request) => request,
            Err(e) => return Outcome::Refused(format!("cannot form the request: {e}")),
        };
        let answer = tokio::time::timeout(settings.timeout, async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, body))
        })
        .await;
        match answer {
            Err(_) => Outcome::MaybeDelivered(format!(
                "no answer within {:?} (report.timeout)",
                settings.timeout
            )),
            Ok(Err(error)) if error.is_connect() => {
                Outcome::NotDelivered(format!("cannot connect: {}", source_text(&error)))
            }
            Ok(Err(error)) => Outcome::MaybeDelivered(source_text(&error)),
            Ok(Ok((status, body))) => classify(status, &body),
        }
    }
}

fn classify(status: StatusCode, body: &[u8]) -> Outcome {
    let said = String::from_utf8_lossy(body);
    let said = said.trim();
    let why = format!("collector answered {status}: {said}");
    match status.as_u16() {
        200..=299 => Outcome::Accepted,
        // Auth failures are a configuration problem to fix, not a reason to throw reports away.
        401 | 403 | 408 | 429 | 502..=504 => Outcome::NotDelivered(why),
        400..=499 => Outcome::Refused(why),
        _ => Outcome::MaybeDelivered(why),
    }
}

/// Exponential backoff with full jitter: each wait is random in [0, min(max, 1s × 2^n)], so a
/// fleet of sidecars does not retry in step when the collector comes back.
struct Backoff {
    failures: u32,
    max: Duration,
    random: RandomState,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff {
            failures: 0,
            max,
            random: RandomState::new(),
        }
    }

    fn next(&mut self) -> Duration {
        let ceiling = FIRST_BACKOFF
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures += 1;
        let fraction = (self.random.hash_one(self.failures) >> 11) as f64 / (1u64 << 53) as f64;
        // Never retry immediately: at least a tenth of the ceiling.
        ceiling.mul_f64(0.1 + 0.9 * fraction)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_secs(8));
        let waits: Vec<Duration> = (0..8).map(|_| backoff.next()).collect();
        for (n, wait) in waits.iter().enumerate() {
            let ceiling = Duration::from_secs(1 << n.min(3));
            assert!(
                *wait <= ceiling && *wait >= ceiling / 10,
                "wait {n}: {wait:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next() <= Duration::from_secs(1));
    }

    #[test]
    fn answers_are_classified_by_what_retrying_can_change() {
        let kind = |status: u16| match classify(StatusCode::from_u16(status).unwrap(), b"x") {
            Outcome::Accepted => "accepted",
            Outcome::Refused(_) => "refused",
            Outcome::NotDelivered(_) => "retry",
            Outcome::MaybeDelivered(_) => "maybe",
        };
        assert_eq!(kind(200), "accepted");
        assert_eq!(kind(202), "accepted");
        assert_eq!(kind(401), "retry");
        assert_eq!(kind(503), "retry");
        assert_eq!(kind(400), "refused");
        assert_eq!(kind(413), "refused");
        assert_eq!(kind(500), "maybe");
    }
}
