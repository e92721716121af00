//! The duration syntax shared by `vigil.toml` and guard configurations: a whole number and a
//! unit, `ms`, `s`, `m`, `h` or `d` (`"250ms"`, `"10s"`, `"15m"`, `"1h"`, `"2d"`).

use std::time::Duration;

/// What a valid duration looks like, for error messages.
pub const EXPECTED: &str =
    "a duration such as \"250ms\", \"10s\", \"15m\" or \"1h\" (units: ms, s, m, h, d)";

/// Parses a duration; the error says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("expected {EXPECTED}, got {text:?}");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(bad)?;
    let (digits, unit) = trimmed.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(" 10s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn errors_say_what_was_expected() {
        for bad in ["", "10", "s", "10 seconds", "-1s", "1.5s", "10S"] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("expected a duration such as"), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(parse("99999999999999999d")
            .unwrap_err()
            .contains("too long"));
    }
}
