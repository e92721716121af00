//! Exercises every state import on each request and denies when a threshold is crossed.
//! Tests read the figures it saw from the deny reason; benchmarks use it as a realistic guard.

use serde::Deserialize;
use std::time::Duration;
use vigil_guest::{state, Guard, Request, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Deny when the client's request count in the window exceeds this.
    max_requests: i64,
    /// Deny when the client touched more distinct paths than this in the window.
    max_paths: u32,
    #[serde(default = "default_window")]
    window_ms: u64,
    /// Deny when the `x-report` header is present, with every figure in the reason.
    #[serde(default)]
    report_header: bool,
}

fn default_window() -> u64 {
    60_000
}

struct Stateful;

impl Guard for Stateful {
    type Config = Config;

    fn on_request(config: &Config, req: &Request) -> Verdict {
        let window = Duration::from_millis(config.window_ms);
        let client = &req.client.key;
        let history = state::history(8);
        let requests = state::count(&format!("req:{client}"), 1, window);
        let paths = state::distinct(&format!("paths:{client}"), req.path, window);
        let seen_before = state::get(&format!("seen:{client}")).is_some();
        state::set(&format!("seen:{client}"), b"1", window);
        if req.header("x-report").is_some() && config.report_header {
            let last = history
                .first()
                .map(|e| format!("{} {} {}", e.method, e.route, e.status));
            return vigil_guest::deny(
                418,
                format!(
                    "history={} last={} requests={requests} paths={paths} seen={seen_before} body={}",
                    history.len(),
                    last.unwrap_or_default(),
                    req.body.map_or(0, <[u8]>::len)
                ),
            );
        }
        if requests > config.max_requests {
            return vigil_guest::deny(429, format!("{requests} requests in window"));
        }
        if paths > config.max_paths {
            return vigil_guest::deny(403, format!("{paths} distinct paths in window"));
        }
        Verdict::Allow
    }
}

vigil_guest::guard!(Stateful);
