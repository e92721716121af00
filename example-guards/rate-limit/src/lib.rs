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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vigil_guest::testing::{request, TestHost};

    fn denial(host: &TestHost, config: &Config, req: &vigil_guest::testing::TestRequest) -> u32 {
        match host.check::<RateLimit>(config, req) {
            Verdict::Deny(deny) => {
                assert_eq!(deny.status, 429);
                deny.retry_after_secs.expect("a 429 says when to come back")
            }
            Verdict::Allow => panic!("expected a denial"),
        }
    }

    #[test]
    fn each_client_has_its_bucket_which_refills_with_time() {
        let host = TestHost::new();
        let config = host
            .configure::<RateLimit>(r#"{"rate": 2, "per": "second"}"#)
            .unwrap();
        let alice = request("GET", "/items").client("203.0.113.9");
        assert!(host.allows::<RateLimit>(&config, &alice));
        assert!(
            host.allows::<RateLimit>(&config, &alice),
            "burst: one second's worth"
        );
        assert_eq!(
            denial(&host, &config, &alice),
            1,
            "half a second, rounded up"
        );
        assert!(
            host.allows::<RateLimit>(&config, &request("GET", "/items").client("198.51.100.2")),
            "another client has its own bucket"
        );
        host.advance(Duration::from_millis(500));
        assert!(host.allows::<RateLimit>(&config, &alice));
        assert!(!host.allows::<RateLimit>(&config, &alice));
    }

    #[test]
    fn a_route_limit_replaces_the_default_with_buckets_of_its_own() {
        let host = TestHost::new();
        let config = host
            .configure::<RateLimit>(
                r#"{"rate": 100, "per": "minute",
                    "routes": {"POST /login": {"rate": 3, "burst": 1}, "POST /*": {"rate": 50}}}"#,
            )
            .unwrap();
        let login = request("POST", "/login");
        assert!(host.allows::<RateLimit>(&config, &login));
        assert_eq!(
            denial(&host, &config, &login),
            20,
            "3 a minute (per from the top), one at a time"
        );
        assert!(
            host.allows::<RateLimit>(&config, &request("GET", "/login")),
            "another method is under the default"
        );
        assert!(
            host.allows::<RateLimit>(&config, &request("POST", "/cart")),
            "the first matching pattern wins: POST /* for the cart"
        );
        host.advance(Duration::from_secs(20));
        assert!(host.allows::<RateLimit>(&config, &login));
    }

    #[test]
    fn keys_can_be_a_header_the_address_or_the_route() {
        let host = TestHost::new();
        let by_token = host
            .configure::<RateLimit>(r#"{"key": "header:X-Api-Token", "rate": 1, "burst": 1}"#)
            .unwrap();
        let token = |client: &str| {
            request("GET", "/")
                .client(client)
                .header("x-api-token", "t1")
        };
        assert!(host.allows::<RateLimit>(&by_token, &token("203.0.113.1")));
        assert!(
            !host.allows::<RateLimit>(&by_token, &token("203.0.113.2")),
            "one token, one bucket, whoever sends it"
        );
        let bare = |client: &str| request("GET", "/").client(client);
        assert!(host.allows::<RateLimit>(&by_token, &bare("203.0.113.3")));
        assert!(
            host.allows::<RateLimit>(&by_token, &bare("203.0.113.4")),
            "without the header, each client is its own key"
        );
        assert!(!host.allows::<RateLimit>(&by_token, &bare("203.0.113.4")));

        let by_ip_and_route = host
            .configure::<RateLimit>(r#"{"key": ["ip", "route"], "rate": 1, "burst": 1}"#)
            .unwrap();
        let from = |key: &str, path: &str| request("GET", path).client(key).ip("192.0.2.7");
        assert!(host.allows::<RateLimit>(&by_ip_and_route, &from("alice", "/a")));
        assert!(
            !host.allows::<RateLimit>(&by_ip_and_route, &from("bob", "/a")),
            "two keys behind one address share it"
        );
        assert!(host.allows::<RateLimit>(&by_ip_and_route, &from("bob", "/b")));
    }

    #[test]
    fn bad_limits_are_named() {
        let host = TestHost::new();
        for (json, says) in [
            (r#"{"rate": 0}"#, "rate: must be a number greater than 0"),
            (
                r#"{"rate": 1, "per": "day"}"#,
                "per: must be \"second\", \"minute\" or \"hour\"",
            ),
            (r#"{"rate": 1, "burst": 0}"#, "burst: must be at least 1"),
            (r#"{"rate": 1, "key": []}"#, "key: must name at least one"),
            (r#"{"rate": 1, "key": "cookie"}"#, "\"cookie\" is not"),
            (
                r#"{"rate": 1, "routes": {"POST /login": {"rate": -1}}}"#,
                "routes.\"POST /login\".rate: must be a number greater than 0",
            ),
        ] {
            let error = host.configure::<RateLimit>(json).err().unwrap();
            assert!(error.contains(says), "{json}: {error}");
        }
    }
}
