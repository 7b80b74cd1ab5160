"""The reference check's statistics on outputs whose differences are set by hand."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from converter.check import check_against_reference

PRIORS, CLASSES = 10, 4


class Session:
    """Answers every reference image with the expected outputs plus ``offset_scores``."""

    def __init__(self, offset_scores: np.ndarray):
        self.offset = offset_scores

    def get_inputs(self):
        return [SimpleNamespace(shape=[1, 8, 8, 3])]  # batch 1: no batched run

    def run(self, names, feeds):
        assert names == ["boxes", "scores"] and feeds["image"].shape == (1, 8, 8, 3)
        return np.zeros((1, PRIORS, 4), np.float32), (0.5 + self.offset)[None].astype(np.float32)


@pytest.fixture
def reference(tmp_path):
    path = tmp_path / "reference.npz"
    np.savez(path, images=np.zeros((2, 8, 8, 3), np.uint8), boxes=np.zeros((2, PRIORS, 4), np.float32),
             scores=np.full((2, PRIORS, CLASSES), 0.5, np.float32))
    return path


def one_prior_off(by: float) -> np.ndarray:
    offset = np.zeros((PRIORS, CLASSES))
    offset[3, 1] = by
    return offset


def test_one_prior_far_off_fails_a_bound_on_the_largest_difference(reference):
    check = check_against_reference(Session(one_prior_off(0.36)), reference, 0.1, 0.2)
    assert check["max_abs_diff_scores"] == pytest.approx(0.36) and not check["passed"]
    assert "mean_abs_diff_scores" not in check


def test_the_mean_statistic_bounds_each_images_average(reference):
    check = check_against_reference(Session(one_prior_off(0.36)), reference, 0.02, 0.05, statistic="mean")
    # 0.36 at one of 10 x 4 scores: 0.009 on average.
    assert check["mean_abs_diff_scores"] == pytest.approx(0.36 / 40)
    assert check["max_abs_diff_scores"] == pytest.approx(0.36)
    assert check["statistic"] == "mean" and check["passed"]
    everywhere = check_against_reference(Session(np.full((PRIORS, CLASSES), 0.45)), reference, 0.02, 0.05, "mean")
    assert everywhere["mean_abs_diff_scores"] == pytest.approx(0.45) and not everywhere["passed"]


def test_nan_never_passes_either_statistic(reference):
    for statistic in ("max", "mean"):
        check = check_against_reference(Session(one_prior_off(np.nan)), reference, 1.0, 1.0, statistic)
        assert check[f"{statistic}_abs_diff_scores"] == float("inf") and not check["passed"]


def test_an_unknown_statistic_is_refused(reference):
    with pytest.raises(ValueError, match="'max' or 'mean'"):
        check_against_reference(Session(one_prior_off(0.0)), reference, statistic="median")
