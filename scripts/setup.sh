#!/usr/bin/env bash
# Installs what building Vigil's WebAssembly guards needs, when it is missing:
#   - rustup's wasm32-wasip2 target, when rustup can download it;
#   - otherwise Debian's Rust with std sources (rustc-web, cargo-web, rust-web-src), lld-19,
#     wasi-libc and wasm-component-ld, which build guards with std rebuilt from source.
# Safe to run again: it only installs what is absent.
# VIGIL_GUEST_TOOLCHAIN=debian installs and uses the Debian toolchain even where rustup works.
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }

have_rustup_target() {
    rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2
}

if [ "${VIGIL_GUEST_TOOLCHAIN:-}" != debian ]; then
    if have_rustup_target; then
        say "rustup's wasm32-wasip2 target is installed"
        exit 0
    fi
    if command -v rustup >/dev/null && timeout 180 rustup target add wasm32-wasip2 >&2; then
        say "installed rustup's wasm32-wasip2 target"
        exit 0
    fi
    say "rustup cannot provide wasm32-wasip2 here; using Debian's toolchain"
fi

missing=()
[ -x /usr/bin/rustc ] || missing+=(rustc-web)
[ -x /usr/bin/cargo ] || missing+=(cargo-web)
[ -d /usr/lib/rustlib/src/rust/library ] || missing+=(rust-web-src)
[ -x /usr/lib/llvm-19/bin/wasm-ld ] || missing+=(lld-19)
[ -d /usr/lib/wasm32-wasi ] || missing+=(wasi-libc)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then
            sudo=(sudo)
        else
            say "missing Debian packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}"
            exit 1
        fi
    fi
    say "installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2
fi

if ! command -v wasm-component-ld >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/wasm-component-ld" ]; then
    say "installing wasm-component-ld from crates.io"
    cargo install wasm-component-ld --locked --version 0.5.31 >&2
fi
say "Debian guest toolchain ready"
