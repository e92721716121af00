//! The request path, top to bottom: check framing and host → normalise the path → resolve
//! client and route → run the guard chain → forward → observe the response → account (history,
//! inventory, metrics). Everything else is a room it calls.

use crate::access_log::{Outcome, RequestLine};
use crate::exposure::inventory::Observation;
use crate::forward::hygiene::{self, ClientBodyError, ClientEnd, PrefixedBody};
use crate::forward::normalize;
use crate::forward::upstream::{UpstreamClient, UpstreamError};
use crate::identity::ResolvedClient;
use crate::metrics::{Disposition, Finished, UpstreamCall};
use crate::respond::{self, ProxyBody, ProxyError};
use crate::routing::Route;
use crate::sidecar::Sidecar;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use vigil_host::log_context;
use vigil_host::state::Ban;
use vigil_host::state::EventRecord;
use vigil_host::{Decision, Denial, Header, Plan};
use vigil_report::FindingKind;

/// Serves one request; with the access log on, its line is written once the response is sent.
pub async fn handle(
    sidecar: &Sidecar,
    upstream: &UpstreamClient,
    req: Request<Incoming>,
    client_end: &ClientEnd,
) -> Response<ProxyBody> {
    match &sidecar.access_log {
        None => serve(sidecar, upstream, req, client_end).await,
        Some(log) => {
            let line = RequestLine::of(&req, client_end.address());
            log.attach(line, serve(sidecar, upstream, req, client_end).await)
        }
    }
}

