//! `vigil replay`: recorded traffic through the configured guard chain on a virtual clock,
//! driven by the log's timestamps, so that windows and rates mean what they mean in production
//! while the replay runs as fast as the guards allow.
//!
//! Each request takes the path a live one takes up to the upstream (path normalisation,
//! client, route, allowlist, bans, the plan, the guards), and the logged status is the answer
//! the guards observe, unless one of them refuses the request, in which case they observe the
//! refusal, as they would have live.

pub mod har;
pub mod parse;

use crate::config::Config;
use crate::exposure::inventory::{Exposure, Observation};
use crate::forward::normalize;
use crate::respond::ProxyError;
use crate::sidecar::Sidecar;
use indicatif::{ProgressBar, ProgressStyle};
use parse::{InputFormat, LoggedRequest, Unreadable};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_host::clock::{Clock, ManualClock};

/// Unreadable lines shown with their number; the rest are counted.
const SHOWN_UNREADABLE: usize = 5;
/// Clients whose first refusal is kept for the summary.
const SHOWN_CLIENTS: usize = 1_000;
/// Longest line quoted in the summary.
const QUOTED_LINE_BYTES: usize = 300;

/// One guard's part in the replay.
#[derive(Debug, Default, Serialize)]
pub struct GuardTally {
    /// Requests it refused (enforce mode).
    pub refused: u64,
    /// Requests it would have refused (monitor mode).
    pub would_refuse: u64,
    /// Distinct clients it refused or would have refused (estimated within about 3%, so that
    /// a log of millions of clients needs no more memory than one of ten).
    pub clients: u64,
    #[serde(skip)]
    seen: vigil_report::sketch::Sketch,
}

impl GuardTally {
    fn saw(&mut self, client: &str) {
        self.seen.insert(client.as_bytes());
    }
}

/// The first refusal of one client.
#[derive(Debug, Serialize)]
pub struct FirstRefusal {
    /// The client key.
    pub client: String,
    /// The guard, or `ban:<guard>` for a client refused by an earlier ban.
    pub guard: String,
    /// The status it got.
    pub status: u16,
    /// Where the line is: file and line number.
    pub file: String,
    /// Line number, from 1.
    pub line: u64,
    /// The line, cut to a readable length.
    pub text: String,
}

/// A line that could not be read.
#[derive(Debug, Serialize)]
pub struct UnreadableLine {
    /// The file.
    pub file: String,
    /// Line number, from 1.
    pub line: u64,
    /// Why.
    pub error: String,
}

/// What a replay found.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Requests run through the chain.
    pub requests: u64,
    /// Lines about requests the server could not read (`"-"`), not replayed.
    pub not_requests: u64,
    /// Lines that could not be read at all.
    pub unreadable: u64,
    /// The first few of those.
    pub unreadable_first: Vec<UnreadableLine>,
    /// Requests the proxy itself would have refused (a path it does not accept, `CONNECT`).
    pub refused_by_proxy: u64,
    /// Requests refused by a guard or an earlier ban.
    pub refused: u64,
    /// Requests a monitor-mode guard would have refused.
    pub would_refuse: u64,
    /// Per guard (bans under `ban:<guard>`).
    pub guards: BTreeMap<String, GuardTally>,
    /// The first refusal of each client (up to a thousand clients), in log order.
    pub first_refusals: Vec<FirstRefusal>,
    /// Findings of the sidecar and the guards.
    pub findings: Vec<vigil_report::Finding>,
    /// The exposure inventory the traffic implies.
    pub exposure: Option<Exposure>,
    /// Seconds the replay took.
    pub seconds: f64,
}

/// Where the lines come from: a file (gzip when it says so), or `-` for standard input.
pub struct Input {
    /// The name shown in the summary.
    pub name: String,
    // Send: the lines are read and parsed on a thread of their own.
    reader: Box<dyn BufRead + Send>,
    progress: Option<ProgressBar>,
}

