//! `vigil try` scripts: the requests to send, one step each, written as JSON lines or as a
//! YAML list, each step read with the line it starts on so that errors and mismatches point
//! at it.

use crate::cli::replay::DEFAULT_CLIENT;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Scripts larger than this are refused before they are read: a script is written by hand.
const MAX_SCRIPT_BYTES: u64 = 16 * 1024 * 1024;

/// One request of a script.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The line the step starts on, from 1 (0 for steps made from the command line).
    pub line: usize,
    /// Request method, upper case.
    pub method: String,
    /// Path, with the query when there is one.
    pub target: String,
    /// Header fields, as given.
    pub headers: Vec<(String, String)>,
    /// The body, when there is one.
    pub body: Option<Vec<u8>>,
    /// The peer's address.
    pub ip: IpAddr,
    /// The client key, when the step names one instead of an address.
    pub key: Option<String>,
    /// When the request arrives, since the script's start.
    pub at: Duration,
    /// The status the upstream answers with.
    pub status: u16,
    /// What the step must come to.
    pub expect: Vec<Expectation>,
}

/// What a step must come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// The request reaches the upstream.
    Allow,
    /// The request is refused, with this status and by this guard when given.
    Deny {
        /// The status of the refusal.
        status: Option<u16>,
        /// The guard (`ban:NAME` for a ban, `vigil` for the proxy itself).
        by: Option<String>,
    },
    /// A monitor-mode guard (this one, when given) would have refused it.
    WouldDeny {
        /// The guard.
        by: Option<String>,
    },
    /// A finding of this kind is reported at this step.
    Finding(String),
}

/// How expectations are written, for error messages.
const EXPECTATIONS: &str =
    "allow, deny [STATUS] [by GUARD], would-deny [by GUARD] or finding: KIND";

impl Expectation {
    /// Reads `deny 429 by rate-limit`, `allow`, `would-deny`, `finding: enumeration`.
    pub fn parse(text: &str) -> Result<Expectation, String> {
        let bad = || format!("expect: {text:?} is not an expectation; expected {EXPECTATIONS}");
        let words: Vec<&str> = text.split_whitespace().collect();
        let by = |rest: &[&str]| -> Result<Option<String>, String> {
            match rest {
                [] => Ok(None),
                ["by", guard] => Ok(Some(guard.to_string())),
                _ => Err(bad()),
            }
        };
        match words.as_slice() {
            ["allow"] => Ok(Expectation::Allow),
            ["deny", rest @ ..] => match rest.first().map(|w| w.parse::<u16>()) {
                Some(Ok(status)) if (100..=599).contains(&status) => Ok(Expectation::Deny {
                    status: Some(status),
                    by: by(&rest[1..])?,
                }),
                Some(Ok(_)) => Err(format!(
                    "expect: {text:?}: the status must be from 100 to 599"
                )),
                _ => Ok(Expectation::Deny {
                    status: None,
                    by: by(rest)?,
                }),
            },
            ["would-deny", rest @ ..] => Ok(Expectation::WouldDeny { by: by(rest)? }),
            ["finding" | "finding:", kind] => Ok(Expectation::Finding(kind.to_string())),
            [word] if word.len() > "finding:".len() && word.starts_with("finding:") => {
                Ok(Expectation::Finding(word["finding:".len()..].to_string()))
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::Allow => f.write_str("allow"),
            Expectation::Deny { status, by } => {
                f.write_str("deny")?;
                if let Some(status) = status {
                    write!(f, " {status}")?;
                }
                if let Some(by) = by {
                    write!(f, " by {by}")?;
                }
                Ok(())
            }
            Expectation::WouldDeny { by } => {
                f.write_str("would-deny")?;
                match by {
                    Some(by) => write!(f, " by {by}"),
                    None => Ok(()),
                }
            }
            Expectation::Finding(kind) => write!(f, "finding: {kind}"),
        }
    }
}

/// What a step left out: the command line's `--method`, `--path`, `--client`, `--status`.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Request method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Address or client key.
    pub client: String,
    /// The upstream's status.
    pub status: u16,
}

