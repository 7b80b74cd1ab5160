"""Trainer worker: ``celery -A trainer.worker worker -Q train --pool solo``.

The solo pool runs the job in the worker's own process: MindSpore is never forked after
import, and one training job at a time is the norm.
"""
from __future__ import annotations

import importlib.util

from ssdstack.celery_app import TRAIN_QUEUE, create_app
from ssdstack.settings import worker_settings
from ssdstack.worker import WorkerRuntime
from trainer import tasks


def backends() -> dict:
    return {TRAIN_QUEUE: [{"name": "mindspore", "usable": importlib.util.find_spec("mindspore") is not None,
                           "artefact": "", "install_hint": "pip install 'ssdstack[trainer]' (mindspore 2.8.0), or "
                           "build on an ascend-mindspore base image with the trainer-ascend extra"}]}


settings = worker_settings()
app = create_app(settings, "trainer")
runtime = WorkerRuntime("trainer", [TRAIN_QUEUE], settings, backends, notes={"device": settings.train_device})
runtime.install(app)
tasks.register(app, runtime)
