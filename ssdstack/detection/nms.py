"""Non-maximum suppression and the SSD detection postprocess."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssdstack.detection.boxes import box_iou


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS over ``[N, 4]`` corner boxes; returns kept indices, best score first.

    A box is dropped when its IoU with an already kept box is strictly above the threshold.
    The IoU matrix is computed once (callers bound N with a per-class top-k).
    """
    order = np.argsort(-scores, kind="stable")
    overlaps = box_iou(boxes[order], boxes[order]) > iou_threshold
    keep = np.ones(order.size, dtype=bool)
    for i in range(order.size):
        if keep[i]:
            keep[i + 1:] &= ~overlaps[i, i + 1:]
    return order[keep].astype(np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS within each label only; returns kept indices sorted by descending score."""
    keep = [np.flatnonzero(labels == label)[nms(boxes[labels == label], scores[labels == label], iou_threshold)]
            for label in np.unique(labels)]
    if not keep:
        return np.zeros(0, dtype=np.int64)
    kept = np.concatenate(keep)
    return kept[np.argsort(-scores[kept], kind="stable")]


@dataclass(frozen=True)
class PostprocessConfig:
    """The zoo's SSD defaults: min_score 0.1, nms_threshold 0.6, max_boxes 100."""

    score_threshold: float = 0.1
    iou_threshold: float = 0.6
    max_detections: int = 100
    # Candidates per class kept before NMS; bounds NMS cost on an untrained model.
    pre_nms_top_k: int = 400


def postprocess(boxes: np.ndarray, scores: np.ndarray, config: PostprocessConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn one image's network output into detections.

    ``boxes`` ``[P, 4]`` normalised ``(y0, x0, y1, x1)``; ``scores`` ``[P, C]`` per-class
    probabilities with column 0 the background (skipped). Returns ``(boxes [D, 4]
    normalised (y0, x0, y1, x1), scores [D], labels [D] in 1..C-1)``, best first,
    ``D <= max_detections``.
    """
    candidate_boxes, candidate_scores, candidate_labels = [], [], []
    for label in range(1, scores.shape[1]):
        class_scores = scores[:, label]
        index = np.flatnonzero(class_scores > config.score_threshold)
        index = index[np.argsort(-class_scores[index], kind="stable")[: config.pre_nms_top_k]]
        candidate_boxes.append(boxes[index])
        candidate_scores.append(class_scores[index])
        candidate_labels.append(np.full(index.size, label, dtype=np.int64))
    all_boxes = np.concatenate(candidate_boxes).reshape(-1, 4)
    all_scores = np.concatenate(candidate_scores)
    all_labels = np.concatenate(candidate_labels)
    keep = batched_nms(all_boxes, all_scores, all_labels, config.iou_threshold)[: config.max_detections]
    return all_boxes[keep], all_scores[keep].astype(np.float32), all_labels[keep]
