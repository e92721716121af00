//! Refuses requests that carry a known scanner's signature: a path no ordinary client of the
//! site asks for (configuration and VCS files, admin panels, CVE probes, web shells), or the
//! User-Agent of a scanning tool. A maintained list ships with the guard (`signatures.txt`,
//! compiled in); the operator adds to it with a file of the same format.
//!
//! ```toml
//! [[guard]]
//! name = "signatures"
//! module = "guards/signatures.wasm"
//! signatures = "/etc/vigil/signatures.txt"   # read by Vigil at load and at each reload
//! [guard.config]
//! defaults = true                 # the shipped list applies too (default true)
//! exempt = ["/wp-login.php", "/wp-admin"]    # paths never refused, in the same syntax
//! status = 403                    # default
//! ```
//!
//! The format, one signature a line, `#` starting a comment:
//!
//! ```text
//! path /phpmyadmin*     # from the path's start: /phpMyAdmin/index.php, /phpmyadmin2/
//! path .git             # at any depth: /.git/config, /app/.git/HEAD
//! path *.sql            # `*` is any run of characters within a segment
//! agent sqlmap          # a part of the User-Agent
//! ```
//!
//! Matching holds for the spellings an upstream accepts for the same resource: case is
//! ignored, percent-escapes Vigil kept are decoded, `;` parameters (which Java servers strip)
//! and trailing dots and spaces (which Windows servers strip) are left out of each segment.
//! The path itself was normalised by Vigil already (dot segments, unreserved escapes, repeated
//! slashes). Each refusal is reported as a `scanner` finding naming the signature.

use guard_util::Glob;
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
use vigil_guest::{state, Guard, Request, Verdict};

/// The list that ships with Vigil.
const DEFAULTS: &str = include_str!("../signatures.txt");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    signatures: Option<Parsed>,
    #[serde(default = "default_true")]
    defaults: bool,
    #[serde(default)]
    exempt: Vec<String>,
    #[serde(default = "default_status")]
    status: u16,
    /// `defaults` and `signatures` together, with `exempt`, made once at init.
    #[serde(skip)]
    built: std::sync::OnceLock<Result<Signatures, String>>,
}

fn default_true() -> bool {
    true
}
fn default_status() -> u16 {
    403
}

/// The `signatures` text, parsed when the configuration is read; errors wait for
/// `check_config`, which names the field.
struct Parsed(Result<Signatures, String>);

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Parsed(Signatures::parse(&text)))
    }
}

impl Config {
    fn signatures(&self) -> Result<&Signatures, String> {
        let built = self.built.get_or_init(|| {
            let mut all = Signatures::default();
            if self.defaults {
                all.extend(
                    Signatures::parse(DEFAULTS).map_err(|e| format!("the shipped list: {e}"))?,
                );
            }
            if let Some(Parsed(own)) = &self.signatures {
                all.extend(own.clone().map_err(|e| format!("signatures: {e}"))?);
            }
            for (i, text) in self.exempt.iter().enumerate() {
                let pattern = PathPattern::parse(text).map_err(|e| format!("exempt[{i}]: {e}"))?;
                all.exempt.push(pattern);
            }
            Ok(all)
        });
        built.as_ref().map_err(String::clone)
    }
}

/// A list of signatures.
#[derive(Clone, Default)]
struct Signatures {
    /// Single-segment literal paths matched at any depth, lower-cased: most of a list, looked
    /// up per segment rather than tried one by one.
    /// Lower-cased, to the signature as written.
    segments: HashMap<String, String>,
    paths: Vec<PathPattern>,
    agents: Vec<(String, Glob)>,
    exempt: Vec<PathPattern>,
}

