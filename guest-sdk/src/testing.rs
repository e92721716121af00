//! Testing guards natively with `cargo test`: an in-memory stand-in for the host's `state`
//! interface, with a clock the test sets, so that a test builds requests, calls the guard,
//! moves time and asserts verdicts and findings without Wasm or a proxy.
//!
//! Enable the `testing` feature for tests only:
//!
//! ```toml
//! [dev-dependencies]
//! vigil-guest = { path = "../vigil/guest-sdk", features = ["testing"] }
//! ```
//!
//! ```ignore
//! use vigil_guest::testing::{request, TestHost};
//!
//! #[test]
//! fn the_sixth_login_in_a_minute_is_refused() {
//!     let host = TestHost::new();
//!     let config = host.configure::<LoginThrottle>(r#"{"per_minute": 5, "burst": 5}"#).unwrap();
//!     let login = request("POST", "/login").client("203.0.113.9");
//!     for _ in 0..5 {
//!         assert!(host.allows::<LoginThrottle>(&config, &login));
//!     }
//!     assert!(!host.allows::<LoginThrottle>(&config, &login));
//!     host.advance(std::time::Duration::from_secs(60));
//!     assert!(host.allows::<LoginThrottle>(&config, &login));
//! }
//! ```
//!
//! While a [`TestHost`] lives, the [`state`](crate::state) and [`log`](crate::log) functions
//! of the calling thread use it (each test thread has its own). It behaves as the host does
//! for one guard: token-bucket rate limiters, windowed counters and distinct sets, a key/value
//! store with expiry, and the current client's history, recorded by [`TestHost::respond`].
//! Counters here are exact where the host's may round to its window's buckets.

use crate::route::Pattern;
use crate::{Client, Event, Guard, Header, Level, Request, Response, Verdict};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// When a fresh [`TestHost`]'s clock starts: 2026-01-01T00:00:00Z, in ms since the epoch.
pub const START_MS: u64 = 1_767_225_600_000;

#[derive(Default)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

#[derive(Default)]
struct State {
    now_ms: u64,
    client: String,
    buckets: HashMap<String, Bucket>,
    counters: HashMap<String, Vec<(u64, i64)>>,
    distinct: HashMap<String, HashMap<String, u64>>,
    values: HashMap<String, (Vec<u8>, u64)>,
    histories: HashMap<String, Vec<Event>>,
    findings: Vec<(String, String)>,
    logs: Vec<(Level, String)>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RefCell<State>>>> = const { RefCell::new(None) };
}

/// Runs `f` on the test host of this thread; `None` when there is none (a guard running in
/// the real host, or a test that made no [`TestHost`]).
pub(crate) fn with<T>(f: impl FnOnce(&mut StateView<'_>) -> T) -> Option<T> {
    CURRENT.with(|current| {
        let state = current.borrow().clone()?;
        let mut state = state.borrow_mut();
        Some(f(&mut StateView(&mut state)))
    })
}

/// The test host's state as the `state` functions see it.
pub(crate) struct StateView<'a>(&'a mut State);

