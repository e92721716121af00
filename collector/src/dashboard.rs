//! The dashboard at `/`: one server-rendered page, no script and no build step, that shows at
//! a glance what the public reaches, what was found, and which known vulnerabilities matter
//! most now.

use super::store::{DeniedClient, Endpoint, Exposure, FindingRecord, Service};
use super::vulns::{RankedVulnerability, Severity};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

/// Rows shown per table.
pub const ROWS: usize = 50;

/// What the page shows.
pub struct View<'a> {
    /// Every service.
    pub services: &'a [Service],
    /// Every endpoint, merged across instances.
    pub endpoints: &'a [Endpoint],
    /// Newest findings, denials left out.
    pub findings: &'a [FindingRecord],
    /// Clients with the most denials.
    pub denied: &'a [DeniedClient],
    /// Vulnerabilities, most urgent first.
    pub vulnerabilities: &'a [RankedVulnerability],
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
.m { font-weight:600; margin-right:4px; }
.badge { display:inline-block; border-radius:10px; padding:1px 8px; font-size:12px; font-weight:600;
         white-space:nowrap; }
.exp-public-unauthenticated, .sev-critical, .sev-high { color:var(--red); background:var(--red-bg); }
.exp-public, .sev-medium { color:var(--amber); background:var(--amber-bg); }
.exp-internal, .sev-low { color:var(--blue); background:var(--blue-bg); }
.exp-never, .sev-info { color:var(--grey); background:var(--grey-bg); }
.flag { color:var(--grey); background:var(--grey-bg); }
.flag.warn { color:var(--red); background:var(--red-bg); }
.empty { color:var(--muted); font-style:italic; padding:8px 0 14px; }
.detail { color:var(--muted); font-size:13px; }
"#;

/// Renders the whole page.
pub fn render(view: &View<'_>) -> String {
    let mut page = String::with_capacity(32 * 1024);
    let public: Vec<&Endpoint> = view.endpoints.iter().filter(|e| e.public > 0).collect();
    let instances: u64 = view.services.iter().map(|s| s.instances).sum();
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <title>Vigil — fleet exposure</title><style>{STYLE}</style></head><body>\
         <header><h1>Vigil — fleet exposure</h1><p>{} service(s), {instances} instance(s) reporting · as of {}</p></header><main>",
        view.services.len(),
        date(view.now_ms)
    );
    tiles(&mut page, view, &public);
    vulnerabilities(&mut page, view.vulnerabilities);
    public_endpoints(&mut page, &public);
    findings(&mut page, view.findings);
    denied(&mut page, view.denied);
    page.push_str("</main></body></html>\n");
    page
}

fn tiles(page: &mut String, view: &View<'_>, public: &[&Endpoint]) {
    let count = |f: &dyn Fn(&Endpoint) -> bool| view.endpoints.iter().filter(|e| f(e)).count();
    let unauthenticated = count(&|e| e.exposure == Exposure::PublicUnauthenticated);
    let internal = count(&|e| e.internal_reached_publicly());
    let shadow = count(&|e| e.shadow);
    let zombie = count(&|e| e.zombie);
    let urgent = view
        .vulnerabilities
        .iter()
        .filter(|v| v.exposure <= Exposure::Public)
        .count();
    let tile = |page: &mut String, id: &str, value: usize, label: &str, hot: bool| {
        let class = match (hot, value) {
            (_, 0) => "tile",
            (true, _) => "tile hot",
            (false, _) => "tile warm",
        };
        let _ = write!(
            page,
            "<div class=\"{class}\" id=\"tile-{id}\"><b>{value}</b><span>{label}</span></div>"
        );
    };
    page.push_str("<div class=\"tiles\">");
    tile(
        page,
        "public",
        public.len(),
        "endpoints reached publicly",
        false,
    );
    tile(
        page,
        "unauthenticated",
        unauthenticated,
        "public and answered without credentials",
        true,
    );
    tile(
        page,
        "internal",
        internal,
        "internal-only endpoints reached publicly",
        true,
    );
    tile(
        page,
        "vulnerable",
        urgent,
        "known vulnerabilities on public endpoints",
        true,
    );
    tile(
        page,
        "shadow",
        shadow,
        "shadow endpoints (undocumented)",
        false,
    );
    tile(
        page,
        "zombie",
        zombie,
        "zombie endpoints (never reached)",
        false,
    );
    tile(page, "findings", view.findings.len(), "findings", false);
    page.push_str("</div>");
}