impl Input {
    /// Opens `path`; a gzip file (by its first bytes) is decompressed as it is read. With
    /// `progress`, a bar on stderr follows the bytes read (of the file as it is on disk).
    pub fn open(path: &Path, progress: bool) -> anyhow::Result<Input> {
        let name = path.display().to_string();
        let (raw, size): (Box<dyn Read + Send>, Option<u64>) = if path == Path::new("-") {
            (Box::new(std::io::stdin()), None)
        } else {
            let file = std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("cannot open {name}: {e}"))?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(file), size)
        };
        let progress = progress.then(|| progress_bar(&name, size));
        let raw: Box<dyn Read + Send> = match &progress {
            Some(bar) => Box::new(bar.wrap_read(raw)),
            None => raw,
        };
        let mut buffered = BufReader::with_capacity(256 * 1024, raw);
        let gzip = buffered.fill_buf().map(|b| b.starts_with(&[0x1f, 0x8b]))?;
        let reader: Box<dyn BufRead + Send> = if gzip {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                flate2::bufread::MultiGzDecoder::new(buffered),
            ))
        } else {
            Box::new(buffered)
        };
        Ok(Input {
            name,
            reader,
            progress,
        })
    }
}

impl Input {
    fn finish(&self) {
        if let Some(bar) = &self.progress {
            bar.finish_and_clear();
        }
    }
}

/// A reader that fails once it has given `left` bytes: the bound on a HAR file, which is
/// one document however large.
struct Bounded<'r> {
    inner: &'r mut Box<dyn BufRead + Send>,
    left: u64,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("over the size limit"));
        }
        let most = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..most])?;
        self.left -= read as u64;
        Ok(read)
    }
}

/// How HAR files are read.
#[derive(Debug, Clone, Copy)]
pub struct HarOptions {
    /// The largest file read (after decompression).
    pub max_bytes: u64,
    /// The client of an entry without `X-Forwarded-For`.
    pub default_client: std::net::IpAddr,
}

/// The client of a request whose input names none (a HAR entry without `X-Forwarded-For`, a
/// `vigil try` step whose client is a key): a public address of the documentation range.
pub const DEFAULT_CLIENT: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

/// The default of `--max-har-bytes`: 1 GiB.
pub const DEFAULT_MAX_HAR_BYTES: u64 = 1 << 30;

impl Default for HarOptions {
    fn default() -> HarOptions {
        HarOptions {
            max_bytes: DEFAULT_MAX_HAR_BYTES,
            default_client: DEFAULT_CLIENT,
        }
    }
}

