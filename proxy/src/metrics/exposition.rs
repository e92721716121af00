//! The two text formats `/metrics` speaks, and which one a scraper asked for.
//!
//! `prometheus-client` encodes only OpenMetrics text. The Prometheus text format 0.0.4 differs
//! from it in a few places this module rewrites, line by line:
//!
//! - a counter's `# TYPE` and `# HELP` name the sample (`x_total`), not the family (`x`): a
//!   0.0.4 parser would otherwise file the samples as untyped;
//! - `info` families become gauges named `x_info`, `unknown` ones `untyped`, and types 0.0.4
//!   lacks (`gaugehistogram`, `stateset`) lose their `# TYPE` line, leaving untyped samples;
//! - `# UNIT` and `# EOF` lines, and exemplars (` # {…} v`), do not exist in 0.0.4;
//! - timestamps are milliseconds in 0.0.4, seconds in OpenMetrics.

/// A text format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: the default.
    Prometheus,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when it ranks OpenMetrics 1.0.0
    /// (or OpenMetrics of no stated version) above every media range the Prometheus format
    /// matches, the Prometheus format otherwise, a missing or unreadable header included.
    /// A tie goes to the Prometheus format, the default.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let (mut openmetrics, mut prometheus) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let (mut q, mut version) = (1.0f32, None);
            for parameter in parts {
                let Some((name, value)) = parameter.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value.to_string()),
                    _ => {}
                }
            }
            let wanted = match media.as_str() {
                "application/openmetrics-text" => {
                    matches!(version.as_deref(), None | Some("1.0.0"))
                        .then_some(Format::OpenMetrics)
                }
                "text/plain" => {
                    matches!(version.as_deref(), None | Some("0.0.4")).then_some(Format::Prometheus)
                }
                "text/*" | "*/*" => Some(Format::Prometheus),
                _ => None,
            };
            match wanted {
                Some(Format::OpenMetrics) => openmetrics = openmetrics.max(q),
                Some(Format::Prometheus) => prometheus = prometheus.max(q),
                None => {}
            }
        }
        if openmetrics > 0.0 && openmetrics > prometheus {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// Rewrites OpenMetrics text, as `prometheus-client` writes it, into the Prometheus text
/// format 0.0.4. Help texts pass unchanged: they must hold no backslash, double quote or line
/// break, which the two formats escape differently.
pub fn to_prometheus(openmetrics: &str) -> String {
    let mut text = String::with_capacity(openmetrics.len());
    // `# HELP` comes before `# TYPE`, which decides the name both must carry.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            write_help(&mut text, help.take(), None);
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), Some("counter")),
                "info" => (format!("{family}_info"), Some("gauge")),
                "unknown" => (family.to_string(), Some("untyped")),
                "gauge" | "histogram" | "summary" => (family.to_string(), Some(kind)),
                _ => (family.to_string(), None),
            };
            match help.take() {
                Some((helped, words)) if helped == family => {
                    write_help(&mut text, Some((helped, words)), Some(&name));
                }
                other => write_help(&mut text, other, None),
            }
            if let Some(kind) = kind {
                text.push_str("# TYPE ");
                text.push_str(&name);
                text.push(' ');
                text.push_str(kind);
                text.push('\n');
            }
        } else {
            write_help(&mut text, help.take(), None);
            // `# UNIT`, `# EOF` and other comments are dropped.
            if !line.starts_with('#') && !line.is_empty() {
                sample(&mut text, line);
            }
        }
    }
    write_help(&mut text, help, None);
    text
}

/// Writes a held `# HELP` line, under `renamed` when its family's samples carry a suffix.
fn write_help(text: &mut String, help: Option<(&str, &str)>, renamed: Option<&str>) {
    let Some((name, words)) = help else {
        return;
    };
    text.push_str("# HELP ");
    text.push_str(renamed.unwrap_or(name));
    text.push(' ');
    text.push_str(words);
    text.push('\n');
}

/// Writes one sample line without its exemplar, its timestamp in milliseconds.
fn sample(text: &mut String, line: &str) {
    let end_of_series = series_end(line);
    let (series, rest) = line.split_at(end_of_series);
    let rest = match rest.find(" # ") {
        Some(exemplar) => &rest[..exemplar],
        None => rest,
    };
    let mut fields = rest.split_whitespace();
    text.push_str(series);
    if let Some(value) = fields.next() {
        text.push(' ');
        text.push_str(value);
    }
    if let Some(seconds) = fields.next().and_then(|t| t.parse::<f64>().ok()) {
        text.push(' ');
        text.push_str(&((seconds * 1000.0).round() as i64).to_string());
    }
    text.push('\n');
}

