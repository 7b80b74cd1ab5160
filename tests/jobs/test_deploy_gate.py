"""The deploy stage of a pipeline: a served mAP more than ``max_map_drop`` below the
trained one fails the job and deploys nothing; within the bound the version is deployed,
unless another version was deployed since the job was submitted."""
from __future__ import annotations

import pytest

from converter.service import convert_version
from inferencer import tasks
from ssdstack.celery_app import create_app
from ssdstack.jobs.context import LocalContext
from ssdstack.jobs.pipeline import EVALUATOR, JOB_TYPES
from ssdstack.jobs.stage_data import Published
from ssdstack.settings import WorkerSettings
from ssdstack.worker import WorkerRuntime

PIPELINE = JOB_TYPES["pipeline"]


@pytest.fixture
def evaluate_task(clean_redis, store_with_dataset, tmp_path):
    convert_version(store_with_dataset, "demo", 1, "onnxruntime", LocalContext(quiet=True))
    settings = WorkerSettings(redis_url=clean_redis, store_dir=store_with_dataset.root, work_dir=tmp_path / "work",
                              infer_backend="onnxruntime")
    app = create_app(settings)
    runtime = WorkerRuntime("evaluator", ["evaluate"], settings, lambda: {})
    tasks.register_stages(app, runtime)
    return app.tasks[EVALUATOR.task], runtime


def _pipeline_at_evaluate(runtime, trained_ap: float, max_map_drop: float, deploy_if_match: int | None = None) -> str:
    """A pipeline whose earlier stages published demo v1 with ``trained_ap``."""
    spec = {"type": "pipeline", "dataset": "synth", "model": "demo", "max_map_drop": max_map_drop,
            "deploy_if_match": deploy_if_match}
    job_id = runtime.jobs.create("pipeline", spec, PIPELINE.stage_names)["id"]
    published = Published(model="demo", version=1, metrics={"trained": {"AP": trained_ap}})
    runtime.jobs.stage_done(job_id, PIPELINE.index("export"), published.model_dump(), published.result())
    runtime.jobs.advance_stage(job_id, "evaluate", PIPELINE.index("evaluate"))
    return job_id


def test_a_served_map_drop_beyond_the_bound_fails_and_deploys_nothing(evaluate_task, store_with_dataset):
    task, runtime = evaluate_task
    job_id = _pipeline_at_evaluate(runtime, trained_ap=0.9, max_map_drop=0.01)
    task.apply(args=[job_id], task_id=f"{job_id}.evaluate")
    job = runtime.jobs.get(job_id)
    assert job["state"] == "failed" and job["error"]["code"] == "conflict", job
    assert "more than max_map_drop 0.01; not deployed" in job["error"]["message"]
    assert job["error"]["details"]["trained"] == 0.9
    assert [s["state"] for s in job["stages"]][-2:] == ["succeeded", "failed"]  # evaluate, deploy
    assert store_with_dataset.deployed("demo") is None


def test_a_drop_within_the_bound_deploys(evaluate_task, store_with_dataset):
    task, runtime = evaluate_task
    job_id = _pipeline_at_evaluate(runtime, trained_ap=0.9, max_map_drop=1.0)
    task.apply(args=[job_id], task_id=f"{job_id}.evaluate")
    job = runtime.jobs.get(job_id)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["deployed"]["version"] == 1 == store_with_dataset.deployed_version("demo")
    assert job["result"]["metrics"]["trained"] == {"AP": 0.9} and "AP50" in job["result"]["metrics"]["served"]


def test_a_deploy_made_since_submission_is_kept(evaluate_task, store_with_dataset):
    task, runtime = evaluate_task
    job_id = _pipeline_at_evaluate(runtime, trained_ap=0.9, max_map_drop=1.0, deploy_if_match=0)  # none, at submission
    store_with_dataset.deploy("demo", 1, by="api")  # an operator deploys meanwhile
    task.apply(args=[job_id], task_id=f"{job_id}.evaluate")
    job = runtime.jobs.get(job_id)
    assert job["state"] == "succeeded", job["error"]
    assert "deployed" not in job["result"]
    assert "has version 1 deployed, not none" in job["result"]["deploy_skipped"]
    assert store_with_dataset.deployed("demo")["by"] == "api"
