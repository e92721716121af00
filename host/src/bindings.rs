//! Host bindings generated from `guest-sdk/wit/guard.wit`, the single source of the ABI.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "guard",
    additional_derives: [PartialEq],
    imports: {
        "vigil:guard/state.rate": trappable,
        "vigil:guard/state.happened": trappable,
        "vigil:guard/state.set": trappable,
        "vigil:guard/state.reads-headers": trappable,
    },
});
