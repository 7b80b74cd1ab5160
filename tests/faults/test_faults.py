"""Faults injected into the real stack: each scenario asserts the mechanism that recovered
(the stage handed back, the reaper's re-send, the resume from a checkpoint, one version
published) and records how long it took in ``var/fault-times.json``; none asserts a time."""
from __future__ import annotations

import io
import shutil
import subprocess
import threading
import time

import httpx
import pytest
import redis
from PIL import Image

from cli.client import Client
from cli.localstack import LocalStack
from cli.processes import find_redis_server, free_port, pid_alive
from cli.backup import backup, restore
from faults import API_KEY, DETECT_TIMEOUT_S, FAULT_ENV, MODEL, SentinelGroup, job_or_none, log_has, pings
from polling import wait_for
from ssdstack.celery_app import create_app
from ssdstack.jobs.pipeline import JOB_TYPES, send_stage
from ssdstack.jobs.records import JobStore
from ssdstack.model_store import ModelStore
from ssdstack.settings import WorkerSettings

pytestmark = pytest.mark.slow


def _finished(client: Client, job_id: str, timeout: float) -> dict:
    return wait_for(lambda: (job := job_or_none(client, job_id)) and job["state"] in (
        "succeeded", "failed", "cancelled") and job, timeout, f"job {job_id} to finish")


def _jobs(stack: LocalStack) -> JobStore:
    return JobStore.from_url(stack.admin_url)


# -- one pipeline through three faults (tests/faults/conftest.py) ---------------------------

def test_the_pipeline_survives_its_faults_and_publishes_one_version(pipeline, client):
    job = pipeline.final
    assert job["state"] == "succeeded", job["error"]
    assert [s["state"] for s in job["stages"]] == ["succeeded"] * 5
    versions = client.get(f"/v1/models/{MODEL}/versions")["versions"]
    assert [v["version"] for v in versions if v["lineage"]["job_id"] == job["id"]] == [job["result"]["version"]]
    assert job["result"]["deployed"]["version"] == job["result"]["version"]


def test_sigterm_hands_the_stage_back_after_checkpointing_the_step_it_reached(pipeline, client):
    assert pipeline.handed_back and not pid_alive(pipeline.stopped_pid)
    lines = client.get(f"/v1/jobs/{pipeline.job_id}/logs")["lines"]
    checkpoint = next(line for line in lines if "on stopping" in line)
    step = int(checkpoint.split("checkpoint at step ")[1].split()[0])
    assert step >= 3
    assert any(f"resuming from epoch-0000_{step:05d}.ckpt after epoch 0, step {step} of the next" in line
               for line in lines)
    assert pipeline.final["worker_losses"] == 1  # the SIGTERM is no lost worker; the kill -9 is


def test_a_killed_trainer_is_reaped_and_its_job_resumes_from_its_checkpoint(pipeline, client):
    lines = client.get(f"/v1/jobs/{pipeline.job_id}/logs")["lines"]
    [reaped] = [line for line in lines if "reaper: stage train sent again" in line]
    assert f":{pipeline.killed_pid})" in reaped and "attempt 2 of 3" in reaped
    training = pipeline.final["result"]["training"]
    assert (training["resumed_from_epoch"], training["resumed_from_step"]) == (2, 0)


# Celery 5.7 / kombu 5.7: an ack still pending when Redis drops is run on the closed
# channel, and the consumer ends on this AttributeError ("Unrecoverable error", exit 1).
# Its supervisor restarts the worker; no job is lost (docs/reliability.md).
KOMBU_CLOSED_CHANNEL_ACK = "Unrecoverable error: AttributeError(\"'NoneType' object has no attribute 'hostname'\")"


def test_a_redis_outage_past_the_liveness_window_restarts_no_worker(pipeline, stack):
    assert pipeline.liveness_failures == []  # no liveness probe would have restarted any worker
    assert None not in pipeline.pids_before_outage.values()
    restarted = [name for name, pid in pipeline.pids_before_outage.items() if pipeline.pids_after_outage[name] != pid]
    for name in restarted:  # the only other way a worker may end during the outage: kombu's crash above
        assert KOMBU_CLOSED_CHANNEL_ACK in stack.log_path(name).read_text(), f"{name} restarted for another reason"


# -- scenarios on the trained model ---------------------------------------------------------

