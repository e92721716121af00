"""Checks of the load-test driver's own error paths (the figures are checked by the smoke run).

python3 -m unittest discover -s bench/loadtest
"""

import contextlib
import io
import socket
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import loadtest


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

    def test_a_target_that_exits_at_once_is_reported(self):
        with socket.socket() as free, tempfile.TemporaryDirectory() as run_dir:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
            free.close()
            target = loadtest.Target(
                "broken", "broken target", port, ["false"], Path(run_dir) / "broken.log"
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


class Arguments(unittest.TestCase):
    def test_baseline_guards_without_a_baseline_are_refused(self):
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
            loadtest.parse_args(["--vigil", "v", "--guards-dir", "g", "--baseline-guards-dir", "old"])
        self.assertIn("--baseline-guards-dir: only with --baseline", err.getvalue())

    def test_baseline_guards_default_to_the_measured_ones(self):
        args = loadtest.parse_args(["--vigil", "v", "--guards-dir", "g", "--baseline", "old-vigil"])
        self.assertIsNone(args.baseline_guards_dir)


if __name__ == "__main__":
    unittest.main()
