"""The training loop: MindSpore SSD on a COCO split, with checkpoints and resume.

Checkpoints live in ``run_dir/checkpoints`` (on the shared store), hold the whole train
step (weights, optimiser moments, global step, loss scale) and a small json beside them,
so a job delivered again after a worker crash continues from the last completed epoch.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssdstack.datasets.coco import CocoSplit
from ssdstack.errors import JobFailed
from ssdstack.jobs.context import JobCancelled, JobContext
from trainer.data import TrainBatches
from trainer.recipes import Recipe
from trainer.schedule import warmup_cosine

CHECKPOINTS_KEPT = 2


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: float
    weight_decay: float
    momentum: float
    loss_scale: float
    checkpoint_every: int
    seed: int


@dataclass
class TrainOutcome:
    network: object          # trainer.ssd.SSD with trained weights
    epochs_run: int
    resumed_from_epoch: int  # 0 when training started fresh
    final_loss: float
    seconds: float


def _checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """``(path, completed_epochs)`` of the newest complete checkpoint, if any."""
    marker = _checkpoint_dir(run_dir) / "latest.json"
    if not marker.exists():
        return None
    info = json.loads(marker.read_text())
    path = _checkpoint_dir(run_dir) / info["file"]
    return (path, int(info["epochs"])) if path.exists() else None


def _save_checkpoint(train_step, run_dir: Path, epochs_done: int) -> None:
    import mindspore as ms

    folder = _checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epochs_done:04d}.ckpt"
    # save_checkpoint appends ".ckpt" to any other suffix; write under a hidden name, then rename.
    partial = folder / f".partial-{name}"
    ms.save_checkpoint(train_step, str(partial))
    os.replace(partial, folder / name)
    marker_tmp = folder / ".latest.json.tmp"
    marker_tmp.write_text(json.dumps({"file": name, "epochs": epochs_done}))
    os.replace(marker_tmp, folder / "latest.json")
    for old in sorted(folder.glob("epoch-*.ckpt"))[:-CHECKPOINTS_KEPT]:
        old.unlink()


def _parameter_groups(network, weight_decay: float) -> list[dict]:
    """Decay convolution weights only; BatchNorm and biases are left undecayed."""
    params = network.trainable_params()
    decayed = [p for p in params if p.name.endswith(".weight") and len(p.shape) == 4]
    others = [p for p in params if not (p.name.endswith(".weight") and len(p.shape) == 4)]
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]


def train_network(recipe: Recipe, split: CocoSplit, config: TrainConfig, run_dir: Path, ctx: JobContext) -> TrainOutcome:
    """Train from scratch, or resume from ``run_dir``'s latest checkpoint."""
    import mindspore as ms
    from mindspore import Tensor, nn

    from trainer.network import build_ssd
    from trainer.ssd import SsdLoss
    from trainer.train_step import TrainStep

    ms.set_seed(config.seed)
    num_classes = len(split.label_names) + 1
    network = build_ssd(recipe, num_classes)
    batches = TrainBatches(split, recipe, config.batch_size, config.seed)
    steps_per_epoch = batches.steps_per_epoch
    total_steps = steps_per_epoch * config.epochs
    lr = warmup_cosine(config.lr, total_steps, int(config.warmup_epochs * steps_per_epoch))
    optimizer = nn.Momentum(_parameter_groups(network, config.weight_decay), Tensor(lr), config.momentum)
    train_step = TrainStep(SsdLoss(network), optimizer, config.loss_scale)
    train_step.set_train(True)

    start_epoch = 0
    found = latest_checkpoint(run_dir)
    if found is not None:
        path, start_epoch = found
        # The learning-rate table is rebuilt from the spec; the restored global step picks
        # the position in it.
        state = {k: v for k, v in ms.load_checkpoint(str(path)).items() if k != "learning_rate"}
        not_loaded, _ = ms.load_param_into_net(train_step, state)
        not_loaded = [name for name in not_loaded if name != "learning_rate"]
        if not_loaded:
            raise JobFailed(f"checkpoint {path.name} does not fit this network", details=not_loaded[:20])
        ctx.log(f"resuming from {path.name} after epoch {start_epoch}")

    started = time.monotonic()
    steps_done = 0
    loss_value = float("nan")
    for epoch in range(start_epoch, config.epochs):
        for step_in_epoch, batch in enumerate(batches.epoch(epoch)):
            if ctx.cancelled():
                raise JobCancelled(f"cancelled during epoch {epoch + 1}")
            loss, finite = train_step(Tensor(batch.images), Tensor(batch.loc), Tensor(batch.labels),
                                      Tensor(batch.num_positives))
            loss_value = float(loss.asnumpy())
            steps_done += 1
            global_step = epoch * steps_per_epoch + step_in_epoch + 1
            elapsed = time.monotonic() - started
            remaining = total_steps - global_step
            ctx.progress(stage="train", epoch=epoch + 1, epochs=config.epochs, step=step_in_epoch + 1,
                         steps_per_epoch=steps_per_epoch, loss=round(loss_value, 5),
                         lr=float(lr[global_step - 1]), overflow=not bool(finite.asnumpy()),
                         images_per_s=round(steps_done * config.batch_size / max(elapsed, 1e-9), 2),
                         eta_s=round(elapsed / steps_done * remaining, 1))
        if not np.isfinite(loss_value):
            raise JobFailed(f"training diverged: loss is {loss_value} after epoch {epoch + 1}; try a lower lr")
        epochs_done = epoch + 1
        if epochs_done % config.checkpoint_every == 0 or epochs_done == config.epochs:
            _save_checkpoint(train_step, run_dir, epochs_done)
            ctx.log(f"checkpoint after epoch {epochs_done}, loss {loss_value:.4f}")
    return TrainOutcome(network=network, epochs_run=config.epochs - start_epoch, resumed_from_epoch=start_epoch,
                        final_loss=loss_value, seconds=time.monotonic() - started)
