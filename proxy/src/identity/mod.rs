//! Who sent a request: the client IP behind trusted proxies, whether that IP is public, the
//! key that groups the client's requests, and which credentials the request carries.
//!
//! Every header read here is attacker-controlled unless it was set by a trusted proxy, so the
//! hop walks are capped at [`MAX_HOPS`] and parsing borrows from the headers instead of
//! allocating; the only allocations are the key itself and a decoded JWT payload (itself capped).
//!
//! This module holds the policy (trusted hops, public or internal, the identity key); the
//! forwarding headers are parsed in `forwarded`, credentials recognised in `credentials`, and
//! the JWT subject read in `jwt`; clients that skip the guards are listed in `allowlist`.

mod allowlist;
mod credentials;
mod forwarded;
mod jwt;

pub use allowlist::Allowlist;
use credentials::cookie_value;
pub use credentials::CredentialKind;
use forwarded::{parse_forwarded, parse_node, Node, NodeRing};
use http::header::FORWARDED;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::{IpNet, Ipv4Net};
use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::Hasher;
use std::net::IpAddr;
use std::str::FromStr;
use vigil_common::syntax::is_tchar;

/// Most proxy hops read from `X-Forwarded-For` or `Forwarded`, counted from the right.
pub const MAX_HOPS: usize = 64;

/// Longest identity key, in bytes; longer values are shortened as [`ResolvedClient::key`] says.
pub const MAX_KEY_LEN: usize = 256;

/// Bytes of a too-long value kept before the `#hash` suffix.
const KEY_PREFIX_LEN: usize = 200;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

const IDENTITY_FORMS: &str =
    r#"expected one of "ip", "header:NAME", "cookie:NAME", "jwt-sub", "mtls-subject""#;

/// Where the key that groups a client's requests comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum IdentityKey {
    /// The resolved client IP.
    #[default]
    Ip,
    /// The value of this request header, e.g. an API key.
    Header(HeaderName),
    /// The value of this cookie, e.g. a session id.
    Cookie(String),
    /// The `sub` claim of an `Authorization: Bearer` JWT. The signature is NOT verified: the
    /// key only groups requests and must not be taken as proof of who the client is.
    JwtSub,
    /// The subject of the client certificate the TLS listener verified (`listen.tls.client_ca`).
    MtlsSubject,
}

impl FromStr for IdentityKey {
    type Err = String;

    /// Parses `ip`, `header:NAME`, `cookie:NAME` or `jwt-sub`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid identity key {s:?}{why}: {IDENTITY_FORMS}");
        match s {
            "ip" => return Ok(Self::Ip),
            "jwt-sub" => return Ok(Self::JwtSub),
            "mtls-subject" => return Ok(Self::MtlsSubject),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("header:") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| bad(" (not a valid header name)"));
        }
        if let Some(name) = s.strip_prefix("cookie:") {
            if !name.is_empty() && name.bytes().all(is_tchar) {
                return Ok(Self::Cookie(name.to_owned()));
            }
            return Err(bad(" (not a valid cookie name)"));
        }
        Err(bad(""))
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip => f.write_str("ip"),
            Self::Header(name) => write!(f, "header:{name}"),
            Self::Cookie(name) => write!(f, "cookie:{name}"),
            Self::JwtSub => f.write_str("jwt-sub"),
            Self::MtlsSubject => f.write_str("mtls-subject"),
        }
    }
}

/// Written as its [`Display`](fmt::Display) form so configuration files hold `"header:x-user"`.
impl serde::Serialize for IdentityKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read from the same forms [`FromStr`] accepts.
impl<'de> serde::Deserialize<'de> for IdentityKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How to resolve the client of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Where the identity key comes from.
    pub identity: IdentityKey,
    /// Peers (and hops) whose forwarding headers are believed. Ranges inside `::ffff:0:0/96`
    /// are treated as the IPv4 ranges they map.
    pub trusted_proxies: Vec<IpNet>,
    /// Extra ranges that count as non-public, on top of the built-in ones of [`is_public`].
    pub internal_ranges: Vec<IpNet>,
}

