//! Route patterns such as `POST /cart/*` or `GET /admin/**`, shared by the host (which uses them
//! to pick the guards that see a request) and by guards (which use them inside their policies).
//!
//! Syntax: an optional method (`GET`, or `*` for any), then a path of `/`-separated segments.
//! A segment is a literal, `*` or `{name}` (exactly one segment), or a final `**` (any number
//! of remaining segments, including none). A pattern without a path (`*`) matches everything.

use std::fmt;

/// A parsed route pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    method: Option<String>,
    segments: Vec<Segment>,
    source: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

/// Why a pattern could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pattern: String,
    cause: &'static str,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid route pattern {:?}: {}",
            self.pattern, self.cause
        )
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Parses `"[METHOD ]PATH"`, e.g. `"GET /users/{id}"`, `"/health"`, `"* /admin/**"` or `"*"`.
    pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
        let fail = |cause| PatternError {
            pattern: pattern.to_string(),
            cause,
        };
        let trimmed = pattern.trim();
        if trimmed.is_empty() {
            return Err(fail("it is empty"));
        }
        if trimmed == "*" {
            return Ok(Pattern {
                method: None,
                segments: vec![Segment::Rest],
                source: pattern.to_string(),
            });
        }
        let (method, path) = match trimmed.split_once(char::is_whitespace) {
            Some((method, path)) => (Some(method), path.trim()),
            None if trimmed.starts_with('/') => (None, trimmed),
            None => {
                return Err(fail(
                    "expected a path starting with '/', optionally after a method",
                ))
            }
        };
        let method = match method {
            None | Some("*") => None,
            Some(m) if m.bytes().all(|b| b.is_ascii_alphabetic()) => Some(m.to_ascii_uppercase()),
            Some(_) => return Err(fail("the method must be letters only, or '*'")),
        };
        if !path.starts_with('/') {
            return Err(fail("the path must start with '/'"));
        }
        let parts: Vec<&str> = segments(path).collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "**" if i + 1 == parts.len() => Segment::Rest,
                "**" => return Err(fail("'**' may only be the last segment")),
                "*" => Segment::One,
                p if p.starts_with('{') && p.ends_with('}') => Segment::One,
                p if p.contains(char::is_whitespace) => {
                    return Err(fail("a path segment contains whitespace"))
                }
                p => Segment::Literal(p.to_string()),
            });
        }
        Ok(Pattern {
            method,
            segments,
            source: pattern.to_string(),
        })
    }

    /// Whether a request with this method and route template (or path) matches.
    pub fn matches(&self, method: &str, route: &str) -> bool {
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(method) {
                return false;
            }
        }
        // Literals are compared in place against the route's bytes: this runs for every
        // pattern on every request, in guards too, where each segment cut out first costs.
        let mut rest = route.as_bytes();
        for segment in &self.segments {
            rest = skip_slashes(rest);
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if rest.is_empty() {
                        return false;
                    }
                    rest = &rest[segment_len(rest)..];
                }
                Segment::Literal(lit) => match rest.strip_prefix(lit.as_bytes()) {
                    Some(after) if after.first().is_none_or(|&b| b == b'/') => rest = after,
                    _ => return false,
                },
            }
        }
        skip_slashes(rest).is_empty()
    }

    /// The text the pattern was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

/// Whether `method route` matches the pattern text; an unparsable pattern matches nothing.
pub fn matches(pattern: &str, method: &str, route: &str) -> bool {
    Pattern::parse(pattern).is_ok_and(|p| p.matches(method, route))
}

/// The non-empty `/`-separated segments of a path: `/users//7/` has `users` and `7`.
pub fn segments(path: &str) -> Segments<'_> {
    Segments { rest: path }
}

/// Iterator returned by [`segments`]. Scans bytes: patterns are matched on every request,
/// in guards too, where a byte loop is much cheaper than a generic string splitter.
#[derive(Clone, Debug)]
pub struct Segments<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.rest.as_bytes();
        let start = bytes.len() - skip_slashes(bytes).len();
        if start == bytes.len() {
            return None;
        }
        let end = start + segment_len(&bytes[start..]);
        // Both ends are at a '/' or an end of the string, so at char boundaries.
        let segment = &self.rest[start..end];
        self.rest = &self.rest[end..];
        Some(segment)
    }
}

fn skip_slashes(bytes: &[u8]) -> &[u8] {
    let slashes = bytes.iter().take_while(|&&b| b == b'/').count();
    &bytes[slashes..]
}

/// The length of the segment `bytes` starts with: up to the next '/' or the end.
fn segment_len(bytes: &[u8]) -> usize {
    bytes.iter().position(|&b| b == b'/').unwrap_or(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_method() {
        let p = Pattern::parse("POST /login").unwrap();
        assert!(p.matches("POST", "/login"));
        assert!(p.matches("post", "/login/"));
        assert!(!p.matches("GET", "/login"));
        assert!(!p.matches("POST", "/login/x"));
        assert!(!p.matches("POST", "/"));
        // A literal is a whole segment, not a prefix of one; empty segments are skipped.
        assert!(!p.matches("POST", "/loginx"));
        assert!(!p.matches("POST", "/logi"));
        assert!(p.matches("POST", "//login//"));
        let two = Pattern::parse("GET /a/{id}").unwrap();
        assert!(two.matches("GET", "/a//7/"));
        assert!(!two.matches("GET", "/a//"));
    }

    #[test]
    fn wildcards() {
        let one = Pattern::parse("GET /users/*").unwrap();
        assert!(one.matches("GET", "/users/42"));
        assert!(one.matches("GET", "/users/{id}"));
        assert!(!one.matches("GET", "/users"));
        assert!(!one.matches("GET", "/users/42/orders"));
        let named = Pattern::parse("GET /users/{id}/orders").unwrap();
        assert!(named.matches("GET", "/users/7/orders"));
        let rest = Pattern::parse("* /admin/**").unwrap();
        assert!(rest.matches("DELETE", "/admin"));
        assert!(rest.matches("GET", "/admin/stats/today"));
        assert!(!rest.matches("GET", "/administrator"));
        let any = Pattern::parse("*").unwrap();
        assert!(any.matches("PATCH", "/anything/at/all"));
        let path_only = Pattern::parse("/health").unwrap();
        assert!(path_only.matches("HEAD", "/health"));
    }

    #[test]
    fn segments_skip_empty_ones_and_keep_text_whole() {
        let all = |path| segments(path).collect::<Vec<_>>();
        assert_eq!(all("/users//7/"), ["users", "7"]);
        assert_eq!(all("users/é/{id}.json"), ["users", "é", "{id}.json"]);
        assert_eq!(all("/"), Vec::<&str>::new());
        assert_eq!(all(""), Vec::<&str>::new());
        assert_eq!(all("//a"), ["a"]);
    }

    #[test]
    fn rejects_bad_patterns_with_cause() {
        for (bad, cause) in [
            ("", "empty"),
            ("login", "path starting with '/'"),
            ("GET login", "must start with '/'"),
            ("G3T /x", "letters only"),
            ("GET /a/**/b", "last segment"),
        ] {
            let err = Pattern::parse(bad).unwrap_err().to_string();
            assert!(err.contains(cause), "{bad:?}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