impl StateView<'_> {
    pub(crate) fn history(&mut self, limit: u32) -> Vec<Event> {
        let s = &self.0;
        s.histories
            .get(&s.client)
            .map(|events| events.iter().rev().take(limit as usize).cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn happened(
        &mut self,
        patterns: &[String],
        within: Duration,
        ok_only: bool,
    ) -> bool {
        let s = &self.0;
        let since = s.now_ms.saturating_sub(within.as_millis() as u64);
        let patterns: Vec<Pattern> = patterns
            .iter()
            .filter_map(|p| Pattern::parse(p).ok())
            .collect();
        s.histories.get(&s.client).is_some_and(|events| {
            events.iter().any(|e| {
                e.at_ms >= since
                    && (!ok_only || (200..400).contains(&e.status))
                    && patterns.iter().any(|p| p.matches(&e.method, &e.route))
            })
        })
    }

    pub(crate) fn rate(&mut self, key: &str, per_second: f64, burst: u32) -> Result<(), Duration> {
        let now = self.0.now_ms;
        // As the host's limiters: a burst of 0 is a burst of 1.
        let burst = burst.max(1);
        let bucket = self.0.buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: f64::from(burst),
            at_ms: now,
        });
        let elapsed = now.saturating_sub(bucket.at_ms) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(f64::from(burst));
        bucket.at_ms = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second.max(f64::MIN_POSITIVE);
            Err(Duration::from_secs_f64(wait.min(1e9)))
        }
    }

    pub(crate) fn count(&mut self, key: &str, delta: i64, window: Duration) -> i64 {
        let now = self.0.now_ms;
        let since = now.saturating_sub(window.as_millis() as u64);
        let entries = self.0.counters.entry(key.to_string()).or_default();
        entries.retain(|(at, _)| *at > since);
        if delta != 0 {
            entries.push((now, delta));
        }
        entries.iter().map(|(_, d)| d).sum()
    }

    pub(crate) fn distinct(&mut self, key: &str, member: &str, window: Duration) -> u32 {
        let now = self.0.now_ms;
        let since = now.saturating_sub(window.as_millis() as u64);
        let set = self.0.distinct.entry(key.to_string()).or_default();
        set.retain(|_, at| *at > since);
        set.insert(member.to_string(), now);
        set.len() as u32
    }

    pub(crate) fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        let now = self.0.now_ms;
        self.0
            .values
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(value, _)| value.clone())
    }

    pub(crate) fn set(&mut self, key: &str, value: &[u8], ttl: Duration) {
        let until = self.0.now_ms.saturating_add(ttl.as_millis() as u64);
        self.0
            .values
            .insert(key.to_string(), (value.to_vec(), until));
    }

    pub(crate) fn finding(&mut self, kind: &str, detail: &str) {
        self.0.findings.push((kind.to_string(), detail.to_string()));
    }

    pub(crate) fn log(&mut self, level: Level, message: &str) {
        self.0.logs.push((level, message.to_string()));
    }
}

/// An in-memory host for the calling thread's guard calls; see the [module](self).
pub struct TestHost {
    state: Rc<RefCell<State>>,
}

impl TestHost {
    /// A fresh host, its clock at [`START_MS`], serving the `state` calls of this thread
    /// until dropped.
    pub fn new() -> TestHost {
        let state = Rc::new(RefCell::new(State {
            now_ms: START_MS,
            ..State::default()
        }));
        CURRENT.with(|current| *current.borrow_mut() = Some(state.clone()));
        TestHost { state }
    }

    /// Parses and checks a configuration as `init` does: the guard's own error for a bad one.
    pub fn configure<G: Guard>(&self, json: &str) -> Result<G::Config, String> {
        let config = crate::parse_config::<G::Config>(json)?;
        G::check_config(&config)?;
        Ok(config)
    }