impl Defaults {
    /// `count` identical steps at the same instant: `vigil try` without a script.
    pub fn repeated(&self, count: u32) -> Result<Vec<Step>, String> {
        let step = self.step(0, RawStep::default(), Duration::ZERO)?;
        Ok(vec![step; count as usize])
    }

    fn step(&self, line: usize, raw: RawStep, previous: Duration) -> Result<Step, String> {
        let method = raw
            .method
            .unwrap_or_else(|| self.method.clone())
            .to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return Err(format!("method: {method:?} is not an HTTP method"));
        }
        let target = raw.path.unwrap_or_else(|| self.path.clone());
        if !target.starts_with('/') {
            return Err(format!("path: {target:?} must start with /"));
        }
        http::uri::PathAndQuery::try_from(target.as_str())
            .map_err(|e| format!("path: {target:?} is not a request target: {e}"))?;
        let mut headers = Vec::new();
        for (name, value) in raw.headers {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a header field name"))?;
            http::HeaderValue::from_str(&value)
                .map_err(|_| format!("headers.{name}: {value:?} is not a header field value"))?;
            headers.push((name.to_ascii_lowercase(), value));
        }
        let client = raw.client.unwrap_or_else(|| self.client.clone());
        if client.is_empty() {
            return Err("client: must be an address or a client key, not empty".into());
        }
        let (ip, key) = match client.parse::<IpAddr>() {
            Ok(ip) => (ip, None),
            Err(_) => (DEFAULT_CLIENT, Some(client)),
        };
        let at = match raw.at {
            None => previous,
            Some(at) => at.resolve(previous)?,
        };
        let status = raw.status.unwrap_or(self.status);
        if !(100..=599).contains(&status) {
            return Err(format!("status: {status} is not from 100 to 599"));
        }
        let expect = match raw.expect {
            None => Vec::new(),
            Some(OneOrMany::One(text)) => vec![Expectation::parse(&text)?],
            Some(OneOrMany::Many(texts)) => texts
                .iter()
                .map(|t| Expectation::parse(t))
                .collect::<Result<_, _>>()?,
        };
        Ok(Step {
            line,
            method,
            target,
            headers,
            body: raw.body.map(String::into_bytes),
            ip,
            key,
            at,
            status,
            expect,
        })
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A step as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    method: Option<String>,
    path: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    client: Option<String>,
    at: Option<At>,
    status: Option<u16>,
    expect: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `at`: milliseconds since the start, a duration since the start (`"2s"`), or after the
/// previous step (`"+2s"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum At {
    Millis(u64),
    Text(String),
}

impl At {
    fn resolve(self, previous: Duration) -> Result<Duration, String> {
        let at = match self {
            At::Millis(ms) => Duration::from_millis(ms),
            At::Text(text) => match text.trim().strip_prefix('+') {
                Some(after) => previous + vigil_common::config::duration("at", after)?,
                None => vigil_common::config::duration("at", &text)?,
            },
        };
        if at < previous {
            return Err(format!(
                "at: {} ms is before the previous step's {} ms; steps run in time order (\"+2s\" \
                 is 2 s after the previous step)",
                at.as_millis(),
                previous.as_millis()
            ));
        }
        Ok(at)
    }
}

