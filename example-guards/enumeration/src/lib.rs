//! Stops clients that walk through object ids: too many different objects in a window, or a
//! high share of 404s, which is what guessing ids looks like.
//!
//! ```toml
//! [[guard]]
//! name = "enumeration"
//! module = "guards/enumeration.wasm"
//! [guard.config]
//! routes = ["GET /users/{id}", "GET /orders/{id}"]   # required: the object routes
//! max_distinct = 50           # different objects per client and window (default 50)
//! max_not_found_ratio = 0.5   # share of 404s above which the client is refused (default 0.5)
//! min_requests = 10           # requests before the ratio is judged (default 10)
//! window = "10m"              # default
//! ```
//!
//! The full path identifies the object, so `/users/7` and `/users/7/orders` are two objects
//! when both routes are listed. A request is refused with 429 (`Retry-After`: the window) when
//! it is the client's `max_distinct + 1`-th object in the window, or when at least
//! `min_requests` of the client's requests to these routes were let through in the window and
//! more than `max_not_found_ratio` of them were answered 404. Refused requests are not counted
//! in the ratio, so being refused cannot bring a client back under it. Each refusal is reported
//! as an `enumeration` finding.
//!
//! The host caps a distinct set (256 members by default): a `max_distinct` at or above that cap
//! never triggers.

use guard_util::{with_key, DurationText, PatternText, Tally};
use serde::Deserialize;
use vigil_guest::{state, Guard, Request, Response, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    routes: Vec<PatternText>,
    #[serde(default = "default_max_distinct")]
    max_distinct: u32,
    #[serde(default = "default_ratio")]
    max_not_found_ratio: f64,
    #[serde(default = "default_min_requests")]
    min_requests: u32,
    #[serde(default = "default_window")]
    window: DurationText,
}

fn default_max_distinct() -> u32 {
    50
}
fn default_ratio() -> f64 {
    0.5
}
fn default_min_requests() -> u32 {
    10
}
fn default_window() -> DurationText {
    DurationText::new("10m")
}

impl Config {
    fn applies(&self, req: &Request) -> bool {
        self.routes.iter().any(|p| p.matches(req))
    }
}

struct Enumeration;

impl Guard for Enumeration {
    type Config = Config;
    const READS_HEADERS: bool = false;
    // Only 404s are counted: no call for the other responses.
    const OBSERVED_STATUSES: &'static str = "404";

    fn check_config(config: &Config) -> Result<(), String> {
        if config.routes.is_empty() {
            return Err("routes: must list at least one route pattern".into());
        }
        guard_util::check_patterns("routes", &config.routes)?;
        if config.max_distinct == 0 {
            return Err("max_distinct: must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&config.max_not_found_ratio) {
            return Err("max_not_found_ratio: must be between 0 and 1".into());
        }
        if config.min_requests == 0 {
            return Err("min_requests: must be at least 1".into());
        }
        config.window.check("window")?;
        Ok(())
    }

    fn on_request(config: &Config, req: &Request) -> Verdict {
        if !config.applies(req) {
            return Verdict::Allow;
        }
        let client = &req.client.key;
        let window = *config.window.get();
        let objects = with_key(&["objects", client], |k| {
            state::distinct(k, req.path, window)
        });
        // A request counts once, a 404 is marked. Counted as passed before judging and taken
        // back on refusal: one call fewer for the requests that pass, which are nearly all.
        let tally = Tally(with_key(&["tally", client], |k| state::count(k, 1, window)));
        let (passed, not_found) = (tally.requests() - 1, tally.marked());
        let detail = if objects > config.max_distinct {
            format!(
                "{objects} different objects within {}",
                config.window.text()
            )
        } else if passed >= i64::from(config.min_requests)
            && not_found as f64 > config.max_not_found_ratio * passed as f64
        {
            format!(
                "{not_found} of {passed} requests answered 404 within {}",
                config.window.text()
            )
        } else {
            return Verdict::Allow;
        };
        with_key(&["tally", client], |k| state::count(k, -1, window));
        state::finding("enumeration", &format!("client {client}: {detail}"));
        vigil_guest::too_many_requests("too many different objects requested", window)
    }

    fn on_response(config: &Config, req: &Request, resp: &Response) {
        if resp.status == 404 && config.applies(req) {
            let window = *config.window.get();
            with_key(&["tally", req.client.key], |k| {
                state::count(k, Tally::MARK, window)
            });
        }
    }
}

vigil_guest::guard!(Enumeration);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vigil_guest::testing::{request, TestHost, TestRequest};

