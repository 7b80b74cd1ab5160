"""Served mAP: the deployed engine (not MindSpore) on a dataset split, scored by pycocotools.

Each image goes through the path ``/v1/detect`` uses (file bytes -> decode -> resize ->
engine -> NMS -> original pixels), so the number is what users get; only EXIF rotation
is left out, because COCO boxes are in the stored pixel frame.
"""
from __future__ import annotations

import time

import numpy as np

from ssdstack.datasets.coco import load_coco_split
from ssdstack.datasets.store import DatasetStore
from ssdstack.errors import InvalidInput
from ssdstack.evaluation import coco_evaluate, detections_to_coco
from ssdstack.images import decode_image
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.model_store import ModelStore, utc_now
from inferencer.backends import select_engine
from inferencer.detector import Detector


def evaluate_served(store_dir, name: str, version: int, dataset: str | None, split: str, engine_name: str,
                    ctx: JobContext, max_pixels: int = 50_000_000) -> dict:
    """Evaluate and record ``metrics.served`` in the version's manifest; returns the metrics."""
    models = ModelStore(store_dir)
    manifest = models.manifest(name, version)
    dataset = dataset or manifest["lineage"]["dataset"]
    data = load_coco_split(DatasetStore(store_dir).path(dataset), split)
    if list(data.label_names) != manifest["labels"] or list(data.category_ids) != manifest["category_ids"]:
        raise InvalidInput(f"dataset {dataset!r} has categories {dict(zip(data.category_ids, data.label_names))}, "
                           f"model {name} v{version} was trained on "
                           f"{dict(zip(manifest['category_ids'], manifest['labels']))}")
    engine = select_engine(engine_name)
    engine.load(models.version_dir(name, version), manifest)
    detector = Detector(engine, manifest, name, version)
    category_ids = np.asarray(manifest["category_ids"])
    results = []
    started = time.monotonic()
    for index, record in enumerate(data.records):
        if ctx.cancelled():
            raise JobCancelled("cancelled during evaluation")
        # Decoded in the stored frame, as the annotations are (see ssdstack.images).
        image = decode_image(record.path.read_bytes(), max_pixels=max_pixels, exif_transpose=False)
        found = detector.detect_array(image)["detections"]
        if found:
            boxes = np.asarray([d["box"] for d in found], np.float32)
            scores = np.asarray([d["score"] for d in found], np.float32)
            labels = np.asarray([d["label_id"] for d in found])
            results += detections_to_coco(record.image_id, boxes, scores, category_ids[labels - 1])
        ctx.progress(stage="evaluate", evaluated=index + 1, to_evaluate=len(data.records))
    seconds = time.monotonic() - started
    metrics = {"coco": coco_evaluate(data.annotation_file, results), "engine": engine.name,
               "dataset": dataset, "split": split, "images": len(data.records),
               "images_per_s": round(len(data.records) / max(seconds, 1e-9), 2), "evaluated_at": utc_now()}

    def record_metrics(current: dict) -> None:
        current.setdefault("metrics", {})["served"] = metrics

    models.update_manifest(name, version, record_metrics)
    ctx.log(f"served mAP {metrics['coco']['AP']:.4f}, mAP@0.5 {metrics['coco']['AP50']:.4f} ({engine.name})")
    return metrics
