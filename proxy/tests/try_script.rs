//! `vigil try --script`: requests written by hand through one guard or a whole configuration,
//! with expectations that make it a test.

mod support;

use std::path::{Path, PathBuf};

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-try-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn vigil_try(args: &[&str]) -> (i32, String, String) {
    support::vigil(&[&["try"], args].concat())
}

/// `script` through the rate limiter at [`THROTTLE`], with `more` arguments.
fn throttled(script: &Path, more: &[&str]) -> (i32, String, String) {
    let script = script.to_str().unwrap();
    let args = [
        vigil_guard_artifacts::RATE_LIMIT,
        "--config",
        THROTTLE,
        "--script",
        script,
    ];
    vigil_try(&[&args[..], more].concat())
}

/// Three logins a minute, one back to back.
const THROTTLE: &str = r#"{"rate": 3, "per": "minute", "burst": 1}"#;

/// Logins that a burst-of-one limiter lets through only when 20 s apart.
const LOGINS: &str = "\
# one login, then one too soon, then one after the bucket refilled
- {method: POST, path: /login, body: '{\"user\": \"a\"}', expect: allow}
- at: +1s
  method: POST
  path: /login
  expect: deny 429 by guard
- {at: +20s, method: POST, path: /login, expect: [allow]}
- {method: POST, path: /login, client: 198.51.100.2, expect: allow}
";

#[test]
fn a_script_whose_expectations_hold_passes() {
    let dir = dir("pass");
    let script = write(&dir, "logins.yaml", LOGINS);
    let (code, out, err) = throttled(&script, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].contains("+0ms") && lines[1].ends_with("allow"),
        "{out}"
    );
    assert!(
        lines[2].contains("+1.000s") && lines[2].contains("deny 429 by guard"),
        "{out}"
    );
    assert!(lines[2].contains("retry after 19s"), "{out}");
    assert!(
        lines[3].contains("+21.000s") && lines[3].ends_with("allow"),
        "{out}"
    );
    assert!(
        lines[4].contains("198.51.100.2") && lines[4].ends_with("allow"),
        "{out}"
    );
    assert!(out.contains("4 steps, 4 expectations, 0 not met"), "{out}");
}

