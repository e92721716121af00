#!/usr/bin/env bash
# Runs Vigil's whole test suite on a fresh machine: installs the guest toolchain if needed,
# builds every guard from source (tests/artifacts/build.rs), then runs all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace "$@"
