//! Shared helpers of Vigil's end-to-end tests: compiled guard paths, runtimes, requests.

use std::sync::Arc;
use std::time::Duration;
use vigil_host::{
    Chain, Client, Decision, GuardSource, GuardSpec, LoadError, LoadedGuard, Mode, OnError,
    Request, Runtime, RuntimeConfig,
};

pub use vigil_guard_artifacts as guards;

/// The call deadline of [`runtime`]'s guards. Tests assert what guards decide; with debug
/// builds on a busy machine a call descheduled past the product's 10 ms would fail open and
/// the decision go missing. Tests of deadlines set their own.
pub const RELAXED_DEADLINE: Duration = Duration::from_secs(2);

/// A runtime with default settings but a [`RELAXED_DEADLINE`].
pub fn runtime() -> Runtime {
    let mut config = RuntimeConfig::default();
    config.default_limits.deadline = RELAXED_DEADLINE;
    Runtime::new(config).expect("runtime starts")
}

/// A chain's evaluation as the proxy makes it: the plan for the request's route, then the guards.
pub trait Decide {
    /// Plans for `req`'s method and route, then evaluates it.
    fn decide(&self, req: &mut Request) -> Decision;
}

impl Decide for Chain {
    fn decide(&self, req: &mut Request) -> Decision {
        let plan = self.plan_for(req);
        self.evaluate(&plan, req)
    }
}

/// A spec for the compiled guard crate `crate_name` under `name`, with this JSON config.
pub fn spec(name: &str, crate_name: &str, config: &str) -> GuardSpec {
    let mut spec = GuardSpec::new(name, GuardSource::File(guards::path(crate_name).into()));
    spec.config_json = config.to_string();
    spec
}

/// Loads a compiled guard, panicking with the load error.
pub fn load(runtime: &Runtime, spec: GuardSpec) -> Arc<LoadedGuard> {
    let name = spec.name.clone();
    runtime
        .load_guard(spec)
        .unwrap_or_else(|e| panic!("guard {name} should load: {e}"))
}

/// Loads a guard that must be refused, returning the error's text.
pub fn load_error(runtime: &Runtime, spec: GuardSpec) -> (LoadError, String) {
    match runtime.load_guard(spec) {
        Ok(guard) => panic!("guard {} should have been refused", guard.name()),
        Err(e) => {
            let text = e.to_string();
            (e, text)
        }
    }
}

/// Sets mode and fault policy on a spec.
pub fn with_policy(mut spec: GuardSpec, mode: Mode, on_error: OnError) -> GuardSpec {
    spec.mode = mode;
    spec.on_error = on_error;
    spec
}

/// A request from client `client` with the given headers.
pub fn request(method: &str, path: &str, client: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        route: None,
        query: None,
        headers: headers
            .iter()
            .map(|(n, v)| vigil_host::Header {
                name: n.to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        client: Client {
            key: client.into(),
            ip: "203.0.113.7".into(),
            public: true,
            authenticated: false,
        },
        received_ms: 0,
        body: None,
    }
}

pub mod browser;
pub mod collector;
pub mod harness;
pub mod pki;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod redis;
