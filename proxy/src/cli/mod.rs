//! What the command line runs besides the sidecar and the collector.

pub mod demo;
pub mod exposure;
pub mod new_guard;
pub mod replay;
pub mod try_script;

use anyhow::Context as _;
use std::path::Path;
use vigil_host::{GuardSpec, Pattern};

/// The spec of one guard named on the command line (`vigil check-guard`, `vigil try`): its
/// component (a file, or `builtin:NAME`), name, JSON configuration and route patterns.
pub fn guard_spec(
    module: &Path,
    name: &str,
    config_json: &str,
    routes: &[String],
) -> anyhow::Result<GuardSpec> {
    let source = crate::builtin::source(module, Path::new("")).map_err(anyhow::Error::msg)?;
    let mut spec = GuardSpec::new(name, source);
    spec.config_json = config_json.to_string();
    spec.routes = routes
        .iter()
        .map(|r| Pattern::parse(r))
        .collect::<Result<_, _>>()
        .context("--route")?;
    Ok(spec)
}
