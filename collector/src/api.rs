//! The collector's read side: the dashboard at `/`, the JSON API under `/api/` and the
//! metrics at `/metrics`.

use super::config::ApiAccess;
use super::dashboard;
use super::fixes;
use super::metrics::Operation;
use super::reply;
use super::store::{
    DeniedClient, Endpoint, EndpointQuery, Exposure, FindingQuery, FindingRecord, Store, StoreError,
};
use super::vulns::{self, RankedVulnerability};
use super::Collector;
use base64::Engine as _;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use vigil_common::config::duration;
use vigil_common::reply::ProxyBody;

/// Most records one listing returns.
pub const MAX_LIMIT: usize = 1_000;
/// Records a listing returns when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;

const ROUTES: &str = "/, /endpoint, /healthz, /metrics, /api/services, /api/endpoints, \
                      /api/findings, /api/clients/denied, /api/vulnerabilities, /api/versions";

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "vigil collector";

/// Serves one read request.
pub async fn handle(collector: Arc<Collector>, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    // Health checks come from probes that carry no credential and learn nothing from it.
    if path != "/healthz" {
        if let Err(refused) = authorize(&collector.config.api.access, req.headers()) {
            return refused;
        }
    }
    if req.method() != Method::GET {
        return reply::problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard and the API are read-only: use GET",
        );
    }
    let query = Query::parse(req.uri().query());
    let result = match path.as_str() {
        "/" => dashboard(&collector, &query).await,
        "/endpoint" => endpoint_page(&collector, &query).await,
        "/healthz" => Ok(reply::text(StatusCode::OK, "ok\n")),
        "/metrics" => Ok(metrics_page(&collector).await),
        "/api/services" => services(&collector, &query).await,
        "/api/endpoints" => endpoints(&collector, &query).await,
        "/api/findings" => findings(&collector, &query).await,
        "/api/clients/denied" => denied_clients(&collector, &query).await,
        "/api/vulnerabilities" => vulnerabilities(&collector, &query).await,
        "/api/versions" => versions(&collector, &query).await,
        _ => Err((StatusCode::NOT_FOUND, format!("no such page; try {ROUTES}"))),
    };
    result.unwrap_or_else(|(status, detail)| reply::problem(status, &detail))
}

/// Lets the request through when `access` requires nothing or the request carries one of the
/// configured credentials; else a 401 whose `WWW-Authenticate` names each accepted scheme.
#[allow(clippy::result_large_err)]
pub fn authorize(access: &ApiAccess, headers: &HeaderMap) -> Result<(), Response<ProxyBody>> {
    if !access.is_protected() {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes().trim_ascii());
    let detail = match presented {
        None => "this collector's dashboard and API need a credential (Authorization header)",
        Some(value) if credential_matches(access, value) => return Ok(()),
        Some(_) => "the credential is not one this collector accepts",
    };
    let mut refused = reply::problem(StatusCode::UNAUTHORIZED, detail);
    let challenges = [
        access
            .token
            .as_ref()
            .map(|_| format!("Bearer realm=\"{REALM}\"")),
        access
            .basic
            .as_ref()
            .map(|_| format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"")),
    ];
    for challenge in challenges.into_iter().flatten() {
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            refused
                .headers_mut()
                .append(header::WWW_AUTHENTICATE, value);
        }
    }
    Err(refused)
}

/// Whether an `Authorization` value is the configured token or user and password. Every
/// comparison runs over the whole secret, so the time taken does not tell how close a guess
/// came.
fn credential_matches(access: &ApiAccess, value: &[u8]) -> bool {
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(space) => (&value[..space], value[space + 1..].trim_ascii()),
        None => (value, &b""[..]),
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return access
            .token
            .as_ref()
            .is_some_and(|token| constant_time_eq(token.as_bytes(), rest));
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let Some(basic) = &access.basic else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        // Both are compared even when the first differs.
        let user_ok = constant_time_eq(basic.username.as_bytes(), user);
        let password_ok = constant_time_eq(basic.password.as_bytes(), password);
        return user_ok & password_ok;
    }
    false
}

