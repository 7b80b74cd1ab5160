"""Evaluator worker: ``celery -A inferencer.evaluator worker -Q evaluate --pool solo``.

The evaluate and deploy stages of jobs, in a process of their own: an evaluation serves a
whole dataset split through an engine and would otherwise hold the inferencer's threads,
which detect requests need. It uses the same engines as the inferencer.
"""
from __future__ import annotations

from inferencer import tasks
from inferencer.backends import ENGINES
from ssdstack.backends import describe
from ssdstack.celery_app import EVALUATE_QUEUE, create_app
from ssdstack.settings import worker_settings
from ssdstack.worker import WorkerRuntime


def backends() -> dict:
    return {EVALUATE_QUEUE: describe(ENGINES, settings.infer_backend)}


settings = worker_settings()
app = create_app(settings, "evaluator")
runtime = WorkerRuntime("evaluator", [EVALUATE_QUEUE], settings, backends)
runtime.install()
tasks.register_stages(app, runtime)
