//! The guard runtime against real compiled guards: verdicts, routes, chains, monitor mode,
//! on-response, hostile guards, load-time rejects and state through the `state` imports.

use std::sync::atomic::Ordering;
use std::time::Duration;
use vigil_host::{
    Chain, FaultKind, GuardResult, HeaderFields, LoadError, Mode, Needs, OnError, Pattern,
    Response, Runtime, RuntimeConfig, SandboxLimits, Verdict, World,
};
use vigil_tests::{guards, load, load_error, request, runtime, spec, with_policy, Decide};

fn chain(guards: Vec<std::sync::Arc<vigil_host::LoadedGuard>>) -> Chain {
    Chain::new(guards).expect("chain")
}

fn response(status: u16) -> Response {
    Response {
        status,
        headers: vec![],
        latency_us: 1200,
    }
}

#[test]
fn allow_and_deny_guards() {
    let rt = runtime();
    let allow = chain(vec![load(&rt, spec("allow", "allow-all", ""))]);
    let decision = allow.decide(&mut request("GET", "/", "c1", &[]));
    assert!(decision.allowed());
    assert_eq!(decision.outcomes.len(), 1);
    assert_eq!(decision.outcomes[0].result, GuardResult::Allowed);

    let deny = chain(vec![load(
        &rt,
        spec(
            "deny",
            "fixed-verdict",
            r#"{"deny": 403, "reason": "no robots", "retry_after_secs": 30}"#,
        ),
    )]);
    let decision = deny.decide(&mut request("GET", "/", "c1", &[]));
    let denial = decision.denial.expect("denied");
    assert_eq!(denial.status, 403);
    assert_eq!(denial.reason, "no robots");
    assert_eq!(denial.retry_after_secs, Some(30));
    assert_eq!(&*denial.guard, "deny");
    assert!(decision.outcomes[0].applied);
}

#[test]
fn guards_only_see_their_routes() {
    let rt = runtime();
    let mut s = spec("login-only", "fixed-verdict", r#"{"deny": 401}"#);
    s.routes = vec![
        Pattern::parse("POST /login").unwrap(),
        Pattern::parse("* /admin/**").unwrap(),
    ];
    let c = chain(vec![load(&rt, s)]);
    assert!(c.decide(&mut request("GET", "/login", "c", &[])).allowed());
    assert!(c
        .decide(&mut request("POST", "/users", "c", &[]))
        .outcomes
        .is_empty());
    assert_eq!(
        c.decide(&mut request("POST", "/login", "c", &[]))
            .denial
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        c.decide(&mut request("GET", "/admin/stats", "c", &[]))
            .denial
            .unwrap()
            .status,
        401
    );
    // The route template, when resolved, is what patterns match.
    let mut templated = request("GET", "/admin-panel/7", "c", &[]);
    templated.route = Some("/admin/{id}".into());
    assert!(!c.decide(&mut templated).allowed());
}

#[test]
fn first_applied_denial_wins_in_chain_order() {
    let rt = runtime();
    let first = load(
        &rt,
        spec(
            "first",
            "fixed-verdict",
            r#"{"deny": 451, "reason": "first"}"#,
        ),
    );
    let second = load(
        &rt,
        spec(
            "second",
            "fixed-verdict",
            r#"{"deny": 403, "reason": "second"}"#,
        ),
    );
    let allow = load(&rt, spec("allow", "allow-all", ""));

    let d = chain(vec![allow.clone(), first.clone(), second.clone()]).decide(&mut request(
        "GET",
        "/",
        "c",
        &[],
    ));
    assert_eq!(d.denial.unwrap().reason, "first");
    assert_eq!(
        d.outcomes.len(),
        2,
        "evaluation stops at the first applied denial"
    );

    let d = chain(vec![second, first]).decide(&mut request("GET", "/", "c", &[]));
    assert_eq!(d.denial.unwrap().reason, "second");

    let dup = Chain::new(vec![allow.clone(), allow]).unwrap_err();
    assert!(dup.to_string().contains("\"allow\""), "{dup}");
}

#[test]
fn monitor_mode_records_but_does_not_apply() {
    let rt = runtime();
    let watcher = load(
        &rt,
        with_policy(
            spec("watcher", "fixed-verdict", r#"{"deny": 429}"#),
            Mode::Monitor,
            OnError::Allow,
        ),
    );
    let enforcer = load(&rt, spec("enforcer", "fixed-verdict", r#"{"deny": 403}"#));
    let d = chain(vec![watcher.clone()]).decide(&mut request("GET", "/", "c", &[]));
    assert!(d.allowed());
    assert!(matches!(&d.outcomes[0].result, GuardResult::Denied(deny) if deny.status == 429));
    assert!(!d.outcomes[0].applied);
    assert_eq!(d.outcomes[0].mode, Mode::Monitor);
    assert!(d.outcomes[0].would_deny() && d.would_deny());

    let d = chain(vec![watcher, enforcer]).decide(&mut request("GET", "/", "c", &[]));
    assert_eq!(
        d.outcomes.len(),
        2,
        "a monitor denial does not stop the chain"
    );
    assert!(d.outcomes[0].would_deny() && !d.outcomes[1].would_deny());
    assert_eq!(d.denial.unwrap().status, 403);
}

#[test]
fn on_response_sees_the_real_status_and_history_records_it() {
    let rt = runtime();
    let c = chain(vec![load(
        &rt,
        spec("observer", "fixed-verdict", r#"{"deny": null}"#),
    )]);
    let mut req = request("GET", "/users/42", "c", &[]);
    req.route = Some("/users/{id}".into());
    req.received_ms = 1_700_000_000_000;
    let d = c.decide(&mut req);
    c.observe(&mut req, &response(404), &d);
    let findings = rt.drain_findings();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].guard, "observer");
    assert_eq!(findings[0].kind, "response");
    assert_eq!(findings[0].detail, "404 /users/{id}");
    assert_eq!(findings[0].client, "c");
    let history = rt.state().history("c", 10).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].status, history[0].route.as_str()),
        (404, "/users/{id}")
    );
}

