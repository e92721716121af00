//! `vigil replay`: access logs through the configured guards on the log's own clock.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-replay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A configuration with the stock rate limiter at 10 a minute per client, banning for an hour
/// when `ban` is set.
fn config(dir: &Path, ban: bool) -> PathBuf {
    let path = dir.join("vigil.toml");
    std::fs::write(
        &path,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[guard]]\nname = \"rate-limit\"\nmodule = \"{}\"\n\
             deadline = \"2s\"\nconfig = {{ rate = 10, per = \"minute\" }}\n{}",
            vigil_guard_artifacts::RATE_LIMIT,
            if ban { "ban = \"1h\"\n" } else { "" }
        ),
    )
    .unwrap();
    path
}

/// A burst of 30 requests in one second from one client, and 30 spread over 30 minutes from
/// another, interleaved in time order.
fn combined_log() -> String {
    let mut lines = Vec::new();
    for minute in 0..30 {
        if minute == 0 {
            for second in 0..30 {
                lines.push(format!(
                    "203.0.113.9 - - [02/Dec/2026:10:00:00 +0000] \"GET /items/{second} HTTP/1.1\" 200 12 \"-\" \"scraper/1\""
                ));
            }
        }
        lines.push(format!(
            "198.51.100.2 - - [02/Dec/2026:10:{minute:02}:30 +0000] \"GET /items/{minute} HTTP/1.1\" 200 12 \"-\" \"Mozilla/5.0\""
        ));
    }
    lines.join("\n") + "\n"
}