/// Compares two byte strings in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    /// A flag that is `default` when absent.
    fn flag_or(&self, key: &str, default: bool) -> Result<bool, (StatusCode, String)> {
        match self.get(key) {
            None => Ok(default),
            Some(_) => self.flag(key),
        }
    }

    /// `service` and `since`; empty values (a form's "all") mean no narrowing.
    fn scope(&self, now_ms: u64) -> Result<Scope, (StatusCode, String)> {
        let non_empty = |key: &str| self.get(key).filter(|v| !v.is_empty()).map(str::to_string);
        let since = non_empty("since");
        let since_ms = match &since {
            None => None,
            Some(text) => {
                let range = duration("since", text).map_err(|e| {
                    bad(format!(
                        "{e}; give a duration such as 1h, 24h or 7d, or leave since out for all the collector keeps"
                    ))
                })?;
                Some(now_ms.saturating_sub(range.as_millis() as u64))
            }
        };
        Ok(Scope {
            service: non_empty("service"),
            since,
            since_ms,
        })
    }

    /// `exposure`, one of the values `/api/endpoints` lists.
    fn exposure(&self) -> Result<Option<Exposure>, (StatusCode, String)> {
        match self.get("exposure") {
            None => Ok(None),
            Some("public-unauthenticated") => Ok(Some(Exposure::PublicUnauthenticated)),
            Some("public") => Ok(Some(Exposure::Public)),
            Some("internal") => Ok(Some(Exposure::Internal)),
            Some("never") => Ok(Some(Exposure::Never)),
            Some(other) => Err(bad(format!(
                "exposure: {other:?} is not one of public-unauthenticated, public, internal, never"
            ))),
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

/// The service and time range the dashboard and the listings are narrowed to, from the
/// `service` and `since` parameters.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only this service; `None`: every service.
    pub service: Option<String>,
    /// `since` as given (`24h`), to carry it into links.
    pub since: Option<String>,
    /// Start of the time range, ms since the Unix epoch; `None`: all the store keeps.
    pub since_ms: Option<u64>,
}

impl Scope {
    /// The narrowing [`Store::endpoints`] does itself.
    fn endpoint_query(&self) -> EndpointQuery {
        EndpointQuery {
            service: self.service.clone(),
            ..EndpointQuery::default()
        }
    }
}

/// Whether `endpoint` belongs to the time range starting at `since_ms`: reached within it, or
/// a zombie (documented and never reached in what the store keeps, so not within the range
/// either).
pub fn in_range(endpoint: &Endpoint, since_ms: Option<u64>) -> bool {
    since_ms.is_none_or(|since| {
        endpoint.zombie || endpoint.last_seen_ms.is_some_and(|last| last >= since)
    })
}

/// Endpoints matching `filter`, reached within the range, of `exposure` when given.
fn endpoints_in(
    store: &dyn Store,
    filter: &EndpointQuery,
    since_ms: Option<u64>,
    exposure: Option<Exposure>,
) -> Result<Vec<Endpoint>, StoreError> {
    let mut endpoints = store.endpoints(filter)?;
    endpoints.retain(|e| in_range(e, since_ms) && exposure.is_none_or(|x| e.exposure == x));
    Ok(endpoints)
}

/// Findings matching `filter`, last seen within the range. The store lists them newest
/// first, so dropping the older ones after the limit leaves exactly the newest in range.
fn findings_in(
    store: &dyn Store,
    filter: &FindingQuery,
    since_ms: Option<u64>,
) -> Result<Vec<FindingRecord>, StoreError> {
    let mut findings = store.findings(filter)?;
    findings.retain(|f| since_ms.is_none_or(|since| f.at_ms >= since));
    Ok(findings)
}

/// The `limit` clients denied most whose latest denial falls within the range. With a range,
/// they are chosen among the [`MAX_LIMIT`] clients denied most over all the store keeps.
fn denied_in(
    store: &dyn Store,
    service: Option<&str>,
    limit: usize,
    since_ms: Option<u64>,
) -> Result<Vec<DeniedClient>, StoreError> {
    let Some(since) = since_ms else {
        return store.denied_clients(service, limit);
    };
    let mut clients = store.denied_clients(service, MAX_LIMIT)?;
    clients.retain(|c| c.at_ms >= since);
    clients.truncate(limit);
    Ok(clients)
}

/// Vulnerabilities ranked against `endpoints` (every service's, within the range), then
/// narrowed to `service`.
fn ranked_in(
    known: &[vulns::Vulnerability],
    endpoints: &[Endpoint],
    service: Option<&str>,
    limit: usize,
) -> Vec<RankedVulnerability> {
    let mut ranked = vulns::rank(known, endpoints);
    if let Some(service) = service {
        ranked.retain(|r| {
            r.matched_service.as_deref() == Some(service)
                || r.vulnerability.service.as_deref() == Some(service)
        });
    }
    ranked.truncate(limit);
    ranked
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
        "since",
        "public",
        "unauthenticated",
        "shadow",
        "zombie",
        "internal",
        "exposure",
    ])?;
    let scope = query.scope(super::now_ms())?;
    let filter = EndpointQuery {
        public: query.flag("public")?,
        unauthenticated: query.flag("unauthenticated")?,
        shadow: query.flag("shadow")?,
        zombie: query.flag("zombie")?,
        internal_reached_publicly: query.flag("internal")?,
        ..scope.endpoint_query()
    };
    let exposure = query.exposure()?;
    let endpoints = collector
        .with_store(move |store| endpoints_in(store, &filter, scope.since_ms, exposure))
        .await
        .map_err(unavailable(collector))?;
    Ok(reply::json(StatusCode::OK, &endpoints))
}

