#!/usr/bin/env python3
"""Vigil against nginx and HAProxy, side by side on one machine in one run.

Starts one fast upstream (nginx answering from memory) and every target in front of it, then
measures them in rounds (A B C ... A B C ...) so that machine drift hits all of them alike,
and reports medians across rounds:

  * requests per second at saturation (wrk, closed loop),
  * latency p50/p99/p99.9 at one fixed rate below saturation (oha with coordinated-omission
    correction; wrk's closed-loop figures in --smoke),
  * CPU seconds per 10,000 requests (utime + stime of all the target's processes),
  * peak RSS (VmHWM, summed over the target's processes),

then how Vigil's cost grows with the number of guards and with the number of tracked clients.
Results go to a directory (default target/loadtest/<UTC time>/) as results.json and
results.md, and the markdown is printed.

Run it through scripts/loadtest.sh, which installs the tools and builds what it needs.
"""

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1

UPSTREAM_PORT = 18080
BASE_PORT = 18100
ADMIN_BASE_PORT = 18200


def log(message):
    print(f"loadtest: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes


def descendants(root_pid):
    """The pid and every live descendant (nginx's workers), from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(f"/proc/{entry}/stat")
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def stat_fields(path):
    """The fields of a /proc stat file that follow the command name, or None when the process
    or thread is gone. The name may hold spaces and parentheses: fields resume after the last ')'."""
    try:
        with open(path) as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def cpu_ticks(fields):
    """utime + stime from a stat file's fields (see stat_fields), in clock ticks; 0 when gone."""
    return int(fields[11]) + int(fields[12]) if fields else 0


def cpu_seconds(pids):
    """utime + stime of these processes (all their threads), in seconds."""
    return sum(cpu_ticks(stat_fields(f"/proc/{pid}/stat")) for pid in pids) / CLOCK_TICKS


def machine_times(stat_text=None):
    """(busy, total) clock ticks of the whole machine since boot, from /proc/stat's `cpu` line;
    iowait counts as idle."""
    if stat_text is None:
        with open("/proc/stat") as f:
            stat_text = f.read()
    fields = [int(x) for x in stat_text.splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    total = sum(fields[:8])
    return total - fields[3] - fields[4], total


def busy_pct(before, after):
    """Share of the machine's CPU time that was busy between two `machine_times` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total * 100 if total else float("nan")


# A fixed-rate run that keeps the machine busier than this measures queueing for a core (the
# load generator, the upstream and the target share them), not the target's latency.
OVERLOADED_PCT = 90.0


def thread_dirs(pids):
    """The /proc directories of every thread of these processes; gone processes have none."""
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        yield from (f"/proc/{pid}/task/{task}" for task in tasks)


def thread_activity(pids):
    """Context switches (voluntary and not) and CPU seconds of these processes, summed over
    every thread, from /proc: what a process costs its machine while it waits."""
    switches, ticks = 0, 0
    for thread in thread_dirs(pids):
        try:
            with open(f"{thread}/status") as f:
                switches += sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)
        except OSError:
            continue
        ticks += cpu_ticks(stat_fields(f"{thread}/stat"))
    return switches, ticks / CLOCK_TICKS


def thread_cpu(pids):
    """(pid, thread name, CPU seconds) of every live thread of these processes."""
    for pid in pids:
        for thread in thread_dirs([pid]):
            try:
                with open(f"{thread}/comm") as f:
                    name = f.read().strip()
            except OSError:
                continue
            yield pid, name, cpu_ticks(stat_fields(f"{thread}/stat")) / CLOCK_TICKS


def worker_cpu_seconds(pids):
    """CPU seconds of each of Vigil's event-loop threads (named `vigil-worker-N`) in these
    processes, by name; empty for targets without them."""
    return {name: seconds for _, name, seconds in thread_cpu(pids) if name.startswith("vigil-worker-")}


def cpu_by_thread_kind(pids):
    """CPU seconds of these processes by thread kind: the thread's name with its digits
    dropped (`vigil-worker-N`), after its process's (`redis-server/redis-server`), so that a
    fleet's cost is told apart: workers, the Redis store's thread, Redis, the load balancer."""
    processes, kinds = {}, {}
    for pid, name, seconds in thread_cpu(pids):
        if pid not in processes:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    processes[pid] = f.read().strip()
            except OSError:
                continue
        kind = f"{processes[pid]}/" + "".join("N" if c.isdigit() else c for c in name)
        kinds[kind] = kinds.get(kind, 0.0) + seconds
    return kinds


def idle_cost(targets, seconds):
    """Wake-ups (context switches) per second and CPU (% of one core) of each target while no
    request arrives, all measured in the same `seconds`: idle, they do not compete. A sidecar
    runs next to every instance of a service, so what it costs a quiet node matters. With
    `seconds` 0 there is no idle phase: each target's `idle` stays None and no table is
    written (the smoke mode, which checks every figure, always runs the phase)."""
    if seconds == 0:
        return
    log(f"idle cost: {seconds:g} s without requests")
    time.sleep(1)  # let the last run's connections close
    before = {t.name: thread_activity(t.pids()) for t in targets}
    time.sleep(seconds)
    for target in targets:
        switches, cpu = thread_activity(target.pids())
        target.idle = {
            "wakeups_per_s": (switches - before[target.name][0]) / seconds,
            "cpu_pct": (cpu - before[target.name][1]) / seconds * 100,
        }


def peak_rss_mib(pids):
    """Sum of VmHWM over these processes, in MiB. For nginx (master and workers) pages shared
    between processes are counted in each, so the sum is an upper bound."""
    total_kib = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def port_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port, process, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"loadtest: {what} exited with status {process.returncode}; see its log")
        if port_answers(port):
            return
        time.sleep(0.1)
    raise SystemExit(f"loadtest: {what} did not listen on port {port} within {timeout:.0f}s")


def http_get(port, path="/items/1", headers=None, tls=False):
    if tls:
        # The harness's own certificate: the probe checks that the target serves, not its trust.
        context = ssl._create_unverified_context()
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {"x-api-key": "client-probe"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class Target:
    """One thing under measurement, listening on `port`."""

    name: str
    label: str
    port: int
    command: list
    log_path: Path
    admin_port: int = 0
    # Run to completion before `command`: Vigil's `check` compiles the guards into the cache,
    # so that the target's peak RSS is its serving, not a one-time compilation.
    prepare: list = None
    process: subprocess.Popen = None
    samples: dict = field(default_factory=lambda: {"saturation": [], "latency": []})
    idle: dict = None
    # Processes that make up the target with `command` (the replicas behind a load balancer,
    # their Redis): started first, stopped after, measured with it.
    companions: list = field(default_factory=list)
    # Whether the target answers HTTP (Redis does not).
    probe: bool = True
    # Whether it serves HTTPS (with the harness's certificate).
    tls: bool = False

    def start(self):
        for companion in self.companions:
            companion.start()
        # A port answered by a leftover process would be measured in this target's place.
        for port in (self.port, self.admin_port):
            if port and port_answers(port):
                raise SystemExit(
                    f"loadtest: port {port} ({self.label}) is already in use by another process; "
                    f"stop it (`ss -ltnp 'sport = :{port}'` shows which) and run again"
                )
        if self.prepare:
            done = subprocess.run(self.prepare, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(
                    f"loadtest: {self.label}: `{' '.join(self.prepare)}` failed "
                    f"(exit {done.returncode}): {(done.stdout + done.stderr).strip()[-2000:]}"
                )
        log_file = open(self.log_path, "w")
        self.process = subprocess.Popen(
            self.command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for_port(self.port, self.process, self.label)
        if not self.probe:
            return
        status, body = http_get(self.port, tls=self.tls)
        if status != 200:
            raise SystemExit(f"loadtest: {self.label} answered {status} to a probe: {body[:200]!r}")

    def pids(self):
        return descendants(self.process.pid) + [p for c in self.companions for p in c.pids()]

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for companion in self.companions:
            companion.stop()

    def metric(self, phase, key):
        return statistics.median(s[key] for s in self.samples[phase])


def fill(template, **values):
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    return text


class Lab:
    """The upstream and the targets, their configurations written under `run_dir`."""

    def __init__(self, run_dir, vigil, guards_dir):
        self.run_dir = run_dir
        self.vigil = vigil
        self.guards_dir = guards_dir
        self.next_port = BASE_PORT
        self.targets = []
        self.upstream = None

    def _port(self):
        self.next_port += 1
        return self.next_port

    def _config(self, name, template, **values):
        path = self.run_dir / name
        path.write_text(fill(HERE / template, RUN=self.run_dir, **values))
        return path

    def start_upstream(self):
        conf = self._config("upstream.nginx.conf", "upstream.nginx.conf", PORT=UPSTREAM_PORT)
        self.upstream = Target(
            "direct", "direct to the upstream", UPSTREAM_PORT,
            ["nginx", "-p", str(self.run_dir), "-c", str(conf)], self.run_dir / "upstream.log",
        )
        self.upstream.start()
        return self.upstream

    def nginx(self, name, label, template, tls=False):
        port = self._port()
        certificate = self.certificate() if tls else (None, None)
        conf = self._config(template, template, PORT=port, UPSTREAM_PORT=UPSTREAM_PORT,
                            CERT=certificate[0], KEY=certificate[1])
        return self._add(Target(name, label, port, ["nginx", "-p", str(self.run_dir), "-c", str(conf)],
                                self.run_dir / f"{name}.log", tls=tls))

    def certificate(self):
        """The run's TLS certificate and key (ECDSA P-256, for localhost and 127.0.0.1), made
        once with openssl; every TLS target serves the same one."""
        cert, key = self.run_dir / "tls.crt", self.run_dir / "tls.key"
        if not cert.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-days", "2", "-subj", "/CN=localhost",
                 "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                 "-keyout", str(key), "-out", str(cert)],
                capture_output=True, check=True)
        return cert, key

    def haproxy(self, name, label, template):
        port = self._port()
        conf = self._config(template, template, PORT=port, UPSTREAM_PORT=UPSTREAM_PORT, THREADS=CORES)
        return self._add(Target(name, label, port, ["haproxy", "-db", "-f", str(conf)],
                                self.run_dir / f"{name}.log"))

    def vigil_target(self, name, label, guards_file=None, tls=False):
        port = self._port()
        admin_port = ADMIN_BASE_PORT + (port - BASE_PORT)
        text = fill(HERE / "vigil.toml", PORT=port, ADMIN_PORT=admin_port, UPSTREAM_PORT=UPSTREAM_PORT)
        if tls:
            cert, key = self.certificate()
            text += f'\n[listen.tls]\ncert = "{cert}"\nkey = "{key}"\n'
        if guards_file:
            text += "\n" + fill(HERE / guards_file, GUARDS=self.guards_dir)
        conf = self.run_dir / f"{name}.toml"
        conf.write_text(text)
        target = Target(name, label, port, [str(self.vigil), "run", "--config", str(conf)],
                        self.run_dir / f"{name}.log", admin_port=admin_port,
                        prepare=[str(self.vigil), "check", "--config", str(conf)], tls=tls)
        return self._add(target)

    def vigil_replica(self, name, guards_file, fleet, redis_port=None, sync=None):
        """One replica of the fleet `fleet`: Vigil with `guards_file`, sharing state with the
        fleet's other replicas through the Redis on `redis_port` when given (under the fleet's
        key prefix), deciding on views synced every `sync` when given. Not a target of its own:
        a companion of a load balancer."""
        port = self._port()
        admin_port = ADMIN_BASE_PORT + (port - BASE_PORT)
        text = fill(HERE / "vigil.toml", PORT=port, ADMIN_PORT=admin_port, UPSTREAM_PORT=UPSTREAM_PORT)
        if redis_port:
            # The state section is added here, before the guards' tables.
            text += f'\n[state]\nredis = "redis://127.0.0.1:{redis_port}/0"\nredis_prefix = "{fleet}"\n'
            if sync:
                text += f'redis_sync = "{sync}"\n'
        text += "\n" + fill(HERE / guards_file, GUARDS=self.guards_dir)
        conf = self.run_dir / f"{name}.toml"
        conf.write_text(text)
        return Target(name, name, port, [str(self.vigil), "run", "--config", str(conf)],
                      self.run_dir / f"{name}.log", admin_port=admin_port,
                      prepare=[str(self.vigil), "check", "--config", str(conf)])

    def redis(self, name):
        """A Redis of the run's own (no persistence), started with the fleet target."""
        port = self._port()
        data = self.run_dir / name
        data.mkdir(exist_ok=True)
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(data)]
        return Target(name, name, port, command, self.run_dir / f"{name}.log", probe=False)

    def fleet_target(self, name, label, guards_file, with_redis, sync=None):
        """nginx round-robin over two Vigil replicas, with their Redis when `with_redis`,
        syncing views every `sync` when given."""
        redis = self.redis(f"{name}-redis") if with_redis else None
        replicas = [self.vigil_replica(f"{name}-{i}", guards_file, name, redis.port if redis else None, sync)
                    for i in ("a", "b")]
        port = self._port()
        conf = self._config(f"{name}.nginx.conf", "fleet-lb.nginx.conf", NAME=name, PORT=port,
                            REPLICA_A=replicas[0].port, REPLICA_B=replicas[1].port)
        target = Target(name, label, port, ["nginx", "-p", str(self.run_dir), "-c", str(conf)],
                        self.run_dir / f"{name}.log",
                        companions=([redis] if redis else []) + replicas)
        target.redis = redis
        return self._add(target)

    def floor_target(self, binary, workers=CORES):
        """Vigil's transport alone (`proxy/examples/forward_only.rs`): what Vigil's own work
        costs is the difference between it and Vigil without guards."""
        port = self._port()
        command = [str(binary), f"127.0.0.1:{port}", f"http://127.0.0.1:{UPSTREAM_PORT}", str(workers)]
        return self._add(Target("floor", "Vigil's transport alone (forward_only)", port, command,
                                self.run_dir / "floor.log"))

    def _add(self, target):
        self.targets.append(target)
        return target

    def stop_all(self):
        for target in self.targets:
            target.stop()
        if self.upstream:
            self.upstream.stop()


