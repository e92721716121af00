//! The shared state store against a real Redis: each primitive seen from two replicas (two
//! state stores sharing one Redis, as two sidecars do), the bounds of what lands in Redis, the
//! errors a bad `[state] redis` gets, and what happens when Redis goes away and comes back,
//! down to what a sidecar answers then under each `state.fallback`.

use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_fleet::{FleetConfig, FleetError, Redis, RedisState, RedisTls, BAN_SYNC};
use vigil_host::clock::SystemClock;
use vigil_host::state::{Ban, EventRecord, Fallback, SharedState, StateLimits, StateStore};
use vigil_host::Pattern;
use vigil_tests::guards;
use vigil_tests::harness::{guard_table, metric, send, tempdir, Proxy, Upstream};
use vigil_tests::pki::TestCa;
use vigil_tests::process::{eventually, free_port, temp_dir};
use vigil_tests::redis::{LatencyProxy, RedisCluster, RedisServer};

fn config(url: &str, prefix: &str) -> FleetConfig {
    FleetConfig {
        redis: Redis::Server(url.to_string()),
        tls: None,
        prefix: prefix.to_string(),
        // Generous: these tests assert what is shared, not how fast; a debug build on a busy
        // machine would otherwise fall back now and then.
        timeout: Duration::from_millis(500),
        history_depth: 32,
        history_ttl: Duration::from_secs(60),
        max_bans: 100,
        fallback: Fallback::Local,
        sync: None,
        max_keys: 1000,
        max_sets: 1000,
    }
}

fn limits() -> StateLimits {
    StateLimits {
        max_distinct_members: 8,
        ..StateLimits::default()
    }
}

/// A replica's state: its own tables, sharing the Redis at `url` under `prefix`.
fn replica(url: &str, prefix: &str) -> (StateStore, Arc<RedisState>) {
    let shared = Arc::new(RedisState::connect(config(url, prefix)).expect("Redis accepts us"));
    let store = StateStore::with_shared(limits(), Arc::new(SystemClock), shared.clone());
    (store, shared)
}

