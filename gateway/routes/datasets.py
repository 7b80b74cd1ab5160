"""``/v1/datasets``: upload a COCO dataset archive, list and inspect datasets."""
from __future__ import annotations

import tempfile
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from gateway.deps import Authorized, DatasetsDep, SettingsDep
from ssdstack.datasets.store import UploadLimits
from ssdstack.errors import PayloadTooLarge

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], dependencies=Authorized)


@router.post("", status_code=201, summary="Upload a dataset archive (zip or tar) as the raw request body",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/zip": {"schema": {"type": "string", "format": "binary"}},
                 "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_dataset(request: Request, datasets: DatasetsDep, settings: SettingsDep,
                         name: Annotated[str, Query(description="dataset name: a-z, 0-9, '.', '_', '-'")]) -> dict:
    """The body is counted while it streams in and refused past ``max_upload_bytes``;
    extraction and validation run in a worker thread, and a failed upload leaves nothing."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload is {declared} bytes, over the limit of {limit}")
    limits = UploadLimits(max_bytes=limit, max_members=settings.max_archive_members,
                          max_unpacked_bytes=settings.max_unpacked_bytes, max_pixels=settings.max_image_pixels)
    with tempfile.TemporaryFile(dir=_scratch(datasets)) as spool:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"upload exceeds the limit of {limit} bytes")
            await run_in_threadpool(spool.write, chunk)
        spool.seek(0)
        return await run_in_threadpool(datasets.ingest_archive, spool, name, limits)


def _scratch(datasets) -> str:
    datasets.tmp_dir.mkdir(parents=True, exist_ok=True)
    return str(datasets.tmp_dir)


@router.get("", summary="List datasets")
def list_datasets(datasets: DatasetsDep) -> dict:
    return {"datasets": datasets.list()}


@router.get("/{name}", summary="One dataset's description")
def get_dataset(name: str, datasets: DatasetsDep) -> dict:
    return datasets.get(name)
