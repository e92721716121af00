//! The C guard (`path-guard`), the Python guard (`method-allow`) and the JavaScript guard
//! (`idempotency-key`), built from source by `tests/artifacts`, held to the same standard as
//! the Rust ones: through the proxy each attack is refused with the right status while the
//! same volume of ordinary traffic is not, monitor mode lets everything through and counts
//! what it would have refused, and a bad configuration is refused at load naming the field.
//! Also: the compile cache.

use http::StatusCode;
use vigil_host::{Chain, CompileCache, Mode, OnError, Runtime, RuntimeConfig, World};
use vigil_tests::guards;
use vigil_tests::harness::{guard_table, metric, send, start_with_upstream, tempdir, Proxy};
use vigil_tests::{load, load_error, spec, with_policy, Decide};

const BASE: &str = "[upstream]\nurl = \"{upstream}\"\ntimeout = \"2s\"\n";

/// One request: method, path and query, headers.
type Call = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Sends each call and returns the statuses and the problem details' `detail`s.
async fn send_all(proxy: &Proxy, calls: &[Call]) -> Vec<(StatusCode, String)> {
    let mut out = Vec::new();
    for (method, target, headers) in calls {
        let (status, _, body) = send(proxy.addr, method, target, headers, vec![]).await;
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|p| p["detail"].as_str().map(String::from))
            .unwrap_or_default();
        out.push((status, detail));
    }
    out
}

/// Runs `attacks` and then as many `normal` calls (cycled) through a proxy with one guard in
/// `mode`, and checks what each mode promises.
async fn attack_and_normal(
    name: &str,
    module: &str,
    guard_config: &str,
    attacks: &[Call],
    normal: &[Call],
    status: StatusCode,
) {
    let normal: Vec<Call> = normal.iter().copied().cycle().take(attacks.len()).collect();
    let table = guard_table(
        name,
        module,
        &format!("deadline = \"500ms\"\nconfig = {guard_config}"),
    );
    let (up, proxy) = start_with_upstream(name, &format!("{BASE}{table}")).await;
    for ((call, (got, detail)), i) in attacks.iter().zip(send_all(&proxy, attacks).await).zip(0..) {
        assert_eq!(got, status, "attack {i} {call:?} was not refused: {detail}");
        assert!(!detail.is_empty(), "attack {i} {call:?}: no reason given");
    }
    assert_eq!(up.count(), 0, "no attack reached the upstream");
    for (call, (got, detail)) in normal.iter().zip(send_all(&proxy, &normal).await) {
        assert_eq!(
            got,
            StatusCode::OK,
            "ordinary {call:?} was refused: {detail}"
        );
    }
    assert_eq!(up.count(), normal.len());
    let denies = format!("vigil_guard_results_total{{guard=\"{name}\",result=\"deny\"}}");
    assert_eq!(metric(&proxy, &denies).await, attacks.len() as u64);
    proxy.shutdown().await;

    // Monitor mode: everything passes, and the guard's would-be refusals are counted.
    let monitored = format!("{name}-monitor");
    let table = guard_table(
        &monitored,
        module,
        &format!("mode = \"monitor\"\ndeadline = \"500ms\"\nconfig = {guard_config}"),
    );
    let (up, proxy) = start_with_upstream(&monitored, &format!("{BASE}{table}")).await;
    let mut all = attacks.to_vec();
    all.extend(&normal);
    for (call, (got, _)) in all.iter().zip(send_all(&proxy, &all).await) {
        assert_eq!(got, StatusCode::OK, "monitor mode refused {call:?}");
    }
    assert_eq!(up.count(), all.len());
    let denies =
        format!("vigil_guard_results_total{{guard=\"{monitored}\",result=\"would_deny\"}}");
    assert_eq!(metric(&proxy, &denies).await, attacks.len() as u64);
    let allows = format!("vigil_guard_results_total{{guard=\"{monitored}\",result=\"allow\"}}");
    assert_eq!(metric(&proxy, &allows).await, normal.len() as u64);
    proxy.shutdown().await;
}

