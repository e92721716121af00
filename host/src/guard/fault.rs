//! Why a guard call failed, in the kinds metrics and the `on_error` policy distinguish.

/// The cause of a failed guard call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The call ran past its deadline and was interrupted.
    Deadline,
    /// The guard tried to grow memory or tables past its cap.
    Limit,
    /// The guard trapped (including panics and refused host calls).
    Trap,
    /// No instance could be created (pool exhausted, or `init` failed on a fresh instance).
    Instantiate,
    /// A state call the shared store could not answer, under `state.fallback = "deny"`: the
    /// request is refused whatever the guard's `on_error`.
    StateUnavailable,
}

impl FaultKind {
    /// A stable lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Deadline => "deadline",
            FaultKind::Limit => "limit",
            FaultKind::Trap => "trap",
            FaultKind::Instantiate => "instantiate",
            FaultKind::StateUnavailable => "state_unavailable",
        }
    }
}

/// A failed guard call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The cause.
    pub kind: FaultKind,
    /// Human-readable detail (the panic message, the limit hit, the trap).
    pub detail: String,
}

/// The error's text, with its root cause when that says more.
pub(crate) fn root_cause(error: &wasmtime::Error) -> String {
    let mut text = error.to_string();
    let root = error.root_cause().to_string();
    if root != text {
        text = format!("{text}: {root}");
    }
    text
}
