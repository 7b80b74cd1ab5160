"""Transfer learning, frozen backbones, best-checkpoint keeping, AMP and clipping, on the
reduced recipe and real MindSpore training steps."""
from __future__ import annotations

import numpy as np
import needs
import pytest

ms = needs.module("mindspore")

from ssdstack.datasets.coco import load_coco_split  # noqa: E402
from ssdstack.datasets.synth import synthesize  # noqa: E402
from ssdstack.errors import JobFailed  # noqa: E402
from ssdstack.jobs.context import LocalContext  # noqa: E402
from trainer.network import build_ssd  # noqa: E402
from ssdstack.recipes import get_recipe  # noqa: E402
from trainer.train import TrainConfig, best_checkpoint, latest_checkpoint, train_network  # noqa: E402
from trainer.transfer import load_backbone, load_pretrained  # noqa: E402

RECIPE = get_recipe("ssd_lite_mobilenet_v2")


@pytest.fixture(scope="module", autouse=True)
def graph_mode(tmp_path_factory):
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", save_graphs_path=str(tmp_path_factory.mktemp("graphs")))


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    synthesize(root, images=10, classes=2, seed=5, val_fraction=0.2)
    return load_coco_split(root, "train")


def _weights(cell) -> dict[str, np.ndarray]:
    return {name: p.asnumpy().copy() for name, p in cell.parameters_and_names()}


def _checkpoint_of(network, path) -> dict:
    ms.save_checkpoint(network, str(path))
    return ms.load_checkpoint(str(path))


def _config(**overrides) -> TrainConfig:
    values = dict(epochs=1, batch_size=4, lr=0.01, warmup_epochs=0, weight_decay=0.0, momentum=0.9,
                  loss_scale=1024.0, checkpoint_every=1, seed=0)
    return TrainConfig(**dict(values, **overrides))


def test_head_filter_auto_loads_everything_but_a_head_of_another_class_count(tmp_path):
    source = build_ssd(RECIPE, num_classes=6)
    checkpoint = _checkpoint_of(source, tmp_path / "six.ckpt")
    target = build_ssd(RECIPE, num_classes=3)
    fresh = _weights(target)

    report = load_pretrained(target, checkpoint, "auto")

    after, before = _weights(target), _weights(source)
    skipped = {name for name in after if after[name].shape != before[name].shape}
    assert skipped and all("cls_heads" in name for name in skipped)
    assert sorted(report.skipped) == sorted(skipped)
    for name, value in after.items():
        expected = fresh[name] if name in skipped else before[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)
    assert any(name.startswith("backbone.") for name in after) and report.loaded == len(after) - len(skipped)


def test_without_head_filtering_another_class_count_fails_naming_shapes(tmp_path):
    checkpoint = _checkpoint_of(build_ssd(RECIPE, num_classes=6), tmp_path / "six.ckpt")
    target = build_ssd(RECIPE, num_classes=3)
    fresh = _weights(target)
    with pytest.raises(JobFailed, match="parameters differ in shape") as caught:
        load_pretrained(target, checkpoint, "none")
    assert any("cls_heads" in line and "[" in line for line in caught.value.details)
    assert "head_filter" in caught.value.message
    for name, value in _weights(target).items():
        np.testing.assert_array_equal(value, fresh[name])  # nothing loaded


def test_explicit_head_filter_skips_exactly_the_listed_prefixes(tmp_path):
    source = build_ssd(RECIPE, num_classes=3)
    checkpoint = _checkpoint_of(source, tmp_path / "same.ckpt")
    target = build_ssd(RECIPE, num_classes=3)
    report = load_pretrained(target, checkpoint, ["loc_heads.", "cls_heads."])
    assert report.skipped and all(name.startswith(("loc_heads.", "cls_heads.")) for name in report.skipped)
    with pytest.raises(JobFailed, match="match no parameter"):
        load_pretrained(target, checkpoint, ["no_such_layer."])


def test_checkpoint_of_another_architecture_fails(tmp_path):
    checkpoint = _checkpoint_of(build_ssd(get_recipe("ssd300_mobilenet_v2"), num_classes=3), tmp_path / "big.ckpt")
    with pytest.raises(JobFailed, match="does not fit|matches no parameter"):
        load_pretrained(build_ssd(RECIPE, num_classes=3), checkpoint, "auto")


def test_renamed_checkpoint_of_the_same_layers_maps_by_position(tmp_path):
    source = build_ssd(RECIPE, num_classes=3)
    saved = _checkpoint_of(source, tmp_path / "ours.ckpt")
    renamed = {f"zoo.layer{index}": value for index, value in enumerate(saved.values())}
    target = build_ssd(RECIPE, num_classes=3)
    report = load_pretrained(target, renamed, "none")
    assert report.mapped_by_position
    before = _weights(source)
    for name, value in _weights(target).items():
        np.testing.assert_array_equal(value, before[name])


def test_backbone_checkpoint_loads_the_backbone_only(tmp_path):
    source = build_ssd(RECIPE, num_classes=5)
    ms.save_checkpoint(source.backbone, str(tmp_path / "backbone.ckpt"))
    target = build_ssd(RECIPE, num_classes=3)
    fresh = _weights(target)
    report = load_backbone(target, ms.load_checkpoint(str(tmp_path / "backbone.ckpt")))
    assert report.loaded == len(list(target.backbone.get_parameters())) and not report.skipped
    before = _weights(source)
    for name, value in _weights(target).items():
        np.testing.assert_array_equal(value, before[name] if name.startswith("backbone.") else fresh[name])


