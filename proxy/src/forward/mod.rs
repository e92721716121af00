//! The way to the upstream: the request path in its one spelling, the HTTP hygiene a proxy
//! owes (framing, `Host`, upgrades, hop-by-hop and forwarding fields), and the connections to
//! the upstream.

pub mod hygiene;
pub mod normalize;
pub mod upstream;
