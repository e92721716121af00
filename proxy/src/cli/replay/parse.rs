//! Access log lines as requests: nginx's and Apache's combined and common formats, and JSON
//! lines with the field names of the usual proxies (Vigil's own access log, Envoy, Traefik,
//! Caddy, nginx `log_format ... escape=json`).

use std::net::IpAddr;
use std::time::Duration;

/// How the lines of a file are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    /// "$http_referer" "$http_user_agent"`.
    Combined,
    /// The same without referer and user agent.
    Common,
    /// One JSON object per line.
    Json,
    /// A HAR 1.2 file (one JSON document; browsers' developer tools export it): its
    /// `log.entries`. Chosen by itself for files named `*.har`.
    Har,
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// When it arrived, since the Unix epoch.
    pub at: Duration,
    /// The peer's address (or the logged client address).
    pub ip: IpAddr,
    /// Request method.
    pub method: String,
    /// Request target, as logged.
    pub target: String,
    /// The status the client got.
    pub status: u16,
    /// `User-Agent`, when logged.
    pub user_agent: Option<String>,
    /// `Referer`, when logged.
    pub referer: Option<String>,
    /// `X-Forwarded-For`, when logged.
    pub forwarded_for: Option<String>,
    /// The client key, when the log has it (Vigil's own access log).
    pub client: Option<String>,
    /// Other header fields, when the input has them (a HAR file, a `vigil try` script).
    pub headers: Vec<(String, String)>,
    /// The request body, when the input has it.
    pub body: Option<Vec<u8>>,
}

/// What a line that is not a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// The line does not have the format's shape; the reason says where it breaks.
    Malformed(String),
    /// A well-formed line about a request the server could not read (`"-"`, garbage).
    NotARequest,
}

/// Reads one line in `format`; `None` for `format` means: JSON when it starts with `{`, else
/// combined (common lines are read as combined ones without their last fields).
pub fn line(text: &str, format: Option<InputFormat>) -> Result<LoggedRequest, Unreadable> {
    let text = text.trim_end_matches(['\r', '\n']);
    match format {
        Some(InputFormat::Json) => json(text),
        Some(InputFormat::Combined | InputFormat::Common) => combined(text),
        Some(InputFormat::Har) => Err(malformed("a HAR file is one document, not lines")),
        None if text.trim_start().starts_with('{') => json(text),
        None => combined(text),
    }
}

fn malformed(why: impl Into<String>) -> Unreadable {
    Unreadable::Malformed(why.into())
}

/// Combined and common lines. The fields are separated by spaces; `[...]` and `"..."` hold
/// spaces; inside quotes a backslash escapes the next character (Apache) and `\xHH` is a byte
/// (nginx).
fn combined(text: &str) -> Result<LoggedRequest, Unreadable> {
    let mut fields = Fields { rest: text };
    let ip = fields.bare().ok_or_else(|| malformed("empty line"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| malformed(format!("{ip:?} is not an IP address")))?;
    let _ident = fields.bare().ok_or_else(|| malformed("no ident field"))?;
    let _user = fields.bare().ok_or_else(|| malformed("no user field"))?;
    let time = fields
        .bracketed()
        .ok_or_else(|| malformed("no [time] field"))?;
    let at = common_log_time(time)?;
    let request = fields
        .quoted()
        .ok_or_else(|| malformed("no quoted request"))?;
    let status = fields.bare().ok_or_else(|| malformed("no status"))?;
    let status: u16 = status
        .parse()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| malformed(format!("{status:?} is not a status")))?;
    let _bytes = fields.bare();
    let referer = fields.quoted().filter(|r| r != "-");
    let user_agent = fields.quoted().filter(|a| a != "-");
    // nginx's `$http_x_forwarded_for`, often appended after the combined fields.
    let forwarded_for = fields.quoted().filter(|f| f != "-");
    let mut parts = request.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(Unreadable::NotARequest);
    };
    let target_shaped =
        target.starts_with(['/', '*']) || target.contains("://") || method == "CONNECT";
    if method.is_empty() || !method.bytes().all(is_tchar) || !target_shaped {
        return Err(Unreadable::NotARequest);
    }
    Ok(LoggedRequest {
        at,
        ip,
        method: method.to_string(),
        target: target.to_string(),
        status,
        user_agent,
        referer,
        forwarded_for,
        client: None,
        headers: Vec::new(),
        body: None,
    })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Fields<'a> {
    rest: &'a str,
}

