"""One architecture's training figures at its real input size, in a process of its own so
that its peak memory is its own: ``python -m bench.train_probe ARCH DATASET_DIR``.

Prints one JSON line: the data pipeline's images/s alone, then the train step's time and
images/s (the first step, which compiles the graph, reported apart), and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from itertools import islice
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from ssdstack.datasets.coco import load_coco_split
from ssdstack.recipes import get_recipe
from trainer.data import TrainBatches
from trainer.network import build_ssd
from trainer.service import ZOO_CLIP_NORM
from trainer.ssd import SsdLoss
from trainer.train import _parameter_groups
from trainer.train_step import TrainStep


def data_images_per_s(batches: TrainBatches, count: int, batch_size: int) -> float:
    """Images/s of decode + augment + target encoding alone, as training consumes them."""
    iterator = batches.epoch(0)
    next(iterator)  # the producer thread's start-up
    started = time.perf_counter()
    taken = sum(1 for _ in islice(iterator, count))
    return round(taken * batch_size / (time.perf_counter() - started), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("architecture")
    parser.add_argument("dataset")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--data-batches", type=int, default=6)
    args = parser.parse_args()

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", save_graphs_path=tempfile.mkdtemp(prefix="probe-"))
    recipe = get_recipe(args.architecture)
    split = load_coco_split(Path(args.dataset), "train")
    batches = TrainBatches(split, recipe, args.batch_size, seed=0)
    data_ips = data_images_per_s(batches, args.data_batches, args.batch_size)

    ms.set_seed(0)
    network = build_ssd(recipe, len(split.label_names) + 1)
    optimizer = nn.Momentum(_parameter_groups(network, recipe.train.weight_decay), 1e-3, 0.9)
    loss_net = SsdLoss(network, gamma=recipe.focal_gamma, alpha=recipe.focal_alpha)
    step = TrainStep(loss_net, optimizer, recipe.train.loss_scale,
                     clip_global_norm=ZOO_CLIP_NORM if recipe.clip_global_norm else None)
    step.set_train(True)
    batch = next(iter(batches.epoch(0)))
    inputs = (Tensor(batch.images), Tensor(batch.loc), Tensor(batch.labels), Tensor(batch.num_positives))
    started = time.perf_counter()
    loss, _ = step(*inputs)
    loss.asnumpy()
    first_s = time.perf_counter() - started
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        loss, _ = step(*inputs)
        loss.asnumpy()
        times.append(time.perf_counter() - started)
    step_s = float(np.median(times))
    train_ips = args.batch_size / step_s
    print(json.dumps({
        "architecture": args.architecture, "input_size": recipe.image_size, "priors": recipe.priors.num_priors(),
        "batch_size": args.batch_size, "first_step_s": round(first_s, 2), "step_s": round(step_s, 3),
        "steps_timed": len(times), "train_images_per_s": round(train_ips, 2), "loss": float(loss.asnumpy()),
        "data_images_per_s": data_ips, "data_over_train": round(data_ips / train_ips, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
