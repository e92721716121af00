//! Vigil the sidecar: a reverse proxy that resolves each request's client and route, runs the
//! guard chain of `vigil-host`, forwards what is allowed and accounts for what comes back.
//!
//! # Layout
//!
//! - `client`: who sent the request (IP, trusted hops, public or internal, identity key).
//! - `route`: which route template a request belongs to (config, OpenAPI, heuristics).
//! - `config`: `vigil.toml`, validated.
//! - `pipeline`: the request path, top to bottom.
//! - `forward`: HTTP hygiene on the way to the upstream.
//! - `upstream`: keep-alive connections to the upstream, one pool per worker.
//! - `respond`: every answer the proxy gives itself (problem+json).
//! - `sidecar`: shared parts, readiness, hot reload.
//! - `server`: the public and admin listeners, graceful shutdown.
//! - `accept`: taking connections off a listener, pausing while out of descriptors.
//! - `balance`: spreading connections evenly over the workers.
//! - `admin`: health, readiness, metrics, guards, reload.
//! - `metrics`: Prometheus metrics.
//! - `demo`: `vigil demo`, a sample shop under attack.
//! - `inventory`: which endpoints are reached, by whom, with what outcome; derived findings.
//! - `reporter`, `spool`: reports to the collector, spooled on disk until acknowledged.
//! - `report`: the report wire format shared by the reporter and the collector.
//! - `sketch`: HyperLogLog distinct counts that merge across instances.
//! - `collector`: `vigil collect`, which receives reports and merges them fleet-wide.

#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod balance;
pub mod client;
pub mod collector;
pub mod config;
pub mod demo;
pub mod forward;
pub mod inventory;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod reporter;
pub mod respond;
pub mod route;
pub mod server;
pub mod sidecar;
pub mod sketch;
pub mod spool;
pub mod upstream;
