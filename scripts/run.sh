#!/usr/bin/env bash
# Vigil's main job on its defaults, runnable on a fresh machine: `vigil demo` starts a sample
# shop API with Vigil and the stock guards in front, drives normal traffic and four attacks
# through it, and prints what was blocked and why. The stock guards are built into vigil
# (proxy/builtin/), so this needs only Rust: no WebAssembly target, C or Python toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || {
    echo "run: cargo is missing; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
}
exec cargo run -q -p vigil -- demo "$@"
