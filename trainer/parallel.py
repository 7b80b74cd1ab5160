"""Inside one data-parallel rank: joining the group and averaging gradients.

:func:`parallel_setup` joins the group and :func:`gradient_reducer` gives the cell that
averages gradients across ranks. A functional train step (``ops.value_and_grad`` +
optimiser) must call it itself: the ``DATA_PARALLEL`` context alone inserts no all-reduce
there (measured on CPU with MindSpore 2.8: without the reducer the ranks' weights
diverge). :mod:`trainer.launcher` starts the ranks.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import mindspore as ms
from mindspore import nn
from mindspore.communication import get_group_size, get_rank, init


def launched_distributed(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside a rank started by msrun / the dynamic cluster, or by a rank table."""
    if "MS_ROLE" in environ:
        return True
    return "RANK_TABLE_FILE" in environ and int(environ.get("RANK_SIZE", "1")) > 1


def parallel_setup(device_target: str) -> tuple[int, int]:
    """Join the data-parallel group when this process is a launched rank: ``(rank, group_size)``;
    ``(0, 1)`` otherwise. ``init()`` picks the backend from the device: HCCL on Ascend, NCCL
    on GPU, MCCL on CPU.

    Call it first thing, before loading data or building cells: msrun also runs the entry
    as its scheduler (``MS_ROLE=MS_SCHED``), and there ``init()`` serves the cluster and
    ends the process when the job ends instead of returning.
    """
    if not launched_distributed():
        return 0, 1
    # service.py chooses the device with set_context; keep to the same (deprecated) API.
    if ms.get_context("device_target") != device_target:
        ms.set_context(device_target=device_target)
    if device_target == "Ascend" and "MS_ROLE" not in os.environ and "DEVICE_ID" in os.environ:
        # rank table: this process owns card DEVICE_ID (msrun assigns cards itself).
        ms.set_context(device_id=int(os.environ["DEVICE_ID"]))
    init()
    ms.reset_auto_parallel_context()
    # Harmless for the functional step (which reduces through gradient_reducer) and what
    # TrainOneStepCell / Model need to reduce by themselves.
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return get_rank(), get_group_size()


def gradient_reducer(parameters, group_size: int):
    """The cell that averages a gradient tuple over all ranks, or ``None`` for one process.

    In a functional train step apply it right after ``value_and_grad`` and before the
    overflow check, so that every rank sees the same gradients and takes the same branch.
    """
    if group_size <= 1:
        return None
    return nn.DistributedGradReducer(parameters, mean=True, degree=group_size)
