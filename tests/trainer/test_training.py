"""The MindSpore side at reduced size: shapes, checkpoints and resume, export."""
from __future__ import annotations

import numpy as np
import needs
import pytest

ms = needs.module("mindspore")

from ssdstack.datasets.coco import load_coco_split  # noqa: E402
from ssdstack.datasets.synth import synthesize  # noqa: E402
from ssdstack.jobs.context import JobCancelled, LocalContext  # noqa: E402
from trainer.export import export_network, reference_images  # noqa: E402
from trainer.network import build_inference, build_ssd  # noqa: E402
from ssdstack.recipes import get_recipe  # noqa: E402
from trainer.train import TrainConfig, latest_checkpoint, train_network  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    synthesize(root, images=10, classes=2, seed=3, val_fraction=0.2)
    return load_coco_split(root, "train"), load_coco_split(root, "val")


def _config(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=4, lr=0.01, warmup_epochs=0.5, weight_decay=4e-5, momentum=0.9,
                       loss_scale=1024.0, checkpoint_every=1, seed=0)


@pytest.mark.parametrize("architecture, priors", [("ssd300_mobilenet_v2", 1917), ("ssd_lite_mobilenet_v2", 540)])
def test_network_and_inference_shapes(architecture, priors):
    recipe = get_recipe(architecture)
    network = build_ssd(recipe, num_classes=4)
    network.set_train(False)
    x = ms.Tensor(np.zeros((2, 3, recipe.image_size, recipe.image_size), np.float32))
    loc, logits = network(x)
    assert loc.shape == (2, priors, 4) and logits.shape == (2, priors, 4)
    boxes, scores = build_inference(network, recipe)(x)
    boxes, scores = boxes.asnumpy(), scores.asnumpy()
    assert boxes.shape == (2, priors, 4) and scores.shape == (2, priors, 4)
    assert boxes.min() >= 0 and boxes.max() <= 1 and scores.min() >= 0 and scores.max() <= 1


def test_training_resumes_from_the_last_checkpoint(tiny, tmp_path):
    train, _ = tiny
    recipe = get_recipe("ssd_lite_mobilenet_v2")
    ctx = LocalContext(quiet=True)
    first = train_network(recipe, train, _config(2), tmp_path, ctx)
    assert first.resumed_from_epoch == 0 and first.epochs_run == 2 and np.isfinite(first.final_loss)
    # Each epoch's mean loss, for the console's loss curve.
    assert [epoch for epoch, _ in ctx.state["epoch_losses"]] == [1, 2]
    assert all(np.isfinite(loss) and loss > 0 for _, loss in ctx.state["epoch_losses"])
    assert 0 < first.input_wait_s < first.seconds  # the first batch of each epoch at least is waited for
    path, epochs, _ = latest_checkpoint(tmp_path)
    assert epochs == 2 and path.name == "epoch-0002.ckpt"

    saved = ms.load_checkpoint(str(path))
    steps_per_epoch = len(train.records) // 4
    assert int(saved["global_step"].asnumpy().reshape(-1)[0]) == 2 * steps_per_epoch
    resumed = train_network(recipe, train, _config(3), tmp_path, LocalContext(quiet=True))
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 1
    assert latest_checkpoint(tmp_path)[1] == 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")) == ["epoch-0002.ckpt", "epoch-0003.ckpt"]


def test_cancel_stops_training(tiny, tmp_path):
    class CancelAfterOneStep(LocalContext):
        checks = 0

        def cancelled(self) -> bool:
            self.checks += 1
            return self.checks > 1

    with pytest.raises(JobCancelled, match="epoch 1"):
        train_network(get_recipe("ssd_lite_mobilenet_v2"), tiny[0], _config(5), tmp_path, CancelAfterOneStep(quiet=True))
    stopped = latest_checkpoint(tmp_path)  # the one step made is checkpointed on stopping
    assert (stopped.path.name, stopped.epochs, stopped.step) == ("epoch-0000_00001.ckpt", 0, 1)
    saved = ms.load_checkpoint(str(stopped.path))
    assert int(saved["global_step"].asnumpy().reshape(-1)[0]) == 1

    resumed = train_network(get_recipe("ssd_lite_mobilenet_v2"), tiny[0], _config(1), tmp_path,
                            LocalContext(quiet=True))
    assert (resumed.resumed_from_epoch, resumed.resumed_from_step) == (0, 1)
    assert latest_checkpoint(tmp_path) == (tmp_path / "checkpoints" / "epoch-0001.ckpt", 1, 0)


def test_export_writes_artefacts_and_reference(tiny, tmp_path):
    recipe = get_recipe("ssd_lite_mobilenet_v2")
    network = build_ssd(recipe, num_classes=3)
    files = export_network(network, recipe, reference_images(tiny[1], recipe.image_size), tmp_path)
    assert files == {"checkpoint": "model.ckpt", "mindir": "model.mindir", "onnx": "model.onnx",
                     "reference": "reference.npz"}
    reference = np.load(tmp_path / "reference.npz")
    count = min(4, len(tiny[1].records))
    assert reference["images"].shape == (count, 160, 160, 3) and reference["images"].dtype == np.uint8
    assert reference["boxes"].shape == (count, 540, 4) and reference["scores"].shape == (count, 540, 3)
