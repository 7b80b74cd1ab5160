"""``POST /v1/detect``: one image in, detections in original-image pixels out.

The image waits in Redis under the detect budget (:mod:`ssdstack.detect_payloads`); the
request travels as an ``inferencer.detect`` task through the ``infer`` queue (so
inferencers scale on queue length; the wire format is :mod:`ssdstack.detect_protocol`).
The route awaits the request's reply list on the event loop, so a waiting detect holds a
Redis connection and no thread: job routes and ``/readyz`` never queue behind detects.
"""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from gateway.deps import Access, CeleryDep, JobsDep, SettingsDep
from gateway.errors import BROKER_ERRORS
from gateway.guard import RETRY_AFTER_S
from ssdstack.api_keys import Scope
from ssdstack.celery_app import INFER_QUEUE
from ssdstack.detect_protocol import DetectError, DetectRequest, decode_reply, send_request
from ssdstack.errors import (InvalidImage, Overloaded, PayloadTooLarge, ReportedError, ServiceUnavailable,
                             UpstreamTimeout)
from ssdstack.heartbeats import live_workers

router = APIRouter(tags=["detect"])


@router.post("/v1/detect", summary="Detect objects in one image (any format Pillow reads)",
             dependencies=[Depends(Access(Scope.READ, body="image"))])
async def detect(
    request: Request,
    file: Annotated[UploadFile, File(description="the image")],
    settings: SettingsDep, jobs: JobsDep, celery: CeleryDep,
    model: Annotated[str | None, Query(description="model name; default: the single deployed model")] = None,
    score_threshold: Annotated[float | None, Query(ge=0, le=1)] = None,
    iou_threshold: Annotated[float | None, Query(gt=0, le=1)] = None,
    max_detections: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict:
    data = await file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(f"image is over the limit of {settings.max_image_bytes} bytes")
    if not data:
        raise InvalidImage("empty file")
    workers = await run_in_threadpool(live_workers, jobs.redis)
    if not any(INFER_QUEUE in w["queues"] for w in workers):
        raise ServiceUnavailable("no inferencer worker is alive (no heartbeat on the infer queue)")
    state = request.app.state
    if state.detects_waiting >= settings.detect_max_waiting:
        raise Overloaded(f"this gateway has {state.detects_waiting} detects waiting, its limit; retry shortly",
                         RETRY_AFTER_S)
    state.detects_waiting += 1
    try:
        started = time.monotonic()
        reply = await _queued_and_answered(state, celery, settings, data, DetectRequest.new(
            model=model, score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections))
    finally:
        state.detects_waiting -= 1
    answer = decode_reply(reply)
    if isinstance(answer, DetectError):
        raise ReportedError(answer.error, answer.status)
    return dict(answer.model_dump(), latency_ms=round((time.monotonic() - started) * 1000, 1))


async def _queued_and_answered(state, celery, settings, image: bytes, message: DetectRequest) -> bytes:
    """The inferencer's raw reply to ``message``, once ``image`` is admitted under the
    budget and the request queued."""
    payloads = state.payloads
    if not await payloads.admit(message.image_key, image, settings.detect_timeout, settings.detect_budget_bytes,
                                settings.detect_max_queued):
        raise Overloaded("the inferencers are at capacity (queued detect images at their budget); retry shortly",
                         RETRY_AFTER_S)
    try:
        await run_in_threadpool(send_request, celery, message, settings.detect_timeout)
        reply = await state.redis_async.blpop([message.reply_key], timeout=settings.detect_timeout)
    except BROKER_ERRORS as error:
        await payloads.take(message.image_key)
        raise ServiceUnavailable(f"the detect request could not be queued: {error}") from error
    if reply is None:
        await payloads.take(message.image_key)  # not started: its bytes leave Redis now
        raise UpstreamTimeout(f"no detection within {settings.detect_timeout} s; the inferencers may be overloaded")
    return reply[1]
