//! Every answer the proxy gives itself, in one place: guard denials and proxy errors, as
//! `application/problem+json` (RFC 9457) with the request id.

use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use vigil_common::reply::typed;
pub use vigil_common::reply::{full, ProxyBody};
use vigil_host::state::Ban;
use vigil_host::Denial;

/// The request id field, on every answer and on every request forwarded.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Why the proxy answers a request itself instead of the upstream. The texts these carry are
/// for the log; what the client reads is a fixed sentence per kind, so no internal detail
/// (addresses, library errors) reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// The upstream refused or dropped the connection.
    UpstreamUnavailable(String),
    /// The upstream answered with something that cannot be forwarded safely (ambiguous
    /// framing, a protocol switch nobody asked for); its connection is not reused.
    UpstreamInvalid(String),
    /// Out of a resource (upstream connections, file descriptors): this request cannot be
    /// served now, others go on.
    Overloaded(String),
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The request body is over the limit.
    BodyTooLarge(u64),
    /// The request is malformed; the connection is closed after the answer.
    BadRequest(String),
    /// The part of the body the guards read did not arrive within `listen.header_read_timeout`;
    /// the connection is closed after the answer.
    BodyTimeout,
    /// The request head is over `listen.max_header_bytes` or `listen.max_headers`; the
    /// connection is closed after the answer.
    HeadTooLarge(String),
    /// A `CONNECT`: this is a reverse proxy for one service, not a forward proxy.
    NotAProxy,
    /// A guard needed the client state shared with the other replicas while the shared store
    /// could not answer, and `state.fallback` is `deny`; carries the guard's name.
    StateUnavailable(String),
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnavailable(_) | ProxyError::UpstreamInvalid(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Overloaded(_) | ProxyError::StateUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::NotAProxy => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// What the client is told.
    pub fn detail(&self) -> String {
        match self {
            ProxyError::UpstreamUnavailable(_) => "the upstream service is unavailable".into(),
            ProxyError::UpstreamInvalid(_) => {
                "the upstream service sent a response that cannot be forwarded".into()
            }
            ProxyError::Overloaded(_) => {
                "the proxy has no capacity for this request now; try again shortly".into()
            }
            ProxyError::UpstreamTimeout => "the upstream service did not answer in time".into(),
            ProxyError::BodyTooLarge(limit) => {
                format!("the request body exceeds the limit of {limit} bytes")
            }
            ProxyError::BadRequest(why) | ProxyError::HeadTooLarge(why) => why.clone(),
            ProxyError::BodyTimeout => "the request body did not arrive in time".into(),
            ProxyError::NotAProxy => "CONNECT is not served: this is not a forward proxy".into(),
            ProxyError::StateUnavailable(_) => {
                "the client state this request is checked against is unavailable; try again \
                 shortly"
                    .into()
            }
        }
    }

    /// The response for this error.
    pub fn response(&self, request_id: &str) -> Response<ProxyBody> {
        let status = self.status();
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.detail(),
            "request_id": request_id,
        });
        let mut response = problem(status, &body, request_id);
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::BodyTimeout
            | ProxyError::HeadTooLarge(_)
            | ProxyError::NotAProxy => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ProxyError::Overloaded(_) | ProxyError::StateUnavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// The response for a guard's denial.
pub fn denial(denial: &Denial, request_id: &str) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(denial.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::FORBIDDEN);
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Denied"),
        "status": status.as_u16(),
        "detail": denial.reason,
        "guard": &*denial.guard,
        "request_id": request_id,
    });
    let mut response = problem(status, &body, request_id);
    if let Some(secs) = denial.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The answer to a banned client: 403, why, and when the ban ends (`Retry-After`).
pub fn banned(ban: &Ban, now_ms: u64, request_id: &str) -> Response<ProxyBody> {
    let status = StatusCode::FORBIDDEN;
    let retry_after_secs = ban.until_ms.saturating_sub(now_ms).div_ceil(1000);
    let body = serde_json::json!({
        "type": "about:blank",
        "title": "Forbidden",
        "status": status.as_u16(),
        "detail": format!("this client is blocked for a while: {}", ban.reason),
        "guard": &*ban.by,
        "retry_after_secs": retry_after_secs,
        "request_id": request_id,
    });
    let mut response = problem(status, &body, request_id);
    if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn problem(status: StatusCode, body: &serde_json::Value, request_id: &str) -> Response<ProxyBody> {
    let mut response = typed(status, body.to_string(), "application/problem+json");
    if let Ok(id) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_REQUEST_ID, id);
    }
    response
}
