//! The runtime: one wasmtime engine tuned for many short calls (component model, pooling
//! allocator with copy-on-write images, epoch deadlines enforced by a watchdog thread, an on-disk
//! cache of compiled guards), the linker that offers guards the `state` interface and
//! capability-free WASI, and the shared state.

use crate::bindings;
use crate::clock::{SharedClock, SystemClock};
use crate::findings::{Finding, FindingSink};
use crate::nonblocking_io;
use crate::sandbox::{GuestState, HostServices, SandboxLimits};
use crate::state::{SharedState, StateLimits, StateStore};
use crate::watchdog::{Running, Watchdog};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};
use wasmtime_wasi::p2::DynPollable;

/// Settings of a [`Runtime`]. Every pool size derives from `max_instances`.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Guard instances alive at once across all guards (warm or in a call). Each reserves
    /// address space up front, so this is sized for the machine and checked at start.
    pub max_instances: u32,
    /// The largest memory cap any guard may be given, in bytes.
    pub max_guard_memory: usize,
    /// Limits given to guards that do not set their own.
    pub default_limits: SandboxLimits,
    /// Warm instances kept per guard between calls.
    pub warm_instances_per_guard: usize,
    /// Calls after which a warm instance is discarded and replaced by a fresh one, bounding
    /// whatever a guard accumulates in its own memory.
    pub recycle_after_calls: u64,
    /// How often idle state entries are swept.
    pub sweep_interval: Duration,
    /// Bounds of the state tables.
    pub state: StateLimits,
    /// Findings kept until drained.
    pub max_pending_findings: usize,
    /// The clock of the state tables.
    pub clock: SharedClock,
    /// Where compiled guards are kept across runs; `None` compiles every load afresh.
    pub compile_cache: Option<CompileCache>,
    /// The store replicas share (`[state] redis`); `None`: state is this process's alone.
    pub shared_state: Option<Arc<dyn SharedState>>,
}

/// An on-disk cache of compiled guards (wasmtime's own: entries are keyed by the module's
/// bytes, the wasmtime version and the engine's settings, so an incompatible entry is never
/// used). Compiling an interpreter-based guard (Python: an 18 MB component) takes seconds;
/// a cached load takes milliseconds. Failing to read or write the cache only costs a
/// recompilation. The directory must be writable by Vigil's user alone: its entries are
/// trusted as compiled code.
#[derive(Clone, Debug)]
pub struct CompileCache {
    /// The cache directory (absolute; created when missing).
    pub directory: PathBuf,
    /// Size above which the oldest entries are removed (checked in the background).
    pub max_bytes: u64,
}

impl CompileCache {
    /// `VIGIL_CACHE_DIR` when set (empty: no cache), else `$XDG_CACHE_HOME/vigil/guards`, else
    /// `$HOME/.cache/vigil/guards`; at most 1 GiB.
    pub fn from_env() -> Option<CompileCache> {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let directory = match std::env::var_os("VIGIL_CACHE_DIR") {
            Some(dir) if dir.is_empty() => return None,
            Some(dir) => PathBuf::from(dir),
            None => var("XDG_CACHE_HOME")
                .or_else(|| var("HOME").map(|home| home.join(".cache")))?
                .join("vigil/guards"),
        };
        Some(CompileCache {
            directory,
            max_bytes: 1 << 30,
        })
    }

    fn open(&self) -> wasmtime::Result<Cache> {
        let mut config = CacheConfig::new();
        config
            .with_directory(&self.directory)
            .with_files_total_size_soft_limit(self.max_bytes);
        Cache::new(config)
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        RuntimeConfig {
            max_instances: 256,
            max_guard_memory: 256 << 20,
            default_limits: SandboxLimits::default(),
            warm_instances_per_guard: cores * 2,
            recycle_after_calls: 10_000,
            sweep_interval: Duration::from_secs(10),
            state: StateLimits::default(),
            max_pending_findings: 10_000,
            clock: Arc::new(SystemClock),
            compile_cache: CompileCache::from_env(),
            shared_state: None,
        }
    }
}

