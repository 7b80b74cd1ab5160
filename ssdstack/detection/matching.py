"""Assign ground-truth boxes to priors and build SSD training targets."""
from __future__ import annotations

import numpy as np

from ssdstack.detection.boxes import box_iou, encode_boxes
from ssdstack.detection.priors import priors_to_corners


def match_priors(gt_boxes: np.ndarray, priors: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Index of the ground truth each prior is matched to, or -1.

    ``gt_boxes`` ``[G, 4]`` normalised ``(y0, x0, y1, x1)``; ``priors`` ``[P, 4]``
    ``(cy, cx, h, w)``. A prior takes the ground truth it overlaps most when that IoU is
    above ``threshold``; every ground truth also takes its single best prior whatever the
    IoU above zero, so no object is left without a positive (ties go to the later ground
    truth, as in the zoo's sequential loop). Unlike the zoo, a box that overlaps no prior
    at all takes none, instead of stealing prior 0. Returns ``[P]`` int64.
    """
    num_priors = priors.shape[0]
    if gt_boxes.shape[0] == 0:
        return np.full(num_priors, -1, dtype=np.int64)
    iou = box_iou(gt_boxes, priors_to_corners(priors))
    best_gt = iou.argmax(axis=0)
    matched = np.where(iou.max(axis=0) > threshold, best_gt, -1)
    for gt_index, prior_index in enumerate(iou.argmax(axis=1)):
        if iou[gt_index, prior_index] > 0:
            matched[prior_index] = gt_index
    return matched.astype(np.int64)


def encode_targets(
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    priors: np.ndarray,
    scaling: tuple[float, float],
    threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Training targets for one image.

    Returns ``(loc [P, 4] float32, labels [P] int32, num_positives)``: offsets as
    :func:`~ssdstack.detection.boxes.encode_boxes` for matched priors (zeros elsewhere),
    the matched ground truth's label (1..K) or 0 for background.
    """
    matched = match_priors(gt_boxes, priors, threshold)
    positive = matched >= 0
    labels = np.zeros(priors.shape[0], dtype=np.int32)
    loc = np.zeros((priors.shape[0], 4), dtype=np.float32)
    if positive.any():
        labels[positive] = gt_labels[matched[positive]]
        loc[positive] = encode_boxes(gt_boxes[matched[positive]], priors[positive], scaling)
    return loc, labels, int(positive.sum())
