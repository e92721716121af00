//! Which credentials a request carries (bearer, basic, a session cookie, an API key), and the
//! readers of `Authorization` and `Cookie` the identity key shares.

use super::IdentityKey;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::fmt;

/// Headers that carry an API key by convention, whatever the identity setting.
const API_KEY_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
];

/// A kind of credential a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// `Authorization: Bearer …`.
    Bearer,
    /// `Authorization: Basic …`.
    Basic,
    /// A session cookie (the identity cookie, or any cookie when identity is not a cookie).
    Cookie,
    /// An `x-api-key` or `api-key` header, or the identity header.
    ApiKey,
    /// A client certificate the TLS listener verified.
    ClientCertificate,
}

impl CredentialKind {
    /// Stable lower-case name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Basic => "basic",
            Self::Cookie => "cookie",
            Self::ApiKey => "api-key",
            Self::ClientCertificate => "client-certificate",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of credentials `headers` carry; the identity setting says which cookie or header
/// counts.
pub(super) fn credentials(identity: &IdentityKey, headers: &HeaderMap) -> Vec<CredentialKind> {
    let mut found = Vec::new();
    let authorization = headers.get_all(AUTHORIZATION);
    if authorization
        .iter()
        .any(|v| auth_credentials(v, b"bearer").is_some())
    {
        found.push(CredentialKind::Bearer);
    }
    if authorization
        .iter()
        .any(|v| auth_credentials(v, b"basic").is_some())
    {
        found.push(CredentialKind::Basic);
    }
    let cookie = match identity {
        IdentityKey::Cookie(name) => cookie_value(headers, name).is_some_and(|v| !v.is_empty()),
        _ => is_present(headers, &COOKIE),
    };
    if cookie {
        found.push(CredentialKind::Cookie);
    }
    let identity_header =
        matches!(identity, IdentityKey::Header(name) if is_present(headers, name));
    if identity_header || API_KEY_HEADERS.iter().any(|n| is_present(headers, n)) {
        found.push(CredentialKind::ApiKey);
    }
    found
}

/// The first cookie called `name` across all `Cookie` headers, trimmed and unquoted.
pub(super) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (key, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            if key != name.as_bytes() {
                return None;
            }
            let unquoted = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""));
            Some(unquoted.unwrap_or(value))
        })
}

/// The credentials of an `Authorization` value when its scheme is `scheme` (lower-case; the
/// scheme is matched case-insensitively, as RFC 9110 says).
pub(super) fn auth_credentials<'v>(value: &'v HeaderValue, scheme: &[u8]) -> Option<&'v [u8]> {
    let bytes = value.as_bytes().trim_ascii();
    let space = bytes.iter().position(|&b| b == b' ')?;
    let credentials = bytes[space..].trim_ascii();
    (bytes[..space].eq_ignore_ascii_case(scheme) && !credentials.is_empty()).then_some(credentials)
}

fn is_present<K: http::header::AsHeaderName>(headers: &HeaderMap, name: K) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().is_empty())
}
