//! Rate limits keyed by client, IP, route, a header, or any combination of them, with optional
//! stricter (or looser) limits for some routes. The buckets live in the host (GCRA), so the
//! limit holds across worker threads and guard reloads. A request over its limit gets 429 with
//! `Retry-After` set to the time until the next request under that key would be allowed.
//!
//! ```toml
//! [[guard]]
//! name = "rate-limit"
//! module = "guards/rate_limit.wasm"
//! [guard.config]
//! key = ["client", "route"]  # "client" (default), "ip", "route", "header:NAME", or a list
//! rate = 10                  # sustained requests...
//! per = "second"             # ...per "second" (default), "minute" or "hour"
//! burst = 5                  # requests allowed back to back; default: `rate`, at least 1
//! [guard.config.routes]      # optional; the first pattern that matches replaces the default
//! "POST /login" = { rate = 3, per = "minute", burst = 1 }   # `per` defaults to the top one
//! ```
//!
//! Each limit (the default and every route entry) has buckets of its own, so a request counts
//! against exactly one of them. `route` is the method and the route template (or the path when
//! the proxy resolved no template). A request without the header named by `header:NAME` is
//! keyed by its client instead: leaving the header out neither escapes the limit nor shares one
//! bucket with every other request lacking it.
//!
//! "First" is the order of the JSON object the host passes; keep route patterns disjoint if the
//! configuration goes through a format that may reorder keys.

use guard_util::{push_decimal, with_key_written, Checked, FromText, PatternText, SEP};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use vigil_guest::{state, Guard, Request, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    key: KeySpec,
    rate: f64,
    per: Option<String>,
    burst: Option<u32>,
    #[serde(default)]
    routes: RouteLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    rate: f64,
    per: Option<String>,
    burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KeySpec {
    One(Checked<KeyPart>),
    Many(Vec<Checked<KeyPart>>),
}

impl Default for KeySpec {
    fn default() -> Self {
        KeySpec::One(Checked::new("client"))
    }
}

impl KeySpec {
    fn parts(&self) -> &[Checked<KeyPart>] {
        match self {
            KeySpec::One(part) => std::slice::from_ref(part),
            KeySpec::Many(parts) => parts,
        }
    }
}

enum KeyPart {
    Client,
    Ip,
    Route,
    Header(String),
}

impl FromText for KeyPart {
    fn from_text(text: &str) -> Result<Self, String> {
        match text {
            "client" => Ok(KeyPart::Client),
            "ip" => Ok(KeyPart::Ip),
            "route" => Ok(KeyPart::Route),
            _ => match text.strip_prefix("header:") {
                Some(name) if !name.trim().is_empty() => {
                    Ok(KeyPart::Header(name.trim().to_ascii_lowercase()))
                }
                _ => Err(format!(
                    "{text:?} is not \"client\", \"ip\", \"route\" or \"header:NAME\""
                )),
            },
        }
    }
}

/// The `routes` table in the order it was written, because the first match wins.
#[derive(Default)]
struct RouteLimits(Vec<(PatternText, Limit)>);

impl<'de> Deserialize<'de> for RouteLimits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = RouteLimits;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of route patterns to limits")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RouteLimits, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(RouteLimits(entries))
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

/// A limit in the host's terms: tokens per second and bucket size.
struct Quota {
    per_second: f64,
    burst: u32,
}

fn quota(field: &str, rate: f64, per: Option<&str>, burst: Option<u32>) -> Result<Quota, String> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("{field}rate: must be a number greater than 0"));
    }
    let seconds = match per.unwrap_or("second") {
        "second" => 1.0,
        "minute" => 60.0,
        "hour" => 3600.0,
        other => {
            return Err(format!(
                "{field}per: must be \"second\", \"minute\" or \"hour\", not {other:?}"
            ))
        }
    };
    let burst = match burst {
        Some(0) => return Err(format!("{field}burst: must be at least 1")),
        Some(burst) => burst,
        // One period's worth, so `rate = 10, per = "minute"` allows 10 at once like a
        // fixed-window limiter would.
        None => rate.ceil().clamp(1.0, u32::MAX as f64) as u32,
    };
    Ok(Quota {
        per_second: rate / seconds,
        burst,
    })
}

impl Config {
    fn default_quota(&self) -> Result<Quota, String> {
        quota("", self.rate, self.per.as_deref(), self.burst)
    }

    fn route_quota(&self, pattern: &PatternText, limit: &Limit) -> Result<Quota, String> {
        let per = limit.per.as_deref().or(self.per.as_deref());
        let field = format!("routes.{:?}.", pattern.text());
        quota(&field, limit.rate, per, limit.burst)
    }
}

struct RateLimit;

impl Guard for RateLimit {
    type Config = Config;
    // Responses are not looked at; of the headers, only those the key names are read.
    const OBSERVES_RESPONSES: bool = false;

    fn headers_read(config: &Config) -> Option<Vec<String>> {
        let named = config
            .key
            .parts()
            .iter()
            .filter_map(|part| match part.get() {
                KeyPart::Header(name) => Some(name.clone()),
                _ => None,
            });
        Some(named.collect())
    }

    fn check_config(config: &Config) -> Result<(), String> {
        let parts = config.key.parts();
        if parts.is_empty() {
            return Err("key: must name at least one of client, ip, route, header:NAME".into());
        }
        for (i, part) in parts.iter().enumerate() {
            match config.key {
                KeySpec::One(_) => part.check("key")?,
                KeySpec::Many(_) => part.check(&format!("key[{i}]"))?,
            };
        }
        config.default_quota()?;
        for (pattern, limit) in &config.routes.0 {
            pattern.check(&format!("routes.{:?}", pattern.text()))?;
            config.route_quota(pattern, limit)?;
        }
        Ok(())
    }

    fn on_request(config: &Config, req: &Request) -> Verdict {
        let (scope, quota) = match config
            .routes
            .0
            .iter()
            .enumerate()
            .find(|(_, (pattern, _))| pattern.matches(req))
        {
            Some((i, (pattern, limit))) => (Some(i), config.route_quota(pattern, limit)),
            None => (None, config.default_quota()),
        };
        let quota = quota.expect("quotas are checked at init");
        let key = |key: &mut String| write_state_key(key, scope, config.key.parts(), req);
        match with_key_written(key, |k| state::rate(k, quota.per_second, quota.burst)) {
            Ok(()) => Verdict::Allow,
            Err(wait) => vigil_guest::too_many_requests("rate limit exceeded", wait),
        }
    }
}

/// The limit's scope (the index of its route, or `*` for the default), then each configured
/// part of the request.
fn write_state_key(
    key: &mut String,
    scope: Option<usize>,
    parts: &[Checked<KeyPart>],
    req: &Request,
) {
    match scope {
        Some(route) => push_decimal(key, route),
        None => key.push('*'),
    }
    for part in parts {
        key.push(SEP);
        match part.get() {
            KeyPart::Client => key.push_str(req.client.key),
            KeyPart::Ip => key.push_str(req.client.ip),
            KeyPart::Route => {
                key.push_str(req.method);
                key.push(' ');
                key.push_str(req.route_or_path());
            }
            KeyPart::Header(name) => match req.header(name) {
                Some(value) => {
                    key.push_str("h=");
                    key.push_str(value);
                }
                None => {
                    key.push_str("c=");
                    key.push_str(req.client.key);
                }
            },
        }
    }
}

vigil_guest::guard!(RateLimit);
