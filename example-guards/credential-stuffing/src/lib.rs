//! Stops credential stuffing and password spraying at the login route: one client trying many
//! accounts, many clients trying one account, and one client failing again and again.
//!
//! ```toml
//! [[guard]]
//! name = "credential-stuffing"
//! module = "guards/credential_stuffing.wasm"
//! routes = ["POST /login"]
//! body_limit = 4096              # needed for `json_field` and `form_field`
//! [guard.config]
//! login = "POST /login"          # default
//! account = { json_field = "username" }   # or { form_field = "username" }, { header = "x-account" }
//! max_failures = 5               # failed logins per client and window (default 5)
//! max_accounts = 3               # distinct accounts per client and window (default 3)
//! max_clients_per_account = 10   # distinct clients per account and window (default 10)
//! window = "15m"                 # default
//! failure_statuses = [401, 403]  # default
//! failure_location = "/login*"   # a redirect back to the login page is a failure too
//! failure_header = { name = "x-login-failed" }   # or with value = "*denied*"
//! ```
//!
//! A login attempt is refused with 429 when the client has already failed `max_failures` times
//! within the window, when it is its `max_accounts + 1`-th distinct account, or when the account
//! is being tried by more than `max_clients_per_account` clients. The last rule also refuses the
//! account's owner while the attack lasts: that is the point (the account is under attack), but
//! it means a spread-out attacker can hold an account's logins shut for a window. Each refusal
//! is reported as a `credential-stuffing` finding.
//!
//! The account is the top-level JSON string (or number) field, the urlencoded form field, or
//! the header, trimmed and lower-cased so case variants count as one account. The body is the
//! prefix the host passes (`body_limit`): a body cut short or without the field gives no
//! account, and such attempts are still held to `max_failures`. A failure is a response whose
//! status is in `failure_statuses`, whose `Location` (its path and query, the scheme and host
//! of an absolute URL left out) matches `failure_location`, or which carries the header
//! `failure_header` (with a value matching its `value`, when given). Patterns take `*` for
//! any run of characters and ignore case. Applications that answer a failed login with 200
//! or with a redirect to the login page are caught by the last two.

use guard_util::{with_key, DurationText, Glob, PatternText};
use serde::Deserialize;
use std::sync::OnceLock;
use std::time::Duration;
use vigil_guest::{state, Guard, Request, Response, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_login")]
    login: PatternText,
    account: Account,
    #[serde(default = "default_max_failures")]
    max_failures: u32,
    #[serde(default = "default_max_accounts")]
    max_accounts: u32,
    #[serde(default = "default_max_clients")]
    max_clients_per_account: u32,
    #[serde(default = "default_window")]
    window: DurationText,
    #[serde(default = "default_failure_statuses")]
    failure_statuses: Vec<u16>,
    #[serde(default)]
    failure_location: Option<String>,
    #[serde(default)]
    failure_header: Option<FailureHeader>,
    /// `failure_location` as a pattern.
    #[serde(skip)]
    location: OnceLock<Option<Glob>>,
}

/// A response header that marks a failed login: present, or with a matching value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailureHeader {
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(skip)]
    pattern: OnceLock<Option<Glob>>,
}

impl FailureHeader {
    fn marks(&self, resp: &Response) -> bool {
        let pattern = self
            .pattern
            .get_or_init(|| self.value.as_deref().map(Glob::new));
        let name = self.name.trim();
        resp.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .any(
                |h| match (pattern, std::str::from_utf8(h.value.trim_ascii())) {
                    (None, _) => true,
                    (Some(pattern), Ok(value)) => pattern.matches(value),
                    (Some(_), Err(_)) => false,
                },
            )
    }
}

impl Config {
    /// Whether the response to a login request says the login failed.
    fn failed(&self, resp: &Response) -> bool {
        if self.failure_statuses.contains(&resp.status) {
            return true;
        }
        let location = self
            .location
            .get_or_init(|| self.failure_location.as_deref().map(Glob::new));
        if let (Some(pattern), Some(target)) = (location, resp.header("location")) {
            if pattern.matches(path_of(target.trim())) {
                return true;
            }
        }
        self.failure_header.as_ref().is_some_and(|h| h.marks(resp))
    }
}