def test_a_job_whose_message_was_lost_is_sent_by_the_reaper(pipeline, stack, client, times):
    version = pipeline.final["result"]["version"]
    spec = {"type": "evaluate", "model": MODEL, "version": version, "dataset": None, "split": "val"}
    started = time.monotonic()
    job_id = _jobs(stack).create("evaluate", spec, JOB_TYPES["evaluate"].stage_names)["id"]  # no message sent
    job = _finished(client, job_id, 300)
    times["lost_message_to_evaluated_s"] = round(time.monotonic() - started, 1)
    assert job["state"] == "succeeded", job["error"]
    assert log_has(client, job_id, "its message was lost before a worker took it")


def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(pipeline, stack, client, dataset, times):
    job_id = client.submit({"type": "train", "dataset": dataset, "model": "poison", "epochs": 200,
                            "batch_size": 8})["id"]
    killed = []
    started = time.monotonic()

    def held_by_the_trainer() -> bool:
        # The running trainer process itself holds the job: a job re-sent by the reaper
        # reads "running" (and keeps its last progress) before a new trainer takes it.
        job, pid = job_or_none(client, job_id), stack.supervised_pid("trainer")
        return bool(job and pid and job["state"] == "running" and job["worker_losses"] == len(killed)
                    and str(job.get("worker")).endswith(f":{pid}") and pid not in killed)

    for _ in range(3):  # SSDSTACK_MAX_ATTEMPTS: each time the job runs, its worker dies (as an OOM kill would)
        wait_for(held_by_the_trainer, 300, "the job to run again")
        killed.append(stack.crash("trainer"))
    job = _finished(client, job_id, 300)
    times["poison_job_three_kills_to_failed_s"] = round(time.monotonic() - started, 1)
    assert job["state"] == "failed" and job["error"]["code"] == "worker_lost", job["error"]
    assert "took its worker down 3 times" in job["error"]["message"]
    assert job["worker_losses"] == 3 and len(set(killed)) == 3
    wait_for(lambda: stack.supervised_pid("trainer"), 120, "the trainer to be restarted")


def test_cancelling_a_job_whose_worker_is_gone_ends_it(pipeline, stack, client, dataset, times):
    job_id = client.submit({"type": "train", "dataset": dataset, "model": "orphan", "epochs": 200,
                            "batch_size": 8})["id"]
    wait_for(lambda: (job_or_none(client, job_id) or {}).get("state") == "running", 300, "the job to run")
    stack.kill("trainer")  # worker and supervisor: nothing will run the job again
    started = time.monotonic()
    client.cancel(job_id)
    job = _finished(client, job_id, 120)
    times["orphan_cancel_to_cancelled_s"] = round(time.monotonic() - started, 1)
    assert job["state"] == "cancelled" and "no live worker" in job["error"]["message"]
    stack.start("trainer")


# Seconds a load thread waits after an error answer without Retry-After. Without a pause,
# four threads getting instant 503s while no inferencer is up would pass the gateway's
# rate limit (100/s per key) and spend the minute's budget the next scenarios need.
RETRY_PAUSE_S = 0.2


def test_detect_under_load_answers_every_request_while_the_inferencer_is_killed(pipeline, stack, times):
    buffer = io.BytesIO()
    Image.new("RGB", (96, 72), (120, 40, 200)).save(buffer, "JPEG")
    image = buffer.getvalue()
    outcomes: list[tuple[int, float, str]] = []
    killed = threading.Event()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{stack.gateway_port}", headers={"X-API-Key": API_KEY},
                          timeout=DETECT_TIMEOUT_S + 20) as http:
            for _ in range(200):  # bounded in count, and by the stop below
                if stop.is_set():
                    return
                began = time.monotonic()
                response = http.post("/v1/detect", files={"file": ("a.jpg", image)})
                message = "" if response.status_code == 200 else response.json()["error"]["message"]
                outcomes.append((response.status_code, time.monotonic() - began, message))
                if response.status_code != 200:  # as a client should: wait before asking again
                    stop.wait(float(response.headers.get("Retry-After", RETRY_PAUSE_S)))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: sum(code == 200 for code, _, _ in outcomes) >= 8, 60, "detections before the kill")
        before = len(outcomes)
        old = stack.crash("inferencer")
        killed.set()
        started = time.monotonic()
        wait_for(lambda: (pid := stack.supervised_pid("inferencer")) and pid != old
                 and sum(code == 200 for code, _, _ in outcomes[before:]) >= 8, 180,
                 "detections from the restarted inferencer")
        times["inferencer_kill9_to_serving_again_s"] = round(time.monotonic() - started, 1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=DETECT_TIMEOUT_S + 30)
    assert not any(thread.is_alive() for thread in threads), "a detect request hung"
    failures = [(code, message) for code, _, message in outcomes if code != 200]
    assert all(code in (503, 504) and message for code, message in failures), failures
    assert max(seconds for _, seconds, _ in outcomes) <= DETECT_TIMEOUT_S + 5
    times["detect_requests_failed_during_inferencer_kill"] = len(failures)
    times["detect_requests_during_inferencer_kill"] = len(outcomes)


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(pipeline, stack, client, times):
    deployed = pipeline.final["result"]["version"]
    export = _finished(client, client.submit({"type": "export", "model": MODEL, "version": deployed,
                                              "formats": ["ONNX"]})["id"], 600)
    assert export["state"] == "succeeded", export["error"]
    new = export["result"]["version"]
    convert = _finished(client, client.submit({"type": "convert", "model": MODEL, "version": new,
                                               "backend": "onnxruntime"})["id"], 300)
    assert convert["state"] == "succeeded", convert["error"]
    artefact = client.get(f"/v1/models/{MODEL}/versions/{new}")["artefacts"]["serving_onnxruntime"]["file"]
    served = stack.store_dir / "models" / MODEL / str(new) / artefact
    intact = served.read_bytes()
    served.write_bytes(b"damaged on the volume")
    try:
        _deploy_a_version_that_fails_to_load(client, deployed, new, times)
    finally:
        served.write_bytes(intact)  # the other scenarios (the backup's check) see a sound store


