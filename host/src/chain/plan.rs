//! What the guards that see one route need of its requests (which guards run, how much body,
//! which header fields, which responses), worked out once per chain, method and route, so that
//! a request asks the chain one question instead of asking every guard several.

use super::Chain;
use crate::guard::LoadedGuard;
use crate::needs::{HeaderFields, Statuses};
use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

/// What the guards that see requests for one method and route need of them.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// Positions in the chain of the guards whose routes match, in chain order.
    pub(super) guards: Box<[usize]>,
    body_limit: usize,
    request_headers: HeaderFields,
    response_headers: Statuses,
}

impl Plan {
    /// The plan for a request that `guards` see, each at its position in the chain.
    fn of<'g>(guards: impl Iterator<Item = (usize, &'g Arc<LoadedGuard>)>) -> Plan {
        let mut plan = Plan {
            guards: Box::default(),
            body_limit: 0,
            request_headers: HeaderFields::None,
            response_headers: Statuses::NONE,
        };
        let mut positions = Vec::new();
        for (position, guard) in guards {
            positions.push(position);
            plan.body_limit = plan.body_limit.max(guard.spec().body_limit);
            plan.request_headers = plan.request_headers.union(guard.header_fields());
            if guard.header_fields().any() {
                plan.response_headers = plan.response_headers.union(guard.needs().responses);
            }
        }
        plan.guards = positions.into_boxed_slice();
        plan
    }

    /// The plan of a request no guard is to see (a client on the allowlist).
    pub fn empty() -> Arc<Plan> {
        static EMPTY: OnceLock<Arc<Plan>> = OnceLock::new();
        EMPTY
            .get_or_init(|| Arc::new(Plan::of(std::iter::empty())))
            .clone()
    }

    /// Whether no guard sees these requests.
    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    /// The largest body prefix any of these guards reads, in bytes.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// Whether any of these guards reads request header fields: if none does, the proxy need
    /// not copy them.
    pub fn reads_request_headers(&self) -> bool {
        self.request_headers.any()
    }

    /// Whether any of these guards reads the request header field `name` (lower-case): the
    /// proxy copies only those.
    pub fn reads_request_header(&self, name: &str) -> bool {
        self.request_headers.includes(name)
    }

    /// Whether a guard among these that observes responses with `status` reads their headers.
    pub fn reads_response_headers(&self, status: u16) -> bool {
        self.response_headers.contains(status)
    }
}

/// Routes planned for at most: the route table bounds templates, this bounds the plans even
/// for a table that learns without limit. Beyond it, plans are made per request.
const MAX_PLANNED_ROUTES: usize = 4096;

/// Methods planned for per route at most: a client may send any token as a method.
const MAX_PLANNED_METHODS: usize = 16;

/// The plans made so far for one route, by method.
type MethodPlans = Vec<(Box<str>, Arc<Plan>)>;

/// The plans made so far, by route and then method.
#[derive(Debug, Default)]
pub(super) struct Plans {
    by_route: RwLock<HashMap<Arc<str>, MethodPlans, RandomState>>,
}

impl Plans {
    /// The plan for `method` on `route` in `chain`: made once, then shared.
    pub(super) fn get(&self, chain: &Chain, method: &str, route: &str) -> Arc<Plan> {
        {
            let by_route = self.by_route.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(plan) = by_route
                .get(route)
                .and_then(|methods| methods.iter().find(|(m, _)| &**m == method))
            {
                return plan.1.clone();
            }
        }
        let plan = Arc::new(Plan::of(
            chain
                .guards
                .iter()
                .enumerate()
                .filter(|(_, guard)| guard.applies_to(method, route)),
        ));
        let mut by_route = self
            .by_route
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if by_route.len() >= MAX_PLANNED_ROUTES && !by_route.contains_key(route) {
            return plan;
        }
        let methods = by_route.entry(Arc::from(route)).or_default();
        if let Some((_, planned)) = methods.iter().find(|(m, _)| &**m == method) {
            return planned.clone();
        }
        if methods.len() < MAX_PLANNED_METHODS {
            methods.push((method.into(), plan.clone()));
        }
        plan
    }

    /// How many routes have a plan.
    pub(super) fn routes(&self) -> usize {
        self.by_route
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_made_once_per_method_and_route_and_the_plans_are_bounded() {
        let chain = Chain::default();
        let first = chain.plan("GET", "/users/{id}");
        assert!(Arc::ptr_eq(&first, &chain.plan("GET", "/users/{id}")));
        assert!(!Arc::ptr_eq(&first, &chain.plan("POST", "/users/{id}")));
        assert!(first.is_empty() && first.body_limit() == 0 && !first.reads_request_headers());

        for i in 0..MAX_PLANNED_ROUTES + 10 {
            chain.plan("GET", &format!("/r{i}"));
        }
        assert_eq!(chain.plans.routes(), MAX_PLANNED_ROUTES);
        let unplanned = chain.plan("GET", "/one-too-many");
        assert!(!Arc::ptr_eq(
            &unplanned,
            &chain.plan("GET", "/one-too-many")
        ));

        // A client inventing methods cannot grow one route's plans either.
        for i in 0..MAX_PLANNED_METHODS + 10 {
            chain.plan(&format!("M{i}"), "/r0");
        }
        let by_route = chain.plans.by_route.read().unwrap();
        assert_eq!(by_route["/r0"].len(), MAX_PLANNED_METHODS);
    }

    #[test]
    fn header_fields_of_several_guards_are_their_union() {
        let named =
            |names: &[&str]| HeaderFields::Named(names.iter().map(|n| n.to_string()).collect());
        assert_eq!(
            named(&["accept", "x-api-key"]).union(&named(&["accept", "user-agent"])),
            named(&["accept", "user-agent", "x-api-key"])
        );
        assert_eq!(HeaderFields::None.union(&named(&["a"])), named(&["a"]));
        assert_eq!(named(&["a"]).union(&HeaderFields::All), HeaderFields::All);
        assert_eq!(
            HeaderFields::None.union(&HeaderFields::None),
            HeaderFields::None
        );
    }
}
