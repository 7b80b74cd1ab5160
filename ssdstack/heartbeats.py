"""Worker heartbeats in Redis: each worker's record under ``ssdstack:worker:<id>`` with a
TTL, and its time in the ``ssdstack:workers`` registry. The workers write them
(:class:`~ssdstack.worker.WorkerRuntime`); the gateway's ``/readyz``, ``/v1/backends``,
``/v1/detect`` and backend checks read them, never ``celery inspect``, which a busy
single-job worker cannot answer.
"""
from __future__ import annotations

import json

import redis

WORKER_PREFIX = "ssdstack:worker:"
WORKER_REGISTRY = "ssdstack:workers"


def write_heartbeat(client: redis.Redis, record: dict, ttl_s: float) -> None:
    """Record ``record`` (its ``worker_id`` and ``time`` among the fields) for ``ttl_s``
    seconds, and drop registry entries silent for ten TTLs."""
    pipe = client.pipeline()
    pipe.set(WORKER_PREFIX + record["worker_id"], json.dumps(record), px=int(ttl_s * 1000))
    pipe.zadd(WORKER_REGISTRY, {record["worker_id"]: record["time"]})
    pipe.zremrangebyscore(WORKER_REGISTRY, "-inf", record["time"] - 10 * ttl_s)
    pipe.execute()


def remove_heartbeat(client: redis.Redis, worker_id: str) -> None:
    client.delete(WORKER_PREFIX + worker_id)
    client.zrem(WORKER_REGISTRY, worker_id)


def live_workers(client: redis.Redis) -> list[dict]:
    """Heartbeat records of every registered worker whose heartbeat key has not expired."""
    ids = client.zrange(WORKER_REGISTRY, 0, -1)
    if not ids:
        return []
    records = client.mget([WORKER_PREFIX + worker_id for worker_id in ids])
    return sorted((json.loads(raw) for raw in records if raw), key=lambda w: w["worker_id"])
