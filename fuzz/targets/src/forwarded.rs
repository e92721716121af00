//! Who the client is: the RFC 7239 `Forwarded` and the `X-Forwarded-For` parsers, the walk over
//! trusted hops, and the identity key and credentials (`vigil::identity::ClientPolicy::resolve`).
//!
//! Input: header fields, one `name: value` a line (`x-forwarded-for`, `forwarded`, `cookie`,
//! `authorization`, `x-user`, any other); a `peer: IP` line sets the socket peer, 10.0.0.1 by
//! default. The proxies trusted are 10/8, 192.168/16, ::1, 2001:db8:ffff::/48 and 172.16/12
//! (written as `::ffff:172.16.0.0/108`).
//!
//! Properties, under each identity source (`ip`, `header:x-user`, `cookie:session`, `jwt-sub`):
//! the client IP is the peer or an address written in a forwarding header, in canonical
//! (IPv4-mapped as IPv4) form; an untrusted peer's headers are ignored; `X-Forwarded-For` wins
//! over `Forwarded`; a trusted proxy appending itself to the chain does not change the client
//! (unless the walk had fallen back to the peer, which the new hop then stands for);
//! `public` is `is_public` of the IP; the key is at most `MAX_KEY_LEN` bytes and is the IP's
//! text when the identity is the IP; credentials are listed once each, and `authenticated`
//! says whether there are any.

use http::header::FORWARDED;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};
use vigil::identity::{
    is_public, ClientPolicy, IdentityKey, ResolvedClient, MAX_HOPS, MAX_KEY_LEN,
};

/// Trusted proxies; the last is 172.16/12 written in IPv4-mapped form.
const TRUSTED: [&str; 5] = [
    "10.0.0.0/8",
    "192.168.0.0/16",
    "::1/128",
    "2001:db8:ffff::/48",
    "::ffff:172.16.0.0/108",
];
const INTERNAL: [&str; 1] = ["203.0.113.0/24"];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const IDENTITIES: [&str; 4] = ["ip", "header:x-user", "cookie:session", "jwt-sub"];
/// A trusted proxy that appends itself in the metamorphic check.
const APPENDED: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1));

/// Resolves the client of the header fields in the input and checks the result.
pub fn fuzz(data: &[u8]) {
    let (peer, headers) = input(data);
    for identity in IDENTITIES {
        let policy = policy(identity);
        let resolved = policy.resolve(peer, &headers);
        check(&policy, peer, &headers, &resolved);
        check_walk(&policy, peer, &headers, resolved.ip);
    }
}

/// The peer and header fields an input describes; lines that are not valid fields are skipped.
fn input(data: &[u8]) -> (IpAddr, HeaderMap) {
    let mut peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        let (name, value) = (
            line[..colon].trim_ascii(),
            value.strip_suffix(b"\r").unwrap_or(value),
        );
        if name.eq_ignore_ascii_case(b"peer") {
            if let Some(ip) = crate::text(value).and_then(|v| v.trim().parse().ok()) {
                peer = ip;
            }
            continue;
        }
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    (peer, headers)
}

fn policy(identity: &str) -> ClientPolicy {
    ClientPolicy {
        identity: identity.parse().expect("a valid identity"),
        trusted_proxies: nets(&TRUSTED),
        internal_ranges: nets(&INTERNAL),
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter()
        .map(|n| n.parse().expect("a valid range"))
        .collect()
}

fn check(policy: &ClientPolicy, peer: IpAddr, headers: &HeaderMap, resolved: &ResolvedClient) {
    let peer = peer.to_canonical();
    let ip = resolved.ip;
    let context = || format!("peer {peer}, {headers:?}: {resolved:?}");
    assert_eq!(ip, ip.to_canonical(), "{}", context());
    let forwarding = headers.contains_key(X_FORWARDED_FOR) || headers.contains_key(FORWARDED);
    if !policy.is_trusted(peer) || !forwarding {
        assert_eq!(ip, peer, "{}", context());
    }
    if ip != peer {
        let written = written_addresses(headers);
        assert!(
            written.contains(&ip),
            "{}: not among {written:?}",
            context()
        );
    }
    if headers.contains_key(X_FORWARDED_FOR) && headers.contains_key(FORWARDED) {
        let mut without = headers.clone();
        without.remove(FORWARDED);
        assert_eq!(policy.resolve(peer, &without).ip, ip, "{}", context());
    }
    assert_eq!(
        resolved.public,
        is_public(ip, &policy.internal_ranges),
        "{}",
        context()
    );
    assert!(resolved.key.len() <= MAX_KEY_LEN, "{}", context());
    assert!(!resolved.key.is_empty(), "{}", context());
    if policy.identity == IdentityKey::Ip {
        assert_eq!(resolved.key, ip.to_string(), "{}", context());
    }
    assert_eq!(
        resolved.authenticated,
        !resolved.credentials.is_empty(),
        "{}",
        context()
    );
    for (i, kind) in resolved.credentials.iter().enumerate() {
        assert!(!resolved.credentials[..i].contains(kind), "{}", context());
    }
}

/// A trusted proxy appending its own address to the chain vouches for what was there: the
/// client stays the same, unless the walk had fallen back to the peer, which the new hop now
/// stands for.
fn check_walk(policy: &ClientPolicy, peer: IpAddr, headers: &HeaderMap, ip: IpAddr) {
    if !policy.is_trusted(peer) || hop_bound(headers) + 1 >= MAX_HOPS {
        return;
    }
    let mut appended = headers.clone();
    let name = if headers.contains_key(X_FORWARDED_FOR) {
        appended.append(X_FORWARDED_FOR, HeaderValue::from_static("10.99.0.1"));
        "x-forwarded-for"
    } else if headers.contains_key(FORWARDED) {
        appended.append(FORWARDED, HeaderValue::from_static("for=10.99.0.1"));
        "forwarded"
    } else {
        return;
    };
    let again = policy.resolve(peer, &appended).ip;
    let fell_back = ip == peer.to_canonical();
    assert!(
        again == ip || (fell_back && again == APPENDED),
        "peer {peer}, {headers:?}: {ip}, but {again} once a trusted proxy appended to {name}"
    );
}

/// At least as many hops as the forwarding headers hold (commas inside quotes count too).
fn hop_bound(headers: &HeaderMap) -> usize {
    [X_FORWARDED_FOR, FORWARDED]
        .iter()
        .flat_map(|name| headers.get_all(name))
        .map(|value| value.as_bytes().iter().filter(|&&b| b == b',').count() + 1)
        .sum()
}

/// Every address written in a forwarding header: each run of the characters an IP address is
/// made of, parsed whole or as `IPv4:port`, in canonical form.
fn written_addresses(headers: &HeaderMap) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for value in [X_FORWARDED_FOR, FORWARDED]
        .iter()
        .flat_map(|name| headers.get_all(name))
    {
        let runs = value
            .as_bytes()
            .split(|&b| !(b.is_ascii_hexdigit() || b == b':' || b == b'.'));
        for run in runs.filter_map(crate::text) {
            let v4_before_port = run
                .split_once(':')
                .and_then(|(v4, _)| v4.parse::<Ipv4Addr>().ok());
            found.extend(run.parse::<IpAddr>().ok());
            found.extend(v4_before_port.map(IpAddr::V4));
        }
    }
    found.iter().map(IpAddr::to_canonical).collect()
}
