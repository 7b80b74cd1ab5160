"""What every worker process shares: heartbeats, and running a job under a lease.

Heartbeats: a thread writes ``ssdstack:worker:<id>`` (queues, backends, time) with a TTL
every ``heartbeat_interval`` seconds, and touches the liveness file that Kubernetes probes
read. The gateway's ``/readyz`` and ``/v1/backends`` read these keys, never ``celery
inspect``, which a busy single-job worker cannot answer.

Leases: :func:`run_job` takes the job's lease before it runs the job body and renews it
while the body runs. A message delivered again while another live worker holds the lease
is put back with a delay instead of being run twice; once the lease has expired (its
worker died), the job runs again and the body resumes from its checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import redis
from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown

from ssdstack.errors import SsdStackError
from ssdstack.jobs.context import JobCancelled
from ssdstack.jobs.records import TERMINAL, JobStore
from ssdstack.settings import WorkerSettings

log = logging.getLogger(__name__)
WORKER_PREFIX = "ssdstack:worker:"


class RedisJobContext:
    """JobContext backed by the job record in Redis."""

    def __init__(self, jobs: JobStore, job_id: str):
        self.jobs = jobs
        self.job_id = job_id

    def progress(self, **fields) -> None:
        self.jobs.progress(self.job_id, **fields)

    def log(self, message: str) -> None:
        log.info("job %s: %s", self.job_id, message)
        self.jobs.log(self.job_id, message)

    def cancelled(self) -> bool:
        return self.jobs.cancel_requested(self.job_id)


class WorkerRuntime:
    """Per-process state of one worker service (trainer, converter or inferencer)."""

    def __init__(self, service: str, queues: list[str], settings: WorkerSettings,
                 backends: Callable[[], dict]):
        self.service = service
        self.queues = queues
        self.settings = settings
        self.backends = backends
        self.worker_id = f"{service}@{socket.gethostname()}:{os.getpid()}"
        self.jobs = JobStore.from_url(settings.redis_url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- heartbeats --------------------------------------------------------------
    def install(self, app: Celery) -> None:
        """Start heartbeats when the Celery worker is ready; stop them on shutdown."""
        worker_ready.connect(lambda **_: self.start_heartbeats(), weak=False)
        worker_shutdown.connect(lambda **_: self.stop_heartbeats(), weak=False)

    def heartbeat_once(self) -> None:
        record = {"worker_id": self.worker_id, "service": self.service, "queues": self.queues,
                  "backends": self.backends(), "time": time.time(), "pid": os.getpid(),
                  "host": socket.gethostname()}
        ttl_ms = int(self.settings.heartbeat_ttl * 1000)
        self.jobs.redis.set(WORKER_PREFIX + self.worker_id, json.dumps(record), px=ttl_ms)
        if self.settings.heartbeat_file:
            Path(self.settings.heartbeat_file).write_text(str(record["time"]))

    def start_heartbeats(self) -> None:
        def beat() -> None:
            while not self._stop.is_set():
                try:
                    self.heartbeat_once()
                except redis.RedisError as error:
                    log.warning("heartbeat failed: %s", error)
                self._stop.wait(self.settings.heartbeat_interval)

        self._thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeats(self) -> None:
        self._stop.set()
        try:
            self.jobs.redis.delete(WORKER_PREFIX + self.worker_id)
        except redis.RedisError:
            pass

    # -- jobs ------------------------------------------------------------------
    def run_job(self, task: Task, job_id: str, body: Callable[[RedisJobContext], dict | None]) -> None:
        """Run ``body`` for ``job_id`` under its lease; record success, failure or cancel.

        ``body`` returns the job's result, or None when it handed the job on to the next
        pipeline stage (the job then stays running). Never raises, except Celery's retry
        for a job another live worker holds: a failing job must not take the worker down,
        and its message must be acknowledged.
        """
        try:
            job = self.jobs.get(job_id)
        except SsdStackError:
            log.warning("dropping message for unknown job %s", job_id)
            return
        if job["state"] in TERMINAL:
            log.info("job %s already %s; not running it again", job_id, job["state"])
            return
        if job.get("stage", task.name) != task.name:
            # A late redelivery of a pipeline stage the job has already moved past.
            log.info("job %s is at stage %s; dropping a stale %s message", job_id, job["stage"], task.name)
            return
        ttl = self.settings.heartbeat_ttl
        if not self.jobs.acquire_lease(job_id, self.worker_id, ttl):
            holder = self.jobs.lease_holder(job_id)
            log.info("job %s is held by live worker %s; checking again in %.0f s", job_id, holder, ttl)
            raise task.retry(countdown=ttl, max_retries=None)

        renewing = threading.Event()

        def renew() -> None:
            while not renewing.wait(self.settings.heartbeat_interval):
                try:
                    self.jobs.acquire_lease(job_id, self.worker_id, ttl)
                except redis.RedisError as error:
                    log.warning("lease renewal for %s failed: %s", job_id, error)

        renewer = threading.Thread(target=renew, name=f"lease-{job_id[:8]}", daemon=True)
        renewer.start()
        ctx = RedisJobContext(self.jobs, job_id)
        try:
            if ctx.cancelled():
                raise JobCancelled(f"cancelled before {task.name} started")
            if not self.jobs.mark_running(job_id, self.worker_id):
                return
            result = body(ctx)
            if result is not None:
                self.jobs.succeed(job_id, result)
                ctx.log("succeeded")
        except JobCancelled as error:
            self.jobs.mark_cancelled(job_id, str(error))
            ctx.log(f"cancelled: {error}")
        except SsdStackError as error:
            self.jobs.fail(job_id, error.code, error.message, error.details)
            ctx.log(f"failed: {error.message}")
        except Exception as error:  # a bug or an unexpected library error: the job fails, the worker lives
            log.exception("job %s crashed", job_id)
            self.jobs.fail(job_id, "internal_error", f"{type(error).__name__}: {error}",
                           traceback.format_exc(limit=8).splitlines()[-12:])
        finally:
            renewing.set()
            renewer.join(timeout=5)
            self.jobs.release_lease(job_id, self.worker_id)


def live_workers(client: redis.Redis) -> list[dict]:
    """Heartbeat records of every worker seen within its TTL."""
    workers = []
    for key in client.scan_iter(match=WORKER_PREFIX + "*", count=100):
        raw = client.get(key)
        if raw:
            workers.append(json.loads(raw))
    return sorted(workers, key=lambda w: w["worker_id"])
