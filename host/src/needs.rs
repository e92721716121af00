//! What a guard declares it uses, read from its `vigil-guard-needs` custom section: what it
//! does not use is neither copied into it (header lists) nor called (`on-response`).

use wasmparser::{Parser, Payload};

/// The custom section a guard declares its needs in (see `guard.wit`).
pub const NEEDS_SECTION: &str = "vigil-guard-needs";

/// Largest section accepted: the words fit many times over; anything larger is not a declaration.
const MAX_SECTION_BYTES: usize = 256;

/// The parts of the guard contract a guard uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// It reads header fields of requests and responses.
    pub headers: bool,
    /// The response statuses its `on-response` does something for; none means it is never
    /// called.
    pub responses: Statuses,
}

impl Needs {
    /// Everything: what a guard without the section gets.
    pub const ALL: Needs = Needs {
        headers: true,
        responses: Statuses::ALL,
    };

    /// Nothing: headers are not copied and `on-response` is never called.
    pub const NONE: Needs = Needs {
        headers: false,
        responses: Statuses::NONE,
    };

    /// Whether `on-response` is called for a response with this status.
    pub fn observes(&self, status: u16) -> bool {
        self.responses.contains(status)
    }

    /// The needs declared in a component (in any of its core modules); [`Needs::ALL`] when
    /// none declares any. Errors say what is wrong with the section.
    pub fn of_component(bytes: &[u8]) -> Result<Needs, String> {
        let mut declared: Option<Needs> = None;
        for payload in Parser::new(0).parse_all(bytes) {
            let Ok(Payload::CustomSection(section)) = payload else {
                // Malformed binaries are reported by the compiler, with a better message.
                continue;
            };
            if section.name() != NEEDS_SECTION {
                continue;
            }
            let words = Needs::parse(section.data())?;
            let union = declared.get_or_insert(Needs::NONE);
            union.headers |= words.headers;
            union.responses = union.responses.union(words.responses);
        }
        Ok(declared.unwrap_or(Needs::ALL))
    }

    fn parse(data: &[u8]) -> Result<Needs, String> {
        if data.len() > MAX_SECTION_BYTES {
            return Err(format!(
                "its {NEEDS_SECTION} section is {} bytes; at most {MAX_SECTION_BYTES} are accepted",
                data.len()
            ));
        }
        let text = std::str::from_utf8(data)
            .map_err(|_| format!("its {NEEDS_SECTION} section is not UTF-8 text"))?;
        let mut needs = Needs::NONE;
        for word in text.split(|c: char| c.is_ascii_whitespace() || c == '\0') {
            match word.split_once('=') {
                _ if word.is_empty() => {}
                None if word == "headers" => needs.headers = true,
                None if word == "responses" => needs.responses = Statuses::ALL,
                Some(("responses", list)) => {
                    let statuses = Statuses::parse(list).map_err(|e| {
                        format!("its {NEEDS_SECTION} section says {word:?}: {e}")
                    })?;
                    needs.responses = needs.responses.union(statuses);
                }
                _ => {
                    return Err(format!(
                        "its {NEEDS_SECTION} section names {word:?}; known: \"headers\", \"responses\", \
                         \"responses=STATUS,...\" (built for a newer Vigil?)"
                    ))
                }
            }
        }
        Ok(needs)
    }
}

/// The header fields a guard is given: what its section declares, narrowed by the names its
/// `init` passed to `reads-headers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderFields {
    /// None: its header lists are empty.
    None,
    /// Only the fields with these names (lower-case, sorted, no repeats).
    Named(Box<[String]>),
    /// Every field.
    All,
}

impl HeaderFields {
    /// What a guard with these needs gets after declaring `declared` (lower-case, sorted, no
    /// repeats) from `init`, or nothing.
    pub fn of(needs: Needs, declared: Option<Vec<String>>) -> HeaderFields {
        match declared {
            _ if !needs.headers => HeaderFields::None,
            None => HeaderFields::All,
            Some(names) if names.is_empty() => HeaderFields::None,
            Some(names) => HeaderFields::Named(names.into_boxed_slice()),
        }
    }

