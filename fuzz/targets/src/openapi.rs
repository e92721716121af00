//! OpenAPI 3 documents, YAML or JSON (`vigil::routing::ApiSpec::parse`), and resolution of
//! requests against their paths.
//!
//! Input: the text of a document.
//!
//! Properties: a document that parses parses the same again; each operation's method is one of
//! the eight HTTP methods OpenAPI names, upper-case, and its template is canonical (starts with
//! `/`, no empty segment, no trailing `/`); a route table built on the spec accepts it, and
//! each operation's own template (within the caps on path length) resolves to a spec route.

use vigil::routing::{ApiSpec, RouteSource, RouteTable, MAX_SEGMENTS, MAX_SEGMENT_BYTES};

const METHODS: [&str; 8] = [
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

/// Parses the input as an OpenAPI document and resolves its operations.
pub fn fuzz(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let Ok(spec) = ApiSpec::parse(text) else {
        return;
    };
    let operations: Vec<(String, String)> = spec
        .operations()
        .map(|(m, t)| (m.to_string(), t.to_string()))
        .collect();
    let again = ApiSpec::parse(text).expect("a document parses every time");
    assert!(again.operations().eq(spec.operations()), "{text:?}");
    for (method, template) in &operations {
        assert!(METHODS.contains(&method.as_str()), "{method:?}");
        assert!(template.starts_with('/'), "{template:?}");
        assert!(!template.contains("//"), "{template:?}");
        assert!(template == "/" || !template.ends_with('/'), "{template:?}");
    }
    let table = RouteTable::new(Vec::new(), Some(spec), 16)
        .unwrap_or_else(|e| panic!("a table refuses the spec: {e}"));
    for (method, template) in &operations {
        let segments: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
        if segments.len() > MAX_SEGMENTS || segments.iter().any(|s| s.len() > MAX_SEGMENT_BYTES) {
            continue;
        }
        let route = table.resolve(method, template);
        assert_eq!(
            route.source,
            RouteSource::Spec,
            "{method} {template}: {route:?}"
        );
    }
}
