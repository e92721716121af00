//! The dashboard at `/` and the endpoint pages at `/endpoint`: server-rendered pages, no
//! script and no build step, that show what the public reaches, what was found, and which
//! known vulnerabilities matter most now, for one service or all and a time range.
//!
//! Every count on the page is the length of a list the JSON API gives for the same `service`
//! and `since` (`api::Scope`), so the page and the API cannot disagree.

use super::api::Scope;
use super::config::Retention;
use super::fixes::{FixState, FixStatus};
use super::store::{DeniedClient, Endpoint, EndpointQuery, Exposure, FindingRecord, Service};
use super::vulns::{RankedVulnerability, Severity};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

/// Rows shown per table.
pub const ROWS: usize = 50;

/// Time ranges the selector offers; any other duration works in the URL.
const RANGES: [(&str, &str); 5] = [
    ("", "all the collector keeps"),
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
];

/// What the dashboard shows.
pub struct View<'a> {
    /// Every service, for the selector and the header.
    pub services: &'a [Service],
    /// The service and time range shown.
    pub scope: &'a Scope,
    /// The endpoints in scope, merged across instances.
    pub endpoints: &'a [Endpoint],
    /// Findings in scope, newest first, denials left out (they have their own table).
    pub findings: &'a [FindingRecord],
    /// Clients in scope with the most denials.
    pub denied: &'a [DeniedClient],
    /// Vulnerabilities in scope, most urgent first.
    pub vulnerabilities: &'a [RankedVulnerability],
    /// How long the store keeps data: the longest range there is.
    pub retention: Retention,
    /// Now, ms since the Unix epoch.
    pub now_ms: u64,
}

/// What an endpoint's page shows.
pub struct EndpointView<'a> {
    /// The endpoint, merged across instances.
    pub endpoint: &'a Endpoint,
    /// Findings on it, newest first, denials included.
    pub findings: &'a [FindingRecord],
    /// Whether the findings were read from the service's newest ones only.
    pub findings_capped: bool,
    /// Known vulnerabilities matched to it.
    pub vulnerabilities: &'a [RankedVulnerability],
    /// The dashboard's scope, for the way back.
    pub scope: &'a Scope,
    /// How long the store keeps data.
    pub retention: Retention,
    /// Now, ms since the Unix epoch.
    pub now_ms: u64,
}

