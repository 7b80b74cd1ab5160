"""Dependencies shared by the routers, as ``Annotated`` aliases so routes stay short."""
from __future__ import annotations

from typing import Annotated, Literal

from celery import Celery
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ssdstack.api_keys import Scope
from ssdstack.checkpoints import CheckpointStore
from ssdstack.datasets.store import DatasetStore
from ssdstack.jobs.records import JobStore
from ssdstack.model_store import ModelStore
from ssdstack.settings import GatewaySettings

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def _state(request: Request):
    return request.app.state


def get_settings(request: Request) -> GatewaySettings:
    return _state(request).settings


def get_jobs(request: Request) -> JobStore:
    return _state(request).jobs


def get_models(request: Request) -> ModelStore:
    return _state(request).models


def get_datasets(request: Request) -> DatasetStore:
    return _state(request).datasets


def get_checkpoints(request: Request) -> CheckpointStore:
    return _state(request).checkpoints


def get_celery(request: Request) -> Celery:
    return _state(request).celery


BodyKind = Literal["json", "image", "tensor", "upload"]


class Access:
    """What a route needs: a key with ``scope``, and a body of ``body`` kind (its size
    bound: ``image`` a multipart image, ``tensor`` an inference request holding one). :class:`gateway.guard.Guard` enforces both before the body is read; as a
    dependency it documents the key in the OpenAPI and gives the caller's identity (the
    SHA-256 of their key) to the route."""

    def __init__(self, scope: Scope, body: BodyKind = "json"):
        self.scope, self.body = scope, body

    def __call__(
        self, request: Request,
        _header_key: Annotated[str | None, Security(_api_key_header)],
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> str:
        return request.state.caller


def access_of(dependencies) -> Access | None:
    """The :class:`Access` among a route's dependencies (None: a public route)."""
    found = [d.dependency for d in dependencies if isinstance(d.dependency, Access)]
    return found[-1] if found else None


def caller(request: Request) -> str:
    """Who is calling: the SHA-256 of their API key, as the guard found it. What scopes
    their Idempotency-Keys and their rate limits."""
    return request.state.caller


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
ModelsDep = Annotated[ModelStore, Depends(get_models)]
DatasetsDep = Annotated[DatasetStore, Depends(get_datasets)]
CheckpointsDep = Annotated[CheckpointStore, Depends(get_checkpoints)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
CallerDep = Annotated[str, Depends(caller)]
Read = [Depends(Access(Scope.READ))]
Submit = [Depends(Access(Scope.SUBMIT))]
Admin = [Depends(Access(Scope.ADMIN))]