async fn serve(
    sidecar: &Sidecar,
    upstream: &UpstreamClient,
    req: Request<Incoming>,
    client_end: &ClientEnd,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = req.method().as_str().to_string();

    let (mut parts, body) = req.into_parts();
    let request_id = sidecar.request_id_for(&parts.headers);
    let listen = &sidecar.listen;
    if let Err(error) =
        hygiene::check_head_size(&parts, listen.max_header_bytes, listen.max_headers)
    {
        return refuse(sidecar, &method, "-", error, &request_id, started);
    }
    // A tunnel would carry bytes no guard sees, to wherever the client names.
    if parts.method == Method::CONNECT {
        let client = sidecar.clients.resolve_connection(
            client_end.address(),
            client_end.certificate(),
            &parts.headers,
        );
        let target = parts.uri.to_string();
        proxy_attempt(sidecar, &client, &method, format!("CONNECT {target}"), 405);
        return refuse(
            sidecar,
            &method,
            "-",
            ProxyError::NotAProxy,
            &request_id,
            started,
        );
    }
    let declared_length = match hygiene::check_framing(&parts.headers) {
        Ok(length) => length,
        Err(error) => return refuse(sidecar, &method, "-", error, &request_id, started),
    };
    if let Err(error) = hygiene::settle_host(&mut parts) {
        return refuse(sidecar, &method, "-", error, &request_id, started);
    }
    // Absolute form is valid HTTP/1.1 and served, but it is what a forward proxy gets: a client
    // sending it is probably looking for an open proxy.
    let absolute_form = (parts.version < Version::HTTP_2 && parts.uri.authority().is_some())
        .then(|| parts.uri.to_string());
    // From here on, routing, the guards, the inventory and the upstream see one spelling.
    if let Err(error) = normalise_target(&mut parts.uri, &sidecar.path) {
        return refuse(sidecar, &method, "-", error, &request_id, started);
    }
    let max_body = sidecar.listen.max_body_bytes;
    if declared_length.is_some_and(|l| l > max_body) {
        return refuse(
            sidecar,
            &method,
            "-",
            ProxyError::BodyTooLarge(max_body),
            &request_id,
            started,
        );
    }

    let client = sidecar.clients.resolve_connection(
        client_end.address(),
        client_end.certificate(),
        &parts.headers,
    );
    let route = sidecar.routes.resolve(&method, parts.uri.path());
    if let Some(target) = absolute_form {
        sidecar.inventory.record_client_finding(
            FindingKind::ProxyAttempt,
            &client.key,
            format!("absolute-form request {method} {target}"),
            sidecar.now_ms(),
        );
    }
    let chain = sidecar.chain();
    // An allowlisted client skips the guards and any ban; a banned one is refused before any
    // guard runs or its body is read.
    let plan = if sidecar.allowlisted(client.ip, &client.key) {
        Plan::empty()
    } else if let Some(ban) = sidecar.runtime.state().ban_of(&client.key) {
        return refuse_banned(
            sidecar,
            &method,
            &route,
            &client,
            &ban,
            &request_id,
            started,
        );
    } else {
        chain.plan(&method, &route.template)
    };
    // Guards that inspect bodies get a prefix; the body is then streamed on, prefix first.
    let body_wanted = plan.body_limit();
    let (body_prefix, body): (Option<Bytes>, ProxyBody) = if body_wanted > 0
        && !http_body::Body::is_end_stream(&body)
    {
        // A client trickling its body would otherwise hold the request (and its connection,
        // which counts as busy) for as long as it likes: the prefix gets the head's deadline.
        let deadline = sidecar.listen.header_read_timeout;
        match tokio::time::timeout(deadline, PrefixedBody::read(body, body_wanted)).await {
            Ok(Ok((prefix, rest))) => (Some(prefix), Limited::new(rest, max_body as usize).boxed()),
            Ok(Err(error)) => {
                tracing::info!(request_id, error = %hygiene::source_text(&error), "cannot read the request body");
                let error = ProxyError::BadRequest(MALFORMED_BODY.into());
                return refuse(
                    sidecar,
                    &method,
                    &route.template,
                    error,
                    &request_id,
                    started,
                );
            }
            Err(_) => {
                tracing::info!(
                    request_id,
                    waited_ms = deadline.as_millis() as u64,
                    "the request body did not arrive in time"
                );
                return refuse(
                    sidecar,
                    &method,
                    &route.template,
                    ProxyError::BodyTimeout,
                    &request_id,
                    started,
                );
            }
        }
    } else {
        (
            None,
            Limited::new(body.map_err(ClientBodyError), max_body as usize).boxed(),
        )
    };

    let mut guard_request = vigil_host::Request {
        method: method.clone(),
        path: parts.uri.path().to_string(),
        route: Some(route.template.to_string()),
        query: parts.uri.query().map(str::to_string),
        // Copied only for guards that read them: none on the route, no copy; only the fields
        // some guard there reads.
        headers: if plan.reads_request_headers() {
            guard_headers(&parts.headers, |name| plan.reads_request_header(name))
        } else {
            Vec::new()
        },
        client: vigil_host::Client {
            key: client.key.clone(),
            ip: client_end.text_of(client.ip),
            public: client.public,
            authenticated: client.authenticated,
        },
        received_ms: sidecar.now_ms(),
        body: body_prefix.map(|b| b.to_vec()),
    };
    let decision = log_context::about(&request_id, &client.key, &route.template, || {
        chain.evaluate(&plan, &mut guard_request)
    });
    sidecar.metrics.decision(&decision);
    let mut seen = Seen {
        chain: &chain,
        plan: &plan,
        request_id: &request_id,
        client: &client,
        route: &route,
        request: guard_request,
        decision,
        started,
        upstream: None,
    };
    if let Some(guard) = &seen.decision.state_unavailable {
        // The store logged once that it went away; each refusal is only worth a debug line.
        tracing::debug!(request_id, client = %client.key, method, route = %route.template, guard = %guard, "refused: the shared state store is unavailable (state.fallback = \"deny\")");
        let error = ProxyError::StateUnavailable(guard.to_string());
        return seen.answer(sidecar, error, &request_id);
    }
    if let Some(denial) = seen.decision.denial.clone() {
        if let Some(ban) = denial.ban {
            ban_client(sidecar, &client, &denial, ban, &request_id);
        }
        let mut response = respond::denial(&denial, &request_id);
        let outcome = seen.account(
            sidecar,
            response.status(),
            response.headers(),
            Disposition::Denied,
        );
        noted(&mut response, outcome);
        tracing::info!(
            request_id,
            client = %client.key,
            method,
            route = %route.template,
            guard = %denial.guard,
            status = denial.status,
            reason = %denial.reason,
            "denied by guard"
        );
        return response;
    }

    let upgrade = hygiene::allowed_upgrade(&parts.headers, &sidecar.listen.upgrades);
    let mut upstream_request = Request::from_parts(parts, body);
    let client_upgrade = upgrade
        .is_some()
        .then(|| hyper::upgrade::on(&mut upstream_request));
    let trusted_peer = sidecar.clients.is_trusted(client_end.address());
    let version = upstream_request.version();
    let headers = upstream_request.headers_mut();
    hygiene::strip_hop_by_hop(headers, upgrade.clone());
    hygiene::add_forwarding(headers, client_end, version, trusted_peer);
    // Parsed once: the answer carries the same value.
    let request_id_value = HeaderValue::from_str(&request_id).ok();
    if let Some(id) = &request_id_value {
        headers.insert(respond::X_REQUEST_ID, id.clone());
    }

    let sent = Instant::now();
    let answer = upstream.send(upstream_request).await;
    seen.upstream = Some(UpstreamCall {
        elapsed: sent.elapsed(),
        answered: answer.is_ok(),
    });
    let mut response = match answer {
        Ok(response) => response,
        Err(error) => {
            sidecar.metrics.upstream_error(error.kind());
            tracing::warn!(request_id, method, route = %route.template, error = ?error, "upstream request failed");
            let error = match error {
                UpstreamError::Timeout => ProxyError::UpstreamTimeout,
                UpstreamError::BodyTooLarge => ProxyError::BodyTooLarge(max_body),
                UpstreamError::ClientBody => ProxyError::BadRequest(MALFORMED_BODY.into()),
                UpstreamError::Exhausted(why) => ProxyError::Overloaded(why),
                UpstreamError::Invalid(why) => ProxyError::UpstreamInvalid(why),
                UpstreamError::Connect(why) | UpstreamError::Other(why) => {
                    ProxyError::UpstreamUnavailable(why)
                }
            };
            return seen.answer(sidecar, error, &request_id);
        }
    };

    let status = response.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    if switching
        && !upgrade
            .as_ref()
            .is_some_and(|offered| hygiene::accepts_upgrade(offered, response.headers()))
    {
        // Tunnelling a switch the client did not get to offer would carry bytes no guard sees.
        tracing::warn!(request_id, method, route = %route.template, "the upstream switched protocols to one the request did not offer; not tunnelled");
        let error = ProxyError::UpstreamInvalid("an unrequested protocol switch".into());
        return seen.answer(sidecar, error, &request_id);
    }
    // A monitor-mode guard's denial is not applied, but the request is counted apart.
    let verdict = if seen.decision.would_deny() {
        Disposition::Monitored
    } else {
        Disposition::Allowed
    };
    let outcome = seen.account(sidecar, status, response.headers(), verdict);
    noted(&mut response, outcome);
    tracing::debug!(request_id, client = %client.key, method, route = %route.template, status = status.as_u16(), "forwarded");

    let response_upgrade = match client_upgrade {
        Some(client_upgrade) if switching => {
            tunnel(
                client_upgrade,
                hyper::upgrade::on(&mut response),
                request_id.clone(),
            );
            response.headers().get(http::header::UPGRADE).cloned()
        }
        _ => None,
    };
    hygiene::strip_hop_by_hop(response.headers_mut(), response_upgrade);
    // hyper writes the status line in the response's version: an HTTP/1.0 upstream's would
    // tell an HTTP/1.1 client to close its connection and to expect no chunked bodies.
    if matches!(version, Version::HTTP_10 | Version::HTTP_11) {
        *response.version_mut() = version;
    }
    // Every answer carries the id the upstream was given, so a client can quote it.
    if let Some(id) = request_id_value {
        response.headers_mut().insert(respond::X_REQUEST_ID, id);
    }
    response.map(|body| {
        body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            .boxed()
    })
}

