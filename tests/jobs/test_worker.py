"""WorkerRuntime on a real Redis: stages run under a lease, recorded one by one, handed on;
failure, cancel, stale and legacy messages; heartbeats. The job types here are toys
declared in the test, so that only the runtime is under test."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
import pytest
import redis
from celery.exceptions import Retry

from inferencer.tasks import DetectCounts
from ssdstack.celery_app import create_app
from ssdstack.errors import InvalidDataset
from ssdstack.jobs.context import JobCancelled
from ssdstack.jobs.pipeline import JobType, stage_in_message
from ssdstack.settings import WorkerSettings
from ssdstack.redis_client import ride_out
from ssdstack.heartbeats import live_workers
from ssdstack.worker import EXIT_WEDGED, WorkerRuntime
from toy import ELSEWHERE, HERE, LEGACY_STAGE, TOY, Counted, Doubled, FakeTask, ToySpec

@pytest.fixture
def calls():
    return []


@pytest.fixture
def runtime(clean_redis, tmp_path, calls) -> WorkerRuntime:
    settings = WorkerSettings(redis_url=clean_redis, heartbeat_interval=0.05, heartbeat_ttl=2,
                              heartbeat_file=str(tmp_path / "alive"))
    runtime = WorkerRuntime("trainer", ["toy-here"], settings, lambda: {"toy-here": [
        {"name": "toy", "usable": True, "artefact": "toy_file", "install_hint": "pip install toy"},
        {"name": "other", "usable": False, "artefact": "other_file", "install_hint": "pip install other"}]},
        notes={"device": "CPU"}, job_types={"toy": TOY})

    def count(ctx, spec: ToySpec) -> Counted:
        calls.append("count")
        return Counted(count=spec.start)

    def double(ctx, data: Counted) -> Doubled:
        calls.append("double")
        return Doubled(doubled=2 * data.count)

    runtime.serve(create_app(settings), HERE, {"count": count, "double": double})
    return runtime


def _job(runtime: WorkerRuntime, start: int = 1) -> str:
    return runtime.jobs.create("toy", ToySpec(start=start).model_dump(), runtime.job_types["toy"].stage_names)["id"]


def test_a_delivery_runs_the_stages_on_its_route_records_each_and_hands_on(runtime, calls):
    job_id = _job(runtime, start=3)
    runtime.run_job(FakeTask(), job_id, "count")
    job = runtime.jobs.get(job_id)
    assert calls == ["count", "double"]
    assert job["state"] == "running" and job["stage"] == "report"
    assert [(s["name"], s["state"]) for s in job["stages"]] == [
        ("count", "succeeded"), ("double", "succeeded"), ("report", "pending")]
    assert job["stages"][1]["output"] == {"doubled": 6, "schema_version": 1}
    assert job["result"] == {"count": 3, "doubled": 6, "nested": {"from": "double"}}
    assert runtime.jobs.lease_holder(job_id) is None  # released before the hand-off
    assert runtime.jobs.redis.llen(ELSEWHERE.queue) == 1  # the next route's queue holds the message


def test_progress_shows_each_stage_while_it_runs_then_the_hand_off(runtime):
    seen = []

    def double(ctx, data: Counted) -> Doubled:
        seen.append(runtime.jobs.get(ctx.job_id)["progress"]["stage"])
        return Doubled(doubled=0)

    runtime.runners["double"] = double
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, "count")
    assert seen == ["double"] and runtime.jobs.get(job_id)["progress"]["stage"] == "queued:report"


def test_the_last_stage_records_success_and_the_merged_result(runtime, calls):
    job_type = JobType("toy", ToySpec, TOY.stages[:2])
    runtime.job_types = {"toy": job_type}
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, "count")
    job = runtime.jobs.get(job_id)
    assert job["state"] == "succeeded" and job["result"] == {"count": 1, "doubled": 2, "nested": {"from": "double"}}
    assert [s["state"] for s in job["stages"]] == ["succeeded", "succeeded"]
    assert runtime.jobs.redis.llen(ELSEWHERE.queue) == 0


def test_a_domain_error_fails_the_job_and_its_stage_with_its_message(runtime):
    def body(ctx, data):
        raise InvalidDataset("dataset 'x' has an empty val split", details=["val: no images"])

    runtime.runners["double"] = body
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, "count")
    job = runtime.jobs.get(job_id)
    assert job["error"] == {"code": "invalid_dataset", "message": "dataset 'x' has an empty val split",
                            "details": ["val: no images"]}
    assert [s["state"] for s in job["stages"]] == ["succeeded", "failed", "pending"]


def test_an_unexpected_exception_fails_the_job_and_does_not_escape(runtime):
    runtime.runners["count"] = lambda ctx, data: 1 / 0
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, "count")
    job = runtime.jobs.get(job_id)
    assert job["state"] == "failed" and "ZeroDivisionError" in job["error"]["message"]


def test_a_stage_that_returns_another_type_than_declared_fails_the_job(runtime):
    runtime.runners["count"] = lambda ctx, data: Doubled(doubled=1)
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, "count")
    assert "returned Doubled, not Counted" in runtime.jobs.get(job_id)["error"]["message"]


def test_cancel_inside_a_stage(runtime):
    def body(ctx, data):
        runtime.jobs.request_cancel(ctx.job_id)
        assert ctx.cancelled()
        raise JobCancelled("cancelled during epoch 2")

    runtime.runners["count"] = body
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, "count")
    job = runtime.jobs.get(job_id)
    assert job["state"] == "cancelled" and job["stages"][0]["state"] == "cancelled"


def test_a_job_held_by_a_live_worker_is_retried_on_its_queue_not_run(runtime, calls):
    job_id = _job(runtime)
    runtime.jobs.acquire_lease(job_id, "other-worker", ttl_s=30)
    task = FakeTask()
    with pytest.raises(Retry):
        runtime.run_job(task, job_id, "count")
    assert calls == [] and runtime.jobs.get(job_id)["state"] == "queued"
    assert task.retried["queue"] == HERE.queue and task.retried["countdown"] == runtime.settings.heartbeat_ttl


def test_finished_unknown_and_stale_messages_are_dropped(runtime, calls):
    done = _job(runtime)
    runtime.jobs.succeed(done, {"count": 1})
    moved_on = _job(runtime)
    runtime.jobs.advance_stage(moved_on, "report", 2)  # the job left this route
    for job_id in (done, moved_on, "no-such-job"):
        runtime.run_job(FakeTask(), job_id, "count")
    assert calls == []
    assert runtime.jobs.get(moved_on)["state"] == "queued"


def test_a_redelivery_goes_on_from_the_current_stage_of_its_route(runtime, calls):
    job_id = _job(runtime, start=5)
    runtime.jobs.advance_stage(job_id, "double", 1)  # the first delivery died after count started double
    runtime.jobs.stage_done(job_id, 0, {"count": 5, "schema_version": 1}, {"count": 5})
    runtime.run_job(FakeTask(), job_id, "count")
    assert calls == ["double"]  # count was recorded as done: not run again
    assert runtime.jobs.get(job_id)["result"]["doubled"] == 10


def test_the_task_id_names_the_stage():
    assert stage_in_message("j1", "j1") is None  # the first stage
    assert stage_in_message("j1.double", "j1") == "double"
    assert stage_in_message("j1.toy.here", "j1") == LEGACY_STAGE  # a message from before stages had names
    with pytest.raises(ValueError, match="names no stage of job j1"):
        stage_in_message("8c3e0f", "j1")


def test_a_message_and_record_from_before_stages_were_named_still_run(runtime, calls):
    job_id = runtime.jobs.create("toy", {"type": "toy", "start": 2})["id"]  # no stages list
    runtime.jobs.redis.hset(f"ssdstack:job:{job_id}", mapping={"result": '{"earlier": 1}'})
    runtime.jobs.advance_stage(job_id, LEGACY_STAGE, 0)
    runtime.run_job(FakeTask(), job_id, stage_in_message(f"{job_id}.{LEGACY_STAGE}", job_id))
    job = runtime.jobs.get(job_id)
    assert calls == ["count", "double"] and job["stage"] == "report"
    assert [s["name"] for s in job["stages"]] == TOY.stage_names
    assert job["result"] == {"earlier": 1, "count": 2, "doubled": 4, "nested": {"from": "double"}}
    assert job["legacy_result"] == {"earlier": 1}  # kept for the stages on the next route


def test_a_lost_lease_stops_the_delivery_before_its_next_stage(runtime, calls):
    def count(ctx, spec):
        runtime.jobs.redis.set(f"ssdstack:job:{ctx.job_id}:lease", "another-run", px=60_000)  # a takeover
        deadline = time.monotonic() + 5
        while not ctx.lease_lost.is_set():
            assert time.monotonic() < deadline, "the lost lease was never noticed"
            time.sleep(0.02)
        return Counted(count=1)

    runtime.runners["count"] = count
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, "count")
    job = runtime.jobs.get(job_id)
    assert calls == [] and [s["state"] for s in job["stages"]] == ["running", "pending", "pending"]
    assert runtime.jobs.redis.llen(ELSEWHERE.queue) == 0


def test_stage_only_moves_forward(runtime):
    job_id = _job(runtime)
    runtime.jobs.advance_stage(job_id, "report", 2)
    assert not runtime.jobs.advance_stage(job_id, "count", 0)
    assert runtime.jobs.get(job_id)["stage"] == "report"


def test_serving_a_route_refuses_a_stage_without_its_function(clean_redis):
    settings = WorkerSettings(redis_url=clean_redis)
    runtime = WorkerRuntime("trainer", ["toy-here"], settings, lambda: {}, job_types={"toy": TOY})
    with pytest.raises(ValueError, match=r"no function for stage\(s\) \['double'\]"):
        runtime.serve(create_app(settings), HERE, {"count": lambda ctx, data: None})  # double is missing


def test_a_run_that_loses_its_lease_stops_and_records_nothing(runtime):
    taken = threading.Event()

    def body(ctx, data):
        runtime.jobs.redis.set(f"ssdstack:job:{ctx.job_id}:lease", "another-run", px=60_000)  # a takeover
        deadline = time.monotonic() + 5
        while not ctx.cancelled():
            assert time.monotonic() < deadline, "the lost lease was never noticed"
            time.sleep(0.02)
        taken.set()
        raise JobCancelled("stopping")

    runtime.runners["count"] = body
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, "count")
    assert taken.is_set()
    assert runtime.jobs.get(job_id)["state"] == "running"  # left to the run that holds the lease
    assert runtime.jobs.lease_holder(job_id) == "another-run"


def test_done_here_tells_whether_the_job_still_needs_this_route(runtime):
    job_id = _job(runtime)
    assert not runtime.done_here(job_id)
    runtime.jobs.advance_stage(job_id, "report", 2)
    assert runtime.done_here(job_id) and runtime.done_here("no-such-job")


def test_heartbeats_carry_backends_with_install_hints_and_expire(runtime, tmp_path):
    runtime.start_heartbeats()
    try:
        runtime.heartbeat_once()
        workers = live_workers(runtime.jobs.redis)
        assert [w["worker_id"] for w in workers] == [runtime.worker_id]
        assert workers[0]["queues"] == ["toy-here"]
        assert workers[0]["backends"] == {"toy-here": ["toy"], "device": "CPU"}
        assert workers[0]["backend_details"]["toy-here"][1] == {
            "name": "other", "usable": False, "artefact": "other_file", "install_hint": "pip install other"}
    finally:
        runtime.stop_heartbeats()
    assert live_workers(runtime.jobs.redis) == []


def test_the_liveness_file_does_not_depend_on_redis_but_on_the_outage_grace(runtime, tmp_path):
    alive = tmp_path / "alive"
    assert runtime.touch_liveness() and alive.exists()
    alive.unlink()
    outage = runtime.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    blind = WorkerRuntime("trainer", ["toy-here"], outage, lambda: {}, job_types={"toy": TOY})
    with pytest.raises(redis.ConnectionError):
        blind.heartbeat_once()  # Redis is out of reach...
    assert blind.touch_liveness() and alive.exists()  # ...and the worker still counts as alive
    blind._redis_reached -= outage.redis_outage_grace + 1  # ...until the outage outlasts the grace
    alive.unlink()
    assert not blind.touch_liveness() and not alive.exists()


def test_a_wedged_worker_stops_touching_its_liveness_file(runtime, tmp_path):
    runtime.wedged.set()
    assert not runtime.touch_liveness() and not (tmp_path / "alive").exists()


def _until_cancelled(ctx, seconds: float = 10, report: bool = False) -> None:
    deadline = time.monotonic() + seconds
    while not ctx.cancelled():
        assert time.monotonic() < deadline, "the run was never told to stop"
        if report:
            ctx.progress(step=1)
        time.sleep(0.02)
    raise JobCancelled("stopped")


def test_a_stage_without_progress_is_failed_as_stalled_and_stopped(runtime):
    runtime.settings = runtime.settings.model_copy(update={"stall_timeout": 0.3})
    runtime.runners["count"] = lambda ctx, data: _until_cancelled(ctx)
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, "count")
    job = runtime.jobs.get(job_id)
    assert job["state"] == "failed" and job["error"]["code"] == "stalled"
    assert "SSDSTACK_STALL_TIMEOUT" in job["error"]["message"]
    assert runtime.jobs.lease_holder(job_id) is None and not runtime.wedged.is_set()


def test_a_job_past_its_time_limit_fails_though_it_reports_progress(runtime):
    runtime.settings = runtime.settings.model_copy(update={"time_limits": {"toy": 0.3}})
    runtime.runners["count"] = lambda ctx, data: _until_cancelled(ctx, report=True)
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, "count")
    job = runtime.jobs.get(job_id)
    assert job["state"] == "failed" and job["error"]["code"] == "time_limit"


_WEDGED_WORKER = """
import sys, time
from ssdstack.celery_app import create_app
from ssdstack.settings import WorkerSettings
from ssdstack.worker import WorkerRuntime
from toy import HERE, TOY, FakeTask

