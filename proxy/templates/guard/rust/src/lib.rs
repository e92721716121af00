//! {{name}}: a Vigil guard. It limits each client to `per_minute` requests (bursts of up to
//! `burst`) with the host's rate limiter, and refuses the rest with 429 and `Retry-After`.

wit_bindgen::generate!({ world: "guard", path: "wit" });

use vigil::guard::state;
// The world `use`s request, response and verdict: they are already in scope.
use vigil::guard::types::Deny;

/// The checked configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limit {
    per_minute: f64,
    burst: u32,
}

// An instance serves many requests of many clients: only the configuration lives here
// (`init` runs on every fresh instance), per-client data lives in the host's `state`.
static LIMIT: std::sync::OnceLock<Limit> = std::sync::OnceLock::new();

/// Parses the guard's JSON configuration; errors name the field.
fn parse_config(text: &str) -> Result<Limit, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("config: not valid JSON: {e}"))?;
    let object = value.as_object().ok_or("config: must be an object")?;
    if let Some(key) = object.keys().find(|k| *k != "per_minute" && *k != "burst") {
        return Err(format!("unknown field `{key}`, expected per_minute or burst"));
    }
    let per_minute = match object.get("per_minute") {
        None => return Err("per_minute: required".into()),
        Some(v) => v
            .as_f64()
            .filter(|n| *n > 0.0 && *n <= 1e6)
            .ok_or("per_minute: must be a number from 0 to 1000000")?,
    };
    let burst = match object.get("burst") {
        None => 5,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or("burst: must be an integer from 1 to 10000")? as u32,
    };
    Ok(Limit { per_minute, burst })
}

struct Component;

impl Guest for Component {
    fn init(config: String) -> Result<(), String> {
        let limit = parse_config(&config)?;
        // Only the client's key is read: no header field needs copying into the guard.
        state::reads_headers(&[]);
        let _ = LIMIT.set(limit);
        Ok(())
    }

    fn on_request(req: Request) -> Verdict {
        let Some(limit) = LIMIT.get() else {
            return Verdict::Allow;
        };
        match state::rate(&req.client.key, limit.per_minute / 60.0, limit.burst) {
            Ok(()) => Verdict::Allow,
            Err(wait_ms) => Verdict::Deny(Deny {
                status: 429,
                reason: format!("more than {} requests a minute", limit.per_minute),
                retry_after_secs: Some(wait_ms.div_ceil(1000)),
            }),
        }
    }

    fn on_response(_req: Request, _resp: Response) {}
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked_field_by_field() {
        assert_eq!(
            parse_config(r#"{"per_minute": 30}"#),
            Ok(Limit { per_minute: 30.0, burst: 5 })
        );
        assert_eq!(
            parse_config(r#"{"per_minute": 30, "burst": 2}"#).map(|l| l.burst),
            Ok(2)
        );
        for (config, error) in [
            ("{}", "per_minute: required"),
            (r#"{"per_minute": 0}"#, "per_minute: must be"),
            (r#"{"per_minute": 1, "burst": 0}"#, "burst: must be"),
            (r#"{"per_minute": 1, "brust": 2}"#, "unknown field `brust`"),
            ("[]", "config: must be an object"),
            ("{", "config: not valid JSON"),
        ] {
            let got = parse_config(config).unwrap_err();
            assert!(got.starts_with(error), "{config}: {got}");
        }
    }
}
