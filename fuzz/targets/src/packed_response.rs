//! The packed response of the `packed-guard` world: packed by the host
//! (`vigil_host::packed::response`), unpacked in the guard
//! (`vigil_guest::request::unpack_response`).
//!
//! Input: any bytes, read two ways, as for `packed_request`: unpacked then repacked they come
//! back unchanged; as a [`Recipe`] for a response, packing then unpacking gives it back.

use vigil_guest::request::{unpack_response, Header as Field};
use vigil_host::packed::response as pack;
use vigil_host::{Header, Response};

/// Unpacks then repacks the input, and packs then unpacks a response made from it.
pub fn fuzz(data: &[u8]) {
    if let Ok(read) = unpack_response(data) {
        let packed = pack(&Response {
            status: read.status,
            headers: host_headers(&read.headers),
            latency_us: read.latency_us,
        });
        assert!(packed == data, "repacked {packed:?}\nfrom {data:?}");
    }
    let mut r = Recipe::new(data);
    let resp = Response {
        status: u16::from_le_bytes([r.byte(), r.byte()]),
        latency_us: r.u64(),
        headers: r.headers(),
    };
    let packed = pack(&resp);
    let read = unpack_response(&packed)
        .unwrap_or_else(|e| panic!("{resp:?} packed as {packed:?} does not unpack: {e}"));
    assert_eq!(
        (read.status, read.latency_us),
        (resp.status, resp.latency_us)
    );
    assert_eq!(read.headers, fields(&resp.headers));
}

/// The host's header fields for those the guest read.
pub(crate) fn host_headers(read: &[Field<'_>]) -> Vec<Header> {
    read.iter()
        .map(|h| Header {
            name: h.name.to_string(),
            value: h.value.to_vec(),
        })
        .collect()
}

/// The guest's view of the host's header fields.
pub(crate) fn fields(headers: &[Header]) -> Vec<Field<'_>> {
    headers
        .iter()
        .map(|h| Field {
            name: &h.name,
            value: &h.value,
        })
        .collect()
}

/// Reads a request or response out of arbitrary bytes, so that every input is one: numbers are
/// little-endian, a text or byte string is a length byte then that many bytes (texts made
/// UTF-8 lossily), a header list is a count byte (up to 7) then name and value pairs, and
/// whatever runs out reads as zeros.
pub(crate) struct Recipe<'a> {
    rest: &'a [u8],
}

impl<'a> Recipe<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Recipe { rest: data }
    }

    pub(crate) fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    pub(crate) fn u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        let taken = self.take(8);
        bytes[..taken.len()].copy_from_slice(taken);
        u64::from_le_bytes(bytes)
    }

    pub(crate) fn bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte());
        self.take(len)
    }

    pub(crate) fn text(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    pub(crate) fn headers(&mut self) -> Vec<Header> {
        let count = self.byte() % 8;
        (0..count)
            .map(|_| Header {
                name: self.text(),
                value: self.bytes().to_vec(),
            })
            .collect()
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        taken
    }
}
