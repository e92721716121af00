//! The request path normaliser (`vigil::forward::normalize::path`), which decides what path routing,
//! the guards, the inventory and the upstream see.
//!
//! Input: a request path, as the HTTP parser hands it over (starting with `/`).
//!
//! Properties, under every policy: a normalised path is ASCII, starts with `/`, has no `.` or
//! `..` segment, no escape of an unreserved character and no lower-case hex in an escape, no
//! empty segment but a trailing one when slashes are merged; normalising it again changes
//! nothing; what a policy refuses it refuses for the reason it names (an escape that is not
//! `%` and two hex digits, an encoded slash under "reject", a `;` under "reject", a `..` above
//! the root).

use vigil::forward::normalize::{path, EscapedSlashes, PathError, PathParameters, PathPolicy};

/// Normalises the input under each policy and checks the result.
pub fn fuzz(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    if !text.starts_with('/') {
        return;
    }
    for merge_slashes in [true, false] {
        for escaped_slashes in [
            EscapedSlashes::Reject,
            EscapedSlashes::Keep,
            EscapedSlashes::Decode,
        ] {
            for parameters in [
                PathParameters::Reject,
                PathParameters::Keep,
                PathParameters::Strip,
            ] {
                let policy = PathPolicy {
                    merge_slashes,
                    escaped_slashes,
                    parameters,
                };
                check(text, &policy);
            }
        }
    }
}

fn check(text: &str, policy: &PathPolicy) {
    let normalised = match path(text, policy) {
        Ok(normalised) => normalised.into_owned(),
        Err(error) => {
            match error {
                PathError::EscapedSlash => assert!(
                    policy.escaped_slashes == EscapedSlashes::Reject,
                    "{text:?}: an escaped slash refused under {policy:?}"
                ),
                PathError::Parameters => assert!(
                    policy.parameters == PathParameters::Reject && text.contains(';'),
                    "{text:?}: parameters refused under {policy:?}"
                ),
                PathError::BadEscape => assert!(text.contains('%'), "{text:?}: no escape"),
                PathError::AboveRoot => assert!(
                    text.contains("..") || text.to_ascii_lowercase().contains("%2e"),
                    "{text:?}: above the root without a dot segment"
                ),
            }
            return;
        }
    };
    assert!(normalised.is_ascii(), "{text:?} -> {normalised:?}");
    assert!(normalised.starts_with('/'), "{text:?} -> {normalised:?}");
    let segments: Vec<&str> = normalised[1..].split('/').collect();
    for (index, segment) in segments.iter().enumerate() {
        assert!(
            *segment != "." && *segment != "..",
            "{text:?} -> {normalised:?}: a dot segment is left"
        );
        if policy.merge_slashes && index + 1 < segments.len() {
            assert!(
                !segment.is_empty(),
                "{text:?} -> {normalised:?}: an empty segment"
            );
        }
    }
    let bytes = normalised.as_bytes();
    for (i, _) in normalised.match_indices('%') {
        let escape = &bytes[i + 1..i + 3];
        assert!(
            escape
                .iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{text:?} -> {normalised:?}: escape {:?} is not upper-case hex",
            String::from_utf8_lossy(escape)
        );
        let decoded = u8::from_str_radix(std::str::from_utf8(escape).unwrap(), 16).unwrap();
        assert!(
            !(decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded)),
            "{text:?} -> {normalised:?}: an unreserved character is still escaped"
        );
    }
    let again = path(&normalised, policy).unwrap_or_else(|e| {
        panic!("{text:?} -> {normalised:?} is refused when normalised again: {e}")
    });
    assert_eq!(again, normalised, "{text:?}: normalising twice changed it");
}