const STYLE: &str = r#"
:root { --ink:#1d2430; --muted:#5b6678; --line:#d9dee7; --bg:#f5f7fa; --card:#fff;
        --red:#b3261e; --red-bg:#fde7e5; --amber:#8a5300; --amber-bg:#fff1d6;
        --blue:#2b5797; --blue-bg:#e4edf9; --grey:#59606b; --grey-bg:#eceef1; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#18202c; color:#fff; padding:18px 32px; }
header h1 { margin:0; font-size:22px; letter-spacing:.2px; }
header p { margin:4px 0 0; color:#c3cad6; }
main { padding:20px 32px 40px; max-width:1400px; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit, minmax(170px, 1fr)); gap:12px; margin-bottom:22px; }
.tile { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.tile b { display:block; font-size:28px; line-height:1.1; }
.tile span { color:var(--muted); font-size:13px; }
.tile.hot { border-color:#e8a29c; background:var(--red-bg); }
.tile.hot b { color:var(--red); }
.tile.warm b { color:var(--amber); }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 18px 6px;
          margin-bottom:20px; }
h2 { margin:0 0 4px; font-size:17px; }
.hint { margin:0 0 10px; color:var(--muted); font-size:13px; }
table { width:100%; border-collapse:collapse; margin-bottom:10px; }
th { text-align:left; font-size:12px; text-transform:uppercase; letter-spacing:.4px; color:var(--muted);
     border-bottom:2px solid var(--line); padding:6px 8px; }
td { border-bottom:1px solid var(--line); padding:6px 8px; vertical-align:top; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; }
code { font:13px ui-monospace, "DejaVu Sans Mono", monospace; }
header h1 code { font-size:20px; }
.m { font-weight:600; margin-right:4px; }
.badge { display:inline-block; border-radius:10px; padding:1px 8px; font-size:12px; font-weight:600;
         white-space:nowrap; }
.exp-public-unauthenticated, .sev-critical, .sev-high, .fix-not-deployed { color:var(--red); background:var(--red-bg); }
.exp-public, .sev-medium, .fix-deployed { color:var(--amber); background:var(--amber-bg); }
.exp-internal, .sev-low, .fix-verified { color:var(--blue); background:var(--blue-bg); }
.exp-never, .sev-info { color:var(--grey); background:var(--grey-bg); }
.flag { color:var(--grey); background:var(--grey-bg); }
.flag.warn { color:var(--red); background:var(--red-bg); }
.empty { color:var(--muted); font-style:italic; padding:8px 0 14px; }
.detail { color:var(--muted); font-size:13px; }
a { color:var(--blue); }
a.tile { display:block; color:inherit; text-decoration:none; }
a.tile:hover { border-color:var(--blue); }
form.scope { display:flex; flex-wrap:wrap; gap:10px 18px; align-items:center; background:var(--card);
             border:1px solid var(--line); border-radius:8px; padding:10px 14px; margin-bottom:12px; }
form.scope label { font-weight:600; font-size:14px; }
form.scope select { font:inherit; margin-left:6px; padding:3px 6px; }
form.scope button { font:inherit; padding:4px 14px; border-radius:6px; border:1px solid var(--blue);
                    background:var(--blue); color:#fff; }
.note { color:var(--muted); font-size:13px; margin:0 0 16px; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0 0 12px; }
dl.facts dt { color:var(--muted); }
dl.facts dd { margin:0; }
"#;

/// Renders the dashboard.
pub fn render(view: &View<'_>) -> String {
    let mut page = String::with_capacity(32 * 1024);
    let shown: Vec<&Service> = view
        .services
        .iter()
        .filter(|s| {
            view.scope
                .service
                .as_ref()
                .is_none_or(|name| &s.name == name)
        })
        .collect();
    let instances: u64 = shown.iter().map(|s| s.instances).sum();
    let what = match &view.scope.service {
        Some(name) => format!("service {}", escape(name)),
        None => format!("{} service(s)", view.services.len()),
    };
    head(&mut page, "Vigil — fleet exposure", true);
    let _ = write!(
        page,
        "<header><h1>Vigil — fleet exposure</h1><p>{what}, {instances} instance(s) reporting · {} · as of {}</p></header><main>",
        range_words(view.scope),
        date(view.now_ms)
    );
    selector(&mut page, view);
    let (endpoints, scope) = (view.endpoints, view.scope);
    let select = |query: EndpointQuery| -> Vec<&Endpoint> {
        endpoints.iter().filter(|e| query.matches(e)).collect()
    };
    let public = select(EndpointQuery {
        public: true,
        ..EndpointQuery::default()
    });
    let internal = select(EndpointQuery {
        internal_reached_publicly: true,
        ..EndpointQuery::default()
    });
    let shadow = select(EndpointQuery {
        shadow: true,
        ..EndpointQuery::default()
    });
    let zombie = select(EndpointQuery {
        zombie: true,
        ..EndpointQuery::default()
    });
    tiles(&mut page, view, [&public, &internal, &shadow, &zombie]);
    vulnerabilities(&mut page, view.vulnerabilities, scope);
    let mut ordered = public.clone();
    ordered.sort_by(|a, b| {
        (a.exposure, b.public, &a.service, &a.route)
            .cmp(&(b.exposure, a.public, &b.service, &b.route))
    });
    endpoint_table(
        &mut page,
        Table {
            id: "public-endpoints",
            title: "Publicly reached endpoints",
            hint: "Every instance merged; distinct clients are estimated. Most exposed first.",
            empty: "No public client has reached any endpoint.",
        },
        &ordered,
        scope,
    );
    endpoint_table(
        &mut page,
        Table {
            id: "internal-endpoints",
            title: "Internal-only endpoints reached publicly",
            hint: "Listed as internal-only by the sidecars (api.internal_only), yet public clients reached them.",
            empty: "No internal-only endpoint was reached publicly.",
        },
        &internal,
        scope,
    );
    endpoint_table(
        &mut page,
        Table {
            id: "shadow-endpoints",
            title: "Shadow endpoints",
            hint: "Reached, but not in the service's OpenAPI document.",
            empty: "No shadow endpoint: every endpoint reached is documented, or no service sends its document.",
        },
        &shadow,
        scope,
    );
    endpoint_table(
        &mut page,
        Table {
            id: "zombie-endpoints",
            title: "Zombie endpoints",
            hint: "Documented, and never reached by any instance in what the collector keeps \
                   (so not within any range either).",
            empty: "No zombie endpoint.",
        },
        &zombie,
        scope,
    );
    findings(&mut page, view.findings, scope);
    denied(&mut page, view.denied);
    page.push_str("</main></body></html>\n");
    page
}

/// The document's head, up to `<body>`.
fn head(page: &mut String, title: &str, refresh: bool) {
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{}\
         <title>{}</title><style>{STYLE}</style></head><body>",
        if refresh {
            "<meta http-equiv=\"refresh\" content=\"30\">"
        } else {
            ""
        },
        escape(title)
    );
}

/// "last 24h" or "all the collector keeps", for headers.
fn range_words(scope: &Scope) -> String {
    match &scope.since {
        Some(since) => format!("last {}", escape(since)),
        None => "all the collector keeps".into(),
    }
}

/// The service selector and the time range: a plain form, so it works without script.
fn selector(page: &mut String, view: &View<'_>) {
    page.push_str(
        "<form class=\"scope\" id=\"scope\" method=\"get\" action=\"/\">\
         <label>Service<select name=\"service\"><option value=\"\">all services</option>",
    );
    for service in view.services {
        let selected = view.scope.service.as_ref() == Some(&service.name);
        let _ = write!(
            page,
            "<option value=\"{}\"{}>{}</option>",
            escape(&service.name),
            if selected { " selected" } else { "" },
            escape(&service.name)
        );
    }
    // A service named in the URL that has not reported stays selectable, so the page says
    // what it shows.
    if let Some(name) = &view.scope.service {
        if !view.services.iter().any(|s| &s.name == name) {
            let _ = write!(
                page,
                "<option value=\"{0}\" selected>{0} (no reports)</option>",
                escape(name)
            );
        }
    }
    page.push_str("</select></label><label>Time range<select name=\"since\">");
    let since = view.scope.since.as_deref().unwrap_or("");
    for (value, words) in RANGES {
        let _ = write!(
            page,
            "<option value=\"{value}\"{}>{words}</option>",
            if value == since { " selected" } else { "" }
        );
    }
    if !RANGES.iter().any(|(value, _)| *value == since) {
        let _ = write!(
            page,
            "<option value=\"{0}\" selected>last {0}</option>",
            escape(since)
        );
    }
    let _ = write!(
        page,
        "</select></label><button type=\"submit\">Show</button></form>\
         <p class=\"note\" id=\"scope-note\">The collector stores running totals per endpoint, \
         finding and client, not a time series: a time range selects the endpoints reached, the \
         findings seen and the clients denied within it, and their counts are totals over all \
         it keeps (endpoints {} days, findings {} days).</p>",
        view.retention.endpoints.as_secs() / 86_400,
        view.retention.findings.as_secs() / 86_400
    );
}

fn tiles(page: &mut String, view: &View<'_>, lists: [&[&Endpoint]; 4]) {
    let [public, internal, shadow, zombie] = lists;
    let unauthenticated = view
        .endpoints
        .iter()
        .filter(|e| e.exposure == Exposure::PublicUnauthenticated)
        .count();
    let urgent = view
        .vulnerabilities
        .iter()
        .filter(|v| v.exposure <= Exposure::Public)
        .count();
    let tile = |page: &mut String, id: &str, value: usize, label: &str, hot: bool, to: &str| {
        let class = match (hot, value) {
            (_, 0) => "tile",
            (true, _) => "tile hot",
            (false, _) => "tile warm",
        };
        let _ = write!(
            page,
            "<a class=\"{class}\" id=\"tile-{id}\" href=\"#{to}\"><b>{value}</b><span>{label}</span></a>"
        );
    };
    page.push_str("<div class=\"tiles\">");
    tile(
        page,
        "public",
        public.len(),
        "endpoints reached publicly",
        false,
        "public-endpoints",
    );
    tile(
        page,
        "unauthenticated",
        unauthenticated,
        "public and answered without credentials",
        true,
        "public-endpoints",
    );
    tile(
        page,
        "internal",
        internal.len(),
        "internal-only endpoints reached publicly",
        true,
        "internal-endpoints",
    );
    tile(
        page,
        "vulnerable",
        urgent,
        "known vulnerabilities on public endpoints",
        true,
        "vulnerabilities",
    );
    tile(
        page,
        "shadow",
        shadow.len(),
        "shadow endpoints (undocumented)",
        false,
        "shadow-endpoints",
    );
    tile(
        page,
        "zombie",
        zombie.len(),
        "zombie endpoints (never reached)",
        false,
        "zombie-endpoints",
    );
    tile(
        page,
        "findings",
        view.findings.len(),
        "findings (denials apart)",
        false,
        "findings",
    );
    page.push_str("</div>");
}

/// "Showing the first 50 of 70." when a table is cut, else nothing.
fn shown_of(page: &mut String, total: usize) {
    if total > ROWS {
        let _ = write!(
            page,
            "<p class=\"note\">Showing the first {ROWS} of {total}; the JSON API lists them all.</p>"
        );
    }
}

/// The link to an endpoint's page, in the dashboard's scope, escaped for an attribute.
fn endpoint_href(service: &str, method: &str, route: &str, scope: &Scope) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("service", service);
    query.append_pair("method", method);
    query.append_pair("route", route);
    if let Some(since) = &scope.since {
        query.append_pair("since", since);
    }
    escape(&format!("/endpoint?{}", query.finish()))
}

/// The dashboard's link in `scope`, escaped for an attribute.
fn dashboard_href(scope: &Scope) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(service) = &scope.service {
        query.append_pair("service", service);
    }
    if let Some(since) = &scope.since {
        query.append_pair("since", since);
    }
    let query = query.finish();
    if query.is_empty() {
        "/".into()
    } else {
        escape(&format!("/?{query}"))
    }
}

