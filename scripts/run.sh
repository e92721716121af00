#!/usr/bin/env bash
# Vigil's main job on its defaults, runnable on a fresh machine: builds the example guard from
# source and sends sample login traffic through it, printing each verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -q -p vigil-guard-artifacts
guard=target/wasm-guests/wasm32-wasip2/release/login_throttle.wasm
exec cargo run -q -p vigil -- try "$guard" \
    --name login-throttle --route "POST /login" --config '{"per_minute": 6, "burst": 3}' \
    --method POST --path /login --count 6 "$@"