settings = WorkerSettings(redis_url=sys.argv[1], heartbeat_interval=0.1, heartbeat_ttl=0.5, stall_timeout=0.3)
runtime = WorkerRuntime("trainer", ["toy-here"], settings, lambda: {}, job_types={"toy": TOY})
runtime.serve(create_app(settings), HERE, {"count": lambda ctx, data: time.sleep(60), "double": None})
runtime.run_job(FakeTask(), sys.argv[2], None)
"""


def test_a_stage_that_cannot_be_stopped_ends_its_worker_process(runtime, tmp_path):
    job_id = _job(runtime)
    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(here.parent.parent)]))
    done = subprocess.run([sys.executable, "-c", _WEDGED_WORKER, runtime.settings.redis_url, job_id],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_WEDGED, done.stderr[-2000:]
    assert "exiting so that the worker is restarted" in done.stderr
    job = runtime.jobs.get(job_id)
    assert job["state"] == "failed" and job["error"]["code"] == "stalled"


def test_a_time_limit_for_an_unknown_job_type_is_refused_at_start(clean_redis):
    settings = WorkerSettings(redis_url=clean_redis, time_limits={"trian": 60})
    with pytest.raises(ValueError, match=r"SSDSTACK_TIME_LIMITS names no job type \['trian'\]"):
        WorkerRuntime("trainer", ["toy-here"], settings, lambda: {}, job_types={"toy": TOY})


def test_a_stage_stopped_by_shutdown_goes_back_to_its_queue_not_failed(runtime, calls):
    def count(ctx, data):
        runtime.shutting_down.set()  # SIGTERM arrives during the stage
        _until_cancelled(ctx)

    runtime.runners["count"] = count
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, None)
    job = runtime.jobs.get(job_id)
    assert job["state"] == "queued" and job["error"] is None and job["worker_losses"] == 0
    assert job["stages"][0]["state"] == "pending" and "shut down" in job["stages"][0]["interrupted"]
    assert runtime.jobs.redis.llen(HERE.queue) == 1 and runtime.jobs.lease_holder(job_id) is None
    assert any("handed back at stage count" in line for line in runtime.jobs.logs(job_id))


def test_shutdown_between_stages_hands_the_next_one_back(runtime, calls):
    def count(ctx, data):
        runtime.shutting_down.set()
        return Counted(count=1)

    runtime.runners["count"] = count
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, None)
    job = runtime.jobs.get(job_id)
    assert calls == [] and job["stage"] == "double"
    assert [s["state"] for s in job["stages"]] == ["succeeded", "pending", "pending"]
    assert runtime.jobs.redis.llen(HERE.queue) == 1


def test_a_cancel_during_shutdown_is_still_a_cancel(runtime):
    def count(ctx, data):
        runtime.shutting_down.set()
        runtime.jobs.request_cancel(ctx.job_id)
        _until_cancelled(ctx)

    runtime.runners["count"] = count
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, None)
    assert runtime.jobs.get(job_id)["state"] == "cancelled" and runtime.jobs.redis.llen(HERE.queue) == 0


def test_a_write_that_says_where_a_job_stands_waits_out_a_redis_outage():
    attempts = []

    def write():
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise redis.ConnectionError("Connection refused")
        return "written"

    assert ride_out(10, write) == "written" and len(attempts) == 3

    def down():
        raise redis.ConnectionError("still down")

    with pytest.raises(redis.ConnectionError, match="still down"):
        ride_out(0.1, down)


def test_an_inferencers_heartbeat_says_what_it_serves(runtime):
    runtime.serving = lambda: {"demo": {"serving": 1, "load_failed": {"version": 2, "error": "bad file", "at": 0}}}
    runtime.heartbeat_once()
    [worker] = live_workers(runtime.jobs.redis)
    assert worker["serving"]["demo"]["load_failed"]["version"] == 2


def test_an_inferencers_heartbeat_counts_its_detects_by_outcome(runtime):
    counts = DetectCounts()
    runtime.detects = counts.snapshot
    for outcome in ("answered", "answered", "expired"):
        counts.add(outcome)
    runtime.heartbeat_once()
    [worker] = live_workers(runtime.jobs.redis)
    assert worker["detects"] == {"answered": 2, "refused": 0, "expired": 1}


def test_a_full_store_fails_the_job_as_insufficient_storage(runtime):
    def count(ctx, data):
        raise OSError(errno.ENOSPC, "No space left on device", "/store/models/m/.tmp/model.onnx")

    runtime.runners["count"] = count
    job_id = _job(runtime)
    runtime.run_job(FakeTask(), job_id, None)
    job = runtime.jobs.get(job_id)
    assert job["state"] == "failed" and job["error"]["code"] == "insufficient_storage"
    assert "no space left" in job["error"]["message"] and "resubmit" in job["error"]["message"]
