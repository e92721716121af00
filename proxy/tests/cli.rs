//! The `vigil` command line: exit codes and messages a user sees.

#[path = "../../tests/src/ports.rs"]
mod ports;
mod support;

use ports::free_port;
use std::process::Command;
use support::vigil;

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
    assert!(
        out.contains("exports the vigil:guard@0.1.0 `packed-guard` world"),
        "{out}"
    );
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

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vigil.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_validates_config_and_guards() {
    let good = write_config(
        "good",
        &format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[guard]]\nname = \"t\"\nmodule = \"{}\"\nconfig = {{ per_minute = 5 }}\n",
            vigil_guard_artifacts::LOGIN_THROTTLE
        ),
    );
    let (code, out, err) = vigil(&["check", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is valid; 1 guard(s) loaded"), "{out}");

    let bad_guard = write_config(
        "badguard",
        &format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[guard]]\nname = \"t\"\nmodule = \"{}\"\nconfig = {{ per_minute = -1 }}\n",
            vigil_guard_artifacts::LOGIN_THROTTLE
        ),
    );
    let (code, _, err) = vigil(&["check", "--config", bad_guard.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(
        err.contains("guard \"t\": init rejected the configuration: per_minute"),
        "{err}"
    );

    let bad_key = write_config(
        "badkey",
        "[upstream]\nurl = \"http://127.0.0.1:1\"\nretries = 3\n",
    );
    let (code, _, err) = vigil(&["check", "--config", bad_key.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(
        err.contains("vigil.toml") && err.contains("unknown field `retries`"),
        "{err}"
    );
}

#[test]
fn run_serves_until_sigterm_then_exits_zero() {
    let (public, admin) = (free_port(), free_port());
    let config = write_config(
        "run",
        &format!(
            "[listen]\naddress = \"127.0.0.1:{public}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\
             ready_requires_upstream = false\n[upstream]\nurl = \"http://127.0.0.1:1\"\n"
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config", config.to_str().unwrap()])
        .spawn()
        .unwrap();
    eventually("readiness", || {
        get(admin, "/readyz").starts_with("HTTP/1.1 200")
    });
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Reads the whole answer to `GET path` from a loopback port (the admin listener, or the
/// public one).
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn sighup_and_file_changes_reload_the_guards() {
    let (public, admin) = (free_port(), free_port());
    let config = |guard: &str| {
        format!(
            "[listen]\naddress = \"127.0.0.1:{public}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\
             [upstream]\nurl = \"http://127.0.0.1:1\"\n[[guard]]\nname = \"{guard}\"\nmodule = \"{}\"\n",
            vigil_guard_artifacts::ALLOW_ALL
        )
    };
    let path = write_config("reload", &config("first"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config", path.to_str().unwrap()])
        .spawn()
        .unwrap();
    eventually("the first guard", || {
        get(admin, "/guards").contains("\"first\"")
    });

    // Change the file and signal at once; either trigger must end with the new chain.
    std::fs::write(&path, config("second")).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    eventually("the reload", || {
        get(admin, "/guards").contains("\"second\"")
    });

    // No signal: the file watcher notices the change by itself.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(&path, config("third")).unwrap();
    eventually("the file watcher", || {
        get(admin, "/guards").contains("\"third\"")
    });

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn demo_blocks_each_attack_with_the_right_guard_and_no_normal_request() {
    // The built-in guards: what `vigil demo` runs where no guard was ever compiled.
    let (code, out, err) = vigil(&["demo"]);
    assert_eq!(code, 0, "{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}: {out}"))
            .to_string()
    };
    let blocked = |line: &str| {
        line.split_whitespace()
            .rev()
            .find_map(|w| w.parse::<u32>().ok())
    };
    let normal = line("normal traffic");
    assert!(
        normal.contains(" 50 ") && normal.trim_end().ends_with("0  -"),
        "false positives: {normal}"
    );
    for (attack, guard) in [
        ("credential stuffing", "credential-stuffing"),
        ("ID enumeration", "enumeration"),
        ("checkout without cart", "sequence"),
        ("burst over the rate", "rate-limit"),
    ] {
        let l = line(attack);
        assert!(
            l.contains(&format!(" {guard} (")),
            "{attack} blocked by {guard}: {l}"
        );
        assert!(blocked(&l).is_some());
    }
    assert!(line("checkout without cart").contains("409 sequence"));
    assert!(
        out.contains("Endpoints reached from public clients"),
        "{out}"
    );
    assert!(
        line("POST /checkout").trim_end().ends_with("10"),
        "only the 10 real checkouts got through: {out}"
    );
    assert!(
        line("internal-reached-publicly").contains("GET /admin/stats"),
        "the inventory reports the public request to the admin route: {out}"
    );
}

#[test]
fn demo_without_built_guards_says_how_to_build_them() {
    let (code, _, err) = vigil(&["demo", "--guards", "/nonexistent/guards"]);
    assert_eq!(code, 64);
    assert!(
        err.contains("rate_limit.wasm not found in /nonexistent/guards"),
        "{err}"
    );
    assert!(
        err.contains("cargo build -p vigil-guard-artifacts")
            && err.contains("leave out --guards to run the built-in ones"),
        "{err}"
    );
}

#[test]
fn start_up_errors_name_the_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let config = write_config(
        "busy",
        &format!(
            "[listen]\naddress = \"{busy}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n",
            free_port()
        ),
    );
    let (code, _, err) = vigil(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(
        err.contains(&format!("cannot listen on {busy} (listen.address)")),
        "{err}"
    );

    let config = write_config(
        "nospec",
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[api]\nspec = \"missing-openapi.yaml\"\n",
    );
    let (code, _, err) = vigil(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(
        err.contains("api.spec") && err.contains("missing-openapi.yaml"),
        "{err}"
    );
}

/// A fresh directory holding `collector.toml` with `text`.
fn write_collector_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("collector.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const COLLECTOR_TOKEN: &str = "[[token]]\ntoken = \"0123456789abcdef\"\n";

#[test]
fn collect_check_validates_without_serving() {
    let config = write_collector_config(
        "collect-check",
        &format!(
            "{COLLECTOR_TOKEN}[api]\naddress = \"127.0.0.1:9101\"\n\
             [vulnerabilities]\nknown = [\"known.json\"]\n[log]\nlevel = \"warn\"\nformat = \"json\"\n"
        ),
    );
    let dir = config.parent().unwrap();
    std::fs::write(
        dir.join("known.json"),
        r#"[{"method":"GET","route":"/a","id":"V-1","severity":"high"},
            {"method":"POST","route":"/b","id":"V-2","severity":"low"}]"#,
    )
    .unwrap();
    let (code, out, err) = vigil(&["collect", "--check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&format!("ok: {} is valid;", config.display()))
            && out.contains("API and metrics on 127.0.0.1:9101")
            && out.contains("1 token(s), 2 known vulnerabilities"),
        "{out}"
    );
    assert!(err.is_empty(), "{err}");
    assert!(
        !dir.join("vigil-collector.db").exists(),
        "--check created the database"
    );

    // The default file, relative to the working directory.
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["collect", "--check"])
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("ok: collector.toml is valid;"),
        "{stdout}"
    );
}

#[test]
fn collect_check_names_the_bad_key_or_file() {
    let cases = [
        (
            "level",
            format!("{COLLECTOR_TOKEN}[log]\nlevel = \"verbose\"\n"),
            "collector.toml: log.level: \"verbose\" in \"verbose\" does not name a level",
        ),
        (
            "format",
            format!("{COLLECTOR_TOKEN}[log]\nformat = \"xml\"\n"),
            "collector.toml: log.format: \"xml\" is not a log format",
        ),
        (
            "vulns",
            format!("{COLLECTOR_TOKEN}[vulnerabilities]\nknown = [\"missing.json\"]\n"),
            "collector.toml: vulnerabilities.known[0]",
        ),
        (
            "storage",
            format!("{COLLECTOR_TOKEN}[storage]\npath = \"no-such-dir/collector.db\"\n"),
            "collector.toml: storage.path: the directory",
        ),
        (
            "token",
            "[[token]]\ntoken = \"short\"\n".to_string(),
            "collector.toml: token[0].token: 5 bytes",
        ),
    ];
    for (name, text, expected) in cases {
        let config = write_collector_config(&format!("collect-bad-{name}"), &text);
        let (code, out, err) = vigil(&["collect", "--check", "--config", config.to_str().unwrap()]);
        assert_eq!(code, 64, "{name}: {out}");
        assert!(out.is_empty(), "{name}: {out}");
        assert!(
            err.contains(expected),
            "{name}: {err:?} should contain {expected:?}"
        );
    }

    let config = write_collector_config("collect-bad-flag", COLLECTOR_TOKEN);
    let (code, _, err) = vigil(&[
        "--log",
        "verbose",
        "collect",
        "--check",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 64);
    assert!(
        err.contains("\"verbose\" in \"verbose\" does not name a level"),
        "{err}"
    );
}

#[test]
fn check_and_run_refuse_a_log_filter_that_names_no_level() {
    let config = write_config(
        "loglevel",
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[log]\nlevel = \"verbose\"\n",
    );
    for command in ["check", "run"] {
        let (code, _, err) = vigil(&[command, "--config", config.to_str().unwrap()]);
        assert_eq!(code, 64, "{command}: {err}");
        assert!(
            err.contains("vigil.toml: log.level: \"verbose\" in \"verbose\" does not name a level: expected one of trace, debug, info, warn, error, off"),
            "{command}: {err}"
        );
    }

    let good = write_config(
        "loglevel-good",
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n",
    );
    let good = good.to_str().unwrap();
    let (code, out, err) = vigil(&[
        "--log",
        "vigil=debug, hyper=warn",
        "check",
        "--config",
        good,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is valid"), "{out}");
    for args in [
        &["--log", "vigil=loud", "check", "--config", good][..],
        &["--log", "vigil=loud", "run", "--config", good],
        &[
            "--log",
            "vigil=loud",
            "check-guard",
            vigil_guard_artifacts::ALLOW_ALL,
        ],
    ] {
        let (code, _, err) = vigil(args);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(
            err.contains(
                "--log (VIGIL_LOG): \"vigil=loud\" in \"vigil=loud\" does not name a level"
            ),
            "{args:?}: {err}"
        );
    }
}

/// An upstream on a thread that answers every connection's request `hello` and closes it.
fn hello_upstream() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

#[test]
fn run_needs_no_file_when_given_an_upstream() {
    let dir = std::env::temp_dir().join(format!("vigil-cli-nofile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (public, admin, upstream) = (free_port(), free_port(), hello_upstream());

    let (code, out, _) = vigil(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Without a file, --upstream (or VIGIL_UPSTREAM) is enough"),
        "{out}"
    );

    let bare = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("run")
        .current_dir(&dir)
        .env_remove("VIGIL_UPSTREAM")
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(64));
    let err = String::from_utf8_lossy(&bare.stderr);
    assert!(
        err.contains("no configuration: vigil.toml is not in the working directory; pass --config FILE, or --upstream URL"),
        "{err}"
    );

    let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--upstream", &format!("http://127.0.0.1:{upstream}")])
        .args(["--listen", &format!("127.0.0.1:{public}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .current_dir(&dir)
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("readiness", || {
        get(admin, "/readyz").starts_with("HTTP/1.1 200")
    });
    let answer = get(public, "/users/7");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nhello"),
        "{answer}"
    );
    let stderr = stop(child);
    assert!(stderr.contains("vigil is serving"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes when stderr is not a terminal: {stderr:?}"
    );
}

/// Sends SIGTERM, checks the exit status and returns what the process wrote to stderr.
fn stop(child: std::process::Child) -> String {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn json_logs_carry_lists_as_text_and_no_colour() {
    use std::io::BufRead;
    let (public, admin) = (free_port(), free_port());
    let config = |fixed: &str| {
        let guard = |name: &str| {
            format!(
                "[[guard]]\nname = \"{name}\"\nmodule = \"{}\"\n",
                vigil_guard_artifacts::ALLOW_ALL
            )
        };
        format!(
            "[listen]\naddress = \"127.0.0.1:{public}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\
             [upstream]\nurl = \"http://127.0.0.1:1\"\n[log]\nformat = \"json\"\n{fixed}{}{}",
            guard("first"),
            guard("second")
        )
    };
    let path = write_config("json-logs", &config(""));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config", path.to_str().unwrap()])
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, stderr) = (lines.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push(line);
            }
        })
    };
    eventually("the guards", || {
        get(admin, "/guards").contains("\"second\"")
    });
    std::fs::write(
        &path,
        config("[inventory]\nmax_endpoints = 10\n[state]\nmax_clients = 10\n"),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let logged = |message: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == message)
    };
    eventually("the reload's log lines", || {
        logged("guard chain reloaded").is_some()
    });
    let reloaded = logged("guard chain reloaded").unwrap();
    assert_eq!(reloaded["fields"]["guards"], "first,second", "{reloaded}");
    let waiting = logged(
        "these sections changed, but a reload only swaps the guard chain: they keep their \
         start-up settings until the next restart",
    )
    .expect("the sections waiting for a restart are logged");
    assert_eq!(
        waiting["fields"]["sections"], "inventory,state",
        "{waiting}"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    assert!(!lines.is_empty());
    for line in lines.iter() {
        assert!(!line.contains('\x1b'), "no colour codes: {line:?}");
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["fields"].is_object(), "{line}");
    }
}

#[test]
fn check_prints_the_settings_in_force_with_the_token_redacted() {
    let config = write_config(
        "print",
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[report]\ncollector = \"http://127.0.0.1:2\"\nservice = \"shop\"\ntoken = \"s3cret-token\"\n",
    );
    let (code, out, err) = vigil(&["check", "--print", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (first, settings) = out.split_once('\n').unwrap();
    assert!(first.starts_with("ok: "), "{first}");
    let settings: serde_json::Value =
        serde_json::from_str(settings).expect("JSON after the ok line");
    assert_eq!(settings["report"]["token"], "(redacted)");
    assert_eq!(settings["upstream"]["url"], "http://127.0.0.1:1");
    assert_eq!(
        settings["listen"]["address"], "0.0.0.0:8080",
        "defaults are filled in"
    );
    assert!(!out.contains("s3cret-token"));
}

#[test]
fn the_access_log_goes_to_stdout_or_a_file_that_sigusr1_reopens() {
    let (public, admin, upstream) = (free_port(), free_port(), hello_upstream());
    let dir = std::env::temp_dir().join(format!("vigil-cli-access-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let start = |path: &str| {
        let config = dir.join("vigil.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\naddress = \"127.0.0.1:{public}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\
                 [upstream]\nurl = \"http://127.0.0.1:{upstream}\"\n[access_log]\npath = \"{path}\"\n"
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        eventually("readiness", || {
            get(admin, "/readyz").starts_with("HTTP/1.1 200")
        });
        child
    };
    let signal = |child: &std::process::Child, name: &str| {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };

    // Relative to the configuration's directory, like every path in it.
    let child = start("access.log");
    let log = dir.join("access.log");
    get(public, "/before");
    eventually("the first line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"/before\""))
    });
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    signal(&child, "USR1");
    eventually("a fresh file", || log.exists());
    get(public, "/after");
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let fresh = std::fs::read_to_string(&log).unwrap();
    assert!(
        fresh.contains("\"/after\"") && !fresh.contains("/before"),
        "{fresh}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("access log reopened"), "{stderr}");

    let child = start("-");
    get(public, "/on-stdout");
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout:?}"));
    assert_eq!(
        line["target"], "/on-stdout",
        "written before the process ended"
    );
    assert_eq!(line["status"], 200);

    let unwritable = dir.join("no-such-dir/access.log");
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:{upstream}\"\n[access_log]\npath = \"{}\"\n",
            unwritable.display()
        ),
    )
    .unwrap();
    let (code, _, err) = vigil(&["check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "access_log.path: cannot open {}: No such file or directory",
            unwritable.display()
        )),
        "{err}"
    );
}