    /// The clock, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.state.borrow().now_ms
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.state.borrow_mut().now_ms += by.as_millis() as u64;
    }

    /// Calls the guard's `on_request` for `request`, received now.
    pub fn check<G: Guard>(&self, config: &G::Config, request: &TestRequest) -> Verdict {
        self.begin(request);
        G::on_request(config, &request.view(self.now_ms()))
    }

    /// Whether the guard allows `request` (see [`TestHost::check`]).
    pub fn allows<G: Guard>(&self, config: &G::Config, request: &TestRequest) -> bool {
        matches!(self.check::<G>(config, request), Verdict::Allow)
    }

    /// What the host does once the answer to `request` is known: records it in the client's
    /// history, then calls the guard's `on_response` with `status` (and `headers`).
    pub fn respond<G: Guard>(
        &self,
        config: &G::Config,
        request: &TestRequest,
        status: u16,
        headers: &[(&str, &str)],
    ) {
        self.begin(request);
        let now = self.now_ms();
        let view = request.view(now);
        self.state
            .borrow_mut()
            .histories
            .entry(request.client.clone())
            .or_default()
            .push(Event {
                at_ms: now,
                method: request.method.clone(),
                route: view.route_or_path().to_string(),
                status,
                public: request.public,
                authenticated: request.authenticated,
            });
        let response = Response {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| Header {
                    name,
                    value: value.as_bytes(),
                })
                .collect(),
            latency_us: 0,
        };
        G::on_response(config, &view, &response);
    }

    /// A request answered `status`, as the proxy runs it: `on_request`, and `on_response` with
    /// the guard's own status when it denies. Returns the verdict.
    pub fn exchange<G: Guard>(
        &self,
        config: &G::Config,
        request: &TestRequest,
        status: u16,
    ) -> Verdict {
        let verdict = self.check::<G>(config, request);
        let answered = match &verdict {
            Verdict::Allow => status,
            Verdict::Deny(deny) => deny.status,
        };
        self.respond::<G>(config, request, answered, &[]);
        verdict
    }

    /// The findings reported so far, as (kind, detail), oldest first.
    pub fn findings(&self) -> Vec<(String, String)> {
        self.state.borrow().findings.clone()
    }

    /// The log lines written so far, oldest first.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.state.borrow().logs.clone()
    }

    fn begin(&self, request: &TestRequest) {
        self.state.borrow_mut().client = request.client.clone();
    }
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            if current.as_ref().is_some_and(|s| Rc::ptr_eq(s, &self.state)) {
                *current = None;
            }
        });
    }
}

/// A request for a test, built with [`request`] and its setters.
#[derive(Clone, Debug)]
pub struct TestRequest {
    method: String,
    path: String,
    route: Option<String>,
    query: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    client: String,
    ip: String,
    public: bool,
    authenticated: bool,
    body: Option<Vec<u8>>,
}

/// A request with `method` and `path` (a `?` starts the query), from the public client
/// `203.0.113.7` (key and address), without credentials, headers or body.
pub fn request(method: &str, path: &str) -> TestRequest {
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (path, None),
    };
    TestRequest {
        method: method.to_ascii_uppercase(),
        path: path.to_string(),
        route: None,
        query,
        headers: Vec::new(),
        client: "203.0.113.7".into(),
        ip: "203.0.113.7".into(),
        public: true,
        authenticated: false,
        body: None,
    }
}

impl TestRequest {
    /// The route template the proxy resolved, e.g. `/users/{id}`.
    pub fn route(mut self, template: &str) -> Self {
        self.route = Some(template.to_string());
        self
    }

    /// The client's identity key (and address, when it looks like one).
    pub fn client(mut self, key: &str) -> Self {
        self.client = key.to_string();
        if key.parse::<std::net::IpAddr>().is_ok() {
            self.ip = key.to_string();
        }
        self
    }

