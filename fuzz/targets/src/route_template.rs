//! Route templates of the configuration (`api.routes`, e.g. `/users/{id}/orders`) and the
//! resolution of request paths against them (`vigil::routing::RouteTable`).
//!
//! Input: a template on the first line; each further line is a request, `METHOD /path` or just
//! `/path`.
//!
//! Properties: a template is refused exactly when it does not start with `/`, has a segment
//! whose braces do not pair up, more than `MAX_SEGMENTS` segments or a literal segment longer
//! than `MAX_SEGMENT_BYTES`; one accepted renders canonically (one `/` between its non-empty
//! segments), the canonical text is accepted too and resolves to itself, and the template's own
//! text resolves to it. A request resolves the same every time; to the configured template
//! only when it has as many segments; else to a heuristic template of its shape (or, once the
//! learned set is full, the overflow template), which is never documented.

use vigil::routing::{RouteSource, RouteTable, MAX_SEGMENTS, MAX_SEGMENT_BYTES, OVERFLOW_TEMPLATE};

/// Heuristic templates remembered: small, so that the overflow is reached too.
const MAX_LEARNED: usize = 4;

/// Builds a table of the template on the first line and resolves the other lines.
pub fn fuzz(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let (template, rest) = text.split_once('\n').unwrap_or((text, ""));
    let segments: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let valid = template.starts_with('/')
        && segments.iter().all(|s| balanced(s))
        && segments.len() <= MAX_SEGMENTS
        && segments
            .iter()
            .all(|s| s.contains('{') || s.len() <= MAX_SEGMENT_BYTES);
    let table = RouteTable::new(vec![template.to_string()], None, MAX_LEARNED);
    assert_eq!(
        table.is_ok(),
        valid,
        "{template:?}: {:?}",
        table.as_ref().err()
    );
    let Ok(table) = table else {
        return;
    };
    let canonical = format!("/{}", segments.join("/"));
    // Path segments are cut to MAX_SEGMENT_BYTES before matching, so a long parameter segment
    // still matches its own text only if its braces are all within the cut.
    if segments
        .iter()
        .all(|s| s.len() <= MAX_SEGMENT_BYTES || is_one_parameter(s))
    {
        let own = table.resolve("GET", template);
        assert_eq!(
            (&*own.template, own.source),
            (canonical.as_str(), RouteSource::Config),
            "{template:?} resolving its own text"
        );
        let again = RouteTable::new(vec![canonical.clone()], None, MAX_LEARNED)
            .unwrap_or_else(|e| panic!("{template:?} rendered as {canonical:?}: {e}"));
        let fixed = again.resolve("GET", &canonical);
        assert_eq!(
            (&*fixed.template, fixed.source),
            (canonical.as_str(), RouteSource::Config)
        );
    }
    for line in rest.split('\n') {
        let (method, path) = line.split_once(' ').unwrap_or(("GET", line));
        let route = table.resolve(method, path);
        assert_eq!(
            table.resolve(method, path),
            route,
            "{method} {path:?} resolves the same twice"
        );
        assert!(!route.documented, "no spec, nothing documented: {route:?}");
        let parts = path.split('/').filter(|s| !s.is_empty()).count();
        match route.source {
            RouteSource::Config => {
                assert_eq!(&*route.template, canonical, "{method} {path:?}");
                assert_eq!(parts, segments.len(), "{method} {path:?}: {route:?}");
            }
            RouteSource::Heuristic => {
                let shape = route.template.split('/').filter(|s| !s.is_empty()).count();
                let want = if parts > MAX_SEGMENTS {
                    MAX_SEGMENTS + 1
                } else {
                    parts
                };
                assert!(route.template.starts_with('/'), "{path:?}: {route:?}");
                assert_eq!(shape, want, "{path:?}: {route:?}");
            }
            RouteSource::Overflow => assert_eq!(&*route.template, OVERFLOW_TEMPLATE),
            RouteSource::Spec => panic!("no spec, yet {path:?} resolved to {route:?}"),
        }
        assert!(table.learned() <= MAX_LEARNED);
    }
}

/// Whether the braces of a segment pair up, `{` then `}`, never nested.
fn balanced(segment: &str) -> bool {
    let mut open = false;
    for c in segment.chars() {
        match c {
            '{' if !open => open = true,
            '}' if open => open = false,
            '{' | '}' => return false,
            _ => {}
        }
    }
    !open
}

/// Whether a segment is a single parameter, `{name}`, which matches any non-empty part.
fn is_one_parameter(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}') && segment.matches('{').count() == 1
}