/// The client of one request, as [`ClientPolicy::resolve`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedClient {
    /// The client IP; IPv4-mapped IPv6 addresses are given in their IPv4 form.
    pub ip: IpAddr,
    /// The grouping key: the header, cookie or JWT `sub` value as-is, or the IP as text when
    /// that source is missing or invalid. Values are not prefixed, so a client can choose a
    /// value equal to someone's IP; keys are for grouping, not authentication. Values longer
    /// than [`MAX_KEY_LEN`] bytes become their first 200 bytes, `#` and a hex hash of the
    /// whole value (std's `DefaultHasher`, stable within one build).
    pub key: String,
    /// Whether [`is_public`] holds for `ip` under the policy's internal ranges.
    pub public: bool,
    /// Whether the request carries any credential (`credentials` is not empty).
    pub authenticated: bool,
    /// Every kind of credential present, each once, in declaration order.
    pub credentials: Vec<CredentialKind>,
}

impl ClientPolicy {
    /// Resolves the client of a request that arrived from socket peer `peer`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ResolvedClient {
        self.resolve_connection(peer, None, headers)
    }

    /// Resolves the client of a request on a connection from `peer` whose verified client
    /// certificate, if any, has subject `certificate`.
    pub fn resolve_connection(
        &self,
        peer: IpAddr,
        certificate: Option<&str>,
        headers: &HeaderMap,
    ) -> ResolvedClient {
        let ip = self.client_ip(peer, headers);
        let value = match self.identity {
            IdentityKey::MtlsSubject => certificate.map(Cow::Borrowed),
            _ => self.identity_value(headers),
        };
        let key = match value {
            Some(value) => cap_key(&value),
            None => ip.to_string(),
        };
        let mut credentials = credentials::credentials(&self.identity, headers);
        if certificate.is_some() {
            credentials.push(CredentialKind::ClientCertificate);
        }
        ResolvedClient {
            ip,
            key,
            public: is_public(ip, &self.internal_ranges),
            authenticated: !credentials.is_empty(),
            credentials,
        }
    }

    /// Whether `ip` (IPv4-mapped or not) is one of the configured trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        in_ranges(ip.to_canonical(), &self.trusted_proxies)
    }

    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        // Anyone can write these headers; only a trusted proxy's word counts.
        if !self.is_trusted(peer) {
            return peer;
        }
        if headers.contains_key(X_FORWARDED_FOR) {
            // Later occurrences were appended by later proxies: read them first.
            let hops = headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .rev()
                .flat_map(|value| value.as_bytes().rsplit(|&b| b == b','))
                .map(|hop| match hop.trim_ascii() {
                    [] => Node::Blank,
                    hop => parse_node(hop),
                });
            return self.walk(peer, hops);
        }
        if headers.contains_key(FORWARDED) {
            // Quoted strings may hold commas, so `Forwarded` is parsed left to right; the ring
            // keeps only the right-most hops, which are the ones the walk can reach.
            let mut ring = NodeRing::new();
            for value in headers.get_all(FORWARDED) {
                parse_forwarded(value.as_bytes(), &mut ring);
            }
            return self.walk(peer, ring.right_to_left());
        }
        peer
    }

    /// Walks hops right to left: each trusted hop vouches for the one before it, so the first
    /// untrusted hop is the client. A hop that cannot be read (or a proxy hiding its client)
    /// ends the chain of vouching; the last address reached is then the best we know.
    fn walk(&self, peer: IpAddr, hops: impl Iterator<Item = Node>) -> IpAddr {
        let mut last_good = peer;
        for hop in hops.take(MAX_HOPS) {
            match hop {
                Node::Addr(ip) => {
                    let ip = ip.to_canonical();
                    if !self.is_trusted(ip) {
                        return ip;
                    }
                    last_good = ip;
                }
                Node::Blank => {}
                Node::Hidden | Node::Invalid => break,
            }
        }
        last_good
    }

    fn identity_value<'h>(&self, headers: &'h HeaderMap) -> Option<Cow<'h, str>> {
        match &self.identity {
            IdentityKey::Ip | IdentityKey::MtlsSubject => None,
            IdentityKey::Header(name) => header_text(headers.get(name)?).map(Cow::Borrowed),
            IdentityKey::Cookie(name) => {
                let value = cookie_value(headers, name)?;
                if value.is_empty() || !value.iter().all(|&b| (0x21..0x7f).contains(&b)) {
                    return None;
                }
                std::str::from_utf8(value).ok().map(Cow::Borrowed)
            }
            IdentityKey::JwtSub => jwt::sub(headers).map(Cow::Owned),
        }
    }
}

