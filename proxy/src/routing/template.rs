//! Route templates (`/users/{id}`, `/files/{name}.json`): parsing, canonical form, and matching a
//! path's segments, the most literal template first.

use super::{MAX_SEGMENTS, MAX_SEGMENT_BYTES};
use std::sync::Arc;

/// One segment of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seg {
    Literal(Box<str>),
    Param,
    /// Text around parameters in one segment, e.g. `{name}.json`.
    Mixed {
        prefix: Box<str>,
        suffix: Box<str>,
    },
}

impl Seg {
    pub(super) fn matches(&self, part: &str) -> bool {
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
pub(super) struct Template {
    pub(super) text: Arc<str>,
    pub(super) segs: Vec<Seg>,
    /// Ranks overlapping templates: literal segments, then mixed ones.
    pub(super) specificity: (usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TemplateError {
    NoSlash,
    Unbalanced,
}

impl TemplateError {
    pub(super) fn cause(self) -> &'static str {
        match self {
            TemplateError::NoSlash => "it does not start with '/'",
            TemplateError::Unbalanced => "it has unbalanced braces",
        }
    }
}

impl Template {
    pub(super) fn parse(text: &str) -> Result<Template, TemplateError> {
        if !text.starts_with('/') {
            return Err(TemplateError::NoSlash);
        }
        Template::from_parts(split_path(text))
    }

    pub(super) fn from_parts<'a>(
        parts: impl IntoIterator<Item = &'a str>,
    ) -> Result<Template, TemplateError> {
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

    pub(super) fn matches(&self, parts: &[&str]) -> bool {
        self.segs.len() == parts.len() && self.segs.iter().zip(parts).all(|(s, p)| s.matches(p))
    }
}

/// Parses one template segment; braces must pair up inside it, without nesting.
pub(super) fn parse_segment(part: &str) -> Result<Seg, TemplateError> {
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
pub(super) fn best_match<T>(
    items: &[T],
    template: impl Fn(&T) -> &Template,
    parts: &[&str],
) -> Option<usize> {
    let mut best: Option<(usize, (usize, usize))> = None;
    for (i, item) in items.iter().enumerate() {
        let t = template(item);
        if t.matches(parts) && best.is_none_or(|(_, s)| t.specificity > s) {
            best = Some((i, t.specificity));
        }
    }
    best.map(|(i, _)| i)
}

pub(super) fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// The path's non-empty segments, capped and truncated; `true` if segments were dropped.
pub(super) fn path_parts(path: &str) -> (Vec<&str>, bool) {
    let mut parts = Vec::new();
    for part in split_path(path) {
        if parts.len() == MAX_SEGMENTS {
            return (parts, true);
        }
        parts.push(&part[..part.floor_char_boundary(MAX_SEGMENT_BYTES)]);
    }
    (parts, false)
}
