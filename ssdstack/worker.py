"""What every worker process shares: heartbeats, and running a job under a lease.

Heartbeats: a thread writes ``ssdstack:worker:<id>`` (queues, backends, time) with a TTL
and its time in the ``ssdstack:workers`` registry every ``heartbeat_interval`` seconds,
and touches the liveness file that Kubernetes probes read. The gateway's ``/readyz`` and
``/v1/backends`` read these, never ``celery inspect``, which a busy single-job worker
cannot answer.

Leases: :meth:`WorkerRuntime.run_job` takes the job's lease (a token unique to this run)
before it runs the job body and renews it while the body runs. A message delivered again
while another live run holds the lease is put back with a delay instead of being run
twice; once the lease has expired (its worker died), the job runs again and the body
resumes from its checkpoint. A run that loses its lease stops at its next cancel check
and records nothing: the job belongs to whoever holds the lease now.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown

from ssdstack.errors import SsdStackError
from ssdstack.jobs.context import JobCancelled
from ssdstack.jobs.pipeline import send_stage, stage_is_behind
from ssdstack.jobs.records import TERMINAL, JobStore
from ssdstack.model_store import remove_stale_scratch
from ssdstack.settings import WorkerSettings

log = logging.getLogger(__name__)
WORKER_PREFIX = "ssdstack:worker:"
WORKER_REGISTRY = "ssdstack:workers"


@dataclass(frozen=True)
class NextStage:
    """Returned by a stage body that is done and hands the job on to ``task_name``."""

    task_name: str


class RedisJobContext:
    """JobContext backed by the job record in Redis.

    Progress and log writes are best effort: a Redis blip must not fail an hours-long
    training job. ``cancelled()`` is also true once the run has lost its lease.
    """

    def __init__(self, jobs: JobStore, job_id: str, lease_lost: threading.Event):
        self.jobs = jobs
        self.job_id = job_id
        self.lease_lost = lease_lost

    def progress(self, **fields) -> None:
        try:
            self.jobs.progress(self.job_id, **fields)
        except redis.RedisError as error:
            log.warning("job %s: progress not recorded: %s", self.job_id, error)

    def log(self, message: str) -> None:
        log.info("job %s: %s", self.job_id, message)
        try:
            self.jobs.log(self.job_id, message)
        except redis.RedisError as error:
            log.warning("job %s: log line not recorded: %s", self.job_id, error)

    def cancelled(self) -> bool:
        if self.lease_lost.is_set():
            return True
        try:
            return self.jobs.cancel_requested(self.job_id)
        except redis.RedisError as error:
            log.warning("job %s: cancel flag unreadable, going on: %s", self.job_id, error)
            return False


class WorkerRuntime:
    """Per-process state of one worker service (trainer, converter or inferencer)."""

    def __init__(self, service: str, queues: list[str], settings: WorkerSettings,
                 backends: Callable[[], dict]):
        self.service = service
        self.queues = queues
        self.settings = settings
        self.backends = backends
        self.worker_id = f"{service}@{socket.gethostname()}:{os.getpid()}"
        self.jobs = JobStore.from_url(settings.redis_url, retention_s=settings.job_retention)
        self.app: Celery | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- heartbeats --------------------------------------------------------------
    def install(self, app: Celery) -> None:
        """Use ``app`` to send pipeline stages; heartbeat while the Celery worker runs."""
        self.app = app
        worker_ready.connect(lambda **_: self._on_ready(), weak=False)
        worker_shutdown.connect(lambda **_: self.stop_heartbeats(), weak=False)

    def _on_ready(self) -> None:
        removed = remove_stale_scratch(self.settings.store_dir)
        if removed:
            log.info("removed %d stale scratch entries from the store: %s", len(removed), removed[:10])
        self.start_heartbeats()

    def heartbeat_once(self) -> None:
        now = time.time()
        record = {"worker_id": self.worker_id, "service": self.service, "queues": self.queues,
                  "backends": self.backends(), "time": now, "pid": os.getpid(), "host": socket.gethostname()}
        pipe = self.jobs.redis.pipeline()
        pipe.set(WORKER_PREFIX + self.worker_id, json.dumps(record), px=int(self.settings.heartbeat_ttl * 1000))
        pipe.zadd(WORKER_REGISTRY, {self.worker_id: now})
        pipe.zremrangebyscore(WORKER_REGISTRY, "-inf", now - 10 * self.settings.heartbeat_ttl)
        pipe.execute()
        if self.settings.heartbeat_file:
            Path(self.settings.heartbeat_file).write_text(str(now))

    def start_heartbeats(self) -> None:
        def beat() -> None:
            while not self._stop.is_set():
                try:
                    self.heartbeat_once()
                except Exception as error:  # a missed beat is logged; the next one tries again
                    log.warning("heartbeat failed: %s", error)
                self._stop.wait(self.settings.heartbeat_interval)

        self._thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeats(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.jobs.redis.delete(WORKER_PREFIX + self.worker_id)
            self.jobs.redis.zrem(WORKER_REGISTRY, self.worker_id)
        except redis.RedisError:
            pass

    # -- jobs ------------------------------------------------------------------
    def run_job(self, task: Task, job_id: str, body: Callable[[RedisJobContext], dict | NextStage]) -> None:
        """Run ``body`` for ``job_id`` under its lease; record success, failure or cancel.

        ``body`` returns the job's result, or :class:`NextStage` to hand the job on (the
        job then stays running; the next stage is sent after this run's lease is released,
        so that its worker can take the lease at once). Never raises, except Celery's retry
        for a job another live run holds: a failing job must not take the worker down.
        """
        try:
            job = self.jobs.get(job_id)
        except SsdStackError:
            log.warning("dropping message for unknown job %s", job_id)
            return
        if job["state"] in TERMINAL:
            log.info("job %s already %s; not running it again", job_id, job["state"])
            return
        if stage_is_behind(task.name, job.get("stage")):
            log.info("job %s is at stage %s; dropping a stale %s message", job_id, job["stage"], task.name)
            return
        ttl = self.settings.heartbeat_ttl
        token = f"{self.worker_id}/{uuid.uuid4().hex[:12]}"
        if not self.jobs.acquire_lease(job_id, token, ttl):
            holder = self.jobs.lease_holder(job_id)
            log.info("job %s is held by live run %s; checking again in %.0f s", job_id, holder, ttl)
            raise task.retry(countdown=ttl, max_retries=None)

        lease_lost = threading.Event()
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.settings.heartbeat_interval):
                try:
                    if not self.jobs.acquire_lease(job_id, token, ttl):
                        log.error("job %s: lease taken over by %s; stopping", job_id, self.jobs.lease_holder(job_id))
                        lease_lost.set()
                        return
                except redis.RedisError as error:
                    log.warning("lease renewal for %s failed: %s", job_id, error)

        renewer = threading.Thread(target=renew, name=f"lease-{job_id[:8]}", daemon=True)
        renewer.start()
        ctx = RedisJobContext(self.jobs, job_id, lease_lost)
        handoff: NextStage | None = None
        try:
            if ctx.cancelled():
                raise JobCancelled(f"cancelled before {task.name} started")
            if not self.jobs.mark_running(job_id, self.worker_id):
                return
            outcome = body(ctx)
            if lease_lost.is_set():
                return
            if isinstance(outcome, NextStage):
                handoff = outcome
            else:
                self.jobs.succeed(job_id, outcome)
                ctx.log("succeeded")
        except JobCancelled as error:
            if not lease_lost.is_set():
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
            done.set()
            renewer.join(timeout=5)
            self.jobs.release_lease(job_id, token)
        if handoff is not None:
            ctx.progress(stage=f"queued:{handoff.task_name}")
            send_stage(self.app, self.jobs, handoff.task_name, job_id)


def live_workers(client: redis.Redis) -> list[dict]:
    """Heartbeat records of every registered worker whose heartbeat key has not expired."""
    ids = client.zrange(WORKER_REGISTRY, 0, -1)
    if not ids:
        return []
    records = client.mget([WORKER_PREFIX + worker_id for worker_id in ids])
    return sorted((json.loads(raw) for raw in records if raw), key=lambda w: w["worker_id"])