fn progress_bar(name: &str, size: Option<u64>) -> ProgressBar {
    let bar = match size {
        Some(size) => ProgressBar::new(size).with_style(
            ProgressStyle::with_template(
                "{prefix} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{prefix} {spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.with_prefix(name.to_string())
}

/// A sidecar built from a configuration, minus what reaches outside: no access log, no
/// reports, no shared state in Redis, and a clock that follows the log.
pub struct Replay {
    sidecar: Sidecar,
    clock: Arc<ManualClock>,
    format: Option<InputFormat>,
    summary: Summary,
    first_seen: HashSet<String>,
    har: HarOptions,
}

impl Replay {
    /// Loads the configuration's chain, identity, routes and spec.
    pub fn new(mut config: Config, format: Option<InputFormat>) -> anyhow::Result<Replay> {
        config.access_log = None;
        config.report = None;
        config.listen.tls = None;
        // The fleet's Redis keeps live state on its own clock; a replay keeps its own.
        config.fleet = None;
        let clock = ManualClock::new(Duration::ZERO);
        let sidecar = Sidecar::with_clock(config, Default::default(), clock.clone())?;
        Ok(Replay {
            sidecar,
            clock,
            format,
            summary: Summary::default(),
            first_seen: HashSet::new(),
            har: HarOptions::default(),
        })
    }

    /// Bounds and defaults for HAR files.
    pub fn with_har(mut self, har: HarOptions) -> Replay {
        self.har = har;
        self
    }

    /// Replays every line of `input` (every entry of a HAR file). Lines are read and parsed
    /// on a thread of their own, a few batches ahead of the chain, so that the guards have a
    /// core to themselves and memory stays the same whatever the file's length.
    pub fn feed(&mut self, input: Input) -> anyhow::Result<()> {
        let har = match self.format {
            Some(format) => format == InputFormat::Har,
            None => input.name.ends_with(".har"),
        };
        if har {
            return self.feed_har(input);
        }
        let name = input.name.clone();
        let format = self.format;
        let (batches, parsed) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || read_lines(input, format, batches));
            for batch in parsed {
                for line in batch {
                    self.take(line.parsed, &name, line.number, &line.text);
                }
            }
            reader.join().expect("the log reader thread does not panic")
        })
    }

    /// A HAR file: its entries, numbered from 1 where lines are.
    fn feed_har(&mut self, mut input: Input) -> anyhow::Result<()> {
        let limit = self.har.max_bytes;
        let mut bounded = Bounded {
            inner: &mut input.reader,
            // One byte over the limit tells a file over it from one of exactly its size.
            left: limit.saturating_add(1),
        };
        let default_client = self.har.default_client;
        let mut number = 0u64;
        let read = har::entries(&mut bounded, default_client, |entry| {
            number += 1;
            let text = match &entry {
                Ok(request) => format!("{} {} {}", request.method, request.target, request.status),
                Err(_) => String::new(),
            };
            self.take(entry, &input.name, number, &text);
        });
        let over = bounded.left == 0;
        input.finish();
        match read {
            Err(_) if over => anyhow::bail!(
                "{}: the HAR file is over {limit} bytes (--max-har-bytes); raise the limit or \
                 split the file",
                input.name
            ),
            Err(error) => anyhow::bail!("{}: {error}", input.name),
            Ok(()) => Ok(()),
        }
    }

    /// Replays what line (or entry) `number` of `file` says, or counts why it cannot be.
    fn take(
        &mut self,
        parsed: Result<LoggedRequest, Unreadable>,
        file: &str,
        number: u64,
        text: &str,
    ) {
        self.summary.lines += 1;
        match parsed {
            Ok(request) => self.replay(&request, file, number, text),
            Err(Unreadable::NotARequest) => self.summary.not_requests += 1,
            Err(Unreadable::Malformed(error)) => {
                self.summary.unreadable += 1;
                if self.summary.unreadable_first.len() < SHOWN_UNREADABLE {
                    self.summary.unreadable_first.push(UnreadableLine {
                        file: file.to_string(),
                        line: number,
                        error,
                    });
                }
            }
        }
    }

    /// The summary, with the inventory and the findings as of the last line.
    pub fn finish(mut self, started: Instant) -> Summary {
        self.summary.findings = self.take_findings();
        self.summary.exposure = Some(self.sidecar.inventory.exposure());
        for tally in self.summary.guards.values_mut() {
            tally.clients = tally.seen.estimate();
        }
        self.summary.seconds = started.elapsed().as_secs_f64();
        self.summary
    }

    /// The findings of the sidecar and the guards since the last call (or the start).
    pub fn take_findings(&self) -> Vec<vigil_report::Finding> {
        let sidecar = &self.sidecar;
        sidecar
            .inventory
            .add_guard_findings(sidecar.runtime.drain_findings());
        sidecar
            .inventory
            .take(sidecar.now_ms())
            .into_iter()
            .flat_map(|delta| delta.findings)
            .collect()
    }

    /// The virtual clock, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.sidecar.now_ms()
    }

    /// Runs one request the way a live one goes up to the upstream, on the clock set to its
    /// time, with `logged.status` as the upstream's answer; what became of it.
    pub fn step(&mut self, logged: &LoggedRequest) -> Stepped {
        // Time moves forward only: a line logged out of order happens "now".
        let now = self.clock.now();
        if logged.at > now {
            self.clock.advance(logged.at - now);
        }
        let sidecar = &self.sidecar;
        let (path, query) = match logged.target.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (logged.target.as_str(), None),
        };
        // An absolute-form target is for its path, as it is live.
        let path = path
            .split_once("://")
            .map_or(path, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
        let headers = logged_headers(logged);
        let client = sidecar.clients.resolve(logged.ip, &headers);
        let key = logged.client.clone().unwrap_or(client.key.clone());
        let path = match normalize::path(path, &sidecar.path) {
            Ok(path) => path,
            Err(error) => {
                return Stepped::refused_by_proxy(key, ProxyError::BadRequest(error.to_string()))
            }
        };
        if logged.method == "CONNECT" {
            return Stepped::refused_by_proxy(key, ProxyError::NotAProxy);
        }
        let max_body = sidecar.listen.max_body_bytes;
        if logged
            .body
            .as_ref()
            .is_some_and(|b| b.len() as u64 > max_body)
        {
            return Stepped::refused_by_proxy(key, ProxyError::BodyTooLarge(max_body));
        }
        let route = sidecar.routes.resolve(&logged.method, &path);
        let allowlisted = sidecar.allowlisted(client.ip, &key);
        if !allowlisted {
            if let Some(ban) = sidecar.runtime.state().ban_of(&key) {
                return Stepped {
                    client: key,
                    route: Some(route.template.to_string()),
                    fate: Fate::Banned {
                        by: ban.by.to_string(),
                        reason: ban.reason.clone(),
                    },
                };
            }
        }
        let chain = sidecar.chain();
        let plan = if allowlisted {
            vigil_host::Plan::empty()
        } else {
            chain.plan(&logged.method, &route.template)
        };
        let body_limit = plan.body_limit();
        let mut request = vigil_host::Request {
            method: logged.method.clone(),
            path: path.to_string(),
            route: Some(route.template.to_string()),
            query,
            headers: if plan.reads_request_headers() {
                crate::pipeline::guard_headers(&headers, |name| plan.reads_request_header(name))
            } else {
                Vec::new()
            },
            client: vigil_host::Client {
                key: key.clone(),
                ip: client.ip.to_string(),
                public: client.public,
                authenticated: client.authenticated,
            },
            received_ms: sidecar.now_ms(),
            // Guards that read bodies get the prefix they asked for, as they do live.
            body: logged
                .body
                .as_ref()
                .filter(|_| body_limit > 0)
                .map(|body| body[..body.len().min(body_limit)].to_vec()),
        };
        let decision = chain.evaluate(&plan, &mut request);
        let status = match &decision.denial {
            Some(denial) => {
                if let Some(length) = denial.ban {
                    sidecar.ban(&key, denial.guard.clone(), denial.reason.clone(), length);
                }
                denial.status
            }
            None => logged.status,
        };
        let response = vigil_host::Response {
            status,
            headers: Vec::new(),
            latency_us: 0,
        };
        chain.observe(&mut request, &response, &decision);
        let would_deny: Vec<&str> = decision
            .outcomes
            .iter()
            .filter(|o| o.would_deny())
            .map(|o| &*o.guard)
            .collect();
        let denied_by = decision.denial.as_ref().map(|d| &*d.guard);
        let client = crate::identity::ResolvedClient { key, ..client };
        sidecar.inventory.record(&Observation {
            method: &logged.method,
            route: &route,
            client: &client,
            status,
            denied_by,
            would_deny: &would_deny,
            at_ms: sidecar.now_ms(),
        });
        Stepped {
            client: client.key,
            route: Some(route.template.to_string()),
            fate: Fate::Decided { decision, status },
        }
    }

    fn replay(&mut self, logged: &LoggedRequest, file: &str, number: u64, text: &str) {
        self.summary.requests += 1;
        let stepped = self.step(logged);
        let key = &stepped.client;
        let at = (file, number, text);
        match &stepped.fate {
            Fate::RefusedByProxy(_) => self.summary.refused_by_proxy += 1,
            Fate::Banned { by, .. } => {
                let by = format!("ban:{by}");
                note_refusal(
                    &mut self.summary,
                    &mut self.first_seen,
                    &by,
                    key,
                    BANNED_STATUS,
                    at,
                );
            }
            Fate::Decided { decision, status } => {
                for outcome in decision.outcomes.iter().filter(|o| o.would_deny()) {
                    self.summary.would_refuse += 1;
                    let tally = self
                        .summary
                        .guards
                        .entry(outcome.guard.to_string())
                        .or_default();
                    tally.would_refuse += 1;
                    tally.saw(key);
                }
                if let Some(denial) = &decision.denial {
                    let guard = denial.guard.to_string();
                    note_refusal(
                        &mut self.summary,
                        &mut self.first_seen,
                        &guard,
                        key,
                        *status,
                        at,
                    );
                }
            }
        }
    }
}

