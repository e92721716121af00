//! The collector's read side: the dashboard at `/`, the JSON API under `/api/` and the
//! metrics at `/metrics`.

use super::dashboard;
use super::metrics::Operation;
use super::reply;
use super::store::{EndpointQuery, FindingQuery, StoreError};
use super::vulns;
use super::Collector;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use vigil_common::reply::ProxyBody;

/// Most records one listing returns.
pub const MAX_LIMIT: usize = 1_000;
/// Records a listing returns when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;

const ROUTES: &str = "/, /healthz, /metrics, /api/services, /api/endpoints, /api/findings, \
                      /api/clients/denied, /api/vulnerabilities";

/// Serves one read request.
pub async fn handle(collector: Arc<Collector>, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET {
        return reply::problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard and the API are read-only: use GET",
        );
    }
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let result = match path.as_str() {
        "/" => dashboard(&collector).await,
        "/healthz" => Ok(reply::text(StatusCode::OK, "ok\n")),
        "/metrics" => Ok(metrics_page(&collector).await),
        "/api/services" => services(&collector, &query).await,
        "/api/endpoints" => endpoints(&collector, &query).await,
        "/api/findings" => findings(&collector, &query).await,
        "/api/clients/denied" => denied_clients(&collector, &query).await,
        "/api/vulnerabilities" => vulnerabilities(&collector, &query).await,
        _ => Err((StatusCode::NOT_FOUND, format!("no such page; try {ROUTES}"))),
    };
    result.unwrap_or_else(|(status, detail)| reply::problem(status, &detail))
}

type Answer = Result<Response<ProxyBody>, (StatusCode, String)>;

/// Query-string parameters, checked against what each route accepts.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn only(&self, allowed: &[&str]) -> Result<(), (StatusCode, String)> {
        match self.0.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((key, _)) => Err(bad(format!(
                "unknown parameter {key:?}; this route takes {}",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ))),
            None => Ok(()),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> Result<bool, (StatusCode, String)> {
        match self.get(key) {
            None | Some("false" | "0") => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some(other) => Err(bad(format!("{key}: expected true or false, got {other:?}"))),
        }
    }

    fn limit(&self) -> Result<usize, (StatusCode, String)> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(bad(format!(
                    "limit: expected a number from 1 to {MAX_LIMIT}, got {text:?}"
                ))),
            },
        }
    }
}

fn bad(detail: String) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, detail)
}

/// Turns a failed query into a 503, counting it.
fn unavailable(collector: &Collector) -> impl FnOnce(StoreError) -> (StatusCode, String) + '_ {
    move |error| {
        collector.metrics.store_error(Operation::Read);
        tracing::error!(%error, "reading the store failed");
        (StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }
}

/// The metrics, with the services and endpoints counted now. A failed count still answers,
/// with the counts of the last scrape, so the store's failure shows in `store_errors`.
pub async fn metrics_page(collector: &Arc<Collector>) -> Response<ProxyBody> {
    match collector.with_store(|store| store.totals()).await {
        Ok(totals) => collector.metrics.known(totals),
        Err(error) => {
            collector.metrics.store_error(Operation::Read);
            tracing::error!(%error, "counting services and endpoints for /metrics failed");
        }
    }
    reply::metrics(collector.metrics.render())
}

async fn services(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&[])?;
    let services = collector
        .with_store(|store| store.services())
        .await
        .map_err(unavailable(collector))?;
    Ok(reply::json(StatusCode::OK, &services))
}

async fn endpoints(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&[
        "service",
        "public",
        "unauthenticated",
        "shadow",
        "zombie",
        "internal",
    ])?;
    let filter = EndpointQuery {
        service: query.get("service").map(str::to_string),
        public: query.flag("public")?,
        unauthenticated: query.flag("unauthenticated")?,
        shadow: query.flag("shadow")?,
        zombie: query.flag("zombie")?,
        internal_reached_publicly: query.flag("internal")?,
    };
    let endpoints = collector
        .with_store(move |store| store.endpoints(&filter))
        .await
        .map_err(unavailable(collector))?;
    Ok(reply::json(StatusCode::OK, &endpoints))
}

async fn findings(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&["service", "kind", "limit"])?;
    let filter = FindingQuery {
        service: query.get("service").map(str::to_string),
        kind: query.get("kind").map(str::to_string),
        without_client_denials: false,
        limit: query.limit()?,
    };
    let findings = collector
        .with_store(move |store| store.findings(&filter))
        .await
        .map_err(unavailable(collector))?;
    Ok(reply::json(StatusCode::OK, &findings))
}

async fn denied_clients(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&["service", "limit"])?;
    let service = query.get("service").map(str::to_string);
    let limit = query.limit()?;
    let clients = collector
        .with_store(move |store| store.denied_clients(service.as_deref(), limit))
        .await
        .map_err(unavailable(collector))?;
    Ok(reply::json(StatusCode::OK, &clients))
}

async fn vulnerabilities(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&["service", "limit"])?;
    let service = query.get("service").map(str::to_string);
    let limit = query.limit()?;
    let endpoints = collector
        .with_store(|store| store.endpoints(&EndpointQuery::default()))
        .await
        .map_err(unavailable(collector))?;
    let mut ranked = vulns::rank(&collector.vulnerabilities, &endpoints);
    if let Some(service) = service {
        ranked.retain(|r| {
            r.matched_service.as_ref() == Some(&service)
                || r.vulnerability.service.as_ref() == Some(&service)
        });
    }
    ranked.truncate(limit);
    Ok(reply::json(StatusCode::OK, &ranked))
}

async fn dashboard(collector: &Arc<Collector>) -> Answer {
    let (services, endpoints, findings, denied) = collector
        .with_store(|store| {
            Ok((
                store.services()?,
                store.endpoints(&EndpointQuery::default())?,
                store.findings(&FindingQuery {
                    service: None,
                    kind: None,
                    without_client_denials: true,
                    limit: dashboard::ROWS,
                })?,
                store.denied_clients(None, dashboard::ROWS)?,
            ))
        })
        .await
        .map_err(unavailable(collector))?;
    let ranked = vulns::rank(&collector.vulnerabilities, &endpoints);
    let page = dashboard::render(&dashboard::View {
        services: &services,
        endpoints: &endpoints,
        findings: &findings,
        denied: &denied,
        vulnerabilities: &ranked,
        now_ms: super::now_ms(),
    });
    Ok(reply::html(page))
}