/// Method and route, linked to the endpoint's page.
fn endpoint_cell(service: &str, method: &str, route: &str, scope: &Scope) -> String {
    format!(
        "<a href=\"{}\"><span class=\"m\">{}</span><code>{}</code></a>",
        endpoint_href(service, method, route, scope),
        escape(method),
        escape(route)
    )
}

fn vulnerabilities(page: &mut String, ranked: &[RankedVulnerability], scope: &Scope) {
    page.push_str(
        "<section id=\"vulnerabilities\"><h2>Known vulnerabilities, most exposed first</h2>\
         <p class=\"hint\">Ranked by what the sidecars saw: reached publicly without credentials, \
         then publicly, then internal only, then never reached; then by severity.</p>",
    );
    if ranked.is_empty() {
        page.push_str(
            "<p class=\"empty\">No vulnerability list or ZAP report is loaded.</p></section>",
        );
        return;
    }
    shown_of(page, ranked.len());
    page.push_str(
        "<table><thead><tr><th class=\"n\">#</th><th>exposure</th><th>severity</th><th>vulnerability</th>\
         <th>endpoint</th><th class=\"n\">public requests</th><th class=\"n\">public clients</th>\
         <th class=\"n\">unauth. 2xx</th><th>fix</th></tr></thead><tbody>",
    );
    for r in ranked.iter().take(ROWS) {
        let v = &r.vulnerability;
        let route = r.matched_route.as_deref().unwrap_or(&v.route);
        let service = r
            .matched_service
            .as_deref()
            .or(v.service.as_deref())
            .unwrap_or("—");
        let endpoint = match &r.matched_service {
            Some(matched) => endpoint_cell(matched, &v.method, route, scope),
            None => format!(
                "<span class=\"m\">{}</span><code>{}</code>",
                escape(&v.method),
                escape(route)
            ),
        };
        let _ = write!(
            page,
            "<tr data-rank=\"{}\"><td class=\"n\">{}</td><td>{}</td><td>{}</td>\
             <td><b>{}</b><div class=\"detail\">{}</div></td>\
             <td>{endpoint}<div class=\"detail\">{}</div></td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            r.rank,
            r.rank,
            exposure(r.exposure),
            severity(v.severity),
            escape(&v.id),
            escape(&v.title),
            escape(service),
            r.public_requests,
            r.public_clients,
            r.public_unauthenticated_success,
            fix_summary(r.fix.as_ref())
        );
    }
    page.push_str("</tbody></table></section>");
}

