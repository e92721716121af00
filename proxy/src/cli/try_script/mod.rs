//! `vigil try`: requests written by hand (a script, or one request repeated) through one guard
//! or a whole configuration, on a virtual clock, each verdict and finding printed and, when the
//! script says what to expect, checked.
//!
//! The requests go the way `vigil replay` sends logged ones ([`Replay::step`]): the same
//! normalisation, identity, routes, bans and guard calls as live traffic, up to the upstream,
//! whose answer is the step's `status`.

pub mod script;

use crate::cli::replay::parse::LoggedRequest;
use crate::cli::replay::{Fate, Replay, BANNED_STATUS};
use crate::config::{Config, Overrides};
use script::{Defaults, Expectation, Step};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_host::GuardResult;
use vigil_report::FindingKind;

/// The guard named by `vigil try` when it runs one guard.
pub const GUARD_NAME: &str = "guard";
/// Where the guards think the upstream is when `vigil try` runs one guard; never contacted.
const NO_UPSTREAM: &str = "http://127.0.0.1:9";

/// The long help of `vigil try`.
pub const ABOUT: &str = "Send requests through one guard or a whole configuration and print \
each verdict and finding.

Without --script, --count identical requests (--method, --path, --client, --status) go \
through the guard MODULE. With --script FILE, each step of the script is a request: method, \
path, headers, body, client, when it arrives (at) and the status the upstream answers; what \
a step leaves out comes from those flags. The requests run on a virtual clock (\"at\": \
\"+2s\" takes no time) through MODULE, or through the guards, identity, routes and API spec \
of --config vigil.toml when no MODULE is given, as vigil replay runs logged traffic.

A step may say what it must come to (expect: allow, deny [STATUS] [by GUARD], would-deny \
[by GUARD], finding: KIND, or a list of them); then vigil try is a test: each mismatch is \
printed with the step's line, and the exit status is 1 when there is one.

Scripts are YAML (a list of steps, each starting with \"- \" at the start of a line) or \
JSON lines (one object a line), by the file's extension or its first character:

  - {method: POST, path: /login, body: '{\"user\": \"a\"}', status: 401}
  - {at: +1s, method: POST, path: /login, status: 401, expect: deny 429}
  - {at: +1m, method: POST, path: /login, headers: {x-api-key: k1}, expect: allow}

Exit status: 0; 1 when a step did not come to what it expects; 64 when the script, the \
guard or the configuration cannot be read (naming file and line).

  vigil try builtin:rate-limit --config '{\"rate\": 3, \"per\": \"minute\"}' --count 5
  vigil try builtin:rate-limit --config '{\"rate\": 3, \"per\": \"minute\"}' --script login.yaml
  vigil try --config vigil.toml --script attacks.yaml --json";

/// The arguments of `vigil try`.
#[derive(clap::Args, Debug)]
pub struct TryArgs {
    /// The guard component (.wasm, built for wasm32-wasip2) or `builtin:NAME`; leave it out to
    /// run the whole configuration of --config.
    pub module: Option<PathBuf>,
    /// With MODULE: the guard's JSON configuration [default: {}]. Without: the configuration
    /// file (vigil.toml) whose guards, identity, routes and API spec the requests go through.
    #[arg(long)]
    pub config: Option<String>,
    /// With MODULE: the guard's name (its state namespace).
    #[arg(long, default_value = GUARD_NAME)]
    pub name: String,
    /// With MODULE: route patterns the guard applies to, e.g. `POST /login` (repeatable;
    /// default: all).
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// With MODULE: bytes of the request body the guard receives (its `body_limit`).
    #[arg(long, default_value_t = 0)]
    pub body_limit: usize,
    /// The requests to send (YAML or JSON lines); without it, --count identical ones.
    #[arg(long, short)]
    pub script: Option<PathBuf>,
    /// Request method (of each step that names none).
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request path, with its query (of each step that names none).
    #[arg(long, default_value = "/")]
    pub path: String,
    /// The client: an address, or else a client key (of each step that names none).
    #[arg(long, default_value = "203.0.113.7")]
    pub client: String,
    /// Response status the upstream gives (to each step that names none).
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// How many requests to send without --script.
    #[arg(long, default_value_t = 5)]
    pub count: u32,
    /// Print the steps and mismatches as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `vigil try` did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The script, when there was one.
    pub script: Option<String>,
    /// Every step, in order.
    pub steps: Vec<StepReport>,
    /// Expectations checked.
    pub expectations: usize,
    /// The steps that did not come to what they expect.
    pub mismatches: Vec<Mismatch>,
}

/// One step's outcome.
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// The script's line, from 1 (0 without a script).
    pub line: usize,
    /// Since the first step, in ms.
    pub at_ms: u64,
    /// Request method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The client key it was resolved to.
    pub client: String,
    /// The route template, unless the proxy refused the path.
    pub route: Option<String>,
    /// `allow` or `deny`.
    pub verdict: &'static str,
    /// The status the client got: the upstream's, or the refusal's.
    pub status: u16,
    /// Who refused: a guard, `ban:<guard>`, or `vigil` for the proxy itself.
    pub denied_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// `Retry-After` of a refusal, in seconds.
    pub retry_after_secs: Option<u32>,
    /// What monitor-mode guards would have refused, and why.
    pub would_deny: Vec<WouldDeny>,
    /// Guard calls that failed (their `on_error` policy applied).
    pub faults: Vec<String>,
    /// Findings reported at this step, but for `client-denied` and `client-would-deny`,
    /// which restate the verdict.
    pub findings: Vec<StepFinding>,
}

/// A monitor-mode guard's denial.
#[derive(Debug, Serialize)]
pub struct WouldDeny {
    /// The guard.
    pub guard: String,
    /// The status it would have answered with.
    pub status: u16,
    /// Why.
    pub reason: String,
}

/// A finding reported at one step.
#[derive(Debug, Serialize)]
pub struct StepFinding {
    /// Its kind, e.g. `enumeration`.
    pub kind: String,
    /// `sidecar`, or `guard:<name>`.
    pub source: String,
    /// What it says.
    pub detail: String,
}

/// A step that did not come to what it expects.
#[derive(Debug, Serialize)]
pub struct Mismatch {
    /// The script's line.
    pub line: usize,
    /// What the step expects.
    pub expected: String,
    /// What happened.
    pub got: String,
}

/// Runs `vigil try`; whether every expectation was met.
pub fn run(args: &TryArgs) -> anyhow::Result<bool> {
    let defaults = Defaults {
        method: args.method.clone(),
        path: args.path.clone(),
        client: args.client.clone(),
        status: args.status,
    };
    let steps = match &args.script {
        Some(path) => script::read(path, &defaults)?,
        None => defaults.repeated(args.count).map_err(anyhow::Error::msg)?,
    };
    let config = match (&args.module, &args.config) {
        (Some(module), json) => one_guard(args, module, json.as_deref().unwrap_or("{}"))?,
        (None, Some(file)) => Config::load(Path::new(file), &Overrides::default())?,
        (None, None) => anyhow::bail!(
            "nothing to try: name a guard (vigil try builtin:rate-limit ...) or a configuration \
             (vigil try --config vigil.toml ...)"
        ),
    };
    let report = try_steps(config, &steps, args.script.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(report.mismatches.is_empty())
}

/// A configuration of one guard, `module`, on every other setting's default.
fn one_guard(args: &TryArgs, module: &Path, config_json: &str) -> anyhow::Result<Config> {
    let mut spec = super::guard_spec(module, &args.name, config_json, &args.routes)?;
    spec.body_limit = vigil_common::config::in_range(
        "--body-limit",
        args.body_limit,
        0,
        crate::config::MAX_BODY_LIMIT,
    )
    .map_err(anyhow::Error::msg)?;
    let overrides = Overrides {
        upstream: Some(NO_UPSTREAM.into()),
        ..Overrides::default()
    };
    let mut config = Config::without_file(&overrides)?;
    config.guards = vec![spec];
    Ok(config)
}

/// Runs `steps` through `config`'s chain on a clock that starts now.
pub fn try_steps(config: Config, steps: &[Step], script: Option<&Path>) -> anyhow::Result<Report> {
    let mut replay = Replay::new(config, None)?;
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut report = Report {
        script: script.map(|p| p.display().to_string()),
        steps: Vec::with_capacity(steps.len()),
        expectations: 0,
        mismatches: Vec::new(),
    };
    for step in steps {
        let logged = LoggedRequest {
            at: start + step.at,
            ip: step.ip,
            method: step.method.clone(),
            target: step.target.clone(),
            status: step.status,
            user_agent: None,
            referer: None,
            forwarded_for: None,
            client: step.key.clone(),
            headers: step.headers.clone(),
            body: step.body.clone(),
        };
        let stepped = replay.step(&logged);
        let mut outcome = StepReport {
            line: step.line,
            at_ms: step.at.as_millis() as u64,
            method: step.method.clone(),
            target: step.target.clone(),
            client: stepped.client,
            route: stepped.route,
            verdict: "allow",
            status: step.status,
            denied_by: None,
            reason: None,
            retry_after_secs: None,
            would_deny: Vec::new(),
            faults: Vec::new(),
            findings: replay
                .take_findings()
                .into_iter()
                .filter(|f| !restates_verdict(&f.kind))
                .map(|f| StepFinding {
                    kind: f.kind,
                    source: f.source,
                    detail: f.detail,
                })
                .collect(),
        };
        match stepped.fate {
            Fate::RefusedByProxy(error) => {
                outcome.refused("vigil", error.status().as_u16(), error.detail())
            }
            Fate::Banned { by, reason } => {
                outcome.refused(&format!("ban:{by}"), BANNED_STATUS, reason)
            }
            Fate::Decided { decision, status } => {
                outcome.status = status;
                if let Some(denial) = &decision.denial {
                    outcome.refused(&denial.guard, denial.status, denial.reason.clone());
                    outcome.retry_after_secs = denial.retry_after_secs;
                }
                for guard in &decision.outcomes {
                    match &guard.result {
                        GuardResult::Denied(deny) if guard.would_deny() => {
                            outcome.would_deny.push(WouldDeny {
                                guard: guard.guard.to_string(),
                                status: deny.status,
                                reason: deny.reason.clone(),
                            })
                        }
                        GuardResult::Faulted(fault) => outcome.faults.push(format!(
                            "{} ({}): {}",
                            guard.guard,
                            fault.kind.as_str(),
                            fault.detail
                        )),
                        _ => {}
                    }
                }
            }
        }
        for expected in &step.expect {
            report.expectations += 1;
            if let Some(got) = outcome.mismatch(expected) {
                report.mismatches.push(Mismatch {
                    line: step.line,
                    expected: expected.to_string(),
                    got,
                });
            }
        }
        report.steps.push(outcome);
    }
    Ok(report)
}

impl StepReport {
    fn refused(&mut self, by: &str, status: u16, reason: String) {
        self.verdict = "deny";
        self.status = status;
        self.denied_by = Some(by.to_string());
        self.reason = Some(reason);
    }

    /// What happened, when it is not what `expected` says.
    fn mismatch(&self, expected: &Expectation) -> Option<String> {
        let met = match expected {
            Expectation::Allow => self.verdict == "allow",
            Expectation::Deny { status, by } => {
                self.verdict == "deny"
                    && status.is_none_or(|s| s == self.status)
                    && by
                        .as_deref()
                        .is_none_or(|b| self.denied_by.as_deref() == Some(b))
            }
            Expectation::WouldDeny { by } => match by {
                Some(by) => self.would_deny.iter().any(|w| w.guard == *by),
                None => !self.would_deny.is_empty(),
            },
            Expectation::Finding(kind) => self.findings.iter().any(|f| f.kind == *kind),
        };
        if met {
            return None;
        }
        Some(match expected {
            Expectation::Allow | Expectation::Deny { .. } => self.verdict_text(),
            Expectation::WouldDeny { .. } if self.would_deny.is_empty() => {
                "no monitor-mode guard would deny".into()
            }
            Expectation::WouldDeny { .. } => {
                let guards: Vec<&str> = self.would_deny.iter().map(|w| w.guard.as_str()).collect();
                format!("would-deny by {}", guards.join(", "))
            }
            Expectation::Finding(_) if self.findings.is_empty() => "no finding".into(),
            Expectation::Finding(_) => {
                let kinds: Vec<&str> = self.findings.iter().map(|f| f.kind.as_str()).collect();
                format!("findings: {}", kinds.join(", "))
            }
        })
    }

    /// `allow`, or `deny 429 by rate-limit (reason), retry after 10s`.
    fn verdict_text(&self) -> String {
        match &self.denied_by {
            None => "allow".into(),
            Some(by) => {
                let reason = self.reason.as_deref().unwrap_or_default();
                let retry = self
                    .retry_after_secs
                    .map(|s| format!(", retry after {s}s"))
                    .unwrap_or_default();
                format!("deny {} by {by} ({reason}){retry}", self.status)
            }
        }
    }
}

/// The report as text, for a terminal: a line a step, its findings and monitor-mode denials
/// under it, then the mismatches.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>3}  {:>9}  {:<7} {:<24} {:<15} verdict",
        "#", "at", "method", "path", "client"
    );
    for (i, step) in report.steps.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>3}  {:>9}  {:<7} {:<24} {:<15} {}",
            i + 1,
            offset(step.at_ms),
            step.method,
            step.target,
            step.client,
            step.verdict_text()
        );
        for would in &step.would_deny {
            let _ = writeln!(
                out,
                "     monitor: {} would deny {} ({})",
                would.guard, would.status, would.reason
            );
        }
        for fault in &step.faults {
            let _ = writeln!(out, "     fault: {fault}");
        }
        for finding in &step.findings {
            let _ = writeln!(
                out,
                "     finding {} ({}): {}",
                finding.kind, finding.source, finding.detail
            );
        }
    }
    let file = report.script.as_deref().unwrap_or("-");
    for mismatch in &report.mismatches {
        let _ = writeln!(
            out,
            "{file}:{}: expected {}, got {}",
            mismatch.line, mismatch.expected, mismatch.got
        );
    }
    if report.expectations > 0 {
        let _ = writeln!(
            out,
            "{} steps, {} expectations, {} not met",
            report.steps.len(),
            report.expectations,
            report.mismatches.len()
        );
    }
    out
}

/// Whether a finding of `kind` only restates a step's verdict (left out of its findings).
fn restates_verdict(kind: &str) -> bool {
    [FindingKind::ClientDenied, FindingKind::ClientWouldDeny]
        .iter()
        .any(|k| k.as_str() == kind)
}

/// `+0ms`, `+1.500s`.
fn offset(ms: u64) -> String {
    let at = Duration::from_millis(ms);
    if at < Duration::from_secs(1) {
        format!("+{ms}ms")
    } else {
        format!("+{:.3}s", at.as_secs_f64())
    }
}
