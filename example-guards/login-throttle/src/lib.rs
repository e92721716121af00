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