/// What a client whose request body cannot be read is told; the cause goes to the log.
const MALFORMED_BODY: &str =
    "the request body is malformed (broken chunked encoding or an early end)";

/// Rewrites the request target to its normalised path (and the query as it was), in origin
/// form: the upstream gets what the guards saw.
fn normalise_target(uri: &mut Uri, policy: &normalize::PathPolicy) -> Result<(), ProxyError> {
    let normalised = match normalize::path(uri.path(), policy) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(path)) => path,
        Err(error) => return Err(ProxyError::BadRequest(error.to_string())),
    };
    let target = match uri.query() {
        Some(query) => format!("{normalised}?{query}"),
        None => normalised,
    };
    let target = PathAndQuery::try_from(target)
        .map_err(|_| ProxyError::BadRequest("the request target is invalid".into()))?;
    *uri = Uri::from(target);
    Ok(())
}

/// Answers a request the proxy refuses before any guard runs.
fn refuse(
    sidecar: &Sidecar,
    method: &str,
    route: &str,
    error: ProxyError,
    request_id: &str,
    started: Instant,
) -> Response<ProxyBody> {
    tracing::info!(request_id, method, error = ?error, "request refused by the proxy");
    let mut response = error.response(request_id);
    if sidecar.access_log.is_some() {
        let outcome = Outcome {
            request_id: request_id.to_string(),
            route: (route != "-").then(|| route.into()),
            status: response.status().as_u16(),
            disposition: Some(Disposition::Error),
            ..Outcome::default()
        };
        noted(&mut response, Some(outcome));
    }
    sidecar.metrics.request(&Finished {
        method,
        route,
        status: response.status().as_u16(),
        verdict: Disposition::Error,
        elapsed: started.elapsed(),
        upstream: None,
    });
    response
}