impl Signatures {
    /// Parses the file format; an error names the line.
    fn parse(text: &str) -> Result<Signatures, String> {
        let mut out = Signatures::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |e: String| format!("line {}: {e}", n + 1);
            let (kind, pattern) = line
                .split_once(char::is_whitespace)
                .map(|(k, p)| (k, p.trim()))
                .ok_or_else(|| at(format!("{line:?} has no pattern after its kind")))?;
            match kind {
                "path" => {
                    let path = PathPattern::parse(pattern).map_err(at)?;
                    match path.literal_segment() {
                        Some(segment) => {
                            out.segments.insert(segment, path.text);
                        }
                        None => out.paths.push(path),
                    }
                }
                "agent" => out
                    .agents
                    .push((pattern.to_string(), Glob::new(&format!("*{pattern}*")))),
                other => {
                    return Err(at(format!(
                        "unknown kind {other:?}, expected \"path\" or \"agent\""
                    )))
                }
            }
        }
        Ok(out)
    }

    fn extend(&mut self, other: Signatures) {
        self.segments.extend(other.segments);
        self.paths.extend(other.paths);
        self.agents.extend(other.agents);
        self.exempt.extend(other.exempt);
    }

    /// The signature the request matches, as written.
    fn matched(&self, path: &str, agent: Option<&str>) -> Option<String> {
        let segments = request_segments(path);
        if self.exempt.iter().any(|p| p.matches(&segments)) {
            return None;
        }
        if let Some(text) = segments
            .iter()
            .find_map(|s| self.segments.get(&s.to_ascii_lowercase()))
        {
            return Some(format!("path {text}"));
        }
        if let Some(p) = self.paths.iter().find(|p| p.matches(&segments)) {
            return Some(format!("path {}", p.text));
        }
        let agent = agent?;
        self.agents
            .iter()
            .find(|(_, glob)| glob.matches(agent))
            .map(|(text, _)| format!("agent {text}"))
    }
}

/// A `path` signature: segments, each a glob, from the path's start or at any depth.
#[derive(Clone)]
struct PathPattern {
    text: String,
    anchored: bool,
    segments: Vec<Glob>,
    literal: Vec<String>,
}

impl PathPattern {
    fn parse(text: &str) -> Result<PathPattern, String> {
        let text = text.trim();
        let literal: Vec<String> = text
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if literal.is_empty() {
            return Err(format!("{text:?} names no path segment"));
        }
        Ok(PathPattern {
            text: text.to_string(),
            anchored: text.starts_with('/'),
            segments: literal.iter().map(|s| Glob::new(s)).collect(),
            literal,
        })
    }

    /// The one segment of an unanchored pattern without `*`, lower-cased.
    fn literal_segment(&self) -> Option<String> {
        match self.literal.as_slice() {
            [one] if !self.anchored && !one.contains('*') => Some(one.to_ascii_lowercase()),
            _ => None,
        }
    }

    fn matches(&self, path: &[String]) -> bool {
        let n = self.segments.len();
        let fits = |at: usize| {
            path[at..]
                .iter()
                .zip(&self.segments)
                .all(|(s, glob)| glob.matches(s))
        };
        if path.len() < n {
            return false;
        }
        match self.anchored {
            true => fits(0),
            false => (0..=path.len() - n).any(fits),
        }
    }
}

