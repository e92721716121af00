//! Stops clients that probe: most of their requests answered with client errors, or many
//! different paths not found, across every route. That is what a scanner looking for admin
//! panels, backups and known vulnerabilities looks like, whatever the paths it tries.
//!
//! ```toml
//! [[guard]]
//! name = "probing"
//! module = "guards/probing.wasm"
//! [guard.config]
//! window = "10m"            # default
//! min_requests = 20         # requests of the client in the window before it is judged (default 20)
//! max_error_ratio = 0.5     # share of 4xx answers above which it is refused (default 0.5)
//! max_not_found = 30        # different paths answered 404 in the window (default 30)
//! also_ignore = ["/status.png"]   # more paths a browser asks for on its own
//! ```
//!
//! Judged on the responses: once at least `min_requests` of a client's requests were counted
//! in the window, and more than `max_error_ratio` of them were answered 4xx, or more than
//! `max_not_found` different paths were answered 404, the client's following requests are
//! refused with 429 until a window has passed since (`Retry-After`: the time left). Each
//! refusal is reported as a `probing` finding.
//!
//! Paths a browser asks for by itself (`/favicon.ico`, `/robots.txt`, source maps,
//! `apple-touch-icon*.png`, `/.well-known/...`) are neither counted nor judged: their 404s
//! are the ordinary noise of a site. `ignore` replaces that list, `also_ignore` adds to it.
//! A pattern starting with `/` is matched against the whole path, any other against its last
//! segment; `*` stands for any run of characters, and case is ignored. A 429 answer is not
//! counted: it says the client was too fast, not that it asked for what does not exist, and
//! the guard's own refusals are 429s.
//!
//! The host caps a distinct set (256 members by default): a `max_not_found` at or above that
//! cap never triggers.

use guard_util::{with_key, DurationText, Glob, Tally};
use serde::Deserialize;
use std::time::Duration;
use vigil_guest::{state, Guard, Request, Response, Verdict};

/// What a browser requests of a site on its own, whether the site has it or not.
const BROWSER_PATHS: &[&str] = &[
    "/favicon.ico",
    "/robots.txt",
    "/sitemap.xml",
    "/ads.txt",
    "/app-ads.txt",
    "/humans.txt",
    "/browserconfig.xml",
    "/site.webmanifest",
    "/manifest.json",
    "/.well-known/*",
    "apple-touch-icon*.png",
    "*.map",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_window")]
    window: DurationText,
    #[serde(default = "default_min_requests")]
    min_requests: u32,
    #[serde(default = "default_ratio")]
    max_error_ratio: f64,
    #[serde(default = "default_max_not_found")]
    max_not_found: u32,
    #[serde(default = "default_ignore")]
    ignore: Vec<PathGlob>,
    #[serde(default)]
    also_ignore: Vec<PathGlob>,
}

fn default_window() -> DurationText {
    DurationText::new("10m")
}
fn default_min_requests() -> u32 {
    20
}
fn default_ratio() -> f64 {
    0.5
}
fn default_max_not_found() -> u32 {
    30
}
fn default_ignore() -> Vec<PathGlob> {
    BROWSER_PATHS.iter().map(|p| PathGlob::new(p)).collect()
}

/// An `ignore` entry: a whole path, or (without a leading `/`) a last segment.
struct PathGlob {
    text: String,
    glob: Glob,
}

impl PathGlob {
    fn new(text: &str) -> PathGlob {
        PathGlob {
            text: text.to_string(),
            glob: Glob::new(text),
        }
    }

    fn matches(&self, path: &str) -> bool {
        if self.text.starts_with('/') {
            self.glob.matches(path)
        } else {
            self.glob.matches(path.rsplit('/').next().unwrap_or(path))
        }
    }
}

impl<'de> Deserialize<'de> for PathGlob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| PathGlob::new(&text))
    }
}

impl Config {
    fn ignores(&self, path: &str) -> bool {
        self.ignore
            .iter()
            .chain(&self.also_ignore)
            .any(|p| p.matches(path))
    }
}

fn check_globs(field: &str, globs: &[PathGlob]) -> Result<(), String> {
    match globs.iter().position(|g| g.text.trim().is_empty()) {
        Some(i) => Err(format!("{field}[{i}]: must not be empty")),
        None => Ok(()),
    }
}

/// A client error that says something about what the client asked for: every 4xx but 429.
fn is_client_error(status: u16) -> bool {
    (400..500).contains(&status) && status != 429
}

/// The mark a tripped client carries: until when its requests are refused (milliseconds since
/// the epoch, little-endian), then why.
struct Tripped<'a> {
    until_ms: u64,
    cause: &'a str,
}

