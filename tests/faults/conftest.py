"""The fault-injection suite's stack: Redis (append-only file), the three workers under their
supervisor and the gateway, as real processes on 127.0.0.1, with the broker's default
visibility timeout (6 h) and leases scaled down (heartbeat 1 s, TTL 6 s) so that recovery is
seen within the run. One pipeline job, with three faults injected into it, trains the model
the other scenarios serve, convert and evaluate.

Every figure a scenario measures goes to ``var/fault-times.json`` (scenario -> seconds), for
docs/reliability.md. The fixtures live as long as the scenarios' module, so that the
stacks are gone before other test files run.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from cli.client import Client
from cli.demo import upload_synthetic
from cli.localstack import LocalStack
from cli.processes import free_port
from faults import API_KEY, FAULT_ENV, LIVENESS_MAX_AGE, MODEL, Timeline, liveness_ok, job_or_none, log_has
from polling import wait_for
from redis_acl import denials

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMES_FILE = REPO_ROOT / "var" / "fault-times.json"


@pytest.fixture(scope="module")
def times():
    figures: dict[str, float] = {}
    yield figures
    TIMES_FILE.parent.mkdir(parents=True, exist_ok=True)
    TIMES_FILE.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("faults"), redis_port=free_port(), gateway_port=free_port(),
                       api_key=API_KEY, extra_env=FAULT_ENV, infer_concurrency=2)
    try:
        stack.up(wait_ready=True, timeout=180)
        yield stack
        refused = denials(stack.redis())
        assert not refused, f"Redis refused commands the services sent (k8s/base/redis-users.acl): {refused}"
    finally:
        stack.down()


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory):
    """Redis, a converter and an inferencer at the shipped timings (heartbeat 5 s, lease TTL
    30 s), started with the module so that they have been up for longer than a TTL (the
    reaper's start-up wait) when a scenario uses them."""
    stack = LocalStack(tmp_path_factory.mktemp("defaults"), redis_port=free_port(), gateway_port=free_port(),
                       api_key=API_KEY, extra_env={"SSDSTACK_INFER_BACKEND": "onnxruntime"})
    try:
        stack.start("redis")
        stack.wait_redis()
        stack.start("converter")
        stack.start("inferencer")
        yield stack
        refused = denials(stack.redis())
        assert not refused, f"Redis refused commands the services sent (k8s/base/redis-users.acl): {refused}"
    finally:
        stack.down()


@pytest.fixture(scope="module")
def client(stack):
    client = Client(f"http://127.0.0.1:{stack.gateway_port}", API_KEY, timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def dataset(client: Client, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("data")
    upload_synthetic(client, folder, "faults", images=96, classes=2, seed=3)
    return "faults"


@pytest.fixture(scope="module")
def pipeline(stack: LocalStack, default_stack: LocalStack, client: Client, dataset: str, times: dict) -> Timeline:
    """A pipeline job through three faults: the trainer is stopped (SIGTERM) in the middle of
    its first epoch, then killed (kill -9) after its second checkpoint; Redis is killed
    (kill -9) while the job is past training and stays down for longer than the workers'
    liveness window, then restarted from its append-only file. (``default_stack`` starts
    first, to be warm by the time its scenario runs.)"""
    spec = {"type": "pipeline", "dataset": dataset, "model": MODEL, "architecture": "ssd_lite_mobilenet_v2",
            "epochs": 4, "batch_size": 8, "lr": 0.05, "checkpoint_every": 1}
    line = Timeline(client.submit(spec)["id"])
    job_id = line.job_id

    # 1. SIGTERM mid-epoch: the trainer checkpoints the step it reached and hands the job back.
    wait_for(lambda: (client.job(job_id)["progress"].get("step") or 0) >= 3, 300, "three steps of epoch 1")
    line.stopped_pid = stack.crash("trainer", signal.SIGTERM)
    line.mark("sigterm")
    line.handed_back = wait_for(lambda: log_has(client, job_id, "handed back at stage train"), 120,
                                "the trainer to hand the job back")
    line.mark("handed_back")
    # Celery's warm shutdown ends with status 0, which its supervisor does not restart.
    wait_for(lambda: not stack.status()["trainer"]["running"], 60, "the stopped trainer and its supervisor to exit")
    stack.start("trainer")
    wait_for(lambda: log_has(client, job_id, "resuming from epoch-0000_"), 300, "the resume from the stop checkpoint")
    line.mark("resumed_after_sigterm")

    # 2. kill -9 after the second epoch's checkpoint: the reaper sends the stage again.
    wait_for(lambda: log_has(client, job_id, "checkpoint after epoch 2"), 600, "the checkpoint of epoch 2")
    line.killed_pid = stack.crash("trainer")
    line.mark("kill_trainer")
    wait_for(lambda: log_has(client, job_id, "reaper: stage train sent again"), 120, "the reaper")
    line.mark("reaped")
    wait_for(lambda: log_has(client, job_id, "resuming from epoch-0002.ckpt"), 300, "the resume from epoch 2")
    line.mark("resumed_after_kill")

    # 3. Redis killed past training, down for twice the liveness window, restarted.
    wait_for(lambda: (client.job(job_id)["stage"] or "") in ("convert", "evaluate", "deploy"), 600,
             "the job to leave the trainer")
    workers = ("trainer", "converter", "inferencer", "evaluator")
    line.pids_before_outage = {name: stack.supervised_pid(name) for name in workers}
    stack.kill("redis")
    line.mark("kill_redis")
    outage_end = time.monotonic() + 2 * LIVENESS_MAX_AGE
    while time.monotonic() < outage_end:  # the probes Kubernetes would run, all through the outage
        line.liveness_failures += [name for name in workers if not liveness_ok(stack, name)]
        time.sleep(0.5)
    stack.start("redis")
    stack.wait_redis(timeout=30)
    line.mark("redis_back")
    line.final = wait_for(lambda: _finished(client, job_id), 900, "the pipeline to finish")
    line.mark("finished")
    line.pids_after_outage = {name: stack.supervised_pid(name) for name in workers}
    times.update({"trainer_sigterm_to_handed_back_s": line.between("sigterm", "handed_back"),
                  "trainer_kill9_to_reaped_s": line.between("kill_trainer", "reaped"),
                  "trainer_kill9_to_resumed_s": line.between("kill_trainer", "resumed_after_kill"),
                  "redis_outage_s": line.between("kill_redis", "redis_back"),
                  "redis_back_to_pipeline_done_s": line.between("redis_back", "finished")})
    return line


def _finished(client: Client, job_id: str) -> dict | None:
    job = job_or_none(client, job_id)
    return job if job and job["state"] in ("succeeded", "failed", "cancelled") else None
