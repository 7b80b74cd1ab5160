"""Inferencer worker: ``celery -A inferencer.worker worker -Q infer --pool threads``.

Threads, not processes: one ONNX Runtime session per model is shared by every thread
(it is thread-safe and releases the GIL while it runs).
"""
from __future__ import annotations

from inferencer import tasks
from inferencer.backends import ENGINES, engine_options
from inferencer.batching import batch_policy
from inferencer.repository import ModelRepository
from ssdstack.backends import describe
from ssdstack.celery_app import INFER_QUEUE, create_app
from ssdstack.model_store import ModelStore
from ssdstack.settings import worker_settings
from ssdstack.worker import WorkerRuntime


def backends() -> dict:
    return {INFER_QUEUE: describe(ENGINES, settings.infer_backend)}


settings = worker_settings()
app = create_app(settings, "inferencer")
app.conf.worker_concurrency = settings.infer_concurrency
repository = ModelRepository(ModelStore(settings.store_dir), settings.infer_backend, engine_options(settings),
                             batch_policy(settings))
counts = tasks.DetectCounts()
runtime = WorkerRuntime("inferencer", [INFER_QUEUE], settings, backends, serving=repository.status,
                        detects=counts.snapshot)
runtime.install()
tasks.register_detect(app, runtime, repository, counts)