    fn user(id: u32, client: &str) -> TestRequest {
        request("GET", &format!("/users/{id}"))
            .route("/users/{id}")
            .client(client)
    }

    #[test]
    fn walking_through_more_objects_than_allowed_is_refused_and_reported() {
        let host = TestHost::new();
        let config = host
            .configure::<Enumeration>(
                r#"{"routes": ["GET /users/{id}"], "max_distinct": 3, "window": "10m"}"#,
            )
            .unwrap();
        for id in 1..=3 {
            assert!(host.allows::<Enumeration>(&config, &user(id, "walker")));
        }
        assert!(
            host.allows::<Enumeration>(&config, &user(2, "walker")),
            "an object seen is not a new one"
        );
        match host.check::<Enumeration>(&config, &user(4, "walker")) {
            Verdict::Deny(deny) => {
                assert_eq!((deny.status, deny.retry_after_secs), (429, Some(600)));
            }
            Verdict::Allow => panic!("the fourth object within the window"),
        }
        assert_eq!(
            host.findings(),
            [(
                "enumeration".to_string(),
                "client walker: 4 different objects within 10m".to_string()
            )]
        );
        assert!(host.allows::<Enumeration>(&config, &user(4, "someone-else")));
        assert!(
            host.allows::<Enumeration>(&config, &request("GET", "/orders/9").client("walker")),
            "routes not listed are not looked at"
        );
        host.advance(Duration::from_secs(601));
        assert!(host.allows::<Enumeration>(&config, &user(5, "walker")));
    }

    #[test]
    fn a_high_share_of_404s_is_refused_once_enough_requests_were_seen() {
        let host = TestHost::new();
        let config = host
            .configure::<Enumeration>(
                r#"{"routes": ["GET /users/{id}"], "max_not_found_ratio": 0.5, "min_requests": 4}"#,
            )
            .unwrap();
        // Half of four found: not more than half missing.
        for (id, status) in [(1, 200), (2, 404), (3, 200), (4, 404)] {
            let verdict = host.exchange::<Enumeration>(&config, &user(id, "reader"), status);
            assert!(matches!(verdict, Verdict::Allow), "{id}");
        }
        assert!(host.allows::<Enumeration>(&config, &user(5, "reader")));

        for id in 10..13 {
            host.exchange::<Enumeration>(&config, &user(id, "guesser"), 404);
        }
        assert!(
            host.allows::<Enumeration>(&config, &user(13, "guesser")),
            "three requests are fewer than min_requests"
        );
        host.respond::<Enumeration>(&config, &user(13, "guesser"), 404, &[]);
        for _ in 0..3 {
            let verdict = host.exchange::<Enumeration>(&config, &user(14, "guesser"), 404);
            assert!(matches!(verdict, Verdict::Deny(_)));
        }
        let (kind, detail) = host.findings().pop().unwrap();
        assert_eq!(kind, "enumeration");
        assert_eq!(
            detail, "client guesser: 4 of 4 requests answered 404 within 10m",
            "refusals are not counted in the ratio"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let host = TestHost::new();
        for (json, says) in [
            (
                r#"{"routes": []}"#,
                "routes: must list at least one route pattern",
            ),
            (
                r#"{"routes": ["GET /u/{id}"], "max_distinct": 0}"#,
                "max_distinct: must be at least 1",
            ),
            (
                r#"{"routes": ["GET /u/{id}"], "max_not_found_ratio": 1.5}"#,
                "between 0 and 1",
            ),
            (
                r#"{"routes": ["GET /u/{id}"], "min_requests": 0}"#,
                "min_requests: must be at least 1",
            ),
            (r#"{"routes": ["GET /u/{id}"], "window": "soon"}"#, "window"),
        ] {
            let error = host.configure::<Enumeration>(json).err().unwrap();
            assert!(error.contains(says), "{json}: {error}");
        }
    }
}
