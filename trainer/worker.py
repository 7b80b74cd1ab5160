"""Trainer worker: ``celery -A trainer.worker worker -Q train --pool solo``.

The solo pool runs the job in the worker's own process: MindSpore is never forked after
import, and one training job at a time is the norm.
"""
from __future__ import annotations

from ssdstack.backends import describe
from ssdstack.celery_app import TRAIN_QUEUE, create_app
from ssdstack.settings import worker_settings
from ssdstack.worker import WorkerRuntime
from trainer import tasks
from trainer.device import MindSporeTrainer


def backends() -> dict:
    return {TRAIN_QUEUE: describe({MindSporeTrainer.name: MindSporeTrainer}, "auto")}


settings = worker_settings()
app = create_app(settings, "trainer")
runtime = WorkerRuntime("trainer", [TRAIN_QUEUE], settings, backends, notes={"device": settings.train_device})
runtime.install()
tasks.register(app, runtime)
