//! One spelling per path: the request path is normalised once, before routing, the guards and
//! the inventory see it, and the normalised path is what the upstream receives. Otherwise a
//! guard on `/admin/**` would let `/x/../admin/stats`, `/%61dmin/stats` or `//admin/stats`
//! through to an upstream that serves them all as `/admin/stats`.
//!
//! What is done (RFC 3986 §6.2.2): percent-escapes of unreserved characters are decoded and the
//! others written with upper-case hex; bytes outside ASCII are percent-encoded; `.` and `..`
//! segments are removed (§5.2.4); runs of slashes are merged when configured. A `..` that
//! would climb above the root is refused, as nginx does: no client that means a resource of
//! this server sends one, and refusing it keeps the attempt visible. What RFC 3986 leaves to the server is a policy: encoded slashes
//! (`%2F`, `%5C`, and a raw `\`, which several servers read as `/`) and `;` path parameters.

use std::borrow::Cow;
use std::fmt;

/// What to do with `%2F`, `%5C` and `\` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Answer 400: servers disagree on whether they separate segments.
    Reject,
    /// Forward them as they are (upper-cased escapes); they do not separate segments here.
    Keep,
    /// Decode them to `/` before the path is normalised, so they separate segments.
    Decode,
}

/// What to do with `;` in a path (`/a;jsessionid=1/b`), which Java servers and some others
/// strip as path parameters before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathParameters {
    /// Answer 400.
    Reject,
    /// Forward them; a `;` is an ordinary character of its segment here.
    Keep,
    /// Remove each segment's parameters (from `;` to the segment's end) before normalising.
    Strip,
}

