"""Job records in Redis.

A job is a hash ``ssdstack:job:<id>`` (its id is also the Celery task id) with JSON
fields, an index sorted by creation time, a capped log list, a cancel flag and a lease.
Every key ends: a finished job's record, log and cancel flag expire after the retention;
an unfinished job is listed in the active set, which the reaper
(:mod:`ssdstack.jobs.reaper`) sweeps until the job ends; a log or cancel flag written
meanwhile expires after the retention too, unless the job writes it again.
Its ``stages`` field lists the job's stages in order, each ``{"name", "state", and once
started "started_at", once done "finished_at" and "output"}`` (the stage's typed output,
see :mod:`ssdstack.jobs.stage_data`); ``stage`` names the current one.
The lease (``ssdstack:job:<id>:lease`` = worker id, with a TTL the running worker keeps
renewing) tells a redelivered message whether its job is still being run by a live
worker.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from ssdstack.errors import Conflict, NotFound
from ssdstack.redis_client import connect

PREFIX = "ssdstack:job:"
INDEX = "ssdstack:jobs"
ACTIVE = "ssdstack:jobs:active"  # ids of jobs not yet terminal: what the reaper sweeps
JOB_ID = re.compile(r"[0-9a-f]{32}")  # what JobStore.new_id makes
# A submission's Idempotency-Key, scoped to its caller -> the job it made and its body's hash.
IDEMPOTENCY_PREFIX = "ssdstack:idempotency:"
IDEMPOTENCY_TTL_S = 24 * 3600
LOG_LINES_KEPT = 500

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
PENDING = "pending"  # a stage not started yet
JSON_FIELDS = ("spec", "progress", "result", "error", "stages", "legacy_result")

# Set the state unless the job already reached a terminal one (a late worker update must
# not turn a cancelled job back into running). Returns 1 when the state was written.
_SET_STATE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Take the lease if it is free or already ours; renew it if ours.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Move the job's stage forward only: a late write for an earlier stage never rewinds it.
_ADVANCE_STAGE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'stage_order') or '-1')
if tonumber(ARGV[2]) <= current then return 0 end
redis.call('HSET', KEYS[1], 'stage', ARGV[1], 'stage_order', ARGV[2], 'updated_at', ARGV[3])
return 1
"""

