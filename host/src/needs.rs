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
    /// It does something in `on-response`.
    pub responses: bool,
}

impl Needs {
    /// Everything: what a guard without the section gets.
    pub const ALL: Needs = Needs {
        headers: true,
        responses: true,
    };

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
            let union = declared.get_or_insert(Needs {
                headers: false,
                responses: false,
            });
            union.headers |= words.headers;
            union.responses |= words.responses;
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
        let mut needs = Needs {
            headers: false,
            responses: false,
        };
        for word in text.split(|c: char| c.is_ascii_whitespace() || c == '\0') {
            match word {
                "" => {}
                "headers" => needs.headers = true,
                "responses" => needs.responses = true,
                other => {
                    return Err(format!(
                        "its {NEEDS_SECTION} section names {other:?}; known: \"headers\", \"responses\" \
                         (built for a newer Vigil?)"
                    ))
                }
            }
        }
        Ok(needs)
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
            (&b"headers responses"[..], (true, true)),
            (b"headers          ", (true, false)),
            (b"responses\0", (false, true)),
            (b"                 ", (false, false)),
        ] {
            let needs = Needs::of_component(&component(&[(NEEDS_SECTION, data)])).unwrap();
            assert_eq!((needs.headers, needs.responses), expected, "{data:?}");
        }
    }

    #[test]
    fn sections_of_several_modules_add_up() {
        let bytes = component(&[(NEEDS_SECTION, b"headers"), (NEEDS_SECTION, b"responses")]);
        assert_eq!(Needs::of_component(&bytes), Ok(Needs::ALL));
    }

    #[test]
    fn a_bad_section_is_refused_with_the_reason() {
        let unknown = Needs::of_component(&component(&[(NEEDS_SECTION, b"headers body")]));
        assert!(unknown.unwrap_err().contains("names \"body\""));
        let binary = Needs::of_component(&component(&[(NEEDS_SECTION, &[0xff, 0xfe])]));
        assert!(binary.unwrap_err().contains("not UTF-8"));
        let huge = Needs::of_component(&component(&[(NEEDS_SECTION, &[b' '; 1000])]));
        assert!(huge.unwrap_err().contains("1000 bytes"));
    }
}
