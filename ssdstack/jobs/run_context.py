"""The job a worker runs, as its stages see it and as the runtime records it.

:class:`RedisJobContext` is the :class:`~ssdstack.jobs.context.JobContext` of a stage run
by a worker: progress, log lines and the cancel flag in the job's Redis record.
:class:`RidingOut` is the job store with each call ridden out through a Redis outage, for
the writes that say where a job stands. :class:`Stopped` ends a run that lost its lease.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from ssdstack.jobs.records import JobStore
from ssdstack.redis_client import ride_out

log = logging.getLogger(__name__)


class RidingOut:
    """The job store, each call ridden out (:func:`ride_out`): the writes that say where a
    job stands wait for Redis to come back rather than being lost to an outage."""

    def __init__(self, jobs: JobStore, grace_s: float):
        self._jobs = jobs
        self._grace_s = grace_s

    def __getattr__(self, name: str) -> Callable:
        method = getattr(self._jobs, name)
        return lambda *args, **kwargs: ride_out(self._grace_s, method, *args, **kwargs)


class Stopped(Exception):
    """This run lost the job's lease, or the job ended elsewhere: it records nothing more."""


class RedisJobContext:
    """JobContext backed by the job record in Redis.

    Progress and log writes are best effort: a Redis blip must not fail an hours-long
    training job; each counts as activity for the watchdog. ``cancelled()`` is also true
    once the run has lost its lease (``lease_lost``: the watchdog sets it too) or its
    worker is shutting down (``interrupted``).
    """

    def __init__(self, jobs: JobStore, job_id: str, interrupted: threading.Event):
        self.jobs = jobs
        self.job_id = job_id
        self.lease_lost = threading.Event()
        self.interrupted = interrupted
        self.last_activity = time.monotonic()
        self.stage_index: int | None = None
        self.started_at: float | None = None  # the job's first start, for its time limit

    def progress(self, **fields) -> None:
        self.last_activity = time.monotonic()
        try:
            self.jobs.progress(self.job_id, **fields)
        except redis.RedisError as error:
            log.warning("job %s: progress not recorded: %s", self.job_id, error)

    def log(self, message: str) -> None:
        self.last_activity = time.monotonic()
        log.info("job %s: %s", self.job_id, message)
        try:
            self.jobs.log(self.job_id, message)
        except redis.RedisError as error:
            log.warning("job %s: log line not recorded: %s", self.job_id, error)

    def cancelled(self) -> bool:
        if self.lease_lost.is_set() or self.interrupted.is_set():
            return True
        try:
            return self.jobs.cancel_requested(self.job_id)
        except redis.RedisError as error:
            log.warning("job %s: cancel flag unreadable, going on: %s", self.job_id, error)
            return False
