"""The reaper on a real Redis, with real Celery sends: orphaned jobs are sent again at their
stage, cancelled or failed; held, waiting and finished jobs are left alone; one sweeper at a
time; no sweep while Redis is too fresh to judge leases by."""
from __future__ import annotations

import json
import time

import pytest

from ssdstack.celery_app import create_app
from ssdstack.jobs.reaper import LOCK, SUSPECTS, Reaper
from ssdstack.jobs.records import ACTIVE, JobStore
from ssdstack.settings import WorkerSettings
from toy import ELSEWHERE, HERE, TOY

SWEEP_TIMEOUT = 10.0


@pytest.fixture
def settings(clean_redis) -> WorkerSettings:
    # A TTL under the test Redis's uptime after its first second: sweeps may run at once.
    return WorkerSettings(redis_url=clean_redis, heartbeat_interval=0.05, heartbeat_ttl=0.5, max_attempts=2)


@pytest.fixture
def jobs(settings) -> JobStore:
    return JobStore.from_url(settings.redis_url, retention_s=3600)


@pytest.fixture
def reaper(settings, jobs) -> Reaper:
    return Reaper(create_app(settings), jobs, settings, {"toy": TOY}, owner="test")


def _sweep_until_it_acts(reaper: Reaper) -> list:
    """Sweep (each sweep at least a heartbeat interval after the last) until one acts."""
    deadline = time.monotonic() + SWEEP_TIMEOUT
    while time.monotonic() < deadline:
        done = reaper.sweep()
        if done:
            return done
        time.sleep(reaper.settings.heartbeat_interval)
    raise AssertionError(f"no sweep acted within {SWEEP_TIMEOUT} s")


def _queued_ids(jobs: JobStore, queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in jobs.redis.lrange(queue, 0, -1)]


def _running_at(jobs: JobStore, index: int, worker: str = "trainer@dead:1") -> str:
    """A job whose worker died in the middle of stage ``index``: no lease, no queued message."""
    job_id = jobs.create("toy", {"type": "toy", "start": 1}, TOY.stage_names)["id"]
    jobs.mark_running(job_id, worker)
    jobs.advance_stage(job_id, TOY.stages[index].name, index)
    jobs.stage_started(job_id, index)
    return job_id


def test_a_dead_workers_job_is_sent_again_at_its_stage_and_the_loss_counted(reaper, jobs):
    job_id = _running_at(jobs, 1)
    [done] = _sweep_until_it_acts(reaper)
    assert (done.job_id, done.action, done.stage) == (job_id, "resent", "double")
    assert _queued_ids(jobs, HERE.queue) == [f"{job_id}.double"]
    job = jobs.get(job_id)
    assert job["worker_losses"] == 1 and job["state"] == "running"
    assert any("stage double sent again: its worker (trainer@dead:1) died; attempt 2 of 2" in line
               for line in jobs.logs(job_id))
    assert reaper.sweep() == []  # the message now waits in its queue


def test_a_job_held_by_a_lease_or_waiting_in_its_queue_is_left_alone(reaper, jobs, settings):
    held = _running_at(jobs, 0)
    jobs.acquire_lease(held, "live-run", ttl_s=60)
    waiting = jobs.create("toy", {"type": "toy"}, TOY.stage_names)["id"]
    jobs.advance_stage(waiting, "report", 2)
    create_app(settings).send_task(ELSEWHERE.task, args=[waiting], task_id=f"{waiting}.report",
                                   queue=ELSEWHERE.queue)
    deadline = time.monotonic() + 20 * settings.heartbeat_interval
    while time.monotonic() < deadline:
        assert reaper.sweep() == []
        time.sleep(settings.heartbeat_interval)
    assert jobs.redis.hlen(SUSPECTS) == 0 and jobs.get(held)["worker_losses"] == 0


