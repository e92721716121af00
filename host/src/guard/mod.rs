//! One loaded guard: its checked component, a pool of warm instances, and the fault policy
//! applied around every call. What a guard is to be is `spec`, why a call failed `fault`, the
//! warm instances `pool`, and what a component must be to load `checks`.

mod checks;
pub(crate) mod fault;
mod pool;
mod spec;

use fault::root_cause;
pub use fault::{Fault, FaultKind};
pub use spec::{GuardSource, GuardSpec, Mode, OnError};

use checks::{check_header, check_imports, content_hash};
use pool::{WarmInstance, WarmPool};

use crate::bindings::vigil::guard::types;
use crate::log_context;
use crate::needs::{HeaderFields, Needs};
use crate::packed::RequestPacker;
use crate::runtime::Runtime;
use crate::sandbox::{GuardIdentity, GuestState, HostServices, SandboxLimits};
use crate::state::StateError;
use crate::watchdog::Running;
use crate::world::{Exports, Pre, World};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_guest::route::Pattern;
use wasmtime::component::Component;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// Why a guard could not be loaded. Every variant names the guard.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The module file could not be read.
    #[error("guard {guard:?}: cannot read {path}: {error}")]
    Read {
        /// Guard name.
        guard: String,
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, not a separate cause, so it is printed once).
        error: std::io::Error,
    },
    /// The bytes are not a usable guard component.
    #[error("guard {guard:?}: {reason}")]
    Invalid {
        /// Guard name.
        guard: String,
        /// What is wrong.
        reason: String,
    },
    /// The guard's `init` rejected its configuration.
    #[error("guard {guard:?}: init rejected the configuration: {message}")]
    Init {
        /// Guard name.
        guard: String,
        /// The guard's own message.
        message: String,
    },
    /// The guard's limits are outside what the runtime allows.
    #[error("guard {guard:?}: {reason}")]
    Limits {
        /// Guard name.
        guard: String,
        /// What is wrong.
        reason: String,
    },
}

/// Counters of one guard since it was loaded.
#[derive(Debug, Default)]
pub struct GuardStats {
    /// Calls of `on-request`.
    pub requests: AtomicU64,
    /// Calls of `on-response`.
    pub responses: AtomicU64,
    /// Denials returned (applied or not).
    pub denials: AtomicU64,
    /// Faults by kind: deadline, limit, trap, instantiate, state unavailable.
    pub faults: [AtomicU64; 5],
    /// Output bytes dropped over the per-call budget.
    pub output_dropped_bytes: AtomicU64,
    /// Fresh instances created.
    pub instances_created: AtomicU64,
}

impl GuardStats {
    /// Faults of one kind.
    pub fn faults(&self, kind: FaultKind) -> u64 {
        self.faults[kind as usize].load(Ordering::Relaxed)
    }
}

/// Time instantiation and `init` get. They run once per instance, not per request, and may
/// start a whole language runtime (CPython); on a busy machine that can take far longer than
/// a call's deadline, and a sidecar must not fail to start because its node is loaded.
pub const INIT_DEADLINE: Duration = Duration::from_secs(2);

/// A guard module loaded, checked and initialised, ready to be called. Cheap to share; calls may run on many threads at once.
pub struct LoadedGuard {
    identity: Arc<GuardIdentity>,
    spec: GuardSpec,
    routes: Vec<Pattern>,
    content_hash: u64,
    needs: Needs,
    header_fields: HeaderFields,
    pre: Pre,
    engine: Engine,
    services: Arc<HostServices>,
    running: Arc<Running>,
    warm: WarmPool,
    recycle_after: u64,
    stats: GuardStats,
}

