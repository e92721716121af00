//! The stock guards end to end: a real upstream, Vigil on real sockets, each guard compiled from
//! `example-guards/`. Each attack is refused with the guard's status while the same volume of
//! ordinary traffic is not, and monitor mode lets the attack through and counts what it would
//! have refused.

use http::StatusCode;
use vigil_tests::guards;
use vigil_tests::harness::{guard_table, metric, send, start_with_upstream};

/// Clients are told apart by an API key, as the demo's users are.
const BASE: &str =
    "[upstream]\nurl = \"{upstream}\"\ntimeout = \"2s\"\n[identity]\nkey = \"header:x-api-key\"\n";

/// One request: method, path, API key, body.
struct Call {
    method: &'static str,
    path: String,
    client: String,
    body: Vec<u8>,
}

fn call(method: &'static str, path: impl Into<String>, client: impl Into<String>) -> Call {
    Call {
        method,
        path: path.into(),
        client: client.into(),
        body: Vec::new(),
    }
}

fn login(client: impl Into<String>, account: &str) -> Call {
    Call {
        body: format!(r#"{{"username": "{account}", "password": "hunter2"}}"#).into_bytes(),
        ..call("POST", "/login", client)
    }
}

/// One guard, one attack and as much ordinary traffic.
struct Scenario {
    guard: &'static str,
    module: &'static str,
    /// The guard table's lines beyond name and module (config, body_limit).
    table: String,
    attack: Vec<Call>,
    /// How many of the attack's requests the guard refuses, and with what status.
    refused: usize,
    status: StatusCode,
    normal: Vec<Call>,
}

async fn statuses(proxy: &vigil_tests::harness::Proxy, calls: &[Call]) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for c in calls {
        let headers = [("x-api-key", c.client.as_str())];
        out.push(
            send(proxy.addr, c.method, &c.path, &headers, c.body.clone())
                .await
                .0,
        );
    }
    out
}

