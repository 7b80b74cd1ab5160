"""One data-parallel rank of a train job: ``python -m trainer.rank_main JOB_FILE``.

``trainer.ranks`` writes the job file and starts the ranks through msrun or a rank
table (:mod:`trainer.launcher`). Every rank trains on its shard; rank 0 writes the
checkpoints, runs the evaluations, and leaves the weights to publish and its outcome in
the job's run folder for the launching process, which evaluates, exports and publishes.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mindspore as ms

from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.store import DatasetStore
from ssdstack.jobs.pipeline import JOB_TYPES
from ssdstack.recipes import get_recipe
from trainer.device import set_device
from trainer.launcher import RankContext
from trainer.parallel import parallel_setup
from trainer.ranks import RANK_OUTCOME, RANK_WEIGHTS
from trainer.service import run_dir_for, train_config, train_on_store


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    device, store_dir, work_dir = job["device"], Path(job["store_dir"]), Path(job["work_dir"])
    set_device(device, work_dir)
    rank, group_size = parallel_setup(device)  # msrun's scheduler process ends in here
    ctx = RankContext(rank, job["job_id"])
    spec = JOB_TYPES[job["type"]].spec.model_validate(job["spec"])
    recipe = get_recipe(spec.architecture)
    dataset_dir = DatasetStore(store_dir).path(spec.dataset)
    train_split, val_split = load_coco_split(dataset_dir, "train"), load_coco_split(dataset_dir, "val")
    run_dir = run_dir_for(store_dir, job["job_id"])
    outcome = train_on_store(spec, recipe, train_config(spec, recipe, device), store_dir, run_dir,
                             train_split, val_split, ctx, rank=rank, group_size=group_size)
    if rank == 0:
        partial = run_dir / f".partial-{RANK_WEIGHTS}"
        ms.save_checkpoint(outcome.network, str(partial))
        os.replace(partial, run_dir / RANK_WEIGHTS)
        # Written in full, then renamed: a multi-node job's trainer polls for this file.
        partial_outcome = run_dir / f".partial-{RANK_OUTCOME}"
        partial_outcome.write_text(json.dumps({
            "labels": list(train_split.label_names), "epochs_run": outcome.epochs_run,
            "resumed_from_epoch": outcome.resumed_from_epoch, "resumed_from_step": outcome.resumed_from_step,
            "final_loss": outcome.final_loss,
            "seconds": outcome.seconds, "initialised": outcome.initialised, "best": outcome.best,
            "history": outcome.history, "input_wait_s": outcome.input_wait_s}))
        os.replace(partial_outcome, run_dir / RANK_OUTCOME)


if __name__ == "__main__":
    main(sys.argv[1])
