//! Every answer the collector gives, in one place: JSON, problem+json, HTML, text and metrics.

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;
use vigil_common::reply::{typed, ProxyBody};

/// A JSON document.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<ProxyBody> {
    match serde_json::to_vec(value) {
        Ok(body) => typed(status, body, "application/json"),
        Err(error) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {error}"),
        ),
    }
}

/// An RFC 9457 problem: the status and a detail that says what to fix.
pub fn problem(status: StatusCode, detail: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    typed(status, body.to_string(), "application/problem+json")
}

/// An HTML page.
pub fn html(body: String) -> Response<ProxyBody> {
    let mut response = typed(StatusCode::OK, body, "text/html; charset=utf-8");
    // The page is self-contained: no script, no outside resource may load.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    response
}

/// Plain text.
pub fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    typed(status, body, "text/plain; charset=utf-8")
}

/// Metrics in the OpenMetrics text format, with the type the sidecar's `/metrics` gives.
pub fn metrics(body: String) -> Response<ProxyBody> {
    typed(
        StatusCode::OK,
        body,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )
}
