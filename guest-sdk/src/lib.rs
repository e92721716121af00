//! Write Vigil guards in Rust.
//!
//! A guard is a policy function that Vigil calls, inside a WebAssembly sandbox, for each request
//! whose route it is attached to. It sees the request and the client, can query the state the
//! host keeps for it (the client's recent history, rate limiters, sliding-window and distinct
//! counters, a small key/value store), and returns a [`Verdict`]: allow, or deny with a status.
//!
//! # A complete guard
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "login-throttle"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! # A copy of Vigil's `guest-sdk` directory, or `git = "…"` for Vigil's repository.
//! vigil-guest = { path = "../vigil/guest-sdk" }
//! serde = { version = "1", features = ["derive"] }
//!
//! [profile.release]
//! lto = true
//! codegen-units = 1
//! panic = "abort"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use serde::Deserialize;
//! use vigil_guest::{state, Guard, Request, Verdict};
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     per_minute: f64,
//!     burst: u32,
//! }
//!
//! struct LoginThrottle;
//!
//! impl Guard for LoginThrottle {
//!     type Config = Config;
//!
//!     fn check_config(config: &Config) -> Result<(), String> {
//!         if config.per_minute <= 0.0 {
//!             return Err("per_minute: must be greater than 0".into());
//!         }
//!         Ok(())
//!     }
//!
//!     fn on_request(config: &Config, req: &Request) -> Verdict {
//!         let key = format!("login:{}", req.client.key);
//!         match state::rate(&key, config.per_minute / 60.0, config.burst) {
//!             Ok(()) => Verdict::Allow,
//!             Err(wait) => vigil_guest::too_many_requests("too many login attempts", wait),
//!         }
//!     }
//! }
//!
//! vigil_guest::guard!(LoginThrottle);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and point a `[[guard]]` entry of
//! `vigil.toml` at `target/wasm32-wasip2/release/login_throttle.wasm`, with
//! `config = { per_minute = 10, burst = 5 }`.
//!
//! # Lifecycle
//!
//! ```text
//!   load ──► init(config) ──► on_request(req) ──► on_response(req, resp)
//!              │ error: guard rejected       │ deny: proxy answers itself
//! ```
//!
//! [`Guard::check_config`] runs through `init` on every fresh instance, and once at load time,
//! where an error rejects the guard with your message. **An instance serves many requests, from
//! many clients**: the host keeps a pool of warm instances, each serving up to
//! `recycle_after_calls` (10,000 by default) requests before it is replaced, and discards one
//! after any fault. So guest memory (statics, caches, anything a call leaves behind) does
//! survive between requests, but unpredictably: which instance serves the next request of a
//! client is not fixed, and an instance can be replaced at any time. Never keep one client's
//! data in guest memory (another client's request may read it) and never count on it being
//! there; keep everything that must last in [`state`]. A panic is reported to the host log with
//! its message and the guard's `on_error` policy decides the request.
//!
//! # Layout
//!
//! - [`route`]: route patterns (`POST /cart/*`), also used by the host.
//! - [`duration`]: the duration syntax of configurations (`"15m"`), also used by the host.
//! - [`state`]: the host's state, behind safe wrappers.
//! - [`log`]: log lines attributed to the guard.
//! - [`request`]: the request and response a guard sees, read in place from the host's bytes.
//! - [`bindings`]: the raw types and functions generated from `wit/guard.wit`.
//! - `testing` (feature `testing`): an in-memory host with a settable clock, to test a guard
//!   natively with `cargo test`.

pub mod duration;
pub mod request;
pub mod route;

#[cfg(feature = "bindings")]
mod guest;
#[cfg(feature = "bindings")]
pub use guest::*;
#[cfg(feature = "testing")]
pub mod testing;