/// Whether `ip` is a public address: not loopback, private (10/8, 172.16/12, 192.168/16),
/// link-local (169.254/16, fe80::/10), unique-local (fc00::/7), CGNAT (100.64/10),
/// unspecified, broadcast or multicast, and not in `internal_ranges`. Documentation ranges
/// (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32) count as public. IPv4-mapped IPv6
/// addresses are judged as their IPv4 form.
pub fn is_public(ip: IpAddr, internal_ranges: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    let special = match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let cgnat = a == 100 && (b & 0xc0) == 64;
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || cgnat
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
                || v6.is_unique_local()
        }
    };
    !special && !in_ranges(ip, internal_ranges)
}

/// Whether `ip` (IPv4-mapped IPv6 read as IPv4) is in one of `ranges`.
pub(crate) fn in_ranges(ip: IpAddr, ranges: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    ranges.iter().any(|net| match (canonical_net(net), ip) {
        (IpNet::V4(net), IpAddr::V4(ip)) => net.contains(&ip),
        (IpNet::V6(net), IpAddr::V6(ip)) => net.contains(&ip),
        _ => false,
    })
}

/// Addresses are compared in IPv4 form when mapped, so ranges written as `::ffff:a.b.c.d/n`
/// must be too. Wider IPv6 ranges such as `::/0` stay IPv6-only: whoever wrote them meant IPv6.
fn canonical_net(net: &IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if v6.prefix_len() >= 96 {
            if let Some(v4) = v6.network().to_ipv4_mapped() {
                if let Ok(v4) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(v4);
                }
            }
        }
    }
    *net
}

