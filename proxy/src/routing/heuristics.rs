//! Templates guessed from a path when no configured or documented one matches: segments that look
//! like identifiers (numbers, UUIDs, long hex, tokens, e-mail addresses) become parameters.

pub(super) fn heuristic_template(parts: &[&str], capped: bool) -> String {
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