def _deploy_a_version_that_fails_to_load(client: Client, deployed: int, new: int, times: dict) -> None:
    """Deploy ``new`` (its serving artefact damaged) over ``deployed``, watch ``deployed`` keep
    serving and the failure show, then deploy ``deployed`` back."""
    deploy = f"/v1/models/{MODEL}/versions/{new}/deploy"
    stale = client.http.post(deploy, headers={"If-Match": str(new)})  # the caller thinks v{new} is deployed
    assert stale.status_code == 412 and stale.json()["error"]["details"] == {"deployed": deployed}
    assert client.http.post(deploy, headers={"If-Match": str(deployed)}).status_code == 200
    started = time.monotonic()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, "JPEG")
    answers = [client.detect(buffer.getvalue()) for _ in range(5)]
    assert {answer["version"] for answer in answers} == {deployed}  # the old version keeps serving

    def load_failure_reported() -> dict | None:
        for worker in client.get("/v1/backends")["workers"]:
            failed = worker.get("serving", {}).get(MODEL, {}).get("load_failed")
            if failed and failed["version"] == new:
                return failed
        return None

    failed = wait_for(load_failure_reported, 60, "the inferencer's heartbeat to report the failed load")
    times["failed_load_reported_s"] = round(time.monotonic() - started, 1)
    assert "sha256" in failed["error"]
    metrics = client.http.get("/metrics").text
    assert f'model="{MODEL}"}} 1' in metrics
    client.http.post(f"/v1/models/{MODEL}/versions/{deployed}/deploy", headers={"If-Match": str(new)})
    assert client.detect(buffer.getvalue())["version"] == deployed


def test_deploy_is_refused_when_no_live_inferencer_can_serve_it(pipeline, stack, client):
    stack.stop("inferencer")
    try:  # a stopped worker counts as live until its heartbeat expires (one TTL at most)
        wait_for(lambda: not any("infer" in w["queues"] for w in client.get("/v1/backends")["workers"]), 60,
                 "the inferencer's heartbeat to end")
        refused = client.http.post(f"/v1/models/{MODEL}/versions/{pipeline.final['result']['version']}/deploy")
        assert refused.status_code == 409 and "no live inferencer" in refused.json()["error"]["message"]
    finally:
        stack.start("inferencer")
        wait_for(lambda: any("infer" in w["queues"] for w in client.get("/v1/backends")["workers"]), 120,
                 "the inferencer to be back")


