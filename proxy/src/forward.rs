//! Forwarding to the upstream: HTTP hygiene a proxy owes (hop-by-hop fields, conflicting
//! framing, forwarding headers), the pooled keep-alive client, and upstream error mapping.

use crate::config::Upstream;
use crate::respond::{ProxyBody, ProxyError};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Hop-by-hop fields (RFC 9110 §7.6.1), removed in both directions.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

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

/// Whether the request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
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
/// `Connection`. With `upgrade`, keeps `Connection: upgrade` and `Upgrade` so the handshake
/// can pass.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let proxy_fields: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_fields {
        headers.remove(name);
    }
    if let (true, Some(value)) = (upgrade, upgrade_value) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// Adds `X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded` and `Via` for the hop from `peer`.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    peer: IpAddr,
    version: Version,
    keep_client_proto: bool,
) {
    let peer_text = peer.to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {peer_text}"),
        None => peer_text.clone(),
    };
    headers.remove("x-forwarded-for");
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    if !(keep_client_proto && headers.contains_key("x-forwarded-proto")) {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    let node = match peer {
        IpAddr::V6(_) => format!("for=\"[{peer_text}]\";proto=http"),
        IpAddr::V4(_) => format!("for={peer_text};proto=http"),
    };
    append_list(headers, header::FORWARDED, &node);
    let via = match version {
        Version::HTTP_2 => "2 vigil",
        Version::HTTP_10 => "1.0 vigil",
        _ => "1.1 vigil",
    };
    append_list(headers, header::VIA, via);
}

fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let combined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {item}"),
        None => item.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&combined) {
        headers.insert(name, v);
    }
}

/// The pooled keep-alive client to the upstream.
pub struct UpstreamClient {
    client: Client<HttpConnector, ProxyBody>,
    base: Uri,
    timeout: Duration,
    rewrite_host: bool,
}

impl UpstreamClient {
    /// A client for the configured upstream.
    pub fn new(upstream: &Upstream) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(upstream.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        UpstreamClient {
            client,
            base: upstream.url.clone(),
            timeout: upstream.timeout,
            rewrite_host: upstream.rewrite_host,
        }
    }

    /// Sends the request (head already cleaned) and waits for the response head.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let original_authority = req.uri().authority().cloned();
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            path.parse()
                .map_err(|_| UpstreamError::Other("bad path".into()))?,
        );
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| UpstreamError::Other(e.to_string()))?;
        // The upstream connection is HTTP/1.1 whatever the client spoke.
        *req.version_mut() = Version::HTTP_11;
        if self.rewrite_host {
            req.headers_mut().remove(header::HOST);
        } else if !req.headers().contains_key(header::HOST) {
            // HTTP/2 clients send :authority instead of Host; keep what they asked for.
            if let Some(value) =
                original_authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(header::HOST, value);
            }
        }
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if body_limit_hit(&e) => Err(UpstreamError::BodyTooLarge),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect(source_text(&e))),
            Ok(Err(e)) => Err(UpstreamError::Other(source_text(&e))),
        }
    }
}

/// Why forwarding failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made.
    Connect(String),
    /// No response head within the timeout.
    Timeout,
    /// The client's body went over the limit while streaming.
    BodyTooLarge,
    /// Anything else (connection reset, protocol error).
    Other(String),
}

impl UpstreamError {
    /// The metric label of this failure.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::BodyTooLarge => "body_too_large",
            UpstreamError::Other(_) => "other",
        }
    }
}

fn body_limit_hit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
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
    ) -> Result<(Bytes, PrefixedBody), hyper::Error> {
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
                    if let Ok(data) = frame?.into_data() {
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
                .map_err(|e| Box::new(e) as BoxError),
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
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn keeps_the_upgrade_handshake_when_upgrading() {
        let mut h = headers(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert!(!h.contains_key("x-secret"));
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
            "2001:db8::7".parse().unwrap(),
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
}
