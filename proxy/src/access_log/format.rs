//! The two line formats: JSON (every field) and nginx's `combined` (what log tools read).

use super::{Outcome, RequestLine};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

/// How access log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// One JSON object per line with every field.
    #[default]
    Json,
    /// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
    /// "$http_user_agent"`, as nginx and Apache write it.
    Combined,
}

/// Everything one line says.
pub(super) struct Entry<'a> {
    pub(super) request: &'a RequestLine,
    pub(super) outcome: &'a Outcome,
    pub(super) bytes_sent: u64,
    /// From the request's arrival to the end of its response body.
    pub(super) duration: Duration,
    /// Whether the whole body was sent (false: the client went away or the upstream broke off).
    pub(super) complete: bool,
}

/// The line for `entry`, newline included.
pub(super) fn line(format: AccessFormat, entry: &Entry<'_>) -> String {
    let mut line = match format {
        AccessFormat::Json => json(entry),
        AccessFormat::Combined => combined(entry),
    };
    line.push('\n');
    line
}

const RFC3339_MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
const COMMON_LOG_TIME: &[FormatItem<'static>] =
    format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");

fn timestamp(at: SystemTime, format: &[FormatItem<'static>]) -> String {
    OffsetDateTime::from(at)
        .format(format)
        .unwrap_or_else(|_| "-".into())
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    request_id: &'a str,
    client: Option<&'a str>,
    ip: String,
    method: &'a str,
    target: &'a str,
    version: &'a str,
    route: Option<&'a str>,
    status: u16,
    disposition: &'a str,
    denied_by: Option<&'a str>,
    verdicts: Verdicts<'a>,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    bytes_sent: u64,
    complete: bool,
    user_agent: Option<&'a str>,
    referer: Option<&'a str>,
}

/// The guards' verdicts as an object, guard name to verdict, in the order they ran.
struct Verdicts<'a>(&'a [(Arc<str>, &'static str)]);

impl Serialize for Verdicts<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (guard, verdict) in self.0 {
            map.serialize_entry(&**guard, verdict)?;
        }
        map.end()
    }
}

fn millis(duration: Duration) -> f64 {
    // Microsecond precision is what a latency investigation needs; more is noise.
    duration.as_micros() as f64 / 1000.0
}

fn json(entry: &Entry<'_>) -> String {
    let (request, outcome) = (entry.request, entry.outcome);
    let line = JsonLine {
        time: timestamp(request.at, RFC3339_MILLIS),
        request_id: &outcome.request_id,
        client: outcome.client.as_deref(),
        ip: outcome.ip.unwrap_or(request.peer).to_string(),
        method: &request.method,
        target: &request.target,
        version: version(request.version),
        route: outcome.route.as_deref(),
        status: outcome.status,
        disposition: outcome.disposition.map_or("error", |d| d.as_str()),
        denied_by: outcome.denied_by.as_deref(),
        verdicts: Verdicts(&outcome.verdicts),
        duration_ms: millis(entry.duration),
        upstream_ms: outcome.upstream.map(millis),
        bytes_sent: entry.bytes_sent,
        complete: entry.complete,
        user_agent: request.user_agent.as_deref(),
        referer: request.referer.as_deref(),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

fn version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn combined(entry: &Entry<'_>) -> String {
    let (request, outcome) = (entry.request, entry.outcome);
    let mut line = String::with_capacity(160);
    let ip = outcome.ip.unwrap_or(request.peer);
    let _ = write!(
        line,
        "{ip} - - [{}] \"",
        timestamp(request.at, COMMON_LOG_TIME)
    );
    escape_into(&mut line, &request.method);
    line.push(' ');
    escape_into(&mut line, &request.target);
    line.push(' ');
    line.push_str(version(request.version));
    let _ = write!(line, "\" {} {} \"", outcome.status, entry.bytes_sent);
    quoted_field(&mut line, request.referer.as_deref());
    line.push_str("\" \"");
    quoted_field(&mut line, request.user_agent.as_deref());
    line.push('"');
    line
}

fn quoted_field(line: &mut String, value: Option<&str>) {
    match value {
        Some(value) => escape_into(line, value),
        None => line.push('-'),
    }
}

/// Escapes as nginx does: `"`, `\`, control characters and non-ASCII bytes become `\xHH`, so a
/// client cannot end a field early or start a line of its own.
fn escape_into(line: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' | 0..=0x1f | 0x7f.. => {
                let _ = write!(line, "\\x{byte:02X}");
            }
            _ => line.push(byte as char),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Disposition;
    use std::time::{Instant, UNIX_EPOCH};

    fn request(target: &str, user_agent: Option<&str>) -> RequestLine {
        RequestLine {
            at: UNIX_EPOCH + Duration::from_millis(1_764_683_736_123),
            started: Instant::now(),
            peer: "192.0.2.7".parse().unwrap(),
            method: "GET".into(),
            target: target.into(),
            version: http::Version::HTTP_11,
            user_agent: user_agent.map(str::to_string),
            referer: None,
        }
    }

    fn denied() -> Outcome {
        Outcome {
            request_id: "req-1".into(),
            client: Some("alice".into()),
            ip: Some("203.0.113.9".parse().unwrap()),
            route: Some("/users/{id}".into()),
            status: 429,
            disposition: Some(Disposition::Denied),
            denied_by: Some("rate-limit".into()),
            verdicts: vec![
                ("audit".into(), "would_deny"),
                ("rate-limit".into(), "deny"),
            ],
            upstream: None,
        }
    }

    fn entry<'a>(request: &'a RequestLine, outcome: &'a Outcome) -> Entry<'a> {
        Entry {
            request,
            outcome,
            bytes_sent: 57,
            duration: Duration::from_micros(1_234),
            complete: true,
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let (request, outcome) = (request("/users/42?x=1", Some("curl/8")), denied());
        let text = line(AccessFormat::Json, &entry(&request, &outcome));
        assert!(text.ends_with('\n') && !text.trim_end().contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["time"], "2025-12-02T13:55:36.123Z");
        assert_eq!(value["request_id"], "req-1");
        assert_eq!(value["client"], "alice");
        assert_eq!(value["ip"], "203.0.113.9");
        assert_eq!(value["target"], "/users/42?x=1");
        assert_eq!(value["route"], "/users/{id}");
        assert_eq!(value["status"], 429);
        assert_eq!(value["disposition"], "denied");
        assert_eq!(value["denied_by"], "rate-limit");
        assert_eq!(value["verdicts"]["audit"], "would_deny");
        assert_eq!(value["verdicts"]["rate-limit"], "deny");
        assert_eq!(value["duration_ms"], 1.234);
        assert_eq!(value["upstream_ms"], serde_json::Value::Null);
        assert_eq!(value["bytes_sent"], 57);
        assert_eq!(value["user_agent"], "curl/8");
        let order: Vec<&String> = value["verdicts"].as_object().unwrap().keys().collect();
        assert_eq!(
            order,
            ["audit", "rate-limit"],
            "verdicts keep the chain's order"
        );
    }

    #[test]
    fn combined_lines_read_as_nginx_writes_them() {
        let (request, outcome) = (request("/users/42", Some("curl/8")), denied());
        let text = line(AccessFormat::Combined, &entry(&request, &outcome));
        assert_eq!(
            text,
            "203.0.113.9 - - [02/Dec/2025:13:55:36 +0000] \"GET /users/42 HTTP/1.1\" 429 57 \"-\" \"curl/8\"\n"
        );
    }

    #[test]
    fn a_client_cannot_forge_fields_or_lines() {
        let agent = "x\" 200 1 \"-\" \"y\nfake line\\";
        let (request, outcome) = (request("/a\"b", Some(agent)), Outcome::default());
        let text = line(AccessFormat::Combined, &entry(&request, &outcome));
        assert_eq!(text.matches('"').count(), 6, "{text}");
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.contains("\"GET /a\\x22b HTTP/1.1\""), "{text}");
        assert!(
            text.contains("x\\x22 200 1 \\x22-\\x22 \\x22y\\x0Afake line\\x5C"),
            "{text}"
        );
        let json = line(AccessFormat::Json, &entry(&request, &outcome));
        assert_eq!(json.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["user_agent"], agent);
    }

    #[test]
    fn a_request_refused_before_resolution_logs_the_peer() {
        let outcome = Outcome {
            status: 400,
            ..Outcome::default()
        };
        let request = request("/", None);
        let value: serde_json::Value =
            serde_json::from_str(&line(AccessFormat::Json, &entry(&request, &outcome))).unwrap();
        assert_eq!(value["ip"], "192.0.2.7");
        assert_eq!(value["client"], serde_json::Value::Null);
        assert_eq!(value["disposition"], "error");
    }
}
