"""Converter worker: ``celery -A converter.worker worker -Q convert --pool solo``."""
from __future__ import annotations

from converter import tasks
from converter.backends import BACKENDS
from ssdstack.celery_app import CONVERT_QUEUE, create_app
from ssdstack.settings import worker_settings
from ssdstack.worker import WorkerRuntime


def backends() -> dict:
    """The backends this worker converts with: the configured one, or every available one for auto."""
    available = [name for name, backend in BACKENDS.items() if backend().is_available()]
    if settings.convert_backend != "auto":
        available = [name for name in available if name == settings.convert_backend]
    return {"convert": available}


settings = worker_settings()
app = create_app(settings, "converter")
runtime = WorkerRuntime("converter", [CONVERT_QUEUE], settings, backends)
runtime.install(app)
tasks.register(app, runtime)
