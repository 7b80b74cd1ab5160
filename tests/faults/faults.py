"""What the fault-injection scenarios share besides fixtures: the stack's settings, and
polls that ride out the outages the scenarios cause."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from cli.client import ApiError, Client
from cli.localstack import LocalStack
from ssdstack.healthcheck import check_heartbeat

API_KEY = "fault-suite-key"
MODEL = "faults"
DETECT_TIMEOUT_S = 10.0
# Leases and heartbeats scaled down (the defaults are 5 s and 30 s); the broker's visibility
# timeout keeps its default of 6 h, so nothing here is recovered by redelivery.
FAULT_ENV = {"SSDSTACK_HEARTBEAT_INTERVAL": "1", "SSDSTACK_HEARTBEAT_TTL": "6",
             "SSDSTACK_DETECT_TIMEOUT": str(DETECT_TIMEOUT_S), "SSDSTACK_INFER_BACKEND": "onnxruntime"}
# The liveness probe's window in this suite (`healthcheck heartbeat --max-age`; 60 s by default).
LIVENESS_MAX_AGE = 5.0


@dataclass
class Timeline:
    """A job's way through its faults: when each event was seen, and what was found."""

    job_id: str
    seen: dict[str, float] = field(default_factory=dict)
    liveness_failures: list[str] = field(default_factory=list)
    final: dict | None = None
    stopped_pid: int | None = None
    killed_pid: int | None = None
    handed_back: bool = False
    pids_before_outage: dict[str, int | None] = field(default_factory=dict)
    pids_after_outage: dict[str, int | None] = field(default_factory=dict)

    def mark(self, event: str) -> None:
        self.seen[event] = time.monotonic()

    def between(self, start: str, end: str) -> float:
        return round(self.seen[end] - self.seen[start], 1)


def job_or_none(client: Client, job_id: str) -> dict | None:
    """The job, or None while the gateway or Redis cannot answer."""
    try:
        return client.job(job_id)
    except (ApiError, httpx.HTTPError):
        return None


def log_has(client: Client, job_id: str, words: str) -> bool:
    try:
        lines = client.get(f"/v1/jobs/{job_id}/logs")["lines"]
    except (ApiError, httpx.HTTPError):
        return False
    return any(words in line for line in lines)


def liveness_ok(stack: LocalStack, name: str) -> bool:
    """What a Kubernetes liveness probe of the worker would say now."""
    return check_heartbeat(stack.liveness_path(name), LIVENESS_MAX_AGE)[0]
