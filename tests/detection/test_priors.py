"""Priors against the reference values of ../shared/ASCEND.md (the zoo's generators)."""
import math

import numpy as np
import pytest

from ssdstack.detection.priors import GridAnchorConfig, PriorConfig, prior_boxes, prior_config_from_dict
from ssdstack.recipes import ARCHITECTURES, get_recipe, ssd300_mobilenet_v2, ssd_lite_mobilenet_v2

SQRT2 = math.sqrt(2)


@pytest.fixture(scope="module")
def ssd300():
    return prior_boxes(ssd300_mobilenet_v2().priors)


@pytest.fixture(scope="module")
def fpn640():
    return prior_boxes(get_recipe("ssd_mobilenet_v1_fpn").priors)


def test_ssd300_has_1917_priors(ssd300):
    assert ssd300.shape == (1917, 4)
    assert ssd300_mobilenet_v2().priors.num_priors() == 1917


@pytest.mark.parametrize("index, expected", [
    (0, (0.02667, 0.02667, 0.1, 0.1)),
    (1, (0.02667, 0.02667, 0.14142, 0.28284)),
    (1083, (0.05333, 0.05333, 0.35, 0.35)),
    (1916, (0.5, 0.5, 0.97468, 0.97468)),
])
def test_ssd300_reference_priors(ssd300, index, expected):
    np.testing.assert_allclose(ssd300[index], expected, atol=1e-5)


def test_level_zero_order_is_square_then_wide_then_tall(ssd300):
    # (cy, cx, h, w): prior 2 is the tall one of the first cell
    np.testing.assert_allclose(ssd300[2], (0.02667, 0.02667, 0.28284, 0.14142), atol=1e-5)
    # the 4th prior starts the next cell to the right (same row, next column)
    np.testing.assert_allclose(ssd300[3, :2], (0.5 / 18.75, 1.5 / 18.75), atol=1e-6)


def test_counts_per_level_follow_boxes_per_cell():
    config = ssd300_mobilenet_v2().priors
    assert config.boxes_per_cell() == (3, 6, 6, 6, 6, 6)
    assert sum(f * f * n for f, n in zip(config.feature_sizes, config.boxes_per_cell())) == 1917


@pytest.mark.parametrize("architecture, count, boxes", [
    ("ssd300_mobilenet_v2", 1917, (3, 6, 6, 6, 6, 6)),
    ("ssd_lite_mobilenet_v2", 540, (3, 6, 6, 6, 6, 6)),
    ("ssd_vgg16", 7308, (3, 6, 6, 6, 6, 6)),
    ("ssd_resnet34", 8732, (4, 6, 6, 6, 4, 4)),
    ("ssd_mobilenet_v1_fpn", 51150, (6, 6, 6, 6, 6)),
    ("ssd_resnet50_fpn", 51150, (6, 6, 6, 6, 6)),
])
def test_every_recipe_has_the_zoo_prior_count(architecture, count, boxes):
    config = get_recipe(architecture).priors
    assert config.num_priors() == count and config.boxes_per_cell() == boxes
    assert prior_boxes(config).shape == (count, 4) and prior_boxes(config).dtype == np.float32


def test_every_architecture_is_checked_above():
    assert set(ARCHITECTURES) == {"ssd300_mobilenet_v2", "ssd_lite_mobilenet_v2", "ssd_vgg16", "ssd_resnet34",
                                  "ssd_mobilenet_v1_fpn", "ssd_resnet50_fpn"}


def test_resnet34_first_cell_has_four_priors():
    priors = prior_boxes(get_recipe("ssd_resnet34").priors)
    centre = 0.5 * 7 / 300  # step 7
    s0, s1 = 0.2, 0.2 + 0.75 / 5
    expected = [(s0, s0), (s0 / SQRT2, s0 * SQRT2), (s0 * SQRT2, s0 / SQRT2), (math.sqrt(s0 * s1),) * 2]
    np.testing.assert_allclose(priors[:4], [(centre, centre, h, w) for h, w in expected], atol=1e-6)
    np.testing.assert_allclose(priors[4, :2], (centre, 1.5 * 7 / 300), atol=1e-6)


