//! The stock guards (rate-limit, sequence, credential-stuffing, enumeration), compiled from
//! `example-guards/` and run through the host: each attack is refused with the right status,
//! the same volume of ordinary traffic is not, monitor mode only records, and bad
//! configurations are refused naming the field.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use vigil_host::clock::{Clock, ManualClock};
use vigil_host::{Chain, Decision, GuardResult, Mode, OnError, Request, Response, Runtime};
use vigil_tests::{load, load_error, spec, with_policy, Decide};

/// One guard on a runtime whose clock only moves when told to.
struct Bench {
    rt: Runtime,
    clock: Arc<ManualClock>,
    chain: Chain,
}

fn bench(crate_name: &str, config: &str, mode: Mode, body_limit: usize) -> Bench {
    let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
    let mut runtime_config = vigil_host::RuntimeConfig {
        clock: clock.clone(),
        ..vigil_host::RuntimeConfig::default()
    };
    // A call descheduled past the product's deadline on a busy machine would fail open, and
    // the decision under test go missing.
    runtime_config.default_limits.deadline = vigil_tests::RELAXED_DEADLINE;
    let rt = Runtime::new(runtime_config).expect("runtime starts");
    let mut s = with_policy(spec(crate_name, crate_name, config), mode, OnError::Allow);
    s.body_limit = body_limit;
    let chain = Chain::new(vec![load(&rt, s)]).expect("chain");
    Bench { rt, clock, chain }
}

impl Bench {
    fn request(&self, method: &str, path: &str, client: &str) -> Request {
        let mut req = vigil_tests::request(method, path, client, &[]);
        req.received_ms = self.clock.now_ms();
        req
    }

    /// Evaluates the request and, as the proxy does, shows the guard the response: `status`
    /// from the upstream when allowed, the denial's status otherwise.
    fn exchange(&self, req: Request, status: u16) -> Decision {
        self.exchange_with(req, status, &[])
    }

    /// [`Bench::exchange`] with the upstream's response carrying these header fields.
    fn exchange_with(&self, mut req: Request, status: u16, headers: &[(&str, &str)]) -> Decision {
        let decision = self.chain.decide(&mut req);
        let (status, headers) = match &decision.denial {
            Some(denial) => (denial.status, vec![]),
            None => (
                status,
                headers
                    .iter()
                    .map(|(n, v)| vigil_host::Header {
                        name: n.to_string(),
                        value: v.as_bytes().to_vec(),
                    })
                    .collect(),
            ),
        };
        let response = Response {
            status,
            headers,
            latency_us: 1000,
        };
        self.chain.observe(&mut req, &response, &decision);
        decision
    }

    fn send(&self, method: &str, path: &str, client: &str, status: u16) -> Decision {
        self.exchange(self.request(method, path, client), status)
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn finding_kinds(&self) -> Vec<String> {
        self.rt
            .drain_findings()
            .into_iter()
            .map(|f| f.kind)
            .collect()
    }
}

/// The status the guard wanted to answer with, applied or not.
fn wanted(decision: &Decision) -> Option<u16> {
    decision.outcomes.iter().find_map(|o| match &o.result {
        GuardResult::Denied(deny) => Some(deny.status),
        _ => None,
    })
}

fn denied(decision: &Decision) -> u16 {
    decision
        .denial
        .as_ref()
        .unwrap_or_else(|| panic!("expected a denial: {:?}", decision.outcomes))
        .status
}

fn assert_allowed(decision: &Decision, what: &str) {
    assert!(decision.allowed(), "{what}: {:?}", decision.outcomes);
}

/// Loading `crate_name` with `config` fails with a message containing `expected`.
fn refused(crate_name: &str, config: &str, expected: &str) {
    let rt = vigil_tests::runtime();
    let (_, text) = load_error(&rt, spec(crate_name, crate_name, config));
    assert!(text.contains(expected), "{config}: {text}");
}

/// Monitor mode lets every request of the attack through, and the outcome records what
/// enforce mode would have answered.
fn assert_monitored(decisions: &[Decision], status: u16) {
    assert!(decisions.iter().all(Decision::allowed));
    let would_deny: Vec<&Decision> = decisions.iter().filter(|d| wanted(d).is_some()).collect();
    assert!(!would_deny.is_empty(), "monitor mode recorded no denial");
    for d in would_deny {
        assert_eq!(wanted(d), Some(status));
        assert!(!d.outcomes[0].applied);
        assert_eq!(d.outcomes[0].mode, Mode::Monitor);
    }
}

// ---------------------------------------------------------------- rate-limit

const RATE: &str = r#"{"key": "client", "rate": 1, "per": "second", "burst": 5}"#;

#[test]
fn rate_limit_refuses_a_burst_with_retry_after() {
    let b = bench("rate-limit", RATE, Mode::Enforce, 0);
    let decisions: Vec<Decision> = (0..10)
        .map(|_| b.send("GET", "/items", "bot", 200))
        .collect();
    assert!(decisions[..5].iter().all(Decision::allowed));
    for d in &decisions[5..] {
        let denial = d.denial.as_ref().expect("over the burst");
        assert_eq!((denial.status, denial.retry_after_secs), (429, Some(1)));
    }
    assert_allowed(
        &b.send("GET", "/items", "someone-else", 200),
        "other client",
    );

    // A route override replaces the default limit, keyed here by client and route.
    let config = r#"{"key": ["client", "route"], "rate": 100, "burst": 100,
        "routes": {"POST /login": {"rate": 3, "per": "minute", "burst": 1}}}"#;
    let b = bench("rate-limit", config, Mode::Enforce, 0);
    assert_allowed(&b.send("POST", "/login", "bot", 200), "first login");
    let denial = b
        .send("POST", "/login", "bot", 200)
        .denial
        .expect("second login");
    assert_eq!((denial.status, denial.retry_after_secs), (429, Some(20)));
    for _ in 0..50 {
        assert_allowed(&b.send("GET", "/items", "bot", 200), "default limit");
    }
    b.advance(Duration::from_secs(20));
    assert_allowed(&b.send("POST", "/login", "bot", 200), "a token is back");

