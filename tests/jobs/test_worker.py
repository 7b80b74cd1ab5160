"""WorkerRuntime.run_job on a real Redis: success, failure, cancel, leases, stale stages."""
from __future__ import annotations

import pytest
from celery.exceptions import Retry

import threading
import time

from ssdstack.celery_app import CONVERT_TASK, TRAIN_TASK, create_app
from ssdstack.errors import InvalidDataset
from ssdstack.jobs.context import JobCancelled
from ssdstack.jobs.pipeline import STAGE_ORDER
from ssdstack.settings import WorkerSettings
from ssdstack.worker import NextStage, WorkerRuntime, live_workers


class FakeTask:
    """The two things run_job uses of a bound Celery task."""

    name = "trainer.train"

    def retry(self, countdown, max_retries):
        return Retry(f"retry in {countdown}", when=countdown)


@pytest.fixture
def runtime(clean_redis, tmp_path) -> WorkerRuntime:
    settings = WorkerSettings(redis_url=clean_redis, heartbeat_interval=0.05, heartbeat_ttl=2,
                              heartbeat_file=str(tmp_path / "alive"))
    runtime = WorkerRuntime("trainer", ["train"], settings, lambda: {"train": ["mindspore"]})
    runtime.app = create_app(settings)
    return runtime


def _job(runtime: WorkerRuntime, stage: str = TRAIN_TASK) -> str:
    job_id = runtime.jobs.create("pipeline", {})["id"]
    runtime.jobs.advance_stage(job_id, stage, STAGE_ORDER[stage])
    return job_id


def test_success_records_result_and_releases_lease(runtime):
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, lambda ctx: {"version": 1})
    job = runtime.jobs.get(job_id)
    assert job["state"] == "succeeded" and job["result"] == {"version": 1}
    assert runtime.jobs.lease_holder(job_id) is None


def test_domain_error_fails_the_job_with_its_message(runtime):
    def body(ctx):
        raise InvalidDataset("dataset 'x' has an empty val split", details=["val: no images"])

    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, body)
    error = runtime.jobs.get(job_id)["error"]
    assert error == {"code": "invalid_dataset", "message": "dataset 'x' has an empty val split",
                     "details": ["val: no images"]}


def test_unexpected_exception_fails_the_job_and_does_not_escape(runtime):
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, lambda ctx: 1 / 0)
    job = runtime.jobs.get(job_id)
    assert job["state"] == "failed" and "ZeroDivisionError" in job["error"]["message"]


def test_cancel_inside_the_body(runtime):
    def body(ctx):
        runtime.jobs.request_cancel(ctx.job_id)
        assert ctx.cancelled()
        raise JobCancelled("cancelled during epoch 2")

    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, body)
    assert runtime.jobs.get(job_id)["state"] == "cancelled"


def test_a_job_held_by_a_live_worker_is_retried_not_run(runtime):
    job_id = _job(runtime)
    runtime.jobs.acquire_lease(job_id, "other-worker", ttl_s=30)
    ran = []
    with pytest.raises(Retry):
        runtime.run_job(FakeTask(), job_id, lambda ctx: ran.append(1) or {})
    assert ran == [] and runtime.jobs.get(job_id)["state"] == "queued"


def test_finished_and_stale_stage_messages_are_dropped(runtime):
    done = _job(runtime)
    runtime.jobs.succeed(done, {"version": 1})
    moved_on = _job(runtime, stage=CONVERT_TASK)
    ran = []
    for job_id in (done, moved_on, "no-such-job"):
        runtime.run_job(FakeTask(), job_id, lambda ctx: ran.append(1) or {})
    assert ran == []
    assert runtime.jobs.get(moved_on)["state"] == "queued"


def test_handing_on_sends_the_next_stage_after_releasing_the_lease(runtime):
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, lambda ctx: NextStage(CONVERT_TASK))
    job = runtime.jobs.get(job_id)
    assert job["state"] == "running" and job["stage"] == CONVERT_TASK
    assert runtime.jobs.lease_holder(job_id) is None
    assert runtime.jobs.redis.llen("convert") == 1  # the converter's queue holds the message


def test_stage_only_moves_forward(runtime):
    job_id = _job(runtime, stage=CONVERT_TASK)
    assert not runtime.jobs.advance_stage(job_id, TRAIN_TASK, STAGE_ORDER[TRAIN_TASK])
    assert runtime.jobs.get(job_id)["stage"] == CONVERT_TASK


def test_a_run_that_loses_its_lease_stops_and_records_nothing(runtime):
    job_id = _job(runtime)
    taken = threading.Event()

    def body(ctx):
        runtime.jobs.redis.set(f"ssdstack:job:{job_id}:lease", "another-run", px=60_000)  # a takeover
        deadline = time.monotonic() + 5
        while not ctx.cancelled():
            assert time.monotonic() < deadline, "the lost lease was never noticed"
            time.sleep(0.02)
        taken.set()
        raise JobCancelled("stopping")

    runtime.run_job(FakeTask(), job_id, body)
    assert taken.is_set()
    assert runtime.jobs.get(job_id)["state"] == "running"  # left to the run that holds the lease
    assert runtime.jobs.lease_holder(job_id) == "another-run"


def test_heartbeats_are_visible_and_expire(runtime, tmp_path):
    runtime.start_heartbeats()
    try:
        runtime.heartbeat_once()
        workers = live_workers(runtime.jobs.redis)
        assert [w["worker_id"] for w in workers] == [runtime.worker_id]
        assert workers[0]["queues"] == ["train"] and workers[0]["backends"] == {"train": ["mindspore"]}
        assert (tmp_path / "alive").exists()
    finally:
        runtime.stop_heartbeats()
    assert live_workers(runtime.jobs.redis) == []
