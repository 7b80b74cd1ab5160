"""What a long-running service function needs from whoever runs it.

Service functions (train, convert, evaluate) take a :class:`JobContext`, so the same
code runs under a Celery task (progress into the Redis job record, cancel flag from
Redis) and from the CLI or a test (:class:`LocalContext`).
"""
from __future__ import annotations

import sys
import time
from typing import Protocol


class JobCancelled(Exception):
    """Raised inside a service function when the job's cancel flag is set."""


class JobContext(Protocol):
    job_id: str

    def progress(self, **fields) -> None:
        """Merge ``fields`` (epoch, step, loss, eta_s, stage, ...) into the job's progress."""

    def log(self, message: str) -> None:
        """One line for the job's log."""

    def cancelled(self) -> bool:
        """True once someone asked to cancel; the function should stop soon and raise JobCancelled."""


class LocalContext:
    """Runs a service function in-process: progress and log lines go to stderr."""

    def __init__(self, job_id: str = "local", quiet: bool = False):
        self.job_id = job_id
        self.quiet = quiet
        self.state: dict = {}
        self.lines: list[str] = []
        self._last_print = 0.0

    def progress(self, **fields) -> None:
        self.state.update(fields)
        if not self.quiet and time.monotonic() - self._last_print > 5:
            self._last_print = time.monotonic()
            print(" ".join(f"{k}={v}" for k, v in self.state.items()), file=sys.stderr)

    def log(self, message: str) -> None:
        self.lines.append(message)
        if not self.quiet:
            print(message, file=sys.stderr)

    def cancelled(self) -> bool:
        return False