/// The path and query of a `Location` value: an absolute URL (`https://host/login?e=1`) or a
/// network-path reference (`//host/login`) without its scheme and host, so that one pattern
/// matches however the application spells its redirect.
fn path_of(location: &str) -> &str {
    let after_scheme = match location.find("://") {
        Some(at)
            if location[..at]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            Some(&location[at + 3..])
        }
        _ => location.strip_prefix("//"),
    };
    match after_scheme {
        Some(rest) => rest.find(['/', '?']).map_or("/", |at| &rest[at..]),
        None => location,
    }
}

fn default_login() -> PatternText {
    PatternText::new("POST /login")
}
fn default_max_failures() -> u32 {
    5
}
fn default_max_accounts() -> u32 {
    3
}
fn default_max_clients() -> u32 {
    10
}
fn default_window() -> DurationText {
    DurationText::new("15m")
}
fn default_failure_statuses() -> Vec<u16> {
    vec![401, 403]
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Account {
    JsonField(String),
    FormField(String),
    Header(String),
}

impl Account {
    fn name(&self) -> &str {
        match self {
            Account::JsonField(name) | Account::FormField(name) | Account::Header(name) => name,
        }
    }

    /// The account a login request is for, normalised.
    fn of(&self, req: &Request) -> Option<String> {
        let raw = match self {
            Account::Header(name) => req.header(name).map(str::to_string),
            Account::JsonField(name) => json_field(req.body?, name),
            Account::FormField(name) => form_field(req.body?, name),
        }?;
        let account = raw.trim().to_lowercase();
        (!account.is_empty()).then_some(account)
    }
}

fn json_field(body: &[u8], name: &str) -> Option<String> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    match object.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        (guard_util::form_decode(key) == name).then(|| guard_util::form_decode(value))
    })
}

fn check_cap(field: &str, value: u32) -> Result<(), String> {
    if value == 0 {
        return Err(format!("{field}: must be at least 1"));
    }
    Ok(())
}

fn refuse(req: &Request, window: Duration, detail: String) -> Verdict {
    state::finding(
        "credential-stuffing",
        &format!("client {}: {detail}", req.client.key),
    );
    vigil_guest::too_many_requests("too many login attempts", window)
}

struct CredentialStuffing;

impl Guard for CredentialStuffing {
    type Config = Config;

    fn headers_read(config: &Config) -> Option<Vec<String>> {
        let mut names = Vec::new();
        if let Account::Header(name) = &config.account {
            names.push(name.clone());
        }
        if config.failure_location.is_some() {
            names.push("location".to_string());
        }
        if let Some(header) = &config.failure_header {
            names.push(header.name.trim().to_string());
        }
        Some(names)
    }