#[test]
fn guards_get_only_what_they_declare_they_use() {
    let rt = runtime();
    let blind = load(&rt, spec("blind", "blind", ""));
    let observer = load(&rt, spec("observer", "fixed-verdict", r#"{"deny": null}"#));
    assert_eq!(blind.needs(), Needs::NONE);
    assert_eq!(
        observer.needs(),
        Needs::ALL,
        "the SDK's defaults: everything"
    );
    let rate_limit = load(
        &rt,
        spec(
            "rl",
            "rate-limit",
            r#"{"key": "client", "rate": 100, "per": "second", "burst": 5}"#,
        ),
    );
    assert_eq!(
        (
            rate_limit.needs().headers,
            rate_limit.needs().responses.is_empty()
        ),
        (true, true),
        "a stock guard declares what it uses"
    );

    let alone = chain(vec![blind.clone()]);
    assert!(!alone.plan("GET", "/").reads_request_headers());
    assert!(!alone.plan("GET", "/").reads_response_headers(200));
    let both = chain(vec![blind.clone(), observer.clone()]);
    assert!(both.plan("GET", "/").reads_request_headers());
    assert!(both.plan("GET", "/").reads_response_headers(200));

    let mut req = request("GET", "/", "c", &[("x-api-key", "k1"), ("user-agent", "t")]);
    rt.drain_findings();
    let d = both.decide(&mut req);
    assert_eq!(req.headers.len(), 2, "the request keeps its headers");
    both.observe(&mut req, &response(200), &d);
    assert_eq!(req.headers.len(), 2, "and keeps them after observe");
    let seen = received(&rt);
    let seen: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|(g, k, d)| (g.as_str(), k.as_str(), d.as_str()))
        .collect();
    assert_eq!(
        seen,
        [("blind", "headers", "0"), ("observer", "response", "200 /")],
        "blind got no headers and no on-response call"
    );
    assert_eq!(blind.stats().responses.load(Ordering::Relaxed), 0);
    assert_eq!(observer.stats().responses.load(Ordering::Relaxed), 1);
    assert_eq!(
        rate_limit.header_fields(),
        &HeaderFields::None,
        "a rate limit keyed by client reads no header"
    );
    let by_key = load(
        &rt,
        spec(
            "rl-key",
            "rate-limit",
            r#"{"key": ["client", "header:X-Api-Key"], "rate": 100}"#,
        ),
    );
    assert_eq!(
        by_key.header_fields(),
        &HeaderFields::Named(["x-api-key".to_string()].into()),
        "one keyed by a header reads that one"
    );
}

/// The findings the guards reported since the last call, as (guard, kind, detail).
fn received(rt: &Runtime) -> Vec<(String, String, String)> {
    rt.drain_findings()
        .into_iter()
        .map(|f| (f.guard, f.kind, f.detail))
        .collect()
}

#[test]
fn guards_get_only_the_header_fields_their_init_names() {
    let rt = runtime();
    let picky = load(
        &rt,
        spec(
            "picky",
            "picky",
            r#"{"reads": ["X-Api-Key", "accept", "x-api-key"]}"#,
        ),
    );
    assert_eq!(
        picky.header_fields(),
        &HeaderFields::Named(["accept".to_string(), "x-api-key".to_string()].into()),
        "names are lower-cased and kept once"
    );
    let none = load(&rt, spec("none", "picky", r#"{"reads": []}"#));
    assert_eq!(none.header_fields(), &HeaderFields::None);
    let all = load(&rt, spec("all", "picky", r#"{"reads": null}"#));
    assert_eq!(
        all.header_fields(),
        &HeaderFields::All,
        "no call: every field"
    );
    let blind = load(&rt, spec("blind", "blind", ""));
    assert_eq!(blind.header_fields(), &HeaderFields::None);

    let narrow = chain(vec![none.clone(), picky.clone()]).plan("GET", "/");
    assert!(narrow.reads_request_headers());
    assert!(narrow.reads_request_header("x-api-key"));
    assert!(narrow.reads_request_header("accept"));
    assert!(!narrow.reads_request_header("user-agent"));
    assert!(!chain(vec![none.clone()])
        .plan("GET", "/")
        .reads_request_headers());

    let c = chain(vec![picky, none, all]);
    let sent = [("user-agent", "t"), ("x-api-key", "k1"), ("accept", "*/*")];
    let mut req = request("GET", "/", "c", &sent);
    rt.drain_findings();
    let d = c.decide(&mut req);
    assert!(c.plan("GET", "/").reads_response_headers(200));
    let resp = Response {
        headers: request(
            "GET",
            "/",
            "c",
            &[("content-type", "text/plain"), ("accept", "x")],
        )
        .headers,
        ..response(200)
    };
    c.observe(&mut req, &resp, &d);
    assert_eq!(
        req.headers,
        request("GET", "/", "c", &sent).headers,
        "the request keeps them all"
    );
    let expected = [
        ("picky", "request", "x-api-key,accept"),
        ("none", "request", ""),
        ("all", "request", "user-agent,x-api-key,accept"),
        ("picky", "response", "accept"),
        ("none", "response", ""),
        ("all", "response", "content-type,accept"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(g, k, d)| (g.to_string(), k.to_string(), d.to_string()))
        .collect();
    assert_eq!(received(&rt), expected);
}

#[test]
fn reads_headers_is_refused_outside_init_and_beyond_its_limits() {
    let rt = runtime();
    let late = load(&rt, spec("late", "picky", r#"{"reads": [], "late": true}"#));
    let d = chain(vec![late]).decide(&mut request("GET", "/", "c", &[]));
    assert!(d.allowed(), "fail open");
    match &d.outcomes[0].result {
        GuardResult::Faulted(fault) => {
            assert_eq!(fault.kind, FaultKind::Trap);
            assert!(
                fault.detail.contains("reads-headers: called outside init"),
                "{}",
                fault.detail
            );
        }
        other => panic!("expected a fault, got {other:?}"),
    }

    let many: Vec<String> = (0..65).map(|i| format!("\"x-{i}\"")).collect();
    let config = format!(r#"{{"reads": [{}]}}"#, many.join(","));
    let (_, text) = load_error(&rt, spec("many", "picky", &config));
    assert!(
        text.contains("guard \"many\"")
            && text.contains("reads-headers: 65 names; at most 64 are allowed"),
        "{text}"
    );
    let config = format!(r#"{{"reads": ["{}"]}}"#, "x".repeat(257));
    let (_, text) = load_error(&rt, spec("long", "picky", &config));
    assert!(
        text.contains("reads-headers: a name of 257 bytes; at most 256 are allowed"),
        "{text}"
    );
}

#[test]
fn a_warm_instance_serves_threads_in_turn_without_new_instances() {
    let rt = runtime();
    let guard = load(&rt, spec("allow", "allow-all", ""));
    let c = chain(vec![guard.clone()]);
    for _ in 0..4 {
        let c = c.clone();
        std::thread::spawn(move || {
            for _ in 0..10 {
                assert!(c.decide(&mut request("GET", "/", "c", &[])).allowed());
            }
        })
        .join()
        .unwrap();
    }
    assert_eq!(
        guard.stats().instances_created.load(Ordering::Relaxed),
        1,
        "the instance made at load moved from thread to thread"
    );
}

#[test]
fn body_prefix_only_for_guards_that_ask() {
    let rt = runtime();
    let mut with_body = spec(
        "stateful",
        "stateful",
        r#"{"max_requests": 100, "max_paths": 100}"#,
    );
    with_body.body_limit = 4;
    let c = chain(vec![load(&rt, with_body)]);
    let mut req = request("POST", "/x", "c", &[]);
    req.body = Some(b"0123456789".to_vec());
    assert!(c.decide(&mut req).allowed());
    assert_eq!(
        req.body.as_deref(),
        Some(&b"0123456789"[..]),
        "the caller's body is restored"
    );
}

#[test]
fn every_field_reaches_a_guard_of_either_world_intact() {
    every_field_reaches("echo", World::PackedGuard);
    every_field_reaches("echo-records", World::Guard);
}

/// Runs a request and its response through guard `crate_name`, which reports each field it
/// gets as a finding, and checks every field arrived as sent.
fn every_field_reaches(crate_name: &str, world: World) {
    let rt = runtime();
    let mut echo = spec("echo", crate_name, "");
    echo.body_limit = 64;
    let guard = load(&rt, echo);
    assert_eq!(guard.world(), world, "{crate_name}");
    let c = chain(vec![guard]);
    let mut req = request(
        "PATCH",
        "/users/42",
        "client-é",
        &[("x-api-key", "k-1"), ("x-echo", "1")],
    );
    req.headers.push(vigil_host::Header {
        name: "x-raw".into(),
        value: vec![0, 0xff],
    });
    req.route = Some("/users/{id}".into());
    req.query = Some("a=1&b=".into());
    req.client.ip = "2001:db8::7".into();
    req.client.public = false;
    req.client.authenticated = true;
    req.received_ms = 1_764_000_000_123;
    req.body = Some(b"{\"name\":\"x\"}".to_vec());
    let decision = c.decide(&mut req);
    assert!(decision.allowed());
    let resp = Response {
        status: 204,
        headers: vec![vigil_host::Header {
            name: "etag".into(),
            value: b"\"v2\"".to_vec(),
        }],
        latency_us: 98_765,
    };
    c.observe(&mut req, &resp, &decision);
    let seen: Vec<(String, String)> = rt
        .drain_findings()
        .into_iter()
        .map(|f| (f.kind, f.detail))
        .collect();
    let request_seen = "PATCH /users/42 route=Some(\"/users/{id}\") query=Some(\"a=1&b=\") \
        key=client-é ip=2001:db8::7 public=false authenticated=true at=1764000000123 \
        headers=[x-api-key=[107, 45, 49],x-echo=[49],x-raw=[0, 255]] \
        body=Some([123, 34, 110, 97, 109, 101, 34, 58, 34, 120, 34, 125])";
    let response_seen = "PATCH /users/42 status=204 latency=98765 headers=[etag=[34, 118, 50, 34]]";
    assert_eq!(
        seen,
        [
            ("request".to_string(), request_seen.to_string()),
            ("response".to_string(), response_seen.to_string()),
        ],
        "{crate_name}"
    );

    // Absent parts stay absent; an empty body stays present.
    let mut bare = request("GET", "/", "c", &[("x-echo", "")]);
    bare.body = Some(Vec::new());
    c.decide(&mut bare);
    let detail = &rt.drain_findings()[0].detail;
    assert!(
        detail.contains("route=None query=None")
            && detail.ends_with("headers=[x-echo=[]] body=Some([])"),
        "{crate_name}: {detail}"
    );
    // Without the header it allows at once and reports nothing.
    assert!(c.decide(&mut request("GET", "/", "c", &[])).allowed());
    assert!(rt.drain_findings().is_empty(), "{crate_name}");
}

/// The product's default call deadline, which the hostile guard's attacks run into.
fn deadline() -> Duration {
    SandboxLimits::default().deadline
}

fn hostile_chain(rt: &Runtime, on_error: OnError) -> Chain {
    let mut hostile = with_policy(spec("hostile", "hostile", ""), Mode::Enforce, on_error);
    hostile.limits = Some(SandboxLimits::default());
    chain(vec![load(rt, hostile)])
}

/// Runs one attack, checks its fault, then checks the next request is evaluated normally.
fn attack(c: &Chain, kind: &str) -> vigil_host::Fault {
    attack_timed(c, kind).0
}

/// [`attack`], also returning how long the attacking call took (the next requests, which need
/// a fresh instance, are not counted).
fn attack_timed(c: &Chain, kind: &str) -> (vigil_host::Fault, Duration) {
    let d = c.decide(&mut request("GET", "/", "attacker", &[("x-attack", kind)]));
    let elapsed = d.outcomes[0].elapsed;
    let fault = match &d.outcomes[0].result {
        GuardResult::Faulted(fault) => fault.clone(),
        other => panic!("attack {kind}: expected a fault, got {other:?}"),
    };
    for _ in 0..3 {
        let next = c.decide(&mut request("GET", "/", "innocent", &[]));
        assert_eq!(
            next.outcomes[0].result,
            GuardResult::Allowed,
            "after {kind}"
        );
        assert!(next.allowed());
    }
    (fault, elapsed)
}

/// Whether a call was cut short rather than left to run: far above the deadline, because a
/// loaded machine may deschedule the thread or the watchdog, and far below "never".
fn cut_short(elapsed: Duration, deadline: Duration) -> bool {
    elapsed < deadline * 10 + Duration::from_secs(1)
}

#[test]
fn infinite_loop_is_interrupted_at_the_deadline() {
    let rt = runtime();
    let c = hostile_chain(&rt, OnError::Allow);
    let deadline = deadline();
    let (fault, elapsed) = attack_timed(&c, "loop");
    assert_eq!(fault.kind, FaultKind::Deadline, "{fault:?}");
    assert!(
        cut_short(elapsed, deadline),
        "took {elapsed:?} for a {deadline:?} deadline"
    );
    assert_eq!(c.guards()[0].stats().faults(FaultKind::Deadline), 1);
}

#[test]
fn a_loop_starting_while_the_watchdog_sleeps_is_still_interrupted() {
    let rt = runtime();
    let c = hostile_chain(&rt, OnError::Allow);
    let deadline = deadline();
    // No guard code runs for longer than the watchdog's idle grace (100 ms): it goes to sleep,
    // and the call must wake it.
    std::thread::sleep(Duration::from_millis(400));
    let (fault, elapsed) = attack_timed(&c, "loop");
    assert_eq!(fault.kind, FaultKind::Deadline, "{fault:?}");
    assert!(
        cut_short(elapsed, deadline),
        "took {elapsed:?} for a {deadline:?} deadline"
    );
}

#[test]
fn interrupting_an_overdue_call_leaves_calls_within_their_deadline_running() {
    let rt = runtime();
    let impatient = hostile_chain(&rt, OnError::Allow);
    let patience = Duration::from_millis(1500);
    let mut s = spec("hostile-patient", "hostile", "");
    s.limits = Some(SandboxLimits {
        deadline: patience,
        ..SandboxLimits::default()
    });
    let patient = chain(vec![load(&rt, s)]);
    let patient = std::thread::spawn(move || attack_timed(&patient, "loop"));
    // Every interruption of these advances the epoch the patient call also runs under.
    std::thread::sleep(Duration::from_millis(100));
    let deadline = deadline();
    for _ in 0..5 {
        let (fault, elapsed) = attack_timed(&impatient, "loop");
        assert_eq!(fault.kind, FaultKind::Deadline, "{fault:?}");
        assert!(
            cut_short(elapsed, deadline),
            "took {elapsed:?} for a {deadline:?} deadline"
        );
    }
    let (fault, elapsed) = patient.join().unwrap();
    assert_eq!(fault.kind, FaultKind::Deadline, "{fault:?}");
    assert!(
        elapsed >= patience,
        "cut at {elapsed:?}, before its own {patience:?} deadline"
    );
}

#[test]
fn allocation_beyond_the_memory_cap_is_a_limit_fault() {
    let rt = runtime();
    let mut s = spec("hostile", "hostile", "");
    s.limits = Some(SandboxLimits {
        memory_bytes: 8 << 20,
        // Generous, so that on a loaded machine the memory cap is what stops the guard.
        deadline: Duration::from_secs(5),
        ..SandboxLimits::default()
    });
    let c = chain(vec![load(&rt, s)]);
    let fault = attack(&c, "alloc");
    assert_eq!(fault.kind, FaultKind::Limit, "{fault:?}");
    assert!(
        fault.detail.contains("memory limit of 8388608 bytes"),
        "{}",
        fault.detail
    );
}

#[test]
fn trap_and_panic_follow_on_error() {
    let rt = runtime();
    let open = hostile_chain(&rt, OnError::Allow);
    let fault = attack(&open, "trap");
    assert_eq!(fault.kind, FaultKind::Trap);
    assert!(fault.detail.contains("unreachable"), "{}", fault.detail);
    let d = open.decide(&mut request("GET", "/", "a", &[("x-attack", "trap")]));
    assert!(d.allowed(), "on_error = allow lets the request through");
    for (abuse, expected) in [
        (
            "bad-pattern",
            "happened: invalid route pattern \"no-leading-slash\"",
        ),
        (
            "many-patterns",
            "happened: 65 patterns; at most 64 are allowed",
        ),
    ] {
        let fault = attack(&open, abuse);
        assert_eq!(fault.kind, FaultKind::Trap, "{abuse}");
        assert!(fault.detail.contains(expected), "{abuse}: {}", fault.detail);
    }

    let closed = hostile_chain(&rt, OnError::Deny);
    let fault = attack(&closed, "panic");
    assert_eq!(fault.kind, FaultKind::Trap);
    assert!(
        fault.detail.contains("hostile guard panicked on purpose"),
        "{}",
        fault.detail
    );
    let d = closed.decide(&mut request("GET", "/", "a", &[("x-attack", "panic")]));
    let denial = d.denial.expect("on_error = deny refuses");
    assert_eq!(denial.status, 503);
    assert!(denial.reason.contains("hostile"), "{}", denial.reason);
}

#[test]
fn guards_have_no_files_environment_or_arguments() {
    std::env::set_var("HOME", "/root-of-the-host");
    let rt = runtime();
    let c = hostile_chain(&rt, OnError::Allow);
    let d = c.decide(&mut request("GET", "/", "a", &[("x-attack", "snoop")]));
    let reason = d.denial.expect("snoop reports by denying").reason;
    assert!(reason.starts_with("file=denied"), "{reason}");
    assert!(reason.contains("env=empty; vars=0; args=0"), "{reason}");
}

#[test]
fn huge_output_is_capped_and_harmless() {
    let rt = runtime();
    let mut s = with_policy(spec("hostile", "hostile", ""), Mode::Enforce, OnError::Deny);
    // Generous, so that on a loaded machine the output cap is what is tested.
    s.limits = Some(SandboxLimits {
        deadline: Duration::from_secs(5),
        ..SandboxLimits::default()
    });
    let c = chain(vec![load(&rt, s)]);
    let d = c.decide(&mut request("GET", "/", "a", &[("x-attack", "chatty")]));
    assert!(d.allowed(), "{:?}", d.outcomes);
    let stats = c.guards()[0].stats();
    let budget = rt.config().default_limits.output_bytes_per_call as u64;
    let printed = 2 * 128 * 1024 + 100 * 1023;
    let dropped = stats
        .output_dropped_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        dropped >= printed - budget,
        "dropped {dropped} of {printed}"
    );
    assert!(c.decide(&mut request("GET", "/", "b", &[])).allowed());
}

/// The sidecar calls guards from inside its workers' tokio runtimes, where anything that
/// entered a runtime to wait (wasmtime-wasi's sync streams did, even to drop one) panicked.
#[test]
fn a_guard_printing_inside_a_tokio_runtime_is_capped_not_a_panic() {
    let rt = runtime();
    let mut s = with_policy(spec("hostile", "hostile", ""), Mode::Enforce, OnError::Deny);
    s.limits = Some(SandboxLimits {
        deadline: Duration::from_secs(5),
        ..SandboxLimits::default()
    });
    let c = chain(vec![load(&rt, s)]);
    let budget = rt.config().default_limits.output_bytes_per_call as u64;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let d = c.decide(&mut request("GET", "/", "a", &[("x-attack", "chatty")]));
            // on_error = deny: had printing faulted, the request would have been refused.
            assert!(d.allowed(), "{:?}", d.outcomes);
            assert_eq!(d.outcomes[0].result, GuardResult::Allowed);
            let printed = 2 * 128 * 1024 + 100 * 1023;
            let dropped = c.guards()[0]
                .stats()
                .output_dropped_bytes
                .load(Ordering::Relaxed);
            assert!(
                dropped >= printed - budget,
                "dropped {dropped} of {printed}"
            );
            // A fault is still a fault under on_error, and the next call runs normally.
            let fault = attack(&c, "panic");
            assert_eq!(fault.kind, FaultKind::Trap, "{fault:?}");
            let d = c.decide(&mut request("GET", "/", "a", &[("x-attack", "chatty")]));
            assert!(d.allowed(), "{:?}", d.outcomes);
        });
    assert_eq!(c.guards()[0].stats().faults(FaultKind::Trap), 1);
}

#[test]
fn load_rejects_bad_modules_with_clear_errors() {
    let rt = runtime();
    let bytes = |b: Vec<u8>| vigil_host::GuardSource::Bytes(b);
    let mut core = vigil_tests::spec("core", "allow-all", "");
    core.source = bytes(b"\0asm\x01\0\0\0".to_vec());
    let (_, text) = load_error(&rt, core);
    assert!(
        text.contains("guard \"core\"")
            && text.contains("core WebAssembly module, not a component"),
        "{text}"
    );

    let (_, text) = load_error(&rt, spec("net", "net-client", ""));
    assert!(
        text.contains("guard \"net\"") && text.contains("imports wasi:sockets/"),
        "{text}"
    );
    assert!(text.contains("which guards may not use"), "{text}");

    let (_, text) = load_error(&rt, spec("other", "other-world", ""));
    assert!(
        text.contains("guard \"other\"") && text.contains("not a guard"),
        "{text}"
    );
    // Both worlds are named, each with what it misses.
    assert!(
        text.contains("as `guard`, ") && text.contains("as `packed-guard`, "),
        "{text}"
    );
    assert_eq!(text.matches("init").count(), 2, "{text}");

    let mut garbage = spec("garbage", "allow-all", "");
    garbage.source = bytes(b"#!/bin/sh\necho not wasm\n".to_vec());
    let (_, text) = load_error(&rt, garbage);
    assert!(text.contains("not a WebAssembly file"), "{text}");

    let whole = std::fs::read(guards::ALLOW_ALL).unwrap();
    let mut truncated = spec("truncated", "allow-all", "");
    truncated.source = bytes(whole[..whole.len() / 2].to_vec());
    let (_, text) = load_error(&rt, truncated);
    assert!(
        text.contains("guard \"truncated\": not a valid WebAssembly component"),
        "{text}"
    );

    // A needs declaration naming something this host does not know.
    let mut declared = std::fs::read(guards::ALLOW_ALL).unwrap();
    let (name, data) = (vigil_host::NEEDS_SECTION.as_bytes(), b"headers bodies");
    declared.extend([0, (1 + name.len() + data.len()) as u8, name.len() as u8]);
    declared.extend(name.iter().chain(data));
    let mut unknown = spec("unknown-need", "allow-all", "");
    unknown.source = bytes(declared);
    let (_, text) = load_error(&rt, unknown);
    assert!(
        text.contains("guard \"unknown-need\": its vigil-guard-needs section names \"bodies\""),
        "{text}"
    );

    let mut missing = spec("missing", "allow-all", "");
    missing.source = vigil_host::GuardSource::File("/nonexistent/guard.wasm".into());
    let (err, text) = load_error(&rt, missing);
    assert!(matches!(err, LoadError::Read { .. }));
    assert!(text.contains("/nonexistent/guard.wasm"), "{text}");
}

#[test]
fn load_rejects_bad_configuration_naming_the_field() {
    let rt = runtime();
    let (err, text) = load_error(&rt, spec("v", "fixed-verdict", r#"{"deny": 200}"#));
    assert!(matches!(err, LoadError::Init { .. }));
    assert!(
        text.contains("deny: 200 is not an HTTP error status"),
        "{text}"
    );

    let (_, text) = load_error(&rt, spec("v", "fixed-verdict", "{not json"));
    assert!(
        text.contains("invalid config") && text.contains("line 1 column 2"),
        "{text}"
    );

    let (_, text) = load_error(&rt, spec("v", "fixed-verdict", r#"{"denny": 403}"#));
    assert!(text.contains("unknown field `denny`"), "{text}");

    let (_, text) = load_error(&rt, spec("v", "login-throttle", r#"{"per_minute": 0}"#));
    assert!(
        text.contains("per_minute: must be a number greater than 0"),
        "{text}"
    );

    let mut greedy = spec("greedy", "allow-all", "");
    greedy.limits = Some(SandboxLimits {
        memory_bytes: usize::MAX / 2,
        ..SandboxLimits::default()
    });
    let (err, text) = load_error(&rt, greedy);
    assert!(matches!(err, LoadError::Limits { .. }), "{text}");
}

#[test]
fn guards_query_state_through_imports() {
    let rt = runtime();
    let config = r#"{"max_requests": 1000, "max_paths": 1000, "report_header": true}"#;
    let c = chain(vec![load(&rt, spec("stateful", "stateful", config))]);
    for (i, path) in ["/a", "/b", "/a", "/c"].iter().enumerate() {
        let mut req = request("GET", path, "alice", &[]);
        req.received_ms = 1_000 + i as u64;
        let d = c.decide(&mut req);
        assert!(d.allowed());
        c.observe(&mut req, &response(200 + i as u16), &d);
    }
    let d = c.decide(&mut request("GET", "/d", "alice", &[("x-report", "1")]));
    let reason = d.denial.unwrap().reason;
    assert_eq!(
        reason,
        "history=4 last=GET /c 203 requests=5 paths=4 seen=true body=0"
    );
    // Another client starts from nothing.
    let d = c.decide(&mut request("GET", "/d", "bob", &[("x-report", "1")]));
    assert_eq!(
        d.denial.unwrap().reason,
        "history=0 last= requests=1 paths=1 seen=false body=0"
    );
}

#[test]
fn only_a_chain_with_guards_keeps_histories() {
    let rt = runtime();
    let observe_one = |c: &Chain, client: &str| {
        let mut req = request("GET", "/a", client, &[]);
        let d = c.decide(&mut req);
        c.observe(&mut req, &response(200), &d);
    };
    let empty = chain(vec![]);
    for client in ["alice", "bob", "carol"] {
        observe_one(&empty, client);
    }
    assert_eq!(rt.state().sizes().clients, 0, "no guard reads a history");

    let guarded = chain(vec![load(&rt, spec("allow", "allow-all", ""))]);
    observe_one(&guarded, "alice");
    assert_eq!(rt.state().sizes().clients, 1);
}

#[test]
fn two_guards_keys_do_not_collide() {
    let rt = runtime();
    let config = r#"{"max_requests": 1000, "max_paths": 1000, "report_header": true}"#;
    let one = chain(vec![load(&rt, spec("one", "stateful", config))]);
    let two = chain(vec![load(&rt, spec("two", "stateful", config))]);
    for _ in 0..5 {
        one.decide(&mut request("GET", "/x", "same-client", &[]));
    }
    let d = two.decide(&mut request(
        "GET",
        "/x",
        "same-client",
        &[("x-report", "1")],
    ));
    assert!(d
        .denial
        .unwrap()
        .reason
        .contains("requests=1 paths=1 seen=false"));
    // State survives a reload: a guard loaded again under the same name sees its old keys.
    let reloaded = chain(vec![load(&rt, spec("one", "stateful", config))]);
    let d = reloaded.decide(&mut request(
        "GET",
        "/x",
        "same-client",
        &[("x-report", "1")],
    ));
    assert!(d.denial.unwrap().reason.contains("requests=6"));
}

#[test]
fn rate_limit_guard_allows_the_burst_then_denies_with_retry_after() {
    let clock = vigil_host::clock::ManualClock::new(Duration::from_secs(1_700_000_000));
    let mut config = RuntimeConfig {
        clock: clock.clone(),
        ..RuntimeConfig::default()
    };
    config.default_limits.deadline = vigil_tests::RELAXED_DEADLINE;
    let rt = Runtime::new(config).unwrap();
    let c = chain(vec![load(
        &rt,
        spec(
            "throttle",
            "login-throttle",
            r#"{"per_minute": 6, "burst": 3}"#,
        ),
    )]);
    let login = || request("POST", "/login", "mallory", &[]);
    for i in 0..3 {
        assert!(c.decide(&mut login()).allowed(), "burst request {i}");
    }
    let denial = c.decide(&mut login()).denial.expect("over the burst");
    assert_eq!(denial.status, 429);
    assert_eq!(denial.retry_after_secs, Some(10), "one request per 10 s");
    assert!(c
        .decide(&mut request("POST", "/login", "someone-else", &[]))
        .allowed());
    clock.advance(Duration::from_secs(10));
    assert!(
        c.decide(&mut login()).allowed(),
        "a token is back after 10 s"
    );
    assert!(!c.decide(&mut login()).allowed());
}

#[test]
fn concurrent_evaluation_from_many_threads() {
    let rt = runtime();
    let c = chain(vec![
        load(&rt, spec("allow", "allow-all", "")),
        load(
            &rt,
            spec(
                "stateful",
                "stateful",
                r#"{"max_requests": 1000000, "max_paths": 1000000}"#,
            ),
        ),
    ]);
    std::thread::scope(|s| {
        for t in 0..8 {
            let c = &c;
            s.spawn(move || {
                for i in 0..200 {
                    let d = c.decide(&mut request("GET", &format!("/{i}"), &format!("t{t}"), &[]));
                    assert!(d.allowed(), "{:?}", d.outcomes);
                }
            });
        }
    });
    let stats = c.guards()[0].stats();
    assert_eq!(
        stats.requests.load(std::sync::atomic::Ordering::Relaxed),
        1600
    );
    let created = stats
        .instances_created
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        created <= 16,
        "warm instances are reused, {created} created"
    );
    let _ = Verdict::Allow;
}

#[test]
fn sleeping_is_cut_short_at_the_deadline() {
    let rt = runtime();
    let c = hostile_chain(&rt, OnError::Allow);
    let deadline = deadline();
    let (fault, elapsed) = attack_timed(&c, "sleep");
    assert!(
        cut_short(elapsed, deadline),
        "took {elapsed:?} for a {deadline:?} deadline: {fault:?}"
    );
    assert!(fault.detail.contains("may not sleep"), "{}", fault.detail);
}