def test_classifier_checkpoint_of_the_same_body_under_other_names_maps_by_position(tmp_path):
    source = build_ssd(RECIPE, num_classes=5)
    ms.save_checkpoint(source.backbone, str(tmp_path / "body.ckpt"))
    body = ms.load_checkpoint(str(tmp_path / "body.ckpt"))
    classifier = {f"imagenet.{index}": value for index, value in enumerate(body.values())}
    classifier["head.fc.weight"] = ms.Tensor(np.ones((1000, 8), np.float32))
    target = build_ssd(RECIPE, num_classes=3)
    report = load_backbone(target, classifier)
    assert report.mapped_by_position and report.loaded == len(body)
    before = _weights(source)
    for name, value in _weights(target.backbone).items():
        np.testing.assert_array_equal(value, before[f"backbone.{name}"])


def test_backbone_checkpoint_matching_nothing_fails():
    unrelated = {"fc.weight": ms.Tensor(np.zeros((10, 7), np.float32))}
    with pytest.raises(JobFailed, match="matches no parameter of the backbone"):
        load_backbone(build_ssd(RECIPE, num_classes=3), unrelated)


def test_frozen_backbone_is_unchanged_by_training(train_split, tmp_path):
    captured = {}

    def initialise(network) -> dict:
        captured.update(_weights(network))
        return {}

    outcome = train_network(RECIPE, train_split, _config(freeze_backbone=True, lr=0.05), tmp_path,
                            LocalContext(quiet=True), initialise=initialise)
    after = _weights(outcome.network)
    backbone = [name for name in after if name.startswith("backbone.")]
    assert any("moving_mean" in name for name in backbone)
    for name in backbone:
        np.testing.assert_array_equal(after[name], captured[name], err_msg=name)
    assert any(not np.array_equal(after[name], captured[name]) for name in after if "heads" in name)


def test_best_checkpoint_by_map_is_kept_and_published(train_split, tmp_path):
    scores = iter([0.2, 0.7, 0.4])
    snapshots = {}

    def evaluate(network) -> float:
        snapshots[len(snapshots) + 1] = _weights(network)
        return next(scores)

    outcome = train_network(RECIPE, train_split, _config(epochs=3, eval_every=1, keep_checkpoint_max=1), tmp_path,
                            LocalContext(quiet=True), evaluate=evaluate)
    assert outcome.best == {"epoch": 2, "map": 0.7}
    assert [entry["epoch"] for entry in outcome.history] == [1, 2, 3]
    assert best_checkpoint(tmp_path)[1] == {"epoch": 2, "map": 0.7}
    for name, value in _weights(outcome.network).items():
        np.testing.assert_array_equal(value, snapshots[2][name], err_msg=name)
    assert [p.name for p in (tmp_path / "checkpoints").glob("epoch-*.ckpt")] == ["epoch-0003.ckpt"]
    assert latest_checkpoint(tmp_path)[1] == 3


@pytest.mark.parametrize("level", ["O2", "O3"])
def test_mixed_precision_trains_and_returns_a_float32_network(train_split, tmp_path, level):
    outcome = train_network(RECIPE, train_split, _config(amp_level=level, loss_scale_dynamic=True), tmp_path,
                            LocalContext(quiet=True))
    assert np.isfinite(outcome.final_loss)
    assert all(p.dtype == ms.float32 for p in outcome.network.get_parameters())
    assert "_backbone" not in " ".join(name for name, _ in outcome.network.parameters_and_names())


def _one_step_move(split, run_dir, lr: float, clip: float | None) -> float:
    """How far one momentum-SGD step from zero velocity moves the trainable weights:
    lr times the (clipped) gradient's global norm."""
    captured = {}

    def initialise(network) -> dict:
        captured.update({name: p.asnumpy().copy() for name, p in network.parameters_and_names() if p.requires_grad})
        return {}

    outcome = train_network(RECIPE, split, _config(lr=lr, clip_global_norm=clip), run_dir, LocalContext(quiet=True),
                            initialise=initialise, batches=_OneBatch(split))
    after = _weights(outcome.network)
    return float(np.sqrt(sum(np.sum((after[name].astype(np.float64) - before) ** 2)
                             for name, before in captured.items())))


def test_global_norm_clipping_bounds_the_update(train_split, tmp_path):
    lr, clip = 0.01, 1e-3
    clipped = _one_step_move(train_split, tmp_path / "clipped", lr, clip)
    free = _one_step_move(train_split, tmp_path / "free", lr, None)
    # The weights are float32: a 1e-8 move per weight is measured to a few per cent.
    assert 0 < clipped <= lr * clip * 1.05
    assert free > 10 * lr * clip


class _OneBatch:
    """The first batch of the real pipeline, once per epoch."""

    def __init__(self, split):
        from trainer.data import TrainBatches

        self.batches = TrainBatches(split, RECIPE, 4, 0)
        self.steps_per_epoch = 1

    def epoch(self, epoch: int, start_step: int = 0):
        if start_step == 0:  # one step an epoch: resumed after it, the epoch has none left
            yield next(iter(self.batches.epoch(epoch)))
