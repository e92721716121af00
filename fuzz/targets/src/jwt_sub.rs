//! The `sub` claim of an `Authorization: Bearer` JWT, the identity key under `identity.key =
//! "jwt-sub"` (`vigil::identity`; the signature is never checked).
//!
//! Input: the value of one `Authorization` field, e.g. `Bearer eyJ….eyJ….sig`.
//!
//! Properties: the key is the peer's IP or a subject; a subject is non-empty, has no control
//! characters, is capped like every key, and is what decoding the token independently (split
//! on `.`, base64url the middle, a JSON object's `"sub"` string) gives; a bearer credential is
//! reported exactly when the field has the `Bearer` scheme and a token.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use std::net::{IpAddr, Ipv4Addr};
use vigil::identity::{ClientPolicy, CredentialKind, IdentityKey, MAX_KEY_LEN};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

/// Padding and stray trailing bits are accepted, as issuers write both.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Resolves the identity key of a request carrying the input as its `Authorization` field.
pub fn fuzz(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    let policy = ClientPolicy {
        identity: IdentityKey::JwtSub,
        ..ClientPolicy::default()
    };
    let resolved = policy.resolve(PEER, &headers);
    let token = bearer_token(data);
    assert_eq!(
        resolved.credentials.contains(&CredentialKind::Bearer),
        token.is_some(),
        "{resolved:?}"
    );
    if resolved.key == PEER.to_string() {
        return;
    }
    let sub = match token.map(independent_sub) {
        Some(Ok(Some(sub))) => sub,
        // JSON that a generic value cannot hold (such as a number out of range in another
        // claim) leaves the oracle without an answer.
        Some(Err(Unreadable)) => return,
        _ => panic!("key {:?}, but the token has no subject", resolved.key),
    };
    assert!(
        !sub.is_empty() && !sub.chars().any(char::is_control),
        "{sub:?}"
    );
    if sub.len() <= MAX_KEY_LEN {
        assert_eq!(resolved.key, sub);
    } else {
        assert!(resolved.key.len() <= MAX_KEY_LEN, "{:?}", resolved.key);
        let kept = resolved.key.rsplit_once('#').map_or("", |(kept, _)| kept);
        assert!(
            !kept.is_empty() && sub.starts_with(kept),
            "{:?} for {sub:?}",
            resolved.key
        );
    }
}

/// The token of a `Bearer` field: the scheme, case-insensitive, a space, then non-blank text.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, token) = value.split_at_checked(value.iter().position(|&b| b == b' ')?)?;
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// The JSON of a payload that a generic JSON value cannot represent.
struct Unreadable;

/// The `sub` string of a three-part token's payload, read as a generic JSON value.
fn independent_sub(token: &[u8]) -> Result<Option<String>, Unreadable> {
    let parts: Vec<&[u8]> = token.split(|&b| b == b'.').collect();
    let [_, payload, _] = parts[..] else {
        return Ok(None);
    };
    let Ok(json) = LENIENT.decode(payload) else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|_| Unreadable)?;
    Ok(value
        .as_object()
        .and_then(|claims| claims.get("sub")?.as_str())
        .map(str::to_string))
}
