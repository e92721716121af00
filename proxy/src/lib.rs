//! Vigil the sidecar: a reverse proxy that resolves each request's client and route, runs the
//! guard chain of `vigil-host`, forwards what is allowed and accounts for what comes back.
//!
//! # Layout
//!
//! - `client`: who sent the request (IP, trusted hops, public or internal, identity key).
//! - `route`: which route template a request belongs to (config, OpenAPI, heuristics).
//! - `config`: `vigil.toml`, validated.
//! - `pipeline`: the request path, top to bottom.
//! - `normalize`: one spelling per request path (RFC 3986), before anything reads it.
//! - `forward`: HTTP hygiene on the way to the upstream (framing, `Host`, upgrades).
//! - `upstream`: keep-alive connections to the upstream, one pool per worker.
//! - `respond`: every answer the proxy gives itself (problem+json).
//! - `sidecar`: shared parts, readiness, hot reload.
//! - `server`: the public and admin listeners, graceful shutdown.
//! - `accept`: taking connections off a listener, pausing while out of descriptors.
//! - `idle`: closing client connections that hold a seat with no request in flight.
//! - `peers`: connections per client address.
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
pub mod idle;
pub mod inventory;
pub mod metrics;
pub mod normalize;
pub mod peers;
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
