#!/usr/bin/env bash
# Vigil's main job on its defaults, runnable on a fresh machine: builds the stock guards from
# source, then `vigil demo` starts a sample shop API with Vigil and the stock guards in front,
# drives normal traffic and four attacks through it, and prints what was blocked and why.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -q -p vigil-guard-artifacts
exec cargo run -q -p vigil -- demo "$@"
