//! Business-flow rules over each client's recent requests: steps that must come first, steps
//! that must not have happened lately, caps on how often a flow may run, and caps on how many
//! different objects one client may walk through.
//!
//! ```toml
//! [[guard]]
//! name = "sequence"
//! module = "guards/sequence.wasm"
//! config = { rules = [
//!   # 409 unless POST /cart/items succeeded (2xx or 3xx) in the last 15 minutes.
//!   { kind = "requires", target = "POST /checkout", after = ["POST /cart/items"], within = "15m" },
//!   # 403 when POST /password-reset was called in the last 10 minutes, whatever its status.
//!   { kind = "forbids", target = "POST /transfer", after = ["POST /password-reset"], within = "10m" },
//!   # 429 beyond 5 checkouts per hour.
//!   { kind = "flow-cap", target = "POST /checkout", max = 5, window = "1h" },
//!   # 429 beyond 20 different user ids in 10 minutes. `param` is the `{id}` segment's name, or
//!   # the 0-based index of the path segment (here 1).
//!   { kind = "distinct-param", target = "GET /users/{id}", param = "id", max = 20, window = "10m" },
//!   # The same over a query parameter (`/?author=1`, `/?author=2`, ...) or a request header
//!   # (here: one client rotating through user agents).
//!   { kind = "distinct-param", target = "GET /**", query = "author", max = 5, window = "10m" },
//!   { kind = "distinct-param", target = "*", header = "user-agent", max = 5, window = "10m" },
//! ] }
//! ```
//!
//! `requires` counts a step only when it succeeded: a failed add-to-cart is not a cart.
//! `forbids` counts the attempt whatever its answer, because trying the step is what makes the
//! target suspicious (a password reset the attacker could not finish still precedes a
//! takeover). Both read the client's history kept by the host, which holds the most recent
//! requests only (32 by default): an older step is treated as absent.
//!
//! `flow-cap` counts the requests it lets through, so exactly `max` reach the service per
//! window. `distinct-param` counts every distinct value it sees: of a path segment, of a query
//! parameter (decoded as a form: `%XX`, `+`; the key in any case; every occurrence of a
//! repeated key), or of a header (every field of that name). The host caps a distinct set
//! (256 members by default), so a `max` at or above that cap never triggers.
//! Their 429s carry `Retry-After`: the rule's whole window, the earliest time at which the
//! counted requests are sure to have expired.
//!
//! Each denial is also reported as a finding: `sequence-violation`, `id-enumeration` for
//! `distinct-param` over the path or the query, `header-rotation` over a header. Every rule whose target matches applies, in order; the first that denies
//! decides.

