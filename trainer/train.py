"""The training loop: MindSpore SSD on a COCO split, with checkpoints and resume.

Checkpoints live in ``run_dir/checkpoints`` (on the shared store), hold the whole train
step (weights, optimiser moments, global step, loss scale) and a small json beside them,
so a job delivered again after a worker crash continues from the last completed epoch.
With ``eval_every``, the network's weights at its best val mAP so far are kept beside
them as ``best.ckpt`` (+ ``best.json``), and survive a resume too.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, amp, nn

from ssdstack.datasets.coco import CocoSplit
from ssdstack.durable import publish_rename
from ssdstack.errors import JobFailed
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.recipes import Recipe
from trainer.data import TrainBatches
from trainer.network import build_ssd
from trainer.parallel import gradient_reducer
from trainer.schedule import warmup_cosine
from trainer.ssd import SsdLoss
from trainer.train_step import TrainStep
from trainer.transfer import freeze_backbone, load_pretrained, normalise_name

AMP_LEVELS = ("O0", "O2", "O3")  # O1 rewrites the network's Python source, which MindSpore 2.8 fails on
# The job progress carries the mean loss of at most this many recent epochs.
EPOCH_LOSSES_KEPT = 1000


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
    keep_checkpoint_max: int = 2
    loss_scale_dynamic: bool = False
    amp_level: str = "O0"
    clip_global_norm: float | None = None
    freeze_backbone: bool = False
    eval_every: int | None = None


@dataclass
class TrainOutcome:
    network: object          # trainer.ssd.SSD in float32 with the weights to publish (the best, when evaluated)
    epochs_run: int
    resumed_from_epoch: int  # 0 when training started fresh
    final_loss: float
    seconds: float
    resumed_from_step: int = 0  # steps into epoch resumed_from_epoch + 1 (a run stopped mid-epoch)
    initialised: dict | None = None   # what the ``initialise`` hook loaded
    best: dict | None = None          # {"epoch", "map"} of the published weights, when evaluated
    history: list[dict] = field(default_factory=list)  # {"epoch", "map"} per evaluation
    input_wait_s: float = 0.0  # of ``seconds``, the step loop waiting for its next batch


def _checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def _marked(run_dir: Path, marker: str) -> tuple[Path, dict] | None:
    """The checkpoint a json marker names, with the marker's content, if both exist."""
    marker_path = _checkpoint_dir(run_dir) / marker
    if not marker_path.exists():
        return None
    info = json.loads(marker_path.read_text())
    path = _checkpoint_dir(run_dir) / info["file"]
    return (path, info) if path.exists() else None


class Position(NamedTuple):
    """Where a checkpoint stands: ``epochs`` complete, and ``step`` steps into the next one
    (0 for one written at an epoch's end; more for one written when the run was stopped)."""

    path: Path
    epochs: int
    step: int = 0


def latest_checkpoint(run_dir: Path) -> Position | None:
    """The newest complete checkpoint, if any."""
    found = _marked(run_dir, "latest.json")
    return Position(found[0], int(found[1]["epochs"]), int(found[1].get("step", 0))) if found else None


def _write_checkpoint(cell, folder: Path, name: str, marker: str, info: dict) -> None:
    """Write ``name`` then its json marker, each complete or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    # save_checkpoint appends ".ckpt" to any other suffix; write under a hidden name, then rename.
    partial = folder / f".partial-{name}"
    ms.save_checkpoint(cell, str(partial))
    publish_rename(partial, folder / name, replace=True)
    marker_tmp = folder / f".{marker}.tmp"
    marker_tmp.write_text(json.dumps(dict(info, file=name)))
    publish_rename(marker_tmp, folder / marker, replace=True)


def _save_checkpoint(train_step, run_dir: Path, epochs_done: int, keep: int, step: int = 0) -> None:
    """``epoch-0003.ckpt`` after three epochs; ``epoch-0003_00007.ckpt`` seven steps into the
    fourth (names sort in training order). The newest ``keep`` are kept."""
    folder = _checkpoint_dir(run_dir)
    name = f"epoch-{epochs_done:04d}.ckpt" if step == 0 else f"epoch-{epochs_done:04d}_{step:05d}.ckpt"
    _write_checkpoint(train_step, folder, name, "latest.json", {"epochs": epochs_done, "step": step})
    for old in sorted(folder.glob("epoch-*.ckpt"))[:-keep]:
        old.unlink()


def best_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """``(path, {"epoch", "map"})`` of the best evaluated weights, if any."""
    found = _marked(run_dir, "best.json")
    return (found[0], {"epoch": found[1]["epoch"], "map": found[1]["map"]}) if found else None


def _history(run_dir: Path) -> list[dict]:
    path = _checkpoint_dir(run_dir) / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def _parameter_groups(network, weight_decay: float) -> list[dict]:
    """Decay convolution weights only; BatchNorm and biases are left undecayed."""
    params = network.trainable_params()
    decayed = [p for p in params if p.name.endswith(".weight") and len(p.shape) == 4]
    others = [p for p in params if not (p.name.endswith(".weight") and len(p.shape) == 4)]
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]


def _amp(network, level: str):
    """The cell to train: ``network`` itself at O0, else MindSpore's float16 cast of it."""
    if level not in AMP_LEVELS:
        raise JobFailed(f"AMP level {level!r} is not supported here; choose one of {list(AMP_LEVELS)}")
    if level == "O0":
        return network
    cast = amp.auto_mixed_precision(network, level)
    cast.num_classes = network.num_classes  # SsdLoss reads it; the wrapper casts outputs back to float32
    return cast