fn replay(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("replay")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_burst_is_refused_on_the_log_clock_and_a_slow_client_is_not() {
    let dir = dir("combined");
    let config = config(&dir, false);
    let log = dir.join("access.log");
    std::fs::write(&log, combined_log()).unwrap();
    let (code, out, err) = replay(
        &[
            "--config",
            config.to_str().unwrap(),
            "--json",
            log.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "", "no progress bar when stderr is not a terminal");
    let summary = json(&out);
    assert_eq!(summary["requests"], 60);
    assert_eq!(
        summary["refused"], 20,
        "30 in a minute against 10 a minute: {summary:#}"
    );
    assert_eq!(summary["guards"]["rate-limit"]["refused"], 20);
    assert_eq!(
        summary["guards"]["rate-limit"]["clients"], 1,
        "the slow client never"
    );
    let first = &summary["first_refusals"][0];
    assert_eq!(first["client"], "203.0.113.9");
    assert_eq!(first["status"], 429);
    assert_eq!(first["line"], 11, "the eleventh request of the burst");
    assert!(first["text"].as_str().unwrap().contains("GET /items/10 "));
    let exposure = &summary["exposure"]["endpoints"][0];
    assert_eq!(exposure["route"], "/items/{id}");
    assert_eq!(exposure["requests"], 60);

    // The same log as text, and --fail-on-deny for a pipeline.
    let (code, out, _) = replay(
        &[
            "--config",
            config.to_str().unwrap(),
            "--fail-on-deny",
            log.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(out.contains("20 requests would be refused"), "{out}");
    assert!(out.contains("203.0.113.9 by rate-limit (429), "), "{out}");
}

#[test]
fn vigils_own_json_log_gzipped_or_on_stdin_replays_the_same() {
    let dir = dir("json");
    let config = config(&dir, true);
    // As Vigil's access log writes it: the client key is taken from the line.
    let mut lines = String::new();
    for second in 0..15 {
        lines.push_str(&format!(
            "{{\"time\":\"2026-12-02T10:00:00.{second:03}Z\",\"client\":\"key-7\",\"ip\":\"192.0.2.{second}\",\
             \"method\":\"GET\",\"target\":\"/items/{second}?page=1\",\"status\":200}}\n"
        ));
    }
    let gz = dir.join("access.log.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    encoder.write_all(lines.as_bytes()).unwrap();
    encoder.finish().unwrap();

    for (file, stdin) in [(gz.to_str().unwrap(), None), ("-", Some(lines.as_bytes()))] {
        let (code, out, err) = replay(
            &["--config", config.to_str().unwrap(), "--json", file],
            stdin,
        );
        assert_eq!(code, 0, "{file}: {err}");
        let summary = json(&out);
        assert_eq!(summary["requests"], 15, "{file}");
        // One key from fifteen addresses: the eleventh is refused and banned, the rest are
        // refused by the ban without the guard being asked.
        assert_eq!(
            summary["guards"]["rate-limit"]["refused"], 1,
            "{file}: {summary:#}"
        );
        assert_eq!(summary["guards"]["ban:rate-limit"]["refused"], 4, "{file}");
        assert_eq!(summary["first_refusals"][0]["client"], "key-7");
        let banned = summary["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "client-banned" && f["client"] == "key-7");
        assert!(banned, "{file}: {summary:#}");
    }
}

#[test]
fn unreadable_lines_are_counted_and_shown_and_bad_input_is_named() {
    let dir = dir("unreadable");
    let config = config(&dir, false);
    let log = dir.join("mixed.log");
    std::fs::write(
        &log,
        "203.0.113.9 - - [02/Dec/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"\n\
         not a log line\n\
         203.0.113.9 - - [02/Dec/2026:10:00:01 +0000] \"-\" 400 0 \"-\" \"-\"\n\
         {\"time\": \"yesterday\", \"method\": \"GET\"}\n",
    )
    .unwrap();
    let (code, out, err) = replay(
        &["--config", config.to_str().unwrap(), log.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1 requests from 4 lines"), "{out}");
    assert!(
        out.contains("1 lines are requests the server could not read"),
        "{out}"
    );
    assert!(out.contains("2 lines could not be read:"), "{out}");
    assert!(
        out.contains("mixed.log:2: \"not\" is not an IP address"),
        "{out}"
    );
    assert!(
        out.contains("mixed.log:4: \"yesterday\" is not an RFC 3339 or common log time"),
        "{out}"
    );

    let missing = dir.join("missing.log");
    let (code, _, err) = replay(
        &[
            "--config",
            config.to_str().unwrap(),
            missing.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 64);
    assert!(
        err.contains(&format!("cannot open {}", missing.display())),
        "{err}"
    );
    let (code, _, err) = replay(
        &["--config", "/nonexistent/vigil.toml", log.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 64);
    assert!(err.contains("/nonexistent/vigil.toml"), "{err}");
    let (code, _, err) = replay(
        &["--config", config.to_str().unwrap(), "--format", "xml", "-"],
        None,
    );
    assert_eq!(code, 2, "clap's usage error");
    assert!(err.contains("combined, common, json"), "{err}");
}

/// `probing` and `signatures` with their defaults, in front of a web app.
fn scanner_config(dir: &Path) -> PathBuf {
    let path = dir.join("vigil.toml");
    std::fs::write(
        &path,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [[guard]]\nname = \"signatures\"\nmodule = \"{}\"\ndeadline = \"2s\"\n\
             [[guard]]\nname = \"probing\"\nmodule = \"{}\"\ndeadline = \"2s\"\nroutes = [\"*\"]\n",
            vigil_guard_artifacts::SIGNATURES,
            vigil_guard_artifacts::PROBING,
        ),
    )
    .unwrap();
    path
}

/// `vigil replay --json --fail-on-deny`, as a pipeline runs it.
fn replay_for_ci(config: &Path, log: &Path) -> (i32, String, String) {
    let (config, log) = (config.to_str().unwrap(), log.to_str().unwrap());
    replay(&["--config", config, "--json", "--fail-on-deny", log], None)
}

fn combined(ip: &str, second: u32, target: &str, status: u16, agent: &str) -> String {
    format!(
        "{ip} - - [02/Dec/2026:10:{:02}:{:02} +0000] \"GET {target} HTTP/1.1\" {status} 100 \"-\" \"{agent}\"\n",
        second / 60,
        second % 60
    )
}

#[test]
fn a_recorded_scan_is_refused_and_recorded_browsing_never_is() {
    let dir = dir("scan");
    let config = scanner_config(&dir);
    let browser = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0";

    // Ordinary browsing of a web app: pages, assets, and the browser's own 404s (favicon,
    // source maps, touch icons, robots.txt), three readers over twenty minutes.
    let mut browsing = String::new();
    for view in 0..40u32 {
        for (n, reader) in ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
            .iter()
            .enumerate()
        {
            let at = view * 30 + n as u32;
            browsing += &combined(reader, at, &format!("/articles/{view}"), 200, browser);
            browsing += &combined(reader, at, "/static/app.js", 200, browser);
            browsing += &combined(reader, at, "/static/app.js.map", 404, browser);
            browsing += &combined(reader, at, "/favicon.ico", 404, browser);
            if view % 10 == 0 {
                browsing += &combined(reader, at, "/robots.txt", 404, browser);
                browsing += &combined(
                    reader,
                    at,
                    "/apple-touch-icon-precomposed.png",
                    404,
                    browser,
                );
            }
        }
    }
    let log = dir.join("browsing.log");
    std::fs::write(&log, &browsing).unwrap();
    let (code, out, err) = replay_for_ci(&config, &log);
    assert_eq!(code, 0, "ordinary browsing is never refused: {out}{err}");
    assert_eq!(json(&out)["refused"], 0);

    // A scanner walking a word list one path a second: every path is answered 404, a few are
    // known probes.
    let mut scan = String::new();
    let words = [
        "admin", "backup", "old", "test", "dev", "api", "v1", "tmp", "files", "data",
    ];
    for (i, word) in words.iter().cycle().take(60).enumerate() {
        scan += &combined(
            "203.0.113.66",
            i as u32,
            &format!("/{word}{i}/"),
            404,
            "Mozilla/5.0",
        );
    }
    scan += &combined("203.0.113.66", 61, "/.env", 404, "Mozilla/5.0");
    scan += &combined("203.0.113.66", 62, "/.git/config", 404, "Mozilla/5.0");
    let log = dir.join("scan.log");
    std::fs::write(&log, scan).unwrap();
    let (code, out, err) = replay_for_ci(&config, &log);
    assert_eq!(code, 1, "{err}");
    let summary = json(&out);
    // Its first 20 requests are counted before it is judged; the known probes at the end are
    // refused by `signatures`, which runs first.
    assert_eq!(summary["guards"]["probing"]["refused"], 40, "{summary:#}");
    assert_eq!(summary["guards"]["signatures"]["refused"], 2, "{summary:#}");
    let first = &summary["first_refusals"][0];
    assert_eq!(
        (&first["client"], &first["guard"], &first["line"]),
        (&"203.0.113.66".into(), &"probing".into(), &21.into())
    );
}

#[test]
fn a_recorded_query_enumeration_and_login_brute_force_are_refused_and_a_crawl_is_not() {
    let dir = dir("enumeration");
    let path = dir.join("vigil.toml");
    std::fs::write(
        &path,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [[guard]]\nname = \"sequence\"\nmodule = \"{}\"\ndeadline = \"2s\"\n\
             config = {{ rules = [{{ kind = \"distinct-param\", target = \"GET /**\", query = \"author\", max = 5, window = \"10m\" }}] }}\n\
             [[guard]]\nname = \"credential-stuffing\"\nmodule = \"{}\"\ndeadline = \"2s\"\nroutes = [\"POST /wp-login.php\"]\n\
             config = {{ login = \"POST /wp-login.php\", account = {{ form_field = \"log\" }}, max_failures = 10, window = \"10m\" }}\n",
            vigil_guard_artifacts::SEQUENCE,
            vigil_guard_artifacts::CREDENTIAL_STUFFING,
        ),
    )
    .unwrap();
    let line = |ip: &str, second: u32, method: &str, target: &str, status: u16| {
        format!(
            "{ip} - - [02/Dec/2026:11:{:02}:{:02} +0000] \"{method} {target} HTTP/1.1\" {status} 100 \"-\" \"Mozilla/5.0\"\n",
            second / 60,
            second % 60
        )
    };
    let mut log = String::new();
    // WordPress user enumeration, spelt several ways.
    for (i, query) in [
        "author=1",
        "author=2",
        "AUTHOR=3",
        "author=%34",
        "author=5",
        "author=6",
        "author=7",
    ]
    .iter()
    .enumerate()
    {
        log += &line("203.0.113.5", i as u32, "GET", &format!("/?{query}"), 301);
    }
    // A crawler reading a hundred pages, each once.
    for page in 0..100 {
        log += &line(
            "66.249.66.1",
            page,
            "GET",
            &format!("/blog/post-{page}/"),
            200,
        );
    }
    // Thirty failed logins a second apart.
    for attempt in 0..30 {
        log += &line("198.51.100.77", 100 + attempt, "POST", "/wp-login.php", 401);
    }
    let file = dir.join("access.log");
    std::fs::write(&file, log).unwrap();
    let (code, out, err) = replay_for_ci(&path, &file);
    assert_eq!(code, 1, "{err}");
    let summary = json(&out);
    assert_eq!(
        summary["guards"]["sequence"]["refused"], 2,
        "authors 6 and 7: {summary:#}"
    );
    let refused: Vec<&str> = summary["first_refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["client"].as_str().unwrap())
        .collect();
    assert_eq!(
        refused,
        ["203.0.113.5", "198.51.100.77"],
        "never the crawler: {summary:#}"
    );
    // Its first ten failures are counted; the twenty after are refused.
    assert_eq!(
        summary["guards"]["credential-stuffing"]["refused"], 20,
        "{summary:#}"
    );
}

/// `tests/fixtures/shop-session.har`: k1 and k2 behind one address (X-Forwarded-For) reading
/// items, an entry without an answer, one without a time, and three requests without
/// X-Forwarded-For or key.
fn har_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shop-session.har")
}

#[test]
fn a_har_file_replays_with_its_header_fields_and_its_clients() {
    let dir = dir("har");
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[identity]\nkey = \"header:x-api-key\"\n\
             [[guard]]\nname = \"rate-limit\"\nmodule = \"{}\"\n\
             config = {{ rate = 2, per = \"minute\" }}\n",
            vigil_guard_artifacts::RATE_LIMIT
        ),
    )
    .unwrap();
    let har = har_fixture();
    let (config, har_path) = (config.to_str().unwrap(), har.to_str().unwrap());
    let with_config = |args: &[&str], stdin: Option<&[u8]>| {
        replay(&[&["--config", config], args].concat(), stdin)
    };
    let (code, out, err) = with_config(
        &["--default-client", "192.0.2.55", "--json", har_path],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let summary = json(&out);
    assert_eq!(summary["lines"], 9, "entries, counted where lines are");
    assert_eq!(summary["requests"], 7);
    assert_eq!(summary["unreadable"], 2);
    let unreadable = &summary["unreadable_first"];
    assert_eq!(unreadable[0]["line"], 5);
    assert!(
        unreadable[0]["error"]
            .as_str()
            .unwrap()
            .contains("status is 0"),
        "{unreadable}"
    );
    assert_eq!(unreadable[1]["line"], 6);
    assert_eq!(summary["refused"], 2);
    let first = &summary["first_refusals"];
    assert_eq!(first[0]["client"], "k1", "the key is the X-Api-Key field");
    assert_eq!(first[0]["line"], 3);
    assert_eq!(
        first[0]["text"],
        "GET https://shop.example/api/items?page=3 200"
    );
    assert_eq!(
        first[1]["client"], "192.0.2.55",
        "no X-Forwarded-For: the default"
    );
    assert_eq!(first[1]["line"], 9);
    let endpoints = summary["exposure"]["endpoints"].as_array().unwrap();
    let items = endpoints
        .iter()
        .find(|e| e["route"] == "/api/items")
        .unwrap_or_else(|| panic!("the URL's path is the route: {endpoints:?}"));
    assert_eq!(
        (&items["requests"], &items["credentials"]["api_key"]),
        (&serde_json::json!(4), &serde_json::json!(4)),
        "the X-Api-Key field counts as credentials: {items}"
    );

    // Forced by --format for a file named otherwise; bounded in size; a document that is
    // not a HAR says so.
    let renamed = dir.join("session.json");
    std::fs::copy(&har, &renamed).unwrap();
    let (code, out, err) = with_config(&["--format", "har", renamed.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 7 requests from 9 lines"), "{out}");
    let (code, _, err) = with_config(&["--max-har-bytes", "1000", har_path], None);
    assert_eq!(code, 64);
    assert!(
        err.contains(&format!(
            "{}: the HAR file is over 1000 bytes (--max-har-bytes)",
            har.display()
        )),
        "{err}"
    );
    let (code, _, err) = with_config(
        &["--format", "har", "-"],
        Some(b"{\"log\": {\"version\": \"1.2\"}}"),
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("-: not a HAR file: it has no log.entries"),
        "{err}"
    );
}
