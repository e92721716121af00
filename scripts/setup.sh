#!/usr/bin/env bash
# Installs what building Vigil's WebAssembly guards needs, when it is missing:
#   - C guards: clang-19, lld-19, wasi-libc and libclang-rt-19-dev-wasm32 (Debian);
#   - Python guards: componentize-py 0.25.1 (PyPI);
#   - JavaScript guards: Node.js (Debian's nodejs and npm when there is none) and the
#     componentize-js that example-guards/js/package-lock.json pins, installed by `npm ci` into
#     ${XDG_CACHE_HOME:-~/.cache}/vigil/componentize-js;
#   - Rust guards: rustup's wasm32-wasip2 target, when rustup can download it; otherwise
#     Debian's Rust with std sources (rustc-web, cargo-web, rust-web-src), lld-19, wasi-libc
#     and wasm-component-ld, which build guards with std rebuilt from source.
#   - the metrics test's parser: the Prometheus project's Python client (Debian's
#     python3-prometheus-client), which reads both text formats of /metrics.
#   - the fleet tests' Redis: Debian's redis-server (the tests start their own servers).
#   - the collector tests' PostgreSQL: Debian's postgresql (the tests make their own clusters).
# Safe to run again: it only installs what is absent.
# VIGIL_GUEST_TOOLCHAIN=debian installs and uses the Debian toolchain even where rustup works.
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }

COMPONENTIZE_PY_VERSION=0.25.1

# Installs the Debian packages named as arguments (as root, or through sudo).
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then
            sudo=(sudo)
        else
            say "missing Debian packages: $*; install them as root: apt-get install $*"
            exit 1
        fi
    fi
    say "installing Debian packages: $*"
    "${sudo[@]}" apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "$@" >&2
}

# C guards: clang for wasm32-wasi, its linker, libc and compiler runtime.
c_missing=()
command -v clang-19 >/dev/null || [ -x /usr/lib/llvm-19/bin/clang ] || c_missing+=(clang-19)
[ -x /usr/lib/llvm-19/bin/wasm-ld ] || c_missing+=(lld-19)
[ -d /usr/lib/wasm32-wasi ] || c_missing+=(wasi-libc)
[ -f /usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a ] || c_missing+=(libclang-rt-19-dev-wasm32)
if [ ${#c_missing[@]} -gt 0 ]; then
    apt_install "${c_missing[@]}"
fi
say "C guest toolchain ready"

# Python guards: componentize-py bundles CPython and the guard into a component.
if ! componentize-py --version 2>/dev/null | grep -qF "$COMPONENTIZE_PY_VERSION"; then
    python=$(command -v python3 || true)
    if [ -z "$python" ]; then
        apt_install python3 python3-pip
        python=python3
    fi
    say "installing componentize-py $COMPONENTIZE_PY_VERSION from PyPI"
    # Debian's own Python refuses system-wide pip installs (PEP 668); the user's is fine.
    "$python" -m pip install -q "componentize-py==$COMPONENTIZE_PY_VERSION" >&2 ||
        "$python" -m pip install -q --user --break-system-packages "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
    command -v componentize-py >/dev/null || {
        say "componentize-py was installed but is not on PATH (add ~/.local/bin to PATH)"
        exit 1
    }
fi
say "Python guest toolchain ready"

# JavaScript guards: componentize-js (StarlingMonkey) from npm, at the version the committed
# lock file pins, in a cache directory: tests/artifacts/build/js.rs looks for it there and
# checks that it was installed from the same lock file.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    say "Node.js $(node --version) is older than the 20 some of componentize-js's packages declare; if building the JavaScript guards fails, install Node.js 20 or later"
fi
js_pins="$(cd "$(dirname "$0")/../example-guards/js" && pwd)"
js_dir="${XDG_CACHE_HOME:-$HOME/.cache}/vigil/componentize-js"
# installed-lock.json is written last, so an interrupted install is redone.
if ! cmp -s "$js_pins/package-lock.json" "$js_dir/installed-lock.json"; then
    say "installing componentize-js from npm into $js_dir"
    mkdir -p "$js_dir"
    rm -f "$js_dir/installed-lock.json"
    cp "$js_pins/package.json" "$js_pins/package-lock.json" "$js_dir/"
    (cd "$js_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    cp "$js_pins/package-lock.json" "$js_dir/installed-lock.json"
fi
say "JavaScript guest toolchain ready"

# The metrics test parses /metrics with Prometheus's own parsers, under Debian's Python.
if ! /usr/bin/python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null; then
    apt_install python3-prometheus-client
fi
say "Prometheus text parser ready"

# The fleet tests start their own Redis servers (never a system service): Debian's redis-server,
# with redis-cli (redis-tools) for the load test's command counts.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server
fi
say "Redis for the fleet tests ready"

# The collector tests make their own PostgreSQL clusters with initdb and serve them on loopback
# ports (never the system service): Debian's postgresql, whose programs are under
# /usr/lib/postgresql/VERSION/bin.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    apt_install postgresql
fi
say "PostgreSQL for the collector tests ready"

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
    apt_install "${missing[@]}"
fi

if ! command -v wasm-component-ld >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/wasm-component-ld" ]; then
    say "installing wasm-component-ld from crates.io"
    cargo install wasm-component-ld --locked --version 0.5.31 >&2
fi
say "Debian guest toolchain ready"
