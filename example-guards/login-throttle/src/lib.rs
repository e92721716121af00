//! Throttles requests per client with a token bucket kept by the host: `per_minute` sustained,
//! `burst` on top. Attach it to the routes to protect, e.g. `routes = ["POST /login"]`.

use serde::Deserialize;
use vigil_guest::{state, Guard, Request, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    per_minute: f64,
    #[serde(default)]
    burst: u32,
}

struct LoginThrottle;

impl Guard for LoginThrottle {
    type Config = Config;
    const READS_HEADERS: bool = false;
    const OBSERVES_RESPONSES: bool = false;

    fn check_config(config: &Config) -> Result<(), String> {
        if !(config.per_minute.is_finite() && config.per_minute > 0.0) {
            return Err("per_minute: must be a number greater than 0".into());
        }
        Ok(())
    }

    fn on_request(config: &Config, req: &Request) -> Verdict {
        let key = format!("{}:{}", req.route_or_path(), req.client.key);
        match state::rate(&key, config.per_minute / 60.0, config.burst) {
            Ok(()) => Verdict::Allow,
            Err(wait) => vigil_guest::too_many_requests("too many attempts, slow down", wait),
        }
    }
}

vigil_guest::guard!(LoginThrottle);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vigil_guest::testing::{request, TestHost};

    #[test]
    fn a_client_over_the_rate_waits_and_others_do_not() {
        let host = TestHost::new();
        let config = host
            .configure::<LoginThrottle>(r#"{"per_minute": 6, "burst": 2}"#)
            .unwrap();
        let login = request("POST", "/login").client("203.0.113.9");
        assert!(host.allows::<LoginThrottle>(&config, &login));
        assert!(host.allows::<LoginThrottle>(&config, &login));
        match host.check::<LoginThrottle>(&config, &login) {
            Verdict::Deny(deny) => {
                assert_eq!(deny.status, 429);
                assert_eq!(deny.retry_after_secs, Some(10), "one token every 10 s");
            }
            Verdict::Allow => panic!("the third login in a row is over the burst"),
        }
        let other = request("POST", "/login").client("198.51.100.2");
        assert!(host.allows::<LoginThrottle>(&config, &other));
        host.advance(Duration::from_secs(10));
        assert!(host.allows::<LoginThrottle>(&config, &login));
    }

    #[test]
    fn the_rate_must_be_positive() {
        let host = TestHost::new();
        let error = host
            .configure::<LoginThrottle>(r#"{"per_minute": 0}"#)
            .err()
            .unwrap();
        assert_eq!(error, "per_minute: must be a number greater than 0");
    }
}
