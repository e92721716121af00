//! Every answer the proxy gives itself, in one place: guard denials and proxy errors, as
//! `application/problem+json` (RFC 9457) with the request id.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use vigil_host::Denial;

/// The request id field, on every answer and on every request forwarded.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The body type of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Wraps bytes as a [`ProxyBody`].
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Why the proxy answers a request itself instead of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// The upstream refused or dropped the connection.
    UpstreamUnavailable(String),
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The request body is over the limit.
    BodyTooLarge(u64),
    /// The request is malformed; the connection is closed after the answer.
    BadRequest(String),
}

impl ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn detail(&self) -> String {
        match self {
            ProxyError::UpstreamUnavailable(why) => {
                format!("the upstream service is unavailable: {why}")
            }
            ProxyError::UpstreamTimeout => "the upstream service did not answer in time".into(),
            ProxyError::BodyTooLarge(limit) => {
                format!("the request body exceeds the limit of {limit} bytes")
            }
            ProxyError::BadRequest(why) => why.clone(),
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
        if matches!(self, ProxyError::BadRequest(_)) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
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

fn problem(status: StatusCode, body: &serde_json::Value, request_id: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID, id);
    }
    response
}
