"""The gateway in-process on a real Redis, with the evaluator's job task at hand."""
from __future__ import annotations

import tempfile

import pytest
import redis
from fastapi.testclient import TestClient

from gateway.main import create_app
from ingest_gateway import KEY, MAX_MEMBERS, MAX_UNPACKED
from redis_acl import denials
from inferencer.tasks import register_stages
from ssdstack.celery_app import create_app as create_celery
from ssdstack.jobs.pipeline import EVALUATOR
from ssdstack.settings import GatewaySettings, WorkerSettings
from ssdstack.worker import WorkerRuntime


@pytest.fixture
def gateway(clean_redis, redis_user_url, tmp_path, monkeypatch):
    """(client, what_is_there, run_job): the in-process gateway, a snapshot of everything
    a request could leave behind, and the evaluator's job task run here on a job id. Each
    logs in to Redis as its own user; any command Redis refused them fails the test."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where multipart uploads are spooled
    store = tmp_path / "store"
    limits = {"store_dir": store, "max_archive_members": MAX_MEMBERS, "max_unpacked_bytes": MAX_UNPACKED}
    settings = GatewaySettings(api_keys=KEY["X-API-Key"], rate_limit="", max_image_bytes=1024 * 1024,
                               redis_url=redis_user_url("gateway"), **limits)
    worker = WorkerSettings(work_dir=tmp_path / "work", redis_url=redis_user_url("worker"), **limits)
    runtime = WorkerRuntime("evaluator", ["evaluate"], worker, lambda: {})
    celery = create_celery(worker)
    register_stages(celery, runtime)
    keys = redis.Redis.from_url(clean_redis)

    def what_is_there() -> dict:
        files = {str(p.relative_to(tmp_path)): p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()}
        return {"files": files, "redis": sorted(keys.keys("*"))}

    def run_job(job_id: str) -> None:
        celery.tasks[EVALUATOR.task].apply(args=[job_id], task_id=job_id)

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, what_is_there, run_job
    assert not denials(keys), f"Redis refused commands (k8s/base/redis-users.acl): {denials(keys)}"
