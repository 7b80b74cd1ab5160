"""The FastAPI gateway: ``create_app()`` wires settings, stores and routers."""
from __future__ import annotations

import contextlib

import anyio.to_thread
from fastapi import FastAPI

from gateway import errors
from gateway.routes import checkpoints, datasets, detect, health, jobs, models
from ssdstack.celery_app import create_app as create_celery
from ssdstack.checkpoints import CheckpointStore
from ssdstack.datasets.store import DatasetStore
from ssdstack.jobs.records import JobStore
from ssdstack.model_store import ModelStore
from ssdstack.settings import GatewaySettings


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        # Sync endpoints run in AnyIO's pool (40 threads by default), and a detect waits
        # in one for its answer: size the pool from the settings.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        yield

    app = FastAPI(title="SSD Stack", version="0.1.0", lifespan=lifespan,
                  description="Train SSD detectors, convert them for serving, and detect objects over REST. "
                              "Send the API key as `X-API-Key` or `Authorization: Bearer`.")
    app.state.settings = settings
    app.state.jobs = JobStore.from_url(settings.redis_url, socket_timeout=settings.detect_timeout + 10,
                                      retention_s=settings.job_retention,
                                      sentinel_master=settings.redis_sentinel_master)
    app.state.models = ModelStore(settings.store_dir)
    app.state.datasets = DatasetStore(settings.store_dir)
    app.state.checkpoints = CheckpointStore(settings.store_dir)
    app.state.celery = create_celery(settings, "gateway")
    errors.install(app)
    for module in (health, jobs, datasets, checkpoints, models, detect):
        app.include_router(module.router)
    return app
