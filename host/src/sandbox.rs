//! What one guard instance lives in: its store data (WASI context without capabilities,
//! resource limits, output capture, the current call) and the `state` imports it may call.

use crate::bindings::vigil::guard::{state, types};
use crate::findings::FindingSink;
use crate::log_context;
use crate::output::OutputCapture;
use crate::state::{GuardScope, StateStore};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_guest::route::Pattern;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Per-guard sandbox limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Wall time a single call may take before it is interrupted.
    pub deadline: Duration,
    /// Linear memory the guard may use, in bytes.
    pub memory_bytes: usize,
    /// Elements across the guard's tables.
    pub table_elements: usize,
    /// Bytes of stdout, stderr and log output kept per call; the rest is counted and dropped.
    pub output_bytes_per_call: usize,
    /// Log lines and findings longer than this are truncated.
    pub max_message_bytes: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            deadline: Duration::from_millis(10),
            memory_bytes: 32 << 20,
            table_elements: 20_000,
            output_bytes_per_call: 16 * 1024,
            max_message_bytes: 1024,
        }
    }
}

/// Enforces the memory and table caps, and remembers which one was hit so the fault can say so.
pub(crate) struct SandboxLimiter {
    memory_bytes: usize,
    table_elements: usize,
    pub(crate) hit: Option<String>,
}

impl SandboxLimiter {
    /// Refuses growth past `cap`, remembering the refusal so the fault names the cap.
    fn check(
        &mut self,
        what: &str,
        unit: &str,
        cap: usize,
        current: usize,
        desired: usize,
    ) -> wasmtime::Result<bool> {
        if desired <= cap {
            return Ok(true);
        }
        let message =
            format!("{what} limit of {cap} {unit} reached (had {current}, asked for {desired})");
        self.hit = Some(message.clone());
        Err(wasmtime::Error::msg(message))
    }
}

impl ResourceLimiter for SandboxLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.check("memory", "bytes", self.memory_bytes, current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.check("table", "elements", self.table_elements, current, desired)
    }
}

/// What the host knows of the guard a store belongs to.
pub(crate) struct GuardIdentity {
    pub(crate) name: Arc<str>,
    pub(crate) scope: GuardScope,
    pub(crate) limits: SandboxLimits,
}

/// Host services shared by all guards of a runtime.
pub(crate) struct HostServices {
    pub(crate) state: StateStore,
    pub(crate) findings: FindingSink,
}

/// The data of one guard instance's store.
pub(crate) struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: SandboxLimiter,
    pub(crate) output: OutputCapture,
    guard: Arc<GuardIdentity>,
    services: Arc<HostServices>,
    /// The client of the request being evaluated; set before each call.
    client_key: String,
    /// When the current call must end (`None`: never); the epoch callback checks it.
    call_ends: Option<Instant>,
    /// The panic message the guard reported during this call, if any.
    pub(crate) panic: Option<String>,
    /// The patterns of the last `happened` call, parsed: a guard asks about the same ones on
    /// every request, so they are parsed once per instance.
    happened_patterns: Vec<Pattern>,
    /// Whether the current call is `init`, the only one that may call `reads-headers`.
    initializing: bool,
    /// The header names the guard's `init` passed to `reads-headers`, lower-cased.
    pub(crate) declared_headers: Option<Vec<String>>,
}

impl GuestState {
    pub(crate) fn new(guard: Arc<GuardIdentity>, services: Arc<HostServices>) -> GuestState {
        let output = OutputCapture::default();
        // No preopened directories, no environment, no arguments, no network: a guard can
        // read clocks and randomness and print, nothing else.
        let wasi = WasiCtxBuilder::new()
            .stdout(output.stdout())
            .stderr(output.stderr())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter: SandboxLimiter {
                memory_bytes: guard.limits.memory_bytes,
                table_elements: guard.limits.table_elements,
                hit: None,
            },
            output,
            guard,
            services,
            client_key: String::new(),
            call_ends: None,
            panic: None,
            happened_patterns: Vec::new(),
            initializing: false,
            declared_headers: None,
        }
    }

    /// Prepares for the instance's `init`, which must end by `ends`.
    pub(crate) fn begin_init(&mut self, ends: Option<Instant>) {
        self.begin_call("", ends);
        self.initializing = true;
    }

    /// Prepares for a call made on behalf of `client_key` that must end by `ends`.
    pub(crate) fn begin_call(&mut self, client_key: &str, ends: Option<Instant>) {
        self.client_key.clear();
        self.client_key.push_str(client_key);
        self.call_ends = ends;
        self.initializing = false;
        self.panic = None;
        self.output.begin(self.guard.limits.output_bytes_per_call);
    }

    /// Whether the current call is past its end: the watchdog advanced the epoch because some
    /// call is, and each store checks whether it is its own.
    pub(crate) fn overdue(&self) -> bool {
        self.call_ends.is_some_and(|ends| Instant::now() >= ends)
    }

    fn truncated<'a>(&self, text: &'a str) -> &'a str {
        let max = self.guard.limits.max_message_bytes;
        if text.len() <= max {
            return text;
        }
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..end]
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Patterns one `happened` call may ask about: each is matched against every event in the
/// client's history.
const MAX_HAPPENED_PATTERNS: usize = 64;
/// Longest pattern `happened` accepts.
const MAX_HAPPENED_PATTERN_BYTES: usize = 1024;
/// Header names one `reads-headers` call may give.
const MAX_READ_HEADERS: usize = 64;
/// Longest header name `reads-headers` accepts.
const MAX_READ_HEADER_BYTES: usize = 256;