def float32_copy(network, recipe: Recipe):
    """A fresh float32 network with ``network``'s weights (AMP casts its cells in place)."""
    fresh = build_ssd(recipe, network.num_classes)
    # AMP moves cells under ``_backbone`` attributes; parameter names stay as they were.
    trained = {normalise_name(p.name): p for p in network.get_parameters()}
    for parameter in fresh.get_parameters():
        parameter.set_data(trained[normalise_name(parameter.name)].data.astype(parameter.dtype))
    return fresh


def _train_step(network, recipe: Recipe, config: TrainConfig, lr: np.ndarray, group_size: int) -> TrainStep:
    """The loss-scaled step: momentum on ``lr`` (one value per step), AMP, clipping, and the
    gradient all-reduce of ``group_size`` ranks."""
    optimizer = nn.Momentum(_parameter_groups(network, config.weight_decay), Tensor(lr), config.momentum)
    loss_net = SsdLoss(_amp(network, config.amp_level), gamma=recipe.focal_gamma, alpha=recipe.focal_alpha)
    return TrainStep(loss_net, optimizer, config.loss_scale, dynamic=config.loss_scale_dynamic,
                     clip_global_norm=config.clip_global_norm,
                     grad_reducer=gradient_reducer(optimizer.parameters, group_size))


def _restore(train_step, found: Position, ctx: JobContext) -> None:
    """Load checkpoint ``found`` into ``train_step``."""
    path = found.path
    # The learning-rate table is rebuilt from the spec; the restored global step picks
    # the position in it.
    state = {k: v for k, v in ms.load_checkpoint(str(path)).items() if k != "learning_rate"}
    not_loaded, _ = ms.load_param_into_net(train_step, state)
    not_loaded = [name for name in not_loaded if name != "learning_rate"]
    if not_loaded:
        raise JobFailed(f"checkpoint {path.name} does not fit this network", details=not_loaded[:20])
    at = f"after epoch {found.epochs}" + (f", step {found.step} of the next" if found.step else "")
    ctx.log(f"resuming from {path.name} {at}")


class _BestByMap:
    """Val mAP checks during training: their history, and the best weights so far kept
    beside the checkpoints as ``best.ckpt``; both survive a resume."""

    def __init__(self, run_dir: Path, start_epoch: int):
        self.run_dir = run_dir
        # An evaluation can run after the last saved checkpoint; it is run again after the resume.
        self.history = [entry for entry in _history(run_dir) if entry["epoch"] <= start_epoch]
        best = best_checkpoint(run_dir)
        self.best = best[1] if best else None

    def record(self, network, epochs_done: int, score: float, ctx: JobContext) -> None:
        self.history.append({"epoch": epochs_done, "map": round(score, 5)})
        ctx.log(f"epoch {epochs_done}: val mAP {score:.4f}")
        folder = _checkpoint_dir(self.run_dir)
        if self.best is None or score > self.best["map"]:
            self.best = {"epoch": epochs_done, "map": score}
            _write_checkpoint(network, folder, "best.ckpt", "best.json", self.best)
        marker_tmp = folder / ".history.json.tmp"
        marker_tmp.write_text(json.dumps(self.history))
        publish_rename(marker_tmp, folder / "history.json", replace=True)


