"""``POST /v1/detect``: one image in, detections in original-image pixels out.

The request travels as an ``inferencer.detect`` task through the ``infer`` queue (so
inferencers scale on queue length; the wire format is :mod:`ssdstack.detect_protocol`);
this sync endpoint runs in the server's thread pool and waits on the request's reply list
with a timeout, never on the event loop.
"""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile

from gateway.deps import Authorized, CeleryDep, JobsDep, SettingsDep
from ssdstack.celery_app import INFER_QUEUE
from ssdstack.detect_protocol import DetectError, DetectRequest, decode_reply, send_request
from ssdstack.errors import InvalidImage, PayloadTooLarge, ReportedError, ServiceUnavailable, UpstreamTimeout
from ssdstack.worker import live_workers

router = APIRouter(tags=["detect"], dependencies=Authorized)
# Room for the multipart envelope around the image in a declared Content-Length.
MULTIPART_OVERHEAD = 64 * 1024


@router.post("/v1/detect", summary="Detect objects in one image (any format Pillow reads)")
def detect(
    request: Request,
    file: Annotated[UploadFile, File(description="the image")],
    settings: SettingsDep, jobs: JobsDep, celery: CeleryDep,
    model: Annotated[str | None, Query(description="model name; default: the single deployed model")] = None,
    score_threshold: Annotated[float | None, Query(ge=0, le=1)] = None,
    iou_threshold: Annotated[float | None, Query(gt=0, le=1)] = None,
    max_detections: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_image_bytes + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"request is {declared} bytes; images are limited to {settings.max_image_bytes}")
    data = file.file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(f"image is over the limit of {settings.max_image_bytes} bytes")
    if not data:
        raise InvalidImage("empty file")
    if not any(INFER_QUEUE in w["queues"] for w in live_workers(jobs.redis)):
        raise ServiceUnavailable("no inferencer worker is alive (no heartbeat on the infer queue)")
    request_message = DetectRequest.for_image(data, model=model, score_threshold=score_threshold,
                                              iou_threshold=iou_threshold, max_detections=max_detections)
    started = time.monotonic()
    send_request(celery, request_message, expires_s=settings.detect_timeout)
    reply = jobs.redis.blpop([request_message.reply_key], timeout=settings.detect_timeout)
    if reply is None:
        raise UpstreamTimeout(f"no detection within {settings.detect_timeout} s; the inferencers may be overloaded")
    answer = decode_reply(reply[1])
    if isinstance(answer, DetectError):
        raise ReportedError(answer.error, answer.status)
    return dict(answer.model_dump(), latency_ms=round((time.monotonic() - started) * 1000, 1))