    // Clients sharing an API key share its bucket; without the key a client has its own.
    let config = r#"{"key": "header:X-Api-Key", "rate": 1, "per": "hour", "burst": 2}"#;
    let b = bench("rate-limit", config, Mode::Enforce, 0);
    let keyed = |client: &str| {
        let mut req = b.request("GET", "/items", client);
        req.headers.push(vigil_host::Header {
            name: "x-api-key".into(),
            value: b"k1".to_vec(),
        });
        b.exchange(req, 200)
    };
    assert_allowed(&keyed("a"), "first use of k1");
    assert_allowed(&keyed("b"), "second use of k1");
    assert_eq!(denied(&keyed("c")), 429);
    assert_allowed(&b.send("GET", "/items", "c", 200), "c without the key");
}

#[test]
fn rate_limit_lets_paced_traffic_through() {
    let b = bench("rate-limit", RATE, Mode::Enforce, 0);
    for i in 0..10 {
        assert_allowed(
            &b.send("GET", "/items", "reader", 200),
            &format!("paced {i}"),
        );
        b.advance(Duration::from_secs(1));
    }
    for i in 0..10 {
        let client = format!("client-{i}");
        assert_allowed(&b.send("GET", "/items", &client, 200), &client);
    }
}

#[test]
fn rate_limit_monitor_mode_only_records() {
    let b = bench("rate-limit", RATE, Mode::Monitor, 0);
    let decisions: Vec<Decision> = (0..10)
        .map(|_| b.send("GET", "/items", "bot", 200))
        .collect();
    assert_monitored(&decisions, 429);
}

#[test]
fn rate_limit_rejects_bad_config_naming_the_field() {
    refused(
        "rate-limit",
        r#"{"rate": 1, "burts": 2}"#,
        "unknown field `burts`",
    );
    refused(
        "rate-limit",
        r#"{"rate": 0}"#,
        "rate: must be a number greater than 0",
    );
    refused(
        "rate-limit",
        r#"{"rate": 1, "per": "day"}"#,
        "per: must be \"second\"",
    );
    refused(
        "rate-limit",
        r#"{"rate": 1, "burst": 0}"#,
        "burst: must be at least 1",
    );
    refused(
        "rate-limit",
        r#"{"rate": 1, "key": "cookie"}"#,
        "key: \"cookie\" is not",
    );
    refused(
        "rate-limit",
        r#"{"rate": 1, "key": ["ip", "header:"]}"#,
        "key[1]: ",
    );
    refused("rate-limit", r#"{"rate": 1, "key": []}"#, "key: must name");
    refused(
        "rate-limit",
        r#"{"rate": 1, "routes": {"login": {"rate": 1}}}"#,
        "routes.\"login\": invalid route pattern",
    );
    refused(
        "rate-limit",
        r#"{"rate": 1, "routes": {"POST /login": {"rate": 1, "per": "week"}}}"#,
        "routes.\"POST /login\".per: must be",
    );
    refused(
        "rate-limit",
        r#"{"rate": 1, "routes": {"POST /login": {"rate": 1, "every": 2}}}"#,
        "unknown field `every`",
    );
}

// ---------------------------------------------------------------- sequence

const SEQUENCE: &str = r#"{"rules": [
    {"kind": "requires", "target": "POST /checkout", "after": ["POST /cart/items"], "within": "15m"},
    {"kind": "forbids", "target": "POST /transfer", "after": ["POST /password-reset"], "within": "10m"},
    {"kind": "flow-cap", "target": "POST /checkout", "max": 5, "window": "1h"},
    {"kind": "distinct-param", "target": "GET /users/{id}", "param": "id", "max": 20, "window": "10m"},
    {"kind": "distinct-param", "target": "GET /orders/{id}", "param": 1, "max": 3, "window": "10m"}
]}"#;

fn user(b: &Bench, id: u32, client: &str) -> Decision {
    let mut req = b.request("GET", &format!("/users/{id}"), client);
    req.route = Some("/users/{id}".into());
    b.exchange(req, 200)
}

#[test]
fn sequence_refuses_skipped_forbidden_and_excessive_steps() {
    let b = bench("sequence", SEQUENCE, Mode::Enforce, 0);
    let minute = Duration::from_secs(60);

    // Checkout without a cart, after a failed add to cart, and too long after a good one.
    let d = b.send("POST", "/checkout", "skipper", 200);
    assert_eq!(denied(&d), 409);
    assert_eq!(
        d.denial.unwrap().reason,
        "POST /checkout requires POST /cart/items within 15m"
    );
    assert_eq!(b.finding_kinds(), ["sequence-violation"]);
    b.send("POST", "/cart/items", "skipper", 400);
    assert_eq!(denied(&b.send("POST", "/checkout", "skipper", 200)), 409);
    b.send("POST", "/cart/items", "skipper", 201);
    b.advance(16 * minute);
    assert_eq!(denied(&b.send("POST", "/checkout", "skipper", 200)), 409);

    // A transfer right after a password reset, even a failed one; allowed once it is old.
    b.send("POST", "/password-reset", "taker", 400);
    b.advance(minute);
    assert_eq!(denied(&b.send("POST", "/transfer", "taker", 200)), 403);
    b.advance(10 * minute);
    assert_allowed(&b.send("POST", "/transfer", "taker", 200), "old reset");

    // The sixth checkout within the hour.
    for i in 0..5 {
        b.send("POST", "/cart/items", "hoarder", 201);
        assert_allowed(
            &b.send("POST", "/checkout", "hoarder", 200),
            &format!("#{i}"),
        );
    }
    b.send("POST", "/cart/items", "hoarder", 201);
    let denial = b.send("POST", "/checkout", "hoarder", 200).denial.unwrap();
    assert_eq!((denial.status, denial.retry_after_secs), (429, Some(3600)));

    // Walking through user ids (by segment name) and order ids (by segment index).
    b.rt.drain_findings();
    for id in 0..20 {
        assert_allowed(&user(&b, id, "walker"), &format!("user {id}"));
    }
    assert_eq!(denied(&user(&b, 20, "walker")), 429);
    assert_eq!(b.finding_kinds(), ["id-enumeration"]);
    for id in 0..3 {
        assert_allowed(
            &b.send("GET", &format!("/orders/{id}"), "walker", 200),
            "order",
        );
    }
    assert_eq!(denied(&b.send("GET", "/orders/3", "walker", 200)), 429);
}