/// The segments of a request path as the upstream reads them: `;` parameters cut off,
/// percent-escapes decoded, trailing dots and spaces dropped, empty segments skipped. An
/// escaped `/` or `\` that Vigil was told to keep separates segments here too, as it does
/// for the servers that decode it before routing.
fn request_segments(path: &str) -> Vec<String> {
    path.split('/')
        .flat_map(|raw| {
            let raw = raw.split(';').next().unwrap_or("");
            let decoded = percent_decode(raw);
            decoded
                .split(['/', '\\'])
                .map(|s| s.trim_end_matches(['.', ' ']).to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// `%XX` decoded once; `+` is a plus in a path.
fn percent_decode(segment: &str) -> String {
    if !segment.contains('%') {
        return segment.to_string();
    }
    guard_util::form_decode(segment.replace('+', "%2B").as_bytes())
}

struct SignatureGuard;

impl Guard for SignatureGuard {
    type Config = Config;
    const OBSERVES_RESPONSES: bool = false;

    fn headers_read(config: &Config) -> Option<Vec<String>> {
        let agents = config.signatures().is_ok_and(|s| !s.agents.is_empty());
        Some(match agents {
            true => vec!["user-agent".to_string()],
            false => Vec::new(),
        })
    }

    fn check_config(config: &Config) -> Result<(), String> {
        if !(400..=599).contains(&config.status) {
            return Err("status: must be from 400 to 599".into());
        }
        config.signatures()?;
        Ok(())
    }

    fn on_request(config: &Config, req: &Request) -> Verdict {
        let Ok(signatures) = config.signatures() else {
            return Verdict::Allow;
        };
        match signatures.matched(req.path, req.header("user-agent")) {
            Some(signature) => {
                state::finding(
                    "scanner",
                    &format!(
                        "client {}: {} matches {signature:?}",
                        req.client.key, req.path
                    ),
                );
                vigil_guest::deny(config.status, "request matches a known scanner signature")
            }
            None => Verdict::Allow,
        }
    }
}

vigil_guest::guard!(SignatureGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_guest::testing::{request, TestHost};

    #[test]
    fn the_guard_refuses_a_signature_with_its_status_and_reports_it() {
        let host = TestHost::new();
        let config = host.configure::<SignatureGuard>("{}").unwrap();
        let probe = request("GET", "/app/.git/HEAD").client("198.51.100.3");
        match host.check::<SignatureGuard>(&config, &probe) {
            Verdict::Deny(deny) => {
                assert_eq!((deny.status, deny.retry_after_secs), (403, None));
                assert_eq!(deny.reason, "request matches a known scanner signature");
            }
            Verdict::Allow => panic!("/app/.git/HEAD is in the shipped list"),
        }
        assert_eq!(
            host.findings(),
            [(
                "scanner".to_string(),
                "client 198.51.100.3: /app/.git/HEAD matches \"path .git\"".to_string()
            )]
        );
        let tool = request("GET", "/products").header("user-agent", "sqlmap/1.8#stable");
        assert!(!host.allows::<SignatureGuard>(&config, &tool));
        let browser = request("GET", "/products").header("user-agent", "Mozilla/5.0");
        assert!(host.allows::<SignatureGuard>(&config, &browser));
        assert_eq!(
            host.findings().len(),
            2,
            "an allowed request reports nothing"
        );
    }

    #[test]
    fn the_operators_own_list_status_and_exemptions_apply() {
        let host = TestHost::new();
        let config = host
            .configure::<SignatureGuard>(
                r#"{"defaults": false, "signatures": "path /internal/*\nagent acme-scan",
                    "exempt": ["/internal/health"], "status": 404}"#,
            )
            .unwrap();
        match host.check::<SignatureGuard>(&config, &request("GET", "/internal/metrics")) {
            Verdict::Deny(deny) => assert_eq!(deny.status, 404),
            Verdict::Allow => panic!("the operator's signature"),
        }
        assert!(host.allows::<SignatureGuard>(&config, &request("GET", "/internal/health")));
        assert!(
            host.allows::<SignatureGuard>(&config, &request("GET", "/.env")),
            "without the shipped list"
        );
        assert!(!host.allows::<SignatureGuard>(
            &config,
            &request("GET", "/").header("user-agent", "ACME-Scan/2")
        ));
        for (json, says) in [
            (r#"{"status": 200}"#, "status: must be from 400 to 599"),
            (
                r#"{"signatures": "path /a\nheader x"}"#,
                "signatures: line 2: unknown kind \"header\"",
            ),
            (
                r#"{"exempt": ["/"]}"#,
                "exempt[0]: \"/\" names no path segment",
            ),
        ] {
            let error = host.configure::<SignatureGuard>(json).err().unwrap();
            assert!(error.contains(says), "{json}: {error}");
        }
    }

    fn with(json: &str) -> Config {
        let config: Config = vigil_guest::parse_config(json).unwrap();
        SignatureGuard::check_config(&config).unwrap();
        config
    }

    fn matched(config: &Config, path: &str) -> Option<String> {
        config.signatures().unwrap().matched(path, None)
    }

    #[test]
    fn the_shipped_list_parses_and_holds_the_usual_probes() {
        let c = with("{}");
        for path in [
            "/.env",
            "/.env.production",
            "/api/.env",
            "/.git/config",
            "/app/.git/HEAD",
            "/wp-login.php",
            "/wp-admin/install.php",
            "/phpmyadmin/",
            "/phpMyAdmin-5.2.1/index.php",
            "/actuator/env",
            "/actuator/heapdump",
            "/cgi-bin/luci",
            "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
            "/backup.sql",
            "/wp-content/plugins/hello/shell.php",
            "/.aws/credentials",
            "/server-status",
            "/CVS/Root",
        ] {
            assert!(matched(&c, path).is_some(), "{path}");
        }
    }

    #[test]
    fn ordinary_paths_match_no_shipped_signature() {
        let c = with("{}");
        for path in [
            "/",
            "/index.html",
            "/login",
            "/api/users/7",
            "/static/js/app.3f2a.js",
            "/assets/env.js",
            "/environment",
            "/docs/git-guide",
            "/blog/2026/12/how-we-use-git",
            "/admin-guide",
            "/shop/actuators",
            "/images/shell.png",
            "/favicon.ico",
            "/robots.txt",
            "/api/sql/query",
        ] {
            assert_eq!(matched(&c, path), None, "{path}");
        }
    }

    #[test]
    fn every_spelling_an_upstream_accepts_matches() {
        let c = with("{}");
        for path in [
            "/.ENV",
            "/.Git/Config",
            "/WP-LOGIN.PHP",
            "/.env;jsessionid=1",
            "/.git;x=1/config",
            "/.env.",
            "/.env%20",
            "/wp-login.php%2e",
            "/%2Eenv",
            "/cgi-bin%2Ftest",
        ] {
            assert!(matched(&c, path).is_some(), "{path}");
        }
    }

    #[test]
    fn anchored_patterns_hold_from_the_start_and_others_at_any_depth() {
        let c = with(r#"{"defaults": false, "signatures": "path /admin\npath secret/*.txt"}"#);
        assert!(matched(&c, "/admin").is_some() && matched(&c, "/admin/x").is_some());
        assert_eq!(matched(&c, "/x/admin"), None);
        assert_eq!(matched(&c, "/administrator"), None);
        assert!(matched(&c, "/a/b/secret/keys.TXT").is_some());
        let c = with(r#"{"defaults": false, "signatures": "path .Git\nagent x"}"#);
        assert_eq!(matched(&c, "/app/.GIT/HEAD").as_deref(), Some("path .Git"));
        assert_eq!(matched(&c, "/secret/keys.txt.html"), None);
        assert_eq!(matched(&c, "/secret"), None);
        assert_eq!(matched(&c, "/.env"), None, "the shipped list is off");
    }

    #[test]
    fn agents_match_a_part_of_the_user_agent() {
        let c = with("{}");
        let agent = |ua: &str| c.signatures().unwrap().matched("/", Some(ua));
        assert_eq!(
            agent("sqlmap/1.8.2#stable (https://sqlmap.org)").as_deref(),
            Some("agent sqlmap")
        );
        assert!(agent("Mozilla/5.0 (compatible; Nuclei - Open-source project)").is_some());
        assert!(agent("Mozilla/5.00 (Nikto/2.5.0) (Evasions:None)").is_some());
        assert!(agent("Mozilla/5.0 zgrab/0.x").is_some());
        assert_eq!(
            agent("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
            None
        );
        assert_eq!(agent("curl/8.5.0"), None);
    }

    #[test]
    fn exempt_paths_are_never_refused() {
        let c = with(r#"{"exempt": ["/wp-login.php", "/wp-admin"]}"#);
        assert_eq!(matched(&c, "/wp-login.php"), None);
        assert_eq!(matched(&c, "/WP-ADMIN/post.php"), None);
        assert!(matched(&c, "/xmlrpc.php").is_some());
    }

    #[test]
    fn a_bad_list_is_refused_naming_the_line() {
        let refused = |json: &str| {
            let config: Config = vigil_guest::parse_config(json).unwrap();
            SignatureGuard::check_config(&config).unwrap_err()
        };
        assert_eq!(
            refused(r##"{"signatures": "# mine\npath /x\npaht /y"}"##),
            "signatures: line 3: unknown kind \"paht\", expected \"path\" or \"agent\""
        );
        assert_eq!(
            refused(r#"{"signatures": "agent"}"#),
            "signatures: line 1: \"agent\" has no pattern after its kind"
        );
        assert_eq!(
            refused(r#"{"signatures": "path //"}"#),
            "signatures: line 1: \"//\" names no path segment"
        );
        assert_eq!(
            refused(r#"{"exempt": ["/"]}"#),
            "exempt[0]: \"/\" names no path segment"
        );
        assert_eq!(
            refused(r#"{"status": 200}"#),
            "status: must be from 400 to 599"
        );
    }
}
