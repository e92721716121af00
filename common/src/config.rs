//! Checks of single values that every configuration file shares (the sidecar's and the
//! collector's): addresses, durations, bounds and address ranges. Each error names the key.

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
