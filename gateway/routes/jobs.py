"""``/v1/jobs``: submit, list, inspect and cancel jobs."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query

from gateway.deps import Authorized, CeleryDep, JobsDep
from gateway.errors import BROKER_ERRORS
from ssdstack.celery_app import CONVERT_TASK, EVALUATE_TASK, TRAIN_TASK
from ssdstack.jobs.pipeline import send_stage
from converter.backends import BACKENDS
from inferencer.backends import ENGINES
from ssdstack.errors import BackendUnavailable, ServiceUnavailable
from ssdstack.jobs.specs import JobSpec
from ssdstack.worker import live_workers

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=Authorized)

FIRST_STAGE = {"train": TRAIN_TASK, "pipeline": TRAIN_TASK, "import": TRAIN_TASK, "export": TRAIN_TASK,
               "convert": CONVERT_TASK, "evaluate": EVALUATE_TASK}
State = Literal["queued", "running", "succeeded", "failed", "cancelled"]


# The engine that serves each converter backend's artefact.
SERVING_ENGINE = {"onnxruntime": "onnxruntime", "atc": "mxsdk"}


@router.post("", status_code=202, summary="Submit a job (train | pipeline | import | export | convert | evaluate)")
def create_job(spec: Annotated[JobSpec, Body()], jobs: JobsDep, celery: CeleryDep) -> dict:
    job = jobs.create(spec.type, spec.model_dump())
    missing = missing_backend(spec, live_workers(jobs.redis))
    if missing:
        # Queued, it would wait for a worker that never comes (or fail after the stages before).
        jobs.fail(job["id"], "backend_unavailable", missing)
        raise BackendUnavailable(missing, details={"job": job["id"]})
    try:
        send_stage(celery, jobs, FIRST_STAGE[spec.type], job["id"], first=True)
    except BROKER_ERRORS as error:
        # No message means no worker will ever pick the job up: say so on the record too.
        jobs.fail(job["id"], "broker_unavailable", f"the job could not be queued: {error}")
        raise ServiceUnavailable(f"the job could not be queued: {error}") from error
    return jobs.get(job["id"])


def missing_backend(spec, workers: list[dict]) -> str:
    """Why the live workers cannot run ``spec``'s named backends ("" when they can, or when
    a queue has no live worker yet: the job then waits for one, as any job does).

    Every live worker of the queue must have the backend: Celery hands a task to any of
    them, so one without it would fail the job by chance.
    """
    backend = getattr(spec, "backend", "auto")
    if backend == "auto":
        return ""
    needs = [("convert", backend, "converter")]
    if spec.type == "pipeline":
        needs.append(("infer", SERVING_ENGINE[backend], "inferencer"))
    for queue, name, service in needs:
        lacking = [w for w in workers if queue in w["queues"] and name not in w.get("backends", {}).get(queue, [])]
        if lacking:
            have = "; ".join(f"{w['worker_id']}: {', '.join(w.get('backends', {}).get(queue, [])) or 'none'}"
                             for w in lacking)
            hint = (BACKENDS[name] if queue == "convert" else ENGINES[name])().install_hint
            return (f"live {service}s without the {name!r} backend take {queue!r} tasks too ({have}); every "
                    f"{service} on the queue needs it: {hint}")
    return ""
    needs = [("convert", backend, "converter")]
    if spec.type == "pipeline":
        needs.append(("infer", SERVING_ENGINE[backend], "inferencer"))
    for queue, name, service in needs:
        serving = [w for w in workers if queue in w["queues"]]
        if serving and not any(name in w.get("backends", {}).get(queue, []) for w in serving):
            have = "; ".join(f"{w['worker_id']}: {', '.join(w.get('backends', {}).get(queue, [])) or 'none'}"
                             for w in serving)
            hint = (BACKENDS[name] if queue == "convert" else ENGINES[name])().install_hint
            return f"no live {service} has the {name!r} backend ({have}): {hint}"
    return ""


@router.get("", summary="List jobs, newest first")
def list_jobs(jobs: JobsDep, state: State | None = None, type: str | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0)] = 0) -> dict:
    return {"jobs": jobs.list(limit=limit, offset=offset, state=state, job_type=type)}


@router.get("/{job_id}", summary="One job: state, progress, result or error")
def get_job(job_id: str, jobs: JobsDep) -> dict:
    return jobs.get(job_id)


@router.get("/{job_id}/logs", summary="The job's log lines")
def get_job_logs(job_id: str, jobs: JobsDep) -> dict:
    return {"id": job_id, "lines": jobs.logs(job_id)}


@router.delete("/{job_id}", status_code=202, summary="Cancel a job (cooperative: it stops at its next check)")
def cancel_job(job_id: str, jobs: JobsDep) -> dict:
    return jobs.request_cancel(job_id)
