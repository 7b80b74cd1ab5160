"""cli.supervise with real processes: a crashed child is started again, a clean exit or a
stop request is final, and a stop reaches the child."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Each start appends its pid to the file named by argv[1], then runs what argv[2] says.
CHILD = """
import os, sys, time
with open(sys.argv[1], "a") as starts:
    starts.write(f"{os.getpid()}\\n")
runs = len(open(sys.argv[1]).read().split())
if sys.argv[2] == "crash-once":
    sys.exit(3 if runs == 1 else 0)
time.sleep(60)
"""


def _supervise(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    starts = tmp_path / "starts"
    process = subprocess.Popen([sys.executable, "-m", "cli.supervise", "--", sys.executable, "-c", CHILD,
                                str(starts), mode], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    return process, starts


def _starts(path: Path, count: int, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(line) for line in path.read_text().split()] if path.exists() else []
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} starts within {timeout} s")


def test_a_crashed_child_is_restarted_and_a_clean_exit_is_final(tmp_path):
    process, starts = _supervise(tmp_path, "crash-once")
    assert process.wait(timeout=30) == 0
    assert len(_starts(starts, 2)) == 2
    log = process.stderr.read()
    assert "ended with status 3; restarting in 1 s" in log and "exited with status 0; not restarting" in log


def test_a_killed_child_is_restarted_and_sigterm_stops_both(tmp_path):
    process, starts = _supervise(tmp_path, "sleep")
    [first] = _starts(starts, 1)
    os.kill(first, signal.SIGKILL)  # as an out-of-memory kill would
    second = _starts(starts, 2)[1]
    assert second != first
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 128 + signal.SIGTERM  # the child's end, passed on
    assert len(_starts(starts, 2)) == 2  # not restarted after the stop
    try:
        os.kill(second, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError("the child outlived its supervisor's stop")
