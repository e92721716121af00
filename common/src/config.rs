//! Checks of single values that every configuration file shares (the sidecar's and the
//! collector's): addresses, durations, bounds, address ranges and logging. Each error names
//! the key.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration error, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// What is wrong, and where.
    pub message: String,
}

/// `value` as a socket address, or an error naming `key`.
pub fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{key}: expected an address such as 127.0.0.1:8080, got {value:?}"))
}

/// `value` as a duration (`10s`, `500ms`, `15m`), or an error naming `key`.
pub fn duration(key: &str, value: &str) -> Result<Duration, String> {
    vigil_guest::duration::parse(value).map_err(|e| format!("{key}: {e}"))
}

/// `value`, unless it is below `min`.
pub fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: T,
    min: T,
) -> Result<T, String> {
    if value < min {
        return Err(format!("{key}: must be at least {min}, got {value}"));
    }
    Ok(value)
}

/// `value`, unless it is outside `min..=max`.
pub fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, String> {
    let value = at_least(key, value, min)?;
    if value > max {
        return Err(format!("{key}: must be at most {max}, got {value}"));
    }
    Ok(value)
}

/// CIDR ranges (`10.0.0.0/8`; a bare address is one host), or an error naming the bad one.
pub fn networks(key: &str, values: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    values
        .iter()
        .map(|v| {
            v.parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    format!("{key}: {v:?} is not an address or CIDR range such as 10.0.0.0/8")
                })
        })
        .collect()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `value` as a log format (`text` or `json`), or an error naming `key`.
pub fn log_format(key: &str, value: &str) -> Result<LogFormat, String> {
    match value {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "{key}: {value:?} is not a log format; expected \"text\" or \"json\""
        )),
    }
}

/// The levels a log filter directive may name.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// A log filter (`info`, `vigil=debug, hyper=warn`) without spaces around its directives, or
/// an error naming `key` and the bad directive. Every directive must name one of the levels:
/// the subscriber would read a misspelt level such as `verbose` as a target name and then log
/// nothing at all. Spaces go because the subscriber misreads a directive that starts with one.
pub fn log_filter(key: &str, value: &str) -> Result<String, String> {
    let directives: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(format!(
            "{key}: expected a log filter such as \"info\" or \"vigil=debug,warn\", got {value:?}"
        ));
    }
    for directive in &directives {
        // `=` inside `[span{field=value}]` is not the one before the level.
        let after_span = directive.rfind(']').map_or(0, |end| end + 1);
        let level = match directive[after_span..].rfind('=') {
            Some(at) => &directive[after_span + at + 1..],
            None if after_span == 0 => directive,
            None => "",
        };
        if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!(
                "{key}: {directive:?} in {value:?} does not name a level: expected one of \
                 trace, debug, info, warn, error, off, alone or after TARGET= (\"vigil=debug\")"
            ));
        }
    }
    let filter = directives.join(",");
    match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(_) => Ok(filter),
        Err(e) => Err(format!("{key}: {value:?} is not a log filter ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters_name_a_level_in_every_directive() {
        for (good, kept) in [
            ("info", "info"),
            ("WARN", "WARN"),
            ("vigil=debug,hyper=warn", "vigil=debug,hyper=warn"),
            (" warn, vigil=trace ,", "warn,vigil=trace"),
            ("vigil::pipeline=off", "vigil::pipeline=off"),
            ("[request{id=7}]=debug", "[request{id=7}]=debug"),
        ] {
            assert_eq!(log_filter("log.level", good).as_deref(), Ok(kept), "{good}");
        }
        for (bad, named) in [
            ("verbose", "\"verbose\""),
            ("vigil=loud", "\"vigil=loud\""),
            ("info,vigil", "\"vigil\""),
            ("vigil=", "\"vigil=\""),
            ("[request{id=7}]", "\"[request{id=7}]\""),
            ("", "expected a log filter"),
            (" , ", "expected a log filter"),
        ] {
            let error = log_filter("log.level", bad).expect_err(bad);
            assert!(error.starts_with("log.level: "), "{error}");
            assert!(error.contains(named), "{named} in {error}");
        }
        let error = log_filter("log.level", "vigil[=info").unwrap_err();
        assert!(error.contains("is not a log filter"), "{error}");
    }

    #[test]
    fn log_formats_are_text_or_json() {
        assert_eq!(log_format("log.format", "json"), Ok(LogFormat::Json));
        assert_eq!(log_format("log.format", "text"), Ok(LogFormat::Text));
        let error = log_format("log.format", "xml").unwrap_err();
        assert_eq!(
            error,
            "log.format: \"xml\" is not a log format; expected \"text\" or \"json\""
        );
    }
}
