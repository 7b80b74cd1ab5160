"""The inferencer's Celery tasks: detection requests (the inferencer process), and the
evaluate, deploy and ingest stages (the evaluator process; see
:mod:`ssdstack.jobs.pipeline`)."""
from __future__ import annotations

import logging
import threading

from celery import Celery

from inferencer.backends import engine_options
from inferencer.evaluate import evaluate_served
from inferencer.repository import ModelRepository
from ssdstack.datasets.store import DatasetStore, UploadLimits
from ssdstack.detect_payloads import DetectPayloads
from ssdstack.detect_protocol import DETECT_TASK, REPLY_TTL_S, DetectAnswer, DetectError, encode_reply, read_request
from ssdstack.errors import PreconditionFailed, SsdStackError
from ssdstack.evaluation import check_map_drop
from ssdstack.images import rgb_pixels
from ssdstack.jobs.context import JobContext
from ssdstack.jobs.pipeline import EVALUATOR
from ssdstack.jobs.specs import IngestSpec
from ssdstack.jobs.stage_data import Deployed, DeployInput, Evaluated, EvaluateInput, Ingested
from ssdstack.model_store import ModelStore
from ssdstack.redis_client import connect
from ssdstack.settings import WorkerSettings
from ssdstack.worker import WorkerRuntime

log = logging.getLogger(__name__)


def stage_runners(settings: WorkerSettings) -> dict:
    """Stage name -> function, for the evaluator's stages."""
    store = ModelStore(settings.store_dir)
    datasets = DatasetStore(settings.store_dir)

    def evaluate(ctx: JobContext, data: EvaluateInput) -> Evaluated:
        served = evaluate_served(settings.store_dir, data.model, data.version, data.dataset, data.split,
                                 settings.infer_backend, ctx, max_pixels=settings.max_image_pixels,
                                 engine_options=engine_options(settings))
        return Evaluated(model=data.model, version=data.version, metrics={"served": served["coco"]},
                         engine=served["engine"])

    def deploy(ctx: JobContext, data: DeployInput) -> Deployed:
        check_map_drop(data.metrics["trained"]["AP"], data.metrics["served"]["AP"], data.max_map_drop)
        if not data.deploy:
            ctx.log(f"{data.model} version {data.version} passed the deploy gate; not deployed (deploy: false)")
            return Deployed(deployed=None)
        try:
            record = store.deploy(data.model, data.version, if_match=data.deploy_if_match, by=f"job {ctx.job_id}")
        except PreconditionFailed as changed:  # a deploy made since the job was submitted is kept
            ctx.log(f"not deployed: {changed.message}")
            return Deployed(deployed=None, skipped=changed.message)
        ctx.log(f"deployed {data.model} version {data.version}")
        return Deployed(deployed=record)

    def ingest(ctx: JobContext, spec: IngestSpec) -> Ingested:
        limits = UploadLimits(max_bytes=settings.max_upload_bytes, max_members=settings.max_archive_members,
                              max_unpacked_bytes=settings.max_unpacked_bytes, max_pixels=settings.max_image_pixels)
        info = datasets.ingest_upload(spec.dataset, spec.upload, limits, spec.format, ctx.job_id)
        ctx.log(f"dataset {spec.dataset} is ready: {info['splits']}")
        return Ingested(dataset=info)

    return {"evaluate": evaluate, "deploy": deploy, "ingest": ingest}


def register_stages(app: Celery, runtime: WorkerRuntime) -> None:
    runtime.serve(app, EVALUATOR, stage_runners(runtime.settings))


class DetectCounts:
    """This process's detect requests by outcome: ``answered``, ``refused`` (an error
    reply: a bad image, an unknown model, an engine failure) and ``expired`` (the client
    had stopped waiting; not started). Thread-safe."""

    OUTCOMES = ("answered", "refused", "expired")

    def __init__(self):
        self._counts = dict.fromkeys(self.OUTCOMES, 0)
        self._lock = threading.Lock()

    def add(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def register_detect(app: Celery, runtime: WorkerRuntime, repository: ModelRepository,
                    counts: DetectCounts) -> None:
    settings = runtime.settings
    payloads = DetectPayloads(connect(settings.redis_url, settings.redis_sentinel_master, socket_timeout=10,
                                      socket_connect_timeout=5))

    @app.task(name=DETECT_TASK, ignore_result=True, shared=False)
    def detect(payload: dict) -> None:
        """``payload``: a :class:`~ssdstack.detect_protocol.DetectRequest`. The reply goes to
        its reply list, which the gateway waits on with BLPOP (a plain Redis list; Celery's
        result consumer is not meant for many waiters in one process)."""
        reply_key = payload.get("reply_key") if isinstance(payload, dict) else None
        reply = _detect(payload)
        counts.add("expired" if reply is None else "answered" if isinstance(reply, DetectAnswer) else "refused")
        if reply_key and reply is not None:
            pipe = runtime.jobs.redis.pipeline()
            pipe.rpush(reply_key, encode_reply(reply))
            pipe.expire(reply_key, REPLY_TTL_S)
            pipe.execute()

    def _detect(payload: dict) -> DetectAnswer | DetectError | None:
        """The reply; None when the image expired (the client stopped waiting): the detect
        does not start."""
        try:
            request = read_request(payload)
            image = payloads.take(request.image_key)
            if image is None:
                log.info("detect %s not started: its image expired before an inferencer took it", request.image_key)
                return None
            detector = repository.get(request.model)
            overrides = {"score_threshold": request.score_threshold, "iou_threshold": request.iou_threshold,
                         "max_detections": request.max_detections}
            if request.pixels is None:
                return DetectAnswer.model_validate(detector.detect(image, max_pixels=settings.max_image_pixels,
                                                                   **overrides))
            rgb = rgb_pixels(image, request.pixels, settings.max_image_pixels)
            return DetectAnswer.model_validate(detector.detect_array(rgb, **overrides))
        except SsdStackError as error:
            return DetectError.of(error)
        except Exception as error:  # keep serving; the client gets a 500 with the reason
            log.exception("detect failed")
            return DetectError.of(SsdStackError(f"{type(error).__name__}: {error}"))