/// A script that cannot be run: the file, the line and what is wrong there.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct ScriptError {
    /// The script.
    pub file: PathBuf,
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Reads the steps of the script at `path`: YAML for `.yaml` and `.yml`, JSON lines for
/// `.jsonl`, `.ndjson` and `.json`, else JSON lines when the first step starts with `{`.
pub fn read(path: &Path, defaults: &Defaults) -> Result<Vec<Step>, ScriptError> {
    let fail = |line: usize, message: String| ScriptError {
        file: path.to_path_buf(),
        line,
        message,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| fail(0, format!("cannot read the script: {e}")))?
        .len();
    if size > MAX_SCRIPT_BYTES {
        return Err(fail(
            0,
            format!("the script is {size} bytes, over the limit of {MAX_SCRIPT_BYTES}"),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(0, format!("cannot read the script: {e}")))?;
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let json_lines = match extension {
        "yaml" | "yml" => false,
        "jsonl" | "ndjson" | "json" => true,
        _ => meaningful_lines(&text)
            .next()
            .is_some_and(|(_, line)| line.trim_start().starts_with('{')),
    };
    let raw = if json_lines {
        json_steps(&text)
    } else {
        yaml_steps(&text)
    }
    .map_err(|(line, message)| fail(line, message))?;
    if raw.is_empty() {
        return Err(fail(1, "the script has no steps".into()));
    }
    let mut steps = Vec::with_capacity(raw.len());
    let mut previous = Duration::ZERO;
    for (line, raw) in raw {
        let step = defaults
            .step(line, raw, previous)
            .map_err(|message| fail(line, message))?;
        previous = step.at;
        steps.push(step);
    }
    Ok(steps)
}

/// Lines that are neither blank nor `#` comments, numbered from 1.
fn meaningful_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let trimmed = line.trim();
        (!trimmed.is_empty() && !trimmed.starts_with('#')).then_some((i + 1, line))
    })
}

type Located<T> = Result<T, (usize, String)>;

/// One JSON object a line; blank lines and `#` comments are skipped.
fn json_steps(text: &str) -> Located<Vec<(usize, RawStep)>> {
    meaningful_lines(text)
        .map(|(number, line)| {
            serde_json::from_str::<RawStep>(line)
                .map(|step| (number, step))
                .map_err(|e| {
                    // serde_json counts within the one line it was given.
                    let message = e.to_string();
                    let position = format!(" at line {} column {}", e.line(), e.column());
                    let message = message.strip_suffix(&position).unwrap_or(&message);
                    (number, format!("{message} (column {})", e.column()))
                })
        })
        .collect()
}

