"""The detect wire format between the gateway and the inferencers, in one place.

The gateway stores the image in Redis (:mod:`ssdstack.detect_payloads`, under a budget)
and sends a :class:`DetectRequest`, which names the image's key, as the only argument of
an ``inferencer.detect`` task on the ``infer`` queue (with an expiry), then waits on the
request's reply list (``BLPOP`` with a timeout). The inferencer takes the image (an encoded file,
or with ``pixels`` raw RGB pixels) and pushes one JSON reply there: a :class:`DetectAnswer`, or a :class:`DetectError` (a bad
image is the client's problem, never a task failure). Every message carries a
``schema_version``. Version 1 requests carried the image in the message; an inferencer of
this release answers them with an error naming the gateway to upgrade. Replies are the
same in both versions; a reply without a version reads as version 1.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from celery import Celery
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ssdstack.celery_app import INFER_QUEUE
from ssdstack.detect_payloads import IMAGE_PREFIX, new_image_key
from ssdstack.errors import InvalidInput, ServiceUnavailable, SsdStackError

SCHEMA_VERSION = 2
# Task names are part of the wire protocol between services; never rename one lightly.
DETECT_TASK = "inferencer.detect"
REPLY_PREFIX = "ssdstack:reply:"
# An answer nobody picked up (the client timed out) disappears after this long.
REPLY_TTL_S = 60


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)


class DetectRequest(_Message):
    """Where the image waits (file bytes in a Redis key) and optional overrides of the
    model's postprocess. ``pixels`` ``[H, W]``: the key holds raw RGB pixels instead,
    ``H * W * 3`` bytes, row by row (an Open Inference Protocol ``UINT8`` tensor)."""

    schema_version: int = Field(default=SCHEMA_VERSION, ge=SCHEMA_VERSION, le=SCHEMA_VERSION)
    reply_key: str = Field(pattern=rf"^{REPLY_PREFIX}[0-9a-f]{{32}}$")
    image_key: str = Field(pattern=rf"^{IMAGE_PREFIX}[0-9a-f]{{32}}$")
    model: str | None = None
    score_threshold: float | None = Field(default=None, ge=0, le=1)
    iou_threshold: float | None = Field(default=None, gt=0, le=1)
    max_detections: int | None = Field(default=None, ge=1, le=1000)
    pixels: list[int] | None = Field(default=None, min_length=2, max_length=2)

    @classmethod
    def new(cls, **overrides: Any) -> "DetectRequest":
        """A request with fresh reply and image keys."""
        return cls(reply_key=f"{REPLY_PREFIX}{uuid.uuid4().hex}", image_key=new_image_key(), **overrides)


class Detection(BaseModel):
    label: str
    label_id: int = Field(ge=1)
    score: float
    box: list[float] = Field(min_length=4, max_length=4, description="x_min, y_min, x_max, y_max in pixels")


class DetectAnswer(_Message):
    """Detections in the pixels of the image as sent (EXIF orientation applied), best first."""

    model: str
    version: int
    width: int
    height: int
    detections: list[Detection]


class DetectError(_Message):
    """An error the inferencer reports, with the HTTP status the gateway answers with."""

    error: dict[str, Any]
    status: int = Field(ge=400, le=599)

    @classmethod
    def of(cls, error: SsdStackError) -> "DetectError":
        return cls(error=error.to_dict(), status=error.status)


def send_request(app: Celery, request: DetectRequest, expires_s: float) -> None:
    """Queue ``request`` for the inferencers; it is dropped unstarted after ``expires_s``."""
    app.send_task(DETECT_TASK, args=[request.model_dump()], queue=INFER_QUEUE, expires=expires_s,
                  ignore_result=True)


def read_request(payload: dict) -> DetectRequest:
    """The request in a task's argument; InvalidInput naming what is wrong."""
    version = payload.get("schema_version", 1) if isinstance(payload, dict) else None
    if version != SCHEMA_VERSION:
        raise InvalidInput(f"detect request version {version}: this inferencer reads version {SCHEMA_VERSION} "
                           "requests (the image in Redis, not in the message); upgrade the gateway")
    try:
        return DetectRequest.model_validate(payload)
    except ValidationError as error:
        raise InvalidInput(f"malformed detect request: {error.errors()[0]['msg']}") from None


def encode_reply(reply: DetectAnswer | DetectError) -> str:
    return reply.model_dump_json()


def decode_reply(raw: str) -> DetectAnswer | DetectError:
    """The inferencer's reply; ServiceUnavailable when it is not one this release reads."""
    try:
        data = json.loads(raw)
        return DetectError.model_validate(data) if "error" in data else DetectAnswer.model_validate(data)
    except (ValueError, ValidationError) as error:
        raise ServiceUnavailable(f"the inferencer answered in a form this gateway does not read: {error}") from None
