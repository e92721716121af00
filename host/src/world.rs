//! The two worlds of the guard contract (`guard.wit`): which one a component exports, and
//! calls through it. In `guard` requests and responses are lowered as records; in
//! `packed-guard` each is packed into one byte list first.

use crate::bindings::packed::{PackedGuard, PackedGuardPre};
use crate::bindings::{self, vigil::guard::types};
use crate::guard::fault::root_cause;
use crate::packed::{self, RequestPacker};
use crate::sandbox::GuestState;
use wasmtime::component::InstancePre;
use wasmtime::Store;

/// Which world of the contract a guard exports (see `guard.wit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    /// `guard`: requests and responses as records.
    Guard,
    /// `packed-guard`: requests and responses packed into one byte list each.
    PackedGuard,
}

impl World {
    /// The world's name in `guard.wit`.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Guard => "guard",
            World::PackedGuard => "packed-guard",
        }
    }
}

/// A guard's component, checked against its world and ready to instantiate.
pub(crate) enum Pre {
    Guard(bindings::GuardPre<GuestState>),
    PackedGuard(PackedGuardPre<GuestState>),
}

impl Pre {
    /// The world `instance_pre` exports; the error names what each world lacks.
    pub(crate) fn new(instance_pre: InstancePre<GuestState>) -> Result<Pre, String> {
        let as_guard = match bindings::GuardPre::new(instance_pre.clone()) {
            Ok(pre) => return Ok(Pre::Guard(pre)),
            Err(e) => root_cause(&e),
        };
        let as_packed = match PackedGuardPre::new(instance_pre) {
            Ok(pre) => return Ok(Pre::PackedGuard(pre)),
            Err(e) => root_cause(&e),
        };
        Err(format!(
            "it is not a guard: it exports neither of the vigil:guard@0.1.0 worlds: as `guard`, \
             {as_guard}; as `packed-guard`, {as_packed}"
        ))
    }

    pub(crate) fn world(&self) -> World {
        match self {
            Pre::Guard(_) => World::Guard,
            Pre::PackedGuard(_) => World::PackedGuard,
        }
    }

    pub(crate) fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Exports> {
        Ok(match self {
            Pre::Guard(pre) => Exports::Guard(pre.instantiate(store)?),
            Pre::PackedGuard(pre) => Exports::PackedGuard(pre.instantiate(store)?),
        })
    }
}

/// An instance's exports, in its world.
pub(crate) enum Exports {
    Guard(bindings::Guard),
    PackedGuard(PackedGuard),
}

impl Exports {
    pub(crate) fn call_init(
        &self,
        store: &mut Store<GuestState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Exports::Guard(guard) => guard.call_init(store, config),
            Exports::PackedGuard(guard) => guard.call_init(store, config),
        }
    }

    pub(crate) fn call_on_request(
        &self,
        store: &mut Store<GuestState>,
        req: &types::Request,
        packer: &RequestPacker,
    ) -> wasmtime::Result<types::Verdict> {
        match self {
            Exports::Guard(guard) => guard.call_on_request(store, req),
            Exports::PackedGuard(guard) => guard.call_on_request(store, &packer.pack(req)),
        }
    }

    pub(crate) fn call_on_response(
        &self,
        store: &mut Store<GuestState>,
        req: &types::Request,
        resp: &types::Response,
    ) -> wasmtime::Result<()> {
        match self {
            Exports::Guard(guard) => guard.call_on_response(store, req, resp),
            Exports::PackedGuard(guard) => {
                guard.call_on_response(store, &packed::request(req), &packed::response(resp))
            }
        }
    }
}