/// The status a banned client gets (`respond::banned`).
pub const BANNED_STATUS: u16 = 403;

/// One request run by [`Replay::step`].
#[derive(Debug)]
pub struct Stepped {
    /// The client key it was resolved to.
    pub client: String,
    /// The route template, unless the proxy refused the path.
    pub route: Option<String>,
    /// What became of it.
    pub fate: Fate,
}

impl Stepped {
    fn refused_by_proxy(client: String, error: ProxyError) -> Stepped {
        Stepped {
            client,
            route: None,
            fate: Fate::RefusedByProxy(error),
        }
    }
}

/// What became of one request.
#[derive(Debug)]
pub enum Fate {
    /// Vigil itself refused it before any guard: a path it does not accept, `CONNECT`, a body
    /// over `listen.max_body_bytes`.
    RefusedByProxy(ProxyError),
    /// Refused with [`BANNED_STATUS`] by an earlier ban.
    Banned {
        /// The guard whose denial banned the client.
        by: String,
        /// The reason of that denial.
        reason: String,
    },
    /// The guards' decision, and the status they observed (the upstream's, or the denial's).
    Decided {
        /// What the chain decided.
        decision: vigil_host::Decision,
        /// The answer the guards observed.
        status: u16,
    },
}

/// Counts a refusal of `client` by `guard`, and keeps the first of each client's.
fn note_refusal(
    summary: &mut Summary,
    first_seen: &mut HashSet<String>,
    guard: &str,
    client: &str,
    status: u16,
    (file, number, text): (&str, u64, &str),
) {
    summary.refused += 1;
    let tally = summary.guards.entry(guard.to_string()).or_default();
    tally.refused += 1;
    tally.saw(client);
    if first_seen.len() < SHOWN_CLIENTS && first_seen.insert(client.to_string()) {
        let text = text.trim_end();
        let end = text.floor_char_boundary(QUOTED_LINE_BYTES);
        summary.first_refusals.push(FirstRefusal {
            client: client.to_string(),
            guard: guard.to_string(),
            status,
            file: file.to_string(),
            line: number,
            text: text[..end].to_string(),
        });
    }
}

