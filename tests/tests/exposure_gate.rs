//! `vigil exposure` end to end: the real binary against a real `vigil collect` fed with
//! reports, one service that breaks every condition and one that breaks none; exit codes,
//! the three formats, and the errors a pipeline can meet.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use vigil_tests::collector::{endpoint, key, public_endpoint, report, CollectorProcess};
use vigil_tests::process::{free_port, vigil_binary};

const KNOWN: &str = r#"[
  {"method": "GET", "route": "/users/{id}", "id": "CVE-2026-0001", "severity": "critical",
   "title": "Profile IDOR", "service": "shop", "fixed_in": "3.0"},
  {"method": "GET", "route": "/invoices", "id": "VULN-9", "severity": "high",
   "title": "Invoice listing leaks totals", "service": "billing"},
  {"method": "GET", "route": "/orders", "id": "VULN-3", "severity": "critical",
   "title": "Order export", "service": "clean"}
]"#;

const KINDS: [&str; 6] = [
    "internal-public",
    "critical-vuln-public",
    "shadow",
    "zombie",
    "unauthenticated",
    "unverified-fix",
];

/// A collector that knows three services: `shop` breaks every condition, `clean` none (its
/// critical vulnerability is on an endpoint reached only with credentials), `billing` has a
/// high vulnerability on a public unauthenticated endpoint. shop's critical one is fixed in
/// 3.0, which shop-2 runs while shop-1 still runs 2.9.
fn fleet(name: &str) -> CollectorProcess {
    let dir = vigil_tests::process::temp_dir(&format!("gate-known-{name}"));
    let known = dir.join("known.json");
    std::fs::write(&known, KNOWN).unwrap();
    let collector = CollectorProcess::start(
        name,
        &format!("[vulnerabilities]\nknown = [\"{}\"]\n", known.display()),
    );
    let mut shop = report("shop", "shop-1", 1, 1);
    shop.version = Some("2.9".into());
    let mut admin = public_endpoint("GET", "/admin/stats", 3, 3);
    admin.internal_only = true;
    let mut debug = endpoint("GET", "/debug/vars", 2);
    debug.shadow = true;
    shop.endpoints = vec![admin, public_endpoint("GET", "/users/{id}", 4, 0), debug];
    shop.documented = vec![
        key("GET", "/admin/stats"),
        key("GET", "/users/{id}"),
        key("GET", "/legacy/export"),
    ];
    collector.apply(&shop);
    let mut upgraded = report("shop", "shop-2", 1, 1);
    upgraded.version = Some("3.0".into());
    upgraded.endpoints = vec![endpoint("GET", "/users/{id}", 1)];
    collector.apply(&upgraded);
    let mut clean = report("clean", "clean-1", 1, 1);
    clean.endpoints = vec![
        public_endpoint("GET", "/orders", 5, 5),
        endpoint("GET", "/admin/stats", 2),
    ];
    clean.endpoints[1].internal_only = true;
    clean.documented = vec![key("GET", "/orders"), key("GET", "/admin/stats")];
    collector.apply(&clean);
    let mut billing = report("billing", "billing-1", 1, 1);
    billing.endpoints = vec![public_endpoint("GET", "/invoices", 2, 0)];
    billing.documented = vec![key("GET", "/invoices")];
    collector.apply(&billing);
    collector
}

