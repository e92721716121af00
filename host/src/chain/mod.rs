//! A chain of guards evaluated in order for each request: each guard whose routes match runs,
//! the first applied denial wins, monitor-mode denials are recorded but not applied, and a
//! fault follows the guard's `on_error` policy, except a state call the shared store could not
//! answer under `state.fallback = "deny"`, which refuses the request.

mod plan;

pub use plan::Plan;

use crate::bindings::vigil::guard::types::{Deny, Header, Request, Response, Verdict};
use crate::guard::{Fault, FaultKind, LoadedGuard, Mode, OnError};
use crate::log_context;
use crate::needs::HeaderFields;
use crate::packed::RequestPacker;
use crate::sandbox::HostServices;
use crate::state::EventRecord;
use plan::Plans;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An ordered set of loaded guards.
#[derive(Default)]
pub struct Chain {
    guards: Vec<Arc<LoadedGuard>>,
    /// The runtime's state, which the guards share and the chain records histories into.
    services: Option<Arc<HostServices>>,
    plans: Plans,
}

impl Clone for Chain {
    /// The same guards; plans are made again as requests come.
    fn clone(&self) -> Chain {
        Chain {
            guards: self.guards.clone(),
            services: self.services.clone(),
            plans: Plans::default(),
        }
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("guards", &self.guards)
            .field("planned_routes", &self.plans.routes())
            .finish()
    }
}

/// What one guard said about one request.
#[derive(Clone, Debug, PartialEq)]
pub enum GuardResult {
    /// The guard allowed the request.
    Allowed,
    /// The guard denied the request.
    Denied(Deny),
    /// The call failed; the guard's `on_error` policy applied.
    Faulted(Fault),
}

/// One guard's part in a decision, for metrics and reports.
#[derive(Clone, Debug)]
pub struct GuardOutcome {
    /// The guard's name.
    pub guard: Arc<str>,
    /// The guard's mode at the time.
    pub mode: Mode,
    /// What it said.
    pub result: GuardResult,
    /// Time spent in the call, instance acquisition included.
    pub elapsed: Duration,
    /// Whether this outcome decided the request (an applied denial, or a refusal for want of
    /// the shared state).
    pub applied: bool,
    index: usize,
}

impl GuardOutcome {
    /// Whether a monitor-mode guard said deny: the denial enforce mode would have applied.
    /// Faults are not counted here even under `on_error = "deny"`; they have their own kinds.
    pub fn would_deny(&self) -> bool {
        self.mode == Mode::Monitor && matches!(self.result, GuardResult::Denied(_))
    }
}

/// The denial the proxy must answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The guard that denied.
    pub guard: Arc<str>,
    /// HTTP status to answer with.
    pub status: u16,
    /// Why, in words.
    pub reason: String,
    /// Seconds for `Retry-After`.
    pub retry_after_secs: Option<u32>,
    /// How long the client is then refused on every route (the guard's `ban`).
    pub ban: Option<Duration>,
}

/// The chain's decision on one request.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// `Some` when the request must be refused.
    pub denial: Option<Denial>,
    /// The enforce-mode guard that needed the shared state store when it could not answer,
    /// under `state.fallback = "deny"`: the request must be refused as unavailable (no guard
    /// decided it), and no later guard ran.
    pub state_unavailable: Option<Arc<str>>,
    /// Every guard that ran, in order.
    pub outcomes: Vec<GuardOutcome>,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn allowed(&self) -> bool {
        self.denial.is_none() && self.state_unavailable.is_none()
    }

    /// Whether some monitor-mode guard would have denied the request.
    pub fn would_deny(&self) -> bool {
        self.outcomes.iter().any(GuardOutcome::would_deny)
    }
}

/// Status of a denial caused by a fault under `on_error = "deny"`.
const FAULT_STATUS: u16 = 503;

/// Why a chain could not be formed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Two guards share a name (names key their state).
    #[error("two guards are named {0:?}; guard names must be unique")]
    DuplicateName(String),
    /// The guards were loaded by different runtimes, which keep different state.
    #[error("guard {0:?} was loaded by another runtime than the chain's first guard")]
    MixedRuntimes(String),
}