impl Runtime {
    /// Loads, checks and initialises a guard. Errors name the guard and the cause.
    pub fn load_guard(&self, spec: GuardSpec) -> Result<Arc<LoadedGuard>, LoadError> {
        let name = spec.name.clone();
        let invalid = |reason: String| LoadError::Invalid {
            guard: name.clone(),
            reason,
        };
        let limits = spec
            .limits
            .clone()
            .unwrap_or_else(|| self.config.default_limits.clone());
        if limits.memory_bytes > self.config.max_guard_memory {
            return Err(LoadError::Limits {
                guard: spec.name.clone(),
                reason: format!(
                    "memory limit of {} bytes exceeds the runtime's maximum of {} bytes",
                    limits.memory_bytes, self.config.max_guard_memory
                ),
            });
        }
        let bytes = match &spec.source {
            GuardSource::Bytes(bytes) => bytes.clone(),
            GuardSource::File(path) => std::fs::read(path).map_err(|error| LoadError::Read {
                guard: spec.name.clone(),
                path: path.clone(),
                error,
            })?,
        };
        check_header(&bytes).map_err(invalid)?;
        let needs = Needs::of_component(&bytes).map_err(invalid)?;
        let component = Component::new(&self.engine, &bytes).map_err(|e| {
            invalid(format!(
                "not a valid WebAssembly component: {}",
                root_cause(&e)
            ))
        })?;
        check_imports(&component, &self.engine).map_err(invalid)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            invalid(format!(
                "its imports cannot be satisfied by this host: {}",
                root_cause(&e)
            ))
        })?;
        let pre = Pre::new(instance_pre).map_err(invalid)?;
        let identity = Arc::new(GuardIdentity {
            name: spec.name.as_str().into(),
            scope: self.state().scope(&spec.name),
            limits: limits.clone(),
        });
        self.running.watch_deadline(limits.deadline);
        let mut guard = LoadedGuard {
            identity,
            routes: spec.routes.clone(),
            content_hash: content_hash(&bytes),
            needs,
            header_fields: HeaderFields::of(needs, None),
            pre,
            engine: self.engine.clone(),
            services: self.services.clone(),
            running: self.running.clone(),
            warm: WarmPool::new(self.config.warm_instances_per_guard),
            recycle_after: self.config.recycle_after_calls.max(1),
            stats: GuardStats::default(),
            spec,
        };
        // Instantiate once now so a bad configuration or a failing init is a load error.
        let mut first = guard.instantiate().map_err(|e| match e {
            InstantiateError::Init(message) => LoadError::Init {
                guard: guard.spec.name.clone(),
                message,
            },
            InstantiateError::Fault(fault) => invalid(format!(
                "cannot be instantiated: {} ({})",
                fault.detail,
                fault.kind.as_str()
            )),
        })?;
        // Later instances run the same `init` on the same configuration; this one decides.
        let declared = first.store.data_mut().declared_headers.take();
        guard.header_fields = HeaderFields::of(needs, declared);
        guard.warm.put(first);
        Ok(Arc::new(guard))
    }
}

enum InstantiateError {
    Init(String),
    Fault(Fault),
}

impl LoadedGuard {
    /// The guard's name.
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// The specification it was loaded from.
    pub fn spec(&self) -> &GuardSpec {
        &self.spec
    }

    /// The sandbox limits in force.
    pub fn limits(&self) -> &SandboxLimits {
        &self.identity.limits
    }

    /// A hash of the component's bytes, to tell versions apart after a reload.
    pub fn content_hash(&self) -> u64 {
        self.content_hash
    }

    /// What the guard declared it uses.
    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// The world of the contract it exports.
    pub fn world(&self) -> World {
        self.pre.world()
    }

    /// The header fields the guard is given.
    pub fn header_fields(&self) -> &HeaderFields {
        &self.header_fields
    }

    /// Counters since load.
    pub fn stats(&self) -> &GuardStats {
        &self.stats
    }