async fn findings(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&["service", "since", "kind", "denials", "limit"])?;
    let scope = query.scope(super::now_ms())?;
    let filter = FindingQuery {
        service: scope.service.clone(),
        kind: query.get("kind").map(str::to_string),
        without_client_denials: !query.flag_or("denials", true)?,
        limit: query.limit()?,
    };
    let findings = collector
        .with_store(move |store| findings_in(store, &filter, scope.since_ms))
        .await
        .map_err(unavailable(collector))?;
    Ok(reply::json(StatusCode::OK, &findings))
}

async fn denied_clients(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&["service", "since", "limit"])?;
    let scope = query.scope(super::now_ms())?;
    let limit = query.limit()?;
    let clients = collector
        .with_store(move |store| denied_in(store, scope.service.as_deref(), limit, scope.since_ms))
        .await
        .map_err(unavailable(collector))?;
    Ok(reply::json(StatusCode::OK, &clients))
}

async fn vulnerabilities(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&["service", "since", "limit"])?;
    let scope = query.scope(super::now_ms())?;
    let limit = query.limit()?;
    let since_ms = scope.since_ms;
    let endpoints = collector
        .with_store(move |store| endpoints_in(store, &EndpointQuery::default(), since_ms, None))
        .await
        .map_err(unavailable(collector))?;
    let ranked = ranked_in(
        &collector.vulnerabilities,
        &endpoints,
        scope.service.as_deref(),
        limit,
    );
    let ranked = with_fixes(collector, ranked).await?;
    Ok(reply::json(StatusCode::OK, &ranked))
}

/// The ranked vulnerabilities with where their fixes stand.
async fn with_fixes(
    collector: &Arc<Collector>,
    mut ranked: Vec<RankedVulnerability>,
) -> Result<Vec<RankedVulnerability>, (StatusCode, String)> {
    if ranked.iter().all(|r| r.vulnerability.fixed_in.is_none()) {
        return Ok(ranked);
    }
    let verify_after_ms = collector.config.vulnerabilities.verify_after.as_millis() as u64;
    collector
        .with_store(move |store| {
            fixes::attach(store, &mut ranked, verify_after_ms, super::now_ms())?;
            Ok(ranked)
        })
        .await
        .map_err(unavailable(collector))
}

async fn versions(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&["service"])?;
    let service = query
        .get("service")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let versions = collector
        .with_store(move |store| store.fleet_versions(service.as_deref()))
        .await
        .map_err(unavailable(collector))?;
    Ok(reply::json(StatusCode::OK, &versions))
}

async fn dashboard(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&["service", "since"])?;
    let now_ms = super::now_ms();
    let scope = query.scope(now_ms)?;
    let (since_ms, service) = (scope.since_ms, scope.service.clone());
    let (services, all, findings, denied) = collector
        .with_store(move |store| {
            Ok((
                store.services()?,
                endpoints_in(store, &EndpointQuery::default(), since_ms, None)?,
                findings_in(
                    store,
                    &FindingQuery {
                        service: service.clone(),
                        kind: None,
                        without_client_denials: true,
                        limit: MAX_LIMIT,
                    },
                    since_ms,
                )?,
                denied_in(store, service.as_deref(), dashboard::ROWS, since_ms)?,
            ))
        })
        .await
        .map_err(unavailable(collector))?;
    let ranked = ranked_in(
        &collector.vulnerabilities,
        &all,
        scope.service.as_deref(),
        MAX_LIMIT,
    );
    let ranked = with_fixes(collector, ranked).await?;
    let in_scope = scope.endpoint_query();
    let endpoints: Vec<Endpoint> = all.into_iter().filter(|e| in_scope.matches(e)).collect();
    let page = dashboard::render(&dashboard::View {
        services: &services,
        scope: &scope,
        endpoints: &endpoints,
        findings: &findings,
        denied: &denied,
        vulnerabilities: &ranked,
        retention: collector.config.retention,
        now_ms,
    });
    Ok(reply::html(page))
}