#[test]
fn sequence_lets_ordinary_flows_through() {
    let b = bench("sequence", SEQUENCE, Mode::Enforce, 0);
    let minute = Duration::from_secs(60);
    for round in 0..5 {
        b.send("POST", "/cart/items", "shopper", 201);
        b.advance(minute);
        assert_allowed(&b.send("POST", "/checkout", "shopper", 200), "checkout");
        assert_allowed(&b.send("POST", "/transfer", "shopper", 200), "transfer");
        b.advance(minute);
        // A redirect counts as success too.
        b.send("POST", "/cart/items", "other", 303);
        assert_allowed(&b.send("POST", "/checkout", "other", 200), "303 cart");
        for i in 0..6 {
            assert_allowed(&user(&b, (round * 6 + i) % 4, "shopper"), "own users");
        }
    }
    b.send("POST", "/password-reset", "forgetful", 200);
    b.advance(11 * minute);
    assert_allowed(
        &b.send("POST", "/transfer", "forgetful", 200),
        "later transfer",
    );
    assert!(b.finding_kinds().is_empty());
}

const DISTINCT_VALUES: &str = r#"{"rules": [
    {"kind": "distinct-param", "target": "GET /**", "query": "author", "max": 5, "window": "10m"},
    {"kind": "distinct-param", "target": "*", "header": "user-agent", "max": 5, "window": "10m"}
]}"#;

