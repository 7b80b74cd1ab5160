"""``POST /v1/detect``: one image in, detections in original-image pixels out, through
the shared detect path (:mod:`gateway.detecting`)."""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile

from gateway import detecting
from gateway.deps import Access, SettingsDep
from ssdstack.api_keys import Scope
from ssdstack.detect_protocol import DetectRequest

router = APIRouter(tags=["detect"])


@router.post("/v1/detect", summary="Detect objects in one image (any format Pillow reads)",
             dependencies=[Depends(Access(Scope.READ, body="image"))])
async def detect(
    request: Request,
    file: Annotated[UploadFile, File(description="the image")],
    settings: SettingsDep,
    model: Annotated[str | None, Query(description="model name; default: the single deployed model")] = None,
    score_threshold: Annotated[float | None, Query(ge=0, le=1)] = None,
    iou_threshold: Annotated[float | None, Query(gt=0, le=1)] = None,
    max_detections: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict:
    started = time.monotonic()
    image = await file.read(settings.max_image_bytes + 1)
    answer = await detecting.detect(request, image, DetectRequest.new(
        model=model, score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections))
    return dict(answer.model_dump(), latency_ms=round((time.monotonic() - started) * 1000, 1))
