"""``POST /v1/detect``: one image in, detections in original-image pixels out.

The request travels as an ``inferencer.detect`` task through the ``infer`` queue (so
inferencers scale on queue length); this sync endpoint runs in the server's thread pool
and waits on a per-request reply list with a timeout, never on the event loop.
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile

from gateway.deps import Authorized, CeleryDep, JobsDep, SettingsDep
from ssdstack.celery_app import DETECT_TASK, INFER_QUEUE
from ssdstack.errors import InvalidImage, PayloadTooLarge, ServiceUnavailable, SsdStackError, UpstreamTimeout
from ssdstack.worker import live_workers

router = APIRouter(tags=["detect"], dependencies=Authorized)
# Room for the multipart envelope around the image in a declared Content-Length.
MULTIPART_OVERHEAD = 64 * 1024


class _Answer(SsdStackError):
    """An error the inferencer reported, passed through with its own status and code."""

    def __init__(self, error: dict, status: int):
        super().__init__(error["message"], error.get("details"))
        self.code = error["code"]
        self.status = status


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
    reply_key = f"ssdstack:reply:{uuid.uuid4().hex}"
    payload = {"reply_key": reply_key, "image_b64": base64.b64encode(data).decode("ascii"), "model": model,
               "score_threshold": score_threshold, "iou_threshold": iou_threshold, "max_detections": max_detections}
    started = time.monotonic()
    celery.send_task(DETECT_TASK, args=[payload], queue=INFER_QUEUE, expires=settings.detect_timeout,
                     ignore_result=True)
    reply = jobs.redis.blpop([reply_key], timeout=settings.detect_timeout)
    if reply is None:
        raise UpstreamTimeout(f"no detection within {settings.detect_timeout} s; the inferencers may be overloaded")
    answer = json.loads(reply[1])
    if "error" in answer:
        raise _Answer(answer["error"], answer["status"])
    answer["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    return answer