    /// Whether the guard sees requests for this method and route (or path).
    pub fn applies_to(&self, method: &str, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|p| p.matches(method, route))
    }

    /// The state and findings of the runtime that loaded it.
    pub(crate) fn services(&self) -> &Arc<HostServices> {
        &self.services
    }

    /// The guard's name, shared.
    pub fn name_arc(&self) -> Arc<str> {
        self.identity.name.clone()
    }

    /// Calls `on-request`, which the caller started timing at `started`; a packed-world guard
    /// gets the request from `packer`.
    pub(crate) fn on_request(
        &self,
        req: &types::Request,
        packer: &RequestPacker,
        started: Instant,
    ) -> Result<types::Verdict, Fault> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let verdict = self.call(&req.client.key, started, |exports, store| {
            exports.call_on_request(store, req, packer)
        })?;
        if matches!(verdict, types::Verdict::Deny(_)) {
            self.stats.denials.fetch_add(1, Ordering::Relaxed);
        }
        Ok(verdict)
    }

    /// Calls `on-response`.
    pub(crate) fn on_response(
        &self,
        req: &types::Request,
        resp: &types::Response,
    ) -> Result<(), Fault> {
        self.stats.responses.fetch_add(1, Ordering::Relaxed);
        self.call(&req.client.key, Instant::now(), |exports, store| {
            exports.call_on_response(store, req, resp)
        })
    }

    /// Runs one export on a warm instance (or a fresh one), under the deadline, counted from
    /// `started` (from the end of instantiation for a fresh instance). A faulted instance is
    /// discarded so the next call starts clean.
    fn call<R>(
        &self,
        client_key: &str,
        started: Instant,
        f: impl FnOnce(&Exports, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let warm = self.warm.take();
        let (mut instance, started) = match warm {
            Some(instance) => (instance, started),
            None => self
                .instantiate()
                .map(|fresh| (fresh, Instant::now()))
                .map_err(|e| {
                    let fault = match e {
                        InstantiateError::Fault(fault) => fault,
                        InstantiateError::Init(message) => Fault {
                            kind: FaultKind::Instantiate,
                            detail: format!("init failed on a fresh instance: {message}"),
                        },
                    };
                    self.count_fault(&fault);
                    fault
                })?,
        };
        let running = self
            .running
            .enter_at(started, self.identity.limits.deadline);
        instance
            .store
            .data_mut()
            .begin_call(client_key, running.ends());
        instance.store.set_epoch_deadline(1);
        let result = f(&instance.exports, &mut instance.store);
        drop(running);
        let dropped = instance.store.data().output.finish(self.name());
        if dropped > 0 {
            self.stats
                .output_dropped_bytes
                .fetch_add(dropped, Ordering::Relaxed);
        }
        match result {
            Ok(value) => {
                instance.calls += 1;
                if instance.calls < self.recycle_after {
                    self.warm.put(instance);
                }
                Ok(value)
            }
            Err(error) => {
                let fault = self.classify(&error, instance.store.data());
                self.count_fault(&fault);
                // The shared store logs once that it went away, not once per request.
                if fault.kind == FaultKind::StateUnavailable {
                    return Err(fault);
                }
                log_context::with(|request_id, client, route| {
                    tracing::warn!(
                        target: "vigil::guard",
                        guard = self.name(),
                        request_id,
                        client,
                        route,
                        fault = fault.kind.as_str(),
                        detail = %fault.detail,
                        "guard call failed; instance discarded"
                    )
                });
                Err(fault)
            }
        }
    }

    fn count_fault(&self, fault: &Fault) {
        self.stats.faults[fault.kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn classify(&self, error: &wasmtime::Error, state: &GuestState) -> Fault {
        if let Some(hit) = &state.limiter.hit {
            return Fault {
                kind: FaultKind::Limit,
                detail: hit.clone(),
            };
        }
        if matches!(
            error.downcast_ref::<StateError>(),
            Some(StateError::SharedUnavailable)
        ) {
            return Fault {
                kind: FaultKind::StateUnavailable,
                detail: StateError::SharedUnavailable.to_string(),
            };
        }
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return Fault {
                kind: FaultKind::Deadline,
                detail: format!(
                    "call exceeded its {:?} deadline",
                    self.identity.limits.deadline
                ),
            };
        }
        let detail = match &state.panic {
            Some(panic) => panic.clone(),
            None => root_cause(error),
        };
        Fault {
            kind: FaultKind::Trap,
            detail,
        }
    }

    /// A fresh instance with `init` already run, under [`INIT_DEADLINE`] or the call deadline,
    /// whichever is longer; each call then sets the call deadline again.
    fn instantiate(&self) -> Result<WarmInstance, InstantiateError> {
        let running = self
            .running
            .enter(self.identity.limits.deadline.max(INIT_DEADLINE));
        let state = GuestState::new(self.identity.clone(), self.services.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|store| {
            Ok(if store.data().overdue() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        store.set_epoch_deadline(1);
        store.data_mut().begin_init(running.ends());
        let fault = |kind, detail| InstantiateError::Fault(Fault { kind, detail });
        let exports = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| fault(FaultKind::Instantiate, root_cause(&e)))?;
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        let init = exports.call_init(&mut store, &self.spec.config_json);
        store.data().output.finish(self.name());
        match init {
            Ok(Ok(())) => Ok(WarmInstance {
                store,
                exports,
                calls: 0,
            }),
            Ok(Err(message)) => Err(InstantiateError::Init(message)),
            Err(e) => {
                let f = self.classify(&e, store.data());
                Err(fault(f.kind, format!("init: {}", f.detail)))
            }
        }
    }
}

/// Tells a core module or a random file from a component before compiling it, so the error
/// says what to do.
impl std::fmt::Debug for LoadedGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedGuard")
            .field("name", &self.name())
            .field("mode", &self.spec.mode)
            .field("routes", &self.routes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::vigil::guard::types::{Client, Header, Request};
    use crate::RuntimeConfig;

    /// A call that had to wait for a fresh instance gets its whole deadline from the end of
    /// instantiation, not from when the chain started timing it: a slow start-up must not
    /// leave the first call overdue before it runs.
    #[test]
    fn a_fresh_instance_gets_its_whole_deadline() {
        let deadline = Duration::from_millis(400);
        let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime starts");
        let mut spec = GuardSpec::new(
            "hostile",
            GuardSource::File(vigil_guard_artifacts::path("hostile").into()),
        );
        spec.limits = Some(SandboxLimits {
            deadline,
            ..SandboxLimits::default()
        });
        let guard = runtime.load_guard(spec).expect("hostile loads");
        // A guard with a short deadline keeps the watchdog looking every 50 ms, so an end
        // already passed would be seen within 50 ms.
        let mut brisk = GuardSpec::new(
            "brisk",
            GuardSource::File(vigil_guard_artifacts::path("allow-all").into()),
        );
        brisk.limits = Some(SandboxLimits {
            deadline: Duration::from_millis(50),
            ..SandboxLimits::default()
        });
        let _brisk = runtime.load_guard(brisk).expect("allow-all loads");
        while guard.warm.take().is_some() {}
        // The watchdog counts ends from its own start; the stale start below must come after it.
        std::thread::sleep(Duration::from_millis(700));
        let looping = Request {
            method: "GET".into(),
            path: "/".into(),
            route: None,
            query: None,
            headers: vec![Header {
                name: "x-attack".into(),
                value: b"loop".to_vec(),
            }],
            client: Client {
                key: "c".into(),
                ip: "203.0.113.7".into(),
                public: true,
                authenticated: false,
            },
            received_ms: 0,
            body: None,
        };
        let long_ago = Instant::now() - Duration::from_millis(500);
        let called = Instant::now();
        let fault = guard
            .on_request(&looping, &RequestPacker::default(), long_ago)
            .expect_err("the loop is interrupted");
        let ran = called.elapsed();
        assert_eq!(fault.kind, FaultKind::Deadline, "{fault:?}");
        assert!(ran >= deadline / 2, "interrupted after {ran:?}");
        assert_eq!(guard.stats().instances_created.load(Ordering::Relaxed), 2);
    }
}
