//! Vigil the sidecar: a reverse proxy that resolves each request's client and route, runs the
//! guard chain of `vigil-host`, forwards what is allowed and accounts for what comes back.
//!
//! # Layout
//!
//! - `pipeline`: the request path, top to bottom; every other module is a room it calls.
//! - `sidecar`: the running sidecar's shared parts, readiness, hot reload.
//! - `serve`: [`serve::run`], the one way to serve a sidecar: listeners, worker threads,
//!   spreading connections over the workers (`balance`), connections per address (`peers`),
//!   and the admin API (`admin`).
//! - `identity`: who sent the request (IP, trusted hops, public or internal, identity key,
//!   credentials).
//! - `routing`: which route template a request belongs to (config, OpenAPI, heuristics).
//! - `forward`: the way to the upstream: one spelling per path (`normalize`), HTTP hygiene
//!   (`hygiene`: framing, `Host`, upgrades, forwarding fields) and the upstream connections
//!   (`upstream`).
//! - `respond`: every answer the proxy gives itself (problem+json).
//! - `config`: `vigil.toml`: the checked types, the schema with its defaults (`raw`) and the
//!   section builders (`build`).
//! - `metrics`: Prometheus metrics.
//! - `access_log`: one line per request, written off the request path.
//! - `exposure`: which endpoints are reached, by whom, with what outcome (`inventory`), and
//!   the reports to the collector (`reporter`, `spool`; the wire format is `vigil-report`'s).
//!
//! The collector (`vigil collect`) is the crate `vigil-collector`; what both need (the answer
//! body, the accept loop, the idle-connection rule, configuration checks) is `vigil-common`.
//! - `cli`: what the command line runs besides the sidecar (`demo`: a sample shop under
//!   attack).
//! - `builtin`: the stock guards compiled into the binary (`module = "builtin:rate-limit"`).

#![forbid(unsafe_code)]

pub mod access_log;
pub mod builtin;
pub mod cli;
pub mod config;
pub mod exposure;
pub mod forward;
pub mod identity;
pub mod metrics;
pub mod pipeline;
pub mod respond;
pub mod routing;
pub mod serve;
pub mod sidecar;
