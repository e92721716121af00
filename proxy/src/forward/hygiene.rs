//! HTTP hygiene a proxy owes on the way to the upstream: hop-by-hop fields, conflicting framing,
//! the request's `Host`, the upgrades allowed, forwarding headers, and a request body replayed
//! after guards read its prefix.

use crate::forward::normalize::is_unreserved;
use crate::respond::ProxyError;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether `name` is a hop-by-hop field (RFC 9110 §7.6.1, and every `Proxy-*` field), removed
/// in both directions. This runs for every field of every head, so the standard names are
/// compared as the constants they are (no text comparison), and only the others as text.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    const KEEP_ALIVE: &[u8] = b"keep-alive";
    const PROXY: &[u8] = b"proxy-";
    if name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
    {
        return true;
    }
    let name = name.as_str().as_bytes();
    name == KEEP_ALIVE || name.starts_with(PROXY)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Checks the size of a request head against `listen.max_header_bytes` and
/// `listen.max_headers`, so that an oversized head is refused here, with a body saying why,
/// rather than by the HTTP parser, which answers 431 with an empty body. The parser's own
/// limits are set above these (`serve`) and remain the bound on what a connection buffers.
/// The size is that of the head as HTTP/1.1 writes it: the request line, each field as
/// `name: value` and the line ends (a head padded with extra spaces measures a little less).
pub fn check_head_size(
    parts: &http::request::Parts,
    max_bytes: usize,
    max_fields: usize,
) -> Result<(), ProxyError> {
    let fields = parts.headers.len();
    if fields > max_fields {
        return Err(ProxyError::HeadTooLarge(format!(
            "the request has {fields} header fields; at most {max_fields} are accepted"
        )));
    }
    let uri = &parts.uri;
    let target = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => scheme.len() + "://".len() + authority.as_str().len(),
        _ => 0,
    } + uri.path_and_query().map_or(1, |p| p.as_str().len());
    // "METHOD SP target SP HTTP/1.1 CRLF", each "name: value CRLF", and the blank line.
    let line = parts.method.as_str().len() + 1 + target + 1 + "HTTP/1.1".len() + 2;
    let size = parts.headers.iter().fold(line + 2, |size, (name, value)| {
        size + name.as_str().len() + 2 + value.len() + 2
    });
    if size > max_bytes {
        return Err(ProxyError::HeadTooLarge(format!(
            "the request head is {size} bytes; at most {max_bytes} are accepted"
        )));
    }
    Ok(())
}

/// Checks the framing of a request: both `Content-Length` and `Transfer-Encoding`, or
/// `Content-Length`s that disagree, are refused (request smuggling).
pub fn check_framing(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().unwrap_or("x").split(',') {
            let parsed: u64 = part
                .trim()
                .parse()
                .map_err(|_| ProxyError::BadRequest("invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(ProxyError::BadRequest(
                    "conflicting Content-Length values".into(),
                ));
            }
            length = Some(parsed);
        }
    }
    if length.is_some() && headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding are present".into(),
        ));
    }
    Ok(length)
}

/// Whether a response's framing is ambiguous: both `Content-Length` and `Transfer-Encoding`
/// (RFC 9112 §6.3 lets `Transfer-Encoding` win, but a peer that sent both may be desynchronised
/// from its connection, which is then not to be reused).
pub fn is_ambiguous_response(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CONTENT_LENGTH) && headers.contains_key(header::TRANSFER_ENCODING)
}