impl<'a> Tripped<'a> {
    fn encode(until_ms: u64, cause: &str) -> Vec<u8> {
        let mut out = until_ms.to_le_bytes().to_vec();
        out.extend_from_slice(cause.as_bytes());
        out
    }

    fn decode(bytes: &'a [u8]) -> Option<Tripped<'a>> {
        let (until, cause) = bytes.split_first_chunk::<8>()?;
        Some(Tripped {
            until_ms: u64::from_le_bytes(*until),
            cause: std::str::from_utf8(cause).unwrap_or(""),
        })
    }
}

struct Probing;

impl Guard for Probing {
    type Config = Config;
    const READS_HEADERS: bool = false;
    // Requests are counted in `on-request`, so only errors need a call on the response.
    const OBSERVED_STATUSES: &'static str = "4xx";

    fn check_config(config: &Config) -> Result<(), String> {
        config.window.check("window")?;
        if config.min_requests == 0 {
            return Err("min_requests: must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&config.max_error_ratio) {
            return Err("max_error_ratio: must be between 0 and 1".into());
        }
        if config.max_not_found == 0 {
            return Err("max_not_found: must be at least 1".into());
        }
        check_globs("ignore", &config.ignore)?;
        check_globs("also_ignore", &config.also_ignore)?;
        Ok(())
    }

    fn on_request(config: &Config, req: &Request) -> Verdict {
        let client = &req.client.key;
        if let Some(mark) = with_key(&["tripped", client], state::get) {
            if let Some(tripped) = Tripped::decode(&mark) {
                let left = tripped.until_ms.saturating_sub(req.received_ms);
                state::finding("probing", &format!("client {client}: {}", tripped.cause));
                return vigil_guest::too_many_requests(
                    "too many requests answered with client errors",
                    Duration::from_millis(left),
                );
            }
        }
        if !config.ignores(req.path) {
            let window = *config.window.get();
            with_key(&["tally", client], |k| state::count(k, 1, window));
        }
        Verdict::Allow
    }

    fn on_response(config: &Config, req: &Request, resp: &Response) {
        if !is_client_error(resp.status) || config.ignores(req.path) {
            return;
        }
        let client = &req.client.key;
        let window = *config.window.get();
        let tally = Tally(with_key(&["tally", client], |k| {
            state::count(k, Tally::MARK, window)
        }));
        let (requests, errors) = (tally.requests(), tally.marked());
        let not_found = match resp.status {
            404 => with_key(&["not-found", client], |k| {
                state::distinct(k, req.path, window)
            }),
            _ => 0,
        };
        if requests < i64::from(config.min_requests) {
            return;
        }
        let cause = if not_found > config.max_not_found {
            format!(
                "{not_found} different paths not found within {}",
                config.window.text()
            )
        } else if errors as f64 > config.max_error_ratio * requests as f64 {
            format!(
                "{errors} of {requests} requests answered 4xx within {}",
                config.window.text()
            )
        } else {
            return;
        };
        let until_ms = req.received_ms.saturating_add(window.as_millis() as u64);
        with_key(&["tripped", client], |k| {
            state::set(k, &Tripped::encode(until_ms, &cause), window)
        });
    }
}

vigil_guest::guard!(Probing);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_guest::testing::{request, TestHost, TestRequest};

    fn get(path: &str) -> TestRequest {
        request("GET", path).client("198.51.100.66")
    }

