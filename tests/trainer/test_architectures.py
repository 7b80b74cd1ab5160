"""Every architecture of :data:`ssdstack.recipes.ARCHITECTURES`: priors at the real size,
and at a reduced input size the network's shapes, two training steps and the ONNX
export served by ONNX Runtime."""
from __future__ import annotations

import typing

import numpy as np
import needs
import pytest

ms = needs.module("mindspore")
ort = needs.module("onnxruntime")  # after mindspore: see tests/conftest.py

from ssdstack.detection.matching import encode_targets  # noqa: E402
from ssdstack.detection.priors import prior_boxes  # noqa: E402
from ssdstack.jobs.specs import Architecture  # noqa: E402
from trainer.network import build_inference, build_ssd  # noqa: E402
from ssdstack.recipes import ARCHITECTURES, get_recipe  # noqa: E402
from trainer.ssd import SsdLoss  # noqa: E402
from trainer.train_step import TrainStep  # noqa: E402

# name: (priors at the zoo's size, reduced input size for the MindSpore tests).
# VGG16 and ResNet34 end with two unpadded 3x3 levels, so they need at least 257.
ARCHITECTURE_CASES = {
    "ssd300_mobilenet_v2": (1917, 160),
    "ssd_lite_mobilenet_v2": (540, 160),
    "ssd_vgg16": (7308, 264),
    "ssd_resnet34": (8732, 264),
    "ssd_mobilenet_v1_fpn": (51150, 128),
    "ssd_resnet50_fpn": (51150, 128),
}
NUM_CLASSES = 3
SLOW = {"ssd_vgg16", "ssd_resnet34", "ssd_resnet50_fpn"}


def _cases(slow: set[str] = frozenset()):
    return [pytest.param(name, marks=pytest.mark.slow) if name in slow else name for name in ARCHITECTURE_CASES]


@pytest.fixture(scope="module", autouse=True)
def graph_mode(tmp_path_factory):
    # A failed compile writes analyze_fail.ir under save_graphs_path (default: the cwd).
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", save_graphs_path=str(tmp_path_factory.mktemp("graphs")))


def _network(recipe, seed: int = 0):
    """He-normal convolutions, so that an untrained network's outputs depend on its input."""
    ms.set_seed(seed)
    network = build_ssd(recipe, NUM_CLASSES)
    rng = np.random.default_rng(seed)
    for param in network.trainable_params():
        if param.ndim == 4:
            fan_in = int(np.prod(param.shape[1:]))
            param.set_data(ms.Tensor(rng.normal(0, (2 / fan_in) ** 0.5, param.shape).astype(np.float32)))
    return network


def _images(recipe, batch: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, 3, recipe.image_size, recipe.image_size)).astype(np.float32)


def test_every_architecture_can_be_submitted():
    assert set(typing.get_args(Architecture)) == set(ARCHITECTURES) == set(ARCHITECTURE_CASES)


@pytest.mark.parametrize("name", ARCHITECTURE_CASES)
def test_prior_count_at_the_real_size(name):
    recipe = get_recipe(name)
    assert recipe.priors.image_size == recipe.image_size
    assert recipe.priors.num_priors() == ARCHITECTURE_CASES[name][0]
    assert prior_boxes(recipe.priors).shape == (ARCHITECTURE_CASES[name][0], 4)


@pytest.mark.parametrize("name", ARCHITECTURE_CASES)
def test_reduced_recipe_is_the_same_network_at_a_smaller_input(name):
    real, reduced = get_recipe(name), get_recipe(name, ARCHITECTURE_CASES[name][1])
    assert reduced.image_size == reduced.priors.image_size == ARCHITECTURE_CASES[name][1]
    assert reduced.priors.boxes_per_cell() == real.priors.boxes_per_cell()
    assert (reduced.network, reduced.architecture) == (real.network, real.architecture)
    if reduced.image_size == real.image_size:  # the lite recipe is tested at its own size
        assert reduced == real
    else:
        assert reduced.priors.num_priors() < real.priors.num_priors()


