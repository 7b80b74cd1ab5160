"""Box maths: IoU and the SSD box coder.

Inside the model, boxes are normalised ``(y0, x0, y1, x1)`` as in the MindSpore zoo and
the MindX SDK postprocessor; IoU works on any corner format ``(a0, b0, a1, b1)``.
"""
from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` corner boxes -> ``[N]`` areas (0 for degenerate boxes)."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``[N, 4]`` and ``[M, 4]`` corner boxes -> ``[N, M]``."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def encode_boxes(boxes: np.ndarray, priors: np.ndarray, scaling: tuple[float, float]) -> np.ndarray:
    """Encode ``[P, 4]`` ``(y0, x0, y1, x1)`` boxes against ``[P, 4]`` ``(cy, cx, h, w)`` priors.

    Returns ``[P, 4]`` offsets ``(dy, dx, dh, dw)``:
    centre offset in prior units divided by ``scaling[0]``, log size ratio divided by ``scaling[1]``.
    """
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6)
    d_centre = (centre - priors[:, :2]) / (priors[:, 2:] * scaling[0])
    d_size = np.log(size / priors[:, 2:]) / scaling[1]
    return np.concatenate([d_centre, d_size], axis=1).astype(np.float32)


def decode_boxes(offsets: np.ndarray, priors: np.ndarray, scaling: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`encode_boxes`, clipped to ``[0, 1]`` like the zoo's decoder."""
    centre = offsets[..., :2] * scaling[0] * priors[..., 2:] + priors[..., :2]
    size = np.exp(offsets[..., 2:] * scaling[1]) * priors[..., 2:]
    corners = np.concatenate([centre - size / 2, centre + size / 2], axis=-1)
    return np.clip(corners, 0.0, 1.0).astype(np.float32)


def normalised_to_pixels(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """``[N, 4]`` normalised ``(y0, x0, y1, x1)`` -> pixel ``(x_min, y_min, x_max, y_max)``."""
    scale = np.asarray([width, height, width, height], dtype=np.float32)
    return boxes[:, [1, 0, 3, 2]].astype(np.float32) * scale
