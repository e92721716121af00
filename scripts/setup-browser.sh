#!/usr/bin/env bash
# Installs Debian's Chromium, which the collector's dashboard test drives headless, when it is
# missing. Safe to run again: it does nothing when `chromium` is already on the PATH.
# VIGIL_CHROMIUM may name another Chromium or Chrome binary to use instead.
set -euo pipefail

say() { printf 'setup-browser: %s\n' "$*" >&2; }

if [ -n "${VIGIL_CHROMIUM:-}" ]; then
    if [ -x "$VIGIL_CHROMIUM" ]; then
        say "using VIGIL_CHROMIUM=$VIGIL_CHROMIUM"
        exit 0
    fi
    say "VIGIL_CHROMIUM=$VIGIL_CHROMIUM is not an executable file"
    exit 1
fi
if command -v chromium >/dev/null; then
    say "chromium is installed ($(command -v chromium))"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        sudo=(sudo)
    else
        say "chromium is missing and this user cannot install it; as root run: apt-get install chromium"
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null; then
    say "chromium is missing and there is no apt-get here; install Chromium and set VIGIL_CHROMIUM to its path"
    exit 1
fi
say "installing Debian's chromium"
if ! { "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null; }; then
    say "apt-get could not install chromium; install it by hand (apt-get install chromium) or set VIGIL_CHROMIUM"
    exit 1
fi
say "installed $(chromium --version 2>/dev/null || echo chromium)"
