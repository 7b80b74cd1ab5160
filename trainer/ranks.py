"""Training on several ranks, seen from the train stage: a launch of ``spec.devices`` ranks
on this node (msrun or a rank table, :mod:`trainer.launcher`), or an AscendJob of
``spec.nodes x spec.devices`` ranks on the cluster (:mod:`trainer.ascendjob`).

Every rank runs :mod:`trainer.rank_main` on the job file written here; rank 0 leaves the
trained weights (``final.ckpt``) and its outcome (``outcome.json``) in the job's run
folder on the store, which this process turns back into a :class:`TrainOutcome`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ssdstack.errors import InvalidInput, JobFailed
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.jobs.specs import TrainSpec
from ssdstack.recipes import Recipe
from trainer.ascendjob import Cluster, render_ascendjob
from trainer.launcher import LaunchPlan, free_port, launch, relay_to
from trainer.network import build_ssd
from trainer.train import TrainOutcome
from trainer.transfer import load_pretrained, read_checkpoint

# Where rank 0 of a distributed run leaves what the launching process publishes.
RANK_WEIGHTS = "final.ckpt"
RANK_OUTCOME = "outcome.json"
# A bound on one distributed training run; cancelling stops it sooner.
DISTRIBUTED_TIMEOUT_S = 14 * 24 * 3600


def write_rank_job(job_file: Path, spec: TrainSpec, store_dir: Path, work_dir: Path, job_id: str,
                   device: str) -> None:
    """The file every :mod:`trainer.rank_main` reads: the job and where its ranks work."""
    job_file.write_text(json.dumps({"type": spec.type, "spec": spec.model_dump(), "store_dir": str(store_dir),
                                    "work_dir": str(work_dir), "job_id": job_id, "device": device}))


def train_on_ranks(spec: TrainSpec, recipe: Recipe, device: str, store_dir: Path, work_dir: Path,
                   job_id: str, run_dir: Path, ctx: JobContext) -> TrainOutcome:
    """Run ``spec.devices`` ranks of :mod:`trainer.rank_main` here and wait for them."""
    job_file = work_dir / "rank-job.json"
    write_rank_job(job_file, spec, store_dir, work_dir, job_id, device)
    rank_table = os.environ.get("RANK_TABLE_FILE")
    try:
        plan = LaunchPlan(devices=spec.devices, log_dir=work_dir / "ranks", launcher=spec.launcher,
                          device_target=device, master_port=free_port(),
                          rank_table_file=Path(rank_table) if rank_table else None)
    except ValueError as error:
        raise JobFailed(f"cannot launch {spec.devices} ranks: {error}") from error
    ctx.log(f"launching {spec.devices} data-parallel ranks with {spec.launcher}; logs in {plan.log_dir}")
    launch(plan, ["-m", "trainer.rank_main", str(job_file)], timeout_s=DISTRIBUTED_TIMEOUT_S,
           on_line=relay_to(ctx), cancelled=ctx.cancelled)
    return rank_outcome(recipe, run_dir)


def train_on_ascendjob(spec: TrainSpec, recipe: Recipe, store_dir: Path, job_id: str, run_dir: Path,
                       cluster: Cluster | None, ctx: JobContext, poll_s: float = 10.0) -> TrainOutcome:
    """Render the AscendJob for ``spec.nodes x spec.devices`` ranks into ``run_dir``, then
    wait (cancellable, at most DISTRIBUTED_TIMEOUT_S) for rank 0's weights there."""
    if spec.device not in ("auto", "Ascend"):
        raise InvalidInput(f"multi-node training runs on Ascend 910 nodes (an AscendJob), not on {spec.device}")
    if cluster is None or not cluster.image:
        raise JobFailed("multi-node training needs the Ascend trainer image its pods run: set "
                        "SSDSTACK_TRAINER_IMAGE on the trainer")
    run_dir.mkdir(parents=True, exist_ok=True)
    job_file = run_dir / "rank-job.json"
    write_rank_job(job_file, spec, store_dir, Path(f"/tmp/ssdstack-work/{job_id}"), job_id, "Ascend")
    manifest = run_dir / "ascendjob.yaml"
    manifest.write_text(render_ascendjob(job_id, cluster, spec.nodes * spec.devices, job_file))
    ctx.log(f"{spec.nodes * spec.devices} ranks on {spec.nodes} nodes run as an AscendJob: submit it with "
            f"`kubectl apply -f {manifest}`; this job waits for rank 0's weights")
    ctx.progress(stage="waiting_for_ascendjob", manifest=str(manifest))
    deadline = time.monotonic() + DISTRIBUTED_TIMEOUT_S
    while not (run_dir / RANK_OUTCOME).exists():
        if ctx.cancelled():
            raise JobCancelled(f"cancelled while waiting for the AscendJob; delete it with "
                               f"`kubectl delete -f {manifest}`")
        if time.monotonic() > deadline:
            raise JobFailed(f"the AscendJob gave no weights within {DISTRIBUTED_TIMEOUT_S} s")
        time.sleep(poll_s)
    return rank_outcome(recipe, run_dir)


def rank_outcome(recipe: Recipe, run_dir: Path) -> TrainOutcome:
    """What rank 0 left in ``run_dir``: the trained network and its outcome."""
    outcome = json.loads((run_dir / RANK_OUTCOME).read_text())
    network = build_ssd(recipe, len(outcome.pop("labels")) + 1)
    load_pretrained(network, read_checkpoint(run_dir / RANK_WEIGHTS), head_filter="none")
    return TrainOutcome(network=network, **outcome)
