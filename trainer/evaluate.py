"""Trained mAP: the MindSpore inference network on a COCO split, scored by pycocotools."""
from __future__ import annotations

import time

import numpy as np
from mindspore import Tensor

from ssdstack.datasets.coco import CocoSplit
from ssdstack.detection.boxes import normalised_to_pixels
from ssdstack.detection.nms import PostprocessConfig, postprocess
from ssdstack.evaluation import EngineEvaluation, detections_to_coco, evaluate_detections
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.recipes import Recipe
from trainer.data import eval_inputs
from trainer.network import build_inference


def evaluate_mindspore(inference, recipe: Recipe, split: CocoSplit, ctx: JobContext) -> EngineEvaluation:
    """COCO scores of ``inference`` (an eval-mode ``SsdInference``) on every image of ``split``.

    ``.summary()`` is what the manifest records as ``metrics.trained``;
    ``ssdstack.evaluation.stage_report`` writes the full report (per-class AP, curves, detections).
    """
    config = PostprocessConfig(**recipe.postprocess)
    category_ids = np.asarray(split.category_ids)
    results = []
    started = time.monotonic()
    for index, record in enumerate(split.records):
        if ctx.cancelled():
            raise JobCancelled("cancelled during evaluation")
        boxes, scores = inference(Tensor(eval_inputs(record, recipe)))
        kept_boxes, kept_scores, labels = postprocess(boxes.asnumpy()[0], scores.asnumpy()[0], config)
        pixels = normalised_to_pixels(kept_boxes, record.width, record.height)
        results += detections_to_coco(record.image_id, pixels, kept_scores, category_ids[labels - 1])
        ctx.progress(stage="evaluate", evaluated=index + 1, to_evaluate=len(split.records))
    seconds = time.monotonic() - started
    return EngineEvaluation(engine="mindspore", images=len(split.records),
                            images_per_s=round(len(split.records) / max(seconds, 1e-9), 2), results=results,
                            scores=evaluate_detections(split.annotation_file, results))


def evaluate_network(network, recipe: Recipe, split: CocoSplit, ctx: JobContext) -> EngineEvaluation:
    """:func:`evaluate_mindspore` of an ``SSD``: its inference cell in eval mode."""
    inference = build_inference(network, recipe)
    inference.set_train(False)
    return evaluate_mindspore(inference, recipe, split, ctx)
