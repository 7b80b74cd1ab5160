"""Every error the gateway returns has one shape,
``{"error": {"code": str, "message": str, "details": any}}``, except under ``/v2``: there
the Open Inference Protocol's, ``{"error": "<message>"}``, and a request the routes'
validation refuses is a 400 (the protocol's status for a bad request), not a 422."""
from __future__ import annotations

import logging

import kombu.exceptions
import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ssdstack.durable import no_space
from ssdstack.errors import RetryLater, SsdStackError

log = logging.getLogger(__name__)
# Redis (job records, replies) or the broker behind it is down: the client may retry.
BROKER_ERRORS = (redis.RedisError, kombu.exceptions.OperationalError)


OIP_PREFIX = "/v2"


def is_oip(path: str) -> bool:
    """Whether ``path`` is an Open Inference Protocol route's."""
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def error_response(status: int, code: str, message: str, details=None, headers=None, oip: bool = False
                   ) -> JSONResponse:
    content = {"error": message} if oip else {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(status_code=status, headers=headers, content=content)


def domain_response(error: SsdStackError, oip: bool = False) -> JSONResponse:
    """The response for a domain error, with the headers its status calls for."""
    headers = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, RetryLater):
        headers["Retry-After"] = str(error.retry_after)
    return error_response(error.status, error.code, error.message, error.details, headers or None, oip)


def _field(error: dict) -> str:
    """The dotted name of the offending field (``pipeline.epochs``); for a job spec whose
    ``type`` is missing or unknown, ``type``."""
    if error["type"].startswith("union_tag"):
        return str(error.get("ctx", {}).get("discriminator", "type")).strip("'")
    parts = [str(p) for p in error["loc"] if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(SsdStackError)
    async def domain_error(request: Request, error: SsdStackError) -> JSONResponse:
        return domain_response(error, is_oip(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [{"field": _field(e), "message": e["msg"], "type": e["type"]} for e in error.errors()]
        fields = ", ".join(sorted({p["field"] for p in problems}))
        if is_oip(request.url.path):
            return error_response(400, "", "invalid request: " + "; ".join(
                f"{p['field']}: {p['message']}" for p in problems), oip=True)
        return error_response(422, "validation_error", f"invalid request: {fields}", problems)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, "http_error", str(error.detail), headers=error.headers,
                              oip=is_oip(request.url.path))

    @app.exception_handler(redis.RedisError)
    @app.exception_handler(kombu.exceptions.OperationalError)
    async def broker_down(request: Request, error: Exception) -> JSONResponse:
        return error_response(503, "service_unavailable", f"Redis is unreachable: {error}",
                              oip=is_oip(request.url.path))

    @app.exception_handler(OSError)
    async def storage_error(request: Request, error: OSError) -> JSONResponse:
        if no_space(error):
            return error_response(507, "insufficient_storage", f"the store has no space left ({error.strerror}); "
                                  "nothing of this request was kept: free space or grow the volume, then retry",
                                  oip=is_oip(request.url.path))
        return await unexpected(request, error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # The body names the request, never the error: its text can hold paths and internals.
        request_id = getattr(request.state, "request_id", "")
        log.exception("unhandled error in request %s", request_id)
        # Answered outside the guard, which adds the header to every other response.
        return error_response(500, "internal_error", f"an internal error; the gateway's log has it under request id "
                              f"{request_id}", {"request_id": request_id}, {"X-Request-ID": request_id},
                              is_oip(request.url.path))