/// The guard runtime: load guards with [`Runtime::load_guard`], combine them in a
/// [`Chain`](crate::Chain), evaluate requests.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<GuestState>,
    pub(crate) services: Arc<HostServices>,
    pub(crate) config: RuntimeConfig,
    compile_cache: Option<Cache>,
    /// Guard calls in progress and when each must end, for the watchdog.
    pub(crate) running: Arc<Running>,
    watchdog: Watchdog,
}

impl Runtime {
    /// Builds the engine and starts the deadline watchdog. Fails with a clear message when the
    /// instance pool cannot be reserved on this machine.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let mut engine_config = engine_config(&config);
        let compile_cache = config
            .compile_cache
            .as_ref()
            .and_then(|cache| match cache.open() {
                Ok(opened) => Some(opened),
                Err(e) => {
                    tracing::warn!(
                        directory = %cache.directory.display(),
                        "guards will be compiled on every load: cannot use the compile cache: {e}"
                    );
                    None
                }
            });
        engine_config.cache(compile_cache.clone());
        let engine = Engine::new(&engine_config).map_err(|e| {
            anyhow::anyhow!(
                "cannot reserve address space for a pool of {} guard instances with memories \
                 of up to {} MiB: {e}",
                config.max_instances,
                config.max_guard_memory >> 20
            )
        })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link WASI into the guard linker: {e}"))?;
        forbid_waiting(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot restrict the guard clocks: {e}"))?;
        // The sync WASI streams enter a tokio runtime to wait, which panics on the sidecar's
        // workers: guards get streams that never wait instead.
        nonblocking_io::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link non-blocking WASI streams: {e}"))?;
        bindings::Guard::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("cannot link the state interface: {e}"))?;
        let services = Arc::new(HostServices {
            state: match &config.shared_state {
                Some(shared) => StateStore::with_shared(
                    config.state.clone(),
                    config.clock.clone(),
                    shared.clone(),
                ),
                None => StateStore::new(config.state.clone(), config.clock.clone()),
            },
            findings: FindingSink::new(config.max_pending_findings),
        });
        let running = Arc::new(Running::new());
        let watchdog = Watchdog::start(
            &engine,
            Arc::downgrade(&services),
            running.clone(),
            config.sweep_interval,
        )?;
        Ok(Runtime {
            engine,
            linker,
            services,
            config,
            compile_cache,
            running,
            watchdog,
        })
    }

    /// The state tables guards use; the proxy records events into them.
    pub fn state(&self) -> &StateStore {
        &self.services.state
    }

    /// Takes every finding reported since the last call.
    pub fn drain_findings(&self) -> Vec<Finding> {
        self.services.findings.drain()
    }

    /// Findings dropped because the queue was full.
    pub fn findings_dropped(&self) -> u64 {
        self.services.findings.dropped()
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Guard loads served from the compile cache, and loads that had to compile.
    pub fn compile_cache_counts(&self) -> (usize, usize) {
        self.compile_cache
            .as_ref()
            .map_or((0, 0), |c| (c.cache_hits(), c.cache_misses()))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.watchdog.stop();
    }
}

/// The monotonic clock's version in the WASI that wasmtime-wasi 48 provides.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Epoch deadlines interrupt guest code but not a host call blocked in `poll`, so a guard
/// that sleeps would hold its thread past any deadline. Guards have no reason to wait:
/// subscribing to the clock traps instead.
fn forbid_waiting(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    fn refuse(
        _: wasmtime::StoreContextMut<'_, GuestState>,
        _: (u64,),
    ) -> wasmtime::Result<(Resource<DynPollable>,)> {
        Err(wasmtime::Error::msg(
            "guards may not sleep or wait on a clock",
        ))
    }
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", refuse)?;
    clock.func_wrap("subscribe-instant", refuse)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let n = config.max_instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        // A Rust guard is a handful of core instances (the module, WASI shims, fix-ups);
        // interpreters built as components use more (componentize-py's Python: 38).
        .max_core_instances_per_component(64)
        .total_core_instances(n * 8)
        .max_memories_per_component(4)
        .total_memories(n * 2)
        .max_tables_per_component(16)
        .total_tables(n * 8)
        .max_memory_size(config.max_guard_memory)
        // Keep slots warm for reuse by the same guard so copy-on-write images stay mapped.
        .max_unused_warm_slots(n / 2);
    let mut engine = Config::new();
    engine
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    engine
}