    /// Whether it gets any field at all.
    pub fn any(&self) -> bool {
        !matches!(self, HeaderFields::None)
    }

    /// The fields either gets: what a request must carry for both.
    pub(crate) fn union(&self, other: &HeaderFields) -> HeaderFields {
        match (self, other) {
            (HeaderFields::All, _) | (_, HeaderFields::All) => HeaderFields::All,
            (HeaderFields::None, fields) | (fields, HeaderFields::None) => fields.clone(),
            (HeaderFields::Named(one), HeaderFields::Named(other)) => {
                let mut names: Vec<String> = one.iter().chain(other.iter()).cloned().collect();
                names.sort_unstable();
                names.dedup();
                HeaderFields::Named(names.into_boxed_slice())
            }
        }
    }

    /// Whether it gets the field named `name` (lower-case, as HTTP/1 names reach the proxy).
    pub fn includes(&self, name: &str) -> bool {
        match self {
            HeaderFields::None => false,
            HeaderFields::Named(names) => names.binary_search_by(|n| n.as_str().cmp(name)).is_ok(),
            HeaderFields::All => true,
        }
    }
}

/// A set of HTTP response statuses (100 to 999).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Statuses {
    bits: [u64; 16],
}

impl Statuses {
    /// Every status.
    pub const ALL: Statuses = Statuses {
        bits: [u64::MAX; 16],
    };

    /// No status.
    pub const NONE: Statuses = Statuses { bits: [0; 16] };

    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        let status = usize::from(status);
        self.bits
            .get(status / 64)
            .is_some_and(|word| word & (1 << (status % 64)) != 0)
    }

    /// Whether the set holds no status.
    pub fn is_empty(&self) -> bool {
        self.bits == Statuses::NONE.bits
    }

    /// Every status in either set.
    pub(crate) fn union(self, other: Statuses) -> Statuses {
        let mut bits = self.bits;
        for (mine, theirs) in bits.iter_mut().zip(other.bits) {
            *mine |= theirs;
        }
        Statuses { bits }
    }

    fn insert(&mut self, status: u16) {
        let status = usize::from(status);
        self.bits[status / 64] |= 1 << (status % 64);
    }

    /// Parses a comma-separated list of statuses (`404`) and classes (`4xx`).
    fn parse(list: &str) -> Result<Statuses, String> {
        let mut set = Statuses::NONE;
        for item in list.split(',') {
            let bad = || format!("{item:?} is not a status (100 to 999) or a class such as 4xx");
            match item.as_bytes() {
                [class @ b'1'..=b'9', b'x', b'x'] => {
                    let first = u16::from(class - b'0') * 100;
                    (first..first + 100).for_each(|status| set.insert(status));
                }
                [b'1'..=b'9', b'0'..=b'9', b'0'..=b'9'] => {
                    set.insert(item.parse().map_err(|_| bad())?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(set)
    }
}

impl std::fmt::Display for Statuses {
    /// `all`, `none`, or the statuses, whole classes written as `4xx`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if (100..1000).all(|s| self.contains(s)) {
            return f.write_str("all");
        }
        let mut items = Vec::new();
        for class in 1..10u16 {
            let statuses = class * 100..class * 100 + 100;
            if statuses.clone().all(|s| self.contains(s)) {
                items.push(format!("{class}xx"));
            } else {
                items.extend(
                    statuses
                        .filter(|s| self.contains(*s))
                        .map(|s| s.to_string()),
                );
            }
        }
        if items.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&items.join(","))
    }
}

