"""Priors against the reference values of ../shared/ASCEND.md (the zoo's generator)."""
import numpy as np
import pytest

from ssdstack.detection.priors import PriorConfig, prior_boxes
from trainer.recipes import ssd300_mobilenet_v2, ssd_lite_mobilenet_v2


@pytest.fixture(scope="module")
def ssd300():
    return prior_boxes(ssd300_mobilenet_v2().priors)


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


def test_reduced_recipe_priors_cover_the_image():
    priors = prior_boxes(ssd_lite_mobilenet_v2().priors)
    assert priors.shape == (ssd_lite_mobilenet_v2().priors.num_priors(), 4)
    assert priors[:, :2].min() > 0 and priors[:, :2].max() < 1


def test_config_round_trips_through_dict():
    config = ssd300_mobilenet_v2().priors
    assert PriorConfig.from_dict(config.to_dict()) == config


def test_mismatched_levels_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        PriorConfig(300, (19, 10), (16,), ((), (2,)))
