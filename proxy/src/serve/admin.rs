//! The admin API, on loopback by default: health, readiness, metrics, the loaded guards, the
//! exposure inventory, and reload.

use crate::exposure::inventory::ADMIN_SOURCE;
use crate::metrics::Format;
use crate::respond::{full, ProxyBody};
use crate::sidecar::Sidecar;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vigil_host::state::MAX_BAN;
use vigil_host::{FaultKind, HeaderFields, Mode, OnError};

/// Serves one admin request.
pub async fn handle(sidecar: Arc<Sidecar>, req: Request<Incoming>) -> Response<ProxyBody> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match sidecar.readiness().await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
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
        (&Method::GET, "/decisions") => json(StatusCode::OK, &decisions(&sidecar)),
        (&Method::GET, "/config") => json(StatusCode::OK, &sidecar.effective_config()),
        (&Method::POST, "/decisions") => {
            let body = Limited::new(req.into_body(), MAX_ADMIN_BODY_BYTES)
                .collect()
                .await;
            match body {
                Ok(body) => add_decision(&sidecar, &body.to_bytes()),
                Err(_) => problem(
                    StatusCode::BAD_REQUEST,
                    "the body could not be read (at most 64 KiB)",
                ),
            }
        }
        (&Method::DELETE, path) if path.starts_with("/decisions/") => {
            match client_in_path(path, "/decisions/") {
                Some(client) if sidecar.runtime.state().lift_ban(&client) => {
                    tracing::info!(%client, "ban lifted through the admin API");
                    json(StatusCode::OK, &serde_json::json!({"lifted": client}))
                }
                Some(client) => problem(
                    StatusCode::NOT_FOUND,
                    &format!("no ban in force for client {client:?}"),
                ),
                None => problem(
                    StatusCode::BAD_REQUEST,
                    "the client key in the path is empty or not valid percent-encoded UTF-8",
                ),
            }
        }
        (&Method::DELETE, path) if path.starts_with("/clients/") => {
            match client_in_path(path, "/clients/") {
                Some(client) => {
                    let had_state = sidecar.runtime.state().forget_client(&client);
                    tracing::info!(%client, had_state, "client state forgotten through the admin API");
                    json(
                        StatusCode::OK,
                        &serde_json::json!({"forgotten": client, "had_state": had_state}),
                    )
                }
                None => problem(
                    StatusCode::BAD_REQUEST,
                    "the client key in the path is empty or not valid percent-encoded UTF-8",
                ),
            }
        }
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
        (
            _,
            "/healthz" | "/readyz" | "/metrics" | "/guards" | "/guards/reload" | "/exposure"
            | "/decisions" | "/config",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /metrics, /config, /guards, /exposure, /decisions, \
             DELETE /decisions/{client}, DELETE /clients/{client} or POST /guards/reload\n",
        ),
    }
}

/// Largest body the admin API reads.
const MAX_ADMIN_BODY_BYTES: usize = 64 << 10;

const MAX_CLIENT_KEY_BYTES: usize = 1024;
const MAX_REASON_BYTES: usize = 512;

/// The bans in force.
fn decisions(sidecar: &Sidecar) -> serde_json::Value {
    let now = sidecar.now_ms();
    let list: Vec<serde_json::Value> = sidecar
        .runtime
        .state()
        .bans_in_force()
        .into_iter()
        .map(|(client, ban)| {
            serde_json::json!({
                "client": client,
                "by": &*ban.by,
                "reason": ban.reason,
                "until_ms": ban.until_ms,
                "remaining_secs": ban.until_ms.saturating_sub(now).div_ceil(1000),
            })
        })
        .collect();
    serde_json::json!({ "decisions": list })
}

/// What `POST /decisions` takes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualBan {
    client: String,
    duration: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Bans a client by hand.
fn add_decision(sidecar: &Sidecar, body: &[u8]) -> Response<ProxyBody> {
    let wanted: ManualBan = match serde_json::from_slice(body) {
        Ok(wanted) => wanted,
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!(
                "expected {{\"client\": KEY, \"duration\": \"15m\", \"reason\": TEXT}}: {error}"
            ),
            )
        }
    };
    if wanted.client.is_empty() || wanted.client.len() > MAX_CLIENT_KEY_BYTES {
        return problem(StatusCode::BAD_REQUEST, "client: must be 1 to 1024 bytes");
    }
    let duration = match vigil_common::config::duration("duration", &wanted.duration) {
        Ok(d) if !d.is_zero() && d <= MAX_BAN => d,
        Ok(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "duration: must be more than 0 and at most 30d",
            )
        }
        Err(error) => return problem(StatusCode::BAD_REQUEST, &error),
    };
    let reason = wanted
        .reason
        .unwrap_or_else(|| "banned by an operator".into());
    if reason.len() > MAX_REASON_BYTES {
        return problem(StatusCode::BAD_REQUEST, "reason: at most 512 bytes");
    }
    tracing::info!(client = %wanted.client, %reason, ban_secs = duration.as_secs(), "client banned through the admin API");
    let until_ms = sidecar.ban(
        &wanted.client,
        ADMIN_SOURCE.into(),
        reason.clone(),
        duration,
    );
    json(
        StatusCode::CREATED,
        &serde_json::json!({"client": wanted.client, "by": ADMIN_SOURCE, "reason": reason, "until_ms": until_ms}),
    )
}

/// The client key after `prefix` in `path`, percent-decoded.
fn client_in_path(path: &str, prefix: &str) -> Option<String> {
    let encoded = path.strip_prefix(prefix)?;
    let key = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()?;
    (!key.is_empty()).then(|| key.into_owned())
}

/// An admin API error, as JSON.
fn problem(status: StatusCode, detail: &str) -> Response<ProxyBody> {
    json(
        status,
        &serde_json::json!({"status": status.as_u16(), "error": detail}),
    )
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
                    "state_unavailable": stats.faults(FaultKind::StateUnavailable),
                },
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<ProxyBody> {
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