/// A header value fit to be a key: trimmed, non-empty, printable ASCII (spaces allowed inside).
fn header_text(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes().trim_ascii();
    if bytes.is_empty() || !bytes.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Shortens a long key so that distinct values stay distinct (see [`ResolvedClient::key`]).
fn cap_key(value: &str) -> String {
    if value.len() <= MAX_KEY_LEN {
        return value.to_owned();
    }
    let mut hasher = DefaultHasher::new();
    hasher.write(value.as_bytes());
    let prefix = &value[..value.floor_char_boundary(KEY_PREFIX_LEN)];
    format!("{prefix}#{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{GeneralPurpose, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    use std::net::Ipv4Addr;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn policy(trusted: &[&str]) -> ClientPolicy {
        ClientPolicy {
            trusted_proxies: nets(trusted),
            ..ClientPolicy::default()
        }
    }

    fn with_identity(identity: &str) -> ClientPolicy {
        ClientPolicy {
            identity: identity.parse().unwrap(),
            ..ClientPolicy::default()
        }
    }

    /// Client IP behind trusted 10/8 and 192.168/16 proxies, as seen from peer 10.0.0.1.
    fn ip_via_proxy(pairs: &[(&str, &str)]) -> IpAddr {
        policy(&["10.0.0.0/8", "192.168.0.0/16"])
            .resolve(ip("10.0.0.1"), &headers(pairs))
            .ip
    }

    const PEER: &str = "10.0.0.1";

    #[test]
    fn untrusted_peer_ignores_forwarding_headers() {
        let spoofed = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.2"),
        ]);
        let resolved = policy(&["10.0.0.0/8"]).resolve(ip("203.0.113.9"), &spoofed);
        assert_eq!(resolved.ip, ip("203.0.113.9"));
        assert_eq!(resolved.key, "203.0.113.9");
        assert!(resolved.public);
        // Without any trusted proxy, even a private peer's headers are ignored.
        assert_eq!(
            policy(&[]).resolve(ip(PEER), &spoofed).ip,
            ip(PEER),
            "no trusted proxies configured"
        );
    }

    #[test]
    fn trusted_peer_takes_right_most_untrusted_hop() {
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7")]),
            ip("203.0.113.7")
        );
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", "203.0.113.7")]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn chains_of_trusted_proxies_are_skipped() {
        assert_eq!(
            ip_via_proxy(&[(
                "x-forwarded-for",
                "1.1.1.1, 203.0.113.7, 192.168.1.1,10.0.0.2, 10.9.9.9"
            )]),
            ip("203.0.113.7")
        );
        // Several occurrences form one list, in order.
        assert_eq!(
            ip_via_proxy(&[
                ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
                ("x-forwarded-for", "192.168.0.5, 10.0.0.3"),
            ]),
            ip("203.0.113.7")
        );
        assert_eq!(
            ip_via_proxy(&[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-for", "198.51.100.1"),
            ]),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn all_hops_trusted_takes_left_most() {
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", "10.0.0.5, 192.168.3.3, 10.0.0.6")]),
            ip("10.0.0.5")
        );
        assert_eq!(
            ip_via_proxy(&[("forwarded", "for=10.0.0.5, for=10.0.0.6")]),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn forwarded_header_forms() {
        assert_eq!(
            ip_via_proxy(&[("forwarded", r#"for="[2001:db8::1]:4711""#)]),
            ip("2001:db8::1")
        );
        assert_eq!(
            ip_via_proxy(&[("forwarded", r#"for="[2001:db8:cafe::17]""#)]),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            ip_via_proxy(&[("forwarded", "for=192.0.2.60:8080;proto=http;by=10.0.0.1")]),
            ip("192.0.2.60")
        );
        assert_eq!(
            ip_via_proxy(&[("forwarded", r#"proto=https; For="192.0.2.61:443""#)]),
            ip("192.0.2.61")
        );
        assert_eq!(
            ip_via_proxy(&[
                ("forwarded", "for=198.51.100.1, for=192.0.2.43"),
                ("forwarded", "for=10.0.0.9;proto=https"),
            ]),
            ip("192.0.2.43")
        );
        // A comma inside a quoted parameter does not split the element.
        assert_eq!(
            ip_via_proxy(&[("forwarded", r#"for=192.0.2.44;host="a,b", for=10.0.0.2"#)]),
            ip("192.0.2.44")
        );
        // X-Forwarded-For wins when both are present.
        assert_eq!(
            ip_via_proxy(&[
                ("forwarded", "for=192.0.2.1"),
                ("x-forwarded-for", "198.51.100.8"),
            ]),
            ip("198.51.100.8")
        );
    }

    #[test]
    fn unknown_and_obfuscated_nodes_stop_the_walk() {
        // The proxy that wrote `unknown` hides its client: what lies left of it is unverified.
        for hidden in [
            "for=unknown",
            "for=_hidden",
            r#"for="_hidden:_port""#,
            "proto=http",
        ] {
            let value = format!("for=198.51.100.7, {hidden}");
            assert_eq!(ip_via_proxy(&[("forwarded", &value)]), ip(PEER), "{value}");
            let value = format!("for=198.51.100.7, {hidden}, for=10.0.0.4");
            assert_eq!(
                ip_via_proxy(&[("forwarded", &value)]),
                ip("10.0.0.4"),
                "{value}"
            );
        }
        // Left of the first untrusted hop, hidden nodes are never reached.
        assert_eq!(
            ip_via_proxy(&[("forwarded", "for=unknown, for=198.51.100.7")]),
            ip("198.51.100.7")
        );
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", "198.51.100.7, unknown")]),
            ip(PEER)
        );
    }

    #[test]
    fn garbage_hops_stop_at_the_last_good_address() {
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", "203.0.113.7, garbage, 10.0.0.2")]),
            ip("10.0.0.2")
        );
        for garbage in [
            "not-an-ip",
            "300.1.1.1",
            "010.0.0.1",
            "fe80::1%eth0",
            "1.2.3.4:99999",
            "[1.2.3.4]",
            "[2001:db8::1",
            "203.0.113.7 203.0.113.8",
        ] {
            assert_eq!(
                ip_via_proxy(&[("x-forwarded-for", garbage)]),
                ip(PEER),
                "{garbage}"
            );
        }
        for garbage in [
            "for=",
            "for=\"203.0.113.7",
            r#"for="203.0.113.7\"""#,
            "for=203.0.113.7;for=203.0.113.8",
            "for=203.0.113.7 x",
            "=203.0.113.7",
            "for 203.0.113.7",
        ] {
            assert_eq!(
                ip_via_proxy(&[("forwarded", garbage)]),
                ip(PEER),
                "{garbage}"
            );
        }
        let mut non_utf8 = HeaderMap::new();
        non_utf8.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.7, \xff\xfe").unwrap(),
        );
        assert_eq!(
            policy(&["10.0.0.0/8"]).resolve(ip(PEER), &non_utf8).ip,
            ip(PEER)
        );
    }

    #[test]
    fn lenient_xff_forms() {
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", "198.51.100.4:1234")]),
            ip("198.51.100.4")
        );
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", "[2001:db8::5]:443, 10.0.0.2")]),
            ip("2001:db8::5")
        );
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", "2001:db8::6")]),
            ip("2001:db8::6")
        );
        // Blank elements say nothing and are stepped over.
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", "203.0.113.7,, 10.0.0.2, ")]),
            ip("203.0.113.7")
        );
        assert_eq!(ip_via_proxy(&[("x-forwarded-for", "")]), ip(PEER));
    }

    #[test]
    fn hops_beyond_the_cap_are_ignored() {
        let trusted: Vec<String> = (0..100).map(|i| format!("10.0.1.{i}")).collect();
        let xff = format!("203.0.113.7, {}", trusted.join(", "));
        // All 64 reachable hops are trusted, so the walk stops at the 64th from the right.
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", &xff)]),
            ip(&format!("10.0.1.{}", 100 - MAX_HOPS))
        );
        let forwarded: Vec<String> = trusted.iter().map(|h| format!("for={h}")).collect();
        let forwarded = format!("for=203.0.113.7, {}", forwarded.join(", "));
        assert_eq!(
            ip_via_proxy(&[("forwarded", &forwarded)]),
            ip(&format!("10.0.1.{}", 100 - MAX_HOPS))
        );
        // The cap spans occurrences.
        let first = trusted[..50].join(",");
        let second = trusted[50..].join(",");
        assert_eq!(
            ip_via_proxy(&[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-for", &first),
                ("x-forwarded-for", &second),
            ]),
            ip(&format!("10.0.1.{}", 100 - MAX_HOPS))
        );
        // Within the cap the client is still found.
        let near: Vec<String> = (0..MAX_HOPS - 1).map(|i| format!("10.0.2.{i}")).collect();
        let xff = format!("203.0.113.7, {}", near.join(", "));
        assert_eq!(
            ip_via_proxy(&[("x-forwarded-for", &xff)]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_treated_as_ipv4() {
        let xff = headers(&[("x-forwarded-for", "203.0.113.7, ::ffff:10.0.0.3")]);
        let resolved = policy(&["10.0.0.0/8"]).resolve(ip("::ffff:10.0.0.1"), &xff);
        assert_eq!(resolved.ip, ip("203.0.113.7"));

        let resolved = policy(&["10.0.0.0/8"]).resolve(ip("::ffff:203.0.113.9"), &xff);
        assert_eq!(resolved.ip, IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
        assert_eq!(resolved.key, "203.0.113.9");

        let hop = headers(&[("x-forwarded-for", "::ffff:192.168.1.2")]);
        let resolved = policy(&["10.0.0.0/8"]).resolve(ip(PEER), &hop);
        assert_eq!(resolved.ip, ip("192.168.1.2"));
        assert!(!resolved.public);

        // Ranges written in mapped form match plain IPv4, and vice versa.
        assert_eq!(
            policy(&["::ffff:10.0.0.0/104"]).resolve(ip(PEER), &xff).ip,
            ip("203.0.113.7")
        );
        // `::/0` means IPv6, not every IPv4 address.
        assert_eq!(policy(&["::/0"]).resolve(ip(PEER), &xff).ip, ip(PEER));
        assert!(!is_public(ip("::ffff:127.0.0.1"), &[]));
        assert!(!is_public(
            ip("203.0.113.5"),
            &nets(&["::ffff:203.0.113.0/120"])
        ));
        assert!(!is_public(
            ip("::ffff:203.0.113.5"),
            &nets(&["203.0.113.0/24"])
        ));
        assert!(is_public(ip("::ffff:203.0.113.5"), &[]));
    }

    #[test]
    fn is_public_ranges() {
        let non_public = [
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.0.1",
            "169.254.169.254",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "ff02::1",
        ];
        for addr in non_public {
            assert!(!is_public(ip(addr), &[]), "{addr} should not be public");
        }
        let public = [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "2001:db8::1",
            "2606:4700::1111",
            "fec0::1",
        ];
        for addr in public {
            assert!(is_public(ip(addr), &[]), "{addr} should be public");
        }
        let internal = nets(&["203.0.113.0/24", "2001:db8:1::/48"]);
        assert!(!is_public(ip("203.0.113.1"), &internal));
        assert!(!is_public(ip("2001:db8:1::5"), &internal));
        assert!(is_public(ip("2001:db8:2::5"), &internal));
        assert!(is_public(ip("198.51.100.1"), &internal));

        let mut policy = policy(&[]);
        policy.internal_ranges = internal;
        assert!(!policy.resolve(ip("203.0.113.1"), &HeaderMap::new()).public);
        assert!(policy.resolve(ip("198.51.100.1"), &HeaderMap::new()).public);
    }

    #[test]
    fn identity_ip() {
        let resolved = with_identity("ip").resolve(ip("2001:db8::7"), &HeaderMap::new());
        assert_eq!(resolved.key, "2001:db8::7");
    }

    #[test]
    fn identity_header_and_fallbacks() {
        let policy = with_identity("header:X-User");
        let peer = ip("203.0.113.9");
        let key = |pairs: &[(&str, &str)]| policy.resolve(peer, &headers(pairs)).key;
        assert_eq!(key(&[("x-user", "  alice ")]), "alice");
        assert_eq!(key(&[("x-user", "Alice Smith")]), "Alice Smith");
        assert_eq!(key(&[("x-user", "first"), ("x-user", "second")]), "first");
        assert_eq!(key(&[]), "203.0.113.9");
        assert_eq!(key(&[("x-user", "   ")]), "203.0.113.9");
        assert_eq!(key(&[("x-user", "a\tb")]), "203.0.113.9");
        let mut non_ascii = HeaderMap::new();
        non_ascii.insert("x-user", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert_eq!(policy.resolve(peer, &non_ascii).key, "203.0.113.9");
    }

    #[test]
    fn identity_cookie_and_fallbacks() {
        let policy = with_identity("cookie:session");
        let peer = ip("203.0.113.9");
        let key = |pairs: &[(&str, &str)]| policy.resolve(peer, &headers(pairs)).key;
        assert_eq!(key(&[("cookie", "a=1; session=abc123 ; b=2")]), "abc123");
        assert_eq!(key(&[("cookie", "session=abc123")]), "abc123");
        assert_eq!(
            key(&[
                ("cookie", "a=1; xsession=no"),
                ("cookie", "b=2;session=yes")
            ]),
            "yes"
        );
        assert_eq!(key(&[("cookie", r#"session="quoted""#)]), "quoted");
        assert_eq!(key(&[("cookie", "session=first; session=second")]), "first");
        assert_eq!(key(&[("cookie", "Session=wrong-case")]), "203.0.113.9");
        assert_eq!(key(&[("cookie", "session=")]), "203.0.113.9");
        assert_eq!(key(&[("cookie", "session=a b")]), "203.0.113.9");
        assert_eq!(key(&[("cookie", "other=1")]), "203.0.113.9");
        assert_eq!(key(&[]), "203.0.113.9");
    }

    fn jwt(payload: &str, engine: &GeneralPurpose) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        format!("{header}.{}.c2lnbmF0dXJl", engine.encode(payload))
    }

    #[test]
    fn identity_jwt_sub_and_fallbacks() {
        let policy = with_identity("jwt-sub");
        let peer = ip("203.0.113.9");
        let key = |authorization: &str| {
            policy
                .resolve(peer, &headers(&[("authorization", authorization)]))
                .key
        };
        // 22 bytes of JSON: padded base64 ends in `==`.
        let payload = r#"{"sub":"user-1","a":1}"#;
        assert!(URL_SAFE.encode(payload).ends_with('='));
        assert_eq!(
            key(&format!("Bearer {}", jwt(payload, &URL_SAFE_NO_PAD))),
            "user-1"
        );
        assert_eq!(
            key(&format!("Bearer {}", jwt(payload, &URL_SAFE))),
            "user-1"
        );
        assert_eq!(
            key(&format!(
                "bearer  {}",
                jwt(r#"{"sub":"über"}"#, &URL_SAFE_NO_PAD)
            )),
            "über"
        );
        // Unsecured JWTs have an empty signature; the signature is never checked anyway.
        let unsigned = format!("e30.{}.", URL_SAFE_NO_PAD.encode(r#"{"sub":"u2"}"#));
        assert_eq!(key(&format!("Bearer {unsigned}")), "u2");

        let fallbacks = [
            format!("Bearer {}", jwt(r#"{"sub":42}"#, &URL_SAFE_NO_PAD)),
            format!("Bearer {}", jwt(r#"{"sub":null}"#, &URL_SAFE_NO_PAD)),
            format!("Bearer {}", jwt(r#"{"sub":""}"#, &URL_SAFE_NO_PAD)),
            format!("Bearer {}", jwt(r#"{"iss":"x"}"#, &URL_SAFE_NO_PAD)),
            format!(
                "Bearer {}",
                jwt(r#"{"sub":"a","sub":"b"}"#, &URL_SAFE_NO_PAD)
            ),
            format!("Bearer {}", jwt(r#"["sub"]"#, &URL_SAFE_NO_PAD)),
            format!("Bearer {}", jwt("not json", &URL_SAFE_NO_PAD)),
            format!("Bearer {}", jwt("{\"sub\":\"a\\nb\"}", &URL_SAFE_NO_PAD)),
            format!("Basic {}", jwt(r#"{"sub":"user-1"}"#, &URL_SAFE_NO_PAD)),
            "Bearer e30.!!!.sig".to_owned(),
            "Bearer e30.eyJzdWIiOiJ1In0".to_owned(),
            "Bearer a.b.c.d.e".to_owned(),
            "Bearer opaque-token".to_owned(),
            "Bearer".to_owned(),
        ];
        for authorization in &fallbacks {
            assert_eq!(key(authorization), "203.0.113.9", "{authorization}");
        }
        assert_eq!(policy.resolve(peer, &HeaderMap::new()).key, "203.0.113.9");
    }

    #[test]
    fn long_keys_are_capped_but_stay_distinct() {
        let policy = with_identity("header:x-user");
        let peer = ip("203.0.113.9");
        let key = |value: &str| policy.resolve(peer, &headers(&[("x-user", value)])).key;

        let exact = "k".repeat(MAX_KEY_LEN);
        assert_eq!(key(&exact), exact);

        let one = format!("{}1", "k".repeat(400));
        let two = format!("{}2", "k".repeat(400));
        let (key_one, key_two) = (key(&one), key(&two));
        assert_ne!(key_one, key_two);
        for capped in [&key_one, &key_two] {
            assert!(capped.len() <= MAX_KEY_LEN, "{}", capped.len());
            assert!(capped.starts_with(&format!("{}#", "k".repeat(KEY_PREFIX_LEN))));
        }
        assert_eq!(key(&one), key_one, "capping is deterministic");

        // A multi-byte character straddling the cut is dropped, not split.
        let wide = format!("{}{}", "a".repeat(KEY_PREFIX_LEN - 1), "é".repeat(100));
        let capped = cap_key(&wide);
        assert!(capped.starts_with(&format!("{}#", "a".repeat(KEY_PREFIX_LEN - 1))));
        assert!(capped.len() <= MAX_KEY_LEN);
    }

    #[test]
    fn credential_kinds() {
        let peer = ip("203.0.113.9");
        let creds = |policy: &ClientPolicy, pairs: &[(&str, &str)]| {
            let resolved = policy.resolve(peer, &headers(pairs));
            assert_eq!(resolved.authenticated, !resolved.credentials.is_empty());
            resolved.credentials
        };
        let by_ip = with_identity("ip");
        use CredentialKind::*;
        let none: Vec<CredentialKind> = Vec::new();
        assert_eq!(creds(&by_ip, &[]), none);
        assert!(!by_ip.resolve(peer, &HeaderMap::new()).authenticated);
        assert_eq!(
            creds(&by_ip, &[("authorization", "Bearer abc")]),
            vec![Bearer]
        );
        assert_eq!(
            creds(&by_ip, &[("authorization", "BASIC dXNlcjpwdw==")]),
            vec![Basic]
        );
        assert_eq!(creds(&by_ip, &[("authorization", "Bearer ")]), none);
        assert_eq!(creds(&by_ip, &[("authorization", "Digest x=1")]), none);
        assert_eq!(creds(&by_ip, &[("cookie", "theme=dark")]), vec![Cookie]);
        assert_eq!(creds(&by_ip, &[("x-api-key", "k1")]), vec![ApiKey]);
        assert_eq!(creds(&by_ip, &[("api-key", "k1")]), vec![ApiKey]);
        assert_eq!(creds(&by_ip, &[("x-api-key", " ")]), none);
        assert_eq!(
            creds(
                &by_ip,
                &[
                    ("x-api-key", "k1"),
                    ("cookie", "a=1"),
                    ("authorization", "Basic dXNlcjpwdw=="),
                    ("authorization", "Bearer t"),
                ]
            ),
            vec![Bearer, Basic, Cookie, ApiKey]
        );

        let by_cookie = with_identity("cookie:sid");
        assert_eq!(creds(&by_cookie, &[("cookie", "theme=dark")]), none);
        assert_eq!(
            creds(&by_cookie, &[("cookie", "theme=dark; sid=s1")]),
            vec![Cookie]
        );

        let by_header = with_identity("header:x-client-token");
        assert_eq!(creds(&by_header, &[("x-client-token", "t")]), vec![ApiKey]);
        assert_eq!(creds(&by_header, &[("x-other", "t")]), none);

        assert_eq!(
            [Bearer, Basic, Cookie, ApiKey].map(|k| k.as_str()),
            ["bearer", "basic", "cookie", "api-key"]
        );
        assert_eq!(ApiKey.to_string(), "api-key");
    }

    #[test]
    fn identity_key_parses_and_displays() {
        for text in ["ip", "header:x-user", "cookie:session_id", "jwt-sub"] {
            let parsed: IdentityKey = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            "header:X-User".parse::<IdentityKey>().unwrap(),
            IdentityKey::Header(HeaderName::from_static("x-user"))
        );
        assert_eq!(
            "cookie:SID".parse::<IdentityKey>().unwrap(),
            IdentityKey::Cookie("SID".to_owned())
        );
        for bad in [
            "",
            "IP",
            "bogus",
            "header:",
            "header:a b",
            "cookie:",
            "cookie:a;b",
            "jwt",
        ] {
            let err = bad.parse::<IdentityKey>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.contains(IDENTITY_FORMS), "{err}");
        }
        let key: IdentityKey = serde_json::from_str(r#""cookie:sid""#).unwrap();
        assert_eq!(key, IdentityKey::Cookie("sid".to_owned()));
        assert_eq!(serde_json::to_string(&key).unwrap(), r#""cookie:sid""#);
        assert!(serde_json::from_str::<IdentityKey>(r#""nope""#).is_err());
    }

    #[test]
    fn trust_check_sees_through_ipv4_mapped_peers() {
        let policy = ClientPolicy {
            trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
            ..ClientPolicy::default()
        };
        assert!(policy.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(policy.is_trusted("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!policy.is_trusted("::ffff:127.0.0.2".parse().unwrap()));
    }
}