def test_a_queued_job_whose_message_was_lost_is_sent_and_no_loss_counted(reaper, jobs):
    job_id = jobs.create("toy", {"type": "toy"}, TOY.stage_names)["id"]  # the gateway died before sending
    [done] = _sweep_until_it_acts(reaper)
    assert (done.action, done.stage) == ("resent", "count")
    assert _queued_ids(jobs, HERE.queue) == [job_id]
    assert jobs.get(job_id)["worker_losses"] == 0
    assert any("its message was lost before a worker took it" in line for line in jobs.logs(job_id))


def test_cancelling_an_orphan_ends_it_within_a_sweep(reaper, jobs):
    job_id = _running_at(jobs, 0)
    jobs.request_cancel(job_id)  # running: only a live worker would see the flag
    [done] = _sweep_until_it_acts(reaper)
    job = jobs.get(job_id)
    assert done.action == "cancelled" and job["state"] == "cancelled"
    assert job["stages"][0]["state"] == "cancelled" and "no live worker" in job["error"]["message"]
    assert jobs.redis.llen(HERE.queue) == 0


def test_a_job_that_took_its_worker_down_max_attempts_times_fails(reaper, jobs):
    job_id = _running_at(jobs, 0)
    assert _sweep_until_it_acts(reaper)[0].action == "resent"
    jobs.redis.delete(HERE.queue)  # the resent message was taken, and its worker died again
    jobs.stage_started(job_id, 0)
    [done] = _sweep_until_it_acts(reaper)
    job = jobs.get(job_id)
    assert done.action == "failed" and job["state"] == "failed"
    assert job["error"]["code"] == "worker_lost"
    assert "took its worker down 2 times" in job["error"]["message"]
    assert "SSDSTACK_MAX_ATTEMPTS" in job["error"]["message"]


def test_ended_jobs_leave_the_active_set_and_every_key_of_theirs_expires(reaper, jobs):
    job_id = jobs.create("toy", {"type": "toy"}, TOY.stage_names)["id"]
    jobs.log(job_id, "a line")
    jobs.request_cancel(job_id)
    assert jobs.redis.sismember(ACTIVE, job_id) == 0
    for suffix in ("", ":log", ":cancel"):
        assert 0 < jobs.redis.ttl(f"ssdstack:job:{job_id}{suffix}") <= 3600
    gone = jobs.create("toy", {"type": "toy"}, TOY.stage_names)["id"]
    jobs.redis.delete(f"ssdstack:job:{gone}")  # expired, or deleted by hand
    deadline = time.monotonic() + SWEEP_TIMEOUT
    while jobs.redis.sismember(ACTIVE, gone):
        assert time.monotonic() < deadline, "the sweep never dropped the vanished job"
        reaper.sweep()
        time.sleep(reaper.settings.heartbeat_interval)


def test_records_from_before_the_active_set_are_listed_once(jobs):
    job_id = jobs.create("toy", {"type": "toy"}, TOY.stage_names)["id"]
    finished = jobs.create("toy", {"type": "toy"}, TOY.stage_names)["id"]
    jobs.succeed(finished, {})
    jobs.redis.delete(ACTIVE)
    assert jobs.list_unfinished_as_active() == 1 and jobs.active() == [job_id]
    assert jobs.list_unfinished_as_active() == 0


def test_one_sweeper_at_a_time(reaper, jobs):
    _running_at(jobs, 0)
    jobs.redis.set(LOCK, "another-sweeper", px=60_000)
    for _ in range(5):
        assert reaper.sweep() == []
        time.sleep(reaper.settings.heartbeat_interval)
    assert jobs.redis.hlen(SUSPECTS) == 0


def test_no_sweep_judges_leases_before_they_could_have_been_renewed(jobs, settings):
    patient = settings.model_copy(update={"heartbeat_ttl": 3600.0})  # longer than this Redis has been up
    reaper = Reaper(create_app(patient), jobs, patient, {"toy": TOY})
    job_id = _running_at(jobs, 0)
    for _ in range(5):
        assert reaper.sweep() == []
        time.sleep(settings.heartbeat_interval)
    assert jobs.redis.hlen(SUSPECTS) == 0 and jobs.get(job_id)["worker_losses"] == 0