def vigil_tracked_clients(target):
    """`vigil_state_entries{table="clients"}` from the admin API: the clients Vigil tracks."""
    status, body = http_get(target.admin_port, "/metrics", headers={})
    if status != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith("vigil_state_entries") and 'table="clients"' in line:
            return int(float(line.split()[-1]))
    return None


def fleet_fallbacks(target):
    """`vigil_state_backend_fallbacks_total` summed over a fleet target's replicas: state calls
    answered locally because Redis did not answer in time."""
    total = 0
    for replica in target.companions:
        if not replica.admin_port:
            continue
        status, body = http_get(replica.admin_port, "/metrics", headers={})
        for line in body.decode().splitlines() if status == 200 else []:
            if line.startswith("vigil_state_backend_fallbacks_total"):
                total += int(float(line.split()[-1]))
    return total


# ---------------------------------------------------------------------------------------------
# Load generators


@dataclass
class Load:
    threads: int
    connections: int
    duration: float


def wrk(target, load, clients, offset=0, close=False):
    """A closed-loop saturation run; returns requests, seconds, CPU of the target, latency.
    With `close`, every request on a new connection (over TLS, a full handshake each)."""
    pids = target.pids()
    cpu_before, workers_before = cpu_seconds(pids), worker_cpu_seconds(pids)
    command = [
        "wrk", f"-t{load.threads}", f"-c{load.connections}", f"-d{math.ceil(load.duration)}s",
        "-s", str(HERE / "requests.lua"), f"{'https' if target.tls else 'http'}://127.0.0.1:{target.port}",
        "--", str(clients), str(offset), str(load.threads), "close" if close else "keep-alive",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pids) - cpu_before
    workers_after = worker_cpu_seconds(pids)
    lines = [line for line in out.splitlines() if line.startswith("result:")]
    if not lines:
        raise SystemExit(f"loadtest: wrk printed no result for {target.label}:\n{out}")
    result = json.loads(lines[0][len("result:"):])
    errors = sum(result["errors"].values())
    seconds = result["duration_us"] / 1e6
    requests = result["requests"]
    return {
        "rps": requests / seconds,
        "requests": requests,
        "errors": errors,
        "cpu_s": cpu,
        "cpu_s_per_10k": cpu / requests * 10_000 if requests else float("nan"),
        "p50_ms": result["latency_us"]["p50"] / 1000,
        "p99_ms": result["latency_us"]["p99"] / 1000,
        "p99.9_ms": result["latency_us"]["p99.9"] / 1000,
        # Each event loop's share of the run, to tell a lopsided round from a slow one.
        "worker_cpu_s": [workers_after[name] - workers_before.get(name, 0.0) for name in sorted(workers_after)],
    }