def train_network(recipe: Recipe, split: CocoSplit, config: TrainConfig, run_dir: Path, ctx: JobContext, *,
                  initialise: Callable[[object], dict] | None = None,
                  evaluate: Callable[[object], float] | None = None,
                  batches: TrainBatches | None = None, rank: int = 0, group_size: int = 1) -> TrainOutcome:
    """Train from scratch, or resume from ``run_dir``'s latest checkpoint. A run told to
    stop (``ctx.cancelled()``: a cancel, or its worker shutting down) first checkpoints the
    steps it made since the last checkpoint, so that a resume goes on from that step.

    ``initialise(network) -> report`` loads starting weights on a fresh start (not on a
    resume, whose checkpoint holds them). ``evaluate(network) -> mAP`` runs every
    ``config.eval_every`` epochs and at the end; the outcome's network then carries the
    best weights. ``batches`` defaults to JPEG decoding of ``split``. Data-parallel rank
    ``rank`` of ``group_size`` trains on its shard of every batch and averages gradients
    with the others; only rank 0 writes checkpoints, and only rank 0 is given ``evaluate``.
    """
    ms.set_seed(config.seed)
    network = build_ssd(recipe, len(split.label_names) + 1)
    found = latest_checkpoint(run_dir)
    initialised = initialise(network) if initialise is not None and found is None else None
    if config.freeze_backbone:
        ctx.log(f"backbone frozen: {freeze_backbone(network)} parameters")
    is_writer = rank == 0
    batches = batches or TrainBatches(split, recipe, config.batch_size, config.seed, rank, group_size)
    steps_per_epoch = batches.steps_per_epoch
    total_steps = steps_per_epoch * config.epochs
    lr = warmup_cosine(config.lr, total_steps, int(config.warmup_epochs * steps_per_epoch))
    train_step = _train_step(network, recipe, config, lr, group_size)

    def train_mode() -> None:
        train_step.set_train(True)
        if config.freeze_backbone:
            network.backbone.set_train(False)  # frozen BatchNorm keeps its running statistics

    train_mode()
    if found is not None:
        _restore(train_step, found, ctx)
    start_epoch, start_step = (found.epochs, found.step) if found is not None else (0, 0)
    evaluations = _BestByMap(run_dir, start_epoch)
    started = time.monotonic()
    steps_done = unsaved = 0
    input_wait = 0.0
    loss_value = float("nan")
    epoch_losses: list[list[float]] = []  # [epoch, mean loss] since this run started, for the console's curve
    for epoch in range(start_epoch, config.epochs):
        first_step = start_step if epoch == start_epoch else 0
        loss_sum, loss_steps = 0.0, 0
        waiting_since = time.monotonic()
        for step_in_epoch, batch in enumerate(batches.epoch(epoch, first_step), start=first_step):
            input_wait += time.monotonic() - waiting_since
            if ctx.cancelled():
                if is_writer and unsaved:
                    _save_checkpoint(train_step, run_dir, epoch, config.keep_checkpoint_max, step=step_in_epoch)
                    ctx.log(f"checkpoint at step {step_in_epoch} of epoch {epoch + 1}, on stopping")
                raise JobCancelled(f"cancelled during epoch {epoch + 1}")
            loss, finite = train_step(Tensor(batch.images), Tensor(batch.loc), Tensor(batch.labels),
                                      Tensor(batch.num_positives))
            loss_value = float(loss.asnumpy())
            loss_sum, loss_steps = loss_sum + loss_value, loss_steps + 1
            steps_done += 1
            unsaved += 1
            global_step = epoch * steps_per_epoch + step_in_epoch + 1
            elapsed = time.monotonic() - started
            remaining = total_steps - global_step
            ctx.progress(stage="train", epoch=epoch + 1, epochs=config.epochs, step=step_in_epoch + 1,
                         steps_per_epoch=steps_per_epoch, loss=round(loss_value, 5),
                         lr=float(lr[global_step - 1]), overflow=not bool(finite.asnumpy()),
                         images_per_s=round(steps_done * config.batch_size * group_size / max(elapsed, 1e-9), 2),
                         input_wait_share=round(input_wait / max(elapsed, 1e-9), 4),
                         eta_s=round(elapsed / steps_done * remaining, 1))
            waiting_since = time.monotonic()
        if not np.isfinite(loss_value):
            raise JobFailed(f"training diverged: loss is {loss_value} after epoch {epoch + 1}; try a lower lr")
        epochs_done = epoch + 1
        if evaluate is not None and config.eval_every and (
                epochs_done % config.eval_every == 0 or epochs_done == config.epochs):
            network.set_train(False)
            evaluations.record(network, epochs_done, float(evaluate(network)), ctx)
            train_mode()
        if loss_steps:
            epoch_losses.append([epochs_done, round(loss_sum / loss_steps, 5)])
        ctx.progress(epoch_losses=epoch_losses[-EPOCH_LOSSES_KEPT:], eval_history=evaluations.history)
        if is_writer and (epochs_done % config.checkpoint_every == 0 or epochs_done == config.epochs):
            _save_checkpoint(train_step, run_dir, epochs_done, config.keep_checkpoint_max)
            unsaved = 0
            ctx.log(f"checkpoint after epoch {epochs_done}, loss {loss_value:.4f}")

    final = float32_copy(network, recipe) if config.amp_level != "O0" else network
    best = evaluations.best
    if is_writer and best is not None and best["epoch"] != config.epochs:
        load_pretrained(final, ms.load_checkpoint(str(_checkpoint_dir(run_dir) / "best.ckpt")), head_filter="none")
        ctx.log(f"publishing the weights of epoch {best['epoch']} (val mAP {best['map']:.4f})")
    return TrainOutcome(network=final, epochs_run=config.epochs - start_epoch, resumed_from_epoch=start_epoch,
                        resumed_from_step=start_step,
                        final_loss=loss_value, seconds=time.monotonic() - started, initialised=initialised,
                        best=best, history=evaluations.history, input_wait_s=input_wait)