fn two_replicas(prefix: &str) -> (StateStore, StateStore) {
    let url = RedisServer::shared().url();
    (replica(&url, prefix).0, replica(&url, prefix).0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn event<'a>(method: &'a str, route: &'a str, status: u16) -> EventRecord<'a> {
    EventRecord {
        at_ms: now_ms(),
        method,
        route,
        status,
        public: true,
        authenticated: false,
    }
}

#[test]
fn a_request_on_one_replica_is_in_the_history_the_other_reads_5ms_later() {
    let (a, b) = two_replicas("history");
    history_read_5ms_later(&a, &b);
}

/// With `state.redis_sync` the other replica answers from its mirror, fed by what the first
/// publishes: the first question about a client reads Redis, the next ones hear of it.
#[test]
fn with_redis_sync_a_history_asked_about_before_hears_of_new_events_within_5ms() {
    // A server of its own: the test counts the reads it serves.
    let server = RedisServer::start("sync-history", &[]);
    let (a, b) = two_synced_replicas(&server.url(), "sync-history", Duration::from_millis(100));
    heard_of_rather_than_read(&a, &b, || history_reads(&server));
}

/// Exact mode keeps histories at hand too: what a peer publishes is as fresh as a read.
#[test]
fn without_sync_a_history_asked_about_before_is_heard_of_rather_than_read() {
    let server = RedisServer::start("exact-history", &[]);
    let url = server.url();
    let (a, b) = (
        replica(&url, "exact-history").0,
        replica(&url, "exact-history").0,
    );
    heard_of_rather_than_read(&a, &b, || history_reads(&server));
}

/// On a cluster the replicas publish through the node the channel's slot maps to, and each
/// hears the fleet through the one node it subscribed to.
#[test]
fn with_redis_sync_on_a_cluster_a_history_asked_about_before_hears_of_new_events_within_5ms() {
    let cluster = RedisCluster::start("sync-history", 3);
    let every = Duration::from_millis(100);
    let (a, b) = two_synced(Redis::Cluster(cluster.urls()), "sync-history", every);
    heard_of_rather_than_read(&a, &b, || cluster.nodes.iter().map(history_reads).sum());
}

/// `LRANGE` calls the server has served.
fn history_reads(server: &RedisServer) -> u64 {
    let stats = server.command(&["INFO", "commandstats"]);
    stats
        .lines()
        .find(|l| l.starts_with("cmdstat_lrange:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

fn heard_of_rather_than_read(a: &StateStore, b: &StateStore, reads: impl Fn() -> u64) {
    // The subscription is made in the background as the store starts.
    std::thread::sleep(Duration::from_millis(300));
    history_read_5ms_later(a, b);
    // Asked about twenty times more, each now heard of rather than read.
    let cart = [Pattern::parse("POST /cart/items").unwrap()];
    let before = reads();
    for _ in 0..20 {
        a.record("shopper-0", &event("POST", "/cart/items", 201));
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.happened("shopper-0", &cart, 60_000, true).unwrap());
    }
    let history = b.history("shopper-0", 100).unwrap();
    assert_eq!(history.len(), 21, "every event once: {history:?}");
    assert_eq!(reads(), before, "no history read from Redis");
}

fn history_read_5ms_later(a: &StateStore, b: &StateStore) {
    let cart = [Pattern::parse("POST /cart/items").unwrap()];
    for i in 0..20 {
        let client = format!("shopper-{i}");
        assert!(!b.happened(&client, &cart, 60_000, true).unwrap());
        a.record(&client, &event("POST", "/cart/items", 201));
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            b.happened(&client, &cart, 60_000, true).unwrap(),
            "{client}: replica B does not see what A answered 5 ms ago"
        );
        let history = b.history(&client, 10).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(
            (history[0].method.as_str(), history[0].route.as_str()),
            ("POST", "/cart/items")
        );
    }
    let client = "failing";
    a.record(client, &event("POST", "/cart/items", 500));
    std::thread::sleep(Duration::from_millis(5));
    assert!(
        !b.happened(client, &cart, 60_000, true).unwrap(),
        "only successes count"
    );
    assert!(b.happened(client, &cart, 60_000, false).unwrap());
}

#[test]
fn a_history_keeps_the_configured_depth_newest_first() {
    let (a, b) = two_replicas("depth");
    // Requests a few milliseconds apart, as one client's are: each is written before the
    // next (the list keeps the most recently written, which is then the newest).
    for i in 0..40 {
        let route = format!("/items/{i}");
        let replica = if i % 2 == 0 { &a } else { &b };
        replica.record("reader", &event("GET", &route, 200));
        std::thread::sleep(Duration::from_millis(3));
    }
    eventually("40 events written", || {
        b.history("reader", 100)
            .unwrap()
            .first()
            .map(|e| e.route.clone())
            == Some("/items/39".into())
    });
    let history = a.history("reader", 100).unwrap();
    assert_eq!(history.len(), 32, "history_depth");
    assert_eq!(history[31].route, "/items/8");
}

#[test]
fn a_rate_limit_allows_its_burst_fleet_wide_exactly() {
    let (a, b) = two_replicas("rate");
    let (scope_a, scope_b) = (a.scope("rate-limit"), b.scope("rate-limit"));
    let per_second = 10.0 / 60.0;
    let mut allowed = 0;
    let mut waits = Vec::new();
    for i in 0..40 {
        let answer = if i % 2 == 0 {
            a.rate(scope_a, "client:bot", per_second, 10)
        } else {
            b.rate(scope_b, "client:bot", per_second, 10)
        };
        match answer.unwrap() {
            Ok(()) => allowed += 1,
            Err(ms) => waits.push(ms),
        }
    }
    assert_eq!(allowed, 10, "budget + burst, fleet-wide");
    // One token every 6 s: the first refused request waits almost all of it.
    assert!((5_000..=6_000).contains(&waits[0]), "{waits:?}");
    assert!(
        a.rate(scope_a, "client:other", per_second, 10)
            .unwrap()
            .is_ok(),
        "keys are separate"
    );
    assert!(
        a.rate(scope_a, "k", f64::NAN, 1).is_err(),
        "a bad rate still traps"
    );
}

#[test]
fn counters_and_distinct_sets_agree_across_replicas() {
    let (a, b) = two_replicas("count");
    let (sa, sb) = (a.scope("g"), b.scope("g"));
    for _ in 0..5 {
        a.count(sa, "logins", 1, 60_000).unwrap();
        b.count(sb, "logins", 2, 60_000).unwrap();
    }
    assert_eq!(a.count(sa, "logins", 0, 60_000).unwrap(), 15);
    assert_eq!(b.count(sb, "logins", 0, 60_000).unwrap(), 15);
    assert_eq!(
        b.count(b.scope("other-guard"), "logins", 0, 60_000)
            .unwrap(),
        0,
        "another guard's key space"
    );
    // A window of 800 ms counts an update for 700 to 800 ms.
    a.count(sa, "short", 3, 800).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(b.count(sb, "short", 0, 800).unwrap(), 0);

    for m in 0..4 {
        a.distinct(sa, "ids", &format!("user-{m}"), 60_000).unwrap();
    }
    for m in 2..6 {
        b.distinct(sb, "ids", &format!("user-{m}"), 60_000).unwrap();
    }
    assert_eq!(
        a.distinct(sa, "ids", "user-0", 60_000).unwrap(),
        6,
        "0..6 from both"
    );
    for m in 6..20 {
        b.distinct(sb, "ids", &format!("user-{m}"), 60_000).unwrap();
    }
    assert_eq!(
        a.distinct(sa, "ids", "user-19", 60_000).unwrap(),
        8,
        "saturates at max_distinct_members"
    );
    let long = "x".repeat(10_000);
    assert_eq!(a.distinct(sa, "long", &long, 60_000).unwrap(), 1);
    assert_eq!(
        b.distinct(sb, "long", &long, 60_000).unwrap(),
        1,
        "hashed the same on both"
    );
}

#[test]
fn values_set_on_one_replica_are_read_on_the_other_until_they_expire() {
    let (a, b) = two_replicas("kv");
    let (sa, sb) = (a.scope("g"), b.scope("g"));
    a.set(sa, "session", b"abc", 60_000).unwrap();
    assert_eq!(b.get(sb, "session").unwrap().as_deref(), Some(&b"abc"[..]));
    assert_eq!(b.get(b.scope("h"), "session").unwrap(), None, "per guard");
    b.set(sb, "brief", b"x", 100).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(a.get(sa, "brief").unwrap(), None);
    a.set(sa, "gone", b"x", 0).unwrap();
    assert_eq!(
        b.get(sb, "gone").unwrap(),
        None,
        "a zero TTL stores nothing"
    );
    let too_big = vec![0u8; limits().max_kv_value_bytes + 1];
    assert!(
        a.set(sa, "big", &too_big, 1_000).is_err(),
        "the value cap holds"
    );
}

#[test]
fn bans_placed_on_one_replica_hold_on_every_replica_until_lifted() {
    let (a, b) = two_replicas("bans");
    let ban = Ban {
        until_ms: now_ms() + 60_000,
        by: "rate-limit".into(),
        reason: "too many".into(),
    };
    a.ban("mallory", ban.clone());
    assert_eq!(
        a.ban_of("mallory"),
        Some(ban.clone()),
        "at once where placed"
    );
    let placed = Instant::now();
    eventually("the ban reaches replica B", || {
        b.ban_of("mallory").is_some()
    });
    assert!(placed.elapsed() <= BAN_SYNC * 3, "{:?}", placed.elapsed());
    assert_eq!(b.bans_in_force(), [("mallory".to_string(), ban.clone())]);
    assert!(b.lift_ban("mallory"));
    assert_eq!(b.ban_of("mallory"), None);
    eventually("the lift reaches replica A", || {
        a.ban_of("mallory").is_none()
    });
    assert!(a.bans_in_force().is_empty());

    a.ban("eve", ban.clone());
    a.record("eve", &event("GET", "/", 200));
    eventually("eve's history written", || {
        !b.history("eve", 1).unwrap().is_empty()
    });
    assert!(b.forget_client("eve"));
    // A merges its own last two seconds, which may not have reached Redis; past them the
    // forgotten history is gone on every replica.
    std::thread::sleep(Duration::from_millis(2_100));
    assert!(a.history("eve", 10).unwrap().is_empty());
    let any = [Pattern::parse("*").unwrap()];
    assert!(!a.happened("eve", &any, 60_000, false).unwrap());
    eventually("the forget reaches replica A", || a.ban_of("eve").is_none());
}

#[test]
fn every_key_in_redis_has_a_ttl_and_a_bounded_name() {
    let (a, _) = two_replicas("bounded");
    let s = a.scope("guard");
    let long = "k".repeat(5_000);
    a.record(&long, &event("GET", "/", 200));
    a.rate(s, &long, 1.0, 1).unwrap().unwrap();
    a.count(s, &long, 1, 60_000).unwrap();
    a.distinct(s, &long, "m", 60_000).unwrap();
    a.set(s, &long, b"v", u64::MAX).unwrap();
    a.ban(
        &long,
        Ban {
            until_ms: now_ms() + 1_000,
            by: "admin".into(),
            reason: String::new(),
        },
    );
    let server = RedisServer::shared();
    eventually("the history written", || {
        server
            .keys_with_ttl("bounded")
            .iter()
            .any(|(k, _)| k.starts_with("bounded:h:"))
    });
    let keys = server.keys_with_ttl("bounded");
    assert_eq!(keys.len(), 7, "{keys:?}");
    for (key, ttl) in &keys {
        assert!(*ttl > 0, "{key} has no TTL ({ttl})");
        assert!(key.len() < 100, "{key} is not bounded");
    }
    let (_, kv_ttl) = keys
        .iter()
        .find(|(k, _)| k.starts_with("bounded:v:"))
        .unwrap();
    assert!(*kv_ttl <= 30 * 24 * 3600 * 1000, "a guard's TTL is capped");
}

#[test]
fn while_redis_is_away_every_primitive_decides_on_local_tables_without_waiting() {
    let mut server = RedisServer::start("away", &[]);
    let (store, shared) = replica(&server.url(), "away");
    let s = store.scope("g");
    assert!(store.rate(s, "k", 1.0, 1).unwrap().is_ok());
    assert!(shared.status().up);
    server.kill();

    // The first call finds out (within the timeout), the rest do not wait at all.
    let started = Instant::now();
    let _ = store.count(s, "c", 1, 60_000).unwrap();
    assert!(started.elapsed() < Duration::from_millis(1_500));
    assert!(!shared.status().up, "marked away");
    let started = Instant::now();
    for _ in 0..100 {
        store.count(s, "c", 1, 60_000).unwrap();
        store.history("client", 10).unwrap();
        let _ = store.rate(s, "local-key", 1.0, 3);
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?} for 300 calls while away",
        started.elapsed()
    );
    assert!(
        store.count(s, "c", 0, 60_000).unwrap() >= 100,
        "counted locally"
    );
    assert!(shared.status().fallbacks >= 300);
    store.record("client", &event("GET", "/", 200));
    assert!(
        !store.history("client", 10).unwrap().is_empty(),
        "recorded locally"
    );

    server.restart();
    eventually("Redis is used again", || shared.status().up);
    assert_eq!(
        store.count(s, "c", 1, 60_000).unwrap(),
        1,
        "a Redis restarted empty starts the window afresh"
    );
}

#[test]
fn redis_unreachable_at_start_is_not_fatal_and_is_used_once_it_answers() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let (store, shared) = replica(&url, "late");
    assert!(!shared.status().up);
    let s = store.scope("g");
    assert_eq!(
        store.count(s, "c", 1, 60_000).unwrap(),
        1,
        "local meanwhile"
    );
    let server = RedisServer::start_on("late", port, &[]);
    eventually("Redis is used once it answers", || shared.status().up);
    assert_eq!(
        store.count(s, "c", 1, 60_000).unwrap(),
        1,
        "Redis's own count"
    );
    assert_eq!(server.command(&["EXISTS", "late:c:1:g:c"]), ":1");
}

#[test]
fn bad_settings_are_refused_with_what_is_wrong() {
    let error = |url: &str| match RedisState::connect(config(url, "errors")) {
        Ok(_) => panic!("{url} was accepted"),
        Err(e) => e,
    };
    let e = error("redis://127.0.0.1:notaport/0");
    assert!(matches!(e, FleetError::BadUrl { .. }), "{e}");
    assert!(e.to_string().contains("127.0.0.1:notaport"), "{e}");

    let e = error("rediss://user:hunter2@127.0.0.1:notaport/0");
    assert!(
        !e.to_string().contains("hunter2"),
        "the password stays out: {e}"
    );

    let server = RedisServer::start("auth", &["--requirepass", "s3cret"]);
    let wrong = format!("redis://:wrong@127.0.0.1:{}/0", server.port);
    let e = error(&wrong);
    assert!(matches!(e, FleetError::Refused { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port)) && !text.contains("wrong@"),
        "{text}"
    );
    let none = format!("redis://127.0.0.1:{}/0", server.port);
    let e = error(&none);
    assert!(e.to_string().to_lowercase().contains("auth"), "{e}");
    let right = format!("redis://:s3cret@127.0.0.1:{}/0", server.port);
    assert!(RedisState::connect(config(&right, "errors")).is_ok());
    let e = error(&format!("redis://:s3cret@127.0.0.1:{}/99", server.port));
    assert!(
        matches!(e, FleetError::Refused { .. }),
        "no database 99: {e}"
    );
}

/// A Redis serving TLS on its own port (beside a plain one the harness uses), with a
/// certificate for `localhost` from `ca`.
fn tls_redis(name: &str, ca: &TestCa) -> (RedisServer, u16) {
    let dir = temp_dir(&format!("redis-certificates-{name}"));
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "redis");
    let ca_file = ca.write(&dir, "redis-ca");
    let tls_port = free_port();
    let server = RedisServer::start(
        &format!("tls-{name}"),
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca_file.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    );
    (server, tls_port)
}

