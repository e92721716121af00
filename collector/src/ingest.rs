//! `POST /v1/reports`: a sidecar's report, checked in order (token, size, encoding, JSON,
//! schema, the token's scope, the idempotency key) and applied once. A refused report stores
//! nothing. What an applied report brings that is new goes to the webhooks' queues.

use super::config::Token;
use super::metrics::Operation;
use super::reply;
use super::store::{Applied, StoreError};
use super::webhook;
use super::Collector;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;
use vigil_common::reply::ProxyBody;
use vigil_report::Report;

/// Why a report was refused; each cause has its status.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No bearer token, or not one the collector knows.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The token may not report for this service.
    #[error("token {token:?} may report only for service {allowed:?}, not {service:?}")]
    Forbidden {
        /// The token's name.
        token: String,
        /// Its service.
        allowed: String,
        /// The report's service.
        service: String,
    },
    /// The body, as sent or inflated, is over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// A content encoding or type the collector does not read.
    #[error("{0}")]
    Unsupported(String),
    /// Not gzip, not JSON, or a missing header.
    #[error("{0}")]
    Malformed(String),
    /// JSON of the wrong shape, or a report that fails validation.
    #[error("{0}")]
    Invalid(String),
    /// The sequence range overlaps an applied one.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed; the sidecar should retry.
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    /// Every [`Refusal::reason`], so the metrics can show each from the start.
    pub const REASONS: [&'static str; 8] = [
        "unauthorized",
        "forbidden",
        "too_large",
        "unsupported",
        "malformed",
        "invalid",
        "conflict",
        "unavailable",
    ];

    /// A word for the cause, as the metrics label it.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unauthorized(_) => "unauthorized",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::TooLarge(_) => "too_large",
            Refusal::Unsupported(_) => "unsupported",
            Refusal::Malformed(_) => "malformed",
            Refusal::Invalid(_) => "invalid",
            Refusal::Conflict(_) => "conflict",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::Conflict(_) => StatusCode::CONFLICT,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The answer to the sidecar.
    pub fn response(&self) -> Response<ProxyBody> {
        let mut response = reply::problem(self.status(), &self.to_string());
        let headers = response.headers_mut();
        match self {
            Refusal::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"vigil-collector\""),
                );
            }
            Refusal::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// Handles one report upload.
pub async fn handle(collector: Arc<Collector>, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let token = authenticate(&collector.config.tokens, req.headers()).cloned();
    let result = match &token {
        Some(token) => receive(&collector, token, req).await,
        None => Err(Refusal::Unauthorized(
            "a valid `Authorization: Bearer <token>` header is required",
        )),
    };
    collector.metrics.report(
        result.as_ref().map(|(applied, _)| *applied),
        started.elapsed(),
    );
    // Absent from the line when no token matched; unquoted, like the other names, when one did.
    let peer_token = token.as_ref().map(|t| tracing::field::display(&t.name));
    match result {
        Ok((applied, key)) => {
            let (status, word) = match applied {
                Applied::New => (StatusCode::ACCEPTED, "applied"),
                Applied::Duplicate => (StatusCode::OK, "duplicate"),
            };
            tracing::debug!(%key, token = peer_token, status = word, "report received");
            reply::json(
                status,
                &serde_json::json!({"status": word, "idempotency_key": key}),
            )
        }
        Err(refusal) => {
            tracing::info!(token = peer_token, status = refusal.status().as_u16(), reason = %refusal, "report refused");
            refusal.response()
        }
    }
}

async fn receive(
    collector: &Arc<Collector>,
    token: &Token,
    req: Request<Incoming>,
) -> Result<(Applied, String), Refusal> {
    let limits = &collector.config.listen;
    let gzip = content_encoding(req.headers())?;
    if let Some(kind) = req.headers().get(header::CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or("");
        if !kind.trim_start().starts_with("application/json") {
            return Err(Refusal::Unsupported(format!(
                "Content-Type {kind:?}: reports are application/json"
            )));
        }
    }
    let declared_key = match req.headers().get("idempotency-key") {
        Some(value) => value
            .to_str()
            .map_err(|_| Refusal::Malformed("Idempotency-Key: not visible ASCII".into()))?
            .to_string(),
        None => {
            return Err(Refusal::Malformed(
                "Idempotency-Key header missing: send <instance>:<first>-<last>".into(),
            ))
        }
    };
    let too_large = |limit: usize| {
        Refusal::TooLarge(format!(
            "the report body exceeds the limit of {limit} bytes (listen.max_body_bytes)"
        ))
    };
    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > limits.max_body_bytes as u64) {
        return Err(too_large(limits.max_body_bytes));
    }
    let body = Limited::new(req.into_body(), limits.max_body_bytes)
        .collect()
        .await
        .map_err(|error| {
            if error.downcast_ref::<LengthLimitError>().is_some() {
                too_large(limits.max_body_bytes)
            } else {
                Refusal::Malformed(format!("the body could not be read: {error}"))
            }
        })?
        .to_bytes();
    let json = if gzip {
        inflate(&body, limits.max_inflated_bytes)?
    } else {
        body
    };
    let report = parse(&json)?;
    if let Some(allowed) = &token.service {
        if *allowed != report.service {
            return Err(Refusal::Forbidden {
                token: token.name.clone(),
                allowed: allowed.clone(),
                service: report.service,
            });
        }
    }
    let key = report.idempotency_key();
    if declared_key != key {
        return Err(Refusal::Invalid(format!(
            "Idempotency-Key header {declared_key:?} does not match the report's {key:?}"
        )));
    }
    let received_ms = super::now_ms();
    let store = collector.store.clone();
    let notifier = collector.notifier.clone();
    let wanted = notifier.wanted();
    let applied = tokio::task::spawn_blocking(move || {
        if wanted.is_empty() {
            store.apply(&report, received_ms).map(|a| (a, Vec::new()))
        } else {
            webhook::apply_noting(&*store, &notifier.serial, &report, received_ms, &wanted)
        }
    })
    .await
    .unwrap_or_else(|e| Err(StoreError::Database(format!("storage task failed: {e}"))));
    match applied {
        Ok((applied, events)) => {
            collector.notifier.notify(&events);
            Ok((applied, key))
        }
        Err(conflict @ StoreError::Conflict { .. }) => Err(Refusal::Conflict(conflict.to_string())),
        Err(StoreError::Database(error)) => {
            collector.metrics.store_error(Operation::Apply);
            tracing::error!(%error, "storing a report failed");
            Err(Refusal::Unavailable(
                "the collector cannot store reports right now; retry later".into(),
            ))
        }
    }
}