/// A spec with a deadline that a loaded test machine cannot miss: instantiating CPython takes
/// about a millisecond alone.
fn roomy(mut spec: vigil_host::GuardSpec) -> vigil_host::GuardSpec {
    spec.limits = Some(vigil_host::SandboxLimits {
        deadline: std::time::Duration::from_millis(500),
        ..Default::default()
    });
    spec
}

/// Loading `name` with `config` fails with a message containing `expected`.
fn refused(rt: &Runtime, name: &str, config: &str, expected: &str) {
    let (_, text) = load_error(rt, roomy(spec(name, name, config)));
    assert!(text.contains(expected), "{config}: {text}");
}

// ---------------------------------------------------------------- path-guard (C)

const BROWSER: &[(&str, &str)] = &[(
    "user-agent",
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
)];

/// Traversals the proxy refuses itself (400) before any guard runs: climbing above the root,
/// encoded slashes and backslashes, broken escapes and `;` parameters (`[path]`'s defaults).
const REFUSED_BEFORE_THE_GUARDS: &[&str] = &[
    "/static/../../etc/passwd",
    "/files/%2e%2e/%2e%2e/etc/passwd",
    "/files/%2E%2E%2Fsecrets",
    "/files/..%5c..%5cwindows%5cwin.ini",
    "/files/%u002e%u002e/etc/passwd",
    "/app/..;/manager/html",
];

const PATH_ATTACKS: &[Call] = &[
    ("GET", "/files/%252e%252e%252fetc%252fpasswd", &[]),
    ("GET", "/files/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", &[]),
    ("GET", "/files/%e0%80%ae%e0%80%ae%c0%afboot.ini", &[]),
    ("GET", "/download?file=../../etc/passwd", &[]),
    ("GET", "/download?file=%2e%2e%2fetc%2fshadow", &[]),
    ("GET", "/files/report.pdf%00.png", &[]),
    ("GET", "/view?name=a%2500b", &[]),
    ("GET", "/.git/config", BROWSER),
    ("GET", "/.env", BROWSER),
    ("GET", "/app/.env.production", BROWSER),
    ("GET", "/wp-admin/install.php", BROWSER),
    ("POST", "/xmlrpc.php", BROWSER),
    ("GET", "/site/.backup", BROWSER),
    (
        "GET",
        "/users?id=1",
        &[("user-agent", "sqlmap/1.7.2#stable (https://sqlmap.org)")],
    ),
    (
        "GET",
        "/",
        &[("user-agent", "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None)")],
    ),
    ("GET", "/", &[("user-agent", "Fuzz Faster U Fool v2.1.0")]),
    ("GET", "/", &[("user-agent", "Evil-Bot/0.1")]),
];

const PATH_NORMAL: &[Call] = &[
    ("GET", "/", BROWSER),
    ("GET", "/users/42", BROWSER),
    ("GET", "/files/report.pdf", &[("user-agent", "curl/8.5.0")]),
    ("GET", "/search?q=a..b&sort=asc", BROWSER),
    ("GET", "/docs/v1.2/intro..html", BROWSER),
    ("GET", "/static/app.min.js", BROWSER),
    ("GET", "/users/42/orders?page=2", BROWSER),
    ("GET", "/images/logo%20big.png", BROWSER),
    ("POST", "/cart/items", BROWSER),
    ("GET", "/.well-known/openid-configuration", BROWSER),
    ("GET", "/repos/vigil/.github/workflows", BROWSER),
    ("GET", "/env/settings", BROWSER),
];