impl std::fmt::Debug for Statuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Statuses({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component holding a core module with these custom sections.
    fn component(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut module = wasm_encoder::Module::new();
        for (name, data) in sections {
            module.section(&wasm_encoder::CustomSection {
                name: (*name).into(),
                data: (*data).into(),
            });
        }
        let mut component = wasm_encoder::Component::new();
        component.section(&wasm_encoder::ModuleSection(&module));
        component.finish()
    }

    #[test]
    fn without_the_section_a_guard_gets_everything() {
        let bytes = component(&[("producers-like", b"anything")]);
        assert_eq!(Needs::of_component(&bytes), Ok(Needs::ALL));
    }

    #[test]
    fn declared_words_are_read_with_padding_and_nul_bytes() {
        for (data, expected) in [
            (&b"headers responses"[..], (true, "all")),
            (b"headers          ", (true, "none")),
            (b"responses\0", (false, "all")),
            (b"                 ", (false, "none")),
            (b"responses=404   ", (false, "404")),
            (b"headers responses=401,403,5xx\0\0", (true, "401,403,5xx")),
        ] {
            let needs = Needs::of_component(&component(&[(NEEDS_SECTION, data)])).unwrap();
            let read = (needs.headers, needs.responses.to_string());
            assert_eq!(read, (expected.0, expected.1.to_string()), "{data:?}");
        }
    }

    #[test]
    fn on_response_is_called_only_for_the_declared_statuses() {
        let needs = Needs::parse(b"responses=404,5xx").unwrap();
        assert!(needs.observes(404));
        assert!(needs.observes(500) && needs.observes(599));
        assert!(!needs.observes(200) && !needs.observes(403) && !needs.observes(600));
        assert!(Needs::ALL.observes(200) && Needs::ALL.observes(999));
        assert!(!Needs::NONE.observes(404));
        let both = Needs::of_component(&component(&[
            (NEEDS_SECTION, b"responses=404"),
            (NEEDS_SECTION, b"responses=429"),
        ]))
        .unwrap();
        assert_eq!(both.responses.to_string(), "404,429");
    }

    #[test]
    fn sections_of_several_modules_add_up() {
        let bytes = component(&[(NEEDS_SECTION, b"headers"), (NEEDS_SECTION, b"responses")]);
        assert_eq!(Needs::of_component(&bytes), Ok(Needs::ALL));
        let some_and_all = component(&[
            (NEEDS_SECTION, b"responses=404"),
            (NEEDS_SECTION, b"responses"),
        ]);
        assert_eq!(
            Needs::of_component(&some_and_all).map(|n| n.responses),
            Ok(Statuses::ALL)
        );
    }

    #[test]
    fn a_bad_section_is_refused_with_the_reason() {
        let unknown = Needs::of_component(&component(&[(NEEDS_SECTION, b"headers body")]));
        assert!(unknown.unwrap_err().contains("names \"body\""));
        let binary = Needs::of_component(&component(&[(NEEDS_SECTION, &[0xff, 0xfe])]));
        assert!(binary.unwrap_err().contains("not UTF-8"));
        let huge = Needs::of_component(&component(&[(NEEDS_SECTION, &[b' '; 1000])]));
        assert!(huge.unwrap_err().contains("1000 bytes"));
        for (data, named) in [
            (&b"responses=4xy"[..], "\"4xy\" is not a status"),
            (b"responses=99", "\"99\" is not a status"),
            (b"responses=404,", "\"\" is not a status"),
            (b"responses=0xx", "\"0xx\" is not a status"),
            (b"headers=yes", "names \"headers=yes\""),
        ] {
            let error = Needs::of_component(&component(&[(NEEDS_SECTION, data)])).unwrap_err();
            assert!(error.contains(named), "{data:?}: {error}");
        }
    }

    #[test]
    fn named_header_fields_narrow_but_never_widen_the_declaration() {
        let names = |list: &[&str]| Some(list.iter().map(|n| n.to_string()).collect());
        let named = HeaderFields::of(Needs::ALL, names(&["accept", "x-api-key"]));
        assert!(named.includes("x-api-key") && named.includes("accept"));
        assert!(!named.includes("user-agent") && !named.includes("x-api"));
        assert_eq!(HeaderFields::of(Needs::ALL, names(&[])), HeaderFields::None);
        assert_eq!(HeaderFields::of(Needs::ALL, None), HeaderFields::All);
        assert_eq!(
            HeaderFields::of(Needs::NONE, names(&["x-api-key"])),
            HeaderFields::None,
            "a guard that declared no headers gets none, whatever init says"
        );
        assert!(!HeaderFields::None.any() && named.any() && HeaderFields::All.includes("any"));
    }
}