/// How paths are normalised (`[path]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    /// Merge runs of `/` into one, as nginx does by default.
    pub merge_slashes: bool,
    /// Encoded slashes and backslashes.
    pub escaped_slashes: EscapedSlashes,
    /// `;` path parameters.
    pub parameters: PathParameters,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            parameters: PathParameters::Reject,
        }
    }
}

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F`, `%5C` or `\` under [`EscapedSlashes::Reject`].
    EscapedSlash,
    /// `;` under [`PathParameters::Reject`].
    Parameters,
    /// A `..` segment with nothing left to remove.
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "the path has a '%' that is not followed by two hex digits",
            PathError::EscapedSlash => {
                "the path has an encoded slash or a backslash (%2F, %5C, \\), which this proxy refuses"
            }
            PathError::Parameters => "the path has a ';' parameter, which this proxy refuses",
            PathError::AboveRoot => "the path climbs above the root with '..'",
        })
    }
}

/// `path` (the path of a request target, without its query) in its one spelling under
/// `policy`; borrowed when it is already normalised, which is the common case.
pub fn path<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathError> {
    if is_plain(path.as_bytes(), policy.merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    // `OPTIONS *` and the like: not a path.
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes(), policy)?;
    let normalised = remove_dot_segments(&decoded, policy.merge_slashes)?;
    // Every byte is ASCII by now: non-ASCII bytes were percent-encoded.
    let normalised = String::from_utf8(normalised).expect("a normalised path is ASCII");
    Ok(if normalised == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normalised)
    })
}

/// Whether `path` needs no work: no escape, backslash, parameter, non-ASCII byte, segment
/// starting with a dot, and (when merging) no empty segment. One pass, no allocation.
fn is_plain(path: &[u8], merge_slashes: bool) -> bool {
    let mut previous = 0u8;
    for &byte in path {
        match byte {
            b'%' | b'\\' | b';' | 0x80..=0xFF => return false,
            b'.' if previous == b'/' => return false,
            b'/' if merge_slashes && previous == b'/' => return false,
            _ => {}
        }
        previous = byte;
    }
    true
}

/// Decodes unreserved escapes, upper-cases the others, encodes non-ASCII bytes and applies the
/// policy to slashes and parameters.
fn decode(path: &[u8], policy: &PathPolicy) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len() + 8);
    let mut in_parameters = false;
    let mut i = 0;
    while i < path.len() {
        let byte = path[i];
        i += 1;
        // Parameters end where their segment does; only a raw `/` ends a segment here, as
        // in the servers that strip them.
        if byte == b'/' {
            in_parameters = false;
        }
        if in_parameters {
            continue;
        }
        match byte {
            b'%' => {
                let (Some(high), Some(low)) = (
                    path.get(i).copied().and_then(hex),
                    path.get(i + 1).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                i += 2;
                let decoded = high << 4 | low;
                if decoded == b'/' || decoded == b'\\' {
                    match policy.escaped_slashes {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Decode => out.push(b'/'),
                        EscapedSlashes::Keep => push_escape(&mut out, decoded),
                    }
                } else if is_unreserved(decoded) {
                    out.push(decoded);
                } else {
                    push_escape(&mut out, decoded);
                }
            }
            b'\\' => match policy.escaped_slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => out.push(b'/'),
                EscapedSlashes::Keep => out.push(b'\\'),
            },
            b';' => match policy.parameters {
                PathParameters::Reject => return Err(PathError::Parameters),
                PathParameters::Keep => out.push(b';'),
                PathParameters::Strip => in_parameters = true,
            },
            0x80..=0xFF => push_escape(&mut out, byte),
            _ => out.push(byte),
        }
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 over a path whose escapes are resolved, segment by segment; with
/// `merge_slashes`, empty segments are dropped (but a trailing slash is kept).
fn remove_dot_segments(path: &[u8], merge_slashes: bool) -> Result<Vec<u8>, PathError> {
    // Segments after the leading `/`; a trailing `/` shows as a last empty segment.
    let mut kept: Vec<&[u8]> = Vec::new();
    let segments: Vec<&[u8]> = path[1..].split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    for (index, segment) in segments.into_iter().enumerate() {
        let is_last = index == last;
        match segment {
            b"." | b".." => {
                if segment == b".." && kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                // `/a/.` and `/a/b/..` name a directory: they keep a trailing slash.
                if is_last {
                    kept.push(b"");
                }
            }
            b"" if merge_slashes && !is_last => {}
            _ => kept.push(segment),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in &kept {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[
        b'%',
        HEX[usize::from(byte >> 4)],
        HEX[usize::from(byte & 15)],
    ]);
}

/// RFC 3986 §2.3.
pub(crate) fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(raw: &str) -> Result<String, PathError> {
        path(raw, &PathPolicy::default()).map(Cow::into_owned)
    }

    fn with(raw: &str, policy: PathPolicy) -> Result<String, PathError> {
        path(raw, &policy).map(Cow::into_owned)
    }

    #[test]
    fn every_spelling_of_a_path_becomes_one() {
        for raw in [
            "/admin/stats",
            "/./admin/stats",
            "/x/../admin/stats",
            "/%61dmin/stats",
            "/%2e/admin/stats",
            "/%2E/admin/stats",
            "/x/%2e%2e/admin/stats",
            "/x/.%2E/admin/stats",
            "//admin//stats",
            "/admin/./stats",
            "/admin/x/y/../../stats",
            "/%41%44%4d%49%4e/../admin/stats",
            "/admin/%73tats",
        ] {
            assert_eq!(normal(raw).as_deref(), Ok("/admin/stats"), "{raw}");
        }
    }

    #[test]
    fn a_normal_path_is_borrowed() {
        for raw in ["/", "/users/42", "/a/b/", "/a.b/c..d/e.", "/~user/-_"] {
            assert!(
                matches!(path(raw, &PathPolicy::default()), Ok(Cow::Borrowed(p)) if p == raw),
                "{raw}"
            );
        }
    }

    #[test]
    fn reserved_escapes_stay_encoded_in_upper_case() {
        assert_eq!(normal("/a%3fb").as_deref(), Ok("/a%3Fb"));
        assert_eq!(normal("/a%20b%25").as_deref(), Ok("/a%20b%25"));
        assert_eq!(normal("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
    }

    #[test]
    fn bytes_outside_ascii_are_encoded_as_their_escapes() {
        assert_eq!(normal("/café").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(normal("/café"), normal("/caf%C3%A9"));
    }

    #[test]
    fn trailing_slashes_and_the_root_are_kept() {
        assert_eq!(normal("/a/b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(normal("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(normal("/a/..").as_deref(), Ok("/"));
        assert_eq!(normal("/.").as_deref(), Ok("/"));
        assert_eq!(normal("/a//").as_deref(), Ok("/a/"));
        assert_eq!(normal("//").as_deref(), Ok("/"));
    }

    #[test]
    fn slashes_are_merged_only_when_configured() {
        let keep = PathPolicy {
            merge_slashes: false,
            ..PathPolicy::default()
        };
        assert_eq!(
            with("//admin//stats", keep).as_deref(),
            Ok("//admin//stats")
        );
        assert_eq!(with("/a//../b", keep).as_deref(), Ok("/a/b"));
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for raw in [
            "/..",
            "/../admin",
            "/a/../../admin",
            "/%2e%2e/admin",
            "/a/./../..",
        ] {
            assert_eq!(normal(raw), Err(PathError::AboveRoot), "{raw}");
        }
        // Merged slashes are not segments: `//..` has nothing to climb from either.
        assert_eq!(normal("//../a"), Err(PathError::AboveRoot));
    }

    #[test]
    fn a_broken_escape_is_refused() {
        for raw in ["/a%", "/a%4", "/a%zz", "/a%4g/b", "/%%41"] {
            assert_eq!(normal(raw), Err(PathError::BadEscape), "{raw}");
        }
    }

    #[test]
    fn escaped_slashes_follow_the_policy() {
        for raw in [
            "/admin%2fstats",
            "/admin%2Fstats",
            "/admin%5Cstats",
            "/admin\\stats",
        ] {
            assert_eq!(normal(raw), Err(PathError::EscapedSlash), "{raw}");
            let decode = PathPolicy {
                escaped_slashes: EscapedSlashes::Decode,
                ..PathPolicy::default()
            };
            assert_eq!(with(raw, decode).as_deref(), Ok("/admin/stats"), "{raw}");
        }
        let keep = PathPolicy {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathPolicy::default()
        };
        assert_eq!(with("/a%2fb", keep).as_deref(), Ok("/a%2Fb"));
        assert_eq!(with("/a\\b", keep).as_deref(), Ok("/a\\b"));
        // Kept escapes do not separate segments: `..` after one still removes one segment.
        assert_eq!(with("/x%2Fy/../b", keep).as_deref(), Ok("/b"));
        let decode = PathPolicy {
            escaped_slashes: EscapedSlashes::Decode,
            ..PathPolicy::default()
        };
        assert_eq!(with("/x/..%2Fadmin", decode).as_deref(), Ok("/admin"));
    }

    #[test]
    fn parameters_follow_the_policy() {
        assert_eq!(normal("/admin;x=1/stats"), Err(PathError::Parameters));
        let strip = PathPolicy {
            parameters: PathParameters::Strip,
            ..PathPolicy::default()
        };
        assert_eq!(
            with("/admin;x=1/stats", strip).as_deref(),
            Ok("/admin/stats")
        );
        // The Tomcat traversal: `..;` is a dot segment once its parameters are gone.
        assert_eq!(
            with("/x/..;/admin/stats", strip).as_deref(),
            Ok("/admin/stats")
        );
        assert_eq!(with("/a;jsessionid=1", strip).as_deref(), Ok("/a"));
        let keep = PathPolicy {
            parameters: PathParameters::Keep,
            ..PathPolicy::default()
        };
        assert_eq!(
            with("/admin;x/stats", keep).as_deref(),
            Ok("/admin;x/stats")
        );
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for raw in ["/x/%2e%2e/a%2fb", "/café/./x", "/a//b/../c/", "/%7e%41"] {
            for escaped_slashes in [EscapedSlashes::Keep, EscapedSlashes::Decode] {
                let policy = PathPolicy {
                    escaped_slashes,
                    ..PathPolicy::default()
                };
                let once = with(raw, policy).unwrap();
                assert_eq!(with(&once, policy).unwrap(), once, "{raw}");
            }
        }
    }

    #[test]
    fn not_a_path_is_left_alone() {
        assert_eq!(normal("*").as_deref(), Ok("*"));
    }
}