/// Keeps a trace of a request the proxy refused before the guards: in the client's history
/// (which guards read) under `route`, and as a finding of `kind` for the next report.
fn record_refusal(
    sidecar: &Sidecar,
    client: &ResolvedClient,
    method: &str,
    route: &str,
    status: u16,
    kind: FindingKind,
    detail: String,
) {
    let at_ms = sidecar.now_ms();
    sidecar.runtime.state().record(
        &client.key,
        &EventRecord {
            at_ms,
            method,
            route,
            status,
            public: client.public,
            authenticated: client.authenticated,
        },
    );
    sidecar
        .inventory
        .record_client_finding(kind, &client.key, detail, at_ms);
}

fn proxy_attempt(
    sidecar: &Sidecar,
    client: &ResolvedClient,
    method: &str,
    detail: String,
    status: u16,
) {
    tracing::info!(client = %client.key, %detail, "forward proxy attempt refused");
    record_refusal(
        sidecar,
        client,
        method,
        PROXY_ATTEMPT_ROUTE,
        status,
        FindingKind::ProxyAttempt,
        detail,
    );
}

/// The route a `CONNECT` is recorded under in the client's history.
pub const PROXY_ATTEMPT_ROUTE: &str = "(connect)";
/// The route a request the HTTP parser refused is recorded under in the client's history.
pub const UNPARSED_ROUTE: &str = "(unparsed)";

/// Accounts for a request the HTTP parser refused with `status` before the pipeline saw it:
/// the client (known by its address only) gets it in its history and a finding, the metrics
/// and the access log count it.
pub fn refused_by_parser(sidecar: &Sidecar, peer: IpAddr, status: u16, why: &str) {
    let client = sidecar.clients.resolve(peer, &HeaderMap::new());
    record_refusal(
        sidecar,
        &client,
        "-",
        UNPARSED_ROUTE,
        status,
        FindingKind::MalformedRequest,
        format!("the HTTP parser refused a request with {status}: {why}"),
    );
    sidecar.metrics.request(&Finished {
        method: "-",
        route: "-",
        status,
        verdict: Disposition::Error,
        elapsed: Duration::ZERO,
        upstream: None,
    });
    if let Some(log) = &sidecar.access_log {
        log.unparsed(peer, status);
    }
}

/// Refuses a request from a banned client without running any guard.
fn refuse_banned(
    sidecar: &Sidecar,
    method: &str,
    route: &Route,
    client: &ResolvedClient,
    ban: &Ban,
    request_id: &str,
    started: Instant,
) -> Response<ProxyBody> {
    let mut response = respond::banned(ban, sidecar.now_ms(), request_id);
    let status = response.status().as_u16();
    if sidecar.access_log.is_some() {
        let outcome = Outcome {
            request_id: request_id.to_string(),
            client: Some(client.key.clone()),
            ip: Some(client.ip),
            route: Some(route.template.clone()),
            status,
            disposition: Some(Disposition::Denied),
            denied_by: Some(ban.by.clone()),
            ..Outcome::default()
        };
        noted(&mut response, Some(outcome));
    }
    tracing::info!(request_id, client = %client.key, method, route = %route.template, banned_by = %ban.by, "refused: the client is banned");
    sidecar.inventory.record(&Observation {
        method,
        route,
        client,
        status,
        denied_by: Some(&ban.by),
        would_deny: &[],
        at_ms: sidecar.now_ms(),
    });
    sidecar.metrics.request(&Finished {
        method,
        route: &route.template,
        status,
        verdict: Disposition::Denied,
        elapsed: started.elapsed(),
        upstream: None,
    });
    response
}

/// Bans the client that a guard with `ban` in its table just refused.
fn ban_client(
    sidecar: &Sidecar,
    client: &ResolvedClient,
    denial: &Denial,
    ban: Duration,
    request_id: &str,
) {
    sidecar.ban(
        &client.key,
        denial.guard.clone(),
        denial.reason.clone(),
        ban,
    );
    tracing::warn!(request_id, client = %client.key, guard = %denial.guard, reason = %denial.reason, ban_secs = ban.as_secs(), "client banned");
}

