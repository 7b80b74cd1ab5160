"""What the integration tests share besides fixtures: the stack's settings, the demo's
recipe and model name, and a bounded wait."""
from __future__ import annotations

import time

from cli.demo import DemoConfig

API_KEY = "integration-test-key"
# Heartbeats every second, dead after 6 s; unacked messages come back after 30 s.
FAST_RECOVERY = {"SSDSTACK_HEARTBEAT_INTERVAL": "1", "SSDSTACK_HEARTBEAT_TTL": "6",
                 "SSDSTACK_VISIBILITY_TIMEOUT": "30", "SSDSTACK_DETECT_TIMEOUT": "30",
                 "SSDSTACK_INFER_BACKEND": "onnxruntime"}
CONFIG = DemoConfig()
MODEL = "itest"


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """The first truthy value of ``condition()``, polled for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
