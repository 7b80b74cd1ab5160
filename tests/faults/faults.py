"""What the fault-injection scenarios share besides fixtures: the stack's settings, polls
that ride out the outages the scenarios cause, and a Sentinel group to fail over."""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from cli.client import ApiError, Client
from cli.localstack import LocalStack
from cli.processes import find_redis_server, free_port
from polling import wait_for
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


class SentinelGroup:
    """A Redis master, one replica and one Sentinel watching them (quorum 1), as real
    processes on 127.0.0.1 under ``folder``; Sentinel declares a master dead after 1 s."""

    MASTER = "mymaster"

    def __init__(self, folder: Path):
        self.folder = folder
        self.server = find_redis_server()
        self.ports = {"primary": free_port(), "replica": free_port(), "sentinel": free_port()}
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.ports['sentinel']}/0"

    def _run(self, name: str, *args: str) -> None:
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "log").open("ab") as log:
            self.processes[name] = subprocess.Popen([self.server, *args], cwd=folder, stdout=log,
                                                    stderr=subprocess.STDOUT)

    def start(self) -> None:
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
        self._run("primary", "--port", str(self.ports["primary"]), *common)
        self._run("replica", "--port", str(self.ports["replica"]), *common,
                  "--replicaof", "127.0.0.1", str(self.ports["primary"]))
        conf = self.folder / "sentinel.conf"
        conf.write_text(f"port {self.ports['sentinel']}\nbind 127.0.0.1\n"
                        f"sentinel monitor {self.MASTER} 127.0.0.1 {self.ports['primary']} 1\n"
                        f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                        f"sentinel failover-timeout {self.MASTER} 5000\n")
        self._run("sentinel", str(conf), "--sentinel")
        replica = redis.Redis(port=self.ports["replica"], socket_timeout=1)
        wait_for(lambda: pings(replica) and replica.info("replication").get("master_link_status") == "up",
                 30, "the replica to sync")
        sentinel = redis.Redis(port=self.ports["sentinel"], socket_timeout=1)
        wait_for(lambda: pings(sentinel) and sentinel.execute_command("SENTINEL", "REPLICAS", self.MASTER),
                 30, "Sentinel to see the replica")

    def master_port(self) -> int:
        sentinel = redis.Redis(port=self.ports["sentinel"], socket_timeout=1)
        return int(sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER)[1])

    def kill_master(self) -> str:
        """kill -9 the process that is master now; its name."""
        port = self.master_port()
        name = next(name for name, number in self.ports.items() if number == port)
        self.processes[name].kill()
        self.processes[name].wait(10)
        return name

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(10)


def pings(client: redis.Redis) -> bool:
    """Whether the Redis server answers now."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