const PATH_CONFIG: &str = r#"{ user_agents = ["evil-bot"], paths = [".backup"] }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_the_plainest_traversals_before_the_path_guard_sees_them() {
    let table = guard_table(
        "path-guard",
        guards::PATH_GUARD,
        &format!("config = {PATH_CONFIG}"),
    );
    let (up, proxy) = start_with_upstream("path-guard-normalised", &format!("{BASE}{table}")).await;
    for target in REFUSED_BEFORE_THE_GUARDS {
        let (status, _, body) = send(proxy.addr, "GET", target, &[], vec![]).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{target}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(up.count(), 0);
    let denies = "vigil_guard_results_total{guard=\"path-guard\",result=\"deny\"}";
    assert_eq!(metric(&proxy, denies).await, 0, "the guard never saw them");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_guard_refuses_traversal_nul_and_scanners_but_not_ordinary_traffic() {
    attack_and_normal(
        "path-guard",
        guards::PATH_GUARD,
        PATH_CONFIG,
        PATH_ATTACKS,
        PATH_NORMAL,
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[test]
fn path_guard_status_checks_reasons_and_findings() {
    let rt = vigil_tests::runtime();
    let config = r#"{"status": 400, "checks": {"scanners": false}}"#;
    let guard = load(&rt, spec("paths", "path-guard", config));
    assert_eq!(
        guard.world(),
        World::Guard,
        "wit-bindgen's C output binds records"
    );
    assert_eq!(
        (guard.needs().headers, guard.needs().responses.is_empty()),
        (true, true),
        "the C guard declares it reads headers and not responses"
    );
    let chain = Chain::new(vec![guard]).unwrap();
    let denial = |path: &str, ua: &str| {
        let mut req = vigil_tests::request("GET", path, "c", &[("user-agent", ua)]);
        chain.decide(&mut req).denial.map(|d| (d.status, d.reason))
    };
    assert_eq!(
        denial("/a/%2e%2e/b", "curl/8"),
        Some((400, "path traversal".to_string()))
    );
    assert_eq!(
        denial("/a%00", "curl/8"),
        Some((400, "NUL byte in the request target".to_string()))
    );
    assert_eq!(denial("/.git/HEAD", "sqlmap/1.7"), None, "scanners is off");
    let kinds: Vec<String> = rt.drain_findings().into_iter().map(|f| f.kind).collect();
    assert_eq!(kinds, ["path-traversal", "nul-byte"]);

    let chain = Chain::new(vec![load(&rt, spec("all", "path-guard", "{}"))]).unwrap();
    let mut req = vigil_tests::request("GET", "/.git/HEAD", "c", &[]);
    let denial = chain.decide(&mut req).denial.expect("scanner probe");
    assert_eq!(
        (denial.status, denial.reason.as_str()),
        (403, "scanner probe of .git")
    );
}

#[test]
fn path_guard_refuses_bad_configs_naming_the_field() {
    let rt = vigil_tests::runtime();
    for (config, expected) in [
        (
            r#"{"status": 200}"#,
            "status: must be an integer from 400 to 599",
        ),
        (r#"{"status": 403.5}"#, "status"),
        (
            r#"{"checks": {"sqli": true}}"#,
            "checks.sqli: unknown check",
        ),
        (
            r#"{"checks": {"nul": "yes"}}"#,
            "checks.nul: must be true or false",
        ),
        (r#"{"checks": []}"#, "checks: must be an object"),
        (r#"{"user_agents": ["ok", ""]}"#, "user_agents[1]"),
        (r#"{"paths": ".git"}"#, "paths: must be a list of strings"),
        (r#"{"colour": 1}"#, "unknown field `colour`"),
        ("{nope", "config: not valid JSON"),
    ] {
        refused(&rt, "path-guard", config, expected);
    }
}

// ---------------------------------------------------------------- method-allow (Python)

const METHOD_CONFIG: &str = r#"{ routes = { "/users/{id}" = ["GET", "PUT"], "/login" = ["POST"], "/health" = ["*"] }, default = ["GET", "POST"] }"#;

const METHOD_ATTACKS: &[Call] = &[
    ("DELETE", "/users/42", &[]),
    ("POST", "/users/7", &[]),
    ("PATCH", "/users/1", &[]),
    ("GET", "/login", &[]),
    ("PUT", "/login", &[]),
    ("DELETE", "/login", &[]),
    ("DELETE", "/orders", &[]),
    ("PUT", "/orders", &[]),
    ("OPTIONS", "/users/42", &[]),
    ("TRACE", "/login", &[]),
];

const METHOD_NORMAL: &[Call] = &[
    ("GET", "/users/42", &[]),
    ("PUT", "/users/42", &[]),
    ("HEAD", "/users/3", &[]),
    ("POST", "/login", &[]),
    ("GET", "/orders", &[]),
    ("POST", "/orders", &[]),
    ("DELETE", "/health", &[]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_allow_refuses_methods_outside_the_route_set_but_not_ordinary_traffic() {
    attack_and_normal(
        "method-allow",
        guards::METHOD_ALLOW,
        METHOD_CONFIG,
        METHOD_ATTACKS,
        METHOD_NORMAL,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_allow_names_the_allowed_methods_and_uses_the_configured_status() {
    let table = guard_table(
        "methods",
        guards::METHOD_ALLOW,
        "deadline = \"500ms\"\nconfig = { routes = { \"/users/{id}\" = [\"GET\", \"put\"] }, status = 403, implicit_head = false }",
    );
    let (_up, proxy) = start_with_upstream("method-reason", &format!("{BASE}{table}")).await;
    let calls: &[Call] = &[("DELETE", "/users/42", &[]), ("HEAD", "/users/42", &[])];
    let answers = send_all(&proxy, calls).await;
    assert_eq!(
        answers[0],
        (
            StatusCode::FORBIDDEN,
            "method DELETE not allowed on /users/{id}; allow: GET, PUT".to_string()
        )
    );
    assert_eq!(answers[1].0, StatusCode::FORBIDDEN, "HEAD is not implied");
    proxy.shutdown().await;
}

#[test]
fn method_allow_refuses_bad_configs_naming_the_field() {
    let rt = vigil_tests::runtime();
    for (config, expected) in [
        ("{}", "routes: required"),
        (
            r#"{"routes": {"/x": []}}"#,
            "routes./x: must be a non-empty list",
        ),
        (
            r#"{"routes": {"/x": ["GET", "NOT A METHOD"]}}"#,
            "routes./x[1]: \"NOT A METHOD\"",
        ),
        (
            r#"{"routes": {"x": ["GET"]}}"#,
            "routes.x: a route starts with /",
        ),
        (
            r#"{"routes": {"/x": ["GET"]}, "status": 200}"#,
            "status: must be an integer",
        ),
        (
            r#"{"routes": {"/x": ["GET"]}, "status": true}"#,
            "status: must be an integer",
        ),
        (
            r#"{"routes": {"/x": ["GET"]}, "default": "GET"}"#,
            "default: must be a non-empty list",
        ),
        (
            r#"{"routes": {"/x": ["GET"]}, "implicit_head": 1}"#,
            "implicit_head",
        ),
        (r#"{"routez": {}}"#, "unknown field `routez`"),
        ("[1]", "config: must be an object"),
    ] {
        refused(&rt, "method-allow", config, expected);
    }
    let config = r#"{"routes": {"/x": ["GET"]}}"#;
    let guard = load(&rt, roomy(spec("methods", "method-allow", config)));
    assert_eq!(guard.world(), World::Guard, "componentize-py binds records");
}

/// A bad configuration in vigil.toml stops the sidecar at start with the guard and the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_guard_config_in_vigil_toml_names_guard_and_field() {
    for (module, guard_config, field) in [
        (guards::PATH_GUARD, "{ status = 99 }", "status"),
        (
            guards::METHOD_ALLOW,
            r#"{ routes = { "/x" = [] } }"#,
            "routes./x",
        ),
        (guards::IDEMPOTENCY_KEY, "{ max_length = 0 }", "max_length"),
    ] {
        let dir = tempdir("polyglot-bad-config");
        let text = format!(
            "{}{}",
            BASE.replace("{upstream}", "http://127.0.0.1:9"),
            guard_table(
                "strict",
                module,
                &format!("deadline = \"500ms\"\nconfig = {guard_config}")
            )
        );
        let path = dir.join("vigil.toml");
        std::fs::write(&path, text).unwrap();
        let config = vigil::config::Config::load(&path, &Default::default()).expect("parses");
        let started = tokio::task::spawn_blocking(move || {
            vigil::sidecar::Sidecar::new(config, Default::default()).map(|_| ())
        })
        .await
        .unwrap();
        let error = match started {
            Ok(()) => panic!("{module} with {guard_config} should be refused"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains("strict") && error.contains(field), "{error}");
    }
}

// ---------------------------------------------------------------- idempotency-key (JavaScript)

/// Idempotency-key guards `POST /orders` and `POST /status/*` (the upstream answers those with
/// the status in the path).
const IDEMPOTENCY_ROUTES: &str = "routes = [\"POST /orders\", \"POST /status/*\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_refuses_missing_bad_and_repeated_keys_through_the_proxy() {
    let table = guard_table(
        "idempotency",
        guards::IDEMPOTENCY_KEY,
        &format!("{IDEMPOTENCY_ROUTES}\nconfig = {{ window_secs = 600 }}"),
    );
    let (up, proxy) = start_with_upstream("idempotency-key", &format!("{BASE}{table}")).await;
    let long: &'static str = "k".repeat(256).leak();
    let too_long: &'static [(&str, &str)] = vec![("idempotency-key", long)].leak();
    let calls: &[Call] = &[
        ("POST", "/orders", &[]),
        ("POST", "/orders", &[("idempotency-key", "two words")]),
        ("POST", "/orders", too_long),
        ("POST", "/orders", &[("idempotency-key", "order-1")]),
        ("POST", "/orders", &[("idempotency-key", "order-1")]),
        ("POST", "/orders", &[("idempotency-key", "\"order-2\"")]),
        ("POST", "/orders", &[("idempotency-key", "order-2")]),
        ("GET", "/orders", &[]),
    ];
    let answers = send_all(&proxy, calls).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(
        statuses,
        [428, 400, 400, 200, 409, 200, 409, 200],
        "{answers:?}"
    );
    assert_eq!(answers[0].1, "idempotency-key header required");
    assert_eq!(
        answers[1].1,
        "idempotency-key must be visible ASCII characters"
    );
    assert_eq!(
        answers[2].1,
        "idempotency-key must be 1 to 255 characters long"
    );
    assert!(
        answers[4]
            .1
            .starts_with("idempotency-key order-1 was already used ")
            && answers[4].1.ends_with(" s ago"),
        "{answers:?}"
    );
    assert_eq!(
        up.count(),
        3,
        "only the first use of each key and the GET went through"
    );
    let denies = "vigil_guard_results_total{guard=\"idempotency\",result=\"deny\"}";
    assert_eq!(metric(&proxy, denies).await, 5);

    // A submission the upstream failed frees its key for the retry; one it accepted does not.
    let calls: &[Call] = &[
        ("POST", "/status/503", &[("idempotency-key", "pay-1")]),
        ("POST", "/status/503", &[("idempotency-key", "pay-1")]),
        ("POST", "/status/201", &[("idempotency-key", "pay-2")]),
        ("POST", "/status/201", &[("idempotency-key", "pay-2")]),
    ];
    let statuses: Vec<u16> = send_all(&proxy, calls)
        .await
        .iter()
        .map(|(s, _)| s.as_u16())
        .collect();
    assert_eq!(statuses, [503, 503, 201, 409]);
    assert_eq!(up.count(), 6);
    proxy.shutdown().await;
}

/// A request of `client` with `key` as its idempotency key, received at `received_ms`.
fn keyed(client: &str, key: &str, received_ms: u64) -> vigil_host::Request {
    let mut req = vigil_tests::request("POST", "/orders", client, &[("idempotency-key", key)]);
    req.received_ms = received_ms;
    req
}

#[test]
fn idempotency_key_remembers_each_clients_keys_for_the_window_in_host_state() {
    let start = std::time::Duration::from_secs(1_700_000_000);
    let clock = vigil_host::clock::ManualClock::new(start);
    let mut config = RuntimeConfig {
        clock: clock.clone(),
        ..RuntimeConfig::default()
    };
    config.default_limits.deadline = vigil_tests::RELAXED_DEADLINE;
    let rt = Runtime::new(config).unwrap();
    let config = r#"{"header": "X-Request-Key", "window_secs": 60, "required": false, "release_on_5xx": false}"#;
    let guard = load(&rt, roomy(spec("keys", "idempotency-key", config)));
    assert_eq!(guard.world(), World::Guard, "componentize-js binds records");
    assert_eq!(
        guard.header_fields(),
        &vigil_host::HeaderFields::Named(vec!["x-request-key".to_string()].into()),
        "reads-headers from init narrows what the guard is sent"
    );
    let chain = Chain::new(vec![guard]).unwrap();
    let now = start.as_millis() as u64;
    let status = |mut req: vigil_host::Request| chain.decide(&mut req).denial.map(|d| d.status);
    let header = |client: &str, key: &str| {
        let mut req = keyed(client, key, now);
        req.headers[0].name = "x-request-key".into();
        req
    };
    assert_eq!(status(header("alice", "k1")), None);
    assert_eq!(status(header("alice", "k1")), Some(409));
    assert_eq!(status(header("bob", "k1")), None, "keys are per client");
    assert_eq!(
        status(keyed("alice", "k2", now)),
        None,
        "not required: another header is no key"
    );

    // With release_on_5xx off, a failed submission keeps its key.
    let mut req = header("carol", "k1");
    let decision = chain.decide(&mut req);
    assert!(decision.denial.is_none());
    let failed = vigil_host::Response {
        status: 500,
        headers: Vec::new(),
        latency_us: 1,
    };
    chain.observe(&mut req, &failed, &decision);
    assert_eq!(status(header("carol", "k1")), Some(409));

    clock.advance(std::time::Duration::from_secs(61));
    assert_eq!(status(header("alice", "k1")), None, "the window is over");
}

#[test]
fn idempotency_key_refuses_bad_configs_naming_the_field() {
    let rt = vigil_tests::runtime();
    for (config, expected) in [
        (
            r#"{"header": "two words"}"#,
            "header: must be a header field name",
        ),
        (r#"{"header": 7}"#, "header: must be a header field name"),
        (r#"{"required": "yes"}"#, "required: must be true or false"),
        (
            r#"{"window_secs": 0}"#,
            "window_secs: must be an integer from 1 to 604800",
        ),
        (r#"{"window_secs": 1.5}"#, "window_secs: must be an integer"),
        (
            r#"{"max_length": 2000}"#,
            "max_length: must be an integer from 1 to 1024",
        ),
        (
            r#"{"release_on_5xx": 1}"#,
            "release_on_5xx: must be true or false",
        ),
        (r#"{"colour": 1}"#, "unknown field `colour`"),
        ("[1]", "config: must be an object"),
        ("{nope", "config: not valid JSON"),
    ] {
        refused(&rt, "idempotency-key", config, expected);
    }
}

// ---------------------------------------------------------------- compile cache

fn cached_runtime(directory: std::path::PathBuf) -> Runtime {
    Runtime::new(RuntimeConfig {
        compile_cache: Some(CompileCache {
            directory,
            max_bytes: 64 << 20,
        }),
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

#[test]
fn second_load_of_a_guard_comes_from_the_compile_cache() {
    let dir = tempdir("compile-cache");
    let first = cached_runtime(dir.clone());
    load(&first, roomy(spec("paths", "path-guard", "{}")));
    assert_eq!(first.compile_cache_counts(), (0, 1));
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_some(),
        "nothing cached"
    );

    let second = cached_runtime(dir);
    let guard = load(&second, roomy(spec("paths", "path-guard", "{}")));
    assert_eq!(second.compile_cache_counts(), (1, 0));
    let chain = Chain::new(vec![guard]).unwrap();
    let mut req = vigil_tests::request("GET", "/%2e%2e/x", "c", &[]);
    assert_eq!(chain.decide(&mut req).denial.map(|d| d.status), Some(403));
}

#[test]
fn an_unusable_compile_cache_only_costs_compilation() {
    let dir = tempdir("compile-cache-unusable");
    let file = dir.join("not-a-directory");
    std::fs::write(&file, "x").unwrap();
    let rt = cached_runtime(file.join("cache"));
    let guard = with_policy(
        spec("paths", "path-guard", "{}"),
        Mode::Enforce,
        OnError::Deny,
    );
    load(&rt, guard);
    assert_eq!(rt.compile_cache_counts(), (0, 0));
}