def test_a_converter_killed_mid_convert_at_default_timings_is_reaped(pipeline, stack, default_stack, times):
    """Heartbeat 5 s, lease TTL 30 s, visibility timeout 6 h, as shipped: the reaper's bound
    is one TTL and two heartbeats after the kill."""
    shutil.copytree(stack.store_dir / "models", default_stack.store_dir / "models", dirs_exist_ok=True)
    version = pipeline.final["result"]["version"]
    _as_not_converted(ModelStore(default_stack.store_dir), MODEL, version)
    jobs = _jobs(default_stack)
    spec = {"type": "convert", "model": MODEL, "version": version, "backend": "onnxruntime", "tolerance": 1e-4}
    job_id = jobs.create("convert", spec, JOB_TYPES["convert"].stage_names)["id"]
    send_stage(create_app(WorkerSettings(redis_url=default_stack.admin_url)), jobs, job_id,
               JOB_TYPES["convert"], 0)
    wait_for(lambda: jobs.lease_holder(job_id), 120, "the converter to take the job", interval=0.01)
    killed = default_stack.crash("converter")
    started = time.monotonic()
    wait_for(lambda: any("reaper: stage convert sent again" in line for line in jobs.logs(job_id)), 120,
             "the reaper")
    times["default_timings_converter_kill9_to_resent_s"] = round(time.monotonic() - started, 1)
    job = wait_for(lambda: (job := jobs.get(job_id))["state"] in ("succeeded", "failed") and job, 240,
                   "the convert job to finish")
    times["default_timings_converter_kill9_to_converted_s"] = round(time.monotonic() - started, 1)
    assert job["state"] == "succeeded", job["error"]
    assert job["worker_losses"] == 1 and any(f":{killed}) died" in line for line in jobs.logs(job_id))


def _as_not_converted(store: ModelStore, name: str, version: int) -> None:
    """Make a copied version what export leaves: no serving artefact yet (a converted one is
    not converted again)."""
    served = store.version_dir(name, version) / store.manifest(name, version)["artefacts"]["serving_onnxruntime"]["file"]

    def drop(manifest: dict) -> None:
        manifest["serving"] = {}
        del manifest["artefacts"]["serving_onnxruntime"]

    store.update_manifest(name, version, drop)
    served.unlink()


def test_a_backup_of_the_running_stack_restores_whole(pipeline, stack, tmp_path):
    live = stack.redis()
    summary = backup(stack.store_dir, live, tmp_path / "backup")
    assert summary["problems"] == [] and summary["redis_keys_left_out"] > 0  # heartbeats at least
    port = free_port()
    target = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        wait_for(lambda: pings(client), 30, "the empty Redis")
        restored = restore(tmp_path / "backup", tmp_path / "restored-store", client)
        assert restored["problems"] == []
        again = JobStore(redis.Redis(port=port, decode_responses=True))
        assert again.get(pipeline.job_id)["result"] == pipeline.final["result"]
        version = pipeline.final["result"]["version"]
        assert ModelStore(tmp_path / "restored-store").verify(MODEL, version) == []
    finally:
        target.terminate()
        target.wait(10)


def test_a_sentinel_failover_mid_training_loses_no_job(stack, dataset, tmp_path, times):
    """Master, replica and Sentinel; the trainer and gateway reach Redis through Sentinel, and
    the master is killed (kill -9) in the middle of training."""
    group = SentinelGroup(tmp_path / "sentinel")
    failover = LocalStack(tmp_path / "failover", redis_port=free_port(), gateway_port=free_port(), api_key=API_KEY,
                          extra_env=dict(FAULT_ENV, SSDSTACK_REDIS_URL=group.url))
    shutil.copytree(stack.store_dir / "datasets", failover.store_dir / "datasets")
    client = Client(f"http://127.0.0.1:{failover.gateway_port}", API_KEY, timeout=60)
    try:
        group.start()
        failover.start("trainer")
        failover.start("gateway")
        wait_for(lambda: _answers_http(client), 60, "the gateway")
        job_id = client.submit({"type": "train", "dataset": dataset, "model": "failover",
                                "architecture": "ssd_lite_mobilenet_v2", "epochs": 6, "batch_size": 8})["id"]
        wait_for(lambda: ((job_or_none(client, job_id) or {}).get("progress", {}).get("step") or 0) >= 2, 300,
                 "training to run")
        trainer = failover.supervised_pid("trainer")
        killed = group.kill_master()
        started = time.monotonic()
        wait_for(lambda: _promoted(group, killed), 60, "Sentinel to promote the replica")
        times["sentinel_master_kill9_to_promoted_s"] = round(time.monotonic() - started, 1)
        job = _finished(client, job_id, 600)
        times["sentinel_master_kill9_to_job_done_s"] = round(time.monotonic() - started, 1)
        assert job["state"] == "succeeded", job["error"]
        assert failover.supervised_pid("trainer") == trainer  # the trainer rode it out, not restarted
        assert client.get(f"/v1/models/failover/versions/{job['result']['version']}")["lineage"]["job_id"] == job_id
    finally:
        client.close()
        failover.down()
        group.stop()


def _answers_http(client: Client) -> bool:
    try:
        return client.http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _promoted(group: SentinelGroup, killed: str) -> bool:
    try:
        return group.master_port() != group.ports[killed]
    except redis.RedisError:  # Sentinel busy electing: ask again
        return False
