"""A bounded wait, for tests that watch real processes."""
from __future__ import annotations

import time


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """The first truthy value of ``condition()``, polled for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
