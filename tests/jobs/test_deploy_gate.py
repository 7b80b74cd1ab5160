"""The deploy gate of a pipeline: a served mAP more than ``max_map_drop`` below the
trained one fails the job and deploys nothing."""
from __future__ import annotations

import pytest

from converter.service import convert_version
from inferencer import tasks
from inferencer.repository import ModelRepository
from ssdstack.celery_app import EVALUATE_TASK, create_app
from ssdstack.jobs.context import LocalContext
from ssdstack.jobs.pipeline import STAGE_ORDER
from ssdstack.settings import WorkerSettings
from ssdstack.worker import WorkerRuntime


@pytest.fixture
def evaluate_task(clean_redis, store_with_dataset, tmp_path):
    convert_version(store_with_dataset, "demo", 1, "onnxruntime", LocalContext(quiet=True))
    settings = WorkerSettings(redis_url=clean_redis, store_dir=store_with_dataset.root, work_dir=tmp_path / "work",
                              infer_backend="onnxruntime")
    app = create_app(settings)
    runtime = WorkerRuntime("inferencer", ["infer"], settings, lambda: {})
    runtime.app = app
    tasks.register(app, runtime, ModelRepository(store_with_dataset, "onnxruntime"))
    return app.tasks[EVALUATE_TASK], runtime


def _pipeline_at_evaluate(runtime, trained_ap: float, max_map_drop: float) -> str:
    spec = {"type": "pipeline", "dataset": "synth", "model": "demo", "max_map_drop": max_map_drop}
    job_id = runtime.jobs.create("pipeline", spec)["id"]
    runtime.jobs.merge_result(job_id, {"model": "demo", "version": 1, "metrics": {"trained": {"AP": trained_ap}}})
    runtime.jobs.advance_stage(job_id, EVALUATE_TASK, STAGE_ORDER[EVALUATE_TASK])
    return job_id


def test_a_served_map_drop_beyond_the_bound_fails_and_deploys_nothing(evaluate_task, store_with_dataset):
    task, runtime = evaluate_task
    job_id = _pipeline_at_evaluate(runtime, trained_ap=0.9, max_map_drop=0.01)
    task.apply(args=[job_id])
    job = runtime.jobs.get(job_id)
    assert job["state"] == "failed" and job["error"]["code"] == "conflict", job
    assert "more than max_map_drop 0.01; not deployed" in job["error"]["message"]
    assert job["error"]["details"]["trained"] == 0.9
    assert store_with_dataset.deployed("demo") is None