/// Words of one endpoint table.
struct Table {
    /// The section's id, which tiles link to.
    id: &'static str,
    /// Its heading.
    title: &'static str,
    /// What the rows are.
    hint: &'static str,
    /// What an empty table means.
    empty: &'static str,
}

/// A section listing `endpoints`, at most [`ROWS`] of them, each linked to its page.
fn endpoint_table(page: &mut String, table: Table, endpoints: &[&Endpoint], scope: &Scope) {
    let _ = write!(
        page,
        "<section id=\"{}\"><h2>{} <span class=\"detail\" id=\"count-{}\">({})</span></h2>\
         <p class=\"hint\">{}</p>",
        table.id,
        table.title,
        table.id,
        endpoints.len(),
        table.hint
    );
    if endpoints.is_empty() {
        let _ = write!(page, "<p class=\"empty\">{}</p></section>", table.empty);
        return;
    }
    shown_of(page, endpoints.len());
    page.push_str(
        "<table><thead><tr><th>service</th><th>endpoint</th><th>exposure</th>\
         <th class=\"n\">requests</th><th class=\"n\">public requests</th><th class=\"n\">public clients</th>\
         <th class=\"n\">unauth. 2xx</th><th class=\"n\">instances</th><th>flags</th><th>last seen</th>\
         </tr></thead><tbody>",
    );
    for e in endpoints.iter().take(ROWS) {
        let mut flags = String::new();
        if e.internal_only {
            flags.push_str("<span class=\"badge flag warn\">internal-only</span> ");
        }
        if e.shadow {
            flags.push_str("<span class=\"badge flag\">shadow</span> ");
        }
        if e.zombie {
            flags.push_str("<span class=\"badge flag\">zombie</span> ");
        }
        let denied = e.denials.values().sum::<u64>();
        if denied > 0 {
            let _ = write!(flags, "<span class=\"badge flag\">{denied} denied</span> ");
        }
        let would_deny = e.monitor_denials.values().sum::<u64>();
        if would_deny > 0 {
            let _ = write!(
                flags,
                "<span class=\"badge flag\" title=\"monitor mode: not applied\">{would_deny} would deny (monitor)</span>"
            );
        }
        let _ = write!(
            page,
            "<tr data-endpoint><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td>{flags}</td><td class=\"detail\">{}</td></tr>",
            escape(&e.service),
            endpoint_cell(&e.service, &e.method, &e.route, scope),
            exposure(e.exposure),
            e.requests,
            e.public,
            e.public_clients,
            e.public_unauthenticated_success,
            e.instances,
            e.last_seen_ms.map_or_else(|| "never".into(), date)
        );
    }
    page.push_str("</tbody></table></section>");
}

