//! The access log of a running sidecar: one line per request with what the guards said, in
//! JSON or the combined format, written once the response is sent, reopened for rotation.

use http::StatusCode;
use std::path::Path;
use std::time::Duration;
use vigil_tests::guards;
use vigil_tests::harness::{guard_table, raw, send, start_with_upstream, tempdir, Proxy};

fn config(log: &Path, format: &str) -> String {
    format!(
        "[upstream]\nurl = \"{{upstream}}\"\ntimeout = \"2s\"\n\
         [identity]\nkey = \"header:x-api-key\"\n\
         [access_log]\npath = \"{}\"\nformat = \"{format}\"\n{}{}",
        log.display(),
        guard_table(
            "audit",
            guards::FIXED_VERDICT,
            "routes = [\"* /items/**\"]\nmode = \"monitor\"\nconfig = { deny = 403, reason = \"audit\" }\n"
        ),
        guard_table(
            "no-admin",
            guards::FIXED_VERDICT,
            "routes = [\"* /admin/**\"]\nban = \"1m\"\nconfig = { deny = 403, reason = \"no admin\" }\n"
        ),
    )
}

/// The lines in `path` once there are at least `n` (the writer is a thread of its own).
async fn lines(path: &Path, n: usize) -> Vec<String> {
    for _ in 0..400 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "fewer than {n} lines in {}: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

async fn get(proxy: &Proxy, path: &str, client: &str) -> StatusCode {
    let headers = [("x-api-key", client), ("user-agent", "probe/1.0")];
    send(proxy.addr, "GET", path, &headers, vec![]).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_logged_with_its_outcome_and_the_guards_verdicts() {
    let dir = tempdir("access-log-json");
    let log = dir.join("access.log");
    let (_up, proxy) = start_with_upstream("access-log-json-proxy", &config(&log, "json")).await;

    assert_eq!(get(&proxy, "/bytes/1234", "alice").await, StatusCode::OK);
    assert_eq!(get(&proxy, "/items/7?x=1", "alice").await, StatusCode::OK);
    assert_eq!(
        get(&proxy, "/admin/.env", "mallory").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&proxy, "/bytes/1", "mallory").await,
        StatusCode::FORBIDDEN,
        "banned"
    );
    let refused = raw(
        proxy.addr,
        b"POST /bytes/1 HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");

    let lines = lines(&log, 5).await;
    assert_eq!(lines.len(), 5, "one line per request: {lines:#?}");
    let lines: Vec<serde_json::Value> = lines.iter().map(|l| json(l)).collect();

    let allowed = &lines[0];
    assert_eq!(allowed["client"], "alice");
    assert_eq!(allowed["ip"], "127.0.0.1");
    assert_eq!(allowed["method"], "GET");
    assert_eq!(allowed["target"], "/bytes/1234");
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["disposition"], "allowed");
    assert_eq!(allowed["bytes_sent"], 1234, "the body bytes sent");
    assert_eq!(allowed["complete"], true);
    assert_eq!(allowed["user_agent"], "probe/1.0");
    assert_eq!(
        allowed["verdicts"],
        serde_json::json!({}),
        "no guard on this route"
    );
    assert!(allowed["upstream_ms"].as_f64().is_some(), "{allowed}");
    assert!(
        allowed["duration_ms"].as_f64().unwrap() >= allowed["upstream_ms"].as_f64().unwrap(),
        "{allowed}"
    );
    assert!(
        !allowed["request_id"].as_str().unwrap().is_empty(),
        "{allowed}"
    );

    let monitored = &lines[1];
    assert_eq!(monitored["target"], "/items/7?x=1");
    assert!(
        monitored["route"].as_str().unwrap().starts_with("/items/"),
        "{monitored}"
    );
    assert_eq!(monitored["disposition"], "monitored");
    assert_eq!(monitored["verdicts"]["audit"], "would_deny");

    let denied = &lines[2];
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["disposition"], "denied");
    assert_eq!(denied["denied_by"], "no-admin");
    assert_eq!(denied["verdicts"]["no-admin"], "deny");
    assert_eq!(denied["upstream_ms"], serde_json::Value::Null);

    let banned = &lines[3];
    assert_eq!(banned["client"], "mallory");
    assert_eq!(banned["disposition"], "denied");
    assert_eq!(banned["denied_by"], "no-admin", "the ban names its guard");
    assert_eq!(banned["verdicts"], serde_json::json!({}), "no guard ran");

    let malformed = &lines[4];
    assert_eq!(malformed["status"], 400);
    assert_eq!(malformed["disposition"], "error");
    assert_eq!(malformed["method"], "POST");
    assert_eq!(malformed["client"], serde_json::Value::Null);
    assert_eq!(malformed["ip"], "127.0.0.1", "the peer");

    assert_eq!(
        vigil_tests::harness::metric(&proxy, "vigil_access_log_lines_queued_total").await,
        5
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_are_what_log_tools_read_and_rotation_reopens_the_file() {
    let dir = tempdir("access-log-combined");
    let log = dir.join("access.log");
    let (_up, proxy) =
        start_with_upstream("access-log-combined-proxy", &config(&log, "combined")).await;

    let headers = [
        ("user-agent", "evil\" 200 1 \"-\" \"x"),
        ("referer", "https://a.example/"),
    ];
    send(proxy.addr, "GET", "/bytes/3", &headers, vec![]).await;
    let first = lines(&log, 1).await;
    let line = &first[0];
    // 127.0.0.1 - - [02/Dec/2026:13:55:36 +0000] "GET /bytes/3 HTTP/1.1" 200 3 "https://a.example/" "evil\x22 200 1 \x22-\x22 \x22x"
    let (start, rest) = line.split_once(" - - [").unwrap();
    assert_eq!(start, "127.0.0.1");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert!(time.ends_with(" +0000") && time.len() == 26, "{time}");
    assert_eq!(
        rest,
        "\"GET /bytes/3 HTTP/1.1\" 200 3 \"https://a.example/\" \"evil\\x22 200 1 \\x22-\\x22 \\x22x\""
    );

    // logrotate moves the file away, then asks for a new one.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    proxy.sidecar.reopen_access_log();
    send(proxy.addr, "GET", "/bytes/4", &[], vec![]).await;
    let fresh = lines(&log, 1).await;
    assert!(
        fresh[0].contains("\"GET /bytes/4 HTTP/1.1\" 200 4"),
        "{fresh:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        1,
        "the rotated file keeps the line written before"
    );
    proxy.shutdown().await;
}
