//! The bodies of Vigil's fuzz targets: one module per parser, each with a `fuzz` function that
//! takes any bytes and asserts the properties the parser promises. The cargo-fuzz binaries in `fuzz/fuzz_targets/` are one-line calls into these,
//! and `tests/smoke.rs` feeds each its seed corpus (`fuzz/corpus/<name>/`) and mutations of it
//! under a plain `cargo test`.
//!
//! A panic is a finding: either the parser panicked, or it broke a property asserted here.

#![forbid(unsafe_code)]

pub mod duration;
pub mod route_pattern;

#[cfg(feature = "host")]
pub mod packed_request;
#[cfg(feature = "host")]
pub mod packed_response;

#[cfg(feature = "proxy")]
pub mod config;
#[cfg(feature = "proxy")]
pub mod forwarded;
#[cfg(feature = "proxy")]
pub mod jwt_sub;
#[cfg(feature = "proxy")]
pub mod openapi;
#[cfg(feature = "proxy")]
pub mod path;
#[cfg(feature = "proxy")]
pub mod report;
#[cfg(feature = "proxy")]
pub mod route_template;

/// A target's body: takes any input, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target built with the enabled features, by the name of its binary and corpus.
pub const TARGETS: &[(&str, Target)] = &[
    ("duration", duration::fuzz),
    ("route_pattern", route_pattern::fuzz),
    #[cfg(feature = "host")]
    ("packed_request", packed_request::fuzz),
    #[cfg(feature = "host")]
    ("packed_response", packed_response::fuzz),
    #[cfg(feature = "proxy")]
    ("config", config::fuzz),
    #[cfg(feature = "proxy")]
    ("forwarded", forwarded::fuzz),
    #[cfg(feature = "proxy")]
    ("jwt_sub", jwt_sub::fuzz),
    #[cfg(feature = "proxy")]
    ("openapi", openapi::fuzz),
    #[cfg(feature = "proxy")]
    ("path", path::fuzz),
    #[cfg(feature = "proxy")]
    ("report", report::fuzz),
    #[cfg(feature = "proxy")]
    ("route_template", route_template::fuzz),
];

/// The input as text, when it is UTF-8: the text parsers take `&str`.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