fn findings(page: &mut String, findings: &[FindingRecord], scope: &Scope) {
    let _ = write!(
        page,
        "<section id=\"findings\"><h2>Findings <span class=\"detail\" id=\"count-findings\">({})</span></h2>\
         <p class=\"hint\">Newest first, folded across instances; denials of clients are in the next table.</p>",
        findings.len()
    );
    if findings.is_empty() {
        page.push_str("<p class=\"empty\">No findings.</p></section>");
        return;
    }
    shown_of(page, findings.len());
    page.push_str(
        "<table><thead><tr><th>kind</th><th>service</th><th>endpoint</th><th>client</th>\
         <th class=\"n\">count</th><th>source</th><th>detail</th><th>last</th></tr></thead><tbody>",
    );
    for f in findings.iter().take(ROWS) {
        let endpoint = match (&f.method, &f.route) {
            (Some(m), Some(r)) => endpoint_cell(&f.service, m, r, scope),
            _ => "—".into(),
        };
        let _ = write!(
            page,
            "<tr><td><b>{}</b></td><td>{}</td><td>{endpoint}</td><td><code>{}</code></td>\
             <td class=\"n\">{}</td><td>{}</td><td class=\"detail\">{}</td><td class=\"detail\">{}</td></tr>",
            escape(&f.kind),
            escape(&f.service),
            escape(f.client.as_deref().unwrap_or("—")),
            f.count,
            escape(&f.source),
            escape(&f.detail),
            date(f.at_ms)
        );
    }
    page.push_str("</tbody></table></section>");
}

fn denied(page: &mut String, denied: &[DeniedClient]) {
    page.push_str(
        "<section id=\"denied-clients\"><h2>Top clients denied</h2><p class=\"hint\">\
         Denials applied, and those monitor-mode guards would have made (their requests went on).</p>",
    );
    if denied.is_empty() {
        page.push_str("<p class=\"empty\">No client was denied.</p></section>");
        return;
    }
    page.push_str(
        "<table><thead><tr><th>client</th><th>service</th><th class=\"n\">denials</th>\
         <th class=\"n\">would deny (monitor)</th><th>by</th><th class=\"n\">endpoints</th>\
         <th>last</th></tr></thead><tbody>",
    );
    for d in denied {
        let by: Vec<String> = d
            .sources
            .iter()
            .map(|s| escape(s))
            .chain(
                d.monitor_sources
                    .iter()
                    .map(|s| format!("{} <span class=\"badge flag\">monitor</span>", escape(s))),
            )
            .collect();
        let _ = write!(
            page,
            "<tr><td><code>{}</code>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td>{}</td><td class=\"n\">{}</td><td class=\"detail\">{}</td></tr>",
            escape(&d.client),
            if d.banned {
                " <span class=\"badge flag\">banned</span>"
            } else {
                ""
            },
            escape(&d.service),
            d.denials,
            d.monitor_denials,
            by.join(", "),
            d.endpoints,
            date(d.at_ms)
        );
    }
    page.push_str("</tbody></table></section>");
}

