//! Paths of the guards compiled from `example-guards/` and `tests/guards/` by this crate's
//! build script, one constant per guard crate (`ALLOW_ALL`, `HOSTILE`, ...).

include!(concat!(env!("OUT_DIR"), "/guards.rs"));

/// The compiled guard of crate `name` (e.g. `"allow-all"`); panics with the list when unknown.
pub fn path(name: &str) -> &'static str {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("no guard crate named {name:?}; built: {ALL:?}"))
}
