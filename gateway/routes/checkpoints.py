"""``/v1/checkpoints``: upload MindSpore checkpoints for transfer learning and import."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from gateway.deps import Access, CheckpointsDep, Read
from gateway.upload import spooled_body
from ssdstack.api_keys import Scope

router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"])


@router.put("/{name}", status_code=201, summary="Upload a .ckpt file as the raw request body",
            dependencies=[Depends(Access(Scope.ADMIN, body="upload"))],
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_checkpoint(name: str, request: Request, checkpoints: CheckpointsDep) -> dict:
    """Use it as ``pretrained`` / ``backbone_checkpoint`` of a train job, or as the
    ``checkpoint`` of an import job. Names are never overwritten (409)."""
    checkpoints.check_new(name)  # before the body is read
    async with spooled_body(request, checkpoints.tmp_dir) as spool:
        return await run_in_threadpool(checkpoints.save, name, spool)


@router.get("", summary="List uploaded checkpoints", dependencies=Read)
def list_checkpoints(checkpoints: CheckpointsDep) -> dict:
    return {"checkpoints": checkpoints.list()}
