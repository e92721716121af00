#!/usr/bin/env bash
# Vigil against nginx and HAProxy, side by side on this machine in one run (bench/loadtest/).
#
#   scripts/loadtest.sh            the full run: a release build of vigil; installs nginx,
#                                  haproxy and wrk (Debian) and oha (crates.io) when missing
#   scripts/loadtest.sh --smoke    seconds-long runs that check the harness works (CI): the
#                                  debug build that cargo test makes, wrk only
#   scripts/loadtest.sh --fleet    only the fleet comparison: two replicas sharing state through
#                                  Redis (behind nginx round-robin) beside two with in-process
#                                  state, one Vigil and nginx, and Redis commands per request
#   scripts/loadtest.sh --tls      only the TLS comparison: nginx and Vigil terminating TLS
#                                  with the same certificate, beside both in plain HTTP:
#                                  requests/s kept alive, and with a handshake per request
#   scripts/loadtest.sh --floor target/release/examples/forward_only
#                                  adds Vigil's transport alone to the comparison (build it
#                                  first: cargo build --release -p vigil --example forward_only)
#
# Any other option goes to bench/loadtest/loadtest.py (--help lists them). Results: the table
# is printed and written with the raw samples to target/loadtest/<UTC time>/results.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'loadtest: %s\n' "$*" >&2; }

smoke=false
one_comparison=false
for arg in "$@"; do
    [ "$arg" = --smoke ] && smoke=true
    if [ "$arg" = --tls ] || [ "$arg" = --fleet ]; then one_comparison=true; fi
done

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
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
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
# The packages start their services where an init system runs; the harness starts its own.
for service in nginx haproxy; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
        say "note: the system's $service service is running; the harness uses ports 18080-18299 only"
    fi
done

scripts/setup.sh
if $smoke; then
    # The debug binary and the guards that `cargo test --workspace` builds (a no-op right after
    # the tests); a plain `cargo build` would unify features differently and recompile.
    cargo test -q --workspace --no-run
    vigil=target/debug/vigil
    # The transport-alone line too, so that the smoke run checks it (cargo test builds examples);
    # the TLS and fleet comparisons have no such line.
    $one_comparison || set -- "$@" --floor "${CARGO_TARGET_DIR:-target}/debug/examples/forward_only"
else
    if ! command -v oha >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/oha" ]; then
        say "installing oha from crates.io (rate-controlled latency with coordinated-omission correction)"
        cargo install oha --locked --version 1.16.0 >&2
    fi
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    cargo build -q --release -p vigil
    cargo build -q -p vigil-guard-artifacts
    vigil=target/release/vigil
fi
guards="${CARGO_TARGET_DIR:-target}/wasm-guests/wasm32-wasip2/release"
[ -n "${CARGO_TARGET_DIR:-}" ] && vigil="$CARGO_TARGET_DIR/${vigil#target/}"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || say "note: cannot raise the open-file limit ($(ulimit -n))"
exec python3 bench/loadtest/loadtest.py --vigil "$vigil" --guards-dir "$guards" "$@"
