#!/usr/bin/env bash
# Runs Vigil's whole test suite on a fresh machine: installs the guest toolchain if needed,
# builds every guard from source (tests/artifacts/build.rs), installs Chromium for the dashboard
# test, then runs all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-browser.sh   # headless Chromium for the collector's dashboard test
cargo test --workspace "$@"
# The guard SDK's test kit (an in-memory host for guards' own `cargo test`) is a feature the
# workspace build leaves off.
cargo test -p vigil-guest --features testing "$@"
# The stock guards' own unit tests (their helpers, their arithmetic) are plain Rust: they run
# natively; the end-to-end tests above run the guards as Wasm.
(cd example-guards && cargo test --workspace "$@")
