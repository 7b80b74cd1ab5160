"""COCO evaluation with pycocotools, shared by the trainer (MindSpore) and the inferencer (served engine).

:func:`evaluate_detections` runs COCOeval once and keeps what a report needs: the 12
summary numbers, AP per class and precision-recall curves. :func:`write_report` stores
that, the detections and the engine's speed as a folder that appears whole or not at all.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdstack.durable import publish_rename
from ssdstack.errors import Conflict

# The 12 numbers COCOeval.summarize() prints, in its order.
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                     "AR_1", "AR_10", "AR_100", "AR_small", "AR_medium", "AR_large")
# Report file names by part; a report folder holds exactly these.
REPORT_FILES = {"metrics": "metrics.json", "per_class_ap": "per_class_ap.csv",
                "pr_curves": "pr_curves.png", "detections": "detections.json"}
PER_CLASS_COLUMNS = ("category_id", "name", "AP", "AP50", "AP75", "ground_truth")


@dataclass(frozen=True)
class CocoEvaluation:
    """One COCOeval (bbox) run over every image of a split.

    ``coco``: the 12 summary numbers by name (``-1`` where an area range has no ground truth).
    ``per_class``: one row per category in id order, keys :data:`PER_CLASS_COLUMNS`;
    ``AP`` (IoU .50:.95), ``AP50``, ``AP75`` are None for a category without ground truth,
    ``ground_truth`` counts its non-crowd boxes.
    ``recall``: ``[R]`` recall points 0, .01, ..., 1.
    ``precision_50`` / ``precision_mean``: ``[K, R]`` interpolated precision (area all,
    100 detections per image) at IoU .5 / averaged over IoU .50:.05:.95, rows in
    ``per_class`` order; NaN rows for categories without ground truth.
    """

    coco: dict[str, float]
    per_class: list[dict]
    recall: np.ndarray
    precision_50: np.ndarray
    precision_mean: np.ndarray


@dataclass(frozen=True)
class EngineEvaluation:
    """An engine evaluated on a split: its scores, its detections (COCO results format) and speed."""

    engine: str
    images: int
    images_per_s: float
    results: list[dict]
    scores: CocoEvaluation

    def summary(self) -> dict:
        """What a manifest records: ``{"coco", "per_class", "engine", "images", "images_per_s"}``."""
        return {"coco": self.scores.coco, "per_class": self.scores.per_class, "engine": self.engine,
                "images": self.images, "images_per_s": self.images_per_s}


def detections_to_coco(image_id: int, boxes: np.ndarray, scores: np.ndarray, category_ids: np.ndarray) -> list[dict]:
    """Pixel ``(x_min, y_min, x_max, y_max)`` boxes -> COCO results entries (``bbox`` as ``[x, y, w, h]``)."""
    return [
        {"image_id": int(image_id), "category_id": int(category), "score": float(score),
         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
        for b, score, category in zip(boxes, scores, category_ids)
    ]


def served_results(detector, records, category_ids, max_pixels: int,
                   each: Callable[[int], None] = lambda done: None) -> list[dict]:
    """COCO results of ``detector`` (a :class:`~ssdstack.detection.detector.Detector`) on
    ``records`` (a split's image records), each image through the path ``/v1/detect``
    uses, in the stored frame (no EXIF rotation: COCO boxes are in that frame);
    ``category_ids`` maps label ids 1..K to the dataset's. ``each(done)`` is called after
    every image (progress, cancellation)."""
    category_ids = np.asarray(category_ids)
    results: list[dict] = []
    for index, record in enumerate(records):
        found = detector.detect(record.path.read_bytes(), max_pixels=max_pixels, exif_transpose=False)["detections"]
        if found:
            boxes = np.asarray([d["box"] for d in found], np.float32)
            scores = np.asarray([d["score"] for d in found], np.float32)
            labels = np.asarray([d["label_id"] for d in found])
            results += detections_to_coco(record.image_id, boxes, scores, category_ids[labels - 1])
        each(index + 1)
    return results


def evaluate_detections(annotation_file: Path, results: list[dict]) -> CocoEvaluation:
    """Score ``results`` (COCO results format) against ``annotation_file`` with one COCOeval run."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(annotation_file))
        # loadRes adds area/id/iscrowd/segmentation to the dicts it gets: give it copies.
        detections = (ground_truth.loadRes([dict(r, bbox=list(r["bbox"])) for r in results]) if results
                      else _empty_results(ground_truth))
        evaluator = COCOeval(ground_truth, detections, "bbox")
        evaluator.params.imgIds = sorted(ground_truth.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    params = evaluator.params
    # [T, R, K] for area "all" and 100 detections per image; -1 marks "no ground truth".
    precision = evaluator.eval["precision"][:, :, :, params.areaRngLbl.index("all"), params.maxDets.index(100)]
    precision = np.where(precision < 0, np.nan, precision)
    at_50, at_75 = (int(np.flatnonzero(np.isclose(params.iouThrs, iou))[0]) for iou in (0.5, 0.75))
    boxes_of = {category_id: 0 for category_id in params.catIds}
    for annotation in ground_truth.dataset["annotations"]:
        if not annotation.get("iscrowd", 0) and annotation["category_id"] in boxes_of:
            boxes_of[annotation["category_id"]] += 1
    per_class = []
    for k, category in enumerate(ground_truth.loadCats(params.catIds)):
        curves = precision[:, :, k]
        has_data = not np.isnan(curves).all()
        per_class.append({
            "category_id": int(category["id"]), "name": category["name"],
            "AP": _rounded(np.mean(curves)) if has_data else None,
            "AP50": _rounded(np.mean(curves[at_50])) if has_data else None,
            "AP75": _rounded(np.mean(curves[at_75])) if has_data else None,
            "ground_truth": boxes_of[category["id"]],
        })
    return CocoEvaluation(
        coco={name: _rounded(value) for name, value in zip(COCO_METRIC_NAMES, evaluator.stats)},
        per_class=per_class, recall=np.asarray(params.recThrs, np.float64),
        precision_50=precision[at_50].T.copy(), precision_mean=precision.mean(axis=0).T)


def check_map_drop(trained_ap: float, served_ap: float, max_map_drop: float) -> None:
    """The deploy gate: Conflict when the served mAP is more than ``max_map_drop`` below the
    trained one (the converted artefact lost accuracy); passes otherwise."""
    drop = trained_ap - served_ap
    if drop > max_map_drop:
        raise Conflict(f"served mAP {served_ap:.4f} is {drop:.4f} below the trained {trained_ap:.4f}, "
                       f"more than max_map_drop {max_map_drop}; not deployed",
                       details={"trained": trained_ap, "served": served_ap})


def coco_evaluate(annotation_file: Path, results: list[dict]) -> dict[str, float]:
    """The 12 COCO summary numbers by name (see :func:`evaluate_detections`)."""
    return evaluate_detections(annotation_file, results).coco


def write_report(folder: Path, evaluation: EngineEvaluation, dataset: str, split: str) -> dict[str, str]:
    """Write ``folder`` (which must not exist) holding :data:`REPORT_FILES`; returns that dict.

    ``metrics.json``: the 12 numbers, the per-class table, engine, images, images_per_s,
    dataset, split. ``per_class_ap.csv``: the table (empty cells for no ground truth).
    ``pr_curves.png``: precision-recall per class. ``detections.json``: the results list.
    Everything is written into a sibling scratch folder renamed at the end, so a failure
    leaves no folder behind.
    """
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"report folder {folder} exists already")
    partial = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.partial")
    partial.mkdir(parents=True)
    try:
        scores = evaluation.scores
        metrics = {"coco": scores.coco, "per_class": scores.per_class, "engine": evaluation.engine,
                   "images": evaluation.images, "images_per_s": evaluation.images_per_s,
                   "dataset": dataset, "split": split}
        _write_durably(partial / REPORT_FILES["metrics"], json.dumps(metrics, indent=2).encode())
        table = io.StringIO()
        writer = csv.DictWriter(table, PER_CLASS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(scores.per_class)  # None is written as an empty cell
        _write_durably(partial / REPORT_FILES["per_class_ap"], table.getvalue().encode())
        _write_durably(partial / REPORT_FILES["pr_curves"],
                       plot_pr_curves(scores, f"{evaluation.engine} on {dataset} / {split}"))
        _write_durably(partial / REPORT_FILES["detections"], json.dumps(evaluation.results).encode())
        publish_rename(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dict(REPORT_FILES)


def report_dir(engine: str, dataset: str, split: str) -> str:
    """Where a version keeps the report of ``engine`` on ``dataset``/``split``, relative to its folder."""
    return f"evaluation/{engine}-{dataset}-{split}"


def stage_report(version_folder: Path, evaluation: EngineEvaluation, dataset: str, split: str) -> dict[str, str]:
    """Write the report into ``version_folder / report_dir(...)`` (a staging or version folder).

    Returns the manifest artefacts it adds: ``evaluation_<engine>-<dataset>-<split>_<part>``
    -> file path relative to ``version_folder``.
    """
    folder = report_dir(evaluation.engine, dataset, split)
    files = write_report(Path(version_folder) / folder, evaluation, dataset, split)
    return {f"evaluation_{Path(folder).name}_{part}": f"{folder}/{file}" for part, file in files.items()}


def plot_pr_curves(scores: CocoEvaluation, title: str) -> bytes:
    """PNG bytes: precision-recall per class at IoU .5 (left) and averaged over IoU .50:.95 (right)."""
    # Optional: only the trainer's and inferencer's extras install matplotlib (the gateway never plots).
    # Figure without pyplot: no global backend or figure registry, safe in worker threads.
    from matplotlib.figure import Figure

    rows = [k for k, row in enumerate(scores.per_class) if row["AP"] is not None]
    # One legend for both panels, below them, in up to 4 columns; the figure grows with it.
    legend_columns = max(1, min(4, len(rows)))
    legend_rows = -(-len(rows) // legend_columns)
    figure = Figure(figsize=(12, 5.4 + 0.2 * legend_rows), dpi=100, layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    for axes, precision, label in ((left, scores.precision_50, "IoU 0.50"),
                                   (right, scores.precision_mean, "IoU 0.50:0.95 (mean)")):
        for n, k in enumerate(rows):
            axes.plot(scores.recall, precision[k], color=f"C{n % 10}",
                      linestyle=("-", "--", ":", "-.")[n // 10 % 4])
        axes.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="recall", title=label)
        axes.grid(alpha=0.3)
        if not rows:
            axes.text(0.5, 0.5, "no class has ground truth", ha="center", va="center")
    if rows:
        labels = [f"{scores.per_class[k]['name']} (AP50 {scores.per_class[k]['AP50']:.3f}, "
                  f"AP {scores.per_class[k]['AP']:.3f})" for k in rows]
        figure.legend(left.get_lines(), labels, loc="outside lower center", ncols=legend_columns,
                      fontsize="small")
    left.set_ylabel("precision")
    skipped = len(scores.per_class) - len(rows)
    figure.suptitle(f"{title}\nprecision-recall, area all, 100 detections per image"
                    + (f"; {skipped} class(es) without ground truth not shown" if skipped else ""))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _empty_results(ground_truth: COCO) -> COCO:
    """A results set without detections (``COCO.loadRes`` refuses an empty list)."""
    empty = COCO()
    empty.dataset = {"images": list(ground_truth.dataset["images"]),
                     "categories": list(ground_truth.dataset["categories"]), "annotations": []}
    empty.createIndex()
    return empty


def _rounded(value) -> float:
    return round(float(value), 6)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
