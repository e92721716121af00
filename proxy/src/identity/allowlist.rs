//! Clients that skip the guards (and bans): an operator's fix for a false positive, by address
//! range or identity key, from `[allowlist]`, swapped in by a reload.

use super::in_ranges;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

/// Address ranges and client keys whose requests no guard judges.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    networks: Vec<IpNet>,
    clients: HashSet<String>,
}

impl Allowlist {
    /// An allowlist of these ranges and keys.
    pub fn new(networks: Vec<IpNet>, clients: impl IntoIterator<Item = String>) -> Allowlist {
        Allowlist {
            networks,
            clients: clients.into_iter().collect(),
        }
    }

    /// Whether a client at `ip` with key `key` skips the guards.
    pub fn admits(&self, ip: IpAddr, key: &str) -> bool {
        (!self.networks.is_empty() && in_ranges(ip, &self.networks))
            || (!self.clients.is_empty() && self.clients.contains(key))
    }

    /// Whether the list admits nobody.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_keys_are_admitted_others_not() {
        let list = Allowlist::new(
            vec!["10.0.0.0/8".parse().unwrap()],
            ["partner-key".to_string()],
        );
        assert!(list.admits("10.1.2.3".parse().unwrap(), "anyone"));
        assert!(list.admits("::ffff:10.1.2.3".parse().unwrap(), "anyone"));
        assert!(list.admits("203.0.113.9".parse().unwrap(), "partner-key"));
        assert!(!list.admits("203.0.113.9".parse().unwrap(), "partner-key-2"));
        assert!(Allowlist::default().is_empty());
    }
}
