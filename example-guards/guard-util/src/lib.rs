//! Helpers shared by the stock guards: the duration syntax of their configurations, and
//! configuration values that are parsed once when the configuration is read.

use serde::{Deserialize, Deserializer};
use std::cell::Cell;
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

thread_local! {
    static KEY: Cell<String> = const { Cell::new(String::new()) };
}

/// Calls `use_key` with the state key of these parts, joined by [`SEP`].
pub fn with_key<R>(parts: &[&str], use_key: impl FnOnce(&str) -> R) -> R {
    with_key_written(
        |key| {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    key.push(SEP);
                }
                key.push_str(part);
            }
        },
        use_key,
    )
}

/// Calls `use_key` with the state key `write` puts together. Keys are made on every request,
/// and an allocation for each is a measurable share of a guard's work, so they are written
/// into one buffer that every key reuses.
pub fn with_key_written<R>(write: impl FnOnce(&mut String), use_key: impl FnOnce(&str) -> R) -> R {
    // Taken out rather than borrowed: a key made inside `use_key` gets a buffer of its own
    // instead of a panic.
    let mut key = KEY.take();
    key.clear();
    write(&mut key);
    let result = use_key(&key);
    KEY.set(key);
    result
}

/// Appends `n` in decimal, for the index of a rule in a key.
pub fn push_decimal(key: &mut String, n: usize) {
    // By hand: `write!` costs a guard several times as much as the rest of the key.
    if n >= 10 {
        push_decimal(key, n / 10);
    }
    key.push(char::from(b'0' + (n % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_joined_by_the_separator() {
        assert_eq!(with_key(&["a", "b c", ""], str::to_string), "a\nb c\n");
        assert_eq!(with_key(&[], str::to_string), "");
    }

    #[test]
    fn a_key_made_while_another_is_in_use_leaves_it_intact() {
        let (outer, inner) = with_key(&["outer", "1"], |outer| {
            let inner = with_key(&["inner"], str::to_string);
            (outer.to_string(), inner)
        });
        assert_eq!((outer.as_str(), inner.as_str()), ("outer\n1", "inner"));
        // The buffer is reused afterwards: nothing of the last key leaks into the next.
        assert_eq!(with_key(&["x"], str::to_string), "x");
    }

    #[test]
    fn written_keys_take_decimals() {
        let key = with_key_written(
            |k| {
                k.push_str("rule");
                k.push(SEP);
                push_decimal(k, 12);
                k.push(SEP);
                push_decimal(k, 0);
                k.push(SEP);
                push_decimal(k, usize::MAX);
            },
            str::to_string,
        );
        assert_eq!(key, format!("rule\n12\n0\n{}", usize::MAX));
    }
}
