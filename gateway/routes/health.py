"""Health, readiness, backends and metrics. Health and readiness need no API key."""
from __future__ import annotations

import time

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway.deps import JobsDep, Read
from ssdstack.celery_app import QUEUES
from ssdstack.jobs.records import INDEX, PREFIX
from ssdstack.heartbeats import live_workers

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The gateway process is up")
async def healthz() -> dict:
    # async: answered on the event loop even when every worker thread is busy with detects
    return {"status": "ok"}


@router.get("/readyz", summary="Redis answers and every queue has a live worker (by heartbeat)")
def readyz(jobs: JobsDep) -> JSONResponse:
    try:
        jobs.redis.ping()
        workers = live_workers(jobs.redis)
    except redis.RedisError as error:
        return JSONResponse(status_code=503, content={"status": "unavailable", "redis": f"unreachable: {error}"})
    queues = {queue: sorted(w["worker_id"] for w in workers if queue in w["queues"]) for queue in QUEUES}
    missing = [queue for queue, names in queues.items() if not names]
    body = {"status": "ready" if not missing else "not_ready", "redis": "ok", "queues": queues,
            "missing_queues": missing}
    return JSONResponse(status_code=200 if not missing else 503, content=body)


@router.get("/v1/backends", summary="Live workers with their queues and backends", dependencies=Read)
def backends(jobs: JobsDep) -> dict:
    workers = live_workers(jobs.redis)
    now = time.time()
    for worker in workers:
        worker["seconds_since_heartbeat"] = round(now - worker["time"], 1)
    return {"workers": workers}


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics", dependencies=Read)
def metrics(jobs: JobsDep) -> str:
    client = jobs.redis
    lines = ["# HELP ssdstack_queue_length Messages waiting in a Celery queue.",
             "# TYPE ssdstack_queue_length gauge"]
    lines += [f'ssdstack_queue_length{{queue="{q}"}} {client.llen(q)}' for q in QUEUES]
    states: dict[str, int] = {}
    for job_id in client.zrange(INDEX, 0, -1):
        state = client.hget(PREFIX + job_id, "state")
        if state:
            states[state] = states.get(state, 0) + 1
    lines += ["# HELP ssdstack_jobs Jobs by state.", "# TYPE ssdstack_jobs gauge"]
    lines += [f'ssdstack_jobs{{state="{s}"}} {n}' for s, n in sorted(states.items())]
    workers = live_workers(client)
    lines += ["# HELP ssdstack_live_workers Workers with a live heartbeat, per queue.",
              "# TYPE ssdstack_live_workers gauge"]
    lines += [f'ssdstack_live_workers{{queue="{q}"}} {sum(q in w["queues"] for w in workers)}' for q in QUEUES]
    lines += ["# HELP ssdstack_model_load_failed 1 while an inferencer keeps serving an older version of a model "
              "because its deployed version failed to load.", "# TYPE ssdstack_model_load_failed gauge"]
    lines += [f'ssdstack_model_load_failed{{worker="{w["worker_id"]}",model="{model}"}} '
              f'{int(state.get("load_failed") is not None)}'
              for w in workers for model, state in sorted(w.get("serving", {}).items())]
    lines += ["# HELP ssdstack_detects_total Detect requests an inferencer finished since it started, by outcome "
              "(answered; refused: an error reply; expired: the client had stopped waiting), as of its last "
              "heartbeat.", "# TYPE ssdstack_detects_total counter"]
    lines += [f'ssdstack_detects_total{{worker="{w["worker_id"]}",outcome="{outcome}"}} {count}'
              for w in workers for outcome, count in sorted(w.get("detects", {}).items())]
    return "\n".join(lines) + "\n"
