"""``/v1/jobs``: submit, list, inspect and cancel jobs."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Path, Query

from gateway.deps import CallerDep, CeleryDep, DatasetsDep, JobsDep, ModelsDep, Read, Submit
from gateway.errors import BROKER_ERRORS
from gateway.heartbeats import backend_entries, described
from gateway.routes.datasets import current
from ssdstack.errors import BackendUnavailable, Conflict, NotFound, ServiceUnavailable
from ssdstack.jobs.pipeline import JOB_TYPES, JobSpec, send_stage
from ssdstack.jobs.records import JOB_ID
from ssdstack.heartbeats import live_workers
from ssdstack.model_store import INT8, calibration_dataset

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Annotated[str, Path(pattern=f"^{JOB_ID.pattern}$", description="a job id, 32 hex digits")]

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255,
    description="Submitting again with the same key and body returns the job the first submission made (for a "
                "day); the same key with another body is refused with 409.")]


@router.post("", status_code=202, summary="Submit a job (train | pipeline | import | export | convert | evaluate)",
             dependencies=Submit)
def create_job(spec: Annotated[JobSpec, Body()], jobs: JobsDep, models: ModelsDep, datasets: DatasetsDep,
               celery: CeleryDep, caller: CallerDep, idempotency_key: IdempotencyKey = None) -> dict:
    job_type = JOB_TYPES[spec.type]
    _require_ready(datasets, jobs, getattr(spec, "dataset", None))
    if spec.type == "convert" and spec.precision == INT8:
        _require_calibration_data(models, datasets, jobs, spec)
    body = spec.model_dump(mode="json")
    if spec.type == "pipeline" and spec.deploy and spec.deploy_if_match is None:
        spec = spec.model_copy(update={"deploy_if_match": models.deployed_version(spec.model) or 0})
    job = jobs.create(spec.type, spec.model_dump(), job_type.stage_names)
    if idempotency_key is not None:
        bound = jobs.bind_idempotency_key(caller, idempotency_key, body, job["id"])
        if bound != job["id"]:  # a repeat: this record was never sent
            jobs.discard(job["id"])
            return jobs.get(bound)
    missing = missing_backend(spec, live_workers(jobs.redis))
    if missing:
        # Queued, it would wait for a worker that never comes (or fail after the stages before).
        jobs.fail(job["id"], "backend_unavailable", missing)
        raise BackendUnavailable(missing, details={"job": job["id"]})
    try:
        send_stage(celery, jobs, job["id"], job_type, 0)
    except BROKER_ERRORS as error:
        # No message means no worker will ever pick the job up: say so on the record too.
        jobs.fail(job["id"], "broker_unavailable", f"the job could not be queued: {error}")
        raise ServiceUnavailable(f"the job could not be queued: {error}") from error
    return jobs.get(job["id"])


def _require_ready(datasets, jobs, name: str | None) -> None:
    """Conflict when dataset ``name`` is being ingested or failed to (its ingest job ended
    without it counts as failed); one that does not exist is left to the job, which fails
    naming it."""
    try:
        state = current(datasets.get(name), jobs)["state"] if name else "ready"
    except NotFound:
        return
    if state != "ready":
        raise Conflict(f"dataset {name!r} is not ready: it is {state} (GET /v1/datasets/{name})")


def _require_calibration_data(models, datasets, jobs, spec) -> None:
    """Conflict unless the version's own dataset, which an INT8 conversion calibrates and
    is gated on, is ready in the store."""
    dataset = calibration_dataset(models.manifest(spec.model, spec.version))
    try:
        datasets.get(dataset)
    except NotFound:
        raise Conflict(f"INT8 calibrates on the version's dataset {dataset!r}, which is not in the store: upload "
                       "it again under that name, or convert with precision fp32") from None
    _require_ready(datasets, jobs, dataset)


def missing_backend(spec, workers: list[dict]) -> str:
    """Why the live workers cannot run ``spec``'s named converter backend and, for a
    pipeline, an engine serving its artefact ("" when they can, or when a queue has no live
    worker yet: the job then waits for one, as any job does). What each worker has, and
    how to install what it lacks, comes from its heartbeat; which engine serves a
    converter's artefact, from the converters' heartbeats (with no live converter that
    knows the backend, the job waits for one too).

    Every live worker of the queue must have the backend: Celery hands a task to any of
    them, so one without it would fail the job by chance.
    """
    backend = getattr(spec, "backend", "auto")
    if backend == "auto":
        return ""
    missing = _lacking(workers, "convert", "converter", lambda entry: entry["name"] == backend, backend)
    artefacts = {entry["artefact"] for entry in backend_entries(workers, "convert") if entry["name"] == backend} - {None}
    if missing or spec.type != "pipeline" or not artefacts:
        return missing
    engines = sorted({entry["name"] for entry in backend_entries(workers, "infer") if entry["artefact"] in artefacts})
    serves = " or ".join(engines) or f"one serving {backend}'s artefact"
    # The evaluator evaluates the artefact with the same engines, then the inferencers serve it.
    return (_lacking(workers, "evaluate", "evaluator", lambda entry: entry["artefact"] in artefacts, serves)
            or _lacking(workers, "infer", "inferencer", lambda entry: entry["artefact"] in artefacts, serves))


def _lacking(workers: list[dict], queue: str, service: str, wanted, name: str) -> str:
    lacking = [w for w in workers if queue in w["queues"]
               and not any(wanted(entry) and entry["usable"] for entry in described(w, queue))]
    if not lacking:
        return ""
    have = "; ".join(f"{w['worker_id']}: {', '.join(w.get('backends', {}).get(queue, [])) or 'none'}" for w in lacking)
    hints = sorted({entry["install_hint"] for entry in backend_entries(workers, queue)
                    if wanted(entry) and entry["install_hint"]})
    return (f"live {service}s without the {name!r} backend take {queue!r} tasks too ({have}); every "
            f"{service} on the queue needs it: {'; '.join(hints) or 'no worker knows how to install it'}")


@router.get("", summary="List jobs, newest first", dependencies=Read)
def list_jobs(jobs: JobsDep, state: State | None = None, type: str | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0)] = 0) -> dict:
    return {"jobs": jobs.list(limit=limit, offset=offset, state=state, job_type=type)}


@router.get("/{job_id}", summary="One job: state, stages, progress, result or error", dependencies=Read)
def get_job(job_id: JobId, jobs: JobsDep) -> dict:
    return jobs.get(job_id)


@router.get("/{job_id}/logs", summary="The job's log lines", dependencies=Read)
def get_job_logs(job_id: JobId, jobs: JobsDep) -> dict:
    return {"id": job_id, "lines": jobs.logs(job_id)}


@router.delete("/{job_id}", status_code=202, summary="Cancel a job (cooperative: it stops at its next check)",
               dependencies=Submit)
def cancel_job(job_id: JobId, jobs: JobsDep) -> dict:
    return jobs.request_cancel(job_id)
