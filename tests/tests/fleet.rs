//! Replicas behind a load balancer, end to end: two and three sidecars in front of one
//! upstream, sharing client state through one real Redis, with requests spread round-robin as
//! a load balancer does. The stock guards must decide as one sidecar would: honest users are
//! not refused for a prerequisite another replica served, and limits do not multiply by the
//! number of replicas; the same with a Redis Cluster. Then Redis is killed under traffic and
//! comes back.

use http::StatusCode;
use std::time::Duration;
use vigil_tests::guards;
use vigil_tests::harness::{guard_table, metric, metric_value, send, tempdir, Proxy, Upstream};
use vigil_tests::redis::{RedisCluster, RedisServer};

/// Clients are told apart by an API key; state goes to Redis. The timeout is generous: these
/// tests assert what replicas decide together, and a debug build on a busy machine would
/// otherwise fall back now and then (the fault test below sets its own).
fn config(redis: &str, prefix: &str, timeout: &str, guard: &str) -> String {
    config_for(&format!("\"{redis}\""), prefix, timeout, guard)
}

/// The same, with `state.redis` written as given: a quoted URL, or a list of a cluster's.
fn config_for(redis: &str, prefix: &str, timeout: &str, guard: &str) -> String {
    format!(
        "[upstream]\nurl = \"{{upstream}}\"\ntimeout = \"2s\"\n[identity]\nkey = \"header:x-api-key\"\n\
         [state]\nredis = {redis}\nredis_prefix = \"{prefix}\"\nredis_timeout = \"{timeout}\"\n{guard}"
    )
}

/// `n` sidecars with the same configuration in front of one upstream.
async fn fleet(n: usize, name: &str, config: &str) -> (Upstream, Vec<Proxy>) {
    let upstream = Upstream::start().await;
    let url = format!("http://{}", upstream.addr);
    let mut replicas = Vec::new();
    for i in 0..n {
        replicas.push(Proxy::start(&tempdir(&format!("{name}-{i}")), config, &url).await);
    }
    (upstream, replicas)
}

async fn call(proxy: &Proxy, method: &str, path: &str, client: &str) -> StatusCode {
    send(
        proxy.addr,
        method,
        path,
        &[("x-api-key", client)],
        Vec::new(),
    )
    .await
    .0
}

async fn shutdown(replicas: Vec<Proxy>) {
    for proxy in replicas {
        proxy.shutdown().await;
    }
}

const SEQUENCE: &str = r#"config = { rules = [{ kind = "requires", target = "POST /checkout", after = ["POST /cart/items"], within = "15m" }] }"#;

/// Thirty shoppers put an item in the cart on one replica and check out on the next, 5 ms
/// later: none is refused. One who skips the cart still is.
async fn shoppers_alternating_replicas(n: usize) {
    let redis = format!("\"{}\"", RedisServer::shared().url());
    shoppers_alternating_replicas_of(&redis, &format!("sequence-{n}"), n, "").await;
}