@pytest.mark.parametrize("name", ARCHITECTURE_CASES)
def test_reduced_network_has_the_real_ones_parameters(name):
    real = build_ssd(get_recipe(name), NUM_CLASSES)
    reduced = build_ssd(get_recipe(name, ARCHITECTURE_CASES[name][1]), NUM_CLASSES)
    shapes = [(p.name, p.shape) for p in real.get_parameters()]
    assert shapes == [(p.name, p.shape) for p in reduced.get_parameters()]
    # backbone (what an ImageNet checkpoint maps onto), extras, and the two heads
    assert {param.split(".")[0] for param, _ in shapes} == {"backbone", "extras", "loc_heads", "cls_heads"}


@pytest.mark.parametrize("name", _cases(SLOW))
def test_two_training_steps(name):
    recipe = get_recipe(name, ARCHITECTURE_CASES[name][1])
    network = _network(recipe)
    priors = prior_boxes(recipe.priors)
    gt_boxes = np.array([[0.1, 0.1, 0.5, 0.45], [0.4, 0.5, 0.95, 0.9]], np.float32)  # (y0, x0, y1, x1)
    targets = [encode_targets(gt_boxes, np.array([1, 2]), priors, recipe.priors.prior_scaling,
                              recipe.match_threshold) for _ in range(2)]
    loc, labels, positives = (np.stack(t) for t in zip(*targets))
    assert positives.min() >= 2
    optimizer = ms.nn.Momentum(network.trainable_params(), learning_rate=1e-3, momentum=0.9)
    step = TrainStep(SsdLoss(network, alpha=recipe.focal_alpha), optimizer, loss_scale=1.0)
    step.set_train(True)
    inputs = (ms.Tensor(_images(recipe, 2)), ms.Tensor(loc), ms.Tensor(labels.astype(np.int32)),
              ms.Tensor(positives.astype(np.int32)))
    losses = []
    for _ in range(2):
        loss, finite = step(*inputs)
        assert bool(finite.asnumpy())
        losses.append(float(loss.asnumpy()))
    assert np.isfinite(losses).all() and losses[1] != losses[0]


@pytest.mark.parametrize("name", _cases(SLOW))
def test_outputs_fit_the_priors_and_onnx_runtime_agrees(name, tmp_path):
    """A batch of 2 through the inference cell (the decoder adds the ``[1, P, …]`` priors
    to the network's ``loc [2, P, 4]``, so a prior count that does not fit the feature
    maps fails here), then the same through its ONNX export in ONNX Runtime."""
    recipe = get_recipe(name, ARCHITECTURE_CASES[name][1])
    network = _network(recipe)
    network.set_train(False)
    inference = build_inference(network, recipe)
    inference.set_train(False)
    images = _images(recipe, 2)
    boxes, scores = (t.asnumpy() for t in inference(ms.Tensor(images)))
    priors = recipe.priors.num_priors()
    assert boxes.shape == (2, priors, 4) and scores.shape == (2, priors, NUM_CLASSES)
    assert boxes.min() >= 0 and boxes.max() <= 1 and scores.min() >= 0 and scores.max() <= 1
    # An untrained network that saturated would make the comparison below empty.
    assert boxes.std() > 1e-3 and scores.std() > 1e-3 and np.abs(scores[0] - scores[1]).max() > 1e-3

    ms.export(inference, ms.Tensor(images), file_name=str(tmp_path / "model"), file_format="ONNX")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_boxes, onnx_scores = session.run(None, {session.get_inputs()[0].name: images})
    assert onnx_boxes.shape == boxes.shape and onnx_scores.shape == scores.shape
    assert np.abs(onnx_boxes - boxes).max() < 1e-4 and np.abs(onnx_scores - scores).max() < 1e-4
