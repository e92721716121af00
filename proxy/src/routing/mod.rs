//! Which route template a request belongs to, e.g. `GET /users/42` → `/users/{id}`.
//!
//! The template picks the guards that see a request, keys per-route state and feeds the endpoint
//! inventory. Three sources are tried in order, and the first that matches wins:
//!
//! 1. explicit templates from the configuration ([`RouteSource::Config`]);
//! 2. the `paths` of an OpenAPI 3 document ([`RouteSource::Spec`]);
//! 3. heuristics that replace ID-like segments with placeholders ([`RouteSource::Heuristic`]).
//!
//! Within a source, the template with the most literal segments wins (`/users/me` beats
//! `/users/{id}`), then the one listed first.
//!
//! Templates are canonicalised: empty segments and a trailing slash are dropped, so
//! `/users//{id}/` is `/users/{id}` and the root is `/`. A `{name}` segment matches one non-empty
//! path segment. A segment mixing text and parameters, such as `{name}.json`, matches any
//! segment with the same text before its first `{` and after its last `}` and something between.
//!
//! # OpenAPI base path
//!
//! Spec templates get the path part of the *first* `servers` entry prepended: with
//! `url: https://api.example.com/v1` (or `url: /v1`), `paths: /users` is `/v1/users`. The path
//! part is what follows the host of an absolute URL, or the whole URL when it starts with '/';
//! URLs of other forms (relative ones such as `v1`) give no base path. Later servers and server
//! variables' values are ignored; a variable in the path stays a parameter.
//!
//! # Bounds
//!
//! Heuristic templates come from client-controlled text, so the table remembers at most
//! `max_learned` of them; once full, paths with an unknown shape resolve to
//! [`OVERFLOW_TEMPLATE`] ([`RouteSource::Overflow`]), which does not depend on the path. Only
//! the first [`MAX_SEGMENTS`] segments of a path are considered (the rest become one trailing
//! `{*}` and no configured or spec template matches), each cut to [`MAX_SEGMENT_BYTES`] bytes.
//!
//! The OpenAPI document is read in `openapi`, templates parsed and matched in `template`, and
//! ID-like segments recognised in `heuristics`.

mod heuristics;
mod openapi;
mod template;

use heuristics::heuristic_template;
pub use openapi::{ApiSpec, SpecError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use template::{best_match, path_parts, Seg, Template};

/// Template for heuristic paths that no longer fit in the learned set.
pub const OVERFLOW_TEMPLATE: &str = "/{*}";

/// Segments of a path considered; later ones collapse into one trailing `{*}`.
pub const MAX_SEGMENTS: usize = 32;

/// Bytes of a path segment considered; the rest is cut off before matching.
pub const MAX_SEGMENT_BYTES: usize = 256;

/// Where a request's route template came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteSource {
    /// An explicit template from the configuration.
    Config,
    /// A path of the OpenAPI spec.
    Spec,
    /// Derived from the path by replacing ID-like segments.
    Heuristic,
    /// The learned set is full: the catch-all [`OVERFLOW_TEMPLATE`].
    Overflow,
}

impl RouteSource {
    /// A short lowercase name, e.g. for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteSource::Config => "config",
            RouteSource::Spec => "spec",
            RouteSource::Heuristic => "heuristic",
            RouteSource::Overflow => "overflow",
        }
    }
}

/// The route a request resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The canonical template, e.g. `/users/{id}`.
    pub template: Arc<str>,
    /// Which source produced the template.
    pub source: RouteSource,
    /// Whether the OpenAPI spec has this method on this template (parameter names aside).
    pub documented: bool,
}

/// Maps requests to route templates; shared by all connections.
#[derive(Debug)]
pub struct RouteTable {
    explicit: Vec<Template>,
    /// For each explicit template, the spec path of the same shape, to tell if it is documented.
    explicit_in_spec: Vec<Option<usize>>,
    spec: Option<ApiSpec>,
    max_learned: usize,
    learned: RwLock<HashSet<Arc<str>>>,
    overflow: Arc<str>,
    warned_full: AtomicBool,
}

