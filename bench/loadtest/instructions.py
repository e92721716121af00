#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by valgrind's callgrind.

Wall-clock figures on a shared 2-core machine move by more than a change to the request path
is worth; instruction counts do not (the same binary and requests give the same count within
a fraction of a percent, whatever else the machine runs). The kernel's share is not counted.

Each binary serves two runs of sequential keep-alive requests (`GET /items/{0..15}`, the
`x-api-key` rotating over 1,000 clients, as in the load test) under callgrind; the per-request
figure is the difference between the runs' totals over the difference in requests, so start-up
and shutdown cancel out.

  python3 bench/loadtest/instructions.py --vigil target/release/vigil \\
      --guards-dir target/wasm-guests/wasm32-wasip2/release [--baseline OLD] [--floor FORWARD_ONLY]

With `INSTRUCTIONS_KEEP=DIR` in the environment the callgrind profiles are kept there, one per
run (`callgrind_annotate DIR/<binary>-<kind>-<requests>.callgrind` shows where they went).

The guards are compiled once per count into a cache of its own (`VIGIL_CACHE_DIR`), before
the two runs, so that both find them there. Needs valgrind (Debian's `valgrind`). Under
valgrind the guard instance pool is made small (`[sandbox] max_instances`) and one worker
serves: valgrind cannot reserve the pool's usual address space, and runs the threads one at
a time anyway.
"""

import argparse
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import loadtest

STARTUP_TIMEOUT_S = 600


def count(kind, binary, guards_dir, requests):
    """Total instructions callgrind counted for `binary` serving `requests` requests."""
    run_dir = Path(tempfile.mkdtemp(prefix="instructions-"))
    lab = loadtest.Lab(run_dir, binary, guards_dir)
    lab.start_upstream()
    if kind == "floor":
        target = lab.floor_target(binary, workers=1)
        port, command = target.port, target.command
    else:
        target = lab.vigil_target("vigil", kind, "guards-3.toml" if kind == "stock" else None)
        port, command = target.port, target.command
        conf = run_dir / "vigil.toml"
        text = conf.read_text().replace('shutdown_grace = "1s"', 'shutdown_grace = "1s"\nworkers = 1')
        conf.write_text(text + "\n[sandbox]\nmax_instances = 6\nmax_guard_memory_mb = 64\n")
    out = run_dir / "callgrind.out"
    log = open(run_dir / "valgrind.log", "w")
    process = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + command,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not loadtest.port_answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"instructions: {binary} did not start under valgrind:\n"
                                 + (run_dir / "valgrind.log").read_text()[-2000:])
            time.sleep(0.5)
        connection = http.client.HTTPConnection("127.0.0.1", port)
        for i in range(requests):
            connection.request("GET", f"/items/{i % 16}", headers={"x-api-key": f"client-{i % 1000}"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"instructions: {binary} answered {response.status}")
        connection.close()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        lab.stop_all()
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(errors="replace"), re.M) if out.exists() else None
    if not match:
        raise SystemExit(f"instructions: callgrind wrote no totals for {binary} (see {run_dir})")
    keep = os.environ.get("INSTRUCTIONS_KEEP")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(keep) / f"{Path(binary).name}-{kind}-{requests}.callgrind")
    shutil.rmtree(run_dir, ignore_errors=True)
    return int(match.group(1))


def per_request(kind, binary, guards_dir, small, large):
    # Compiling the guards costs billions of instructions; a run that compiles beside one that
    # finds them in the cache would not cancel out. A first run fills a cache of this count's own.
    cache = tempfile.mkdtemp(prefix="instructions-cache-")
    os.environ["VIGIL_CACHE_DIR"] = cache
    try:
        if kind == "stock":
            count(kind, binary, guards_dir, 1)
        return (count(kind, binary, guards_dir, large) - count(kind, binary, guards_dir, small)) / (large - small)
    finally:
        os.environ.pop("VIGIL_CACHE_DIR", None)
        shutil.rmtree(cache, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vigil", required=True, type=Path)
    parser.add_argument("--guards-dir", required=True, type=Path)
    parser.add_argument("--baseline", type=Path, help="another vigil build, counted the same way")
    parser.add_argument("--baseline-guards-dir", type=Path,
                        help="the baseline's own guard builds, when the guard contract changed between "
                             "the two (default: --guards-dir)")
    parser.add_argument("--floor", type=Path, help="the forward_only example: Vigil's transport alone")
    parser.add_argument("--requests", type=lambda s: [int(x) for x in s.split(",")], default=[200, 2000],
                        help="the two runs' request counts (default 200,2000)")
    args = parser.parse_args()
    if args.baseline_guards_dir and not args.baseline:
        parser.error("--baseline-guards-dir: needs --baseline")
    if len(args.requests) != 2 or not 0 < args.requests[0] < args.requests[1]:
        parser.error("--requests: two counts, the first smaller, both more than 0")
    for path in [args.vigil, args.baseline, args.floor]:
        if path and not path.is_file():
            parser.error(f"no such file: {path}")
    if not shutil.which("valgrind"):
        raise SystemExit("instructions: valgrind is not installed (apt-get install valgrind)")
    rows = []
    if args.floor:
        rows.append(("Vigil's transport alone (forward_only)", "floor", args.floor, args.guards_dir))
    builds = [("baseline", args.baseline, args.baseline_guards_dir or args.guards_dir),
              ("measured", args.vigil, args.guards_dir)]
    for label, binary, guards_dir in builds:
        if binary:
            rows += [(f"{label} ({binary.name}), no guards", "none", binary, guards_dir),
                     (f"{label} ({binary.name}), stock chain", "stock", binary, guards_dir)]
    print("| build | instructions per request |")
    print("| --- | ---: |")
    for label, kind, binary, guards_dir in rows:
        figure = per_request(kind, binary.resolve(), guards_dir.resolve(), *args.requests)
        print(f"| {label} | {figure:,.0f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
