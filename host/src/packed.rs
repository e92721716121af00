//! The packed layout of the `packed-guard` world (documented in `guard.wit`): a request or a
//! response written into one byte list, which is lowered into a guard with one allocation in
//! its memory instead of one per string and list.

use crate::bindings::vigil::guard::types::{Header, Request, Response};
use std::borrow::Cow;
use std::cell::OnceCell;
use vigil_guest::request::flag::{AUTHENTICATED, BODY, PUBLIC, QUERY, ROUTE};

/// `req` in the packed layout.
pub fn request(req: &Request) -> Vec<u8> {
    let strings = req.method.len()
        + req.path.len()
        + req.route.as_ref().map_or(0, String::len)
        + req.query.as_ref().map_or(0, String::len)
        + req.client.key.len()
        + req.client.ip.len()
        + req.body.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(9 + 7 * 4 + strings + fields_len(&req.headers));
    out.extend_from_slice(&req.received_ms.to_le_bytes());
    let flags = [
        (req.client.public, PUBLIC),
        (req.client.authenticated, AUTHENTICATED),
        (req.route.is_some(), ROUTE),
        (req.query.is_some(), QUERY),
        (req.body.is_some(), BODY),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .fold(0, |flags, (_, bit)| flags | bit);
    out.push(flags);
    put_bytes(&mut out, req.method.as_bytes());
    put_bytes(&mut out, req.path.as_bytes());
    if let Some(route) = &req.route {
        put_bytes(&mut out, route.as_bytes());
    }
    if let Some(query) = &req.query {
        put_bytes(&mut out, query.as_bytes());
    }
    put_bytes(&mut out, req.client.key.as_bytes());
    put_bytes(&mut out, req.client.ip.as_bytes());
    put_fields(&mut out, &req.headers);
    if let Some(body) = &req.body {
        put_bytes(&mut out, body);
    }
    out
}

/// One request packed for the guards that evaluate it. Those that see neither headers nor a
/// body (most guards) see the same bytes, packed once for all of them; any other view is
/// packed for its guard alone. Only the headers and the body may differ between the views it
/// is asked for.
#[derive(Debug, Default)]
pub(crate) struct RequestPacker {
    bare: OnceCell<Vec<u8>>,
}

impl RequestPacker {
    /// `req`, as the guard about to be called sees it, in the packed layout.
    pub(crate) fn pack(&self, req: &Request) -> Cow<'_, [u8]> {
        if req.headers.is_empty() && req.body.is_none() {
            Cow::Borrowed(self.bare.get_or_init(|| request(req)))
        } else {
            Cow::Owned(request(req))
        }
    }
}

/// `resp` in the packed layout.
pub fn response(resp: &Response) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + fields_len(&resp.headers));
    out.extend_from_slice(&resp.status.to_le_bytes());
    out.extend_from_slice(&resp.latency_us.to_le_bytes());
    put_fields(&mut out, &resp.headers);
    out
}

fn fields_len(headers: &[Header]) -> usize {
    4 + headers
        .iter()
        .map(|h| 8 + h.name.len() + h.value.len())
        .sum::<usize>()
}

fn put_fields(out: &mut Vec<u8>, headers: &[Header]) {
    put_len(out, headers.len());
    for header in headers {
        put_bytes(out, header.name.as_bytes());
        put_bytes(out, &header.value);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Heads and body prefixes are capped far below 4 GiB; clamping keeps the framing valid
    // should a caller of this library pass more.
    let kept = &bytes[..bytes.len().min(u32::MAX as usize)];
    put_len(out, kept.len());
    out.extend_from_slice(kept);
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::vigil::guard::types::Client;
    use vigil_guest::request::{self as unpack, unpack_request, unpack_response};

    fn fields(headers: &[Header]) -> Vec<unpack::Header<'_>> {
        headers
            .iter()
            .map(|h| unpack::Header {
                name: &h.name,
                value: &h.value,
            })
            .collect()
    }

    fn full_request() -> Request {
        Request {
            method: "POST".into(),
            path: "/users/42/orders".into(),
            route: Some("/users/{id}/orders".into()),
            query: Some("page=2&sort=é".into()),
            headers: vec![
                Header {
                    name: "x-api-key".into(),
                    value: b"k-1".to_vec(),
                },
                Header {
                    name: "x-raw".into(),
                    value: vec![0, 0xff, b'\n'],
                },
            ],
            client: Client {
                key: "client-7".into(),
                ip: "2001:db8::1".into(),
                public: true,
                authenticated: true,
            },
            received_ms: 1_764_000_000_123,
            body: Some(b"{\"user\":\"a\"}".to_vec()),
        }
    }

    #[test]
    fn a_request_reads_back_field_for_field() {
        let req = full_request();
        let bytes = request(&req);
        let read = unpack_request(&bytes).unwrap();
        assert_eq!(read.method, req.method);
        assert_eq!(read.path, req.path);
        assert_eq!(read.route, req.route.as_deref());
        assert_eq!(read.query, req.query.as_deref());
        assert_eq!(read.client.key, req.client.key);
        assert_eq!(read.client.ip, req.client.ip);
        assert!(read.client.public && read.client.authenticated);
        assert_eq!(read.received_ms, req.received_ms);
        assert_eq!(read.body, req.body.as_deref());
        assert_eq!(read.headers, fields(&req.headers));
        assert_eq!(bytes.capacity(), bytes.len(), "the size estimate is exact");
    }

    #[test]
    fn absent_parts_stay_absent_and_an_empty_body_stays_present() {
        let mut req = full_request();
        req.route = None;
        req.query = None;
        req.headers.clear();
        req.client.public = false;
        req.client.authenticated = false;
        req.body = Some(Vec::new());
        let bytes = request(&req);
        let read = unpack_request(&bytes).unwrap();
        assert_eq!((read.route, read.query), (None, None));
        assert_eq!(read.body, Some(&b""[..]));
        assert!(!read.client.public && !read.client.authenticated && read.headers.is_empty());
        req.body = None;
        assert_eq!(unpack_request(&request(&req)).unwrap().body, None);
    }

    #[test]
    fn the_packer_shares_only_the_bare_view() {
        let full = full_request();
        let mut bare = full_request();
        bare.headers.clear();
        bare.body = None;
        let packer = RequestPacker::default();
        // Each guard's view, in chain order: a reader of headers and body, two bare guards,
        // then a reader of the body alone.
        let first = packer.pack(&full);
        let second = packer.pack(&bare);
        let third = packer.pack(&bare);
        let mut body_only = full_request();
        body_only.headers.clear();
        let fourth = packer.pack(&body_only);
        assert_eq!(*first, request(&full)[..]);
        assert_eq!(*second, request(&bare)[..]);
        assert!(
            std::ptr::eq(&*second, &*third),
            "the bare view is packed once"
        );
        assert_eq!(*fourth, request(&body_only)[..]);
        assert!(matches!(first, Cow::Owned(_)) && matches!(fourth, Cow::Owned(_)));
    }

    #[test]
    fn a_response_reads_back() {
        let resp = Response {
            status: 503,
            headers: vec![Header {
                name: "retry-after".into(),
                value: b"5".to_vec(),
            }],
            latency_us: 12_345,
        };
        let bytes = response(&resp);
        let read = unpack_response(&bytes).unwrap();
        assert_eq!((read.status, read.latency_us), (503, 12_345));
        assert_eq!(read.headers, fields(&resp.headers));
        assert_eq!(bytes.capacity(), bytes.len());
    }
}
