"""COCO evaluation with pycocotools, shared by the trainer (MindSpore) and the inferencer (served engine)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# The 12 numbers COCOeval.summarize() prints, in its order.
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                     "AR_1", "AR_10", "AR_100", "AR_small", "AR_medium", "AR_large")


def detections_to_coco(image_id: int, boxes: np.ndarray, scores: np.ndarray, category_ids: np.ndarray) -> list[dict]:
    """Pixel ``(x_min, y_min, x_max, y_max)`` boxes -> COCO results entries (``bbox`` as ``[x, y, w, h]``)."""
    return [
        {"image_id": int(image_id), "category_id": int(category), "score": float(score),
         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
        for b, score, category in zip(boxes, scores, category_ids)
    ]


def coco_evaluate(annotation_file: Path, results: list[dict]) -> dict[str, float]:
    """Run COCOeval (bbox) and return its 12 summary numbers by name.

    With no detection at all every number is 0.0 (pycocotools cannot load empty results).
    ``-1`` (no ground truth in that area range) is reported as given by pycocotools.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(annotation_file))
        if not results:
            return {name: 0.0 for name in COCO_METRIC_NAMES}
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluator.params.imgIds = sorted(ground_truth.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: round(float(value), 6) for name, value in zip(COCO_METRIC_NAMES, evaluator.stats)}