impl<'a> Fields<'a> {
    fn bare(&mut self) -> Option<&'a str> {
        let rest = self.rest.trim_start_matches(' ');
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(' ').unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }

    fn bracketed(&mut self) -> Option<&'a str> {
        let rest = self.rest.trim_start_matches(' ').strip_prefix('[')?;
        let end = rest.find(']')?;
        self.rest = &rest[end + 1..];
        Some(&rest[..end])
    }

    fn quoted(&mut self) -> Option<String> {
        let rest = self.rest.trim_start_matches(' ').strip_prefix('"')?;
        let mut out = Vec::new();
        let bytes = rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    self.rest = &rest[i + 1..];
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' if bytes.get(i + 1) == Some(&b'x') => {
                    let hex = rest
                        .get(i + 2..i + 4)
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(byte) => {
                            out.push(byte);
                            i += 4;
                        }
                        None => {
                            out.push(b'\\');
                            i += 1;
                        }
                    }
                }
                b'\\' if i + 1 < bytes.len() => {
                    out.push(bytes[i + 1]);
                    i += 2;
                }
                byte => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        None
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `10/Oct/2000:13:55:36 -0700`.
fn common_log_time(text: &str) -> Result<Duration, Unreadable> {
    let bad = || {
        malformed(format!(
            "[{text}] is not a time like [10/Oct/2000:13:55:36 -0700]"
        ))
    };
    let (stamp, zone) = text.split_once(' ').ok_or_else(bad)?;
    let mut parts = stamp.splitn(4, ['/', ':']);
    let (day, month, year, clock) = (
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
    );
    let month = MONTHS.iter().position(|m| *m == month).ok_or_else(bad)? as u8 + 1;
    let number = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let mut hms = clock.split(':');
    let (h, m, s) = (
        number(hms.next().ok_or_else(bad)?)?,
        number(hms.next().ok_or_else(bad)?)?,
        number(hms.next().ok_or_else(bad)?)?,
    );
    let offset = zone_offset(zone).ok_or_else(bad)?;
    let month = time::Month::try_from(month).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(number(year)? as i32, month, number(day)? as u8)
        .map_err(|_| bad())?;
    let moment = date
        .with_hms(h as u8, m as u8, s as u8)
        .map_err(|_| bad())?
        .assume_offset(offset);
    since_epoch(moment).ok_or_else(bad)
}

fn zone_offset(zone: &str) -> Option<time::UtcOffset> {
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    if digits.len() != 4 {
        return None;
    }
    let hours: i8 = digits[..2].parse().ok()?;
    let minutes: i8 = digits[2..].parse().ok()?;
    time::UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()
}