    /// The client's address.
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.to_string();
        self
    }

    /// Whether the client is internal (not public).
    pub fn internal(mut self) -> Self {
        self.public = false;
        self
    }

    /// Whether the request carries credentials.
    pub fn authenticated(mut self) -> Self {
        self.authenticated = true;
        self
    }

    /// A header field (the name is lower-cased, as the host passes it).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// The body prefix the guard reads.
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = Some(body.to_vec());
        self
    }

    fn view(&self, received_ms: u64) -> Request<'_> {
        Request {
            method: &self.method,
            path: &self.path,
            route: self.route.as_deref(),
            query: self.query.as_deref(),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            client: Client {
                key: &self.client,
                ip: &self.ip,
                public: self.public,
                authenticated: self.authenticated,
            },
            received_ms,
            body: self.body.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{state, NoConfig};

    /// Counts a client's 404s; refuses once a second has seen three, and reports it once.
    struct NotFoundLimit;

    impl Guard for NotFoundLimit {
        type Config = NoConfig;

        fn on_request(_: &NoConfig, req: &Request) -> Verdict {
            let key = format!("404:{}", req.client.key);
            if state::count(&key, 0, Duration::from_secs(1)) >= 3 {
                if state::get(&key).is_none() {
                    state::finding("scanner", req.client.key);
                    state::set(&key, b"reported", Duration::from_secs(60));
                }
                return crate::deny(403, "too many 404s");
            }
            if state::happened(&["POST /login".into()], Duration::from_secs(60), true) {
                crate::log::info("after a login");
            }
            Verdict::Allow
        }

        fn on_response(_: &NoConfig, req: &Request, resp: &Response) {
            if resp.status == 404 {
                state::count(
                    &format!("404:{}", req.client.key),
                    1,
                    Duration::from_secs(1),
                );
            }
        }
    }

    #[test]
    fn state_calls_are_answered_in_memory_on_the_test_clock() {
        let host = TestHost::new();
        let config = host.configure::<NotFoundLimit>("").unwrap();
        let probe = request("GET", "/.env").client("198.51.100.9");
        for _ in 0..3 {
            assert!(matches!(
                host.exchange::<NotFoundLimit>(&config, &probe, 404),
                Verdict::Allow
            ));
        }
        assert!(
            !host.allows::<NotFoundLimit>(&config, &probe),
            "three 404s within a second"
        );
        assert!(
            host.allows::<NotFoundLimit>(&config, &request("GET", "/").client("someone-else")),
            "counters are per key"
        );
        assert!(!host.allows::<NotFoundLimit>(&config, &probe));
        assert_eq!(
            host.findings(),
            [("scanner".to_string(), "198.51.100.9".to_string())],
            "reported once"
        );
        host.advance(Duration::from_millis(1_001));
        assert!(
            host.allows::<NotFoundLimit>(&config, &probe),
            "the window moved on"
        );
    }

    #[test]
    fn history_is_the_current_clients_and_rates_refill_with_the_clock() {
        let host = TestHost::new();
        let config = host.configure::<NotFoundLimit>("{}").unwrap();
        let login = request("POST", "/login").client("alice");
        host.respond::<NotFoundLimit>(&config, &login, 200, &[]);
        host.check::<NotFoundLimit>(&config, &request("GET", "/cart").client("alice"));
        host.check::<NotFoundLimit>(&config, &request("GET", "/cart").client("bob"));
        let logs: Vec<String> = host.logs().into_iter().map(|(_, line)| line).collect();
        assert_eq!(logs, ["after a login"], "bob did not log in");
        assert_eq!(state::history(10).len(), 0, "bob's history is empty");

        assert_eq!(state::rate("k", 1.0, 2), Ok(()));
        assert_eq!(state::rate("k", 1.0, 2), Ok(()));
        assert_eq!(state::rate("k", 1.0, 2), Err(Duration::from_secs(1)));
        host.advance(Duration::from_millis(500));
        assert_eq!(state::rate("k", 1.0, 2), Err(Duration::from_millis(500)));
        host.advance(Duration::from_millis(500));
        assert_eq!(state::rate("k", 1.0, 2), Ok(()));
        assert_eq!(state::distinct("d", "a", Duration::from_secs(5)), 1);
        assert_eq!(state::distinct("d", "b", Duration::from_secs(5)), 2);
        assert_eq!(state::distinct("d", "a", Duration::from_secs(5)), 2);
    }

    #[test]
    fn a_bad_configuration_gets_the_guards_own_error() {
        struct Strict;
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Limit {
            max: u32,
        }
        impl Guard for Strict {
            type Config = Limit;
            fn check_config(config: &Limit) -> Result<(), String> {
                (config.max > 0)
                    .then_some(())
                    .ok_or("max: must be at least 1".into())
            }
            fn on_request(_: &Limit, _: &Request) -> Verdict {
                Verdict::Allow
            }
        }
        let host = TestHost::new();
        assert_eq!(
            host.configure::<Strict>(r#"{"max": 0}"#).err().unwrap(),
            "max: must be at least 1"
        );
        assert!(host
            .configure::<Strict>(r#"{"maxx": 1}"#)
            .unwrap_err()
            .contains("unknown field `maxx`"));
    }
}