def oha(target, rate, connections, duration):
    """An open-loop run at `rate` requests per second; latency is measured from each request's
    scheduled start (coordinated-omission correction). The target's CPU per request at this
    rate is what it costs a node below saturation, where a sidecar spends most of its time."""
    pids = target.pids()
    cpu_before, machine_before = cpu_seconds(pids), machine_times()
    command = [
        "oha", "--no-tui", "--output-format", "json", "-z", f"{duration:g}s",
        "-c", str(connections), "-q", str(rate), "--latency-correction",
        "--wait-ongoing-requests-after-deadline",
        # rand_regex takes '.' literally here; the path spreads over ten object ids.
        "-H", "x-api-key: client-1", "--rand-regex-url", f"http://127.0.0.1:{target.port}/items/[0-9]",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pids) - cpu_before
    machine = busy_pct(machine_before, machine_times())
    result = json.loads(out)
    percentiles = result["latencyPercentiles"]
    statuses = result.get("statusCodeDistribution", {})
    errors = sum(result.get("errorDistribution", {}).values()) + sum(
        n for code, n in statuses.items() if code != "200"
    )
    answered = sum(statuses.values())
    return {
        "rate": rate,
        "rps": result["summary"]["requestsPerSec"],
        "errors": errors,
        "cpu_s_per_10k": cpu / answered * 10_000 if answered else float("nan"),
        "p50_ms": percentiles["p50"] * 1000,
        "p99_ms": percentiles["p99"] * 1000,
        "p99.9_ms": percentiles["p99.9"] * 1000,
        "machine_busy_pct": machine,
    }


def overloaded_runs(rows):
    """Markdown lines naming the fixed-rate runs during which the machine was nearly saturated,
    so that a tail there is read as the machine's, not the target's."""
    runs = [f"{r['label']} round {i} ({s['machine_busy_pct']:.0f}% busy, p50 {s['p50_ms']:.1f} ms, "
            f"p99 {s['p99_ms']:.1f} ms)"
            for r in rows for i, s in enumerate(r["samples"].get("latency", []), 1)
            if s.get("machine_busy_pct", 0) > OVERLOADED_PCT]
    if not runs:
        return []
    return ["", f"Fixed-rate runs with the machine over {OVERLOADED_PCT:g}% busy (the load generator, the "
                "upstream and the target queue for the cores; their latency is not the target's): "
                + "; ".join(runs) + "."]


# A saturation round in which one worker took more than this share of the workers' CPU was
# served lopsided: its figures describe the split as much as the target.
LOPSIDED_SHARE = 0.6


def lopsided_runs(rows):
    """Markdown lines naming the saturation rounds in which one of Vigil's workers did most of
    the work, with each worker's CPU seconds."""
    runs = []
    for r in rows:
        for i, s in enumerate(r["samples"].get("saturation", []), 1):
            split = s.get("worker_cpu_s") or []
            if len(split) > 1 and sum(split) > 0 and max(split) / sum(split) > LOPSIDED_SHARE:
                runs.append(f"{r['label']} round {i} ({' / '.join(f'{x:.1f}' for x in split)} s)")
    if not runs:
        return []
    return ["", f"Saturation rounds with one worker over {LOPSIDED_SHARE:.0%} of the workers' CPU "
                "(CPU seconds per worker): " + "; ".join(runs) + "."]


def latency_run(target, args, rate):
    if args.latency_tool == "oha":
        return oha(target, rate, args.latency_connections, args.duration)
    # Closed loop with few connections: the smoke mode checks the plumbing, not the figures.
    sample = wrk(target, Load(1, args.latency_connections, args.duration), args.clients)
    sample["rate"] = None
    return sample


# ---------------------------------------------------------------------------------------------
# Phases


def in_rounds(targets, rounds, measure, what):
    for round_number in range(1, rounds + 1):
        for target in targets:
            sample = measure(target)
            log(f"{what} round {round_number}/{rounds}: {target.label}: "
                + ", ".join(f"{k} {v:.3g}" for k, v in sample.items() if isinstance(v, float)))
            yield target, sample


def warm_up(targets, load, clients):
    for target in targets:
        wrk(target, Load(load.threads, load.connections, min(load.duration, 2)), clients)


# Vigil's default bound on tracked clients; each table evicts its least recently seen entry.
CLIENT_TABLE_BOUND = 100_000


