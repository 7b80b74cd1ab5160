"""The FastAPI gateway: ``create_app()`` wires settings, stores and routers."""
from __future__ import annotations

import contextlib
import logging

import anyio.to_thread
from fastapi import FastAPI

from gateway import detecting, errors
from gateway.guard import Guard, RateLimits
from gateway.routes import checkpoints, console, datasets, detect, health, jobs, models, oip
from ssdstack.celery_app import create_app as create_celery
from ssdstack.checkpoints import CheckpointStore
from ssdstack.datasets.store import DatasetStore
from ssdstack.detect_payloads import DetectPayloads
from ssdstack.jobs.records import JobStore
from ssdstack.model_store import ModelStore
from ssdstack.redis_client import connect
from ssdstack.settings import GatewaySettings


log = logging.getLogger(__name__)
# The rate limiter's Redis calls are quick; with Redis out of reach they give up soon and
# the request goes on to its route.
RATE_LIMIT_TIMEOUT_S = 2.0
# Connections beyond the waiting detects: admissions and take-backs.
POOL_HEADROOM = 32


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    keys = settings.keyring()
    if any(not key.scope_given for key in keys):
        log.warning("SSDSTACK_API_KEYS has entries without a scope: they are admin keys; give each key the "
                    "scope it needs (key:read, key:submit, key:admin)")
    # Detect answers are awaited on the event loop: one connection each, no thread.
    waits = connect(settings.redis_url, settings.redis_sentinel_master, asynchronous=True,
                    socket_timeout=settings.detect_timeout + 10, socket_connect_timeout=5,
                    max_connections=settings.detect_max_waiting + POOL_HEADROOM)
    quick = connect(settings.redis_url, settings.redis_sentinel_master, asynchronous=True,
                    socket_timeout=RATE_LIMIT_TIMEOUT_S, socket_connect_timeout=RATE_LIMIT_TIMEOUT_S)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        # Sync endpoints (job, model, dataset routes) run in AnyIO's pool: size it.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        yield
        await waits.aclose()
        await quick.aclose()

    app = FastAPI(title="SSD Stack", version="0.1.0", lifespan=lifespan,
                  description="Train SSD detectors, convert them for serving, and detect objects over REST. "
                              "Send the API key as `X-API-Key` or `Authorization: Bearer`.")
    app.state.settings = settings
    app.state.jobs = JobStore.from_url(settings.redis_url, retention_s=settings.job_retention,
                                      sentinel_master=settings.redis_sentinel_master)
    app.state.models = ModelStore(settings.store_dir)
    app.state.datasets = DatasetStore(settings.store_dir)
    app.state.checkpoints = CheckpointStore(settings.store_dir)
    app.state.celery = create_celery(settings, "gateway")
    app.state.redis_async = waits
    app.state.payloads = DetectPayloads(waits)
    detecting.install(app.state)
    errors.install(app)
    routers = [module.router for module in (health, console, jobs, datasets, checkpoints, models, detect, oip)]
    for router in routers:
        app.include_router(router)
    app.add_middleware(Guard, routes=[route for router in routers for route in router.routes], settings=settings,
                       keys=keys, limits=RateLimits(quick, settings.rate_limit))
    return app