fn vulnerabilities(page: &mut String, ranked: &[RankedVulnerability]) {
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
    page.push_str(
        "<table><thead><tr><th class=\"n\">#</th><th>exposure</th><th>severity</th><th>vulnerability</th>\
         <th>endpoint</th><th class=\"n\">public requests</th><th class=\"n\">public clients</th>\
         <th class=\"n\">unauth. 2xx</th></tr></thead><tbody>",
    );
    for r in ranked.iter().take(ROWS) {
        let v = &r.vulnerability;
        let route = r.matched_route.as_deref().unwrap_or(&v.route);
        let service = r
            .matched_service
            .as_deref()
            .or(v.service.as_deref())
            .unwrap_or("—");
        let _ = write!(
            page,
            "<tr data-rank=\"{}\"><td class=\"n\">{}</td><td>{}</td><td>{}</td>\
             <td><b>{}</b><div class=\"detail\">{}</div></td>\
             <td><span class=\"m\">{}</span><code>{}</code><div class=\"detail\">{}</div></td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            r.rank,
            r.rank,
            exposure(r.exposure),
            severity(v.severity),
            escape(&v.id),
            escape(&v.title),
            escape(&v.method),
            escape(route),
            escape(service),
            r.public_requests,
            r.public_clients,
            r.public_unauthenticated_success
        );
    }
    page.push_str("</tbody></table></section>");
}

fn public_endpoints(page: &mut String, public: &[&Endpoint]) {
    page.push_str(
        "<section id=\"public-endpoints\"><h2>Publicly reached endpoints</h2>\
         <p class=\"hint\">Every instance merged; distinct clients are estimated.</p>",
    );
    if public.is_empty() {
        page.push_str(
            "<p class=\"empty\">No public client has reached any endpoint yet.</p></section>",
        );
        return;
    }
    page.push_str(
        "<table><thead><tr><th>service</th><th>endpoint</th><th>exposure</th>\
         <th class=\"n\">public requests</th><th class=\"n\">public clients</th>\
         <th class=\"n\">unauth. 2xx</th><th class=\"n\">instances</th><th>flags</th><th>last seen</th>\
         </tr></thead><tbody>",
    );
    let mut ordered = public.to_vec();
    ordered.sort_by(|a, b| {
        (a.exposure, b.public, &a.service, &a.route)
            .cmp(&(b.exposure, a.public, &b.service, &b.route))
    });
    for e in ordered.iter().take(ROWS) {
        let mut flags = String::new();
        if e.internal_only {
            flags.push_str("<span class=\"badge flag warn\">internal-only</span> ");
        }
        if e.shadow {
            flags.push_str("<span class=\"badge flag\">shadow</span> ");
        }
        if e.denials.values().sum::<u64>() > 0 {
            let _ = write!(
                flags,
                "<span class=\"badge flag\">{} denied</span> ",
                e.denials.values().sum::<u64>()
            );
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
            "<tr><td>{}</td><td><span class=\"m\">{}</span><code>{}</code></td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td>{flags}</td><td class=\"detail\">{}</td></tr>",
            escape(&e.service),
            escape(&e.method),
            escape(&e.route),
            exposure(e.exposure),
            e.public,
            e.public_clients,
            e.public_unauthenticated_success,
            e.instances,
            e.last_seen_ms.map(date).unwrap_or_default()
        );
    }
    page.push_str("</tbody></table></section>");
}

fn findings(page: &mut String, findings: &[FindingRecord]) {
    page.push_str("<section id=\"findings\"><h2>Findings</h2><p class=\"hint\">Newest first, folded across instances.</p>");
    if findings.is_empty() {
        page.push_str("<p class=\"empty\">No findings.</p></section>");
        return;
    }
    page.push_str(
        "<table><thead><tr><th>kind</th><th>service</th><th>endpoint</th><th>client</th>\
         <th class=\"n\">count</th><th>source</th><th>detail</th><th>last</th></tr></thead><tbody>",
    );
    for f in findings {
        let endpoint = match (&f.method, &f.route) {
            (Some(m), Some(r)) => format!(
                "<span class=\"m\">{}</span><code>{}</code>",
                escape(m),
                escape(r)
            ),
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
    let word = match severity {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Info => "info",
    };
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
