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

use serde_yaml_ng::{Mapping, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// Template for heuristic paths that no longer fit in the learned set.
pub const OVERFLOW_TEMPLATE: &str = "/{*}";

/// Segments of a path considered; later ones collapse into one trailing `{*}`.
pub const MAX_SEGMENTS: usize = 32;

/// Bytes of a path segment considered; the rest is cut off before matching.
pub const MAX_SEGMENT_BYTES: usize = 256;

/// Path item keys that are operations; the others (`parameters`, `summary`, `$ref`...) are not.
const SPEC_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

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

/// Why an OpenAPI document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read OpenAPI spec {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        cause: std::io::Error,
    },
    /// The document in a file is unusable.
    #[error("OpenAPI spec {}: {error}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        error: Box<SpecError>,
    },
    /// The text is not valid JSON (when it starts with '{') or YAML.
    #[error("invalid {format}: {message}")]
    Syntax {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// The parser's message, with the location.
        message: String,
    },
    /// The `openapi` field is missing or not a 3.x version.
    #[error("not an OpenAPI 3 document: {0}")]
    NotOpenApi3(String),
    /// There is no `paths` object.
    #[error("no `paths` object in the OpenAPI document")]
    NoPaths,
    /// A key of `paths` does not start with '/'.
    #[error("path {0:?} does not start with '/'")]
    PathWithoutSlash(String),
    /// A template's `{` and `}` do not pair up within its segments.
    #[error("path {0:?} has unbalanced braces")]
    UnbalancedBraces(String),
}

/// The operations of an OpenAPI 3 document: which methods exist on which templates.
#[derive(Clone, Debug, Default)]
pub struct ApiSpec {
    paths: Vec<SpecPath>,
}

#[derive(Clone, Debug)]
struct SpecPath {
    template: Template,
    /// Uppercase.
    methods: Vec<String>,
}

impl SpecPath {
    fn has(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

impl ApiSpec {
    /// Parses an OpenAPI 3 document in YAML or JSON.
    pub fn parse(text: &str) -> Result<ApiSpec, SpecError> {
        let doc: Value = if text.trim_start().starts_with('{') {
            // JSON is YAML, but serde_json's messages are clearer for a JSON document.
            let syntax = |message: String| SpecError::Syntax {
                format: "JSON",
                message,
            };
            let json: serde_json::Value =
                serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?;
            serde_yaml_ng::to_value(json).map_err(|e| syntax(e.to_string()))?
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| SpecError::Syntax {
                format: "YAML",
                message: e.to_string(),
            })?
        };
        let root = doc
            .as_mapping()
            .ok_or_else(|| SpecError::NotOpenApi3("the document is not a mapping".into()))?;
        check_version(root)?;
        let base = base_path(root)?;
        let paths = root
            .get("paths")
            .and_then(Value::as_mapping)
            .ok_or(SpecError::NoPaths)?;
        let mut spec = ApiSpec::default();
        for (key, item) in paths {
            let Some(key) = key.as_str() else {
                return Err(SpecError::PathWithoutSlash(describe(key)));
            };
            // Specification extensions may sit beside the paths.
            if key.starts_with("x-") {
                continue;
            }
            if !key.starts_with('/') {
                return Err(SpecError::PathWithoutSlash(key.to_string()));
            }
            let template = Template::from_parts(base.iter().copied().chain(split_path(key)))
                .map_err(|_| SpecError::UnbalancedBraces(key.to_string()))?;
            let mut methods: Vec<String> = Vec::new();
            for name in item
                .as_mapping()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.as_str())
            {
                let is_method = SPEC_METHODS.iter().any(|m| m.eq_ignore_ascii_case(name));
                if is_method && !methods.iter().any(|m| m.eq_ignore_ascii_case(name)) {
                    methods.push(name.to_ascii_uppercase());
                }
            }
            spec.paths.push(SpecPath { template, methods });
        }
        Ok(spec)
    }

    /// Reads and parses an OpenAPI 3 document; errors name the file.
    pub fn load(path: &Path) -> Result<ApiSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|cause| SpecError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        ApiSpec::parse(&text).map_err(|error| SpecError::InFile {
            path: path.to_path_buf(),
            error: Box::new(error),
        })
    }

    /// Every `(METHOD, template)` pair, method uppercase, template with the base path.
    pub fn operations(&self) -> impl Iterator<Item = (&str, &str)> {
        self.paths.iter().flat_map(|p| {
            p.methods
                .iter()
                .map(move |m| (m.as_str(), &*p.template.text))
        })
    }
}