    fn check_config(config: &Config) -> Result<(), String> {
        config.login.check("login")?;
        if config.account.name().trim().is_empty() {
            return Err("account: the field or header name must not be empty".into());
        }
        check_cap("max_failures", config.max_failures)?;
        check_cap("max_accounts", config.max_accounts)?;
        check_cap("max_clients_per_account", config.max_clients_per_account)?;
        config.window.check("window")?;
        let other_failures = config.failure_location.is_some() || config.failure_header.is_some();
        if config.failure_statuses.is_empty() && !other_failures {
            return Err(
                "failure_statuses: must list at least one status, unless failure_location or failure_header is set"
                    .into(),
            );
        }
        if config
            .failure_location
            .as_ref()
            .is_some_and(|l| l.trim().is_empty())
        {
            return Err("failure_location: must not be empty".into());
        }
        if let Some(header) = &config.failure_header {
            if header.name.trim().is_empty() {
                return Err("failure_header.name: must not be empty".into());
            }
        }
        if let Some(bad) = config
            .failure_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(format!("failure_statuses: {bad} is not an HTTP status"));
        }
        Ok(())
    }

    fn on_request(config: &Config, req: &Request) -> Verdict {
        if !config.login.matches(req) {
            return Verdict::Allow;
        }
        let window = *config.window.get();
        let client = &req.client.key;
        let failures = with_key(&["failures", client], |k| state::count(k, 0, window));
        if failures >= i64::from(config.max_failures) {
            let detail = format!("{failures} failed logins within {}", config.window.text());
            return refuse(req, window, detail);
        }
        let Some(account) = config.account.of(req) else {
            return Verdict::Allow;
        };
        let accounts = with_key(&["accounts", client], |k| {
            state::distinct(k, &account, window)
        });
        if accounts > config.max_accounts {
            let detail = format!(
                "{accounts} different accounts tried within {}",
                config.window.text()
            );
            return refuse(req, window, detail);
        }
        let clients = with_key(&["clients", &account], |k| {
            state::distinct(k, client, window)
        });
        if clients > config.max_clients_per_account {
            let detail = format!(
                "account {account:?} tried by {clients} clients within {}",
                config.window.text()
            );
            return refuse(req, window, detail);
        }
        Verdict::Allow
    }

    fn on_response(config: &Config, req: &Request, resp: &Response) {
        if config.login.matches(req) && config.failed(resp) {
            let window = *config.window.get();
            with_key(&["failures", req.client.key], |k| {
                state::count(k, 1, window)
            });
        }
    }
}