impl RouteTable {
    /// Builds a table from configured templates (e.g. `/users/{id}/orders`) and a spec.
    pub fn new(
        explicit: Vec<String>,
        spec: Option<ApiSpec>,
        max_learned: usize,
    ) -> Result<RouteTable, String> {
        let mut templates = Vec::with_capacity(explicit.len());
        for text in &explicit {
            let fail = |cause: &str| format!("route template {text:?}: {cause}");
            let template = Template::parse(text).map_err(|e| fail(e.cause()))?;
            // Requests are capped before matching, so such a template could never match.
            if template.segs.len() > MAX_SEGMENTS {
                return Err(fail(&format!("it has more than {MAX_SEGMENTS} segments")));
            }
            if template
                .segs
                .iter()
                .any(|s| matches!(s, Seg::Literal(l) if l.len() > MAX_SEGMENT_BYTES))
            {
                return Err(fail(&format!(
                    "a segment is longer than {MAX_SEGMENT_BYTES} bytes"
                )));
            }
            templates.push(template);
        }
        let spec_paths = spec.as_ref().map_or(&[][..], |s| &s.paths[..]);
        let explicit_in_spec = templates
            .iter()
            .map(|t| spec_paths.iter().position(|p| p.template.segs == t.segs))
            .collect();
        Ok(RouteTable {
            explicit: templates,
            explicit_in_spec,
            spec,
            max_learned,
            learned: RwLock::new(HashSet::new()),
            overflow: Arc::from(OVERFLOW_TEMPLATE),
            warned_full: AtomicBool::new(false),
        })
    }

    /// The route of a request; `path` has no query string.
    pub fn resolve(&self, method: &str, path: &str) -> Route {
        let (parts, capped) = path_parts(path);
        if !capped {
            if let Some(i) = best_match(&self.explicit, |t| t, &parts) {
                let documented = match (self.explicit_in_spec[i], &self.spec) {
                    (Some(j), Some(spec)) => spec.paths[j].has(method),
                    _ => false,
                };
                return Route {
                    template: self.explicit[i].text.clone(),
                    source: RouteSource::Config,
                    documented,
                };
            }
            if let Some(spec) = &self.spec {
                if let Some(j) = best_match(&spec.paths, |p| &p.template, &parts) {
                    let path = &spec.paths[j];
                    return Route {
                        template: path.template.text.clone(),
                        source: RouteSource::Spec,
                        documented: path.has(method),
                    };
                }
            }
        }
        self.learn(heuristic_template(&parts, capped))
    }