impl Chain {
    /// A chain of these guards, evaluated in this order.
    pub fn new(guards: Vec<Arc<LoadedGuard>>) -> Result<Chain, ChainError> {
        for (i, guard) in guards.iter().enumerate() {
            if guards[..i].iter().any(|g| g.name() == guard.name()) {
                return Err(ChainError::DuplicateName(guard.name().to_string()));
            }
            if !Arc::ptr_eq(guard.services(), guards[0].services()) {
                return Err(ChainError::MixedRuntimes(guard.name().to_string()));
            }
        }
        Ok(Chain {
            services: guards.first().map(|g| g.services().clone()),
            guards,
            plans: Plans::default(),
        })
    }

    /// The guards, in order.
    pub fn guards(&self) -> &[Arc<LoadedGuard>] {
        &self.guards
    }

    /// What the guards that see requests for `method` on `route` need of them: made on the
    /// first such request, then shared.
    pub fn plan(&self, method: &str, route: &str) -> Arc<Plan> {
        self.plans.get(self, method, route)
    }

    /// The plan for `req`, by its method and its route (its path when it has none).
    pub fn plan_for(&self, req: &Request) -> Arc<Plan> {
        self.plan(&req.method, req.route.as_deref().unwrap_or(&req.path))
    }

    /// Runs the request through the guards of its `plan` (from [`Chain::plan`] for its
    /// method and route). `req.body` holds the largest body prefix any guard asked for; each
    /// guard gets at most its own cap of it, or none; guards that declared they read no
    /// headers get none.
    pub fn evaluate(&self, plan: &Plan, req: &mut Request) -> Decision {
        let body = req.body.take();
        let mut headers = HeldHeaders::take(req);
        let mut decision = Decision::default();
        let packer = RequestPacker::default();
        for &index in plan.guards.iter() {
            let Some(guard) = self.guards.get(index) else {
                continue;
            };
            req.body = body_for(guard, &body);
            let lent = headers.lend(req, guard);
            let started = Instant::now();
            let verdict = guard.on_request(req, &packer, started);
            let elapsed = started.elapsed();
            headers.take_back(req, lent);
            let mode = guard.spec().mode;
            let (result, wanted_denial) = match verdict {
                Ok(Verdict::Allow) => (GuardResult::Allowed, None),
                Ok(Verdict::Deny(deny)) => {
                    let denial = Denial {
                        guard: guard.name_arc(),
                        status: deny.status,
                        reason: deny.reason.clone(),
                        retry_after_secs: deny.retry_after_secs,
                        ban: guard.spec().ban,
                    };
                    (GuardResult::Denied(deny), Some(denial))
                }
                // Deciding without the state the guard asked for is what `deny` rules out,
                // whatever the guard's own policy for its faults.
                Err(fault) if fault.kind == FaultKind::StateUnavailable => {
                    if mode == Mode::Enforce {
                        decision.state_unavailable = Some(guard.name_arc());
                    }
                    (GuardResult::Faulted(fault), None)
                }
                Err(fault) => {
                    let denial = (guard.spec().on_error == OnError::Deny).then(|| Denial {
                        guard: guard.name_arc(),
                        status: FAULT_STATUS,
                        reason: format!("guard {} failed", guard.name()),
                        retry_after_secs: None,
                        ban: None,
                    });
                    (GuardResult::Faulted(fault), denial)
                }
            };
            let applied = (wanted_denial.is_some() && mode == Mode::Enforce)
                || decision.state_unavailable.is_some();
            if mode == Mode::Monitor {
                if let GuardResult::Denied(deny) = &result {
                    log_context::with(|request_id, client, route| {
                        tracing::info!(
                            target: "vigil::guard",
                            guard = guard.name(),
                            request_id,
                            client,
                            route,
                            status = deny.status,
                            reason = %deny.reason,
                            "monitor mode: would have denied"
                        )
                    });
                }
            }
            decision.outcomes.push(GuardOutcome {
                guard: guard.name_arc(),
                mode,
                result,
                elapsed,
                applied,
                index,
            });
            if applied {
                decision.denial = wanted_denial;
                break;
            }
        }
        req.body = body;
        headers.restore(req);
        decision
    }

