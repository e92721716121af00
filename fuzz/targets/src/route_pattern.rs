//! Route patterns such as `GET /admin/**` (`vigil_guest::route`): the `routes` of a guard, the
//! sidecar's `api.internal_only`, and the patterns a guard passes to the host's `happened`,
//! which all go through `Pattern::parse`.
//!
//! Input: a pattern on the first line; each further line is a request to match, `METHOD
//! /route` or just `/route`.
//!
//! Properties: a pattern keeps its text and parses again to itself; rewritten in a canonical
//! form (method upper-case or `*`, one `/` between non-empty segments) it matches exactly the
//! same requests; it matches its own path, with its own method; `route::matches` agrees with
//! `Pattern::matches`; `segments` yields the non-empty pieces between slashes, in order.

use vigil_guest::route::{matches, segments, Pattern};

/// Parses the first line as a pattern and matches it against the other lines.
pub fn fuzz(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let (source, rest) = text.split_once('\n').unwrap_or((text, ""));
    let requests: Vec<(&str, &str)> = rest
        .split('\n')
        .map(|line| line.split_once(' ').unwrap_or(("GET", line)))
        .collect();
    check_segments(source);
    for (_, route) in &requests {
        check_segments(route);
    }
    let Ok(pattern) = Pattern::parse(source) else {
        for (method, route) in &requests {
            assert!(
                !matches(source, method, route),
                "an unparsable pattern matches nothing"
            );
        }
        return;
    };
    assert_eq!(pattern.as_str(), source);
    assert_eq!(pattern.to_string(), source);
    assert_eq!(Pattern::parse(pattern.as_str()).as_ref(), Ok(&pattern));

    let (method, path) = method_and_path(source);
    let canonical_text = canonical(method, path);
    let canonical = Pattern::parse(&canonical_text)
        .unwrap_or_else(|e| panic!("{source:?} rewritten as {canonical_text:?}: {e}"));
    let own_method = method.filter(|m| *m != "*").unwrap_or("GET");
    let own = (own_method, path.unwrap_or("/anything/at/all"));
    assert!(
        pattern.matches(own.0, own.1),
        "{source:?} against its own path {own:?}"
    );
    // Near misses of its own path probe the segment logic from both sides.
    let longer = format!("{}/extra", own.1);
    let shorter = own
        .1
        .rsplit_once('/')
        .map_or("/", |(before, _)| before)
        .to_string();
    let probes = [
        own,
        (own.0, longer.as_str()),
        (own.0, shorter.as_str()),
        ("DELETE", own.1),
    ];
    for (method, route) in probes.iter().chain(&requests) {
        let matched = pattern.matches(method, route);
        assert_eq!(
            matches(source, method, route),
            matched,
            "{source:?} {method} {route:?}"
        );
        assert_eq!(
            canonical.matches(method, route),
            matched,
            "{source:?} and its canonical form {canonical_text:?} on {method} {route:?}"
        );
        let lower = method.to_ascii_lowercase();
        assert_eq!(
            pattern.matches(&lower, route),
            matched,
            "methods match case-insensitively"
        );
    }
}

/// The method and path of a pattern that parsed, split as the parser splits them (`None` for
/// the method when there is none, `None` for the path of the bare `*`).
fn method_and_path(source: &str) -> (Option<&str>, Option<&str>) {
    let trimmed = source.trim();
    if trimmed == "*" {
        return (None, None);
    }
    match trimmed.split_once(char::is_whitespace) {
        Some((method, path)) => (Some(method), Some(path.trim())),
        None => (None, Some(trimmed)),
    }
}

fn canonical(method: Option<&str>, path: Option<&str>) -> String {
    let Some(path) = path else {
        return "*".to_string();
    };
    let method = method.map_or("*".to_string(), str::to_ascii_uppercase);
    let segments: Vec<&str> = segments(path).collect();
    format!("{method} /{}", segments.join("/"))
}

fn check_segments(path: &str) {
    let all: Vec<&str> = segments(path).collect();
    for segment in &all {
        assert!(
            !segment.is_empty() && !segment.contains('/'),
            "{path:?}: {segment:?}"
        );
    }
    let expected: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    assert_eq!(all, expected, "segments of {path:?}");
}
