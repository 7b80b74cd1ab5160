"""Domain errors shared by every service.

Each error carries a stable ``code`` and the HTTP status the gateway answers with, so
that services raise meaningful errors without knowing about HTTP, and the gateway turns
any of them into the one JSON error shape
``{"error": {"code": ..., "message": ..., "details": ...}}``.
"""
from __future__ import annotations

from typing import Any


class SsdStackError(Exception):
    """Base class: a problem a user can read and act on."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, details: Any = None):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(SsdStackError):
    status = 400
    code = "invalid_input"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class InvalidDataset(InvalidInput):
    code = "invalid_dataset"


class InvalidArchive(InvalidInput):
    code = "invalid_archive"


class Unauthorized(SsdStackError):
    status = 401
    code = "unauthorized"


class Forbidden(SsdStackError):
    """The key is known, its scope too low for the route."""

    status = 403
    code = "forbidden"


class NotFound(SsdStackError):
    status = 404
    code = "not_found"


class Conflict(SsdStackError):
    status = 409
    code = "conflict"


class PreconditionFailed(SsdStackError):
    """A conditional write (If-Match) found another state than the one it was made for."""

    status = 412
    code = "precondition_failed"


class NoDeployedModel(Conflict):
    code = "no_deployed_model"


class PayloadTooLarge(SsdStackError):
    status = 413
    code = "payload_too_large"


class InsufficientStorage(SsdStackError):
    """The store's filesystem is full (or over quota); nothing partial was kept."""

    status = 507
    code = "insufficient_storage"


class ServiceUnavailable(SsdStackError):
    status = 503
    code = "service_unavailable"


class RetryLater(SsdStackError):
    """A refusal the client may retry after ``retry_after`` seconds (``Retry-After``)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, {"retry_after_s": retry_after})
        self.retry_after = retry_after


class Overloaded(RetryLater, ServiceUnavailable):
    """The stack is at a bound it keeps (queued detect images)."""

    code = "overloaded"


class RateLimited(RetryLater):
    """The caller's key is past its rate limit."""

    status = 429
    code = "rate_limited"


class UpstreamTimeout(SsdStackError):
    status = 504
    code = "timeout"


class BackendUnavailable(SsdStackError):
    """A backend (ONNX Runtime, atc, MindX SDK, MindSpore) is not installed here."""

    status = 503
    code = "backend_unavailable"


class ReportedError(SsdStackError):
    """An error another service reported (the inferencer's answer to a detect request),
    passed on with its own code and status."""

    def __init__(self, error: dict[str, Any], status: int):
        super().__init__(error["message"], error.get("details"))
        self.code = error["code"]
        self.status = status


class JobFailed(SsdStackError):
    """A job step failed in a way the job record should show verbatim."""

    status = 500
    code = "job_failed"