/// Settles which host a request is for, as RFC 9112 §3.2 and RFC 9113 §8.3.1 say: an HTTP/1.1
/// request has exactly one valid `Host`; a target in absolute form, or HTTP/2's `:authority`,
/// names the host, and `Host` is set to it so that routing, guards and the upstream see the
/// same. Anything else is a 400.
pub fn settle_host(parts: &mut http::request::Parts) -> Result<(), ProxyError> {
    let mut fields = parts.headers.get_all(header::HOST).iter();
    let host = fields.next();
    if fields.next().is_some() {
        return Err(ProxyError::BadRequest(
            "the request has more than one Host field".into(),
        ));
    }
    if let Some(host) = host {
        if !is_host(host.as_bytes()) {
            return Err(ProxyError::BadRequest(
                "the request's Host is not a host name or address with an optional port".into(),
            ));
        }
    }
    let authority = parts.uri.authority();
    match (parts.version, host, authority) {
        (Version::HTTP_11, None, _) => Err(ProxyError::BadRequest(
            "an HTTP/1.1 request must have a Host field".into(),
        )),
        (_, _, Some(authority)) if !is_host(authority.as_str().as_bytes()) => Err(
            ProxyError::BadRequest("the request target's authority is not a host".into()),
        ),
        (Version::HTTP_2, Some(host), Some(authority))
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Err(ProxyError::BadRequest(
                "the request's Host differs from its :authority".into(),
            ))
        }
        (_, _, Some(authority)) => {
            let value = HeaderValue::from_str(authority.as_str())
                .map_err(|_| ProxyError::BadRequest("invalid authority".into()))?;
            parts.headers.insert(header::HOST, value);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `host [":" port]` (RFC 9110 §7.2): a registered name of unreserved characters and
/// percent-escapes, an IPv4 address or a bracketed IPv6 one; no user information, no list.
fn is_host(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|&b| b == b':') {
        Some(colon) if !value.ends_with(b"]") => (&value[..colon], &value[colon + 1..]),
        _ => (value, &b""[..]),
    };
    let port_ok = port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
    let host_ok = match host {
        [b'[', inner @ .., b']'] => {
            std::str::from_utf8(inner).is_ok_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        _ => !host.is_empty() && host.iter().all(|&b| is_unreserved(b) || b == b'%'),
    };
    host_ok && port_ok
}

/// The `Upgrade` to forward: the protocols the request offers (`Connection: upgrade` and
/// `Upgrade`) that `allowed` names, or `None` when it offers none of them; the request is then
/// forwarded as an ordinary one. `h2c` is never among them (the configuration refuses it): a
/// tunnel is outside the guards, and HTTP/2 in one would carry requests no guard sees.
pub fn allowed_upgrade(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    let offered = headers.get(header::UPGRADE)?;
    if !connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    let kept: Vec<&str> = offered
        .to_str()
        .ok()?
        .split(',')
        .map(str::trim)
        .filter(|protocol| is_allowed_protocol(protocol, allowed))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// Whether the upstream's `101 Switching Protocols` switches to one of the protocols the
/// request offered; anything else is not tunnelled.
pub fn accepts_upgrade(offered: &HeaderValue, response: &HeaderMap) -> bool {
    let Some(chosen) = response
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    else {
        return false;
    };
    offered.to_str().is_ok_and(|offered| {
        offered
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case(chosen))
    })
}

/// Whether `protocol` (`name[/version]`) is one of the `allowed` names.
fn is_allowed_protocol(protocol: &str, allowed: &[String]) -> bool {
    let name = protocol.split('/').next().unwrap_or("").trim();
    !name.is_empty()
        && !name.eq_ignore_ascii_case("h2c")
        && allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop fields: the fixed list, every `Proxy-*` field and every field named in
/// `Connection`. With `upgrade`, sets `Connection: upgrade` and that `Upgrade` so the
/// handshake can pass.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    // One pass over the names, hashing nothing: most requests carry no hop-by-hop field (and
    // so no `Connection` naming others), and most responses only `Connection`.
    if upgrade.is_none() && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // `keep-alive` is removed as hop-by-hop anyway, and `close` names no field (RFC 9110
    // reserves the name): leaving them out keeps the common `Connection` of a response from
    // costing a text comparison per field.
    let listed: Vec<&str> = connection_tokens(headers)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
        .collect();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            is_hop_by_hop(name) || listed.iter().any(|t| t.eq_ignore_ascii_case(name.as_str()))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
    if let Some(value) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// The client end of one connection: its address, and the forwarding fields it adds to each
/// of its requests, written once when the connection is accepted rather than formatted again
/// for every request.
#[derive(Clone, Debug)]
pub struct ClientEnd {
    /// The peer's address.
    peer: IpAddr,
    /// The `X-Forwarded-For` element: the peer's address as text.
    forwarded_for: HeaderValue,
    /// The `Forwarded` element (RFC 7239).
    forwarded: HeaderValue,
    /// `X-Forwarded-Proto`: `http` or `https`.
    proto: HeaderValue,
    /// The subject of the client certificate the TLS listener verified.
    certificate: Option<Box<str>>,
}

impl ClientEnd {
    /// The client end of a plain-text connection from `peer`.
    pub fn new(peer: IpAddr) -> ClientEnd {
        ClientEnd::with_tls(peer, false, None)
    }

    /// The client end of a connection from `peer`, over TLS when `tls`, whose client
    /// certificate has subject `certificate`.
    pub fn with_tls(peer: IpAddr, tls: bool, certificate: Option<String>) -> ClientEnd {
        let proto = if tls { "https" } else { "http" };
        let node = match peer {
            IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto={proto}"),
            IpAddr::V4(ip) => format!("for={ip};proto={proto}"),
        };
        ClientEnd {
            peer,
            forwarded_for: HeaderValue::from_str(&peer.to_string())
                .expect("an IP address is a valid header value"),
            forwarded: HeaderValue::from_str(&node).expect("a node is a valid header value"),
            proto: HeaderValue::from_static(proto),
            certificate: certificate.map(String::into_boxed_str),
        }
    }

    /// The subject of the verified client certificate, if the client presented one.
    pub fn certificate(&self) -> Option<&str> {
        self.certificate.as_deref()
    }

    /// The address of the client end of the connection.
    pub fn address(&self) -> IpAddr {
        self.peer
    }

    /// `ip` as text, taken from the connection's when it is the peer's (the usual case: no
    /// trusted proxy in between), so that it is not formatted again for every request.
    pub fn text_of(&self, ip: IpAddr) -> String {
        match self.forwarded_for.to_str() {
            Ok(text) if ip == self.peer => text.to_string(),
            _ => ip.to_string(),
        }
    }
}

/// Adds `X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded` and `Via` for the client end.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client_end: &ClientEnd,
    version: Version,
    keep_client_proto: bool,
) {
    append_list(headers, X_FORWARDED_FOR, &client_end.forwarded_for);
    if !(keep_client_proto && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, client_end.proto.clone());
    }
    append_list(headers, header::FORWARDED, &client_end.forwarded);
    let via = HeaderValue::from_static(match version {
        Version::HTTP_2 => "2 vigil",
        Version::HTTP_10 => "1.0 vigil",
        _ => "1.1 vigil",
    });
    append_list(headers, header::VIA, &via);
}

/// Appends `item` to the comma-separated list field `name`, folding the field's existing lines
/// into one.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &HeaderValue) {
    match headers.entry(name) {
        header::Entry::Vacant(field) => {
            field.insert(item.clone());
        }
        header::Entry::Occupied(mut field) => {
            let mut combined = Vec::new();
            for existing in field.iter() {
                combined.extend_from_slice(existing.as_bytes());
                combined.extend_from_slice(b", ");
            }
            combined.extend_from_slice(item.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&combined) {
                field.insert(value);
            }
        }
    }
}

