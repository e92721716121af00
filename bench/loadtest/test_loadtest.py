"""Checks of the load-test driver's own error paths (the figures are checked by the smoke run).

python3 -m unittest discover -s bench/loadtest
"""

import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

import loadtest


def free_port():
    """A port nothing listens on."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


class TargetStart(unittest.TestCase):
    def test_a_port_already_in_use_is_refused_before_measuring(self):
        with socket.socket() as busy, tempfile.TemporaryDirectory() as run_dir:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            target = loadtest.Target(
                "probe", "probe target", port, ["sleep", "30"], Path(run_dir) / "probe.log"
            )
            with self.assertRaises(SystemExit) as refused:
                target.start()
            self.assertIn(f"port {port} (probe target) is already in use", str(refused.exception))
            self.assertIsNone(target.process, "nothing was started")

    def test_a_failing_preparation_is_reported_with_its_output(self):
        with tempfile.TemporaryDirectory() as run_dir:
            target = loadtest.Target(
                "probe", "probe target", free_port(), ["sleep", "30"], Path(run_dir) / "probe.log",
                prepare=["sh", "-c", "echo 'guard rate-limit: no such file' >&2; exit 3"],
            )
            with self.assertRaises(SystemExit) as refused:
                target.start()
        self.assertIn("probe target", str(refused.exception))
        self.assertIn("exit 3", str(refused.exception))
        self.assertIn("no such file", str(refused.exception))
        self.assertIsNone(target.process, "the target itself is not started")

    def test_a_target_that_exits_at_once_is_reported(self):
        with tempfile.TemporaryDirectory() as run_dir:
            target = loadtest.Target(
                "broken", "broken target", free_port(), ["false"], Path(run_dir) / "broken.log"
            )
            with self.assertRaises(SystemExit) as refused:
                target.start()
            self.assertIn("broken target exited with status 1", str(refused.exception))


class IdleCost(unittest.TestCase):
    def test_wakeups_and_cpu_of_a_process_are_counted_over_its_threads(self):
        script = (
            "import sys, time\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "for _ in range(40): time.sleep(0.01)\n"
            "print('done', flush=True)\n"
            "sys.stdin.readline()\n"
        )
        sleeper = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(sleeper.stdout.readline().strip(), "ready")
            before = loadtest.thread_activity([sleeper.pid])
            sleeper.stdin.write("go\n")
            sleeper.stdin.flush()
            self.assertEqual(sleeper.stdout.readline().strip(), "done")
            after = loadtest.thread_activity([sleeper.pid])
        finally:
            sleeper.kill()
            sleeper.wait()
        self.assertGreaterEqual(after[0] - before[0], 40, "forty sleeps wake the process forty times")
        self.assertGreaterEqual(after[1], before[1])

    def test_a_process_that_is_gone_counts_nothing(self):
        gone = subprocess.Popen(["true"])
        gone.wait()
        self.assertEqual(loadtest.thread_activity([gone.pid]), (0, 0))


class FleetSmoke(unittest.TestCase):
    def test_a_fleet_with_errors_no_worker_cpu_or_no_redis_commands_fails_the_smoke_run(self):
        def row(target, errors=0, rps=100.0, kinds=None):
            sample = {"cpu_us_per_request_by_thread": kinds or {"vigil/vigil-worker-N": 30.0}}
            return {"target": target, "label": target, "errors": errors, "rps": rps,
                    "samples": {"saturation": [sample]}}
        report = {"fleet": {"rows": [row("nginx", kinds={}), row("fleet-local"), row("fleet-redis", errors=3),
                                     row("fleet-redis-sync", kinds={"nginx/nginx": 9.0}), row("base-fleet-redis")],
                            "redis_commands": {"fleet-redis": {"per_request": 26.0},
                                               "fleet-redis-sync": {"per_request": 5.0},
                                               "base-fleet-redis": {"per_request": 0.0}}}}
        checked, problems = loadtest.check_fleet_smoke(report)
        self.assertEqual(checked, 5)
        self.assertEqual(problems, ["fleet-redis: 3 failed or non-2xx requests",
                                    "fleet-redis-sync: no CPU read for the replicas' workers",
                                    "base-fleet-redis: no Redis command counted"])


class Problems(unittest.TestCase):
    def test_a_smoke_run_with_a_problem_fails_and_a_full_run_warns(self):
        with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()) as out:
            with self.assertRaises(SystemExit) as exit:
                loadtest.report_problems(True, 3, ["vigil: 4 errors"])
        self.assertEqual(exit.exception.code, 1)
        self.assertIn("FAIL: vigil: 4 errors", err.getvalue())
        self.assertIn("smoke: 2 passed, 1 failed", out.getvalue())
        with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()) as out:
            loadtest.report_problems(False, 3, ["vigil: 4 errors"])
            loadtest.report_problems(True, 3, [])
        self.assertIn("WARNING: vigil: 4 errors; its figures are not valid", err.getvalue())
        self.assertEqual(out.getvalue(), "smoke: 3 passed, 0 failed\n")


class ThreadKinds(unittest.TestCase):
    def test_a_process_cpu_is_told_by_thread_kind_and_a_gone_one_has_none(self):
        with open(f"/proc/{os.getpid()}/comm") as f:
            process = f.read().strip()
        kinds = loadtest.cpu_by_thread_kind([os.getpid()])
        self.assertTrue(kinds)
        for kind, seconds in kinds.items():
            self.assertTrue(kind.startswith(process + "/"), kind)
            self.assertFalse(any(c.isdigit() for c in kind.split("/", 1)[1]), kind)
            self.assertGreaterEqual(seconds, 0.0)
        self.assertEqual(loadtest.cpu_by_thread_kind([2 ** 22 + 1]), {})


class Arguments(unittest.TestCase):
    def test_baseline_guards_without_a_baseline_are_refused(self):
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
            loadtest.parse_args(["--vigil", "v", "--guards-dir", "g", "--baseline-guards-dir", "old"])
        self.assertIn("--baseline-guards-dir: only with --baseline", err.getvalue())

    def test_baseline_guards_default_to_the_measured_ones(self):
        args = loadtest.parse_args(["--vigil", "v", "--guards-dir", "g", "--baseline", "old-vigil"])
        self.assertIsNone(args.baseline_guards_dir)

    def test_a_floor_binary_that_is_missing_or_beside_a_baseline_is_refused(self):
        for extra, expected in [(["--floor", "/nonexistent/forward_only"], "--floor: no such file"),
                                (["--floor", sys.executable, "--baseline", "old"], "--floor: only in the comparison run")]:
            with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
                loadtest.parse_args(["--vigil", "v", "--guards-dir", "g"] + extra)
            self.assertIn(expected, err.getvalue())

    def test_the_fleet_comparison_takes_a_baseline_build_but_no_floor_or_other_guards(self):
        args = loadtest.parse_args(["--vigil", "v", "--guards-dir", "g", "--fleet", "--baseline", "old"])
        self.assertEqual(str(args.baseline), "old")
        for extra, expected in [(["--floor", sys.executable], "--fleet: not with --floor"),
                                (["--baseline", "old", "--baseline-guards-dir", "og"],
                                 "--fleet: the --baseline build runs the same guards")]:
            with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
                loadtest.parse_args(["--vigil", "v", "--guards-dir", "g", "--fleet"] + extra)
            self.assertIn(expected, err.getvalue())

    def test_the_tls_comparison_runs_alone(self):
        for extra in (["--fleet"], ["--baseline", "old"], ["--floor", sys.executable]):
            with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
                loadtest.parse_args(["--vigil", "v", "--guards-dir", "g", "--tls"] + extra)
            self.assertIn("--tls: not with --fleet, --baseline or --floor", err.getvalue())

    def test_a_tls_target_with_errors_or_no_answers_fails_the_smoke_run(self):
        def row(label, errors, rps, handshakes):
            return {"label": label, "errors": errors, "rps": rps, "handshakes_per_s": handshakes}
        report = {"tls": {"rows": [row("nginx TLS", 0, 900.0, 300.0), row("Vigil TLS", 4, 800.0, 250.0),
                                   row("Vigil TLS stock", 0, 700.0, 0.0)]}}
        checked, problems = loadtest.check_tls_smoke(report)
        self.assertEqual(checked, 3)
        self.assertEqual(problems, ["Vigil TLS: 4 errors", "Vigil TLS stock: no requests answered"])

    def test_values_that_cannot_be_measured_are_refused_before_any_run(self):
        for flag, value, expected in [("--rounds", "0", "--rounds: must be more than 0, got 0"),
                                      ("--duration", "-1", "--duration: must be more than 0, got -1"),
                                      ("--idle", "-5", "--idle: must be 0 or more, got -5"),
                                      ("--rate", "0", "--rate: must be more than 0, got 0")]:
            with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
                loadtest.parse_args(["--vigil", "v", "--guards-dir", "g", flag, value])
            self.assertIn(expected, err.getvalue())

    def test_no_idle_phase_leaves_no_idle_figures(self):
        args = loadtest.parse_args(["--vigil", "v", "--guards-dir", "g", "--idle", "0"])
        self.assertEqual(args.idle, 0)
        target = loadtest.Target.__new__(loadtest.Target)
        target.idle = None
        loadtest.idle_cost([target], 0)
        self.assertIsNone(target.idle, "no phase measured")
        self.assertEqual(loadtest.idle_table([{"label": "x"}], {"idle": 0}), [])


class GuardChains(unittest.TestCase):
    def test_guards_that_do_nothing_join_the_three_stock_guards_when_built(self):
        with tempfile.TemporaryDirectory() as guards:
            guards = Path(guards)
            (guards / "noop.wasm").write_bytes(b"")
            keys = [key for key, *_ in loadtest.guard_chains([0, 1, 3, 8], guards)]
            self.assertEqual(keys, [0, 1, 3, 8, loadtest.NOOP_GUARDS])
            self.assertEqual([key for key, *_ in loadtest.guard_chains([0, 1], guards)], [0, 1])

    def test_without_the_guards_that_do_nothing_the_run_goes_on_and_says_so(self):
        with tempfile.TemporaryDirectory() as guards, contextlib.redirect_stderr(io.StringIO()) as err:
            chains = loadtest.guard_chains([0, 3], Path(guards))
        self.assertEqual([key for key, *_ in chains], [0, 3])
        self.assertIn("no noop.wasm in", err.getvalue())


class Overload(unittest.TestCase):
    STAT = "cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"

    def test_busy_share_of_the_machine_counts_iowait_as_idle(self):
        before = loadtest.machine_times(self.STAT.format(user=100, system=50, idle=800, iowait=50))
        after = loadtest.machine_times(self.STAT.format(user=250, system=100, idle=820, iowait=80))
        self.assertEqual(loadtest.busy_pct(before, after), 200 / 250 * 100)
        busy, total = loadtest.machine_times()
        self.assertTrue(0 < busy < total, "this machine's own /proc/stat reads")

    def test_only_runs_on_a_saturated_machine_are_named(self):
        calm = {"machine_busy_pct": 60.0, "p50_ms": 0.7, "p99_ms": 3.0}
        busy = {"machine_busy_pct": 97.0, "p50_ms": 24.3, "p99_ms": 196.0}
        rows = [{"label": "nginx", "samples": {"latency": [calm, calm]}},
                {"label": "Vigil", "samples": {"latency": [calm, busy]}}]
        lines = loadtest.overloaded_runs(rows)
        self.assertEqual(len(lines), 2)
        self.assertIn("Vigil round 2 (97% busy, p50 24.3 ms, p99 196.0 ms)", lines[1])
        self.assertNotIn("nginx", lines[1])
        self.assertEqual(loadtest.overloaded_runs(rows[:1]), [])


class WorkerSplit(unittest.TestCase):
    def test_only_rounds_one_worker_mostly_served_are_named(self):
        even = {"worker_cpu_s": [4.8, 5.0]}
        lopsided = {"worker_cpu_s": [0.6, 2.1]}
        rows = [{"label": "nginx", "samples": {"saturation": [{}, {}]}},
                {"label": "Vigil", "samples": {"saturation": [even, lopsided, {"worker_cpu_s": [3.0]}]}}]
        lines = loadtest.lopsided_runs(rows)
        self.assertEqual(len(lines), 2)
        self.assertIn("Vigil round 2 (0.6 / 2.1 s)", lines[1])
        self.assertNotIn("round 1", lines[1])
        self.assertNotIn("round 3", lines[1], "one worker has no one to be uneven with")
        self.assertEqual(loadtest.lopsided_runs(rows[:1]), [])

    def test_worker_threads_are_found_by_name_and_others_ignored(self):
        self.assertEqual(loadtest.worker_cpu_seconds([os.getpid()]), {}, "no thread is named like a worker")
        named, done = threading.Event(), threading.Event()

        def worker():
            with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
                f.write("vigil-worker-7")
            deadline = time.process_time() + 0.05
            while time.process_time() < deadline:
                pass
            named.set()
            done.wait()

        thread = threading.Thread(target=worker)
        thread.start()
        try:
            named.wait()
            workers = loadtest.worker_cpu_seconds([os.getpid()])
        finally:
            done.set()
            thread.join()
        self.assertEqual(list(workers), ["vigil-worker-7"])
        self.assertGreaterEqual(workers["vigil-worker-7"], 0.0)
        gone = subprocess.Popen(["true"])
        gone.wait()
        self.assertEqual(loadtest.worker_cpu_seconds([gone.pid]), {})


if __name__ == "__main__":
    unittest.main()
