//! The duration syntax of `vigil.toml` and guard configurations (`vigil_guest::duration`).
//!
//! Input: the text of a duration, e.g. `15m`.
//!
//! Properties: what parses is digits and a known unit, a whole number of milliseconds; written
//! back as milliseconds, and in every unit that divides it, it parses to the same duration;
//! text after the unit is refused; every error quotes the text.

use vigil_guest::duration::parse;

const UNITS: [(&str, u128); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses the input as a duration and checks what the parser promises.
pub fn fuzz(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let duration = match parse(text) {
        Ok(duration) => duration,
        Err(message) => {
            assert!(
                message.contains(&format!("{text:?}")),
                "{text:?}: {message}"
            );
            return;
        }
    };
    let unit = text.trim().trim_start_matches(|c: char| c.is_ascii_digit());
    assert!(
        UNITS.iter().any(|(u, _)| *u == unit),
        "{text:?}: unit {unit:?}"
    );
    assert_eq!(
        duration.subsec_nanos() % 1_000_000,
        0,
        "{text:?}: {duration:?}"
    );
    let ms = duration.as_millis();
    for (unit, unit_ms) in UNITS {
        if ms % unit_ms == 0 {
            let rendered = format!("{}{unit}", ms / unit_ms);
            assert_eq!(parse(&rendered), Ok(duration), "{text:?} as {rendered:?}");
        }
    }
    assert_eq!(parse(&format!(" {text}\t")), Ok(duration), "{text:?}");
    assert!(
        parse(&format!("{text}x")).is_err(),
        "{text:?} followed by x"
    );
}