# Cancel a job only while it is still queued (a worker may be marking it running).
_CANCEL_QUEUED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Give a record from before stages were listed its stages (those before the current one
# done) and keep its result as the base later stage outputs add to, once.
_ADOPT_LEGACY = """
if redis.call('HEXISTS', KEYS[1], 'stages') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'stages', ARGV[1], 'stage', ARGV[2], 'stage_order', ARGV[3],
           'legacy_result', redis.call('HGET', KEYS[1], 'result') or 'null')
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _now() -> float:
    return round(time.time(), 3)


def _pending(names: Sequence[str]) -> list[dict]:
    return [{"name": name, "state": PENDING} for name in names]


class JobStore:
    def __init__(self, client: redis.Redis, retention_s: int = 30 * 24 * 3600):
        self.redis = client
        self.retention_s = retention_s
        self._set_state = client.register_script(_SET_STATE)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._advance_stage = client.register_script(_ADVANCE_STAGE)
        self._cancel_queued = client.register_script(_CANCEL_QUEUED)
        self._adopt_legacy = client.register_script(_ADOPT_LEGACY)

    @classmethod
    def from_url(cls, url: str, socket_timeout: float = 10, retention_s: int = 30 * 24 * 3600,
                 sentinel_master: str = "mymaster") -> "JobStore":
        """``socket_timeout`` must exceed any blocking command's timeout (the gateway's BLPOP);
        ``sentinel_master``: the group's name, for a ``sentinel://`` URL."""
        return cls(connect(url, sentinel_master, decode_responses=True, socket_timeout=socket_timeout,
                           socket_connect_timeout=5, health_check_interval=30), retention_s)

    # -- records ---------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def create(self, job_type: str, spec: dict, stages: Sequence[str] | None = None, job_id: str | None = None) -> dict:
        """A queued job; ``stages``: the names of its stages, in order; ``job_id``: one from
        :meth:`new_id` (a fresh one by default)."""
        job_id = job_id or self.new_id()
        now = _now()
        fields = {"id": job_id, "type": job_type, "state": QUEUED, "spec": json.dumps(spec),
                  "progress": json.dumps({}), "created_at": now, "updated_at": now, "attempts": 0}
        if stages is not None:
            fields["stages"] = json.dumps(_pending(stages))
        pipe = self.redis.pipeline()
        pipe.hset(PREFIX + job_id, mapping=fields)
        pipe.zadd(INDEX, {job_id: now})
        pipe.sadd(ACTIVE, job_id)
        pipe.execute()
        return self.get(job_id)

    def bind_idempotency_key(self, scope: str, key: str, body: dict, job_id: str) -> str:
        """Bind a caller's (``scope``) Idempotency-Key to ``job_id`` and ``body`` for a day;
        the job the key is bound to: ``job_id`` when this call bound it, or the job of an
        earlier submission with the same key and body. Raises Conflict when the key was
        used with another body."""
        name = IDEMPOTENCY_PREFIX + hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if self.redis.set(name, json.dumps({"job": job_id, "body": digest}), nx=True, ex=IDEMPOTENCY_TTL_S):
            return job_id
        earlier = json.loads(self.redis.get(name) or "null")
        if earlier is None:  # expired a moment ago: bind it afresh
            return self.bind_idempotency_key(scope, key, body, job_id)
        if earlier["body"] != digest:
            raise Conflict(f"Idempotency-Key {key!r} was used for job {earlier['job']} with another body; "
                           "use a new key for a new job", details={"job": earlier["job"]})
        return earlier["job"]

    def discard(self, job_id: str) -> None:
        """Delete a record no message was ever sent for (a duplicate submission)."""
        pipe = self.redis.pipeline()
        pipe.delete(PREFIX + job_id)
        pipe.zrem(INDEX, job_id)
        pipe.srem(ACTIVE, job_id)
        pipe.execute()

    def get(self, job_id: str) -> dict:
        raw = self.redis.hgetall(PREFIX + job_id)
        if not raw:
            raise NotFound(f"no job with id {job_id!r}")
        return self.decode(raw)

    def state(self, job_id: str) -> str | None:
        """The job's state, or None when there is no such job (or it expired)."""
        return self.redis.hget(PREFIX + job_id, "state")

    def list(self, limit: int = 50, offset: int = 0, state: str | None = None, job_type: str | None = None) -> list[dict]:
        """Newest first, filtered by state and type, then paged."""
        ids = self.redis.zrevrange(INDEX, 0, -1)
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hgetall(PREFIX + job_id)
        records = pipe.execute()
        expired = [job_id for job_id, raw in zip(ids, records) if not raw]
        if expired:
            self.redis.zrem(INDEX, *expired)
        jobs = [self.decode(raw) for raw in records if raw]
        jobs = [j for j in jobs if (state is None or j["state"] == state) and (job_type is None or j["type"] == job_type)]
        return jobs[offset:offset + limit]

    @staticmethod
    def decode(raw: dict[str, str]) -> dict[str, Any]:
        job: dict[str, Any] = dict(raw)
        for field in JSON_FIELDS:
            job[field] = json.loads(raw[field]) if field in raw else None
        for field in ("created_at", "updated_at", "started_at", "finished_at"):
            if field in raw:
                job[field] = float(raw[field])
        job["attempts"] = int(raw.get("attempts", 0))
        job["worker_losses"] = int(raw.get("worker_losses", 0))
        return job

    def _write_state(self, job_id: str, **fields: Any) -> bool:
        args: list[Any] = []
        for key, value in dict(fields, updated_at=_now()).items():
            args += [key, json.dumps(value) if key in JSON_FIELDS else value]
        written = self._set_state(keys=[PREFIX + job_id], args=args)
        if written == -1:
            raise NotFound(f"no job with id {job_id!r}")
        return written == 1

    def mark_running(self, job_id: str, worker_id: str) -> bool:
        """False when the job is already terminal (cancelled before it started, or done)."""
        self.redis.hincrby(PREFIX + job_id, "attempts", 1)
        fields = {"state": RUNNING, "worker": worker_id}
        if not self.redis.hexists(PREFIX + job_id, "started_at"):
            fields["started_at"] = _now()
        return self._write_state(job_id, **fields)

    def succeed(self, job_id: str, result: dict) -> bool:
        return self._finish(job_id, state=SUCCEEDED, result=result)

    def fail(self, job_id: str, code: str, message: str, details: Any = None) -> bool:
        return self._finish(job_id, state=FAILED, error={"code": code, "message": message, "details": details})

    def mark_cancelled(self, job_id: str, message: str = "cancelled") -> bool:
        return self._finish(job_id, state=CANCELLED, error={"code": "cancelled", "message": message, "details": None})

    def _finish(self, job_id: str, **fields: Any) -> bool:
        """Write a terminal state (a running stage ends in it too); the record and its keys
        then expire after the retention."""
        now = _now()
        stages = self._stages(job_id)
        if stages is not None:
            for entry in stages:
                if entry["state"] == RUNNING:
                    entry.update(state=fields["state"], finished_at=now)
            fields["stages"] = stages
        written = self._write_state(job_id, finished_at=now, **fields)
        if written:
            self._expire(job_id)
        return written

    def _expire(self, job_id: str) -> None:
        pipe = self.redis.pipeline()
        for suffix in ("", ":log", ":cancel"):
            pipe.expire(f"{PREFIX}{job_id}{suffix}", self.retention_s)
        pipe.srem(ACTIVE, job_id)
        pipe.execute()

    def list_unfinished_as_active(self) -> int:
        """Put every unfinished job of the index on the active set (records written before
        the set existed); how many were added."""
        ids = self.redis.zrange(INDEX, 0, -1)
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hget(PREFIX + job_id, "state")
        unfinished = [job_id for job_id, state in zip(ids, pipe.execute()) if state and state not in TERMINAL]
        return int(self.redis.sadd(ACTIVE, *unfinished)) if unfinished else 0

    def active(self) -> list[str]:
        """Ids of the jobs listed as not yet terminal."""
        return list(self.redis.smembers(ACTIVE))

    def forget_active(self, job_ids: Sequence[str]) -> None:
        """Take ended or expired jobs off the active set."""
        if job_ids:
            self.redis.srem(ACTIVE, *job_ids)

    def worker_lost(self, job_id: str) -> int:
        """Count one more run of the job whose worker died; the count so far."""
        return int(self.redis.hincrby(PREFIX + job_id, "worker_losses", 1))

    def requeue(self, job_id: str, index: int, reason: str) -> bool:
        """Put a job whose run was interrupted (its worker shutting down) back to queued,
        stage ``index`` pending again; False once the job is terminal."""
        return self._write_stage(job_id, index, {"state": PENDING, "interrupted": reason}, state=QUEUED)

    def advance_stage(self, job_id: str, stage: str, order: int) -> bool:
        """Make ``stage`` (the ``order``-th stage) the job's current stage, unless the job is
        already at that stage or past it."""
        return bool(self._advance_stage(keys=[PREFIX + job_id], args=[stage, order, _now()]))

    # -- stages ------------------------------------------------------------------
    def _stages(self, job_id: str) -> list[dict] | None:
        raw = self.redis.hget(PREFIX + job_id, "stages")
        return None if raw is None else json.loads(raw)

    def adopt_legacy(self, job_id: str, names: Sequence[str], current: int) -> None:
        """Bring a record written before jobs listed their stages up to date, once: its
        stages (``names``; those before stage ``current`` done), its current stage by name,
        and its result kept as ``legacy_result``, the base the stages' outputs add to."""
        stages = [dict(entry, state=SUCCEEDED) if index < current else entry
                  for index, entry in enumerate(_pending(names))]
        self._adopt_legacy(keys=[PREFIX + job_id], args=[json.dumps(stages), names[current], current])

    def stage_started(self, job_id: str, index: int) -> bool:
        """Mark stage ``index`` running; False once the job is terminal."""
        return self._write_stage(job_id, index, {"state": RUNNING, "started_at": _now()})

    def stage_done(self, job_id: str, index: int, output: dict, result: dict) -> bool:
        """Record stage ``index``'s output and the job's result so far, in one write."""
        return self._write_stage(job_id, index, {"state": SUCCEEDED, "finished_at": _now(), "output": output},
                                 result=result)

    def _write_stage(self, job_id: str, index: int, entry: dict, **fields: Any) -> bool:
        """Update stage ``index``'s entry (and ``fields``) unless the job is terminal."""
        stages = self._stages(job_id) or []
        stages[index].update(entry)
        return self._write_state(job_id, stages=stages, **fields)

    def progress(self, job_id: str, **fields: Any) -> None:
        key = PREFIX + job_id
        current = json.loads(self.redis.hget(key, "progress") or "{}")
        current.update(fields)
        self.redis.hset(key, mapping={"progress": json.dumps(current), "updated_at": _now()})

    def log(self, job_id: str, message: str) -> None:
        key = f"{PREFIX}{job_id}:log"
        pipe = self.redis.pipeline()
        pipe.rpush(key, f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}")
        pipe.ltrim(key, -LOG_LINES_KEPT, -1)
        pipe.expire(key, self.retention_s)
        pipe.execute()

    def logs(self, job_id: str) -> list[str]:
        self.get(job_id)
        return self.redis.lrange(f"{PREFIX}{job_id}:log", 0, -1)

    # -- cancel ----------------------------------------------------------------
    def request_cancel(self, job_id: str) -> dict:
        """Ask a job to stop. A queued job is cancelled at once; a running one stops at
        its next check; a finished job cannot be cancelled (Conflict)."""
        job = self.get(job_id)
        if job["state"] in TERMINAL:
            raise Conflict(f"job {job_id} already {job['state']}")
        self.redis.set(f"{PREFIX}{job_id}:cancel", "1", ex=self.retention_s)
        error = json.dumps({"code": "cancelled", "message": "cancelled before it started", "details": None})
        if self._cancel_queued(keys=[PREFIX + job_id],
                               args=["state", CANCELLED, "error", error, "finished_at", _now(), "updated_at", _now()]):
            self._expire(job_id)
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(f"{PREFIX}{job_id}:cancel"))

    # -- lease -----------------------------------------------------------------
    def acquire_lease(self, job_id: str, worker_id: str, ttl_s: float) -> bool:
        return bool(self._acquire(keys=[f"{PREFIX}{job_id}:lease"], args=[worker_id, int(ttl_s * 1000)]))

    def lease_holder(self, job_id: str) -> str | None:
        return self.redis.get(f"{PREFIX}{job_id}:lease")

    def release_lease(self, job_id: str, worker_id: str) -> None:
        self._release(keys=[f"{PREFIX}{job_id}:lease"], args=[worker_id])