fn trusting(ca: &TestCa) -> Option<RedisTls> {
    let dir = temp_dir("redis-certificates-trusted");
    Some(RedisTls {
        ca: Some(std::fs::read(ca.write(&dir, "trusted")).unwrap()),
        client: None,
    })
}

#[test]
fn a_redis_over_tls_is_shared_only_when_its_certificate_verifies() {
    let ca = TestCa::new("redis CA");
    let (server, tls_port) = tls_redis("verified", &ca);
    let url = format!("rediss://localhost:{tls_port}/0");

    let shared = Arc::new(
        RedisState::connect(FleetConfig {
            tls: trusting(&ca),
            ..config(&url, "tls")
        })
        .expect("a Redis whose certificate verifies accepts us"),
    );
    assert!(shared.status().up);
    let store = StateStore::with_shared(limits(), Arc::new(SystemClock), shared.clone());
    let s = store.scope("g");
    assert_eq!(store.count(s, "c", 3, 60_000).unwrap(), 3);
    assert_eq!(
        server.command(&["EXISTS", "tls:c:1:g:c"]),
        ":1",
        "written over TLS"
    );

    // Trusting another CA (or the system's roots, which do not hold the test CA), the sidecar
    // sends nothing to that server: it decides on its own tables and keeps retrying.
    for tls in [trusting(&TestCa::new("another CA")), None] {
        let distrusting = RedisState::connect(FleetConfig {
            tls,
            ..config(&url, "tls-distrusted")
        })
        .expect("a certificate that fails is not fatal at start");
        assert!(!distrusting.status().up, "not marked up");
        let store = StateStore::with_shared(limits(), Arc::new(SystemClock), Arc::new(distrusting));
        assert_eq!(store.count(store.scope("g"), "c", 1, 60_000).unwrap(), 1);
    }
    assert_eq!(server.command(&["EXISTS", "tls-distrusted:c:1:g:c"]), ":0");
}