/// A YAML list whose items start with `- ` at the start of a line. Each item is read by
/// itself, padded with the lines before it, so that the parser's line numbers are the file's.
fn yaml_steps(text: &str) -> Located<Vec<(usize, RawStep)>> {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| **line == "-" || line.starts_with("- "))
        .map(|(i, _)| i)
        .collect();
    let first = starts.first().copied().unwrap_or(lines.len());
    if let Some((i, _)) = lines[..first].iter().enumerate().find(|(_, line)| {
        let line = line.trim();
        !(line.is_empty() || line.starts_with('#') || line == "---")
    }) {
        return Err((
            i + 1,
            "expected a list of steps, each starting with \"- \" at the start of a line (or \
             one JSON object a line)"
                .into(),
        ));
    }
    let mut steps = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let item = "\n".repeat(start) + &lines[start..end].join("\n");
        let mut parsed: Vec<RawStep> = serde_yaml_ng::from_str(&item).map_err(|e| {
            let line = e.location().map_or(start + 1, |l| l.line());
            (line, e.to_string())
        })?;
        let step = parsed.pop().unwrap_or_default();
        steps.push((start + 1, step));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            method: "GET".into(),
            path: "/".into(),
            client: "203.0.113.7".into(),
            status: 200,
        }
    }

    fn script(name: &str, text: &str) -> Result<Vec<Step>, ScriptError> {
        let dir = std::env::temp_dir().join(format!("vigil-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        read(&path, &defaults())
    }

    #[test]
    fn yaml_and_json_lines_say_the_same_with_their_lines() {
        let yaml = "# a login, twice\n---\n- method: post\n  path: /login?next=/\n  headers:\n    X-Api-Key: k1\n  body: '{\"user\": \"a\"}'\n  status: 401\n\n- at: +2s\n  client: alice\n  expect: [deny 429 by throttle, \"finding: enumeration\"]\n- at: 5000\n  expect: allow\n";
        let steps = script("s.yaml", yaml).unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(
            steps.iter().map(|s| s.line).collect::<Vec<_>>(),
            [3, 10, 13]
        );
        assert_eq!(
            (steps[0].method.as_str(), steps[0].target.as_str()),
            ("POST", "/login?next=/")
        );
        assert_eq!(steps[0].headers, [("x-api-key".into(), "k1".into())]);
        assert_eq!(steps[0].body.as_deref(), Some(&b"{\"user\": \"a\"}"[..]));
        assert_eq!((steps[0].status, steps[1].status), (401, 200));
        assert_eq!(steps[1].at, Duration::from_secs(2));
        assert_eq!(
            (steps[1].ip, steps[1].key.as_deref()),
            (DEFAULT_CLIENT, Some("alice"))
        );
        assert_eq!(
            steps[1].expect,
            [
                Expectation::Deny {
                    status: Some(429),
                    by: Some("throttle".into())
                },
                Expectation::Finding("enumeration".into())
            ]
        );
        assert_eq!(steps[2].at, Duration::from_secs(5));

        let json = "{\"method\": \"post\", \"path\": \"/login?next=/\", \"headers\": {\"X-Api-Key\": \"k1\"}, \"body\": \"{\\\"user\\\": \\\"a\\\"}\", \"status\": 401}\n# then\n{\"at\": \"+2s\", \"client\": \"alice\", \"expect\": [\"deny 429 by throttle\", \"finding enumeration\"]}\n{\"at\": 5000, \"expect\": \"allow\"}\n";
        let from_json = script("s.jsonl", json).unwrap();
        let lines: Vec<usize> = from_json.iter().map(|s| s.line).collect();
        assert_eq!(lines, [1, 3, 4]);
        let unlined = |steps: Vec<Step>| {
            steps
                .into_iter()
                .map(|s| Step { line: 0, ..s })
                .collect::<Vec<_>>()
        };
        assert_eq!(unlined(from_json), unlined(steps));
    }

    #[test]
    fn errors_name_the_line_and_what_is_wrong() {
        for (name, text, line, says) in [
            (
                "a.yaml",
                "- path: /a\n- pth: /b\n",
                2,
                "unknown field `pth`",
            ),
            (
                "b.yaml",
                "- path: /a\n\n- path: /b\n  status: many\n",
                4,
                "status",
            ),
            (
                "c.yaml",
                "steps:\n- path: /a\n",
                1,
                "expected a list of steps",
            ),
            (
                "d.jsonl",
                "{\"path\": \"/a\"}\n{\"path\": \"/b\",}\n",
                2,
                "column",
            ),
            ("e.jsonl", "{\"path\": \"a\"}\n", 1, "must start with /"),
            (
                "f.yaml",
                "- at: 2s\n- at: 1s\n",
                2,
                "before the previous step",
            ),
            ("g.yaml", "- at: soon\n", 1, "at: expected a duration"),
            (
                "h.yaml",
                "- expect: deny fast\n",
                1,
                "is not an expectation",
            ),
            ("i.yaml", "- expect: deny 999\n", 1, "from 100 to 599"),
            ("j.yaml", "- method: \"GE T\"\n", 1, "not an HTTP method"),
            (
                "k.yaml",
                "- headers: {\"bad name\": x}\n",
                1,
                "not a header field name",
            ),
            ("l.yaml", "# nothing\n", 1, "no steps"),
            ("m.yaml", "- status: 42\n", 1, "not from 100 to 599"),
        ] {
            let error = script(name, text).unwrap_err();
            assert_eq!(error.line, line, "{name}: {error}");
            assert!(error.message.contains(says), "{name}: {error}");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("{}:{line}: ", error.file.display())),
                "{error}"
            );
        }
    }

    #[test]
    fn expectations_read_and_print_alike() {
        for text in [
            "allow",
            "deny",
            "deny 429",
            "deny by ban:rate-limit",
            "deny 403 by signatures",
            "would-deny",
            "would-deny by probing",
            "finding: enumeration",
        ] {
            assert_eq!(Expectation::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Expectation::parse("finding:probe").unwrap(),
            Expectation::Finding("probe".into())
        );
        for bad in ["", "allowed", "deny by", "finding", "would-deny probing"] {
            assert!(Expectation::parse(bad).is_err(), "{bad:?}");
        }
    }
}