fn since_epoch(moment: time::OffsetDateTime) -> Option<Duration> {
    let nanos = moment.unix_timestamp_nanos();
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// Candidate names of each field, in the order they are tried: Vigil's access log first, then
/// nginx (`escape=json` with the variables' names), Envoy, Traefik and Caddy (nested names are
/// paths through objects).
const TIME: &[&str] = &[
    "time",
    "time_iso8601",
    "start_time",
    "StartUTC",
    "ts",
    "timestamp",
    "@timestamp",
    "time_local",
];
const METHOD: &[&str] = &[
    "method",
    "request_method",
    "RequestMethod",
    "request.method",
];
const TARGET: &[&str] = &[
    "target",
    "request_uri",
    "path",
    "RequestPath",
    "request.uri",
    "uri",
];
const STATUS: &[&str] = &["status", "response_code", "DownstreamStatus", "status_code"];
const ADDRESS: &[&str] = &[
    "ip",
    "remote_addr",
    "downstream_remote_address",
    "ClientHost",
    "request.client_ip",
    "request.remote_ip",
    "client_ip",
];
const USER_AGENT: &[&str] = &[
    "user_agent",
    "http_user_agent",
    "user-agent",
    "request_User-Agent",
    "request.headers.User-Agent",
];
const REFERER: &[&str] = &[
    "referer",
    "http_referer",
    "referrer",
    "request_Referer",
    "request.headers.Referer",
];
const FORWARDED_FOR: &[&str] = &[
    "x_forwarded_for",
    "http_x_forwarded_for",
    "x-forwarded-for",
    "request_X-Forwarded-For",
    "request.headers.X-Forwarded-For",
];

fn json(text: &str) -> Result<LoggedRequest, Unreadable> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(malformed("not a JSON object"));
    }
    let field = |names: &[&str]| names.iter().find_map(|name| lookup(&value, name));
    let text_of = |names: &[&str]| field(names).and_then(as_text);
    let named = |names: &[&str]| names.join(", ");
    let time =
        field(TIME).ok_or_else(|| malformed(format!("no time field (one of {})", named(TIME))))?;
    let at = json_time(time)?;
    let method = text_of(METHOD)
        .ok_or_else(|| malformed(format!("no method field (one of {})", named(METHOD))))?;
    let target = text_of(TARGET)
        .ok_or_else(|| malformed(format!("no target field (one of {})", named(TARGET))))?;
    let status = field(STATUS)
        .and_then(|s| s.as_u64().or_else(|| s.as_str()?.parse().ok()))
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| malformed(format!("no status field (one of {})", named(STATUS))))?;
    let address = text_of(ADDRESS).ok_or_else(|| {
        malformed(format!(
            "no client address field (one of {})",
            named(ADDRESS)
        ))
    })?;
    let ip = address_of(&address)
        .ok_or_else(|| malformed(format!("{address:?} is not an IP address")))?;
    if method == "-" || target == "-" {
        return Err(Unreadable::NotARequest);
    }
    Ok(LoggedRequest {
        at,
        ip,
        method,
        target,
        status: status as u16,
        user_agent: text_of(USER_AGENT).filter(|a| a != "-"),
        referer: text_of(REFERER).filter(|r| r != "-"),
        forwarded_for: text_of(FORWARDED_FOR).filter(|f| f != "-"),
        client: value.get("client").and_then(as_text),
        headers: Vec::new(),
        body: None,
    })
}

/// `name`, or a dotted path through nested objects.
fn lookup<'v>(value: &'v serde_json::Value, name: &str) -> Option<&'v serde_json::Value> {
    if let Some(found) = value.get(name) {
        return (!found.is_null()).then_some(found);
    }
    let mut at = value;
    for part in name.split('.') {
        at = at.get(part)?;
    }
    (!at.is_null()).then_some(at)
}

/// A string, or the first of an array of them (Caddy logs header values as arrays).
fn as_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => items.first().and_then(as_text),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An address, bare or with a port (`203.0.113.9:51234`, `[2001:db8::1]:443`).
fn address_of(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    let (host, _port) = text.rsplit_once(':')?;
    host.parse().ok()
}

/// RFC 3339 text, a common-log time, or seconds since the epoch (a number or numeric text).
fn json_time(value: &serde_json::Value) -> Result<Duration, Unreadable> {
    if let Some(seconds) = value.as_f64() {
        return seconds_since_epoch(seconds);
    }
    let text = value
        .as_str()
        .ok_or_else(|| malformed("the time is neither text nor a number"))?;
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_since_epoch(seconds);
    }
    if let Ok(moment) =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return since_epoch(moment).ok_or_else(|| malformed(format!("{text:?} is before 1970")));
    }
    common_log_time(text)
        .map_err(|_| malformed(format!("{text:?} is not an RFC 3339 or common log time")))
}