    /// How many heuristic templates are remembered (at most `max_learned`).
    pub fn learned(&self) -> usize {
        self.learned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The spec the table was built with.
    pub fn spec(&self) -> Option<&ApiSpec> {
        self.spec.as_ref()
    }

    fn learn(&self, template: String) -> Route {
        let heuristic = |template: &Arc<str>| Route {
            template: template.clone(),
            source: RouteSource::Heuristic,
            documented: false,
        };
        {
            let set = self.learned.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(known) = set.get(template.as_str()) {
                return heuristic(known);
            }
            // Spares the write lock during a flood once the set is full.
            if set.len() >= self.max_learned {
                return self.overflowed();
            }
        }
        let mut set = self.learned.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = set.get(template.as_str()) {
            return heuristic(known);
        }
        if set.len() >= self.max_learned {
            drop(set);
            return self.overflowed();
        }
        let template: Arc<str> = Arc::from(template);
        set.insert(template.clone());
        heuristic(&template)
    }

    fn overflowed(&self) -> Route {
        if !self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_learned = self.max_learned,
                "route table full: paths of new shapes now resolve to {OVERFLOW_TEMPLATE}; \
                 declare routes in the config or the OpenAPI spec"
            );
        }
        Route {
            template: self.overflow.clone(),
            source: RouteSource::Overflow,
            documented: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SPEC_YAML: &str = r#"
openapi: 3.0.3
info: {title: shop, version: "1"}
paths:
  /users/{userId}:
    summary: one user
    parameters:
      - {name: userId, in: path, required: true}
    get:
      responses:
        200: {description: ok}
    DELETE: {}
  /users/me:
    get: {}
  /orders/{id}/:
    post: {}
  /files/{name}.json:
    get: {}
  /legacy:
    $ref: '#/components/pathItems/legacy'
  x-internal: {}
"#;

    fn table(explicit: &[&str], spec: Option<&str>, max: usize) -> RouteTable {
        let explicit = explicit.iter().map(|s| s.to_string()).collect();
        let spec = spec.map(|s| ApiSpec::parse(s).unwrap());
        RouteTable::new(explicit, spec, max).unwrap()
    }

    fn check(t: &RouteTable, method: &str, path: &str, want: (&str, RouteSource, bool)) {
        let r = t.resolve(method, path);
        assert_eq!(
            (&*r.template, r.source, r.documented),
            want,
            "{method} {path}"
        );
    }

    #[test]
    fn explicit_beats_spec_beats_heuristics() {
        let t = table(&["/users/{id}", "/health"], Some(SPEC_YAML), 100);
        // The config wins even over the spec's more literal `/users/me`; it is documented
        // because the spec has GET on the same shape under another parameter name.
        check(
            &t,
            "GET",
            "/users/me",
            ("/users/{id}", RouteSource::Config, true),
        );
        check(
            &t,
            "PUT",
            "/users/7",
            ("/users/{id}", RouteSource::Config, false),
        );
        check(
            &t,
            "GET",
            "/health",
            ("/health", RouteSource::Config, false),
        );
        check(
            &t,
            "POST",
            "/orders/9",
            ("/orders/{id}", RouteSource::Spec, true),
        );
        check(
            &t,
            "GET",
            "/carts/9",
            ("/carts/{id}", RouteSource::Heuristic, false),
        );
        assert_eq!(t.learned(), 1);
    }

    #[test]
    fn more_literal_template_wins_then_the_earlier() {
        let t = table(
            &[
                "/users/{id}",
                "/users/me",
                "/{a}/{b}/x",
                "/{a}/y/{c}",
                "/{a}/y/x",
            ],
            None,
            10,
        );
        check(
            &t,
            "GET",
            "/users/me",
            ("/users/me", RouteSource::Config, false),
        );
        check(
            &t,
            "GET",
            "/users/you",
            ("/users/{id}", RouteSource::Config, false),
        );
        check(
            &t,
            "GET",
            "/q/y/x",
            ("/{a}/y/x", RouteSource::Config, false),
        );
        check(
            &t,
            "GET",
            "/q/z/x",
            ("/{a}/{b}/x", RouteSource::Config, false),
        );
        let tie = table(&["/{a}/y/{c}", "/{a}/{b}/x"], None, 10);
        check(
            &tie,
            "GET",
            "/q/y/x",
            ("/{a}/y/{c}", RouteSource::Config, false),
        );
        // Spec templates follow the same rule.
        let s = table(&[], Some(SPEC_YAML), 10);
        check(
            &s,
            "GET",
            "/users/me",
            ("/users/me", RouteSource::Spec, true),
        );
        check(
            &s,
            "GET",
            "/users/5",
            ("/users/{userId}", RouteSource::Spec, true),
        );
    }

    #[test]
    fn spec_from_yaml_documents_by_method() {
        let spec = ApiSpec::parse(SPEC_YAML).unwrap();
        let mut ops: Vec<(&str, &str)> = spec.operations().collect();
        ops.sort();
        assert_eq!(
            ops,
            [
                ("DELETE", "/users/{userId}"),
                ("GET", "/files/{name}.json"),
                ("GET", "/users/me"),
                ("GET", "/users/{userId}"),
                ("POST", "/orders/{id}"),
            ]
        );
        let t = RouteTable::new(vec![], Some(spec), 10).unwrap();
        check(
            &t,
            "get",
            "/users/5",
            ("/users/{userId}", RouteSource::Spec, true),
        );
        check(
            &t,
            "Delete",
            "/users/5",
            ("/users/{userId}", RouteSource::Spec, true),
        );
        // The template is chosen regardless of method; only `documented` depends on it.
        check(
            &t,
            "PATCH",
            "/users/5",
            ("/users/{userId}", RouteSource::Spec, false),
        );
        check(
            &t,
            "DELETE",
            "/users/me",
            ("/users/me", RouteSource::Spec, false),
        );
        // A path item without operations still names the route.
        check(&t, "GET", "/legacy", ("/legacy", RouteSource::Spec, false));
        check(
            &t,
            "GET",
            "/files/a.json",
            ("/files/{name}.json", RouteSource::Spec, true),
        );
        check(
            &t,
            "GET",
            "/files/.json",
            ("/files/.json", RouteSource::Heuristic, false),
        );
        check(
            &t,
            "GET",
            "/files/a.xml",
            ("/files/a.xml", RouteSource::Heuristic, false),
        );
        assert_eq!(t.spec().unwrap().operations().count(), 5);
    }

    #[test]
    fn spec_from_json() {
        let json = r#"{"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "paths": {"/orders/{orderId}/items": {"post": {}, "parameters": []}}}"#;
        let spec = ApiSpec::parse(json).unwrap();
        assert_eq!(
            spec.operations().collect::<Vec<_>>(),
            [("POST", "/orders/{orderId}/items")]
        );
        let t = RouteTable::new(vec![], Some(spec), 10).unwrap();
        check(
            &t,
            "POST",
            "/orders/A1/items",
            ("/orders/{orderId}/items", RouteSource::Spec, true),
        );
        check(
            &t,
            "GET",
            "/orders/A1/items",
            ("/orders/{orderId}/items", RouteSource::Spec, false),
        );
    }

    #[test]
    fn unquoted_yaml_version_number_is_accepted() {
        assert!(ApiSpec::parse("openapi: 3.1\npaths: {}").is_ok());
        assert!(ApiSpec::parse("openapi: 3\npaths: {}").is_ok());
    }

    #[test]
    fn servers_base_path_is_prepended() {
        let doc = |url: &str| {
            format!("openapi: 3.0.0\nservers:\n  - url: {url}\n  - url: /other\npaths:\n  /users/{{id}}:\n    get: {{}}\n")
        };
        let t = table(&[], Some(&doc("https://api.example.com/v1")), 10);
        check(
            &t,
            "GET",
            "/v1/users/5",
            ("/v1/users/{id}", RouteSource::Spec, true),
        );
        check(
            &t,
            "GET",
            "/users/5",
            ("/users/{id}", RouteSource::Heuristic, false),
        );
        let ops: Vec<_> = t.spec().unwrap().operations().collect();
        assert_eq!(ops, [("GET", "/v1/users/{id}")]);

        let t = table(&[], Some(&doc("/api/v2/")), 10);
        check(
            &t,
            "GET",
            "/api/v2/users/5",
            ("/api/v2/users/{id}", RouteSource::Spec, true),
        );
        let t = table(
            &[],
            Some(&doc("https://{region}.example.com:8443/{version}")),
            10,
        );
        check(
            &t,
            "GET",
            "/v3/users/5",
            ("/{version}/users/{id}", RouteSource::Spec, true),
        );
        for no_base in ["https://api.example.com", "https://api.example.com/", "v1"] {
            let t = table(&[], Some(&doc(no_base)), 10);
            check(
                &t,
                "GET",
                "/users/5",
                ("/users/{id}", RouteSource::Spec, true),
            );
        }
    }

    #[test]
    fn load_names_the_file() {
        let missing = Path::new("/nonexistent/vigil/openapi.yaml");
        let e = ApiSpec::load(missing).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/vigil/openapi.yaml"), "{e}");
        assert!(e.starts_with("cannot read OpenAPI spec"), "{e}");

        let dir = std::env::temp_dir();
        let bad = dir.join(format!("vigil-route-test-{}.yaml", std::process::id()));
        std::fs::write(&bad, "swagger: '2.0'\npaths: {}\n").unwrap();
        let e = ApiSpec::load(&bad).unwrap_err().to_string();
        std::fs::write(&bad, SPEC_YAML).unwrap();
        let good = ApiSpec::load(&bad);
        std::fs::remove_file(&bad).unwrap();
        assert!(e.contains(&*bad.to_string_lossy()), "{e}");
        assert!(e.contains("not an OpenAPI 3"), "{e}");
        assert_eq!(good.unwrap().operations().count(), 5);
    }

    #[test]
    fn bad_explicit_templates_are_named() {
        for (bad, cause) in [
            ("users/{id}", "does not start with '/'"),
            ("/users/{id", "unbalanced braces"),
            ("/users/id}", "unbalanced braces"),
            ("/users/{{id}}", "unbalanced braces"),
        ] {
            let e = RouteTable::new(vec!["/ok".into(), bad.into()], None, 1).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")) && e.contains(cause), "{e}");
        }
        let deep = "/a".repeat(MAX_SEGMENTS + 1);
        let e = RouteTable::new(vec![deep], None, 1).unwrap_err();
        assert!(e.contains("more than 32 segments"), "{e}");
        let long = format!("/{}", "a".repeat(MAX_SEGMENT_BYTES + 1));
        let e = RouteTable::new(vec![long], None, 1).unwrap_err();
        assert!(e.contains("longer than 256 bytes"), "{e}");
    }

    #[test]
    fn heuristics() {
        let t = table(&[], None, 1000);
        let h = |path: &str| {
            let r = t.resolve("GET", path);
            assert_eq!(r.source, RouteSource::Heuristic, "{path}");
            assert!(!r.documented);
            r.template.to_string()
        };
        assert_eq!(h("/users/42/orders/7"), "/users/{id}/orders/{id}");
        assert_eq!(h("/i/550e8400-E29B-41d4-a716-446655440000"), "/i/{uuid}");
        // Not a UUID (a 'g'), but still a token.
        assert_eq!(h("/i/550e8400-e29b-41d4-a716-44665544000g"), "/i/{token}");
        assert_eq!(h("/blob/0123456789abcDEF"), "/blob/{hex}");
        assert_eq!(h("/blob/0123456789abcde"), "/blob/0123456789abcde");
        assert_eq!(h("/reset/abcXYZ123_ghi-JKL456"), "/reset/{token}");
        assert_eq!(h("/reset/abcXYZ123_ghi-JKL"), "/reset/abcXYZ123_ghi-JKL");
        assert_eq!(
            h("/docs/getting-started-with-vigil"),
            "/docs/getting-started-with-vigil"
        );
        assert_eq!(h("/docs/getting-started-guide-v2"), "/docs/{token}");
        assert_eq!(h("/by-email/bob@example.com"), "/by-email/{email}");
        // Percent-encoding is not decoded.
        assert_eq!(
            h("/by-email/bob%40example.com"),
            "/by-email/bob%40example.com"
        );
        let long = "a.".repeat(33);
        assert_eq!(h(&format!("/q/{long}")), "/q/{param}");
        assert_eq!(
            h(&format!("/q/{}", &long[..64])),
            format!("/q/{}", &long[..64])
        );
        assert_eq!(h("/"), "/");
        assert_eq!(h(""), "/");
        assert_eq!(h("//"), "/");
    }

    #[test]
    fn trailing_slash_and_empty_segments_are_ignored() {
        let t = table(&["/users/{id}/"], None, 10);
        check(
            &t,
            "GET",
            "/users/42/",
            ("/users/{id}", RouteSource::Config, false),
        );
        check(
            &t,
            "GET",
            "//users//42",
            ("/users/{id}", RouteSource::Config, false),
        );
        check(
            &t,
            "GET",
            "/users/",
            ("/users", RouteSource::Heuristic, false),
        );
        check(
            &t,
            "GET",
            "/items/3/",
            ("/items/{id}", RouteSource::Heuristic, false),
        );
        check(
            &t,
            "GET",
            "/items//3",
            ("/items/{id}", RouteSource::Heuristic, false),
        );
        assert_eq!(t.learned(), 2);
    }

    #[test]
    fn paths_are_capped() {
        let max = "/a".repeat(MAX_SEGMENTS);
        let t = table(&[&max], None, 10);
        check(&t, "GET", &max, (&max, RouteSource::Config, false));
        // Deeper paths never match a template and collapse their tail.
        let deep = format!("{}/1/2/3", "/a".repeat(MAX_SEGMENTS - 1));
        let want = format!("{}/{{id}}/{{*}}", "/a".repeat(MAX_SEGMENTS - 1));
        check(&t, "GET", &deep, (&want, RouteSource::Heuristic, false));
        let deeper = format!("{deep}{}", "/b".repeat(10_000));
        check(&t, "GET", &deeper, (&want, RouteSource::Heuristic, false));
        // Segments are cut to 256 bytes first: the trailing letter is never seen.
        let digits = format!("/n/{}x", "1".repeat(MAX_SEGMENT_BYTES));
        check(
            &t,
            "GET",
            &digits,
            ("/n/{id}", RouteSource::Heuristic, false),
        );
        // ...on a character boundary.
        let wide = format!("/w/{}", "€".repeat(100));
        check(
            &t,
            "GET",
            &wide,
            ("/w/{param}", RouteSource::Heuristic, false),
        );
    }

    #[test]
    fn learning_is_bounded_under_a_flood() {
        const MAX: usize = 100;
        let t = table(&["/login"], None, MAX);
        check(
            &t,
            "GET",
            "/users/1",
            ("/users/{id}", RouteSource::Heuristic, false),
        );
        let mut seed: u64 = 0x5eed;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut overflowed = 0;
        for _ in 0..100_000 {
            let len = 3 + next() % 6;
            let seg: String = (0..len)
                .map(|_| ALPHABET[next() % ALPHABET.len()] as char)
                .collect();
            let r = t.resolve("GET", &format!("/{seg}/x"));
            assert!(t.learned() <= MAX);
            match r.source {
                RouteSource::Overflow => {
                    assert_eq!(&*r.template, OVERFLOW_TEMPLATE);
                    assert!(!r.documented);
                    overflowed += 1;
                }
                RouteSource::Heuristic => assert!(r.template.ends_with("/x")),
                other => panic!("unexpected source {other:?}"),
            }
        }
        assert_eq!(t.learned(), MAX);
        assert!(overflowed > 99_000, "{overflowed}");
        // Known and configured routes are unaffected.
        check(
            &t,
            "GET",
            "/users/99",
            ("/users/{id}", RouteSource::Heuristic, false),
        );
        check(&t, "POST", "/login", ("/login", RouteSource::Config, false));
        check(
            &t,
            "GET",
            "/new/shape",
            (OVERFLOW_TEMPLATE, RouteSource::Overflow, false),
        );
        assert_eq!(t.learned(), MAX);

        let none = table(&[], None, 0);
        check(
            &none,
            "GET",
            "/",
            (OVERFLOW_TEMPLATE, RouteSource::Overflow, false),
        );
        assert_eq!(none.learned(), 0);
    }

    #[test]
    fn resolves_concurrently() {
        fn shared<T: Send + Sync>() {}
        shared::<RouteTable>();
        let t = Arc::new(table(&["/health"], Some(SPEC_YAML), 50));
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        check(
                            &t,
                            "GET",
                            "/health",
                            ("/health", RouteSource::Config, false),
                        );
                        check(
                            &t,
                            "GET",
                            &format!("/users/{i}"),
                            ("/users/{userId}", RouteSource::Spec, true),
                        );
                        check(
                            &t,
                            "GET",
                            &format!("/carts/{i}/items"),
                            ("/carts/{id}/items", RouteSource::Heuristic, false),
                        );
                        let r = t.resolve("GET", &format!("/t{n}-{i}/x"));
                        assert!(matches!(
                            r.source,
                            RouteSource::Heuristic | RouteSource::Overflow
                        ));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(t.learned(), 50);
        check(
            &t,
            "GET",
            "/carts/1/items",
            ("/carts/{id}/items", RouteSource::Heuristic, false),
        );
    }
}