fn exposure(args: &[&str]) -> Output {
    Command::new(vigil_binary())
        .arg("exposure")
        .args(args)
        .env_remove("VIGIL_COLLECTOR")
        .env_remove("VIGIL_COLLECTOR_TOKEN")
        .output()
        .expect("vigil runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn each_kind_fails_where_it_holds_and_passes_where_it_does_not() {
    let collector = fleet("gate-kinds");
    let url = collector.api_url();
    let expected = [
        ("internal-public", "GET /admin/stats is internal-only and was reached by 3 public request(s)"),
        ("critical-vuln-public", "CVE-2026-0001 (critical, Profile IDOR) is on GET /users/{id}"),
        ("shadow", "GET /debug/vars was reached (2 request(s)) but the OpenAPI document does not declare it"),
        ("zombie", "GET /legacy/export is declared in the OpenAPI document and was never reached"),
        ("unauthenticated", "GET /users/{id} answered 2xx to 4 public request(s) without credentials"),
        ("unverified-fix", "CVE-2026-0001 on GET /users/{id} is fixed in 3.0: shop-1 (2.9) still run an affected version; affected builds served 0 public request(s) since the fix was deployed"),
    ];
    for (kind, why) in expected {
        let failed = exposure(&["--collector", &url, "--service", "shop", "--fail-on", kind]);
        let text = stdout(&failed);
        assert_eq!(
            failed.status.code(),
            Some(1),
            "{kind} on shop:\n{text}{}",
            stderr(&failed)
        );
        assert!(text.contains(&format!("FAIL  {kind}")), "{kind}:\n{text}");
        assert!(text.contains(why), "{kind} should say {why:?}:\n{text}");
        assert!(
            text.contains(&format!("gate FAILED: {kind} hold(s)")),
            "{text}"
        );
        let passed = exposure(&["--collector", &url, "--service", "clean", "--fail-on", kind]);
        let text = stdout(&passed);
        assert_eq!(
            passed.status.code(),
            Some(0),
            "{kind} on clean:\n{text}{}",
            stderr(&passed)
        );
        assert!(text.contains(&format!("pass  {kind}")), "{kind}:\n{text}");
        assert!(text.contains("gate passed"), "{text}");
    }
    // Every kind at once on clean, as a pipeline would set it.
    let all = KINDS.join(",");
    let clean = exposure(&["--collector", &url, "--service", "clean", "--fail-on", &all]);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    // Kinds left out of --fail-on are reported, not failed on.
    let noted = exposure(&[
        "--collector",
        &url,
        "--service",
        "shop",
        "--fail-on",
        "zombie",
    ]);
    let text = stdout(&noted);
    assert_eq!(noted.status.code(), Some(1));
    assert!(
        text.contains("note  shadow") && text.contains("(not in --fail-on)"),
        "{text}"
    );
    let report_only = exposure(&["--collector", &url, "--service", "shop"]);
    assert_eq!(
        report_only.status.code(),
        Some(0),
        "{}",
        stdout(&report_only)
    );
    // Without --service, every service is checked.
    let fleet_wide = exposure(&["--collector", &url, "--fail-on", "internal-public"]);
    assert_eq!(fleet_wide.status.code(), Some(1));
    assert!(
        stdout(&fleet_wide).contains("shop: GET /admin/stats"),
        "{}",
        stdout(&fleet_wide)
    );
}

#[test]
fn the_severity_threshold_decides_which_vulnerabilities_count() {
    let collector = fleet("gate-severity");
    let url = collector.api_url();
    let gate = |extra: &[&str]| {
        let mut args = vec![
            "--collector",
            &url,
            "--service",
            "billing",
            "--fail-on",
            "critical-vuln-public",
        ];
        args.extend_from_slice(extra);
        exposure(&args)
    };
    assert_eq!(
        gate(&[]).status.code(),
        Some(0),
        "a high one is not critical"
    );
    let high = gate(&["--severity", "high"]);
    assert_eq!(high.status.code(), Some(1), "{}", stdout(&high));
    assert!(
        stdout(&high).contains("VULN-9 (high, Invoice listing leaks totals) is on GET /invoices")
    );
    let bad = gate(&["--severity", "urgent"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(stderr(&bad).contains("--severity: \"urgent\" is not a severity; use one of critical, high, medium, low, info"), "{}", stderr(&bad));
}

#[test]
fn json_and_sarif_reports_carry_every_violation() {
    let collector = fleet("gate-formats");
    let url = collector.api_url();
    let json = exposure(&[
        "--collector",
        &url,
        "--service",
        "shop",
        "--fail-on",
        "internal-public,zombie",
        "--format",
        "json",
    ]);
    assert_eq!(json.status.code(), Some(1));
    let outcome: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON on stdout");
    assert_eq!(outcome["passed"], false);
    assert_eq!(outcome["service"], "shop");
    let checks = outcome["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 6);
    let check = |kind: &str| checks.iter().find(|c| c["kind"] == kind).unwrap().clone();
    assert_eq!(check("internal-public")["failed"], true);
    assert_eq!(check("zombie")["failed"], true);
    assert_eq!(check("shadow")["failed"], false);
    assert_eq!(check("shadow")["violations"], 1);
    let violations = outcome["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 6, "{violations:#?}");
    assert_eq!(violations[0]["kind"], "internal-public");
    assert_eq!(violations[0]["route"], "/admin/stats");
    assert_eq!(violations[0]["fails"], true);

    let dir = vigil_tests::process::temp_dir("gate-sarif");
    let file = dir.join("exposure.sarif");
    let sarif = exposure(&[
        "--collector",
        &url,
        "--service",
        "shop",
        "--fail-on",
        "internal-public",
        "--format",
        "sarif",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(sarif.status.code(), Some(1));
    // With --output, the text summary goes to standard output for the pipeline's log.
    assert!(
        stdout(&sarif).contains("FAIL  internal-public"),
        "{}",
        stdout(&sarif)
    );
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(log["version"], "2.1.0");
    assert!(log["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &log["runs"][0];
    let driver = &run["tool"]["driver"];
    assert_eq!(driver["name"], "vigil exposure");
    assert!(driver["informationUri"]
        .as_str()
        .unwrap()
        .starts_with("http://"));
    let rules = driver["rules"].as_array().unwrap();
    let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, KINDS);
    for rule in rules {
        assert!(
            !rule["shortDescription"]["text"]
                .as_str()
                .unwrap()
                .is_empty(),
            "{rule}"
        );
    }
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    for result in results {
        let rule = result["ruleId"].as_str().unwrap();
        assert!(ids.contains(&rule), "{result}");
        assert_eq!(ids[result["ruleIndex"].as_u64().unwrap() as usize], rule);
        let level = result["level"].as_str().unwrap();
        assert_eq!(
            level,
            if rule == "internal-public" {
                "error"
            } else {
                "warning"
            },
            "{result}"
        );
        assert!(
            result["message"]["text"]
                .as_str()
                .unwrap()
                .starts_with("shop: "),
            "{result}"
        );
        let location = &result["locations"][0];
        let name = location["logicalLocations"][0]["fullyQualifiedName"]
            .as_str()
            .unwrap();
        assert!(name.starts_with("shop/GET /"), "{result}");
        let uri = location["physicalLocation"]["artifactLocation"]["uri"]
            .as_str()
            .unwrap();
        assert!(
            uri.starts_with("shop/GET/") && !uri.contains('{') && !uri.contains(' '),
            "{uri}"
        );
    }
    let admin = results
        .iter()
        .find(|r| r["ruleId"] == "internal-public")
        .unwrap();
    assert_eq!(
        admin["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
        "shop/GET /admin/stats"
    );
    let idor = results
        .iter()
        .find(|r| r["ruleId"] == "critical-vuln-public")
        .unwrap();
    assert_eq!(
        idor["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "shop/GET/users/%7Bid%7D"
    );

    let unwritable = exposure(&[
        "--collector",
        &url,
        "--output",
        "/nonexistent-dir/x.sarif",
        "--format",
        "sarif",
    ]);
    assert_eq!(unwritable.status.code(), Some(64));
    assert!(
        stderr(&unwritable).contains("--output /nonexistent-dir/x.sarif: cannot write"),
        "{}",
        stderr(&unwritable)
    );
}

/// A server answering every request with `answer`, keeping the request heads it received.
fn canned(answer: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (url, heads)
}

#[test]
fn errors_name_the_cause_and_exit_apart_from_a_failed_gate() {
    // Nothing listens on this port.
    let down = format!("http://127.0.0.1:{}", free_port());
    let refused = exposure(&["--collector", &down, "--fail-on", "shadow"]);
    assert_eq!(refused.status.code(), Some(69));
    let error = stderr(&refused);
    assert!(
        error.contains(&format!("{down}/api/endpoints: cannot reach the collector")),
        "{error}"
    );
    assert!(error.to_lowercase().contains("refused"), "{error}");

    for (url, why) in [
        (
            "ftp://collector:9001",
            "expected an http:// or https:// URL",
        ),
        ("collector:9001", "expected an http:// or https:// URL"),
        (
            "http://collector:9001/?service=shop",
            "the base URL takes no query",
        ),
    ] {
        let bad = exposure(&["--collector", url]);
        assert_eq!(bad.status.code(), Some(64), "{url}");
        assert!(
            stderr(&bad).contains(&format!("--collector {url:?}: {why}")),
            "{}",
            stderr(&bad)
        );
    }

    let unknown = exposure(&["--collector", &down, "--fail-on", "shadow,exposed"]);
    assert_eq!(unknown.status.code(), Some(64));
    assert!(
        stderr(&unknown).contains("--fail-on: unknown kind \"exposed\"; the kinds are internal-public, critical-vuln-public, shadow, zombie, unauthenticated, unverified-fix"),
        "{}",
        stderr(&unknown)
    );

    let plain_ca = exposure(&["--collector", &down, "--ca", "ca.crt"]);
    assert_eq!(plain_ca.status.code(), Some(64));
    assert!(
        stderr(&plain_ca).contains("--ca ca.crt: the collector"),
        "{}",
        stderr(&plain_ca)
    );
    let missing_ca = exposure(&[
        "--collector",
        "https://127.0.0.1:1",
        "--ca",
        "/nonexistent/ca.crt",
    ]);
    assert_eq!(missing_ca.status.code(), Some(64));
    assert!(
        stderr(&missing_ca).contains("/nonexistent/ca.crt"),
        "{}",
        stderr(&missing_ca)
    );

    // The ingest listener is not the API: a 404 with the collector's own explanation.
    let collector = CollectorProcess::start("gate-errors", "");
    let ingest = format!("http://{}", collector.ingest);
    let not_api = exposure(&["--collector", &ingest]);
    assert_eq!(not_api.status.code(), Some(69));
    assert!(
        stderr(&not_api).contains(&format!("{ingest}/api/endpoints: the collector answered 404 Not Found: this listener takes POST /v1/reports")),
        "{}",
        stderr(&not_api)
    );

    // A server that is not the collector: 200 with a page, not JSON. The token goes along.
    let (page, heads) = canned(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 6\r\nconnection: close\r\n\r\n<html>",
    );
    let output = Command::new(vigil_binary())
        .args(["exposure", "--collector", &page, "--service", "web shop"])
        .env("VIGIL_COLLECTOR_TOKEN", "api-token-42")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(69));
    assert!(
        stderr(&output).contains(&format!(
            "{page}/api/endpoints?service=web%20shop: the answer is not the collector API's JSON"
        )),
        "{}",
        stderr(&output)
    );
    let heads = heads.lock().unwrap();
    assert!(
        heads[0].starts_with("GET /api/endpoints?service=web%20shop HTTP/1.1"),
        "{heads:?}"
    );
    assert!(
        heads[0]
            .to_lowercase()
            .contains("authorization: bearer api-token-42"),
        "{heads:?}"
    );
}

#[test]
fn an_https_collector_is_verified_with_the_ca_given() {
    use vigil_tests::pki::TestCa;
    let ca = TestCa::new("gate-ca");
    let dir = vigil_tests::process::temp_dir("gate-tls");
    let ca_file = ca.write(&dir, "ca");
    let server = ca.server(&["127.0.0.1"]);
    let answers = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]";
    let addr = tls_server(&server, answers);
    let url = format!("https://{addr}");
    let verified = exposure(&[
        "--collector",
        &url,
        "--ca",
        ca_file.to_str().unwrap(),
        "--fail-on",
        "shadow",
    ]);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}{}",
        stdout(&verified),
        stderr(&verified)
    );
    assert!(
        stdout(&verified).contains("0 endpoint(s)"),
        "{}",
        stdout(&verified)
    );
    // Without the CA, the system's roots do not know the certificate.
    let unverified = exposure(&["--collector", &url, "--fail-on", "shadow"]);
    assert_eq!(
        unverified.status.code(),
        Some(69),
        "{}",
        stderr(&unverified)
    );
    assert!(
        stderr(&unverified).contains(&format!("{url}/api/endpoints: cannot reach the collector")),
        "{}",
        stderr(&unverified)
    );
}

/// A TLS server with `issued` answering every request with `answer`.
fn tls_server(issued: &vigil_tests::pki::Issued, answer: &'static str) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(issued.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut tcp) = stream else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(mut connection) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                if !head.is_empty() {
                    let _ = tls.write_all(answer.as_bytes());
                    let _ = tls.flush();
                }
                connection.send_close_notify();
                let _ = connection.write_tls(&mut tcp);
            });
        }
    });
    addr
}
