//! What a component must be before it is loaded as a guard: a component (not a core module),
//! importing nothing beyond the interfaces a guard may use; and the hash that tells two builds
//! of a guard apart.

use wasmtime::component::Component;
use wasmtime::Engine;

/// Interfaces a guard may import. Filesystem and CLI are there because Rust's and C's standard
/// libraries import them; the context behind them has no preopened directory, no environment,
/// no arguments and captured stdio, so they grant nothing.
const ALLOWED_IMPORTS: &[&str] = &[
    "vigil:guard/state@0.1.",
    "vigil:guard/types@0.1.",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:io/",
    "wasi:cli/",
    "wasi:filesystem/",
];

pub(super) fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(
            "not a WebAssembly file (no \\0asm header): is the path right, or the file corrupt?"
                .into(),
        );
    }
    // Core modules have version 1 and layer 0; components have layer 1.
    if bytes[6..8] == [0, 0] {
        return Err(
            "is a core WebAssembly module, not a component: build it for wasm32-wasip2, or wrap it \
             with `wasm-tools component new`"
                .into(),
        );
    }
    Ok(())
}

pub(super) fn check_imports(component: &Component, engine: &Engine) -> Result<(), String> {
    let denied: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| {
            !ALLOWED_IMPORTS
                .iter()
                .any(|allowed| name.starts_with(allowed))
        })
        .collect();
    if denied.is_empty() {
        return Ok(());
    }
    Err(format!(
        "imports {}, which guards may not use (allowed: vigil:guard/state and WASI clocks, random, \
         io, cli and filesystem, the last two without any capability)",
        denied.join(", ")
    ))
}

pub(super) fn content_hash(bytes: &[u8]) -> u64 {
    // FNV-1a: stable across runs and platforms, enough to tell two builds of a guard apart.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