/// The header fields a log line carries, as the request had them.
fn logged_headers(logged: &LoggedRequest) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let fields = [
        (http::header::USER_AGENT, &logged.user_agent),
        (http::header::REFERER, &logged.referer),
        (
            http::HeaderName::from_static("x-forwarded-for"),
            &logged.forwarded_for,
        ),
    ];
    for (name, value) in fields {
        if let Some(value) = value
            .as_deref()
            .and_then(|v| http::HeaderValue::from_str(v).ok())
        {
            headers.insert(name, value);
        }
    }
    for (name, value) in &logged.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// Lines a batch from the reader thread holds.
const LINES_PER_BATCH: usize = 512;

/// Batches parsed ahead of the chain: what bounds the lines in memory.
const BATCHES_AHEAD: usize = 8;

/// One non-blank line as read and parsed, with its number in the file.
struct ParsedLine {
    number: u64,
    text: String,
    parsed: Result<LoggedRequest, Unreadable>,
}

/// Reads and parses the lines of `input` in batches until the end, a read error (after the
/// lines before it are sent), or the chain's end hanging up.
fn read_lines(
    mut input: Input,
    format: Option<InputFormat>,
    batches: std::sync::mpsc::SyncSender<Vec<ParsedLine>>,
) -> anyhow::Result<()> {
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut batch = Vec::with_capacity(LINES_PER_BATCH);
    loop {
        line.clear();
        let read = match input.reader.read_until(b'\n', &mut line) {
            Ok(read) => read,
            Err(e) => {
                let _ = batches.send(batch);
                anyhow::bail!("{}: cannot read line {}: {e}", input.name, number + 1);
            }
        };
        if read == 0 {
            let _ = batches.send(batch);
            input.finish();
            return Ok(());
        }
        number += 1;
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let parsed = parse::line(&text, format);
        batch.push(ParsedLine {
            number,
            text: text.into_owned(),
            parsed,
        });
        if batch.len() == LINES_PER_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(LINES_PER_BATCH));
            if batches.send(full).is_err() {
                return Ok(());
            }
        }
    }
}

