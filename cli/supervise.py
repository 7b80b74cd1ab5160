"""``python -m cli.supervise -- COMMAND...``: run a local stack service and start it again
when it dies, as Kubernetes or compose's ``restart: unless-stopped`` would.

A child that exits with status 0, or that this supervisor was told to stop (SIGTERM or
SIGINT, passed on to the child), is not restarted. Any other end (a crash, kill -9, an
out-of-memory kill, the watchdog's exit) starts it again after a back-off that doubles
from 1 s up to 30 s, and goes back to 1 s once a child has run for a minute. Each start
and end is one line on stderr, which the local stack appends to the service's log.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
HEALTHY_RUN_S = 60.0


def _say(message: str) -> None:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(f"=== {stamp} supervisor: {message}", file=sys.stderr, flush=True)


def supervise(argv: list[str]) -> int:
    """Run ``argv`` until it exits 0 or this process is told to stop; its last exit status
    (128 + N for a child ended by signal N, as a shell says it)."""
    stopping = threading.Event()
    child: subprocess.Popen | None = None

    def stop(signum: int, _frame) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = FIRST_BACKOFF_S
    while True:
        started = time.monotonic()
        child = subprocess.Popen(argv)
        _say(f"started pid {child.pid}: {' '.join(argv)}")
        code = child.wait()
        code = code if code >= 0 else 128 - code
        if stopping.is_set() or code == 0:
            _say(f"pid {child.pid} exited with status {code}; not restarting")
            return code
        if time.monotonic() - started >= HEALTHY_RUN_S:
            backoff = FIRST_BACKOFF_S
        _say(f"pid {child.pid} ended with status {code}; restarting in {backoff:g} s")
        if stopping.wait(backoff):
            return code
        backoff = min(2 * backoff, MAX_BACKOFF_S)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m cli.supervise -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