use guard_util::{
    push_decimal, query_values, text_of, with_key_written, DurationText, PatternText, SEP,
};
use serde::Deserialize;
use std::sync::OnceLock;
use std::time::Duration;
use vigil_guest::route::segments;
use vigil_guest::{state, Guard, Request, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum Rule {
    Requires {
        target: PatternText,
        after: Vec<PatternText>,
        within: DurationText,
        #[serde(skip)]
        asked: Asked,
    },
    Forbids {
        target: PatternText,
        after: Vec<PatternText>,
        within: DurationText,
        #[serde(skip)]
        asked: Asked,
    },
    FlowCap {
        target: PatternText,
        max: u32,
        window: DurationText,
    },
    DistinctParam {
        target: PatternText,
        /// A path segment, by name or index.
        #[serde(default)]
        param: Option<Param>,
        /// A query parameter, by name.
        #[serde(default)]
        query: Option<String>,
        /// A request header, by name.
        #[serde(default)]
        header: Option<String>,
        max: u32,
        window: DurationText,
        /// The segment `param` names, worked out on first use (it is checked at init).
        #[serde(skip)]
        index: OnceLock<Option<usize>>,
    },
}

/// The `after` patterns as `happened` takes them, built on first use rather than per request.
#[derive(Default)]
struct Asked(OnceLock<Vec<String>>);

impl Asked {
    fn patterns(&self, after: &[PatternText]) -> &[String] {
        self.0
            .get_or_init(|| after.iter().map(|p| p.text().to_string()).collect())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Param {
    Index(usize),
    Name(String),
}

impl Rule {
    fn target(&self) -> &PatternText {
        match self {
            Rule::Requires { target, .. }
            | Rule::Forbids { target, .. }
            | Rule::FlowCap { target, .. }
            | Rule::DistinctParam { target, .. } => target,
        }
    }

    fn check(&self, field: &str) -> Result<(), String> {
        self.target().check(&format!("{field}.target"))?;
        match self {
            Rule::Requires { after, within, .. } | Rule::Forbids { after, within, .. } => {
                if after.is_empty() {
                    return Err(format!(
                        "{field}.after: must list at least one route pattern"
                    ));
                }
                guard_util::check_patterns(&format!("{field}.after"), after)?;
                within.check(&format!("{field}.within"))?;
            }
            Rule::FlowCap { max, window, .. } => {
                check_max(field, *max)?;
                window.check(&format!("{field}.window"))?;
            }
            Rule::DistinctParam {
                target,
                param,
                query,
                header,
                max,
                window,
                ..
            } => {
                match (param, query, header) {
                    (Some(param), None, None) => {
                        param_index(target.text(), param)
                            .map_err(|e| format!("{field}.param: {e}"))?;
                    }
                    (None, Some(name), None) | (None, None, Some(name))
                        if name.trim().is_empty() =>
                    {
                        let key = if query.is_some() { "query" } else { "header" };
                        return Err(format!("{field}.{key}: must not be empty"));
                    }
                    (None, Some(_), None) | (None, None, Some(_)) => {}
                    _ => {
                        return Err(format!(
                            "{field}: a distinct-param rule names exactly one of param, query or header"
                        ))
                    }
                }
                check_max(field, *max)?;
                window.check(&format!("{field}.window"))?;
            }
        }
        Ok(())
    }
}

fn check_max(field: &str, max: u32) -> Result<(), String> {
    if max == 0 {
        return Err(format!("{field}.max: must be at least 1"));
    }
    Ok(())
}

/// Which path segment holds the parameter, checked against the target pattern.
fn param_index(target: &str, param: &Param) -> Result<usize, String> {
    let path = target.trim();
    let path = path
        .split_once(char::is_whitespace)
        .map_or(path, |(_, path)| path.trim());
    let pattern: Vec<&str> = segments(path).collect();
    match param {
        Param::Index(i) => {
            let open_ended = pattern.last() == Some(&"**");
            if *i >= pattern.len() && !open_ended {
                return Err(format!(
                    "segment {i} is beyond the {} segments of {target:?}",
                    pattern.len()
                ));
            }
            Ok(*i)
        }
        Param::Name(name) => {
            let wanted = format!("{{{name}}}");
            pattern
                .iter()
                .position(|s| *s == wanted)
                .ok_or_else(|| format!("{target:?} has no {wanted} segment"))
        }
    }
}

fn deny(status: u16, kind: &str, reason: String, client: &str, wait: Option<Duration>) -> Verdict {
    state::finding(kind, &format!("client {client}: {reason}"));
    match wait {
        Some(wait) => vigil_guest::too_many_requests(reason, wait),
        None => vigil_guest::deny(status, reason),
    }
}

fn patterns_text(patterns: &[PatternText]) -> String {
    patterns
        .iter()
        .map(|p| p.text())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Whether the client made one of the `after` requests within `within`: asked of the host,
/// which keeps the history, so the history is not copied into the guard.
struct Sequence;

impl Guard for Sequence {
    type Config = Config;
    const OBSERVES_RESPONSES: bool = false;

    fn headers_read(config: &Config) -> Option<Vec<String>> {
        let names = config.rules.iter().filter_map(|rule| match rule {
            Rule::DistinctParam {
                header: Some(name), ..
            } => Some(name.trim().to_ascii_lowercase()),
            _ => None,
        });
        Some(names.collect())
    }

    fn check_config(config: &Config) -> Result<(), String> {
        for (i, rule) in config.rules.iter().enumerate() {
            rule.check(&format!("rules[{i}]"))?;
        }
        Ok(())
    }

    fn on_request(config: &Config, req: &Request) -> Verdict {
        let client = &req.client.key;
        for (i, rule) in config.rules.iter().enumerate() {
            if !rule.target().matches(req) {
                continue;
            }
            match rule {
                Rule::Requires {
                    target,
                    after,
                    within,
                    asked,
                } => {
                    let patterns = asked.patterns(after);
                    if !state::happened(patterns, *within.get(), true) {
                        let reason = format!(
                            "{} requires {} within {}",
                            target.text(),
                            patterns_text(after),
                            within.text()
                        );
                        return deny(409, "sequence-violation", reason, client, None);
                    }
                }
                Rule::Forbids {
                    target,
                    after,
                    within,
                    asked,
                } => {
                    let patterns = asked.patterns(after);
                    if state::happened(patterns, *within.get(), false) {
                        let reason = format!(
                            "{} is not allowed within {} after {}",
                            target.text(),
                            within.text(),
                            patterns_text(after)
                        );
                        return deny(403, "sequence-violation", reason, client, None);
                    }
                }
                Rule::FlowCap {
                    target,
                    max,
                    window,
                } => {
                    let key = |k: &mut String| rule_key(k, "flow", i, target.text(), client);
                    let span = *window.get();
                    // Add first and take back on refusal: concurrent requests of one client
                    // each see a distinct total, so the cap cannot be overshot.
                    if with_key_written(key, |k| state::count(k, 1, span)) > i64::from(*max) {
                        with_key_written(key, |k| state::count(k, -1, span));
                        let reason = format!(
                            "{} is limited to {max} per {}",
                            target.text(),
                            window.text()
                        );
                        return deny(429, "sequence-violation", reason, client, Some(span));
                    }
                }
                Rule::DistinctParam {
                    target,
                    param,
                    query,
                    header,
                    max,
                    window,
                    index,
                } => {
                    let key = |k: &mut String| rule_key(k, "param", i, target.text(), client);
                    let span = *window.get();
                    let mut seen = 0;
                    let mut record = |value: &str| {
                        seen = with_key_written(key, |k| state::distinct(k, value, span));
                    };
                    let (of, kind) = if let Some(param) = param {
                        let index = index.get_or_init(|| param_index(target.text(), param).ok());
                        if let Some(value) = index.and_then(|i| segments(req.path).nth(i)) {
                            record(value);
                        }
                        (String::new(), "id-enumeration")
                    } else if let Some(name) = query {
                        for value in req.query.into_iter().flat_map(|q| query_values(q, name)) {
                            record(&value);
                        }
                        (format!(" of query parameter {name}"), "id-enumeration")
                    } else if let Some(name) = header {
                        let name = name.trim();
                        for field in req
                            .headers
                            .iter()
                            .filter(|h| h.name.eq_ignore_ascii_case(name))
                        {
                            record(&text_of(field.value.trim_ascii()));
                        }
                        (format!(" of header {name}"), "header-rotation")
                    } else {
                        continue;
                    };
                    if seen > *max {
                        let reason = format!(
                            "more than {max} different values{of} on {} within {}",
                            target.text(),
                            window.text()
                        );
                        return deny(429, kind, reason, client, Some(span));
                    }
                }
            }
        }
        Verdict::Allow
    }
}

/// The key of a rule's state for one client: the rule's kind, index and target, then the client.
fn rule_key(key: &mut String, kind: &str, index: usize, target: &str, client: &str) {
    key.push_str(kind);
    key.push(SEP);
    push_decimal(key, index);
    for part in [target, client] {
        key.push(SEP);
        key.push_str(part);
    }
}

vigil_guest::guard!(Sequence);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_guest::testing::{request, TestHost, TestRequest};

    fn refusal(verdict: Verdict) -> (u16, Option<u32>) {
        match verdict {
            Verdict::Deny(deny) => (deny.status, deny.retry_after_secs),
            Verdict::Allow => panic!("expected a refusal"),
        }
    }

    fn kinds(host: &TestHost) -> Vec<String> {
        host.findings().into_iter().map(|(kind, _)| kind).collect()
    }

    #[test]
    fn a_step_required_first_counts_only_when_it_succeeded_and_lately() {
        let host = TestHost::new();
        let config = host
            .configure::<Sequence>(
                r#"{"rules": [{"kind": "requires", "target": "POST /checkout",
                               "after": ["POST /cart/items"], "within": "15m"}]}"#,
            )
            .unwrap();
        let checkout = request("POST", "/checkout").client("alice");
        let add = request("POST", "/cart/items").client("alice");
        assert_eq!(
            refusal(host.check::<Sequence>(&config, &checkout)),
            (409, None)
        );
        let (kind, detail) = &host.findings()[0];
        assert_eq!(kind, "sequence-violation");
        assert!(
            detail.starts_with("client alice: POST /checkout requires POST /cart/items"),
            "{detail}"
        );
        host.exchange::<Sequence>(&config, &add, 400);
        assert!(
            !host.allows::<Sequence>(&config, &checkout),
            "a failed add-to-cart is not a cart"
        );
        host.exchange::<Sequence>(&config, &add, 201);
        assert!(host.allows::<Sequence>(&config, &checkout));
        assert!(
            !host.allows::<Sequence>(&config, &request("POST", "/checkout").client("bob")),
            "alice's cart is not bob's"
        );
        host.advance(Duration::from_secs(15 * 60 + 1));
        assert!(
            !host.allows::<Sequence>(&config, &checkout),
            "the cart expired"
        );
        assert!(
            host.allows::<Sequence>(&config, &request("GET", "/checkout").client("bob")),
            "other routes are not the rule's"
        );
    }

    #[test]
    fn a_forbidden_predecessor_counts_even_when_it_failed() {
        let host = TestHost::new();
        let config = host
            .configure::<Sequence>(
                r#"{"rules": [{"kind": "forbids", "target": "POST /transfer",
                               "after": ["POST /password-reset"], "within": "10m"}]}"#,
            )
            .unwrap();
        let transfer = request("POST", "/transfer").client("mallory");
        assert!(host.allows::<Sequence>(&config, &transfer));
        host.exchange::<Sequence>(
            &config,
            &request("POST", "/password-reset").client("mallory"),
            400,
        );
        assert_eq!(
            refusal(host.check::<Sequence>(&config, &transfer)),
            (403, None)
        );
        host.advance(Duration::from_secs(10 * 60 + 1));
        assert!(host.allows::<Sequence>(&config, &transfer));
    }

    #[test]
    fn a_flow_cap_lets_exactly_max_through_per_window() {
        let host = TestHost::new();
        let config = host
            .configure::<Sequence>(
                r#"{"rules": [{"kind": "flow-cap", "target": "POST /checkout", "max": 2, "window": "1h"}]}"#,
            )
            .unwrap();
        let checkout = request("POST", "/checkout").client("alice");
        assert!(host.allows::<Sequence>(&config, &checkout));
        host.advance(Duration::from_secs(60));
        assert!(host.allows::<Sequence>(&config, &checkout));
        for _ in 0..3 {
            assert_eq!(
                refusal(host.check::<Sequence>(&config, &checkout)),
                (429, Some(3600)),
                "Retry-After: the whole window"
            );
        }
        assert!(host.allows::<Sequence>(&config, &request("POST", "/checkout").client("bob")));
        host.advance(Duration::from_secs(3600 - 60 + 1));
        assert!(
            host.allows::<Sequence>(&config, &checkout),
            "the first checkout left the window; refusals were never counted"
        );
        assert!(!host.allows::<Sequence>(&config, &checkout));
    }

    #[test]
    fn distinct_values_of_a_segment_a_query_parameter_or_a_header_are_capped() {
        let host = TestHost::new();
        let config = host
            .configure::<Sequence>(
                r#"{"rules": [
                  {"kind": "distinct-param", "target": "GET /users/{id}", "param": "id", "max": 2, "window": "10m"},
                  {"kind": "distinct-param", "target": "GET /", "query": "author", "max": 2, "window": "10m"},
                  {"kind": "distinct-param", "target": "*", "header": "User-Agent", "max": 2, "window": "10m"}]}"#,
            )
            .unwrap();
        let user = |id: u32| {
            request("GET", &format!("/users/{id}"))
                .route("/users/{id}")
                .client("crawler")
        };
        assert!(host.allows::<Sequence>(&config, &user(1)));
        assert!(host.allows::<Sequence>(&config, &user(2)));
        assert!(
            host.allows::<Sequence>(&config, &user(1)),
            "a value seen is not new"
        );
        assert_eq!(
            refusal(host.check::<Sequence>(&config, &user(3))),
            (429, Some(600))
        );
        assert_eq!(kinds(&host), ["id-enumeration"]);

        let author = |query: &str| request("GET", &format!("/?{query}")).client("scanner");
        assert!(host.allows::<Sequence>(&config, &author("author=1")));
        assert!(
            !host.allows::<Sequence>(&config, &author("AUTHOR=2&author=%33")),
            "any case of the key, every occurrence, decoded"
        );

        let agent = |ua: &str| -> TestRequest {
            request("GET", "/about")
                .client("rotator")
                .header("user-agent", ua)
        };
        assert!(host.allows::<Sequence>(&config, &agent("curl/8")));
        assert!(host.allows::<Sequence>(&config, &agent("Mozilla/5.0")));
        assert!(!host.allows::<Sequence>(&config, &agent("python-requests/2")));
        assert_eq!(kinds(&host).last().unwrap(), "header-rotation");

        host.advance(Duration::from_secs(601));
        assert!(
            host.allows::<Sequence>(&config, &user(3)),
            "the window moved on"
        );
    }

    #[test]
    fn bad_rules_are_named_with_their_index() {
        let host = TestHost::new();
        for (json, says) in [
            (
                r#"{"rules": [{"kind": "requires", "target": "POST /a", "after": [], "within": "1m"}]}"#,
                "rules[0].after: must list at least one route pattern",
            ),
            (
                r#"{"rules": [{"kind": "flow-cap", "target": "POST /a", "max": 1, "window": "1m"},
                              {"kind": "flow-cap", "target": "POST /a", "max": 0, "window": "1m"}]}"#,
                "rules[1].max: must be at least 1",
            ),
            (
                r#"{"rules": [{"kind": "distinct-param", "target": "GET /users/{id}", "param": "uid", "max": 1, "window": "1m"}]}"#,
                "rules[0].param: \"GET /users/{id}\" has no {uid} segment",
            ),
            (
                r#"{"rules": [{"kind": "distinct-param", "target": "GET /u", "query": "a", "header": "b", "max": 1, "window": "1m"}]}"#,
                "names exactly one of param, query or header",
            ),
            (
                r#"{"rules": [{"kind": "distinct-param", "target": "GET /u/{id}", "param": 5, "max": 1, "window": "1m"}]}"#,
                "segment 5 is beyond the 2 segments",
            ),
        ] {
            let error = host.configure::<Sequence>(json).err().unwrap();
            assert!(error.contains(says), "{json}: {error}");
        }
    }
}
