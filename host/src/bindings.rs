//! Host bindings generated from `guest-sdk/wit/guard.wit`, the single source of the ABI.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "guard",
    additional_derives: [PartialEq],
    imports: {
        // Every state call is trappable: under `state.fallback = "deny"` one the shared store
        // cannot answer stops the guard.
        "vigil:guard/state.history": trappable,
        "vigil:guard/state.rate": trappable,
        "vigil:guard/state.count": trappable,
        "vigil:guard/state.distinct": trappable,
        "vigil:guard/state.get": trappable,
        "vigil:guard/state.happened": trappable,
        "vigil:guard/state.set": trappable,
        "vigil:guard/state.reads-headers": trappable,
    },
});

/// The `packed-guard` world's exports. Its imports and types are the `guard` world's, bound
/// once above.
pub mod packed {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "packed-guard",
        with: {
            "vigil:guard/types": super::vigil::guard::types,
            "vigil:guard/state": super::vigil::guard::state,
        },
    });
}
