//! Webhooks: news of the fleet posted as JSON (Slack-compatible: a top-level `text`, the
//! details beside it) when a report brings a finding kind its service had not reported, or
//! an endpoint that public clients reach (or reach without credentials) for the first time.
//!
//! What is new is decided from the store, read before and after the report is applied, so it
//! holds across restarts. Notifications leave the ingest path at once: each webhook has a
//! bounded queue and a task that posts, retrying with backoff; a full queue drops the
//! notification and counts it. A slow or absent receiver never slows or fails ingest.

use super::config::{Webhook, WebhookEvent};
use super::metrics::WebhookCounts;
use super::store::{Applied, Endpoint, EndpointQuery, Exposure, FindingQuery, Store, StoreError};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use vigil_common::throttle::LogThrottle;
use vigil_report::Report;

/// Notifications waiting per webhook; past it they are dropped and counted.
pub const QUEUE: usize = 256;
/// Attempts per notification: the first and three retries.
pub const ATTEMPTS: u32 = 4;
/// Wait before the first retry; doubled before each next one (1 s, 2 s, 4 s).
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Something new a report brought.
#[derive(Debug, Clone)]
pub enum Event {
    /// A finding kind the service had not reported before.
    NewFindingKind {
        /// Service name.
        service: String,
        /// Instance that reported it.
        instance: String,
        /// The finding, as reported (the first of its kind in the report).
        finding: vigil_report::Finding,
    },
    /// An endpoint reached publicly, or answered public clients without credentials, for the
    /// first time.
    NewlyExposed {
        /// The endpoint after the report, merged across instances.
        endpoint: Box<Endpoint>,
        /// Its exposure before; `None` when the collector had not seen it.
        previous: Option<Exposure>,
    },
}

impl Event {
    /// Which `events` entry it belongs to.
    pub fn kind(&self) -> WebhookEvent {
        match self {
            Event::NewFindingKind { .. } => WebhookEvent::NewFindingKind,
            Event::NewlyExposed { .. } => WebhookEvent::NewlyExposed,
        }
    }

    /// The JSON posted: `text` for chat tools, the same facts as fields for programs.
    pub fn payload(&self) -> Value {
        match self {
            Event::NewFindingKind {
                service,
                instance,
                finding,
            } => {
                let endpoint = finding
                    .endpoint
                    .as_ref()
                    .map(|e| format!(" on {} {}", e.method, e.route))
                    .unwrap_or_default();
                let client = finding
                    .client
                    .as_ref()
                    .map(|c| format!(", client {c}"))
                    .unwrap_or_default();
                json!({
                    "text": format!(
                        "Vigil: service {service} reported a new kind of finding, `{}`{endpoint}{client} ({}): {}",
                        finding.kind, finding.source, finding.detail
                    ),
                    "event": WebhookEvent::NewFindingKind.as_str(),
                    "service": service,
                    "instance": instance,
                    "kind": finding.kind,
                    "source": finding.source,
                    "method": finding.endpoint.as_ref().map(|e| &e.method),
                    "route": finding.endpoint.as_ref().map(|e| &e.route),
                    "client": finding.client,
                    "detail": finding.detail,
                    "at_ms": finding.at_ms,
                })
            }
            Event::NewlyExposed { endpoint, previous } => {
                let e = endpoint;
                let how = match e.exposure {
                    Exposure::PublicUnauthenticated => {
                        "now answers public clients without credentials"
                    }
                    _ => "is now reached by public clients",
                };
                let was = previous.map_or("not seen before".to_string(), |p| {
                    format!("was {}", p.label())
                });
                let internal = if e.internal_only {
                    "; it is listed as internal-only"
                } else {
                    ""
                };
                json!({
                    "text": format!(
                        "Vigil: {} {} of service {} {how} ({was}; {} public request(s), {} answered 2xx without credentials){internal}",
                        e.method, e.route, e.service, e.public, e.public_unauthenticated_success
                    ),
                    "event": WebhookEvent::NewlyExposed.as_str(),
                    "service": e.service,
                    "method": e.method,
                    "route": e.route,
                    "exposure": e.exposure,
                    "previous": previous,
                    "internal_only": e.internal_only,
                    "documented": e.documented,
                    "public_requests": e.public,
                    "public_unauthenticated_success": e.public_unauthenticated_success,
                    "public_clients": e.public_clients,
                })
            }
        }
    }
}