/// A request that went through the guard chain, awaiting its outcome.
struct Seen<'a> {
    chain: &'a vigil_host::Chain,
    plan: &'a Plan,
    request_id: &'a str,
    client: &'a ResolvedClient,
    route: &'a Route,
    request: vigil_host::Request,
    decision: Decision,
    started: Instant,
    /// The exchange with the upstream, once there was one.
    upstream: Option<UpstreamCall>,
}

impl Seen<'_> {
    /// Answers the request with `error` in place of the upstream, and accounts for it.
    fn answer(
        &mut self,
        sidecar: &Sidecar,
        error: ProxyError,
        request_id: &str,
    ) -> Response<ProxyBody> {
        let mut response = error.response(request_id);
        let outcome = self.account(
            sidecar,
            response.status(),
            response.headers(),
            Disposition::Error,
        );
        noted(&mut response, outcome);
        response
    }

    /// The last step of every such request: history, `on-response`, inventory, metrics; and
    /// what the access log is to say of it, when it is on.
    fn account(
        &mut self,
        sidecar: &Sidecar,
        status: StatusCode,
        headers: &HeaderMap,
        verdict: Disposition,
    ) -> Option<Outcome> {
        // Only guards that saw the request and observe this status see the response; only those
        // that read headers get them.
        let guard_view = if self.plan.reads_response_headers(status.as_u16()) {
            guard_headers(headers, |_| true)
        } else {
            Vec::new()
        };
        let response = vigil_host::Response {
            status: status.as_u16(),
            headers: guard_view,
            latency_us: self.started.elapsed().as_micros() as u64,
        };
        let (chain, decision) = (self.chain, &self.decision);
        let request = &mut self.request;
        log_context::about(
            self.request_id,
            &self.client.key,
            &self.route.template,
            || chain.observe(request, &response, decision),
        );
        let denied_by = match verdict {
            Disposition::Denied => self.decision.denial.as_ref().map(|d| &*d.guard),
            _ => None,
        };
        // Empty, and so not allocated, unless a monitor-mode guard denied.
        let would_deny: Vec<&str> = self
            .decision
            .outcomes
            .iter()
            .filter(|outcome| outcome.would_deny())
            .map(|outcome| &*outcome.guard)
            .collect();
        // Before counting: the response that announces a new version was served by it.
        sidecar.inventory.see_version(headers, || sidecar.now_ms());
        sidecar.inventory.record(&Observation {
            method: &self.request.method,
            route: self.route,
            client: self.client,
            status: status.as_u16(),
            denied_by,
            would_deny: &would_deny,
            at_ms: sidecar.now_ms(),
        });
        sidecar.metrics.request(&Finished {
            method: &self.request.method,
            route: &self.route.template,
            status: status.as_u16(),
            verdict,
            elapsed: self.started.elapsed(),
            upstream: self.upstream,
        });
        sidecar.access_log.as_ref()?;
        Some(Outcome {
            request_id: self.request_id.to_string(),
            client: Some(self.client.key.clone()),
            ip: Some(self.client.ip),
            route: Some(self.route.template.clone()),
            status: status.as_u16(),
            disposition: Some(verdict),
            denied_by: denied_by.and(self.decision.denial.as_ref().map(|d| d.guard.clone())),
            verdicts: Outcome::verdicts_of(&self.decision),
            upstream: self.upstream.map(|call| call.elapsed),
        })
    }
}

/// Carries `outcome` on the response to the access log, which reads it when the body ends.
fn noted<B>(response: &mut Response<B>, outcome: Option<Outcome>) {
    if let Some(outcome) = outcome {
        response.extensions_mut().insert(outcome);
    }
}

/// Copies bytes both ways between the client and the upstream once both switched protocols.
fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    request_id: String,
) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::warn!(request_id, %error, "protocol upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(request_id, %error, "upgraded connection ended with an error");
        }
    });
}

/// The header fields `wanted` names, copied for the guards.
pub(crate) fn guard_headers(headers: &HeaderMap, wanted: impl Fn(&str) -> bool) -> Vec<Header> {
    headers
        .iter()
        .filter(|(name, _)| wanted(name.as_str()))
        .map(|(name, value)| Header {
            name: name.as_str().to_string(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}
