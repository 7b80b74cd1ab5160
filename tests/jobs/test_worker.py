"""WorkerRuntime.run_job on a real Redis: success, failure, cancel, leases, stale stages."""
from __future__ import annotations

import pytest
from celery.exceptions import Retry

from ssdstack.errors import InvalidDataset
from ssdstack.jobs.context import JobCancelled
from ssdstack.settings import WorkerSettings
from ssdstack.worker import WorkerRuntime, live_workers


class FakeTask:
    """The two things run_job uses of a bound Celery task."""

    name = "trainer.train"

    def retry(self, countdown, max_retries):
        return Retry(f"retry in {countdown}", when=countdown)


@pytest.fixture
def runtime(clean_redis, tmp_path) -> WorkerRuntime:
    settings = WorkerSettings(redis_url=clean_redis, heartbeat_interval=0.05, heartbeat_ttl=2,
                              heartbeat_file=str(tmp_path / "alive"))
    return WorkerRuntime("trainer", ["train"], settings, lambda: {"train": ["mindspore"]})


def _job(runtime: WorkerRuntime, stage: str = "trainer.train") -> str:
    job_id = runtime.jobs.create("train", {})["id"]
    runtime.jobs.set_stage(job_id, stage)
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
    moved_on = _job(runtime, stage="converter.convert")
    ran = []
    for job_id in (done, moved_on, "no-such-job"):
        runtime.run_job(FakeTask(), job_id, lambda ctx: ran.append(1) or {})
    assert ran == []
    assert runtime.jobs.get(moved_on)["state"] == "queued"


def test_handing_on_keeps_the_job_running(runtime):
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, lambda ctx: None)
    assert runtime.jobs.get(job_id)["state"] == "running"


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
