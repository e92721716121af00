//! The operations of an OpenAPI 3 document (YAML or JSON): which methods exist on which
//! templates, with the first server's base path prepended.

use super::template::{parse_segment, split_path, Template};
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};

/// Path item keys that are operations; the others (`parameters`, `summary`, `$ref`...) are not.
const SPEC_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

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
    pub(super) paths: Vec<SpecPath>,
}

#[derive(Clone, Debug)]
pub(super) struct SpecPath {
    pub(super) template: Template,
    /// Uppercase.
    pub(super) methods: Vec<String>,
}

impl SpecPath {
    pub(super) fn has(&self, method: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        ApiSpec::parse(text).unwrap_err().to_string()
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
}
