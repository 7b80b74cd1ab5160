"""The reaper: every unfinished job is run by a live worker, waits in its queue, or is
sent again; none waits for the broker's visibility timeout.

A sweep looks at every job in the active set (:data:`ssdstack.jobs.records.ACTIVE`):

* terminal or expired: taken off the set;
* held by a lease (a live run renews it every heartbeat): left alone;
* its stage's message waiting in the stage's queue: left alone (a busy worker takes it later);
* otherwise orphaned, its worker dead or its message lost (a gateway that died between
  writing the record and sending it, a broker that lost the message). Once it has been seen
  orphaned for one heartbeat interval (a worker that has just taken the message takes the
  lease within that time), a cancel request ends it as cancelled, a job whose worker died
  ``SSDSTACK_MAX_ATTEMPTS`` times fails as ``worker_lost``, and any other is sent again at
  its current stage, which resumes from its checkpoint.

The dead worker's unacknowledged message still comes back after the visibility timeout;
by then its job has moved on or is held by a lease, and the message is dropped or waits.

Every worker process runs sweeps, one at a time stack-wide (a Redis lock). No sweep runs
while Redis has been up, or this process has reached it, for less than a lease's TTL:
leases could not be renewed while it was away, so their expiry says nothing about workers.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import redis
from celery import Celery

from ssdstack.jobs.pipeline import JOB_TYPES, JobType, send_stage, stage_task_id
from ssdstack.jobs.records import PREFIX, QUEUED, RUNNING, TERMINAL, JobStore
from ssdstack.settings import CommonSettings

log = logging.getLogger(__name__)
LOCK = "ssdstack:reaper:lock"
# Job id -> when a sweep first saw it orphaned; an entry goes once the job is seen held,
# waiting or ended.
SUSPECTS = "ssdstack:reaper:suspects"

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Whether a Celery queue (a list on the Redis transport, each entry a JSON message with the
# task id in its headers) holds the message of task ARGV[1]. Searched in Redis: detect
# messages carry images, which a sweep must not pull over the network.
_QUEUED = """
local wanted = '"id": "' .. ARGV[1] .. '"'
for _, message in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.find(message, wanted, 1, true) then return 1 end
end
return 0
"""


@dataclass(frozen=True)
class Reaped:
    """What a sweep did to one job: ``action`` is ``resent``, ``cancelled`` or ``failed``."""

    job_id: str
    action: str
    stage: str


class Reaper:
    def __init__(self, app: Celery, jobs: JobStore, settings: CommonSettings,
                 job_types: Mapping[str, JobType] = JOB_TYPES, owner: str = ""):
        self.app = app
        self.jobs = jobs
        self.settings = settings
        self.job_types = job_types
        self.owner = owner or uuid.uuid4().hex
        self._reached_since: float | None = None
        self._release = jobs.redis.register_script(_RELEASE_LOCK)
        self._queued = jobs.redis.register_script(_QUEUED)

    def sweep(self) -> list[Reaped]:
        """One sweep, unless another process is sweeping or Redis is too fresh to judge
        leases by; what it did. Raises RedisError when Redis cannot be reached."""
        client = self.jobs.redis
        try:
            uptime = int(client.info("server")["uptime_in_seconds"])
        except redis.RedisError:
            self._reached_since = None
            raise
        now = time.monotonic()
        if self._reached_since is None:
            self._reached_since = now
        ttl = self.settings.heartbeat_ttl
        if uptime < ttl or now - self._reached_since < ttl:
            return []
        token = f"{self.owner}/{uuid.uuid4().hex[:8]}"
        if not client.set(LOCK, token, nx=True, px=int(ttl * 1000)):
            return []
        try:
            return self._sweep()
        finally:
            self._release(keys=[LOCK], args=[token])

    def _sweep(self) -> list[Reaped]:
        client = self.jobs.redis
        ids = self.jobs.active()
        if not ids:
            client.delete(SUSPECTS)
            return []
        pipe = client.pipeline()
        for job_id in ids:
            pipe.hgetall(PREFIX + job_id)
            pipe.exists(f"{PREFIX}{job_id}:lease")
        replies = pipe.execute()
        records = {job_id: (raw, bool(leased)) for job_id, raw, leased in zip(ids, replies[::2], replies[1::2])}
        ended = [job_id for job_id, (raw, _) in records.items() if not raw or raw.get("state") in TERMINAL]
        self.jobs.forget_active(ended)
        suspects = client.hgetall(SUSPECTS)
        first_seen = time.time()
        done, newly_suspected, cleared = [], {}, [job_id for job_id in suspects if job_id not in records]
        for job_id, (raw, leased) in records.items():
            if job_id in ended:
                cleared.append(job_id)
                continue
            job = JobStore.decode(raw)
            job_type = self.job_types.get(job["type"])
            if job_type is None:  # a worker that knows no such type fails the job when it gets it
                continue
            index = job_type.index(job["stage"]) if job.get("stage") else 0
            if leased or self._queued(keys=[job_type.stages[index].route.queue],
                                      args=[stage_task_id(job_id, job_type, index)]):
                cleared.append(job_id)
            elif job_id not in suspects:
                newly_suspected[job_id] = first_seen
            elif first_seen - float(suspects[job_id]) >= self.settings.heartbeat_interval:
                cleared.append(job_id)
                done.append(self._end_or_resend(job, job_type, index))
        pipe = client.pipeline()
        cleared = [job_id for job_id in cleared if job_id in suspects]
        if cleared:
            pipe.hdel(SUSPECTS, *cleared)
        if newly_suspected:
            pipe.hset(SUSPECTS, mapping=newly_suspected)
        pipe.execute()
        return [entry for entry in done if entry is not None]

    def _end_or_resend(self, job: dict, job_type: JobType, index: int) -> Reaped | None:
        """Cancel, fail or send again an orphaned job."""
        job_id, stage = job["id"], job_type.stages[index].name
        if self.jobs.cancel_requested(job_id):
            if self.jobs.mark_cancelled(job_id, f"cancelled; no live worker was running it (stage {stage})"):
                return Reaped(job_id, "cancelled", stage)
            return None
        entry = (job.get("stages") or [{}] * len(job_type.stages))[index]
        died_running = job["state"] == RUNNING and entry.get("state") == RUNNING
        if died_running:
            losses = self.jobs.worker_lost(job_id)
            if losses >= self.settings.max_attempts:
                message = (f"the job took its worker down {losses} times (last at stage {stage}, on "
                           f"{job.get('worker', 'an unknown worker')}); SSDSTACK_MAX_ATTEMPTS is "
                           f"{self.settings.max_attempts}. Look for an out-of-memory kill or a crash in that "
                           f"worker's log")
                if self.jobs.fail(job_id, "worker_lost", message):
                    self._log(job_id, message)
                    return Reaped(job_id, "failed", stage)
                return None
            why = f"its worker ({job.get('worker', 'unknown')}) died; attempt {losses + 1} of {self.settings.max_attempts}"
        elif job["state"] == QUEUED:
            why = "its message was lost before a worker took it"
        else:
            why = "no worker held it and its message was not queued"
        send_stage(self.app, self.jobs, job_id, job_type, index)
        self._log(job_id, f"reaper: stage {stage} sent again: {why}")
        return Reaped(job_id, "resent", stage)

    def _log(self, job_id: str, message: str) -> None:
        log.warning("job %s: %s", job_id, message)
        self.jobs.log(job_id, message)