def prefill(target, clients, load):
    """Sends one request for each of `clients` distinct clients, so Vigil tracks them all; past
    twice the table bound, only that many (the tables are full, and every further new client
    evicts one). Returns the number of requests sent, where the measured runs carry on."""
    goal = min(clients, 2 * CLIENT_TABLE_BOUND)
    offset, estimate = 0, 3000.0
    while offset < goal:
        seconds = max(1.0, min(60.0, (goal - offset) / estimate))
        sample = wrk(target, Load(load.threads, load.connections, seconds), clients, offset)
        offset += sample["requests"]
        estimate = max(sample["rps"], 100.0)
    return offset


def compare(args, lab):
    upstream = lab.upstream
    nginx = lab.nginx("nginx", "nginx proxy_pass", "nginx.conf")
    nginx_lr = lab.nginx("nginx-limit-req", "nginx + limit_req", "nginx-limit-req.conf")
    haproxy = lab.haproxy("haproxy", "HAProxy", "haproxy.cfg")
    haproxy_st = lab.haproxy("haproxy-stick-table", "HAProxy + stick-table rate rule", "haproxy-stick-table.cfg")
    vigil_none = lab.vigil_target("vigil", "Vigil, no guards")
    vigil_stock = lab.vigil_target("vigil-stock", "Vigil, stock chain (3 guards)", "guards-3.toml")
    proxies = [nginx, nginx_lr, haproxy, haproxy_st, vigil_none, vigil_stock]
    if args.floor:
        proxies.insert(4, lab.floor_target(args.floor.resolve()))
    for target in proxies:
        target.start()
    targets = [upstream] + proxies
    load = Load(args.threads, args.connections, args.duration)
    log("warming up")
    warm_up(targets, load, args.clients)
    for target, sample in in_rounds(targets, args.rounds, lambda t: wrk(t, load, args.clients), "saturation"):
        target.samples["saturation"].append(sample)
    rate = fixed_rate_phase(args, targets)
    idle_cost(targets, args.idle)
    rows = []
    for target in targets:
        pids = target.pids()
        rows.append({
            "target": target.name,
            "label": target.label,
            "rps": target.metric("saturation", "rps"),
            "cpu_s_per_10k": target.metric("saturation", "cpu_s_per_10k"),
            "cpu_s_per_10k_at_rate": target.metric("latency", "cpu_s_per_10k"),
            "p50_ms": target.metric("latency", "p50_ms"),
            "p99_ms": target.metric("latency", "p99_ms"),
            "p99.9_ms": target.metric("latency", "p99.9_ms"),
            "peak_rss_mib": peak_rss_mib(pids),
            "processes": len(pids),
            "idle": target.idle,
            "errors": sum(s["errors"] for phase in target.samples.values() for s in phase),
            "samples": target.samples,
        })
    for target in proxies:
        target.stop()
    lab.targets.clear()
    by_name = {row["target"]: row for row in rows}
    for row in rows:
        for peer in ("nginx", "nginx-limit-req"):
            row[f"rps_vs_{peer}"] = row["rps"] / by_name[peer]["rps"]
            row[f"p99_vs_{peer}"] = row["p99_ms"] / by_name[peer]["p99_ms"]
    return {"rate": rate, "rows": rows}


def redis_calls(port):
    """Commands Redis has run since its last CONFIG RESETSTAT, from INFO commandstats."""
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "commandstats"],
                         capture_output=True, text=True, check=True).stdout
    calls = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_"):].split(":", 1)
            calls[name] = int(dict(f.split("=") for f in fields.split(","))["calls"])
    return calls


def compare_fleet(args, lab):
    """Two replicas sharing state through Redis beside the same two replicas with in-process
    state, one Vigil alone and nginx, all with the stock chain (the replicas behind nginx
    round-robin), in the same rounds; and the Redis commands each request cost."""
    upstream = lab.upstream
    nginx = lab.nginx("nginx", "nginx proxy_pass", "nginx.conf")
    vigil_stock = lab.vigil_target("vigil-stock", "Vigil, stock chain, in-process state", "guards-3.toml")
    local = lab.fleet_target("fleet-local", "nginx → 2 Vigil replicas, in-process state", "guards-3.toml", False)
    shared = lab.fleet_target("fleet-redis", "nginx → 2 Vigil replicas, state in Redis (exact)", "guards-3.toml", True)
    synced = lab.fleet_target("fleet-redis-sync", "nginx → 2 Vigil replicas, state in Redis, redis_sync = 100ms",
                              "guards-3.toml", True, sync="100ms")
    synced_1s = lab.fleet_target("fleet-redis-sync-1s", "nginx → 2 Vigil replicas, state in Redis, redis_sync = 1s",
                                 "guards-3.toml", True, sync="1s")
    proxies = [nginx, vigil_stock, local, shared, synced, synced_1s]
    if args.baseline:
        # The same Redis-backed fleets on the build before a change, in the same rounds.
        measured = lab.vigil
        lab.vigil = args.baseline.resolve()
        for name, label, sync in (("base-fleet-redis", "exact", None),
                                  ("base-fleet-redis-sync", "redis_sync = 100ms", "100ms"),
                                  ("base-fleet-redis-sync-1s", "redis_sync = 1s", "1s")):
            proxies.append(lab.fleet_target(name, f"baseline build ({lab.vigil.name}): 2 replicas, Redis, {label}",
                                            "guards-3.toml", True, sync=sync))
        lab.vigil = measured
    for target in proxies:
        target.start()
    targets = [upstream] + proxies
    load = Load(args.threads, args.connections, args.duration)
    log("warming up")
    warm_up(targets, load, args.clients)
    commands = {target.name: [] for target in proxies if getattr(target, "redis", None)}

    def by_thread(target, run):
        """`run()`'s sample, with the fleet's CPU per request by thread kind."""
        pids = target.pids()
        before = cpu_by_thread_kind(pids)
        sample = run()
        after = cpu_by_thread_kind(pids)
        sample["cpu_us_per_request_by_thread"] = {
            kind: (seconds - before.get(kind, 0.0)) * 1e6 / max(1, sample["requests"])
            for kind, seconds in sorted(after.items())}
        return sample

    def measure(target):
        if not target.companions:
            return wrk(target, load, args.clients)
        if target.name not in commands:
            return by_thread(target, lambda: wrk(target, load, args.clients))
        subprocess.run(["redis-cli", "-p", str(target.redis.port), "config", "resetstat"],
                       capture_output=True, check=True)
        fallbacks = fleet_fallbacks(target)
        sample = by_thread(target, lambda: wrk(target, load, args.clients))
        calls = redis_calls(target.redis.port)
        commands[target.name].append({"requests": sample["requests"], "calls": calls,
                                      "fallbacks": fleet_fallbacks(target) - fallbacks})
        sample["redis_commands_per_request"] = sum(calls.values()) / max(1, sample["requests"])
        sample["fallbacks"] = commands[target.name][-1]["fallbacks"]
        return sample

    for target, sample in in_rounds(targets, args.rounds, measure, "saturation"):
        target.samples["saturation"].append(sample)
    rate = fixed_rate_phase(args, targets)
    rows = []
    for target in targets:
        rows.append({"target": target.name, "label": target.label, **saturation_row(target),
                     "p99_ms": target.metric("latency", "p99_ms"),
                     "samples": target.samples})
    for target in proxies:
        target.stop()
    lab.targets.clear()
    by_name = {row["target"]: row for row in rows}
    for row in rows:
        row["rps_vs_nginx"] = row["rps"] / by_name["nginx"]["rps"]
        row["rps_vs_fleet_local"] = row["rps"] / by_name["fleet-local"]["rps"]
        row["p99_vs_fleet_local"] = row["p99_ms"] / by_name["fleet-local"]["p99_ms"]
    redis_commands = {}
    for name, samples in commands.items():
        by_command = {}
        for c in samples:
            for command, n in c["calls"].items():
                by_command.setdefault(command, []).append(n / max(1, c["requests"]))
        redis_commands[name] = {
            "per_request": statistics.median(sum(c["calls"].values()) / max(1, c["requests"]) for c in samples),
            "by_name": {k: statistics.median(v) for k, v in sorted(by_command.items())},
            "fallbacks_per_10k": statistics.median(c["fallbacks"] * 10_000 / max(1, c["requests"]) for c in samples),
        }
    return {"rate": rate, "rows": rows, "redis_commands": redis_commands}