/// Applies `report`, noting what it brings that is new among `wanted`. The reads before and
/// after the apply, and the apply, happen under `serial`, so that two reports of one service
/// arriving together cannot both take the same endpoint for new. A failed read costs the
/// notifications of this report, never the report.
pub fn apply_noting(
    store: &dyn Store,
    serial: &Mutex<()>,
    report: &Report,
    received_ms: u64,
    wanted: &[WebhookEvent],
) -> Result<(Applied, Vec<Event>), StoreError> {
    let _serial = serial.lock().unwrap_or_else(PoisonError::into_inner);
    let unreadable = |error: StoreError| {
        static FAILED: LogThrottle = LogThrottle::new();
        if let Some(left_out) = FAILED.allow() {
            tracing::warn!(%error, left_out, "reading the store for webhooks failed; this report notifies nothing");
        }
    };
    let new_kinds = if wanted.contains(&WebhookEvent::NewFindingKind) {
        match new_finding_kinds(store, report) {
            Ok(kinds) => kinds,
            Err(error) => {
                unreadable(error);
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let public = report
        .endpoints
        .iter()
        .any(|e| e.public > 0 || e.public_unauthenticated_success > 0);
    let endpoints = EndpointQuery {
        service: Some(report.service.clone()),
        ..EndpointQuery::default()
    };
    let before = if public && wanted.contains(&WebhookEvent::NewlyExposed) {
        store.endpoints(&endpoints).map_err(unreadable).ok()
    } else {
        None
    };
    let applied = store.apply(report, received_ms)?;
    if applied == Applied::Duplicate {
        return Ok((applied, Vec::new()));
    }
    let mut events: Vec<Event> = new_kinds
        .into_iter()
        .map(|finding| Event::NewFindingKind {
            service: report.service.clone(),
            instance: report.instance.clone(),
            finding,
        })
        .collect();
    if let Some(before) = before {
        match store.endpoints(&endpoints) {
            Ok(after) => events.extend(newly_exposed(report, &before, after)),
            Err(error) => unreadable(error),
        }
    }
    Ok((applied, events))
}

/// The first finding of each kind in `report` that its service has no record of.
fn new_finding_kinds(
    store: &dyn Store,
    report: &Report,
) -> Result<Vec<vigil_report::Finding>, StoreError> {
    let mut seen = BTreeSet::new();
    let mut new = Vec::new();
    for finding in &report.findings {
        if !seen.insert(finding.kind.as_str()) {
            continue;
        }
        let known = store.findings(&FindingQuery {
            service: Some(report.service.clone()),
            kind: Some(finding.kind.clone()),
            without_client_denials: false,
            limit: 1,
        })?;
        if known.is_empty() {
            new.push(finding.clone());
        }
    }
    Ok(new)
}

/// Endpoints this report touched that are public (or public without credentials) now and
/// were not before.
fn newly_exposed(report: &Report, before: &[Endpoint], after: Vec<Endpoint>) -> Vec<Event> {
    after
        .into_iter()
        .filter(|e| {
            report
                .endpoints
                .iter()
                .any(|d| d.method == e.method && d.route == e.route)
        })
        .filter_map(|e| {
            let was = before
                .iter()
                .find(|b| b.method == e.method && b.route == e.route);
            let newly_public = e.public > 0 && was.is_none_or(|b| b.public == 0);
            let newly_unauthenticated = e.public_unauthenticated_success > 0
                && was.is_none_or(|b| b.public_unauthenticated_success == 0);
            (newly_public || newly_unauthenticated).then(|| Event::NewlyExposed {
                previous: was.map(|b| b.exposure),
                endpoint: Box::new(e),
            })
        })
        .collect()
}

/// The webhooks' queues, and the delivery tasks' receivers until [`Notifier::start`].
pub struct Notifier {
    hooks: Vec<Hook>,
    waiting: Mutex<Vec<(Webhook, mpsc::Receiver<Bytes>)>>,
    /// Held across a report's reads and apply (see [`apply_noting`]).
    pub serial: Mutex<()>,
    counts: WebhookCounts,
}

struct Hook {
    events: Vec<WebhookEvent>,
    queue: mpsc::Sender<Bytes>,
    url: String,
    /// Whether the first drop was logged; later ones are only counted.
    drop_logged: AtomicBool,
}

impl Notifier {
    /// Queues for `webhooks`; nothing is sent before [`Notifier::start`].
    pub fn new(webhooks: &[Webhook], counts: WebhookCounts) -> Notifier {
        let mut hooks = Vec::new();
        let mut waiting = Vec::new();
        for webhook in webhooks {
            let (queue, receiver) = mpsc::channel(QUEUE);
            hooks.push(Hook {
                events: webhook.events.clone(),
                queue,
                url: webhook.url.to_string(),
                drop_logged: AtomicBool::new(false),
            });
            waiting.push((webhook.clone(), receiver));
        }
        Notifier {
            hooks,
            waiting: Mutex::new(waiting),
            serial: Mutex::new(()),
            counts,
        }
    }

    /// The events some webhook wants.
    pub fn wanted(&self) -> Vec<WebhookEvent> {
        WebhookEvent::ALL
            .into_iter()
            .filter(|e| self.hooks.iter().any(|h| h.events.contains(e)))
            .collect()
    }

    /// Starts one delivery task per webhook, on the current runtime; the handles, for
    /// stopping them.
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let waiting =
            std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        waiting
            .into_iter()
            .map(|(webhook, queue)| tokio::spawn(deliver(webhook, queue, self.counts.clone())))
            .collect()
    }

    /// Queues `events` for the webhooks that want them, without waiting.
    pub fn notify(&self, events: &[Event]) {
        for event in events {
            let body = Bytes::from(event.payload().to_string());
            for hook in self
                .hooks
                .iter()
                .filter(|h| h.events.contains(&event.kind()))
            {
                if hook.queue.try_send(body.clone()).is_err() {
                    self.counts.dropped();
                    if !hook.drop_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            url = %hook.url,
                            queue = QUEUE,
                            "a webhook's queue is full, so a notification was dropped; further drops are counted in vigil_collector_webhook_notifications_total{{result=\"dropped\"}} without a log line"
                        );
                    }
                }
            }
        }
    }
}

