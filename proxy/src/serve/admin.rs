//! The admin API, on loopback by default: health, readiness, metrics, the loaded guards, the
//! exposure inventory, and reload.

use crate::metrics::Format;
use crate::respond::{full, ProxyBody};
use crate::sidecar::Sidecar;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vigil_host::{FaultKind, HeaderFields, Mode, OnError};

/// Serves one admin request.
pub async fn handle(sidecar: Arc<Sidecar>, req: Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if sidecar.is_ready() => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/readyz") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (&Method::GET, "/metrics") => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let mut response = Response::new(full(sidecar.render_metrics(format)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            // The answer depends on the request's Accept header.
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept"));
            response
        }
        (&Method::GET, "/guards") => json(StatusCode::OK, &guards(&sidecar)),
        (&Method::GET, "/exposure") => {
            sidecar.collect_guard_findings();
            json(StatusCode::OK, &sidecar.inventory.exposure())
        }
        (&Method::POST, "/guards/reload") => {
            let reloading = sidecar.clone();
            let result = tokio::task::spawn_blocking(move || reloading.reload()).await;
            match result {
                Ok(Ok(report)) => json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "reloaded", "guards": report.guards, "needs_restart": report.needs_restart}),
                ),
                Ok(Err(error)) => json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({"status": "failed", "error": error, "serving": guards(&sidecar)}),
                ),
                Err(error) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"status": "failed", "error": error.to_string()}),
                ),
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/guards" | "/guards/reload" | "/exposure") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /metrics, /guards, /exposure or POST /guards/reload\n",
        ),
    }
}

fn guards(sidecar: &Sidecar) -> serde_json::Value {
    let chain = sidecar.chain();
    let list: Vec<serde_json::Value> = chain
        .guards()
        .iter()
        .map(|g| {
            let spec = g.spec();
            let stats = g.stats();
            serde_json::json!({
                "name": g.name(),
                "content_hash": format!("{:016x}", g.content_hash()),
                "world": g.world().as_str(),
                "mode": if spec.mode == Mode::Monitor { "monitor" } else { "enforce" },
                "on_error": if spec.on_error == OnError::Deny { "deny" } else { "allow" },
                "routes": spec.routes.iter().map(|r| r.as_str().to_string()).collect::<Vec<_>>(),
                "needs": {
                    "headers": match g.header_fields() {
                        HeaderFields::None => serde_json::json!(false),
                        HeaderFields::All => serde_json::json!(true),
                        HeaderFields::Named(names) => serde_json::json!(names),
                    },
                    "responses": g.needs().responses.to_string(),
                },
                "requests": stats.requests.load(Ordering::Relaxed),
                "responses": stats.responses.load(Ordering::Relaxed),
                "denials": stats.denials.load(Ordering::Relaxed),
                "faults": {
                    "deadline": stats.faults(FaultKind::Deadline),
                    "limit": stats.faults(FaultKind::Limit),
                    "trap": stats.faults(FaultKind::Trap),
                    "instantiate": stats.faults(FaultKind::Instantiate),
                },
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<ProxyBody> {
    let body = serde_json::to_string(value).unwrap_or_else(|e| {
        serde_json::json!({"error": format!("cannot serialise the answer: {e}")}).to_string()
    });
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
