//! Helpers shared by the stock guards: the duration syntax of their configurations,
//! configuration values that are parsed once when the configuration is read, glob patterns
//! over paths, and the decoding of query strings.

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

/// A text pattern in which `*` stands for any run of characters (none included), matched
/// without regard to ASCII case: the upstreams these guards stand before often ignore case
/// in paths and header values, so a spelling they accept must match too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    /// The literal pieces between the `*`s, lower-cased.
    pieces: Vec<String>,
}

impl Glob {
    /// The pattern `text`; `*` is the only special character.
    pub fn new(text: &str) -> Glob {
        Glob {
            pieces: text.split('*').map(str::to_ascii_lowercase).collect(),
        }
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let text = text.as_bytes();
        let (first, rest) = self.pieces.split_first().expect("split yields a piece");
        let Some(mut tail) = strip_prefix_ignore_case(text, first.as_bytes()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return tail.is_empty();
        };
        // Each middle piece at its leftmost place leaves the most room for the rest.
        for piece in middle {
            match find_ignore_case(tail, piece.as_bytes()) {
                Some(at) => tail = &tail[at + piece.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len()
            && tail[tail.len() - last.len()..].eq_ignore_ascii_case(last.as_bytes())
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &text[prefix.len()..])
}

fn find_ignore_case(text: &[u8], piece: &[u8]) -> Option<usize> {
    if piece.is_empty() {
        return Some(0);
    }
    text.windows(piece.len())
        .position(|w| w.eq_ignore_ascii_case(piece))
}

/// The values of the query parameter `name` in `query` (without the `?`), each decoded as
/// `application/x-www-form-urlencoded`: `%XX` is a byte, `+` a space. Keys are decoded too and
/// compared without regard to ASCII case, and every occurrence of a repeated key is a value,
/// because upstreams differ on which of them they read (the first, the last, all) and on
/// whether `Author` is `author`: a guard that reads one spelling or one occurrence could be
/// walked past with another. Pairs are separated by `&`.
pub fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    query.split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        form_decode(key.as_bytes())
            .eq_ignore_ascii_case(name)
            .then(|| form_decode(value.as_bytes()))
    })
}

/// `application/x-www-form-urlencoded` decoding, once, as an upstream decodes: `+` is a
/// space, `%XX` a byte, a `%` without two hex digits stays. Bytes that are not UTF-8 are
/// kept apart as `%XX` escapes (upper-case), so two different invalid values never read as
/// one.
pub fn form_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    text_of(&out)
}

/// `bytes` as text: UTF-8 as it is, each byte of an invalid sequence as a `%XX` escape.
pub fn text_of(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Two sliding-window counts in one counter, so that one call reads both: a request adds 1,
/// a marked one (a 404, a client error) adds [`Tally::MARK`] as well. The requests of a
/// window stay far below that.
pub struct Tally(pub i64);

impl Tally {
    /// What a marked request adds.
    pub const MARK: i64 = 1 << 32;

    /// The requests counted. A request counted and then taken back may each fall on either
    /// side of the window's edge, so this can be briefly negative.
    pub fn requests(&self) -> i64 {
        let low = self.0.rem_euclid(Self::MARK);
        if low >= Self::MARK / 2 {
            low - Self::MARK
        } else {
            low
        }
    }

    /// The marked requests.
    pub fn marked(&self) -> i64 {
        (self.0 - self.requests()) / Self::MARK
    }
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
    fn a_tally_holds_requests_and_marks_apart() {
        let tally = |requests: i64, marked: i64| {
            let t = Tally(requests + marked * Tally::MARK);
            (t.requests(), t.marked())
        };
        assert_eq!(tally(0, 0), (0, 0));
        assert_eq!(tally(12, 7), (12, 7));
        assert_eq!(tally(3, 0), (3, 0));
        assert_eq!(tally(0, 5), (0, 5));
        // A take-back whose request already left the window.
        assert_eq!(tally(-1, 4), (-1, 4));
        assert_eq!(tally(-1, 0), (-1, 0));
        assert_eq!(tally(1_000_000_000, 1_000_000), (1_000_000_000, 1_000_000));
    }

    #[test]
    fn globs_match_whole_texts_in_any_case() {
        let g = Glob::new("/login*");
        assert!(g.matches("/login") && g.matches("/Login?error=1") && g.matches("/login/"));
        assert!(!g.matches("/signin") && !g.matches("/x/login"));
        let g = Glob::new("*.map");
        assert!(g.matches("main.js.map") && g.matches(".MAP"));
        assert!(!g.matches("main.js.map.txt") && !g.matches("map"));
        let g = Glob::new("apple-touch-icon*.png");
        assert!(g.matches("apple-touch-icon.png") && g.matches("apple-touch-icon-120x120.png"));
        assert!(!g.matches("apple-touch-icon.png.php"));
        let g = Glob::new("*a*b*");
        assert!(g.matches("ab") && g.matches("xxaxxbxx") && !g.matches("ba"));
        assert!(Glob::new("*").matches("") && Glob::new("").matches(""));
        assert!(!Glob::new("").matches("x"));
        // The last piece may not reuse what a middle piece took.
        assert!(!Glob::new("*ab*ba").matches("aba"));
    }

    #[test]
    fn query_values_are_decoded_and_every_spelling_of_the_key_counts() {
        let values = |q: &str| query_values(q, "author").collect::<Vec<_>>();
        assert_eq!(values("author=1"), ["1"]);
        assert_eq!(values("x=0&author=1&author=2"), ["1", "2"]);
        assert_eq!(values("%61uthor=%31&AUTHOR=2&author"), ["1", "2", ""]);
        assert_eq!(values("author=a+b&author=a%20b"), ["a b", "a b"]);
        assert_eq!(values("authors=1&xauthor=2&=3"), Vec::<String>::new());
        // Decoded once, as the upstream decodes: `%2531` is the text `%31`.
        assert_eq!(values("author=%2531&author=%zz"), ["%31", "%zz"]);
        assert_eq!(values("author=%ff&author=%fe"), ["%FF", "%FE"]);
        assert_eq!(values("author=caf%C3%A9"), ["café"]);
    }

    #[test]
    fn text_keeps_invalid_bytes_apart() {
        assert_eq!(text_of(b"abc"), "abc");
        assert_eq!(text_of(b"a\xffb\xc3"), "a%FFb%C3");
        assert_eq!(text_of("é".as_bytes()), "é");
    }

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