/// Why one attempt did not deliver.
enum Failure {
    /// Worth another attempt: no connection, a timeout, 429 or 5xx.
    Retry(String),
    /// The receiver refused the notification itself.
    Refused(String),
}

async fn deliver(webhook: Webhook, mut queue: mpsc::Receiver<Bytes>, counts: WebhookCounts) {
    let connector = vigil_common::client::connector(webhook.tls.as_ref(), webhook.timeout);
    let client: Client<HttpsConnector<HttpConnector>, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let url = webhook.url.to_string();
    static FAILED: LogThrottle = LogThrottle::new();
    while let Some(body) = queue.recv().await {
        let mut wait = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match post(&client, &webhook, body.clone()).await {
                Ok(()) => {
                    counts.delivered();
                    break;
                }
                Err(Failure::Retry(why)) if attempt < ATTEMPTS => {
                    tracing::debug!(%url, attempt, %why, "webhook attempt failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(Failure::Retry(why) | Failure::Refused(why)) => {
                    counts.failed();
                    if let Some(left_out) = FAILED.allow() {
                        tracing::warn!(%url, attempts = attempt, %why, left_out, "a webhook notification could not be delivered; it is given up");
                    }
                    break;
                }
            }
        }
    }
}

async fn post(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    webhook: &Webhook,
    body: Bytes,
) -> Result<(), Failure> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(webhook.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("vigil-collector/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|e| Failure::Refused(format!("the request could not be built: {e}")))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| Failure::Retry(format!("no answer: {}", causes(&e))))?;
        let status = response.status();
        // Read the answer so the connection can be used again.
        let _ = response.into_body().collect().await;
        Ok::<_, Failure>(status)
    };
    let status = tokio::time::timeout(webhook.timeout, exchange)
        .await
        .map_err(|_| Failure::Retry(format!("no answer within {:?}", webhook.timeout)))??;
    if status.is_success() {
        Ok(())
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(Failure::Retry(format!("answered {status}")))
    } else {
        Err(Failure::Refused(format!("answered {status}")))
    }
}