def fleet_markdown(report):
    fleet = report["fleet"]
    settings = report["settings"]
    lines = [
        f"# Fleet state: two replicas with Redis, {report['date']}",
        "",
        f"Medians of {settings['rounds']} rounds of {settings['duration']:g} s (wrk, "
        f"{settings['connections']} connections, {settings['clients']} clients); p99 "
        + (f"at {fleet['rate']} requests/s (oha, coordinated-omission corrected)" if settings["latency_tool"] == "oha"
           else f"closed loop with {settings['latency_connections']} connections (wrk)")
        + ". Every Vigil runs the stock chain "
        "(guards-3.toml); the replicas sit behind nginx round-robin.",
        "",
        "| target | requests/s | × nginx | × 2 replicas in-process | p99 ms | × 2 replicas in-process | CPU s / 10k | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in fleet["rows"]:
        lines.append(
            f"| {row['label']} | {row['rps']:.0f} | {row['rps_vs_nginx']:.2f} | {row['rps_vs_fleet_local']:.2f} "
            f"| {row['p99_ms']:.2f} | {row['p99_vs_fleet_local']:.2f} | {row['cpu_s_per_10k']:.2f} | {row['errors']} |")
    lines.append("")
    for row in fleet["rows"]:
        kinds = {}
        for sample in row["samples"]["saturation"]:
            for kind, us in sample.get("cpu_us_per_request_by_thread", {}).items():
                kinds.setdefault(kind, []).append(us)
        shown = {k: statistics.median(v) for k, v in kinds.items() if statistics.median(v) >= 0.5}
        if shown:
            lines += [f"CPU µs per request by thread, {row['target']}: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in sorted(shown.items(), key=lambda kv: -kv[1])), ""]
    for name, stats in fleet["redis_commands"].items():
        lines += [f"Redis commands per request, {name} (INFO commandstats): {stats['per_request']:.2f} — "
                  + ", ".join(f"{k} {v:.2f}" for k, v in stats["by_name"].items())
                  + f"; state calls answered locally because Redis was late: {stats['fallbacks_per_10k']:.1f} per 10k requests", ""]
    return "\n".join(lines)


def compare_tls(args, lab):
    """TLS termination: nginx and Vigil serving the same certificate, beside both in plain
    HTTP, in the same rounds: requests per second on kept-alive TLS connections, then with
    a new connection (a full handshake) for every request."""
    targets = [
        lab.nginx("nginx", "nginx proxy_pass, plain HTTP", "nginx.conf"),
        lab.nginx("nginx-tls", "nginx proxy_pass, TLS", "nginx-tls.conf", tls=True),
        lab.vigil_target("vigil", "Vigil, no guards, plain HTTP"),
        lab.vigil_target("vigil-tls", "Vigil, no guards, TLS", tls=True),
        lab.vigil_target("vigil-tls-stock", "Vigil, stock chain (3 guards), TLS", "guards-3.toml", tls=True),
    ]
    for target in targets:
        target.start()
    load = Load(args.threads, args.connections, args.duration)
    log("warming up")
    warm_up(targets, load, args.clients)
    for phase, close in (("saturation", False), ("handshakes", True)):
        for target, sample in in_rounds(targets, args.rounds,
                                        lambda t: wrk(t, load, args.clients, close=close), phase):
            target.samples.setdefault(phase, []).append(sample)
    rows = []
    for target in targets:
        rows.append({
            "target": target.name, "label": target.label, "tls": target.tls,
            "rps": target.metric("saturation", "rps"),
            "cpu_s_per_10k": target.metric("saturation", "cpu_s_per_10k"),
            "p99_ms": target.metric("saturation", "p99_ms"),
            "handshakes_per_s": target.metric("handshakes", "rps"),
            "cpu_s_per_10k_handshakes": target.metric("handshakes", "cpu_s_per_10k"),
            "errors": sum(s["errors"] for phase in target.samples.values() for s in phase),
            "samples": target.samples,
        })
        target.stop()
    lab.targets.clear()
    by_name = {row["target"]: row for row in rows}
    for row in rows:
        peer = by_name["nginx-tls" if row["tls"] else "nginx"]
        row["rps_vs_nginx_same_transport"] = row["rps"] / peer["rps"]
        row["handshakes_vs_nginx_same_transport"] = row["handshakes_per_s"] / peer["handshakes_per_s"]
    return {"rows": rows}


def tls_markdown(report):
    settings = report["settings"]
    lines = [
        f"# TLS termination, {report['date']}",
        "",
        f"Medians of {settings['rounds']} rounds of {settings['duration']:g} s (wrk, {settings['threads']} "
        f"threads, {settings['connections']} connections, {settings['clients']} clients). Every TLS target "
        "serves the same ECDSA P-256 certificate; wrk negotiates TLS 1.3 and HTTP/1.1. Kept alive: one "
        "handshake per connection, then requests. New connection per request: `Connection: close`, a full "
        "handshake each (no session resumption). × nginx compares with nginx on the same transport.",
        "",
        "| target | kept alive: requests/s | × nginx | p99 ms | CPU s / 10k | new connection per request: "
        "requests/s | × nginx | CPU s / 10k | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["tls"]["rows"]:
        lines.append(
            f"| {row['label']} | {row['rps']:.0f} | {row['rps_vs_nginx_same_transport']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['cpu_s_per_10k']:.2f} | {row['handshakes_per_s']:.0f} "
            f"| {row['handshakes_vs_nginx_same_transport']:.2f} | {row['cpu_s_per_10k_handshakes']:.2f} "
            f"| {row['errors']} |")
    return "\n".join(lines + [""])


def check_fleet_smoke(report):
    """The fleet smoke run's assertions: every target answered every request 2xx, each fleet's
    CPU was read by thread, and each fleet on Redis used it. Returns (rows checked, problems)."""
    fleet = report["fleet"]
    problems = []
    for row in fleet["rows"]:
        wrong = []
        if row["errors"]:
            wrong.append(f"{row['errors']} failed or non-2xx requests")
        if not row["rps"] > 0:
            wrong.append("no requests per second measured")
        samples = row["samples"]["saturation"]
        if row["target"].startswith(("fleet", "base-fleet")) and not any(
                any(kind.endswith("/vigil-worker-N") for kind in s.get("cpu_us_per_request_by_thread", {}))
                for s in samples):
            wrong.append("no CPU read for the replicas' workers")
        stats = fleet["redis_commands"].get(row["target"])
        if stats is not None and not stats["per_request"] > 0:
            wrong.append("no Redis command counted")
        if wrong:
            problems.append(f"{row['label']}: {'; '.join(wrong)}")
    return len(fleet["rows"]), problems


def check_tls_smoke(report):
    """Every TLS comparison target answered, without errors, in both phases."""
    problems = []
    for row in report["tls"]["rows"]:
        if row["errors"]:
            problems.append(f"{row['label']}: {row['errors']} errors")
        if not (row["rps"] > 0 and row["handshakes_per_s"] > 0):
            problems.append(f"{row['label']}: no requests answered")
    return len(report["tls"]["rows"]), problems


def fixed_rate_phase(args, targets):
    """Latency and CPU of every target at one rate below saturation (`--rate`, else
    `--rate-fraction` of the slowest target's saturation rate), in rounds. Returns the rate."""
    slowest = min(t.metric("saturation", "rps") for t in targets)
    rate = args.rate or int(max(100, round(slowest * args.rate_fraction / 100, -2)))
    log(f"latency at {rate} requests/s ({args.latency_tool})")
    for target, sample in in_rounds(targets, args.rounds, lambda t: latency_run(t, args, rate), "latency"):
        target.samples["latency"].append(sample)
    return rate


def saturation_row(target):
    """What every saturation-only table reports of a target: medians of its runs, its peak RSS
    and every error of those runs."""
    return {
        "rps": target.metric("saturation", "rps"),
        "cpu_s_per_10k": target.metric("saturation", "cpu_s_per_10k"),
        "p99_ms_closed_loop": target.metric("saturation", "p99_ms"),
        "peak_rss_mib": peak_rss_mib(target.pids()),
        "errors": sum(s["errors"] for s in target.samples["saturation"]),
    }


def compare_builds(args, lab):
    """Before and after: the `--baseline` build and the `--vigil` build, each without guards
    and with the stock chain, alternating with nginx and nginx + limit_req in the same rounds:
    saturation, then latency and CPU at a fixed rate."""
    peers = [lab.nginx("nginx", "nginx proxy_pass", "nginx.conf"),
             lab.nginx("nginx-limit-req", "nginx + limit_req", "nginx-limit-req.conf")]
    builds = []
    baseline_guards = (args.baseline_guards_dir or args.guards_dir).resolve()
    for build, binary, guards in (("baseline", args.baseline.resolve(), baseline_guards),
                                  ("measured", lab.vigil, lab.guards_dir)):
        measured = (lab.vigil, lab.guards_dir)
        lab.vigil, lab.guards_dir = binary, guards
        builds.append(lab.vigil_target(f"{build}", f"{build} build ({binary.name}), no guards"))
        builds.append(lab.vigil_target(f"{build}-stock", f"{build} build ({binary.name}), stock chain",
                                       "guards-3.toml"))
        lab.vigil, lab.guards_dir = measured
    targets = peers + builds
    for target in targets:
        target.start()
    load = Load(args.threads, args.connections, args.duration)
    warm_up(targets, load, args.clients)
    for target, sample in in_rounds(targets, args.rounds, lambda t: wrk(t, load, args.clients), "builds"):
        target.samples["saturation"].append(sample)
    rate = fixed_rate_phase(args, targets)
    idle_cost(targets, args.idle)
    nginx_rps = {t.name: t.metric("saturation", "rps") for t in peers}
    rows = []
    for target in targets:
        row = {"target": target.name, "label": target.label, **saturation_row(target), "idle": target.idle,
               "rate": rate, "samples": target.samples,
               "cpu_s_per_10k_at_rate": target.metric("latency", "cpu_s_per_10k"),
               "p99_ms": target.metric("latency", "p99_ms")}
        row["rps_vs_nginx"] = row["rps"] / nginx_rps["nginx"]
        row["rps_vs_nginx-limit-req"] = row["rps"] / nginx_rps["nginx-limit-req"]
        rows.append(row)
        target.stop()
    lab.targets.clear()
    return rows


NOOP_GUARDS = "3 that do nothing"


def guard_chains(guard_counts, guards_dir):
    """The chains the guard scaling measures: (row key, target name, label, guards file). Beside
    the three stock guards, three that do nothing, which tell what the calls cost by themselves,
    when the guards directory has them (the test guards are built beside the stock ones)."""
    chains = [(n, f"vigil-{n}-guards", f"{n} guards", f"guards-{n}.toml" if n else None)
              for n in guard_counts]
    if 3 in guard_counts:
        if (guards_dir / "noop.wasm").is_file():
            chains.append((NOOP_GUARDS, "vigil-3-noop-guards", NOOP_GUARDS, "guards-3-noop.toml"))
        else:
            log(f"no noop.wasm in {guards_dir}: the guard scaling runs without the guards that do nothing")
    return chains


def scale_guards(args, lab):
    load = Load(args.threads, args.connections, args.duration)
    chains = guard_chains(args.guard_counts, lab.guards_dir)
    targets = [lab.vigil_target(name, label, file) for _, name, label, file in chains]
    for target in targets:
        target.start()
    warm_up(targets, load, args.clients)
    for target, sample in in_rounds(targets, args.rounds, lambda t: wrk(t, load, args.clients), "guards"):
        target.samples["saturation"].append(sample)
    rows = []
    for (n, *_), target in zip(chains, targets):
        rows.append({"guards": n, **saturation_row(target)})
        target.stop()
    lab.targets.clear()
    base = rows[0]
    for row in rows:
        row["cpu_vs_0_guards"] = row["cpu_s_per_10k"] / base["cpu_s_per_10k"]
    return rows


def scale_clients(args, lab):
    load = Load(args.threads, args.connections, args.duration)
    targets = [
        lab.vigil_target(f"vigil-{n}-clients", f"{n:,} clients", "guards-3.toml")
        for n in args.client_counts
    ]
    rows = []
    clients_of = {target.name: n for n, target in zip(args.client_counts, targets)}
    # Where each target's request stream goes on, so every run brings clients in turn.
    offsets = {}
    for n, target in zip(args.client_counts, targets):
        target.start()
        log(f"prefilling {n:,} clients")
        started = time.monotonic()
        offsets[target.name] = prefill(target, n, load)
        log(f"sent {offsets[target.name]:,} requests in {time.monotonic() - started:.0f}s; "
            f"tracked {vigil_tracked_clients(target)}; VmHWM {peak_rss_mib(target.pids()):.1f} MiB")

    def measure(target):
        sample = wrk(target, load, clients_of[target.name], offsets[target.name])
        offsets[target.name] += sample["requests"]
        return sample

    for target, sample in in_rounds(targets, args.rounds, measure, "clients"):
        target.samples["saturation"].append(sample)
    for n, target in zip(args.client_counts, targets):
        rows.append({"clients": n, "tracked": vigil_tracked_clients(target), **saturation_row(target)})
        target.stop()
    lab.targets.clear()
    return rows


# ---------------------------------------------------------------------------------------------
# Report


def machine_facts():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])

    def version(command):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {
        "cores": CORES,
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "nginx": version(["nginx", "-v"]),
        "haproxy": version(["haproxy", "-v"]),
        "wrk": version(["wrk", "-v"]),
        "oha": version(["oha", "--version"]),
        "vigil_commit": commit,
    }


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def markdown(report):
    args = report["settings"]
    out = []
    if report.get("builds"):
        rate = report["builds"][0]["rate"]
        out.append(f"Builds compared: {args['rounds']} rounds of {args['duration']:g} s, wrk -t{args['threads']} "
                   f"-c{args['connections']} over {args['clients']:,} clients at saturation; then "
                   f"{rate:,} requests/s with {args['latency_tool']}, {args['latency_connections']} connections.")
        out.append("")
        out.append("| target | req/s at saturation | vs nginx | vs nginx+limit_req | CPU s / 10k req "
                   f"| CPU s / 10k req at {rate:,}/s | p99 ms at {rate:,}/s | peak RSS MiB | errors |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in report["builds"]:
            out.append(f"| {r['label']} | {r['rps']:,.0f} | {r['rps_vs_nginx']:.2f}× | {r['rps_vs_nginx-limit-req']:.2f}× "
                       f"| {r['cpu_s_per_10k']:.3f} | {r['cpu_s_per_10k_at_rate']:.3f} | {r['p99_ms']:.3f} "
                       f"| {r['peak_rss_mib']:.1f} | {r['errors']} |")
        out.extend(overloaded_runs(report["builds"]))
        out.extend(lopsided_runs(report["builds"]))
        out.extend(idle_table(report["builds"], args))
        return "\n".join(out) + "\n"
    compare_rows = report["compare"]["rows"]
    out.append(f"Rounds: {args['rounds']}, {args['duration']:g} s per run; saturation with wrk "
               f"-t{args['threads']} -c{args['connections']} over {args['clients']:,} clients; latency at "
               f"{report['compare']['rate']:,} requests/s with {args['latency_tool']}"
               + (" (coordinated-omission corrected)" if args["latency_tool"] == "oha" else " (closed loop, uncorrected)")
               + f", {args['latency_connections']} connections.")
    out.append("")
    out.append("| target | req/s at saturation | vs nginx | vs nginx+limit_req | p50 ms | p99 ms | p99.9 ms "
               "| p99 vs nginx | p99 vs nginx+limit_req | CPU s / 10k req | CPU s / 10k req at the fixed rate "
               "| peak RSS MiB | errors |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in compare_rows:
        out.append(
            f"| {r['label']} | {r['rps']:,.0f} | {r['rps_vs_nginx']:.2f}× | {r['rps_vs_nginx-limit-req']:.2f}× "
            f"| {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p99.9_ms']:.3f} | {r['p99_vs_nginx']:.2f}× "
            f"| {r['p99_vs_nginx-limit-req']:.2f}× | {r['cpu_s_per_10k']:.3f} | {r['cpu_s_per_10k_at_rate']:.3f} "
            f"| {r['peak_rss_mib']:.1f} ({r['processes']} proc) | {r['errors']} |")
    out.extend(overloaded_runs(compare_rows))
    out.extend(lopsided_runs(compare_rows))
    out.extend(idle_table(compare_rows, args))
    if report.get("guards"):
        out.append("")
        out.append("| Vigil, guards | req/s at saturation | CPU s / 10k req | CPU vs 0 guards | p99 ms (closed loop) | peak RSS MiB | errors |")
        out.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in report["guards"]:
            out.append(f"| {r['guards']} | {r['rps']:,.0f} | {r['cpu_s_per_10k']:.3f} | {r['cpu_vs_0_guards']:.2f}× "
                       f"| {r['p99_ms_closed_loop']:.2f} | {r['peak_rss_mib']:.1f} | {r['errors']} |")
    if report.get("clients"):
        out.append("")
        out.append("| Vigil (stock chain), distinct clients | tracked after the run | req/s at saturation | CPU s / 10k req | peak RSS MiB | errors |")
        out.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in report["clients"]:
            tracked = f"{r['tracked']:,}" if r["tracked"] is not None else "?"
            out.append(f"| {r['clients']:,} | {tracked} | {r['rps']:,.0f} | {r['cpu_s_per_10k']:.3f} "
                       f"| {r['peak_rss_mib']:.1f} | {r['errors']} |")
    out.append("")
    out.append("Targets:")
    for line in report["targets"]:
        out.append(f"- {line}")
    return "\n".join(out) + "\n"


def idle_table(rows, args):
    """Markdown lines of the idle phase: each target's wake-ups and CPU with no requests."""
    if not args["idle"]:
        return []
    out = ["", f"Idle, {args['idle']:g} s without requests after the runs (all threads of the target's processes):", "",
           "| target | wake-ups / s | CPU % of a core |", "| --- | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['label']} | {r['idle']['wakeups_per_s']:,.1f} | {r['idle']['cpu_pct']:.2f} |")
    return out


def verdicts(report):
    rows = {r["target"]: r for r in report["compare"]["rows"]}
    lines = []

    def check(name, value, op, bound, what):
        met = value >= bound if op == ">=" else value <= bound
        lines.append(f"{name}: {what} {value:.2f}× (target {op} {bound}×): {'met' if met else 'missed'}")

    v, s = rows["vigil"], rows["vigil-stock"]
    check("Vigil, no guards", v["rps_vs_nginx"], ">=", 0.9, "req/s vs nginx")
    check("Vigil, no guards", v["p99_vs_nginx"], "<=", 1.2, "p99 vs nginx")
    check("Vigil, stock chain", s["rps_vs_nginx-limit-req"], ">=", 0.8, "req/s vs nginx+limit_req")
    check("Vigil, stock chain", s["p99_vs_nginx-limit-req"], "<=", 1.5, "p99 vs nginx+limit_req")
    hundred_k = [r for r in report.get("clients", []) if r["clients"] == 100_000]
    if hundred_k:
        rss = hundred_k[0]["peak_rss_mib"]
        lines.append(f"Peak RSS with 100,000 tracked clients: {rss:.1f} MiB (target <= 150 MiB): "
                     f"{'met' if rss <= 150 else 'missed'}")
    return lines


def check_smoke(report):
    """The smoke mode's assertions, one per measured row: every request answered 2xx, every
    figure read, and Vigil tracking the clients sent. Returns (rows checked, problems)."""
    problems = []
    rows = (report.get("compare", {}).get("rows", []) + report.get("builds", [])
            + report.get("guards", []) + report.get("clients", []))
    for row in rows:
        name = row.get("label") or f"{row.get('guards', row.get('clients'))} ({'guards' if 'guards' in row else 'clients'})"
        wrong = []
        if row["errors"]:
            wrong.append(f"{row['errors']} failed or non-2xx requests")
        if not row["rps"] > 0:
            wrong.append("no requests per second measured")
        if not row["cpu_s_per_10k"] > 0:
            wrong.append("no CPU time read")
        if "cpu_s_per_10k_at_rate" in row and not row["cpu_s_per_10k_at_rate"] > 0:
            wrong.append("no CPU time read at the fixed rate")
        if not row["peak_rss_mib"] > 0:
            wrong.append("no peak RSS read")
        if "idle" in row and row["idle"] is None and report["settings"]["idle"]:
            wrong.append("no idle figures read")
        if "tracked" in row and (row["tracked"] is None or row["tracked"] < min(row["clients"], CLIENT_TABLE_BOUND) * 0.9):
            wrong.append(f"Vigil tracks {row['tracked']} clients")
        if wrong:
            problems.append(f"{name}: {'; '.join(wrong)}")
    return len(rows), problems


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vigil", required=True, type=Path, help="the vigil binary to measure")
    parser.add_argument("--guards-dir", required=True, type=Path, help="directory of the compiled stock guards")
    parser.add_argument("--out", type=Path, help="results directory (default target/loadtest/<UTC time>)")
    parser.add_argument("--smoke", action="store_true", help="tiny runs that check the harness, not the figures")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--threads", type=int, default=CORES, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections at saturation")
    parser.add_argument("--clients", type=int, default=1000, help="distinct clients in the comparison")
    parser.add_argument("--rate", type=int, help="latency phase rate (default: --rate-fraction of the slowest target)")
    parser.add_argument("--rate-fraction", type=float, default=50, help="percent of the slowest saturation rate")
    parser.add_argument("--latency-tool", choices=["oha", "wrk"], default="oha")
    parser.add_argument("--latency-connections", type=int, default=16)
    parser.add_argument("--guard-counts", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 3, 8])
    parser.add_argument("--client-counts", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--idle", type=float, default=10.0,
                        help="seconds of the idle phase: wake-ups and CPU of every target with no requests "
                             "(0: no idle phase)")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--fleet", action="store_true",
                        help="only the fleet comparison: two replicas sharing state through Redis beside two "
                             "with in-process state, one Vigil and nginx (needs redis-server and redis-cli)")
    parser.add_argument("--baseline", type=Path,
                        help="another vigil build: measure it against --vigil (before and after a change), "
                             "each with no guards and the stock chain, beside nginx; saturation only. "
                             "With --fleet: its Redis-backed fleets beside those of --vigil")
    parser.add_argument("--baseline-guards-dir", type=Path,
                        help="the stock guards the --baseline build runs (default --guards-dir): "
                             "for a change to the guards or to what the host accepts of them")
    parser.add_argument("--floor", type=Path,
                        help="the forward_only example (cargo build --release -p vigil --example "
                             "forward_only): Vigil's transport with none of its own work, measured beside "
                             "the others so that Vigil's own cost is told from its HTTP stack's")
    parser.add_argument("--tls", action="store_true",
                        help="only the TLS comparison: nginx and Vigil terminating TLS with the same certificate, "
                             "beside both in plain HTTP: requests/s kept alive and with a handshake per request")
    args = parser.parse_args(argv)
    if args.fleet and args.floor:
        parser.error("--fleet: not with --floor")
    if args.fleet and args.baseline_guards_dir:
        parser.error("--fleet: the --baseline build runs the same guards; not with --baseline-guards-dir")
    if args.tls and (args.fleet or args.baseline or args.floor):
        parser.error("--tls: not with --fleet, --baseline or --floor")
    if args.floor and args.baseline:
        parser.error("--floor: only in the comparison run, not with --baseline")
    if args.floor and not args.floor.is_file():
        parser.error(f"--floor: no such file: {args.floor}")
    if args.baseline_guards_dir and not args.baseline:
        parser.error("--baseline-guards-dir: only with --baseline")
    # Refused before any target starts: a bad value found after the runs would lose them.
    for name, value, positive in [("--rounds", args.rounds, True), ("--duration", args.duration, True),
                                  ("--threads", args.threads, True), ("--connections", args.connections, True),
                                  ("--clients", args.clients, True), ("--latency-connections", args.latency_connections, True),
                                  ("--rate-fraction", args.rate_fraction, True), ("--idle", args.idle, False)]:
        if value < 0 or (positive and value == 0):
            parser.error(f"{name}: must be {'more than 0' if positive else '0 or more'}, got {value:g}")
    if args.rate is not None and args.rate <= 0:
        parser.error(f"--rate: must be more than 0, got {args.rate}")
    if args.smoke:
        args.rounds, args.duration, args.latency_tool, args.idle = 1, 1.0, "wrk", 1.0
        args.guard_counts, args.client_counts = [0, 1], [1_000]
    for count in args.guard_counts:
        if count and not (HERE / f"guards-{count}.toml").exists():
            parser.error(f"--guard-counts: no bench/loadtest/guards-{count}.toml")
    return args