impl types::Host for GuestState {}

impl state::Host for GuestState {
    fn history(&mut self, limit: u32) -> wasmtime::Result<Vec<types::Event>> {
        Ok(self.services.state.history(&self.client_key, limit)?)
    }

    fn happened(
        &mut self,
        patterns: Vec<String>,
        within_ms: u64,
        successful_only: bool,
    ) -> wasmtime::Result<bool> {
        if patterns.len() > MAX_HAPPENED_PATTERNS {
            return Err(wasmtime::Error::msg(format!(
                "happened: {} patterns; at most {MAX_HAPPENED_PATTERNS} are allowed",
                patterns.len()
            )));
        }
        let known = patterns
            .iter()
            .map(String::as_str)
            .eq(self.happened_patterns.iter().map(Pattern::as_str));
        if !known {
            self.happened_patterns.clear();
            for pattern in &patterns {
                if pattern.len() > MAX_HAPPENED_PATTERN_BYTES {
                    return Err(wasmtime::Error::msg(format!(
                        "happened: a pattern of {} bytes; at most {MAX_HAPPENED_PATTERN_BYTES} are allowed",
                        pattern.len()
                    )));
                }
                self.happened_patterns.push(
                    Pattern::parse(pattern)
                        .map_err(|e| wasmtime::Error::msg(format!("happened: {e}")))?,
                );
            }
        }
        Ok(self.services.state.happened(
            &self.client_key,
            &self.happened_patterns,
            within_ms,
            successful_only,
        )?)
    }

    fn rate(
        &mut self,
        key: String,
        per_second: f64,
        burst: u32,
    ) -> wasmtime::Result<Result<(), u32>> {
        let scope = self.guard.scope;
        Ok(self.services.state.rate(scope, &key, per_second, burst)?)
    }

    fn count(&mut self, key: String, delta: i64, window_ms: u64) -> wasmtime::Result<i64> {
        Ok(self
            .services
            .state
            .count(self.guard.scope, &key, delta, window_ms)?)
    }

    fn distinct(&mut self, key: String, member: String, window_ms: u64) -> wasmtime::Result<u32> {
        Ok(self
            .services
            .state
            .distinct(self.guard.scope, &key, &member, window_ms)?)
    }

    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.services.state.get(self.guard.scope, &key)?)
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> wasmtime::Result<()> {
        Ok(self
            .services
            .state
            .set(self.guard.scope, &key, &value, ttl_ms)?)
    }

    fn log(&mut self, level: types::Level, message: String) {
        let granted = self.output.take(message.len());
        if granted == 0 {
            return;
        }
        let text = self.truncated(&message[..floor_char_boundary(&message, granted)]);
        let guard = &*self.guard.name;
        log_context::with(|request_id, client, route| match level {
            types::Level::Trace => {
                tracing::trace!(target: "vigil::guard", guard, request_id, client, route, "{text}")
            }
            types::Level::Debug => {
                tracing::debug!(target: "vigil::guard", guard, request_id, client, route, "{text}")
            }
            types::Level::Info => {
                tracing::info!(target: "vigil::guard", guard, request_id, client, route, "{text}")
            }
            types::Level::Warn => {
                tracing::warn!(target: "vigil::guard", guard, request_id, client, route, "{text}")
            }
            types::Level::Error => {
                tracing::error!(target: "vigil::guard", guard, request_id, client, route, "{text}")
            }
        });
        if matches!(level, types::Level::Error) && text.starts_with("panic") {
            self.panic = Some(text.to_string());
        }
    }

    fn reads_headers(&mut self, mut names: Vec<String>) -> wasmtime::Result<()> {
        if !self.initializing {
            return Err(wasmtime::Error::msg(
                "reads-headers: called outside init; a guard says which headers it reads from init",
            ));
        }
        if names.len() > MAX_READ_HEADERS {
            return Err(wasmtime::Error::msg(format!(
                "reads-headers: {} names; at most {MAX_READ_HEADERS} are allowed",
                names.len()
            )));
        }
        if let Some(long) = names.iter().find(|n| n.len() > MAX_READ_HEADER_BYTES) {
            return Err(wasmtime::Error::msg(format!(
                "reads-headers: a name of {} bytes; at most {MAX_READ_HEADER_BYTES} are allowed",
                long.len()
            )));
        }
        names.iter_mut().for_each(|n| n.make_ascii_lowercase());
        names.sort_unstable();
        names.dedup();
        self.declared_headers = Some(names);
        Ok(())
    }

    fn finding(&mut self, kind: String, detail: String) {
        let kind = self.truncated(&kind).to_string();
        let detail = self.truncated(&detail).to_string();
        self.services.findings.push(
            &self.guard.name,
            kind,
            detail,
            &self.client_key,
            self.services.state.clock().now_ms(),
        );
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}
