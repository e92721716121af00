//! The forwarding headers proxies write: `X-Forwarded-For` nodes and RFC 7239 `Forwarded`
//! elements, parsed without allocating into the [`Node`]s the trusted-hop walk reads. A long
//! header costs no memory: only the right-most [`MAX_HOPS`] nodes are kept.

use super::MAX_HOPS;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use vigil_common::syntax::is_tchar;

/// One entry of a forwarding header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    Addr(IpAddr),
    /// An empty list element; says nothing, so the walk steps over it.
    Blank,
    /// `unknown`, an obfuscated `_name`, or a `Forwarded` element without `for=`: the proxy
    /// that wrote it hides its client, so nothing further left can be vouched for.
    Hidden,
    Invalid,
}

/// Parses a node: an IP, `v4:port`, `[v6]`, `[v6]:port`, `unknown` or `_obfuscated` (RFC 7239
/// §6, which `X-Forwarded-For` writers also follow in practice).
pub(super) fn parse_node(raw: &[u8]) -> Node {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Node::Invalid;
    };
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Node::Addr(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let Some((addr, tail)) = rest.split_once(']') else {
            return Node::Invalid;
        };
        let port_ok = tail.is_empty() || tail.strip_prefix(':').is_some_and(is_port);
        return match addr.parse::<Ipv6Addr>() {
            Ok(v6) if port_ok => Node::Addr(IpAddr::V6(v6)),
            _ => Node::Invalid,
        };
    }
    let (name, port) = match text.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (text, None),
    };
    if name.eq_ignore_ascii_case("unknown") || name.starts_with('_') {
        return Node::Hidden;
    }
    match (name.parse::<Ipv4Addr>(), port) {
        (Ok(v4), Some(port)) if is_port(port) => Node::Addr(IpAddr::V4(v4)),
        _ => Node::Invalid,
    }
}

fn is_port(port: &str) -> bool {
    let digits = port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    let obfuscated = port.len() > 1
        && port.starts_with('_')
        && port
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    digits || obfuscated
}

/// The right-most [`MAX_HOPS`] hops seen, in a fixed array so a long header costs no memory.
pub(super) struct NodeRing {
    hops: [Node; MAX_HOPS],
    pushed: usize,
}

impl NodeRing {
    pub(super) fn new() -> Self {
        Self {
            hops: [Node::Blank; MAX_HOPS],
            pushed: 0,
        }
    }

    fn push(&mut self, hop: Node) {
        self.hops[self.pushed % MAX_HOPS] = hop;
        self.pushed += 1;
    }

    pub(super) fn right_to_left(&self) -> impl Iterator<Item = Node> + '_ {
        let kept = self.pushed.min(MAX_HOPS);
        (1..=kept).map(move |back| self.hops[(self.pushed - back) % MAX_HOPS])
    }
}

/// Parses one `Forwarded` value (RFC 7239: `elem *("," elem)`, `elem = pair *(";" pair)`,
/// `pair = token "=" (token / quoted-string)`), pushing one hop per element.
pub(super) fn parse_forwarded(mut rest: &[u8], ring: &mut NodeRing) {
    loop {
        let (hop, after) = forwarded_element(rest);
        ring.push(hop);
        match after {
            Some(after) => rest = after,
            None => return,
        }
    }
}

/// Reads one element; returns its hop and the input after its `,` (`None` at the end).
fn forwarded_element(mut s: &[u8]) -> (Node, Option<&[u8]>) {
    let mut for_hop = None;
    let mut any_pair = false;
    let mut malformed = false;
    let end = loop {
        s = s.trim_ascii_start();
        match s.first() {
            None => break None,
            Some(b',') => break Some(&s[1..]),
            Some(b';') => {
                s = &s[1..];
                continue;
            }
            Some(_) => {}
        }
        any_pair = true;
        let key_len = s.iter().take_while(|&&b| is_tchar(b)).count();
        let (key, after_key) = s.split_at(key_len);
        let Some(after_eq) = after_key.strip_prefix(b"=").filter(|_| !key.is_empty()) else {
            malformed = true;
            s = skip_to_delimiter(after_key);
            continue;
        };
        let (value, after_value) = forwarded_value(after_eq);
        if key.eq_ignore_ascii_case(b"for") {
            // A second `for` in one element is ambiguous; RFC 7239 forbids it.
            malformed |= for_hop.is_some();
            for_hop = Some(match value {
                Some(value) if !value.is_empty() => parse_node(value),
                _ => Node::Invalid,
            });
        }
        s = after_value.trim_ascii_start();
        if !matches!(s.first(), None | Some(b',' | b';')) {
            malformed = true;
            s = skip_to_delimiter(s);
        }
    };
    let hop = match (malformed, for_hop, any_pair) {
        (true, _, _) => Node::Invalid,
        (false, Some(hop), _) => hop,
        (false, None, true) => Node::Hidden,
        (false, None, false) => Node::Blank,
    };
    (hop, end)
}

/// Reads a token or quoted-string value. A quoted value with escapes yields `None`: no real
/// node needs one, and unescaping would need an allocation.
fn forwarded_value(s: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let Some(quoted) = s.strip_prefix(b"\"") else {
        let len = s
            .iter()
            .take_while(|&&b| !matches!(b, b',' | b';' | b' ' | b'\t' | b'"'))
            .count();
        return (Some(&s[..len]), &s[len..]);
    };
    let mut escaped = false;
    let mut i = 0;
    while i < quoted.len() {
        match quoted[i] {
            b'\\' => {
                escaped = true;
                i += 2;
            }
            b'"' => {
                let value = (!escaped).then(|| &quoted[..i]);
                return (value, &quoted[i + 1..]);
            }
            _ => i += 1,
        }
    }
    // Unterminated: nothing after the quote can be trusted to be structure.
    (None, &[])
}

fn skip_to_delimiter(s: &[u8]) -> &[u8] {
    let len = s.iter().take_while(|&&b| b != b',' && b != b';').count();
    &s[len..]
}
