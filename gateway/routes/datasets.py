"""``/v1/datasets``: upload a dataset archive (COCO, Pascal VOC or text), list and inspect datasets."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from gateway.deps import Access, DatasetsDep, Read, SettingsDep
from gateway.upload import spooled_body
from ssdstack.api_keys import Scope
from ssdstack.datasets.store import UploadLimits

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=201, summary="Upload a dataset archive (zip or tar) as the raw request body",
             dependencies=[Depends(Access(Scope.SUBMIT, body="upload"))],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/zip": {"schema": {"type": "string", "format": "binary"}},
                 "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_dataset(request: Request, datasets: DatasetsDep, settings: SettingsDep,
                         name: Annotated[str, Query(description="dataset name: a-z, 0-9, '.', '_', '-'")],
                         format: Annotated[Literal["auto", "coco", "voc", "text"], Query(
                             description="the layout the archive must hold; auto detects it")] = "auto") -> dict:
    """The body is counted while it streams in and refused past ``max_upload_bytes``;
    extraction and validation run in a worker thread, and a failed upload leaves nothing."""
    limits = UploadLimits(max_bytes=settings.max_upload_bytes, max_members=settings.max_archive_members,
                          max_unpacked_bytes=settings.max_unpacked_bytes, max_pixels=settings.max_image_pixels)
    async with spooled_body(request, datasets.tmp_dir) as spool:
        return await run_in_threadpool(datasets.ingest_archive, spool, name, limits, format)


@router.get("", summary="List datasets", dependencies=Read)
def list_datasets(datasets: DatasetsDep) -> dict:
    return {"datasets": datasets.list()}


@router.get("/{name}", summary="One dataset's description", dependencies=Read)
def get_dataset(name: str, datasets: DatasetsDep) -> dict:
    return datasets.get(name)