/// An error and its causes on one line, for logs.
pub(crate) fn source_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

/// An error reading the client's request body (malformed chunked encoding, a connection
/// closed mid-body): the client's fault, answered 400 and never blamed on the upstream.
#[derive(Debug)]
pub struct ClientBodyError(pub hyper::Error);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read the request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A request body of which a prefix was already read (for guards that inspect bodies):
/// replays the prefix, then streams the rest.
pub struct PrefixedBody {
    prefix: VecDeque<Bytes>,
    rest: Option<Incoming>,
}

impl PrefixedBody {
    /// Reads up to `want` bytes of `body`. Returns the prefix (possibly the whole body) and
    /// the body to forward.
    pub async fn read(
        mut body: Incoming,
        want: usize,
    ) -> Result<(Bytes, PrefixedBody), ClientBodyError> {
        let mut chunks = VecDeque::new();
        let mut seen = 0;
        let mut ended = false;
        while seen < want {
            match body.frame().await {
                None => {
                    ended = true;
                    break;
                }
                Some(frame) => {
                    if let Ok(data) = frame.map_err(ClientBodyError)?.into_data() {
                        seen += data.len();
                        chunks.push_back(data);
                    }
                }
            }
        }
        let mut prefix = Vec::with_capacity(seen.min(want));
        for chunk in &chunks {
            let take = (want - prefix.len()).min(chunk.len());
            prefix.extend_from_slice(&chunk[..take]);
        }
        let rest = (!ended).then_some(body);
        Ok((
            Bytes::from(prefix),
            PrefixedBody {
                prefix: chunks,
                rest,
            },
        ))
    }
}

