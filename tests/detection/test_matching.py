"""Matching on a hand-made case."""
import numpy as np

from ssdstack.detection.boxes import decode_boxes
from ssdstack.detection.matching import encode_targets, match_priors

# Four priors (cy, cx, h, w): two on the left, two on the right.
PRIORS = np.array([
    [0.25, 0.25, 0.5, 0.5],   # top-left quadrant
    [0.75, 0.25, 0.5, 0.5],   # bottom-left quadrant
    [0.25, 0.75, 0.5, 0.5],   # top-right quadrant
    [0.50, 0.75, 0.2, 0.2],   # small, right middle
], np.float32)


def test_threshold_and_forced_best_match():
    gt = np.array([
        [0.0, 0.0, 0.5, 0.55],    # ~ top-left quadrant: IoU 0.909 with prior 0
        [0.45, 0.7, 0.6, 0.85],   # IoU 0.5625 with prior 3, 0.028 with prior 2
        [0.6, 0.4, 0.7, 0.45],    # tiny: IoU 0.02 with prior 1 only; still gets it as its best
    ], np.float32)
    matched = match_priors(gt, PRIORS, threshold=0.5)
    np.testing.assert_array_equal(matched, [0, 2, -1, 1])


def test_a_box_overlapping_no_prior_takes_none():
    gt = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.51, 0.01, 0.52]], np.float32)  # second: inside prior 2 only
    far = np.array([[0.0, 0.0, 0.5, 0.5], [0.99, 0.99, 1.0, 1.0]], np.float32)  # second: overlaps nothing
    np.testing.assert_array_equal(match_priors(gt, PRIORS[[0, 2]]), [0, 1])
    np.testing.assert_array_equal(match_priors(far, PRIORS[[0, 2]]), [0, -1])


def test_no_ground_truth_means_all_background():
    np.testing.assert_array_equal(match_priors(np.zeros((0, 4), np.float32), PRIORS), [-1, -1, -1, -1])


def test_targets_decode_back_to_their_ground_truth():
    gt = np.array([[0.0, 0.0, 0.5, 0.55], [0.45, 0.7, 0.6, 0.85]], np.float32)
    labels = np.array([3, 1])
    loc, target_labels, positives = encode_targets(gt, labels, PRIORS, (0.1, 0.2))
    assert positives == 2
    np.testing.assert_array_equal(target_labels, [3, 0, 0, 1])
    np.testing.assert_allclose(decode_boxes(loc[[0, 3]], PRIORS[[0, 3]], (0.1, 0.2)), gt, atol=1e-5)
    np.testing.assert_array_equal(loc[[1, 2]], 0)
