//! Vigil's guard runtime: loads WebAssembly guard components, runs them in sandboxes against
//! requests, and keeps the per-client state they query. A library with no networking; the
//! proxy feeds it requests and responses.
//!
//! ```text
//! Runtime::new ──► Runtime::load_guard (check, init) ──► Chain::new
//!     per request: Chain::plan (once per route) ──► Chain::evaluate ──► Decision
//!                  ──► (proxy forwards) ──► Chain::observe
//! ```
//!
//! # Layout
//!
//! - `runtime`: the engine (pooling allocator, copy-on-write images, epoch deadlines) and linker.
//! - `guard`: one loaded guard and its calls; its spec (`spec`), faults (`fault`), warm
//!   instance pool (`pool`) and the checks a component passes to load (`checks`).
//! - `world`: the contract's two worlds, which one a guard exports, and calls through it.
//! - `packed`: requests and responses packed for the `packed-guard` world.
//! - `chain`: ordered evaluation, first applied denial wins, monitor mode; its `plan`: what the
//!   guards of one route need (body, header fields, responses), worked out once per route.
//! - `needs`: what a guard declares it uses (headers, responses), and which header fields it gets.
//! - `sandbox`: an instance's store data, limits, and the `state` imports.
//! - `output`: captured stdout/stderr/log under a per-call byte budget.
//! - `nonblocking_io`: `wasi:io` streams and polls that trap rather than wait.
//! - `shards`: values split per core, so hot paths do not share locks or cache lines.
//! - `state`: the bounded, per-guard-namespaced state tables.
//! - `watchdog`: interrupts calls past their deadline; wakes only when one may be due.
//! - `findings`: the bounded queue of guard findings.
//! - `log_context`: the request (id, client, route) that guard log lines are about.
//! - `clock`: time, replaceable in tests.
//!
//! An instance is pooled: it serves up to `recycle_after_calls` requests of any clients before
//! it is replaced, and is discarded after any fault. Guest memory therefore outlives a call but
//! not reliably, and is shared by clients; guards keep lasting data in the host's state.

#![forbid(unsafe_code)]

mod bindings;
mod chain;
pub mod clock;
mod findings;
mod guard;
pub mod log_context;
mod needs;
mod nonblocking_io;
mod output;
pub mod packed;
mod runtime;
mod sandbox;
mod shards;
pub mod state;
mod watchdog;
mod world;

pub use bindings::vigil::guard::types::{
    Client, Deny, Event, Header, Level, Request, Response, Verdict,
};
pub use chain::{Chain, ChainError, Decision, Denial, GuardOutcome, GuardResult, Plan};
pub use findings::Finding;
pub use guard::{
    Fault, FaultKind, GuardSource, GuardSpec, GuardStats, LoadError, LoadedGuard, Mode, OnError,
};
pub use needs::{HeaderFields, Needs, Statuses, NEEDS_SECTION};
pub use runtime::{CompileCache, Runtime, RuntimeConfig};
pub use sandbox::SandboxLimits;
pub use shards::Sharded;
pub use vigil_guest::route::{Pattern, PatternError};
pub use world::World;
