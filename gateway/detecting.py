"""The detect path every detect route shares (``/v1/detect``, the Open Inference
Protocol's ``infer``): one image under the budget in Redis, one ``inferencer.detect`` task
on the ``infer`` queue, and the answer awaited on the event loop.

The image waits in Redis under the detect budget (:mod:`ssdstack.detect_payloads`); the
request travels as an ``inferencer.detect`` task (so inferencers scale on queue length;
the wire format is :mod:`ssdstack.detect_protocol`). The wait for the reply list holds a
Redis connection and no thread: job routes and ``/readyz`` never queue behind detects.
"""
from __future__ import annotations

import asyncio
import time

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from gateway.errors import BROKER_ERRORS
from gateway.guard import RETRY_AFTER_S
from ssdstack.celery_app import INFER_QUEUE
from ssdstack.detect_protocol import DetectAnswer, DetectError, DetectRequest, decode_reply, send_request
from ssdstack.errors import (InvalidImage, Overloaded, PayloadTooLarge, ReportedError, ServiceUnavailable,
                             UpstreamTimeout)
from ssdstack.heartbeats import live_workers


# Images one gateway process sends to Redis at once. Redis holds a command's arguments in
# full before the budget script can refuse it, so without this bound a flood of N large
# images held N images in Redis's client buffers beyond the budget (measured: up to 5.4 MB
# of buffers for 250 detects of 256 KiB, which filled a Redis sized budget + 8 MiB).
IMAGES_IN_TRANSIT = 4
# A live inferencer seen this recently counts as live, so that a stream of detects reads
# the heartbeats once a second, not once each (every worker's record, in a thread). One
# that died meanwhile is the same as one dying after the check: its detect times out.
INFERENCER_SEEN_S = 1.0


def install(state) -> None:
    """This process's detect state on ``app.state``: detects waiting, the bound on images
    in transit to Redis, when a live inferencer was last seen."""
    state.detects_waiting = 0
    state.admission_gate = asyncio.Semaphore(IMAGES_IN_TRANSIT)
    state.inferencer_seen_at = -INFERENCER_SEEN_S


async def _an_inferencer_lives(state) -> bool:
    now = time.monotonic()
    if now - state.inferencer_seen_at < INFERENCER_SEEN_S:
        return True
    workers = await run_in_threadpool(live_workers, state.jobs.redis)
    if not any(INFER_QUEUE in w["queues"] for w in workers):
        return False
    state.inferencer_seen_at = now
    return True


async def detect(request: Request, image: bytes, message: DetectRequest) -> DetectAnswer:
    """The inferencers' answer to ``message`` about ``image`` (an encoded file, or the raw
    pixels ``message.pixels`` names). Raises the domain error the client is to get: 413
    over ``max_image_bytes``, 503 without a live inferencer or at this gateway's bound on
    waiting detects, 429/503 over the Redis budget, 504 past the detect timeout, or the
    error the inferencer reported."""
    state = request.app.state
    settings = state.settings
    if len(image) > settings.max_image_bytes:
        raise PayloadTooLarge(f"image is over the limit of {settings.max_image_bytes} bytes")
    if not image:
        raise InvalidImage("empty file")
    if not await _an_inferencer_lives(state):
        raise ServiceUnavailable("no inferencer worker is alive (no heartbeat on the infer queue)")
    if state.detects_waiting >= settings.detect_max_waiting:
        raise Overloaded(f"this gateway has {state.detects_waiting} detects waiting, its limit; retry shortly",
                         RETRY_AFTER_S)
    state.detects_waiting += 1
    try:
        reply = await _queued_and_answered(state, settings, image, message)
    finally:
        state.detects_waiting -= 1
    answer = decode_reply(reply)
    if isinstance(answer, DetectError):
        raise ReportedError(answer.error, answer.status)
    return answer


async def _queued_and_answered(state, settings, image: bytes, message: DetectRequest) -> bytes:
    """The inferencer's raw reply to ``message``, once ``image`` is admitted under the
    budget and the request queued."""
    payloads = state.payloads
    async with state.admission_gate:
        admitted = await payloads.admit(message.image_key, image, settings.detect_timeout,
                                        settings.detect_budget_bytes, settings.detect_max_queued)
    if not admitted:
        raise Overloaded("the inferencers are at capacity (queued detect images at their budget); retry shortly",
                         RETRY_AFTER_S)
    try:
        await run_in_threadpool(send_request, state.celery, message, settings.detect_timeout)
        reply = await state.redis_async.blpop([message.reply_key], timeout=settings.detect_timeout)
    except BROKER_ERRORS as error:
        await payloads.take(message.image_key)
        raise ServiceUnavailable(f"the detect request could not be queued: {error}") from error
    if reply is None:
        await payloads.take(message.image_key)  # not started: its bytes leave Redis now
        raise UpstreamTimeout(f"no detection within {settings.detect_timeout} s; the inferencers may be overloaded")
    return reply[1]