#[test]
fn a_step_that_does_not_come_to_its_expectation_fails_with_its_line() {
    let dir = dir("fail");
    // The same script read as JSON lines, with the second step expected to pass.
    let script = write(
        &dir,
        "logins.jsonl",
        "{\"method\": \"POST\", \"path\": \"/login\"}\n\n{\"at\": \"+1s\", \"method\": \"POST\", \"path\": \"/login\", \"expect\": \"allow\"}\n{\"at\": \"+1s\", \"method\": \"POST\", \"path\": \"/login\", \"expect\": [\"deny 403\", \"finding: enumeration\"]}\n",
    );
    let (code, out, err) = throttled(&script, &[]);
    assert_eq!(code, 1, "{out}{err}");
    let file = script.display().to_string();
    assert!(
        out.contains(&format!("{file}:3: expected allow, got deny 429 by guard")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{file}:4: expected deny 403, got deny 429 by guard"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{file}:4: expected finding: enumeration, got no finding"
        )),
        "{out}"
    );
    assert!(out.contains("3 steps, 3 expectations, 3 not met"), "{out}");

    let (code, out, _) = throttled(&script, &["--json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["expectations"], 3);
    assert_eq!(report["mismatches"][0]["line"], 3);
    assert_eq!(report["mismatches"][0]["expected"], "allow");
    assert_eq!(report["steps"][1]["verdict"], "deny");
    assert_eq!(report["steps"][1]["status"], 429);
    assert_eq!(report["steps"][1]["denied_by"], "guard");
    assert_eq!(report["steps"][1]["at_ms"], 1000);
    assert_eq!(report["steps"][0]["status"], 200);
}

#[test]
fn a_malformed_script_is_refused_naming_file_and_line() {
    let dir = dir("malformed");
    for (name, text, line, says) in [
        (
            "typo.yaml",
            "- path: /a\n- path: /b\n  stauts: 404\n",
            3,
            "unknown field `stauts`",
        ),
        (
            "expect.yaml",
            "- path: /a\n  expect: deny quickly\n",
            1,
            "is not an expectation",
        ),
        ("broken.jsonl", "{\"path\": \"/a\"\n", 1, "EOF"),
    ] {
        let script = write(&dir, name, text);
        let (code, out, err) = vigil_try(&[
            vigil_guard_artifacts::RATE_LIMIT,
            "--config",
            THROTTLE,
            "--script",
            script.to_str().unwrap(),
        ]);
        assert_eq!(code, 64, "{name}: {out}{err}");
        assert!(
            err.contains(&format!("{}:{line}: ", script.display())) && err.contains(says),
            "{name}: {err}"
        );
        assert!(out.is_empty(), "nothing runs: {out}");
    }
    let (code, _, err) = vigil_try(&["--script", "/nonexistent/steps.yaml", "--config", "x"]);
    assert_eq!(code, 64);
    assert!(
        err.contains("/nonexistent/steps.yaml:0: cannot read the script"),
        "{err}"
    );
    let (code, _, err) = vigil_try(&["--count", "1"]);
    assert_eq!(code, 64);
    assert!(err.contains("nothing to try"), "{err}");
}

#[test]
fn a_script_goes_through_the_configurations_identity_routes_and_bans() {
    let dir = dir("config");
    let config = write(
        &dir,
        "vigil.toml",
        &format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [identity]\nkey = \"header:x-api-key\"\n\
             [[guard]]\nname = \"enumeration\"\nmodule = \"{}\"\n\
             config = {{ routes = [\"GET /users/{{id}}\"], max_distinct = 2 }}\n\
             [[guard]]\nname = \"rate-limit\"\nmodule = \"{}\"\nban = \"1h\"\n\
             config = {{ rate = 2, per = \"minute\" }}\n",
            vigil_guard_artifacts::ENUMERATION,
            vigil_guard_artifacts::RATE_LIMIT
        ),
    );
    // k1 walks through user ids; k2, from the same address, is another client; k3 goes over
    // the rate and is banned for the hour.
    let script = write(
        &dir,
        "attacks.yaml",
        "\
- {path: /users/1, headers: {x-api-key: k1}, expect: allow}
- {at: +1s, path: /users/2, headers: {x-api-key: k1}, expect: allow}
- {at: +1m, path: /users/3, headers: {x-api-key: k1}, expect: [deny 429 by enumeration, \"finding: enumeration\"]}
- {path: /users/3, headers: {x-api-key: k2}, expect: allow}
- {path: /cart, headers: {x-api-key: k3}}
- {path: /cart, headers: {x-api-key: k3}}
- {path: /cart, headers: {x-api-key: k3}, expect: [deny 429 by rate-limit, \"finding: client-banned\"]}
- {at: +10m, path: /cart, headers: {x-api-key: k3}, expect: deny 403 by ban:rate-limit}
",
    );
    let (code, out, err) = vigil_try(&[
        "--config",
        config.to_str().unwrap(),
        "--script",
        script.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps[0]["client"], "k1", "the key comes from the header");
    assert_eq!(steps[0]["route"], "/users/{id}");
    assert_eq!(steps[3]["client"], "k2");
    assert!(
        steps[7]["reason"].as_str().unwrap().contains("rate"),
        "the ban's reason is the denial's: {}",
        steps[7]
    );
    assert_eq!(report["expectations"], 8);
    assert_eq!(report["mismatches"], serde_json::json!([]));

    // Without a script, --count requests of the flags go through the configuration too.
    let (code, out, err) = vigil_try(&[
        "--config",
        config.to_str().unwrap(),
        "--path",
        "/cart",
        "--count",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "a header, three steps, the ban's finding: {out}"
    );
    assert!(lines[3].contains("deny 429 by rate-limit"), "{out}");
    assert!(lines[4].contains("finding client-banned"), "{out}");
}