/// The summary as text, for a terminal.
pub fn render(summary: &Summary, files: &[PathBuf]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let rate = summary.lines as f64 / summary.seconds.max(1e-9);
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let _ = writeln!(
        out,
        "replayed {} requests from {} lines of {} in {:.2} s ({:.0} lines/s)",
        summary.requests,
        summary.lines,
        files.join(", "),
        summary.seconds,
        rate
    );
    if summary.not_requests > 0 {
        let _ = writeln!(
            out,
            "{} lines are requests the server could not read (\"-\"); not replayed",
            summary.not_requests
        );
    }
    if summary.unreadable > 0 {
        let _ = writeln!(out, "{} lines could not be read:", summary.unreadable);
        for bad in &summary.unreadable_first {
            let _ = writeln!(out, "  {}:{}: {}", bad.file, bad.line, bad.error);
        }
    }
    if summary.refused_by_proxy > 0 {
        let _ = writeln!(
            out,
            "{} requests Vigil itself would refuse (a path it does not accept, CONNECT)",
            summary.refused_by_proxy
        );
    }
    let _ = writeln!(
        out,
        "\n{} requests would be refused, {} more by monitor-mode guards",
        summary.refused, summary.would_refuse
    );
    if !summary.guards.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<28} {:>10} {:>14} {:>8}",
            "guard", "refused", "would (monitor)", "clients"
        );
        for (guard, tally) in &summary.guards {
            let _ = writeln!(
                out,
                "{guard:<28} {:>10} {:>14} {:>8}",
                tally.refused, tally.would_refuse, tally.clients
            );
        }
    }
    if !summary.first_refusals.is_empty() {
        let _ = writeln!(out, "\nfirst refusal of each client:");
        for first in &summary.first_refusals {
            let _ = writeln!(
                out,
                "  {} by {} ({}), {}:{}: {}",
                first.client, first.guard, first.status, first.file, first.line, first.text
            );
        }
    }
    if let Some(exposure) = &summary.exposure {
        let _ = writeln!(out, "\nendpoints reached: {}", exposure.endpoints.len());
        for endpoint in exposure.endpoints.iter().take(20) {
            let _ = writeln!(
                out,
                "  {:<7} {:<40} {:>8} requests",
                endpoint.total.method, endpoint.total.route, endpoint.total.requests
            );
        }
    }
    if !summary.findings.is_empty() {
        let _ = writeln!(out, "\nfindings:");
        for finding in summary.findings.iter().take(50) {
            let _ = writeln!(
                out,
                "  {} ({}, {}×): {}",
                finding.kind, finding.source, finding.count, finding.detail
            );
        }
    }
    out
}
