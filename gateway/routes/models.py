"""``/v1/models``: models, their versions (manifests) and deployment."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import FileResponse, Response

from gateway.deps import Admin, JobsDep, ModelsDep, Read
from gateway.heartbeats import missing_engine
from ssdstack.errors import Conflict, InvalidInput
from ssdstack.model_store import FP32, PRECISIONS, servable
from ssdstack.heartbeats import live_workers

router = APIRouter(prefix="/v1/models", tags=["models"])
Version = Path(ge=1)


@router.get("", summary="List models with their versions and deployed version", dependencies=Read)
def list_models(models: ModelsDep) -> dict:
    return {"models": models.models()}


@router.get("/{name}/versions", summary="Every version's manifest", dependencies=Read)
def list_versions(name: str, models: ModelsDep) -> dict:
    return {"name": name, "deployed": models.deployed(name), "versions": models.versions(name)}


@router.get("/{name}/versions/{version}", summary="One version's manifest", dependencies=Read)
def get_version(name: str, models: ModelsDep, version: int = Version) -> dict:
    return models.manifest(name, version)


IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]


@router.get("/{name}/versions/{version}/artefacts/{file:path}", dependencies=Read, response_class=FileResponse,
            summary="Download a listed artefact or evaluation report file (ETag: its sha256; Range requests work)",
            responses={200: {"content": {"application/octet-stream": {}}}, 304: {"description": "Not modified"}})
def download_artefact(name: str, file: str, models: ModelsDep, version: int = Version,
                      if_none_match: IfNoneMatch = None) -> Response:
    path, entry = models.artefact(name, version, file)
    etag = f'"{entry["sha256"]}"'
    if if_none_match is not None and etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(path, filename=path.name, headers={"ETag": etag, "Cache-Control": "private, no-cache"})


Precision = Annotated[Literal[PRECISIONS], Query(description="the serving artefact's precision (an INT8 one "
                                                                "must have passed its accuracy gate)")]
IfMatch = Annotated[str | None, Header(
    alias="If-Match", description="Deploy only while this version is the deployed one (0: while none is); "
                                  "otherwise 412 and nothing changes")]


@router.post("/{name}/versions/{version}/deploy", summary="Serve this version; inferencers switch without restart",
             dependencies=Admin)
def deploy_version(name: str, models: ModelsDep, jobs: JobsDep, version: int = Version,
                   if_match: IfMatch = None, precision: Precision = FP32) -> dict:
    expected = _version_tag(if_match)
    manifest = models.manifest(name, version)
    fit = servable(manifest, precision)[0]  # none fit: the store's deploy says why
    missing = fit and missing_engine(manifest, fit, live_workers(jobs.redis))
    if missing:
        raise Conflict(missing)
    return dict(models.deploy(name, version, if_match=expected, by="api", precision=precision), name=name)


def _version_tag(value: str | None) -> int | None:
    """The version an If-Match header names (``3`` or ``"3"``; ``0``: none deployed)."""
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise InvalidInput(f"If-Match must be the deployed version number (0: none deployed), not {value!r}")
    return int(tag)
