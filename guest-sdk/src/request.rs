//! The request and response a guard sees, read in place from the packed bytes the host sends
//! in the `packed-guard` world (the layout is documented in `wit/guard.wit`): nothing is copied
//! out of them. The [`guard!`](crate::guard) macro unpacks them for you; the unpacking
//! functions are public so that the host's tests can check its packing against them.

use std::fmt;
use std::ops::Range;

/// An incoming request, before it reaches the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Upper-case HTTP method.
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// Route template such as `/users/{id}`, when the proxy resolved one.
    pub route: Option<&'a str>,
    /// Raw query string without the leading `?`.
    pub query: Option<&'a str>,
    /// The header fields the guard reads (see [`Guard::READS_HEADERS`](crate::Guard)).
    pub headers: Vec<Header<'a>>,
    /// Who sent it.
    pub client: Client<'a>,
    /// When the proxy received it, in milliseconds since the Unix epoch.
    pub received_ms: u64,
    /// The first bytes of the body, when the guard's configuration asks for a body.
    pub body: Option<&'a [u8]>,
}

/// Who sent a request, as the proxy resolved it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client<'a> {
    /// Identity key (the proxy's `identity.key`: IP, API key, cookie or JWT subject); key
    /// per-client state by it.
    pub key: &'a str,
    /// The client's IP address.
    pub ip: &'a str,
    /// Whether the IP is public (not loopback, private or an internal range).
    pub public: bool,
    /// Whether the request carries credentials.
    pub authenticated: bool,
}

/// One header field: a lower-case name and the raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Lower-case name.
    pub name: &'a str,
    /// Raw value (HTTP allows values that are not UTF-8).
    pub value: &'a [u8],
}

/// The upstream's (or the proxy's own) answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// HTTP status.
    pub status: u16,
    /// The header fields the guard reads.
    pub headers: Vec<Header<'a>>,
    /// Time from receiving the request to receiving the response head, in microseconds.
    pub latency_us: u64,
}

impl Request<'_> {
    /// The first value of header `name` (case-insensitive), if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The raw bytes of the first value of header `name` (case-insensitive).
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// The route template when the proxy resolved one, else the path.
    pub fn route_or_path(&self) -> &str {
        self.route.unwrap_or(self.path)
    }

    /// Whether the request matches a route pattern such as `"POST /cart/*"`.
    pub fn matches(&self, pattern: &str) -> bool {
        crate::route::matches(pattern, self.method, self.route_or_path())
    }

    /// The first value of query parameter `name`, not percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

impl Response<'_> {
    /// The first value of header `name` (case-insensitive), if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

fn find_header<'a>(headers: &[Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Why bytes could not be read as a packed request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackError {
    /// The item being read.
    pub item: &'static str,
    /// Its byte offset.
    pub at: usize,
    /// What was wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed packed value: {} at byte {}: {}",
            self.item, self.at, self.problem
        )
    }
}

impl std::error::Error for UnpackError {}

/// The flag bits of a packed request, shared with the host that packs them.
pub mod flag {
    /// The client's IP is public.
    pub const PUBLIC: u8 = 1;
    /// The request carries credentials.
    pub const AUTHENTICATED: u8 = 2;
    /// A route template follows the path.
    pub const ROUTE: u8 = 4;
    /// A query string follows the route.
    pub const QUERY: u8 = 8;
    /// A body prefix follows the header fields.
    pub const BODY: u8 = 16;
}

use flag::{AUTHENTICATED, BODY, PUBLIC, QUERY, ROUTE};

/// Reads a packed request.
pub fn unpack_request(bytes: &[u8]) -> Result<Request<'_>, UnpackError> {
    let mut reader = Reader { bytes, at: 0 };
    let received_ms = u64::from_le_bytes(reader.array("received-ms")?);
    let [flags] = reader.array("flags")?;
    if flags & !(PUBLIC | AUTHENTICATED | ROUTE | QUERY | BODY) != 0 {
        return Err(reader.error("flags", "unknown flag bits"));
    }
    let texts_from = reader.at;
    let method = reader.text_span("method")?;
    let path = reader.text_span("path")?;
    let route = reader.text_span_if(flags & ROUTE != 0, "route")?;
    let query = reader.text_span_if(flags & QUERY != 0, "query")?;
    let client_key = reader.text_span("client key")?;
    let client_ip = reader.text_span("client IP")?;
    let texts = Texts::new(bytes, texts_from..reader.at);
    let headers = reader.fields()?;
    let body = match flags & BODY != 0 {
        true => Some(reader.bytes("body")?),
        false => None,
    };
    reader.end()?;
    Ok(Request {
        method: texts.get(method)?,
        path: texts.get(path)?,
        route: route.map(|span| texts.get(span)).transpose()?,
        query: query.map(|span| texts.get(span)).transpose()?,
        headers,
        client: Client {
            key: texts.get(client_key)?,
            ip: texts.get(client_ip)?,
            public: flags & PUBLIC != 0,
            authenticated: flags & AUTHENTICATED != 0,
        },
        received_ms,
        body,
    })
}

