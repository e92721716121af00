//! Day-two operations through a running sidecar: request ids kept and returned, bans placed by
//! a guard or by hand and lifted, the allowlist, and forgetting a client.

use http::StatusCode;
use vigil_tests::guards;
use vigil_tests::harness::{guard_table, metric, send, start_with_upstream, Proxy};

const BASE: &str = r#"
[upstream]
url = "{upstream}"
timeout = "2s"
[identity]
key = "header:x-api-key"
"#;

/// A guard that refuses `/admin/**` only.
fn admin_fence(extra: &str) -> String {
    guard_table(
        "no-admin",
        guards::FIXED_VERDICT,
        &format!(
            "routes = [\"* /admin/**\"]\nconfig = {{ deny = 403, reason = \"no admin\" }}\n{extra}"
        ),
    )
}

async fn get(
    proxy: &Proxy,
    path: &str,
    client: &str,
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let (status, headers, body) =
        send(proxy.addr, "GET", path, &[("x-api-key", client)], vec![]).await;
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

async fn admin(
    proxy: &Proxy,
    method: &str,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let (status, _, body) = send(proxy.admin, method, path, &[], body.as_bytes().to_vec()).await;
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_when_well_formed_and_returned_on_every_answer() {
    let (up, proxy) =
        start_with_upstream("request-ids", &format!("{BASE}{}", admin_fence(""))).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (status, headers, _) = send(
        proxy.addr,
        "GET",
        "/items",
        &[("x-request-id", "edge-7f3a"), ("traceparent", traceparent)],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["x-request-id"], "edge-7f3a",
        "an allowed answer carries it"
    );
    let seen = up.last_headers();
    assert_eq!(
        seen["x-request-id"], "edge-7f3a",
        "the upstream gets the client's id"
    );
    assert_eq!(
        seen["traceparent"], traceparent,
        "trace context passes through"
    );

    for bad in ["two words", &"x".repeat(129)] {
        let (_, headers, _) = send(
            proxy.addr,
            "GET",
            "/items",
            &[("x-request-id", bad)],
            vec![],
        )
        .await;
        let given = headers["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(given, bad, "a malformed id is replaced");
        assert_eq!(
            up.last_headers()["x-request-id"],
            given.as_str(),
            "by the one the upstream got"
        );
    }

    let (status, headers, body) = get(&proxy, "/admin/x", "c").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );

    let replacing = format!("{BASE}[listen]\nrequest_id = \"replace\"\n");
    let (up, proxy) = start_with_upstream("request-ids-replaced", &replacing).await;
    let (_, headers, _) = send(
        proxy.addr,
        "GET",
        "/",
        &[("x-request-id", "edge-7f3a")],
        vec![],
    )
    .await;
    assert_ne!(headers["x-request-id"], "edge-7f3a");
    assert_eq!(up.last_headers()["x-request-id"], headers["x-request-id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_with_ban_keeps_the_client_out_of_every_route_until_lifted() {
    let (up, proxy) =
        start_with_upstream("bans", &format!("{BASE}{}", admin_fence("ban = \"10m\""))).await;
    assert_eq!(get(&proxy, "/items", "scanner").await.0, StatusCode::OK);
    assert_eq!(
        get(&proxy, "/admin/.env", "scanner").await.0,
        StatusCode::FORBIDDEN
    );
    let forwarded = up.count();

    // Every route now, without a guard running.
    let guard_calls = || {
        proxy.sidecar.chain().guards()[0]
            .stats()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let calls = guard_calls();
    let (status, headers, body) = get(&proxy, "/items", "scanner").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["guard"], "no-admin");
    assert_eq!(
        body["detail"],
        "this client is blocked for a while: no admin"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (590..=600).contains(&retry),
        "Retry-After is the ban's remaining time: {retry}"
    );
    assert_eq!(
        (up.count(), guard_calls()),
        (forwarded, calls),
        "neither upstream nor guard saw it"
    );
    assert_eq!(
        get(&proxy, "/items", "someone-else").await.0,
        StatusCode::OK
    );

    let bans: Vec<(String, String, String)> = proxy
        .sidecar
        .inventory
        .take(proxy.sidecar.now_ms())
        .into_iter()
        .flat_map(|delta| delta.findings)
        .filter(|f| f.kind == "client-banned")
        .map(|f| (f.source, f.client.unwrap_or_default(), f.detail))
        .collect();
    assert_eq!(
        bans,
        [(
            "guard:no-admin".to_string(),
            "scanner".to_string(),
            "banned for 600s: no admin".to_string()
        )],
        "the next report carries the ban"
    );

    let (status, listed) = admin(&proxy, "GET", "/decisions", "").await;
    assert_eq!(status, StatusCode::OK);
    let decisions = listed["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["client"], "scanner");
    assert_eq!(decisions[0]["by"], "no-admin");
    assert_eq!(metric(&proxy, "vigil_decisions_active").await, 1);

    let (status, _) = admin(&proxy, "DELETE", "/decisions/scanner", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get(&proxy, "/items", "scanner").await.0,
        StatusCode::OK,
        "lifted"
    );
    let (status, body) = admin(&proxy, "DELETE", "/decisions/scanner", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(metric(&proxy, "vigil_decisions_active").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_bans_and_forgets_clients_through_the_admin_api() {
    let (_up, proxy) = start_with_upstream("manual-bans", BASE).await;
    let (status, body) = admin(
        &proxy,
        "POST",
        "/decisions",
        r#"{"client": "key with/slash", "duration": "1h", "reason": "abuse report 1182"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, body) = get(&proxy, "/items", "key with/slash").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["guard"], "admin");
    assert_eq!(
        body["detail"],
        "this client is blocked for a while: abuse report 1182"
    );

    // A percent-encoded key in the path names the same client.
    let (status, body) = admin(&proxy, "DELETE", "/clients/key%20with%2Fslash", "").await;
    assert_eq!(
        (status, &body["had_state"]),
        (StatusCode::OK, &serde_json::json!(true))
    );
    assert_eq!(
        get(&proxy, "/items", "key with/slash").await.0,
        StatusCode::OK
    );

    for (bad, expected) in [
        (r#"{"client": "a"}"#, "missing field `duration`"),
        (r#"{"client": "a", "duration": "forever"}"#, "duration"),
        (r#"{"client": "a", "duration": "40d"}"#, "at most 30d"),
        (
            r#"{"client": "", "duration": "1m"}"#,
            "client: must be 1 to 1024 bytes",
        ),
        (
            r#"{"client": "a", "duration": "1m", "until": 5}"#,
            "unknown field `until`",
        ),
        ("not json", "expected"),
    ] {
        let (status, body) = admin(&proxy, "POST", "/decisions", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(expected), "{bad}: {error}");
    }
    let (status, _) = admin(&proxy, "DELETE", "/decisions/%FF", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not UTF-8");
    let (status, _) = admin(&proxy, "DELETE", "/clients/", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlisted_clients_skip_the_guards() {
    let config = format!(
        "{BASE}[allowlist]\nclients = [\"partner\"]\n{}",
        admin_fence("ban = \"10m\"")
    );
    let (_up, proxy) = start_with_upstream("allowlist", &config).await;
    assert_eq!(get(&proxy, "/admin/x", "partner").await.0, StatusCode::OK);
    assert_eq!(
        get(&proxy, "/admin/x", "stranger").await.0,
        StatusCode::FORBIDDEN
    );

    let by_network = format!(
        "{BASE}[allowlist]\nnetworks = [\"127.0.0.0/8\"]\n{}",
        admin_fence("")
    );
    let (_up, proxy) = start_with_upstream("allowlist-networks", &by_network).await;
    assert_eq!(
        get(&proxy, "/admin/x", "anyone").await.0,
        StatusCode::OK,
        "loopback is listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_in_force_are_shown_with_secrets_redacted() {
    let config = format!(
        "{BASE}[report]\ncollector = \"http://127.0.0.1:1\"\nservice = \"shop\"\ntoken = \"s3cret-token\"\n{}",
        admin_fence("ban = \"10m\"")
    );
    let (_up, proxy) = start_with_upstream("effective-config", &config).await;
    let (status, settings) = admin(&proxy, "GET", "/config", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["report"]["token"], "(redacted)");
    assert!(!settings.to_string().contains("s3cret-token"));
    assert_eq!(
        settings["listen"]["request_id"], "keep",
        "defaults are filled in"
    );
    assert_eq!(settings["identity"]["key"], "header:x-api-key");
    assert_eq!(settings["guard"][0]["name"], "no-admin");
    assert_eq!(settings["guard"][0]["ban"], "10m");
}
