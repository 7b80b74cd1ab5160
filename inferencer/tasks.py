"""Celery tasks of the inferencer: detection requests and the evaluate(+deploy) stage."""
from __future__ import annotations

import base64
import binascii
import json
import logging

from celery import Celery

from ssdstack.celery_app import DETECT_TASK, EVALUATE_TASK
from ssdstack.errors import Conflict, InvalidInput, SsdStackError
from ssdstack.jobs.pipeline import parse_spec, target_version
from ssdstack.jobs.specs import PipelineSpec
from ssdstack.model_store import ModelStore
from ssdstack.worker import WorkerRuntime
from inferencer.backends import engine_options
from inferencer.repository import ModelRepository

log = logging.getLogger(__name__)
# An answer nobody picked up (the client timed out) disappears after this long.
REPLY_TTL_S = 60


def register(app: Celery, runtime: WorkerRuntime, repository: ModelRepository) -> None:
    settings = runtime.settings
    store = ModelStore(settings.store_dir)

    @app.task(name=DETECT_TASK, ignore_result=True)
    def detect(payload: dict) -> None:
        """``payload``: ``reply_key``, ``image_b64``, optional ``model``, ``score_threshold``,
        ``iou_threshold``, ``max_detections``.

        The answer is pushed to the Redis list ``reply_key``, which the gateway's request
        thread waits on with BLPOP (a plain pooled connection; Celery's result consumer is
        not meant for many threads of one process). The answer is the detections, or
        ``{"error": {...}, "status": http_status}``: a bad image is the client's problem,
        never a task failure.
        """
        answer = _detect(payload)
        reply_key = payload.get("reply_key")
        if reply_key:
            pipe = runtime.jobs.redis.pipeline()
            pipe.rpush(reply_key, json.dumps(answer))
            pipe.expire(reply_key, REPLY_TTL_S)
            pipe.execute()

    def _detect(payload: dict) -> dict:
        try:
            try:
                image = base64.b64decode(payload["image_b64"], validate=True)
            except (KeyError, binascii.Error, TypeError) as error:
                raise InvalidInput(f"payload needs image_b64 as base64: {error}") from None
            detector = repository.get(payload.get("model"))
            return detector.detect(image, max_pixels=settings.max_image_pixels,
                                   score_threshold=payload.get("score_threshold"),
                                   iou_threshold=payload.get("iou_threshold"),
                                   max_detections=payload.get("max_detections"))
        except SsdStackError as error:
            return {"error": error.to_dict(), "status": error.status}
        except Exception as error:  # keep serving; the client gets a 500 with the reason
            log.exception("detect failed")
            return {"error": {"code": "internal_error", "message": f"{type(error).__name__}: {error}",
                              "details": None}, "status": 500}

    @app.task(name=EVALUATE_TASK, bind=True, acks_late=True, ignore_result=True)
    def evaluate(task, job_id: str) -> None:
        def body(ctx):
            from inferencer.evaluate import evaluate_served

            job = runtime.jobs.get(job_id)
            spec = parse_spec(job)
            name, version = target_version(job, spec)
            dataset = spec.dataset
            split = "val" if isinstance(spec, PipelineSpec) else spec.split
            served = evaluate_served(settings.store_dir, name, version, dataset, split, settings.infer_backend,
                                     ctx, max_pixels=settings.max_image_pixels,
                                     engine_options=engine_options(settings))
            if not isinstance(spec, PipelineSpec):
                return {"model": name, "version": version, "metrics": {"served": served["coco"]}}
            result = dict(job["result"] or {})
            result["metrics"] = dict(result.get("metrics") or {}, served=served["coco"])
            trained_ap = result["metrics"]["trained"]["AP"]
            drop = trained_ap - served["coco"]["AP"]
            if drop > spec.max_map_drop:
                raise Conflict(f"served mAP {served['coco']['AP']:.4f} is {drop:.4f} below the trained "
                               f"{trained_ap:.4f}, more than max_map_drop {spec.max_map_drop}; not deployed",
                               details={"trained": trained_ap, "served": served["coco"]["AP"]})
            if spec.deploy:
                result["deployed"] = store.deploy(name, version)
                ctx.log(f"deployed {name} version {version}")
            return result

        runtime.run_job(task, job_id, body)