#[test]
fn a_slow_redis_makes_no_call_wait_past_the_timeout() {
    let server = RedisServer::start("slow", &[]);
    let proxy = LatencyProxy::start(server.port);
    let url = format!("redis://127.0.0.1:{}/0", proxy.port);
    let timeout = Duration::from_millis(50);
    let shared = Arc::new(
        RedisState::connect(FleetConfig {
            timeout,
            ..config(&url, "slow")
        })
        .expect("Redis accepts us"),
    );
    eventually("Redis answers through the proxy", || shared.status().up);
    let store = StateStore::with_shared(limits(), Arc::new(SystemClock), shared.clone());
    let s = store.scope("g");
    assert_eq!(
        store.count(s, "c", 1, 60_000).unwrap(),
        1,
        "fast enough: Redis decides"
    );

    // Every reply now arrives 300 ms late: the call gives up at the timeout and decides on
    // this replica's own tables; the store is marked away, so the next calls do not wait.
    proxy.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    let _ = store.rate(s, "k", 1.0, 5);
    let waited = started.elapsed();
    assert!(
        waited >= timeout && waited < timeout + Duration::from_millis(200),
        "a call on a slow Redis waited {waited:?}, the timeout is {timeout:?}"
    );
    assert!(!shared.status().up, "marked away");
    let started = Instant::now();
    for _ in 0..50 {
        store.count(s, "c", 1, 60_000).unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?} for 50 calls while away",
        started.elapsed()
    );
    assert!(shared.status().fallbacks >= 51);

    // Fast again: the probe finds it, and calls go to Redis.
    proxy.set_delay(Duration::ZERO);
    eventually("Redis is used again", || shared.status().up);
    assert_eq!(
        store.count(s, "c", 1, 60_000).unwrap(),
        2,
        "Redis's own count"
    );
}