/// Where the metric name and its label set end: after the `}` that closes the labels, quotes
/// and escapes respected (a label value may hold ` # ` or `}`), or at the first space.
fn series_end(line: &str) -> usize {
    let bytes = line.as_bytes();
    let Some(open) = line.find(['{', ' ']) else {
        return line.len();
    };
    if bytes[open] == b' ' {
        return open;
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in bytes.iter().enumerate().skip(open + 1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return i + 1,
            _ => {}
        }
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapers_get_what_they_rank_highest_and_the_prometheus_format_by_default() {
        let negotiate = |accept| Format::negotiate(Some(accept));
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(negotiate(""), Format::Prometheus);
        assert_eq!(negotiate("*/*"), Format::Prometheus);
        assert_eq!(negotiate("text/plain"), Format::Prometheus);
        assert_eq!(negotiate("text/plain; version=0.0.4"), Format::Prometheus);
        assert_eq!(negotiate("application/json"), Format::Prometheus);
        assert_eq!(
            negotiate("application/openmetrics-text"),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate("Application/OpenMetrics-Text; Version=\"1.0.0\""),
            Format::OpenMetrics
        );
        // What Prometheus 2.x and 3.x send by default.
        assert_eq!(
            negotiate(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
            ),
            Format::OpenMetrics
        );
        // Prometheus configured to prefer the classic format.
        assert_eq!(
            negotiate(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5"
            ),
            Format::Prometheus
        );
        assert_eq!(
            negotiate("application/openmetrics-text; q=0, */*"),
            Format::Prometheus
        );
        assert_eq!(
            negotiate("application/openmetrics-text; version=0.0.1"),
            Format::Prometheus,
            "only 1.0.0 is written"
        );
        assert_eq!(
            negotiate("application/openmetrics-text, text/plain"),
            Format::Prometheus,
            "a tie goes to the default"
        );
        assert_eq!(
            negotiate("application/openmetrics-text;q=0.2, text/plain; version=9"),
            Format::OpenMetrics,
            "an unknown version of the Prometheus format is not accepted"
        );
    }

    #[test]
    fn openmetrics_becomes_the_prometheus_format() {
        let openmetrics = concat!(
            "# HELP vigil_requests Requests by verdict.\n",
            "# TYPE vigil_requests counter\n",
            "vigil_requests_total{route=\"/a # {b}\",verdict=\"x\\\"}\"} 3 # {trace=\"1\"} 1.0 17.5\n",
            "# HELP vigil_up Whether it is up.\n",
            "# TYPE vigil_up gauge\n",
            "vigil_up 1\n",
            "# HELP vigil_latency_seconds Latency.\n",
            "# TYPE vigil_latency_seconds histogram\n",
            "# UNIT vigil_latency_seconds seconds\n",
            "vigil_latency_seconds_sum 0.5\n",
            "vigil_latency_seconds_count 2 1700000000.25\n",
            "vigil_latency_seconds_bucket{le=\"+Inf\"} 2\n",
            "# HELP vigil_build Build.\n",
            "# TYPE vigil_build info\n",
            "vigil_build_info{version=\"1\"} 1\n",
            "# HELP vigil_odd Odd.\n",
            "# TYPE vigil_odd unknown\n",
            "vigil_odd 2\n",
            "# HELP vigil_states States.\n",
            "# TYPE vigil_states stateset\n",
            "vigil_states{vigil_states=\"a\"} 1\n",
            "# EOF\n",
        );
        let expected = concat!(
            "# HELP vigil_requests_total Requests by verdict.\n",
            "# TYPE vigil_requests_total counter\n",
            "vigil_requests_total{route=\"/a # {b}\",verdict=\"x\\\"}\"} 3\n",
            "# HELP vigil_up Whether it is up.\n",
            "# TYPE vigil_up gauge\n",
            "vigil_up 1\n",
            "# HELP vigil_latency_seconds Latency.\n",
            "# TYPE vigil_latency_seconds histogram\n",
            "vigil_latency_seconds_sum 0.5\n",
            "vigil_latency_seconds_count 2 1700000000250\n",
            "vigil_latency_seconds_bucket{le=\"+Inf\"} 2\n",
            "# HELP vigil_build_info Build.\n",
            "# TYPE vigil_build_info gauge\n",
            "vigil_build_info{version=\"1\"} 1\n",
            "# HELP vigil_odd Odd.\n",
            "# TYPE vigil_odd untyped\n",
            "vigil_odd 2\n",
            "# HELP vigil_states States.\n",
            "vigil_states{vigil_states=\"a\"} 1\n",
        );
        assert_eq!(to_prometheus(openmetrics), expected);
    }
}