/// The same through the Redis `redis` (as `state.redis` is written), keys under `prefix`,
/// with `state` added to the `[state]` table.
async fn shoppers_alternating_replicas_of(redis: &str, prefix: &str, n: usize, state: &str) {
    let guard = guard_table("sequence", guards::SEQUENCE, SEQUENCE);
    let config = config_for(redis, prefix, "500ms", &guard)
        .replace("[state]\n", &format!("[state]\n{state}"));
    let (upstream, replicas) = fleet(n, prefix, &config).await;
    let mut refused = Vec::new();
    for i in 0..30 {
        let shopper = format!("shopper-{i}");
        let cart = call(&replicas[i % n], "POST", "/cart/items", &shopper).await;
        assert_eq!(cart, StatusCode::OK, "{shopper}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let checkout = call(&replicas[(i + 1) % n], "POST", "/checkout", &shopper).await;
        if checkout != StatusCode::OK {
            refused.push((shopper, checkout));
        }
    }
    assert_eq!(refused, [], "honest shoppers refused with {n} replicas");
    for proxy in &replicas {
        assert_eq!(
            call(proxy, "POST", "/checkout", "skipper").await,
            StatusCode::CONFLICT,
            "the rule still holds"
        );
    }
    assert_eq!(upstream.count(), 60);
    shutdown(replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_rule_refuses_no_honest_user_across_two_replicas() {
    shoppers_alternating_replicas(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_rule_refuses_no_honest_user_across_three_replicas() {
    shoppers_alternating_replicas(3).await;
}

/// With `state.redis_sync` the histories come from each replica's mirror: still no honest
/// shopper refused, with two replicas and with three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_sync_a_sequence_rule_refuses_no_honest_user() {
    let redis = format!("\"{}\"", RedisServer::shared().url());
    for n in [2, 3] {
        let prefix = format!("sync-sequence-{n}");
        shoppers_alternating_replicas_of(&redis, &prefix, n, "redis_sync = \"1s\"\n").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_allows_its_budget_once_across_the_fleet() {
    let redis = format!("\"{}\"", RedisServer::shared().url());
    for n in [2, 3] {
        one_budget_across(&redis, &format!("rate-{n}"), n).await;
    }
}

/// A bot's 40 requests spread round-robin over `n` replicas sharing the Redis `redis`, keys
/// under `prefix`: 10 allowed (rate 10 a minute, burst 10), as by one sidecar.
async fn one_budget_across(redis: &str, prefix: &str, n: usize) {
    let table = r#"config = { key = "client", rate = 10, per = "minute", burst = 10 }"#;
    let guard = guard_table("rate-limit", guards::RATE_LIMIT, table);
    let config = config_for(redis, prefix, "500ms", &guard);
    let (upstream, replicas) = fleet(n, prefix, &config).await;
    let mut statuses = Vec::new();
    for i in 0..40 {
        statuses.push(call(&replicas[i % n], "GET", "/items", "bot").await);
    }
    let allowed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(allowed, 10, "{n} replicas answered {statuses:?}");
    assert!(statuses[10..]
        .iter()
        .all(|s| *s == StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(upstream.count(), 10);
    shutdown(replicas).await;
}

/// With `state.redis_sync` each replica decides on its view and the fleet reconciles: a bot
/// racing through `n` replicas gets at most the documented bound, `burst + (n − 1) × burst`
/// here (the rate term is far below one token), and once the views have synced the fleet
/// refuses it on every replica, as the overshoot is owed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_sync_a_rate_limit_overshoots_at_most_the_documented_bound() {
    let redis = format!("\"{}\"", RedisServer::shared().url());
    let table = r#"config = { key = "client", rate = 10, per = "minute", burst = 10 }"#;
    let guard = guard_table("rate-limit", guards::RATE_LIMIT, table);
    for n in [2, 3] {
        let prefix = format!("sync-rate-{n}");
        let config = config_for(&redis, &prefix, "500ms", &guard)
            .replace("[state]\n", "[state]\nredis_sync = \"50ms\"\n");
        let (upstream, replicas) = fleet(n, &prefix, &config).await;
        let mut allowed = 0;
        for i in 0..40 {
            if call(&replicas[i % n], "GET", "/items", "bot").await == StatusCode::OK {
                allowed += 1;
            }
        }
        assert!(
            (10..=10 * n).contains(&allowed),
            "{n} replicas allowed {allowed} of 40; the bound is {}",
            10 * n
        );
        println!("redis_sync = 50ms, {n} replicas: {allowed} of 40 allowed");
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..(2 * n) {
            assert_eq!(
                call(&replicas[i % n], "GET", "/items", "bot").await,
                StatusCode::TOO_MANY_REQUESTS
            );
        }
        assert_eq!(upstream.count(), allowed);
        for proxy in &replicas {
            assert_eq!(
                metric(proxy, "vigil_state_sync_views").await,
                1,
                "the bot's limiter"
            );
            assert_eq!(
                metric(proxy, "vigil_state_sync_rounds_failed_total").await,
                0
            );
            assert!(metric(proxy, "vigil_state_sync_rounds_total").await > 0);
            let seconds = metric_value(proxy, "vigil_state_sync_round_seconds_total").await;
            assert!(seconds > 0.0, "rounds took time: {seconds}");
        }
        shutdown(replicas).await;
    }
}

/// Two replicas sharing a Redis Cluster of three primaries, given as a list of node URLs,
/// decide as with one server: one rate budget, and no honest shopper refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_a_redis_cluster_decide_as_one() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start("fleet", 3))
        .await
        .unwrap();
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let redis = format!("[{}]", urls.join(", "));
    one_budget_across(&redis, "cluster-rate", 2).await;
    shoppers_alternating_replicas_of(&redis, "cluster-sequence", 2, "").await;
    let spread = cluster.keys_per_node("cluster-sequence");
    assert!(
        spread.iter().filter(|keys| **keys > 0).count() >= 2,
        "the histories are spread over the nodes: {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enumeration_limit_counts_the_objects_every_replica_served() {
    let table = r#"config = { routes = ["GET /users/{id}"], max_distinct = 20, window = "10m" }"#;
    let guard = guard_table("enumeration", guards::ENUMERATION, table);
    let config = config(&RedisServer::shared().url(), "enumeration", "500ms", &guard);
    let (upstream, replicas) = fleet(2, "enumeration", &config).await;
    let mut served = 0;
    for id in 1..=60 {
        let status = call(&replicas[id % 2], "GET", &format!("/users/{id}"), "scraper").await;
        served += usize::from(status == StatusCode::OK);
    }
    assert_eq!(served, 20, "objects the scraper got from two replicas");
    assert_eq!(upstream.count(), 20);
    shutdown(replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_placed_through_one_replicas_admin_api_holds_on_the_others() {
    let guard = guard_table("sequence", guards::SEQUENCE, SEQUENCE);
    let config = config(&RedisServer::shared().url(), "decisions", "500ms", &guard);
    let (_upstream, replicas) = fleet(2, "decisions", &config).await;
    let body = br#"{"client": "mallory", "duration": "15m", "reason": "fraud"}"#.to_vec();
    let (status, _, _) = send(replicas[0].admin, "POST", "/decisions", &[], body).await;
    assert!(status.is_success(), "{status}");
    let mut refused_on_b = false;
    for _ in 0..100 {
        if call(&replicas[1], "GET", "/items", "mallory").await != StatusCode::OK {
            refused_on_b = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused_on_b, "the ban never reached replica B");
    assert_eq!(
        metric(&replicas[1], "vigil_decisions_active").await,
        1,
        "B counts the fleet's bans, not only its own"
    );
    let (_, _, listed) = send(replicas[1].admin, "GET", "/decisions", &[], vec![]).await;
    assert!(
        String::from_utf8_lossy(&listed).contains("mallory"),
        "{}",
        String::from_utf8_lossy(&listed)
    );
    let (status, _, _) = send(
        replicas[1].admin,
        "DELETE",
        "/decisions/mallory",
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call(&replicas[1], "GET", "/items", "mallory").await,
        StatusCode::OK
    );
    let mut served_on_a = false;
    for _ in 0..100 {
        if call(&replicas[0], "GET", "/items", "mallory").await == StatusCode::OK {
            served_on_a = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served_on_a, "the lift never reached replica A");
    shutdown(replicas).await;
}

/// Redis killed under traffic: no request fails because of it, the metrics say so, and once
/// Redis is back (empty) the replicas share state again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_under_traffic_fails_no_request() {
    redis_killed_under_traffic("killed", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_sync_killing_redis_under_traffic_fails_no_request() {
    redis_killed_under_traffic("killed-sync", "redis_sync = \"100ms\"\n").await;
}

/// Two replicas under traffic while their Redis is killed and restarted empty, with `state`
/// added to the `[state]` table: every request answered, and Redis used again after.
async fn redis_killed_under_traffic(name: &str, state: &str) {
    let mut server = RedisServer::start(name, &[]);
    let guards = format!(
        "{}{}",
        guard_table("sequence", guards::SEQUENCE, SEQUENCE),
        guard_table(
            "rate-limit",
            guards::RATE_LIMIT,
            r#"config = { key = "client", rate = 100000, per = "second", burst = 100000 }"#
        )
    );
    let config = config(&server.url(), name, "20ms", &guards)
        .replace("[state]\n", &format!("[state]\n{state}"));
    let (_upstream, replicas) = fleet(2, name, &config).await;
    let mut statuses = Vec::new();
    for round in 0..60 {
        if round == 20 {
            server.kill();
        }
        if round == 40 {
            server.restart();
        }
        let shopper = format!("shopper-{round}");
        statuses.push(call(&replicas[round % 2], "POST", "/cart/items", &shopper).await);
        // Same replica: its own tables know the cart while Redis is away.
        statuses.push(call(&replicas[round % 2], "POST", "/checkout", &shopper).await);
        if round == 30 {
            for proxy in &replicas {
                assert_eq!(metric(proxy, "vigil_state_backend_up").await, 0);
            }
        }
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "answers while Redis was killed and restarted: {statuses:?}"
    );
    for proxy in &replicas {
        assert!(metric(proxy, "vigil_state_backend_fallbacks_total").await > 0);
        let mut up = false;
        for _ in 0..200 {
            if metric(proxy, "vigil_state_backend_up").await == 1 {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "the replica never used Redis again");
    }
    // Shared again: a cart on A, a checkout on B.
    assert_eq!(
        call(&replicas[0], "POST", "/cart/items", "late").await,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        call(&replicas[1], "POST", "/checkout", "late").await,
        StatusCode::OK
    );
    shutdown(replicas).await;
}

/// Starts a sidecar from `config` as `vigil run` does, returning the start-up error's text.
async fn start_error(name: &str, config: String) -> String {
    let dir = tempdir(name);
    let path = dir.join("vigil.toml");
    std::fs::write(&path, config.replace("{upstream}", "http://127.0.0.1:9")).unwrap();
    let config = vigil::config::Config::load(&path, &Default::default()).expect("valid config");
    let started = tokio::task::spawn_blocking(move || {
        vigil::sidecar::Sidecar::new(config, Default::default())
    })
    .await
    .unwrap();
    match started {
        Ok(_) => panic!("{name}: the sidecar started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_the_credentials_stops_the_start_naming_it() {
    let server = RedisServer::start("refuses", &["--requirepass", "s3cret"]);
    let guard = guard_table("sequence", guards::SEQUENCE, SEQUENCE);
    let url = format!("redis://:wrong@127.0.0.1:{}/0", server.port);
    let text = start_error("refuses", config(&url, "refuses", "5ms", &guard)).await;
    let expected = format!(
        "vigil.toml: state.redis: Redis at 127.0.0.1:{}/0 refused the connection",
        server.port
    );
    assert!(text.contains(&expected), "{text}");
    assert!(!text.contains("wrong"), "the password stays out: {text}");

    let url = format!("redis://:s3cret@127.0.0.1:{}/77", server.port);
    let text = start_error("no-db", config(&url, "refuses", "5ms", &guard)).await;
    assert!(
        text.contains("state.redis: Redis at") && text.contains("/77"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_starts_while_redis_is_unreachable_and_decides_locally() {
    let port = vigil_tests::process::free_port();
    let guard = guard_table("sequence", guards::SEQUENCE, SEQUENCE);
    let url = format!("redis://127.0.0.1:{port}/0");
    let (_upstream, replicas) = fleet(
        1,
        "unreachable",
        &config(&url, "unreachable", "5ms", &guard),
    )
    .await;
    let proxy = &replicas[0];
    assert_eq!(metric(proxy, "vigil_state_backend_up").await, 0);
    assert_eq!(
        call(proxy, "POST", "/cart/items", "shopper").await,
        StatusCode::OK
    );
    assert_eq!(
        call(proxy, "POST", "/checkout", "shopper").await,
        StatusCode::OK
    );
    assert_eq!(
        call(proxy, "POST", "/checkout", "skipper").await,
        StatusCode::CONFLICT
    );
    assert!(metric(proxy, "vigil_state_backend_fallbacks_total").await > 0);
    shutdown(replicas).await;
}
