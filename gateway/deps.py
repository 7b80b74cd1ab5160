"""Dependencies shared by the routers, as ``Annotated`` aliases so routes stay short."""
from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ssdstack.checkpoints import CheckpointStore
from ssdstack.datasets.store import DatasetStore
from ssdstack.errors import Unauthorized
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


def require_api_key(
    request: Request,
    header_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """Accept ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``."""
    given = header_key or (bearer.credentials if bearer else None)
    if not given:
        raise Unauthorized("missing API key: send X-API-Key or Authorization: Bearer")
    keys = _state(request).settings.api_keys
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
        raise Unauthorized("invalid API key")


def caller(
    header_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    """Who is calling, as a digest of the API key they presented (checked by
    :func:`require_api_key`): what scopes their Idempotency-Keys."""
    given = header_key or (bearer.credentials if bearer else "")
    return hashlib.sha256(given.encode()).hexdigest()


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
ModelsDep = Annotated[ModelStore, Depends(get_models)]
DatasetsDep = Annotated[DatasetStore, Depends(get_datasets)]
CheckpointsDep = Annotated[CheckpointStore, Depends(get_checkpoints)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
CallerDep = Annotated[str, Depends(caller)]
Authorized = [Depends(require_api_key)]
