//! Returns the verdict its config names, and reports every response it observes as a finding
//! (`response`, `<status> <route>`) so tests can see what `on-response` received.

use serde::Deserialize;
use vigil_guest::{state, Guard, Request, Response, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `null` allows; a number denies with that status.
    deny: Option<u16>,
    #[serde(default = "default_reason")]
    reason: String,
    retry_after_secs: Option<u32>,
}

fn default_reason() -> String {
    "denied by fixed-verdict".into()
}

struct FixedVerdict;

impl Guard for FixedVerdict {
    type Config = Config;

    fn check_config(config: &Config) -> Result<(), String> {
        match config.deny {
            Some(status) if !(400..=599).contains(&status) => Err(format!(
                "deny: {status} is not an HTTP error status (400-599)"
            )),
            _ => Ok(()),
        }
    }

    fn on_request(config: &Config, _: &Request) -> Verdict {
        match config.deny {
            None => Verdict::Allow,
            Some(status) => Verdict::Deny(vigil_guest::Deny {
                status,
                reason: config.reason.clone(),
                retry_after_secs: config.retry_after_secs,
            }),
        }
    }

    fn on_response(_: &Config, req: &Request, resp: &Response) {
        state::finding(
            "response",
            &format!("{} {}", resp.status, req.route_or_path()),
        );
    }
}

vigil_guest::guard!(FixedVerdict);
