//! `vigil.toml` (`vigil::config::Config::parse`), and the identity-key syntax it holds
//! (`identity.key`, `vigil::identity::IdentityKey`).
//!
//! Input: the text of a configuration file. `report.token_file` is the one setting that reads
//! a file while parsing; a text that sets it is parsed with the token given as the environment
//! override `VIGIL_REPORT_TOKEN` gives it, which takes its place, so no input reads a file.
//!
//! Properties: a configuration that parses has guards with distinct non-empty names, each
//! within the sandbox's memory bound, an instance pool and worker count within their bounds,
//! an `http` upstream with an authority, `fixed_sections` without the guard chain, guard
//! configurations that are JSON, route patterns that parse again to themselves, and an
//! identity key whose text parses back to it. Any text that parses as an identity key does
//! the same.

use std::path::Path;
use vigil::config::{Config, Overrides};
use vigil::identity::IdentityKey;
use vigil_host::Pattern;

/// A file that does not exist: guard modules and the spec are only named, never read.
const FILE: &str = "/nonexistent/vigil-fuzz/vigil.toml";

/// Parses the input as a configuration file and as an identity key.
pub fn fuzz(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    if let Ok(key) = text.parse::<IdentityKey>() {
        assert_eq!(key.to_string().parse::<IdentityKey>().as_ref(), Ok(&key));
    }
    let mut overrides = Overrides::default();
    if reads_token_file(text) {
        overrides.report_token = Some("fuzz-token".into());
    }
    let Ok(config) = Config::parse(Path::new(FILE), text, &overrides) else {
        return;
    };
    let context = || format!("{text:?}");
    for (i, guard) in config.guards.iter().enumerate() {
        assert!(!guard.name.is_empty(), "{}", context());
        assert!(
            config.guards[..i].iter().all(|g| g.name != guard.name),
            "{}",
            context()
        );
        if let Some(limits) = &guard.limits {
            assert!(
                limits.memory_bytes <= config.sandbox.max_guard_memory_bytes,
                "{}",
                context()
            );
        }
        serde_json::from_str::<serde_json::Value>(&guard.config_json)
            .unwrap_or_else(|e| panic!("{}: guard config {:?}: {e}", context(), guard.config_json));
        check_patterns(&guard.routes);
    }
    check_patterns(&config.api.internal_only);
    assert!(
        (2..=4096).contains(&config.sandbox.max_instances),
        "{}",
        context()
    );
    assert!((1..=256).contains(&config.listen.workers), "{}", context());
    assert!(
        matches!(config.upstream.url.scheme_str(), Some("http" | "https")),
        "{}",
        context()
    );
    assert!(config.upstream.url.authority().is_some(), "{}", context());
    if let Some(report) = &config.report {
        assert!(report.spool_max_bytes >= 1 << 20, "{}", context());
    }
    assert!(
        config.upstream.max_connections >= config.listen.workers,
        "{}",
        context()
    );
    assert!(
        !config.fixed_sections.contains_key("guard"),
        "{}",
        context()
    );
    let identity = &config.client.identity;
    assert_eq!(
        identity.to_string().parse::<IdentityKey>().as_ref(),
        Ok(identity)
    );
}

/// Whether the text sets `report.token_file`, however it is spelt (quoted keys, dotted keys).
fn reads_token_file(text: &str) -> bool {
    let Ok(table) = text.parse::<toml::Table>() else {
        return false;
    };
    table
        .get("report")
        .and_then(toml::Value::as_table)
        .is_some_and(|report| report.contains_key("token_file"))
}

fn check_patterns(patterns: &[Pattern]) {
    for pattern in patterns {
        assert_eq!(Pattern::parse(pattern.as_str()).as_ref(), Ok(pattern));
    }
}
