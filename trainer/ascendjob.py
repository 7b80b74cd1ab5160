"""Multi-node training on Ascend, handed to the cluster's engine: an ``AscendJob`` of the
Ascend operator, gang-scheduled by Volcano (../shared/ASCEND.md, "Distributed MindSpore").

A train job with ``nodes > 1`` writes the rank job file and the rendered AscendJob into
its run folder on the shared store, and waits there for rank 0's weights; someone with
access to the cluster submits the manifest (``kubectl apply -f``). The ranks are
``trainer.rank_main`` processes, one per card, as ``msrun`` starts them on one node.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).with_name("ascendjob.yaml")


@dataclass(frozen=True)
class Cluster:
    """Where the AscendJob's pods run: the Ascend trainer image, the namespace and the
    model store's PersistentVolumeClaim, which the pods mount at the trainer's store path."""

    image: str
    namespace: str = "ssdstack"
    store_pvc: str = "ssdstack-store"


def render_ascendjob(job_id: str, cluster: Cluster, workers: int, job_file: Path) -> str:
    """The AscendJob (and the NetworkPolicy its pods need) as YAML text: ``workers`` Worker
    pods of one card each, running ``trainer.rank_main job_file``."""
    if workers < 2:
        raise ValueError(f"an AscendJob needs at least 2 workers, got {workers}")
    return TEMPLATE.read_text().format(job_id=job_id, namespace=cluster.namespace, image=cluster.image,
                                       workers=workers, min_available=workers + 1,
                                       store_pvc=cluster.store_pvc, job_file=job_file)