/// `GET /` with this query string and User-Agent.
fn with_query(b: &Bench, client: &str, query: &str, agent: &str) -> Decision {
    let mut req = b.request("GET", "/", client);
    req.query = Some(query.into());
    req.headers.push(vigil_host::Header {
        name: "user-agent".into(),
        value: agent.as_bytes().to_vec(),
    });
    b.exchange(req, 200)
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

#[test]
fn sequence_refuses_walking_a_query_parameter_however_it_is_spelt() {
    let b = bench("sequence", DISTINCT_VALUES, Mode::Enforce, 0);
    assert_eq!(
        b.chain.guards()[0].header_fields(),
        &vigil_host::HeaderFields::Named(vec!["user-agent".to_string()].into_boxed_slice()),
        "the header its rules name, nothing else"
    );
    // WordPress user enumeration: /?author=1, /?author=2, ...
    for id in 1..=5 {
        let d = with_query(&b, "walker", &format!("author={id}"), FIREFOX);
        assert_allowed(&d, &format!("author {id}"));
    }
    let denial = with_query(&b, "walker", "author=6", FIREFOX)
        .denial
        .expect("the sixth author");
    assert_eq!((denial.status, denial.retry_after_secs), (429, Some(600)));
    assert_eq!(
        denial.reason,
        "more than 5 different values of query parameter author on GET /** within 10m"
    );
    assert_eq!(b.finding_kinds(), ["id-enumeration"]);

    // Spellings of one value count once: encoded, in another case, repeated.
    for query in [
        "author=1",
        "author=%31",
        "AUTHOR=1",
        "%61uthor=1&page=2",
        "author=1&author=1",
        "s=a+b&author=1",
    ] {
        assert_allowed(&with_query(&b, "speller", query, FIREFOX), query);
    }
    for id in 2..=5 {
        let d = with_query(&b, "speller", &format!("author=%3{id}"), FIREFOX);
        assert_allowed(&d, &format!("author {id}"));
    }
    // Hiding the next value behind a repeated key or a re-spelt one does not escape the count.
    assert_eq!(
        denied(&with_query(&b, "speller", "author=1&author=6", FIREFOX)),
        429
    );
    assert_eq!(
        denied(&with_query(&b, "speller", "Author=%37", FIREFOX)),
        429
    );
    // `+` is a space, as the upstream reads it: `a+b` and `a%20b` are one value.
    for query in ["author=a+b", "author=a%20b", "author=a b"] {
        assert_allowed(&with_query(&b, "words", query, FIREFOX), query);
    }
    for query in ["author=c", "author=d", "author=e", "author=f"] {
        assert_allowed(&with_query(&b, "words", query, FIREFOX), query);
    }
    assert_eq!(denied(&with_query(&b, "words", "author=g", FIREFOX)), 429);

    // Other parameters, and other clients, are not counted.
    for page in 0..20 {
        let query = format!("page={page}&author=1");
        assert_allowed(&with_query(&b, "reader", &query, FIREFOX), &query);
    }
    b.advance(Duration::from_secs(11 * 60));
    assert_allowed(
        &with_query(&b, "walker", "author=7", FIREFOX),
        "a window later",
    );
}

#[test]
fn sequence_refuses_a_client_rotating_user_agents() {
    let b = bench("sequence", DISTINCT_VALUES, Mode::Enforce, 0);
    let agents = [
        FIREFOX,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "curl/8.5.0",
        "python-requests/2.32.3",
        "Go-http-client/1.1",
        "Wget/1.21.4",
    ];
    for agent in &agents[..5] {
        assert_allowed(&with_query(&b, "rotator", "", agent), agent);
    }
    let denial = with_query(&b, "rotator", "", agents[5])
        .denial
        .expect("the sixth agent");
    assert_eq!(denial.status, 429);
    assert_eq!(
        denial.reason,
        "more than 5 different values of header user-agent on * within 10m"
    );
    assert_eq!(b.finding_kinds(), ["header-rotation"]);
    assert_eq!(denied(&with_query(&b, "rotator", "", agents[6])), 429);
    b.rt.drain_findings();

    // A person with a phone and a laptop, one browser updating: a few agents, many requests.
    for i in 0..60 {
        let agent = agents[i % 3];
        assert_allowed(&with_query(&b, "person", "", agent), "own devices");
    }
    // Surrounding spaces do not make another agent.
    for _ in 0..5 {
        assert_allowed(
            &with_query(&b, "person", "", &format!(" {FIREFOX} ")),
            "padded",
        );
    }
    assert!(b.finding_kinds().is_empty());
}

#[test]
fn sequence_monitor_mode_only_records() {
    let b = bench("sequence", SEQUENCE, Mode::Monitor, 0);
    let mut decisions = vec![b.send("POST", "/checkout", "skipper", 200)];
    decisions.extend((0..25).map(|id| user(&b, id, "walker")));
    assert!(decisions.iter().all(Decision::allowed));
    assert_eq!(wanted(&decisions[0]), Some(409));
    assert_monitored(&decisions[1..], 429);
}

#[test]
fn sequence_rejects_bad_config_naming_the_field() {
    let rule = |r: &str| format!(r#"{{"rules": [{r}]}}"#);
    refused("sequence", r#"{"rule": []}"#, "unknown field `rule`");
    refused(
        "sequence",
        &rule(r#"{"kind": "flow-cap", "target": "POST /x", "max": 5, "window": "1h", "maxx": 1}"#),
        "unknown field `maxx`",
    );
    refused(
        "sequence",
        &rule(r#"{"kind": "requires", "target": "POST /x", "after": ["POST /y"], "within": "15"}"#),
        "rules[0].within: expected a duration such as \"250ms\"",
    );
    refused(
        "sequence",
        &rule(r#"{"kind": "forbids", "target": "POST /x", "after": [], "within": "1m"}"#),
        "rules[0].after: must list at least one",
    );
    refused(
        "sequence",
        &rule(r#"{"kind": "requires", "target": "POST /x", "after": ["y"], "within": "1m"}"#),
        "rules[0].after[0]: invalid route pattern",
    );
    refused(
        "sequence",
        &rule(r#"{"kind": "flow-cap", "target": "POST /x", "max": 0, "window": "1h"}"#),
        "rules[0].max: must be at least 1",
    );
    refused(
        "sequence",
        &rule(
            r#"{"kind": "distinct-param", "target": "GET /u/{id}", "param": "uid", "max": 2, "window": "1m"}"#,
        ),
        "rules[0].param: \"GET /u/{id}\" has no {uid} segment",
    );
    refused(
        "sequence",
        &rule(
            r#"{"kind": "distinct-param", "target": "GET /u/{id}", "param": 2, "max": 2, "window": "1m"}"#,
        ),
        "rules[0].param: segment 2 is beyond",
    );
    refused(
        "sequence",
        &rule(r#"{"kind": "allows", "target": "GET /"}"#),
        "unknown variant `allows`",
    );
    refused(
        "sequence",
        &rule(
            r#"{"kind": "distinct-param", "target": "GET /u/{id}", "param": "id", "query": "id", "max": 2, "window": "1m"}"#,
        ),
        "rules[0]: a distinct-param rule names exactly one of param, query or header",
    );
    refused(
        "sequence",
        &rule(r#"{"kind": "distinct-param", "target": "GET /", "max": 2, "window": "1m"}"#),
        "rules[0]: a distinct-param rule names exactly one of",
    );
    refused(
        "sequence",
        &rule(
            r#"{"kind": "distinct-param", "target": "*", "header": " ", "max": 2, "window": "1m"}"#,
        ),
        "rules[0].header: must not be empty",
    );
    refused(
        "sequence",
        &rule(
            r#"{"kind": "distinct-param", "target": "*", "query": "", "max": 2, "window": "1m"}"#,
        ),
        "rules[0].query: must not be empty",
    );
}

// ---------------------------------------------------------------- credential-stuffing

const STUFFING: &str = r#"{"login": "POST /login", "account": {"json_field": "username"},
    "max_failures": 5, "max_accounts": 3, "max_clients_per_account": 10, "window": "15m"}"#;

fn login(b: &Bench, client: &str, account: &str, status: u16) -> Decision {
    let mut req = b.request("POST", "/login", client);
    req.body = Some(format!(r#"{{"username": "{account}", "password": "hunter2"}}"#).into_bytes());
    b.exchange(req, status)
}

#[test]
fn credential_stuffing_refuses_stuffing_brute_force_and_spraying() {
    let b = bench("credential-stuffing", STUFFING, Mode::Enforce, 4096);
    // One client, many accounts: the fourth distinct account is refused.
    for i in 0..3 {
        assert_allowed(&login(&b, "stuffer", &format!("user{i}"), 401), "account");
    }
    let denial = login(&b, "stuffer", "user3", 401)
        .denial
        .expect("fourth account");
    assert_eq!((denial.status, denial.retry_after_secs), (429, Some(900)));
    assert_eq!(b.finding_kinds(), ["credential-stuffing"]);

    // One client, one account, failing: refused after five failures, until the window passes.
    for _ in 0..5 {
        assert_allowed(&login(&b, "guesser", "alice", 401), "failure");
    }
    assert_eq!(denied(&login(&b, "guesser", "alice", 401)), 429);

    // Many clients, one account: the eleventh client is refused.
    for i in 0..10 {
        assert_allowed(&login(&b, &format!("bot{i}"), "bob", 401), "spray");
    }
    assert_eq!(denied(&login(&b, "bot10", "bob", 401)), 429);

    b.advance(Duration::from_secs(16 * 60));
    assert_allowed(&login(&b, "guesser", "alice", 200), "after the window");

    // The account from a form body (case does not make another account) or a header.
    let form = r#"{"account": {"form_field": "user name"}, "max_accounts": 1}"#;
    let b = bench("credential-stuffing", form, Mode::Enforce, 4096);
    let form_login = |body: &str| {
        let mut req = b.request("POST", "/login", "c");
        req.body = Some(body.as_bytes().to_vec());
        b.exchange(req, 401)
    };
    assert_allowed(&form_login("user+name=Carol%40example.com&pw=x"), "first");
    assert_allowed(
        &form_login("pw=y&user%20name=carol@EXAMPLE.com"),
        "same account",
    );
    assert_eq!(denied(&form_login("user+name=dave&pw=z")), 429);

    let header = r#"{"account": {"header": "x-account"}, "max_accounts": 1}"#;
    let b = bench("credential-stuffing", header, Mode::Enforce, 0);
    let header_login = |account: &str| {
        let mut req = b.request("POST", "/login", "c");
        req.headers.push(vigil_host::Header {
            name: "x-account".into(),
            value: account.as_bytes().to_vec(),
        });
        b.exchange(req, 200)
    };
    assert_allowed(&header_login("erin"), "first");
    assert_eq!(denied(&header_login("frank")), 429);
}

/// A login form that answers every attempt with a redirect: back to the form on a failure,
/// on to the account otherwise, or 200 with a marker header.
const REDIRECTING: &str = r#"{"account": {"form_field": "user"}, "failure_statuses": [],
    "failure_location": "/login*", "failure_header": {"name": "x-login", "value": "fail*"},
    "max_failures": 5, "max_accounts": 100}"#;

fn form_login(b: &Bench, client: &str, status: u16, headers: &[(&str, &str)]) -> Decision {
    let mut req = b.request("POST", "/login", client);
    req.body = Some(b"user=alice&password=guess".to_vec());
    b.exchange_with(req, status, headers)
}

#[test]
fn credential_stuffing_recognises_failures_answered_200_or_with_a_redirect() {
    let b = bench("credential-stuffing", REDIRECTING, Mode::Enforce, 4096);
    let guard = &b.chain.guards()[0];
    assert_eq!(
        guard.header_fields(),
        &vigil_host::HeaderFields::Named(vec!["location".into(), "x-login".into()].into()),
    );
    // A brute force the application answers with 302 back to the login page, in the
    // spellings a redirect takes.
    let failed = [
        "/login?error=1",
        "https://shop.example/Login?e=bad",
        "//shop.example/login",
        "/login",
        "/LOGIN.php",
    ];
    for location in failed {
        let d = form_login(&b, "brute", 302, &[("location", location)]);
        assert_allowed(&d, location);
    }
    let denial = form_login(&b, "brute", 302, &[("location", "/login")])
        .denial
        .expect("five failures");
    assert_eq!((denial.status, denial.retry_after_secs), (429, Some(900)));
    assert_eq!(b.finding_kinds(), ["credential-stuffing"]);

    // 200 with a marker header.
    for _ in 0..5 {
        let d = form_login(&b, "marked", 200, &[("x-login", "Failed")]);
        assert_allowed(&d, "marked failure");
    }
    assert_eq!(denied(&form_login(&b, "marked", 200, &[])), 429);
    b.rt.drain_findings();

    // Successful logins redirect elsewhere, or carry the header with another value; with
    // `failure_statuses = []`, 401 is not a failure either.
    for i in 0..20 {
        let (status, headers): (u16, &[(&str, &str)]) = match i % 4 {
            0 => (302, &[("location", "/account")]),
            1 => (
                303,
                &[("location", "https://shop.example/next?from=/login")],
            ),
            2 => (200, &[("x-login", "ok")]),
            _ => (401, &[]),
        };
        assert_allowed(
            &form_login(&b, "owner", status, headers),
            "successful login",
        );
    }
    assert!(b.finding_kinds().is_empty());
}

#[test]
fn credential_stuffing_lets_ordinary_logins_through() {
    let b = bench("credential-stuffing", STUFFING, Mode::Enforce, 4096);
    // As many attempts as the attacks above: people logging in, some mistyping once or
    // twice, some from two devices, a shared office address using several accounts.
    for round in 0..3 {
        for i in 0..10 {
            let status = if round == 0 && i % 3 == 0 { 401 } else { 200 };
            let client = format!("device{}", i % 7);
            let d = login(&b, &client, &format!("person{i}"), status);
            assert_allowed(&d, &format!("round {round} person {i}"));
        }
        b.advance(Duration::from_secs(6 * 60));
    }
    // Other routes are not login attempts.
    for _ in 0..10 {
        assert_allowed(&b.send("POST", "/logout", "device0", 401), "logout");
    }
    assert!(b.finding_kinds().is_empty());
}

#[test]
fn credential_stuffing_monitor_mode_only_records() {
    let b = bench("credential-stuffing", STUFFING, Mode::Monitor, 4096);
    let decisions: Vec<Decision> = (0..10)
        .map(|i| login(&b, "stuffer", &format!("user{i}"), 401))
        .collect();
    assert_monitored(&decisions, 429);
}

#[test]
fn credential_stuffing_rejects_bad_config_naming_the_field() {
    let cs = "credential-stuffing";
    let account = r#""account": {"json_field": "username"}"#;
    refused(
        cs,
        &format!(r#"{{{account}, "max_tries": 1}}"#),
        "unknown field `max_tries`",
    );
    refused(cs, r#"{"max_failures": 1}"#, "missing field `account`");
    refused(
        cs,
        r#"{"account": {"jsn_field": "u"}}"#,
        "unknown variant `jsn_field`",
    );
    refused(
        cs,
        &format!(r#"{{{account}, "window": "15 minutes"}}"#),
        "window: expected a duration such as \"250ms\"",
    );
    refused(
        cs,
        &format!(r#"{{{account}, "window": "0s"}}"#),
        "window: must be longer than 0",
    );
    refused(
        cs,
        &format!(r#"{{{account}, "max_accounts": 0}}"#),
        "max_accounts: must be at least 1",
    );
    refused(
        cs,
        &format!(r#"{{{account}, "failure_statuses": [401, 999]}}"#),
        "failure_statuses: 999 is not an HTTP status",
    );
    refused(
        cs,
        &format!(r#"{{{account}, "login": "login"}}"#),
        "login: invalid route pattern",
    );
    refused(cs, r#"{"account": {"header": " "}}"#, "account: ");
    refused(
        cs,
        &format!(r#"{{{account}, "failure_statuses": []}}"#),
        "failure_statuses: must list at least one status, unless failure_location or failure_header is set",
    );
    refused(
        cs,
        &format!(r#"{{{account}, "failure_location": " "}}"#),
        "failure_location: must not be empty",
    );
    refused(
        cs,
        &format!(r#"{{{account}, "failure_header": {{"name": ""}}}}"#),
        "failure_header.name: must not be empty",
    );
    refused(
        cs,
        &format!(r#"{{{account}, "failure_header": {{"name": "x", "vale": "y"}}}}"#),
        "unknown field `vale`",
    );
}

// ---------------------------------------------------------------- enumeration

const ENUMERATION: &str = r#"{"routes": ["GET /users/{id}"], "max_distinct": 50,
    "max_not_found_ratio": 0.5, "min_requests": 10, "window": "10m"}"#;

fn object(b: &Bench, id: u32, client: &str, status: u16) -> Decision {
    let mut req = b.request("GET", &format!("/users/{id}"), client);
    req.route = Some("/users/{id}".into());
    b.exchange(req, status)
}

#[test]
fn enumeration_refuses_walking_and_guessing_ids() {
    let b = bench("enumeration", ENUMERATION, Mode::Enforce, 0);
    for id in 0..50 {
        assert_allowed(&object(&b, id, "walker", 200), &format!("object {id}"));
    }
    let denial = object(&b, 50, "walker", 200).denial.expect("51st object");
    assert_eq!((denial.status, denial.retry_after_secs), (429, Some(600)));
    assert_eq!(b.finding_kinds(), ["enumeration"]);
    let guard = &b.chain.guards()[0];
    assert_eq!(guard.needs().responses.to_string(), "404");
    let observed = || guard.stats().responses.load(Ordering::Relaxed);
    assert_eq!(observed(), 0, "on-response is called for 404s only");

    // Mostly 404s: refused once ten requests were judged.
    for id in 0..10 {
        let status = if id % 4 == 0 { 200 } else { 404 };
        assert_allowed(&object(&b, 1000 + id, "guesser", status), "guess");
    }
    assert_eq!(observed(), 7, "the seven 404s");
    for _ in 0..3 {
        assert_eq!(denied(&object(&b, 2000, "guesser", 404)), 429);
    }

    b.advance(Duration::from_secs(11 * 60));
    assert_allowed(&object(&b, 3000, "walker", 200), "after the window");
    assert_allowed(&object(&b, 3000, "guesser", 200), "after the window");
}

#[test]
fn enumeration_lets_ordinary_browsing_through() {
    let b = bench("enumeration", ENUMERATION, Mode::Enforce, 0);
    // As many requests as the walk above, over 20 objects, one in ten gone.
    for i in 0..60u32 {
        let status = if i % 10 == 0 { 404 } else { 200 };
        assert_allowed(
            &object(&b, i % 20, "reader", status),
            &format!("request {i}"),
        );
    }
    for i in 0..60 {
        assert_allowed(
            &b.send("GET", &format!("/search/{i}"), "reader", 404),
            "other route",
        );
    }
    assert!(b.finding_kinds().is_empty());
}

#[test]
fn enumeration_monitor_mode_only_records() {
    let b = bench("enumeration", ENUMERATION, Mode::Monitor, 0);
    let decisions: Vec<Decision> = (0..60).map(|id| object(&b, id, "walker", 200)).collect();
    assert_monitored(&decisions, 429);
}

#[test]
fn enumeration_rejects_bad_config_naming_the_field() {
    let en = "enumeration";
    refused(
        en,
        r#"{"routes": ["GET /u/{id}"], "max": 5}"#,
        "unknown field `max`",
    );
    refused(en, r#"{"routes": []}"#, "routes: must list at least one");
    refused(
        en,
        r#"{"routes": ["u"]}"#,
        "routes[0]: invalid route pattern",
    );
    refused(
        en,
        r#"{"routes": ["GET /u/{id}"], "window": "10"}"#,
        "window: expected a duration such as \"250ms\"",
    );
    refused(
        en,
        r#"{"routes": ["GET /u/{id}"], "max_not_found_ratio": 1.5}"#,
        "max_not_found_ratio: must be between 0 and 1",
    );
    refused(
        en,
        r#"{"routes": ["GET /u/{id}"], "max_distinct": 0}"#,
        "max_distinct: must be at least 1",
    );
    refused(
        en,
        r#"{"routes": ["GET /u/{id}"], "min_requests": 0}"#,
        "min_requests: must be at least 1",
    );
}

// ---------------------------------------------------------------- probing

const PROBING: &str = r#"{"window": "10m", "min_requests": 20, "max_error_ratio": 0.5,
    "max_not_found": 30}"#;

/// One page view of a web app as a browser makes it: the page, its assets, an API call, and
/// what the browser asks for on its own that this site does not have.
fn page_view(b: &Bench, client: &str, page: u32) -> Vec<Decision> {
    let mut out = vec![
        b.send("GET", &format!("/articles/{page}"), client, 200),
        b.send("GET", "/static/app.3f2a.js", client, 200),
        b.send("GET", "/static/app.3f2a.css", client, 304),
        b.send("GET", "/static/app.3f2a.js.map", client, 404),
        b.send("GET", "/static/app.3f2a.css.map", client, 404),
        b.send("GET", "/api/comments", client, 200),
        b.send("GET", "/favicon.ico", client, 404),
    ];
    if page.is_multiple_of(3) {
        out.push(b.send("GET", "/apple-touch-icon-precomposed.png", client, 404));
        out.push(b.send("GET", "/apple-touch-icon.png", client, 404));
        out.push(b.send("GET", "/robots.txt", client, 404));
        out.push(b.send(
            "GET",
            "/.well-known/appspecific/com.chrome.devtools.json",
            client,
            404,
        ));
    }
    out
}

#[test]
fn probing_refuses_a_scan_once_it_has_been_judged() {
    let b = bench("probing", PROBING, Mode::Enforce, 0);
    let guard = &b.chain.guards()[0];
    assert_eq!(guard.needs().responses.to_string(), "4xx");
    // A scanner trying one path after another, nearly all of them missing.
    let scan = [
        "/.env",
        "/.git/config",
        "/wp-login.php",
        "/phpmyadmin/",
        "/actuator/env",
        "/admin/",
        "/backup.zip",
        "/config.php.bak",
        "/.aws/credentials",
        "/server-status",
    ];
    for i in 0..20 {
        let path = format!("{}{}", scan[i % scan.len()], i / scan.len());
        assert_allowed(
            &b.send("GET", &path, "scanner", 404),
            &format!("before judging: {path}"),
        );
    }
    assert!(b.finding_kinds().is_empty());
    for i in 0..5 {
        let d = b.send("GET", &format!("/probe/{i}"), "scanner", 404);
        let denial = d.denial.expect("judged and over");
        assert_eq!((denial.status, denial.retry_after_secs), (429, Some(600)));
    }
    // Every request of the client is refused, the paths it could have had too.
    assert_eq!(denied(&b.send("GET", "/", "scanner", 200)), 429);
    assert_eq!(denied(&b.send("GET", "/favicon.ico", "scanner", 404)), 429);
    let kinds = b.finding_kinds();
    assert_eq!(kinds.len(), 7);
    assert!(kinds.iter().all(|k| k == "probing"), "{kinds:?}");
    assert_allowed(&b.send("GET", "/", "neighbour", 200), "another client");

    // Refused for a window after it tripped; its refusals neither count nor extend it.
    b.advance(Duration::from_secs(5 * 60));
    let denial = b
        .send("GET", "/x", "scanner", 404)
        .denial
        .expect("still refused");
    assert_eq!(denial.retry_after_secs, Some(300));
    b.advance(Duration::from_secs(5 * 60 + 1));
    assert_allowed(&b.send("GET", "/", "scanner", 200), "a window later");
    b.rt.drain_findings();

    // Mostly found, but more than 30 different paths not found: a slower, better-aimed
    // scan that hides in ordinary traffic.
    for i in 0..30 {
        for _ in 0..3 {
            assert_allowed(&b.send("GET", "/", "hider", 200), "cover traffic");
        }
        assert_allowed(
            &b.send("GET", &format!("/old-{i}.php"), "hider", 404),
            "probe",
        );
    }
    assert_allowed(
        &b.send("GET", "/old-0.php", "hider", 404),
        "a repeat is no new path",
    );
    assert_allowed(
        &b.send("GET", "/old-30.php", "hider", 404),
        "the 31st, answered",
    );
    let denial = b
        .send("GET", "/", "hider", 200)
        .denial
        .expect("31 paths not found");
    assert_eq!(denial.status, 429);
    assert_eq!(b.finding_kinds(), ["probing"]);
}

#[test]
fn probing_never_refuses_ordinary_browsing() {
    let b = bench("probing", PROBING, Mode::Enforce, 0);
    // Forty page views in the window, with the browser's own 404s (favicon, source maps,
    // touch icons, robots.txt, the devtools file): more than half of all answers are 404s.
    let mut answers = 0;
    for page in 0..40 {
        for (i, d) in page_view(&b, "reader", page).iter().enumerate() {
            assert_allowed(d, &format!("page {page} request {i}"));
            answers += 1;
        }
        // A mistyped link now and then, a login wall, a form sent twice.
        if page.is_multiple_of(10) {
            assert_allowed(
                &b.send("GET", &format!("/artcles/{page}"), "reader", 404),
                "typo",
            );
            assert_allowed(&b.send("GET", "/account", "reader", 401), "login wall");
            assert_allowed(&b.send("POST", "/comments", "reader", 409), "sent twice");
        }
        b.advance(Duration::from_secs(10));
    }
    assert!(answers > 300);
    // Rate limits answered by Vigil or the upstream are not errors of the client's choosing.
    for _ in 0..30 {
        assert_allowed(
            &b.send("GET", "/api/feed", "eager", 429),
            "too fast, not probing",
        );
    }
    assert_allowed(&b.send("GET", "/api/feed", "eager", 200), "eager");
    assert!(b.finding_kinds().is_empty());
}

#[test]
fn probing_monitor_mode_only_records() {
    let b = bench("probing", PROBING, Mode::Monitor, 0);
    let decisions: Vec<Decision> = (0..40)
        .map(|i| b.send("GET", &format!("/probe/{i}"), "scanner", 404))
        .collect();
    assert_monitored(&decisions, 429);
    assert_eq!(decisions.iter().filter(|d| wanted(d).is_some()).count(), 20);
}

#[test]
fn probing_rejects_bad_config_naming_the_field() {
    let pr = "probing";
    refused(pr, r#"{"max_ratio": 0.5}"#, "unknown field `max_ratio`");
    refused(pr, r#"{"window": "0s"}"#, "window: must be longer than 0");
    refused(
        pr,
        r#"{"min_requests": 0}"#,
        "min_requests: must be at least 1",
    );
    refused(
        pr,
        r#"{"max_error_ratio": -0.1}"#,
        "max_error_ratio: must be between 0 and 1",
    );
    refused(
        pr,
        r#"{"max_not_found": 0}"#,
        "max_not_found: must be at least 1",
    );
    refused(
        pr,
        r#"{"also_ignore": ["/x", " "]}"#,
        "also_ignore[1]: must not be empty",
    );
    refused(pr, r#"{"ignore": "/favicon.ico"}"#, "invalid type");
}

// ---------------------------------------------------------------- signatures

/// An operator's own signatures file, as Vigil passes it to the guard: its text under
/// `signatures` (from `signatures = "PATH"` on the entry).
const OWN_SIGNATURES: &str =
    "# this site's own\npath /internal-backup\npath *.tfstate\nagent evil-bot\n";

fn signatures(extra: serde_json::Value) -> String {
    let mut config = serde_json::json!({ "signatures": OWN_SIGNATURES });
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    config.to_string()
}

fn as_agent(b: &Bench, path: &str, agent: &str) -> Decision {
    let mut req = b.request("GET", path, "visitor");
    req.headers.push(vigil_host::Header {
        name: "user-agent".into(),
        value: agent.as_bytes().to_vec(),
    });
    b.exchange(req, 200)
}

#[test]
fn signatures_refuse_known_probes_and_the_operators_own() {
    let config = signatures(serde_json::json!({ "exempt": ["/wp-login.php"] }));
    let b = bench("signatures", &config, Mode::Enforce, 0);
    assert_eq!(
        b.chain.guards()[0].header_fields(),
        &vigil_host::HeaderFields::Named(vec!["user-agent".to_string()].into_boxed_slice()),
    );
    for path in [
        "/.env",
        "/.git/config",
        "/phpmyadmin/index.php",
        "/actuator/env",
        "/cgi-bin/test.cgi",
        "/xmlrpc.php",
        "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
        // The spellings an upstream may serve as the same file.
        "/.ENV",
        "/.env;jsessionid=x",
        "/.env%20",
        "/.Git/Config",
        // The operator's own.
        "/internal-backup/db.tar",
        "/infra/prod.TFSTATE",
    ] {
        let denial = as_agent(&b, path, FIREFOX).denial;
        let denial = denial.unwrap_or_else(|| panic!("{path} should be refused"));
        assert_eq!(
            (denial.status, denial.reason.as_str()),
            (403, "request matches a known scanner signature"),
            "{path}"
        );
    }
    for agent in ["sqlmap/1.8.2#stable (https://sqlmap.org)", "Evil-Bot/2.0"] {
        assert_eq!(denied(&as_agent(&b, "/", agent)), 403, "{agent}");
    }
    let kinds = b.finding_kinds();
    assert_eq!(kinds.len(), 15);
    assert!(kinds.iter().all(|k| k == "scanner"), "{kinds:?}");
    // Exempt: this site is a WordPress site.
    assert_allowed(&as_agent(&b, "/wp-login.php", FIREFOX), "exempt");

    // Without the shipped list, only the operator's own signatures apply.
    let b = bench(
        "signatures",
        &signatures(serde_json::json!({ "defaults": false, "status": 404 })),
        Mode::Enforce,
        0,
    );
    assert_allowed(&as_agent(&b, "/.env", "sqlmap/1.8"), "shipped list off");
    assert_eq!(denied(&as_agent(&b, "/internal-backup", FIREFOX)), 404);
}

#[test]
fn signatures_let_ordinary_browsing_through() {
    let b = bench(
        "signatures",
        &signatures(serde_json::json!({})),
        Mode::Enforce,
        0,
    );
    let agents = [
        FIREFOX,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "curl/8.5.0",
        "python-requests/2.32.3",
    ];
    for (i, path) in [
        "/",
        "/index.html",
        "/login",
        "/articles/how-we-use-git",
        "/static/js/app.3f2a.js",
        "/static/js/app.3f2a.js.map",
        "/assets/env.js",
        "/environment",
        "/api/users/7",
        "/api/sql/query",
        "/admin-guide",
        "/images/shell.png",
        "/favicon.ico",
        "/robots.txt",
        "/.well-known/security.txt",
        "/backups-explained",
    ]
    .iter()
    .enumerate()
    {
        assert_allowed(&as_agent(&b, path, agents[i % agents.len()]), path);
    }
    assert!(b.finding_kinds().is_empty());
}

#[test]
fn signatures_monitor_mode_only_records() {
    let b = bench("signatures", "{}", Mode::Monitor, 0);
    let decisions: Vec<Decision> = ["/.env", "/.git/config", "/", "/wp-login.php"]
        .iter()
        .map(|p| as_agent(&b, p, FIREFOX))
        .collect();
    assert_monitored(&decisions, 403);
    assert_eq!(decisions.iter().filter(|d| wanted(d).is_some()).count(), 3);
}

#[test]
fn signatures_reject_bad_config_naming_the_field() {
    let sg = "signatures";
    refused(sg, r#"{"signature": ""}"#, "unknown field `signature`");
    refused(sg, r#"{"status": 302}"#, "status: must be from 400 to 599");
    refused(
        sg,
        r#"{"signatures": "path /x\nagnet y"}"#,
        "signatures: line 2: unknown kind \"agnet\", expected \"path\" or \"agent\"",
    );
    refused(
        sg,
        r#"{"signatures": "path"}"#,
        "signatures: line 1: \"path\" has no pattern after its kind",
    );
    refused(
        sg,
        r#"{"exempt": ["/"]}"#,
        "exempt[0]: \"/\" names no path segment",
    );
}