def stop_on_sigterm(signum, frame):
    # SystemExit unwinds through main's `finally`, which stops every target it started.
    raise SystemExit(f"loadtest: stopped by signal {signum}")


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    # The TLS comparison is closed-loop only (wrk): it needs no oha.
    tools = ["nginx", "wrk"] + (["oha"] if args.latency_tool == "oha" and not args.tls else [])
    tools += ["redis-server", "redis-cli"] if args.fleet else ["openssl"] if args.tls else ["haproxy"]
    for tool in tools:
        if not shutil.which(tool):
            raise SystemExit(f"loadtest: {tool} is not installed (scripts/loadtest.sh installs it)")
    stamp = datetime.datetime.now(datetime.timezone.utc)
    run_dir = args.out or ROOT / "target" / "loadtest" / stamp.strftime("%Y%m%dT%H%M%SZ")
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    lab = Lab(run_dir, args.vigil.resolve(), args.guards_dir.resolve())
    report = {
        "date": stamp.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "load_before": load_average(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    log(f"results in {run_dir}; load average {report['load_before']}")
    try:
        lab.start_upstream()
        if args.fleet:
            report["fleet"] = compare_fleet(args, lab)
        elif args.tls:
            report["tls"] = compare_tls(args, lab)
        elif args.baseline:
            report["builds"] = compare_builds(args, lab)
        else:
            report["compare"] = compare(args, lab)
        if not args.skip_scaling and not args.baseline and not args.fleet and not args.tls:
            report["guards"] = scale_guards(args, lab)
            report["clients"] = scale_clients(args, lab)
    finally:
        lab.stop_all()
    report["load_after"] = load_average()
    report["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report["targets"] = verdicts(report) if "compare" in report else []
    (run_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    text = fleet_markdown(report) if args.fleet else tls_markdown(report) if args.tls else markdown(report)
    (run_dir / "results.md").write_text(text)
    print(text)
    log(f"load average before {report['load_before']}, after {report['load_after']}")
    log(f"wrote {run_dir / 'results.json'} and {run_dir / 'results.md'}")
    if args.fleet:
        checks = check_fleet_smoke(report)
    elif args.tls:
        checks = check_tls_smoke(report)
    else:
        checks = check_smoke(report)
    report_problems(args.smoke, *checks)


def report_problems(smoke, checked, problems):
    """Logs each problem a run's checks found: in the smoke mode as a failure, then the tally,
    exiting 1 on any; in a full run as a warning (a target that answered errors was measured on
    its error path)."""
    for problem in problems:
        log(f"FAIL: {problem}" if smoke else f"WARNING: {problem}; its figures are not valid")
    if smoke:
        print(f"smoke: {checked - len(problems)} passed, {len(problems)} failed")
        if problems:
            sys.exit(1)


if __name__ == "__main__":
    main()
