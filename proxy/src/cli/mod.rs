//! What the command line runs besides the sidecar and the collector.

pub mod demo;
pub mod new_guard;
pub mod replay;