/// An error with its causes: hyper's client keeps the useful part (`Connection refused`)
/// behind a terse top line.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{sample, Metrics};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A webhook at `url` for every event, one attempt of `timeout`.
    fn hook(url: &str, timeout: Duration) -> Webhook {
        Webhook {
            url: url.parse().unwrap(),
            events: WebhookEvent::ALL.to_vec(),
            timeout,
            tls: None,
        }
    }

    /// A receiver answering every request with `answer` (`None`: never answering); its URL.
    async fn receiver(answer: Option<&'static str>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                match answer {
                    Some(answer) => {
                        let _ = stream.write_all(answer.as_bytes()).await;
                    }
                    None => held.push(stream),
                }
            }
        });
        url
    }

    async fn attempt(webhook: &Webhook) -> Result<(), Failure> {
        let connector = vigil_common::client::connector(None, webhook.timeout);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        post(&client, webhook, Bytes::from_static(b"{}")).await
    }

    #[tokio::test]
    async fn answers_decide_between_done_retry_and_give_up() {
        let answer = |status: &'static str| -> &'static str {
            Box::leak(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .into_boxed_str(),
            )
        };
        let second = Duration::from_secs(1);
        for (status, expected) in [
            ("200 OK", "delivered"),
            ("204 No Content", "delivered"),
            ("429 Too Many Requests", "retry"),
            ("503 Service Unavailable", "retry"),
            ("404 Not Found", "refused"),
            ("400 Bad Request", "refused"),
        ] {
            let url = receiver(Some(answer(status))).await;
            let outcome = match attempt(&hook(&url, second)).await {
                Ok(()) => "delivered".to_string(),
                Err(Failure::Retry(why)) => {
                    assert!(why.contains(status), "{why}");
                    "retry".to_string()
                }
                Err(Failure::Refused(why)) => {
                    assert!(why.contains(status), "{why}");
                    "refused".to_string()
                }
            };
            assert_eq!(outcome, expected, "{status}");
        }
        let silent = receiver(None).await;
        match attempt(&hook(&silent, Duration::from_millis(200))).await {
            Err(Failure::Retry(why)) => assert!(why.contains("no answer within"), "{why}"),
            _ => panic!("a receiver that never answers is retried"),
        }
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", listener.local_addr().unwrap())
        };
        match attempt(&hook(&closed, second)).await {
            Err(Failure::Retry(why)) => {
                assert!(why.to_lowercase().contains("refused"), "{why}");
            }
            _ => panic!("a refused connection is retried"),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_only_for_the_webhooks_that_want_the_event() {
        let metrics = Metrics::new();
        let mut exposed_only = hook("http://127.0.0.1:1/", Duration::from_secs(1));
        exposed_only.events = vec![WebhookEvent::NewlyExposed];
        let notifier = Notifier::new(
            &[
                hook("http://127.0.0.1:1/", Duration::from_secs(1)),
                exposed_only,
            ],
            metrics.webhooks(),
        );
        assert_eq!(notifier.wanted(), WebhookEvent::ALL);
        let event = Event::NewFindingKind {
            service: "shop".into(),
            instance: "shop-1".into(),
            finding: vigil_report::Finding {
                kind: "enumeration".into(),
                source: "guard:enumeration".into(),
                endpoint: None,
                detail: "40 ids".into(),
                client: None,
                at_ms: 1,
                count: 1,
            },
        };
        // Not started: nothing takes from the queues.
        notifier.notify(&vec![event; QUEUE + 3]);
        let text = metrics.render();
        assert_eq!(
            sample(
                &text,
                "vigil_collector_webhook_notifications_total{result=\"dropped\"}"
            ),
            Some(3.0),
            "{text}"
        );
    }

    #[test]
    fn a_finding_without_endpoint_or_client_reads_well() {
        let event = Event::NewFindingKind {
            service: "shop".into(),
            instance: "shop-1".into(),
            finding: vigil_report::Finding {
                kind: "spec-drift".into(),
                source: "sidecar".into(),
                endpoint: None,
                detail: "3 undocumented routes".into(),
                client: None,
                at_ms: 7,
                count: 1,
            },
        };
        let payload = event.payload();
        assert_eq!(
            payload["text"],
            "Vigil: service shop reported a new kind of finding, `spec-drift` (sidecar): 3 undocumented routes"
        );
        assert_eq!(payload["route"], Value::Null);
        assert_eq!(payload["event"], "new-finding-kind");
    }
}
