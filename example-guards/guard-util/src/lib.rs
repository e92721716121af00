//! Helpers shared by the stock guards: the duration syntax of their configurations, and
//! configuration values that are parsed once when the configuration is read.

use serde::{Deserialize, Deserializer};
use std::time::Duration;
use vigil_guest::route::Pattern;
use vigil_guest::Request;

/// Parses a duration in the configuration syntax (`"500ms"`, `"15m"`, ...). Zero is refused
/// because every window or delay of these guards must be able to hold something.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match vigil_guest::duration::parse(text)? {
        Duration::ZERO => Err("must be longer than 0".to_string()),
        duration => Ok(duration),
    }
}

/// Values written as text in a configuration.
pub trait FromText: Sized {
    /// Parses the text; the error does not name the field, [`Checked::check`] adds it.
    fn from_text(text: &str) -> Result<Self, String>;
}

impl FromText for Duration {
    fn from_text(text: &str) -> Result<Self, String> {
        parse_duration(text)
    }
}

impl FromText for Pattern {
    fn from_text(text: &str) -> Result<Self, String> {
        Pattern::parse(text).map_err(|e| e.to_string())
    }
}

/// A configuration string parsed when the configuration is read, so requests never parse it
/// again. Deserializing never fails on a bad value: `check_config` reports it through
/// [`Checked::check`], whose message starts with the field's name, which serde's would not.
pub struct Checked<T> {
    text: String,
    value: Result<T, String>,
}

/// A duration such as `"15m"`.
pub type DurationText = Checked<Duration>;
/// A route pattern such as `"GET /users/{id}"`.
pub type PatternText = Checked<Pattern>;

impl<T: FromText> Checked<T> {
    /// A value parsed from `text` (for defaults).
    pub fn new(text: &str) -> Self {
        Checked {
            text: text.to_string(),
            value: T::from_text(text),
        }
    }
}

impl<T> Checked<T> {
    /// The text as written in the configuration.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed value, or `"<field>: <why not>"`.
    pub fn check(&self, field: &str) -> Result<&T, String> {
        self.value.as_ref().map_err(|e| format!("{field}: {e}"))
    }

    /// The parsed value.
    ///
    /// # Panics
    ///
    /// When the text did not parse; `init` refuses such a configuration through `check`
    /// before any request is seen, so this only fires on a guard bug.
    pub fn get(&self) -> &T {
        match &self.value {
            Ok(value) => value,
            Err(e) => panic!("configuration value {:?} used unchecked: {e}", self.text),
        }
    }
}

impl<'de, T: FromText> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Checked::new(&text))
    }
}

impl Checked<Pattern> {
    /// Whether the request matches the pattern.
    pub fn matches(&self, req: &Request) -> bool {
        self.get().matches(req.method, req.route_or_path())
    }
}

/// Checks every pattern of a list, naming the field and the entry's index.
pub fn check_patterns(field: &str, patterns: &[PatternText]) -> Result<(), String> {
    for (i, p) in patterns.iter().enumerate() {
        p.check(&format!("{field}[{i}]"))?;
    }
    Ok(())
}

/// The separator of the parts of state keys: it cannot occur in a header value, a client key
/// or a path, so two different tuples never make the same key.
pub const SEP: char = '\n';

/// A state key of these parts, joined by [`SEP`]. Cheaper than `format!` on every request.
pub fn key(parts: &[&str]) -> String {
    parts.join("\n")
}
