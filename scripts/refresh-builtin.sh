#!/usr/bin/env bash
# Rebuilds the stock guards of example-guards/ from source and refreshes the components the
# binary embeds (proxy/builtin/*.wasm, `module = "builtin:NAME"`) and their record of sources,
# proxy/builtin/SHA256SUMS. Run it after changing a stock guard, example-guards/guard-util or
# guest-sdk/; tests/tests/builtin_guards.rs fails until then. Commit what it changes.
#
# The guards are built by the same build the test suite makes (tests/artifacts/build.rs), so
# the committed components are what the tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -q -p vigil-guard-artifacts
built="${CARGO_TARGET_DIR:-target}/wasm-guests/wasm32-wasip2/release"

# The stock guards are the cdylib crates of example-guards/ (guard-util is a library).
guards=()
for manifest in example-guards/*/Cargo.toml; do
    if grep -q cdylib "$manifest"; then
        guards+=("$(basename "$(dirname "$manifest")")")
    fi
done

rm -f proxy/builtin/*.wasm
for guard in "${guards[@]}"; do
    cp "$built/${guard//-/_}.wasm" "proxy/builtin/$guard.wasm"
done

# What the components were built from, then the components: `sha256sum -c
# proxy/builtin/SHA256SUMS` from the repository root checks both. The list of sources is
# the one tests/tests/builtin_guards.rs computes.
{
    printf '%s\n' example-guards/Cargo.toml example-guards/Cargo.lock guest-sdk/Cargo.toml
    for manifest in example-guards/*/Cargo.toml; do
        find "$(dirname "$manifest")" -type f -not -path '*/target/*'
    done
    find guest-sdk/src guest-sdk/wit -type f
    for guard in "${guards[@]}"; do
        echo "proxy/builtin/$guard.wasm"
    done
} | LC_ALL=C sort | xargs sha256sum >proxy/builtin/SHA256SUMS
ls -l proxy/builtin/*.wasm
echo "refresh-builtin: proxy/builtin/ now holds ${guards[*]}; commit it with the sources" >&2
