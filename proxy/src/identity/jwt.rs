//! The `sub` claim of a bearer JWT, read **without verifying the signature**: a key that groups
//! a client's requests for rate and sequence policies, not authentication.

use super::credentials::auth_credentials;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::HeaderMap;

/// A JWT payload longer than this is not decoded: real claims are far smaller, and decoding
/// allocates.
const MAX_JWT_PAYLOAD_LEN: usize = 8 * 1024;

/// JWTs are base64url without padding, but some issuers pad and some leave stray trailing bits;
/// neither matters for a grouping key.
const JWT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The string `sub` claim of the first bearer JWT, signature unchecked.
pub(super) fn sub(headers: &HeaderMap) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Claims {
        sub: Option<String>,
    }
    let token = headers
        .get_all(AUTHORIZATION)
        .iter()
        .find_map(|v| auth_credentials(v, b"bearer"))?;
    let mut parts = token.split(|&b| b == b'.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.is_empty() || payload.len() > MAX_JWT_PAYLOAD_LEN {
        return None;
    }
    let json = JWT_BASE64.decode(payload).ok()?;
    // A derived struct also accepts a JSON array (`["x"]` as `sub`); claims are an object.
    if json.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let sub = serde_json::from_slice::<Claims>(&json).ok()?.sub?;
    (!sub.is_empty() && !sub.chars().any(char::is_control)).then_some(sub)
}
