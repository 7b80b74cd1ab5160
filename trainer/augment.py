"""Training-time image augmentation in numpy, boxes as pixel ``(x1, y1, x2, y2)``.

The IoU-constrained crop follows SSD's "random sample crop": pick a minimum IoU, try
random patches until one overlaps some object at least that much, keep the objects whose
centres fall inside it.
"""
from __future__ import annotations

import numpy as np

from ssdstack.detection.boxes import box_iou

# None = keep the whole image; the other values are minimum IoUs with some object.
CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9)
CROP_TRIES = 50


def random_crop(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop ``[H, W, 3]`` image and its ``[N, 4]`` boxes; returns the input unchanged when no try fits."""
    height, width = image.shape[:2]
    if boxes.shape[0] == 0:
        return image, boxes, labels
    min_iou = CROP_MIN_IOUS[rng.integers(len(CROP_MIN_IOUS))]
    if min_iou is None:
        return image, boxes, labels
    for _ in range(CROP_TRIES):
        w = rng.uniform(0.3 * width, width)
        h = rng.uniform(0.3 * height, height)
        if not 0.5 <= h / w <= 2.0:
            continue
        left = rng.uniform(0, width - w)
        top = rng.uniform(0, height - h)
        patch = np.array([left, top, left + w, top + h], dtype=np.float32)
        if box_iou(boxes, patch[None])[:, 0].max() < min_iou:
            continue
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centres > patch[:2]) & (centres < patch[2:]), axis=1)
        if not inside.any():
            continue
        x0, y0, x1, y1 = np.round(patch).astype(int)
        kept = boxes[inside].copy()
        kept[:, :2] = np.maximum(kept[:, :2], patch[:2]) - patch[:2]
        kept[:, 2:] = np.minimum(kept[:, 2:], patch[2:]) - patch[:2]
        return image[y0:y1, x0:x1], kept, labels[inside]
    return image, boxes, labels


def random_flip(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right with probability 0.5."""
    if rng.random() < 0.5:
        return image, boxes
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return image[:, ::-1], flipped


def colour_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.3) -> np.ndarray:
    """Random brightness, contrast and saturation factors in ``[1 - strength, 1 + strength]``."""
    out = image.astype(np.float32)
    out *= rng.uniform(1 - strength, 1 + strength)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - strength, 1 + strength) + mean
    grey = out.mean(axis=2, keepdims=True)
    out = (out - grey) * rng.uniform(1 - strength, 1 + strength) + grey
    return np.clip(out, 0, 255).astype(np.uint8)
