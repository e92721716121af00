//! Character classes of HTTP's grammar that more than one parser needs.

/// RFC 9110 `tchar`: a character of a token (field names, protocol names, parameter names).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_letters_digits_and_rfc_9110_s_marks() {
        for b in b"aZ09!#$%&'*+-.^_`|~" {
            assert!(is_tchar(*b), "{}", *b as char);
        }
        for b in b" \t\"(),/:;<=>?@[\\]{}\x7f" {
            assert!(!is_tchar(*b), "{}", *b as char);
        }
    }
}
