//! What a guard is to be: its name, module, routes, mode, fault policy, configuration and
//! limits, as the proxy's configuration gives them.

use crate::sandbox::SandboxLimits;
use std::path::PathBuf;
use std::time::Duration;
use vigil_guest::route::Pattern;

/// Whether a guard's denials are applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Denials are applied.
    #[default]
    Enforce,
    /// Denials are recorded and reported, never applied.
    Monitor,
}

/// What a guard's fault (trap, deadline, limit) means for the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// Let the request through (fail open).
    #[default]
    Allow,
    /// Refuse the request with 503 (fail closed).
    Deny,
}

/// Where a guard's component comes from.
#[derive(Clone, Debug)]
pub enum GuardSource {
    /// A `.wasm` file on disk.
    File(PathBuf),
    /// The component's bytes.
    Bytes(Vec<u8>),
}

/// Everything needed to load a guard.
#[derive(Clone, Debug)]
pub struct GuardSpec {
    /// Unique name; also the namespace of its state, so state survives reloads.
    pub name: String,
    /// The component.
    pub source: GuardSource,
    /// Routes the guard sees; empty means every route.
    pub routes: Vec<Pattern>,
    /// Enforce or monitor.
    pub mode: Mode,
    /// Verdict on a fault.
    pub on_error: OnError,
    /// The guard's JSON configuration, passed to `init`.
    pub config_json: String,
    /// Sandbox limits; `None` takes the runtime's defaults.
    pub limits: Option<SandboxLimits>,
    /// Bytes of request body the guard receives; 0 means none.
    pub body_limit: usize,
    /// How long a client it refuses (in enforce mode) is then refused on every route, without
    /// any guard running; `None`: each request is judged afresh.
    pub ban: Option<Duration>,
}

impl GuardSpec {
    /// A spec with default settings: every route, enforce, fail open, no config.
    pub fn new(name: impl Into<String>, source: GuardSource) -> GuardSpec {
        GuardSpec {
            name: name.into(),
            source,
            routes: Vec::new(),
            mode: Mode::Enforce,
            on_error: OnError::Allow,
            config_json: "{}".into(),
            limits: None,
            body_limit: 0,
            ban: None,
        }
    }
}
