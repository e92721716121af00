#!/usr/bin/env python3
"""Lines per second and peak memory of `vigil replay`, with the stock chain and with no guards
(the log reading alone, the peer in the same run), at two file sizes to show memory is flat.

  python3 bench/replay/replay_bench.py --vigil target/release/vigil \\
      --guards-dir target/wasm-guests/wasm32-wasip2/release [--lines 1000000] [--runs 3]
  python3 bench/replay/replay_bench.py --smoke ...   (20,000 lines, one run: checks it works)

The log is generated: combined format, 1,000 clients (each its own address) requesting
`GET /items/{n}` one millisecond apart, a tenth of them answered 404, so the stock chain
(bench/loadtest/guards-3.toml: rate limit, two sequence rules, enumeration) does its full
work on every line. Peak memory is the process's maximum resident set, from /usr/bin/time.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
STOCK = HERE.parent / "loadtest" / "guards-3.toml"
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def write_log(path, lines):
    """A combined-format log of `lines` requests, 1 ms apart, starting 2026-12-02 10:00."""
    with open(path, "w") as out:
        for i in range(lines):
            ms = i
            seconds = ms // 1000
            h, m, s = 10 + seconds // 3600, (seconds // 60) % 60, seconds % 60
            day = 2 + h // 24
            h %= 24
            client = i % 1000
            status = 404 if i % 10 == 0 else 200
            out.write(
                f"10.{client // 250}.{client % 250}.7 - - [{day:02d}/Dec/2026:{h:02d}:{m:02d}:{s:02d} +0000] "
                f"\"GET /items/{i % 5000} HTTP/1.1\" {status} 512 \"-\" \"bench/{client % 7}\"\n"
            )


def write_config(path, guards_dir, stock):
    text = '[upstream]\nurl = "http://127.0.0.1:1"\n[identity]\nkey = "ip"\n'
    if stock:
        text += STOCK.read_text().replace("@GUARDS@", str(guards_dir))
    path.write_text(text)


def run(vigil, config, log):
    """Seconds and peak resident KiB of one replay; the summary's line count is checked."""
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", vigil, "replay", "--config", str(config), "--json", str(log)],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(done.stdout)
    elapsed, peak_kib = done.stderr.strip().splitlines()[-1].split()
    return summary, float(elapsed), int(peak_kib)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vigil", required=True)
    parser.add_argument("--guards-dir", required=True)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.lines, args.runs = 20_000, 1
    work = Path(tempfile.mkdtemp(prefix="replay-bench-"))
    sizes = [args.lines // 10, args.lines]
    logs = {}
    for n in sizes:
        logs[n] = work / f"access-{n}.log"
        write_log(logs[n], n)
    configs = {}
    for name, stock in [("no guards", False), ("stock chain", True)]:
        configs[name] = work / f"{name.replace(' ', '-')}.toml"
        write_config(configs[name], Path(args.guards_dir).resolve(), stock)

    rows = []
    for name, config in configs.items():
        for n in sizes:
            rates, peaks = [], []
            for _ in range(args.runs):
                summary, elapsed, peak = run(args.vigil, config, logs[n])
                if summary["requests"] != n or summary["unreadable"] != 0:
                    sys.exit(f"replay read {summary['requests']} of {n} lines: {summary['unreadable_first']}")
                rates.append(n / max(elapsed, 0.01))
                peaks.append(peak)
            rows.append((name, n, statistics.median(rates), max(peaks)))

    print("| chain | lines | lines/s (median) | peak memory |")
    print("| --- | ---: | ---: | ---: |")
    for name, n, rate, peak in rows:
        print(f"| {name} | {n:,} | {rate:,.0f} | {peak / 1024:.0f} MiB |")
    floor = {n: rate for name, n, rate, _ in rows if name == "no guards"}
    for name, n, rate, _ in rows:
        if name == "stock chain":
            print(f"stock chain at {n:,} lines: {rate / floor[n]:.2f}x the no-guards rate")


if __name__ == "__main__":
    main()
