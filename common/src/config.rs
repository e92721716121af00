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

/// `value` as a log filter (`info`, `warn,vigil_collector=debug`), or an error naming `key`.
///
/// Every directive must be a level, or a target and `=` and a level. The filter parser alone
/// reads a lone unknown word such as `verbose` as a target to trace, which is never what was
/// meant.
pub fn log_filter(key: &str, value: &str) -> Result<String, String> {
    let expected = "expected one of trace, debug, info, warn, error, off, alone or after a \
                    target as in `vigil_collector=debug`";
    let directives: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(format!("{key}: the log filter is empty; {expected}"));
    }
    for directive in directives {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !LOG_LEVELS.iter().any(|l| level.eq_ignore_ascii_case(l)) {
            return Err(format!(
                "{key}: {directive:?} does not name a log level; {expected}"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(value)
        .map_err(|e| format!("{key}: {value:?} is not a log filter: {e}"))?;
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters_name_a_level_in_every_directive() {
        for good in [
            "info",
            "WARN",
            "off",
            "warn,vigil_collector=debug",
            "hyper=error, info",
        ] {
            assert_eq!(log_filter("log.level", good).as_deref(), Ok(good));
        }
        for (bad, named) in [
            ("verbose", "\"verbose\""),
            ("info,verbose", "\"verbose\""),
            ("vigil=loud", "\"vigil=loud\""),
            ("", "empty"),
            (" , ", "empty"),
        ] {
            let error = log_filter("log.level", bad).unwrap_err();
            assert!(
                error.starts_with("log.level: ") && error.contains(named),
                "{error:?} should name {named}"
            );
        }
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