    #[test]
    fn a_client_mostly_answered_4xx_is_refused_until_a_window_has_passed() {
        let host = TestHost::new();
        let config = host
            .configure::<Probing>(r#"{"min_requests": 4, "max_error_ratio": 0.5}"#)
            .unwrap();
        for (path, status) in [("/", 200), ("/.env", 404), ("/admin", 403)] {
            assert!(matches!(
                host.exchange::<Probing>(&config, &get(path), status),
                Verdict::Allow
            ));
        }
        assert!(
            host.allows::<Probing>(&config, &get("/backup.zip")),
            "judged on responses: three requests are fewer than min_requests"
        );
        host.respond::<Probing>(&config, &get("/backup.zip"), 404, &[]);
        host.advance(Duration::from_secs(60));
        match host.check::<Probing>(&config, &get("/")) {
            Verdict::Deny(deny) => {
                assert_eq!((deny.status, deny.retry_after_secs), (429, Some(540)));
            }
            Verdict::Allow => panic!("3 of 4 answered 4xx"),
        }
        assert_eq!(
            host.findings(),
            [(
                "probing".to_string(),
                "client 198.51.100.66: 3 of 4 requests answered 4xx within 10m".to_string()
            )]
        );
        assert!(
            host.allows::<Probing>(&config, &request("GET", "/").client("192.0.2.1")),
            "another client is not marked"
        );
        host.advance(Duration::from_secs(540));
        assert!(host.allows::<Probing>(&config, &get("/")));
    }

    #[test]
    fn many_different_paths_not_found_trip_it_whatever_the_ratio() {
        let host = TestHost::new();
        let config = host
            .configure::<Probing>(
                r#"{"min_requests": 1, "max_error_ratio": 1.0, "max_not_found": 3}"#,
            )
            .unwrap();
        for path in ["/a", "/b", "/a", "/c"] {
            host.exchange::<Probing>(&config, &get(path), 404);
        }
        assert!(
            host.allows::<Probing>(&config, &get("/")),
            "three different paths are not more than three"
        );
        host.exchange::<Probing>(&config, &get("/d"), 404);
        assert!(!host.allows::<Probing>(&config, &get("/")));
        let (_, detail) = host.findings().pop().unwrap();
        assert!(
            detail.ends_with("4 different paths not found within 10m"),
            "{detail}"
        );
    }

    #[test]
    fn browser_noise_and_429s_are_not_counted() {
        let host = TestHost::new();
        let config = host
            .configure::<Probing>(r#"{"min_requests": 2, "max_error_ratio": 0.5}"#)
            .unwrap();
        for path in [
            "/favicon.ico",
            "/robots.txt",
            "/js/app.js.map",
            "/favicon.ico",
        ] {
            host.exchange::<Probing>(&config, &get(path), 404);
        }
        for _ in 0..5 {
            host.exchange::<Probing>(&config, &get("/api/items"), 429);
        }
        host.exchange::<Probing>(&config, &get("/api/items"), 200);
        host.exchange::<Probing>(&config, &get("/api/items/9"), 404);
        assert!(
            host.allows::<Probing>(&config, &get("/")),
            "1 of the 7 counted requests is a 4xx"
        );
        assert!(host.findings().is_empty());
    }

    #[test]
    fn bad_settings_are_named() {
        let host = TestHost::new();
        for (json, says) in [
            (r#"{"min_requests": 0}"#, "min_requests: must be at least 1"),
            (
                r#"{"max_error_ratio": -0.1}"#,
                "max_error_ratio: must be between 0 and 1",
            ),
            (
                r#"{"max_not_found": 0}"#,
                "max_not_found: must be at least 1",
            ),
            (
                r#"{"also_ignore": ["/x", " "]}"#,
                "also_ignore[1]: must not be empty",
            ),
            (r#"{"window": "10"}"#, "window"),
        ] {
            let error = host.configure::<Probing>(json).err().unwrap();
            assert!(error.contains(says), "{json}: {error}");
        }
    }

    fn config() -> Config {
        vigil_guest::parse_config("{}").unwrap()
    }

    #[test]
    fn what_browsers_ask_for_on_their_own_is_ignored() {
        let c = config();
        for path in [
            "/favicon.ico",
            "/FAVICON.ICO",
            "/robots.txt",
            "/static/js/main.3f2a.js.map",
            "/assets/app.css.map",
            "/apple-touch-icon.png",
            "/apple-touch-icon-precomposed.png",
            "/apple-touch-icon-120x120.png",
            "/.well-known/appspecific/com.chrome.devtools.json",
            "/manifest.json",
        ] {
            assert!(c.ignores(path), "{path}");
        }
        for path in [
            "/.env",
            "/wp-login.php",
            "/admin/favicon.ico.php",
            "/robots.txt.bak",
            "/map",
            "/.git/config",
            "/static/manifest.json",
        ] {
            assert!(!c.ignores(path), "{path}");
        }
    }

    #[test]
    fn ignore_replaces_the_defaults_and_also_ignore_adds_to_them() {
        let c: Config = vigil_guest::parse_config(r#"{"ignore": ["/x"]}"#).unwrap();
        assert!(c.ignores("/x") && !c.ignores("/favicon.ico"));
        let c: Config = vigil_guest::parse_config(r#"{"also_ignore": ["*.jpg"]}"#).unwrap();
        assert!(c.ignores("/img/a.JPG") && c.ignores("/favicon.ico"));
    }

    #[test]
    fn only_client_errors_but_429_count() {
        assert!(is_client_error(404) && is_client_error(400) && is_client_error(403));
        assert!(!is_client_error(429) && !is_client_error(200) && !is_client_error(500));
    }

    #[test]
    fn a_mark_reads_back() {
        let bytes = Tripped::encode(1_700_000_600_000, "why");
        let t = Tripped::decode(&bytes).unwrap();
        assert_eq!((t.until_ms, t.cause), (1_700_000_600_000, "why"));
        assert!(Tripped::decode(&[1, 2, 3]).is_none());
    }
}
