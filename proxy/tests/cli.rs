//! The `vigil` command line: exit codes and messages a user sees.

use std::process::Command;

fn vigil(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_guard_accepts_a_good_guard() {
    let (code, out, err) = vigil(&[
        "check-guard",
        vigil_guard_artifacts::LOGIN_THROTTLE,
        "--config",
        r#"{"per_minute": 10}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok: guard \"guard\""), "{out}");
}

#[test]
fn check_guard_names_the_missing_file() {
    let (code, _, err) = vigil(&["check-guard", "/no/such/guard.wasm"]);
    assert_eq!(code, 64);
    assert!(err.contains("cannot read /no/such/guard.wasm"), "{err}");
}

#[test]
fn check_guard_reports_a_bad_config() {
    let (code, _, err) = vigil(&[
        "check-guard",
        vigil_guard_artifacts::LOGIN_THROTTLE,
        "--config",
        r#"{"per_minut": 1}"#,
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("unknown field `per_minut`"), "{err}");
}

#[test]
fn bad_route_pattern_is_named() {
    let (code, _, err) = vigil(&[
        "check-guard",
        vigil_guard_artifacts::ALLOW_ALL,
        "--route",
        "login",
    ]);
    assert_eq!(code, 64);
    assert!(
        err.contains("--route") && err.contains("\"login\""),
        "{err}"
    );
}

#[test]
fn try_shows_the_rate_limit_kicking_in() {
    let (code, out, err) = vigil(&[
        "try",
        vigil_guard_artifacts::LOGIN_THROTTLE,
        "--config",
        r#"{"per_minute": 6, "burst": 2}"#,
        "--method",
        "POST",
        "--path",
        "/login",
        "--count",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1].contains("allow") && lines[2].contains("allow"),
        "{out}"
    );
    assert!(
        lines[3].contains("deny")
            && lines[3].contains("429")
            && lines[3].contains("retry after 10s"),
        "{out}"
    );
}