vigil_guest::guard!(CredentialStuffing);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_guest::testing::{request, TestHost, TestRequest};

    fn login(client: &str, body: &str) -> TestRequest {
        request("POST", "/login")
            .client(client)
            .body(body.as_bytes())
    }

    fn refused(verdict: Verdict) -> bool {
        match verdict {
            Verdict::Deny(deny) => {
                assert_eq!(deny.status, 429);
                true
            }
            Verdict::Allow => false,
        }
    }

    #[test]
    fn a_client_that_keeps_failing_is_refused_for_the_window() {
        let host = TestHost::new();
        let config = host
            .configure::<CredentialStuffing>(
                r#"{"account": {"json_field": "username"}, "max_failures": 3, "window": "10m"}"#,
            )
            .unwrap();
        let attempt = login("203.0.113.5", r#"{"username": "alice", "password": "x"}"#);
        host.exchange::<CredentialStuffing>(&config, &attempt, 200);
        for _ in 0..3 {
            assert!(!refused(
                host.exchange::<CredentialStuffing>(&config, &attempt, 401)
            ));
        }
        match host.check::<CredentialStuffing>(&config, &attempt) {
            Verdict::Deny(deny) => assert_eq!(deny.retry_after_secs, Some(600)),
            Verdict::Allow => panic!("three failures within the window"),
        }
        assert_eq!(
            host.findings(),
            [(
                "credential-stuffing".to_string(),
                "client 203.0.113.5: 3 failed logins within 10m".to_string()
            )]
        );
        assert!(
            !refused(host.check::<CredentialStuffing>(
                &config,
                &request("POST", "/signup").client("203.0.113.5")
            )),
            "only the login route is guarded"
        );
        host.advance(Duration::from_secs(601));
        assert!(!refused(
            host.check::<CredentialStuffing>(&config, &attempt)
        ));
    }

    #[test]
    fn one_client_trying_many_accounts_or_many_clients_one_account_is_refused() {
        let host = TestHost::new();
        let config = host
            .configure::<CredentialStuffing>(
                r#"{"account": {"json_field": "username"}, "max_accounts": 2}"#,
            )
            .unwrap();
        let as_user = |name: &str| login("198.51.100.7", &format!(r#"{{"username": "{name}"}}"#));
        assert!(!refused(
            host.check::<CredentialStuffing>(&config, &as_user("alice"))
        ));
        assert!(!refused(
            host.check::<CredentialStuffing>(&config, &as_user("bob"))
        ));
        assert!(
            !refused(host.check::<CredentialStuffing>(&config, &as_user(" ALICE "))),
            "case and spaces do not make another account"
        );
        assert!(refused(
            host.check::<CredentialStuffing>(&config, &as_user("carol"))
        ));
        assert!(
            !refused(
                host.check::<CredentialStuffing>(&config, &login("198.51.100.7", "{not json"))
            ),
            "no account, no count of accounts"
        );

        let sprayed = host
            .configure::<CredentialStuffing>(
                r#"{"account": {"form_field": "user"}, "max_clients_per_account": 2}"#,
            )
            .unwrap();
        let from = |client: &str| login(client, "user=victim%40shop.example&password=x");
        assert!(!refused(
            host.check::<CredentialStuffing>(&sprayed, &from("10.0.0.1"))
        ));
        assert!(!refused(
            host.check::<CredentialStuffing>(&sprayed, &from("10.0.0.2"))
        ));
        assert!(refused(
            host.check::<CredentialStuffing>(&sprayed, &from("10.0.0.3"))
        ));
        let (_, detail) = host.findings().pop().unwrap();
        assert_eq!(
            detail,
            "client 10.0.0.3: account \"victim@shop.example\" tried by 3 clients within 15m"
        );
    }

    #[test]
    fn failures_can_be_redirects_to_the_login_page_or_a_marking_header() {
        let host = TestHost::new();
        let config = host
            .configure::<CredentialStuffing>(
                r#"{"account": {"header": "x-account"}, "max_failures": 2, "failure_statuses": [],
                    "failure_location": "/login*",
                    "failure_header": {"name": "X-Login-Failed", "value": "*denied*"}}"#,
            )
            .unwrap();
        let attempt = request("POST", "/login")
            .client("192.0.2.4")
            .header("x-account", "a");
        host.respond::<CredentialStuffing>(&config, &attempt, 302, &[("location", "/account")]);
        host.respond::<CredentialStuffing>(&config, &attempt, 200, &[("x-login-failed", "no")]);
        host.respond::<CredentialStuffing>(&config, &attempt, 401, &[]);
        assert!(
            !refused(host.check::<CredentialStuffing>(&config, &attempt)),
            "none of those is a failure here"
        );
        host.respond::<CredentialStuffing>(
            &config,
            &attempt,
            302,
            &[("location", "https://shop.example/Login?error=1")],
        );
        host.respond::<CredentialStuffing>(
            &config,
            &attempt,
            200,
            &[("x-login-failed", "access denied")],
        );
        assert!(refused(host.check::<CredentialStuffing>(&config, &attempt)));
    }

    #[test]
    fn bad_settings_are_named() {
        let host = TestHost::new();
        for (json, says) in [
            (
                r#"{"account": {"header": " "}}"#,
                "account: the field or header name must not be empty",
            ),
            (
                r#"{"account": {"header": "x"}, "max_accounts": 0}"#,
                "max_accounts: must be at least 1",
            ),
            (
                r#"{"account": {"header": "x"}, "failure_statuses": []}"#,
                "failure_statuses: must list at least one status",
            ),
            (
                r#"{"account": {"header": "x"}, "failure_statuses": [42]}"#,
                "42 is not an HTTP status",
            ),
            (
                r#"{"account": {"cookie": "x"}}"#,
                "unknown variant `cookie`",
            ),
        ] {
            let error = host.configure::<CredentialStuffing>(json).err().unwrap();
            assert!(error.contains(says), "{json}: {error}");
        }
    }

    #[test]
    fn a_location_is_read_as_its_path_and_query() {
        assert_eq!(path_of("/login?error=1"), "/login?error=1");
        assert_eq!(path_of("https://shop.example/login?e=1"), "/login?e=1");
        assert_eq!(path_of("HTTP://shop.example:8443/Login"), "/Login");
        assert_eq!(path_of("//shop.example/login"), "/login");
        assert_eq!(path_of("https://shop.example"), "/");
        assert_eq!(path_of("https://shop.example?next=/x"), "?next=/x");
        assert_eq!(path_of("login.php"), "login.php");
        assert_eq!(
            path_of("/next?u=https://x/login"),
            "/next?u=https://x/login"
        );
    }
}