/// A sidecar in front of its own upstream whose `GET /limited` a rate-limit guard (with
/// `on_error = "allow"`) runs for and whose other routes no guard does, sharing state through
/// `redis`; `fallback` is the `[state]` line for it, if any.
async fn sidecar_with(redis: &RedisServer, name: &str, fallback: &str) -> (Upstream, Proxy) {
    let guard = guard_table(
        "rate-limit",
        guards::RATE_LIMIT,
        "routes = [\"GET /limited\"]\non_error = \"allow\"\n\
         config = { key = \"client\", rate = 100000, per = \"second\", burst = 100000 }",
    );
    let config = format!(
        "[upstream]\nurl = \"{{upstream}}\"\n[identity]\nkey = \"header:x-api-key\"\n\
         [state]\nredis = \"{}\"\nredis_prefix = \"{name}\"\nredis_timeout = \"50ms\"\n{fallback}\n{guard}",
        redis.url()
    );
    let upstream = Upstream::start().await;
    let url = format!("http://{}", upstream.addr);
    let proxy = Proxy::start(&tempdir(name), &config, &url).await;
    (upstream, proxy)
}

async fn get(proxy: &Proxy, path: &str) -> (StatusCode, HeaderMap, String) {
    let (status, headers, body) =
        send(proxy.addr, "GET", path, &[("x-api-key", "c")], vec![]).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn until_redis_is_used_again(proxy: &Proxy) {
    for _ in 0..200 {
        if metric(proxy, "vigil_state_backend_up").await == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sidecar never used Redis again");
}

/// Everything this test process logs at info and above, once [`log_lines_about`] was first
/// called.
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lines logged so far that name the Redis on `port` (tests run at once, each with its
/// own server); the first call starts capturing.
fn log_lines_about(port: u16) -> Vec<String> {
    static CAPTURING: std::sync::Once = std::sync::Once::new();
    CAPTURING.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    });
    let address = format!("127.0.0.1:{port}/0");
    String::from_utf8_lossy(&LOG.lock().unwrap())
        .lines()
        .filter(|line| line.contains(&address))
        .map(str::to_string)
        .collect()
}

fn count_containing(lines: &[String], text: &str) -> usize {
    lines.iter().filter(|line| line.contains(text)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_deny_a_request_that_needs_redis_while_it_is_away_gets_503_and_no_other_does() {
    let mut server = RedisServer::start("deny", &[]);
    log_lines_about(server.port);
    let (_upstream, proxy) = sidecar_with(&server, "deny", "fallback = \"deny\"").await;
    assert_eq!(get(&proxy, "/limited").await.0, StatusCode::OK);
    server.kill();

    for _ in 0..5 {
        let (status, headers, body) = get(&proxy, "/limited").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(headers.get("retry-after").unwrap(), "1");
        assert!(
            body.contains("client state this request is checked against is unavailable"),
            "{body}"
        );
        assert!(!body.contains("rate-limit"), "no guard decided it: {body}");
        let (status, _, body) = get(&proxy, "/open").await;
        assert_eq!(status, StatusCode::OK, "no guard needs state here: {body}");
    }
    assert_eq!(metric(&proxy, "vigil_state_backend_up").await, 0);
    assert!(metric(&proxy, "vigil_state_backend_fallbacks_total").await >= 5);
    let stopped = r#"vigil_guard_results_total{guard="rate-limit",result="state_unavailable"}"#;
    assert_eq!(metric(&proxy, stopped).await, 5);
    let errors =
        r#"vigil_requests_total{method="GET",route="/limited",status="503",verdict="error"}"#;
    assert_eq!(metric(&proxy, errors).await, 5);

    server.restart();
    until_redis_is_used_again(&proxy).await;
    assert_eq!(get(&proxy, "/limited").await.0, StatusCode::OK);
    let log = log_lines_about(server.port);
    assert_eq!(
        count_containing(
            &log,
            "Redis is unavailable: refusing with 503 every request whose guards need client state"
        ),
        1,
        "said once when refusing starts: {log:#?}"
    );
    assert_eq!(
        count_containing(
            &log,
            "Redis answers again: requests whose guards need client state are served again"
        ),
        1,
        "and once when it stops: {log:#?}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_no_request_fails_while_redis_is_away() {
    let mut server = RedisServer::start("local", &[]);
    log_lines_about(server.port);
    let (upstream, proxy) = sidecar_with(&server, "local", "").await;
    assert_eq!(get(&proxy, "/limited").await.0, StatusCode::OK);
    server.kill();
    for _ in 0..5 {
        for path in ["/limited", "/open"] {
            let (status, _, body) = get(&proxy, path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
    }
    assert_eq!(metric(&proxy, "vigil_state_backend_up").await, 0);
    assert!(metric(&proxy, "vigil_state_backend_fallbacks_total").await >= 5);
    server.restart();
    until_redis_is_used_again(&proxy).await;
    assert_eq!(get(&proxy, "/limited").await.0, StatusCode::OK);
    assert_eq!(upstream.count(), 12);
    let log = log_lines_about(server.port);
    assert_eq!(
        count_containing(
            &log,
            "Redis is unavailable: deciding on this replica's own state tables"
        ),
        1,
        "{log:#?}"
    );
    assert_eq!(
        count_containing(
            &log,
            "Redis answers again: client state is fleet-wide again"
        ),
        1,
        "{log:#?}"
    );
    proxy.shutdown().await;
}

#[test]
fn a_cluster_unreachable_at_start_is_not_fatal_either() {
    let urls = (0..3)
        .map(|_| format!("redis://127.0.0.1:{}", free_port()))
        .collect();
    let config = FleetConfig {
        redis: Redis::Cluster(urls),
        ..config("", "late-cluster")
    };
    let shared = RedisState::connect(config).expect("starts on local tables");
    assert!(!shared.status().up);
    assert!(
        shared.address().starts_with("cluster [redis://127.0.0.1:"),
        "{}",
        shared.address()
    );
}

/// Two replicas sharing a Redis Cluster of three primaries: every primitive as with one
/// server, the ban scripts (whose two keys must share a hash slot) included, and the keys
/// spread over the nodes.
#[test]
fn a_redis_cluster_is_shared_as_one_server_is() {
    let cluster = RedisCluster::start("primitives", 3);
    let replica = || {
        let config = FleetConfig {
            redis: Redis::Cluster(cluster.urls()),
            ..config("", "cluster")
        };
        let shared = Arc::new(RedisState::connect(config).expect("the cluster accepts us"));
        assert!(shared.status().up, "{}", shared.address());
        StateStore::with_shared(limits(), Arc::new(SystemClock), shared)
    };
    let (a, b) = (replica(), replica());
    let (sa, sb) = (a.scope("g"), b.scope("g"));

    let per_second = 10.0 / 60.0;
    let allowed = (0..40)
        .filter(|i| {
            let (store, scope) = if i % 2 == 0 { (&a, sa) } else { (&b, sb) };
            store
                .rate(scope, "client:bot", per_second, 10)
                .unwrap()
                .is_ok()
        })
        .count();
    assert_eq!(allowed, 10, "budget + burst, fleet-wide");

    for _ in 0..5 {
        a.count(sa, "logins", 1, 60_000).unwrap();
        b.count(sb, "logins", 2, 60_000).unwrap();
    }
    assert_eq!(b.count(sb, "logins", 0, 60_000).unwrap(), 15);
    for m in 0..6 {
        a.distinct(sa, "ids", &format!("user-{m}"), 60_000).unwrap();
    }
    assert_eq!(b.distinct(sb, "ids", "user-0", 60_000).unwrap(), 6);
    a.set(sa, "session", b"abc", 60_000).unwrap();
    assert_eq!(b.get(sb, "session").unwrap().as_deref(), Some(&b"abc"[..]));

    let cart = [Pattern::parse("POST /cart/items").unwrap()];
    for i in 0..20 {
        a.record(&format!("shopper-{i}"), &event("POST", "/cart/items", 201));
    }
    for i in 0..20 {
        let shopper = format!("shopper-{i}");
        eventually(&format!("{shopper}'s cart on B"), || {
            b.happened(&shopper, &cart, 60_000, true).unwrap()
        });
    }

    let ban = Ban {
        until_ms: now_ms() + 60_000,
        by: "admin".into(),
        reason: "fraud".into(),
    };
    a.ban("mallory", ban.clone());
    eventually("the ban reaches B", || b.ban_of("mallory").is_some());
    assert_eq!(b.bans_in_force(), [("mallory".to_string(), ban)]);
    assert!(b.lift_ban("mallory"));
    eventually("the lift reaches A", || a.ban_of("mallory").is_none());

    let spread = cluster.keys_per_node("cluster");
    assert!(
        spread.iter().all(|keys| *keys > 0),
        "every node holds some of the keys: {spread:?}"
    );
}

/// Two replicas deciding on views reconciled with Redis every `every` (`state.redis_sync`),
/// reaching Redis through `url`.
fn two_synced_replicas(url: &str, prefix: &str, every: Duration) -> (StateStore, StateStore) {
    two_synced(Redis::Server(url.to_string()), prefix, every)
}

fn two_synced(redis: Redis, prefix: &str, every: Duration) -> (StateStore, StateStore) {
    let replica = || {
        let config = FleetConfig {
            redis: redis.clone(),
            sync: Some(every),
            ..config("", prefix)
        };
        let shared = Arc::new(RedisState::connect(config).expect("Redis accepts us"));
        StateStore::with_shared(limits(), Arc::new(SystemClock), shared)
    };
    (replica(), replica())
}

/// The worst case of `state.redis_sync`, as docs/fleet.md states it: every replica spends the
/// burst its first exact call saw, so a fleet of N lets through at most
/// `burst + rate × T + (N − 1) × (burst + rate × S)` in any span T, with S the staleness of a
/// view (at most ten sync intervals plus a round trip); then the fleet's limiter holds the debt and
/// every replica refuses until it is paid.
#[test]
fn with_redis_sync_a_burst_overshoots_at_most_by_the_formula_and_the_debt_is_then_held() {
    let every = Duration::from_millis(50);
    let (a, b) = two_synced_replicas(&RedisServer::shared().url(), "sync-rate", every);
    let (sa, sb) = (a.scope("rate-limit"), b.scope("rate-limit"));
    let per_second = 10.0 / 60.0;
    let take = |n: usize| {
        (0..n)
            .filter(|i| {
                let answer = if i % 2 == 0 {
                    a.rate(sa, "client:bot", per_second, 10)
                } else {
                    b.rate(sb, "client:bot", per_second, 10)
                };
                answer.unwrap().is_ok()
            })
            .count()
    };
    let burst_allowed = take(40);
    // rate × (T + S) is far below one token here: the bound is 10 + 1 × 10.
    assert!(
        (10..=20).contains(&burst_allowed),
        "fleet-wide allowed {burst_allowed} of 40; the bound is 20"
    );
    println!("redis_sync = 50ms, 2 replicas, burst 10: {burst_allowed} of 40 allowed");
    std::thread::sleep(every * 4);
    assert_eq!(
        take(20),
        0,
        "once synced, the overshoot is owed: nothing more"
    );
}

#[test]
fn with_redis_sync_counters_and_sets_agree_across_replicas_within_a_sync() {
    let every = Duration::from_millis(50);
    let (a, b) = two_synced_replicas(&RedisServer::shared().url(), "sync-count", every);
    counters_and_sets_agree_within_a_sync(a, b, every);
}

/// A cluster's sync rounds send each view on its own (its keys span slots) rather than a
/// slice in one script: the views agree as they do on one server, and limiters sync too.
#[test]
fn with_redis_sync_on_a_cluster_views_agree_as_on_one_server() {
    let cluster = RedisCluster::start("sync", 3);
    let every = Duration::from_millis(50);
    let (a, b) = two_synced(Redis::Cluster(cluster.urls()), "sync-cluster", every);
    let (sa, sb) = (a.scope("g"), b.scope("g"));
    // Each replica's first call is exact; what it takes on its view afterwards reaches the
    // fleet's limiter with the next round, and the other replica's view with the one after.
    assert!(a.rate(sa, "bot", 1.0 / 60.0, 4).unwrap().is_ok());
    assert!(b.rate(sb, "bot", 1.0 / 60.0, 4).unwrap().is_ok());
    assert!(a.rate(sa, "bot", 1.0 / 60.0, 4).unwrap().is_ok());
    assert!(b.rate(sb, "bot", 1.0 / 60.0, 4).unwrap().is_ok());
    std::thread::sleep(every * 3);
    let _ = a.rate(sa, "bot", 1.0 / 60.0, 4).unwrap();
    let _ = b.rate(sb, "bot", 1.0 / 60.0, 4).unwrap();
    std::thread::sleep(every * 3);
    assert!(
        a.rate(sa, "bot", 1.0 / 60.0, 4).unwrap().is_err(),
        "the fleet's four are spent"
    );
    assert!(
        b.rate(sb, "bot", 1.0 / 60.0, 4).unwrap().is_err(),
        "the fleet's four are spent"
    );
    counters_and_sets_agree_within_a_sync(a, b, every);
}

fn counters_and_sets_agree_within_a_sync(a: StateStore, b: StateStore, every: Duration) {
    let (sa, sb) = (a.scope("g"), b.scope("g"));
    for _ in 0..5 {
        a.count(sa, "logins", 1, 60_000).unwrap();
        b.count(sb, "logins", 2, 60_000).unwrap();
    }
    for m in 0..5 {
        a.distinct(sa, "ids", &format!("user-{m}"), 60_000).unwrap();
    }
    for m in 3..7 {
        b.distinct(sb, "ids", &format!("user-{m}"), 60_000).unwrap();
    }
    // A view is refreshed by the sync after it is used: both sides' additions have landed
    // after one round, and are read on either after the next.
    std::thread::sleep(every * 3);
    a.count(sa, "logins", 0, 60_000).unwrap();
    b.count(sb, "logins", 0, 60_000).unwrap();
    a.distinct(sa, "ids", "user-0", 60_000).unwrap();
    b.distinct(sb, "ids", "user-6", 60_000).unwrap();
    std::thread::sleep(every * 3);
    assert_eq!(a.count(sa, "logins", 0, 60_000).unwrap(), 15);
    assert_eq!(b.count(sb, "logins", 0, 60_000).unwrap(), 15);
    // user-0 to user-6, members both saw counted once; saturating at max_distinct_members.
    assert_eq!(a.distinct(sa, "ids", "user-0", 60_000).unwrap(), 7);
    assert_eq!(b.distinct(sb, "ids", "user-6", 60_000).unwrap(), 7);
    assert_eq!(b.distinct(sb, "ids", "user-7", 60_000).unwrap(), 8);
    assert_eq!(b.distinct(sb, "ids", "user-8", 60_000).unwrap(), 8);
}

/// A call on a fresh view is answered without Redis: with every round trip made slower than
/// the timeout, calls on views still answer, from the fleet's state, and fall back nowhere.
#[test]
fn with_redis_sync_calls_on_a_fresh_view_make_no_round_trip() {
    let proxy = LatencyProxy::start(RedisServer::shared().port);
    let url = format!("redis://127.0.0.1:{}/0", proxy.port);
    let (a, _) = two_synced_replicas(&url, "sync-local", Duration::from_secs(2));
    let sa = a.scope("g");
    assert_eq!(a.count(sa, "views", 1, 60_000).unwrap(), 1);
    assert!(a.rate(sa, "k", 100.0, 5).unwrap().is_ok());
    assert_eq!(a.distinct(sa, "s", "m1", 60_000).unwrap(), 1);
    // Exact calls would now time out (500 ms) and count fallbacks.
    proxy.set_delay(Duration::from_secs(1));
    let before = a.shared_status().unwrap().fallbacks;
    assert_eq!(a.count(sa, "views", 1, 60_000).unwrap(), 2);
    assert!(a.rate(sa, "k", 100.0, 5).unwrap().is_ok());
    assert_eq!(a.distinct(sa, "s", "m2", 60_000).unwrap(), 2);
    assert_eq!(a.distinct(sa, "s", "m1", 60_000).unwrap(), 2);
    let status = a.shared_status().unwrap();
    assert_eq!(status.fallbacks, before, "no call went to Redis");
    assert!(status.up);
    // A key without a view is asked exactly, and falls back.
    a.count(sa, "new", 1, 60_000).unwrap();
    assert_eq!(a.shared_status().unwrap().fallbacks, before + 1);
}