impl Body for PrefixedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match self.rest.as_mut() {
            None => Poll::Ready(None),
            Some(rest) => Pin::new(rest)
                .poll_frame(cx)
                .map_err(|e| Box::new(ClientBodyError(e)) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.prefix.iter().map(|c| c.len() as u64).sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |r| r.size_hint());
        // Raise the upper bound first: SizeHint checks lower <= upper on every change.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + buffered);
        }
        hint.set_lower(rest.lower() + buffered);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_fixed_named_and_proxy_fields() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, None);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn fields_named_in_connection_match_whatever_their_case() {
        let mut h = headers(&[
            ("connection", "X-Secret"),
            ("x-secret", "1"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, None);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn a_response_closing_or_keeping_alive_loses_only_its_hop_by_hop_fields() {
        for connection in ["Keep-Alive", "close", "keep-alive, Close"] {
            let mut h = headers(&[
                ("connection", connection),
                ("keep-alive", "timeout=5"),
                ("content-type", "text/plain"),
                ("server", "upstream"),
            ]);
            strip_hop_by_hop(&mut h, None);
            let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            names.sort_unstable();
            assert_eq!(names, ["content-type", "server"], "{connection}");
        }
    }

    #[test]
    fn a_head_without_hop_by_hop_fields_is_left_as_it_is() {
        let pairs = [("host", "shop"), ("accept", "*/*"), ("accept", "text/html")];
        let mut h = headers(&pairs);
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h, headers(&pairs));
    }

    #[test]
    fn keeps_the_upgrade_handshake_when_upgrading() {
        let mut h = headers(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
        ]);
        let upgrade = allowed_upgrade(&h, &["websocket".into()]);
        assert_eq!(upgrade.as_ref().unwrap(), "websocket");
        strip_hop_by_hop(&mut h, upgrade);
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert!(!h.contains_key("x-secret"));
    }

    #[test]
    fn only_allowed_upgrades_pass_and_never_h2c() {
        let allowed = ["websocket".to_string()];
        let offer = |upgrade: &str, connection: &str| {
            allowed_upgrade(
                &headers(&[("upgrade", upgrade), ("connection", connection)]),
                &allowed,
            )
        };
        assert_eq!(offer("h2c", "Upgrade, HTTP2-Settings"), None);
        assert_eq!(offer("H2C", "upgrade"), None);
        assert_eq!(offer("h2c, websocket", "upgrade").unwrap(), "websocket");
        assert_eq!(
            offer("WebSocket", "keep-alive, Upgrade").unwrap(),
            "WebSocket"
        );
        assert_eq!(
            offer("websocket", "keep-alive"),
            None,
            "no Connection: upgrade"
        );
        assert_eq!(offer("TLS/1.2", "upgrade"), None);
        let h2c_allowed = ["h2c".to_string()];
        let h2c = headers(&[("upgrade", "h2c"), ("connection", "upgrade")]);
        assert_eq!(
            allowed_upgrade(&h2c, &h2c_allowed),
            None,
            "h2c is never allowed"
        );
        // Stripping without an allowed upgrade removes the whole handshake.
        let mut h = headers(&[
            ("upgrade", "h2c"),
            ("connection", "Upgrade, HTTP2-Settings"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ]);
        strip_hop_by_hop(&mut h, None);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn a_switch_must_be_to_an_offered_protocol() {
        let offered = HeaderValue::from_static("websocket");
        assert!(accepts_upgrade(
            &offered,
            &headers(&[("upgrade", "WebSocket")])
        ));
        assert!(!accepts_upgrade(&offered, &headers(&[("upgrade", "h2c")])));
        assert!(!accepts_upgrade(&offered, &headers(&[])));
    }

    fn request_parts(target: &str, version: Version, hosts: &[&str]) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(target).version(version);
        for host in hosts {
            builder = builder.header("host", *host);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn an_http11_request_has_exactly_one_valid_host() {
        let settle =
            |hosts: &[&str]| settle_host(&mut request_parts("/x", Version::HTTP_11, hosts));
        assert!(settle(&["shop.example"]).is_ok());
        assert!(settle(&["shop.example:8080"]).is_ok());
        assert!(settle(&["192.0.2.1:80"]).is_ok());
        assert!(settle(&["[2001:db8::1]:443"]).is_ok());
        for bad in [
            &[][..],
            &["a.example", "b.example"][..],
            &["a.example, b.example"][..],
            &["user@a.example"][..],
            &[""][..],
            &["a.example:http"][..],
            &["[not-v6]"][..],
            &["a example"][..],
        ] {
            assert!(
                matches!(settle(bad), Err(ProxyError::BadRequest(_))),
                "{bad:?}"
            );
        }
        // HTTP/1.0 may leave it out.
        assert!(settle_host(&mut request_parts("/x", Version::HTTP_10, &[])).is_ok());
    }

    #[test]
    fn an_absolute_target_names_the_host() {
        let mut parts = request_parts(
            "http://other.example/x",
            Version::HTTP_11,
            &["shop.example"],
        );
        settle_host(&mut parts).unwrap();
        assert_eq!(parts.headers.get("host").unwrap(), "other.example");
        let mut h2 = request_parts("http://shop.example/x", Version::HTTP_2, &[]);
        settle_host(&mut h2).unwrap();
        assert_eq!(h2.headers.get("host").unwrap(), "shop.example");
        let mut differing =
            request_parts("http://shop.example/x", Version::HTTP_2, &["other.example"]);
        assert!(settle_host(&mut differing).is_err());
    }

    #[test]
    fn ambiguous_response_framing_is_recognised() {
        assert!(is_ambiguous_response(&headers(&[
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
        ])));
        assert!(!is_ambiguous_response(&headers(&[("content-length", "5")])));
        assert!(!is_ambiguous_response(&headers(&[(
            "transfer-encoding",
            "chunked"
        )])));
    }

    #[test]
    fn framing_conflicts_are_refused() {
        assert_eq!(
            check_framing(&headers(&[("content-length", "5")])).unwrap(),
            Some(5)
        );
        assert_eq!(
            check_framing(&headers(&[("content-length", "5, 5")])).unwrap(),
            Some(5)
        );
        for bad in [
            &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
            &[("content-length", "5"), ("content-length", "6")][..],
            &[("content-length", "5, 6")][..],
            &[("content-length", "five")][..],
        ] {
            assert!(
                matches!(check_framing(&headers(bad)), Err(ProxyError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn forwarding_headers_are_appended() {
        let mut h = headers(&[("x-forwarded-for", "198.51.100.1"), ("via", "1.1 edge")]);
        add_forwarding(
            &mut h,
            &ClientEnd::new("2001:db8::7".parse().unwrap()),
            Version::HTTP_11,
            false,
        );
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "198.51.100.1, 2001:db8::7"
        );
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=\"[2001:db8::7]\";proto=http"
        );
        assert_eq!(h.get("via").unwrap(), "1.1 edge, 1.1 vigil");
    }

    #[test]
    fn a_hop_writes_its_peer_and_any_other_address() {
        let client_end = ClientEnd::new("2001:db8::7".parse().unwrap());
        assert_eq!(
            client_end.text_of("2001:db8::7".parse().unwrap()),
            "2001:db8::7"
        );
        assert_eq!(
            client_end.text_of("192.0.2.1".parse().unwrap()),
            "192.0.2.1"
        );
    }

    #[test]
    fn forwarding_folds_every_earlier_line() {
        let mut h = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2"),
        ]);
        add_forwarding(
            &mut h,
            &ClientEnd::new("192.0.2.9".parse().unwrap()),
            Version::HTTP_10,
            false,
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "198.51.100.1, 198.51.100.2, 192.0.2.9"
        );
        assert_eq!(h.get("forwarded").unwrap(), "for=192.0.2.9;proto=http");
        assert_eq!(h.get("via").unwrap(), "1.0 vigil");
    }
}