async fn run(s: Scenario) {
    assert_eq!(s.attack.len(), s.normal.len(), "same volume");
    let config = format!("{BASE}{}", guard_table(s.guard, s.module, &s.table));
    let (up, proxy) = start_with_upstream(s.guard, &config).await;
    let got = statuses(&proxy, &s.attack).await;
    let refused = got.iter().filter(|st| **st == s.status).count();
    let cut = format!(
        "vigil_guard_results_total{{guard=\"{}\",result=\"deadline\"}}",
        s.guard
    );
    assert_eq!(
        refused,
        s.refused,
        "{}: attack answered {got:?}, {} calls cut at the deadline",
        s.guard,
        metric(&proxy, &cut).await
    );
    assert!(
        got.iter()
            .all(|st| *st == s.status || *st == StatusCode::OK),
        "{}: {got:?}",
        s.guard
    );
    assert_eq!(up.count(), s.attack.len() - s.refused);
    let got = statuses(&proxy, &s.normal).await;
    assert!(
        got.iter().all(|st| *st == StatusCode::OK),
        "{}: ordinary traffic answered {got:?}",
        s.guard
    );
    let series = format!(
        "vigil_guard_results_total{{guard=\"{}\",result=\"deny\"}}",
        s.guard
    );
    assert_eq!(metric(&proxy, &series).await, s.refused as u64);
    proxy.shutdown().await;

    let monitored = format!("{}-monitor", s.guard);
    let table = format!("mode = \"monitor\"\n{}", s.table);
    let config = format!("{BASE}{}", guard_table(&monitored, s.module, &table));
    let (up, proxy) = start_with_upstream(&monitored, &config).await;
    let got = statuses(&proxy, &s.attack).await;
    assert!(
        got.iter().all(|st| *st == StatusCode::OK),
        "{monitored}: {got:?}"
    );
    assert_eq!(up.count(), s.attack.len());
    let series =
        format!("vigil_guard_results_total{{guard=\"{monitored}\",result=\"would_deny\"}}");
    assert_eq!(metric(&proxy, &series).await, s.refused as u64);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_through_the_proxy() {
    run(Scenario {
        guard: "rate-limit",
        module: guards::RATE_LIMIT,
        table: r#"config = { key = "client", rate = 1, per = "minute", burst = 5 }"#.into(),
        attack: (0..20).map(|_| call("GET", "/items", "bot")).collect(),
        refused: 15,
        status: StatusCode::TOO_MANY_REQUESTS,
        // Twenty users, each well within the limit.
        normal: (0..20)
            .map(|i| call("GET", "/items", format!("user-{i}")))
            .collect(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_through_the_proxy() {
    let config = r#"config = { rules = [{ kind = "requires", target = "POST /checkout", after = ["POST /cart/items"], within = "15m" }] }"#;
    run(Scenario {
        guard: "sequence",
        module: guards::SEQUENCE,
        table: config.into(),
        attack: (0..6)
            .map(|_| call("POST", "/checkout", "skipper"))
            .collect(),
        refused: 6,
        status: StatusCode::CONFLICT,
        normal: (0..3)
            .flat_map(|i| {
                [
                    call("POST", "/cart/items", format!("shopper-{i}")),
                    call("POST", "/checkout", format!("shopper-{i}")),
                ]
            })
            .collect(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_stuffing_through_the_proxy() {
    let table = "body_limit = 4096\nconfig = { login = \"POST /login\", account = { json_field = \"username\" }, max_accounts = 3, window = \"15m\" }";
    run(Scenario {
        guard: "credential-stuffing",
        module: guards::CREDENTIAL_STUFFING,
        table: table.into(),
        attack: (0..10)
            .map(|i| login("stuffer", &format!("victim{i}")))
            .collect(),
        refused: 7,
        status: StatusCode::TOO_MANY_REQUESTS,
        normal: (0..10)
            .map(|i| login(format!("person-{}", i % 5), &format!("person{}", i % 5)))
            .collect(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enumeration_through_the_proxy() {
    let table = r#"config = { routes = ["GET /users/{id}"], max_distinct = 50, window = "10m" }"#;
    run(Scenario {
        guard: "enumeration",
        module: guards::ENUMERATION,
        table: table.into(),
        attack: (1..=60)
            .map(|id| call("GET", format!("/users/{id}"), "scraper"))
            .collect(),
        refused: 10,
        status: StatusCode::TOO_MANY_REQUESTS,
        normal: (0..60)
            .map(|i| call("GET", format!("/users/{}", i % 20), "reader"))
            .collect(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_keyed_by_a_header_gets_that_header_alone() {
    let table = r#"config = { key = "header:X-Team", rate = 1, per = "minute", burst = 1 }"#;
    let config = format!(
        "{BASE}{}",
        guard_table("per-team", guards::RATE_LIMIT, table)
    );
    let (_up, proxy) = start_with_upstream("per-team", &config).await;
    let (_, _, body) = send(proxy.admin, "GET", "/guards", &[], vec![]).await;
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        listed[0]["needs"],
        serde_json::json!({"headers": ["x-team"], "responses": "none"}),
        "the header its key names, nothing else"
    );
    // One client, two teams: had the header not reached the guard, both would share the
    // client's bucket and team b's first request would be refused too.
    let as_team = |team: &'static str| {
        let headers = [("x-api-key", "k1"), ("x-team", team), ("user-agent", "t")];
        async move { send(proxy.addr, "GET", "/items", &headers, vec![]).await.0 }
    };
    assert_eq!(as_team("a").await, StatusCode::OK);
    assert_eq!(as_team("a").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(as_team("b").await, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_from_a_file_through_the_proxy() {
    // The operator's file, read by Vigil at load and passed to the guard with its config.
    let dir = std::env::temp_dir().join(format!("vigil-signatures-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("signatures.txt");
    std::fs::write(
        &file,
        "# this site's own\npath /internal-backup\npath *.tfstate\n",
    )
    .unwrap();
    let table = format!(
        "signatures = {:?}\nconfig = {{ exempt = [\"/wp-login.php\"] }}",
        file.display().to_string()
    );
    let attack = [
        "/.env",
        "/.git/config",
        "/phpmyadmin/",
        "/actuator/env",
        "/cgi-bin/luci",
        "/.ENV",
        "/internal-backup/db.tar",
        "/infra/prod.tfstate",
    ];
    let normal = [
        "/",
        "/login",
        "/wp-login.php",
        "/static/app.js",
        "/api/users/7",
        "/environment",
        "/favicon.ico",
        "/backups-explained",
    ];
    run(Scenario {
        guard: "signatures",
        module: guards::SIGNATURES,
        table,
        attack: attack.iter().map(|p| call("GET", *p, "scanner")).collect(),
        refused: attack.len(),
        status: StatusCode::FORBIDDEN,
        normal: normal.iter().map(|p| call("GET", *p, "reader")).collect(),
    })
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_through_the_proxy() {
    // Judged on the upstream's answers: the 404s of `/status/404?probe=N` reach the guard's
    // on-response, which only 4xx answers call.
    let table = r#"routes = ["*"]
config = { min_requests = 20, max_error_ratio = 0.5, window = "10m" }"#;
    let config = format!("{BASE}{}", guard_table("probing", guards::PROBING, table));
    let (up, proxy) = start_with_upstream("probing", &config).await;
    let (_, _, body) = send(proxy.admin, "GET", "/guards", &[], vec![]).await;
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        listed[0]["needs"],
        serde_json::json!({"headers": false, "responses": "4xx"})
    );
    let headers = [("x-api-key", "scanner")];
    let mut got = Vec::new();
    for i in 0..30 {
        let path = format!("/status/404?probe={i}");
        got.push(send(proxy.addr, "GET", &path, &headers, vec![]).await.0);
    }
    assert!(
        got[..20].iter().all(|s| *s == StatusCode::NOT_FOUND),
        "{got:?}"
    );
    assert!(
        got[20..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{got:?}"
    );
    assert_eq!(up.count(), 20, "refused requests do not reach the upstream");
    // Another client of the same site is judged on its own answers.
    let headers = [("x-api-key", "reader")];
    for i in 0..30 {
        let path = if i % 3 == 0 {
            "/favicon.ico"
        } else {
            "/articles/1"
        };
        assert_eq!(
            send(proxy.addr, "GET", path, &headers, vec![]).await.0,
            StatusCode::OK
        );
    }
    let series = "vigil_guard_results_total{guard=\"probing\",result=\"deny\"}";
    assert_eq!(metric(&proxy, series).await, 10);
    proxy.shutdown().await;
}
