"""``/v1/models``: models, their versions (manifests) and deployment."""
from __future__ import annotations

from fastapi import APIRouter, Path

from gateway.deps import Authorized, ModelsDep

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=Authorized)
Version = Path(ge=1)


@router.get("", summary="List models with their versions and deployed version")
def list_models(models: ModelsDep) -> dict:
    return {"models": models.models()}


@router.get("/{name}/versions", summary="Every version's manifest")
def list_versions(name: str, models: ModelsDep) -> dict:
    return {"name": name, "deployed": models.deployed(name), "versions": models.versions(name)}


@router.get("/{name}/versions/{version}", summary="One version's manifest")
def get_version(name: str, models: ModelsDep, version: int = Version) -> dict:
    return models.manifest(name, version)


@router.post("/{name}/versions/{version}/deploy", summary="Serve this version; inferencers switch without restart")
def deploy_version(name: str, models: ModelsDep, version: int = Version) -> dict:
    return dict(models.deploy(name, version), name=name)