async fn endpoint_page(collector: &Arc<Collector>, query: &Query) -> Answer {
    query.only(&["service", "method", "route", "since"])?;
    let required = |key: &str| {
        query
            .get(key)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                bad(format!(
                    "{key}: missing; /endpoint takes service, method and route (and since)"
                ))
            })
    };
    let (service, method, route) = (
        required("service")?,
        required("method")?,
        required("route")?,
    );
    let now_ms = super::now_ms();
    let scope = query.scope(now_ms)?;
    let (s, m, r) = (service.clone(), method.clone(), route.clone());
    let (all, findings) = collector
        .with_store(move |store| {
            let findings = store.findings(&FindingQuery {
                service: Some(s),
                kind: None,
                without_client_denials: false,
                limit: MAX_LIMIT,
            })?;
            Ok((store.endpoints(&EndpointQuery::default())?, findings))
        })
        .await
        .map_err(unavailable(collector))?;
    let Some(endpoint) = all
        .iter()
        .find(|e| e.service == service && e.method == method && e.route == route)
    else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("service {service:?} has no endpoint {method} {route:?} in the store"),
        ));
    };
    let findings_capped = findings.len() >= MAX_LIMIT;
    let findings: Vec<FindingRecord> = findings
        .into_iter()
        .filter(|f| f.method.as_deref() == Some(&m) && f.route.as_deref() == Some(&r))
        .collect();
    let mut ranked = vulns::rank(&collector.vulnerabilities, &all);
    ranked.retain(|v| {
        v.matched_service.as_deref() == Some(&service)
            && v.matched_route.as_deref() == Some(&route)
            && v.vulnerability.method.eq_ignore_ascii_case(&method)
    });
    let ranked = with_fixes(collector, ranked).await?;
    let page = dashboard::render_endpoint(&dashboard::EndpointView {
        endpoint,
        findings: &findings,
        findings_capped,
        vulnerabilities: &ranked,
        scope: &scope,
        retention: collector.config.retention,
        now_ms,
    });
    Ok(reply::html(page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BasicAuth;

    fn access() -> ApiAccess {
        ApiAccess {
            token: Some("dashboard-token-0123".into()),
            basic: Some(BasicAuth {
                username: "security".into(),
                password: "correct-horse-battery".into(),
            }),
        }
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn basic(credentials: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    #[test]
    fn an_open_api_needs_no_credential() {
        assert!(authorize(&ApiAccess::default(), &headers(None)).is_ok());
    }

    #[test]
    fn the_configured_token_or_password_is_let_through() {
        for value in [
            "Bearer dashboard-token-0123".to_string(),
            "bearer   dashboard-token-0123 ".to_string(),
            basic("security:correct-horse-battery"),
        ] {
            assert!(
                authorize(&access(), &headers(Some(&value))).is_ok(),
                "{value}"
            );
        }
    }

    #[test]
    fn missing_or_wrong_credentials_get_401_with_both_challenges() {
        for value in [
            None,
            Some("Bearer dashboard-token-0124".to_string()),
            Some("Bearer dashboard-token-012".to_string()),
            Some("Bearer".to_string()),
            Some("Token dashboard-token-0123".to_string()),
            Some(basic("security:correct-horse-batter")),
            Some(basic("Security:correct-horse-battery")),
            Some(basic("security")),
            Some("Basic %%%".to_string()),
            // The token is no password, nor the password a token.
            Some(basic("security:dashboard-token-0123")),
            Some("Bearer correct-horse-battery".to_string()),
        ] {
            let refused = authorize(&access(), &headers(value.as_deref()))
                .expect_err(&format!("{value:?} must be refused"));
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{value:?}");
            let challenges: Vec<&str> = refused
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(
                challenges,
                [
                    "Bearer realm=\"vigil collector\"",
                    "Basic realm=\"vigil collector\", charset=\"UTF-8\""
                ],
                "{value:?}"
            );
        }
    }

    #[test]
    fn a_token_alone_challenges_for_a_token_only() {
        let access = ApiAccess {
            token: Some("dashboard-token-0123".into()),
            basic: None,
        };
        let refused = authorize(&access, &headers(Some(&basic("a:b")))).unwrap_err();
        assert_eq!(
            refused.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"vigil collector\""
        );
    }

    #[test]
    fn since_is_a_duration_counted_back_from_now() {
        let query = Query::parse(Some("since=24h&service=shop"));
        let scope = query.scope(100_000_000).unwrap();
        assert_eq!(scope.since_ms, Some(100_000_000 - 86_400_000));
        assert_eq!(scope.service.as_deref(), Some("shop"));
        let all = Query::parse(Some("since=&service=")).scope(5).unwrap();
        assert_eq!((all.since_ms, all.service), (None, None));
        let (status, detail) = Query::parse(Some("since=yesterday")).scope(5).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            detail.starts_with("since: ") && detail.contains("24h"),
            "{detail}"
        );
    }
}