/// Renders an endpoint's page: its traffic, clients, statuses, denials, findings and known
/// vulnerabilities, from the totals the store keeps.
pub fn render_endpoint(view: &EndpointView<'_>) -> String {
    let e = view.endpoint;
    let mut page = String::with_capacity(16 * 1024);
    head(
        &mut page,
        &format!("Vigil — {} {} ({})", e.method, e.route, e.service),
        false,
    );
    let _ = write!(
        page,
        "<header><h1><span class=\"m\">{}</span><code>{}</code></h1><p>service {} · as of {}</p></header><main>\
         <p><a id=\"back\" href=\"{}\">← back to the dashboard</a></p>",
        escape(&e.method),
        escape(&e.route),
        escape(&e.service),
        date(view.now_ms),
        dashboard_href(view.scope)
    );
    let mut flags = vec![exposure(e.exposure)];
    for (set, word, warn) in [
        (e.documented, "documented", false),
        (e.shadow, "shadow", false),
        (e.zombie, "zombie", false),
        (e.internal_only, "internal-only", true),
    ] {
        if set {
            flags.push(format!(
                "<span class=\"badge flag{}\">{word}</span>",
                if warn { " warn" } else { "" }
            ));
        }
    }
    let seen = |ms: Option<u64>| ms.map_or_else(|| "never".into(), date);
    let _ = write!(
        page,
        "<section id=\"summary\"><h2>Exposure</h2><p>{}</p><dl class=\"facts\">\
         <dt>requests</dt><dd id=\"requests\">{}</dd>\
         <dt>from public clients</dt><dd id=\"public-requests\">{}</dd>\
         <dt>carrying a credential</dt><dd>{}</dd>\
         <dt>2xx without credential</dt><dd>{}</dd>\
         <dt>2xx without credential, public</dt><dd>{}</dd>\
         <dt>instances that reached it</dt><dd>{}</dd>\
         <dt>first seen</dt><dd id=\"first-seen\">{}</dd>\
         <dt>last seen</dt><dd id=\"last-seen\">{}</dd></dl></section>",
        flags.join(" "),
        e.requests,
        e.public,
        e.authenticated,
        e.unauthenticated_success,
        e.public_unauthenticated_success,
        e.instances,
        seen(e.first_seen_ms),
        seen(e.last_seen_ms)
    );
    let c = &e.credentials;
    let _ = write!(
        page,
        "<section id=\"clients\"><h2>Clients</h2><p class=\"hint\">Distinct public clients are \
         estimated (merged sketches: a client seen by two instances counts once); requests are \
         counted by the credential they carried.</p><dl class=\"facts\">\
         <dt>public clients (estimate)</dt><dd id=\"public-clients\">{}</dd></dl>\
         <table><thead><tr><th>credential</th><th class=\"n\">requests</th></tr></thead><tbody>\
         <tr><td>bearer token</td><td class=\"n\">{}</td></tr>\
         <tr><td>basic</td><td class=\"n\">{}</td></tr>\
         <tr><td>cookie</td><td class=\"n\">{}</td></tr>\
         <tr><td>API key</td><td class=\"n\">{}</td></tr>\
         <tr><td>none</td><td class=\"n\">{}</td></tr></tbody></table>",
        e.public_clients,
        c.bearer,
        c.basic,
        c.cookie,
        c.api_key,
        e.requests.saturating_sub(e.authenticated)
    );
    let named: Vec<&FindingRecord> = view
        .findings
        .iter()
        .filter(|f| f.client.is_some())
        .collect();
    if !named.is_empty() {
        page.push_str(
            "<h3>Clients named in findings</h3><table><thead><tr><th>client</th><th>kind</th>\
             <th>source</th><th class=\"n\">count</th><th>last</th></tr></thead><tbody>",
        );
        for f in named.iter().take(ROWS) {
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"detail\">{}</td></tr>",
                escape(f.client.as_deref().unwrap_or_default()),
                escape(&f.kind),
                escape(&f.source),
                f.count,
                date(f.at_ms)
            );
        }
        page.push_str("</tbody></table>");
    }
    page.push_str("</section>");
    let st = &e.status;
    let _ = write!(
        page,
        "<section id=\"statuses\"><h2>Responses by status class</h2><table><thead><tr>\
         <th class=\"n\">1xx</th><th class=\"n\">2xx</th><th class=\"n\">3xx</th>\
         <th class=\"n\">4xx</th><th class=\"n\">5xx</th></tr></thead><tbody><tr>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td></tr></tbody></table></section>",
        st.informational, st.success, st.redirection, st.client_error, st.server_error
    );
    page.push_str(
        "<section id=\"denials\"><h2>Denials per guard</h2><p class=\"hint\">Enforced denials \
         were answered by the sidecar; monitor-mode guards' denials were not applied.</p>",
    );
    let guards: std::collections::BTreeSet<&String> =
        e.denials.keys().chain(e.monitor_denials.keys()).collect();
    if guards.is_empty() {
        page.push_str("<p class=\"empty\">No guard denied a request here.</p>");
    } else {
        page.push_str(
            "<table><thead><tr><th>guard</th><th class=\"n\">denied (enforced)</th>\
             <th class=\"n\">would deny (monitor)</th></tr></thead><tbody>",
        );
        for guard in guards {
            let _ = write!(
                page,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                escape(guard),
                e.denials.get(guard).copied().unwrap_or(0),
                e.monitor_denials.get(guard).copied().unwrap_or(0)
            );
        }
        page.push_str("</tbody></table>");
    }
    page.push_str("</section>");
    if !view.vulnerabilities.is_empty() {
        page.push_str(
            "<section id=\"endpoint-vulnerabilities\"><h2>Known vulnerabilities</h2><table><thead><tr>\
             <th class=\"n\">rank</th><th>severity</th><th>vulnerability</th></tr></thead><tbody>",
        );
        for r in view.vulnerabilities {
            let _ = write!(
                page,
                "<tr><td class=\"n\">{}</td><td>{}</td><td><b>{}</b><div class=\"detail\">{}</div></td></tr>",
                r.rank,
                severity(r.vulnerability.severity),
                escape(&r.vulnerability.id),
                escape(&r.vulnerability.title)
            );
        }
        page.push_str("</tbody></table></section>");
        for r in view.vulnerabilities {
            if let Some(fix) = &r.fix {
                fix_section(&mut page, &r.vulnerability.id, fix);
            }
        }
    }
    let _ = write!(
        page,
        "<section id=\"endpoint-findings\"><h2>Findings on this endpoint <span class=\"detail\">({})</span></h2>\
         <p class=\"hint\">Newest first, denials of clients included.{}</p>",
        view.findings.len(),
        if view.findings_capped {
            " Read from the service's newest 1000 findings."
        } else {
            ""
        }
    );
    if view.findings.is_empty() {
        page.push_str("<p class=\"empty\">No findings on this endpoint.</p>");
    } else {
        shown_of(&mut page, view.findings.len());
        page.push_str(
            "<table><thead><tr><th>kind</th><th>client</th><th class=\"n\">count</th>\
             <th>source</th><th>detail</th><th>first</th><th>last</th></tr></thead><tbody>",
        );
        for f in view.findings.iter().take(ROWS) {
            let _ = write!(
                page,
                "<tr><td><b>{}</b></td><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td>\
                 <td class=\"detail\">{}</td><td class=\"detail\">{}</td><td class=\"detail\">{}</td></tr>",
                escape(&f.kind),
                escape(f.client.as_deref().unwrap_or("—")),
                f.count,
                escape(&f.source),
                escape(&f.detail),
                date(f.first_at_ms),
                date(f.at_ms)
            );
        }
        page.push_str("</tbody></table>");
    }
    page.push_str("</section>");
    let _ = write!(
        page,
        "<section id=\"over-time\"><h2>Over time</h2><p>The collector keeps running totals \
         for each endpoint, merged from every instance's reports, with the first and the latest \
         request; it keeps no series over time, so these counts cannot be split by hour or day. \
         First seen {}, last seen {}; an endpoint not reached for {} days is forgotten.</p></section>",
        seen(e.first_seen_ms),
        seen(e.last_seen_ms),
        view.retention.endpoints.as_secs() / 86_400
    );
    page.push_str("</main></body></html>\n");
    page
}