/// Reads a packed response.
pub fn unpack_response(bytes: &[u8]) -> Result<Response<'_>, UnpackError> {
    let mut reader = Reader { bytes, at: 0 };
    let status = u16::from_le_bytes(reader.array("status")?);
    let latency_us = u64::from_le_bytes(reader.array("latency-us")?);
    let headers = reader.fields()?;
    reader.end()?;
    Ok(Response {
        status,
        headers,
        latency_us,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    #[cold]
    fn error(&self, item: &'static str, problem: &'static str) -> UnpackError {
        UnpackError {
            item,
            at: self.at,
            problem,
        }
    }

    fn take(&mut self, len: usize, item: &'static str) -> Result<&'a [u8], UnpackError> {
        let bytes = self
            .bytes
            .get(self.at..)
            .and_then(|rest| rest.get(..len))
            .ok_or_else(|| self.error(item, "ends early"))?;
        self.at += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, item: &'static str) -> Result<[u8; N], UnpackError> {
        let bytes = self.take(N, item)?;
        Ok(bytes.try_into().expect("take returns exactly N bytes"))
    }

    fn len(&mut self, item: &'static str) -> Result<usize, UnpackError> {
        Ok(u32::from_le_bytes(self.array(item)?) as usize)
    }

    fn bytes(&mut self, item: &'static str) -> Result<&'a [u8], UnpackError> {
        let len = self.len(item)?;
        self.take(len, item)
    }

    fn text(&mut self, item: &'static str) -> Result<&'a str, UnpackError> {
        let span = self.text_span(item)?;
        span.check(self.bytes)
    }

    /// Where the next text item lies, not yet checked as UTF-8 (see [`Texts`]).
    // Inlined, as is `Texts::get`: both run for each text of every request a guard sees, and
    // a call costs about as much as their work.
    #[inline(always)]
    fn text_span(&mut self, item: &'static str) -> Result<TextSpan, UnpackError> {
        let at = self.at;
        let len = self.len(item)?;
        let start = self.at;
        self.take(len, item)?;
        Ok(TextSpan {
            item,
            at,
            range: start..self.at,
        })
    }

    fn text_span_if(
        &mut self,
        present: bool,
        item: &'static str,
    ) -> Result<Option<TextSpan>, UnpackError> {
        present.then(|| self.text_span(item)).transpose()
    }

    fn fields(&mut self) -> Result<Vec<Header<'a>>, UnpackError> {
        let count = self.len("header count")?;
        // Each field takes at least its two lengths, so a count the rest cannot hold is
        // refused before anything is reserved for it.
        if count > (self.bytes.len() - self.at) / 8 {
            return Err(self.error("header count", "more fields than bytes left"));
        }
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            fields.push(Header {
                name: self.text("header name")?,
                value: self.bytes("header value")?,
            });
        }
        Ok(fields)
    }

    fn end(&self) -> Result<(), UnpackError> {
        match self.at == self.bytes.len() {
            true => Ok(()),
            false => Err(self.error("end", "bytes after the last item")),
        }
    }
}

/// A text item's place in the packed bytes.
struct TextSpan {
    item: &'static str,
    /// Where its length starts, for errors.
    at: usize,
    range: Range<usize>,
}

impl TextSpan {
    // Out of line: from `Texts::get` it runs only for a text the one pass could not vouch for.
    #[inline(never)]
    fn check<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, UnpackError> {
        std::str::from_utf8(&bytes[self.range.clone()]).map_err(|_| UnpackError {
            item: self.item,
            at: self.at,
            problem: "not UTF-8",
        })
    }
}

/// Text items that follow one another, checked as UTF-8 in one pass over the whole stretch,
/// lengths included: in a guard, one pass over a request's few short texts costs a fraction
/// of one check per item. An item is valid when the stretch is and the item starts and ends
/// on character boundaries within it; any other item is checked alone, so a bad one is still
/// named.
struct Texts<'a> {
    bytes: &'a [u8],
    from: usize,
    stretch: Option<&'a str>,
}

impl<'a> Texts<'a> {
    fn new(bytes: &'a [u8], stretch: Range<usize>) -> Texts<'a> {
        Texts {
            bytes,
            from: stretch.start,
            stretch: std::str::from_utf8(&bytes[stretch]).ok(),
        }
    }

    #[inline(always)]
    fn get(&self, span: TextSpan) -> Result<&'a str, UnpackError> {
        let within = span.range.start - self.from..span.range.end - self.from;
        match self.stretch.and_then(|stretch| stretch.get(within)) {
            Some(text) => Ok(text),
            None => span.check(self.bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }

    /// A request received at 7 ms with these flags and texts, in order, and no header fields.
    fn with_texts(flags: u8, texts: &[&[u8]]) -> Vec<u8> {
        let mut out = 7u64.to_le_bytes().to_vec();
        out.push(flags);
        for s in texts {
            text(&mut out, s);
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out
    }

    fn minimal(flags: u8) -> Vec<u8> {
        with_texts(flags, &[b"GET", b"/a", b"k", b"10.0.0.1"])
    }

    #[test]
    fn a_minimal_request_is_read() {
        let bytes = minimal(PUBLIC);
        let req = unpack_request(&bytes).unwrap();
        assert_eq!(req.received_ms, 7);
        assert!(req.client.public && !req.client.authenticated);
        assert_eq!((req.method, req.path), ("GET", "/a"));
        assert_eq!((req.route, req.query, req.body), (None, None, None));
        assert_eq!((req.client.key, req.client.ip), ("k", "10.0.0.1"));
        assert!(req.headers.is_empty());
    }

    #[test]
    fn truncated_or_padded_requests_name_the_item() {
        let bytes = minimal(0);
        let short = unpack_request(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!((short.item, short.problem), ("header count", "ends early"));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            unpack_request(&long).unwrap_err().problem,
            "bytes after the last item"
        );
        let route_missing = unpack_request(&minimal(ROUTE)).unwrap_err();
        assert_eq!(route_missing.item, "header count");
        assert_eq!(
            unpack_request(&minimal(64)).unwrap_err().problem,
            "unknown flag bits"
        );
        assert_eq!(unpack_request(&[]).unwrap_err().item, "received-ms");
    }

    #[test]
    fn a_huge_field_count_is_refused_before_reserving() {
        let mut bytes = minimal(0);
        let at = bytes.len() - 4;
        bytes[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = unpack_request(&bytes).unwrap_err();
        assert_eq!(error.problem, "more fields than bytes left");
        assert!(error.to_string().contains("header count at byte"));
    }

    #[test]
    fn text_must_be_utf8() {
        let bytes = with_texts(0, &[b"\xff", b"/a", b"k", b"10.0.0.1"]);
        let error = unpack_request(&bytes).unwrap_err();
        assert_eq!(
            (error.item, error.at, error.problem),
            ("method", 9, "not UTF-8")
        );
    }

    #[test]
    fn each_text_is_checked_on_its_own_boundaries() {
        // "GE" then the first byte of "é" (0xC3): not UTF-8 alone. The path's length, 169,
        // starts with 0xA9, which completes the "é", so the bytes around it read as UTF-8.
        let bytes = with_texts(0, &[b"GE\xc3", &[b'a'; 169], b"k", b"10.0.0.1"]);
        assert_eq!(bytes[16], 0xa9, "the path's length follows the method");
        assert!(std::str::from_utf8(&bytes[9..20]).is_ok());
        let error = unpack_request(&bytes).unwrap_err();
        assert_eq!(
            (error.item, error.at, error.problem),
            ("method", 9, "not UTF-8")
        );
    }

    #[test]
    fn a_bad_text_after_good_ones_is_named() {
        let mut bytes = with_texts(
            QUERY,
            &[
                b"GET",
                b"/caf\xc3\xa9",
                b"q=\xe2\x82\xac",
                b"k\xff",
                b"10.0.0.1",
            ],
        );
        let error = unpack_request(&bytes).unwrap_err();
        assert_eq!((error.item, error.problem), ("client key", "not UTF-8"));
        let key = bytes.windows(2).position(|w| w == b"k\xff").unwrap();
        assert_eq!(error.at, key - 4, "the offset of the key's length");
        bytes[key + 1] = b'2';
        let req = unpack_request(&bytes).unwrap();
        assert_eq!(
            (req.path, req.query, req.client.key),
            ("/café", Some("q=€"), "k2")
        );
    }

    #[test]
    fn a_response_is_read() {
        let mut bytes = 404u16.to_le_bytes().to_vec();
        bytes.extend_from_slice(&1500u64.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        text(&mut bytes, b"x-a");
        text(&mut bytes, b"\x00\xff");
        let resp = unpack_response(&bytes).unwrap();
        assert_eq!((resp.status, resp.latency_us), (404, 1500));
        let field = Header {
            name: "x-a",
            value: b"\x00\xff",
        };
        assert_eq!(resp.headers, [field]);
        assert_eq!(resp.header("x-a"), None, "not UTF-8");
    }
}