def test_vgg16_level_zero_has_step_8():
    priors = prior_boxes(get_recipe("ssd_vgg16").priors)
    np.testing.assert_allclose(priors[0], (4 / 300, 4 / 300, 0.1, 0.1), atol=1e-6)
    np.testing.assert_allclose(priors[38 * 38 * 3], (8 / 300, 8 / 300, 0.35, 0.35), atol=1e-6)


def test_tiny_grid_by_hand():
    config = GridAnchorConfig(image_size=64, feature_sizes=(2, 1), steps=(32, 64), scale=1.0, scales_per_octave=1,
                              aspect_ratios=(1.0,))
    expected = [(0.25, 0.25, 0.5, 0.5), (0.25, 0.75, 0.5, 0.5), (0.75, 0.25, 0.5, 0.5), (0.75, 0.75, 0.5, 0.5),
                (0.5, 0.5, 1.0, 1.0)]
    np.testing.assert_allclose(prior_boxes(config), expected)
    assert config.num_priors() == 5 and config.boxes_per_cell() == (1, 1)


@pytest.mark.parametrize("index, expected", [
    # first cell of 80x80 (step 8, base 32 px): aspect 1 at scales 1 and sqrt(2), aspect 2, aspect 0.5
    (0, (4 / 640, 4 / 640, 0.05, 0.05)),
    (1, (4 / 640, 4 / 640, 0.05 * SQRT2, 0.05 * SQRT2)),
    (2, (4 / 640, 4 / 640, 0.05 / SQRT2, 0.05 * SQRT2)),
    (3, (4 / 640, 4 / 640, 0.05, 0.1)),
    (4, (4 / 640, 4 / 640, 0.05 * SQRT2, 0.05 / SQRT2)),
    (5, (4 / 640, 4 / 640, 0.1, 0.05)),
    (6, (4 / 640, 12 / 640, 0.05, 0.05)),              # next cell: same row, next column
    (80 * 6, (12 / 640, 4 / 640, 0.05, 0.05)),         # second row
    (80 * 80 * 6, (8 / 640, 8 / 640, 0.1, 0.1)),       # level 1: step 16, base 64 px
    (51149, (0.9, 0.9, 1.6, 0.8)),                     # last cell of 5x5 (step 128), aspect 0.5, scale sqrt(2)
])
def test_fpn_grid_anchors_by_hand(fpn640, index, expected):
    np.testing.assert_allclose(fpn640[index], expected, atol=1e-6)


def test_reduced_recipe_priors_cover_the_image():
    priors = prior_boxes(ssd_lite_mobilenet_v2().priors)
    assert priors.shape == (ssd_lite_mobilenet_v2().priors.num_priors(), 4)
    assert priors[:, :2].min() > 0 and priors[:, :2].max() < 1


@pytest.mark.parametrize("architecture", ["ssd300_mobilenet_v2", "ssd_mobilenet_v1_fpn"])
def test_config_round_trips_through_dict(architecture):
    config = get_recipe(architecture).priors
    data = config.to_dict()
    assert data["kind"] in ("ssd", "grid")
    assert prior_config_from_dict(data) == config and type(config).from_dict(data) == config


def test_dict_without_kind_is_an_ssd_prior_config():
    data = ssd300_mobilenet_v2().priors.to_dict()
    del data["kind"]
    assert prior_config_from_dict(data) == ssd300_mobilenet_v2().priors


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown prior kind 'hex'"):
        prior_config_from_dict({"kind": "hex"})


def test_mismatched_levels_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        PriorConfig(300, (19, 10), (16,), ((), (2,)))
    with pytest.raises(ValueError, match="same length"):
        GridAnchorConfig(640, (80, 40), (8,))


def test_too_small_an_input_is_rejected():
    with pytest.raises(ValueError, match="too small"):
        get_recipe("ssd_vgg16", 160)
