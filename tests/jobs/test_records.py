"""Job records on a real Redis: states, cancel, leases, logs."""
from __future__ import annotations

import time

import pytest

from ssdstack.errors import Conflict, NotFound
from ssdstack.jobs.records import JobStore


@pytest.fixture
def jobs(clean_redis) -> JobStore:
    return JobStore.from_url(clean_redis)


def test_create_get_list_newest_first(jobs):
    first = jobs.create("train", {"dataset": "a"})
    time.sleep(0.01)
    second = jobs.create("convert", {"model": "m", "version": 1})
    assert jobs.get(first["id"])["spec"] == {"dataset": "a"}
    assert [j["id"] for j in jobs.list()] == [second["id"], first["id"]]
    assert [j["id"] for j in jobs.list(job_type="train")] == [first["id"]]
    assert first["state"] == "queued" and first["progress"] == {}


def test_unknown_job_is_not_found(jobs):
    with pytest.raises(NotFound):
        jobs.get("nope")
    assert jobs.state("nope") is None
    assert jobs.state(jobs.create("train", {})["id"]) == "queued"


def test_terminal_state_is_never_overwritten(jobs):
    job = jobs.create("train", {})
    assert jobs.mark_running(job["id"], "w1")
    assert jobs.succeed(job["id"], {"version": 3})
    assert not jobs.fail(job["id"], "late", "a late failure")
    assert not jobs.mark_running(job["id"], "w2")
    final = jobs.get(job["id"])
    assert final["state"] == "succeeded" and final["result"] == {"version": 3} and final["error"] is None
    assert final["attempts"] == 2  # both deliveries counted, the second did not run


def test_cancel_queued_job_is_immediate(jobs):
    job = jobs.create("train", {})
    assert jobs.request_cancel(job["id"])["state"] == "cancelled"
    assert jobs.cancel_requested(job["id"])
    with pytest.raises(Conflict):
        jobs.request_cancel(job["id"])


def test_cancel_running_job_sets_the_flag_only(jobs):
    job = jobs.create("train", {})
    jobs.mark_running(job["id"], "w1")
    assert not jobs.cancel_requested(job["id"])
    assert jobs.request_cancel(job["id"])["state"] == "running"
    assert jobs.cancel_requested(job["id"])


def test_lease_is_exclusive_renewable_and_expires(jobs):
    job_id = jobs.create("train", {})["id"]
    lease = f"ssdstack:job:{job_id}:lease"
    assert jobs.acquire_lease(job_id, "w1", ttl_s=30)
    assert not jobs.acquire_lease(job_id, "w2", ttl_s=30)
    jobs.redis.pexpire(lease, 5_000)
    assert jobs.acquire_lease(job_id, "w1", ttl_s=30)  # renewal by the holder: the full TTL again
    assert 5_000 < jobs.redis.pttl(lease) <= 30_000
    assert jobs.lease_holder(job_id) == "w1"
    jobs.redis.pexpire(lease, 1)  # the holder died: its lease runs out
    deadline = time.monotonic() + 5
    while jobs.lease_holder(job_id) is not None:
        assert time.monotonic() < deadline, "an expired lease was still held"
        time.sleep(0.01)
    assert jobs.acquire_lease(job_id, "w2", ttl_s=5)
    jobs.release_lease(job_id, "w1")  # not the holder: no effect
    assert jobs.lease_holder(job_id) == "w2"
    jobs.release_lease(job_id, "w2")
    assert jobs.lease_holder(job_id) is None


def test_progress_merges_and_log_is_capped(jobs):
    job_id = jobs.create("train", {})["id"]
    jobs.progress(job_id, epoch=1, loss=2.0)
    jobs.progress(job_id, loss=1.5)
    assert jobs.get(job_id)["progress"] == {"epoch": 1, "loss": 1.5}
    for i in range(510):
        jobs.log(job_id, f"line {i}")
    lines = jobs.logs(job_id)
    assert len(lines) == 500 and lines[-1].endswith("line 509")


def test_finished_jobs_expire_after_the_retention(clean_redis):
    jobs = JobStore.from_url(clean_redis, retention_s=120)
    done, running = jobs.create("train", {})["id"], jobs.create("train", {})["id"]
    jobs.log(done, "a line")
    jobs.mark_running(done, "w1")
    jobs.succeed(done, {})
    assert 0 < jobs.redis.ttl(f"ssdstack:job:{done}") <= 120 and jobs.redis.ttl(f"ssdstack:job:{done}:log") > 0
    assert jobs.redis.ttl(f"ssdstack:job:{running}") == -1  # unfinished jobs never expire
    jobs.redis.delete(f"ssdstack:job:{done}")  # as if the TTL had passed
    assert [j["id"] for j in jobs.list()] == [running]
    assert jobs.redis.zcard("ssdstack:jobs") == 1
