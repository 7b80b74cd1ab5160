"""``/v1/datasets``: upload a dataset archive (COCO, Pascal VOC or text), list and inspect datasets.

An upload is spooled to the store under the size bound and answered 202 with an
``ingest`` job; the evaluator unpacks and validates it. The dataset is ``ingesting``
until then, ``ready`` or ``failed`` (with the reasons) after.
"""
from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from gateway.deps import Access, CeleryDep, DatasetsDep, JobsDep, Read
from gateway.errors import BROKER_ERRORS
from gateway.upload import save_body
from ssdstack.api_keys import Scope
from ssdstack.datasets.archive import looks_like_archive
from ssdstack.datasets.store import DatasetStore
from ssdstack.errors import InvalidArchive, NotFound, ServiceUnavailable
from ssdstack.jobs.pipeline import JOB_TYPES, send_stage
from ssdstack.jobs.records import TERMINAL, JobStore
from ssdstack.jobs.specs import IngestSpec

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
INGEST = JOB_TYPES["ingest"]


@router.post("", status_code=202, summary="Upload a dataset archive (zip or tar) as the raw request body",
             dependencies=[Depends(Access(Scope.SUBMIT, body="upload"))],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/zip": {"schema": {"type": "string", "format": "binary"}},
                 "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_dataset(request: Request, datasets: DatasetsDep, jobs: JobsDep, celery: CeleryDep,
                         name: Annotated[str, Query(description="dataset name: a-z, 0-9, '.', '_', '-'")],
                         format: Annotated[Literal["auto", "coco", "voc", "text"], Query(
                             description="the layout the archive must hold; auto detects it")] = "auto") -> dict:
    """The answer is the ``ingest`` job (follow it at ``/v1/jobs/{id}``); the dataset is
    ``ingesting`` until it ends. A name taken by a ready dataset or a running ingest is
    409 before the body is read."""
    await run_in_threadpool(datasets.check_available, name, lambda job_id: _ended(jobs, job_id))
    upload_id = uuid.uuid4().hex
    upload = datasets.upload_path(upload_id)
    try:
        await save_body(request, upload)
        if not await run_in_threadpool(looks_like_archive, upload):
            raise InvalidArchive("not a zip or tar archive (plain, gzip, bzip2 or xz)")
        return await run_in_threadpool(_submit_ingest, datasets, jobs, celery,
                                       IngestSpec(dataset=name, format=format, upload=upload_id))
    except BaseException:
        upload.unlink(missing_ok=True)
        raise


def _submit_ingest(datasets: DatasetStore, jobs: JobStore, celery, spec: IngestSpec) -> dict:
    job = jobs.create(INGEST.name, spec.model_dump(), INGEST.stage_names)
    datasets.begin_ingest(spec.dataset, job["id"])
    try:
        send_stage(celery, jobs, job["id"], INGEST, 0)
    except BROKER_ERRORS as error:
        failure = ServiceUnavailable(f"the ingest could not be queued: {error}")
        jobs.fail(job["id"], "broker_unavailable", failure.message)
        datasets.fail_ingest(spec.dataset, job["id"], failure.to_dict())
        raise failure from error
    return dict(jobs.get(job["id"]), dataset=datasets.get(spec.dataset))


@router.get("", summary="List datasets: ready, ingesting or failed", dependencies=Read)
def list_datasets(datasets: DatasetsDep, jobs: JobsDep) -> dict:
    return {"datasets": [current(record, jobs) for record in datasets.list()]}


@router.get("/{name}", summary="One dataset's description and state", dependencies=Read)
def get_dataset(name: str, datasets: DatasetsDep, jobs: JobsDep) -> dict:
    return current(datasets.get(name), jobs)


def current(record: dict, jobs: JobStore) -> dict:
    """An ``ingesting`` record whose job ended without storing the dataset (cancelled, its
    worker lost, or the record expired) reads as ``failed`` with the job's reason."""
    if record["state"] != "ingesting":
        return record
    job = _job(jobs, record["job"])
    if job is None:
        return dict(record, state="failed", error={"code": "job_gone", "message": f"job {record['job']} is gone",
                                                   "details": None})
    if job["state"] in TERMINAL:
        return dict(record, state="failed", error=job.get("error") or {
            "code": "job_ended", "message": f"job {record['job']} {job['state']} without storing the dataset",
            "details": None})
    return record


def _ended(jobs: JobStore, job_id: str) -> bool:
    job = _job(jobs, job_id)
    return job is None or job["state"] in TERMINAL


def _job(jobs: JobStore, job_id: str) -> dict | None:
    """The job's record; None once it expired."""
    try:
        return jobs.get(job_id)
    except NotFound:
        return None