/// A fix's state and the figures behind it, for a table cell.
fn fix_summary(fix: Option<&FixStatus>) -> String {
    let Some(fix) = fix else {
        return "<span class=\"detail\">no fixed_in</span>".into();
    };
    format!(
        "<span class=\"badge fix-{}\">{}</span><div class=\"detail\">fixed in {}; {} affected \
         instance(s); {} public request(s) served by affected builds since the fix</div>",
        fix.state.name(),
        fix.state.label(),
        escape(&fix.fixed_in),
        fix.affected_instances.len(),
        fix.public_requests_since_fix
    )
}

/// On an endpoint page: where a vulnerability's fix stands, and the instances that lack it.
fn fix_section(page: &mut String, id: &str, fix: &FixStatus) {
    let when = |ms: Option<u64>| ms.map_or_else(|| "—".to_string(), date);
    let _ = write!(
        page,
        "<section class=\"fix\" data-fix=\"{}\"><h2>Fix of {}: {}</h2><p>Fixed in <code>{}</code>; \
         first deployed {}. Affected builds served {} request(s), {} of them public, after the \
         fix was deployed; the last {}. Verified once no affected build has served this endpoint \
         for the configured time: {}.</p>",
        fix.state.name(),
        escape(id),
        fix.state.label(),
        escape(&fix.fixed_in),
        when(fix.deployed_ms),
        fix.requests_since_fix,
        fix.public_requests_since_fix,
        when(fix.last_affected_request_ms),
        match (fix.state, fix.verifiable_at_ms) {
            (FixState::Verified, Some(at)) => format!("since {}", date(at)),
            (_, Some(at)) => format!("{} at the earliest", date(at)),
            (_, None) => "once the fix is deployed".to_string(),
        }
    );
    if fix.affected_instances.is_empty() {
        page.push_str("<p class=\"empty\">No instance runs an affected version.</p>");
    } else {
        page.push_str(
            "<table><thead><tr><th>instance still affected</th><th>version</th><th>last report</th>\
             </tr></thead><tbody>",
        );
        for instance in fix.affected_instances.iter().take(ROWS) {
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"detail\">{}</td></tr>",
                escape(&instance.instance),
                instance
                    .version
                    .as_deref()
                    .map_or_else(|| "none reported".to_string(), escape),
                date(instance.last_seen_ms)
            );
        }
        page.push_str("</tbody></table>");
    }
    page.push_str("</section>");
}

fn exposure(exposure: Exposure) -> String {
    let class = match exposure {
        Exposure::PublicUnauthenticated => "exp-public-unauthenticated",
        Exposure::Public => "exp-public",
        Exposure::Internal => "exp-internal",
        Exposure::Never => "exp-never",
    };
    format!("<span class=\"badge {class}\">{}</span>", exposure.label())
}

fn severity(severity: Severity) -> String {
    let word = severity.name();
    format!("<span class=\"badge sev-{word}\">{word}</span>")
}

