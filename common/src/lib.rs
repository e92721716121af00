//! What Vigil's sidecar and its collector both need, in one place: the body type of every
//! answer and the problem+json builder (`reply`), taking connections off a listener
//! (`accept`), closing connections that hold a seat with no request in flight (`idle`), and the
//! checks of configuration values with the error that names the file (`config`), and log
//! lines a client can cause written at most once a second (`throttle`), and HTTP's character
//! classes (`syntax`), and TLS for listeners and clients (`tls`), and the connector of every outgoing HTTP
//! client (`client`).

#![forbid(unsafe_code)]

pub mod accept;
pub mod client;
pub mod config;
pub mod idle;
pub mod reply;
pub mod syntax;
pub mod throttle;
pub mod tls;