    /// Records the request in its client's history, then shows the response to every guard
    /// that saw the request and observes responses with its status, each with the body prefix
    /// and headers it saw in `evaluate`. A chain without guards keeps no history.
    pub fn observe(&self, req: &mut Request, resp: &Response, decision: &Decision) {
        // Histories are read only by guards: a sidecar run for its inventory alone should not
        // spend a table insert per request, nor memory per client, on them.
        let Some(services) = &self.services else {
            return;
        };
        services.state.record(
            &req.client.key,
            &EventRecord {
                at_ms: req.received_ms,
                method: &req.method,
                route: req.route.as_deref().unwrap_or(&req.path),
                status: resp.status,
                public: req.client.public,
                authenticated: req.client.authenticated,
            },
        );
        let body = req.body.take();
        let mut headers = HeldHeaders::take(req);
        let bare_response = Response {
            headers: Vec::new(),
            ..*resp
        };
        for outcome in &decision.outcomes {
            let Some(guard) = self.guards.get(outcome.index) else {
                continue;
            };
            if !guard.needs().observes(resp.status) {
                continue;
            }
            req.body = body_for(guard, &body);
            let lent = headers.lend(req, guard);
            let narrowed;
            let resp = match guard.header_fields() {
                HeaderFields::All => resp,
                HeaderFields::None => &bare_response,
                HeaderFields::Named(_) => {
                    narrowed = Response {
                        headers: selected(&resp.headers, guard.header_fields()),
                        ..*resp
                    };
                    &narrowed
                }
            };
            // A fault here was already counted and logged; the response is not changed.
            let _ = guard.on_response(req, resp);
            headers.take_back(req, lent);
        }
        req.body = body;
        headers.restore(req);
    }
}

/// A request's headers held aside while guards are called: moved into the request for guards
/// that read every field and back out after, copied in part for guards that read some, so
/// guards that read none get an empty list (nothing to copy into them).
struct HeldHeaders(Vec<Header>);

/// What [`HeldHeaders::lend`] put into the request.
#[derive(Clone, Copy)]
enum Lent {
    Nothing,
    Selection,
    Whole,
}

impl HeldHeaders {
    fn take(req: &mut Request) -> HeldHeaders {
        HeldHeaders(std::mem::take(&mut req.headers))
    }

    fn lend(&mut self, req: &mut Request, guard: &LoadedGuard) -> Lent {
        match guard.header_fields() {
            HeaderFields::None => Lent::Nothing,
            HeaderFields::All => {
                req.headers = std::mem::take(&mut self.0);
                Lent::Whole
            }
            fields @ HeaderFields::Named(_) => {
                req.headers = selected(&self.0, fields);
                Lent::Selection
            }
        }
    }

    fn take_back(&mut self, req: &mut Request, lent: Lent) {
        match lent {
            Lent::Nothing => {}
            Lent::Selection => req.headers.clear(),
            Lent::Whole => self.0 = std::mem::take(&mut req.headers),
        }
    }

    fn restore(self, req: &mut Request) {
        req.headers = self.0;
    }
}

/// Copies of the fields of `headers` that `fields` includes, in their order.
fn selected(headers: &[Header], fields: &HeaderFields) -> Vec<Header> {
    headers
        .iter()
        .filter(|h| fields.includes(&h.name))
        .cloned()
        .collect()
}

/// The part of the body prefix a guard may see: up to its own cap, or nothing.
fn body_for(guard: &LoadedGuard, body: &Option<Vec<u8>>) -> Option<Vec<u8>> {
    let cap = guard.spec().body_limit;
    match body {
        Some(bytes) if cap > 0 => Some(bytes[..bytes.len().min(cap)].to_vec()),
        _ => None,
    }
}