fn date(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vigil_report::{Credentials, StatusClasses};

    fn retention() -> Retention {
        let days = |n: u64| Duration::from_secs(n * 86_400);
        Retention {
            findings: days(30),
            instances: days(7),
            endpoints: days(90),
            interval: Duration::from_secs(3_600),
        }
    }

    const HOSTILE: &str = "<script>alert('x')</script>\"";

    fn hostile_endpoint() -> Endpoint {
        Endpoint {
            service: HOSTILE.into(),
            method: "GET".into(),
            route: format!("/x/{HOSTILE}"),
            exposure: Exposure::PublicUnauthenticated,
            requests: 3,
            public: 3,
            authenticated: 0,
            unauthenticated_success: 3,
            public_unauthenticated_success: 3,
            public_clients: 1,
            credentials: Credentials::default(),
            status: StatusClasses::default(),
            denials: BTreeMap::from([(HOSTILE.to_string(), 1)]),
            monitor_denials: BTreeMap::new(),
            instances: 1,
            first_seen_ms: Some(0),
            last_seen_ms: Some(0),
            documented: false,
            shadow: true,
            zombie: false,
            internal_only: true,
        }
    }

    fn hostile_finding() -> FindingRecord {
        FindingRecord {
            service: HOSTILE.into(),
            kind: HOSTILE.into(),
            source: HOSTILE.into(),
            method: Some("GET".into()),
            route: Some(format!("/x/{HOSTILE}")),
            client: Some(HOSTILE.into()),
            detail: HOSTILE.into(),
            instance: "i".into(),
            count: 1,
            first_at_ms: 0,
            at_ms: 0,
        }
    }

    /// No markup of `HOSTILE` survives, and no quote closes an attribute early.
    fn assert_inert(page: &str) {
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("alert('x')"), "{page}");
        assert!(!page.contains("</script>\""), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;"),
            "{page}"
        );
    }

    #[test]
    fn hostile_names_are_inert_in_every_table_link_and_option() {
        let service = Service {
            name: HOSTILE.into(),
            instances: 1,
            reports: 1,
            endpoints: 1,
            public_endpoints: 1,
            zombie_endpoints: 0,
            requests: 3,
            findings: 1,
            dropped: Default::default(),
            first_seen_ms: 0,
            last_seen_ms: 0,
        };
        let scope = Scope {
            service: Some(HOSTILE.into()),
            since: Some(HOSTILE.into()),
            since_ms: None,
        };
        let page = render(&View {
            services: &[service],
            scope: &scope,
            endpoints: &[hostile_endpoint()],
            findings: &[hostile_finding()],
            denied: &[],
            vulnerabilities: &[],
            retention: retention(),
            now_ms: 0,
        });
        assert_inert(&page);
        // The link's query is percent-encoded, then escaped for the attribute.
        assert!(
            page.contains("href=\"/endpoint?service=%3Cscript%3Ealert%28%27x%27%29%3C%2Fscript%3E%22&amp;method=GET&amp;route="),
            "{page}"
        );
        for section in ["public-endpoints", "internal-endpoints", "shadow-endpoints"] {
            assert!(
                page.contains(&format!("id=\"count-{section}\">(1)")),
                "{section}"
            );
        }
    }

    #[test]
    fn the_endpoint_page_escapes_what_sidecars_reported() {
        let endpoint = hostile_endpoint();
        let scope = Scope::default();
        let page = render_endpoint(&EndpointView {
            endpoint: &endpoint,
            findings: &[hostile_finding()],
            findings_capped: false,
            vulnerabilities: &[],
            scope: &scope,
            retention: retention(),
            now_ms: 0,
        });
        assert_inert(&page);
        assert!(page.contains("<section id=\"over-time\">"), "{page}");
        assert!(page.contains("keeps no series over time"), "{page}");
    }

    #[test]
    fn reported_text_cannot_inject_markup() {
        let finding = FindingRecord {
            service: "shop".into(),
            kind: "<script>alert(1)</script>".into(),
            source: "guard:x".into(),
            method: None,
            route: None,
            client: Some("\"><img src=x>".into()),
            detail: "a & b".into(),
            instance: "i".into(),
            count: 1,
            first_at_ms: 0,
            at_ms: 0,
        };
        let page = render(&View {
            services: &[],
            endpoints: &[],
            findings: &[finding],
            denied: &[],
            vulnerabilities: &[],
            retention: retention(),
            scope: &Scope::default(),
            now_ms: 0,
        });
        assert!(
            !page.contains("<script>") && !page.contains("<img"),
            "{page}"
        );
        assert!(page.contains("&lt;script&gt;") && page.contains("a &amp; b"));
    }

    #[test]
    fn monitor_denials_are_marked_as_such() {
        let client = DeniedClient {
            service: "shop".into(),
            client: "203.0.113.9".into(),
            denials: 2,
            sources: vec!["guard:rate-limit".into()],
            monitor_denials: 7,
            monitor_sources: vec!["guard:<bots>".into()],
            endpoints: 1,
            banned: true,
            at_ms: 0,
        };
        let page = render(&View {
            services: &[],
            endpoints: &[],
            findings: &[],
            denied: &[client],
            vulnerabilities: &[],
            retention: retention(),
            scope: &Scope::default(),
            now_ms: 0,
        });
        let start = page.find("<section id=\"denied-clients\"").unwrap();
        let section = &page[start..];
        let section = &section[..section.find("</section>").unwrap()];
        assert!(section.contains("would deny (monitor)"), "{section}");
        assert!(
            section.contains("<td class=\"n\">2</td><td class=\"n\">7</td>"),
            "{section}"
        );
        assert!(
            section.contains(
                "guard:rate-limit, guard:&lt;bots&gt; <span class=\"badge flag\">monitor</span>"
            ),
            "{section}"
        );
        assert!(
            section.contains("<code>203.0.113.9</code> <span class=\"badge flag\">banned</span>"),
            "{section}"
        );
    }
}