fn seconds_since_epoch(seconds: f64) -> Result<Duration, Unreadable> {
    // Seconds, or milliseconds when the number is too large to be seconds of this era.
    let seconds = if seconds > 1e11 {
        seconds / 1000.0
    } else {
        seconds
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| malformed(format!("{seconds} is not a time")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Duration {
        since_epoch(
            time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn combined_lines_with_their_quirks() {
        let nginx = r#"203.0.113.9 - - [02/Dec/2026:13:55:36 +0100] "GET /users/42?x=1 HTTP/1.1" 200 57 "-" "curl/8.1 \x22quoted\x22""#;
        let read = line(nginx, None).unwrap();
        assert_eq!(read.at, at("2026-12-02T12:55:36Z"), "the zone applies");
        assert_eq!(read.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(
            (read.method.as_str(), read.target.as_str()),
            ("GET", "/users/42?x=1")
        );
        assert_eq!(read.status, 200);
        assert_eq!(read.referer, None);
        assert_eq!(read.user_agent.as_deref(), Some("curl/8.1 \"quoted\""));

        let apache = r#"2001:db8::7 - frank [10/Oct/2000:13:55:36 -0700] "POST /login HTTP/1.0" 401 2326 "http://a.example/" "Mozilla/4.08 \"x\"" "198.51.100.1""#;
        let read = line(apache, Some(InputFormat::Combined)).unwrap();
        assert_eq!(read.ip, "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(read.at, at("2000-10-10T20:55:36Z"));
        assert_eq!(read.user_agent.as_deref(), Some("Mozilla/4.08 \"x\""));
        assert_eq!(read.referer.as_deref(), Some("http://a.example/"));
        assert_eq!(read.forwarded_for.as_deref(), Some("198.51.100.1"));

        let common = r#"192.0.2.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 404 -"#;
        let read = line(common, Some(InputFormat::Common)).unwrap();
        assert_eq!((read.status, read.user_agent), (404, None));
    }

    #[test]
    fn lines_that_are_not_requests_say_so() {
        let refused = r#"192.0.2.1 - - [10/Oct/2000:13:55:36 +0000] "-" 400 0 "-" "-""#;
        assert_eq!(line(refused, None), Err(Unreadable::NotARequest));
        let garbage = r#"192.0.2.1 - - [10/Oct/2000:13:55:36 +0000] "\x16\x03\x01" 400 0 "-" "-""#;
        assert_eq!(line(garbage, None), Err(Unreadable::NotARequest));
        for (text, says) in [
            ("", "empty line"),
            ("nonsense here", "\"nonsense\" is not an IP address"),
            (
                "192.0.2.1 - - [yesterday] \"GET / HTTP/1.1\" 200 1",
                "is not a time",
            ),
            (
                "192.0.2.1 - - [10/Oct/2000:13:55:36 +0000] \"GET / HTTP/1.1\" 2000 1",
                "not a status",
            ),
            ("{\"time\": 1}", "no method field"),
            ("[1,2]", "\"[1,2]\" is not an IP address"),
        ] {
            match line(text, None) {
                Err(Unreadable::Malformed(why)) => assert!(why.contains(says), "{text}: {why}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn json_lines_of_the_usual_proxies() {
        let vigil = r#"{"time":"2026-12-02T13:55:36.123Z","request_id":"r","client":"alice","ip":"203.0.113.9","method":"GET","target":"/users/42","status":429,"user_agent":"curl/8"}"#;
        let read = line(vigil, None).unwrap();
        assert_eq!(read.at, at("2026-12-02T13:55:36.123Z"));
        assert_eq!(read.client.as_deref(), Some("alice"));
        assert_eq!(read.status, 429);

        let envoy = r#"{"start_time":"2026-12-02T13:55:36.000Z","method":"POST","path":"/login","response_code":401,"downstream_remote_address":"198.51.100.4:51234","user_agent":"python-requests/2.31","x_forwarded_for":null}"#;
        let read = line(envoy, Some(InputFormat::Json)).unwrap();
        assert_eq!(read.ip, "198.51.100.4".parse::<IpAddr>().unwrap());
        assert_eq!((read.method.as_str(), read.status), ("POST", 401));

        let traefik = r#"{"StartUTC":"2026-12-02T13:55:36Z","RequestMethod":"GET","RequestPath":"/a?b=1","DownstreamStatus":404,"ClientHost":"2001:db8::1","request_User-Agent":"zgrab/0.x"}"#;
        let read = line(traefik, None).unwrap();
        assert_eq!(read.target, "/a?b=1");
        assert_eq!(read.user_agent.as_deref(), Some("zgrab/0.x"));

        let caddy = r#"{"level":"info","ts":1796219736.5,"request":{"remote_ip":"192.0.2.8","method":"GET","uri":"/x","headers":{"User-Agent":["Mozilla/5.0"]}},"status":200}"#;
        let read = line(caddy, None).unwrap();
        assert_eq!(read.at, Duration::from_millis(1_796_219_736_500));
        assert_eq!(read.ip, "192.0.2.8".parse::<IpAddr>().unwrap());
        assert_eq!(read.user_agent.as_deref(), Some("Mozilla/5.0"));

        let nginx = r#"{"time_iso8601":"2026-12-02T13:55:36+00:00","remote_addr":"192.0.2.9","request_method":"GET","request_uri":"/?author=2","status":"200","http_user_agent":"-"}"#;
        let read = line(nginx, None).unwrap();
        assert_eq!((read.status, read.user_agent), (200, None));
    }
}
