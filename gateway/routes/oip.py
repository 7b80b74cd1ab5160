"""The KServe Open Inference Protocol (v2): health, server and model metadata, readiness,
and ``infer`` through the same detect path, keys and limits as ``/v1/detect``
(:mod:`gateway.detecting`; the wire format is :mod:`gateway.oip`).

A model is served at its deployed version: ``/versions/{v}`` routes answer for any stored
version, but only the deployed one is ready and infers. Health, readiness and server
metadata need no key. False health is 503 (what probes read); a model that is not ready
is 400 naming why, as Triton answers.
"""
from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway import detecting, oip
from gateway.deps import Access, JobsDep, ModelsDep, Read
from ssdstack.api_keys import Scope
from ssdstack.celery_app import INFER_QUEUE
from ssdstack.detect_protocol import DetectRequest
from ssdstack.errors import Conflict, InvalidInput
from ssdstack.heartbeats import live_workers
from ssdstack.model_store import ModelStore

router = APIRouter(prefix="/v2", tags=["inference (KServe v2)"])
PLATFORM = "ssdstack_ssd"
ModelVersion = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,8}$", description="a version number")]
Infer = [Depends(Access(Scope.READ, body="tensor"))]
_INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["inputs"]}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "an inference request; with the binary tensor extension, its JSON "
                   f"({oip.HEADER_LENGTH} bytes) followed by the tensors' bytes"}}


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> dict:
    return {"name": "ssdstack", "version": request.app.version, "extensions": [oip.BINARY_EXTENSION]}


@router.get("/health/live", summary="The gateway process is up")
async def server_live() -> dict:
    return {"live": True}


@router.get("/health/ready", summary="Redis answers and an inferencer is alive (503 when not)")
def server_ready(jobs: JobsDep) -> JSONResponse:
    try:
        ready = any(INFER_QUEUE in worker["queues"] for worker in live_workers(jobs.redis))
    except redis.RedisError:
        ready = False
    return JSONResponse(status_code=200 if ready else 503, content={"ready": ready})


@router.get("/models/{name}", summary="Model metadata", dependencies=Read)
def model_metadata(name: str, models: ModelsDep) -> dict:
    return _metadata(models, name)


@router.get("/models/{name}/versions/{version}", summary="Model version metadata", dependencies=Read)
def version_metadata(name: str, version: ModelVersion, models: ModelsDep) -> dict:
    models.version_dir(name, int(version))  # NotFound for a version that does not exist
    return _metadata(models, name)


@router.get("/models/{name}/ready", summary="The model has a deployed version an inferencer can serve",
            dependencies=Read)
def model_ready(name: str, models: ModelsDep, jobs: JobsDep) -> JSONResponse:
    return _ready(models, jobs, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="This version is deployed and can be served",
            dependencies=Read)
def version_ready(name: str, version: ModelVersion, models: ModelsDep, jobs: JobsDep) -> JSONResponse:
    return _ready(models, jobs, name, int(version))


@router.post("/models/{name}/infer", summary="Detect objects in one image", dependencies=Infer,
             openapi_extra=_INFER_BODY)
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Detect objects in one image with this version",
             dependencies=Infer, openapi_extra=_INFER_BODY)
async def infer_version(request: Request, name: str, version: ModelVersion) -> Response:
    return await _infer(request, name, int(version))


async def _infer(request: Request, name: str, version: int | None) -> Response:
    asked = oip.parse_infer(await request.body(), request.headers.get(oip.HEADER_LENGTH))
    models = request.app.state.models
    if version is not None:
        await run_in_threadpool(_deployed, models, name, version)
    answer = await detecting.detect(request, asked.image, DetectRequest.new(model=name, pixels=asked.pixels,
                                                                           **asked.overrides))
    if version is not None and answer.version != version:
        raise Conflict(f"model {name!r} version {version} was replaced by version {answer.version} during "
                       "this request; ask again")
    body, headers, media_type = oip.infer_response(answer, asked)
    return Response(body, headers=headers, media_type=media_type)


def _metadata(models: ModelStore, name: str) -> dict:
    versions = [str(manifest["version"]) for manifest in models.versions(name)]
    return {"name": name, "versions": versions, "platform": PLATFORM, "inputs": oip.INPUTS,
            "outputs": oip.OUTPUTS}


def _deployed(models: ModelStore, name: str, version: int) -> None:
    """Nothing when ``version`` is ``name``'s deployed version; else NotFound (no such
    version) or InvalidInput naming the deployed one."""
    models.version_dir(name, version)
    deployed = models.deployed_version(name)
    if deployed != version:
        raise InvalidInput(f"model {name!r} version {version} is not deployed; "
                           + (f"version {deployed} is" if deployed else "no version is")
                           + " (deploy it to serve it, or leave the version out)")


def _ready(models: ModelStore, jobs, name: str, version: int | None) -> JSONResponse:
    models.versions(name)  # NotFound for a model that does not exist
    deployed = models.deployed_version(name)
    if deployed is None:
        raise InvalidInput(f"model {name!r} has no deployed version")
    if version is not None:
        _deployed(models, name, version)
    inferencers = [worker for worker in live_workers(jobs.redis) if INFER_QUEUE in worker["queues"]]
    if not inferencers:
        raise InvalidInput("no inferencer is alive (no heartbeat on the infer queue)")
    failed = [worker for worker in inferencers
              if (worker.get("serving", {}).get(name, {}).get("load_failed") or {}).get("version") == deployed]
    if len(failed) == len(inferencers):
        raise InvalidInput(f"model {name!r} version {deployed} failed to load on every inferencer: "
                           f"{failed[0]['serving'][name]['load_failed']['error']}")
    return JSONResponse({"name": name, "ready": True})
