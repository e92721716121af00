//! Vigil the sidecar: a reverse proxy that resolves each request's client and route, runs the
//! guard chain of `vigil-host`, forwards what is allowed and accounts for what comes back.
//!
//! # Layout
//!
//! - `client`: who sent the request (IP, trusted hops, public or internal, identity key).
//! - `route`: which route template a request belongs to (config, OpenAPI, heuristics).

#![forbid(unsafe_code)]

pub mod client;
pub mod route;