/// The configured token the request's bearer token is, compared in constant time.
pub fn authenticate<'a>(tokens: &'a [Token], headers: &HeaderMap) -> Option<&'a Token> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, presented) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let presented = presented.trim_ascii();
    // Every token is compared, so the time taken does not tell which one came close.
    let mut found = None;
    for token in tokens {
        if constant_time_eq(token.secret.as_bytes(), presented) {
            found = Some(token);
        }
    }
    found
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn content_encoding(headers: &HeaderMap) -> Result<bool, Refusal> {
    match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str()) {
        None => Ok(false),
        Some(Ok(v)) if v.trim().eq_ignore_ascii_case("gzip") => Ok(true),
        Some(Ok(v)) if v.trim().eq_ignore_ascii_case("identity") => Ok(false),
        Some(other) => Err(Refusal::Unsupported(format!(
            "Content-Encoding {:?}: only gzip or identity",
            other.unwrap_or("(not ASCII)")
        ))),
    }
}

/// Inflates a gzip body, refusing it as soon as it grows past `limit` (a gzip bomb stops
/// there, having cost `limit` bytes of memory at most).
pub fn inflate(body: &[u8], limit: usize) -> Result<Bytes, Refusal> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Refusal::Malformed(format!("the body is not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(Refusal::TooLarge(format!(
            "the report inflates past the limit of {limit} bytes (listen.max_inflated_bytes)"
        )));
    }
    Ok(out.into())
}

/// Reads and validates a report's JSON: bad syntax is 400, a wrong shape or invalid report 422.
pub fn parse(json: &[u8]) -> Result<Report, Refusal> {
    let report: Report = serde_json::from_slice(json).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Refusal::Invalid(format!("the report does not fit the schema: {e}")),
            Category::Syntax | Category::Eof | Category::Io => {
                Refusal::Malformed(format!("the body is not JSON: {e}"))
            }
        }
    })?;
    report
        .validate()
        .map_err(|e| Refusal::Invalid(format!("invalid report: {e}")))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn inflation_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 10 << 20]);
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(inflate(&bomb, 1 << 20), Err(Refusal::TooLarge(_))));
        assert_eq!(inflate(&gzip(b"{}"), 2).unwrap(), Bytes::from_static(b"{}"));
        assert!(matches!(inflate(b"{}", 100), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn every_reason_is_listed_once() {
        let refusals = [
            Refusal::Unauthorized(""),
            Refusal::Forbidden {
                token: String::new(),
                allowed: String::new(),
                service: String::new(),
            },
            Refusal::TooLarge(String::new()),
            Refusal::Unsupported(String::new()),
            Refusal::Malformed(String::new()),
            Refusal::Invalid(String::new()),
            Refusal::Conflict(String::new()),
            Refusal::Unavailable(String::new()),
        ];
        let reasons: Vec<&str> = refusals.iter().map(Refusal::reason).collect();
        assert_eq!(reasons, Refusal::REASONS);
    }

    #[test]
    fn bearer_tokens_match_exactly() {
        let tokens = vec![Token {
            name: "fleet".into(),
            secret: "0123456789abcdef".into(),
            service: None,
        }];
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            authenticate(&tokens, &headers).map(|t| t.name.clone())
        };
        assert_eq!(with("Bearer 0123456789abcdef").as_deref(), Some("fleet"));
        assert_eq!(with("bearer 0123456789abcdef").as_deref(), Some("fleet"));
        assert_eq!(with("Bearer 0123456789abcde"), None);
        assert_eq!(with("Basic 0123456789abcdef"), None);
        assert_eq!(with("Bearer"), None);
        assert_eq!(
            authenticate(&tokens, &HeaderMap::new()).map(|t| &t.name),
            None
        );
    }
}