/// Accepts `openapi: 3.x` as a string, or as the number YAML makes of an unquoted `3.1`.
fn check_version(root: &Mapping) -> Result<(), SpecError> {
    let problem = match root.get("openapi") {
        Some(Value::String(v)) if v == "3" || v.starts_with("3.") => return Ok(()),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|v| (3.0..4.0).contains(&v)) => {
            return Ok(())
        }
        Some(other) => format!("`openapi` is {}, expected 3.x", describe(other)),
        None if root.get("swagger").is_some() => {
            "it has `swagger` instead of `openapi` (Swagger 2.0); convert it to OpenAPI 3".into()
        }
        None => "missing `openapi` field".into(),
    };
    Err(SpecError::NotOpenApi3(problem))
}

/// The segments of the first server's path part (see the module docs).
fn base_path(root: &Mapping) -> Result<Vec<&str>, SpecError> {
    let url = root
        .get("servers")
        .and_then(Value::as_sequence)
        .and_then(|servers| servers.first())
        .and_then(|server| server.get("url"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None if url.starts_with('/') => url,
        None => "",
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let parts: Vec<&str> = split_path(path).collect();
    if parts.iter().any(|p| parse_segment(p).is_err()) {
        return Err(SpecError::UnbalancedBraces(url.to_string()));
    }
    Ok(parts)
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
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

/// One segment of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Literal(Box<str>),
    Param,
    /// Text around parameters in one segment, e.g. `{name}.json`.
    Mixed {
        prefix: Box<str>,
        suffix: Box<str>,
    },
}

impl Seg {
    fn matches(&self, part: &str) -> bool {
        match self {
            Seg::Literal(lit) => **lit == *part,
            Seg::Param => !part.is_empty(),
            Seg::Mixed { prefix, suffix } => {
                // Like a whole-segment parameter, the parameters must capture something.
                part.len() > prefix.len() + suffix.len()
                    && part.starts_with(&**prefix)
                    && part.ends_with(&**suffix)
            }
        }
    }
}

/// A parsed template with its canonical text.
#[derive(Clone, Debug)]
struct Template {
    text: Arc<str>,
    segs: Vec<Seg>,
    /// Ranks overlapping templates: literal segments, then mixed ones.
    specificity: (usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TemplateError {
    NoSlash,
    Unbalanced,
}

impl TemplateError {
    fn cause(self) -> &'static str {
        match self {
            TemplateError::NoSlash => "it does not start with '/'",
            TemplateError::Unbalanced => "it has unbalanced braces",
        }
    }
}

impl Template {
    fn parse(text: &str) -> Result<Template, TemplateError> {
        if !text.starts_with('/') {
            return Err(TemplateError::NoSlash);
        }
        Template::from_parts(split_path(text))
    }

    fn from_parts<'a>(parts: impl IntoIterator<Item = &'a str>) -> Result<Template, TemplateError> {
        let mut segs = Vec::new();
        let mut text = String::new();
        for part in parts {
            segs.push(parse_segment(part)?);
            text.push('/');
            text.push_str(part);
        }
        if text.is_empty() {
            text.push('/');
        }
        let count = |f: fn(&Seg) -> bool| segs.iter().filter(|s| f(s)).count();
        let specificity = (
            count(|s| matches!(s, Seg::Literal(_))),
            count(|s| matches!(s, Seg::Mixed { .. })),
        );
        Ok(Template {
            text: Arc::from(text),
            segs,
            specificity,
        })
    }

    fn matches(&self, parts: &[&str]) -> bool {
        self.segs.len() == parts.len() && self.segs.iter().zip(parts).all(|(s, p)| s.matches(p))
    }
}

/// Parses one template segment; braces must pair up inside it, without nesting.
fn parse_segment(part: &str) -> Result<Seg, TemplateError> {
    let mut open = false;
    let mut params = 0;
    for c in part.chars() {
        match (c, open) {
            ('{', false) => open = true,
            ('}', true) => {
                open = false;
                params += 1;
            }
            ('{', true) | ('}', false) => return Err(TemplateError::Unbalanced),
            _ => {}
        }
    }
    if open {
        return Err(TemplateError::Unbalanced);
    }
    if params == 0 {
        return Ok(Seg::Literal(part.into()));
    }
    let prefix = part.split_once('{').map_or("", |(p, _)| p);
    let suffix = part.rsplit_once('}').map_or("", |(_, s)| s);
    if params == 1 && prefix.is_empty() && suffix.is_empty() {
        Ok(Seg::Param)
    } else {
        Ok(Seg::Mixed {
            prefix: prefix.into(),
            suffix: suffix.into(),
        })
    }
}

/// The index of the most specific matching item, the first among equals.
fn best_match<T>(items: &[T], template: impl Fn(&T) -> &Template, parts: &[&str]) -> Option<usize> {
    let mut best: Option<(usize, (usize, usize))> = None;
    for (i, item) in items.iter().enumerate() {
        let t = template(item);
        if t.matches(parts) && best.is_none_or(|(_, s)| t.specificity > s) {
            best = Some((i, t.specificity));
        }
    }
    best.map(|(i, _)| i)
}

fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// The path's non-empty segments, capped and truncated; `true` if segments were dropped.
fn path_parts(path: &str) -> (Vec<&str>, bool) {
    let mut parts = Vec::new();
    for part in split_path(path) {
        if parts.len() == MAX_SEGMENTS {
            return (parts, true);
        }
        parts.push(&part[..part.floor_char_boundary(MAX_SEGMENT_BYTES)]);
    }
    (parts, false)
}

fn heuristic_template(parts: &[&str], capped: bool) -> String {
    let mut out = String::new();
    for part in parts {
        out.push('/');
        out.push_str(classify(part).unwrap_or(part));
    }
    if capped {
        out.push_str("/{*}");
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The placeholder for a segment that looks like a value rather than a name.
fn classify(seg: &str) -> Option<&'static str> {
    let b = seg.as_bytes();
    if !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
        Some("{id}")
    } else if is_uuid(b) {
        Some("{uuid}")
    } else if b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) {
        Some("{hex}")
    } else if b.len() >= 20
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
        && b.iter().any(u8::is_ascii_digit)
        && b.iter().any(u8::is_ascii_alphabetic)
    {
        Some("{token}")
    } else if b.contains(&b'@') {
        Some("{email}")
    } else if b.len() > 64 {
        Some("{param}")
    } else {
        None
    }
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn parse_err(text: &str) -> String {
        ApiSpec::parse(text).unwrap_err().to_string()
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
    fn spec_errors_say_what_is_wrong() {
        let e = parse_err("info: {title: t}\npaths: {}");
        assert!(
            e.contains("not an OpenAPI 3") && e.contains("missing `openapi`"),
            "{e}"
        );
        let e = parse_err("swagger: '2.0'\npaths: {}");
        assert!(
            e.contains("not an OpenAPI 3") && e.contains("Swagger 2.0"),
            "{e}"
        );
        let e = parse_err("openapi: '2.0'\npaths: {}");
        assert!(e.contains(r#"`openapi` is "2.0", expected 3.x"#), "{e}");
        let e = parse_err("- a list");
        assert!(e.contains("not an OpenAPI 3"), "{e}");
        assert!(matches!(
            ApiSpec::parse("openapi: 3.0.0\ninfo: {}"),
            Err(SpecError::NoPaths)
        ));
        let e = parse_err("openapi: 3.0.0\npaths: [1]");
        assert!(e.contains("no `paths` object"), "{e}");
        let e = parse_err("openapi: 3.0.0\npaths:\n  users: {get: {}}");
        assert_eq!(e, r#"path "users" does not start with '/'"#);
        let e = parse_err("openapi: 3.0.0\npaths:\n  /users/{id: {get: {}}");
        assert_eq!(e, r#"path "/users/{id" has unbalanced braces"#);
        let e = parse_err("openapi: 3.0.0\npaths:\n  /a/{b/c}: {get: {}}");
        assert!(e.contains("unbalanced braces"), "{e}");
        let e = parse_err("openapi: 3.0.0\nservers: [{url: '/v1/{x'}]\npaths: {}");
        assert!(e.contains(r#""/v1/{x" has unbalanced braces"#), "{e}");
        let e = parse_err("{\"openapi\": \"3.0.0\",\n \"paths\": }");
        assert!(e.starts_with("invalid JSON") && e.contains("line 2"), "{e}");
        let e = parse_err("openapi: [3");
        assert!(e.starts_with("invalid YAML"), "{e}");
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
