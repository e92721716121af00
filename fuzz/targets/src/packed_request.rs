//! The packed request of the `packed-guard` world: packed by the host
//! (`vigil_host::packed::request`), unpacked in the guard (`vigil_guest::request::unpack_request`).
//!
//! Input: any bytes, read two ways. As a packed request: whatever unpacks, packed again, gives
//! back exactly the input (the layout has one encoding, so the guest reads nothing the host
//! would not write). As a recipe for a request (see [`Recipe`]): packing it and unpacking the
//! result gives back the request, field for field.

use crate::packed_response::{fields, host_headers, Recipe};
use vigil_guest::request::{unpack_request, Request as Unpacked};
use vigil_host::packed::request as pack;
use vigil_host::{Client, Request};

/// Unpacks then repacks the input, and packs then unpacks a request made from it.
pub fn fuzz(data: &[u8]) {
    if let Ok(read) = unpack_request(data) {
        let packed = pack(&owned(&read));
        assert!(packed == data, "repacked {packed:?}\nfrom {data:?}");
    }
    let req = recipe(&mut Recipe::new(data));
    let packed = pack(&req);
    let read = unpack_request(&packed)
        .unwrap_or_else(|e| panic!("{req:?} packed as {packed:?} does not unpack: {e}"));
    assert_eq!(owned(&read), req);
    assert_eq!(read.headers, fields(&req.headers));
}

/// The host's request for what the guest read.
fn owned(read: &Unpacked<'_>) -> Request {
    Request {
        method: read.method.to_string(),
        path: read.path.to_string(),
        route: read.route.map(str::to_string),
        query: read.query.map(str::to_string),
        headers: host_headers(&read.headers),
        client: Client {
            key: read.client.key.to_string(),
            ip: read.client.ip.to_string(),
            public: read.client.public,
            authenticated: read.client.authenticated,
        },
        received_ms: read.received_ms,
        body: read.body.map(<[u8]>::to_vec),
    }
}

fn recipe(r: &mut Recipe<'_>) -> Request {
    let flags = r.byte();
    let received_ms = r.u64();
    let method = r.text();
    let path = r.text();
    let route = (flags & 1 != 0).then(|| r.text());
    let query = (flags & 2 != 0).then(|| r.text());
    let key = r.text();
    let ip = r.text();
    let headers = r.headers();
    let body = (flags & 4 != 0).then(|| r.bytes().to_vec());
    Request {
        method,
        path,
        route,
        query,
        headers,
        client: Client {
            key,
            ip,
            public: flags & 8 != 0,
            authenticated: flags & 16 != 0,
        },
        received_ms,
        body,
    }
}
