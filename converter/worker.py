"""Converter worker: ``celery -A converter.worker worker -Q convert --pool solo``."""
from __future__ import annotations

from converter import tasks
from converter.backends import BACKENDS
from ssdstack.backends import describe
from ssdstack.celery_app import CONVERT_QUEUE, create_app
from ssdstack.settings import worker_settings
from ssdstack.worker import WorkerRuntime


def backends() -> dict:
    return {CONVERT_QUEUE: describe(BACKENDS, settings.convert_backend)}


settings = worker_settings()
app = create_app(settings, "converter")
runtime = WorkerRuntime("converter", [CONVERT_QUEUE], settings, backends)
runtime.install()
tasks.register(app, runtime)
