"""Multi-node training: the AscendJob the trainer renders, and the wait for its rank 0.

No cluster, Volcano or Ascend operator exists here: the rendered manifest is checked as
data (and against the operator's CRD in tests/deploy), and rank 0 is played by the test.
"""
from __future__ import annotations

import json
import threading

import mindspore as ms
import pytest
import yaml

from ssdstack.errors import InvalidInput, JobFailed
from ssdstack.jobs.context import JobCancelled, LocalContext
from ssdstack.jobs.specs import TrainSpec
from trainer.ascendjob import Cluster, render_ascendjob
from trainer.network import build_ssd
from ssdstack.recipes import get_recipe
from trainer.ranks import RANK_OUTCOME, RANK_WEIGHTS, train_on_ascendjob

CLUSTER = Cluster(image="registry.example/ssdstack/trainer-ascend:0.1.0", namespace="ml", store_pvc="models")
JOB_ID = "0123456789abcdef0123456789abcdef"


class CancelAfterStart(LocalContext):
    """Cancelled as soon as the manifest has been written."""

    def cancelled(self) -> bool:
        return "stage" in self.state


def test_rendered_job_runs_one_rank_per_card_on_the_store(tmp_path):
    job_file = tmp_path / "rank-job.json"
    job, policy = yaml.safe_load_all(render_ascendjob(JOB_ID, CLUSTER, 6, job_file))

    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == ("mindxdl.gitee.com/v1", "AscendJob", "ml")
    assert job["metadata"]["labels"]["framework"] == "mindspore" and job["spec"]["schedulerName"] == "volcano"
    assert job["spec"]["runPolicy"]["schedulingPolicy"]["minAvailable"] == 7
    replicas = job["spec"]["replicaSpecs"]
    assert (replicas["Scheduler"]["replicas"], replicas["Worker"]["replicas"]) == (1, 6)
    for role in ("Scheduler", "Worker"):
        pod = replicas[role]["template"]["spec"]
        [container] = pod["containers"]
        assert container["name"] == "ascend" and container["image"] == CLUSTER.image
        assert container["args"] == ["python", "-m", "trainer.rank_main", str(job_file)]
        assert {"name": "ascendjob-port", "containerPort": 2222} in container["ports"]
        assert {"name": "store", "persistentVolumeClaim": {"claimName": "models"}} in pod["volumes"]
    worker = replicas["Worker"]["template"]["spec"]["containers"][0]["resources"]
    assert worker["limits"]["huawei.com/Ascend910"] == worker["requests"]["huawei.com/Ascend910"] == 1
    assert policy["kind"] == "NetworkPolicy"
    with pytest.raises(ValueError, match="at least 2"):
        render_ascendjob(JOB_ID, CLUSTER, 1, job_file)


def play_rank_0(run_dir, recipe) -> None:
    """Wait for the manifest, then leave weights and an outcome as trainer.rank_main does."""
    for _ in range(600):
        if (run_dir / "ascendjob.yaml").exists():
            break
        threading.Event().wait(0.05)
    ms.save_checkpoint(build_ssd(recipe, num_classes=3), str(run_dir / RANK_WEIGHTS))
    partial = run_dir / "outcome.partial"
    partial.write_text(json.dumps({
        "labels": ["a", "b"], "epochs_run": 2, "resumed_from_epoch": 0, "final_loss": 1.5, "seconds": 9.0,
        "initialised": None, "best": None, "history": []}))
    partial.replace(run_dir / RANK_OUTCOME)  # renamed into place, as trainer.rank_main does


def test_the_job_renders_its_ascendjob_and_publishes_what_rank_0_left(tmp_path):
    spec = TrainSpec(dataset="d", architecture="ssd_lite_mobilenet_v2", nodes=2, devices=4)
    recipe = get_recipe(spec.architecture)
    run_dir = tmp_path / "store" / "jobs" / JOB_ID
    ctx = LocalContext(quiet=True)
    rank_0 = threading.Thread(target=play_rank_0, args=(run_dir, recipe))
    rank_0.start()

    outcome = train_on_ascendjob(spec, recipe, tmp_path / "store", JOB_ID, run_dir, CLUSTER, ctx, poll_s=0.05)
    rank_0.join()

    assert (outcome.epochs_run, outcome.final_loss) == (2, 1.5)
    job = next(yaml.safe_load_all((run_dir / "ascendjob.yaml").read_text()))
    assert job["spec"]["replicaSpecs"]["Worker"]["replicas"] == 8  # 2 nodes x 4 cards
    rank_job = json.loads((run_dir / "rank-job.json").read_text())
    assert (rank_job["device"], rank_job["job_id"], rank_job["spec"]["nodes"]) == ("Ascend", JOB_ID, 2)
    assert any(f"kubectl apply -f {run_dir / 'ascendjob.yaml'}" in line for line in ctx.lines)


@pytest.mark.parametrize("spec_fields, cluster, error, match", [
    ({"device": "CPU"}, CLUSTER, InvalidInput, "Ascend 910"),
    ({}, Cluster(image=""), JobFailed, "SSDSTACK_TRAINER_IMAGE"),
])
def test_what_a_multi_node_job_needs(tmp_path, spec_fields, cluster, error, match):
    spec = TrainSpec(dataset="d", nodes=2, **spec_fields)
    with pytest.raises(error, match=match):
        train_on_ascendjob(spec, get_recipe(spec.architecture), tmp_path, JOB_ID, tmp_path / "run", cluster,
                            LocalContext(quiet=True))


def test_cancel_while_waiting_names_how_to_delete_the_job(tmp_path):
    spec = TrainSpec(dataset="d", nodes=2)
    with pytest.raises(JobCancelled, match="kubectl delete -f"):
        train_on_ascendjob(spec, get_recipe(spec.architecture), tmp_path, JOB_ID, tmp_path / "run", CLUSTER,
                            CancelAfterStart(quiet=True), poll_s=0.01)
