"""What the release before the reaper wrote is read by today's code: job records captured
from d4674f2 (tests/golden/migration) in a real Redis, and manifests and a deployment
written before issue 10 (tests/golden/store)."""
from __future__ import annotations

import json
import shutil
import time

import redis

from golden_answers import GOLDEN_DIR
from ssdstack.celery_app import EVALUATE_QUEUE, INFER_QUEUE, create_app
from ssdstack.jobs.pipeline import EVALUATOR, JOB_TYPES, stage_task_id
from ssdstack.jobs.reaper import Reaper
from ssdstack.jobs.records import JobStore
from ssdstack.model_store import ModelStore, servable
from ssdstack.settings import WorkerSettings

CAPTURED = json.loads((GOLDEN_DIR / "migration" / "redis_d4674f2.json").read_text())
JOBS = CAPTURED["jobs"]


def _load(client: redis.Redis) -> None:
    for key, entry in CAPTURED["keys"].items():
        value = entry["value"]
        if entry["type"] == "hash":
            client.hset(key, mapping=value)
        elif entry["type"] == "list":
            client.rpush(key, *value)
        elif entry["type"] == "string":
            client.set(key, value)
        elif entry["type"] == "zset":
            client.zadd(key, dict(value))
        elif entry["type"] == "set":
            client.sadd(key, *value)
        if entry["ttl"] > 0:
            client.expire(key, entry["ttl"])


def test_records_of_the_previous_release_are_read_swept_and_ended(clean_redis):
    settings = WorkerSettings(redis_url=clean_redis, heartbeat_interval=0.05, heartbeat_ttl=0.5)
    jobs = JobStore.from_url(clean_redis, retention_s=3600)
    _load(jobs.redis)
    for job_id in JOBS.values():
        job = jobs.get(job_id)
        assert job["worker_losses"] == 0 and job["id"] == job_id
    assert jobs.active() == []  # the release before kept no active set
    assert jobs.list_unfinished_as_active() == 3  # what a worker of this release does when it starts

    reaper = Reaper(create_app(settings), jobs, settings, owner="migration")
    done = {}
    deadline = time.monotonic() + 10
    while len(done) < 3:
        assert time.monotonic() < deadline, f"the sweeps handled only {done}"
        done.update({entry.job_id: (entry.action, entry.stage) for entry in reaper.sweep()})
        time.sleep(settings.heartbeat_interval)
    assert done == {JOBS["running_pipeline_at_convert"]: ("resent", "convert"),
                    JOBS["queued_train"]: ("resent", "train"),
                    JOBS["running_train_cancel_requested"]: ("cancelled", "train")}
    queued = [json.loads(raw)["headers"]["id"] for raw in jobs.redis.lrange("convert", 0, -1)]
    assert queued == [f"{JOBS['running_pipeline_at_convert']}.convert"]
    assert jobs.get(JOBS["running_pipeline_at_convert"])["worker_losses"] == 1
    assert jobs.redis.ttl(f"ssdstack:job:{JOBS['running_train_cancel_requested']}:cancel") > 0  # ended: expires
    assert jobs.get(JOBS["succeeded_evaluate"])["result"]["version"] == 2


def test_versions_and_a_deployment_of_an_earlier_release_deploy_with_if_match(tmp_path):
    shutil.copytree(GOLDEN_DIR / "store", tmp_path / "store")
    store = ModelStore(tmp_path / "store")
    assert "previous" not in store.deployed("golden")  # written before deployments said what they replaced
    converted = [version for version in store.versions("golden") if version["serving"]]
    assert [version["version"] for version in converted] == [1, 2]
    for version in converted:
        assert servable(version) == (["onnxruntime"], {})  # never refused for a field it lacks
    record = store.deploy("golden", 2, if_match=store.deployed_version("golden"))
    assert (record["version"], record["previous"]) == (2, 1)


def test_an_evaluate_message_left_on_the_infer_queue_by_the_release_before_is_sent_to_the_evaluator(clean_redis):
    """The release before sent evaluate stages to the inferencer's queue; today's inferencer
    no longer runs them. A job whose evaluate message waits there, with no run holding it,
    is orphaned: the reaper sends the stage again, to the evaluator's queue."""
    settings = WorkerSettings(redis_url=clean_redis, heartbeat_interval=0.05, heartbeat_ttl=0.5)
    jobs = JobStore.from_url(clean_redis, retention_s=3600)
    pipeline = JOB_TYPES["pipeline"]
    index = pipeline.index("evaluate")
    job_id = jobs.create("pipeline", {"type": "pipeline", "dataset": "d", "model": "m"}, pipeline.stage_names)["id"]
    jobs.mark_running(job_id, "inferencer@old:1")
    jobs.advance_stage(job_id, "evaluate", index)
    app = create_app(settings)
    app.send_task(EVALUATOR.task, args=[job_id], task_id=stage_task_id(job_id, pipeline, index), queue=INFER_QUEUE)

    reaper = Reaper(app, jobs, settings, owner="migration")
    deadline = time.monotonic() + 10
    done = []
    while not done:
        assert time.monotonic() < deadline, "no sweep sent the stage again"
        done = reaper.sweep()
        time.sleep(settings.heartbeat_interval)
    assert [(entry.job_id, entry.action, entry.stage) for entry in done] == [(job_id, "resent", "evaluate")]
    [message] = [json.loads(raw) for raw in jobs.redis.lrange(EVALUATE_QUEUE, 0, -1)]
    assert (message["headers"]["task"], message["headers"]["id"]) == (EVALUATOR.task, f"{job_id}.evaluate")
